//! HTTP: the back-office API `/api/v1` (accept a request, read it, read a
//! case), `/healthz` and `/readyz`. Every error is RFC 9457
//! `application/problem+json` with a stable `type`, produced in one place
//! ([`ApiError`]'s `IntoResponse`), and JSON that does not parse comes back
//! in the same shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{RetryConfig, ServiceConfig};
use crate::dispatch::Dispatcher;
use crate::ids;
use crate::store::{QueueStore, RequestRecord, State as RState};

/// A client of the API, after its token was checked.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub admin: bool,
    /// Services it may request; empty: all.
    pub services: Vec<String>,
    /// Requests per second it may submit; None: no limit.
    pub rate_per_s: Option<f64>,
}

/// Known clients by SHA-256 of their token (hex).
pub type Clients = BTreeMap<String, Client>;

pub fn token_hash(token: &str) -> String {
    openssl::sha::sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn QueueStore>,
    pub dispatcher: Arc<Dispatcher>,
    pub services: BTreeMap<String, ServiceConfig>,
    pub procedures: BTreeMap<String, crate::config::ProcedureConfig>,
    pub clients: Arc<Clients>,
    pub retry: RetryConfig,
    pub cipher: Arc<crate::store::crypt::DocumentCipher>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Per-client rate limits, by client name.
    pub limits: Arc<std::sync::Mutex<BTreeMap<String, crate::dispatch::policy::TokenBucket>>>,
}

