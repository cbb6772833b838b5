//! How long to wait before trying again: the one backoff of the gateway,
//! shaped by each use (requests to a registry, webhooks, timestamps and
//! signed documents). Retry `n`'s ceiling grows exponentially from `base`
//! up to `cap`; the wait is jittered below that ceiling, so that callers
//! that failed together do not all come back at once, and is never
//! shorter than a floor.
//!
//! Pure: the randomness is an argument (uniform in [0, 1)), drawn by the
//! caller, so that a test gives it and a record can be replayed.

use std::time::Duration;

/// How a wait is spread below its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere from nothing to the ceiling ("full jitter"): callers that
    /// failed at the same moment spread out the most.
    Full,
    /// From half the ceiling to the ceiling: never much sooner than the
    /// exponential step says, for a peer that should not be asked again
    /// at once.
    Half,
}

/// The shape of a backoff. Retry `n` (1 = after the first failure) has
/// the ceiling `min(cap, base · factor^min(n−1, max_steps))`; its wait is
/// that ceiling times the jitter's share, then at least `floor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first retry's ceiling.
    pub base: Duration,
    /// Each retry's ceiling is the last one's times this (at least 1 for
    /// a backoff that grows).
    pub factor: f64,
    /// After this many steps the ceiling stops growing (only `cap` bounds
    /// it anyway; each use keeps the limit it has always had, so that no
    /// wait changes where `base` is tiny and `cap` huge).
    pub max_steps: u32,
    /// The largest ceiling.
    pub cap: Duration,
    pub jitter: Jitter,
    /// The shortest wait, whatever the jitter drew; it wins over `cap`
    /// (a registry's `Retry-After` is honoured even beyond it).
    pub floor: Duration,
}

