//! The durable store: every accepted request, its attempts, its document
//! and its delivery, behind the [`QueueStore`] trait: on sled (the
//! embedded default, one process; this file) or on PostgreSQL, shared by
//! several instances ([`postgres`]). `open_configured` picks one.
//!
//! # Trees and key layouts
//!
//! | tree | key | value |
//! |---|---|---|
//! | `requests` | request id (ULID text) | [`RequestRecord`] as JSON with a schema version |
//! | `due` | due time in ms, big-endian u64 ‖ request id | the registry to ask, or `!deliver`: the request needs attention at that time |
//! | `by_case` | case number ‖ 0x00 ‖ request id | empty |
//! | `documents` | document id (= request id) | the registry's signed envelope, sealed with AES-256-GCM (see [`crypt`]) |
//! | `idempotency` | client ‖ 0x00 ‖ Idempotency-Key | the request ids it created and the body's SHA-256, as JSON |
//! | `outbox` | sequence number, big-endian u64 | an [`OutEvent`] waiting for its webhook, as JSON |
//! | `outbox_ids` | event id | its sequence number and creation time: events already written (also after they were sent) |
//! | `audit` | sequence number, big-endian u64 | an audit [`Entry`](crate::audit::Entry), hash-chained, as JSON; never removed |
//! | `audit_subject` | keyed subject hash (hex) ‖ sequence number | empty: the entries about one person |
//! | `meta` | `schema` | store schema version |
//!
//! A request is in `due` exactly when something must happen to it: queued
//! or retrying (send), awaiting (poll the ticket), sending (its lease
//! expires: the attempt is repeated), fetched (deliver). Terminal states are
//! not in `due`. Every change to a record and its `due` key is one sled
//! transaction.
//!
//! # Durability
//!
//! `202 Accepted` is answered only after the flush that contains the
//! request: concurrent accepts are batched by one committer task into one
//! transaction and one `flush` (group commit). State changes after that are
//! flushed by sled within `flush_every_ms` (500 ms); losing one in a crash
//! only repeats an attempt (same request id, which registries treat
//! idempotently) or a delivery (which rewrites the same file).

pub mod backup;
pub mod crypt;
pub mod outbox;
pub mod postgres;
#[doc(hidden)]
pub mod testing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::{mpsc, oneshot};

use crate::sync::{lock, read, write};

pub use crate::lifecycle::{now_ms, AttemptRecord, RequestRecord, State, Work, RECORD_VERSION};
pub use outbox::{EventRule, OutEvent};

