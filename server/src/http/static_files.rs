//! The built frontend: files from Trunk's `dist/`, and `index.html` for the
//! app's own routes so a reloaded deep link (`/lessons/containers`) works.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::AppState;

/// Fallback handler for every non-API path.
pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let Some(dir) = state.static_dir else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "The stacklab frontend is not built. Build it with `trunk build --release` in frontend/ (the README's setup command does this), then restart stacklab.\n",
        )
            .into_response();
    };
    let path = req.uri().path().to_owned();
    let wants_page = is_app_route(&path);
    let index = dir.join("index.html");
    let response = match ServeDir::new(&dir).oneshot(req).await {
        Ok(r) => r.into_response(),
        Err(never) => match never {},
    };
    if response.status() != StatusCode::NOT_FOUND || !wants_page {
        return response;
    }
    // A route of the single-page app: hand out the shell, never cached, so a
    // new deploy's asset names are picked up.
    let mut page = match ServeFile::new(index)
        .oneshot(Request::new(axum::body::Body::empty()))
        .await
    {
        Ok(r) => r.into_response(),
        Err(never) => match never {},
    };
    page.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    page
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
