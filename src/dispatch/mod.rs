//! Picks due requests and sends them, within each registry's limits: max
//! in flight, requests per second, circuit breaker, administrator pause,
//! maintenance windows. Leases requests (`sending` until a lease expiry that
//! is also their `due` time, so an expired lease is simply due again, at
//! start-up or later), a round's worth in one store transaction, flushed
//! before any of them is sent; applies outcomes through the pure
//! [`lifecycle`], written by one recorder a batch per transaction; and
//! hands fetched documents to delivery (case folders by one writer, a batch
//! per two syncs). It sleeps until the next due time or a wake-up (new
//! request, finished attempt); it never polls busily. An X-Road answer's
//! message id goes on its attempt, and a document's attachments are sealed
//! and stored in the write of the document (its record keeps only their
//! metadata). What each X-Road registry's security server allows of our
//! catalogue is kept here for the operators ([`metaservices`]).
//!
//! This file holds the [`Dispatcher`] and its wiring (its loop, the
//! recorder's and the folder writer's tasks, pauses, re-read settings);
//! the parts: `gate` (a registry's limits and what operators see of
//! it), `round` (picking and leasing what is due), `attempt` (one
//! exchange and what it comes to), `recorder` (the batching writer of
//! outcomes), `folder` (deliveries, the case folders' batching writer),
//! `recheck` (revocation re-checks).

mod attempt;
mod folder;
mod gate;
pub mod metaservices;
mod recheck;
mod recorder;
mod round;

pub use attempt::{attachment_id, seal_attachments, Fetched, Sealed};
pub use gate::{gate_settings, Gate, GateStatus, LastSeen, Minute, RevocationStatus};
pub use metaservices::{catalogue as x_road_catalogue, missing, MethodsReport, METHODS_EVERY};

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::{GatewayConfig, RetryConfig};
use crate::delivery::CaseFolders;
use crate::exchange::Exchange;
use crate::store::QueueStore;
use crate::sync::lock;

use folder::{folder_writer, FolderJob};
use gate::apply_pauses;
use recorder::{recorder, Recorded};

/// The dispatcher: shared by the API (to wake it) and its own loop.
pub struct Dispatcher {
    store: Arc<dyn QueueStore>,
    cipher: Arc<crate::store::crypt::DocumentCipher>,
    /// Replaced whole when the daemon re-reads the registries' settings
    /// (SIGHUP); an attempt keeps the one it began with.
    exchange: std::sync::RwLock<Arc<Exchange>>,
    cases: CaseFolders,
    pub gates: BTreeMap<String, Arc<Gate>>,
    policy: RetryConfig,
    wake: Arc<Notify>,
    /// Requests with a task working on them in this process.
    busy: Mutex<HashSet<String>>,
    /// The CRLs this process has stored beside documents (`crl-{sha256}`),
    /// so that each is sealed and written once, not once per document.
    kept_crls: Mutex<HashSet<String>>,
    /// How each client takes its documents (absent: the case folder).
    modes: BTreeMap<String, crate::config::DeliveryMode>,
    /// Case-folder deliveries go through one writer that batches them
    /// (two file-system syncs per batch instead of three per document).
    folder_jobs: tokio::sync::mpsc::Sender<FolderJob>,
    folder_rx: Mutex<Option<tokio::sync::mpsc::Receiver<FolderJob>>>,
    /// Outcomes and deliveries go through one recorder that batches them.
    outcomes: tokio::sync::mpsc::Sender<Recorded>,
    outcomes_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Recorded>>>,
    /// How often documents taken `unchecked` are checked again.
    revocation_recheck: Duration,
    /// A TSA is configured: documents are marked for a timestamp.
    stamps: bool,
    /// The X-Road registries and our service codes of each.
    catalogue: BTreeMap<String, Vec<String>>,
    /// What each X-Road registry's security server last said of them.
    methods: Mutex<BTreeMap<String, MethodsReport>>,
}

impl Dispatcher {
    /// How `registry`'s certificates are checked for revocation, and the
    /// newest good answer.
    pub fn revocation(&self, registry: &str) -> RevocationStatus {
        RevocationStatus {
            policy: self
                .exchange()
                .revocation_policy(registry)
                .map(|p| p.name().to_owned())
                .unwrap_or_default(),
            last_good_ms: self.exchange().revocation().last_good_ms(registry),
        }
    }

