//! The gateway's own keys on PKCS#11 tokens, and whether each token is
//! there.

use serde::Serialize;
use utoipa::ToSchema;

use super::Ops;

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

impl Ops {
    /// The gateway's keys that are on a token, each with its token's
    /// state: one that is away is looked for again (its backoff allowing),
    /// one that is there is asked whether it still is. Keys in PEM files
    /// are not listed.
    pub async fn tokens(&self) -> Vec<TokenOut> {
        let g = &self.config.gateway;
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
}
