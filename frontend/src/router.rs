//! The app's own router: the address's path as a signal, links to the
//! app's pages followed without a page load (`history.pushState`), Back and
//! Forward (`popstate`) followed too. The app has five routes and needs
//! nothing else of a router crate; `leptos_router` cost the bundle about
//! 10 KB after brotli for them.
//!
//! A click is left to the browser when it is not a plain left click, when
//! the link opens elsewhere (`target`, `download`, `rel=external`), leaves
//! the origin, is not one of the app's pages (`/api/…`, the room's pages),
//! or only changes the fragment of the current page.
//!
//! Imports only leptos and web-sys.

use leptos::prelude::*;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{HtmlAnchorElement, MouseEvent};

/// One of the app's pages, from a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Home,
    Lesson(String),
    Runs,
    Run(String),
    Glossary,
    NotFound,
}

impl Route {
    /// The page at `path` (a trailing `/` is ignored).
    pub fn of(path: &str) -> Route {
        let path = path.trim_end_matches('/');
        let one = |prefix: &str| {
            path.strip_prefix(prefix)
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(str::to_owned)
        };
        match path {
            "" => Route::Home,
            "/runs" => Route::Runs,
            "/glossary" => Route::Glossary,
            _ => one("/lessons/")
                .map(Route::Lesson)
                .or_else(|| one("/runs/").map(Route::Run))
                .unwrap_or(Route::NotFound),
        }
    }
}

/// The current path, provided at the app's root.
#[derive(Clone, Copy)]
pub struct Location {
    pub path: RwSignal<String>,
}

fn current_path() -> String {
    window().location().pathname().unwrap_or_default()
}

impl Location {
    /// Starts following link clicks and Back/Forward; call once at the root.
    pub fn provide() -> Location {
        let location = Location {
            path: RwSignal::new(current_path()),
        };
        provide_context(location);
        let on_click = Closure::<dyn Fn(MouseEvent)>::new(move |ev: MouseEvent| {
            location.follow(&ev);
        });
        let on_pop = Closure::<dyn Fn()>::new(move || {
            location.path.set(current_path());
            scroll_to_fragment(false);
        });
        let _ =
            document().add_event_listener_with_callback("click", on_click.as_ref().unchecked_ref());
        let _ =
            window().add_event_listener_with_callback("popstate", on_pop.as_ref().unchecked_ref());
        // They live as long as the page.
        on_click.forget();
        on_pop.forget();
        location
    }

    pub fn get() -> Option<Location> {
        use_context::<Location>()
    }

    fn follow(self, ev: &MouseEvent) {
        if ev.default_prevented()
            || ev.button() != 0
            || ev.meta_key()
            || ev.alt_key()
            || ev.ctrl_key()
            || ev.shift_key()
        {
            return;
        }
        let Some(a) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|el| el.closest("a[href]").ok().flatten())
            .and_then(|el| el.dyn_into::<HtmlAnchorElement>().ok())
        else {
            return;
        };
        let external = a
            .get_attribute("rel")
            .is_some_and(|r| r.split_whitespace().any(|p| p == "external"));
        if !a.target().is_empty() || a.has_attribute("download") || external {
            return;
        }
        let here = window().location();
        if a.origin() != here.origin().unwrap_or_default() {
            return;
        }
        let path = a.pathname();
        let hash = a.hash();
        if Route::of(&path) == Route::NotFound {
            return;
        }
        if path == current_path() && !hash.is_empty() {
            // A fragment of this page: the browser scrolls to it.
            return;
        }
        ev.prevent_default();
        let to = format!("{path}{}{hash}", a.search());
        if let Ok(history) = window().history() {
            let _ = history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&to));
        }
        self.path.set(path);
        scroll_to_fragment(true);
    }
}

/// After a navigation: to the element the fragment names, or to the top.
fn scroll_to_fragment(top: bool) {
    // After the new page is drawn (the signal's effects run first).
    request_animation_frame(move || {
        let hash = window().location().hash().unwrap_or_default();
        let id = hash.trim_start_matches('#');
        let id = js_sys::decode_uri_component(id)
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_else(|| id.to_owned());
        match (!id.is_empty())
            .then(|| document().get_element_by_id(&id))
            .flatten()
        {
            Some(el) => el.scroll_into_view(),
            None if top => window().scroll_to_with_x_and_y(0.0, 0.0),
            None => {}
        }
    });
}
