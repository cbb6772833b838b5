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

pub mod check;
mod index;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::sync::{lock, read, write};

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

fn idem_key(client: &str, key: &str) -> Vec<u8> {
    let mut k = client.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The layout of the trees, written to `meta` as `schema`. 2 added the
/// state, attention and deadline indexes and the counters; a store of
/// version 1 gets them built when it is opened.
pub const TREES_VERSION: u32 = 2;

/// Builds the secondary trees of every record from nothing, a thousand
/// records per transaction.
fn index_all(t: &Trees) -> Result<(), StoreError> {
    for tree in [&t.by_state, &t.attention, &t.deadlines, &t.counts] {
        tree.clear()?;
    }
    let mut after: Option<sled::IVec> = None;
    loop {
        let iter = match &after {
            Some(a) => t.requests.range::<&[u8], _>((
                std::ops::Bound::Excluded(a.as_ref()),
                std::ops::Bound::Unbounded,
            )),
            None => t.requests.iter(),
        };
        let mut page = Vec::new();
        for item in iter.take(1000) {
            let (k, v) = item?;
            page.push(decode(&k, &v)?);
            after = Some(k);
        }
        if page.is_empty() {
            return Ok(());
        }
        (
            &t.due,
            &t.by_case,
            &t.by_state,
            &t.attention,
            &t.deadlines,
            &t.counts,
        )
            .transaction(|(due, by_case, by_state, attention, deadlines, counts)| {
                let ix = index::Ix {
                    due,
                    by_case,
                    by_state,
                    attention,
                    deadlines,
                    counts,
                };
                let mut deltas = index::Deltas::default();
                for r in &page {
                    // As if new: the due and case keys are written again, unchanged.
                    index::change(&ix, &mut deltas, None, Some(r))?;
                }
                deltas.apply(ix.counts)
            })
            .map_err(|e: TransactionError<StoreError>| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::from(e),
            })?;
    }
}

type Batch = (
    Vec<RequestRecord>,
    Option<IdemKey>,
    oneshot::Sender<Result<Enqueued, StoreError>>,
);

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

impl Trees {
    fn audit_rule(&self) -> Option<crate::store::trail::AuditRule> {
        read(&self.audit_rule).clone()
    }

    fn head(&self) -> std::sync::MutexGuard<'_, crate::store::trail::Head> {
        lock(&self.audit_head)
    }
}

/// Writes one chained entry and its subject index keys.
fn put_entry(
    audit: &sled::transaction::TransactionalTree,
    by_subject: &sled::transaction::TransactionalTree,
    e: &crate::store::trail::Entry,
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
    head: &crate::store::trail::Head,
    drafts: Vec<crate::store::trail::Draft>,
) -> Result<crate::store::trail::Head, ConflictableTransactionError<StoreError>> {
    let mut h = head.clone();
    for d in drafts {
        let e = crate::store::trail::Entry::chained(d, h.seq + 1, &h.hash);
        put_entry(audit, by_subject, &e)?;
        h = crate::store::trail::Head {
            seq: e.seq,
            hash: e.hash,
        };
    }
    Ok(h)
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

/// The outcome of a conditional write.
enum Written {
    Done(Box<RequestRecord>),
    /// Another writer changed the record since it was read.
    Changed,
}

/// What a change came to, for each record asked.
enum Applied {
    Done(Box<RequestRecord>),
    /// The change said no.
    Declined,
    /// No such record.
    Missing,
}

impl SledStore {
    /// Changes records, and stores documents beside them, in one
    /// transaction. `f` is the caller's and may borrow from it, so it runs
    /// here, on the records as read; the write, on a blocking thread, takes
    /// place for each record only if it is still what `f` saw (else it is
    /// read and changed again: another writer came first).
    async fn change_many(
        &self,
        ids: &[&str],
        documents: &[(&str, &[u8])],
        f: &Change<'_>,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut out: Vec<Applied> = ids.iter().map(|_| Applied::Declined).collect();
        let mut todo: Vec<usize> = (0..ids.len()).collect();
        // A request's document goes with its record's write, and only if
        // that write takes place (a late answer, declined, must not replace
        // the document its record names), its attachments with it; the
        // others (CRLs) go at once.
        let (own, mut docs): (Vec<_>, Vec<_>) = documents
            .iter()
            .map(|(id, b)| (id.to_string(), b.to_vec()))
            .partition(|(id, _)| ids.contains(&super::document_owner(id)));
        while !todo.is_empty() || !docs.is_empty() {
            let keys: Vec<String> = todo.iter().map(|&i| ids[i].to_owned()).collect();
            let core = self.core.clone();
            let seen = core.run(move |core| core.get_many_now(&keys)).await?;
            let mut writes = Vec::new();
            let mut slots = Vec::new();
            for (&i, seen) in todo.iter().zip(seen) {
                let Some(seen) = seen else {
                    out[i] = Applied::Missing;
                    continue;
                };
                let mut new = decode(ids[i].as_bytes(), &seen)?;
                if !f(&mut new) {
                    out[i] = Applied::Declined;
                    continue;
                }
                writes.push((ids[i].to_owned(), seen.to_vec(), new));
                slots.push(i);
            }
            let core = self.core.clone();
            let mut docs = std::mem::take(&mut docs);
            docs.extend(
                own.iter()
                    .filter(|(id, _)| writes.iter().any(|(w, ..)| w == super::document_owner(id)))
                    .cloned(),
            );
            let written = core
                .run(move |core| core.update_batch_now(writes, docs))
                .await?;
            todo.clear();
            for (i, w) in slots.into_iter().zip(written) {
                match w {
                    Written::Done(r) => out[i] = Applied::Done(r),
                    Written::Changed => todo.push(i),
                }
            }
        }
        Ok(out)
    }
}

/// The start-up error for a damaged store in `dir`, naming the backups
/// beside it.
fn damaged_at(dir: &Path, detail: String) -> StoreError {
    StoreError::Damaged {
        path: dir.display().to_string(),
        detail,
        backups: dir
            .parent()
            .unwrap_or(dir)
            .join("backups")
            .display()
            .to_string(),
    }
}

/// How a sled store is opened.
#[derive(Debug, Clone)]
pub struct Opening {
    pub cache_bytes: u64,
    /// Free disk below which accepts are refused.
    pub min_free: u64,
    /// `store.sled_flush_ms`.
    pub flush_ms: u64,
    /// Check every tree before serving (`store.full_check`).
    pub full_check: bool,
}

impl Default for Opening {
    fn default() -> Self {
        Opening {
            cache_bytes: 64 << 20,
            min_free: SledStore::DEFAULT_MIN_FREE,
            flush_ms: crate::config::DEFAULT_SLED_FLUSH_MS,
            full_check: true,
        }
    }
}

/// Runs `f` on sled, turning sled's panics on some damage (`tried to
/// serialize Uninitialized` …) into the start-up error that names the
/// backups and `store salvage`. The panic is not printed: an operator
/// needs the error, not sled's source line and a backtrace (it goes to
/// the log, at debug).
fn guarded<T>(dir: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    quietly(f).unwrap_or_else(|panic| {
        Err(damaged_at(
            dir,
            format!(
                "sled failed while reading it: {}; `jumgw store salvage --out FILE` saves what is still readable",
                check::panic_text(&*panic)
            ),
        ))
    })
}

thread_local! {
    /// This thread is in [`quietly`]: its panics are caught there.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `catch_unwind` with the panic hook (process-wide) kept quiet for this
/// thread's panics only, for as long as `f` runs: they go to the log at
/// debug; another thread's panic meanwhile goes to the hook that was set
/// before, which is set again after.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    // Nested, or during an unwind (the hook cannot be changed then): the
    // hook in place does.
    if QUIET.with(|q| q.get()) || std::thread::panicking() {
        return catch_unwind(AssertUnwindSafe(f));
    }
    let _one = crate::sync::lock(&WINDOW);
    quiet_window(f)
}

/// One quiet window at a time: two stores opened at once would each
/// restore the other's hook (and a test that sets its own hook holds it).
static WINDOW: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`quietly`]'s window, with [`WINDOW`] held by the caller.
fn quiet_window<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    use std::panic::{catch_unwind, set_hook, take_hook, AssertUnwindSafe};
    let before = std::sync::Arc::new(take_hook());
    let others = before.clone();
    set_hook(Box::new(move |info| {
        if QUIET.with(|q| q.get()) {
            tracing::debug!(panic = %info, "sled panicked on a damaged store (caught)");
        } else {
            others(info)
        }
    }));
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    // Ours, dropped: `before` is held here alone again. A panic hook runs
    // under the lock `take_hook` takes, so none is running ours now.
    drop(take_hook());
    match std::sync::Arc::try_unwrap(before) {
        Ok(hook) => set_hook(hook),
        Err(shared) => set_hook(Box::new(move |info| shared(info))),
    }
    r
}