/// The store schema version written to `meta`.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the store at {path} cannot be opened: {detail}. If it was damaged, move it aside and restore the latest backup with `jumgw store import` from {backups}")]
    Damaged {
        path: String,
        detail: String,
        backups: String,
    },
    #[error("the store at {path} is in use by another process (is another jumgw running on the same data folder?)")]
    Locked { path: String },
    #[error("the store at {path} has schema version {found}; this jumgw knows up to {known}")]
    TooNew {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("storage error: {0}")]
    Io(String),
    #[error("the disk holding the store has {available} bytes free, less than the {minimum} kept in reserve")]
    Full { available: u64, minimum: u64 },
    #[error("record {id} is unreadable: {detail}")]
    Corrupt { id: String, detail: String },
    #[error("no request {0}")]
    NotFound(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("PostgreSQL at {url}: {detail}")]
    Postgres { url: String, detail: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// A change to a record, made inside the store's transaction: it may run
/// more than once, on any thread, and must not have side effects.
pub type Change<'a> = dyn Fn(&mut RequestRecord) -> bool + Sync + 'a;

/// The seam between the dispatcher/API and a storage engine.
pub trait QueueStore: Send + Sync + 'static {
    /// Durably stores new requests (group commit): when the future resolves
    /// they survive a crash.
    fn enqueue(&self, records: Vec<RequestRecord>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.enqueue_once(records, None).await.map(|_| ()) })
    }
    /// Like [`QueueStore::enqueue`], under an idempotency key: if the key
    /// is already taken (by an earlier request, or a concurrent one in the
    /// same commit), nothing is stored and the holder is returned. The key
    /// is written in the same transaction as the records.
    fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> BoxFuture<'_, Result<Enqueued, StoreError>>;
    /// Who holds an idempotency key.
    fn idempotency(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError>;
    /// Forgets idempotency keys created before `before_ms`; returns how many.
    fn purge_idempotency(&self, before_ms: u64) -> Result<usize, StoreError>;
    fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError>;
    fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError>;
    /// What is due at or before `now_ms`, earliest first.
    fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError>;
    /// The earliest due time, if any.
    fn next_due(&self) -> Result<Option<u64>, StoreError>;
    /// Changes one record atomically with its `due` key and the events the
    /// [`EventRule`] raises for the change. `f` may run more than once and
    /// must not have side effects; returning `false` leaves the record as
    /// it was.
    fn update(&self, id: &str, f: &Change<'_>) -> Result<Option<RequestRecord>, StoreError>;
    /// Installs the rule that turns record changes into audit entries.
    fn set_audit_rule(&self, rule: crate::audit::AuditRule);
    /// Appends entries to the audit trail (document reads, admin actions).
    fn audit_append(&self, drafts: Vec<crate::audit::Draft>) -> Result<(), StoreError>;
    /// Audit entries after `after_seq`, in order; an unreadable one is an
    /// `Err` with the reason, so that verification can name it.
    #[allow(clippy::type_complexity)]
    fn audit_scan(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::audit::Entry, String>)>, StoreError>;
    /// The entries whose subject has this keyed hash.
    fn audit_by_subject(&self, hash: &str) -> Result<Vec<crate::audit::Entry>, StoreError>;
    fn audit_head(&self) -> Result<crate::audit::Head, StoreError>;
    /// Writes entries exactly as given (a restore from a backup); they
    /// must continue the chain's numbering.
    fn audit_restore(&self, entries: Vec<crate::audit::Entry>) -> Result<(), StoreError>;
    /// Installs the rule that turns record changes into events.
    fn set_event_rule(&self, rule: EventRule);
    /// Writes events whose ids are new (others are skipped); returns how
    /// many were written.
    fn emit(&self, events: Vec<OutEvent>) -> Result<usize, StoreError>;
    /// Waiting events in the order they were written.
    fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError>;
    /// One waiting event, as it is now.
    fn event(&self, seq: u64) -> Result<Option<OutEvent>, StoreError>;
    /// Records a failed send (attempts, next time, error).
    fn outbox_retry(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError>;
    /// The event reached its client.
    fn outbox_done(&self, seq: u64) -> Result<(), StoreError>;
    /// Forgets the ids of sent events written before `before_ms`.
    fn purge_event_ids(&self, before_ms: u64) -> Result<usize, StoreError>;
    fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError>;
    fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Requests in id order after `after` (cursor pagination).
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<RequestRecord>, StoreError>;
    /// Deletes a request, its indexes and its document (retention).
    fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// Number of requests in each state.
    fn counts(&self) -> Result<Vec<(State, u64)>, StoreError>;
    /// Can it take writes now (for readiness)?
    fn writable(&self) -> bool;
    /// Bytes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Stops background work and makes everything durable; the store is
    /// not used afterwards.
    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.flush()
    }

    // Several gateway instances on one store. The defaults are those of a
    // store that one process owns (sled): its limits, pauses and clock are
    // that process's own.

    /// Takes a lease on a due request: like [`QueueStore::update`], but a
    /// record that another instance holds locked right now is passed over
    /// instead of waited for, and, where the store holds the registry
    /// limits for every instance ([`QueueStore::shares_limits`]), the
    /// exchange is admitted against them in the same transaction.
    fn lease(
        &self,
        id: &str,
        _gate: Option<&GateLimits>,
        f: &Change<'_>,
    ) -> Result<Lease, StoreError> {
        Ok(match self.update(id, f)? {
            Some(r) => Lease::Taken(Box::new(r)),
            None => Lease::Passed,
        })
    }
    /// Does the store hold registry limits (in flight, rate, breaker) and
    /// pauses for every instance that shares it?
    fn shares_limits(&self) -> bool {
        false
    }
    /// Records an attempt's result in the shared breaker; returns it as it
    /// now is (`None`: limits are not shared).
    fn gate_record(
        &self,
        _gate: &GateLimits,
        _failed: bool,
        _now_ms: u64,
    ) -> Result<Option<crate::limits::Breaker>, StoreError> {
        Ok(None)
    }
    /// Pauses or resumes a registry for every instance.
    fn set_pause(&self, _p: &Pause) -> Result<(), StoreError> {
        Ok(())
    }
    /// The pauses and resumes administrators set, as the store holds them
    /// (a registry without one keeps its configured `paused`).
    fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        Ok(Vec::new())
    }
    /// Whom to wake when another instance made work due or changed a
    /// pause.
    fn watch(&self, _w: Watch) {}
    /// May this instance do a job that only one instance may do at a time
    /// (`role`, e.g. sending webhooks)? Asked before each round; once true
    /// it stays true while this instance lives.
    fn lead(&self, _role: &str) -> bool {
        true
    }
    /// The time leases and due times are measured in: the store's clock
    /// where several machines share it.
    fn clock_ms(&self) -> u64 {
        now_ms()
    }
}

