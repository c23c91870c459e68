//! Helpers shared by the server's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

pub mod nginx;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
    run_request_over_http(state, &format!(r#"{{"demo":"{demo}"}}"#), limit).await
}

/// As [`run_over_http`] with the whole request body given.
pub async fn run_request_over_http(
    state: &AppState,
    body: &str,
    limit: Duration,
) -> (String, Vec<RunEvent>) {
    let req = Request::post("/api/runs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
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

/// Whether `/dev/kvm` is here; on a CI machine it must be.
pub fn kvm_present() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "/dev/kvm is missing on a CI machine"
    );
    eprintln!("skipped: /dev/kvm is absent on this host");
    false
}

/// The phases among `events`, in order.
pub fn phases(events: &[RunEvent]) -> Vec<stacklab_api::Phase> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Phase { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect()
}

/// `GET uri`: status, headers and body as text.
pub async fn get(state: AppState, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    send(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// `GET uri` with the instructor's token.
pub async fn get_as_instructor(
    state: AppState,
    uri: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let bearer = format!("Bearer {}", state.instructor_token);
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, bearer)
        .body(Body::empty())
        .unwrap();
    send(state, req).await
}

/// `method uri` with a JSON body (and the instructor's token if `token`).
pub async fn send_json(
    state: AppState,
    method: &str,
    uri: &str,
    body: &str,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    send(state, req.body(Body::from(body.to_owned())).unwrap()).await
}

/// Sends `req` to the app: status, headers and body as text.
pub async fn send(
    state: AppState,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let res = app(state).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The run's outcome, which must be `Ready`: its measurements, facts and
/// missing readings.
pub fn ready_outcome(events: &[RunEvent]) -> &stacklab_api::Outcome {
    let outcome = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Finished { outcome } => Some(outcome),
            _ => None,
        })
        .expect("the run finished");
    assert!(
        matches!(outcome, stacklab_api::Outcome::Ready { .. }),
        "{outcome:?}"
    );
    outcome
}

/// A real run's timeline has what its figures are derived from: the
/// clock starts at `accepted`, the work at `slot_granted`, and the
/// platform's and the workload's shares and the wait in line are there
/// (their values are checked against planted delays in the engine's own
/// tests, where the truth is known).
pub fn assert_timed_from_the_slot(events: &[RunEvent], demo: stacklab_api::DemoId) {
    use stacklab_api::{Metric, Phase};
    let order = phases(events);
    assert_eq!(
        order[..2],
        [Phase::Accepted, Phase::SlotGranted],
        "the clock starts at request accepted, the work when the run leaves the queue"
    );
    assert!(phase_at(events, Phase::Accepted) < 1000.0);
    assert!(phase_at(events, demo.platform_phase()) <= phase_at(events, demo.ready_phase()));
    let outcome = ready_outcome(events);
    for m in [
        Metric::StartToReady,
        Metric::PlatformShare,
        Metric::WorkloadShare,
        Metric::QueueWait,
    ] {
        let v = outcome
            .value(m)
            .unwrap_or_else(|| panic!("no {m}: {outcome:?}"));
        assert!(v >= 0.0, "{m} = {v}");
    }
    assert!(outcome.value(Metric::PlatformShare).unwrap() > 0.0);
}

/// When phase `which` was reached, in µs on the run's clock.
pub fn phase_at(events: &[RunEvent], which: stacklab_api::Phase) -> f64 {
    stacklab_api::phase_at(events, which)
        .map(|us| us as f64)
        .unwrap_or_else(|| panic!("no {which} phase in {:?}", phases(events)))
}

/// The instructor token the spawned servers are given.
pub const INSTRUCTOR_TOKEN: &str = "binary-test-instructor-token";

/// Starts `stacklab serve` on a free port; returns it and its address.
/// The caller waits for the child; on a panic here the test fails anyway.
pub fn spawn_server(data_dir: &Path) -> (Child, String) {
    spawn_server_with(data_dir, &[])
}

/// As [`spawn_server`], with more `serve` flags.
pub fn spawn_server_with(data_dir: &Path, extra: &[&str]) -> (Child, String) {
    spawn_server_env(data_dir, extra, &[])
}

/// As [`spawn_server_with`], with more environment variables.
#[allow(clippy::zombie_processes)]
pub fn spawn_server_env(data_dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .envs(envs.iter().copied())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_remove("STACKLAB_STATIC_DIR")
        .env("RUST_LOG", "stacklab_server=info")
        .env("STACKLAB_INSTRUCTOR_TOKEN", INSTRUCTOR_TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if log.read_line(&mut line).unwrap() == 0 {
            let status = child.wait();
            panic!("stacklab exited ({status:?}) before listening; log: {lines:?}");
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.trim().to_owned();
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in log.lines() {});
            return (child, addr);
        }
        lines.push(line);
    }
}

/// Writes `n` finished (failed, eventless) micro-VM runs of `learner` into
/// `history`, ids `run-000000` upwards: a long history to export.
pub async fn fill_history(history: &stacklab_server::store::History, n: usize, learner: &str) {
    let records: Vec<_> = (0..n)
        .map(|i| stacklab_api::RunRecord {
            id: format!("run-{i:06}"),
            demo: stacklab_api::DemoId::MicroVm,
            state: stacklab_api::RunState::Failed,
            accepted_at_ms: None,
            events: vec![],
        })
        .collect();
    history
        .insert_finished(&records, Some(learner))
        .await
        .unwrap();
}

/// The course's lessons, rendered from the repository's Markdown (what a
/// page must carry, known independently of the server).
#[allow(dead_code)]
pub fn lessons() -> Vec<stacklab_content::Lesson> {
    use stacklab_content::render::{load_dir, load_glossary};
    let content = Path::new(env!("CARGO_MANIFEST_DIR")).join("../content");
    let glossary = load_glossary(&content.join("glossary.yaml")).unwrap();
    load_dir(&content.join("lessons"), &glossary).unwrap()
}
