//! What the gateway counts, for `/metrics` (Prometheus text format through
//! `metrics-exporter-prometheus`). Events are counted where they happen
//! (attempts, deliveries, webhooks, accepts); levels (queue depth, breaker
//! states, certificate expiry, store size) are read when scraped.
//!
//! Labels never carry personal data: registry, service, outcome, state,
//! client name.
//!
//! Counters and gauges only: this part reads nothing. Levels are set from
//! the plain values it is given ([`Levels`], which the operators' layer
//! reads at a scrape).

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::limits::BreakerShown;

/// Installs the process-wide recorder; the daemon calls it once. None if
/// one is installed already (tests running several gateways in-process).
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("jumgw_attempt_duration_seconds".into()),
            &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        )
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe();
    Some(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "jumgw_accepted_total",
        "Requests accepted from back-office clients"
    );
    describe_counter!(
        "jumgw_attempts_total",
        "Attempts at a registry, by classified outcome"
    );
    describe_histogram!(
        "jumgw_attempt_duration_seconds",
        Unit::Seconds,
        "Duration of one attempt at a registry"
    );
    describe_counter!(
        "jumgw_security_failures_total",
        "Answers refused for a bad signature, an untrusted signer or a wrong request hash"
    );
    describe_counter!("jumgw_deliveries_total", "Documents delivered, by mode");
    describe_counter!(
        "jumgw_delivery_failures_total",
        "Failed deliveries into case folders, by outcome: retried, or given up (the request is dead)"
    );
    describe_counter!("jumgw_webhooks_total", "Webhook POSTs, by outcome");
    describe_gauge!("jumgw_queue_depth", "Requests by state and registry");
    describe_gauge!(
        "jumgw_oldest_open_age_seconds",
        "Age of the oldest request not yet fetched"
    );
    describe_gauge!(
        "jumgw_breaker_state",
        "Circuit breaker per registry: 0 closed, 1 half-open, 2 open"
    );
    describe_gauge!(
        "jumgw_registry_paused",
        "1 while an administrator has paused the registry"
    );
    describe_gauge!(
        "jumgw_deadline_at_risk",
        "Open requests within the warning time of their ZUP deadline"
    );
    describe_gauge!(
        "jumgw_certificate_days_left",
        "Days until a certificate the gateway relies on expires"
    );
    describe_gauge!("jumgw_store_bytes", "Size of the store on disk");
    describe_gauge!(
        "jumgw_store_read_errors",
        "Reads of the store that failed since start (damage): alert on any"
    );
    describe_gauge!("jumgw_webhook_backlog", "Webhook events waiting to be sent");
    describe_counter!(
        "jumgw_seal_device_failures_total",
        "Signatures the seal's device (PKCS#11 token) failed to make; the attempt is retried"
    );
    describe_counter!(
        "jumgw_revocation_checks_total",
        "Revocation checks (OCSP, CRL) by method and result"
    );
    describe_gauge!(
        "jumgw_revocation_last_good_timestamp_seconds",
        "When the newest good revocation answer for a registry's certificate came (Unix time)"
    );
    describe_gauge!(
        "jumgw_revocation_good_age_seconds",
        "Age of the newest good revocation answer for a registry's certificates"
    );
    describe_counter!(
        "jumgw_timestamps_total",
        "Timestamp tokens asked of the TSA, by what they are for (document, checkpoint) and result (stamped, failed, given-up)"
    );
    describe_gauge!(
        "jumgw_timestamps_pending",
        "Documents whose timestamp is due now and not yet had, as the last round of the evidence job found them"
    );
    describe_counter!(
        "jumgw_signed_documents_total",
        "X-Road signed documents asked of the security servers, by result (kept, not-yet, refused, failed, given-up)"
    );
    describe_gauge!(
        "jumgw_signed_documents_pending",
        "Documents whose X-Road signed document is due now and not yet had, as the last round of the evidence job found them"
    );
    describe_counter!(
        "jumgw_api_tls_refused_total",
        "TLS handshakes the API refused (no, or an untrusted, client certificate)"
    );
    describe_counter!(
        "jumgw_alerts_total",
        "Alerts raised for the operators, by kind"
    );
    describe_counter!(
        "jumgw_alert_mails_total",
        "Alert digests mailed to the operators, by result (sent, failed)"
    );
    describe_gauge!(
        "jumgw_store_free_bytes",
        "Free space on the data folder's file system, as the alert watch last read it"
    );
    describe_gauge!(
        "jumgw_token_up",
        "1 while the PKCS#11 token of a gateway key (seal, tls, api-tls) is there, 0 while it is away"
    );
    describe_gauge!(
        "jumgw_audit_broken",
        "1 when the audit trail's last verification found a broken link, else 0"
    );
    describe_gauge!(
        "jumgw_xroad_services_missing",
        "X-Road: services of the catalogue that the registry's security server does not list in allowedMethods, as last asked"
    );
}

