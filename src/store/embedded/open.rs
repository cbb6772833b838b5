//! Opening a sled store: the database and its trees, the layout brought
//! up to this version (a version-1 store indexed once), the chain's head
//! found, the start-up check, the committer started; and closing.

use std::path::Path;

use sled::transaction::{TransactionError, Transactional};
use tokio::sync::mpsc;

use super::commit::{commit_loop, Batch};
use super::quiet::quietly;
use super::*;
use crate::sync::lock;

/// The layout of the trees, written to `meta` as `schema`. 2 added the
/// state, attention and deadline indexes and the counters; a store of
/// version 1 gets them built when it is opened.
pub const TREES_VERSION: u32 = 2;

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

impl SledStore {
    /// Free disk below which accepts are refused, by default.
    pub const DEFAULT_MIN_FREE: u64 = 8 << 20;

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

/// The start-up error for a damaged store in `dir`, naming the backups
/// beside it.
pub(super) fn damaged_at(dir: &Path, detail: String) -> StoreError {
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

/// Runs `f` on sled, turning sled's panics on some damage (`tried to
/// serialize Uninitialized` …) into the start-up error that names the
/// backups and `store salvage`. The panic is not printed: an operator
/// needs the error, not sled's source line and a backtrace (it goes to
/// the log, at debug).
pub(super) fn guarded<T>(
    dir: &Path,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
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

/// Opens the database and its trees, nothing more.
pub(super) fn open_trees(dir: &Path, cache_bytes: u64, flush_ms: u64) -> Result<Trees, StoreError> {
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
    super::chain::load_head(t).map_err(damaged)?;
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

/// Closes a damaged store on a thread of its own: sled's flusher thread may
/// have died on the damage, and dropping the database then waits for it
/// for ever (the lock on the folder is released when, if ever, it ends).
pub(super) fn let_go(t: Trees) {
    let _ = std::thread::Builder::new()
        .name("sled-close".into())
        .spawn(move || drop(t));
}
