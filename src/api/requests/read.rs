//! Reading back: one request with everything that happened to it, and a
//! case with its requests and how far its bundle is.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{visible, RequestOut};
use crate::api::{fields, ApiError, AppState, Client};
use crate::store::{RequestRecord, State as RState};

#[utoipa::path(
    get, path = "/api/v1/requests/{id}", tag = "requests",
    summary = "A request: state, attempts with timings and errors, document id",
    params(("id" = String, Path, description = "Request id (ULID)")),
    responses((status = 200, body = crate::api::RequestOut), crate::api::problem::ReadErrors),
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
    responses((status = 200, body = CaseOut), crate::api::problem::ReadErrors),
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
