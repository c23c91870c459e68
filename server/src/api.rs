//! The runs API: start a demo, watch its phases, read its result.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequest, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use stacklab_api::{CreateRun, DemoId, EventKind, RunCreated, RunEvent, RunRecord};

use crate::container::image;
use crate::error::AppError;
use crate::AppState;

/// `Json` whose rejections are [`AppError`]s (JSON bodies, right status).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

/// How long to wait for the Docker engine before calling it unreachable.
const DOCKER_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `POST /api/runs`.
pub async fn create_run(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateRun>,
) -> Result<(StatusCode, Json<RunCreated>), AppError> {
    let run = match request.demo {
        DemoId::PostgresContainer => {
            let lab = &state.containers;
            let docker = state
                .docker
                .as_ref()
                .ok_or_else(docker_down("no Docker client is configured"))?;
            match tokio::time::timeout(DOCKER_PING_TIMEOUT, docker.ping()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(docker_down(&e.to_string())()),
                Err(_) => return Err(docker_down("no answer within 2 s")()),
            }
            image::find(docker)
                .await
                .map_err(|e| AppError::Unavailable {
                    code: "image_missing",
                    message: e.to_string(),
                })?;
            let runtime = lab
                .runtime
                .clone()
                .ok_or_else(docker_down("no Docker client is configured"))?;
            state
                .runs
                .start(request.demo, runtime, lab.queue.clone(), lab.deadline)
        }
        DemoId::MicroVm => {
            let lab = &state.vms;
            let probe = tokio::task::spawn_blocking(stacklab_vmm::host::probe).await;
            if let Ok(Err(e)) = probe {
                return Err(AppError::Unavailable {
                    code: "kvm_unavailable",
                    message: format!("This server cannot run virtual machines: {e}."),
                });
            }
            let runtime = lab.runtime.clone().map_err(|why| AppError::Unavailable {
                code: "vmm_missing",
                message: format!("The micro-VM demo is not installed on this server: {why}."),
            })?;
            state
                .runs
                .start(request.demo, runtime, lab.queue.clone(), lab.deadline)
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(RunCreated {
            id: run.id().to_owned(),
        }),
    ))
}

fn docker_down(why: &str) -> impl FnOnce() -> AppError + '_ {
    move || {
        AppError::Unavailable {
        code: "docker_unavailable",
        message: format!(
            "The Docker engine is not reachable ({why}), so the container demo cannot run. Start it as root with `dockerd &` (or `./dev serve`, which starts it), then try again."
        ),
    }
    }
}

fn unknown_run(id: &str) -> AppError {
    AppError::NotFound(format!(
        "no run with id {id:?} (runs are kept while the server runs)"
    ))
}

/// `GET /api/runs/{id}`.
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, AppError> {
    let run = state.runs.get(&id).ok_or_else(|| unknown_run(&id))?;
    Ok(Json(run.record()))
}

/// `GET /api/runs/{id}/events`: every event so far, then live ones, as
/// Server-Sent Events; the stream ends after `finished`. A client that
/// disconnects before the end cancels the run (its container is removed).
pub async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let run = state.runs.get(&id).ok_or_else(|| unknown_run(&id))?;
    let watcher = run.watch();
    let changes = run.subscribe();
    struct Cursor {
        run: std::sync::Arc<crate::runs::Run>,
        changes: tokio::sync::watch::Receiver<usize>,
        next: usize,
        buffered: VecDeque<RunEvent>,
        finished: bool,
        _watcher: crate::runs::WatchGuard,
    }
    let cursor = Cursor {
        run,
        changes,
        next: 0,
        buffered: VecDeque::new(),
        finished: false,
        _watcher: watcher,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(event) = c.buffered.pop_front() {
                return Some((Ok(sse_event(&event)), c));
            }
            if c.finished {
                return None;
            }
            let (events, finished) = c.run.events_since(c.next);
            c.next += events.len();
            c.buffered.extend(events);
            c.finished = finished;
            if c.buffered.is_empty() && !finished && c.changes.changed().await.is_err() {
                return None;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn sse_event(event: &RunEvent) -> Event {
    let name = match event.kind {
        EventKind::Queued { .. } => "queued",
        EventKind::Phase { .. } => "phase",
        EventKind::Log { .. } => "log",
        EventKind::Finished { .. } => "finished",
    };
    Event::default()
        .event(name)
        .id(event.seq.to_string())
        .json_data(event)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}
