//! Accepting requests (one, or a case bundle), and reading requests and
//! cases back: validation names every bad field by JSON pointer, and
//! `Idempotency-Key` makes every POST safe to repeat.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{fields, ApiError, AppState, Client};
use crate::ids;
use crate::store::{RequestRecord, State as RState};

/// The case the data is for, and who asks on what legal basis.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"number": "351-12/2026-IV", "legal_basis": "ZUP čl. 103", "official": "marija.kovac"}))]
pub struct CaseIn {
    /// At most 255 characters (`xrd:issue`), whose case-folder name fits
    /// in 255 bytes; one line, no control characters.
    #[schema(min_length = 1, max_length = 255, pattern = "\\S")]
    pub number: String,
    /// The law and article that allow the authority to ask (e.g. ZUP čl. 103).
    #[schema(min_length = 1, max_length = 1000, pattern = "\\S")]
    pub legal_basis: String,
    /// Who asks: the official handling the case (`xrd:userId`: at most
    /// 255 characters, one line).
    #[schema(min_length = 1, max_length = 255, pattern = "\\S")]
    pub official: String,
}

/// Whom or what the data is about. Allowed combinations (each service
/// lists its own in `GET /api/v1/services`): `jmbg`, `pib`, `mb`,
/// `ko`+`sheet`, `ko`+`parcel`, `ko`+`jmbg`, `ko`+`mb`. Identifiers are
/// checked with their check digits.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ko": "803472", "sheet": "1520"}))]
pub struct SubjectIn {
    pub jmbg: Option<String>,
    pub pib: Option<String>,
    pub mb: Option<String>,
    pub ko: Option<String>,
    pub sheet: Option<String>,
    pub parcel: Option<String>,
}

/// The `Idempotency-Key` header every POST takes (documentation only: the
/// handlers read it in [`admit_body`]).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes the POST safe to repeat: the same key with the same body gives
    /// the original answer (also after a restart); with another body, 409.
    /// 1 to 255 printable ASCII characters; kept 24 h.
    #[serde(rename = "Idempotency-Key")]
    #[param(
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    pub key: Option<String>,
}

/// One request for one service.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "case": {"number": "351-12/2026-IV", "legal_basis": "ZUP čl. 103", "official": "marija.kovac"},
    "purpose": "building permit",
    "service": "cadastre.property-sheet",
    "subject": {"ko": "803472", "sheet": "1520"}
}))]
pub struct RequestIn {
    pub case: CaseIn,
    /// A service id from `GET /api/v1/services`.
    pub service: String,
    pub subject: SubjectIn,
    /// Required: why the case needs the data (envelope and audit trail).
    #[serde(default)]
    #[schema(required, value_type = String, min_length = 1, max_length = 1000, pattern = "\\S")]
    pub purpose: Option<String>,
}

/// One attempt at the registry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub http_status: Option<u16>,
    /// document, accepted, ticket-lost, permanent, retryable, security.
    pub outcome: String,
    pub detail: String,
    /// X-Road: this attempt's message id (every attempt is a message of
    /// its own; the security server's log and signed document know it by
    /// this id). Absent for the signed-XML profile.
    pub message_id: Option<String>,
}

/// X-Road: the security server's signed document (ASiC-E) of the message
/// that brought the document, and where getting it stands.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"state": "pending", "message_id": "2f0c1c0e-8f4e-4c53-9a44-9d1c3c5b8e21", "tries": 1, "next_ms": 1795643852420u64, "reason": null}))]
pub struct SignedDocOut {
    /// `pending` (asked for again at `next_ms`: the security server has
    /// not timestamped the message yet), `kept`, or `failed` (given up,
    /// `reason` says why).
    pub state: String,
    /// The X-Road message id it is asked for by (`queryId`).
    pub message_id: String,
    pub tries: u32,
    pub next_ms: Option<u64>,
    /// SHA-256 of the container, once kept.
    pub sha256: Option<String>,
    pub reason: Option<String>,
}

