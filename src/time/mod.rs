//! Time, the gateway's own: the clock every part reads ([`now_ms`]), how
//! a time is written for people and tools ([`rfc3339`]), cron expressions
//! and the maintenance windows written in them ([`Window`]), and how long
//! a retry waits ([`Backoff`], in `backoff.rs`), and the ZUP calendar of
//! Serbia's working days by which deadlines are counted ([`calendar`]). A leaf: it knows no other
//! part, so the simulator and the revocation checks read the same clock as
//! the store without depending on it.
//!
//! Three reads of the system clock stay outside it, on purpose: `xml`
//! checks a certificate's validity by it (a leaf, it uses no other part),
//! and the development PKI and the simulator's time-stamping authority
//! date what they issue by the machine's real time, which a test's skewed
//! clock must not move.

use std::time::Duration;

mod backoff;
pub mod calendar;

pub use backoff::{Backoff, Jitter};

/// Milliseconds since the epoch by this machine's clock. Where several
/// instances share a store, times that must agree between them come from
/// the store's `QueueStore::clock_ms` instead.
///
/// `JUMGW_CLOCK_SKEW_MS` (signed) shifts this clock: the tests' way of
/// giving one instance a machine whose clock is wrong.
pub fn now_ms() -> u64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let skew = *SKEW.get_or_init(|| {
        std::env::var("JUMGW_CLOCK_SKEW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    real.saturating_add(skew).max(0) as u64
}

/// A time in ms since the epoch as RFC 3339 in UTC, to the millisecond:
/// what the API writes beside every `*_ms` field, for people and for
/// tools that read dates rather than numbers.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A time in ms since the epoch as RFC 3339 in UTC, to the second: how
/// messages name the times of certificates, revocation answers and
/// timestamps, which are whole seconds.
pub fn rfc3339_secs(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A maintenance window: it opens at each time of a cron expression and
/// lasts its duration.
#[derive(Debug, Clone)]
pub struct Window {
    cron: croner::Cron,
    duration: Duration,
}

impl Window {
    pub fn new(expr: &str, duration: Duration) -> Result<Window, String> {
        Ok(Window {
            cron: cron(expr)?,
            duration,
        })
    }

    /// If `now` falls in a window, when that window ends.
    pub fn active_until(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let span = chrono::Duration::from_std(self.duration).ok()?;
        let start = self.cron.find_next_occurrence(&(now - span), true).ok()?;
        (start <= now).then(|| start + span)
    }
}

/// A 6-field cron expression (seconds first, UTC), as the jobs and the
/// maintenance windows are written.
pub fn cron(expr: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(expr)
        .with_seconds_required()
        .parse()
        .map_err(|e| format!("{expr:?} is not a 6-field cron expression (seconds first): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_windows_follow_their_cron() {
        use chrono::TimeZone;
        let w = Window::new("0 0 2 * * *", Duration::from_secs(1800)).unwrap();
        let at = |h, m| chrono::Utc.with_ymd_and_hms(2026, 11, 25, h, m, 0).unwrap();
        assert_eq!(w.active_until(at(2, 10)), Some(at(2, 30)));
        assert_eq!(w.active_until(at(2, 0)), Some(at(2, 30)));
        assert_eq!(w.active_until(at(2, 31)), None);
        assert_eq!(w.active_until(at(1, 59)), None);
        let e = Window::new("0 2 * * *", Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("is not a 6-field cron expression"), "{e}");
    }

    #[test]
    fn times_are_written_in_utc_to_the_millisecond_or_second() {
        assert_eq!(rfc3339(1_795_643_792_420), "2026-11-25T21:56:32.420Z");
        assert_eq!(rfc3339_secs(1_795_643_792_420), "2026-11-25T21:56:32Z");
    }
}