/// Opens the database and its trees, nothing more.
fn open_trees(dir: &Path, cache_bytes: u64, flush_ms: u64) -> Result<Trees, StoreError> {
    guarded(dir, || {
        let damaged = |detail: String| damaged_at(dir, detail);
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(flush_ms.max(1)));
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
        Ok(Trees {
            requests: tree("requests")?,
            due: tree("due")?,
            by_case: tree("by_case")?,
            by_state: tree("by_state")?,
            attention: tree("attention")?,
            deadlines: tree("deadlines")?,
            counts: tree("counts")?,
            documents: tree("documents")?,
            idempotency: tree("idempotency")?,
            outbox: tree("outbox")?,
            outbox_ids: tree("outbox_ids")?,
            audit: tree("audit")?,
            audit_subject: tree("audit_subject")?,
            meta: tree("meta")?,
            audit_head: Default::default(),
            audit_rule: Default::default(),
            db: db.clone(),
        })
    })
}

/// Brings an opened store up to this version's layout, finds the audit
/// chain's head and, with `full_check`, checks every tree
/// ([`check::check`]).
fn prepare(t: &Trees, dir: &Path, full_check: bool) -> Result<(), StoreError> {
    let damaged = |detail: String| damaged_at(dir, detail);
    let meta = &t.meta;
    let written = meta.get("schema").map_err(|e| damaged(e.to_string()))?;
    let found = match &written {
        // A new store: nothing to index.
        None if t.requests.is_empty() => TREES_VERSION,
        None => 1,
        Some(v) => <[u8; 4]>::try_from(v.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| damaged("unreadable schema version".into()))?,
    };
    if found > TREES_VERSION {
        return Err(StoreError::TooNew {
            path: dir.display().to_string(),
            found,
            known: TREES_VERSION,
        });
    }
    if found < 2 {
        tracing::info!(store = %dir.display(), "indexing the store by state, attention and deadline (once, for this version)");
        index_all(t).map_err(|e| damaged(e.to_string()))?;
    }
    // Written for a new store too: else its next start would take it for
    // the first layout and index it all again.
    if found != TREES_VERSION || written.is_none() {
        meta.insert("schema", &TREES_VERSION.to_be_bytes())
            .map_err(|e| damaged(e.to_string()))?;
    }
    if let Some((k, v)) = t.audit.last().map_err(|e| damaged(e.to_string()))? {
        let e: crate::store::trail::Entry = serde_json::from_slice(&v).map_err(|e| {
            damaged(format!(
                "the newest audit entry is unreadable ({e}); run `jumgw audit verify`"
            ))
        })?;
        *t.head() = crate::store::trail::Head {
            seq: seq_of(&k).map_err(|e| damaged(e.to_string()))?,
            hash: e.hash,
        };
    }
    if full_check {
        let report = check::check(t);
        if !report.is_clean() {
            return Err(damaged(format!(
                "{}; `jumgw store check` lists every problem, `jumgw store salvage --out FILE` saves what is readable",
                report.summary()
            )));
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()))?;
        } else {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Closes a damaged store on a thread of its own: sled's flusher thread may
/// have died on the damage, and dropping the database then waits for it
/// for ever (the lock on the folder is released when, if ever, it ends).
fn let_go(t: Trees) {
    let _ = std::thread::Builder::new()
        .name("sled-close".into())
        .spawn(move || drop(t));
}

/// A stopped store opened to be checked or salvaged: no committer, no
/// start-up check, no writes of ours.
pub struct Repair {
    t: Option<Trees>,
    dir: PathBuf,
    /// The copy a salvage reads when sled cannot open the store itself.
    _copy: Option<tempfile::TempDir>,
}

impl Repair {
    pub fn open(dir: &Path) -> Result<Repair, StoreError> {
        if !dir.join("conf").exists() {
            return Err(StoreError::Io(format!(
                "{} holds no sled store",
                dir.display()
            )));
        }
        Ok(Repair {
            t: Some(open_trees(
                dir,
                64 << 20,
                crate::config::DEFAULT_SLED_FLUSH_MS,
            )?),
            dir: dir.to_owned(),
            _copy: None,
        })
    }

    /// Like [`Repair::open`]; when sled cannot open the store as it is,
    /// opens a copy (beside the data folder) without what sled can do
    /// without: its `conf`, written fresh with the settings this gateway
    /// uses, or its snapshot, which it rebuilds from the log, or both; of
    /// those that open, the one with the most requests. Returns what was
    /// done to the copy, if anything. The store itself is never changed.
    pub fn open_for_salvage(dir: &Path) -> Result<(Repair, Option<String>), StoreError> {
        let first = match Repair::open(dir) {
            Ok(r) => return Ok((r, None)),
            Err(e) => e,
        };
        let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", dir.display()));
        let base = dir.parent().unwrap_or(dir);
        let mut best: Option<(usize, Repair, &str)> = None;
        for (fresh_conf, no_snapshot, how) in [
            (true, false, "with a fresh conf"),
            (false, true, "without its snapshot"),
            (true, true, "without its snapshot and with a fresh conf"),
        ] {
            let copy = tempfile::Builder::new()
                .prefix(".salvage-")
                .tempdir_in(base)
                .map_err(io)?;
            let at = copy.path().join("store");
            copy_tree(dir, &at).map_err(io)?;
            if no_snapshot {
                for e in std::fs::read_dir(&at).map_err(io)? {
                    let p = e.map_err(io)?.path();
                    if p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
                    {
                        std::fs::remove_file(&p).map_err(io)?;
                    }
                }
            }
            if fresh_conf {
                let fresh = copy.path().join("fresh");
                let t = open_trees(&fresh, 1 << 20, 1000)?;
                t.db.flush()?;
                std::fs::copy(fresh.join("conf"), at.join("conf")).map_err(io)?;
                let_go(t);
            }
            let Ok(t) = open_trees(&at, 64 << 20, crate::config::DEFAULT_SLED_FLUSH_MS) else {
                continue;
            };
            let n = guarded(&at, || {
                Ok(t.requests.iter().take_while(|i| i.is_ok()).count())
            })
            .unwrap_or(0);
            let r = Repair {
                t: Some(t),
                dir: dir.to_owned(),
                _copy: Some(copy),
            };
            if best.as_ref().is_none_or(|(m, _, _)| n > *m) {
                best = Some((n, r, how));
            }
        }
        match best {
            Some((_, r, how)) => Ok((
                r,
                Some(format!(
                    "sled cannot open the store as it is ({first}); read a copy of it {how}"
                )),
            )),
            None => Err(StoreError::Io(format!(
                "sled cannot open the store ({first}), nor a copy of it with a fresh conf or without its snapshot; restore the latest backup"
            ))),
        }
    }

    fn trees(&self) -> &Trees {
        // Taken only by `drop`.
        self.t.as_ref().expect("open until dropped")
    }

    pub fn check(&self) -> check::Report {
        guarded(&self.dir, || Ok(check::check(self.trees()))).unwrap_or_else(|e| {
            let mut r = check::Report::default();
            r.found("(all)", String::new(), e.to_string());
            r
        })
    }

    pub fn salvage(
        &self,
        w: &mut (dyn std::io::Write + Send),
    ) -> Result<check::Salvaged, crate::store::backup::BackupError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check::salvage(self.trees(), w)
        }))
        .unwrap_or_else(|p| {
            Err(StoreError::Corrupt {
                id: "(salvage)".into(),
                detail: check::panic_text(&*p),
            }
            .into())
        })
    }
}

