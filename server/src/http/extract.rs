//! Extractors whose rejections are [`AppError`]s, so a bad request gets the
//! same JSON error body as every other failure.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::AppError;

/// `Json` whose rejections are [`AppError`]s (JSON bodies, right status).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

/// `Query` whose rejections are [`AppError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);
