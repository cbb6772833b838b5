//! The durable store: every accepted request, its attempts, its document
//! and its delivery, behind the [`QueueStore`] trait: on sled (the
//! embedded default, one process; [`embedded`]) or on PostgreSQL, shared by
//! several instances ([`postgres`]). `open_configured` picks one. The
//! record codec (JSON with a schema version) is shared by both.

pub mod backup;
pub mod crypt;
pub mod embedded;
pub mod integrity;
pub mod outbox;
pub mod postgres;
pub mod query;
#[doc(hidden)]
pub mod testing;
pub mod trail;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use crate::lifecycle::{AttemptRecord, RequestRecord, State, Work, RECORD_VERSION};
use crate::time::now_ms;
pub use embedded::{Opening, SledStore};
pub use outbox::{EventRule, OutEvent};
pub use query::{Listing, Order, Selector, Tally};

/// The request a stored document belongs to: its id up to the first `.`
/// (`{request}` itself, `{request}.attachment-{n}`, `{request}.asice`), so
/// that every document of a request goes in only with its change. A CRL
/// (`crl-{sha256}`) belongs to none of the requests written with it.
pub fn document_owner(document_id: &str) -> &str {
    document_id.split('.').next().unwrap_or(document_id)
}

/// The schema of a record and of an export (`store export`); each
/// backend versions its own tables or trees besides.
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
        match e {
            // A page that fails its checksum, or a state sled cannot be in.
            sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => StoreError::Corrupt {
                id: "(a page)".into(),
                detail: e.to_string(),
            },
            e => StoreError::Io(e.to_string()),
        }
    }
}

/// What could not be read from a store while it runs: once anything is,
/// the store is damaged, `/readyz` says so and the alert metric counts;
/// operators' views skip what they cannot read instead of failing.
#[derive(Debug, Default)]
pub struct Health {
    faults: std::sync::atomic::AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

/// [`Health`] as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadFaults {
    pub count: u64,
    /// The first, for the operator (ids and keys, no values).
    pub first: String,
}

impl Health {
    pub fn note(&self, what: &dyn std::fmt::Display) {
        let n = self
            .faults
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n == 0 {
            let first = what.to_string();
            tracing::error!(problem = %first, "the store is damaged: a read failed; run `jumgw store check` after stopping the gateway");
            *crate::sync::lock(&self.first) = Some(first);
        }
    }

    pub fn faults(&self) -> Option<ReadFaults> {
        let count = self.faults.load(std::sync::atomic::Ordering::Relaxed);
        (count > 0).then(|| ReadFaults {
            count,
            first: crate::sync::lock(&self.first).clone().unwrap_or_default(),
        })
    }
}

/// A change to a record, made inside the store's transaction: it may run
/// more than once, on any thread, and must not have side effects.
pub type Change<'a> = dyn Fn(&mut RequestRecord) -> bool + Sync + 'a;

