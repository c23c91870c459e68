//! `GET /api/demos/{demo}/latest`: the lab's most recent successful result
//! of a demo, whole (its phases, figures and the host and load it ran
//! under, with when it was accepted). Read-only and cacheable: what a page
//! embedding a demo shows when it cannot run one live.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use stacklab_api::{DemoFigures, DemoId, ErrorBody, RunRecord};

use super::runs::stored;
use super::{AppError, AppState};

/// How long a browser or proxy may reuse the answer.
const MAX_AGE_SECS: u32 = 60;

#[utoipa::path(get, path = "/demos/{demo}/latest", tag = "runs",
    params(("demo" = DemoId, Path, description = "A built-in demo")),
    responses(
        (status = 200, description = "The newest run of the demo that reached ready, with its host and load facts; cacheable for a minute", body = RunRecord),
        (status = 404, description = "No such demo, or none of its runs has succeeded here yet", body = ErrorBody),
    ))]
pub async fn latest(
    State(state): State<AppState>,
    Path(demo): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let demo: DemoId = demo
        .parse()
        .map_err(|e: stacklab_api::UnknownDemo| AppError::NotFound(e.to_string()))?;
    let record = stored(state.runs.history().latest_ready(demo))
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!("no run of {demo} has succeeded on this lab yet"))
        })?;
    Ok((
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        )],
        Json(record),
    ))
}

/// `GET /api/figures`: every demo's headline figures, labelled and
/// explained from the figure table (the one place they are defined).
#[utoipa::path(get, path = "/figures", tag = "runs",
    responses(
        (status = 200, description = "Each demo's headline time, wait in line, platform share and headline memory: label and explanation; cacheable for a minute", body = Vec<DemoFigures>),
    ))]
pub async fn figures() -> impl IntoResponse {
    let all: Vec<DemoFigures> = DemoId::ALL.into_iter().map(DemoFigures::of).collect();
    (
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        )],
        Json(all),
    )
}
