//! The administrators' API `/admin/v1` (admin-role tokens only; others get
//! 403): the queue (list with filters and a cursor, one request, retry,
//! cancel, bulk retry of dead requests), statistics, registries (state,
//! pause, resume), the audit trail (verify, "who used my data"). Every
//! action that changes something is itself audited.

use crate::lifecycle::{self, Event};
use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::layers::{Admin, Auditor, Operator};
use super::{ApiError, AppState, Client, RequestOut};
use crate::audit::Draft;
use crate::store::{RequestRecord, State as RState};
use crate::time::now_ms;

/// Appends an administrator's action to the audit trail; an action that
/// cannot be audited is not done.
async fn audit(
    st: &AppState,
    who: &Client,
    action: &str,
    r: Option<&RequestRecord>,
    outcome: &str,
) -> Result<(), ApiError> {
    let draft = match r {
        Some(r) => crate::audit::about(&st.audit_key, r, &who.name, action, outcome),
        None => Draft {
            at_ms: now_ms(),
            actor: who.name.clone(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            ..Draft::default()
        },
    };
    st.store
        .audit_append(vec![draft])
        .await
        .map_err(ApiError::from)
}

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

/// Filters for the queue.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filter {
    /// queued, sending, awaiting, retrying, fetched, delivered, dead, cancelled.
    pub state: Option<String>,
    pub registry: Option<String>,
    pub service: Option<String>,
    pub case: Option<String>,
    pub client: Option<String>,
    /// Text the last error contains (case-insensitive).
    pub error: Option<String>,
    /// Only requests filed longer ago than this (e.g. 10m, 2h, 1d).
    pub older_than: Option<String>,
}

impl Filter {
    fn check(&self) -> Result<(Option<RState>, u64), ApiError> {
        let mut errs = Vec::new();
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => match RState::ALL.iter().find(|x| x.name() == s) {
                Some(x) => Some(*x),
                None => {
                    errs.push(("/state".into(), format!("unknown state {s:?}")));
                    None
                }
            },
        };
        let before = match self.older_than.as_deref() {
            None => u64::MAX,
            Some(d) => match crate::config::parse_duration(d) {
                Ok(d) => now_ms().saturating_sub(d.as_millis() as u64),
                Err(e) => {
                    errs.push(("/older_than".into(), e));
                    0
                }
            },
        };
        if errs.is_empty() {
            Ok((state, before))
        } else {
            Err(ApiError::Invalid(errs))
        }
    }

    /// The store's selector for this filter.
    fn selector(&self) -> Result<crate::store::Selector, ApiError> {
        let (state, before) = self.check()?;
        Ok(crate::store::Selector {
            state,
            registry: self.registry.clone(),
            service: self.service.clone(),
            case: self.case.clone(),
            client: self.client.clone(),
            error: self.error.clone(),
            created_before: (before != u64::MAX).then_some(before),
            attention: false,
        })
    }

    /// Every matching request, oldest first.
    async fn select(&self, st: &AppState) -> Result<Vec<RequestRecord>, ApiError> {
        let selector = self.selector()?;
        let mut out = Vec::new();
        loop {
            let page = st
                .store
                .list(&crate::store::Listing {
                    selector: selector.clone(),
                    order: crate::store::Order::Oldest,
                    after: out.last().map(|r: &RequestRecord| r.id.to_string()),
                    limit: 1000,
                })
                .await?;
            let done = page.len() < 1000;
            out.extend(page);
            if done {
                return Ok(out);
            }
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
    responses((status = 200, body = Page), (status = 422, description = "A filter is invalid", body = super::problem::Problem, content_type = "application/problem+json"), super::openapi::AdminErrors),
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
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Invalid(vec![(
            "/limit".into(),
            "between 1 and 500".into(),
        )]));
    }
    let selector = filter.selector()?;
    // One more than the page: whether there is a next one.
    let (mut page, total) = {
        let page = st
            .store
            .list(&crate::store::Listing {
                selector: selector.clone(),
                order: if newest {
                    crate::store::Order::Newest
                } else {
                    crate::store::Order::Oldest
                },
                after: q.after.clone(),
                limit: limit + 1,
            })
            .await?;
        let total = st.store.count(&selector).await?;
        (page, total)
    };
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more
        .then(|| page.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(Page {
        requests: page.iter().map(AdminRequestOut::from).collect(),
        total: total as usize,
        next,
    }))
}

