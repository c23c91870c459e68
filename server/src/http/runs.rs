//! The runs API: start a demo, watch its phases, read its result.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures_util::StreamExt;
use std::sync::Arc;

use stacklab_api::{
    valid_learner, CreateRun, ErrorBody, EventKind, RunCreated, RunEvent, RunPage, RunRecord,
    RunSummary, LEARNER_RULE,
};

use super::client::ClientKey;
use super::error::AppError;
use super::extract::{ApiJson, ApiQuery};
use super::openapi::BodyErrors;
use super::streams::OpenStream;
use super::{replicas, AppState};
use crate::engine::relay::RemoteCursor;
use crate::engine::{Requester, Run, WatchGuard};
use crate::store::{self, Filter, History, HistoryError};

/// `POST /api/runs`.
///
/// Limits count by the learner inside a class and by the client's address
/// outside one: at most [`crate::engine::PER_LEARNER_PER_DEMO`] unfinished
/// runs of a demo (429 `too_many_runs`), and run requests at the pace of
/// [`super::limits::RateLimit`] (429 `rate_limited`); both with
/// `Retry-After`. The client is the one [`ClientKey`] resolves (behind a
/// trusted proxy, the address it forwarded). Density sweeps: see
/// [`density_allowed`].
#[utoipa::path(post, path = "/runs", tag = "runs",
    request_body = CreateRun,
    responses(
        (status = 202, description = "Accepted: follow its events", body = RunCreated),
        (status = 400, description = "A bad learner id or class code", body = ErrorBody),
        (status = 403, description = "A class run by a learner who did not join it (`not_a_member`) or was removed from it (`removed_from_class`), or a density sweep by a learner in a class (`density_for_instructor`)", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
        (status = 410, description = "The class has expired", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Too many runs going or requested, or density sweeps outside a class (`density_limited`); with `Retry-After`", body = ErrorBody),
        (status = 503, description = "This server cannot run that demo now (Docker down, no KVM, image missing), or its queue is full (`queue_full`, `Retry-After`)", body = ErrorBody),
    ))]
pub async fn create_run(
    State(state): State<AppState>,
    client: ClientKey,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateRun>,
) -> Result<axum::response::Response, AppError> {
    if let Some(learner) = &request.learner {
        if !valid_learner(learner) {
            return Err(AppError::BadRequest {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: LEARNER_RULE.into(),
            });
        }
    }
    if let Some(why) = guesses_invalid(request.demo, &request.guesses) {
        return Err(AppError::BadRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: why,
        });
    }
    let instructor = super::auth::Instructor::presented(&headers, &state.instructor_token);
    let class = class_of(&state, &request, instructor).await?;
    density_allowed(&state, &request, &class, instructor, &client)?;
    let (address, client_ip) = (client.0, client.1);
    let requester = Requester {
        who: match (&class, &request.learner) {
            (Some(_), Some(learner)) => format!("learner {learner}"),
            (Some(_), None) => "instructor".to_owned(),
            _ => address,
        },
        learner: request.learner.clone(),
        class: class.clone(),
        trace: request.trace,
    };
    let run_class = class;
    if let Err(wait) = state.run_limit.take(&requester.who) {
        let retry_after_s = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(AppError::RateLimited {
            message: format!(
                "Too many run requests from here in a short time; the next one is taken in {retry_after_s} s."
            ),
            retry_after_s,
        });
    }
    let run = match state.labs.start(&state.runs, requester, request.demo).await {
        Ok(run) => run,
        // Not on this host: a replica that can takes it (see `replicas`).
        Err(crate::engine::Refused::Unavailable(why))
            if state.runs.history().shared() && !headers.contains_key(replicas::HANDED_BY) =>
        {
            let body = serde_json::to_string(&request).unwrap_or_default();
            let authorization = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let Some((to, status, answer)) = replicas::hand_off(
                &state,
                request.demo,
                &body,
                authorization,
                client_ip,
                state.host_lost_after,
            )
            .await
            else {
                return Err(why.into());
            };
            tracing::info!(
                "a {} run this host cannot serve was handed to replica {to}",
                request.demo
            );
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return Ok((
                status,
                [
                    (
                        axum::http::header::CONTENT_TYPE,
                        "application/json".to_owned(),
                    ),
                    (axum::http::HeaderName::from_static(replicas::HANDED_TO), to),
                ],
                answer,
            )
                .into_response());
        }
        Err(e) => return Err(e.into()),
    };
    // In a class, the guesses locked at the click go with the run, for the
    // instructor (never on the room's stream).
    if let (Some(class), Some(learner)) = (run_class, &request.learner) {
        if !request.guesses.is_empty() {
            stored(state.runs.history().guesses_sent(
                &class,
                learner,
                run.id(),
                request.demo,
                &request.guesses,
            ))
            .await?;
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RunCreated {
            id: run.id().to_owned(),
        }),
    )
        .into_response())
}

