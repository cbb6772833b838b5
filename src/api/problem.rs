//! Every error of the API as RFC 9457 `application/problem+json`, with a
//! stable `type` URI per kind, made in one place ([`ApiError`]'s
//! `IntoResponse`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:jum-gateway:problem:validation-failed", "title": "Invalid request",
    "status": 422, "detail": "some fields are invalid",
    "errors": [{"pointer": "/subject/jmbg", "reason": "check digit should be 6, found 5"}]
}))]
pub struct Problem {
    /// Stable: `urn:jum-gateway:problem:` + unauthorized, forbidden,
    /// not-found, malformed-json, unsupported-media-type,
    /// validation-failed, idempotency-key-reused, state-conflict, body-too-large,
    /// rate-limited, method-not-allowed, store-unavailable or internal.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation-failed: each bad field by JSON pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One invalid field.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer into the request body (or the header's name).
    pub pointer: String,
    pub reason: String,
}

/// Everything that can go wrong in a request, with its stable type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the request body is not valid JSON for this operation: {0}")]
    BadJson(String),
    #[error("send the body as Content-Type: application/json")]
    MediaType,
    #[error("some fields are invalid")]
    Invalid(Vec<(String, String)>),
    #[error("{0}")]
    Conflict(String),
    /// The resource's state does not allow the action (retry a delivered
    /// request, cancel a finished one).
    #[error("{0}")]
    StateConflict(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("too many requests from this client; retry after {0} s")]
    TooMany(u64),
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("the store cannot take the request now; try again")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = match &self {
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or unknown bearer token",
            ),
            ApiError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Not allowed for this client",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "No such resource"),
            ApiError::BadJson(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed request body",
            ),
            ApiError::MediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::StateConflict(_) => (
                StatusCode::CONFLICT,
                "state-conflict",
                "Not possible in this state",
            ),
            ApiError::Conflict(_) => (
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
            ),
            ApiError::TooMany(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Invalid request",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "Temporarily unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        };
        // 5xx bodies say little; the detail goes to the log.
        if let ApiError::Unavailable(d) | ApiError::Internal(d) = &self {
            tracing::error!(error = %d, "request failed");
        }
        let body = Problem {
            kind: format!("urn:jum-gateway:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                ApiError::Invalid(errs) => Some(
                    errs.iter()
                        .map(|(p, r)| FieldError {
                            pointer: p.clone(),
                            reason: r.clone(),
                        })
                        .collect(),
                ),
                _ => None,
            },
        };
        let mut r = (status, Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::TooMany(secs) = &self {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}
