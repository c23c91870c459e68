//! The runs API: start a demo, watch its phases, read its result.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use std::sync::Arc;

use stacklab_api::{
    valid_learner, CreateRun, DemoId, EventKind, RunCreated, RunEvent, RunPage, RunRecord,
};

use crate::container::image;
use crate::density::Density;
use crate::error::AppError;
use crate::history::{self, Filter, HistoryError};
use crate::runs::{Queue, Run};
use crate::runtime::Runtime;
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
    if let Some(learner) = &request.learner {
        if !valid_learner(learner) {
            return Err(AppError::BadRequest {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: "learner must be 8 to 64 characters of A-Z, a-z, 0-9, '-' and '_'".into(),
            });
        }
    }
    let demo = request.demo;
    let base = demo.density_of().unwrap_or(demo);
    let run = match base {
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
            start(&state, request, runtime, &lab.queue, lab.deadline)
        }
        DemoId::LinuxVm | DemoId::PostgresVm => {
            let lab = &state.vms;
            let runtime = if demo == DemoId::LinuxVm {
                &lab.linux
            } else {
                &lab.postgres
            };
            let probe = tokio::task::spawn_blocking(stacklab_vmm::host::probe)
                .await
                .map_err(|e| AppError::Internal(format!("KVM probe failed: {e}")))?;
            let runtime = linux_guest_check(&probe, runtime)
                .map_err(|(code, message)| AppError::Unavailable { code, message })?;
            start(&state, request, runtime, &lab.queue, lab.deadline)
        }
        _ => {
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
            start(&state, request, runtime, &lab.queue, lab.deadline)
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(RunCreated {
            id: run.id().to_owned(),
        }),
    ))
}

/// Starts `request` on `runtime`: one instance behind the demo's own queue,
/// or a density sweep behind the one-at-a-time density queue.
fn start<R: Runtime>(
    state: &AppState,
    request: CreateRun,
    runtime: Arc<R>,
    queue: &Arc<Queue>,
    deadline: Duration,
) -> Arc<Run> {
    let learner = request.learner.as_deref();
    match request.demo.density_of() {
        None => state
            .runs
            .start_for(learner, request.demo, runtime, queue.clone(), deadline),
        Some(base) => state.runs.start_for(
            learner,
            request.demo,
            Arc::new(Density::new(runtime, base, DemoId::DENSITY_MAX)),
            state.density_queue.clone(),
            deadline * DENSITY_DEADLINE_FACTOR,
        ),
    }
}

/// Whether a Linux guest can run, given the KVM probe and its runtime: the
/// runtime, or `Err((code, message))` saying why not, before anything is
/// tried.
pub fn linux_guest_check<T: Clone>(
    probe: &Result<stacklab_vmm::host::KvmHost, stacklab_vmm::host::ProbeError>,
    runtime: &Result<T, String>,
) -> Result<T, (&'static str, String)> {
    let host = probe.as_ref().map_err(|e| {
        (
            "kvm_unavailable",
            format!("This server cannot run virtual machines: {e}."),
        )
    })?;
    if host.backing == stacklab_api::KvmBacking::NestedPvm {
        return Err(("linux_guest_unsupported", LINUX_ON_NESTED_PVM.into()));
    }
    runtime.clone().map_err(|why| {
        (
            "linux_guest_missing",
            format!("The Linux guest is not installed on this server: {why}."),
        )
    })
}

/// Why a Linux guest cannot run on a kvm-pvm host, for a learner.
pub const LINUX_ON_NESTED_PVM: &str = "This server is itself a virtual machine, and the KVM it offers (kvm-pvm) emulates a guest kernel's privileged code one instruction at a time, without the SSE, XSAVE and other instructions a Linux kernel uses at boot. So a real Linux guest cannot boot here: the tiny micro-VM demo can, because its kernel was written to need none of that. On a server with hardware virtualisation (Intel VT-x or AMD-V) this demo boots Debian's kernel; the project's tests boot it under full emulation to prove the path works.";

/// A density sweep starts 1 + 2 + … + 5 = 15 instances, five at most at
/// once; its deadline is this many single-run deadlines.
const DENSITY_DEADLINE_FACTOR: u32 = 3;

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
    AppError::NotFound(format!("no run with id {id:?}"))
}

fn history_error(e: HistoryError) -> AppError {
    tracing::error!("{e}");
    AppError::Internal(format!("the run history could not be read: {e}"))
}

/// Runs `f` on the history off the async threads.
async fn with_history<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&history::History) -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, AppError> {
    let history = state.runs.history().clone();
    tokio::task::spawn_blocking(move || f(&history))
        .await
        .map_err(|e| AppError::Internal(format!("history task failed: {e}")))?
        .map_err(history_error)
}

/// `GET /api/runs/{id}`: a live run from memory, a finished one from memory
/// or, after a restart, from the history.
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, AppError> {
    if let Some(run) = state.runs.get(&id) {
        return Ok(Json(run.record()));
    }
    let key = id.clone();
    with_history(&state, move |h| h.get(&key))
        .await?
        .map(Json)
        .ok_or_else(|| unknown_run(&id))
}

/// Query of `GET /api/runs` and `GET /api/runs/export`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// Only runs older than this `seq` (from the previous page's `next_before`).
    before: Option<i64>,
    /// Only this learner's runs.
    learner: Option<String>,
    /// Export format: `csv` or `json` (export only).
    format: Option<String>,
}

impl ListQuery {
    fn filter(&self) -> Result<Filter, AppError> {
        let bad = |message: String| AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message,
        };
        let limit = self.limit.unwrap_or(50);
        if !(1..=history::MAX_PAGE).contains(&limit) {
            return Err(bad(format!(
                "limit must be between 1 and {}, not {limit}",
                history::MAX_PAGE
            )));
        }
        if let Some(l) = &self.learner {
            if !valid_learner(l) {
                return Err(bad(
                    "learner must be 8 to 64 characters of A-Z, a-z, 0-9, '-' and '_'".into(),
                ));
            }
        }
        Ok(Filter {
            learner: self.learner.clone(),
            before: self.before,
            limit,
        })
    }
}

/// `GET /api/runs?limit=…&before=…&learner=…`: the history, newest first.
pub async fn list_runs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<RunPage>, AppError> {
    if query.format.is_some() {
        return Err(AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: "format is for /api/runs/export".into(),
        });
    }
    let filter = query.filter()?;
    Ok(Json(with_history(&state, move |h| h.list(&filter)).await?))
}

/// `GET /api/runs/export?format=csv|json&learner=…`: the whole history (or
/// one learner's) as a download.
pub async fn export_runs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::response::Response, AppError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let filter = query.filter()?;
    let format = query.format.as_deref().unwrap_or("csv");
    if !matches!(format, "csv" | "json") {
        return Err(AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: format!("format must be csv or json, not {format:?}"),
        });
    }
    let runs = with_history(&state, move |h| h.all(&filter)).await?;
    let (body, mime) = if format == "csv" {
        (history::to_csv(&runs), "text/csv; charset=utf-8")
    } else {
        (
            serde_json::to_string_pretty(&runs).expect("summaries always serialise"),
            "application/json",
        )
    };
    let disposition = format!("attachment; filename=\"stacklab-runs.{format}\"");
    Ok((
        [
            (header::CONTENT_TYPE, mime.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// `Query` whose rejections are [`AppError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

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