/// Why a run's guesses cannot be taken (out of range, a quantity no card
/// of the demo asks, or one quantity twice), if they cannot.
fn guesses_invalid(demo: stacklab_api::DemoId, guesses: &[stacklab_api::Guess]) -> Option<String> {
    for (i, g) in guesses.iter().enumerate() {
        if let Some(why) = g.invalid_for(demo) {
            return Some(why);
        }
        if guesses[..i].iter().any(|o| o.quantity == g.quantity) {
            return Some(format!("guesses name {} twice", g.quantity));
        }
    }
    None
}

/// Whether this density sweep may start: several demos at once holding
/// every slot of their queue, so in a class only the instructor runs one
/// (for the whole room; 403 `density_for_instructor` for a learner), and
/// outside a class each client address gets a few and then one per
/// [`super::limits::DENSITY_EVERY`] (429 `density_limited`). The
/// instructor's token is not limited.
fn density_allowed(
    state: &AppState,
    request: &CreateRun,
    class: &Option<String>,
    instructor: bool,
    client: &ClientKey,
) -> Result<(), AppError> {
    if request.demo.density_of().is_none() {
        return Ok(());
    }
    if class.is_some() && request.learner.is_some() {
        return Err(AppError::Forbidden {
            code: stacklab_api::ErrorCode::DensityForInstructor,
            message: "in a class the instructor runs the density sweep once for the whole room; \
                      its results appear on the room's page"
                .into(),
        });
    }
    if instructor {
        return Ok(());
    }
    state.density_limit.take(&client.0).map_err(|wait| {
        let retry_after_s = wait.as_secs_f64().ceil().max(1.0) as u64;
        AppError::DensityLimited {
            message: format!(
                "A density sweep holds every slot of its queue while it runs, so each address may start one every {} minutes; the next is taken in {retry_after_s} s.",
                super::limits::DENSITY_EVERY.as_secs() / 60
            ),
            retry_after_s,
        }
    })
}

/// The class a run request counts for: `None` without one, or when it has
/// expired (the run is then the learner's own); 403 when the learner has
/// not joined it. The instructor (token, no learner) runs a demo once for
/// the whole room, e.g. the density sweep.
async fn class_of(
    state: &AppState,
    request: &CreateRun,
    instructor: bool,
) -> Result<Option<String>, AppError> {
    let Some(raw) = &request.class else {
        return Ok(None);
    };
    let not_member = || {
        AppError::NotAMember(
            "this browser has not joined that class; join it first with its code".into(),
        )
    };
    if !stacklab_api::valid_class_code(raw) {
        return Err(not_member());
    }
    let Some(learner) = &request.learner else {
        if !instructor {
            return Err(not_member());
        }
        let code = raw.to_ascii_uppercase();
        let class = stored(state.runs.history().class(&code)).await?;
        return match class {
            Some(c) if c.expires_at_ms > store::now_ms() => Ok(Some(c.code)),
            Some(_) => Err(AppError::ClassExpired(
                "this class has ended; its runs stay, new ones are not added".into(),
            )),
            None => Err(AppError::NotFound(format!("no class has the code {raw:?}"))),
        };
    };
    let (code, learner) = (raw.to_ascii_uppercase(), learner.clone());
    let h = state.runs.history();
    let found = stored(async {
        let open = h.open_class_of(&code, &learner).await?;
        let removed = open.is_none() && h.was_removed(&code, &learner).await?;
        Ok((open, h.class(&code).await?, removed))
    })
    .await?;
    match found {
        (Some(open), _, _) => Ok(Some(open.code)),
        (None, Some(class), _) if class.expires_at_ms <= store::now_ms() => Ok(None),
        (None, Some(_), true) => Err(AppError::RemovedFromClass(
            "the instructor removed you from this class: runs in it are no longer yours to start"
                .into(),
        )),
        _ => Err(not_member()),
    }
}

fn unknown_run(id: &str) -> AppError {
    AppError::NotFound(format!("no run with id {id:?}"))
}