async fn find(st: &AppState, id: &str) -> Result<RequestRecord, ApiError> {
    st.store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no request {id}")))
}

#[utoipa::path(
    get, path = "/admin/v1/requests/{id}", tag = "administration",
    summary = "One request with every attempt",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, body = AdminRequestOut), super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn show(
    State(st): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<AdminRequestOut>, ApiError> {
    Ok(Json(AdminRequestOut::from(&find(&st, &id).await?)))
}

/// Makes a request due now; a dead or cancelled one starts over.
pub async fn retry_one(st: &AppState, id: &str) -> Result<RequestRecord, ApiError> {
    // Due times are in the store's clock (shared by every instance).
    let now = st.store.clock_ms();
    let before = find(st, id).await?;
    let updated = st
        .store
        .update(id, &|r| lifecycle::apply(r, &Event::Retry, now))
        .await?;
    match updated {
        Some(r) => {
            st.dispatcher.wake();
            Ok(r)
        }
        None => Err(ApiError::StateConflict(format!(
            "request {id} is {}: nothing to retry",
            before.state.name()
        ))),
    }
}

#[utoipa::path(
    post, path = "/admin/v1/requests/{id}/retry", tag = "administration",
    summary = "Retry one request now (a dead or cancelled one starts over)",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, body = AdminRequestOut), (status = 409, description = "Delivered, being sent or fetched: nothing to retry", body = super::problem::Problem, content_type = "application/problem+json"), super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn retry(
    State(st): State<AppState>,
    who: Operator,
    Path(id): Path<String>,
) -> Result<Json<AdminRequestOut>, ApiError> {
    Ok(Json(AdminRequestOut::from(
        &do_retry(&st, &who, &id).await?,
    )))
}

/// An administrator retries one request (audited first).
pub async fn do_retry(st: &AppState, who: &Operator, id: &str) -> Result<RequestRecord, ApiError> {
    let r = find(st, id).await?;
    audit(st, who, "admin.retry", Some(&r), "requested").await?;
    retry_one(st, id).await
}

#[utoipa::path(
    post, path = "/admin/v1/requests/{id}/cancel", tag = "administration",
    summary = "Cancel a request that has not finished; one being sent finishes its attempt, and its answer is kept but not delivered",
    params(("id" = String, Path, description = "Request id")),
    responses((status = 200, body = AdminRequestOut), (status = 409, description = "Already finished", body = super::problem::Problem, content_type = "application/problem+json"), super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(st): State<AppState>,
    who: Operator,
    Path(id): Path<String>,
) -> Result<Json<AdminRequestOut>, ApiError> {
    Ok(Json(AdminRequestOut::from(
        &do_cancel(&st, &who, &id).await?,
    )))
}

/// An administrator cancels a request that has not finished (audited first).
pub async fn do_cancel(st: &AppState, who: &Operator, id: &str) -> Result<RequestRecord, ApiError> {
    let r = find(st, id).await?;
    audit(st, who, "admin.cancel", Some(&r), "requested").await?;
    let now = st.store.clock_ms();
    let cancel = Event::Cancel { by: &who.name };
    let updated = st
        .store
        .update(id, &|r| lifecycle::apply(r, &cancel, now))
        .await?;
    updated.ok_or_else(|| {
        ApiError::StateConflict(format!(
            "request {id} is {}: already finished",
            r.state.name()
        ))
    })
}

