//! The stacklab frontend: lessons, stack diagrams and (later) live demos,
//! as a Leptos client-side app.

mod app;
mod compare;
mod diagram;
mod lessons;
mod live;
mod widgets;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
