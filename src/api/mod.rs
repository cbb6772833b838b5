//! HTTP: the back-office API `/api/v1` ([`requests`], [`documents`]), the
//! admin export, `/healthz`, `/readyz` and `/openapi.json`. Clients are
//! authenticated here (bearer token, hashed) before any body is read; every
//! error is RFC 9457 problem+json ([`problem`]).

pub mod admin;
pub mod documents;
pub mod fields;
pub mod layers;
pub mod openapi;
pub mod problem;
pub mod requests;
pub mod times;
pub mod ui;

pub use problem::ApiError;
pub use requests::{validate, CaseIn, RequestIn, RequestOut, SubjectIn};

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::config::{RetryConfig, ServiceConfig};
use crate::dispatch::Dispatcher;
use crate::store::QueueStore;

pub use crate::config::{Duty, Role};

/// A client of the API, after its token was checked.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub role: Role,
    /// Services it may request; empty: all.
    pub services: Vec<String>,
    /// Requests per second it may submit; None: no limit.
    pub rate_per_s: Option<f64>,
    /// Its TLS client certificate must have these subject attributes
    /// (e.g. "CN=pisarnica"), if set.
    pub tls_subject: Option<String>,
}

impl Client {
    /// Any administrator's role (not a back-office).
    pub fn is_admin(&self) -> bool {
        self.role != Role::Backoffice
    }

    /// A back-office client with no limits: every service, no rate, no
    /// certificate.
    pub fn unlimited(name: &str, admin: bool) -> Client {
        Client {
            name: name.to_owned(),
            role: if admin { Role::Admin } else { Role::Backoffice },
            services: Vec::new(),
            rate_per_s: None,
            tls_subject: None,
        }
    }
}

/// Does a certificate subject ("O=…, CN=…") have every attribute `wanted`
/// lists?
pub fn subject_matches(subject: &str, wanted: &str) -> bool {
    let have: Vec<&str> = subject.split(',').map(str::trim).collect();
    wanted
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .all(|w| have.contains(&w))
}

/// Known clients by SHA-256 of their token (hex).
pub type Clients = BTreeMap<String, Client>;

/// The clients as they are now: readers take the current list, a reload
/// puts a new one in its place.
pub type SharedClients = Arc<std::sync::RwLock<Arc<Clients>>>;

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
    // Shared, not copied: the state is cloned for every request (each
    // layer and handler that takes it).
    pub services: Arc<BTreeMap<String, ServiceConfig>>,
    pub procedures: Arc<BTreeMap<String, crate::config::ProcedureConfig>>,
    /// Replaced whole when the daemon re-reads its configuration (SIGHUP).
    pub clients: SharedClients,
    pub retry: Arc<RetryConfig>,
    pub cipher: Arc<crate::store::crypt::DocumentCipher>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Per-client rate limits, by client name.
    pub limits: Arc<std::sync::Mutex<BTreeMap<String, crate::limits::TokenBucket>>>,
    /// Keys subjects in the audit trail.
    pub audit_key: Arc<crate::audit::AuditKey>,
    /// Where the audit trail's checkpoints are; None: none are kept.
    pub checkpoints: Option<crate::audit::Checkpoints>,
    /// The configuration, for operators' views (registries, certificates).
    pub config: Arc<crate::config::GatewayConfig>,
    /// Renders `/metrics`; None: not served (no recorder in this process).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The dashboard's signed-in sessions.
    pub sessions: Arc<ui::Sessions>,
    /// Builds case dossiers; None: not offered (no seal loaded).
    pub dossiers: Option<Arc<crate::evidence::dossier::Dossiers>>,
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
            services: Arc::new(cfg.services.clone()),
            procedures: Arc::new(cfg.procedures.clone()),
            clients: Arc::new(std::sync::RwLock::new(Arc::new(clients))),
            retry: Arc::new(cfg.retry.clone()),
            cipher,
            max_body: cfg.gateway.max_request_bytes,
            limits: Default::default(),
            // Replaced by the daemon's (`with_audit`); a random one keeps
            // tests and benchmarks honest without a key file.
            audit_key: Arc::new(crate::audit::AuditKey::from_bytes(openssl::sha::sha256(
                ulid::Ulid::new().to_string().as_bytes(),
            ))),
            checkpoints: None,
            config: Arc::new(cfg.clone()),
            metrics: None,
            sessions: Default::default(),
            dossiers: None,
        }
    }

    pub fn with_metrics(
        mut self,
        handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> AppState {
        self.metrics = handle;
        self
    }

    /// With the audit key and checkpoint file the daemon uses.
    pub fn with_dossiers(mut self, d: Arc<crate::evidence::dossier::Dossiers>) -> AppState {
        self.dossiers = Some(d);
        self
    }

    pub fn with_audit(
        mut self,
        key: Arc<crate::audit::AuditKey>,
        checkpoints: crate::audit::Checkpoints,
    ) -> AppState {
        self.audit_key = key;
        self.checkpoints = Some(checkpoints);
        self
    }

    /// The operators' questions and commands, over this state's store,
    /// dispatcher, configuration and audit trail.
    pub fn ops(&self) -> crate::ops::Ops {
        crate::ops::Ops {
            store: self.store.clone(),
            dispatcher: self.dispatcher.clone(),
            config: self.config.clone(),
            audit_key: self.audit_key.clone(),
            checkpoints: self.checkpoints.clone(),
        }
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
        bearer_client(state, &parts.headers, &parts.extensions)
    }
}

