//! A registry's gate: whether a request may go to it now (administrator
//! pause, maintenance windows, in-flight ceiling, rate and circuit
//! breaker), re-read limits, and what operators see of it ([`GateStatus`],
//! [`LastSeen`], attempts per minute, [`RevocationStatus`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::RetryConfig;
use crate::limits::{GateLimits, Limiter, Wait};
use crate::sync::lock;
use crate::time::Window;

/// One registry's limits and health.
pub struct Gate {
    pub name: String,
    pub(super) in_flight: Arc<Semaphore>,
    /// Rate and breaker (in flight is the semaphore, whose permits are
    /// held by the attempts).
    pub(super) limiter: Mutex<Limiter>,
    paused: AtomicBool,
    /// When a pause ends by itself (ms since the epoch); 0: when resumed.
    paused_until: std::sync::atomic::AtomicU64,
    /// Replaced whole when the configuration is re-read.
    windows: std::sync::RwLock<Vec<Window>>,
    /// The limits as configured, for a store that holds them for every
    /// instance (then the breaker here only mirrors it); replaced whole
    /// when the configuration is re-read.
    limits: std::sync::RwLock<Arc<GateLimits>>,
    pub(super) shared: bool,
    pub(super) last: Mutex<LastSeen>,
    /// Attempts per minute over the last hour, for the dashboard.
    history: Mutex<std::collections::VecDeque<Minute>>,
}

/// One minute of attempts at a registry.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Minute {
    /// Minutes since the epoch.
    pub minute: u64,
    pub attempts: u32,
    pub failures: u32,
    pub total_ms: u64,
}

/// The latest attempt results of a registry, for operators.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct LastSeen {
    pub success_ms: Option<u64>,
    pub error_ms: Option<u64>,
    pub error: Option<String>,
}

/// A registry's revocation checks, for operators.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct RevocationStatus {
    /// require, prefer or off.
    pub policy: String,
    /// The newest good answer about its certificates (ms since the epoch).
    pub last_good_ms: Option<u64>,
}

/// Why a registry cannot take a request now.
#[derive(Clone, Copy)]
pub(super) enum Blocked {
    /// Until this time (ms since the epoch).
    Until(u64),
    /// Until something changes (a permit is released, a probe returns).
    Event,
}

/// A registry's state as operators see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"registry": "cadastre", "breaker": "closed", "paused": true, "paused_until": null, "in_maintenance": false, "in_flight": 0}))]
pub struct GateStatus {
    pub registry: String,
    /// closed, open or half-open.
    #[schema(value_type = String)]
    pub breaker: crate::limits::BreakerShown,
    pub paused: bool,
    /// When the pause ends by itself (ms since the epoch).
    pub paused_until: Option<u64>,
    pub in_maintenance: bool,
    pub in_flight: usize,
}

impl Gate {
    /// A gate with its limits and windows as configured, paused or not.
    /// `shared`: the store keeps the rate and the breaker for every
    /// instance.
    pub(super) fn new(
        limits: GateLimits,
        windows: Vec<Window>,
        paused: bool,
        shared: bool,
        now: u64,
    ) -> Gate {
        Gate {
            limiter: Mutex::new(Limiter::new(&limits, now)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            name: limits.registry.clone(),
            limits: std::sync::RwLock::new(Arc::new(limits)),
            shared,
            paused: AtomicBool::new(paused),
            paused_until: Default::default(),
            last: Default::default(),
            history: Default::default(),
            windows: std::sync::RwLock::new(windows),
        }
    }

    pub(super) fn admit(&self, now: u64) -> Result<OwnedSemaphorePermit, Blocked> {
        if let Some(b) = self.closed(now) {
            return Err(b);
        }
        let permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Blocked::Event)?;
        if self.shared {
            // The rate and the breaker are checked by the store, for all
            // instances at once, when the lease is taken.
            return Ok(permit);
        }
        // This request holds a permit already: the others are below the
        // ceiling, and the limiter decides on rate and breaker.
        let others = self.in_flight() - 1;
        let limits = self.limits();
        match lock(&self.limiter).admit(others, &limits, now) {
            Ok(()) => Ok(permit),
            Err(Wait::Until(until)) => Err(Blocked::Until(until)),
            Err(Wait::Event) => Err(Blocked::Event),
        }
    }

