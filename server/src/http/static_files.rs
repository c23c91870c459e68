//! The built frontend: files from Trunk's `dist/`, and for the app's own
//! routes the app shell, with the page's static form inside where it has
//! one (see [`crate::site`]): a reloaded deep link (`/lessons/containers`)
//! works, and its text is in the first response.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::{AppError, AppState};
use crate::site;

/// Fallback handler for every non-API path.
pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let Some(dir) = state.static_dir.clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "The stacklab frontend is not built. Build it with `trunk build --release` in frontend/ (the README's setup command does this), then restart stacklab.\n",
        )
            .into_response();
    };
    let path = req.uri().path().to_owned();
    if !is_app_route(&path) {
        return match ServeDir::new(&dir).oneshot(req).await {
            Ok(r) => r.into_response(),
            Err(never) => match never {},
        };
    }
    let page = if state.prerender {
        site::page(&path)
    } else {
        None
    };
    // A lesson that does not exist is a 404 (the app shows its own page
    // for it); other app routes (`/runs/…`) are the app's to judge.
    let status = if path.starts_with("/lessons/") && site::page(&path).is_none() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let body = page.map_or("", |p| p.body);
    let title = page.map_or("stacklab: containers and virtual machines, measured", |p| {
        p.title
    });
    document(&state, status, title, "", body, "'none'")
}

/// An app document: the shell with `head` and `body` added, its CSP
/// (framed only by `frame_ancestors`), never cached, so a new deploy's
/// asset names are picked up.
pub fn document(
    state: &AppState,
    status: StatusCode,
    title: &str,
    head: &str,
    body: &str,
    frame_ancestors: &str,
) -> Response {
    let Some(shell) = &state.shell else {
        return AppError::Unavailable {
            code: stacklab_api::ErrorCode::FrontendMissing,
            message:
                "the frontend's index.html is missing or unreadable; rebuild it with `./dev build`"
                    .into(),
        }
        .into_response();
    };
    let csp = HeaderValue::from_str(&shell.csp(frame_ancestors))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        shell.document(title, head, body),
    )
        .into_response()
}

/// Paths the frontend router owns: no file extension in the last segment and
/// no `..` anywhere (a traversal attempt is a plain 404, not the app shell).
fn is_app_route(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    !last.contains('.')
        && !path
            .split('/')
            .any(|seg| seg == ".." || seg.contains("%2e%2e") || seg.contains("%2E%2E"))
}

#[cfg(test)]
mod tests {
    use super::is_app_route;

    #[test]
    fn app_routes_have_no_extension_and_no_traversal() {
        assert!(is_app_route("/"));
        assert!(is_app_route("/lessons/containers"));
        assert!(!is_app_route("/missing.js"));
        assert!(!is_app_route("/../etc/passwd"));
        assert!(!is_app_route("/lessons/..%2e%2e/x"));
    }
}