/// The client of a request's bearer token (and TLS client certificate),
/// or the one a layer already authenticated and kept in its extensions.
pub fn bearer_client(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<Client, ApiError> {
    if let Some(c) = extensions.get::<Client>() {
        return Ok(c.clone());
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
    let peer = extensions
        .get::<crate::pki::tls::PeerCert>()
        .and_then(|p| p.0.as_deref());
    authenticate(state, token, peer)
}

/// The token of an `Authorization: Bearer …` header. The scheme is
/// case-insensitive (RFC 7235 §2.1: `bearer`, `BEARER` are the same).
fn bearer(v: &str) -> Option<&str> {
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The client a token belongs to, with the subject of the connection's
/// TLS client certificate (if any) for clients bound to one.
pub fn authenticate(state: &AppState, token: &str, peer: Option<&str>) -> Result<Client, ApiError> {
    let clients = crate::sync::read(&state.clients).clone();
    let client = clients
        .get(&token_hash(token.trim()))
        .cloned()
        .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))?;
    if let Some(wanted) = &client.tls_subject {
        // A stolen token alone is not enough for such a client.
        if !peer.is_some_and(|s| subject_matches(s, wanted)) {
            return Err(ApiError::Unauthorized(
                "this token must come with its client's TLS certificate".into(),
            ));
        }
    }
    Ok(client)
}

/// `GET /admin/v1/store/export`: a backup while the daemon runs (admin
/// role), as the JSON lines `jumgw store import` reads.
#[utoipa::path(
    get, path = "/admin/v1/store/export", tag = "operations",
    summary = "A backup of the store while the daemon runs (admin token)",
    responses(
        (status = 200, description = "JSON lines for `jumgw store import`", content_type = "application/x-ndjson", body = String,
         example = "{\"kind\":\"request\",\"record\":{\"id\":\"01KAW3Q3ZJ0N5W9K5T1X0Y8B2C\",\"state\":\"delivered\"}}\n"),
                problem::AdminErrors,
    ),
    security(("bearer" = []))
)]
async fn export(State(st): State<AppState>, who: layers::Operator) -> Result<Response, ApiError> {
    // A backup holds everyone's data: who took one is on record.
    st.store
        .audit_append(vec![crate::audit::Draft {
            at_ms: crate::time::now_ms(),
            actor: who.name.clone(),
            action: "admin.export".into(),
            outcome: "requested".into(),
            ..Default::default()
        }])
        .await?;
    let mut bytes = Vec::new();
    crate::store::backup::export(&*st.store, &mut bytes)
        .await
        .map_err(ApiError::internal)?;
    let mut r = (StatusCode::OK, bytes).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(r)
}

