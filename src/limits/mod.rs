//! A registry's limits, as one value: the circuit breaker, the token
//! bucket, the in-flight ceiling, and admission through all three. The
//! in-process gate (`dispatch`) keeps one per registry in memory; the
//! PostgreSQL store keeps one per registry in its `gates` row, for every
//! instance at once. Both admit through [`Limiter::admit`], so the rule is
//! written once.
//!
//! A leaf: pure values, no clock (times are ms since the epoch, given by
//! the caller), no I/O, nothing of ours imported.

use std::time::Duration;

/// A registry's limits, as configured, for a store that shares them.
#[derive(Debug, Clone, PartialEq)]
pub struct GateLimits {
    pub registry: String,
    pub max_in_flight: usize,
    pub rate_per_s: f64,
    pub breaker_failures: u32,
    pub breaker_cooldown: std::time::Duration,
    /// How long a half-open breaker waits for its probe's answer before
    /// another instance may probe (the probe's instance may have died).
    pub lease_ms: u64,
}

/// Why a request may not go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not before this time (ms since the epoch).
    Until(u64),
    /// Until something in flight finishes.
    Event,
}

/// What one registry's limits hold between requests.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Limiter {
    bucket: TokenBucket,
    breaker: Breaker,
    /// While half-open: when the probe counts as lost (its sender may have
    /// died with it), so that another may probe.
    #[serde(default)]
    probe_until: u64,
}

impl Limiter {
    pub fn new(g: &GateLimits, now_ms: u64) -> Limiter {
        Limiter {
            bucket: TokenBucket::new(g.rate_per_s, now_ms),
            breaker: Breaker::new(g.breaker_failures, g.breaker_cooldown),
            probe_until: 0,
        }
    }

    /// One kept as text (a `gates` row), or a fresh one when there is none,
    /// it is unreadable, or it was made with other settings.
    pub fn restore(text: Option<&str>, g: &GateLimits, now_ms: u64) -> Limiter {
        match text.and_then(|t| serde_json::from_str::<Limiter>(t).ok()) {
            Some(l) if l.made_with(g) => l,
            _ => Limiter::new(g, now_ms),
        }
    }

    /// As text, for [`Limiter::restore`].
    pub fn keep(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Was it made with these settings (or must it be made anew after a
    /// configuration change)?
    pub fn made_with(&self, g: &GateLimits) -> bool {
        self.bucket.rate() == g.rate_per_s
            && self
                .breaker
                .made_with(g.breaker_failures, g.breaker_cooldown)
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// May one more request go, with `others` already in flight? Takes a
    /// token and, when the breaker is half-open, sends this one as the
    /// probe.
    pub fn admit(&mut self, others: usize, g: &GateLimits, now_ms: u64) -> Result<(), Wait> {
        if others >= g.max_in_flight {
            return Err(Wait::Event);
        }
        self.bucket.take(now_ms).map_err(Wait::Until)?;
        match self.breaker.admit(now_ms) {
            Ok(()) => {
                if self.breaker.state() == BreakerState::HalfOpen {
                    self.probe_until = now_ms + g.lease_ms;
                }
                Ok(())
            }
            // Half-open with its probe out for longer than a lease: the
            // probe is lost, this one probes instead.
            Err(None) if now_ms >= self.probe_until => {
                self.probe_until = now_ms + g.lease_ms;
                Ok(())
            }
            Err(None) => Err(Wait::Until(self.probe_until)),
            Err(Some(until)) => Err(Wait::Until(until)),
        }
    }

    /// Takes the breaker of the store that shares it with other instances,
    /// for this instance's status page.
    pub fn mirror(&mut self, b: Breaker) {
        self.breaker = b;
    }

    /// An attempt's result: was the registry at fault?
    pub fn record(&mut self, failure: bool, now_ms: u64) {
        self.breaker.record(failure, now_ms);
    }
}

/// Circuit breaker of one registry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Breaker {
    threshold: u32,
    base: Duration,
    max: Duration,
    failures: u32,
    cooldown: Duration,
    state: BreakerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BreakerState {
    Closed,
    /// Until this many ms since the epoch.
    Open {
        until_ms: u64,
    },
    /// One probe is out; its result decides.
    HalfOpen,
}

impl BreakerState {
    /// The state as operators are told it, without its time.
    pub fn shown(&self) -> BreakerShown {
        match self {
            BreakerState::Closed => BreakerShown::Closed,
            BreakerState::Open { .. } => BreakerShown::Open,
            BreakerState::HalfOpen => BreakerShown::HalfOpen,
        }
    }
}

/// A breaker's state as the API, the dashboard and `/metrics` show it:
/// `closed`, `open` or `half-open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerShown {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerShown {
    pub fn name(self) -> &'static str {
        match self {
            BreakerShown::Closed => "closed",
            BreakerShown::Open => "open",
            BreakerShown::HalfOpen => "half-open",
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, base: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            base,
            max: base * 64,
            failures: 0,
            cooldown: base,
            state: BreakerState::Closed,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Was it made with these settings (or must it be made anew after a
    /// configuration change)?
    pub fn made_with(&self, threshold: u32, base: Duration) -> bool {
        self.threshold == threshold.max(1) && self.base == base
    }

    /// May a request go now? `Err(until)` when it must wait.
    pub fn admit(&mut self, now_ms: u64) -> Result<(), Option<u64>> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until_ms } if now_ms >= until_ms => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { until_ms } => Err(Some(until_ms)),
            BreakerState::HalfOpen => Err(None),
        }
    }

    pub fn record(&mut self, failure: bool, now_ms: u64) {
        match (failure, self.state) {
            (false, _) => {
                self.failures = 0;
                self.cooldown = self.base;
                self.state = BreakerState::Closed;
            }
            (true, BreakerState::HalfOpen) => {
                self.cooldown = (self.cooldown * 2).min(self.max);
                self.state = BreakerState::Open {
                    until_ms: now_ms + self.cooldown.as_millis() as u64,
                };
            }
            (true, _) => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    self.state = BreakerState::Open {
                        until_ms: now_ms + self.cooldown.as_millis() as u64,
                    };
                }
            }
        }
    }
}