/// A request and everything that happened to it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "state": "queued", "service": "cadastre.property-sheet",
    "registry": "cadastre", "case": "351-12/2026-IV", "created_ms": 1795643792420u64,
    "deadline_ms": 1796939792420u64, "attempts": [], "document_id": null,
    "delivered_ms": null, "error": null
}))]
pub struct RequestOut {
    /// ULID.
    pub id: String,
    #[schema(value_type = String, pattern = "^(queued|sending|awaiting|retrying|fetched|delivered|dead|cancelled)$")]
    pub state: &'static str,
    pub service: String,
    pub registry: String,
    pub case: String,
    /// The back-office client that filed it (its case folder is under
    /// this client's).
    pub client: String,
    pub created_ms: u64,
    pub deadline_ms: u64,
    pub attempts: Vec<AttemptOut>,
    pub document_id: Option<String>,
    /// What came with the document (X-Road); empty otherwise.
    pub attachments: Vec<super::documents::AttachmentOut>,
    /// X-Road: the signed document of the message that brought the
    /// document; absent for the signed-XML profile.
    pub signed_document: Option<SignedDocOut>,
    pub delivered_ms: Option<u64>,
    pub error: Option<String>,
}

impl From<&RequestRecord> for RequestOut {
    fn from(r: &RequestRecord) -> Self {
        RequestOut {
            id: r.id.to_string(),
            state: r.state.name(),
            service: r.service.to_string(),
            registry: r.registry.to_string(),
            case: r.case.to_string(),
            client: r.client.to_string(),
            created_ms: r.created_ms,
            deadline_ms: r.deadline_ms,
            attempts: r
                .attempts
                .iter()
                .map(|a| AttemptOut {
                    at_ms: a.at_ms,
                    duration_ms: a.duration_ms,
                    http_status: a.http_status,
                    outcome: a.outcome.name().to_owned(),
                    detail: a.detail.clone(),
                    message_id: a.message_id.clone(),
                })
                .collect(),
            document_id: r.document_id.clone(),
            attachments: super::documents::attachments_out(
                r.document_id.as_deref().unwrap_or(&r.id),
                &r.attachments,
            ),
            signed_document: r.signed_document.as_ref().map(|d| SignedDocOut {
                state: d.state.name().to_owned(),
                message_id: d.message_id.clone(),
                tries: d.tries,
                next_ms: d.next_ms,
                sha256: d.sha256.clone(),
                reason: d.reason.clone(),
            }),
            delivered_ms: r.delivered_ms,
            error: r.error.clone(),
        }
    }
}

/// The purpose is required (the audit trail must say why), but checked
/// here rather than by serde so that a missing one is a 422 naming it.
fn purpose_field(errs: &mut Vec<(String, String)>, purpose: Option<&str>) -> String {
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
    for (name, v, check) in checks {
        if let Some(Err(e)) = v.map(|v| check(v)) {
            errs.push((format!("/subject/{name}"), e.to_string()));
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
    // Parsed above, and no error: the subject is a good one.
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
    .at(state.store.clock_ms()))
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
async fn key_holder(
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
fn admit_body(
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
    request_body = super::RequestIn,
    params(IdempotencyKey),
    responses(
        (status = 202, description = "Accepted and stored durably; follow it at Location", body = super::RequestOut,
         headers(("Location" = String, description = "/api/v1/requests/{id}"))),
        super::openapi::WriteErrors,
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

/// One request of a bundle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleItem {
    pub service: String,
    pub subject: SubjectIn,
}

/// A bundle: an explicit list of requests, or a named procedure from the
/// configuration with one subject that every service takes its fields from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "legal_basis": "ZUP čl. 103", "official": "marija.kovac", "purpose": "building permit",
    "procedure": "building-permit",
    "subject": {"jmbg": "0512981717776", "ko": "803472", "sheet": "1520"}
}))]
pub struct BundleIn {
    #[schema(min_length = 1, max_length = 1000, pattern = "\\S")]
    pub legal_basis: String,
    #[schema(min_length = 1, max_length = 255, pattern = "\\S")]
    pub official: String,
    /// Required: why the case needs the data.
    #[serde(default)]
    #[schema(required, value_type = String, min_length = 1, max_length = 1000, pattern = "\\S")]
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

/// A case number as one URL path segment.
pub fn case_segment(case: &str) -> String {
    let mut out = String::with_capacity(case.len());
    for b in case.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request of an accepted bundle.
#[derive(Debug, Serialize, ToSchema)]
pub struct BundleEntry {
    pub id: String,
    #[schema(value_type = String)]
    pub state: &'static str,
    pub service: String,
}

/// The answer to a bundle: the requests it filed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"case": "351-12/2026-IV", "requests": [
    {"id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "state": "queued", "service": "cadastre.property-sheet"},
    {"id": "01KAW3Q3ZJ7M4T2W5T1X0Y8B2D", "state": "queued", "service": "tax.property-tax-status"},
    {"id": "01KAW3Q3ZJ9Q1R8W5T1X0Y8B2E", "state": "queued", "service": "civil.citizenship-certificate"}
]}))]
pub struct BundleOut {
    pub case: String,
    pub requests: Vec<BundleEntry>,
}

