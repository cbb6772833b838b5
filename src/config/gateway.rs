//! The gateway's configuration (`config/gateway.toml`): what each key
//! means and its default. The cross-checks between keys are in `check.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{duration, load, ConfigError, MaintenanceWindow, Member};

/// The gateway's own identity and keys.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Our X-Road member and subsystem (instance, class, code, subsystem), as the
    /// registries know the municipality's one-stop shop.
    pub client: Member,
    /// Our TLS client certificate (PEM) for the registries.
    pub tls_cert: PathBuf,
    /// Its key: a PEM file, or a key on a token (`pkcs11:` URI).
    pub tls_key: PathBuf,
    /// The certificate of our seal (PEM), which signs every request.
    pub sign_cert: PathBuf,
    /// The seal's key: a PEM file, or on a smart card or HSM (`pkcs11:` URI).
    pub sign_key: PathBuf,
    /// Largest response body accepted from a registry, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The two-letter ISO country code put before the official's id in
    /// X-Road's `userId` (`RS` + `marija.kovac`), as the message protocol
    /// asks.
    #[serde(default = "default_country")]
    pub country: String,
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
    /// The smallest RSA key accepted for our seal, our TLS keys, every
    /// registry signer, every registry's TLS certificate and the API's
    /// client certificates: 2048 at least (it can be raised, e.g. to 3072,
    /// never lowered).
    #[serde(default = "default_min_rsa_bits")]
    pub min_rsa_bits: u32,
    /// How long the API waits for a client's first byte, TLS handshake
    /// and each request's headers before it closes the connection.
    #[serde(default = "default_api_header_timeout", with = "duration")]
    pub api_header_timeout: Duration,
    /// How often the API pings an HTTP/2 connection; one whose peer does
    /// not answer within `api_header_timeout` is closed.
    #[serde(default = "default_api_ping_interval", with = "duration")]
    pub api_ping_interval: Duration,
    /// API connections held at once (more wait in the kernel's backlog
    /// until one closes); unset: as many as the open-file limit allows
    /// after 512 kept for the store and the case folders, and never more.
    #[serde(default)]
    pub api_max_connections: Option<usize>,
    /// How long a dashboard session lasts from its sign-in (1s at least).
    #[serde(default = "default_ui_session_lifetime", with = "duration")]
    pub ui_session_lifetime: Duration,
    /// When set, `/metrics` answers only a bearer token whose SHA-256
    /// (hex) this is (Prometheus: `authorization: {credentials_file: …}`);
    /// unset, it is open to whoever reaches the API.
    #[serde(default)]
    pub metrics_token_sha256: Option<String>,
    /// `/metrics` answers only to addresses in these networks (CIDR, e.g.
    /// `["127.0.0.1/32", "10.20.0.0/16"]`), others get 403; empty: any
    /// address. With the token, both must hold.
    #[serde(default)]
    pub metrics_allow: Vec<ipnet::IpNet>,
    /// The group given the case folders (0750) and the documents in them
    /// (0640), e.g. the back-office readers' group; unset: the gateway's.
    #[serde(default)]
    pub cases_group: Option<String>,
    /// With `revocation = "prefer"`, how long after the last good answer
    /// about a registry's certificates (or the start) an unestablished
    /// status is still accepted, the document flagged for a later check.
    #[serde(default = "default_revocation_grace", with = "duration")]
    pub revocation_grace: Duration,
    /// How often the documents taken with their signer's status unchecked
    /// are checked again.
    #[serde(default = "default_revocation_recheck", with = "duration")]
    pub revocation_recheck: Duration,
    /// How old an OCSP answer or a CRL without `nextUpdate` may be (from
    /// its `thisUpdate`); one with `nextUpdate` is used until then. Both
    /// with five minutes for clocks that disagree.
    #[serde(default = "default_revocation_max_age", with = "duration")]
    pub revocation_max_age: Duration,
}