/// What an X-Road registry's security server does not allow of our
/// catalogue; `None`: it could not be asked (the last count stays).
pub fn x_road_missing(registry: &str, missing: Option<usize>) {
    if let Some(n) = missing {
        gauge!("jumgw_xroad_services_missing", "registry" => registry.to_owned()).set(n as f64);
    }
}

/// An alert of `kind` was raised.
pub fn alert_raised(kind: &'static str) {
    counter!("jumgw_alerts_total", "kind" => kind).increment(1);
}

/// A digest was mailed, or could not be.
pub fn alert_mail(sent: bool) {
    counter!("jumgw_alert_mails_total", "result" => if sent { "sent" } else { "failed" })
        .increment(1);
}

/// Free space where the data is.
pub fn store_free(bytes: u64) {
    gauge!("jumgw_store_free_bytes").set(bytes as f64);
}

/// The audit trail's last verdict.
pub fn audit_broken(broken: bool) {
    gauge!("jumgw_audit_broken").set(if broken { 1.0 } else { 0.0 });
}

/// A revocation check by `method` (ocsp, crl) came to `result` (good,
/// revoked, unknown, unavailable, error).
pub fn revocation_check(method: &'static str, result: &'static str) {
    counter!("jumgw_revocation_checks_total", "method" => method, "result" => result).increment(1);
}

/// A good revocation answer for a registry's certificate at `at_ms`.
pub fn revocation_good(registry: &str, at_ms: u64) {
    gauge!("jumgw_revocation_last_good_timestamp_seconds", "registry" => registry.to_owned())
        .set(at_ms as f64 / 1000.0);
}

/// A timestamp for `what` (document, checkpoint) came to `result`
/// (stamped, failed, given-up).
pub fn timestamp(what: &'static str, result: &'static str) {
    counter!("jumgw_timestamps_total", "for" => what, "result" => result).increment(1);
}

/// Documents due for a timestamp, as the evidence job's last round found.
pub fn timestamps_pending(n: usize) {
    gauge!("jumgw_timestamps_pending").set(n as f64);
}

/// One try at an X-Road signed document, by its result.
pub fn signed_document(result: &'static str) {
    counter!("jumgw_signed_documents_total", "result" => result).increment(1);
}

/// Documents due for their X-Road signed document, as the evidence job's
/// last round found.
pub fn signed_documents_pending(n: usize) {
    gauge!("jumgw_signed_documents_pending").set(n as f64);
}

/// Whether the token of the gateway's key `key` (seal, tls, api-tls) is
/// there, as read at a scrape.
pub fn token_up(key: &str, up: bool) {
    gauge!("jumgw_token_up", "key" => key.to_owned()).set(if up { 1.0 } else { 0.0 });
}

/// The seal's device failed to sign.
pub fn seal_device_failed() {
    counter!("jumgw_seal_device_failures_total").increment(1);
}

/// A TLS handshake at the API was refused.
pub fn api_tls_refused() {
    counter!("jumgw_api_tls_refused_total").increment(1);
}

pub fn accepted(client: &str, n: usize) {
    counter!("jumgw_accepted_total", "client" => client.to_owned()).increment(n as u64);
}

