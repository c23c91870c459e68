//! The one error type of the HTTP API: every failure becomes a status code
//! and an [`ErrorBody`] a person can read.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use stacklab_api::ErrorBody;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this HTTP method.
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl AppError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code.to_owned(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}
