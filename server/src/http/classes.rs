//! Workshop mode: create a class, join it, see the room.
//!
//! The instructor's routes (create, view, export, remove a member) need
//! the instructor token; joining and the room's anonymous points need only
//! the class code. A class takes as many learners as its instructor said
//! (`max_members`), joins are paced per address (see
//! [`super::limits::JoinLimit`]), and a member the instructor removes has
//! their runs ended and cannot start new ones there.
//!
//! A member's browser reports their learning (lessons opened, quiz
//! answers; guesses travel with their runs, see `runs`), which the
//! instructor's view shows per member; the instructor can send the room to
//! a lesson, which the room's stream announces (a slug, never a name).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::Json;
use futures_util::Stream;
use stacklab_api::{
    valid_class_code, valid_learner, Class, ClassView, CreateClass, DemoFigures, DemoId, ErrorBody,
    ErrorCode, JoinClass, LearningKept, LearningReport, LessonRef, RemovedMember, RoomLesson,
    RoomNow, RoomPoints, RunError, DEFAULT_CLASS_SECS, DEFAULT_MAX_MEMBERS, LEARNER_RULE,
    MAX_CLASS_SECS, MAX_MAX_MEMBERS,
};

use super::auth::Instructor;
use super::extract::{ApiJson, ApiQuery};
use super::openapi::BodyErrors;
use super::runs::stored;
use super::{AppError, AppState};
use crate::store::{self, JoinError};

mod course {
    include!(concat!(env!("OUT_DIR"), "/course.rs"));
}

/// What a room's stream says besides run changes.
#[derive(Debug, Clone)]
pub struct RoomNews {
    /// The class's code.
    class: String,
    /// `Some`: the instructor sent the room to this lesson; `None`: a
    /// member's learning changed (the instructor's page fetches again).
    lesson: Option<String>,
}

/// The course's lessons, as the room refers to them.
fn lessons() -> Vec<LessonRef> {
    course::COURSE
        .iter()
        .map(|(slug, title, quiz)| LessonRef {
            slug: (*slug).to_owned(),
            title: (*title).to_owned(),
            questions: quiz.len() as u32,
        })
        .collect()
}

