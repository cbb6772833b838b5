//! Configuration files (`config/gateway.toml`, `config/simulator.toml`),
//! parsed once into typed values and validated at start with messages that
//! name the file, the key and the problem.
//!
//! Any key can be overridden by an environment variable: `JUMGW_` followed
//! by the key path in upper case with `__` between levels, e.g.
//! `JUMGW_REGISTRIES__CIVIL__URL=https://10.0.0.5:9441/`. Values are read
//! as figment reads them: booleans, numbers, `[a, b]` lists, `{k = v}`
//! tables, and anything else as a string. The layering (a file, the files
//! it `extends`, the environment) is figment's.
//!
//! Relative file paths in a configuration are resolved against the current
//! working directory, which is the repository root in every documented
//! command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// Reads a TOML file, applies `JUMGW_*` overrides and deserialises it.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let mut files = Vec::new();
    read_chain(path, 0, &mut files)?;
    layered(files, &path.display().to_string(), std::env::vars())
}

/// A file and the files it `extends` (a path relative to it), the one it
/// extends first: each layer overrides the one before key by key, so a
/// variant (config/gateway-postgres.toml) says only what differs.
fn read_chain(path: &Path, depth: usize, files: &mut Vec<toml::Table>) -> Result<(), ConfigError> {
    let origin = path.display().to_string();
    let perr = |message: String| ConfigError::Parse {
        path: origin.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: origin.clone(),
        source,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| perr(e.to_string()))?;
    if let Some(base) = table.remove("extends") {
        let base = base.as_str().ok_or_else(|| {
            perr("extends: expected the name of another configuration file".into())
        })?;
        if depth >= 4 {
            return Err(perr("extends: more than 4 files deep (a loop?)".into()));
        }
        read_chain(
            &path.parent().unwrap_or(Path::new(".")).join(base),
            depth + 1,
            files,
        )?;
    }
    files.push(table);
    Ok(())
}

/// Parses TOML text with the given environment overrides.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    env: impl Iterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string(),
    })?;
    layered(vec![table], origin, env)
}

/// The layers, lowest first (the files, then the environment), merged and
/// read by figment: tables merge key by key, anything else is replaced.
/// An environment value is read as figment reads one: `true`, numbers,
/// `[a, b]` lists and `{k = v}` tables, anything else a string; so
/// `JUMGW_CLIENTS__X__SERVICES='["civil.birth-extract"]'` sets a list.
fn layered<T: DeserializeOwned>(
    files: Vec<toml::Table>,
    origin: &str,
    env: impl Iterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    use figment::providers::Serialized;
    use figment::value::{Dict, Value};
    let top: std::collections::BTreeSet<String> =
        files.iter().flat_map(|t| t.keys().cloned()).collect();
    let mut fig = figment::Figment::new();
    for t in files {
        fig = fig.merge(Serialized::defaults(t));
    }
    let mut overrides = Dict::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("JUMGW_") else {
            continue;
        };
        // Variables that are not key paths (JUMGW_TOKEN, JUMGW_SCHEMAS) are
        // for other parts of the program.
        if !rest.contains("__") && !top.contains(&rest.to_lowercase()) {
            continue;
        }
        let keys: Vec<String> = rest.split("__").map(|s| s.to_lowercase()).collect();
        let value: Value = v
            .parse()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        set_path(&mut overrides, &keys, value);
    }
    fig = fig.merge(Serialized::defaults(overrides));
    fig.extract::<T>().map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: figment_message(e),
    })
}