fn bundle_response(case: &str, recs: &[RequestRecord]) -> Response {
    let body = BundleOut {
        case: case.to_owned(),
        requests: recs
            .iter()
            .map(|r| BundleEntry {
                id: r.id.to_string(),
                state: r.state.name(),
                service: r.service.to_string(),
            })
            .collect(),
    };
    let mut r = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/cases/{}", case_segment(case))) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// `POST /api/v1/cases/{case}/requests`: everything a procedure needs from
/// every registry, in one call, stored in one transaction.
#[utoipa::path(
    post, path = "/api/v1/cases/{case}/requests", tag = "requests",
    summary = "File everything a case needs in one call (a list, or a named procedure)",
    request_body = BundleIn,
    params(("case" = String, Path, description = "The case number, URL-encoded", example = "351-12/2026-IV"), IdempotencyKey),
    responses(
        (status = 202, description = "All stored together (or none)", body = BundleOut,
         headers(("Location" = String, description = "/api/v1/cases/{case}"))),
        super::openapi::WriteErrors,
    ),
    security(("bearer" = []))
)]
pub async fn create_bundle(
    State(st): State<AppState>,
    who: Client,
    Path(case): Path<String>,
    headers: axum::http::HeaderMap,
    raw: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (raw, key, body_hash) = admit_body(&st, &headers, raw)?;
    if let Some(e) = key_holder(&st, &who, key.as_deref()).await? {
        return replay_bundle(&st, &case, &e, &body_hash).await;
    }
    let mut body: BundleIn =
        serde_json::from_slice(&raw).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let mut errs = Vec::new();
    // The bundle's case is its path; its fields are checked once here
    // (as `/case`, `/legal_basis`, …), not for each request.
    let case = fields::case_number(&mut errs, "/case", &case);
    fields::check(
        &mut errs,
        "/legal_basis",
        &body.legal_basis,
        fields::LEGAL_BASIS,
    );
    fields::check(&mut errs, "/official", &body.official, fields::OFFICIAL);
    purpose_field(&mut errs, body.purpose.as_deref());
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
    match st.store.enqueue_once(recs.clone(), idem).await? {
        crate::store::Enqueued::Stored => {}
        crate::store::Enqueued::Existing(e) => {
            return replay_bundle(&st, &case, &e, &body_hash).await
        }
    }
    st.dispatcher.wake();
    crate::metrics::accepted(&who.name, recs.len());
    for r in &recs {
        tracing::info!(request = %r.id, client = %who.name, service = %r.service, subject = %r.subject_redacted(), "accepted in a bundle");
    }
    Ok(bundle_response(&case, &recs))
}

async fn replay_bundle(
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
        if let Some(r) = st.store.get(id).await? {
            recs.push(r);
        }
    }
    Ok(bundle_response(case, &recs))
}

pub fn visible(who: &Client, r: &RequestRecord) -> bool {
    who.is_admin() || r.client == who.name
}

#[utoipa::path(
    get, path = "/api/v1/requests/{id}", tag = "requests",
    summary = "A request: state, attempts with timings and errors, document id",
    params(("id" = String, Path, description = "Request id (ULID)")),
    responses((status = 200, body = super::RequestOut), super::openapi::ReadErrors),
    security(("bearer" = []))
)]
pub async fn get_request(
    State(st): State<AppState>,
    who: Client,
    Path(id): Path<String>,
) -> Result<Json<RequestOut>, ApiError> {
    let rec = st.store.get(&id).await?;
    match rec {
        Some(r) if visible(&who, &r) => Ok(Json(RequestOut::from(&r))),
        _ => Err(ApiError::NotFound(format!("no request {id}"))),
    }
}