/// Where `slug` is in the course, or 422.
fn lesson_index(slug: &str) -> Result<usize, AppError> {
    course::COURSE
        .iter()
        .position(|(s, _, _)| *s == slug)
        .ok_or_else(|| {
            invalid(format!(
                "no lesson has the slug {slug:?}; the lessons are: {}",
                course::COURSE
                    .iter()
                    .map(|(s, _, _)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// A class code from the path, upper-cased, or 404.
fn code_of(raw: &str) -> Result<String, AppError> {
    if valid_class_code(raw) {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(no_class(raw))
    }
}

fn no_class(code: &str) -> AppError {
    AppError::NotFound(format!(
        "no class has the code {code:?}; check it with your instructor (six letters and digits)"
    ))
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::BadRequest {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: message.into(),
    }
}

/// `POST /api/classes` (instructor).
#[utoipa::path(post, path = "/classes", tag = "classes",
    request_body = CreateClass,
    security(("instructor" = [])),
    responses(
        (status = 201, description = "The class, with its code", body = Class),
        (status = 400, description = "A bad name, duration or size", body = ErrorBody),
        (status = 401, description = "The instructor token is required", body = ErrorBody),
        BodyErrors,
    ))]
pub async fn create_class(
    State(state): State<AppState>,
    _: Instructor,
    ApiJson(request): ApiJson<CreateClass>,
) -> Result<(StatusCode, Json<Class>), AppError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(invalid(
            "name must be 1 to 80 characters, no control characters",
        ));
    }
    let secs = request.expires_in_secs.unwrap_or(DEFAULT_CLASS_SECS);
    if !(60..=MAX_CLASS_SECS).contains(&secs) {
        return Err(invalid(format!(
            "expires_in_secs must be between 60 and {MAX_CLASS_SECS} (7 days), not {secs}"
        )));
    }
    let max_members = request.max_members.unwrap_or(DEFAULT_MAX_MEMBERS);
    if !(1..=MAX_MAX_MEMBERS).contains(&max_members) {
        return Err(invalid(format!(
            "max_members must be between 1 and {MAX_MAX_MEMBERS}, not {max_members}"
        )));
    }
    let class = stored(state.runs.history().create_class_of(
        &name,
        secs as i64 * 1000,
        max_members,
    ))
    .await?;
    tracing::info!(code = %class.code, "class {:?} created", class.name);
    Ok((StatusCode::CREATED, Json(class)))
}

/// `POST /api/classes/{code}/join`.
#[utoipa::path(post, path = "/classes/{code}/join", tag = "classes",
    params(("code" = String, Path, description = "The class code")),
    request_body = JoinClass,
    responses(
        (status = 200, description = "Joined", body = Class),
        (status = 400, description = "A bad learner id or display name", body = ErrorBody),
        (status = 403, description = "The instructor removed this learner from the class (`removed_from_class`)", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
        (status = 409, description = "The class has as many members as it takes (`class_full`)", body = ErrorBody),
        (status = 410, description = "The class has expired", body = ErrorBody),
        BodyErrors,
        (status = 429, description = "Joins from this address come faster than a room joins (`Retry-After`)", body = ErrorBody),
    ))]
pub async fn join_class(
    State(state): State<AppState>,
    Path(code): Path<String>,
    client: super::client::ClientKey,
    ApiJson(request): ApiJson<JoinClass>,
) -> Result<Json<Class>, AppError> {
    let code = code_of(&code)?;
    if !valid_learner(&request.learner) {
        return Err(invalid(LEARNER_RULE));
    }
    let name = request
        .display_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if let Some(n) = &name {
        if n.chars().count() > 40 || n.chars().any(char::is_control) {
            return Err(invalid(
                "display_name must be at most 40 characters, no control characters",
            ));
        }
    }
    // Behind a trusted proxy, the person's address, not the proxy's.
    let address = client.0;
    let paced = match stored(state.runs.history().class(&code)).await? {
        Some(class) => state
            .join_limit
            .take(&address, &class.code, class.max_members),
        None => state.join_limit.take_unknown(&address),
    };
    if let Err(wait) = paced {
        let retry_after_s = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(AppError::RateLimited {
            message: format!(
                "Too many joins from here in a short time (more than a whole class at once); try again in {retry_after_s} s."
            ),
            retry_after_s,
        });
    }
    let joined = state
        .runs
        .history()
        .join(&code, &request.learner, name.as_deref())
        .await;
    match joined {
        Ok(class) => Ok(Json(class)),
        Err(JoinError::NotFound(code)) => Err(no_class(&code)),
        Err(e @ JoinError::Expired { .. }) => Err(AppError::ClassExpired(format!(
            "This class no longer takes learners: {e}."
        ))),
        Err(e @ JoinError::Full { .. }) => Err(AppError::ClassFull(format!("Cannot join: {e}."))),
        Err(e @ JoinError::Removed { .. }) => Err(AppError::RemovedFromClass(format!(
            "Cannot join: {e}; ask them if this is a mistake."
        ))),
        Err(JoinError::Store(e)) => Err(super::runs::history_error(e)),
    }
}

/// What a removed member's runs fail with.
fn removed_reason() -> RunError {
    RunError {
        code: ErrorCode::RemovedFromClass,
        message: "The instructor removed you from this class, so your runs in it were ended."
            .into(),
    }
}

/// `DELETE /api/classes/{code}/members/{learner}` (instructor): the
/// member's waiting and running runs end at once (`removed_from_class`),
/// they no longer count for the room, and they can neither join again nor
/// start runs in the class. Removing a removed member again ends any run
/// of theirs still going.
#[utoipa::path(delete, path = "/classes/{code}/members/{learner}", tag = "classes",
    params(
        ("code" = String, Path, description = "The class code"),
        ("learner" = String, Path, description = "The member's learner id"),
    ),
    security(("instructor" = [])),
    responses(
        (status = 200, description = "Removed; their runs in the class ended", body = RemovedMember),
        (status = 401, description = "The instructor token is required", body = ErrorBody),
        (status = 404, description = "No such class, or no such member", body = ErrorBody),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    _: Instructor,
    Path((code, learner)): Path<(String, String)>,
) -> Result<Json<RemovedMember>, AppError> {
    let code = code_of(&code)?;
    find(&state, &code).await?;
    let no_member = || {
        AppError::NotFound(format!(
            "the class {code} has no member with the learner id {learner:?}"
        ))
    };
    if !valid_learner(&learner) {
        return Err(no_member());
    }
    let h = state.runs.history();
    let removed = stored(async {
        Ok(h.remove_member(&code, &learner).await? || h.was_removed(&code, &learner).await?)
    })
    .await?;
    if !removed {
        return Err(no_member());
    }
    let ended = state
        .runs
        .end_member_runs(&code, &learner, &removed_reason());
    tracing::info!(class = %code, "the instructor removed learner {learner}; {ended} run(s) ended");
    Ok(Json(RemovedMember {
        learner,
        runs_ended: ended as u32,
    }))
}

/// The class, or 404.
async fn find(state: &AppState, code: &str) -> Result<Class, AppError> {
    stored(state.runs.history().class(code))
        .await?
        .ok_or_else(|| no_class(code))
}

/// `GET /api/classes/{code}` (instructor): members, points, capacity.
#[utoipa::path(get, path = "/classes/{code}", tag = "classes",
    params(("code" = String, Path, description = "The class code")),
    security(("instructor" = [])),
    responses(
        (status = 200, description = "Members, their runs, the room's figures", body = ClassView),
        (status = 401, description = "The instructor token is required", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
    ))]
