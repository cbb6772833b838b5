//! The PostgreSQL store: the same [`QueueStore`] as sled, for a hub where
//! several `jumgw` instances share one queue. It owns the schema and its
//! migrations, and everything the instances must agree on:
//!
//! - **Leases.** A dispatcher round's due requests are leased together
//!   with one `SELECT … FOR UPDATE SKIP LOCKED` over their rows and one
//!   `UPDATE … FROM unnest(…)`: two instances never lease one request, and
//!   one never waits for a row another is leasing. A lease is a due time,
//!   so an instance that dies leaves requests that are simply due again
//!   when their lease expires.
//! - **Batches.** Accepts are group-committed by one task per instance
//!   (one transaction, one multi-row insert per table), and what attempts
//!   came to is written a batch per transaction (`update_many`).
//! - **Time.** Leases and due times are in the database's clock: each
//!   instance measures its offset from `clock_timestamp()` at start and
//!   every 30 s ([`Coordination::clock_ms`]), so no instance trusts another
//!   machine's clock.
//! - **Registry limits.** Max in flight (live leases counted in the
//!   database), the request rate (a token bucket) and the circuit breaker
//!   are kept in the `gates` row of each registry, locked in the leasing
//!   transaction; an administrator's pause is a column of that row, pushed
//!   to every instance by `NOTIFY`.
//! - **Wake-ups.** Accepting a request, making one due now or raising an
//!   event sends `NOTIFY`; a listener task per instance wakes its
//!   dispatcher or webhook sender, which otherwise sleep until the next
//!   due time.
//! - **Jobs of the whole store** (webhooks, backups, retention, the
//!   deadline watch, checkpoints) are held with a session advisory lock by
//!   one instance at a time, released when its connection ends (also by
//!   SIGKILL) and then taken by another ([`Coordination::lead`]).
//! - **The audit chain** is one chain for all instances. Entries are
//!   written in the transaction of the change they record, into
//!   `audit_pending`; one writer at a time (the head row's lock) chains
//!   them in order into `audit`, soon after the commit, and readers chain
//!   what is pending before they read. So no change holds the chain's head
//!   through its commit.
//!
//! Every commit is durable (`synchronous_commit` as the server has it, on
//! by default): `202 Accepted` follows the commit of the request.
//!
//! Asynchronous throughout, on tokio-postgres: one pool (deadpool) whose
//! connections keep their statements prepared ([`conn`]); the listener
//! ([`listen`]) and the audit chainer ([`chain`]) are tasks on the
//! runtime that opened the store, and the leader's advisory locks
//! ([`gates`]) a session of their own. Here: the store, its requests,
//! documents and idempotency keys, leases and the views' queries; the
//! schema in [`schema`], events in [`events`], the columns written from a
//! record in `columns`.

mod chain;
mod check;
mod columns;
mod conn;
mod events;
mod gates;
mod listen;
mod schema;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::{
    now_ms, Coordination, Documents, Due, Enqueued, EventRule, GateLimits, IdemEntry, IdemKey,
    Idempotency, Lease, Listing, Order, RequestRecord, Requests, Selector, State, StoreError,
    Tally, Upkeep, Work,
};
use crate::sync::{lock, read};
pub use conn::{create_database, display_url, drop_database};
use conn::{Conn, Db, Pool, Tx};
use listen::{NOTIFY_EVENTS, NOTIFY_WORK};
pub use schema::SCHEMA_VERSION;

/// The database's clock minus ours, in ms, taking the round trip's
/// midpoint as the moment the database read its clock.
async fn clock_offset(c: &tokio_postgres::Client) -> Result<i64, tokio_postgres::Error> {
    let before = now_ms() as i64;
    let db: i64 = c
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .await?
        .get(0);
    Ok(db - (before + now_ms() as i64) / 2)
}

fn ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// What the store's tasks share with it.
struct Shared {
    /// For the sessions that are not pooled (the listener, the leader).
    config: tokio_postgres::Config,
    url: String,
    stop: AtomicBool,
    /// Audit drafts await chaining.
    pending: tokio::sync::Notify,
    /// Database clock minus ours, in ms.
    offset: AtomicI64,
    watch: RwLock<Option<Watch>>,
    events: RwLock<Option<EventRule>>,
}

impl Shared {
    /// Ends the chainer and the listener within 200 ms, and with them
    /// their connections.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.pending.notify_one();
    }
}