impl Drop for Repair {
    fn drop(&mut self) {
        if let Some(t) = self.t.take() {
            let_go(t);
        }
    }
}

impl Core {
    /// Runs sled work on a blocking thread. What sled cannot read (an
    /// error or one of its panics) is noted in the store's health before
    /// the caller gets it.
    async fn run<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&Core) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&self)))
                .unwrap_or_else(|p| {
                    Err(StoreError::Corrupt {
                        id: "(a page)".into(),
                        detail: format!("sled failed reading it: {}", check::panic_text(&*p)),
                    })
                });
            if let Err(e @ StoreError::Corrupt { .. }) = &r {
                self.health.note(e);
            }
            r
        })
        .await
        .map_err(|e| StoreError::Io(format!("a store task failed: {e}")))?
    }
}

impl SledStore {
    /// Free disk below which accepts are refused, by default.
    pub const DEFAULT_MIN_FREE: u64 = 8 << 20;
    /// How long a group-commit flush may take before its accepts fail.
    pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    /// Opens (or creates) the store in `dir`, with the default reserve and
    /// flush interval, and checks it whole. Must be called inside a tokio
    /// runtime (the group committer is a task).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Arc<SledStore>, StoreError> {
        Self::open_with(
            dir,
            &Opening {
                cache_bytes,
                ..Opening::default()
            },
        )
    }

    pub fn open_with(dir: &Path, o: &Opening) -> Result<Arc<SledStore>, StoreError> {
        let t = open_trees(dir, o.cache_bytes, o.flush_ms)?;
        if let Err(e) = guarded(dir, || prepare(&t, dir, o.full_check)) {
            let_go(t);
            return Err(e);
        }
        let (tx, rx) = mpsc::channel::<Batch>(4096);
        let task = tokio::spawn(commit_loop(t.clone(), rx));
        Ok(Arc::new(SledStore {
            core: Arc::new(Core {
                t,
                path: dir.to_owned(),
                min_free: o.min_free,
                events: std::sync::RwLock::new(None),
                decoded: Default::default(),
                health: Default::default(),
            }),
            committer: std::sync::Mutex::new(Some(tx)),
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
}

impl Core {
    /// One record, as [`Requests::get`] gives it; for the walks here.
    fn read(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.t
            .requests
            .get(id.as_bytes())?
            .map(|v| self.decode(id.as_bytes(), &v))
            .transpose()
    }

    /// One record for an operator's view: one that cannot be read is
    /// noted in the store's health and left out.
    fn readable(&self, id: &str) -> Option<RequestRecord> {
        self.read(id).unwrap_or_else(|e| {
            self.health.note(&e);
            None
        })
    }

    /// Decodes a record read for a caller (counted: [`QueueStore::records_read`]).
    fn decode(&self, id: &[u8], v: &[u8]) -> Result<RequestRecord, StoreError> {
        self.decoded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        decode(id, v)
    }

    /// Calls `f` on each request `sel` selects, in `order`, after the id
    /// `after`, until `f` says stop. Walks the narrowest index, seeking by
    /// filing time where the selector bounds it.
    fn walk(
        &self,
        sel: &Selector,
        order: Order,
        after: Option<&str>,
        mut f: impl FnMut(RequestRecord) -> bool,
    ) -> Result<(), StoreError> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        // The tree, the key prefix before the id, and whether its values
        // are the records themselves.
        let (tree, prefix, records) = if sel.attention {
            (&self.t.attention, Vec::new(), false)
        } else if let Some(s) = sel.state {
            (&self.t.by_state, vec![index::state_code(s)], false)
        } else if let Some(c) = &sel.case {
            let mut p = c.as_bytes().to_vec();
            p.push(0);
            (&self.t.by_case, p, false)
        } else {
            (&self.t.requests, Vec::new(), true)
        };
        let key = |id: &str| {
            let mut k = prefix.clone();
            k.extend_from_slice(id.as_bytes());
            k
        };
        let floor = sel.created_before.map(|b| key(&super::query::id_floor(b)));
        let start = match order {
            Order::Oldest => after.map_or(Included(prefix.clone()), |a| Excluded(key(a))),
            Order::Newest => Included(prefix.clone()),
        };
        // Past the prefix: the prefix with its last byte raised, or the end.
        let past = {
            let mut p = prefix.clone();
            while let Some(last) = p.pop() {
                if last < 0xff {
                    p.push(last + 1);
                    break;
                }
            }
            if p.is_empty() {
                Unbounded
            } else {
                Excluded(p)
            }
        };
        let end = match (order, after, floor) {
            (Order::Newest, Some(a), Some(fl)) => Excluded(key(a).min(fl)),
            (Order::Newest, Some(a), None) => Excluded(key(a)),
            (_, _, Some(fl)) => Excluded(fl),
            (_, _, None) => past,
        };
        if let (Included(s) | Excluded(s), Excluded(e)) = (&start, &end) {
            if s >= e {
                return Ok(());
            }
        }
        let range = tree.range((start, end));
        // What cannot be read is skipped and counted (the store's health):
        // an operator's view of a damaged store shows the rest. A page sled
        // cannot read ends the walk, since the walk cannot get past it.
        let mut step = |item: sled::Result<(sled::IVec, sled::IVec)>| -> bool {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    self.health.note(&StoreError::from(e));
                    return false;
                }
            };
            let r = if records {
                self.decode(&k, &v)
            } else {
                self.read(&String::from_utf8_lossy(&k[prefix.len()..]))
                    .transpose()
                    .unwrap_or(Err(StoreError::NotFound(String::new())))
            };
            match r {
                Ok(r) => !sel.matches(&r) || f(r),
                Err(StoreError::NotFound(_)) => true,
                Err(e) => {
                    self.health.note(&e);
                    true
                }
            }
        };
        match order {
            Order::Oldest => {
                for item in range {
                    if !step(item) {
                        break;
                    }
                }
            }
            Order::Newest => {
                for item in range.rev() {
                    if !step(item) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is there room for a write other than an accept? Those go on inside
    /// the reserve, down to an eighth of it: below that a write could meet
    /// ENOSPC inside sled, which latches an I/O error that only a restart
    /// clears, where a refused write is only tried again.
    fn check_room(&self) -> Result<(), StoreError> {
        let available =
            fs4::available_space(&self.path).map_err(|e| StoreError::Io(e.to_string()))?;
        let minimum = self.min_free / 8;
        if available < minimum {
            return Err(StoreError::Full { available, minimum });
        }
        Ok(())
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
    let mut held = None;
    while let Some(mut pending) =
        crate::sync::gather(&mut rx, &mut held, 4096, |_| None::<()>).await
    {
        let now = now_ms();
        let rule = t.audit_rule();
        // The transaction on a blocking thread, with the batch it writes.
        let t2 = t.clone();
        let batch = std::mem::take(&mut pending);
        let done = tokio::task::spawn_blocking(move || {
            let t = t2;
            let pending = batch;
            let res = {
                let mut head = t.head();
                let res = (
                    &t.requests,
                    &t.due,
                    &t.by_case,
                    &t.idempotency,
                    &t.audit,
                    &t.audit_subject,
                    &t.by_state,
                    &t.attention,
                    &t.deadlines,
                    &t.counts,
                )
                    .transaction(
                        |(
                            req,
                            due,
                            by_case,
                            idem,
                            audit,
                            audit_subject,
                            by_state,
                            attention,
                            deadlines,
                            counts,
                        )| {
                            let ix = index::Ix {
                                due,
                                by_case,
                                by_state,
                                attention,
                                deadlines,
                                counts,
                            };
                            let mut drafts = Vec::new();
                            // Rebuilt on every run: sled may run this closure again.
                            let mut outcomes = Vec::with_capacity(pending.len());
                            let mut deltas = index::Deltas::default();
                            for (records, key, _) in &pending {
                                if let Some(k) = key {
                                    let kb = idem_key(&k.client, &k.key);
                                    // Read-your-writes: a duplicate within this batch sees the first.
                                    if let Some(v) = idem.get(&kb)? {
                                        let e: IdemEntry =
                                            serde_json::from_slice(&v).map_err(|e| {
                                                ConflictableTransactionError::Abort(
                                                    StoreError::Corrupt {
                                                        id: k.key.clone(),
                                                        detail: e.to_string(),
                                                    },
                                                )
                                            })?;
                                        outcomes.push(Enqueued::Existing(e));
                                        continue;
                                    }
                                    let e = IdemEntry {
                                        request_ids: records
                                            .iter()
                                            .map(|r| r.id.to_string())
                                            .collect(),
                                        body_hash: k.body_hash.clone(),
                                        created_ms: now,
                                    };
                                    idem.insert(kb, serde_json::to_vec(&e).unwrap_or_default())?;
                                }
                                for r in records {
                                    let old = req
                                        .insert(r.id.as_bytes(), encode(r))?
                                        .map(|v| decode(r.id.as_bytes(), &v))
                                        .transpose()
                                        .map_err(ConflictableTransactionError::Abort)?;
                                    index::change(&ix, &mut deltas, old.as_ref(), Some(r))?;
                                    if let Some(rule) = &rule {
                                        drafts.extend(rule(None, r));
                                    }
                                }
                                outcomes.push(Enqueued::Stored);
                            }
                            deltas.apply(ix.counts)?;
                            let new_head = chain_in(audit, audit_subject, &head, drafts)?;
                            Ok::<_, ConflictableTransactionError<StoreError>>((outcomes, new_head))
                        },
                    )
                    .map_err(|e: TransactionError<StoreError>| match e {
                        TransactionError::Abort(e) => e,
                        TransactionError::Storage(e) => StoreError::from(e),
                    });
                res.map(|(outcomes, new_head)| {
                    *head = new_head;
                    outcomes
                })
            };
            (pending, res)
        })
        .await;
        let res = match done {
            Ok((batch, res)) => {
                pending = batch;
                res
            }
            // The batch went with the failed task; its callers see their
            // replies dropped, which they report as a closed store.
            Err(e) => Err(StoreError::Io(format!("the committer failed: {e}"))),
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

#[async_trait]
impl Requests for SledStore {
    async fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> Result<Enqueued, StoreError> {
        self.check_space()?;
        let (tx, rx) = oneshot::channel();
        let committer = lock(&self.committer).clone();
        let committer = committer.ok_or(StoreError::Closed)?;
        committer
            .send((records, key, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let core = self.core.clone();
        let id = id.to_owned();
        core.run(move |core| core.get_now(&id)).await
    }

    async fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
        let core = self.core.clone();
        let case = case.to_owned();
        core.run(move |core| core.by_case_now(&case)).await
    }

    async fn evidence_due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.evidence_due_now(now_ms, limit))
            .await
    }

    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.due_now(now_ms, limit)).await
    }

    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.next_due_now()).await
    }

    async fn update(&self, id: &str, f: &Change<'_>) -> Result<Option<RequestRecord>, StoreError> {
        match self.change_many(&[id], &[], f).await?.pop() {
            Some(Applied::Missing) | None => Err(StoreError::NotFound(id.to_owned())),
            Some(Applied::Declined) => Ok(None),
            Some(Applied::Done(r)) => Ok(Some(*r)),
        }
    }

    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        let (core, keys) = (
            self.core.clone(),
            ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        );
        let raw = core.run(move |core| core.get_many_now(&keys)).await?;
        raw.iter()
            .zip(ids)
            .map(|(v, id)| {
                v.as_ref()
                    .map(|v| self.decode(id.as_bytes(), v))
                    .transpose()
            })
            .collect()
    }

    async fn update_many(
        &self,
        ids: &[&str],
        documents: &[(&str, &[u8])],
        f: &Change<'_>,
    ) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        Ok(self
            .change_many(ids, documents, f)
            .await?
            .into_iter()
            .map(|c| match c {
                Applied::Done(r) => Some(*r),
                Applied::Declined | Applied::Missing => None,
            })
            .collect())
    }

    async fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let core = self.core.clone();
        let after = after.map(str::to_owned);
        core.run(move |core| core.scan_now(after.as_deref(), limit))
            .await
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let core = self.core.clone();
        let id = id.to_owned();
        core.run(move |core| core.remove_now(&id)).await
    }

    async fn list(&self, q: &Listing) -> Result<Vec<RequestRecord>, StoreError> {
        let core = self.core.clone();
        let q = q.clone();
        core.run(move |core| core.list_now(&q)).await
    }

    async fn count(&self, sel: &Selector) -> Result<u64, StoreError> {
        let core = self.core.clone();
        let sel = sel.clone();
        core.run(move |core| core.count_now(&sel)).await
    }

    async fn tally(&self) -> Result<Tally, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.tally_now()).await
    }

    async fn by_deadline(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.by_deadline_now(until_ms, limit))
            .await
    }

    fn records_read(&self) -> u64 {
        self.decoded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl Documents for SledStore {
    async fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let core = self.core.clone();
        let id = id.to_owned();
        let bytes = bytes.to_vec();
        core.run(move |core| core.put_document_now(&id, &bytes))
            .await
    }

    async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let core = self.core.clone();
        let id = id.to_owned();
        core.run(move |core| core.document_now(&id)).await
    }
}

