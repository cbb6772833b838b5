//! Time-based rules: maintenance windows as cron expressions (used by the
//! dispatcher to hold requests for a registry, and by the simulator to
//! answer `jum:Maintenance`). The periodic jobs of the daemon (lease
//! reaping, retention, certificate expiry, deadline watch) will live here
//! too, on tokio-cron-scheduler, acting on state kept in the store.

pub mod jobs;

use std::time::Duration;

/// A maintenance window of a registry.
#[derive(Debug, Clone)]
pub struct Window {
    cron: croner::Cron,
    duration: Duration,
}

impl Window {
    pub fn new(w: &crate::config::MaintenanceWindow) -> Result<Window, String> {
        let cron = croner::Cron::new(&w.cron)
            .with_seconds_required()
            .parse()
            .map_err(|e| {
                format!(
                    "{:?} is not a 6-field cron expression (seconds first): {e}",
                    w.cron
                )
            })?;
        Ok(Window {
            cron,
            duration: w.duration,
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