/// A figment error as we say it: the key path, then the problem (its own
/// text names the profile and the provider's source location, which mean
/// nothing to an operator).
fn figment_message(e: figment::Error) -> String {
    use figment::error::Kind;
    let Some(e) = e.into_iter().next() else {
        return "unreadable configuration".into();
    };
    let what = match &e.kind {
        Kind::UnknownField(field, expected) => format!(
            "unknown field `{field}`, expected one of {}",
            expected
                .iter()
                .map(|x| format!("`{x}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::MissingField(field) => format!("missing field `{field}`"),
        other => other.to_string(),
    };
    // An unknown field is the last part of its path already (a missing
    // one's path is the table that lacks it).
    let path: Vec<&str> = match &e.kind {
        Kind::UnknownField(..) => e
            .path
            .iter()
            .take(e.path.len().saturating_sub(1))
            .map(String::as_str)
            .collect(),
        _ => e.path.iter().map(String::as_str).collect(),
    };
    if path.is_empty() {
        what
    } else {
        format!("{}: {what}", path.join("."))
    }
}

fn set_path(table: &mut figment::value::Dict, keys: &[String], v: figment::value::Value) {
    use figment::value::{Dict, Value};
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::from(Dict::new());
        }
        match entry {
            Value::Dict(_, next) => t = next,
            _ => return,
        }
    }
    t.insert(last.clone(), v);
}

/// A duration written as `250ms`, `5s`, `10m`, `1h` or `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 250ms, 5s, 10m, 1h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        "" => return Err(format!("{s:?} has no unit; write e.g. {s}s")),
        u => return Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m, h or d")),
    };
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Serde helper: a duration string.
pub mod duration {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// An X-Road member or subsystem: `RS/GOV/08070431/jum-becej`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub instance: String,
    pub class: String,
    pub code: String,
    #[serde(default)]
    pub subsystem: Option<String>,
}

/// The gateway's own identity and keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub client: Member,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub sign_cert: PathBuf,
    pub sign_key: PathBuf,
    /// Largest response body accepted from a registry, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The AES-256 key for documents at rest: 64 hex digits in a file
    /// (make one with `openssl rand -hex 32 > FILE`; keep it 0600). A
    /// relative path is taken inside the data folder. With `--demo` it is
    /// generated when missing.
    #[serde(default = "default_document_key")]
    pub document_key_file: PathBuf,
    /// The HMAC key for subjects in the audit trail, as the document key
    /// (64 hex digits; relative: inside the data folder; generated with
    /// `--demo`). Keep it: without it "who used my data" finds nothing.
    #[serde(default = "default_audit_key")]
    pub audit_key_file: PathBuf,
    /// Largest API request body accepted, in bytes.
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Serve the API over HTTPS, optionally with client certificates.
    #[serde(default)]
    pub api_tls: Option<ApiTls>,
}

/// HTTPS for the API. With `client_ca`, client certificates are verified
/// against it; a client whose configuration names a `tls_subject` must
/// present a certificate with that subject along with its token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a client certificate (at the handshake).
    #[serde(default)]
    pub require_client_cert: bool,
}

fn default_max_request() -> usize {
    64 * 1024
}

fn default_audit_key() -> PathBuf {
    PathBuf::from("keys/audit.key")
}

fn default_document_key() -> PathBuf {
    PathBuf::from("keys/documents.key")
}

fn default_max_body() -> usize {
    10 * 1024 * 1024
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One registry as the gateway sees it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub url: String,
    /// CA bundle that is the only TLS trust root for this registry.
    pub tls_ca: PathBuf,
    /// CA bundle the registry's signing certificate must chain to.
    pub signer_ca: PathBuf,
    /// Optional pin: the signer certificate's subject must contain this.
    #[serde(default)]
    pub signer_subject: Option<String>,
    pub member: Member,
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Whole exchange, from connect to the last byte of the answer.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Exchanges in flight at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Requests per second sent to this registry.
    #[serde(default = "default_rate")]
    pub rate_per_s: f64,
    /// Consecutive failures that open the circuit breaker.
    #[serde(default = "default_breaker")]
    pub breaker_failures: u32,
    /// First cool-down of an open breaker; doubles on each failed probe.
    #[serde(default = "default_cooldown", with = "duration")]
    pub breaker_cooldown: Duration,
    /// Start with this registry paused (an administrator resumes it).
    #[serde(default)]
    pub paused: bool,
    /// Known maintenance windows: requests wait until they end.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
}

fn default_in_flight() -> usize {
    8
}
fn default_rate() -> f64 {
    50.0
}
fn default_breaker() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(10)
}

/// When to retry: exponential backoff with full jitter (see `lifecycle::retry`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_base", with = "duration")]
    pub base: Duration,
    #[serde(default = "default_factor")]
    pub factor: f64,
    #[serde(default = "default_cap", with = "duration")]
    pub cap: Duration,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// ZUP deadline, counted from filing: never retried past it.
    #[serde(default = "default_deadline", with = "duration")]
    pub deadline: Duration,
    /// How long a leased request may stay in `sending` before it is sent again.
    #[serde(default = "default_lease", with = "duration")]
    pub lease: Duration,
}