impl Backoff {
    /// The wait before retry `n` (1 = after the first failure), with
    /// `random` uniform in [0, 1) (a value outside is taken as the
    /// nearest end, NaN as 0). Never panics: a ceiling beyond what a
    /// `Duration` holds is `cap`.
    pub fn delay(&self, n: u32, random: f64) -> Duration {
        let steps = n.saturating_sub(1).min(self.max_steps).min(i32::MAX as u32);
        let grown = self.base.as_secs_f64() * self.factor.powi(steps as i32);
        // f64::min picks the number when `grown` is NaN (0 × ∞): the cap.
        let ceiling = grown.min(self.cap.as_secs_f64());
        let r = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let share = match self.jitter {
            Jitter::Full => r,
            Jitter::Half => 0.5 + 0.5 * r,
        };
        let wait = Duration::try_from_secs_f64((ceiling * share).max(0.0)).unwrap_or(self.cap);
        wait.max(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::{Backoff, Jitter};
    use proptest::prelude::*;
    use std::time::Duration;

    const ALMOST_ONE: f64 = 1.0 - 1e-9;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn shape(jitter: Jitter, floor: Duration) -> Backoff {
        Backoff {
            base: secs(10),
            factor: 2.0,
            max_steps: 64,
            cap: secs(300),
            jitter,
            floor,
        }
    }

    #[test]
    fn full_jitter_spans_nothing_to_the_ceiling() {
        let b = shape(Jitter::Full, Duration::ZERO);
        assert_eq!(b.delay(1, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        // Just below the ceiling: 10 s, then 40 s at the third retry.
        assert!(b.delay(1, ALMOST_ONE) < secs(10));
        assert!(b.delay(1, ALMOST_ONE) > Duration::from_millis(9_999));
        assert!(b.delay(3, ALMOST_ONE) < secs(40));
        assert!(b.delay(3, ALMOST_ONE) > Duration::from_millis(39_999));
        assert_eq!(b.delay(3, 0.5), secs(20));
    }

    #[test]
    fn half_jitter_spans_half_the_ceiling_to_the_ceiling() {
        let b = shape(Jitter::Half, Duration::ZERO);
        assert_eq!(b.delay(1, 0.0), secs(5));
        assert_eq!(b.delay(3, 0.0), secs(20));
        assert!(b.delay(3, ALMOST_ONE) < secs(40));
        assert!(b.delay(3, ALMOST_ONE) > Duration::from_millis(39_999));
        assert_eq!(b.delay(2, 0.5), secs(15));
    }

    #[test]
    fn the_ceiling_grows_by_the_factor_up_to_the_cap_and_its_step_limit() {
        let mut b = shape(Jitter::Half, Duration::ZERO);
        b.factor = 3.0;
        assert_eq!(b.delay(1, 0.0), secs(5));
        assert_eq!(b.delay(2, 0.0), secs(15));
        assert_eq!(b.delay(3, 0.0), secs(45));
        // 10 s · 3^4 = 810 s, past the cap of 300 s.
        assert_eq!(b.delay(5, 0.0), secs(150));
        assert_eq!(b.delay(40, 0.0), secs(150));
        b.max_steps = 1;
        assert_eq!(b.delay(40, 0.0), secs(15));
        // Retry 0 (nothing failed yet) is the first step.
        assert_eq!(b.delay(0, 0.0), secs(5));
    }

    #[test]
    fn the_floor_wins_over_the_jitter_and_the_cap() {
        let b = shape(Jitter::Full, secs(1));
        assert_eq!(b.delay(1, 0.0), secs(1));
        assert_eq!(b.delay(30, 0.0), secs(1));
        assert_eq!(b.delay(3, 0.5), secs(20));
        // A registry's Retry-After of an hour is honoured past a cap of
        // five minutes.
        let b = shape(Jitter::Full, secs(3600));
        assert_eq!(b.delay(30, ALMOST_ONE), secs(3600));
    }

    #[test]
    fn randomness_outside_0_1_is_taken_as_its_nearest_end() {
        let b = shape(Jitter::Full, Duration::ZERO);
        assert_eq!(b.delay(1, -3.0), Duration::ZERO);
        assert_eq!(b.delay(1, f64::NAN), Duration::ZERO);
        assert_eq!(b.delay(1, 7.0), secs(10));
        assert_eq!(b.delay(1, f64::INFINITY), secs(10));
        let h = shape(Jitter::Half, Duration::ZERO);
        assert_eq!(h.delay(1, f64::NAN), secs(5));
    }

    #[test]
    fn huge_retries_and_durations_do_not_overflow() {
        for jitter in [Jitter::Full, Jitter::Half] {
            let b = Backoff {
                base: Duration::MAX,
                factor: f64::MAX,
                max_steps: u32::MAX,
                cap: Duration::MAX,
                jitter,
                floor: Duration::ZERO,
            };
            for r in [0.0, 0.5, ALMOST_ONE] {
                assert!(b.delay(u32::MAX, r) <= Duration::MAX);
            }
            // A ceiling of 2^64 s is past what a Duration holds: the cap.
            assert_eq!(b.delay(u32::MAX, 1.0), Duration::MAX);
            let b = Backoff {
                base: Duration::ZERO,
                factor: f64::INFINITY,
                ..b
            };
            // 0 × ∞ is no number: the cap.
            assert_eq!(b.delay(u32::MAX, 1.0), Duration::MAX);
            let b = shape(jitter, Duration::ZERO);
            assert!(b.delay(u32::MAX, ALMOST_ONE) <= secs(300));
            assert!(b.delay(u32::MAX, ALMOST_ONE) > Duration::from_millis(299_999));
        }
    }

    /// Today's formulas, as they were written where each backoff was
    /// computed before this one: the oracle for "the same waits".
    mod before {
        use std::time::Duration;

        /// Requests (`lifecycle::retry`).
        pub fn requests(
            base: Duration,
            factor: f64,
            cap: Duration,
            failures: u32,
            retry_after: Option<Duration>,
            jitter: f64,
        ) -> Duration {
            let exp = base.as_secs_f64() * factor.powi(failures.saturating_sub(1).min(64) as i32);
            let ceiling = exp.min(cap.as_secs_f64());
            let d = Duration::from_secs_f64((ceiling * jitter.clamp(0.0, 1.0)).max(0.0));
            d.max(retry_after.unwrap_or_default())
        }

        /// Webhooks (`delivery::webhook`), in seconds as it computed them.
        pub fn webhooks(base: Duration, cap: Duration, attempts: u32, r: f64) -> f64 {
            let exp = base.as_secs_f64() * 2f64.powi(attempts.min(30) as i32 - 1);
            let ceiling = exp.min(cap.as_secs_f64());
            (r * ceiling).max(base.as_secs_f64() / 10.0)
        }

        /// Timestamps and signed documents (`evidence`).
        pub fn evidence(base: Duration, cap: Duration, tries: u32, jitter: f64) -> Duration {
            let exp = base
                .saturating_mul(1u32 << tries.saturating_sub(1).min(20))
                .min(cap);
            exp.mul_f64(0.5 + 0.5 * jitter)
        }
    }

    fn ms() -> impl Strategy<Value = Duration> {
        (1u64..=86_400_000).prop_map(Duration::from_millis)
    }

    fn ns_apart(a: Duration, b: Duration) -> u128 {
        a.as_nanos().abs_diff(b.as_nanos())
    }

    proptest! {
        /// Whatever the shape and the draw, the wait is within [floor,
        /// cap] (the floor below the cap), and half jitter never waits
        /// less than half the ceiling.
        #[test]
        fn a_wait_is_within_its_floor_and_cap(
            base in ms(), extra in 0u64..86_400_000, factor in 1.0f64..10.0,
            max_steps in 0u32..100, n in 0u32..=u32::MAX, r in 0.0f64..1.0,
            floor_share in 0.0f64..=1.0, half in any::<bool>(),
        ) {
            let cap = base + Duration::from_millis(extra);
            let b = Backoff {
                base,
                factor,
                max_steps,
                cap,
                jitter: if half { Jitter::Half } else { Jitter::Full },
                floor: cap.mul_f64(floor_share),
            };
            let d = b.delay(n, r);
            prop_assert!(d >= b.floor && d <= cap, "{d:?} outside [{:?}, {cap:?}]", b.floor);
            if half {
                let ceiling = base.as_secs_f64() * factor.powi(n.saturating_sub(1).min(max_steps) as i32);
                let ceiling = ceiling.min(cap.as_secs_f64());
                // Less a nanosecond: the wait is rounded to one.
                prop_assert!(d.as_secs_f64() + 1e-9 >= ceiling / 2.0);
            }
            // A later retry never waits less, for the same draw.
            prop_assert!(b.delay(n.saturating_add(1), r) >= d);
        }

        /// Each use's shape gives the waits its own formula gave: requests
        /// exactly; webhooks and evidence to the nanosecond (they rounded
        /// through other float steps).
        #[test]
        fn each_use_waits_as_it_did(
            base in ms(), extra in 0u64..86_400_000, factor in 1.0f64..10.0,
            n in 1u32..200, r in 0.0f64..1.0, retry_after in proptest::option::of(0u64..100_000),
        ) {
            let cap = base + Duration::from_millis(extra);
            let retry_after = retry_after.map(Duration::from_secs);
            let requests = Backoff {
                base,
                factor,
                max_steps: 64,
                cap,
                jitter: Jitter::Full,
                floor: retry_after.unwrap_or_default(),
            };
            prop_assert_eq!(
                requests.delay(n, r),
                before::requests(base, factor, cap, n, retry_after, r)
            );
            let webhooks = Backoff {
                base,
                factor: 2.0,
                max_steps: 29,
                cap,
                jitter: Jitter::Full,
                floor: base / 10,
            };
            let then = before::webhooks(base, cap, n, r);
            prop_assert!(ns_apart(webhooks.delay(n, r), Duration::from_secs_f64(then)) <= 1);
            let evidence = Backoff {
                base,
                factor: 2.0,
                max_steps: 20,
                cap,
                jitter: Jitter::Half,
                floor: Duration::ZERO,
            };
            prop_assert!(ns_apart(evidence.delay(n, r), before::evidence(base, cap, n, r)) <= 1);
        }
    }
}
