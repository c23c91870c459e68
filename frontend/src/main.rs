//! The stacklab frontend: lessons, stack diagrams, live demos and the
//! learner's run history, as a Leptos client-side app.

#![forbid(unsafe_code)]

mod app;
mod charts;
mod compare;
mod diagram;
mod history;
mod learn;
mod lessons;
mod live;
mod progress;
mod runs;
mod widgets;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