pub use crate::limits::GateLimits;

/// The result of [`QueueStore::lease`].
#[derive(Debug)]
pub enum Lease {
    Taken(Box<RequestRecord>),
    /// Not changed: someone else has it, or `f` said no.
    Passed,
    /// The registry's shared limits refuse it until this time (ms since
    /// the epoch), or (`None`) until an attempt finishes.
    Blocked(Option<u64>),
}

/// A registry's administrator pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub registry: String,
    pub paused: bool,
    /// When the pause ends by itself (ms since the epoch).
    pub until: Option<u64>,
}

/// Callbacks for changes made by other instances.
#[derive(Clone)]
pub struct Watch {
    /// Work became due.
    pub work: Arc<tokio::sync::Notify>,
    /// Pauses changed: the whole list.
    pub pauses: Arc<dyn Fn(Vec<Pause>) + Send + Sync>,
}

/// An entry of the `due` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub at_ms: u64,
    pub id: String,
    pub work: Work,
}

/// The due index's value for `r`: what it is due for, as its code.
fn due_value(r: &RequestRecord) -> Vec<u8> {
    Work::of(r)
        .map(|w| w.code().as_bytes().to_vec())
        .unwrap_or_default()
}

fn seq_of(k: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(k)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            id: "outbox".into(),
            detail: "a key is not a sequence number".into(),
        })
}

/// Writes an event unless its id was written before; 1 if written.
fn put_event(
    outbox: &sled::transaction::TransactionalTree,
    ids: &sled::transaction::TransactionalTree,
    e: &OutEvent,
) -> Result<usize, ConflictableTransactionError<StoreError>> {
    if ids.get(e.id.as_bytes())?.is_some() {
        return Ok(0);
    }
    let seq = outbox.generate_id()?;
    let mut v = seq.to_be_bytes().to_vec();
    v.extend_from_slice(&e.created_ms.to_be_bytes());
    ids.insert(e.id.as_bytes(), v)?;
    outbox.insert(
        &seq.to_be_bytes(),
        serde_json::to_vec(e)
            .map_err(|x| ConflictableTransactionError::Abort(StoreError::Io(x.to_string())))?,
    )?;
    Ok(1)
}

/// Opens the configured store: sled in `data_dir/store`, or PostgreSQL.
/// Must be called inside a (multi-thread) tokio runtime.
pub fn open_configured(
    cfg: &crate::config::StoreConfig,
    data_dir: &Path,
) -> Result<Arc<dyn QueueStore>, StoreError> {
    match (cfg.backend, &cfg.url) {
        (crate::config::StoreBackend::Postgres, Some(url)) => {
            Ok(postgres::PgStore::open(url, cfg.pool_size)?)
        }
        (crate::config::StoreBackend::Postgres, None) => Err(StoreError::Postgres {
            url: "(none)".into(),
            detail: "store.url is not set".into(),
        }),
        (crate::config::StoreBackend::Sled, _) => {
            Ok(SledStore::open(&data_dir.join("store"), 64 << 20)?)
        }
    }
}

/// Calls `f` on every request, in id order, a page at a time.
pub fn for_each<E: From<StoreError>>(
    store: &dyn QueueStore,
    mut f: impl FnMut(RequestRecord) -> Result<(), E>,
) -> Result<(), E> {
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(after.as_deref(), 500)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id.clone());
        for r in page {
            f(r)?;
        }
    }
}

