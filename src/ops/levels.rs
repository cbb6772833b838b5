//! The levels `/metrics` shows, read at a scrape (queue depth, breakers,
//! pauses, certificates, revocation, the store, the webhook backlog, the
//! keys' tokens), as the plain values [`crate::metrics::set_levels`] sets.

use super::{cert_info, Ops, OpsError};
use crate::metrics::{Levels, RegistryLevels};
use crate::store::State as RState;
use crate::time::now_ms;

/// Seconds from `at_ms` to `now`.
fn age_s(now: u64, at_ms: u64) -> f64 {
    now.saturating_sub(at_ms) as f64 / 1000.0
}

impl Ops {
    /// Everything `/metrics` reads when scraped; the counters are counted
    /// where things happen.
    pub async fn levels(&self) -> Result<Levels, OpsError> {
        let stats = self.stats().await?;
        let registries = self.registries(&stats);
        let g = &self.config.gateway;
        let gateway_certs = [
            ("gateway tls", &g.tls_cert),
            ("gateway signer", &g.sign_cert),
        ]
        .into_iter()
        .filter_map(|(role, p)| cert_info(role, p))
        .map(|c| (c.role, c.days_left))
        .collect();
        let now = now_ms();
        let queue_depth = stats
            .registries
            .iter()
            .flat_map(|(registry, states)| {
                RState::ALL.into_iter().map(move |s| {
                    let n = states.get(s.name()).copied().unwrap_or(0);
                    (registry.clone(), s.name(), n)
                })
            })
            .collect();
        let registries = registries
            .into_iter()
            .map(|r| RegistryLevels {
                breaker: r.gate.breaker,
                paused: r.gate.paused,
                certificates: r
                    .certificates
                    .into_iter()
                    .map(|c| (c.role, c.days_left))
                    .collect(),
                revocation_good_age_s: r.revocation.last_good_ms.map(|at| age_s(now, at)),
                registry: r.gate.registry,
            })
            .collect();
        Ok(Levels {
            queue_depth,
            oldest_open_age_s: stats.oldest_queued_ms.map_or(0.0, |t| age_s(now, t)),
            deadline_at_risk: stats.at_risk,
            registries,
            gateway_certs,
            store_bytes: self.store.size_on_disk().await.unwrap_or(0),
            webhook_backlog: self
                .store
                .outbox(100_000)
                .await
                .map(|o| o.iter().filter(|(_, e)| !e.is_alert()).count())
                .unwrap_or(0),
            store_read_errors: self.store.read_faults().map_or(0, |f| f.count),
            tokens: self
                .tokens()
                .await
                .into_iter()
                .map(|t| (t.key, t.up))
                .collect(),
        })
    }
}