use crate::store::Watch;

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    shared: Arc<Shared>,
    audit_rule: RwLock<Option<crate::store::trail::AuditRule>>,
    /// The session that holds this instance's advisory locks, and the
    /// roles it holds.
    leader: tokio::sync::Mutex<(Option<tokio_postgres::Client>, HashSet<String>)>,
    /// The listener and the chainer.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    decoded: std::sync::atomic::AtomicU64,
    /// Accepts go through one committer that batches them.
    accepts: tokio::sync::mpsc::Sender<Accept>,
}

impl PgStore {
    /// Connects, applies migrations and starts the listener and the
    /// chainer (tasks on the current runtime). `url` is a libpq URL or
    /// key=value string.
    pub async fn open(url: &str, pool_size: u32) -> Result<Arc<PgStore>, StoreError> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Postgres {
                url: "(unreadable URL)".into(),
                detail: format!("{e}; expected postgres://user@host:port/database"),
            })?;
        let shown = display_url(&config);
        let err = |detail: String| StoreError::Postgres {
            url: shown.clone(),
            detail,
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("jumgw");
        let pool = conn::pool(config.clone(), pool_size as usize).map_err(err)?;
        let shared = Arc::new(Shared {
            config,
            url: shown.clone(),
            stop: AtomicBool::new(false),
            pending: Default::default(),
            offset: AtomicI64::new(0),
            watch: RwLock::new(None),
            events: RwLock::new(None),
        });
        // The first connection says at once why it cannot be made (the
        // server's reason), before anything else starts.
        let mut c = pool.get().await.map_err(|e| err(why(&e)))?;
        schema::migrate(&mut c, &shown).await?;
        let offset = clock_offset(&c).await.map_err(|e| err(why(&e)))?;
        shared.offset.store(offset, Ordering::Relaxed);
        drop(c);
        let tasks = vec![
            tokio::spawn(chain::chainer(shared.clone(), pool.clone())),
            tokio::spawn(listen::listen(shared.clone())),
        ];
        let (accepts, accepts_rx) = tokio::sync::mpsc::channel(4096);
        let store = Arc::new(PgStore {
            pool,
            shared,
            audit_rule: RwLock::new(None),
            leader: tokio::sync::Mutex::new((None, HashSet::new())),
            tasks: Mutex::new(tasks),
            decoded: Default::default(),
            accepts,
        });
        let committer = tokio::spawn(accept_loop(Arc::downgrade(&store), accepts_rx));
        lock(&store.tasks).push(committer);
        Ok(store)
    }

    fn err(&self, e: impl std::error::Error) -> StoreError {
        StoreError::Postgres {
            url: self.shared.url.clone(),
            detail: why(&e),
        }
    }

    /// Runs `f` on a pooled connection.
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        let mut c = self.pool.get().await.map_err(|e| self.err(e))?;
        f(&mut c).await
    }

    /// Runs `f` in a transaction; commits if it returns `Ok`.
    async fn tx<T>(
        &self,
        f: impl AsyncFnOnce(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(async |c| {
            let t = c.transaction().await.map_err(|e| self.err(e))?;
            let v = f(&t).await?;
            t.commit().await.map_err(|e| self.err(e))?;
            Ok(v)
        })
        .await
    }

    fn audit_rule(&self) -> Option<crate::store::trail::AuditRule> {
        read(&self.audit_rule).clone()
    }

    /// Wakes the chainer after a commit that may have written drafts.
    fn poke(&self) {
        if read(&self.audit_rule).is_some() {
            self.shared.pending.notify_one();
        }
    }

    /// Chains everything pending now (readers of the trail call this
    /// first, so they see every committed entry).
    async fn chain_now(&self) -> Result<(), StoreError> {
        self.with(async |c| {
            while chain::chain_pending(c).await.map_err(|e| self.err(e))? == 5000 {}
            Ok(())
        })
        .await
    }

    fn event_rule(&self) -> Option<EventRule> {
        read(&self.shared.events).clone()
    }

    /// Writes a changed record with its events and audit entries; returns
    /// how many events it raised.
    async fn write_change(
        &self,
        t: &Tx<'_>,
        old: &RequestRecord,
        new: &mut RequestRecord,
    ) -> Result<usize, StoreError> {
        self.write_changes(t, &[(old, &*new)]).await
    }

    /// Writes changed records (one statement for all of them), with their
    /// events and audit entries; returns how many events they raised.
    async fn write_changes(
        &self,
        t: &Tx<'_>,
        changes: &[(&RequestRecord, &RequestRecord)],
    ) -> Result<usize, StoreError> {
        if changes.is_empty() {
            return Ok(0);
        }
        let e = |x: tokio_postgres::Error| self.err(x);
        let news: Vec<&RequestRecord> = changes.iter().map(|(_, n)| *n).collect();
        columns::UPDATE.run(t, &news).await.map_err(e)?;
        let mut raised = 0;
        if let Some(ev) = self.event_rule() {
            let events: Vec<_> = changes
                .iter()
                .flat_map(|(old, new)| (ev.rule)(old, new))
                .collect();
            raised = events::put_events(t, &events).await.map_err(e)?;
        }
        if raised > 0 {
            t.run(NOTIFY_EVENTS, &[]).await.map_err(e)?;
        }
        // Made due now (an administrator's retry, a resume): wake every
        // instance, not only this one.
        let now = self.clock_ms();
        if changes
            .iter()
            .any(|(o, n)| n.due_ms != o.due_ms && n.due_ms.is_some_and(|d| d <= now))
        {
            t.run(NOTIFY_WORK, &[]).await.map_err(e)?;
        }
        if let Some(rule) = self.audit_rule() {
            let drafts: Vec<_> = changes
                .iter()
                .flat_map(|(old, new)| rule(Some(old), new))
                .collect();
            chain::pend(t, drafts).await.map_err(e)?;
        }
        Ok(raised)
    }

    /// Loads and changes records under their row locks, in id order (so
    /// that two batches never wait on each other in a cycle); `skip`
    /// passes over rows locked by another transaction. Returns the records
    /// `f` changed, as (old, new), in id order.
    async fn change_many(
        &self,
        t: &Tx<'_>,
        ids: &[&str],
        skip: bool,
        f: &super::Change<'_>,
    ) -> Result<Vec<(RequestRecord, RequestRecord)>, StoreError> {
        let sql = if skip {
            "SELECT id, record FROM requests WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT id, record FROM requests WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        };
        let rows = t.rows(sql, &[&ids]).await.map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get(0);
            let text: String = row.get(1);
            let old = super::decode(id.as_bytes(), text.as_bytes())?;
            let mut new = old.clone();
            if f(&mut new) {
                out.push((old, new));
            }
        }
        Ok(out)
    }

    fn after_events(&self, raised: usize) {
        if raised > 0 {
            if let Some(ev) = self.event_rule() {
                ev.notify.notify_one();
            }
        }
    }

    /// Loads and changes one record under its row lock (waiting for it);
    /// `None` if `f` said no.
    async fn change(
        &self,
        t: &Tx<'_>,
        id: &str,
        f: &super::Change<'_>,
    ) -> Result<Option<(RequestRecord, RequestRecord)>, StoreError> {
        let sql = "SELECT record FROM requests WHERE id = $1 FOR UPDATE";
        let Some(row) = t.opt(sql, &[&id]).await.map_err(|e| self.err(e))? else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        let text: String = row.get(0);
        let old = super::decode(id.as_bytes(), text.as_bytes())?;
        let mut new = old.clone();
        if !f(&mut new) {
            return Ok(None);
        }
        Ok(Some((old, new)))
    }
}