fn due_key(due: u64, id: &str) -> Vec<u8> {
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn case_key(case: &str, id: &str) -> Vec<u8> {
    let mut k = case.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn decode(id: &[u8], v: &[u8]) -> Result<RequestRecord, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        id: String::from_utf8_lossy(id).into_owned(),
        detail: e.to_string(),
    })
}

fn decode_event(seq: u64, v: &[u8]) -> Result<OutEvent, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        id: format!("event {seq}"),
        detail: e.to_string(),
    })
}

fn encode_text(r: &RequestRecord) -> String {
    // A record of plain strings and numbers always serialises.
    serde_json::to_string(r).unwrap_or_default()
}

fn encode(r: &RequestRecord) -> Vec<u8> {
    // A record of plain strings and numbers always serialises.
    serde_json::to_vec(r).unwrap_or_default()
}

/// An idempotency key of a client, with the hash of the body it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemKey {
    pub client: String,
    pub key: String,
    pub body_hash: String,
}

/// What an idempotency key points to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdemEntry {
    pub request_ids: Vec<String>,
    pub body_hash: String,
    pub created_ms: u64,
}

/// The outcome of [`QueueStore::enqueue_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    Stored,
    /// The key was taken: nothing was stored.
    Existing(IdemEntry),
}

fn idem_key(client: &str, key: &str) -> Vec<u8> {
    let mut k = client.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

type Batch = (
    Vec<RequestRecord>,
    Option<IdemKey>,
    oneshot::Sender<Result<Enqueued, StoreError>>,
);

#[derive(Clone)]
struct Trees {
    db: sled::Db,
    requests: sled::Tree,
    due: sled::Tree,
    by_case: sled::Tree,
    documents: sled::Tree,
    idempotency: sled::Tree,
    outbox: sled::Tree,
    outbox_ids: sled::Tree,
    audit: sled::Tree,
    audit_subject: sled::Tree,
    /// The chain head: held while entries are chained and written, so
    /// that writers take turns.
    audit_head: Arc<std::sync::Mutex<crate::audit::Head>>,
    audit_rule: Arc<std::sync::RwLock<Option<crate::audit::AuditRule>>>,
}

impl Trees {
    fn audit_rule(&self) -> Option<crate::audit::AuditRule> {
        read(&self.audit_rule).clone()
    }

    fn head(&self) -> std::sync::MutexGuard<'_, crate::audit::Head> {
        lock(&self.audit_head)
    }
}

/// Writes one chained entry and its subject index keys.
fn put_entry(
    audit: &sled::transaction::TransactionalTree,
    by_subject: &sled::transaction::TransactionalTree,
    e: &crate::audit::Entry,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let v = serde_json::to_vec(e)
        .map_err(|x| ConflictableTransactionError::Abort(StoreError::Io(x.to_string())))?;
    audit.insert(&e.seq.to_be_bytes(), v)?;
    for s in &e.draft.subject {
        let mut k = s.as_bytes().to_vec();
        k.extend_from_slice(&e.seq.to_be_bytes());
        by_subject.insert(k, &[])?;
    }
    Ok(())
}

/// Chains drafts after `head` and writes them; returns the new head.
fn chain_in(
    audit: &sled::transaction::TransactionalTree,
    by_subject: &sled::transaction::TransactionalTree,
    head: &crate::audit::Head,
    drafts: Vec<crate::audit::Draft>,
) -> Result<crate::audit::Head, ConflictableTransactionError<StoreError>> {
    let mut h = head.clone();
    for d in drafts {
        let e = crate::audit::Entry::chained(d, h.seq + 1, &h.hash);
        put_entry(audit, by_subject, &e)?;
        h = crate::audit::Head {
            seq: e.seq,
            hash: e.hash,
        };
    }
    Ok(h)
}

/// The sled store.
pub struct SledStore {
    t: Trees,
    path: PathBuf,
    /// Accepts stop below this much free disk, long before sled would hit
    /// ENOSPC (on which its flush blocks rather than failing).
    min_free: u64,
    committer: std::sync::Mutex<Option<mpsc::Sender<Batch>>>,
    events: std::sync::RwLock<Option<EventRule>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Must be called inside a tokio
    /// runtime (the group committer is a task).
    /// Free disk below which accepts are refused, by default.
    pub const DEFAULT_MIN_FREE: u64 = 8 << 20;
    /// How long a group-commit flush may take before its accepts fail.
    pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Arc<SledStore>, StoreError> {
        Self::open_with(dir, cache_bytes, Self::DEFAULT_MIN_FREE)
    }

