//! What the alert watch looks at that the dispatcher and the
//! configuration know: each registry's breaker, pause and X-Road
//! services, every certificate in use, the keys' tokens. The watch
//! (`alerts`) decides what of it is an alert.

use super::{cert_info, Ops};
use crate::limits::BreakerShown;

/// A registry's state, as the dispatcher has it.
#[derive(Debug, Clone)]
pub struct GateFacts {
    pub registry: String,
    pub breaker_open: bool,
    pub paused: bool,
    /// X-Road: service codes of our catalogue its security server does
    /// not allow (`allowedMethods`, as last asked).
    pub services_not_allowed: Vec<String>,
}

/// A certificate in use and its end.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// `gateway/tls`, `cadastre/signer`, …
    pub label: String,
    pub not_after: String,
    pub days_left: i64,
}

/// A key of the gateway's on a PKCS#11 token, and whether the token is
/// there.
#[derive(Debug, Clone)]
pub struct TokenFacts {
    /// `seal`, `tls`, `api-tls`.
    pub key: String,
    pub up: bool,
    /// Why it is away (the key's URI without its PIN, the module's answer).
    pub error: Option<String>,
}

/// What the dispatcher and the configuration know now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub gates: Vec<GateFacts>,
    pub certificates: Vec<CertFacts>,
    pub tokens: Vec<TokenFacts>,
}

impl Ops {
    /// What the alert watch needs of the dispatcher and the
    /// configuration: each registry's breaker and pause, every
    /// certificate in use, the keys' tokens.
    pub async fn alert_snapshot(&self) -> Snapshot {
        let stats = self.stats().await.unwrap_or_default();
        let regs = self.registries(&stats);
        let mut certificates = Vec::new();
        let g = &self.config.gateway;
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
                breaker_open: r.gate.breaker != BreakerShown::Closed,
                paused: r.gate.paused,
                services_not_allowed: r.x_road.map(|m| m.missing).unwrap_or_default(),
                registry: r.gate.registry,
            });
        }
        let tokens = self
            .tokens()
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
}
