//! Demos inside other people's pages: `/embed.js` defines the
//! `<stacklab-demo>` element a docs site puts on its pages; the element
//! frames `/embed/{demo}`, the app showing just that demo's card.
//!
//! Why an iframe: the card runs in the lab's own origin, under the app's
//! own CSP, with its learner id in the lab's storage, and nothing of the
//! host page (its scripts, its styles) can reach into it or break it. The
//! host page gets only what the frame posts to it: its height and whether
//! the live card is up. Who may frame it is `frame-ancestors`, from
//! `--embed-origin` (see `guard`).
//!
//! The two scripts are small and plain (no build step), kept out of the
//! learners' WASM bundle, and served from the binary.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use stacklab_api::DemoId;

use super::static_files::document;
use super::{AppError, AppState};
use crate::site;

/// The element, for docs sites (`<script type="module" src=…/embed.js>`).
const ELEMENT: &str = include_str!("embed/embed.js");
/// The frame's side: theme, height, readiness, posted to the host page.
const FRAME: &str = include_str!("embed/frame.js");

/// `/embed/{demo}`: the app with one demo card, framable by the embed
/// origins; the card's static form shows until the app has loaded.
pub async fn page(State(state): State<AppState>, Path(demo): Path<String>) -> Response {
    let demo: DemoId = match demo.parse() {
        Ok(d) => d,
        Err(e) => {
            let e: stacklab_api::UnknownDemo = e;
            return AppError::NotFound(e.to_string()).into_response();
        }
    };
    document(
        &state,
        StatusCode::OK,
        &format!("{} · stacklab", demo.title()),
        r#"<script src="/embed/frame.js"></script>"#,
        &format!(r#"<main class="embed">{}</main>"#, site::demo_card(demo)),
        &state.allowed.frame_ancestors(),
    )
}

/// `/embed.js`: readable by any page (a module script is fetched with
/// CORS); which pages may then show a demo is the lab's `--embed-origin`.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        ELEMENT,
    )
}

/// `/embed/frame.js`, loaded by the embed page itself.
pub async fn frame_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        FRAME,
    )
}