fn default_base() -> Duration {
    Duration::from_secs(10)
}
fn default_factor() -> f64 {
    2.0
}
fn default_cap() -> Duration {
    Duration::from_secs(3600)
}
fn default_attempts() -> u32 {
    12
}
fn default_deadline() -> Duration {
    Duration::from_secs(15 * 86_400)
}
fn default_lease() -> Duration {
    Duration::from_secs(60)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            base: default_base(),
            factor: default_factor(),
            cap: default_cap(),
            max_attempts: default_attempts(),
            deadline: default_deadline(),
            lease: default_lease(),
        }
    }
}

/// Where the queue lives: sled in the data folder (one instance), or a
/// PostgreSQL database that several instances share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub backend: StoreBackend,
    /// For `postgres`: a libpq URL, `postgres://user:password@host:port/db`.
    #[serde(default)]
    pub url: Option<String>,
    /// For `postgres`: connections per instance.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled,
            url: None,
            pool_size: default_pool(),
        }
    }
}

impl StoreConfig {
    /// `--store`: `sled`, or a `postgres://` URL.
    pub fn from_arg(arg: &str, base: &StoreConfig) -> Result<StoreConfig, String> {
        if arg == "sled" {
            return Ok(StoreConfig {
                backend: StoreBackend::Sled,
                url: None,
                ..base.clone()
            });
        }
        if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
            return Ok(StoreConfig {
                backend: StoreBackend::Postgres,
                url: Some(arg.to_owned()),
                ..base.clone()
            });
        }
        Err(format!(
            "--store {arg:?}: expected `sled` or a URL postgres://user@host:port/database"
        ))
    }
}

fn default_pool() -> u32 {
    8
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sled,
    Postgres,
}

/// The daemon's periodic jobs (6-field cron, seconds first, UTC).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    #[serde(default = "default_backup_cron")]
    pub backup_cron: String,
    /// Daily exports kept in `{data}/backups`.
    #[serde(default = "default_backup_keep")]
    pub backup_keep: usize,
    #[serde(default = "default_retention_cron")]
    pub retention_cron: String,
    /// Finished requests (and their documents) are deleted after this.
    #[serde(default = "default_retention", with = "duration")]
    pub retention: Duration,
    #[serde(default = "default_watch_cron")]
    pub watch_cron: String,
    /// Requests this close to their ZUP deadline are flagged.
    #[serde(default = "default_deadline_warning", with = "duration")]
    pub deadline_warning: Duration,
    /// Certificates this close to expiry are warned about.
    #[serde(default = "default_cert_warning", with = "duration")]
    pub cert_warning: Duration,
    /// Idempotency keys are forgotten after this.
    #[serde(default = "default_idempotency_ttl", with = "duration")]
    pub idempotency_ttl: Duration,
    /// When the audit trail's head is written to `{data}/audit/checkpoints.log`.
    #[serde(default = "default_checkpoint_cron")]
    pub audit_checkpoint_cron: String,
}

fn default_checkpoint_cron() -> String {
    "30 * * * * *".into()
}

fn default_idempotency_ttl() -> Duration {
    Duration::from_secs(86_400)
}

fn default_backup_cron() -> String {
    "0 0 3 * * *".into()
}
fn default_backup_keep() -> usize {
    7
}
fn default_retention_cron() -> String {
    "0 30 3 * * *".into()
}
fn default_retention() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_watch_cron() -> String {
    "0 * * * * *".into()
}
fn default_deadline_warning() -> Duration {
    Duration::from_secs(3 * 86_400)
}
fn default_cert_warning() -> Duration {
    Duration::from_secs(30 * 86_400)
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            backup_cron: default_backup_cron(),
            backup_keep: default_backup_keep(),
            retention_cron: default_retention_cron(),
            retention: default_retention(),
            watch_cron: default_watch_cron(),
            deadline_warning: default_deadline_warning(),
            cert_warning: default_cert_warning(),
            idempotency_ttl: default_idempotency_ttl(),
            audit_checkpoint_cron: default_checkpoint_cron(),
        }
    }
}