/// Requests and their indexes: the queue itself.
#[async_trait]
pub trait Requests: Documents + Send + Sync {
    /// Durably stores new requests (group commit): when the future resolves
    /// they survive a crash.
    async fn enqueue(&self, records: Vec<RequestRecord>) -> Result<(), StoreError> {
        self.enqueue_once(records, None).await.map(|_| ())
    }
    /// Like [`Requests::enqueue`], under an idempotency key: if the key
    /// is already taken (by an earlier request, or a concurrent one in the
    /// same commit), nothing is stored and the holder is returned. The key
    /// is written in the same transaction as the records.
    async fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> Result<Enqueued, StoreError>;
    async fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError>;
    async fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError>;
    /// Documents whose evidence (a timestamp, an X-Road signed document)
    /// is to be asked for at or before `now_ms`, by
    /// [`RequestRecord::evidence_due_ms`], earliest first, at most `limit`.
    async fn evidence_due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError>;
    /// What is due at or before `now_ms`, earliest first.
    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError>;
    /// The earliest due time, if any.
    async fn next_due(&self) -> Result<Option<u64>, StoreError>;
    /// Changes one record atomically with its indexes and the events the
    /// [`EventRule`] raises for the change. `f` may run more than once and
    /// must not have side effects; returning `false` leaves the record as
    /// it was.
    async fn update(&self, id: &str, f: &Change<'_>) -> Result<Option<RequestRecord>, StoreError>;
    /// Takes a lease on a due request: like [`Requests::update`], but a
    /// record that another instance holds locked right now is passed over
    /// instead of waited for, and, where the store holds the registry
    /// limits for every instance ([`Coordination::shares_limits`]), the
    /// exchange is admitted against them in the same transaction.
    async fn lease(
        &self,
        id: &str,
        _gate: Option<&GateLimits>,
        f: &Change<'_>,
    ) -> Result<Lease, StoreError> {
        Ok(match self.update(id, f).await? {
            Some(r) => Lease::Taken(Box::new(r)),
            None => Lease::Passed,
        })
    }
    /// Several records at once (one round trip), in the order asked; a
    /// missing one is `None`.
    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(id).await?);
        }
        Ok(out)
    }
    /// Changes many records in one transaction, with the documents to
    /// store beside them (id, sealed bytes): what several attempts came to,
    /// written at the cost of one. A document under the id of a request
    /// whose change `f` declined is not stored (a late answer must not
    /// replace the document its record names); others (CRLs) always are. `f` runs on each record as
    /// [`Requests::update`]'s does (it tells records apart by their id);
    /// the result, in the order asked, is the changed record, or `None`
    /// where `f` said no or the record is gone.
    ///
    /// This default is not one transaction: it writes each record, then
    /// its document, so a crash between the two leaves a record that names
    /// a document never stored. The document cannot go first: whether `f`
    /// declines is known only once the record is changed, and a document
    /// written for a declined change would replace the one its record
    /// names. A store that keeps documents must override this and write
    /// both in one transaction, as both stores here do.
    async fn update_many(
        &self,
        ids: &[&str],
        documents: &[(&str, &[u8])],
        f: &Change<'_>,
    ) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(match self.update(id, f).await {
                Err(StoreError::NotFound(_)) => None,
                r => r?,
            });
        }
        // A request's document only beside its change.
        for (id, bytes) in documents {
            let declined = ids
                .iter()
                .zip(&out)
                .any(|(asked, r)| *asked == document_owner(id) && r.is_none());
            if !declined {
                self.put_document(id, bytes).await?;
            }
        }
        Ok(out)
    }
    /// Takes leases on many due requests in one transaction: each as
    /// [`Requests::lease`] takes one, with its registry's shared limits
    /// where given. The result is in the order asked.
    async fn lease_many(
        &self,
        asks: &[(&str, Option<&GateLimits>)],
        f: &Change<'_>,
    ) -> Result<Vec<Lease>, StoreError> {
        if asks.iter().all(|(_, g)| g.is_none()) {
            let ids: Vec<&str> = asks.iter().map(|(id, _)| *id).collect();
            return Ok(self
                .update_many(&ids, &[], f)
                .await?
                .into_iter()
                .map(|r| r.map_or(Lease::Passed, |r| Lease::Taken(Box::new(r))))
                .collect());
        }
        let mut out = Vec::with_capacity(asks.len());
        for (id, gate) in asks {
            out.push(self.lease(id, *gate, f).await?);
        }
        Ok(out)
    }
    /// Requests in id order after `after` (cursor pagination).
    async fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError>;
    /// Deletes a request, its indexes and its document (retention).
    async fn remove(&self, id: &str) -> Result<(), StoreError>;
    /// A page of the requests `q` selects, in its order, walking the
    /// narrowest index (state, case, attention) from the cursor.
    async fn list(&self, q: &Listing) -> Result<Vec<RequestRecord>, StoreError>;
    /// How many requests `s` selects: from the counters when only state
    /// and registry are set, else by walking the narrowest index.
    async fn count(&self, s: &Selector) -> Result<u64, StoreError>;
    /// The counters by registry and state, and the oldest unfetched request.
    async fn tally(&self) -> Result<Tally, StoreError>;
    /// Open requests due by `until_ms` at the latest (their ZUP deadline),
    /// earliest first.
    async fn by_deadline(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError>;
    /// How many records this store has decoded since it was opened: what
    /// a query cost, for the tests that keep handlers off full scans.
    fn records_read(&self) -> u64;
}