#[async_trait]
impl Idempotency for SledStore {
    async fn idempotency(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError> {
        let core = self.core.clone();
        let client = client.to_owned();
        let key = key.to_owned();
        core.run(move |core| core.idempotency_now(&client, &key))
            .await
    }

    async fn purge_idempotency(&self, before_ms: u64) -> Result<usize, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.purge_idempotency_now(before_ms))
            .await
    }
}

#[async_trait]
impl AuditTrail for SledStore {
    fn set_audit_rule(&self, rule: crate::store::trail::AuditRule) {
        *write(&self.t.audit_rule) = Some(rule);
    }

    async fn audit_append(
        &self,
        drafts: Vec<crate::store::trail::Draft>,
    ) -> Result<(), StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.audit_append_now(drafts)).await
    }

    async fn audit_scan(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::store::trail::Entry, String>)>, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.audit_scan_now(after_seq, limit))
            .await
    }

    async fn audit_by_subject(
        &self,
        hash: &str,
    ) -> Result<Vec<crate::store::trail::Entry>, StoreError> {
        let core = self.core.clone();
        let hash = hash.to_owned();
        core.run(move |core| core.audit_by_subject_now(&hash)).await
    }

    async fn audit_head(&self) -> Result<crate::store::trail::Head, StoreError> {
        Ok(self.t.head().clone())
    }

    async fn audit_restore(
        &self,
        entries: Vec<crate::store::trail::Entry>,
    ) -> Result<(), StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.audit_restore_now(entries)).await
    }
}

