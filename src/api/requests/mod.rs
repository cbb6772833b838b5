//! The back-office's requests and cases over HTTP: the router, the
//! shapes a request is filed in and read back as, and who may see a
//! request. Each concern is a file: filing one request with its
//! `Idempotency-Key` (`accept`), a case's bundle (`bundle`), reading a
//! request or a case (`read`), the case dossier (`dossier`). Validation
//! names every bad field by JSON pointer, and `Idempotency-Key` makes
//! every POST safe to repeat.

mod accept;
mod bundle;
mod dossier;
mod read;

// The handlers by the names the OpenAPI document and the router use
// (`__path_*` are what `#[utoipa::path]` made of each).
pub use accept::{__path_create, create, validate};
pub use bundle::{
    __path_create_bundle, case_segment, create_bundle, BundleEntry, BundleIn, BundleItem, BundleOut,
};
pub use dossier::{__path_get_dossier, get_dossier};
pub use read::{__path_get_case, __path_get_request, get_case, get_request, CaseOut};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppState, Client};
use crate::store::RequestRecord;

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
/// handlers read it in [`accept::admit_body`]).
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
    pub attachments: Vec<AttachmentOut>,
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
            attachments: attachments_out(r.document_id.as_deref().unwrap_or(&r.id), &r.attachments),
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

/// A document's attachments as the API lists them.
pub fn attachments_out(
    document: &str,
    list: &[crate::lifecycle::AttachmentRecord],
) -> Vec<AttachmentOut> {
    list.iter()
        .enumerate()
        .map(|(i, a)| AttachmentOut {
            n: i + 1,
            content_id: a.content_id.clone(),
            content_type: a.content_type.clone(),
            name: a.name.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
            url: format!("/api/v1/documents/{document}/attachments/{}", i + 1),
        })
        .collect()
}

/// One attachment that came with an X-Road document (SOAP with
/// attachments, MTOM), kept beside it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "n": 1, "content_id": "plan-1@cadastre", "content_type": "application/pdf",
    "name": "plan.pdf", "size": 18432, "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "url": "/api/v1/documents/01KAW3Q3ZJ0N5W9K5T1X0Y8B2C/attachments/1"
}))]
pub struct AttachmentOut {
    /// Its number (from 1), as in its URL and its case-folder file.
    pub n: usize,
    /// Its MIME `Content-ID`, without the angle brackets.
    pub content_id: String,
    /// Its MIME type as the registry sent it (served as
    /// `application/octet-stream` when it is not a valid type).
    pub content_type: String,
    /// The file name the registry gave it, if any (never used as a path).
    pub name: Option<String>,
    pub size: u64,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// Where to fetch it.
    pub url: String,
}

/// Whether `who` may see `r`: a client its own requests, an
/// administrator every one.
pub fn visible(who: &Client, r: &RequestRecord) -> bool {
    who.is_admin() || r.client == who.name
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
