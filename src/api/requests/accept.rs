//! Filing one request: its body validated into a record (every bad field
//! named by JSON pointer), what every filing POST checks of its body
//! (size, `Idempotency-Key`), and the answer replayed for a key used
//! again.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{IdempotencyKey, RequestIn, RequestOut};
use crate::api::{fields, ApiError, AppState, Client};
use crate::store::RequestRecord;

/// The purpose is required (the audit trail must say why), but checked
/// here rather than by serde so that a missing one is a 422 naming it.
pub(super) fn purpose_field(errs: &mut Vec<(String, String)>, purpose: Option<&str>) -> String {
    match purpose {
        None => {
            errs.push((
                "/purpose".into(),
                "required: why the case needs this data (it goes into the envelope and the audit trail)".into(),
            ));
            String::new()
        }
        Some(p) => fields::check(errs, "/purpose", p, fields::PURPOSE),
    }
}

/// Validates a request body into a record, or lists every invalid field.
pub fn validate(
    state: &AppState,
    who: &Client,
    body: RequestIn,
) -> Result<RequestRecord, ApiError> {
    let mut errs = Vec::new();
    let number = fields::case_number(&mut errs, "/case/number", &body.case.number);
    let legal_basis = fields::check(
        &mut errs,
        "/case/legal_basis",
        &body.case.legal_basis,
        fields::LEGAL_BASIS,
    );
    let official = fields::check(
        &mut errs,
        "/case/official",
        &body.case.official,
        fields::OFFICIAL,
    );
    let purpose = purpose_field(&mut errs, body.purpose.as_deref());
    let svc = state.services.get(&body.service);
    if svc.is_none() {
        errs.push((
            "/service".into(),
            format!(
                "unknown service {:?}; known: {}",
                body.service,
                state
                    .services
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if svc.is_some() && !who.services.is_empty() && !who.services.contains(&body.service) {
        return Err(ApiError::Forbidden(format!(
            "client {} may not request {}",
            who.name, body.service
        )));
    }
    let s = &body.subject;
    let (parts, bad) = crate::protocol::subject::Parts::parse(
        s.jmbg.as_deref(),
        s.pib.as_deref(),
        s.mb.as_deref(),
        s.ko.as_deref(),
        s.sheet.as_deref(),
        s.parcel.as_deref(),
    );
    for (name, e) in bad {
        errs.push((format!("/subject/{name}"), e.to_string()));
    }
    // Each field parsed once: whether they make a subject is asked of the
    // parsed values.
    let subject = crate::protocol::Subject::from_parsed(parts);
    if errs.iter().all(|(p, _)| !p.starts_with("/subject")) {
        match (&subject, svc) {
            (Err(e), _) => errs.push(("/subject".into(), e.to_string())),
            (Ok(sub), Some(svc)) if !svc.subjects.iter().any(|k| k == sub.kind()) => {
                errs.push((
                    "/subject".into(),
                    format!(
                        "{} does not take a {} subject; it takes {}",
                        body.service,
                        sub.kind(),
                        svc.subjects.join(", ")
                    ),
                ));
            }
            _ => {}
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::Invalid(errs));
    }
    let svc = svc.ok_or_else(|| ApiError::Internal("service vanished".into()))?;
    // No error above: the fields parsed and make a subject.
    let subject = subject.map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(RequestRecord::queued(
        &who.name,
        number.into(),
        legal_basis,
        official,
        purpose,
        body.service.into(),
        svc.registry.as_str().into(),
        subject,
        state.retry.deadline,
    )
    .at(state.store.clock_ms())
    .counting(state.retry.deadline))
}

fn accepted_response(rec: &RequestRecord) -> Response {
    let location = format!("/api/v1/requests/{}", rec.id);
    let mut r = (StatusCode::ACCEPTED, Json(RequestOut::from(rec))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The original answer for a reused idempotency key, or 409 if the body differs.
async fn replay(
    st: &AppState,
    e: &crate::store::IdemEntry,
    body_hash: &str,
) -> Result<Response, ApiError> {
    if e.body_hash != body_hash {
        return Err(ApiError::Conflict(
            "this Idempotency-Key was used with another request body".into(),
        ));
    }
    let id = e
        .request_ids
        .first()
        .ok_or_else(|| ApiError::Internal("empty idempotency entry".into()))?;
    let rec = st.store.get(id).await?.ok_or_else(|| {
        ApiError::Internal(format!("idempotency entry names a missing request {id}"))
    })?;
    Ok(accepted_response(&rec))
}

/// The requests an Idempotency-Key already stands for, if any.
pub(super) async fn key_holder(
    st: &AppState,
    who: &Client,
    key: Option<&str>,
) -> Result<Option<crate::store::IdemEntry>, ApiError> {
    match key {
        Some(k) => st
            .store
            .idempotency(&who.name, k)
            .await
            .map_err(ApiError::from),
        None => Ok(None),
    }
}

/// What every filing POST checks of its body (the caller, its rate and
/// the content type were checked by the router's layers): size and the
/// Idempotency-Key; returns the body, the key and the body's SHA-256.
pub(super) fn admit_body(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    raw: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(axum::body::Bytes, Option<String>, String), ApiError> {
    let raw = raw.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(st.max_body)
        } else {
            ApiError::BadJson(e.body_text())
        }
    })?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(k.to_owned())
            }
            _ => {
                return Err(ApiError::Invalid(vec![(
                    "Idempotency-Key".into(),
                    "1 to 255 printable ASCII characters without spaces".into(),
                )]))
            }
        },
    };
    let body_hash: String = openssl::sha::sha256(&raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((raw, key, body_hash))
}

#[utoipa::path(
    post, path = "/api/v1/requests", tag = "requests",
    summary = "File one request for one service",
    request_body = crate::api::RequestIn,
    params(IdempotencyKey),
    responses(
        (status = 202, description = "Accepted and stored durably; follow it at Location", body = crate::api::RequestOut,
         headers(("Location" = String, description = "/api/v1/requests/{id}"))),
        crate::api::problem::WriteErrors,
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(st): State<AppState>,
    who: Client,
    headers: axum::http::HeaderMap,
    raw: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (raw, key, body_hash) = admit_body(&st, &headers, raw)?;
    if let Some(e) = key_holder(&st, &who, key.as_deref()).await? {
        return replay(&st, &e, &body_hash).await;
    }
    let body: RequestIn =
        serde_json::from_slice(&raw).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let rec = validate(&st, &who, body)?;
    let idem = key.map(|k| crate::store::IdemKey {
        client: who.name.clone(),
        key: k,
        body_hash: body_hash.clone(),
    });
    match st.store.enqueue_once(vec![rec.clone()], idem).await? {
        crate::store::Enqueued::Stored => {}
        crate::store::Enqueued::Existing(e) => return replay(&st, &e, &body_hash).await,
    }
    st.dispatcher.wake();
    crate::metrics::accepted(&who.name, 1);
    tracing::info!(request = %rec.id, client = %who.name, service = %rec.service, subject = %rec.subject_redacted(), "accepted");
    Ok(accepted_response(&rec))
}