/// The client gets a sentence; the log gets the cause (which names the
/// database file: no server path in a response). A store that did not
/// answer within its bounds is a 503 (`request_timeout`, with `Retry-After`):
/// asking again shortly may work.
pub(super) fn history_error(e: HistoryError) -> AppError {
    tracing::error!("{e}");
    if e.timed_out() {
        return AppError::StoreBusy(
            "the server's run history did not answer in time (it is busy); try again in a moment"
                .into(),
        );
    }
    AppError::Internal(
        "the server's run history could not be read or written; the error is in the server's log"
            .into(),
    )
}

/// Awaits a store call (on the store's pool: no async worker waits on
/// the database), its failure as the client's answer.
pub(super) async fn stored<T>(
    call: impl std::future::Future<Output = Result<T, HistoryError>>,
) -> Result<T, AppError> {
    call.await.map_err(history_error)
}

/// `GET /api/runs/{id}`: a live run from memory, a finished one from memory
/// or, after a restart, from the history.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run, live or from history", body = RunRecord),
        (status = 404, description = "No such run", body = ErrorBody),
    ))]
pub async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, AppError> {
    if let Some(run) = state.runs.get(&id) {
        return Ok(Json(run.record()));
    }
    stored(state.runs.history().get(&id))
        .await?
        .map(Json)
        .ok_or_else(|| unknown_run(&id))
}

/// Query of `GET /api/runs` and `GET /api/runs/export`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// Only runs older than this `seq` (from the previous page's `next_before`).
    before: Option<i64>,
    /// Only this learner's runs.
    #[param(pattern = r"^[A-Za-z0-9_-]{8,64}$")]
    learner: Option<String>,
    /// Export format: `csv` or `json` (export only).
    #[param(pattern = "^(csv|json)$")]
    format: Option<String>,
}

impl ListQuery {
    /// What to select: one learner's runs, or (with the instructor token)
    /// everyone's.
    fn filter(&self, state: &AppState, headers: &HeaderMap) -> Result<Filter, AppError> {
        let bad = |message: String| AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message,
        };
        let limit = self.limit.unwrap_or(50);
        if !(1..=store::MAX_PAGE).contains(&limit) {
            return Err(bad(format!(
                "limit must be between 1 and {}, not {limit}",
                store::MAX_PAGE
            )));
        }
        if let Some(l) = &self.learner {
            if !valid_learner(l) {
                return Err(bad(LEARNER_RULE.into()));
            }
        }
        if self.learner.is_none()
            && !super::auth::Instructor::presented(headers, &state.instructor_token)
        {
            return Err(AppError::InstructorOnly(
                "the whole history is the instructor's to see: pass learner=<your learner id> for your own runs, or send the instructor token".into(),
            ));
        }
        Ok(Filter {
            learner: self.learner.clone(),
            class: None,
            before: self.before,
            limit,
        })
    }
}

/// `GET /api/runs?limit=…&before=…&learner=…`: a learner's history (or,
/// for the instructor, everyone's), newest first.
#[utoipa::path(get, path = "/runs", tag = "runs",
    params(ListQuery),
    security((), ("instructor" = [])),
    responses(
        (status = 200, description = "A page of runs, newest first", body = RunPage),
        (status = 400, description = "A bad limit, cursor or learner id", body = ErrorBody),
        (status = 401, description = "Everyone's runs need the instructor token", body = ErrorBody),
    ))]
pub async fn list_runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<RunPage>, AppError> {
    if query.format.is_some() {
        return Err(AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: "format is for /api/runs/export".into(),
        });
    }
    let filter = query.filter(&state, &headers)?;
    Ok(Json(stored(state.runs.history().list(&filter)).await?))
}

/// `GET /api/runs/export?format=csv|json&learner=…`: one learner's history
/// (or, for the instructor, everyone's) as a download, streamed page by
/// page.
#[utoipa::path(get, path = "/runs/export", tag = "runs",
    params(ListQuery),
    security((), ("instructor" = [])),
    responses(
        (status = 200, description = "The runs as a download", content(
            (String = "text/csv"),
            (Vec<RunSummary> = "application/json"),
        )),
        (status = 400, description = "A bad format, limit or learner id", body = ErrorBody),
        (status = 401, description = "Everyone's runs need the instructor token", body = ErrorBody),
    ))]