fn default_revocation_max_age() -> Duration {
    Duration::from_secs(3600)
}

fn default_revocation_recheck() -> Duration {
    Duration::from_secs(300)
}

fn default_revocation_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// What an exchange does about a certificate's revocation status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationPolicy {
    /// A certificate whose status cannot be established is refused (the
    /// attempt fails and is retried).
    Require,
    /// Checked; when no answer can be had, accepted within the grace and
    /// the document flagged "revocation not checked".
    #[default]
    Prefer,
    /// Not checked.
    Off,
}

impl RevocationPolicy {
    pub fn name(self) -> &'static str {
        match self {
            RevocationPolicy::Require => "require",
            RevocationPolicy::Prefer => "prefer",
            RevocationPolicy::Off => "off",
        }
    }
}

fn default_api_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_api_ping_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_ui_session_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_min_rsa_bits() -> u32 {
    crate::xml::dsig::MIN_RSA_BITS
}

/// HTTPS for the API. With `client_ca`, client certificates are verified
/// against it; a client whose configuration names a `tls_subject` must
/// present a certificate with that subject along with its token.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// The API's server certificate (PEM).
    pub cert: PathBuf,
    /// Its key: a PEM file or a `pkcs11:` URI.
    pub key: PathBuf,
    /// The CA bundle (PEM) that back-office client certificates are verified against.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a client certificate (at the handshake).
    #[serde(default)]
    pub require_client_cert: bool,
    /// Revocation checks of the back-office clients' certificates: a
    /// revoked one is refused at the handshake.
    #[serde(default)]
    pub revocation: RevocationPolicy,
    /// The OCSP responder to ask instead of the client certificates' AIA.
    #[serde(default)]
    pub ocsp_url: Option<String>,
    /// A CRL (file or http(s) URL) instead of their distribution points.
    #[serde(default)]
    pub crl: Option<String>,
}

fn default_country() -> String {
    "RS".into()
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

pub(super) fn default_max_body() -> usize {
    10 * 1024 * 1024
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One registry as the gateway sees it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// How the gateway talks to it: `signed-xml` (the registry's own
    /// endpoint; every request and answer signed with XML-DSig) or `x-road`
    /// (through the municipality's X-Road security server, which signs,
    /// verifies and logs each message; the gateway is then an X-Road
    /// information system, message protocol 4.0).
    #[serde(default)]
    pub protocol: RegistryProtocol,
    /// The registry's endpoint, https:// only; with `protocol = "x-road"`,
    /// the municipality's security server (its client-side address).
    pub url: String,
    /// CA bundle that is the only TLS trust root for this registry (with
    /// `x-road`: the security server's internal TLS certificate).
    pub tls_ca: PathBuf,
    /// CA bundle the registry's signing certificate must chain to.
    /// Required with `signed-xml`; not used with `x-road`, where the
    /// security servers sign and verify.
    #[serde(default)]
    pub signer_ca: Option<PathBuf>,
    /// Optional pin: the signer certificate's subject must be exactly this
    /// distinguished name, written as RFC 4514 says (what `openssl x509
    /// -noout -subject -nameopt RFC2253` prints), most specific first:
    /// `"CN=cadastre signer,O=Republic Geodetic Authority,C=RS"`. Every
    /// attribute, in order, with its exact value: `CN=cadastre signer`
    /// does not match `CN=cadastre signer2`, nor a name with an `O` too.
    #[serde(default)]
    pub signer_subject: Option<String>,
    /// Optional pin of the signer's certificate itself: the SHA-256 of
    /// its DER in hex, colons allowed (`openssl x509 -noout -fingerprint
    /// -sha256` prints it). Any other certificate is refused, even one
    /// with the same subject from the same CA; renewing the registry's
    /// certificate means changing it.
    #[serde(default)]
    pub signer_sha256: Option<String>,
    /// Its X-Road member and subsystem, the service provider of each request.
    pub member: Member,
    /// For the TCP connection and the TLS handshake.
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
    /// Revocation checks of the registry's signing and TLS certificates.
    #[serde(default)]
    pub revocation: RevocationPolicy,
    /// The OCSP responder to ask instead of the certificates' AIA.
    #[serde(default)]
    pub ocsp_url: Option<String>,
    /// A CRL to use instead of the certificates' distribution points: a
    /// file, or an http(s) URL.
    #[serde(default)]
    pub crl: Option<String>,
    /// The OCSP responder answers from pre-produced responses (RFC 5019),
    /// without our nonce: such an answer is believed on its age alone
    /// (`gateway.revocation_max_age`, or its `nextUpdate`). Otherwise an
    /// answer without the nonce we sent is refused as a possible replay.
    #[serde(default)]
    pub ocsp_preproduced: bool,
}

fn default_in_flight() -> usize {
    8
}

/// How the gateway talks to a registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistryProtocol {
    /// Directly, every message signed (XML-DSig) by the gateway and the registry.
    #[default]
    SignedXml,
    /// As an X-Road information system, through a security server.
    XRoad,
}