    /// Why nothing can go to this registry now, as far as can be told
    /// without taking a permit: a pause, a maintenance window, every
    /// permit held. The rate and the breaker are for [`Gate::admit`].
    pub(super) fn closed(&self, now: u64) -> Option<Blocked> {
        if self.is_paused(now) {
            return Some(Blocked::Until(now + 1000));
        }
        let t =
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now as i64).unwrap_or_default();
        let end = crate::sync::read(&self.windows)
            .iter()
            .filter_map(|w| w.active_until(t))
            .max();
        if let Some(end) = end {
            return Some(Blocked::Until(end.timestamp_millis().max(0) as u64));
        }
        (self.in_flight.available_permits() == 0).then_some(Blocked::Event)
    }

    /// Pauses (until `until` ms since the epoch, if given) or resumes.
    pub fn pause(&self, on: bool, until: Option<u64>) {
        self.paused_until
            .store(if on { until.unwrap_or(0) } else { 0 }, Ordering::Relaxed);
        self.paused.store(on, Ordering::Relaxed);
    }

    fn is_paused(&self, now: u64) -> bool {
        if !self.paused.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.paused_until.load(Ordering::Relaxed);
        if until != 0 && now >= until {
            self.pause(false, None);
            return false;
        }
        true
    }

    pub fn last(&self) -> LastSeen {
        lock(&self.last).clone()
    }

    pub(super) fn record_minute(&self, now: u64, failed: bool, duration_ms: u64) {
        let minute = now / 60_000;
        let mut h = lock(&self.history);
        match h.back_mut() {
            Some(m) if m.minute == minute => {
                m.attempts += 1;
                m.failures += u32::from(failed);
                m.total_ms += duration_ms;
            }
            _ => h.push_back(Minute {
                minute,
                attempts: 1,
                failures: u32::from(failed),
                total_ms: duration_ms,
            }),
        }
        while h.front().is_some_and(|m| m.minute + 60 <= minute) {
            h.pop_front();
        }
    }

    /// The last 60 minutes, oldest first, quiet minutes included.
    pub fn history(&self, now: u64) -> Vec<Minute> {
        let minute = now / 60_000;
        let h = lock(&self.history);
        (minute.saturating_sub(59)..=minute)
            .map(|m| {
                h.iter().find(|x| x.minute == m).copied().unwrap_or(Minute {
                    minute: m,
                    ..Minute::default()
                })
            })
            .collect()
    }

    /// Attempts holding a permit now.
    pub(super) fn in_flight(&self) -> usize {
        // Just after the ceiling was lowered, permits still to be given
        // back are not available either.
        self.limits()
            .max_in_flight
            .saturating_sub(self.in_flight.available_permits())
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<GateLimits> {
        crate::sync::read(&self.limits).clone()
    }

    /// New limits and maintenance windows from a re-read configuration:
    /// the in-flight ceiling moves at once (a lower one as attempts
    /// finish), a changed rate or breaker starts a fresh limiter.
    pub fn reconfigure(&self, limits: GateLimits, windows: Vec<Window>, now: u64) {
        let old = std::mem::replace(
            &mut *crate::sync::write(&self.limits),
            Arc::new(limits.clone()),
        );
        *crate::sync::write(&self.windows) = windows;
        if !lock(&self.limiter).made_with(&limits) {
            *lock(&self.limiter) = Limiter::new(&limits, now);
        }
        if limits.max_in_flight > old.max_in_flight {
            self.in_flight
                .add_permits(limits.max_in_flight - old.max_in_flight);
        } else if limits.max_in_flight < old.max_in_flight {
            let owed = old.max_in_flight - limits.max_in_flight;
            let owed = owed - self.in_flight.forget_permits(owed);
            if owed > 0 {
                // Taken back as the attempts holding them finish.
                let sem = self.in_flight.clone();
                tokio::spawn(async move {
                    if let Ok(p) = sem
                        .acquire_many_owned(u32::try_from(owed).unwrap_or(u32::MAX))
                        .await
                    {
                        p.forget();
                    }
                });
            }
        }
    }

    pub fn status(&self) -> GateStatus {
        let now = chrono::Utc::now();
        GateStatus {
            registry: self.name.clone(),
            breaker: lock(&self.limiter).breaker().state().shown(),
            paused: self.is_paused(crate::time::now_ms()),
            paused_until: Some(self.paused_until.load(Ordering::Relaxed)).filter(|u| *u != 0),
            in_maintenance: crate::sync::read(&self.windows)
                .iter()
                .any(|w| w.active_until(now).is_some()),
            in_flight: self.in_flight(),
        }
    }
}