/// Token bucket: `rate` per second, bursts up to one second's worth.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn new(rate: f64, now_ms: u64) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate.max(1.0),
            last_ms: now_ms,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes a token, or says when one will be there.
    pub fn take(&mut self, now_ms: u64) -> Result<(), u64> {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.last_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now_ms + (((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(max: usize, rate: f64) -> GateLimits {
        GateLimits {
            registry: "civil".into(),
            max_in_flight: max,
            rate_per_s: rate,
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(5),
            lease_ms: 30_000,
        }
    }

    #[test]
    fn breaker_opens_probes_and_grows_its_cooldown() {
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            b.record(true, 0);
        }
        assert_eq!(b.admit(0), Ok(()));
        b.record(true, 0);
        assert_eq!(b.admit(5_000), Err(Some(10_000)));
        assert_eq!(b.admit(10_000), Ok(()), "half-open probe");
        assert_eq!(b.admit(10_001), Err(None), "one probe at a time");
        b.record(true, 10_000);
        assert_eq!(
            b.state(),
            BreakerState::Open { until_ms: 30_000 },
            "cool-down doubled"
        );
        assert_eq!(b.admit(30_000), Ok(()));
        b.record(false, 30_000);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn bucket_limits_rate() {
        let mut t = TokenBucket::new(2.0, 0);
        assert!(t.take(0).is_ok());
        assert!(t.take(0).is_ok());
        assert_eq!(t.take(0), Err(500));
        assert!(t.take(500).is_ok());
    }

    #[test]
    fn admission_checks_in_flight_then_rate_then_breaker() {
        let g = g(2, 1.0);
        let mut l = Limiter::new(&g, 0);
        assert_eq!(l.admit(2, &g, 0), Err(Wait::Event), "full");
        assert_eq!(l.admit(1, &g, 0), Ok(()));
        assert_eq!(l.admit(0, &g, 0), Err(Wait::Until(1000)), "no token");
        l.record(true, 1000);
        l.record(true, 1000);
        assert_eq!(l.admit(0, &g, 1000), Err(Wait::Until(6000)), "open");
        // after the cool-down one probe goes; the next waits for it, or for
        // a lease if its sender died
        assert_eq!(l.admit(0, &g, 6000), Ok(()));
        assert_eq!(l.admit(0, &g, 7000), Err(Wait::Until(36_000)));
        assert_eq!(l.admit(0, &g, 36_000), Ok(()));
        // the probe succeeded: closed
        l.record(false, 36_500);
        assert_eq!(l.breaker().state(), BreakerState::Closed);
    }

    #[test]
    fn a_kept_limiter_comes_back_unless_the_settings_changed() {
        let g1 = g(2, 1.0);
        let mut l = Limiter::new(&g1, 0);
        l.record(true, 0);
        l.record(true, 0);
        let kept = l.keep();
        let back = Limiter::restore(Some(&kept), &g1, 10);
        assert!(matches!(back.breaker().state(), BreakerState::Open { .. }));
        let other = GateLimits {
            breaker_failures: 3,
            ..g1.clone()
        };
        let fresh = Limiter::restore(Some(&kept), &other, 10);
        assert_eq!(fresh.breaker().state(), BreakerState::Closed);
        assert_eq!(
            Limiter::restore(Some("not json"), &g1, 10)
                .breaker()
                .state(),
            BreakerState::Closed
        );
    }
}