    pub fn open_with(
        dir: &Path,
        cache_bytes: u64,
        min_free: u64,
    ) -> Result<Arc<SledStore>, StoreError> {
        let damaged = |detail: String| StoreError::Damaged {
            path: dir.display().to_string(),
            detail,
            backups: dir
                .parent()
                .unwrap_or(dir)
                .join("backups")
                .display()
                .to_string(),
        };
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(500));
        // sled releases its file lock from a background thread after the
        // last handle is dropped; a reopen right after a close can race it.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    if tries == 40 {
                        return Err(StoreError::Locked {
                            path: dir.display().to_string(),
                        });
                    }
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(damaged(e.to_string())),
            }
        };
        let tree = |n: &str| db.open_tree(n).map_err(|e| damaged(e.to_string()));
        let t = Trees {
            requests: tree("requests")?,
            due: tree("due")?,
            by_case: tree("by_case")?,
            documents: tree("documents")?,
            idempotency: tree("idempotency")?,
            outbox: tree("outbox")?,
            outbox_ids: tree("outbox_ids")?,
            audit: tree("audit")?,
            audit_subject: tree("audit_subject")?,
            audit_head: Default::default(),
            audit_rule: Default::default(),
            db: db.clone(),
        };
        let meta = tree("meta")?;
        match meta.get("schema").map_err(|e| damaged(e.to_string()))? {
            None => {
                meta.insert("schema", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| damaged(e.to_string()))?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| damaged("unreadable schema version".into()))?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::TooNew {
                        path: dir.display().to_string(),
                        found,
                        known: SCHEMA_VERSION,
                    });
                }
                // Versions below SCHEMA_VERSION would be migrated here.
            }
        }
        if let Some((k, v)) = t.audit.last().map_err(|e| damaged(e.to_string()))? {
            let e: crate::audit::Entry = serde_json::from_slice(&v).map_err(|e| {
                damaged(format!(
                    "the newest audit entry is unreadable ({e}); run `jumgw audit verify`"
                ))
            })?;
            *t.head() = crate::audit::Head {
                seq: seq_of(&k).map_err(|e| damaged(e.to_string()))?,
                hash: e.hash,
            };
        }
        // A quick consistency check: every due key names a record.
        for item in t.due.iter().take(1000) {
            let (k, _) = item.map_err(|e| damaged(e.to_string()))?;
            let id = &k[8..];
            if t.requests
                .get(id)
                .map_err(|e| damaged(e.to_string()))?
                .is_none()
            {
                return Err(damaged(format!(
                    "due index names a missing request {}",
                    String::from_utf8_lossy(id)
                )));
            }
        }
        let (tx, rx) = mpsc::channel::<Batch>(4096);
        let task = tokio::spawn(commit_loop(t.clone(), rx));
        Ok(Arc::new(SledStore {
            t,
            path: dir.to_owned(),
            min_free,
            committer: std::sync::Mutex::new(Some(tx)),
            events: std::sync::RwLock::new(None),
            task: std::sync::Mutex::new(Some(task)),
        }))
    }

    /// Stops accepting, lets the committer finish what it holds, flushes.
    /// The database closes when the last handle to the store is dropped.
    pub async fn close(&self) -> Result<(), StoreError> {
        lock(&self.committer).take();
        let task = lock(&self.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        self.t.db.flush_async().await?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is there enough free disk for new requests?
    pub fn check_space(&self) -> Result<(), StoreError> {
        let available =
            fs4::available_space(&self.path).map_err(|e| StoreError::Io(e.to_string()))?;
        if available < self.min_free {
            return Err(StoreError::Full {
                available,
                minimum: self.min_free,
            });
        }
        Ok(())
    }
}

/// Group commit: takes every batch that is waiting, writes them in one
/// transaction, flushes once, then answers them all.
async fn commit_loop(t: Trees, mut rx: mpsc::Receiver<Batch>) {
    let mut pending: Vec<Batch> = Vec::new();
    while let Some(first) = rx.recv().await {
        pending.push(first);
        while pending.len() < 4096 {
            match rx.try_recv() {
                Ok(b) => pending.push(b),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let rule = t.audit_rule();
        // The guard must not live across an await: this block ends first.
        let res = {
            let mut head = t.head();
            let res = (
                &t.requests,
                &t.due,
                &t.by_case,
                &t.idempotency,
                &t.audit,
                &t.audit_subject,
            )
                .transaction(|(req, due, by_case, idem, audit, audit_subject)| {
                    let mut drafts = Vec::new();
                    // Rebuilt on every run: sled may run this closure again.
                    let mut outcomes = Vec::with_capacity(pending.len());
                    for (records, key, _) in &pending {
                        if let Some(k) = key {
                            let kb = idem_key(&k.client, &k.key);
                            // Read-your-writes: a duplicate within this batch sees the first.
                            if let Some(v) = idem.get(&kb)? {
                                let e: IdemEntry = serde_json::from_slice(&v).map_err(|e| {
                                    ConflictableTransactionError::Abort(StoreError::Corrupt {
                                        id: k.key.clone(),
                                        detail: e.to_string(),
                                    })
                                })?;
                                outcomes.push(Enqueued::Existing(e));
                                continue;
                            }
                            let e = IdemEntry {
                                request_ids: records.iter().map(|r| r.id.clone()).collect(),
                                body_hash: k.body_hash.clone(),
                                created_ms: now,
                            };
                            idem.insert(kb, serde_json::to_vec(&e).unwrap_or_default())?;
                        }
                        for r in records {
                            req.insert(r.id.as_bytes(), encode(r))?;
                            if let Some(d) = r.due_ms {
                                due.insert(due_key(d, &r.id), due_value(r))?;
                            }
                            by_case.insert(case_key(&r.case, &r.id), &[])?;
                            if let Some(rule) = &rule {
                                drafts.extend(rule(None, r));
                            }
                        }
                        outcomes.push(Enqueued::Stored);
                    }
                    let new_head = chain_in(audit, audit_subject, &head, drafts)?;
                    Ok::<_, ConflictableTransactionError<StoreError>>((outcomes, new_head))
                })
                .map_err(|e: TransactionError<StoreError>| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => StoreError::from(e),
                });
            res.map(|(outcomes, new_head)| {
                *head = new_head;
                outcomes
            })
        };
        let res = match res {
            Ok(outcomes) => {
                match tokio::time::timeout(SledStore::FLUSH_TIMEOUT, t.db.flush_async()).await {
                    Ok(Ok(_)) => Ok(outcomes),
                    Ok(Err(e)) => Err(StoreError::from(e)),
                    Err(_) => Err(StoreError::Io(
                        "the disk did not complete a flush in time".into(),
                    )),
                }
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(outcomes) => {
                for ((_, _, reply), o) in pending.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(o));
                }
            }
            Err(e) => {
                for (_, _, reply) in pending.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl QueueStore for SledStore {
    fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> BoxFuture<'_, Result<Enqueued, StoreError>> {
        Box::pin(async move {
            self.check_space()?;
            let (tx, rx) = oneshot::channel();
            let committer = lock(&self.committer).clone();
            let committer = committer.ok_or(StoreError::Closed)?;
            committer
                .send((records, key, tx))
                .await
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn idempotency(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError> {
        self.t
            .idempotency
            .get(idem_key(client, key))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    id: key.to_owned(),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    fn purge_idempotency(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.t.idempotency.iter() {
            let (k, v) = item?;
            let old = serde_json::from_slice::<IdemEntry>(&v)
                .map(|e| e.created_ms < before_ms)
                .unwrap_or(true);
            if old {
                self.t.idempotency.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.t
            .requests
            .get(id.as_bytes())?
            .map(|v| decode(id.as_bytes(), &v))
            .transpose()
    }

    fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
        let mut prefix = case.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.t.by_case.scan_prefix(&prefix) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(r) = self.get(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for item in self.t.due.range(..end.as_slice()).take(limit) {
            let (k, v) = item?;
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[..8]);
            let work = Work::from_code(&String::from_utf8_lossy(&v));
            out.push(Due {
                at_ms: u64::from_be_bytes(b),
                id: String::from_utf8_lossy(&k[8..]).into_owned(),
                work,
            });
        }
        Ok(out)
    }

    fn next_due(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.t.due.first()?.map(|(k, _)| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[..8]);
            u64::from_be_bytes(b)
        }))
    }

    fn update(&self, id: &str, f: &Change<'_>) -> Result<Option<RequestRecord>, StoreError> {
        let events = read(&self.events).clone();
        let t = &self.t;
        let rule = t.audit_rule();
        let mut head = t.head();
        let res = (
            &t.requests,
            &t.due,
            &t.outbox,
            &t.outbox_ids,
            &t.audit,
            &t.audit_subject,
        )
            .transaction(|(req, due, outbox, ids, audit, audit_subject)| {
                let Some(cur) = req.get(id.as_bytes())? else {
                    return Err(ConflictableTransactionError::Abort(StoreError::NotFound(
                        id.to_owned(),
                    )));
                };
                let old =
                    decode(id.as_bytes(), &cur).map_err(ConflictableTransactionError::Abort)?;
                let mut new = old.clone();
                if !f(&mut new) {
                    return Ok(None);
                }
                if old.due_ms != new.due_ms || due_value(&old) != due_value(&new) {
                    if let Some(d) = old.due_ms {
                        due.remove(due_key(d, id))?;
                    }
                    if let Some(d) = new.due_ms {
                        due.insert(due_key(d, id), due_value(&new))?;
                    }
                }
                req.insert(id.as_bytes(), encode(&new))?;
                let mut raised = 0;
                if let Some(ev) = &events {
                    for e in (ev.rule)(&old, &new) {
                        raised += put_event(outbox, ids, &e)?;
                    }
                }
                let drafts = rule
                    .as_ref()
                    .map(|r| r(Some(&old), &new))
                    .unwrap_or_default();
                let new_head = chain_in(audit, audit_subject, &head, drafts)?;
                Ok(Some((new, raised, new_head)))
            });
        let res = res.map(|r| {
            r.map(|(rec, raised, new_head)| {
                *head = new_head;
                (rec, raised)
            })
        });
        drop(head);
        match res {
            Ok(Some((r, raised))) => {
                if raised > 0 {
                    if let Some(ev) = &events {
                        ev.notify.notify_one();
                    }
                }
                Ok(Some(r))
            }
            Ok(None) => Ok(None),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn set_audit_rule(&self, rule: crate::audit::AuditRule) {
        *write(&self.t.audit_rule) = Some(rule);
    }

    fn audit_append(&self, drafts: Vec<crate::audit::Draft>) -> Result<(), StoreError> {
        let mut head = self.t.head();
        let res = (&self.t.audit, &self.t.audit_subject)
            .transaction(|(audit, by_subject)| chain_in(audit, by_subject, &head, drafts.clone()));
        match res {
            Ok(h) => {
                *head = h;
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn audit_scan(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::audit::Entry, String>)>, StoreError> {
        let start = after_seq.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.t.audit.range(start..).take(limit) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            out.push((seq, serde_json::from_slice(&v).map_err(|e| e.to_string())));
        }
        Ok(out)
    }

    fn audit_by_subject(&self, hash: &str) -> Result<Vec<crate::audit::Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.audit_subject.scan_prefix(hash.as_bytes()) {
            let (k, _) = item?;
            let seq = &k[k.len().saturating_sub(8)..];
            if let Some(v) = self.t.audit.get(seq)? {
                out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    id: format!("audit entry {}", seq_of(seq).unwrap_or(0)),
                    detail: e.to_string(),
                })?);
            }
        }
        Ok(out)
    }

    fn audit_head(&self) -> Result<crate::audit::Head, StoreError> {
        Ok(self.t.head().clone())
    }

    fn audit_restore(&self, entries: Vec<crate::audit::Entry>) -> Result<(), StoreError> {
        let mut head = self.t.head();
        let res = (&self.t.audit, &self.t.audit_subject).transaction(|(audit, by_subject)| {
            let mut h = head.clone();
            for e in &entries {
                if e.seq != h.seq + 1 {
                    return Err(ConflictableTransactionError::Abort(StoreError::Corrupt {
                        id: format!("audit entry {}", e.seq),
                        detail: format!("expected entry {}", h.seq + 1),
                    }));
                }
                put_entry(audit, by_subject, e)?;
                h = crate::audit::Head {
                    seq: e.seq,
                    hash: e.hash.clone(),
                };
            }
            Ok(h)
        });
        match res {
            Ok(h) => {
                *head = h;
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn set_event_rule(&self, rule: EventRule) {
        *write(&self.events) = Some(rule);
    }

    fn emit(&self, events: Vec<OutEvent>) -> Result<usize, StoreError> {
        let res = (&self.t.outbox, &self.t.outbox_ids).transaction(|(outbox, ids)| {
            let mut n = 0;
            for e in &events {
                n += put_event(outbox, ids, e)?;
            }
            Ok(n)
        });
        let n = match res {
            Ok(n) => n,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        };
        if n > 0 {
            if let Some(ev) = &*read(&self.events) {
                ev.notify.notify_one();
            }
        }
        Ok(n)
    }

    fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.outbox.iter().take(limit) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            out.push((seq, decode_event(seq, &v)?));
        }
        Ok(out)
    }

    fn event(&self, seq: u64) -> Result<Option<OutEvent>, StoreError> {
        self.t
            .outbox
            .get(seq.to_be_bytes())?
            .map(|v| decode_event(seq, &v))
            .transpose()
    }

    fn outbox_retry(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError> {
        let v = serde_json::to_vec(event).map_err(|e| StoreError::Io(e.to_string()))?;
        // Only if it is still waiting: never resurrect a sent event.
        let Some(cur) = self.t.outbox.get(seq.to_be_bytes())? else {
            return Ok(());
        };
        let _ = self
            .t
            .outbox
            .compare_and_swap(seq.to_be_bytes(), Some(cur), Some(v))?;
        Ok(())
    }

    fn outbox_done(&self, seq: u64) -> Result<(), StoreError> {
        self.t.outbox.remove(seq.to_be_bytes())?;
        Ok(())
    }

    fn purge_event_ids(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.t.outbox_ids.iter() {
            let (k, v) = item?;
            if v.len() != 16 {
                self.t.outbox_ids.remove(k)?;
                continue;
            }
            let seq = seq_of(&v[..8])?;
            let created = seq_of(&v[8..])?;
            if created < before_ms && !self.t.outbox.contains_key(seq.to_be_bytes())? {
                self.t.outbox_ids.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.t.documents.insert(id.as_bytes(), bytes)?;
        Ok(())
    }

    fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t.documents.get(id.as_bytes())?.map(|v| v.to_vec()))
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<RequestRecord>, StoreError> {
        let iter = match after {
            Some(a) => self.t.requests.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.t.requests.iter(),
        };
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    fn remove(&self, id: &str) -> Result<(), StoreError> {
        let res = (
            &self.t.requests,
            &self.t.due,
            &self.t.by_case,
            &self.t.documents,
        )
            .transaction(|(req, due, by_case, docs)| {
                if let Some(cur) = req.remove(id.as_bytes())? {
                    let r =
                        decode(id.as_bytes(), &cur).map_err(ConflictableTransactionError::Abort)?;
                    if let Some(d) = r.due_ms {
                        due.remove(due_key(d, id))?;
                    }
                    by_case.remove(case_key(&r.case, id))?;
                    docs.remove(id.as_bytes())?;
                }
                Ok(())
            });
        match res {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn counts(&self) -> Result<Vec<(State, u64)>, StoreError> {
        let mut c = std::collections::BTreeMap::new();
        for item in self.t.requests.iter() {
            let (k, v) = item?;
            *c.entry(decode(&k, &v)?.state).or_insert(0u64) += 1;
        }
        Ok(State::ALL
            .iter()
            .map(|s| (*s, c.get(s).copied().unwrap_or(0)))
            .collect())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.t.db.size_on_disk()?)
    }

    fn writable(&self) -> bool {
        // No flush here: on a full disk sled's flush blocks. Free space is
        // the signal, and accepts check the same.
        self.check_space().is_ok() && self.t.db.insert("__probe", &[1u8]).is_ok()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(SledStore::close(self))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.t
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(StoreError::from)
        })
    }
}

#[cfg(test)]
mod tests;