/// Bulk retry of dead requests.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"registry": "cadastre", "dry_run": true}))]
pub struct RetryDeadIn {
    pub registry: Option<String>,
    pub service: Option<String>,
    pub case: Option<String>,
    pub client: Option<String>,
    pub error: Option<String>,
    pub older_than: Option<String>,
    /// Only count and list; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"matched": 2, "retried": 0, "dry_run": true, "ids": ["01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "01KAW3Q3ZJ7M4T2W5T1X0Y8B2D"]}))]
pub struct RetryDeadOut {
    pub matched: usize,
    pub retried: usize,
    pub dry_run: bool,
    pub ids: Vec<String>,
}

#[utoipa::path(
    post, path = "/admin/v1/requests/retry-dead", tag = "administration",
    summary = "Retry every dead request that matches a filter (or, with dry_run, count them)",
    request_body = RetryDeadIn,
    responses((status = 200, body = RetryDeadOut), super::openapi::WriteErrors),
    security(("bearer" = []))
)]
pub async fn retry_dead(
    State(st): State<AppState>,
    who: Operator,
    body: Result<Json<RetryDeadIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RetryDeadOut>, ApiError> {
    let Json(b) = body.map_err(json_rejection)?;
    Ok(Json(do_retry_dead(&st, &who, b).await?))
}

/// An administrator retries every dead request that matches (audited).
pub async fn do_retry_dead(
    st: &AppState,
    who: &Operator,
    b: RetryDeadIn,
) -> Result<RetryDeadOut, ApiError> {
    let filter = Filter {
        state: Some("dead".into()),
        registry: b.registry,
        service: b.service,
        case: b.case,
        client: b.client,
        error: b.error,
        older_than: b.older_than,
    };
    let dead = filter.select(st).await?;
    let ids: Vec<String> = dead.iter().map(|r| r.id.to_string()).collect();
    let mut retried = 0;
    if !b.dry_run {
        audit(
            st,
            who,
            "admin.retry-dead",
            None,
            &format!("{} requests", ids.len()),
        )
        .await?;
        for id in &ids {
            if retry_one(st, id).await.is_ok() {
                retried += 1;
            }
        }
    }
    Ok(RetryDeadOut {
        matched: ids.len(),
        retried,
        dry_run: b.dry_run,
        ids,
    })
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

/// Requests by state, overall and per registry.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(example = json!({"states": {"queued": 3, "dead": 1}, "registries": {"cadastre": {"queued": 3, "dead": 1}}, "oldest_queued_ms": 1795643792420u64, "at_risk": 0}))]
pub struct Stats {
    pub states: BTreeMap<String, u64>,
    pub registries: BTreeMap<String, BTreeMap<String, u64>>,
    /// Filing time of the oldest request not yet fetched.
    pub oldest_queued_ms: Option<u64>,
    /// Open requests near their ZUP deadline.
    pub at_risk: u64,
}

/// From the store's counters: no record is read.
pub async fn stats(st: &AppState) -> Result<Stats, ApiError> {
    let t = st.store.tally().await?;
    let mut s = Stats::default();
    for x in RState::ALL {
        s.states.insert(x.name().into(), t.state(x));
    }
    for r in st.config.registries.keys() {
        s.registries.insert(r.clone(), BTreeMap::new());
    }
    for ((registry, state), n) in &t.by_registry {
        s.registries
            .entry(registry.clone())
            .or_default()
            .insert(state.name().into(), *n);
    }
    s.oldest_queued_ms = t.oldest_open_ms;
    s.at_risk = t.at_risk;
    Ok(s)
}

#[utoipa::path(
    get, path = "/admin/v1/stats", tag = "administration",
    summary = "Requests by state, overall and per registry",
    responses((status = 200, body = Stats), super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn get_stats(State(st): State<AppState>, _admin: Admin) -> Result<Json<Stats>, ApiError> {
    Ok(Json(stats(&st).await?))
}

/// A certificate the gateway relies on for a registry.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertOut {
    pub role: String,
    pub subject: String,
    pub not_after: String,
    pub days_left: i64,
}

/// Everything about a registry an operator needs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "registry": "cadastre", "breaker": "open", "paused": false, "paused_until": null,
    "in_maintenance": false, "in_flight": 0, "queue": {"retrying": 12, "queued": 3},
    "last": {"success_ms": 1795643792420u64, "error_ms": 1795643799420u64, "error": "HTTP 503"},
    "certificates": [{"role": "tls trust", "subject": "CN=jum-gateway development CA", "not_after": "Nov 23 21:00:00 2036 GMT", "days_left": 3650}]
}))]
pub struct RegistryOut {
    #[serde(flatten)]
    pub gate: crate::dispatch::GateStatus,
    /// Requests not finished, by state.
    pub queue: BTreeMap<String, u64>,
    pub last: crate::dispatch::LastSeen,
    pub certificates: Vec<CertOut>,
    pub revocation: crate::dispatch::RevocationStatus,
    /// `signed-xml` or `x-road`.
    pub protocol: String,
    /// X-Road: what its security server last said of our services
    /// (`listMethods`, `allowedMethods`, and ours it does not allow),
    /// asked at start and hourly; absent until asked, and for a
    /// signed-XML registry.
    pub x_road: Option<crate::dispatch::MethodsReport>,
}

