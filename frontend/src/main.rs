//! The stacklab frontend: lessons, stack diagrams, live demos and the
//! learner's run history, as a Leptos client-side app.
//!
//! The server sends every page with its static form inside (`<div
//! id="prerendered">`, the same layout drawn from the same lessons at
//! build time), so text shows before this app has loaded, and with
//! JavaScript off. When the app starts it removes that static form and
//! draws the page itself: a takeover, not Leptos's hydration (that needs
//! every component to render on the server as well, which this app's
//! browser-only parts, storage and event streams, do not) nor islands (the
//! app's client-side navigation keeps runs going across pages; islands
//! would make every link a page load).

#![forbid(unsafe_code)]

mod app;
mod charts;
mod compare;
mod diagram;
mod history;
mod learn;
mod lessons;
mod live;
mod num;
mod predict;
mod progress;
mod router;
mod runs;
mod widgets;
mod wire;
mod xray;

fn main() {
    console_error_panic_hook::set_once();
    let Some(document) = leptos::web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let path = document.location().and_then(|l| l.pathname().ok());
    // `/embed/{demo}`: one demo card, for `<stacklab-demo>` on other sites.
    let embedded = path
        .as_deref()
        .and_then(|p| p.strip_prefix("/embed/"))
        .and_then(|demo| demo.trim_end_matches('/').parse().ok());
    // Drawn in the same task as the mount: no frame shows the gap.
    if let Some(static_form) = document.get_element_by_id("prerendered") {
        static_form.remove();
    }
    match embedded {
        Some(demo) => {
            leptos::mount::mount_to_body(move || app::Embedded(app::EmbeddedProps { demo }))
        }
        None => leptos::mount::mount_to_body(app::App),
    }
}
