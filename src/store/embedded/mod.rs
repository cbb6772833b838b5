//! The embedded store on sled: one process, one data folder.
//!
//! # Trees and key layouts
//!
//! | tree | key | value |
//! |---|---|---|
//! | `requests` | request id (ULID text) | [`RequestRecord`] as JSON with a schema version |
//! | `due` | due time in ms, big-endian u64 ‖ request id | the registry to ask, or `!deliver`: the request needs attention at that time |
//! | `by_case` | case number ‖ 0x00 ‖ request id | empty |
//! | `documents` | document id (= request id), `{request}.attachment-{n}`, `{request}.asice`, or `crl-{sha256}` | the registry's signed envelope, an attachment that came with it (X-Road), its security server's signed document (X-Road), or a CRL that confirmed a signer (once per CRL), sealed with AES-256-GCM (see [`crypt`](super::crypt)) |
//! | `idempotency` | client ‖ 0x00 ‖ Idempotency-Key | the request ids it created and the body's SHA-256, as JSON |
//! | `outbox` | sequence number, big-endian u64 | an [`OutEvent`] waiting for its webhook, as JSON |
//! | `outbox_ids` | event id | its sequence number and creation time: events already written (also after they were sent) |
//! | `audit` | sequence number, big-endian u64 | an audit [`Entry`](crate::store::trail::Entry), hash-chained, as JSON; never removed |
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
//! transaction and one `flush` (group commit). Leases are flushed (through
//! the same committer) before their requests are sent, so the trail shows
//! every exchange. Other state changes are flushed by sled within
//! `store.sled_flush_ms` (500 ms by default); losing one in a crash only
//! repeats an attempt (same request id, which registries treat
//! idempotently) or a delivery (which rewrites the same file).
//!
//! # Files
//!
//! `open` opens the store and brings its layout up to date, `repair`
//! checks and salvages a stopped one, `quiet` keeps sled's panics on
//! damage out of the panic hook, `commit` is the group committer,
//! `change` writes changes, `requests` reads the queue, `chain` keeps the
//! audit trail, `events` the webhook outbox, `idempotency` the keys,
//! `documents` the sealed documents, `upkeep` the disk reserve; `facade`
//! puts the store's async traits over that sync core. `index` keeps the
//! secondary trees, `check` reads every tree whole and salvages.

mod chain;
mod change;
pub mod check;
mod commit;
mod documents;
mod events;
mod facade;
mod idempotency;
mod index;
mod open;
mod quiet;
mod repair;
mod requests;
mod upkeep;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::*;
use commit::Batch;
pub use open::{Opening, TREES_VERSION};
pub use repair::Repair;

#[derive(Clone)]
pub(super) struct Trees {
    pub(super) db: sled::Db,
    pub(super) requests: sled::Tree,
    pub(super) due: sled::Tree,
    pub(super) by_case: sled::Tree,
    pub(super) by_state: sled::Tree,
    pub(super) attention: sled::Tree,
    pub(super) deadlines: sled::Tree,
    pub(super) counts: sled::Tree,
    pub(super) documents: sled::Tree,
    pub(super) idempotency: sled::Tree,
    pub(super) outbox: sled::Tree,
    pub(super) outbox_ids: sled::Tree,
    pub(super) audit: sled::Tree,
    pub(super) audit_subject: sled::Tree,
    pub(super) meta: sled::Tree,
    /// The chain head: held while entries are chained and written, so
    /// that writers take turns.
    audit_head: Arc<std::sync::Mutex<crate::store::trail::Head>>,
    audit_rule: Arc<std::sync::RwLock<Option<crate::store::trail::AuditRule>>>,
}

/// The sled store. Every call that touches sled runs on tokio's blocking
/// threads (`spawn_blocking`), so that a transaction waiting on sled's
/// lock or on a page from disk never holds up the runtime's workers;
/// accepts go through the group committer, which does the same.
pub struct SledStore {
    core: Arc<Core>,
    committer: std::sync::Mutex<Option<mpsc::Sender<Batch>>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the blocking calls share with the store.
pub struct Core {
    pub(super) t: Trees,
    path: PathBuf,
    /// Accepts stop below this much free disk, long before sled would hit
    /// ENOSPC (on which its flush blocks rather than failing).
    min_free: u64,
    events: std::sync::RwLock<Option<EventRule>>,
    decoded: std::sync::atomic::AtomicU64,
    /// What could not be read while running.
    health: Health,
}

impl std::ops::Deref for SledStore {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}