/// `records` in the order of `ids`: `None` for an id none of them has.
fn in_order(
    ids: &[&str],
    records: impl IntoIterator<Item = RequestRecord>,
) -> Vec<Option<RequestRecord>> {
    let mut by_id: std::collections::HashMap<String, RequestRecord> =
        records.into_iter().map(|r| (r.id.to_string(), r)).collect();
    ids.iter().map(|id| by_id.remove(*id)).collect()
}

/// An accept waiting for the committer, and who waits for its outcome.
type Accept = (
    Vec<RequestRecord>,
    Option<IdemKey>,
    tokio::sync::oneshot::Sender<Result<Enqueued, StoreError>>,
);

/// Group commit of accepts: takes every accept that is waiting and writes
/// them in one transaction (one statement per table), then the next. An
/// idempotency key is taken once per batch: a second accept under the
/// same key waits for the next, where it finds the key taken.
async fn accept_loop(store: std::sync::Weak<PgStore>, mut rx: tokio::sync::mpsc::Receiver<Accept>) {
    let mut held: Option<Accept> = None;
    let key_of = |a: &Accept| a.1.as_ref().map(|k| (k.client.clone(), k.key.clone()));
    while let Some(batch) = crate::sync::gather(&mut rx, &mut held, 1024, key_of).await {
        let Some(store) = store.upgrade() else {
            for (_, _, reply) in batch {
                let _ = reply.send(Err(StoreError::Closed));
            }
            return;
        };
        match store.accept_batch(&batch).await {
            Ok(outs) => {
                for ((_, _, reply), o) in batch.into_iter().zip(outs) {
                    let _ = reply.send(Ok(o));
                }
            }
            Err(e) => {
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl PgStore {
    /// Writes a batch of accepts in one transaction: the new idempotency
    /// keys, the requests of every accept whose key was free (or that has
    /// none), their audit drafts; returns each accept's outcome.
    async fn accept_batch(&self, batch: &[Accept]) -> Result<Vec<Enqueued>, StoreError> {
        let now = now_ms();
        let rule = self.audit_rule();
        let out = self
            .tx(async |t| {
                let e = |x: tokio_postgres::Error| self.err(x);
                let mut outs: Vec<Enqueued> = vec![Enqueued::Stored; batch.len()];
                let keyed: Vec<(usize, &IdemKey)> = batch
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, k, _))| k.as_ref().map(|k| (i, k)))
                    .collect();
                if !keyed.is_empty() {
                    let clients: Vec<&str> = keyed.iter().map(|(_, k)| k.client.as_str()).collect();
                    let names: Vec<&str> = keyed.iter().map(|(_, k)| k.key.as_str()).collect();
                    let entries: Vec<String> = keyed
                        .iter()
                        .map(|(i, k)| {
                            serde_json::to_string(&IdemEntry {
                                request_ids: batch[*i].0.iter().map(|r| r.id.to_string()).collect(),
                                body_hash: k.body_hash.clone(),
                                created_ms: now,
                            })
                            .unwrap_or_default()
                        })
                        .collect();
                    let created: Vec<i64> = vec![ms(now); keyed.len()];
                    // A key taken meanwhile by another instance: the insert
                    // waits for its commit, then skips it.
                    let rows = t
                        .rows(
                            "INSERT INTO idempotency (client, key, entry, created_ms) \
                             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) \
                             ON CONFLICT DO NOTHING RETURNING client, key",
                            &[&clients, &names, &entries, &created],
                        )
                        .await
                        .map_err(e)?;
                    let fresh: HashSet<(String, String)> =
                        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                    for (i, k) in keyed {
                        if fresh.contains(&(k.client.clone(), k.key.clone())) {
                            continue;
                        }
                        let row = t
                            .one(
                                "SELECT entry FROM idempotency WHERE client = $1 AND key = $2",
                                &[&k.client, &k.key],
                            )
                            .await
                            .map_err(e)?;
                        let text: String = row.get(0);
                        let held =
                            serde_json::from_str(&text).map_err(|x| StoreError::Corrupt {
                                id: k.key.clone(),
                                detail: x.to_string(),
                            })?;
                        outs[i] = Enqueued::Existing(held);
                    }
                }
                let records: Vec<&RequestRecord> = batch
                    .iter()
                    .zip(&outs)
                    .filter(|(_, o)| matches!(o, Enqueued::Stored))
                    .flat_map(|((recs, _, _), _)| recs)
                    .collect();
                if !records.is_empty() {
                    self.insert_records(t, &records).await?;
                    if records.iter().any(|r| r.due_ms.is_some()) {
                        t.run(NOTIFY_WORK, &[]).await.map_err(e)?;
                    }
                    if let Some(rule) = &rule {
                        let drafts: Vec<_> = records.iter().flat_map(|r| rule(None, r)).collect();
                        chain::pend(t, drafts).await.map_err(e)?;
                    }
                }
                Ok(outs)
            })
            .await;
        self.poke();
        out
    }

    /// New records, in one statement.
    async fn insert_records(
        &self,
        t: &Tx<'_>,
        records: &[&RequestRecord],
    ) -> Result<(), StoreError> {
        columns::INSERT
            .run(t, records)
            .await
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.shared.stop();
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.pool.close();
    }
}

pub(crate) use conn::why;

#[async_trait]
impl Requests for PgStore {
    async fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> Result<Enqueued, StoreError> {
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.accepts
            .send((records, key, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.with(async |c| {
            let row = c
                .opt("SELECT record FROM requests WHERE id = $1", &[&id])
                .await
                .map_err(|e| self.err(e))?;
            row.map(|r| {
                self.decoded.fetch_add(1, Ordering::Relaxed);
                let text: String = r.get(0);
                super::decode(id.as_bytes(), text.as_bytes())
            })
            .transpose()
        })
        .await
    }

    async fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
        self.records(BY_CASE, &[&case]).await
    }

    async fn evidence_due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.records(EVIDENCE_DUE, &[&ms(now_ms), &(limit as i64)])
            .await
    }

    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.with(async |c| {
            let rows = c
                .rows(DUE, &[&ms(now_ms), &(limit as i64)])
                .await
                .map_err(|e| self.err(e))?;
            Ok(rows
                .into_iter()
                .map(|r| Due {
                    at_ms: r.get::<_, i64>(0).max(0) as u64,
                    id: r.get(1),
                    work: Work::from_code(r.get::<_, Option<String>>(2).as_deref().unwrap_or("")),
                })
                .collect())
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        self.with(async |c| {
            let row = c.one(NEXT_DUE, &[]).await.map_err(|e| self.err(e))?;
            Ok(row.get::<_, Option<i64>>(0).map(|d| d.max(0) as u64))
        })
        .await
    }

    async fn update(
        &self,
        id: &str,
        f: &super::Change<'_>,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let out = self
            .tx(async |t| {
                let Some((old, mut new)) = self.change(t, id, f).await? else {
                    return Ok(None);
                };
                let raised = self.write_change(t, &old, &mut new).await?;
                Ok(Some((new, raised)))
            })
            .await?;
        self.poke();
        Ok(out.map(|(r, raised)| {
            self.after_events(raised);
            r
        }))
    }

    async fn lease(
        &self,
        id: &str,
        gate: Option<&GateLimits>,
        f: &super::Change<'_>,
    ) -> Result<Lease, StoreError> {
        Ok(self
            .lease_many(&[(id, gate)], f)
            .await?
            .pop()
            .unwrap_or(Lease::Passed))
    }

    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        let found = self
            .records(
                "SELECT id, record FROM requests WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(in_order(ids, found))
    }

    async fn update_many(
        &self,
        ids: &[&str],
        documents: &[(&str, &[u8])],
        f: &super::Change<'_>,
    ) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        let out = self
            .tx(async |t| {
                let changed = self.change_many(t, ids, false, f).await?;
                // A request's document goes in only with its change: one
                // whose change was declined (the answer of an exchange
                // that another had already concluded, its lease having run
                // out) must not replace the document the record names.
                // Its attachments (`{id}.attachment-{n}`) likewise.
                let declined = |id: &str| {
                    let owner = super::document_owner(id);
                    ids.contains(&owner) && !changed.iter().any(|(_, n)| n.id == owner)
                };
                let documents: Vec<(&str, &[u8])> = documents
                    .iter()
                    .copied()
                    .filter(|(id, _)| !declined(id))
                    .collect();
                if !documents.is_empty() {
                    // One row per id (a later one wins), for one statement.
                    let mut docs: std::collections::BTreeMap<&str, &[u8]> = Default::default();
                    docs.extend(documents.iter().copied());
                    let (dids, bytes): (Vec<&str>, Vec<&[u8]>) = docs.into_iter().unzip();
                    t.run(
                        "INSERT INTO documents (id, sealed) \
                         SELECT * FROM unnest($1::text[], $2::bytea[]) \
                         ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
                        &[&dids, &bytes],
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                }
                let pairs: Vec<_> = changed.iter().map(|(o, n)| (o, n)).collect();
                let raised = self.write_changes(t, &pairs).await?;
                Ok((changed, raised))
            })
            .await?;
        self.poke();
        let (changed, raised) = out;
        self.after_events(raised);
        Ok(in_order(ids, changed.into_iter().map(|(_, n)| n)))
    }

    async fn lease_many(
        &self,
        asks: &[(&str, Option<&GateLimits>)],
        f: &super::Change<'_>,
    ) -> Result<Vec<Lease>, StoreError> {
        let now = self.clock_ms();
        let ids: Vec<&str> = asks.iter().map(|(id, _)| *id).collect();
        let out = self
            .tx(async |t| {
                let changed = self.change_many(t, &ids, true, f).await?;
                let mut taken: Vec<(RequestRecord, RequestRecord)> = Vec::new();
                let mut blocked: std::collections::HashMap<String, Option<u64>> =
                    Default::default();
                // The registries' limits after the request rows (locks are
                // always taken request rows first, then gate rows), one
                // gate row per registry in the batch, in name order.
                let gate_of: std::collections::HashMap<&str, &GateLimits> = asks
                    .iter()
                    .filter_map(|(id, g)| g.map(|g| (*id, g)))
                    .collect();
                type Group<'g> = (&'g GateLimits, Vec<(RequestRecord, RequestRecord)>);
                let mut by_gate: std::collections::BTreeMap<&str, Group<'_>> = Default::default();
                for (old, new) in changed {
                    match gate_of.get(new.id.as_str()) {
                        Some(g) => by_gate
                            .entry(g.registry.as_str())
                            .or_insert_with(|| (g, Vec::new()))
                            .1
                            .push((old, new)),
                        None => taken.push((old, new)),
                    }
                }
                for (g, group) in by_gate.into_values() {
                    let leased: Vec<&str> = group.iter().map(|(_, n)| n.id.as_str()).collect();
                    let (admitted, until) = self.admit_many(t, g, &leased, now).await?;
                    let mut group = group.into_iter();
                    taken.extend(group.by_ref().take(admitted));
                    for (_, n) in group {
                        blocked.insert(n.id.into(), until);
                    }
                }
                let pairs: Vec<_> = taken.iter().map(|(o, n)| (o, n)).collect();
                let raised = self.write_changes(t, &pairs).await?;
                Ok((taken, blocked, raised))
            })
            .await?;
        self.poke();
        let (taken, mut blocked, raised) = out;
        self.after_events(raised);
        Ok(in_order(&ids, taken.into_iter().map(|(_, n)| n))
            .into_iter()
            .zip(&ids)
            .map(|(r, id)| match r {
                Some(r) => Lease::Taken(Box::new(r)),
                None => match blocked.remove(*id) {
                    Some(until) => Lease::Blocked(until),
                    None => Lease::Passed,
                },
            })
            .collect())
    }

    async fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.records(
            "SELECT id, record FROM requests WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after.unwrap_or(""), &(limit as i64)],
        )
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.tx(async |t| {
            let gone = t
                .opt(
                    "DELETE FROM requests WHERE id = $1 RETURNING record",
                    &[&id],
                )
                .await
                .map_err(|e| self.err(e))?;
            // With it every document of its own its record names
            // (attachments, a signed document), by their ids.
            let mut docs = vec![id.to_owned()];
            if let Some(row) = gone {
                let text: String = row.get(0);
                // A record that no longer reads is removed all the same
                // (with its own document): what it named beside it cannot
                // be known.
                match super::decode(id.as_bytes(), text.as_bytes()) {
                    Ok(r) => docs.extend(r.documents_beside().map(str::to_owned)),
                    Err(e) => tracing::warn!(request = %id, error = %e, "removing a request whose record does not read: the documents beside its own, if any, stay"),
                }
            }
            t.run("DELETE FROM documents WHERE id = ANY($1)", &[&docs])
                .await
                .map_err(|e| self.err(e))?;
            Ok(())
        })
        .await
    }

    async fn list(&self, q: &Listing) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = Vec::new();
        self.walk(&q.selector, q.order, q.after.clone(), q.limit, |r| {
            out.push(r);
            out.len() < q.limit
        })
        .await?;
        Ok(out)
    }

    async fn count(&self, sel: &Selector) -> Result<u64, StoreError> {
        if sel.counted() {
            return Ok(self.tally().await?.of(sel));
        }
        let mut n = 0;
        self.walk(sel, Order::Oldest, None, 1000, |_| {
            n += 1;
            true
        })
        .await?;
        Ok(n)
    }

    async fn tally(&self) -> Result<Tally, StoreError> {
        let rows = self
            .with(async |c| {
                c.rows(
                    "SELECT registry, state, sum(n)::bigint FROM request_counts \
                 GROUP BY registry, state HAVING sum(n) <> 0",
                    &[],
                )
                .await
                .map_err(|e| self.err(e))
            })
            .await?;
        let mut t = Tally::default();
        for r in rows {
            let (registry, state, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            let n = n.max(0) as u64;
            if state == "!at_risk" {
                t.at_risk += n;
            } else if let Some(s) = State::ALL.iter().find(|s| s.name() == state) {
                t.by_registry.insert((registry, *s), n);
            }
        }
        // The first id of each unfetched state, by the state index.
        let first = self.records(OLDEST_OPEN, &[]).await?;
        t.oldest_open_ms = first.iter().map(|r| r.created_ms).min();
        Ok(t)
    }

    async fn by_deadline(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.records(
            BY_DEADLINE,
            &[&ms(until_ms), &(limit.min(i64::MAX as usize) as i64)],
        )
        .await
    }

    fn records_read(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Documents for PgStore {
    async fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.with(async |c| {
            c.run(
                "INSERT INTO documents (id, sealed) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&id, &bytes],
            )
            .await
            .map(drop)
            .map_err(|e| self.err(e))
        })
        .await
    }

    async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(async |c| {
            Ok(c.opt("SELECT sealed FROM documents WHERE id = $1", &[&id])
                .await
                .map_err(|e| self.err(e))?
                .map(|r| r.get(0)))
        })
        .await
    }
}