pub async fn class_view(
    State(state): State<AppState>,
    _: Instructor,
    Path(code): Path<String>,
) -> Result<Json<ClassView>, AppError> {
    let code = code_of(&code)?;
    let class = find(&state, &code).await?;
    let h = state.runs.history();
    let (mut members, runs, learning, lesson) = stored(async {
        Ok((
            h.members(&code).await?,
            h.class_runs(&code).await?,
            h.learning(&code).await?,
            h.room_lesson(&code).await?,
        ))
    })
    .await?;
    let expired = class.expires_at_ms <= store::now_ms();
    for m in &mut members {
        m.learning = learning.of(&m.learner);
        // In the course's order.
        m.learning
            .lessons_read
            .sort_by_key(|slug| lesson_index(slug).unwrap_or(usize::MAX));
    }
    Ok(Json(ClassView {
        class,
        expired,
        members,
        lessons: lessons(),
        lesson,
        guesses: learning.guesses,
        points: runs
            .iter()
            .filter(|r| r.summary.finished_at_ms.is_some())
            .map(|r| r.point(true, false))
            .collect(),
        capacity: state.labs.capacity(),
        figures: DemoId::ALL.into_iter().map(DemoFigures::of).collect(),
    }))
}

/// Query of `GET /api/classes/{code}/points` and `…/now`: the asking
/// learner (whose runs are marked `mine`; whose membership is told).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LearnerQuery {
    /// The asking learner.
    #[param(pattern = r"^[A-Za-z0-9_-]{8,64}$")]
    learner: Option<String>,
}

/// `GET /api/classes/{code}/points?learner=…`: the room's finished runs,
/// with no names; the asking learner's own marked.
#[utoipa::path(get, path = "/classes/{code}/points", tag = "classes",
    params(("code" = String, Path, description = "The class code"), LearnerQuery),
    responses(
        (status = 200, description = "The room's finished runs, without names", body = RoomPoints),
        (status = 400, description = "A bad learner id", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
    ))]
pub async fn room_points(
    State(state): State<AppState>,
    Path(code): Path<String>,
    ApiQuery(query): ApiQuery<LearnerQuery>,
) -> Result<Json<RoomPoints>, AppError> {
    let code = code_of(&code)?;
    find(&state, &code).await?;
    let runs = stored(state.runs.history().class_runs(&code)).await?;
    let me = query.learner.unwrap_or_default();
    Ok(Json(RoomPoints {
        points: runs
            .iter()
            .filter(|r| r.summary.finished_at_ms.is_some())
            .map(|r| r.point(false, !me.is_empty() && r.learner == me))
            .collect(),
    }))
}

/// Query of the class export.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` (default) or `json`.
    #[param(pattern = "^(csv|json)$")]
    format: Option<String>,
}

/// `GET /api/classes/{code}/export?format=csv|json` (instructor): every
/// run of the class with its learner and display name.
#[utoipa::path(get, path = "/classes/{code}/export", tag = "classes",
    params(("code" = String, Path, description = "The class code"), ExportQuery),
    security(("instructor" = [])),
    responses(
        (status = 200, description = "Every run of the class with learner and display name", content(
            (String = "text/csv"),
            (Vec<Object> = "application/json"),
        )),
        (status = 400, description = "A bad format", body = ErrorBody),
        (status = 401, description = "The instructor token is required", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
    ))]
