//! The administrators' API `/admin/v1` (admin-role tokens only; others get
//! 403): the queue (list with filters and a cursor, one request, retry,
//! cancel, bulk retry of dead requests), statistics, registries (state,
//! pause, resume), the audit trail (verify, "who used my data"). HTTP
//! only: each handler takes its arguments, checks the caller's role and
//! asks [`crate::ops`], which answers and audits every action that changes
//! something.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::layers::{Admin, Auditor, Operator};
use super::{ApiError, AppState, RequestOut};
use crate::ops::{Filter, RegistryOut, RetryDeadIn, RetryDeadOut, Stats, WhoIn, WhoOut};
use crate::store::RequestRecord;

/// A request as operators see it: everything but the subject in clear.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "state": "dead", "service": "cadastre.property-sheet",
    "registry": "cadastre", "case": "351-12/2026-IV", "created_ms": 1795643792420u64,
    "deadline_ms": 1796939792420u64,
    "attempts": [{"at_ms": 1795643792431u64, "duration_ms": 38, "http_status": 503, "outcome": "retryable", "detail": "HTTP 503"}],
    "document_id": null, "delivered_ms": null, "error": "HTTP 503 (attempts or ZUP deadline exhausted)",
    "client": "pisarnica", "official": "marija.kovac", "legal_basis": "ZUP čl. 103",
    "purpose": "building permit", "subject": "ko 803472, sheet 1520", "at_risk": false, "due_ms": null
}))]
pub struct AdminRequestOut {
    #[serde(flatten)]
    pub request: RequestOut,
    pub client: String,
    pub official: String,
    pub legal_basis: String,
    pub purpose: String,
    /// JMBGs masked.
    pub subject: String,
    /// Within days of its ZUP deadline.
    pub at_risk: bool,
    pub due_ms: Option<u64>,
}

impl From<&RequestRecord> for AdminRequestOut {
    fn from(r: &RequestRecord) -> Self {
        AdminRequestOut {
            request: RequestOut::from(r),
            client: r.client.to_string(),
            official: r.official.clone(),
            legal_basis: r.legal_basis.clone(),
            purpose: r.purpose.clone(),
            subject: r.subject_redacted(),
            at_risk: r.at_risk,
            due_ms: r.due_ms,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub state: Option<String>,
    pub registry: Option<String>,
    pub service: Option<String>,
    pub case: Option<String>,
    pub client: Option<String>,
    /// Text the last error contains (case-insensitive).
    pub error: Option<String>,
    /// Only requests filed longer ago than this (e.g. 10m, 2h, 1d).
    pub older_than: Option<String>,
    /// `newest` (default) or `oldest` first.
    pub order: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// 1 to 500, default 50.
    pub limit: Option<usize>,
}

/// A page of the queue.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"requests": [], "total": 0, "next": null}))]
pub struct Page {
    pub requests: Vec<AdminRequestOut>,
    /// How many match the filter, on every page.
    pub total: usize,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[utoipa::path(
    get, path = "/admin/v1/requests", tag = "administration",
    summary = "List and filter the queue, newest or oldest first, a page at a time",
    params(ListQuery),
    responses((status = 200, body = Page), (status = 422, description = "A filter is invalid", body = super::problem::Problem, content_type = "application/problem+json"), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn list(
    State(st): State<AppState>,
    _admin: Admin,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::Invalid(vec![("query".into(), e.body_text())]))?;
    let filter = Filter {
        state: q.state,
        registry: q.registry,
        service: q.service,
        case: q.case,
        client: q.client,
        error: q.error,
        older_than: q.older_than,
    };
    let newest = match q.order.as_deref() {
        None | Some("newest") => true,
        Some("oldest") => false,
        Some(o) => {
            return Err(ApiError::Invalid(vec![(
                "/order".into(),
                format!("{o:?} is neither newest nor oldest"),
            )]))
        }
    };
    let page = st
        .ops()
        .list(&filter, newest, q.after, q.limit.unwrap_or(50))
        .await?;
    Ok(Json(Page {
        requests: page.requests.iter().map(AdminRequestOut::from).collect(),
        total: page.total as usize,
        next: page.next,
    }))
}

#[utoipa::path(
    get, path = "/admin/v1/requests/{id}", tag = "administration",
    summary = "One request with every attempt",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, body = AdminRequestOut), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn show(
    State(st): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<AdminRequestOut>, ApiError> {
    Ok(Json(AdminRequestOut::from(&st.ops().request(&id).await?)))
}

#[utoipa::path(
    post, path = "/admin/v1/requests/{id}/retry", tag = "administration",
    summary = "Retry one request now (a dead or cancelled one starts over)",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, body = AdminRequestOut), (status = 409, description = "Delivered, being sent or fetched: nothing to retry", body = super::problem::Problem, content_type = "application/problem+json"), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn retry(
    State(st): State<AppState>,
    who: Operator,
    Path(id): Path<String>,
) -> Result<Json<AdminRequestOut>, ApiError> {
    let r = st.ops().retry(&who.name, &id).await?;
    Ok(Json(AdminRequestOut::from(&r)))
}

#[utoipa::path(
    post, path = "/admin/v1/requests/{id}/cancel", tag = "administration",
    summary = "Cancel a request that has not finished; one being sent finishes its attempt, and its answer is kept but not delivered",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, body = AdminRequestOut), (status = 409, description = "Already finished", body = super::problem::Problem, content_type = "application/problem+json"), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(st): State<AppState>,
    who: Operator,
    Path(id): Path<String>,
) -> Result<Json<AdminRequestOut>, ApiError> {
    let r = st.ops().cancel(&who.name, &id).await?;
    Ok(Json(AdminRequestOut::from(&r)))
}

#[utoipa::path(
    post, path = "/admin/v1/requests/retry-dead", tag = "administration",
    summary = "Retry every dead request that matches a filter (or, with dry_run, count them)",
    request_body = RetryDeadIn,
    responses((status = 200, body = RetryDeadOut), super::problem::WriteErrors),
    security(("bearer" = []))
)]
pub async fn retry_dead(
    State(st): State<AppState>,
    who: Operator,
    body: Result<Json<RetryDeadIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RetryDeadOut>, ApiError> {
    let Json(b) = body.map_err(json_rejection)?;
    Ok(Json(st.ops().retry_dead(&who.name, b).await?))
}

fn json_rejection(e: axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection as J;
    match e {
        J::MissingJsonContentType(_) => ApiError::MediaType,
        other if other.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(0)
        }
        other => ApiError::BadJson(other.body_text()),
    }
}

