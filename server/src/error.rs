//! The one error type of the HTTP API: every failure becomes a status code
//! and an [`ErrorBody`] a person can read.

use axum::extract::rejection::{JsonRejection, QueryRejection};
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
    /// The request body could not be read as the JSON this route takes.
    #[error("{message}")]
    BadRequest {
        /// 400, 413, 415 or 422, as the cause warrants.
        status: StatusCode,
        /// What was wrong.
        message: String,
    },
    /// Something on the server's side failed (the history database).
    #[error("{0}")]
    Internal(String),
    /// A dependency (Docker engine, image, KVM) is not available now.
    #[error("{message}")]
    Unavailable {
        /// Stable code, e.g. `docker_unavailable`.
        code: &'static str,
        /// What is missing and how to fix it.
        message: String,
    },
}

impl AppError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::BadRequest { status, .. } => (
                *status,
                match *status {
                    StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                    StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
                    _ => "malformed_request",
                },
            ),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            AppError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        AppError::BadRequest {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: rejection.body_text(),
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
