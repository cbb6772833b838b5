//! A case's bundle: everything a procedure needs from every registry,
//! filed in one call (an explicit list, or a named procedure with one
//! subject each service takes its fields from) and stored in one
//! transaction, or not at all.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::accept::{admit_body, key_holder, purpose_field, validate};
use super::{CaseIn, IdempotencyKey, RequestIn, SubjectIn};
use crate::api::{fields, ApiError, AppState, Client};
use crate::store::RequestRecord;

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
        crate::api::problem::WriteErrors,
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