/// A back-office client of the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// SHA-256 of the bearer token, hex. Tokens are never stored in clear.
    pub token_sha256: String,
    /// `backoffice` or `admin`.
    #[serde(default = "default_role")]
    pub role: String,
    /// Services it may request; empty: all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Requests per second it may submit (429 with Retry-After beyond).
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// How its documents reach it: `folder` (the case folder, the
    /// default), `webhook` (signed events to `webhook_url`) or `pull`
    /// (it reads `/api/v1/cases/...` itself).
    #[serde(default)]
    pub delivery: DeliveryMode,
    /// With `delivery = "webhook"`: where events are POSTed.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// With `delivery = "webhook"`: the Standard Webhooks secret, `whsec_`
    /// and base64 of 24 to 64 random bytes. Better set through the
    /// environment (JUMGW_CLIENTS__<NAME>__WEBHOOK_SECRET) than written here.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// When the API is served with client certificates: the subject the
    /// certificate of this client must have (e.g. "CN=pisarnica").
    #[serde(default)]
    pub tls_subject: Option<String>,
}

/// How a client receives documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    #[default]
    Folder,
    Webhook,
    Pull,
}

/// Decodes a Standard Webhooks secret (`whsec_` + base64) to the HMAC key.
pub fn webhook_key(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_ (Standard Webhooks)")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "must hold 24 to 64 bytes, not {} (make one with `echo whsec_$(openssl rand -base64 32)`)",
            key.len()
        ));
    }
    Ok(key)
}

/// A named procedure: the services a kind of case needs from every
/// registry, filed together by `POST /api/v1/cases/{case}/requests` with
/// `{"procedure": name, "subject": {...}}`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureConfig {
    #[serde(default)]
    pub title: String,
    pub services: Vec<String>,
}

/// Webhook delivery: its own durable queue, retried with backoff (full
/// jitter) without end, so that a back-office that was down gets every
/// event when it returns, in order per case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default = "default_hook_base", with = "duration")]
    pub base: Duration,
    #[serde(default = "default_hook_cap", with = "duration")]
    pub cap: Duration,
    /// For one POST, connection included.
    #[serde(default = "default_hook_timeout", with = "duration")]
    pub timeout: Duration,
    /// Extra CA bundle for https webhook URLs (besides the system roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
}

fn default_hook_base() -> Duration {
    Duration::from_secs(1)
}
fn default_hook_cap() -> Duration {
    Duration::from_secs(300)
}
fn default_hook_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            base: default_hook_base(),
            cap: default_hook_cap(),
            timeout: default_hook_timeout(),
            tls_ca: None,
        }
    }
}

fn default_role() -> String {
    "backoffice".into()
}

/// One service of the catalogue: which registry, which payload elements,
/// which subjects. Adding a service is configuration plus a schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub registry: String,
    /// Namespace of the service's payloads.
    pub namespace: String,
    /// Prefix used when writing the request payload.
    pub prefix: String,
    /// Local name of the request payload element.
    pub request: String,
    /// Local name of the document element in a successful answer.
    pub document: String,
    /// Subject kinds accepted: jmbg, pib, mb, ko+sheet, ko+parcel, ko+jmbg, ko+mb.
    pub subjects: Vec<String>,
    /// Element names for subject fields where they differ from the field
    /// name (e.g. `jmbg = "ownerJmbg"`).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default = "default_version")]
    pub version: String,
    /// Human description for listings.
    #[serde(default)]
    pub title: String,
}

fn default_version() -> String {
    "v1".into()
}

/// `config/gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    #[serde(default)]
    pub clients: BTreeMap<String, ClientConfig>,
    #[serde(default)]
    pub webhooks: WebhookConfig,
    #[serde(default)]
    pub procedures: BTreeMap<String, ProcedureConfig>,
    pub registries: BTreeMap<String, RegistryConfig>,
    pub services: BTreeMap<String, ServiceConfig>,
}

pub const SUBJECT_KINDS: [&str; 7] = [
    "jmbg",
    "pib",
    "mb",
    "ko+sheet",
    "ko+parcel",
    "ko+jmbg",
    "ko+mb",
];