/// The registries' signed documents, sealed.
#[async_trait]
pub trait Documents: Send + Sync {
    async fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError>;
    async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// The back-offices' idempotency keys.
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Who holds an idempotency key.
    async fn idempotency(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError>;
    /// Forgets idempotency keys created before `before_ms`; returns how many.
    async fn purge_idempotency(&self, before_ms: u64) -> Result<usize, StoreError>;
}

/// The hash-chained audit trail.
#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Installs the rule that turns record changes into audit entries.
    fn set_audit_rule(&self, rule: crate::store::trail::AuditRule);
    /// Appends entries to the audit trail (document reads, admin actions).
    async fn audit_append(&self, drafts: Vec<crate::store::trail::Draft>)
        -> Result<(), StoreError>;
    /// Audit entries after `after_seq`, in order; an unreadable one is an
    /// `Err` with the reason, so that verification can name it.
    #[allow(clippy::type_complexity)]
    async fn audit_scan(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::store::trail::Entry, String>)>, StoreError>;
    /// The entries whose subject has this keyed hash.
    async fn audit_by_subject(
        &self,
        hash: &str,
    ) -> Result<Vec<crate::store::trail::Entry>, StoreError>;
    async fn audit_head(&self) -> Result<crate::store::trail::Head, StoreError>;
    /// Writes entries exactly as given (a restore from a backup), in
    /// order, each numbered after the head (a salvaged trail has holes;
    /// whether one is allowed is the import's to say).
    async fn audit_restore(
        &self,
        entries: Vec<crate::store::trail::Entry>,
    ) -> Result<(), StoreError>;
}

/// Webhook events waiting for their clients.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Installs the rule that turns record changes into events.
    fn set_event_rule(&self, rule: EventRule);
    /// Writes events whose ids are new (others are skipped); returns how
    /// many were written.
    async fn emit(&self, events: Vec<OutEvent>) -> Result<usize, StoreError>;
    /// Waiting events in the order they were written.
    async fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError>;
    /// One waiting event, as it is now.
    async fn event(&self, seq: u64) -> Result<Option<OutEvent>, StoreError>;
    /// Records a failed send (attempts, next time, error).
    async fn outbox_retry(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError>;
    /// The event reached its client.
    async fn outbox_done(&self, seq: u64) -> Result<(), StoreError>;
    /// Forgets the ids of sent events written before `before_ms`.
    async fn purge_event_ids(&self, before_ms: u64) -> Result<usize, StoreError>;
}

/// Several gateway instances on one store. The defaults are those of a
/// store that one process owns (sled): its limits, pauses and clock are
/// that process's own.
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Does the store hold registry limits (in flight, rate, breaker) and
    /// pauses for every instance that shares it?
    fn shares_limits(&self) -> bool {
        false
    }
    /// Records an attempt's result in the shared breaker; returns it as it
    /// now is (`None`: limits are not shared).
    async fn gate_record(
        &self,
        _gate: &GateLimits,
        _failed: bool,
        _now_ms: u64,
    ) -> Result<Option<crate::limits::Breaker>, StoreError> {
        Ok(None)
    }
    /// Pauses or resumes a registry for every instance.
    async fn set_pause(&self, _p: &Pause) -> Result<(), StoreError> {
        Ok(())
    }
    /// The pauses and resumes administrators set, as the store holds them
    /// (a registry without one keeps its configured `paused`).
    async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        Ok(Vec::new())
    }
    /// Whom to wake when another instance made work due or changed a
    /// pause.
    fn watch(&self, _w: Watch) {}
    /// May this instance do a job that only one instance may do at a time
    /// (`role`, e.g. sending webhooks)? Asked before each round; once true
    /// it stays true while this instance lives.
    async fn lead(&self, _role: &str) -> bool {
        true
    }
    /// The time leases and due times are measured in: the store's clock
    /// where several machines share it.
    fn clock_ms(&self) -> u64 {
        now_ms()
    }
}