#[async_trait]
impl Outbox for SledStore {
    fn set_event_rule(&self, rule: EventRule) {
        *write(&self.events) = Some(rule);
    }

    async fn emit(&self, events: Vec<OutEvent>) -> Result<usize, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.emit_now(events)).await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.outbox_now(limit)).await
    }

    async fn event(&self, seq: u64) -> Result<Option<OutEvent>, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.event_now(seq)).await
    }

    async fn outbox_retry(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError> {
        let core = self.core.clone();
        let event = event.clone();
        core.run(move |core| core.outbox_retry_now(seq, &event))
            .await
    }

    async fn outbox_done(&self, seq: u64) -> Result<(), StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.outbox_done_now(seq)).await
    }

    async fn purge_event_ids(&self, before_ms: u64) -> Result<usize, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.purge_event_ids_now(before_ms))
            .await
    }
}

/// One process owns a sled store: its limits, pauses and clock are its own.
impl Coordination for SledStore {}

#[async_trait]
impl Upkeep for SledStore {
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let core = self.core.clone();
        core.run(move |core| core.size_on_disk_now()).await
    }

    fn read_faults(&self) -> Option<ReadFaults> {
        self.health.faults()
    }

    async fn check(&self) -> Result<crate::store::integrity::Report, StoreError> {
        let core = self.core.clone();
        core.run(|core| Ok(check::check(&core.t))).await
    }

    async fn writable(&self) -> bool {
        let core = self.core.clone();
        core.run(move |core| Ok(core.writable_now()))
            .await
            .unwrap_or(false)
    }

    async fn close(&self) -> Result<(), StoreError> {
        SledStore::close(self).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Through the committer, as an empty batch: sled 0.34 can hang
        // when several tasks flush at once, so one task does every flush.
        let committer = lock(&self.committer).clone();
        let Some(committer) = committer else {
            return self
                .t
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(StoreError::from);
        };
        let (tx, rx) = oneshot::channel();
        committer
            .send((Vec::new(), None, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map(|_| ())
    }
}

/// The sled work of each call, run by [`blocking`].
impl Core {
    /// Writes each `new` over its record if that is still `seen` (the
    /// bytes the caller's change was made from), with their indexes,
    /// events and audit entries, and the documents beside them (one under
    /// a record's id only if that record is written), in one transaction:
    /// a record changed (or removed) by another writer since it was read is
    /// left alone (`Changed`).
    fn update_batch_now(
        &self,
        writes: Vec<(String, Vec<u8>, RequestRecord)>,
        documents: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Written>, StoreError> {
        self.check_room()?;
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
            &t.by_case,
            &t.by_state,
            &t.attention,
            &t.deadlines,
            &t.counts,
            &t.documents,
        )
            .transaction(
                |(
                    req,
                    due,
                    outbox,
                    ids,
                    audit,
                    audit_subject,
                    by_case,
                    by_state,
                    attention,
                    deadlines,
                    counts,
                    docs,
                )| {
                    let ix = index::Ix {
                        due,
                        by_case,
                        by_state,
                        attention,
                        deadlines,
                        counts,
                    };
                    // Rebuilt on every run: sled may run this closure again.
                    let mut deltas = index::Deltas::default();
                    let mut drafts = Vec::new();
                    let mut raised = 0;
                    let mut out = Vec::with_capacity(writes.len());
                    for (id, seen, new) in &writes {
                        let Some(cur) = req.get(id.as_bytes())? else {
                            // Removed meanwhile (retention): nothing to change.
                            out.push(None);
                            continue;
                        };
                        if cur != seen.as_slice() {
                            out.push(None);
                            continue;
                        }
                        let old = decode(id.as_bytes(), &cur)
                            .map_err(ConflictableTransactionError::Abort)?;
                        index::change(&ix, &mut deltas, Some(&old), Some(new))?;
                        req.insert(id.as_bytes(), encode(new))?;
                        if let Some(ev) = &events {
                            for e in (ev.rule)(&old, new) {
                                raised += put_event(outbox, ids, &e)?;
                            }
                        }
                        if let Some(r) = &rule {
                            drafts.extend(r(Some(&old), new));
                        }
                        out.push(Some(new.clone()));
                    }
                    // A record's document only if its write took place.
                    for (id, bytes) in &documents {
                        let lost = writes
                            .iter()
                            .zip(&out)
                            .any(|((w, ..), r)| w == id && r.is_none());
                        if !lost {
                            docs.insert(id.as_bytes(), bytes.as_slice())?;
                        }
                    }
                    deltas.apply(ix.counts)?;
                    let new_head = chain_in(audit, audit_subject, &head, drafts)?;
                    Ok((out, raised, new_head))
                },
            );
        let res = res.map(|(out, raised, new_head)| {
            *head = new_head;
            (out, raised)
        });
        drop(head);
        match res {
            Ok((out, raised)) => {
                if raised > 0 {
                    if let Some(ev) = &events {
                        ev.notify.notify_one();
                    }
                }
                Ok(out
                    .into_iter()
                    .map(|r| r.map_or(Written::Changed, |r| Written::Done(Box::new(r))))
                    .collect())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn get_many_now(&self, ids: &[String]) -> Result<Vec<Option<sled::IVec>>, StoreError> {
        ids.iter()
            .map(|id| Ok(self.t.requests.get(id.as_bytes())?))
            .collect()
    }

    fn get_now(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.read(id)
    }

    fn by_case_now(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
        let mut prefix = case.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.t.by_case.scan_prefix(&prefix) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(r) = self.readable(&id) {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn evidence_due_now(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let start = [index::STAMP_PENDING];
        let end = index::stamp_key(now_ms.saturating_add(1), "");
        let mut out = Vec::new();
        for item in self.t.by_state.range(start.as_slice()..end.as_slice()) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(k.get(9..).unwrap_or_default()).into_owned();
            if let Some(r) = self.readable(&id) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn due_now(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
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

    fn next_due_now(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.t.due.first()?.map(|(k, _)| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[..8]);
            u64::from_be_bytes(b)
        }))
    }

    fn scan_now(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
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
            out.push(self.decode(&k, &v)?);
        }
        Ok(out)
    }

    fn remove_now(&self, id: &str) -> Result<(), StoreError> {
        self.check_room()?;
        let t = &self.t;
        let res = (
            &t.requests,
            &t.due,
            &t.by_case,
            &t.documents,
            &t.by_state,
            &t.attention,
            &t.deadlines,
            &t.counts,
        )
            .transaction(
                |(req, due, by_case, docs, by_state, attention, deadlines, counts)| {
                    let ix = index::Ix {
                        due,
                        by_case,
                        by_state,
                        attention,
                        deadlines,
                        counts,
                    };
                    if let Some(cur) = req.remove(id.as_bytes())? {
                        let r = decode(id.as_bytes(), &cur)
                            .map_err(ConflictableTransactionError::Abort)?;
                        let mut deltas = index::Deltas::default();
                        index::change(&ix, &mut deltas, Some(&r), None)?;
                        deltas.apply(ix.counts)?;
                        docs.remove(id.as_bytes())?;
                        // And every document of its own beside it
                        // (`{id}.*`: attachments, a signed document).
                        for d in r.documents_beside() {
                            docs.remove(d.as_bytes())?;
                        }
                    }
                    Ok(())
                },
            );
        match res {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn list_now(&self, q: &Listing) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = Vec::new();
        self.walk(&q.selector, q.order, q.after.as_deref(), |r| {
            out.push(r);
            out.len() < q.limit
        })?;
        Ok(out)
    }

    fn count_now(&self, sel: &Selector) -> Result<u64, StoreError> {
        if sel.counted() {
            return Ok(self.tally_now()?.of(sel));
        }
        let mut n = 0;
        self.walk(sel, Order::Oldest, None, |_| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    fn tally_now(&self) -> Result<Tally, StoreError> {
        let mut t = Tally::default();
        for item in self.t.counts.iter() {
            let (k, v) = item?;
            // A counter that does not read is skipped and counted, as a
            // record is in a walk.
            let bad = || {
                self.health.note(&StoreError::Corrupt {
                    id: format!("counter {}", String::from_utf8_lossy(&k).replace('\0', " ")),
                    detail: "not a counter".into(),
                })
            };
            let Ok(n) = <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes) else {
                bad();
                continue;
            };
            let Some(sep) = k.iter().position(|b| *b == 0) else {
                bad();
                continue;
            };
            let registry = String::from_utf8_lossy(&k[..sep]).into_owned();
            let what = &k[sep + 1..];
            if what == index::AT_RISK.as_bytes() {
                t.at_risk += n;
            } else if let Some(s) = State::ALL.iter().find(|s| s.name().as_bytes() == what) {
                t.by_registry.insert((registry, *s), n);
            } else {
                bad();
            }
        }
        for s in State::UNFETCHED {
            let first = self.t.by_state.scan_prefix([index::state_code(s)]).next();
            if let Some(item) = first {
                let (k, _) = item?;
                if let Some(r) = self.readable(&String::from_utf8_lossy(&k[1..])) {
                    t.oldest_open_ms = Some(
                        t.oldest_open_ms
                            .map_or(r.created_ms, |o| o.min(r.created_ms)),
                    );
                }
            }
        }
        Ok(t)
    }

    fn by_deadline_now(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let end = until_ms.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.t.deadlines.range(..end.as_slice()) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            if let Some(r) = self.readable(&String::from_utf8_lossy(&k[8..])) {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn put_document_now(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_room()?;
        self.t.documents.insert(id.as_bytes(), bytes)?;
        Ok(())
    }

    fn document_now(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t.documents.get(id.as_bytes())?.map(|v| v.to_vec()))
    }

    fn idempotency_now(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError> {
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

    fn purge_idempotency_now(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.check_room()?;
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

    fn audit_append_now(&self, drafts: Vec<crate::store::trail::Draft>) -> Result<(), StoreError> {
        self.check_room()?;
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

    #[allow(clippy::type_complexity)]
    fn audit_scan_now(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::store::trail::Entry, String>)>, StoreError> {
        let start = after_seq.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.t.audit.range(start..).take(limit) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            out.push((seq, serde_json::from_slice(&v).map_err(|e| e.to_string())));
        }
        Ok(out)
    }

    fn audit_by_subject_now(
        &self,
        hash: &str,
    ) -> Result<Vec<crate::store::trail::Entry>, StoreError> {
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

    fn audit_restore_now(
        &self,
        entries: Vec<crate::store::trail::Entry>,
    ) -> Result<(), StoreError> {
        self.check_room()?;
        let mut head = self.t.head();
        let res = (&self.t.audit, &self.t.audit_subject).transaction(|(audit, by_subject)| {
            let mut h = head.clone();
            for e in &entries {
                if e.seq <= h.seq {
                    return Err(ConflictableTransactionError::Abort(StoreError::Corrupt {
                        id: format!("audit entry {}", e.seq),
                        detail: format!("the trail is already at entry {}", h.seq),
                    }));
                }
                put_entry(audit, by_subject, e)?;
                h = crate::store::trail::Head {
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

    fn emit_now(&self, events: Vec<OutEvent>) -> Result<usize, StoreError> {
        self.check_room()?;
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

    fn outbox_now(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.outbox.iter().take(limit) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            out.push((seq, decode_event(seq, &v)?));
        }
        Ok(out)
    }

    fn event_now(&self, seq: u64) -> Result<Option<OutEvent>, StoreError> {
        self.t
            .outbox
            .get(seq.to_be_bytes())?
            .map(|v| decode_event(seq, &v))
            .transpose()
    }

    fn outbox_retry_now(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError> {
        self.check_room()?;
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

    fn outbox_done_now(&self, seq: u64) -> Result<(), StoreError> {
        self.check_room()?;
        self.t.outbox.remove(seq.to_be_bytes())?;
        Ok(())
    }

    fn purge_event_ids_now(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.check_room()?;
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

    fn size_on_disk_now(&self) -> Result<u64, StoreError> {
        Ok(self.t.db.size_on_disk()?)
    }

    fn writable_now(&self) -> bool {
        // Free space is the signal, and accepts check the same. The probe
        // writes a file beside the store, never into sled: a write there
        // waits in sled's log for its flusher, and a disk that fills in
        // the meantime latches sled into an I/O error that only a restart
        // clears (a test filling the disk caught it, one run in a dozen).
        self.check_space().is_ok() && {
            let probe = self.path.with_extension("probe");
            std::fs::write(&probe, b"1")
                .and_then(|()| std::fs::remove_file(&probe))
                .is_ok()
        }
    }
}

#[cfg(test)]
mod quiet_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A panic of this thread inside [`super::quietly`] is caught and not
    /// given to the hook; another thread's panic meanwhile still is; after
    /// it, the hook that was there is there again.
    #[test]
    fn a_quiet_window_keeps_only_its_own_threads_panics_from_the_hook() {
        static OTHER: AtomicUsize = AtomicUsize::new(0);
        static QUIET: AtomicUsize = AtomicUsize::new(0);
        static AFTER: AtomicUsize = AtomicUsize::new(0);
        // Counts ours, passes every panic on: other tests' panics still
        // print.
        // No store opens (and swaps the hook) while this test's hook is in.
        let _window = crate::sync::lock(&super::WINDOW);
        let original = Arc::new(std::panic::take_hook());
        let inner = original.clone();
        std::panic::set_hook(Box::new(move |info| {
            let text = info.to_string();
            for (marker, n) in [
                ("marker-other-thread", &OTHER),
                ("marker-quiet", &QUIET),
                ("marker-after", &AFTER),
            ] {
                if text.contains(marker) {
                    n.fetch_add(1, Ordering::SeqCst);
                }
            }
            inner(info)
        }));
        let r = super::quiet_window(|| {
            let other = std::thread::spawn(|| panic!("marker-other-thread"));
            assert!(other.join().is_err());
            panic!("marker-quiet");
        });
        let text = super::check::panic_text(&*r.expect_err("the panic is caught"));
        assert!(text.contains("marker-quiet"), "{text}");
        assert_eq!(OTHER.load(Ordering::SeqCst), 1, "the other thread's panic");
        assert_eq!(
            QUIET.load(Ordering::SeqCst),
            0,
            "the quiet panic reached the hook"
        );
        let after = std::panic::catch_unwind(|| panic!("marker-after"));
        assert!(after.is_err());
        assert_eq!(
            AFTER.load(Ordering::SeqCst),
            1,
            "the hook was not set again"
        );
        // The harness's own hook back.
        drop(std::panic::take_hook());
        if let Ok(hook) = Arc::try_unwrap(original) {
            std::panic::set_hook(hook);
        }
    }
}
