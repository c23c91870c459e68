//! Workshop mode's pages: the instructor's room (`/class`, `/class/{code}`)
//! and the learner's join page (`/join/{code}`).
//!
//! One small HTML page with a plain script, kept out of the learners' WASM
//! bundle (which has a size budget every learner pays for): the instructor
//! page is opened by one person per room and must also work on a projector
//! laptop. Served from the binary, so workshop mode needs no frontend build.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("room/room.html");
const SCRIPT: &str = include_str!("room/room.js");
const STYLE: &str = include_str!("room/room.css");

/// The page; the script reads the path to know which view to draw.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads only its own script and style, and talks only
            // to this server.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
}

/// Its script.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}

/// Its style.
pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
}