    /// A registry's limits and windows from a re-read configuration (the
    /// registry must be one the dispatcher was built with).
    pub fn reconfigure_gate(&self, name: &str, r: &crate::config::RegistryConfig) {
        if let Some(g) = self.gates.get(name) {
            let (limits, windows) = gate_settings(name, r, &self.policy);
            g.reconfigure(limits, windows, self.store.clock_ms());
        }
    }

    /// The exchange attempts go through now.
    pub fn exchange(&self) -> Arc<Exchange> {
        crate::sync::read(&self.exchange).clone()
    }

    /// Puts a new exchange (re-read registry settings) in place of the
    /// current one; attempts under way finish on the old.
    pub fn replace_exchange(&self, new: Arc<Exchange>) {
        let old = std::mem::replace(&mut *crate::sync::write(&self.exchange), new.clone());
        new.adopt_rechecks(&old);
    }

    pub fn new(
        cfg: &GatewayConfig,
        store: Arc<dyn QueueStore>,
        cipher: Arc<crate::store::crypt::DocumentCipher>,
        exchange: Arc<Exchange>,
        cases: CaseFolders,
    ) -> Arc<Dispatcher> {
        let now = store.clock_ms();
        let shared = store.shares_limits();
        let gates: BTreeMap<String, Arc<Gate>> = cfg
            .registries
            .iter()
            .map(|(name, r)| {
                let (limits, windows) = gate_settings(name, r, &cfg.retry);
                let gate = Gate::new(limits, windows, r.paused, shared, now);
                (name.clone(), Arc::new(gate))
            })
            .collect();
        let wake = Arc::new(Notify::new());
        if shared {
            let g = gates.clone();
            store.watch(crate::store::Watch {
                work: wake.clone(),
                pauses: Arc::new(move |p| apply_pauses(&g, p)),
            });
        }
        let (folder_jobs, folder_rx) = tokio::sync::mpsc::channel(1024);
        let (outcomes, outcomes_rx) = tokio::sync::mpsc::channel(1024);
        Arc::new(Dispatcher {
            outcomes,
            outcomes_rx: Mutex::new(Some(outcomes_rx)),
            folder_jobs,
            folder_rx: Mutex::new(Some(folder_rx)),
            store,
            cipher,
            exchange: std::sync::RwLock::new(exchange),
            cases,
            gates,
            policy: cfg.retry.clone(),
            revocation_recheck: cfg.gateway.revocation_recheck,
            stamps: cfg.evidence.tsa_url.is_some(),
            wake,
            busy: Mutex::new(HashSet::new()),
            kept_crls: Mutex::new(HashSet::new()),
            catalogue: metaservices::catalogue(cfg),
            methods: Mutex::new(BTreeMap::new()),
            modes: cfg
                .clients
                .iter()
                .map(|(n, c)| (n.clone(), c.delivery))
                .collect(),
        })
    }

    /// Something new is due (a request was accepted, a registry resumed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Pauses (until `until`, if given) or resumes a registry, for every
    /// instance where the store is shared.
    pub async fn pause(
        &self,
        registry: &str,
        on: bool,
        until: Option<u64>,
    ) -> Result<(), crate::store::StoreError> {
        if let Some(g) = self.gates.get(registry) {
            self.store
                .set_pause(&crate::store::Pause {
                    registry: registry.to_owned(),
                    paused: on,
                    until: if on { until } else { None },
                })
                .await?;
            g.pause(on, until);
        }
        if !on {
            self.wake();
        }
        Ok(())
    }

    /// Runs until `stop` turns true; then waits for attempts in flight.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        // Pauses set by administrators, for every instance: they hold
        // before the first round.
        if self.store.shares_limits() {
            match self.store.pauses().await {
                Ok(p) => apply_pauses(&self.gates, p),
                Err(e) => tracing::warn!(error = %e, "cannot read the registries' pauses"),
            }
        }
        let writer = lock(&self.folder_rx)
            .take()
            .map(|rx| tokio::spawn(folder_writer(self.cases.clone(), rx)));
        let recorder = lock(&self.outcomes_rx)
            .take()
            .map(|rx| tokio::spawn(recorder(self.store.clone(), rx)));
        let me = self.clone();
        let mut quit = stop.clone();
        let rechecker = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(me.revocation_recheck) => {}
                    _ = quit.changed() => break,
                }
                me.recheck_revocations().await;
            }
        });
        let me = self.clone();
        crate::sync::rounds("dispatcher", &self.wake, stop, |tasks| {
            Box::pin(me.clone().round(tasks))
        })
        .await;
        rechecker.abort();
        // Every delivery task has finished: nothing waits on the writer.
        for w in [writer, recorder].into_iter().flatten() {
            w.abort();
        }
    }
}