#[utoipa::path(
    get, path = "/admin/v1/stats", tag = "administration",
    summary = "Requests by state, overall and per registry",
    responses((status = 200, body = Stats), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn get_stats(State(st): State<AppState>, _admin: Admin) -> Result<Json<Stats>, ApiError> {
    Ok(Json(st.ops().stats().await?))
}

#[utoipa::path(
    get, path = "/admin/v1/registries", tag = "administration",
    summary = "Each registry: breaker, pause, maintenance, in flight, queue, last success and error, certificates",
    responses((status = 200, body = Vec<RegistryOut>), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn list_registries(
    State(st): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<RegistryOut>>, ApiError> {
    let ops = st.ops();
    let stats = ops.stats().await?;
    Ok(Json(ops.registries(&stats)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"until": "2026-11-26T06:00:00Z"}))]
pub struct PauseIn {
    /// When the pause ends by itself (RFC 3339); absent: until resumed.
    pub until: Option<String>,
}

#[utoipa::path(
    post, path = "/admin/v1/registries/{name}/pause", tag = "administration",
    summary = "Stop sending to a registry (optionally until a time); its requests wait",
    params(("name" = String, Path, description = "Registry: civil, cadastre, tax")),
    request_body(content = PauseIn, description = "Optional; {} pauses until resumed"),
    responses((status = 200, body = crate::dispatch::GateStatus), super::problem::WriteErrors, super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn pause(
    State(st): State<AppState>,
    who: Operator,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<crate::dispatch::GateStatus>, ApiError> {
    let ops = st.ops();
    // An unknown registry is told before the body is read.
    ops.registry_exists(&name)?;
    // The body is optional: none (or `{}`) pauses until resumed.
    let b: PauseIn = if body.iter().all(u8::is_ascii_whitespace) {
        PauseIn::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?
    };
    let until = match b.until {
        None => None,
        Some(u) => Some(
            chrono::DateTime::parse_from_rfc3339(&u)
                .map_err(|e| {
                    ApiError::Invalid(vec![(
                        "/until".into(),
                        format!("not an RFC 3339 time: {e}"),
                    )])
                })?
                .timestamp_millis()
                .max(0) as u64,
        ),
    };
    Ok(Json(ops.pause(&who.name, &name, until).await?))
}

#[utoipa::path(
    post, path = "/admin/v1/registries/{name}/resume", tag = "administration",
    summary = "Resume sending to a registry",
    params(("name" = String, Path, description = "Registry: civil, cadastre, tax")),
    responses((status = 200, body = crate::dispatch::GateStatus), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn resume(
    State(st): State<AppState>,
    who: Operator,
    Path(name): Path<String>,
) -> Result<Json<crate::dispatch::GateStatus>, ApiError> {
    Ok(Json(st.ops().resume(&who.name, &name).await?))
}

#[utoipa::path(
    post, path = "/admin/v1/audit/verify", tag = "administration",
    summary = "Walk the audit trail's hash chain and check it against the checkpoints",
    responses((status = 200, description = "The report; `broken` names the first broken link", body = crate::audit::Verification), super::problem::AdminErrors),
    security(("bearer" = []))
)]
pub async fn audit_verify(
    State(st): State<AppState>,
    who: Auditor,
) -> Result<Json<crate::audit::Verification>, ApiError> {
    Ok(Json(st.ops().verify(&who.name).await?))
}

#[utoipa::path(
    post, path = "/admin/v1/audit/who", tag = "administration",
    summary = "Who used my data: every access to data about a person (by JMBG, in the body so that it stays out of URLs and logs)",
    request_body = WhoIn,
    responses((status = 200, body = WhoOut), super::problem::WriteErrors),
    security(("bearer" = []))
)]
pub async fn audit_who(
    State(st): State<AppState>,
    who: Auditor,
    body: Result<Json<WhoIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<WhoOut>, ApiError> {
    let Json(b) = body.map_err(json_rejection)?;
    Ok(Json(st.ops().who(&who.name, &b).await?))
}

/// The operators' API, for administrators only (one layer for all).
pub fn router(st: &AppState) -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/admin/v1/store/export", get(super::export))
        .route("/admin/v1/requests", get(list))
        .route("/admin/v1/requests/retry-dead", post(retry_dead))
        .route("/admin/v1/requests/{id}", get(show))
        .route("/admin/v1/requests/{id}/retry", post(retry))
        .route("/admin/v1/requests/{id}/cancel", post(cancel))
        .route("/admin/v1/stats", get(get_stats))
        .route("/admin/v1/registries", get(list_registries))
        .route("/admin/v1/registries/{name}/pause", post(pause))
        .route("/admin/v1/registries/{name}/resume", post(resume))
        .route("/admin/v1/audit/verify", post(audit_verify))
        .route("/admin/v1/audit/who", post(audit_who))
        .route_layer(axum::middleware::from_fn_with_state(
            st.clone(),
            super::layers::admin_only,
        ))
}
