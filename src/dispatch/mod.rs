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

pub mod metaservices;

pub use metaservices::{catalogue as x_road_catalogue, missing, MethodsReport, METHODS_EVERY};

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::{GatewayConfig, RetryConfig};
use crate::delivery::CaseFolders;
use crate::exchange::{Call, Exchange, Outcome};
use crate::lifecycle::{self, AttemptFacts, Event};
use crate::lifecycle::{AttachmentRecord, RevocationRecord};
use crate::limits::{GateLimits, Limiter, Wait};
use crate::store::{QueueStore, RequestRecord, State, StoreError};
use crate::time::Window;

/// One registry's limits and health.
pub struct Gate {
    pub name: String,
    in_flight: Arc<Semaphore>,
    /// Rate and breaker (in flight is the semaphore, whose permits are
    /// held by the attempts).
    limiter: Mutex<Limiter>,
    paused: AtomicBool,
    /// When a pause ends by itself (ms since the epoch); 0: when resumed.
    paused_until: std::sync::atomic::AtomicU64,
    /// Replaced whole when the configuration is re-read.
    windows: std::sync::RwLock<Vec<Window>>,
    /// The limits as configured, for a store that holds them for every
    /// instance (then the breaker here only mirrors it); replaced whole
    /// when the configuration is re-read.
    limits: std::sync::RwLock<Arc<GateLimits>>,
    shared: bool,
    last: Mutex<LastSeen>,
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
enum Blocked {
    /// Until this time (ms since the epoch).
    Until(u64),
    /// Until something changes (a permit is released, a probe returns).
    Event,
}

use crate::sync::lock;

/// A registry's state as operators see it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"registry": "cadastre", "breaker": "closed", "paused": true, "paused_until": null, "in_maintenance": false, "in_flight": 0}))]
pub struct GateStatus {
    pub registry: String,
    pub breaker: crate::limits::BreakerShown,
    pub paused: bool,
    /// When the pause ends by itself (ms since the epoch).
    pub paused_until: Option<u64>,
    pub in_maintenance: bool,
    pub in_flight: usize,
}

impl Gate {
    fn admit(&self, now: u64) -> Result<OwnedSemaphorePermit, Blocked> {
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
    fn closed(&self, now: u64) -> Option<Blocked> {
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

    fn record_minute(&self, now: u64, failed: bool, duration_ms: u64) {
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
    fn in_flight(&self) -> usize {
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

/// A document for its case folder, and who waits for the outcome.
struct FolderJob {
    rec: RequestRecord,
    doc: Fetched,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

/// A fetched document in clear, with its attachments (in the order of the
/// record's `attachments`).
pub struct Fetched {
    pub document: Vec<u8>,
    pub attachments: Vec<Vec<u8>>,
}

/// A document to store: its id and its bytes, sealed under that id.
pub type Sealed = (String, Vec<u8>);

/// An X-Road document's attachments as the store keeps them: each sealed
/// under its document id (`{request}.attachment-{n}`, n from 1), to be
/// written in the same transaction as the document, and what the record
/// says of each (metadata only: a record stays small whatever came).
pub fn seal_attachments(
    cipher: &crate::store::crypt::DocumentCipher,
    request: &str,
    attachments: &[crate::protocol::xroad::Attachment],
) -> Result<(Vec<Sealed>, Vec<AttachmentRecord>), crate::store::crypt::CryptError> {
    let mut sealed = Vec::with_capacity(attachments.len());
    let mut records = Vec::with_capacity(attachments.len());
    for (i, a) in attachments.iter().enumerate() {
        let id = attachment_id(request, i + 1);
        sealed.push((id.clone(), cipher.seal(&id, &a.bytes)?));
        records.push(AttachmentRecord {
            document_id: id,
            content_id: a.content_id.clone(),
            content_type: a.content_type.clone(),
            name: a.name.clone(),
            size: a.bytes.len() as u64,
            sha256: hex(&openssl::sha::sha256(&a.bytes)),
        });
    }
    Ok((sealed, records))
}

/// Where a request's `n`-th attachment (from 1) is stored.
pub fn attachment_id(request: &str, n: usize) -> String {
    format!("{request}.attachment-{n}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes what is waiting as one batch, then the next.
async fn folder_writer(cases: CaseFolders, mut rx: tokio::sync::mpsc::Receiver<FolderJob>) {
    let mut held = None;
    while let Some(batch) = crate::sync::gather(&mut rx, &mut held, 128, |_| None::<()>).await {
        let cases = cases.clone();
        let (jobs, done): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|j| ((j.rec, j.doc), j.done)).unzip();
        let results = tokio::task::spawn_blocking(move || {
            let atts: Vec<Vec<&[u8]>> = jobs
                .iter()
                .map(|(_, d)| d.attachments.iter().map(Vec::as_slice).collect())
                .collect();
            let refs: Vec<crate::delivery::Delivery<'_>> = jobs
                .iter()
                .zip(&atts)
                .map(|((r, d), a)| crate::delivery::Delivery {
                    record: r,
                    document: &d.document,
                    attachments: a,
                })
                .collect();
            cases.deliver_batch(&refs)
        })
        .await;
        match results {
            Ok(results) => {
                for (tx, r) in done.into_iter().zip(results) {
                    let _ = tx.send(r.map(drop));
                }
            }
            Err(e) => {
                for tx in done {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    }
}

/// What an attempt or a delivery came to, for the recorder: the change
/// to its request, and the document to store with it.
struct Recorded {
    id: String,
    change: Box<dyn Fn(&mut RequestRecord) -> bool + Send + Sync>,
    document: Option<Vec<u8>>,
    /// Other documents stored in the same write (each id, sealed): the
    /// CRL that confirmed the document's signer, the document's
    /// attachments.
    extra: Vec<(String, Vec<u8>)>,
    done: tokio::sync::oneshot::Sender<Result<Option<RequestRecord>, StoreError>>,
}

/// Records what is waiting in one store transaction (`update_many`), then
/// the next: while one batch is written, the next gathers, so many
/// attempts share the cost of one write, as accepts share one flush.
async fn recorder(store: Arc<dyn QueueStore>, mut rx: tokio::sync::mpsc::Receiver<Recorded>) {
    let mut held: Option<Recorded> = None;
    // One change per request in a batch: a second waits for the next.
    while let Some(batch) =
        crate::sync::gather(&mut rx, &mut held, 256, |o: &Recorded| Some(o.id.clone())).await
    {
        let result = {
            let at: std::collections::HashMap<&str, usize> = batch
                .iter()
                .enumerate()
                .map(|(i, o)| (o.id.as_str(), i))
                .collect();
            let ids: Vec<&str> = batch.iter().map(|o| o.id.as_str()).collect();
            let docs: Vec<(&str, &[u8])> = batch
                .iter()
                .filter_map(|o| o.document.as_deref().map(|d| (o.id.as_str(), d)))
                .chain(
                    batch
                        .iter()
                        .flat_map(|o| o.extra.iter().map(|(id, d)| (id.as_str(), d.as_slice()))),
                )
                .collect();
            let f = |r: &mut RequestRecord| {
                at.get(r.id.as_str()).is_some_and(|&i| (batch[i].change)(r))
            };
            store.update_many(&ids, &docs, &f).await
        };
        match result {
            Ok(records) => {
                for (o, r) in batch.into_iter().zip(records) {
                    let _ = o.done.send(Ok(r));
                }
            }
            Err(e) => {
                for o in batch {
                    let _ = o.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// How long a round waits for more work to arrive before it reads what is
/// due.
const ROUND_GATHER: Duration = Duration::from_millis(2);

/// What a request leased in a round goes on to.
enum Planned {
    Deliver,
    Exchange {
        polling: bool,
        gate: Arc<Gate>,
        permit: OwnedSemaphorePermit,
    },
}

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

/// Administrators' pauses, as the store holds them for every instance.
fn apply_pauses(gates: &BTreeMap<String, Arc<Gate>>, pauses: Vec<crate::store::Pause>) {
    for p in pauses {
        if let Some(g) = gates.get(&p.registry) {
            g.pause(p.paused, p.until);
        }
    }
}

impl Dispatcher {
    /// The CRL that confirmed a document's signer, sealed under its id
    /// (`crl-{sha256}`), to store beside the document; `None` when no CRL
    /// did, or when this process already stored that CRL (the same id is
    /// the same bytes: one copy per CRL).
    fn sealed_crl(
        &self,
        revocation: Option<&RevocationRecord>,
        der: Option<&[u8]>,
    ) -> Result<Option<(String, Vec<u8>)>, crate::store::crypt::CryptError> {
        let (Some(hex), Some(der)) = (revocation.and_then(|r| r.crl_sha256.as_deref()), der) else {
            return Ok(None);
        };
        let id = crate::exchange::crl_document_id(hex);
        if lock(&self.kept_crls).contains(&id) {
            return Ok(None);
        }
        let sealed = self.cipher.seal(&id, der)?;
        Ok(Some((id, sealed)))
    }

    /// Remembers that the CRL `id` is stored (its write went through).
    fn crl_stored(&self, id: Option<String>) {
        if let Some(id) = id {
            let mut kept = lock(&self.kept_crls);
            if kept.len() > 1024 {
                kept.clear();
            }
            kept.insert(id);
        }
    }

    /// Records what the re-check of `unchecked` documents established. A
    /// signer found revoked after its document was taken (and perhaps
    /// delivered) is logged as an error for an operator: the document
    /// stays, its evidence says so.
    async fn recheck_revocations(&self) {
        for (id, evidence, crl) in self.exchange().recheck().await {
            if evidence.status == crate::lifecycle::RevocationStatus::Revoked {
                tracing::error!(request = %id, reason = evidence.reason.as_deref().unwrap_or(""), "a document's signer turned out revoked after it was taken");
                crate::metrics::revocation_check("recheck", "revoked");
            }
            let crl = match self.sealed_crl(Some(&evidence), crl.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(request = %id, error = %e, "cannot seal the CRL of a revocation re-check");
                    continue;
                }
            };
            let now = self.store.clock_ms();
            let change = move |r: &mut RequestRecord| {
                lifecycle::apply(
                    r,
                    &Event::Rechecked {
                        revocation: &evidence,
                    },
                    now,
                )
            };
            let crl_id = crl.as_ref().map(|(c, _)| c.clone());
            match self
                .record_with(&id, None, crl.into_iter().collect(), change)
                .await
            {
                Ok(_) => self.crl_stored(crl_id),
                Err(e) => {
                    tracing::warn!(request = %id, error = %e, "cannot record a revocation re-check")
                }
            }
        }
    }

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
                let gate = Gate {
                    limiter: Mutex::new(Limiter::new(&limits, now)),
                    limits: std::sync::RwLock::new(Arc::new(limits)),
                    shared,
                    name: name.clone(),
                    in_flight: Arc::new(Semaphore::new(r.max_in_flight)),
                    paused: AtomicBool::new(r.paused),
                    paused_until: Default::default(),
                    last: Default::default(),
                    history: Default::default(),
                    windows: std::sync::RwLock::new(windows),
                };
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
        crate::time::rounds("dispatcher", &self.wake, stop, |tasks| {
            Box::pin(me.clone().round(tasks))
        })
        .await;
        rechecker.abort();
        // Every delivery task has finished: nothing waits on the writer.
        for w in [writer, recorder].into_iter().flatten() {
            w.abort();
        }
    }

    /// One pass over what is due; returns how long to sleep. Reads what is
    /// due and its records, admits each through its registry's limits, and
    /// leases all that may go in one transaction; then flushes once and
    /// starts them.
    async fn round(
        self: Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Result<Duration, StoreError> {
        // Every accept and every finished attempt wakes the dispatcher;
        // under load, rounds back to back would each walk the due index
        // for one new request. A round first lets the others of the burst
        // arrive: they are leased together, for a few ms of latency.
        tokio::time::sleep(ROUND_GATHER).await;
        let now = self.store.clock_ms();
        let mut earliest: Option<u64> = None;
        let mut event_blocked = false;
        let note = |b: Blocked, earliest: &mut Option<u64>, event: &mut bool| match b {
            Blocked::Until(t) => *earliest = Some(earliest.map_or(t, |e| e.min(t))),
            Blocked::Event => *event = true,
        };
        let mut due = self.store.due(now, 512).await?;
        {
            // Registries closed now, or without room for more: their
            // (other) requests are passed over before their records are read.
            let mut blocked: BTreeMap<String, Blocked> = BTreeMap::new();
            let busy = lock(&self.busy);
            // Each registry's requests, at most as many as it has permits.
            let mut room: BTreeMap<&str, usize> = BTreeMap::new();
            due.retain(|d| {
                if busy.contains(&d.id) {
                    return false;
                }
                let crate::store::Work::Exchange(reg) = &d.work else {
                    return true;
                };
                if let Some(b) = blocked.get(reg.as_str()) {
                    note(*b, &mut earliest, &mut event_blocked);
                    return false;
                }
                let Some(gate) = self.gates.get(reg.as_str()) else {
                    return true;
                };
                let left = room
                    .entry(&gate.name)
                    .or_insert_with(|| gate.in_flight.available_permits());
                let closed = gate.closed(now).or((*left == 0).then_some(Blocked::Event));
                if let Some(b) = closed {
                    note(b, &mut earliest, &mut event_blocked);
                    blocked.insert(reg.to_string(), b);
                    return false;
                }
                *left -= 1;
                true
            });
        }
        if due.is_empty() {
            return self.sleep_until_due(earliest, event_blocked).await;
        }
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        let records = self.store.get_many(&ids).await?;
        let lease_until = now + self.policy.lease.as_millis() as u64;
        // Registries found blocked by their limits in this pass.
        let mut blocked: BTreeMap<String, Blocked> = BTreeMap::new();
        // What each request is leased for, and what it then needs.
        let mut asks: Vec<(&str, Option<Arc<GateLimits>>)> = Vec::new();
        let mut events: std::collections::HashMap<&str, Event<'static>> = Default::default();
        let mut plans: Vec<Planned> = Vec::new();
        let mut unroutable: Vec<&str> = Vec::new();
        let mut unindex: Vec<&str> = Vec::new();
        for (d, rec) in due.iter().zip(records) {
            let Some(rec) = rec else { continue };
            match rec.state {
                State::Fetched => {
                    // Lease the delivery too, so that it is not started twice.
                    events.insert(
                        &d.id,
                        Event::LeaseDelivery {
                            due: d.at_ms,
                            until: lease_until,
                        },
                    );
                    asks.push((&d.id, None));
                    plans.push(Planned::Deliver);
                }
                State::Queued | State::Retrying | State::Awaiting | State::Sending => {
                    if let Some(b) = blocked.get(rec.registry.as_str()) {
                        note(*b, &mut earliest, &mut event_blocked);
                        continue;
                    }
                    let Some(gate) = self.gates.get(rec.registry.as_str()) else {
                        unroutable.push(&d.id);
                        continue;
                    };
                    let permit = match gate.admit(now) {
                        Ok(p) => p,
                        Err(b) => {
                            note(b, &mut earliest, &mut event_blocked);
                            blocked.insert(rec.registry.to_string(), b);
                            continue;
                        }
                    };
                    events.insert(
                        &d.id,
                        Event::Lease {
                            due: d.at_ms,
                            until: lease_until,
                        },
                    );
                    asks.push((&d.id, gate.shared.then(|| gate.limits())));
                    plans.push(Planned::Exchange {
                        polling: rec.state == State::Awaiting,
                        gate: gate.clone(),
                        permit,
                    });
                }
                // A terminal request left in the index: clear it.
                _ => unindex.push(&d.id),
            }
        }
        let leased = if asks.is_empty() {
            Vec::new()
        } else {
            let f = |r: &mut RequestRecord| {
                events
                    .get(r.id.as_str())
                    .is_some_and(|e| lifecycle::apply(r, e, now))
            };
            let asks: Vec<(&str, Option<&GateLimits>)> =
                asks.iter().map(|(id, g)| (*id, g.as_deref())).collect();
            self.store.lease_many(&asks, &f).await?
        };
        let mut starts = Vec::new();
        for (plan, lease) in plans.into_iter().zip(leased) {
            match (plan, lease) {
                (Planned::Deliver, crate::store::Lease::Taken(r)) => {
                    lock(&self.busy).insert(r.id.to_string());
                    let me = self.clone();
                    tasks.spawn(async move { me.deliver(*r, None).await });
                }
                (
                    Planned::Exchange {
                        polling,
                        gate,
                        permit,
                    },
                    crate::store::Lease::Taken(r),
                ) => {
                    lock(&self.busy).insert(r.id.to_string());
                    starts.push((*r, polling, gate, permit));
                }
                (Planned::Exchange { gate, .. }, crate::store::Lease::Blocked(until)) => {
                    let b = until.map_or(Blocked::Event, Blocked::Until);
                    note(b, &mut earliest, &mut event_blocked);
                    blocked.insert(gate.name.clone(), b);
                }
                // Someone else has it, or it changed since it was read.
                _ => {}
            }
        }
        // Write-ahead: the leases (and with them the `exchange.sent` audit
        // entries) are on disk before any of their requests leaves, so a
        // crash cannot hide an access to a person's data. One flush for
        // the round's leases.
        if !starts.is_empty() {
            if let Err(e) = self.store.flush().await {
                let mut busy = lock(&self.busy);
                for (r, ..) in &starts {
                    busy.remove(r.id.as_str());
                }
                // Their leases expire and they are leased again.
                return Err(e);
            }
            for (r, polling, gate, permit) in starts {
                let me = self.clone();
                tasks.spawn(async move { me.attempt(r, polling, gate, permit).await });
            }
        }
        for (ids, ev) in [(unroutable, Event::Unroutable), (unindex, Event::Unindex)] {
            if !ids.is_empty() {
                self.store
                    .update_many(&ids, &[], &|r| lifecycle::apply(r, &ev, now))
                    .await?;
            }
        }
        self.sleep_until_due(earliest, event_blocked).await
    }

    /// How long to sleep: until the next due time, a registry's limits
    /// open again, or (when only a finished attempt can unblock) a second.
    async fn sleep_until_due(
        &self,
        earliest: Option<u64>,
        event_blocked: bool,
    ) -> Result<Duration, StoreError> {
        let now = self.store.clock_ms();
        let next = self.store.next_due().await?.filter(|d| *d > now);
        let mut wake_at = [next, earliest].into_iter().flatten().min();
        if event_blocked {
            // Woken by the finished attempt; the timer is a safety net.
            wake_at = Some(wake_at.map_or(now + 1000, |w| w.min(now + 1000)));
        }
        Ok(Duration::from_millis(
            wake_at.map_or(5_000, |w| w.saturating_sub(now).clamp(1, 5_000)),
        ))
    }

    /// Records a change through the recorder (batched with others).
    async fn record(
        &self,
        id: &str,
        document: Option<Vec<u8>>,
        change: impl Fn(&mut RequestRecord) -> bool + Send + Sync + 'static,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.record_with(id, document, Vec::new(), change).await
    }

    /// [`Dispatcher::record`], keeping other documents (each id, sealed:
    /// a CRL, attachments) in the same write.
    async fn record_with(
        &self,
        id: &str,
        document: Option<Vec<u8>>,
        extra: Vec<(String, Vec<u8>)>,
        change: impl Fn(&mut RequestRecord) -> bool + Send + Sync + 'static,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.outcomes
            .send(Recorded {
                id: id.to_owned(),
                change: Box::new(change),
                document,
                extra,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn attempt(
        self: Arc<Self>,
        rec: RequestRecord,
        polling: bool,
        gate: Arc<Gate>,
        permit: OwnedSemaphorePermit,
    ) {
        let id = rec.id.to_string();
        let result = match rec.subject() {
            Ok(subject) => {
                let call = Call {
                    id: &rec.id,
                    service: &rec.service,
                    subject,
                    case: &rec.case,
                    official: &rec.official,
                    legal_basis: &rec.legal_basis,
                    purpose: &rec.purpose,
                    ticket: if polling { rec.ticket.as_deref() } else { None },
                };
                self.exchange()
                    .attempt(&call)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        drop(permit);
        let now = self.store.clock_ms();
        let mut message_id = None;
        let mut attachments = Vec::new();
        let mut charset = None;
        let (outcome, status, duration_ms, signer, document, revocation, crl) = match result {
            Ok(a) => {
                let doc = (a.outcome == Outcome::Document)
                    .then_some(a.response)
                    .flatten();
                let crl = doc.as_ref().and(a.crl);
                // Every attempt's message id is recorded (the security
                // server's log knows each message by it); attachments
                // only come with a document.
                message_id = a.message_id;
                if doc.is_some() {
                    attachments = a.attachments;
                    charset = a.charset;
                }
                (
                    a.outcome,
                    a.status,
                    a.duration.as_millis() as u64,
                    (a.signer, a.signer_sha256, a.signer_anchor_sha256),
                    doc,
                    a.revocation,
                    crl,
                )
            }
            // The request cannot even be built (a service removed from the
            // configuration, say): nothing will change by retrying.
            Err(e) => (
                Outcome::Permanent { reason: e },
                None,
                0,
                (None, None, None),
                None,
                None,
                None,
            ),
        };
        crate::metrics::attempt(
            &rec.registry,
            &rec.service,
            outcome.kind().name(),
            Duration::from_millis(duration_ms),
        );
        let failed = outcome.is_registry_failure();
        if gate.shared {
            match self.store.gate_record(&gate.limits(), failed, now).await {
                Ok(Some(b)) => lock(&gate.limiter).mirror(b),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(registry = %rec.registry, error = %e, "cannot record the attempt in the shared breaker")
                }
            }
        } else {
            lock(&gate.limiter).record(failed, now);
        }
        gate.record_minute(
            now,
            failed || matches!(outcome, Outcome::Security { .. }),
            duration_ms,
        );
        {
            let mut last = lock(&gate.last);
            match &outcome {
                Outcome::Document | Outcome::Accepted { .. } => last.success_ms = Some(now),
                o if failed || matches!(o, Outcome::Security { .. }) => {
                    last.error_ms = Some(now);
                    last.error = Some(crate::ids::redact_text(&o.to_string()));
                }
                _ => {}
            }
        }
        tracing::info!(request = %id, registry = %rec.registry, service = %rec.service, subject = %rec.subject_redacted(), outcome = %crate::ids::redact_text(&outcome.to_string()), "attempt");
        let sealed = match &document {
            Some(doc) => match self.cipher.seal(&id, doc) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(request = %id, error = %e, "cannot seal the document; the attempt will be repeated");
                    lock(&self.busy).remove(&id);
                    self.wake();
                    return;
                }
            },
            None => None,
        };
        let crl = match self.sealed_crl(revocation.as_ref(), crl.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(request = %id, error = %e, "cannot seal the CRL; the attempt will be repeated");
                lock(&self.busy).remove(&id);
                self.wake();
                return;
            }
        };
        let (sealed_attachments, attachment_records) = match seal_attachments(
            &self.cipher,
            &id,
            &attachments,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(request = %id, error = %e, "cannot seal an attachment; the attempt will be repeated");
                lock(&self.busy).remove(&id);
                self.wake();
                return;
            }
        };
        let jitter: f64 = rand::rng().random();
        // A fetched document is delivered at once by this task: its
        // delivery lease is taken in the same write as the attempt.
        let lease_until = now + self.policy.lease.as_millis() as u64;
        let policy = self.policy.clone();
        let stamp = self.stamps;
        let (signer, signer_sha256, signer_anchor_sha256) = signer;
        let change = move |r: &mut RequestRecord| {
            let facts = AttemptFacts {
                outcome: &outcome,
                at_ms: now,
                duration_ms,
                http_status: status,
                signer: signer.as_deref(),
                signer_sha256: signer_sha256.as_deref(),
                signer_anchor_sha256: signer_anchor_sha256.as_deref(),
                revocation: revocation.as_ref(),
                stamp,
                message_id: message_id.as_deref(),
                attachments: &attachment_records,
                charset: charset.as_deref(),
            };
            let answered = Event::Answered {
                facts: &facts,
                retry: &policy,
                jitter,
                deliver_by: lease_until,
            };
            lifecycle::apply(r, &answered, now)
        };
        // The document (with the CRL that vouched for its signer and its
        // attachments) is stored in the same transaction as the outcome.
        let crl_id = crl.as_ref().map(|(c, _)| c.clone());
        let extra = crl.into_iter().chain(sealed_attachments).collect();
        match self.record_with(&id, sealed, extra, change).await {
            Ok(Some(r)) if r.state == State::Fetched => {
                self.crl_stored(crl_id);
                let fresh = document.map(|document| Fetched {
                    document,
                    attachments: attachments.into_iter().map(|a| a.bytes).collect(),
                });
                self.clone().deliver(r, fresh).await;
            }
            Ok(_) => {
                self.crl_stored(crl_id);
                lock(&self.busy).remove(&id);
            }
            Err(e) => {
                lock(&self.busy).remove(&id);
                tracing::error!(request = %id, error = %e, "cannot record the attempt; it will be repeated")
            }
        }
        self.wake();
    }

    /// Records a failed delivery: its error, and when to try again, or
    /// that it is given up (a delivery that fails the same way every time
    /// must not spin unseen).
    async fn delivery_failed(&self, id: &str, e: &StoreError) {
        let now = self.store.clock_ms();
        let error = crate::ids::redact_text(&e.to_string());
        let policy = self.policy.clone();
        let jitter: f64 = rand::rng().random();
        let why = error.clone();
        let recorded = self
            .record(id, None, move |r| {
                let ev = Event::DeliveryFailed {
                    error: &why,
                    retry: &policy,
                    jitter,
                };
                lifecycle::apply(r, &ev, now)
            })
            .await;
        match recorded {
            Ok(Some(r)) if r.state == State::Dead => {
                crate::metrics::delivery_failed(true);
                tracing::error!(request = %id, error = %error, failures = r.delivery_failures, "delivery failed again; given up, the request is dead until an operator retries it");
            }
            Ok(Some(r)) => {
                crate::metrics::delivery_failed(false);
                tracing::warn!(request = %id, error = %error, failures = r.delivery_failures, "delivery failed; will retry");
            }
            // Its lease expires and it is tried again.
            Ok(None) => {
                tracing::warn!(request = %id, error = %error, "delivery failed; will retry")
            }
            Err(re) => {
                tracing::warn!(request = %id, error = %error, record = %re, "delivery failed and could not be recorded; will retry")
            }
        }
    }

    /// A stored document (or attachment) in clear.
    async fn stored(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        let sealed = self
            .store
            .document(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("document {id}")))?;
        self.cipher
            .open(id, &sealed)
            .map_err(|e| StoreError::Io(e.to_string()))
    }

    async fn mark_delivered(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let now = self.store.clock_ms();
        self.record(id, None, move |r| {
            lifecycle::apply(r, &Event::Delivered, now)
        })
        .await
    }

    /// Delivers a fetched document: `fresh` is the document as the attempt
    /// that fetched it just verified (then the record is as that attempt
    /// left it); without it, the record and the document are read again
    /// (a delivery leased from the due index, after a restart or a failed
    /// delivery).
    async fn deliver(self: Arc<Self>, rec: RequestRecord, fresh: Option<Fetched>) {
        let id = rec.id.to_string();
        let mode = self
            .modes
            .get(rec.client.as_str())
            .copied()
            .unwrap_or_default();
        let result = async {
            if fresh.is_none()
                && self
                    .store
                    .get(&id)
                    .await?
                    .is_none_or(|r| r.state != State::Fetched)
            {
                // Cancelled since it was leased: its document stays undelivered.
                return Ok(None);
            }
            if mode != crate::config::DeliveryMode::Folder {
                // The document is in the store for the API; a webhook
                // client hears of it from the event this change raises.
                return self.mark_delivered(&id).await;
            }
            let doc = match fresh {
                Some(doc) => doc,
                None => Fetched {
                    document: self.stored(&id).await?,
                    // A redelivery (after a crash, a failed delivery)
                    // takes them from the store, as the record lists them.
                    attachments: {
                        let mut all = Vec::with_capacity(rec.attachments.len());
                        for a in &rec.attachments {
                            all.push(self.stored(&a.document_id).await?);
                        }
                        all
                    },
                },
            };
            let (done, outcome) = tokio::sync::oneshot::channel();
            let io = |e: &dyn std::fmt::Display| StoreError::Io(e.to_string());
            self.folder_jobs
                .send(FolderJob {
                    rec: rec.clone(),
                    doc,
                    done,
                })
                .await
                .map_err(|e| io(&e))?;
            outcome.await.map_err(|e| io(&e))?.map_err(|e| io(&e))?;
            self.mark_delivered(&id).await
        }
        .await;
        lock(&self.busy).remove(&id);
        match result {
            Ok(Some(_)) => {
                crate::metrics::delivered(match mode {
                    crate::config::DeliveryMode::Folder => "folder",
                    crate::config::DeliveryMode::Webhook => "webhook",
                    crate::config::DeliveryMode::Pull => "pull",
                });
                tracing::info!(request = %id, case = %rec.case, "delivered")
            }
            Ok(None) => tracing::info!(request = %id, "not delivered: cancelled meanwhile"),
            Err(e) => self.delivery_failed(&id, &e).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        Gate {
            name: l.registry.clone(),
            in_flight: Arc::new(Semaphore::new(l.max_in_flight)),
            limiter: Mutex::new(Limiter::new(&l, 0)),
            paused: AtomicBool::new(false),
            paused_until: Default::default(),
            windows: std::sync::RwLock::new(Vec::new()),
            limits: std::sync::RwLock::new(Arc::new(l)),
            shared: false,
            last: Default::default(),
            history: Default::default(),
        }
    }

    /// An X-Road answer's attachments, from a hand-made attempt: each
    /// sealed under its own id (bound to it: it does not open under
    /// another), its record metadata only, and stored in the write of the
    /// document's change or not at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attachments_are_sealed_under_their_ids_and_stored_with_their_document_or_not_at_all() {
        use crate::protocol::xroad::Attachment;
        use crate::store::prelude::*;
        let cipher = crate::store::crypt::DocumentCipher::from_hex(&"7".repeat(64)).unwrap();
        let came = vec![
            Attachment {
                content_id: "plan@registry".into(),
                content_type: "application/pdf".into(),
                name: Some("../../etc/passwd".into()),
                bytes: b"%PDF-1.7".to_vec(),
            },
            Attachment {
                content_id: "x".into(),
                content_type: "text/html".into(),
                name: None,
                bytes: vec![0u8; 70_000],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path(), 1 << 20).unwrap();
        let r = RequestRecord::queued(
            "c",
            "1/2026".into(),
            "ZUP".into(),
            "o".into(),
            "p".into(),
            "cadastre.property-sheet".into(),
            "cadastre".into(),
            Vec::new(),
            Duration::from_secs(60),
        );
        let id = r.id.clone();
        let (sealed, records) = seal_attachments(&cipher, &id, &came).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|a| a.document_id.as_str())
                .collect::<Vec<_>>(),
            [format!("{id}.attachment-1"), format!("{id}.attachment-2")]
        );
        assert_eq!(records[0].name.as_deref(), Some("../../etc/passwd"));
        assert_eq!(records[1].size, 70_000);
        assert_eq!(records[0].sha256, hex(&openssl::sha::sha256(b"%PDF-1.7")));
        // The record holds metadata only, however large the attachment.
        assert!(serde_json::to_vec(&records).unwrap().len() < 600);
        assert!(cipher.open(&sealed[1].0, &sealed[0].1).is_err());
        store.enqueue(vec![r]).await.unwrap();
        let docs: Vec<(&str, &[u8])> = std::iter::once((id.as_str(), &b"<doc/>"[..]))
            .chain(sealed.iter().map(|(i, b)| (i.as_str(), b.as_slice())))
            .collect();
        // Declined (as a late answer is): neither the document nor an
        // attachment is stored.
        let got = store
            .update_many(&[id.as_str()], &docs, &|_r: &mut RequestRecord| false)
            .await
            .unwrap();
        assert!(got[0].is_none());
        assert!(store.document(&id).await.unwrap().is_none());
        for (i, _) in &sealed {
            assert!(
                store.document(i).await.unwrap().is_none(),
                "{i} stored without its change"
            );
        }
        let listed = records.clone();
        let got = store
            .update_many(&[id.as_str()], &docs, &move |r: &mut RequestRecord| {
                r.attachments = listed.clone();
                true
            })
            .await
            .unwrap();
        assert_eq!(got[0].as_ref().unwrap().attachments, records);
        for ((i, _), a) in sealed.iter().zip(&came) {
            let back = store.document(i).await.unwrap().unwrap();
            assert_eq!(cipher.open(i, &back).unwrap(), a.bytes);
        }
        store.close().await.unwrap();
    }

    /// A write that fails (the disk full under the store's reserve) stores
    /// neither the document nor any of its attachments: one transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_stores_neither_the_document_nor_its_attachments() {
        use crate::store::prelude::*;
        let cipher = crate::store::crypt::DocumentCipher::from_hex(&"7".repeat(64)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = RequestRecord::queued(
            "c",
            "1/2026".into(),
            "ZUP".into(),
            "o".into(),
            "p".into(),
            "cadastre.property-sheet".into(),
            "cadastre".into(),
            Vec::new(),
            Duration::from_secs(60),
        );
        let id = r.id.clone();
        let store = crate::store::SledStore::open(dir.path(), 1 << 20).unwrap();
        store.enqueue(vec![r]).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        let store = crate::store::SledStore::open_with(
            dir.path(),
            &crate::store::Opening {
                cache_bytes: 1 << 20,
                min_free: u64::MAX,
                ..Default::default()
            },
        )
        .unwrap();
        let came = [crate::protocol::xroad::Attachment {
            content_id: "a".into(),
            content_type: "application/pdf".into(),
            name: None,
            bytes: b"%PDF".to_vec(),
        }];
        let (sealed, records) = seal_attachments(&cipher, &id, &came).unwrap();
        let mut docs: Vec<(&str, &[u8])> = vec![(id.as_str(), b"<doc/>")];
        docs.extend(sealed.iter().map(|(i, b)| (i.as_str(), b.as_slice())));
        let e = store
            .update_many(&[id.as_str()], &docs, &move |r: &mut RequestRecord| {
                r.attachments = records.clone();
                true
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Full { .. }), "{e}");
        assert!(store.document(&id).await.unwrap().is_none());
        assert!(store.document(&sealed[0].0).await.unwrap().is_none());
        assert!(store
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .attachments
            .is_empty());
        store.close().await.unwrap();
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
