//! The one error type of the HTTP API: every failure becomes a status code
//! and an [`ErrorBody`] a person can read.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use stacklab_api::{ErrorBody, ErrorCode};

use crate::engine::{Refused, Unavailable};

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
    /// The learner already has enough runs of this demo in progress.
    #[error("{message}")]
    TooMany {
        /// What to do.
        message: String,
        /// Seconds until trying again is likely to work (`Retry-After`).
        retry_after_s: u64,
    },
    /// This client sent run requests faster than a learner would.
    #[error("{message}")]
    RateLimited {
        /// What to do.
        message: String,
        /// Seconds until the next request will be taken (`Retry-After`).
        retry_after_s: u64,
    },
    /// This client started density sweeps faster than a learner would.
    #[error("{message}")]
    DensityLimited {
        /// What to do.
        message: String,
        /// Seconds until the next sweep will be taken (`Retry-After`).
        retry_after_s: u64,
    },
    /// An instructor's route, without the instructor's token.
    #[error("{0}")]
    InstructorOnly(String),
    /// The class no longer takes learners.
    #[error("{0}")]
    ClassExpired(String),
    /// Refused for who is asking (a name or origin this lab does not serve).
    #[error("{message}")]
    Forbidden {
        /// `host_not_allowed` or `origin_not_allowed`.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// The learner has not joined the class the request names.
    #[error("{0}")]
    NotAMember(String),
    /// The class has as many members as it takes.
    #[error("{0}")]
    ClassFull(String),
    /// The instructor removed the learner from the class.
    #[error("{0}")]
    RemovedFromClass(String),
    /// The demo's queue is full.
    #[error("{message}")]
    QueueFull {
        /// What to do.
        message: String,
        /// Seconds until a place is likely to be free (`Retry-After`).
        retry_after_s: u64,
    },
    /// The run history did not answer within its time bounds.
    #[error("{0}")]
    StoreBusy(String),
    /// A dependency (Docker engine, image, KVM) is not available now.
    #[error("{message}")]
    Unavailable {
        /// Stable code, e.g. `docker_unavailable`.
        code: ErrorCode,
        /// What is missing and how to fix it.
        message: String,
    },
}

impl AppError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            AppError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
            AppError::BadRequest { status, .. } => (
                *status,
                match *status {
                    StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
                    StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidRequest,
                    _ => ErrorCode::MalformedRequest,
                },
            ),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            AppError::StoreBusy(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreBusy),
            AppError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, *code),
            AppError::TooMany { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRuns),
            AppError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            AppError::DensityLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, ErrorCode::DensityLimited)
            }
            AppError::InstructorOnly(_) => {
                (StatusCode::UNAUTHORIZED, ErrorCode::InstructorTokenRequired)
            }
            AppError::ClassExpired(_) => (StatusCode::GONE, ErrorCode::ClassExpired),
            AppError::NotAMember(_) => (StatusCode::FORBIDDEN, ErrorCode::NotAMember),
            AppError::ClassFull(_) => (StatusCode::CONFLICT, ErrorCode::ClassFull),
            AppError::RemovedFromClass(_) => (StatusCode::FORBIDDEN, ErrorCode::RemovedFromClass),
            AppError::QueueFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::QueueFull),
            AppError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, *code),
        }
    }
}

impl From<Unavailable> for AppError {
    fn from(u: Unavailable) -> Self {
        AppError::Unavailable {
            code: u.code,
            message: u.message,
        }
    }
}

impl From<Refused> for AppError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Unavailable(u) => u.into(),
            Refused::TooMany(ref too_many) => AppError::TooMany {
                message: refused.to_string(),
                retry_after_s: too_many.retry_after.as_secs().max(1),
            },
            Refused::QueueFull(ref full) => AppError::QueueFull {
                message: refused.to_string(),
                retry_after_s: full.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            },
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
        let retry_after = match &self {
            AppError::TooMany { retry_after_s, .. }
            | AppError::RateLimited { retry_after_s, .. }
            | AppError::QueueFull { retry_after_s, .. }
            | AppError::DensityLimited { retry_after_s, .. } => Some(*retry_after_s),
            AppError::StoreBusy(_) => Some(1),
            _ => None,
        };
        let bearer = matches!(self, AppError::InstructorOnly(_));
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if bearer {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"stacklab instructor\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A full queue answers 503 `queue_full` with `Retry-After` (whole
    /// seconds, rounded up) and a sentence.
    #[tokio::test]
    async fn a_full_queue_is_a_503_with_retry_after_and_a_sentence() {
        let refused = Refused::QueueFull(crate::engine::Full {
            waiting: 120,
            retry_after: std::time::Duration::from_millis(2500),
        });
        let response = AppError::from(refused).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "3");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error, ErrorCode::QueueFull);
        assert!(
            body.message.contains("120 runs are already waiting"),
            "{}",
            body.message
        );
    }
}
