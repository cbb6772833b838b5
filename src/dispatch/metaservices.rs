//! What each X-Road registry's security server says of our catalogue
//! (`listMethods`, `allowedMethods`), asked at start and hourly by the
//! daemon and kept here for the operators: the registry's panel, the
//! alert watch, the metrics. Reporting only: sending never waits for it,
//! the security server enforces access.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::Dispatcher;
use crate::config::{GatewayConfig, RegistryProtocol};
use crate::sync::lock;

/// How often the security servers are asked.
pub const METHODS_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The last answer of a registry's security server about its services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({
    "checked_ms": 1795643792420u64, "listed": ["property-sheet", "parcel"],
    "allowed": ["parcel"], "missing": ["property-sheet"], "error": null
}))]
pub struct MethodsReport {
    /// When it was asked (ms since the epoch).
    pub checked_ms: u64,
    /// `listMethods`: the service codes the provider offers.
    pub listed: Vec<String>,
    /// `allowedMethods`: those the gateway may call.
    pub allowed: Vec<String>,
    /// Service codes of our catalogue for this registry that
    /// `allowedMethods` does not list: their requests will be refused.
    pub missing: Vec<String>,
    /// Why the security server could not be asked (then the lists are
    /// empty: nothing is known).
    pub error: Option<String>,
}

/// The service codes of the catalogue's services of each X-Road registry.
pub fn catalogue(cfg: &GatewayConfig) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = cfg
        .registries
        .iter()
        .filter(|(_, r)| r.protocol == RegistryProtocol::XRoad)
        .map(|(n, _)| (n.clone(), Vec::new()))
        .collect();
    for (id, s) in &cfg.services {
        if let Some(codes) = out.get_mut(&s.registry) {
            codes.push(s.code(id).to_owned());
        }
    }
    for codes in out.values_mut() {
        codes.sort();
        codes.dedup();
    }
    out
}

fn sorted(mut codes: Vec<String>) -> Vec<String> {
    codes.sort();
    codes.dedup();
    codes
}

/// Our service codes that `allowed` does not list.
pub fn missing(ours: &[String], allowed: &[String]) -> Vec<String> {
    ours.iter()
        .filter(|c| !allowed.contains(c))
        .cloned()
        .collect()
}

impl Dispatcher {
    /// The X-Road registries, whose security servers have metaservices.
    pub fn x_road_registries(&self) -> Vec<String> {
        self.catalogue.keys().cloned().collect()
    }

    /// Asks every X-Road registry's security server what it lists and
    /// allows, one after the other, and keeps each answer (or why there
    /// was none). Returns what it kept.
    pub async fn report_methods(&self) -> BTreeMap<String, MethodsReport> {
        let mut out = BTreeMap::new();
        for (registry, ours) in &self.catalogue {
            let asked = self.exchange().methods(registry).await;
            let report = self.keep_methods(
                registry,
                ours,
                asked.map_err(|e| crate::ids::redact_text(&e.to_string())),
            );
            out.insert(registry.clone(), report);
        }
        out
    }

    /// Keeps what a registry's security server answered.
    fn keep_methods(
        &self,
        registry: &str,
        ours: &[String],
        asked: Result<crate::exchange::Methods, String>,
    ) -> MethodsReport {
        let report = match asked {
            Ok(m) => MethodsReport {
                checked_ms: self.store.clock_ms(),
                missing: missing(ours, &m.allowed),
                // In order, once each, whatever order the server chose.
                listed: sorted(m.listed),
                allowed: sorted(m.allowed),
                error: None,
            },
            Err(e) => MethodsReport {
                checked_ms: self.store.clock_ms(),
                error: Some(e),
                ..Default::default()
            },
        };
        match &report.error {
            Some(e) => {
                tracing::warn!(registry = %registry, error = %e, "cannot ask the security server which services are allowed")
            }
            None if !report.missing.is_empty() => {
                tracing::warn!(registry = %registry, missing = %report.missing.join(", "), "the security server does not allow services of our catalogue")
            }
            None => {}
        }
        crate::metrics::x_road_missing(
            registry,
            report.error.is_none().then_some(report.missing.len()),
        );
        lock(&self.methods).insert(registry.to_owned(), report.clone());
        report
    }

    /// What a registry's security server last said of its services.
    pub fn methods_report(&self, registry: &str) -> Option<MethodsReport> {
        lock(&self.methods).get(registry).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_ours_that_are_not_allowed() {
        let ours = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(missing(&ours, &["b".into(), "z".into()]), ["a", "c"]);
        assert!(missing(&ours, &ours).is_empty());
    }
}
