//! Helpers shared by the server's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use stacklab_api::{EventKind, RunCreated, RunEvent};
use stacklab_server::{app, AppState};
use tower::ServiceExt;

/// The events of a complete Server-Sent Events body, in order.
pub fn parse_sse(body: &[u8]) -> Vec<RunEvent> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

/// `POST /api/runs` for `demo`, then reads `/api/runs/{id}/events` to its
/// end (within `limit`). Returns the run id and every event.
pub async fn run_over_http(
    state: &AppState,
    demo: &str,
    limit: Duration,
) -> (String, Vec<RunEvent>) {
    let req = Request::post("/api/runs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(r#"{{"demo":"{demo}"}}"#)))
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let RunCreated { id } = serde_json::from_slice(&body).unwrap();

    // The event stream replays from the start and ends after `finished`.
    let req = Request::get(format!("/api/runs/{id}/events"))
        .body(Body::empty())
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let body = tokio::time::timeout(limit, res.into_body().collect())
        .await
        .expect("the event stream ends")
        .unwrap()
        .to_bytes();
    (id, parse_sse(&body))
}

/// The phase ids among `events`, in order.
pub fn phases(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Phase { phase, .. } => Some(phase.clone()),
            _ => None,
        })
        .collect()
}

/// `GET uri`: status, headers and body as text.
pub async fn get(state: AppState, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let res = app(state)
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}