pub async fn export_runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::response::Response, AppError> {
    let format = query.format.as_deref().unwrap_or("csv");
    if !matches!(format, "csv" | "json") {
        return Err(AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: format!("format must be csv or json, not {format:?}"),
        });
    }
    let filter = query.filter(&state, &headers)?;
    let csv = format == "csv";
    let mime = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    let history = state.runs.history().clone();
    let filter = Filter {
        limit: EXPORT_PAGE,
        ..filter
    };
    // The first page is read before the answer starts: a store that cannot
    // answer now gets a clear 503 with its reason, not a download that ends
    // before its first byte (the connection closed without a response).
    let first = stored(history.list(&filter)).await?;
    let body = export_stream(history, filter, first, csv);
    Ok(attachment(
        &format!("stacklab-runs.{format}"),
        mime,
        axum::body::Body::from_stream(body),
    ))
}

/// Runs per page of an export: each page is one store call and one chunk
/// of the body; small pages keep what a page allocates (on the store's
/// thread, then on the async worker that writes it) small.
const EXPORT_PAGE: u32 = 100;

/// Where an export stands.
enum Export {
    /// Nothing sent yet: the header, then this first page (read before the
    /// answer started).
    Opening { filter: Filter, page: RunPage },
    /// Pages from this filter's cursor on (`first`: no run written yet).
    Pages { filter: Filter, first: bool },
    /// The last page was sent: the closing bracket (JSON) is next.
    Closing,
    /// Over (its end or its error sent).
    Done,
}

/// The export's body, written page by page as the client reads it, so a
/// long history never sits in memory whole: each page after the first is
/// one call on the store's pool (a connection is held for that call only,
/// never while the client reads; a client that stalls holds no connection
/// and no thread), and a client that leaves stops the reading. The whole
/// export is bounded by the store's `export` limit (5 minutes by default,
/// counted from the request): past it the body ends with an error (the
/// client sees the download cut short, not a shorter complete file).
fn export_stream(
    history: History,
    filter: Filter,
    first_page: RunPage,
    csv: bool,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> + Send {
    let bound = history.limits().export;
    let deadline = tokio::time::Instant::now() + bound;
    let over = move || {
        std::io::Error::other(format!(
            "the export took longer than its bound of {:?} and was cut short",
            bound
        ))
    };
    let start = Export::Opening {
        filter,
        page: first_page,
    };
    futures_util::stream::unfold(start, move |stage| {
        let history = history.clone();
        async move {
            if tokio::time::Instant::now() >= deadline && !matches!(stage, Export::Done) {
                tracing::warn!("export cut short: past its bound");
                return Some((Err(over()), Export::Done));
            }
            match stage {
                Export::Done => None,
                Export::Opening { filter, page } => {
                    let open = if csv { store::csv_header() } else { "[".into() };
                    let (chunk, next) = export_page(page, filter, true, csv);
                    Some((Ok(open + &chunk), next))
                }
                Export::Closing => Some((Ok("\n]\n".into()), Export::Done)),
                Export::Pages { filter, first } => {
                    let page = match tokio::time::timeout_at(deadline, history.list(&filter)).await
                    {
                        Ok(Ok(page)) => page,
                        Ok(Err(e)) => {
                            tracing::error!("export cut short: {e}");
                            return Some((
                                Err(std::io::Error::other("the run history failed")),
                                Export::Done,
                            ));
                        }
                        Err(_) => {
                            tracing::warn!("export cut short: past its bound");
                            return Some((Err(over()), Export::Done));
                        }
                    };
                    let (chunk, next) = export_page(page, filter, first, csv);
                    Some((Ok(chunk), next))
                }
            }
        }
    })
    // The compression layer polls a body once more after its end; an
    // unfused `unfold` panics then (and the client's connection drops).
    .fuse()
}

/// One page of an export as text, and what comes after it.
fn export_page(page: RunPage, mut filter: Filter, mut first: bool, csv: bool) -> (String, Export) {
    let chunk = if csv {
        store::csv_rows(&page.runs)
    } else {
        let mut out = String::new();
        for r in &page.runs {
            out.push_str(if first { "\n" } else { ",\n" });
            first = false;
            out.push_str(&serde_json::to_string(r).expect("summaries always serialise"));
        }
        out
    };
    let next = match page.next_before {
        Some(b) => {
            filter.before = Some(b);
            Export::Pages { filter, first }
        }
        None if csv => Export::Done,
        None => Export::Closing,
    };
    (chunk, next)
}

/// A download: `body` as `mime`, saved as `filename`.
pub(super) fn attachment(
    filename: &str,
    mime: &str,
    body: impl Into<axum::body::Body>,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    (
        [
            (header::CONTENT_TYPE, mime.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body.into(),
    )
        .into_response()
}

/// `GET /api/runs/{id}/events`: every event so far (or, with
/// `Last-Event-ID`, those after it), then live ones, as Server-Sent Events;
/// the stream ends after `finished`. A run whose last client has been gone
/// for the grace period ([`crate::engine::WATCH_GRACE`]) is cancelled (its
/// container is removed); one that reconnects within it loses nothing.
#[utoipa::path(get, path = "/runs/{id}/events", tag = "runs",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event (its `seq`)"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events `queued`, `phase`, `log`, `x_ray` (a single run held at ready), then `finished`; each `data` is a RunEvent", body = String, content_type = "text/event-stream"),
        (status = 404, description = "No such run in progress", body = ErrorBody),
        (status = 429, description = "Too many event streams open (`Retry-After`)", body = ErrorBody),
    ))]