impl RegistryProtocol {
    pub fn name(self) -> &'static str {
        match self {
            RegistryProtocol::SignedXml => "signed-xml",
            RegistryProtocol::XRoad => "x-road",
        }
    }
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
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The first retry's delay ceiling (full jitter below it).
    #[serde(default = "default_base", with = "duration")]
    pub base: Duration,
    /// Each retry's ceiling is the last one's times this.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// The largest ceiling.
    #[serde(default = "default_cap", with = "duration")]
    pub cap: Duration,
    /// Attempts before a request is given up (dead).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// ZUP deadline, counted from filing: never retried past it. A whole
    /// number of days (`15d`, or `360h`) is counted as ZUP counts them:
    /// from the day after filing (in Serbia), and a last day that is not a
    /// working day there (weekend, non-working state holiday) moves to the
    /// next one; the deadline is the end of that day, midnight in Serbia
    /// (see `jumgw deadline`), so it may fall an hour either side of the
    /// same number of 24-hour days. Another length (a test's seconds) is
    /// plain time.
    #[serde(default = "default_deadline", with = "duration")]
    pub deadline: Duration,
    /// How long a leased request may stay in `sending` before it is sent again.
    #[serde(default = "default_lease", with = "duration")]
    pub lease: Duration,
    /// Failed deliveries into the case folder after which a fetched
    /// request is given up (dead, with the last error, for an operator to
    /// fix the cause and retry); they are retried on the same backoff.
    #[serde(default = "default_delivery_attempts")]
    pub delivery_attempts: u32,
}

fn default_delivery_attempts() -> u32 {
    10
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
            delivery_attempts: default_delivery_attempts(),
        }
    }
}

/// Where the queue lives: sled in the data folder (one instance), or a
/// PostgreSQL database that several instances share.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sled` (embedded, in the data folder) or `postgres` (with `url`).
    #[serde(default)]
    pub backend: StoreBackend,
    /// For `postgres`: a libpq URL, `postgres://user:password@host:port/db`.
    #[serde(default)]
    pub url: Option<String>,
    /// For `postgres`: connections per instance.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
    /// For `sled`: how often, in ms, sled writes out changes that nothing
    /// flushed sooner (accepts and leases are flushed before they are
    /// answered or sent; later state changes wait for this).
    #[serde(default = "default_sled_flush_ms")]
    pub sled_flush_ms: u64,
    /// For `sled`: read and check every tree at start, before serving
    /// (about a second per million requests on two cores); a damaged store
    /// is then a start-up error instead of failures later.
    #[serde(default = "yes")]
    pub full_check: bool,
}

fn yes() -> bool {
    true
}

/// `store.sled_flush_ms` when not set.
pub const DEFAULT_SLED_FLUSH_MS: u64 = 500;

