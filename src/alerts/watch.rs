//! The conditions that are not a request's: looked at every
//! `alerts.check`, each told once when it has held for its threshold and
//! again only after it cleared and came back. What the dispatcher knows
//! (breakers, pauses, certificates) comes through a [`Look`] the daemon
//! gives; the audit trail and the disk are read here.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{threshold, Alert, Kind};
use crate::config::AlertsConfig;
use crate::lifecycle::now_ms;
use crate::store::QueueStore;

/// A registry's state, as the dispatcher has it.
#[derive(Debug, Clone)]
pub struct GateFacts {
    pub registry: String,
    pub breaker_open: bool,
    pub paused: bool,
}

/// A certificate in use and its end.
#[derive(Debug, Clone)]
pub struct CertFacts {
    /// `gateway/tls`, `cadastre/signer`, …
    pub label: String,
    pub not_after: String,
    pub days_left: i64,
}

/// What the dispatcher and the configuration know now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub gates: Vec<GateFacts>,
    pub certificates: Vec<CertFacts>,
}

/// How the watch learns the [`Snapshot`].
pub type Look = Arc<dyn Fn() -> BoxFuture<'static, Snapshot> + Send + Sync>;

/// The audit trail is walked whole: not more often than this.
const AUDIT_EVERY: Duration = Duration::from_secs(3600);

pub struct Watch {
    store: Arc<dyn QueueStore>,
    cfg: AlertsConfig,
    look: Look,
    data_dir: PathBuf,
    checkpoints: crate::audit::Checkpoints,
    /// When each condition was first seen holding.
    since: HashMap<(Kind, String), u64>,
    told: HashSet<(Kind, String)>,
    /// The audit trail's last verdict (None: it holds) and when.
    audit: Option<(u64, Option<String>)>,
    /// Raise alerts (operators are to be mailed); else the watch only
    /// keeps the free space and the audit verdict in the metrics.
    raise: bool,
}

impl Watch {
    pub fn new(
        cfg: &AlertsConfig,
        store: Arc<dyn QueueStore>,
        look: Look,
        data_dir: PathBuf,
        checkpoints: crate::audit::Checkpoints,
        raise: bool,
    ) -> Watch {
        Watch {
            store,
            cfg: cfg.clone(),
            look,
            data_dir,
            checkpoints,
            since: HashMap::new(),
            told: HashSet::new(),
            audit: None,
            raise,
        }
    }

    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.round().await {
                tracing::error!(error = %e, "alerts: cannot raise an alert");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.check) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Looks once; returns how many alerts it raised.
    pub async fn round(&mut self) -> Result<usize, crate::store::StoreError> {
        if !self.store.lead("alerts").await {
            return Ok(0);
        }
        let now = now_ms();
        let snap = (self.look)().await;
        let mut holding: Vec<(Kind, String, String, String)> = Vec::new();
        for g in &snap.gates {
            if g.breaker_open {
                holding.push((
                    Kind::BreakerOpen,
                    g.registry.clone(),
                    String::new(),
                    String::new(),
                ));
            }
            if g.paused {
                holding.push((
                    Kind::Paused,
                    g.registry.clone(),
                    String::new(),
                    String::new(),
                ));
            }
        }
        let within = self.cfg.certificate.as_secs() as i64 / 86_400;
        for c in &snap.certificates {
            if c.days_left <= within {
                holding.push((
                    Kind::CertificateExpiring,
                    c.label.clone(),
                    format!("{} · {} d", c.not_after, c.days_left),
                    String::new(),
                ));
            }
        }
        if let Ok(s) = nix::sys::statvfs::statvfs(&self.data_dir) {
            let free = s.blocks_available() * s.fragment_size();
            crate::metrics::store_free(free);
            if free < self.cfg.free_bytes {
                holding.push((
                    Kind::DiskLow,
                    self.data_dir.display().to_string(),
                    format!(
                        "{free} bytes free, under the reserve of {}",
                        self.cfg.free_bytes
                    ),
                    String::new(),
                ));
            }
        }
        if self
            .audit
            .as_ref()
            .is_none_or(|(at, _)| now.saturating_sub(*at) >= AUDIT_EVERY.as_millis() as u64)
        {
            let verdict = match self.checkpoints.read() {
                Ok(cps) => match crate::audit::verify(&*self.store, &cps).await {
                    Ok(v) => v.broken.map(|b| format!("entry {}: {}", b.seq, b.reason)),
                    Err(e) => Some(e.to_string()),
                },
                Err(e) => Some(e.to_string()),
            };
            crate::metrics::audit_broken(verdict.is_some());
            if let Some(why) = &verdict {
                tracing::error!(reason = %why, "the audit trail does not verify");
            }
            self.audit = Some((now, verdict));
        }
        if !self.raise {
            return Ok(0);
        }
        if let Some((_, Some(why))) = &self.audit {
            holding.push((
                Kind::AuditBroken,
                "audit".into(),
                why.clone(),
                "/audit".into(),
            ));
        }
        let keys: HashSet<(Kind, String)> =
            holding.iter().map(|(k, a, _, _)| (*k, a.clone())).collect();
        self.since.retain(|k, _| keys.contains(k));
        self.told.retain(|k| keys.contains(k));
        let mut raised = Vec::new();
        for (kind, about, detail, link) in holding {
            let key = (kind, about.clone());
            let since = *self.since.entry(key.clone()).or_insert(now);
            if self.told.contains(&key)
                || now.saturating_sub(since) < threshold(&self.cfg, kind).as_millis() as u64
            {
                continue;
            }
            let a = Alert {
                kind,
                about: about.clone(),
                since_ms: since,
                detail,
                link,
            };
            crate::metrics::alert_raised(kind.name());
            tracing::warn!(kind = kind.name(), about = %about, "alert raised");
            // A certificate's alert is the same one across restarts (the
            // outbox keeps the first of an id); a condition's is its
            // episode's, as this process saw it begin.
            let id = match kind {
                Kind::CertificateExpiring => format!("alert_{}_{about}_{}", kind.name(), a.detail),
                _ => format!("alert_{}_{about}_{since}", kind.name()),
            };
            raised.push(a.event(id));
            self.told.insert(key);
        }
        let n = raised.len();
        if n > 0 {
            self.store.emit(raised).await?;
        }
        Ok(n)
    }
}