impl GatewayConfig {
    /// Loads and checks cross-references (services name known registries,
    /// subject kinds exist, URLs are https).
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let c: GatewayConfig = load(path)?;
        c.validate(&path.display().to_string())?;
        Ok(c)
    }

    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: String, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key,
            message,
        };
        if self.store.backend == StoreBackend::Postgres && self.store.url.is_none() {
            return Err(bad(
                "store.url".into(),
                "the postgres backend needs a URL, postgres://user@host:port/database".into(),
            ));
        }
        if self.store.pool_size == 0 {
            return Err(bad("store.pool_size".into(), "must be at least 1".into()));
        }
        for (name, r) in &self.registries {
            if !r.url.starts_with("https://") {
                return Err(bad(
                    format!("registries.{name}.url"),
                    format!("{:?} must be an https:// URL", r.url),
                ));
            }
            for (i, w) in r.maintenance.iter().enumerate() {
                crate::schedule::Window::new(w)
                    .map_err(|m| bad(format!("registries.{name}.maintenance[{i}].cron"), m))?;
            }
            if r.max_in_flight == 0 || r.rate_per_s.is_nan() || r.rate_per_s <= 0.0 {
                return Err(bad(
                    format!("registries.{name}"),
                    "max_in_flight and rate_per_s must be positive".into(),
                ));
            }
            if r.timeout < r.connect_timeout {
                return Err(bad(
                    format!("registries.{name}.timeout"),
                    "must not be shorter than connect_timeout".into(),
                ));
            }
        }
        for (id, s) in &self.services {
            if !self.registries.contains_key(&s.registry) {
                return Err(bad(
                    format!("services.{id}.registry"),
                    format!("unknown registry {:?}", s.registry),
                ));
            }
            if !id.starts_with(&format!("{}.", s.registry)) {
                return Err(bad(
                    format!("services.{id}"),
                    format!(
                        "a service id starts with its registry, e.g. {}.…",
                        s.registry
                    ),
                ));
            }
            if s.subjects.is_empty() {
                return Err(bad(
                    format!("services.{id}.subjects"),
                    "needs at least one subject kind".into(),
                ));
            }
            for k in &s.subjects {
                if !SUBJECT_KINDS.contains(&k.as_str()) {
                    return Err(bad(
                        format!("services.{id}.subjects"),
                        format!(
                            "unknown subject kind {k:?}; known: {}",
                            SUBJECT_KINDS.join(", ")
                        ),
                    ));
                }
            }
        }
        for (name, p) in &self.procedures {
            if p.services.is_empty() {
                return Err(bad(
                    format!("procedures.{name}.services"),
                    "needs at least one service".into(),
                ));
            }
            for svc in &p.services {
                if !self.services.contains_key(svc) {
                    return Err(bad(
                        format!("procedures.{name}.services"),
                        format!("unknown service {svc:?}"),
                    ));
                }
            }
        }
        for (name, c) in &self.clients {
            if c.delivery != DeliveryMode::Webhook {
                continue;
            }
            let url = c.webhook_url.as_deref().unwrap_or("");
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(bad(
                    format!("clients.{name}.webhook_url"),
                    "delivery = \"webhook\" needs an http:// or https:// URL".into(),
                ));
            }
            webhook_key(c.webhook_secret.as_deref().unwrap_or(""))
                .map_err(|m| bad(format!("clients.{name}.webhook_secret"), m))?;
        }
        if let Some(t) = &self.gateway.api_tls {
            if t.require_client_cert && t.client_ca.is_none() {
                return Err(bad(
                    "gateway.api_tls.require_client_cert".into(),
                    "needs gateway.api_tls.client_ca to verify the certificates against".into(),
                ));
            }
        }
        for (name, c) in &self.clients {
            let needs_ca = self
                .gateway
                .api_tls
                .as_ref()
                .is_none_or(|t| t.client_ca.is_none());
            if c.tls_subject.is_some() && needs_ca {
                return Err(bad(
                    format!("clients.{name}.tls_subject"),
                    "client certificates need gateway.api_tls with a client_ca".into(),
                ));
            }
        }
        if self.webhooks.base.is_zero() || self.webhooks.cap < self.webhooks.base {
            return Err(bad(
                "webhooks".into(),
                "base must be positive and cap at least base".into(),
            ));
        }
        if self.gateway.max_body_bytes < 1024 {
            return Err(bad(
                "gateway.max_body_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}

/// One registry as the simulator serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRegistry {
    /// Port on `listen`; 0 picks a free one (printed at start).
    pub port: u16,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub sign_cert: PathBuf,
    pub sign_key: PathBuf,
    pub member: Member,
    /// Scheduled maintenance: during a window every request gets a signed
    /// `jum:Maintenance` fault.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
}

/// A maintenance window: starts at each time the cron expression names
/// (6 fields, seconds first, UTC) and lasts `duration`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub cron: String,
    #[serde(with = "duration")]
    pub duration: Duration,
}

/// `config/simulator.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Plain-HTTP control endpoint (faults, what was seen); loopback only.
    #[serde(default = "default_control")]
    pub control: String,
    /// CA bundle for client TLS certificates and request signatures.
    pub client_ca: PathBuf,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Citizens in the synthetic population.
    #[serde(default = "default_population")]
    pub population: usize,
    /// Fault specification applied at start (see `jumgw simulate --help`).
    #[serde(default)]
    pub faults: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    pub registries: BTreeMap<String, SimRegistry>,
}