fn default_sled_flush_ms() -> u64 {
    DEFAULT_SLED_FLUSH_MS
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled,
            url: None,
            pool_size: default_pool(),
            sled_flush_ms: default_sled_flush_ms(),
            full_check: true,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sled,
    Postgres,
}

/// The daemon's periodic jobs (6-field cron, seconds first, UTC).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// When the store is backed up into `{data}/backups`.
    #[serde(default = "default_backup_cron")]
    pub backup_cron: String,
    /// Daily exports kept in `{data}/backups`.
    #[serde(default = "default_backup_keep")]
    pub backup_keep: usize,
    /// When finished requests past `retention` are purged.
    #[serde(default = "default_retention_cron")]
    pub retention_cron: String,
    /// Finished requests (and their documents) are deleted after this.
    #[serde(default = "default_retention", with = "duration")]
    pub retention: Duration,
    /// When deadlines and certificates are watched.
    #[serde(default = "default_watch_cron")]
    pub watch_cron: String,
    /// Requests this close to their ZUP deadline are flagged: a whole
    /// number of days (`3d`, or `72h`) is that many working days in Serbia,
    /// to the end of the last of them; another length is plain time.
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
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// SHA-256 of the bearer token, hex. Tokens are never stored in clear.
    pub token_sha256: String,
    /// `backoffice` (the default), or an administrator's: `viewer`,
    /// `operator`, `auditor` or `admin` (all three).
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
    /// With `delivery = "folder"`: the folder of its cases (relative to
    /// the data folder, or absolute); by default `cases/<name>`.
    #[serde(default)]
    pub cases_dir: Option<PathBuf>,
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
    /// Human description for listings.
    #[serde(default)]
    pub title: String,
    /// The services filed together, each a key of `[services]`.
    pub services: Vec<String>,
}

/// Webhook delivery: its own durable queue, retried with backoff (full
/// jitter) without end, so that a back-office that was down gets every
/// event when it returns, in order per case.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The first retry's delay ceiling (full jitter below it).
    #[serde(default = "default_hook_base", with = "duration")]
    pub base: Duration,
    /// The largest delay between tries; they never end.
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

/// Timestamps from a third party (RFC 3161) on every received document's
/// signature and on every audit checkpoint: proof, years later, of when
/// each existed. Requested in batches by a job of their own, never in the
/// way of an exchange or a delivery.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// The TSA (e.g. the government's RS-GOV TSA); unset: nothing is
    /// timestamped.
    #[serde(default)]
    pub tsa_url: Option<String>,
    /// The TSA's CA certificates (PEM): a token is kept only when its
    /// signer chains to one of them and may sign timestamps.
    #[serde(default)]
    pub tsa_trust: Option<PathBuf>,
    /// The CA certificates (PEM) of our own seal, put in each case
    /// dossier so that it can be checked with nothing else.
    #[serde(default)]
    pub seal_trust: Option<PathBuf>,
    /// The policy OID to ask for; a token under another one is refused.
    /// Unset: the TSA's default, whichever it is.
    #[serde(default)]
    pub policy: Option<String>,
    /// A TLS client certificate and key (PEM) for a TSA that asks for one.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Extra CA bundle for an https TSA (besides the system roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// HTTP basic authentication, for a TSA that asks for it. The
    /// password is better set through JUMGW_EVIDENCE__PASSWORD.
    #[serde(default)]
    pub user: Option<String>,
    /// Its password (masked by `config check`).
    #[serde(default)]
    pub password: Option<String>,
    /// How far a token's time may be from our clock.
    #[serde(default = "default_tsa_tolerance", with = "duration")]
    pub tolerance: Duration,
    /// How often the job looks for what is to be stamped.
    #[serde(default = "default_tsa_interval", with = "duration")]
    pub interval: Duration,
    /// Tokens asked for at once, at most.
    #[serde(default = "default_tsa_batch")]
    pub batch: usize,
    /// For one request to the TSA.
    #[serde(default = "default_tsa_timeout", with = "duration")]
    pub timeout: Duration,
    /// Tries before a document's timestamp is given up (`failed`, with
    /// the reason); between them the retry backoff of `base` and `cap`.
    #[serde(default = "default_tsa_attempts")]
    pub attempts: u32,
    /// The first retry's delay ceiling.
    #[serde(default = "default_tsa_base", with = "duration")]
    pub base: Duration,
    /// The largest delay between tries.
    #[serde(default = "default_tsa_cap", with = "duration")]
    pub cap: Duration,
    /// X-Road: how long after a document came its security server's
    /// signed document is asked for without `force` (the security server
    /// timestamps its log in batches); after it, with `force` (timestamp
    /// it now).
    #[serde(default = "default_signed_document_force_after", with = "duration")]
    pub signed_document_force_after: Duration,
    /// X-Road: tries before a signed document is given up (`failed`, with
    /// the reason); between them the backoff of `base` and `cap`.
    #[serde(default = "default_signed_document_attempts")]
    pub signed_document_attempts: u32,
}