#[utoipa::path(
    get, path = "/healthz", tag = "operations", summary = "The process is alive",
    responses((status = 200, description = "ok", content_type = "text/plain", body = String, example = "ok"))
)]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ReadyOut {
    /// The store takes writes (and the disk has its free-space reserve).
    pub store_writable: bool,
    pub registries_configured: bool,
    /// Set once a read of the store failed while running: the store is
    /// damaged (stop, `jumgw store check`, salvage or restore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_damaged: Option<StoreDamaged>,
    /// The gateway's keys on a PKCS#11 token whose token is away (the
    /// seal's, a TLS key's): nothing is signed with them until it is back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens_away: Vec<crate::ops::TokenOut>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct StoreDamaged {
    /// Reads that failed since start.
    pub read_errors: u64,
    /// The first, by tree and key.
    pub first: String,
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations", summary = "The gateway can take requests",
    responses(
        (status = 200, description = "Ready", body = ReadyOut,
         example = json!({"store_writable": true, "registries_configured": true})),
        (status = 503, description = "Not ready (the disk is full, the store is damaged, or a key's token is away)", body = ReadyOut,
         example = json!({"store_writable": true, "registries_configured": true,
                          "store_damaged": {"read_errors": 3, "first": "record 01J… is unreadable: Read corrupted data at file offset 4096"},
                          "tokens_away": [{"key": "seal", "up": false, "since": "2026-12-07T10:00:00.000Z",
                                           "error": "pkcs11:token=jumgw;object=seal?module-path=/usr/lib/softhsm/libsofthsm2.so: no token labelled \"jumgw\" in this module"}]})),
    )
)]
async fn readyz(State(st): State<AppState>) -> Response {
    let body = ReadyOut {
        store_writable: st.store.writable().await,
        registries_configured: !st.dispatcher.gates.is_empty(),
        store_damaged: st.store.read_faults().map(|f| StoreDamaged {
            read_errors: f.count,
            first: f.first,
        }),
        tokens_away: st
            .ops()
            .tokens()
            .await
            .into_iter()
            .filter(|t| !t.up)
            .collect(),
    };
    let status = if body.store_writable
        && body.registries_configured
        && body.store_damaged.is_none()
        && body.tokens_away.is_empty()
    {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    summary = "Prometheus metrics: attempts by outcome, durations, queue depth by state and registry, breakers, deliveries, certificates, store size",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String,
         example = "# TYPE jumgw_queue_depth gauge\njumgw_queue_depth{registry=\"cadastre\",state=\"queued\"} 3\n"),
        (status = 403, description = "The caller's address is not in `gateway.metrics_allow`", body = problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Metrics are not served by this process", body = problem::Problem, content_type = "application/problem+json"),
    )
)]
async fn metrics_text(
    State(st): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let allow = &st.config.gateway.metrics_allow;
    if !allow.is_empty() {
        // Without a peer address (not through the accept loop) nothing is
        // allowed: the list is a promise.
        let ip = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip());
        let ip = ip.map(|ip| match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        });
        if !ip.is_some_and(|ip| allow.iter().any(|n| n.contains(&ip))) {
            return Err(ApiError::Forbidden(format!(
                "/metrics answers only to gateway.metrics_allow; {} is not in it",
                ip.map_or_else(|| "this caller".to_string(), |i| i.to_string())
            )));
        }
    }
    if let Some(want) = &st.config.gateway.metrics_token_sha256 {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(token_hash)
            .unwrap_or_default();
        let want = want.to_ascii_lowercase();
        if given.len() != want.len() || !openssl::memcmp::eq(given.as_bytes(), want.as_bytes()) {
            return Err(ApiError::Unauthorized(
                "/metrics needs the metrics token: Authorization: Bearer <token>".into(),
            ));
        }
    }
    let Some(handle) = st.metrics.clone() else {
        return Err(ApiError::NotFound("metrics are not served here".into()));
    };
    crate::metrics::set_levels(&st.ops().levels().await?);
    let mut r = (StatusCode::OK, handle.render()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", summary = "This description (OpenAPI 3.1)",
    responses((status = 200, description = "The OpenAPI document", body = Object,
               example = json!({"openapi": "3.1.0", "info": {"title": "jum-gateway back-office API"}, "paths": {}})))
)]
async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::document_json())
}

async fn fallback() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Operations: liveness, readiness, metrics, the OpenAPI document.
fn operations() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics_text))
}

/// The whole API: one router per area, each with the layers it needs.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(requests::router(&state))
        .merge(documents::router())
        .merge(admin::router(&state))
        .merge(ui::router())
        .merge(operations())
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(state.max_body))
        .layer(axum::middleware::map_response(times::beside_ms))
        .layer(axum::middleware::map_response(layers::security_headers))
        .with_state(state)
}
