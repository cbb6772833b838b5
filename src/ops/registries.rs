//! The registries as operators see them (breaker, pause, queue, last
//! answers, certificates, revocation, protocol, what an X-Road security
//! server allows), the requests by state, the certificates in use; and
//! pausing and resuming a registry, audited.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Ops, OpsError};
use crate::dispatch::{Gate, GateStatus, Minute};
use crate::store::State as RState;

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

impl Ops {
    /// From the store's counters: no record is read.
    pub async fn stats(&self) -> Result<Stats, OpsError> {
        let t = self.store.tally().await?;
        let mut s = Stats::default();
        for x in RState::ALL {
            s.states.insert(x.name().into(), t.state(x));
        }
        for r in self.config.registries.keys() {
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

    /// Every registry, with its queue taken from `stats` (one scan of the
    /// store serves both). Reads the certificate files: small, and the
    /// page cache holds them.
    pub fn registries(&self, stats: &Stats) -> Vec<RegistryOut> {
        self.dispatcher
            .gates
            .iter()
            .map(|(name, g)| {
                let cfg = self.config.registries.get(name);
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
                                // Open states only: what the registry still owes.
                                .filter(|(s, _)| {
                                    !RState::ALL
                                        .iter()
                                        .any(|x| x.is_terminal() && x.name() == s.as_str())
                                })
                                .map(|(s, n)| (s.clone(), *n))
                                .collect()
                        })
                        .unwrap_or_default(),
                    last: g.last(),
                    certificates,
                    revocation: self.dispatcher.revocation(name),
                    protocol: cfg
                        .map(|c| c.protocol.name())
                        .unwrap_or_default()
                        .to_owned(),
                    x_road: self.dispatcher.methods_report(name),
                }
            })
            .collect()
    }

    /// A registry's attempts minute by minute over the last hour (none
    /// for a registry that is not configured).
    pub fn history(&self, registry: &str, now: u64) -> Vec<Minute> {
        self.dispatcher
            .gates
            .get(registry)
            .map(|g| g.history(now))
            .unwrap_or_default()
    }

    fn gate(&self, name: &str) -> Result<&Arc<Gate>, OpsError> {
        self.dispatcher
            .gates
            .get(name)
            .ok_or_else(|| OpsError::NotFound(format!("no registry {name}")))
    }

    /// Fails as [`Ops::pause`] would for a registry that does not exist,
    /// before its arguments are read.
    pub fn registry_exists(&self, name: &str) -> Result<(), OpsError> {
        self.gate(name).map(|_| ())
    }

    /// `who` pauses a registry, until `until` (ms) or until resumed
    /// (audited first).
    pub async fn pause(
        &self,
        who: &str,
        name: &str,
        until: Option<u64>,
    ) -> Result<GateStatus, OpsError> {
        let g = self.gate(name)?;
        self.audit(
            who,
            "admin.pause",
            None,
            &format!(
                "{name} until {}",
                until.map_or("resumed".into(), |u| u.to_string())
            ),
        )
        .await?;
        self.dispatcher.pause(name, true, until).await?;
        Ok(g.status())
    }

    /// `who` resumes a registry (audited first).
    pub async fn resume(&self, who: &str, name: &str) -> Result<GateStatus, OpsError> {
        let g = self.gate(name)?;
        self.audit(who, "admin.resume", None, name).await?;
        self.dispatcher.pause(name, false, None).await?;
        Ok(g.status())
    }
}