/// The store as a whole: readiness, size, flushing, closing.
#[async_trait]
pub trait Upkeep: Send + Sync {
    /// Can it take writes now (for readiness)?
    async fn writable(&self) -> bool;
    /// Bytes on disk.
    async fn size_on_disk(&self) -> Result<u64, StoreError>;
    async fn flush(&self) -> Result<(), StoreError>;
    /// What could not be read since the store was opened, if anything.
    fn read_faults(&self) -> Option<ReadFaults> {
        None
    }
    /// Reads the whole store and says what is damaged or disagrees with
    /// itself (`jumgw store check`); may take a while, and may run while
    /// the gateway does.
    async fn check(&self) -> Result<integrity::Report, StoreError>;
    /// Stops background work and makes everything durable; the store is
    /// not used afterwards.
    async fn close(&self) -> Result<(), StoreError> {
        self.flush().await
    }
}

/// The store's traits, for code that calls a backend by its own type
/// (`Arc<SledStore>`) rather than as `dyn QueueStore`.
pub mod prelude {
    pub use super::{AuditTrail, Coordination, Documents, Idempotency, Outbox, Requests, Upkeep};
}

/// The seam between the gateway and a storage engine: one trait per
/// thing it stores, every call that may touch the disk or the network
/// async. Implemented by [`SledStore`] and [`postgres::PgStore`].
pub trait QueueStore:
    Requests + Documents + Idempotency + AuditTrail + Outbox + Coordination + Upkeep + 'static
{
}

impl<T> QueueStore for T where
    T: Requests + Documents + Idempotency + AuditTrail + Outbox + Coordination + Upkeep + 'static
{
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

/// Opens the configured store: sled in `data_dir/store`, or PostgreSQL.
/// Must be called inside a (multi-thread) tokio runtime.
pub async fn open_configured(
    cfg: &crate::config::StoreConfig,
    data_dir: &Path,
) -> Result<Arc<dyn QueueStore>, StoreError> {
    match (cfg.backend, &cfg.url) {
        (crate::config::StoreBackend::Postgres, Some(url)) => {
            Ok(postgres::PgStore::open(url, cfg.pool_size).await?)
        }
        (crate::config::StoreBackend::Postgres, None) => Err(StoreError::Postgres {
            url: "(none)".into(),
            detail: "store.url is not set".into(),
        }),
        (crate::config::StoreBackend::Sled, _) => Ok(SledStore::open_with(
            &data_dir.join("store"),
            &embedded::Opening {
                flush_ms: cfg.sled_flush_ms,
                full_check: cfg.full_check,
                ..Default::default()
            },
        )?),
    }
}

/// Calls `f` on every request, in id order, a page at a time.
pub async fn for_each<E: From<StoreError>>(
    store: &dyn QueueStore,
    mut f: impl FnMut(RequestRecord) -> Result<(), E>,
) -> Result<(), E> {
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(after.as_deref(), 500).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.id.to_string());
        for r in page {
            f(r)?;
        }
    }
}

fn decode(id: &[u8], v: &[u8]) -> Result<RequestRecord, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        id: String::from_utf8_lossy(id).into_owned(),
        detail: e.to_string(),
    })
}

pub(crate) fn decode_event(seq: u64, v: &[u8]) -> Result<OutEvent, StoreError> {
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

#[cfg(test)]
mod tests;
