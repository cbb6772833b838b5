//! Every error of the API as RFC 9457 `application/problem+json`, with a
//! stable `type` URI per kind, made in one place ([`ApiError`]'s
//! `IntoResponse`).

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::response::{Response as DocResponse, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::IntoResponses;
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
    /// rate-limited, method-not-allowed, store-unavailable,
    /// insufficient-storage or internal.
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
    /// The disk that holds the store is full: nothing is written until an
    /// operator makes room.
    #[error("the gateway's disk is full; nothing can be stored until an operator makes room")]
    StorageFull(String),
    /// A record or page of the store cannot be read: the store is
    /// damaged (`/readyz` says so too); other requests still answer.
    #[error("this part of the gateway's store cannot be read; the operators are alerted")]
    StoreDamaged(String),
    /// The time-stamping authority a dossier's seal needs cannot be had.
    #[error("the time-stamping authority cannot be reached to timestamp the dossier's seal; try again later")]
    TsaUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A fault of ours that is not the store's (a sealed document that does
    /// not open, a stored envelope that does not read): 500, the detail
    /// for the log only.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    /// The HTTP status, the stable kind (the end of the `type` URI) and
    /// the title of this problem.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
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
            ApiError::StorageFull(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
            ),
            ApiError::StoreDamaged(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store-damaged",
                "The store is damaged",
            ),
            ApiError::TsaUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "tsa-unavailable",
                "The time-stamping authority is unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The HTTP status this problem is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The stable kind: `not-found`, `state-conflict`, … (the `type` URI
    /// is `urn:jum-gateway:problem:` and this).
    pub fn kind(&self) -> &'static str {
        self.parts().1
    }

    /// The problem's title, in English (as in problem+json).
    pub fn title(&self) -> &'static str {
        self.parts().2
    }

    /// A 5xx: the detail is for the log only (and is logged when the
    /// problem is answered).
    pub(crate) fn log_detail(&self) {
        if let ApiError::Unavailable(d)
        | ApiError::StorageFull(d)
        | ApiError::StoreDamaged(d)
        | ApiError::TsaUnavailable(d)
        | ApiError::Internal(d) = self
        {
            tracing::error!(error = %d, "request failed");
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        // 5xx bodies say little; the detail goes to the log.
        self.log_detail();
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

/// What a storage failure means for the caller: a full disk is its own
/// answer (507); a store that is closing, or whose disk or server fails
/// for a moment, is 503 (try again); so is a record that cannot be read
/// (`store-damaged`: the rest of the store still answers). Only the log
/// gets the detail.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        use crate::store::StoreError as S;
        match e {
            S::Full { .. } => ApiError::StorageFull(e.to_string()),
            S::NotFound(id) => ApiError::NotFound(format!("no request {id}")),
            S::Io(_) | S::Closed | S::Postgres { .. } | S::Locked { .. } => {
                ApiError::Unavailable(e.to_string())
            }
            S::Corrupt { .. } => ApiError::StoreDamaged(e.to_string()),
            S::Damaged { .. } | S::TooNew { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

/// An operator's question or command that failed: the same problems as
/// when the API answered them itself (the store's by what they mean, an
/// audit trail that cannot be read or walked an internal fault).
impl From<crate::ops::OpsError> for ApiError {
    fn from(e: crate::ops::OpsError) -> ApiError {
        use crate::ops::OpsError as O;
        match e {
            O::NotFound(m) => ApiError::NotFound(m),
            O::StateConflict(m) => ApiError::StateConflict(m),
            O::Invalid(errs) => ApiError::Invalid(errs),
            O::Store(e) => ApiError::from(e),
            // The detail (for the log) is the audit trail's own, as before.
            O::Checkpoints(e) | O::Verify(e) => ApiError::internal(e),
        }
    }
}

/// A task that panicked or was cancelled: an internal fault.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

// The problems an operation may answer, as its OpenAPI responses: the
// handlers name these sets beside their paths, the document collects them.

fn problem_response(description: &str) -> RefOr<DocResponse> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn responses(list: &[(&str, &str)]) -> BTreeMap<String, RefOr<DocResponse>> {
    list.iter()
        .map(|(code, what)| (code.to_string(), problem_response(what)))
        .collect()
}

const AUTH: (&str, &str) = ("401", "Missing or unknown bearer token");
const INTERNAL: (&str, &str) = ("500", "Internal error (details in the gateway's log)");

/// Errors of a read: authentication, not found.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<DocResponse>> {
        responses(&[
            AUTH,
            ("404", "No such resource, or not this client's"),
            INTERNAL,
        ])
    }
}

/// Errors of an operator's call: as a read, and 403 for a non-admin token.
pub struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<DocResponse>> {
        let mut r = ReadErrors::responses();
        r.extend(responses(&[("403", "Not an admin token")]));
        r
    }
}

/// Errors of a POST that files requests.
pub struct WriteErrors;

impl IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<DocResponse>> {
        responses(&[
            (
                "400",
                "The body is not JSON of this operation's shape (unknown field, wrong type)",
            ),
            AUTH,
            ("403", "The client may not request this service"),
            ("409", "The Idempotency-Key was used with another body"),
            ("413", "The body is larger than gateway.max_request_bytes"),
            ("415", "The body is not application/json"),
            (
                "422",
                "Fields are invalid; `errors` names each by JSON pointer",
            ),
            ("429", "Over the client's rate; see Retry-After"),
            INTERNAL,
            (
                "503",
                "The store cannot take requests now (closing, or its disk or server failing for a moment); try again",
            ),
            (
                "507",
                "The gateway's disk is full: nothing is stored until an operator makes room (`insufficient-storage`)",
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    async fn answer(e: StoreError) -> (u16, serde_json::Value) {
        let r = ApiError::from(e).into_response();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn each_store_failure_answers_what_happened_and_leaks_nothing() {
        let (s, v) = answer(StoreError::Full {
            available: 1234,
            minimum: 8 << 20,
        })
        .await;
        assert_eq!(
            (s, v["type"].as_str()),
            (507, Some("urn:jum-gateway:problem:insufficient-storage"))
        );
        assert!(!v["detail"].as_str().unwrap().contains("1234"), "{v}");
        let (s, v) = answer(StoreError::Closed).await;
        assert_eq!(
            (s, v["type"].as_str()),
            (503, Some("urn:jum-gateway:problem:store-unavailable"))
        );
        let (s, v) = answer(StoreError::Postgres {
            url: "postgres://jumgw@db.local/jumgw".into(),
            detail: "connection refused".into(),
        })
        .await;
        assert_eq!(s, 503);
        assert!(!v.to_string().contains("db.local"), "{v}");
        let (s, v) = answer(StoreError::Corrupt {
            id: "01X".into(),
            detail: "expected value at line 1".into(),
        })
        .await;
        assert_eq!(
            (s, v["type"].as_str()),
            (503, Some("urn:jum-gateway:problem:store-damaged"))
        );
        assert!(!v.to_string().contains("line 1"), "{v}");
        let (s, _) = answer(StoreError::NotFound("01X".into())).await;
        assert_eq!(s, 404);
    }
}