pub fn attempt(registry: &str, service: &str, outcome: &str, took: Duration) {
    counter!("jumgw_attempts_total", "registry" => registry.to_owned(), "service" => service.to_owned(), "outcome" => outcome.to_owned())
        .increment(1);
    histogram!("jumgw_attempt_duration_seconds", "registry" => registry.to_owned())
        .record(took.as_secs_f64());
    if outcome == "security" {
        counter!("jumgw_security_failures_total", "registry" => registry.to_owned()).increment(1);
    }
}

pub fn delivered(mode: &'static str) {
    counter!("jumgw_deliveries_total", "mode" => mode).increment(1);
}

/// A delivery failed; `gave_up`: for the last time (the request is dead).
pub fn delivery_failed(gave_up: bool) {
    counter!("jumgw_delivery_failures_total", "outcome" => if gave_up { "gave-up" } else { "retried" })
        .increment(1);
}

pub fn webhook(ok: bool) {
    counter!("jumgw_webhooks_total", "outcome" => if ok { "delivered" } else { "failed" })
        .increment(1);
}

/// The levels, as read at a scrape (the operators' layer reads them).
#[derive(Debug, Default)]
pub struct Levels {
    /// Requests by registry and state: every state of every registry,
    /// those with none as 0.
    pub queue_depth: Vec<(String, &'static str, u64)>,
    /// Age of the oldest request not yet fetched (0: there is none).
    pub oldest_open_age_s: f64,
    /// Open requests within the warning time of their ZUP deadline.
    pub deadline_at_risk: u64,
    pub registries: Vec<RegistryLevels>,
    /// The gateway's own certificates: role, days left.
    pub gateway_certs: Vec<(String, i64)>,
    pub store_bytes: u64,
    pub webhook_backlog: usize,
    pub store_read_errors: u64,
    /// The gateway's keys on PKCS#11 tokens: key, whether its token is
    /// there.
    pub tokens: Vec<(String, bool)>,
}

/// One registry's levels.
#[derive(Debug)]
pub struct RegistryLevels {
    pub registry: String,
    pub breaker: BreakerShown,
    pub paused: bool,
    /// The certificates the gateway relies on for it: role, days left.
    pub certificates: Vec<(String, i64)>,
    /// Age of the newest good revocation answer; None: none yet (the
    /// gauge keeps its last value).
    pub revocation_good_age_s: Option<f64>,
}

pub fn set_levels(l: &Levels) {
    for (registry, state, n) in &l.queue_depth {
        gauge!("jumgw_queue_depth", "registry" => registry.clone(), "state" => *state)
            .set(*n as f64);
    }
    gauge!("jumgw_oldest_open_age_seconds").set(l.oldest_open_age_s);
    gauge!("jumgw_deadline_at_risk").set(l.deadline_at_risk as f64);
    for r in &l.registries {
        let b = match r.breaker {
            BreakerShown::Closed => 0.0,
            BreakerShown::HalfOpen => 1.0,
            BreakerShown::Open => 2.0,
        };
        gauge!("jumgw_breaker_state", "registry" => r.registry.clone()).set(b);
        gauge!("jumgw_registry_paused", "registry" => r.registry.clone()).set(if r.paused {
            1.0
        } else {
            0.0
        });
        for (role, days_left) in &r.certificates {
            gauge!("jumgw_certificate_days_left", "registry" => r.registry.clone(), "role" => role.clone())
                .set(*days_left as f64);
        }
        if let Some(age) = r.revocation_good_age_s {
            gauge!("jumgw_revocation_good_age_seconds", "registry" => r.registry.clone()).set(age);
        }
    }
    for (role, days_left) in &l.gateway_certs {
        gauge!("jumgw_certificate_days_left", "registry" => "gateway", "role" => role.clone())
            .set(*days_left as f64);
    }
    gauge!("jumgw_store_bytes").set(l.store_bytes as f64);
    gauge!("jumgw_store_read_errors").set(l.store_read_errors as f64);
    gauge!("jumgw_webhook_backlog").set(l.webhook_backlog as f64);
    for (key, up) in &l.tokens {
        token_up(key, *up);
    }
}