pub async fn export_class(
    State(state): State<AppState>,
    _: Instructor,
    Path(code): Path<String>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, AppError> {
    let code = code_of(&code)?;
    find(&state, &code).await?;
    let format = query.format.unwrap_or_else(|| "csv".into());
    let h = state.runs.history();
    let (runs, learning) =
        stored(async { Ok((h.class_runs(&code).await?, h.learning(&code).await?)) }).await?;
    let (body, mime) = match format.as_str() {
        "csv" => (
            store::class_csv(&runs, &learning),
            "text/csv; charset=utf-8",
        ),
        "json" => {
            let rows: Vec<serde_json::Value> = runs
                .iter()
                .map(|r| {
                    let member = (!r.learner.is_empty()).then(|| learning.of(&r.learner));
                    serde_json::json!({
                        "run": r.summary,
                        "learner": r.learner,
                        "by_instructor": r.learner.is_empty(),
                        "display_name": r.display_name,
                        "other_runs_at_start": r.others_at_start,
                        "guesses": learning.guesses_of_run(&r.summary.id).collect::<Vec<_>>(),
                        "learning": member,
                    })
                })
                .collect();
            (
                serde_json::to_string_pretty(&rows).expect("rows serialise"),
                "application/json",
            )
        }
        other => {
            return Err(AppError::BadRequest {
                status: StatusCode::BAD_REQUEST,
                message: format!("format must be csv or json, not {other:?}"),
            })
        }
    };
    Ok(super::runs::attachment(
        &format!("stacklab-class-{code}.{format}"),
        mime,
        body,
    ))
}

/// `GET /api/classes/{code}/events`: a `changed` event (run id, demo,
/// state; no names) whenever a run of the class is queued, starts or
/// finishes; `lesson` (a slug) when the instructor sends the room to a
/// lesson; `learning` (`{}`) when a member's learning changed. The
/// instructor's page fetches the view again on each; members' pages follow
/// `lesson` and fetch the room's points again on `changed`.
#[utoipa::path(get, path = "/classes/{code}/events", tag = "classes",
    params(("code" = String, Path, description = "The class code")),
    responses(
        (status = 200, description = "Server-Sent Events: `changed` (a RoomChange, `{}` after missed ones), `lesson` (a RoomLesson), `learning` (`{}`); never a name", body = String, content_type = "text/event-stream"),
        (status = 404, description = "No such class", body = ErrorBody),
        (status = 429, description = "Too many event streams open (`Retry-After`)", body = ErrorBody),
    ))]
pub async fn room_events(
    State(state): State<AppState>,
    Path(code): Path<String>,
    client: super::client::ClientKey,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let code = code_of(&code)?;
    find(&state, &code).await?;
    let open = state.streams.try_open(&client.0)?;
    let changes = state.runs.room_changes();
    let news = state.room_news.subscribe();
    let stopping = state.runs.stopping();
    let stream = futures_util::stream::unfold(
        (changes, news, code, open),
        move |(mut rx, mut news, code, open)| {
            let stopping = stopping.clone();
            async move {
                loop {
                    let received = tokio::select! {
                        r = rx.recv() => r,
                        n = news.recv() => match n {
                            Ok(n) if n.class == code => {
                                let event = match n.lesson {
                                    Some(lesson) => Event::default()
                                        .event("lesson")
                                        .json_data(RoomLesson { lesson })
                                        .unwrap_or_else(|_| Event::default().event("learning").data("{}")),
                                    None => Event::default().event("learning").data("{}"),
                                };
                                return Some((Ok(event), (rx, news, code, open)));
                            }
                            // Another room's, or missed some: the page
                            // fetches the view on the next change anyway.
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                        },
                        // The server is shutting down: end the stream so it can drain.
                        () = stopping.cancelled() => return None,
                    };
                    match received {
                        Ok(c) if c.class == code => {
                            let event = Event::default()
                                .event("changed")
                                .json_data(&c.change)
                                .unwrap_or_else(|_| Event::default().event("changed").data("{}"));
                            return Some((Ok(event), (rx, news, code, open)));
                        }
                        Ok(_) => {}
                        // Missed some: say "changed" anyway; the page refetches.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            return Some((
                                Ok(Event::default().event("changed").data("{}")),
                                (rx, news, code, open),
                            ))
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default().interval(Duration::from_secs(15))))
}

/// `POST /api/classes/{code}/learning`: a member's browser reports that
/// the learner opened a lesson, or answered a quiz question. The server
/// scores the answer itself and keeps only the first answer to each
/// question: a later one does not count (`counted: false`).
#[utoipa::path(post, path = "/classes/{code}/learning", tag = "classes",
    params(("code" = String, Path, description = "The class code")),
    request_body = LearningReport,
    responses(
        (status = 200, description = "Kept (or not, when it repeats what counted)", body = LearningKept),
        (status = 400, description = "Not JSON of this shape", body = ErrorBody),
        (status = 403, description = "The learner is not a member of the class (`not_a_member`), or the class is over", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
        BodyErrors,
    ))]