impl AppState {
    pub fn new(
        cfg: &crate::config::GatewayConfig,
        store: Arc<dyn QueueStore>,
        dispatcher: Arc<Dispatcher>,
        cipher: Arc<crate::store::crypt::DocumentCipher>,
        clients: Clients,
    ) -> AppState {
        AppState {
            store,
            dispatcher,
            services: cfg.services.clone(),
            procedures: cfg.procedures.clone(),
            clients: Arc::new(clients),
            retry: cfg.retry.clone(),
            cipher,
            max_body: cfg.gateway.max_request_bytes,
            limits: Default::default(),
        }
    }
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
    #[error("some fields are invalid")]
    Invalid(Vec<(String, String)>),
    #[error("{0}")]
    Conflict(String),
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
        let mut body = json!({
            "type": format!("urn:jum-gateway:problem:{kind}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        if let ApiError::Invalid(errs) = &self {
            body["errors"] = errs
                .iter()
                .map(|(p, r)| json!({"pointer": p, "reason": r}))
                .collect();
        }
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

/// The authenticated client: an extractor that runs before the body is
/// read, so an unauthenticated caller learns nothing about validation.
impl axum::extract::FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
        state
            .clients
            .get(&token_hash(token.trim()))
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseIn {
    pub number: String,
    pub legal_basis: String,
    pub official: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectIn {
    pub jmbg: Option<String>,
    pub pib: Option<String>,
    pub mb: Option<String>,
    pub ko: Option<String>,
    pub sheet: Option<String>,
    pub parcel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIn {
    pub case: CaseIn,
    pub service: String,
    pub subject: SubjectIn,
    #[serde(default)]
    pub purpose: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AttemptOut {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub http_status: Option<u16>,
    pub outcome: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct RequestOut {
    pub id: String,
    pub state: &'static str,
    pub service: String,
    pub registry: String,
    pub case: String,
    pub created_ms: u64,
    pub deadline_ms: u64,
    pub attempts: Vec<AttemptOut>,
    pub document_id: Option<String>,
    pub delivered_ms: Option<u64>,
    pub error: Option<String>,
}

impl From<&RequestRecord> for RequestOut {
    fn from(r: &RequestRecord) -> Self {
        RequestOut {
            id: r.id.clone(),
            state: r.state.name(),
            service: r.service.clone(),
            registry: r.registry.clone(),
            case: r.case.clone(),
            created_ms: r.created_ms,
            deadline_ms: r.deadline_ms,
            attempts: r
                .attempts
                .iter()
                .map(|a| AttemptOut {
                    at_ms: a.at_ms,
                    duration_ms: a.duration_ms,
                    http_status: a.http_status,
                    outcome: a.outcome.clone(),
                    detail: a.detail.clone(),
                })
                .collect(),
            document_id: r.document_id.clone(),
            delivered_ms: r.delivered_ms,
            error: r.error.clone(),
        }
    }
}

fn text_field(errs: &mut Vec<(String, String)>, pointer: &str, v: &str) {
    if v.trim().is_empty() {
        errs.push((pointer.into(), "must not be empty".into()));
    } else if v.chars().count() > 1000 {
        errs.push((pointer.into(), "longer than 1000 characters".into()));
    }
}

/// The purpose is required (the audit trail must say why), but checked
/// here rather than by serde so that a missing one is a 422 naming it.
fn purpose_field(errs: &mut Vec<(String, String)>, purpose: Option<&str>) {
    match purpose {
        None => errs.push((
            "/purpose".into(),
            "required: why the case needs this data (it goes into the envelope and the audit trail)".into(),
        )),
        Some(p) => text_field(errs, "/purpose", p),
    }
}

/// Validates a request body into a record, or lists every invalid field.
pub fn validate(
    state: &AppState,
    who: &Client,
    body: RequestIn,
) -> Result<RequestRecord, ApiError> {
    let mut errs = Vec::new();
    text_field(&mut errs, "/case/number", &body.case.number);
    text_field(&mut errs, "/case/legal_basis", &body.case.legal_basis);
    text_field(&mut errs, "/case/official", &body.case.official);
    purpose_field(&mut errs, body.purpose.as_deref());
    let purpose = body.purpose.clone().unwrap_or_default();
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
    type Check = fn(&str) -> Result<(), ids::IdError>;
    let checks: [(&str, Option<&String>, Check); 6] = [
        ("jmbg", s.jmbg.as_ref(), |v| ids::Jmbg::parse(v).map(drop)),
        ("pib", s.pib.as_ref(), |v| ids::Pib::parse(v).map(drop)),
        ("mb", s.mb.as_ref(), |v| ids::Mb::parse(v).map(drop)),
        ("ko", s.ko.as_ref(), |v| ids::KoCode::parse(v).map(drop)),
        ("sheet", s.sheet.as_ref(), |v| {
            ids::SheetNumber::parse(v).map(drop)
        }),
        ("parcel", s.parcel.as_ref(), |v| {
            ids::ParcelNumber::parse(v).map(drop)
        }),
    ];
    let mut fields = Vec::new();
    for (name, v, check) in checks {
        if let Some(v) = v {
            match check(v) {
                Ok(()) => fields.push((name.to_owned(), v.clone())),
                Err(e) => errs.push((format!("/subject/{name}"), e.to_string())),
            }
        }
    }
    let subject = crate::protocol::Subject::from_parts(
        s.jmbg.as_deref(),
        s.pib.as_deref(),
        s.mb.as_deref(),
        s.ko.as_deref(),
        s.sheet.as_deref(),
        s.parcel.as_deref(),
    );
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
    Ok(RequestRecord::queued(
        &who.name,
        body.case.number,
        body.case.legal_basis,
        body.case.official,
        purpose,
        body.service,
        svc.registry.clone(),
        fields,
        state.retry.deadline,
    ))
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
fn replay(
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
    let rec = st
        .store
        .get(id)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::Internal(format!("idempotency entry names a missing request {id}"))
        })?;
    Ok(accepted_response(&rec))
}

/// What every POST checks first: size, rate, content type, the
/// Idempotency-Key; returns the body, the key and the body's SHA-256.
fn admit_body(
    st: &AppState,
    who: &Client,
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
    if let Some(rate) = who.rate_per_s {
        let now = crate::store::now_ms();
        let mut limits = st.limits.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = limits
            .entry(who.name.clone())
            .or_insert_with(|| crate::dispatch::policy::TokenBucket::new(rate, now));
        if let Err(until) = bucket.take(now) {
            return Err(ApiError::TooMany(
                until.saturating_sub(now).div_ceil(1000).max(1),
            ));
        }
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Err(ApiError::BadJson(
            "expected Content-Type: application/json".into(),
        ));
    }
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

async fn create(
    State(st): State<AppState>,
    who: Client,
    headers: axum::http::HeaderMap,
    raw: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (raw, key, body_hash) = admit_body(&st, &who, &headers, raw)?;
    if let Some(k) = &key {
        if let Some(e) = st
            .store
            .idempotency(&who.name, k)
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            return replay(&st, &e, &body_hash);
        }
    }
    let body: RequestIn =
        serde_json::from_slice(&raw).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let rec = validate(&st, &who, body)?;
    let idem = key.map(|k| crate::store::IdemKey {
        client: who.name.clone(),
        key: k,
        body_hash: body_hash.clone(),
    });
    match st
        .store
        .enqueue_once(vec![rec.clone()], idem)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
    {
        crate::store::Enqueued::Stored => {}
        crate::store::Enqueued::Existing(e) => return replay(&st, &e, &body_hash),
    }
    st.dispatcher.wake();
    tracing::info!(request = %rec.id, client = %who.name, service = %rec.service, subject = %rec.subject_redacted(), "accepted");
    Ok(accepted_response(&rec))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleItem {
    pub service: String,
    pub subject: SubjectIn,
}

/// A bundle: an explicit list of requests, or a named procedure from the
/// configuration with one subject that every service takes its fields from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleIn {
    pub legal_basis: String,
    pub official: String,
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub requests: Option<Vec<BundleItem>>,
    #[serde(default)]
    pub procedure: Option<String>,
    #[serde(default)]
    pub subject: Option<SubjectIn>,
}

impl SubjectIn {
    fn field(&self, name: &str) -> Option<&String> {
        match name {
            "jmbg" => self.jmbg.as_ref(),
            "pib" => self.pib.as_ref(),
            "mb" => self.mb.as_ref(),
            "ko" => self.ko.as_ref(),
            "sheet" => self.sheet.as_ref(),
            "parcel" => self.parcel.as_ref(),
            _ => None,
        }
    }

    /// The part of this subject that one of `kinds` (e.g. "ko+sheet")
    /// needs: the first kind whose fields are all present.
    fn narrowed(&self, kinds: &[String]) -> Option<SubjectIn> {
        let kind = kinds
            .iter()
            .find(|k| k.split('+').all(|f| self.field(f).is_some()))?;
        let pick = |f: &str| {
            kind.split('+')
                .any(|k| k == f)
                .then(|| self.field(f).cloned())
                .flatten()
        };
        Some(SubjectIn {
            jmbg: pick("jmbg"),
            pib: pick("pib"),
            mb: pick("mb"),
            ko: pick("ko"),
            sheet: pick("sheet"),
            parcel: pick("parcel"),
        })
    }
}

/// The requests a bundle stands for: its list, or its procedure's services
/// each with the fields of the subject it takes.
fn bundle_items(
    st: &AppState,
    body: &mut BundleIn,
    errs: &mut Vec<(String, String)>,
) -> Vec<BundleItem> {
    match (
        body.requests.take(),
        body.procedure.take(),
        body.subject.take(),
    ) {
        (Some(items), None, None) => {
            if items.is_empty() || items.len() > 50 {
                errs.push(("/requests".into(), "between 1 and 50 requests".into()));
            }
            items
        }
        (None, Some(name), Some(subject)) => {
            let Some(p) = st.procedures.get(&name) else {
                errs.push((
                    "/procedure".into(),
                    format!(
                        "unknown procedure {name:?}; known: {}",
                        st.procedures.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
                return Vec::new();
            };
            let mut items = Vec::new();
            for svc in &p.services {
                let kinds = st
                    .services
                    .get(svc)
                    .map(|s| s.subjects.clone())
                    .unwrap_or_default();
                match subject.narrowed(&kinds) {
                    Some(s) => items.push(BundleItem {
                        service: svc.clone(),
                        subject: s,
                    }),
                    None => errs.push((
                        "/subject".into(),
                        format!("{svc} (in {name}) needs one of: {}", kinds.join(", ")),
                    )),
                }
            }
            items
        }
        (None, Some(_), None) => {
            errs.push(("/subject".into(), "a procedure needs a subject".into()));
            Vec::new()
        }
        _ => {
            errs.push((
                "/requests".into(),
                "give either requests, or a procedure with a subject".into(),
            ));
            Vec::new()
        }
    }
}

fn bundle_response(case: &str, recs: &[RequestRecord]) -> Response {
    let body = json!({
        "case": case,
        "requests": recs.iter().map(|r| json!({"id": r.id, "state": r.state.name(), "service": r.service})).collect::<Vec<_>>(),
    });
    let mut r = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "/api/v1/cases/{}",
        crate::delivery::case_folder(case)
    )) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `POST /api/v1/cases/{case}/requests`: everything a procedure needs from
/// every registry, in one call, stored in one transaction.
async fn create_bundle(
    State(st): State<AppState>,
    who: Client,
    Path(case): Path<String>,
    headers: axum::http::HeaderMap,
    raw: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (raw, key, body_hash) = admit_body(&st, &who, &headers, raw)?;
    if let Some(k) = &key {
        if let Some(e) = st
            .store
            .idempotency(&who.name, k)
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            return replay_bundle(&st, &case, &e, &body_hash);
        }
    }
    let mut body: BundleIn =
        serde_json::from_slice(&raw).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let mut errs = Vec::new();
    text_field(&mut errs, "/legal_basis", &body.legal_basis);
    text_field(&mut errs, "/official", &body.official);
    purpose_field(&mut errs, body.purpose.as_deref());
    if case.trim().is_empty() {
        errs.push(("/case".into(), "must not be empty".into()));
    }
    let from_procedure = body.procedure.is_some();
    let items = bundle_items(&st, &mut body, &mut errs);
    if !errs.is_empty() {
        return Err(ApiError::Invalid(errs));
    }
    let mut recs = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let one = RequestIn {
            case: CaseIn {
                number: case.clone(),
                legal_basis: body.legal_basis.clone(),
                official: body.official.clone(),
            },
            service: item.service,
            subject: item.subject,
            purpose: body.purpose.clone(),
        };
        match validate(&st, &who, one) {
            Ok(r) => recs.push(r),
            Err(ApiError::Invalid(e)) => errs.extend(
                e.into_iter()
                    // The case and purpose were checked for the whole bundle.
                    .filter(|(p, _)| !p.starts_with("/case/") && p != "/purpose")
                    .map(|(p, r)| {
                        // A procedure's subject fields are the body's /subject.
                        if from_procedure && p.starts_with("/subject") {
                            (p, r)
                        } else if from_procedure {
                            (format!("/procedure{p}"), r)
                        } else {
                            (format!("/requests/{i}{p}"), r)
                        }
                    }),
            ),
            Err(other) => return Err(other),
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::Invalid(errs));
    }
    let idem = key.map(|k| crate::store::IdemKey {
        client: who.name.clone(),
        key: k,
        body_hash: body_hash.clone(),
    });
    match st
        .store
        .enqueue_once(recs.clone(), idem)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
    {
        crate::store::Enqueued::Stored => {}
        crate::store::Enqueued::Existing(e) => return replay_bundle(&st, &case, &e, &body_hash),
    }
    st.dispatcher.wake();
    for r in &recs {
        tracing::info!(request = %r.id, client = %who.name, service = %r.service, subject = %r.subject_redacted(), "accepted in a bundle");
    }
    Ok(bundle_response(&case, &recs))
}

fn replay_bundle(
    st: &AppState,
    case: &str,
    e: &crate::store::IdemEntry,
    body_hash: &str,
) -> Result<Response, ApiError> {
    if e.body_hash != body_hash {
        return Err(ApiError::Conflict(
            "this Idempotency-Key was used with another request body".into(),
        ));
    }
    let mut recs = Vec::new();
    for id in &e.request_ids {
        if let Some(r) = st
            .store
            .get(id)
            .map_err(|e| ApiError::Internal(e.to_string()))?
        {
            recs.push(r);
        }
    }
    Ok(bundle_response(case, &recs))
}

fn visible(who: &Client, r: &RequestRecord) -> bool {
    who.admin || r.client == who.name
}

async fn get_request(
    State(st): State<AppState>,
    who: Client,
    Path(id): Path<String>,
) -> Result<Json<RequestOut>, ApiError> {
    let rec = st
        .store
        .get(&id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match rec {
        Some(r) if visible(&who, &r) => Ok(Json(RequestOut::from(&r))),
        _ => Err(ApiError::NotFound(format!("no request {id}"))),
    }
}

async fn get_case(
    State(st): State<AppState>,
    who: Client,
    Path(case): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let recs: Vec<RequestRecord> = st
        .store
        .by_case(&case)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .into_iter()
        .filter(|r| visible(&who, r))
        .collect();
    if recs.is_empty() {
        return Err(ApiError::NotFound(format!("no requests in case {case:?}")));
    }
    let count = |f: fn(RState) -> bool| recs.iter().filter(|r| f(r.state)).count();
    let delivered = count(|s| s == RState::Delivered);
    let failed = count(|s| s == RState::Dead || s == RState::Cancelled);
    Ok(Json(json!({
        "case": case,
        "requests": recs.iter().map(RequestOut::from).collect::<Vec<_>>(),
        "delivered": delivered,
        "failed": failed,
        "pending": recs.len() - delivered - failed,
        "complete": delivered + failed == recs.len(),
    })))
}

/// A visible request that has a document, and the document in clear.
fn document_of(
    st: &AppState,
    who: &Client,
    id: &str,
) -> Result<(RequestRecord, Vec<u8>), ApiError> {
    let rec = st
        .store
        .get(id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let rec = match rec {
        Some(r) if visible(who, &r) && r.document_id.is_some() => r,
        _ => return Err(ApiError::NotFound(format!("no document {id}"))),
    };
    let sealed = st
        .store
        .document(id)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no document {id}")))?;
    let plain = st
        .cipher
        .open(id, &sealed)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((rec, plain))
}

/// A generic JSON view of an element: text, or an object of children
/// (repeated names become arrays), attributes as `@name`.
fn project(doc: &crate::xml::Document, node: crate::xml::dom::NodeId) -> serde_json::Value {
    let Some(el) = doc.element(node) else {
        return serde_json::Value::Null;
    };
    let kids: Vec<_> = doc.child_elements(node).collect();
    if kids.is_empty() && el.attrs.is_empty() {
        return serde_json::Value::String(doc.text(node).trim().to_owned());
    }
    let mut m = serde_json::Map::new();
    for a in &el.attrs {
        m.insert(
            format!("@{}", a.local),
            serde_json::Value::String(a.value.clone()),
        );
    }
    for k in kids {
        let name = doc.element(k).map(|e| e.local.clone()).unwrap_or_default();
        let v = project(doc, k);
        match m.get_mut(&name) {
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(prev) => {
                let p = prev.take();
                *prev = serde_json::Value::Array(vec![p, v]);
            }
            None => {
                m.insert(name, v);
            }
        }
    }
    serde_json::Value::Object(m)
}

fn etag(bytes: &[u8]) -> String {
    let h: String = openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{h}\"")
}

async fn get_document(
    State(st): State<AppState>,
    who: Client,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (rec, plain) = document_of(&st, &who, &id)?;
    let doc = crate::xml::Document::parse(&plain, &crate::xml::Limits::default())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let env =
        crate::protocol::envelope::read(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
    let payload = match env.body {
        crate::protocol::Body::Payload { node, .. } => project(&doc, node),
        _ => serde_json::Value::Null,
    };
    // The signer certificate as received in the signature.
    let cert = doc
        .find_all(crate::xml::dsig::DSIG_NS, "X509Certificate")
        .first()
        .and_then(|&n| {
            use base64::Engine;
            let clean: String = doc.text(n).chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(clean).ok()
        })
        .and_then(|der| openssl::x509::X509::from_der(&der).ok());
    let signer = cert.as_ref().map(|c| {
        json!({
            "subject": crate::xml::dsig::name_to_string(c.subject_name()),
            "issuer": crate::xml::dsig::name_to_string(c.issuer_name()),
            "not_before": c.not_before().to_string(),
            "not_after": c.not_after().to_string(),
        })
    });
    Ok(Json(json!({
        "id": id,
        "request_id": rec.id,
        "case": rec.case,
        "service": rec.service,
        "registry": rec.registry,
        "fetched_ms": rec.attempts.last().map(|a| a.at_ms),
        "size": plain.len(),
        "etag": etag(&plain),
        // Verified on receipt (signature, chain, requestHash, schema):
        // an unverified answer is never stored as a document.
        "verification": "verified on receipt",
        "signer": signer,
        "payload": payload,
    })))
}

async fn get_document_content(
    State(st): State<AppState>,
    who: Client,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let (_, plain) = document_of(&st, &who, &id)?;
    let tag = etag(&plain);
    let mut r = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(tag.as_str())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, plain).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        r
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

async fn list_services(State(st): State<AppState>, _who: Client) -> Json<serde_json::Value> {
    let services: Vec<serde_json::Value> = st
        .services
        .iter()
        .map(|(id, s)| {
            json!({
                "id": id,
                "title": s.title,
                "registry": s.registry,
                "subjects": s.subjects,
                "registry_state": st.dispatcher.gates.get(&s.registry).map(|g| g.status()),
            })
        })
        .collect();
    let procedures: Vec<serde_json::Value> = st
        .procedures
        .iter()
        .map(|(id, p)| json!({"id": id, "title": p.title, "services": p.services}))
        .collect();
    Json(json!({ "services": services, "procedures": procedures }))
}

/// `GET /admin/v1/store/export`: a backup while the daemon runs (admin
/// role), as the JSON lines `jumgw store import` reads.
async fn export(State(st): State<AppState>, who: Client) -> Result<Response, ApiError> {
    if !who.admin {
        return Err(ApiError::Forbidden(
            "the export needs an admin token".into(),
        ));
    }
    let store = st.store.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        crate::store::backup::export(&*store, &mut out).map(|_| out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut r = (StatusCode::OK, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(st): State<AppState>) -> Response {
    let store = st.store.writable();
    let registries = !st.dispatcher.gates.is_empty();
    let body = Json(json!({"store_writable": store, "registries_configured": registries}));
    if store && registries {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn fallback() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/requests", post(create))
        .route("/api/v1/requests/{id}", get(get_request))
        .route("/api/v1/cases/{case}", get(get_case))
        .route("/api/v1/cases/{case}/requests", post(create_bundle))
        .route("/api/v1/documents/{id}", get(get_document))
        .route("/api/v1/documents/{id}/content", get(get_document_content))
        .route("/api/v1/services", get(list_services))
        .route("/admin/v1/store/export", get(export))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}