/// A registry's limits and maintenance windows as its configuration says.
pub fn gate_settings(
    name: &str,
    r: &crate::config::RegistryConfig,
    retry: &RetryConfig,
) -> (GateLimits, Vec<Window>) {
    (
        GateLimits {
            registry: name.to_owned(),
            max_in_flight: r.max_in_flight,
            rate_per_s: r.rate_per_s,
            breaker_failures: r.breaker_failures,
            breaker_cooldown: r.breaker_cooldown,
            lease_ms: retry.lease.as_millis() as u64,
        },
        // validated when the configuration was loaded
        r.maintenance
            .iter()
            .filter_map(|w| w.window().ok())
            .collect(),
    )
}

/// Administrators' pauses, as the store holds them for every instance.
pub(super) fn apply_pauses(gates: &BTreeMap<String, Arc<Gate>>, pauses: Vec<crate::store::Pause>) {
    for p in pauses {
        if let Some(g) = gates.get(&p.registry) {
            g.pause(p.paused, p.until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_in_flight: usize, rate_per_s: f64) -> GateLimits {
        GateLimits {
            registry: "cadastre".into(),
            max_in_flight,
            rate_per_s,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(10),
            lease_ms: 30_000,
        }
    }

    fn gate(l: GateLimits) -> Gate {
        Gate::new(l, Vec::new(), false, false, 0)
    }

    #[tokio::test]
    async fn a_reread_ceiling_holds_at_once_upwards_and_as_attempts_end_downwards() {
        let g = gate(limits(4, 1000.0));
        let held: Vec<_> = (0..3)
            .map(|i| g.admit(1_000 + i).unwrap_or_else(|_| panic!("admit {i}")))
            .collect();
        assert_eq!(g.in_flight(), 3);
        // Down to one while three are out: none more goes, and once they
        // are back only one may.
        g.reconfigure(limits(1, 1000.0), Vec::new(), 2_000);
        assert!(g.admit(2_001).is_err());
        drop(held);
        for _ in 0..100 {
            if g.in_flight.available_permits() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(g.in_flight.available_permits(), 1);
        let one = g
            .admit(3_000)
            .unwrap_or_else(|_| panic!("admit after the attempts ended"));
        assert!(g.admit(3_001).is_err());
        drop(one);
        // Up to six: at once.
        g.reconfigure(limits(6, 1000.0), Vec::new(), 4_000);
        assert_eq!(g.in_flight.available_permits(), 6);
        // A new rate makes a new limiter; the same one keeps it.
        assert!(lock(&g.limiter).made_with(&limits(6, 1000.0)));
        g.reconfigure(limits(6, 2.0), Vec::new(), 5_000);
        assert!(lock(&g.limiter).made_with(&limits(6, 2.0)));
        assert_eq!(g.limits().rate_per_s, 2.0);
    }
}