fn default_listen() -> String {
    "127.0.0.1".into()
}
fn default_control() -> String {
    "127.0.0.1:9440".into()
}
fn default_seed() -> u64 {
    20_261_125
}
fn default_population() -> usize {
    500
}

impl SimulatorConfig {
    pub fn load(path: &Path) -> Result<SimulatorConfig, ConfigError> {
        let c: SimulatorConfig = load(path)?;
        let origin = path.display().to_string();
        for (name, r) in &c.registries {
            for (i, w) in r.maintenance.iter().enumerate() {
                crate::schedule::Window::new(w).map_err(|message| ConfigError::Invalid {
                    path: origin.clone(),
                    key: format!("registries.{name}.maintenance[{i}].cron"),
                    message,
                })?;
            }
        }
        for name in c.registries.keys() {
            if !crate::pki::REGISTRIES.contains(&name.as_str()) {
                return Err(ConfigError::Invalid {
                    path: origin,
                    key: format!("registries.{name}"),
                    message: format!("the simulator knows {}", crate::pki::REGISTRIES.join(", ")),
                });
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GW: &str = include_str!("../../config/gateway.toml");

    #[test]
    fn a_file_extends_another_and_says_only_what_differs() {
        let pg: GatewayConfig =
            load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway-postgres.toml"))
                .unwrap();
        let base: GatewayConfig = parse(GW, "gateway.toml", std::iter::empty()).unwrap();
        assert_eq!(pg.store.backend, StoreBackend::Postgres);
        assert_eq!(
            pg.store.url.as_deref(),
            Some("postgres://jumgw@127.0.0.1:5432/jumgw")
        );
        assert_eq!(base.store.backend, StoreBackend::Sled);
        assert_eq!(pg.services.len(), base.services.len());
        assert_eq!(pg.registries["tax"].url, base.registries["tax"].url);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "[x]\nkeep = 1\nchange = 1\n").unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "extends = \"a.toml\"\n[x]\nchange = 2\n",
        )
        .unwrap();
        let t: toml::Table = load(&dir.path().join("b.toml")).unwrap();
        assert_eq!(t["x"]["keep"].as_integer(), Some(1));
        assert_eq!(t["x"]["change"].as_integer(), Some(2));
        std::fs::write(dir.path().join("c.toml"), "extends = \"c.toml\"\n").unwrap();
        let e = load::<toml::Table>(&dir.path().join("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("extends: more than 4 files deep"), "{e}");
        std::fs::write(dir.path().join("d.toml"), "extends = 3\n").unwrap();
        let e = load::<toml::Table>(&dir.path().join("d.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("extends: expected the name of another configuration file"),
            "{e}"
        );
        let c = StoreConfig::from_arg("postgres://u@h:1/d", &StoreConfig::default()).unwrap();
        assert_eq!(
            (c.backend, c.url.as_deref()),
            (StoreBackend::Postgres, Some("postgres://u@h:1/d"))
        );
        assert!(StoreConfig::from_arg("sqlite://x", &StoreConfig::default()).is_err());
    }

    #[test]
    fn shipped_gateway_config_is_valid() {
        let c: GatewayConfig = parse(GW, "gateway.toml", std::iter::empty()).unwrap();
        c.validate("gateway.toml").unwrap();
        assert_eq!(c.services.len(), 6);
        assert_eq!(
            c.registries["civil"].connect_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn environment_overrides_keys() {
        let env = vec![
            (
                "JUMGW_REGISTRIES__CIVIL__URL".to_string(),
                "https://10.1.1.1:1/".to_string(),
            ),
            (
                "JUMGW_GATEWAY__MAX_BODY_BYTES".to_string(),
                "2048".to_string(),
            ),
            ("JUMGW_TOKEN".to_string(), "not a key".to_string()),
        ];
        let c: GatewayConfig = parse(GW, "gateway.toml", env.into_iter()).unwrap();
        assert_eq!(c.registries["civil"].url, "https://10.1.1.1:1/");
        assert_eq!(c.gateway.max_body_bytes, 2048);
    }

    #[test]
    fn lists_and_tables_can_be_set_from_the_environment() {
        let env = [
            ("JUMGW_CLIENTS__X__TOKEN_SHA256", "ab"),
            (
                "JUMGW_CLIENTS__X__SERVICES",
                r#"["civil.birth-extract", "tax.clearance-certificate"]"#,
            ),
            (
                "JUMGW_REGISTRIES__TAX__MEMBER",
                r#"{instance = "RS", class = "GOV", code = "08070431"}"#,
            ),
            // quoted: a string, though it looks like a number
            ("JUMGW_REGISTRIES__TAX__SIGNER_SUBJECT", r#""12345""#),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c: GatewayConfig = parse(GW, "gateway.toml", env.into_iter()).unwrap();
        assert_eq!(
            c.clients["x"].services,
            ["civil.birth-extract", "tax.clearance-certificate"]
        );
        assert_eq!(c.registries["tax"].member.code, "08070431");
        // a table is merged into the file's key by key, as `extends` does
        assert_eq!(
            c.registries["tax"].member.subsystem.as_deref(),
            Some("poreska-uprava")
        );
        assert_eq!(c.registries["tax"].signer_subject.as_deref(), Some("12345"));
        c.validate("gateway.toml").unwrap();
        // and a list where a string is wanted is refused naming the key
        let e = parse::<GatewayConfig>(
            GW,
            "gateway.toml",
            [(
                "JUMGW_REGISTRIES__CIVIL__URL".to_string(),
                "[1, 2]".to_string(),
            )]
            .into_iter(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("gateway.toml: registries.civil.url: "), "{e}");
    }

    #[test]
    fn clients_procedures_and_api_tls_are_cross_checked() {
        let check = |vars: &[(&str, &str)]| {
            let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            let c: GatewayConfig = parse(GW, "g.toml", env).unwrap();
            c.validate("g.toml").err().map(|e| e.to_string())
        };
        let hook = [
            ("JUMGW_CLIENTS__A__TOKEN_SHA256", "ab"),
            ("JUMGW_CLIENTS__A__DELIVERY", "webhook"),
        ];
        let e = check(&hook).unwrap();
        assert!(
            e.contains("clients.a.webhook_url") && e.contains("http://"),
            "{e}"
        );
        let mut with_url = hook.to_vec();
        with_url.push(("JUMGW_CLIENTS__A__WEBHOOK_URL", "http://127.0.0.1:1/"));
        let e = check(&with_url).unwrap();
        assert!(
            e.contains("clients.a.webhook_secret: must start with whsec_"),
            "{e}"
        );
        with_url.push((
            "JUMGW_CLIENTS__A__WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ));
        assert_eq!(check(&with_url), None);
        let c: GatewayConfig = parse(
            &format!("{GW}\n[procedures.x]\nservices = [\"civil.nothing\"]\n"),
            "g.toml",
            std::iter::empty(),
        )
        .unwrap();
        let e = c.validate("g.toml").unwrap_err().to_string();
        assert!(
            e.contains("procedures.x.services") && e.contains("civil.nothing"),
            "{e}"
        );
        let e = check(&[
            ("JUMGW_CLIENTS__B__TOKEN_SHA256", "ab"),
            ("JUMGW_CLIENTS__B__TLS_SUBJECT", "CN=b"),
        ])
        .unwrap();
        assert!(
            e.contains("clients.b.tls_subject") && e.contains("client_ca"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let broken = GW.replace("registry = \"tax\"", "registry = \"taxes\"");
        let c: GatewayConfig = parse(&broken, "g.toml", std::iter::empty()).unwrap();
        let e = c.validate("g.toml").unwrap_err().to_string();
        assert!(e.starts_with("g.toml: services.tax."), "{e}");
        assert!(e.ends_with("unknown registry \"taxes\""), "{e}");
        let e = parse::<GatewayConfig>(
            &GW.replace("timeout = \"30s\"", "timeout = \"30\""),
            "g.toml",
            std::iter::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no unit"), "{e}");
        let e = parse::<GatewayConfig>(
            &format!("{GW}\n[gateway2]\nx=1\n"),
            "g.toml",
            std::iter::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `gateway2`"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    /// The shipped gateway.toml with one line changed as an operator might
    /// get it wrong: the line removed or repeated, its value replaced by
    /// one of another kind, or an unknown key added.
    fn edited_gateway_toml() -> impl Strategy<Value = (String, String, Option<String>)> {
        let values = vec![
            "\"x\"",
            "-1",
            "0",
            "true",
            "[]",
            "{}",
            "\"1h\"",
            "\"-5s\"",
            "1e400",
            "\"\"",
            "[1, \"a\"]",
            "18446744073709551616",
        ];
        (
            any::<prop::sample::Index>(),
            0u8..4,
            prop::sample::select(values),
        )
            .prop_map(|(at, how, v)| {
                let lines: Vec<&str> = GW.lines().collect();
                let keyed: Vec<usize> = (0..lines.len())
                    .filter(|&i| {
                        let l = lines[i].trim_start();
                        !l.starts_with('#') && !l.starts_with('[') && l.contains(" = ")
                    })
                    .collect();
                let i = keyed[at.index(keyed.len())];
                let key = lines[i].split(" = ").next().unwrap().trim().to_owned();
                let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                let what = match how {
                    0 => {
                        out.remove(i);
                        format!("without {key}")
                    }
                    1 => {
                        out.insert(i, lines[i].to_owned());
                        format!("{key} twice")
                    }
                    2 => {
                        out[i] = format!("{key} = {v}");
                        format!("{key} = {v}")
                    }
                    _ => {
                        out.insert(i, "bogus_key = 1".into());
                        "bogus_key".into()
                    }
                };
                let named = match how {
                    2 => Some(key),
                    3 => Some("bogus_key".into()),
                    _ => None,
                };
                (out.join("\n"), what, named)
            })
    }

    proptest! {
        /// An edited configuration is read or refused, never a panic; a
        /// refusal names the file, and a bad or unknown key names the key.
        #[test]
        fn an_edited_configuration_is_refused_naming_what_is_wrong((text, what, named) in edited_gateway_toml()) {
            match parse::<GatewayConfig>(&text, "edited.toml", std::iter::empty()) {
                Ok(cfg) => { let _ = cfg.validate("edited.toml"); }
                Err(e) => {
                    let m = e.to_string();
                    prop_assert!(m.contains("edited.toml"), "{what}: {m}");
                    if let Some(k) = named {
                        prop_assert!(m.contains(&k), "{what}: the message does not name {k}: {m}");
                    }
                }
            }
        }

        #[test]
        fn config_parsing_never_panics(s in "\\PC{0,200}") {
            let _ = parse::<GatewayConfig>(&s, "x", std::iter::empty());
            let _ = parse::<SimulatorConfig>(&s, "x", std::iter::empty());
            let _ = parse_duration(&s);
            let _ = webhook_key(&s);
            let _ = webhook_key(&format!("whsec_{s}"));
        }
    }

    #[test]
    fn webhook_secrets_are_checked_with_a_precise_reason() {
        assert_eq!(
            webhook_key("abc").unwrap_err(),
            "must start with whsec_ (Standard Webhooks)"
        );
        assert!(webhook_key("whsec_!!")
            .unwrap_err()
            .starts_with("the part after whsec_ is not base64"));
        assert!(webhook_key("whsec_c2hvcnQ=")
            .unwrap_err()
            .starts_with("must hold 24 to 64 bytes, not 5"));
        assert_eq!(
            webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
    }
}