/// The first certificate of a PEM file.
pub fn cert_info(role: &str, path: &std::path::Path) -> Option<CertOut> {
    let pem = std::fs::read(path).ok()?;
    let cert = openssl::x509::X509::from_pem(&pem).ok()?;
    let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
    let days_left = now
        .diff(cert.not_after())
        .map(|d| i64::from(d.days))
        .unwrap_or(0);
    Some(CertOut {
        role: role.to_owned(),
        subject: crate::xml::dsig::name_to_string(cert.subject_name()),
        not_after: cert.not_after().to_string(),
        days_left,
    })
}

/// A key of the gateway's on a PKCS#11 token, and whether its token is
/// there.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenOut {
    /// `seal`, `tls` (the registries' mutual TLS) or `api-tls`.
    pub key: String,
    pub up: bool,
    /// Since when it is there, or away (RFC 3339).
    pub since: String,
    /// Why it is away: the key's URI (never its PIN) and the module's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The gateway's keys that are on a token, each with its token's state:
/// one that is away is looked for again (its backoff allowing), one that
/// is there is asked whether it still is. Keys in PEM files are not
/// listed.
pub async fn tokens(st: &AppState) -> Vec<TokenOut> {
    let g = &st.config.gateway;
    let mut keys = vec![("seal", &g.sign_key), ("tls", &g.tls_key)];
    if let Some(t) = &g.api_tls {
        keys.push(("api-tls", &t.key));
    }
    let keys: Vec<(&'static str, String)> = keys
        .into_iter()
        .map(|(k, p)| (k, p.to_string_lossy().into_owned()))
        .filter(|(_, uri)| crate::pki::pkcs11::is_uri(uri))
        .collect();
    if keys.is_empty() {
        return Vec::new();
    }
    // The module may take its time (a token looked for, the library
    // initialised again): not on the async threads.
    tokio::task::spawn_blocking(move || {
        keys.into_iter()
            .filter_map(|(key, uri)| {
                crate::pki::pkcs11::state(&uri).map(|s| TokenOut {
                    key: key.into(),
                    up: s.up,
                    since: crate::time::rfc3339(s.since_ms),
                    error: s.error,
                })
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// What the alert watch needs of the dispatcher and the configuration:
/// each registry's breaker and pause, every certificate in use.
pub async fn alert_snapshot(st: &AppState) -> crate::alerts::watch::Snapshot {
    use crate::alerts::watch::{CertFacts, GateFacts, Snapshot, TokenFacts};
    let stats = stats(st).await.unwrap_or_default();
    let regs = registries(st, &stats);
    let mut certificates = Vec::new();
    let g = &st.config.gateway;
    let mut ours = vec![("gateway/tls", &g.tls_cert), ("gateway/seal", &g.sign_cert)];
    if let Some(t) = &g.api_tls {
        ours.push(("gateway/api-tls", &t.cert));
    }
    for (label, path) in ours {
        if let Some(c) = cert_info(label, path) {
            certificates.push(CertFacts {
                label: label.into(),
                not_after: c.not_after,
                days_left: c.days_left,
            });
        }
    }
    let mut gates = Vec::new();
    for r in regs {
        for c in &r.certificates {
            certificates.push(CertFacts {
                label: format!("{}/{}", r.gate.registry, c.role),
                not_after: c.not_after.clone(),
                days_left: c.days_left,
            });
        }
        gates.push(GateFacts {
            // Half-open is still failing: only a closed breaker ends it.
            breaker_open: r.gate.breaker != crate::limits::BreakerShown::Closed,
            paused: r.gate.paused,
            services_not_allowed: r.x_road.map(|m| m.missing).unwrap_or_default(),
            registry: r.gate.registry,
        });
    }
    let tokens = tokens(st)
        .await
        .into_iter()
        .map(|t| TokenFacts {
            key: t.key,
            up: t.up,
            error: t.error,
        })
        .collect();
    Snapshot {
        gates,
        certificates,
        tokens,
    }
}

/// Every registry, with its queue taken from `stats` (one scan of the
/// store serves both).
pub fn registries(st: &AppState, stats: &Stats) -> Vec<RegistryOut> {
    st.dispatcher
        .gates
        .iter()
        .map(|(name, g)| {
            let cfg = st.config.registries.get(name);
            let certificates = cfg
                .map(|c| {
                    [
                        ("tls trust", Some(&c.tls_ca)),
                        ("signer trust", c.signer_ca.as_ref()),
                    ]
                    .into_iter()
                    .filter_map(|(role, p)| cert_info(role, p?))
                    .collect()
                })
                .unwrap_or_default();
            RegistryOut {
                gate: g.status(),
                queue: stats
                    .registries
                    .get(name)
                    .map(|m| {
                        m.iter()
                            .filter(|(s, _)| {
                                !matches!(s.as_str(), "delivered" | "dead" | "cancelled")
                            })
                            .map(|(s, n)| (s.clone(), *n))
                            .collect()
                    })
                    .unwrap_or_default(),
                last: g.last(),
                certificates,
                revocation: st.dispatcher.revocation(name),
                protocol: cfg
                    .map(|c| c.protocol.name())
                    .unwrap_or_default()
                    .to_owned(),
                x_road: st.dispatcher.methods_report(name),
            }
        })
        .collect()
}

#[utoipa::path(
    get, path = "/admin/v1/registries", tag = "administration",
    summary = "Each registry: breaker, pause, maintenance, in flight, queue, last success and error, certificates",
    responses((status = 200, body = Vec<RegistryOut>), super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn list_registries(
    State(st): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<RegistryOut>>, ApiError> {
    Ok(Json(stats(&st).await.map(|s| registries(&st, &s))?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"until": "2026-11-26T06:00:00Z"}))]
pub struct PauseIn {
    /// When the pause ends by itself (RFC 3339); absent: until resumed.
    pub until: Option<String>,
}

fn gate<'a>(
    st: &'a AppState,
    name: &str,
) -> Result<&'a std::sync::Arc<crate::dispatch::Gate>, ApiError> {
    st.dispatcher
        .gates
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("no registry {name}")))
}

#[utoipa::path(
    post, path = "/admin/v1/registries/{name}/pause", tag = "administration",
    summary = "Stop sending to a registry (optionally until a time); its requests wait",
    params(("name" = String, Path, description = "Registry: civil, cadastre, tax")),
    request_body(content = PauseIn, description = "Optional; {} pauses until resumed"),
    responses((status = 200, body = crate::dispatch::GateStatus), super::openapi::WriteErrors, super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn pause(
    State(st): State<AppState>,
    who: Operator,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<crate::dispatch::GateStatus>, ApiError> {
    gate(&st, &name)?;
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
    Ok(Json(do_pause(&st, &who, &name, until).await?))
}

/// An administrator pauses a registry (audited).
pub async fn do_pause(
    st: &AppState,
    who: &Operator,
    name: &str,
    until: Option<u64>,
) -> Result<crate::dispatch::GateStatus, ApiError> {
    let g = gate(st, name)?;
    audit(
        st,
        who,
        "admin.pause",
        None,
        &format!(
            "{name} until {}",
            until.map_or("resumed".into(), |u| u.to_string())
        ),
    )
    .await?;
    st.dispatcher.pause(name, true, until).await?;
    Ok(g.status())
}

/// An administrator resumes a registry (audited).
pub async fn do_resume(
    st: &AppState,
    who: &Operator,
    name: &str,
) -> Result<crate::dispatch::GateStatus, ApiError> {
    let g = gate(st, name)?;
    audit(st, who, "admin.resume", None, name).await?;
    st.dispatcher.pause(name, false, None).await?;
    Ok(g.status())
}

#[utoipa::path(
    post, path = "/admin/v1/registries/{name}/resume", tag = "administration",
    summary = "Resume sending to a registry",
    params(("name" = String, Path, description = "Registry: civil, cadastre, tax")),
    responses((status = 200, body = crate::dispatch::GateStatus), super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn resume(
    State(st): State<AppState>,
    who: Operator,
    Path(name): Path<String>,
) -> Result<Json<crate::dispatch::GateStatus>, ApiError> {
    Ok(Json(do_resume(&st, &who, &name).await?))
}

#[utoipa::path(
    post, path = "/admin/v1/audit/verify", tag = "administration",
    summary = "Walk the audit trail's hash chain and check it against the checkpoints",
    responses((status = 200, description = "The report; `broken` names the first broken link", body = crate::audit::Verification), super::openapi::AdminErrors),
    security(("bearer" = []))
)]
pub async fn audit_verify(
    State(st): State<AppState>,
    who: Auditor,
) -> Result<Json<crate::audit::Verification>, ApiError> {
    Ok(Json(do_verify(&st, &who).await?))
}

/// An auditor walks the trail's chain (audited, with what it found),
/// from the API or the dashboard alike.
pub async fn do_verify(
    st: &AppState,
    who: &Auditor,
) -> Result<crate::audit::Verification, ApiError> {
    let checkpoints = match &st.checkpoints {
        Some(c) => c.read().map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    let report = crate::audit::verify(&*st.store, &checkpoints)
        .await
        .map_err(ApiError::internal)?;
    audit(
        st,
        who,
        "audit.verify",
        None,
        if report.broken.is_some() {
            "broken"
        } else {
            "intact"
        },
    )
    .await?;
    Ok(report)
}

/// "Who used my data": the person, and the period.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"jmbg": "0512981717776", "from": "2026-01-01T00:00:00Z"}))]
pub struct WhoIn {
    pub jmbg: String,
    /// RFC 3339; default: the beginning.
    pub from: Option<String>,
    /// RFC 3339; default: now.
    pub to: Option<String>,
}

/// One access to data about the person.
#[derive(Debug, Serialize, ToSchema)]
pub struct Access {
    pub seq: u64,
    pub at_ms: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub actor: String,
    pub official: String,
    pub action: String,
    pub case: String,
    pub service: String,
    pub legal_basis: String,
    pub purpose: String,
    pub outcome: String,
    pub request_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"subject": "0512******776", "accesses": [{"seq": 12, "at_ms": 1795643792420u64, "at": "2026-11-25T21:56:32Z", "actor": "pisarnica", "official": "marija.kovac", "action": "request.accepted", "case": "351-12/2026-IV", "service": "civil.citizenship-certificate", "legal_basis": "ZUP čl. 103", "purpose": "building permit", "outcome": "accepted", "request_id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C"}]}))]
pub struct WhoOut {
    /// The JMBG, masked.
    pub subject: String,
    pub accesses: Vec<Access>,
}

fn time_arg(pointer: &str, v: Option<&str>, default: u64) -> Result<u64, ApiError> {
    match v {
        None => Ok(default),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis().max(0) as u64)
            .map_err(|e| {
                ApiError::Invalid(vec![(pointer.into(), format!("not an RFC 3339 time: {e}"))])
            }),
    }
}

/// The report for one person.
pub async fn who_report(st: &AppState, b: &WhoIn) -> Result<WhoOut, ApiError> {
    let jmbg = crate::ids::Jmbg::parse(&b.jmbg)
        .map_err(|e| ApiError::Invalid(vec![("/jmbg".into(), e.to_string())]))?;
    let from = time_arg("/from", b.from.as_deref(), 0)?;
    let to = time_arg("/to", b.to.as_deref(), u64::MAX)?;
    let hash = st.audit_key.hash("jmbg", &b.jmbg);
    let accesses = st
        .store
        .audit_by_subject(&hash)
        .await?
        .into_iter()
        .filter(|e| (from..=to).contains(&e.draft.at_ms))
        .map(|e| Access {
            seq: e.seq,
            at_ms: e.draft.at_ms,
            at: chrono::DateTime::<chrono::Utc>::from_timestamp_millis(e.draft.at_ms as i64)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            actor: e.draft.actor,
            official: e.draft.official,
            action: e.draft.action,
            case: e.draft.case,
            service: e.draft.service,
            legal_basis: e.draft.legal_basis,
            purpose: e.draft.purpose,
            outcome: e.draft.outcome,
            request_id: e.draft.request_id,
        })
        .collect();
    Ok(WhoOut {
        subject: jmbg.redacted(),
        accesses,
    })
}

#[utoipa::path(
    post, path = "/admin/v1/audit/who", tag = "administration",
    summary = "Who used my data: every access to data about a person (by JMBG, in the body so that it stays out of URLs and logs)",
    request_body = WhoIn,
    responses((status = 200, body = WhoOut), super::openapi::WriteErrors),
    security(("bearer" = []))
)]
pub async fn audit_who(
    State(st): State<AppState>,
    who: Auditor,
    body: Result<Json<WhoIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<WhoOut>, ApiError> {
    let Json(b) = body.map_err(json_rejection)?;
    Ok(Json(do_who(&st, &who, &b).await?))
}

/// "Who used my data", itself audited as an access to the person's data.
pub async fn do_who(st: &AppState, who: &Auditor, b: &WhoIn) -> Result<WhoOut, ApiError> {
    let report = who_report(st, b).await?;
    // The query is itself an access to the person's data.
    let mut d = Draft {
        at_ms: now_ms(),
        actor: who.name.clone(),
        action: "audit.who".into(),
        outcome: format!("{} entries", report.accesses.len()),
        ..Draft::default()
    };
    d.subject = vec![st.audit_key.hash("jmbg", &b.jmbg)];
    st.store.audit_append(vec![d]).await?;
    Ok(report)
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
