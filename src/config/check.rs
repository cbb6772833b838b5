//! What the gateway's configuration must satisfy beyond its types: every
//! service names a known registry and subject kinds, URLs are https,
//! clients, procedures and the API's TLS agree; checked once at start with
//! the file and the key named.

use super::{webhook_key, ConfigError, DeliveryMode, GatewayConfig, StoreBackend, SUBJECT_KINDS};

impl GatewayConfig {
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
        if self.gateway.min_rsa_bits < crate::xml::dsig::MIN_RSA_BITS {
            return Err(bad(
                "gateway.min_rsa_bits".into(),
                format!(
                    "{} is below {}: keys can be required stronger, never weaker",
                    self.gateway.min_rsa_bits,
                    crate::xml::dsig::MIN_RSA_BITS
                ),
            ));
        }
        let e = &self.evidence;
        if let Some(u) = &e.tsa_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(bad(
                    "evidence.tsa_url".into(),
                    format!("{u:?} must be an http:// or https:// URL (RFC 3161 over HTTP)"),
                ));
            }
            if e.tsa_trust.is_none() {
                return Err(bad(
                    "evidence.tsa_trust".into(),
                    "a TSA is configured: name its CA certificates (PEM), or no token can be believed".into(),
                ));
            }
        }
        if let Some(p) = &e.policy {
            if der::oid::ObjectIdentifier::new(p).is_err() {
                return Err(bad(
                    "evidence.policy".into(),
                    format!("{p:?} is not an OID (dotted numbers, e.g. 1.3.6.1.4.1.32473.1)"),
                ));
            }
        }
        if e.tls_cert.is_some() != e.tls_key.is_some() {
            return Err(bad(
                "evidence.tls_cert".into(),
                "tls_cert and tls_key go together".into(),
            ));
        }
        if e.batch == 0 || e.attempts == 0 {
            return Err(bad(
                "evidence.batch".into(),
                "batch and attempts must be at least 1".into(),
            ));
        }
        if e.signed_document_attempts == 0 {
            return Err(bad(
                "evidence.signed_document_attempts".into(),
                "must be at least 1".into(),
            ));
        }
        if self.store.pool_size == 0 {
            return Err(bad("store.pool_size".into(), "must be at least 1".into()));
        }
        let g = &self.gateway;
        if g.api_max_connections == Some(0) {
            return Err(bad(
                "gateway.api_max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        // The cookie's Max-Age is in whole seconds: 0 would end it at once.
        if g.ui_session_lifetime < std::time::Duration::from_secs(1) {
            return Err(bad(
                "gateway.ui_session_lifetime".into(),
                "must be at least 1s".into(),
            ));
        }
        if g.api_ping_interval.is_zero() {
            return Err(bad(
                "gateway.api_ping_interval".into(),
                "must be more than 0".into(),
            ));
        }
        // A schedule that cannot move forward (no attempt, a ceiling that
        // shrinks or is zero, a lease that ends at once) would retry a
        // request at once and forever, or never send it.
        let rt = &self.retry;
        if !(rt.factor >= 1.0 && rt.factor.is_finite()) {
            return Err(bad(
                "retry.factor".into(),
                format!(
                    "{} must be a number of at least 1 (each delay the last one's times it)",
                    rt.factor
                ),
            ));
        }
        for (key, d) in [
            ("retry.base", rt.base),
            ("retry.lease", rt.lease),
            ("retry.deadline", rt.deadline),
        ] {
            if d.is_zero() {
                return Err(bad(key.into(), "must be more than 0".into()));
            }
        }
        if rt.cap < rt.base {
            return Err(bad(
                "retry.cap".into(),
                "must not be shorter than retry.base".into(),
            ));
        }
        for (key, n) in [
            ("retry.max_attempts", rt.max_attempts),
            ("retry.delivery_attempts", rt.delivery_attempts),
        ] {
            if n == 0 {
                return Err(bad(key.into(), "must be at least 1".into()));
            }
        }
        for (name, r) in &self.registries {
            if !r.url.starts_with("https://") {
                return Err(bad(
                    format!("registries.{name}.url"),
                    format!("{:?} must be an https:// URL", r.url),
                ));
            }
            if r.protocol == super::RegistryProtocol::SignedXml && r.signer_ca.is_none() {
                return Err(bad(
                    format!("registries.{name}.signer_ca"),
                    "is required with protocol = \"signed-xml\": the CA bundle the registry's signing certificate must chain to (only an X-Road registry, whose security servers sign, goes without)".into(),
                ));
            }
            for (i, w) in r.maintenance.iter().enumerate() {
                w.window()
                    .map_err(|m| bad(format!("registries.{name}.maintenance[{i}].cron"), m))?;
            }
            if r.max_in_flight == 0 {
                return Err(bad(
                    format!("registries.{name}.max_in_flight"),
                    "must be at least 1".into(),
                ));
            }
            if !(r.rate_per_s > 0.0 && r.rate_per_s.is_finite()) {
                return Err(bad(
                    format!("registries.{name}.rate_per_s"),
                    "must be a positive number".into(),
                ));
            }
            if r.timeout < r.connect_timeout {
                return Err(bad(
                    format!("registries.{name}.timeout"),
                    "must not be shorter than connect_timeout".into(),
                ));
            }
            if let Some(pin) = &r.signer_subject {
                crate::xml::dsig::NamePin::parse(pin).map_err(|m| {
                    bad(
                        format!("registries.{name}.signer_subject"),
                        format!("not a distinguished name as RFC 4514 writes it (e.g. \"CN=cadastre signer,O=Republic Geodetic Authority,C=RS\"): {m}"),
                    )
                })?;
            }
            if let Some(pin) = &r.signer_sha256 {
                crate::xml::dsig::parse_sha256_pin(pin)
                    .map_err(|m| bad(format!("registries.{name}.signer_sha256"), m))?;
            }
        }
        if self.gateway.revocation_max_age.is_zero() {
            return Err(bad(
                "gateway.revocation_max_age".into(),
                "must be more than zero".into(),
            ));
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
            // Over X-Road the service code is an identifier and names the
            // body's wrapper element.
            if self.registries[&s.registry].protocol == super::RegistryProtocol::XRoad {
                x_road_service_code(s.code(id)).map_err(|m| {
                    let key = match s.service_code {
                        Some(_) => format!("services.{id}.service_code"),
                        None => format!("services.{id}"),
                    };
                    bad(key, format!("the X-Road service code {:?} {m}", s.code(id)))
                })?;
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
            // Not positive: a bucket that never fills, every request 429.
            if c.rate_per_s.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                return Err(bad(
                    format!("clients.{name}.rate_per_s"),
                    "must be a positive number".into(),
                ));
            }
            if super::Role::parse(&c.role).is_none() {
                return Err(bad(
                    format!("clients.{name}.role"),
                    format!(
                        "unknown role {:?}; one of {}",
                        c.role,
                        super::Role::NAMES.join(", ")
                    ),
                ));
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
        if self.webhooks.base.is_zero() {
            return Err(bad("webhooks.base".into(), "must be more than 0".into()));
        }
        if self.webhooks.cap < self.webhooks.base {
            return Err(bad(
                "webhooks.cap".into(),
                "must not be shorter than base".into(),
            ));
        }
        let j = &self.jobs;
        for (key, expr) in [
            ("jobs.backup_cron", &j.backup_cron),
            ("jobs.retention_cron", &j.retention_cron),
            ("jobs.watch_cron", &j.watch_cron),
            ("jobs.audit_checkpoint_cron", &j.audit_checkpoint_cron),
        ] {
            crate::time::cron(expr).map_err(|m| bad(key.into(), m))?;
        }
        for (name, c) in &self.clients {
            if name.contains('@') {
                return Err(bad(
                    format!("clients.{name}"),
                    "a client's name has no '@' (it marks the operators' alerts)".into(),
                ));
            }
            for svc in &c.services {
                if !self.services.contains_key(svc) {
                    return Err(bad(
                        format!("clients.{name}.services"),
                        format!(
                            "unknown service {svc:?}; the catalogue has {}",
                            self.services.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(h) = &self.gateway.metrics_token_sha256 {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    "gateway.metrics_token_sha256".into(),
                    "64 hex digits: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)"
                        .into(),
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(bad(
                "log.filter".into(),
                format!("{:?}: {e}", self.log.filter),
            ));
        }
        let a = &self.alerts;
        if !["en", "sr", "hu"].contains(&a.language.as_str()) {
            return Err(bad(
                "alerts.language".into(),
                format!(
                    "{:?}: one of en, sr (Serbian, Latin script), hu",
                    a.language
                ),
            ));
        }
        if a.interval.is_zero() || a.check.is_zero() {
            return Err(bad(
                "alerts.interval".into(),
                "interval and check must be positive".into(),
            ));
        }
        if !(a.dashboard_url.starts_with("https://") || a.dashboard_url.starts_with("http://")) {
            return Err(bad(
                "alerts.dashboard_url".into(),
                format!("{:?} must be an http:// or https:// URL", a.dashboard_url),
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

/// Whether `code` may be an X-Road service code that also names an XML
/// element: X-Road's identifier characters (pr-mess 2.7: the letters
/// `A–Z`, `a–z`, the digits and `'()+,-.=?`, nothing else) and an XML
/// name (so it starts with a letter and has none of `'()+,=?`).
fn x_road_service_code(code: &str) -> Result<(), String> {
    let Some(first) = code.chars().next() else {
        return Err("is empty".into());
    };
    if let Some(c) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "'()+,-.=?".contains(*c)))
    {
        return Err(format!(
            "has {c:?}: an X-Road identifier has the letters A-Z, a-z, digits and '()+,-.=? only"
        ));
    }
    if !first.is_ascii_alphabetic() {
        return Err(format!(
            "starts with {first:?}: it names the body's wrapper element, which must start with a letter"
        ));
    }
    if let Some(c) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-.".contains(*c)))
    {
        return Err(format!(
            "has {c:?}: it names the body's wrapper element, an XML name (letters, digits, '-', '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_must_be_identifiers_and_element_names() {
        for ok in [
            "civil.birth-extract",
            "exampleService",
            "getPerson.v2",
            "a-1",
        ] {
            x_road_service_code(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, says) in [
            ("", "is empty"),
            ("getPerson_v2", "has '_'"),
            ("Šifra", "has 'Š'"),
            ("a b", "has ' '"),
            ("a/b", "has '/'"),
            ("a:b", "has ':'"),
            ("1getPerson", "starts with '1'"),
            ("-x", "starts with '-'"),
            ("get(Person)", "has '('"),
            ("a=b", "has '='"),
        ] {
            let e = x_road_service_code(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
