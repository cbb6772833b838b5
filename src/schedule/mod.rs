//! Time: maintenance windows as cron expressions (used by the dispatcher to
//! hold requests for a registry, and by the simulator to answer
//! `jum:Maintenance`), the daemon's periodic jobs on tokio-cron-scheduler
//! ([`jobs`]: backups, retention, deadline watch, certificate expiry), and
//! the sleep-until-due loop the queue workers share ([`rounds`]).

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
        let cron = cron(&w.cron)?;
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

/// The loop of a queue worker (the dispatcher, the webhook sender): runs
/// `round` until `stop` turns true. Each round starts tasks into the set and
/// says how long to sleep until something is due; `wake` cuts the sleep
/// short. At the end it waits for the tasks, so that their results are
/// recorded.
pub async fn rounds<E: std::fmt::Display>(
    what: &str,
    wake: &tokio::sync::Notify,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut round: impl for<'a> FnMut(
        &'a mut tokio::task::JoinSet<()>,
    )
        -> futures_util::future::BoxFuture<'a, Result<std::time::Duration, E>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = match round(&mut tasks).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "{what} cannot read the store");
                std::time::Duration::from_secs(1)
            }
        };
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// A 6-field cron expression (seconds first, UTC), as the jobs and the
/// maintenance windows are written.
pub fn cron(expr: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(expr)
        .with_seconds_required()
        .parse()
        .map_err(|e| format!("{expr:?} is not a 6-field cron expression (seconds first): {e}"))
}