pub async fn report_learning(
    State(state): State<AppState>,
    Path(code): Path<String>,
    ApiJson(report): ApiJson<LearningReport>,
) -> Result<Json<LearningKept>, AppError> {
    let code = code_of(&code)?;
    if !valid_learner(&report.learner) {
        return Err(invalid(LEARNER_RULE));
    }
    let index = lesson_index(&report.lesson)?;
    let scored = match report.answer {
        None => None,
        Some(a) => {
            let quiz = course::COURSE[index].2;
            let Some(&(_, right, choices)) = quiz.iter().find(|(n, _, _)| *n == a.question) else {
                return Err(invalid(format!(
                    "the lesson {:?} has no question {}",
                    report.lesson, a.question
                )));
            };
            if a.choice >= choices {
                return Err(invalid(format!(
                    "question {} has {choices} choices (0 to {}), not {}",
                    a.question,
                    choices - 1,
                    a.choice
                )));
            }
            Some((a, a.choice == right))
        }
    };
    find(&state, &code).await?;
    let h = state.runs.history();
    let member = stored(h.open_class_of(&code, &report.learner)).await?;
    if member.is_none() {
        return Err(AppError::NotAMember(format!(
            "the learner {:?} is not a member of the class {code} (or it is over): join it first",
            report.learner
        )));
    }
    let counted = stored(async {
        match scored {
            None => h.lesson_read(&code, &report.learner, &report.lesson).await,
            Some((a, right)) => {
                h.quiz_answer(
                    &code,
                    &report.learner,
                    &report.lesson,
                    a.question,
                    a.choice,
                    right,
                )
                .await
            }
        }
    })
    .await?;
    if counted {
        // Nobody listening is not an error.
        let _ = state.room_news.send(RoomNews {
            class: code,
            lesson: None,
        });
    }
    Ok(Json(LearningKept {
        counted,
        right: scored.map(|(_, right)| right),
    }))
}

/// `POST /api/classes/{code}/lesson` (instructor): sends the room to a
/// lesson. Members' open pages go there (the room's stream says `lesson`),
/// and the join page sends those who join later there.
#[utoipa::path(post, path = "/classes/{code}/lesson", tag = "classes",
    params(("code" = String, Path, description = "The class code")),
    request_body = RoomLesson,
    security(("instructor" = [])),
    responses(
        (status = 200, description = "The room was sent there", body = RoomLesson),
        (status = 400, description = "Not JSON of this shape", body = ErrorBody),
        (status = 401, description = "The instructor token is required", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
        BodyErrors,
    ))]
pub async fn send_lesson(
    State(state): State<AppState>,
    _: Instructor,
    Path(code): Path<String>,
    ApiJson(request): ApiJson<RoomLesson>,
) -> Result<Json<RoomLesson>, AppError> {
    let code = code_of(&code)?;
    lesson_index(&request.lesson)?;
    find(&state, &code).await?;
    stored(state.runs.history().send_room_to(&code, &request.lesson)).await?;
    tracing::info!(class = %code, "the instructor sent the room to {}", request.lesson);
    let _ = state.room_news.send(RoomNews {
        class: code,
        lesson: Some(request.lesson.clone()),
    });
    Ok(Json(request))
}

/// `GET /api/classes/{code}/now?learner=…`: the room as a learner's page
/// needs it, without names: its name, where the instructor sent it, and
/// whether this learner is in.
#[utoipa::path(get, path = "/classes/{code}/now", tag = "classes",
    params(("code" = String, Path, description = "The class code"), LearnerQuery),
    responses(
        (status = 200, description = "The room now, without names", body = RoomNow),
        (status = 400, description = "A bad learner id", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
    ))]
pub async fn room_now(
    State(state): State<AppState>,
    Path(code): Path<String>,
    ApiQuery(query): ApiQuery<LearnerQuery>,
) -> Result<Json<RoomNow>, AppError> {
    let code = code_of(&code)?;
    let class = find(&state, &code).await?;
    if query.learner.as_deref().is_some_and(|l| !valid_learner(l)) {
        return Err(AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: LEARNER_RULE.into(),
        });
    }
    let learner = query.learner;
    let h = state.runs.history();
    let (lesson, member) = stored(async {
        let member = match &learner {
            Some(l) => h.open_class_of(&code, l).await?.is_some(),
            None => false,
        };
        Ok((h.room_lesson(&code).await?, member))
    })
    .await?;
    Ok(Json(RoomNow {
        expired: class.expires_at_ms <= store::now_ms(),
        code: class.code,
        name: class.name,
        lesson,
        member,
    }))
}