pub async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    client: ClientKey,
    headers: HeaderMap,
) -> Result<Sse<KeepAliveStream<EventStream>>, AppError> {
    // A reconnecting EventSource names the last event it saw: go on after
    // it (events are numbered from 0 in order, so `seq` is an index).
    let next = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |last| last + 1);
    let Some(run) = state.runs.get(&id) else {
        return remote_events(state, id, client, next).await;
    };
    // Counted like its run's limits: per learner inside a class (a room
    // behind one NAT), per address outside one.
    let open = state
        .streams
        .try_open(&format!("{client} {}", run.owner()))?;
    let watcher = run.watch();
    let changes = run.subscribe();
    struct Cursor {
        run: Arc<Run>,
        changes: tokio::sync::watch::Receiver<usize>,
        next: usize,
        buffered: VecDeque<RunEvent>,
        finished: bool,
        _watcher: WatchGuard,
        _open: OpenStream,
    }
    let cursor = Cursor {
        run,
        changes,
        next,
        buffered: VecDeque::new(),
        finished: false,
        _watcher: watcher,
        _open: open,
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
    Ok(Sse::new(stream.boxed()).keep_alive(KeepAlive::default()))
}

/// The event stream of a run another replica runs (through the shared
/// store; see `engine::relay`), or 404 when no replica has it.
async fn remote_events(
    state: AppState,
    id: String,
    client: ClientKey,
    next: usize,
) -> Result<Sse<KeepAliveStream<EventStream>>, AppError> {
    let history = state.runs.history().clone();
    let (Some(notices), true) = (&state.notices, history.shared()) else {
        return Err(unknown_run(&id));
    };
    if stored(history.get(&id)).await?.is_none() {
        return Err(unknown_run(&id));
    }
    let open = state.streams.try_open(&format!("{client} remote"))?;
    let cursor = RemoteCursor::new(history, id, next as u32, notices.subscribe());
    let stream = futures_util::stream::unfold(
        (cursor, VecDeque::<RunEvent>::new(), open),
        |(mut cursor, mut buffered, open)| async move {
            if buffered.is_empty() {
                buffered.extend(cursor.next_events().await?);
            }
            let event = buffered.pop_front()?;
            Some((Ok(sse_event(&event)), (cursor, buffered, open)))
        },
    );
    Ok(Sse::new(stream.boxed()).keep_alive(KeepAlive::default()))
}

/// A run's events as Server-Sent Events, local or remote.
type EventStream = futures_util::stream::BoxStream<'static, Result<Event, Infallible>>;

/// The names of a run's Server-Sent Events, as the OpenAPI document lists
/// them (the fuzz test checks each event sent against that list).
pub(super) const RUN_EVENT_NAMES: [&str; 5] = ["queued", "phase", "log", "x_ray", "finished"];

fn sse_event(event: &RunEvent) -> Event {
    let name = RUN_EVENT_NAMES[match event.kind {
        EventKind::Queued { .. } => 0,
        EventKind::Phase { .. } => 1,
        EventKind::Log { .. } => 2,
        EventKind::XRay { .. } => 3,
        EventKind::Finished { .. } => 4,
    }];
    Event::default()
        .event(name)
        .id(event.seq.to_string())
        .json_data(event)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_history_failure_names_no_server_path_in_the_response() {
        let e = HistoryError::Database {
            store: "SQLite /srv/secret/data/history.sqlite3".into(),
            source: crate::store::sql::DbError::new(
                "/srv/secret/data/history.sqlite3: locked".into(),
            ),
        };
        let response = history_error(e).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("\"internal\""), "{body}");
        assert!(
            !body.contains("/srv") && !body.contains("sqlite3"),
            "{body}"
        );
    }
}