fn default_signed_document_force_after() -> Duration {
    Duration::from_secs(300)
}
fn default_signed_document_attempts() -> u32 {
    20
}

fn default_tsa_tolerance() -> Duration {
    Duration::from_secs(300)
}
fn default_tsa_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_tsa_batch() -> usize {
    64
}
fn default_tsa_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_tsa_attempts() -> u32 {
    20
}
fn default_tsa_base() -> Duration {
    Duration::from_secs(5)
}
fn default_tsa_cap() -> Duration {
    Duration::from_secs(3600)
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            tsa_url: None,
            tsa_trust: None,
            seal_trust: None,
            policy: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            user: None,
            password: None,
            tolerance: default_tsa_tolerance(),
            interval: default_tsa_interval(),
            batch: default_tsa_batch(),
            timeout: default_tsa_timeout(),
            attempts: default_tsa_attempts(),
            base: default_tsa_base(),
            cap: default_tsa_cap(),
            signed_document_force_after: default_signed_document_force_after(),
            signed_document_attempts: default_signed_document_attempts(),
        }
    }
}

/// The daemon's log, on standard error (the journal, under systemd).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (colours only on a terminal) or `json` (one object per
    /// line, the request id, registry and service as fields); `serve
    /// --log-format` says otherwise.
    #[serde(default)]
    pub format: LogFormat,
    /// What is logged, in `tracing` filter syntax (`info`,
    /// `warn,jum_gateway::dispatch=debug`); `JUMGW_LOG` says otherwise.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `log.filter` when not set: our INFO, the scheduler library's
/// start-up chatter left out.
pub const DEFAULT_LOG_FILTER: &str = "info,tokio_cron_scheduler=warn";

fn default_log_filter() -> String {
    DEFAULT_LOG_FILTER.into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: default_log_filter(),
        }
    }
}