#[async_trait]
impl Idempotency for PgStore {
    async fn idempotency(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError> {
        self.with(async |c| {
            let row = c
                .opt(
                    "SELECT entry FROM idempotency WHERE client = $1 AND key = $2",
                    &[&client, &key],
                )
                .await
                .map_err(|e| self.err(e))?;
            row.map(|r| {
                let text: String = r.get(0);
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    id: key.to_owned(),
                    detail: e.to_string(),
                })
            })
            .transpose()
        })
        .await
    }

    async fn purge_idempotency(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.with(async |c| {
            c.run(
                "DELETE FROM idempotency WHERE created_ms < $1",
                &[&ms(before_ms)],
            )
            .await
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
        })
        .await
    }
}

#[async_trait]
impl Upkeep for PgStore {
    async fn writable(&self) -> bool {
        self.with(async |c| {
            c.one("SELECT NOT pg_is_in_recovery()", &[])
                .await
                .map(|r| r.get::<_, bool>(0))
                .map_err(|e| self.err(e))
        })
        .await
        .unwrap_or(false)
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.with(async |c| {
            c.one("SELECT pg_database_size(current_database())", &[])
                .await
                .map(|r| r.get::<_, i64>(0).max(0) as u64)
                .map_err(|e| self.err(e))
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every commit is already durable.
        Ok(())
    }

    async fn check(&self) -> Result<crate::store::integrity::Report, StoreError> {
        self.check_all().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // The listener sees this within 200 ms and ends; nothing
        // waits for it (it writes nothing).
        self.shared.stop();
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        self.leader.lock().await.0.take();
        self.pool.close();
        Ok(())
    }
}

// The statements that read requests for the dispatcher and for operators,
// named so that a test can ask PostgreSQL how it plans them: each must
// walk an index, never the whole table (`tests::requests_are_read_by_index`).
const BY_CASE: &str = "SELECT id, record FROM requests WHERE case_no = $1 ORDER BY id";
const EVIDENCE_DUE: &str =
    "SELECT id, record FROM requests WHERE stamp_ms <= $1 ORDER BY stamp_ms, id LIMIT $2";
const DUE: &str =
    "SELECT due_ms, id, work FROM requests WHERE due_ms <= $1 ORDER BY due_ms, id LIMIT $2";
const NEXT_DUE: &str = "SELECT min(due_ms) FROM requests WHERE due_ms IS NOT NULL";
/// The first id of each unfetched state, by the state index.
const OLDEST_OPEN: &str = "SELECT id, record FROM requests WHERE id = ANY(ARRAY[\
     (SELECT id FROM requests WHERE state = 'queued' ORDER BY id LIMIT 1), \
     (SELECT id FROM requests WHERE state = 'sending' ORDER BY id LIMIT 1), \
     (SELECT id FROM requests WHERE state = 'awaiting' ORDER BY id LIMIT 1), \
     (SELECT id FROM requests WHERE state = 'retrying' ORDER BY id LIMIT 1)])";
const BY_DEADLINE: &str = "SELECT id, record FROM requests \
     WHERE state NOT IN ('delivered', 'dead', 'cancelled') AND deadline_ms <= $1 \
     ORDER BY deadline_ms, id LIMIT $2";

/// A walk of [`PgStore::walk`] by one index, (ascending, descending):
/// `$1` the index's key, `$2` and `$3` the id bounds, `$4` a registry or
/// NULL, `$5` the page.
macro_rules! walk_by {
    ($cond:literal) => {
        (
            concat!("SELECT id, record FROM requests WHERE ", $cond,
                " AND id > $2 AND id < $3 AND ($4::text IS NULL OR registry = $4) ORDER BY id LIMIT $5"),
            concat!("SELECT id, record FROM requests WHERE ", $cond,
                " AND id > $2 AND id < $3 AND ($4::text IS NULL OR registry = $4) ORDER BY id DESC LIMIT $5"),
        )
    };
}
const WALK_ATTENTION: (&str, &str) = walk_by!("attention AND $1::text IS NULL");
const WALK_STATE: (&str, &str) = walk_by!("state = $1");
const WALK_CASE: (&str, &str) = walk_by!("case_no = $1");
const WALK_ALL: (&str, &str) = walk_by!("$1::text IS NULL");

impl PgStore {
    /// Calls `f` on each request `sel` selects, in `order`, after the id
    /// `after`, until `f` says stop: pages of `batch` rows from the index
    /// that fits (state, attention, case, or the primary key), filtered
    /// here by the fields no column holds.
    async fn walk(
        &self,
        sel: &Selector,
        order: Order,
        mut after: Option<String>,
        batch: usize,
        mut f: impl FnMut(RequestRecord) -> bool,
    ) -> Result<(), StoreError> {
        // Above every ULID (26 characters of Crockford base32).
        const TOP: &str = "ZZZZZZZZZZZZZZZZZZZZZZZZZZZ";
        let floor = sel.created_before.map(super::query::id_floor);
        let batch = batch.clamp(50, 1000) as i64;
        let (key, (asc, desc)) = if sel.attention {
            (None, WALK_ATTENTION)
        } else if let Some(s) = sel.state {
            (Some(s.name().to_owned()), WALK_STATE)
        } else if let Some(c) = &sel.case {
            (Some(c.clone()), WALK_CASE)
        } else {
            (None, WALK_ALL)
        };
        loop {
            let (lo, hi) = match order {
                Order::Oldest => (
                    after.clone().unwrap_or_default(),
                    floor.clone().unwrap_or_else(|| TOP.into()),
                ),
                Order::Newest => (
                    String::new(),
                    match (&after, &floor) {
                        (Some(a), Some(f)) => a.clone().min(f.clone()),
                        (Some(a), None) => a.clone(),
                        (None, Some(f)) => f.clone(),
                        (None, None) => TOP.into(),
                    },
                ),
            };
            let sql = if order == Order::Oldest { asc } else { desc };
            let page = self
                .records_by(sql, &[&key, &lo, &hi, &sel.registry, &batch], false)
                .await?;
            let full = page.len() as i64 == batch;
            for r in page {
                after = Some(r.id.to_string());
                if sel.matches(&r) && !f(r) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn records(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.records_by(sql, params, true).await
    }

    /// `cached`: a statement prepared once per connection. Not for the
    /// walks of [`PgStore::walk`]: after five runs PostgreSQL may keep a
    /// generic plan, which cannot see how narrow the id bounds are and
    /// sorts a whole state (half a second at a million requests) where a
    /// plan for the values walks the index a page long.
    async fn records_by(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
        cached: bool,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.with(async |c| {
            let rows = if cached {
                c.rows(sql, params).await
            } else {
                // Prepared for this call only, so planned for its values.
                tokio_postgres::GenericClient::query(&***c, sql, params).await
            }
            .map_err(|e| self.err(e))?;
            self.decoded.fetch_add(rows.len() as u64, Ordering::Relaxed);
            rows.into_iter()
                .map(|r| {
                    let id: String = r.get(0);
                    let text: String = r.get(1);
                    super::decode(id.as_bytes(), text.as_bytes())
                })
                .collect()
        })
        .await
    }

    /// Empties every table (tests and `store import` into a fresh
    /// database use a database of their own instead; this is for tests).
    #[doc(hidden)]
    pub async fn truncate_all(&self) -> Result<(), StoreError> {
        self.with(async |c|  {
            c.batch_execute(
                "TRUNCATE requests, request_counts, documents, idempotency, events, audit, audit_subject, gates; \
                 UPDATE audit_head SET seq = 0, hash = repeat('0', 64)",
            )
            .await.map_err(|e| self.err(e))
        }).await
    }
}

#[cfg(test)]
mod tests;
