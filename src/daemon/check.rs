//! `jumgw config check`: everything `serve` does with a configuration
//! before it takes work, without taking any — the file read and
//! cross-checked, every key and certificate loaded and each key held
//! against its certificate (the exchange, the API's TLS, the TSA client,
//! the mail server's settings), the data folder's key files read — and the
//! configuration in effect printed with its secrets masked.

use std::path::Path;

use toml::Value;

use crate::config::{ConfigError, GatewayConfig};

/// Checks `path` as `serve --config path --data-dir data_dir` would use it.
pub fn check(path: &Path, data_dir: &Path, schemas: &Path) -> Result<GatewayConfig, String> {
    let origin = path.display().to_string();
    let cfg = GatewayConfig::load(path).map_err(|e| e.to_string())?;
    let at = |key: &str, e: &dyn std::fmt::Display| {
        ConfigError::Invalid {
            path: origin.clone(),
            key: key.into(),
            message: e.to_string(),
        }
        .to_string()
    };
    crate::exchange::Exchange::new(&cfg, schemas).map_err(|e| at("gateway/registries", &e))?;
    if let Some(t) = &cfg.gateway.api_tls {
        crate::pki::tls::server_config_checked(
            &t.cert,
            &t.key,
            t.client_ca.as_deref(),
            crate::pki::tls::ClientAuth::Optional,
            None,
            cfg.gateway.min_rsa_bits,
        )
        .map_err(|e| at("gateway.api_tls", &e))?;
    }
    crate::evidence::stamper::TsaClient::configured(&cfg.evidence)
        .map_err(|e| at("evidence", &e))?;
    for (key, bundle) in [
        ("evidence.seal_trust", &cfg.evidence.seal_trust),
        ("webhooks.tls_ca", &cfg.webhooks.tls_ca),
    ] {
        if let Some(p) = bundle {
            crate::pki::tls::client_anchors(p).map_err(|e| at(key, &e))?;
        }
    }
    crate::alerts::Mailer::configured(&cfg.alerts).map_err(|e| at("alerts", &e))?;
    let g = &cfg.gateway;
    let documents = data_dir.join(&g.document_key_file);
    crate::store::crypt::DocumentCipher::from_file(&documents, false).map_err(|e| {
        at(
            "gateway.document_key_file",
            &format!("{}: {e}", documents.display()),
        )
    })?;
    let audit = data_dir.join(&g.audit_key_file);
    crate::audit::AuditKey::from_file(&audit, false).map_err(|e| {
        at(
            "gateway.audit_key_file",
            &format!("{}: {e}", audit.display()),
        )
    })?;
    if let Some(u) = &cfg.store.url {
        <tokio_postgres::Config as std::str::FromStr>::from_str(u)
            .map_err(|e| at("store.url", &e))?;
    }
    Ok(cfg)
}

/// How long `config check` waits for one security server's metaservices.
const METHODS_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// X-Road: asks each X-Road registry's security server which services it
/// allows (`allowedMethods`), as the daemon does at start, and says what
/// of our catalogue it does not: a `warning:` line naming the registry and
/// the service codes. A security server that cannot be reached is a
/// `note:`, not a failure (the check may run where it is not reachable).
/// Nothing for a configuration without X-Road registries.
pub async fn x_road_services(cfg: &GatewayConfig, schemas: &Path) -> Vec<String> {
    let catalogue = crate::dispatch::x_road_catalogue(cfg);
    if catalogue.is_empty() {
        return Vec::new();
    }
    let exchange = match crate::exchange::Exchange::new(cfg, schemas) {
        Ok(e) => e,
        Err(e) => return vec![format!("note: X-Road services not checked: {e}")],
    };
    let mut lines = Vec::new();
    for (registry, ours) in &catalogue {
        match tokio::time::timeout(METHODS_WAIT, exchange.methods(registry)).await {
            Ok(Ok(m)) => {
                let missing = crate::dispatch::missing(ours, &m.allowed);
                if !missing.is_empty() {
                    lines.push(format!(
                        "warning: registries.{registry}: its security server does not allow services of our catalogue (allowedMethods): {}",
                        missing.join(", ")
                    ));
                }
            }
            Ok(Err(e)) => lines.push(format!(
                "note: registries.{registry}: its security server could not be asked which services it allows, not checked: {}",
                crate::ids::redact_text(&e.to_string())
            )),
            Err(_) => lines.push(format!(
                "note: registries.{registry}: its security server did not answer within {} s, not checked",
                METHODS_WAIT.as_secs()
            )),
        }
    }
    lines
}

/// Keys whose values are secrets.
const SECRETS: [&str; 2] = ["password", "webhook_secret"];

/// The configuration in effect, as TOML in the order of the code's
/// sections, secrets masked (a PostgreSQL URL's password and a PKCS#11 PIN
/// too).
pub fn effective(cfg: &GatewayConfig) -> String {
    match toml::Value::try_from(cfg) {
        Ok(mut v) => {
            mask(&mut v, None);
            toml::to_string(&v).unwrap_or_else(|e| format!("# cannot be written as TOML: {e}\n"))
        }
        Err(e) => format!("# cannot be written as TOML: {e}\n"),
    }
}

fn mask(v: &mut Value, key: Option<&str>) {
    match v {
        Value::Table(m) => {
            for (k, x) in m.iter_mut() {
                mask(x, Some(k));
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, key)),
        Value::String(s) if key.is_some_and(|k| SECRETS.contains(&k)) => *s = "********".into(),
        Value::String(s) if key == Some("url") && s.starts_with("postgres") => {
            *s = mask_url_password(s);
        }
        Value::String(s) if s.starts_with("pkcs11:") => *s = crate::pki::pkcs11::redact(s),
        _ => {}
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:********@host/db`.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((auth, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_the_effective_configuration() {
        let mut v: Value = toml::from_str(
            r#"
            [store]
            url = "postgres://jumgw:s3cret@db:5432/jumgw"
            [alerts]
            password = "hunter2"
            user = "ops"
            [clients.x]
            webhook_secret = "whsec_abc"
            [gateway]
            sign_key = "pkcs11:token=t;object=seal?module-path=/m.so&pin-value=1234"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        mask(&mut v, None);
        let s = toml::to_string(&v).unwrap_or_default();
        for secret in ["s3cret", "hunter2", "whsec_abc", "1234"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert!(s.contains("postgres://jumgw:********@db:5432/jumgw"), "{s}");
        assert!(s.contains("user = \"ops\""), "{s}");
    }
}