/// E-mail to the operators when something needs a person: a request gone
/// dead, a ZUP deadline at risk, a registry's breaker open or a registry
/// paused for long, a certificate near its end, the audit trail broken,
/// the store's disk nearly full. Raised into the durable outbox, sent as
/// one digest per `interval`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Who is told; empty: no mail is sent (nor any alert kept).
    #[serde(default)]
    pub to: Vec<String>,
    /// The sender, e.g. `"jumgw <jumgw@opstina.rs>"`.
    #[serde(default = "default_alert_from")]
    pub from: String,
    /// The mail server, `host:port` (587 for STARTTLS, 465 for `tls`).
    #[serde(default)]
    pub smtp: Option<String>,
    /// `starttls` (required, the default), `tls` (implicit TLS) or
    /// `none` (plain, allowed only to a loopback address).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// SMTP authentication (PLAIN or LOGIN, over TLS only). The password
    /// is better set through JUMGW_ALERTS__PASSWORD.
    #[serde(default)]
    pub user: Option<String>,
    /// Its password (masked by `config check`).
    #[serde(default)]
    pub password: Option<String>,
    /// Extra CA bundle for the mail server's certificate (besides the
    /// system roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// At most one mail per this; what happens meanwhile waits for it.
    #[serde(default = "default_alert_interval", with = "duration")]
    pub interval: Duration,
    /// How often the conditions that are not a request's (breakers,
    /// pauses, certificates, the audit trail, free space, the keys'
    /// tokens) are looked at.
    #[serde(default = "default_alert_check", with = "duration")]
    pub check: Duration,
    /// `en`, `sr` (Serbian, Latin script) or `hu`.
    #[serde(default = "default_alert_language")]
    pub language: String,
    /// The dashboard as the operators reach it, e.g.
    /// `https://jumgw.opstina.rs/ui`; each alert links into it.
    #[serde(default = "default_dashboard_url")]
    pub dashboard_url: String,
    /// A breaker open this long is told.
    #[serde(default = "default_breaker_open", with = "duration")]
    pub breaker_open: Duration,
    /// A registry paused this long is told.
    #[serde(default = "default_paused", with = "duration")]
    pub paused: Duration,
    /// A key's PKCS#11 token (the seal's, a TLS key's) away this long is
    /// told; meanwhile the key is looked for again, with backoff.
    #[serde(default = "default_token_away", with = "duration")]
    pub token_away: Duration,
    /// Certificates (TLS, signing, the seal, the registries') that end
    /// within this are told.
    #[serde(default = "default_cert_days", with = "duration")]
    pub certificate: Duration,
    /// The store's disk is told when its free space falls under this, in
    /// bytes.
    #[serde(default = "default_free_reserve")]
    pub free_bytes: u64,
}

/// How the mail server is spoken to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

fn default_alert_from() -> String {
    "jumgw <jumgw@localhost>".into()
}
fn default_alert_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_alert_check() -> Duration {
    Duration::from_secs(60)
}
fn default_alert_language() -> String {
    "en".into()
}
fn default_dashboard_url() -> String {
    "http://127.0.0.1:8080/ui".into()
}
fn default_breaker_open() -> Duration {
    Duration::from_secs(600)
}
fn default_paused() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_token_away() -> Duration {
    Duration::from_secs(300)
}
fn default_cert_days() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_free_reserve() -> u64 {
    1 << 30
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            to: Vec::new(),
            from: default_alert_from(),
            smtp: None,
            security: SmtpSecurity::Starttls,
            user: None,
            password: None,
            tls_ca: None,
            interval: default_alert_interval(),
            check: default_alert_check(),
            language: default_alert_language(),
            dashboard_url: default_dashboard_url(),
            breaker_open: default_breaker_open(),
            paused: default_paused(),
            token_away: default_token_away(),
            certificate: default_cert_days(),
            free_bytes: default_free_reserve(),
        }
    }
}

fn default_role() -> String {
    "backoffice".into()
}

/// One service of the catalogue: which registry, which payload elements,
/// which subjects. Adding a service is configuration plus a schema.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The registry that answers it (a key of `[registries]`); the service's id starts with it.
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
    /// The X-Road service version.
    #[serde(default = "default_version")]
    pub version: String,
    /// The X-Road service code (`id:serviceCode`), which is also the local
    /// name of the request's wrapper element and, with `Response`
    /// appended, of the answer's (Document/Literal-Wrapped). Default: the
    /// service's id.
    #[serde(default)]
    pub service_code: Option<String>,
    /// Human description for listings.
    #[serde(default)]
    pub title: String,
}

fn default_version() -> String {
    "v1".into()
}

impl ServiceConfig {
    /// Its X-Road service code: `service_code`, or else the service's id.
    pub fn code<'a>(&'a self, id: &'a str) -> &'a str {
        self.service_code.as_deref().unwrap_or(id)
    }
}

/// `config/gateway.toml`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
    #[serde(default)]
    pub evidence: EvidenceConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
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
}
