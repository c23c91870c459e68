//! The instructor's token: `Authorization: Bearer <token>` on the routes of
//! workshop mode that show names or create classes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{AppError, AppState};

/// Proof that the request carried the instructor token.
pub struct Instructor;

impl Instructor {
    /// Whether `parts` carries `token` as a bearer token.
    pub fn presented(parts: &axum::http::HeaderMap, token: &str) -> bool {
        parts
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()))
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Instructor {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if Instructor::presented(&parts.headers, &state.instructor_token) {
            Ok(Instructor)
        } else {
            Err(AppError::InstructorOnly(
                "this is the instructor's view: send the instructor token (printed by `stacklab serve` at start, or set with --instructor-token) as `Authorization: Bearer <token>`".into(),
            ))
        }
    }
}

/// A new random token (32 hex digits).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let mut h = axum::http::HeaderMap::new();
        assert!(!Instructor::presented(&h, "s3cret-token"));
        h.insert("authorization", "Bearer s3cret-token".parse().unwrap());
        assert!(Instructor::presented(&h, "s3cret-token"));
        h.insert("authorization", "Bearer s3cret-tokem".parse().unwrap());
        assert!(!Instructor::presented(&h, "s3cret-token"));
        h.insert("authorization", "Basic s3cret-token".parse().unwrap());
        assert!(!Instructor::presented(&h, "s3cret-token"));
    }
}