#[utoipa::path(
    get, path = "/api/v1/cases/{case}", tag = "requests",
    summary = "A case: its requests and how far the bundle is",
    params(("case" = String, Path, description = "The case number, URL-encoded", example = "351-12/2026-IV")),
    responses((status = 200, body = CaseOut), super::openapi::ReadErrors),
    security(("bearer" = []))
)]
pub async fn get_case(
    State(st): State<AppState>,
    who: Client,
    Path(case): Path<String>,
) -> Result<Json<CaseOut>, ApiError> {
    let case = fields::case_key(&case);
    let recs: Vec<RequestRecord> = st
        .store
        .by_case(&case)
        .await?
        .into_iter()
        .filter(|r| visible(&who, r))
        .collect();
    if recs.is_empty() {
        return Err(ApiError::NotFound(format!("no requests in case {case:?}")));
    }
    let count = |f: fn(RState) -> bool| recs.iter().filter(|r| f(r.state)).count();
    let delivered = count(|s| s == RState::Delivered);
    let failed = count(|s| s == RState::Dead || s == RState::Cancelled);
    Ok(Json(CaseOut {
        case,
        requests: recs.iter().map(RequestOut::from).collect(),
        delivered,
        failed,
        pending: recs.len() - delivered - failed,
        complete: delivered + failed == recs.len(),
    }))
}

#[utoipa::path(
    get, path = "/api/v1/cases/{case}/dossier", tag = "requests",
    summary = "The case dossier: an ASiC-E container with every document as the registry signed it, its evidence, the case's facts and audit excerpt, sealed (XAdES B-T)",
    params(("case" = String, Path, description = "The case number, URL-encoded", example = "351-12/2026-IV")),
    responses(
        (status = 200, description = "The container, a zip (`jumgw dossier verify` checks it offline)", content_type = "application/vnd.etsi.asic-e+zip", body = String,
         example = "PK\u{3}\u{4}…mimetypeapplication/vnd.etsi.asic-e+zip…case.json…documents/…META-INF/signatures0.xml"),
        (status = 503, description = "The TSA cannot timestamp the seal now (`tsa-unavailable`)", body = super::problem::Problem, content_type = "application/problem+json"),
        super::openapi::ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_dossier(
    State(st): State<AppState>,
    who: Client,
    Path(case): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use crate::evidence::dossier::DossierError;
    use axum::response::IntoResponse;
    let case = fields::case_key(&case);
    let Some(d) = st.dossiers.clone() else {
        return Err(ApiError::NotFound(
            "dossiers are not offered by this gateway".into(),
        ));
    };
    let bytes = d
        .build(&case, &who.name, &|r| visible(&who, r))
        .await
        .map_err(|e| match e {
            DossierError::NoCase(_) => ApiError::NotFound(format!("no requests in case {case:?}")),
            DossierError::Store(e) => ApiError::from(e),
            DossierError::Tsa(d) => ApiError::TsaUnavailable(d),
            other => ApiError::internal(other),
        })?;
    let file: String = case
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/vnd.etsi.asic-e+zip".to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.asice\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A case: its requests (of this client) and the bundle's progress.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "case": "351-12/2026-IV",
    "requests": [{
        "id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "state": "delivered", "service": "cadastre.property-sheet",
        "registry": "cadastre", "case": "351-12/2026-IV", "created_ms": 1795643792420u64,
        "deadline_ms": 1796939792420u64,
        "attempts": [{"at_ms": 1795643792431u64, "duration_ms": 38, "http_status": 200, "outcome": "document", "detail": "document"}],
        "document_id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "delivered_ms": 1795643792502u64, "error": null
    }],
    "delivered": 1, "failed": 0, "pending": 0, "complete": true
}))]
pub struct CaseOut {
    pub case: String,
    pub requests: Vec<RequestOut>,
    pub delivered: usize,
    /// Dead or cancelled.
    pub failed: usize,
    pub pending: usize,
    /// Every request has finished (delivered, dead or cancelled).
    pub complete: bool,
}

/// The back-office's requests and cases. Filing (the two POSTs) goes
/// through the client's rate and the JSON content type first.
pub fn router(st: &AppState) -> axum::Router<AppState> {
    use axum::middleware::from_fn_with_state;
    use axum::routing::{get, post};
    let filing = axum::Router::new()
        .route("/api/v1/requests", post(create))
        .route("/api/v1/cases/{case}/requests", post(create_bundle))
        .route_layer(axum::middleware::from_fn(super::layers::json_only))
        .route_layer(from_fn_with_state(st.clone(), super::layers::client_rate));
    axum::Router::new()
        .route("/api/v1/requests/{id}", get(get_request))
        .route("/api/v1/cases/{case}", get(get_case))
        .route("/api/v1/cases/{case}/dossier", get(get_dossier))
        .merge(filing)
}
