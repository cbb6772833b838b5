//! The conditions that are not a request's: looked at every
//! `alerts.check`, each told once when it has held for its threshold and
//! again only after it cleared and came back. What the dispatcher and the
//! configuration know (breakers, pauses, certificates, the keys' tokens)
//! is the operators' layer's [`Snapshot`], taken through a [`Look`] the
//! daemon gives ([`look`]; tests give their own); the audit trail and the
//! disk are read here.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{threshold, Alert, Kind};
use crate::config::AlertsConfig;
use crate::store::QueueStore;
use crate::time::now_ms;

pub use crate::ops::{CertFacts, GateFacts, Snapshot, TokenFacts};

/// How the watch learns the [`Snapshot`].
pub type Look = Arc<dyn Fn() -> BoxFuture<'static, Snapshot> + Send + Sync>;

/// The daemon's [`Look`]: the operators' layer's snapshot, taken anew at
/// each round.
pub fn look(ops: crate::ops::Ops) -> Look {
    Arc::new(move || {
        let ops = ops.clone();
        Box::pin(async move { ops.alert_snapshot().await })
    })
}

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
            if !g.services_not_allowed.is_empty() {
                holding.push((
                    Kind::ServicesNotAllowed,
                    g.registry.clone(),
                    g.services_not_allowed.join(", "),
                    String::new(),
                ));
            }
        }
        for t in snap.tokens.iter().filter(|t| !t.up) {
            holding.push((
                Kind::TokenAway,
                t.key.clone(),
                t.error.clone().unwrap_or_default(),
                String::new(),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use crate::store::prelude::*;

    fn kinds(events: &[(u64, crate::store::OutEvent)]) -> Vec<String> {
        let mut k: Vec<String> = events.iter().map(|(_, e)| e.kind.clone()).collect();
        k.sort();
        k
    }

    #[tokio::test]
    async fn each_condition_is_told_once_after_its_threshold_and_again_only_when_it_returns() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::store::SledStore::open(&dir.path().join("store"), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        // A checkpoint the trail never reached: the audit does not verify.
        let checkpoints = crate::audit::Checkpoints {
            path: dir.path().join("checkpoints.log"),
        };
        std::fs::write(
            &checkpoints.path,
            format!("2026-12-01T00:00:00Z 5 {}\n", "ab".repeat(32)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let snap = Arc::new(Mutex::new(Snapshot {
            gates: vec![GateFacts {
                registry: "cadastre".into(),
                breaker_open: false,
                paused: true,
                services_not_allowed: Vec::new(),
            }],
            certificates: vec![
                CertFacts {
                    label: "gateway/seal".into(),
                    not_after: "Jan  1 00:00:00 2027 GMT".into(),
                    days_left: 12,
                },
                CertFacts {
                    label: "gateway/tls".into(),
                    not_after: "Jan  1 00:00:00 2030 GMT".into(),
                    days_left: 1200,
                },
            ],
            tokens: vec![],
        }));
        let s2 = snap.clone();
        let look: Look = Arc::new(move || {
            let s = crate::sync::lock(&s2).clone();
            Box::pin(async move { s })
        });
        let cfg = AlertsConfig {
            paused: Duration::from_millis(150),
            // Whatever the disk has, it is less than this.
            free_bytes: u64::MAX,
            ..AlertsConfig::default()
        };
        let mut w = Watch::new(
            &cfg,
            store.clone(),
            look,
            dir.path().to_owned(),
            checkpoints,
            true,
        );
        assert_eq!(w.round().await.unwrap_or_else(|e| panic!("{e}")), 3);
        let told = store.outbox(100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kinds(&told),
            [
                "alert.audit-broken",
                "alert.certificate-expiring",
                "alert.disk-low"
            ]
        );
        let cert: super::super::Alert = serde_json::from_value(
            told.iter()
                .find(|(_, e)| e.kind == "alert.certificate-expiring")
                .map(|(_, e)| e.data.clone())
                .unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cert.about, "gateway/seal");
        // Held, not told again; the pause, once past its threshold, is.
        assert_eq!(w.round().await.unwrap_or_else(|e| panic!("{e}")), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(w.round().await.unwrap_or_else(|e| panic!("{e}")), 1);
        // Cleared, then back: its own episode, after its own threshold.
        crate::sync::lock(&snap).gates[0].paused = false;
        assert_eq!(w.round().await.unwrap_or_else(|e| panic!("{e}")), 0);
        crate::sync::lock(&snap).gates[0].paused = true;
        assert_eq!(w.round().await.unwrap_or_else(|e| panic!("{e}")), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(w.round().await.unwrap_or_else(|e| panic!("{e}")), 1);
        let told = store.outbox(100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            told.iter()
                .filter(|(_, e)| e.kind == "alert.paused")
                .count(),
            2
        );
        assert!(told
            .iter()
            .all(|(_, e)| e.client == super::super::OUTBOX_CLIENT));
    }

    /// An X-Road registry whose security server does not allow services
    /// of our catalogue is told at once, naming them, and once while it
    /// holds; allowed again and then not, it is told again.
    #[tokio::test]
    async fn services_an_x_road_security_server_does_not_allow_are_told_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::store::SledStore::open(&dir.path().join("store"), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let gate = |missing: &[&str]| GateFacts {
            registry: "cadastre".into(),
            breaker_open: false,
            paused: false,
            services_not_allowed: missing.iter().map(|s| s.to_string()).collect(),
        };
        let snap = Arc::new(Mutex::new(Snapshot {
            gates: vec![
                gate(&["property-sheet", "parcel"]),
                GateFacts {
                    registry: "civil".into(),
                    ..gate(&[])
                },
            ],
            ..Snapshot::default()
        }));
        let s2 = snap.clone();
        let look: Look = Arc::new(move || {
            let s = crate::sync::lock(&s2).clone();
            Box::pin(async move { s })
        });
        let cfg = AlertsConfig {
            free_bytes: 0,
            ..AlertsConfig::default()
        };
        let mut w = Watch::new(
            &cfg,
            store.clone(),
            look,
            dir.path().to_owned(),
            crate::audit::Checkpoints {
                path: dir.path().join("checkpoints.log"),
            },
            true,
        );
        let told = |store: Arc<crate::store::SledStore>| async move {
            let all = store.outbox(100).await.unwrap_or_else(|e| panic!("{e}"));
            all.into_iter()
                .filter(|(_, e)| e.kind == "alert.services-not-allowed")
                .map(|(_, e)| {
                    serde_json::from_value::<super::super::Alert>(e.data)
                        .unwrap_or_else(|e| panic!("{e}"))
                })
                .collect::<Vec<_>>()
        };
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        let t = told(store.clone()).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(
            (t[0].about.as_str(), t[0].detail.as_str()),
            ("cadastre", "property-sheet, parcel")
        );
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(told(store.clone()).await.len(), 1);
        crate::sync::lock(&snap).gates[0] = gate(&[]);
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        // Apart by a millisecond at least: another episode's id.
        tokio::time::sleep(Duration::from_millis(5)).await;
        crate::sync::lock(&snap).gates[0] = gate(&["parcel"]);
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        let t = told(store.clone()).await;
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t.iter().any(|a| a.detail == "parcel"), "{t:?}");
    }

    /// A token away past `alerts.token_away` is told once, naming the key
    /// and why; a token that is there is not; back and away again, it is
    /// a new episode with its own threshold.
    #[tokio::test]
    async fn a_token_away_is_told_after_its_threshold_and_again_only_when_it_goes_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = crate::store::SledStore::open(&dir.path().join("store"), 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let token = |up: bool| TokenFacts {
            key: "seal".into(),
            up,
            error: (!up)
                .then(|| "pkcs11:token=jumgw;object=seal: no token labelled \"jumgw\"".into()),
        };
        let snap = Arc::new(Mutex::new(Snapshot {
            tokens: vec![
                token(false),
                TokenFacts {
                    key: "tls".into(),
                    up: true,
                    error: None,
                },
            ],
            ..Snapshot::default()
        }));
        let s2 = snap.clone();
        let look: Look = Arc::new(move || {
            let s = crate::sync::lock(&s2).clone();
            Box::pin(async move { s })
        });
        let cfg = AlertsConfig {
            token_away: Duration::from_millis(150),
            free_bytes: 0,
            ..AlertsConfig::default()
        };
        let checkpoints = crate::audit::Checkpoints {
            path: dir.path().join("checkpoints.log"),
        };
        let mut w = Watch::new(
            &cfg,
            store.clone(),
            look,
            dir.path().to_owned(),
            checkpoints,
            true,
        );
        let told = |store: Arc<crate::store::SledStore>| async move {
            let all = store.outbox(100).await.unwrap_or_else(|e| panic!("{e}"));
            all.into_iter()
                .filter(|(_, e)| e.kind == "alert.token-away")
                .map(|(_, e)| {
                    serde_json::from_value::<super::super::Alert>(e.data)
                        .unwrap_or_else(|e| panic!("{e}"))
                })
                .collect::<Vec<_>>()
        };
        // Away, not yet for long: not told.
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(told(store.clone()).await.is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        let t = told(store.clone()).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].about, "seal");
        assert!(t[0].detail.contains("no token labelled"), "{t:?}");
        // Still away: not told again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(told(store.clone()).await.len(), 1);
        // Back, then away again: a new episode, told after its threshold.
        crate::sync::lock(&snap).tokens[0] = token(true);
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        crate::sync::lock(&snap).tokens[0] = token(false);
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(told(store.clone()).await.len(), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        w.round().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(told(store.clone()).await.len(), 2);
    }
}
