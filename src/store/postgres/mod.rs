//! The PostgreSQL store: the same [`QueueStore`] as sled, for a hub where
//! several `jumgw` instances share one queue. It owns the schema and its
//! migrations, and everything the instances must agree on:
//!
//! - **Leases.** A due request is leased with `SELECT … FOR UPDATE SKIP
//!   LOCKED` on its row: two instances never lease one request, and one
//!   never waits for a row another is leasing. A lease is a due time, so an
//!   instance that dies leaves requests that are simply due again when
//!   their lease expires.
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
//! schema in [`schema`], events in [`events`].

mod chain;
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

fn work_of(r: &RequestRecord) -> Option<String> {
    Work::of(r).map(|w| w.code().to_owned())
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
        Ok(Arc::new(PgStore {
            pool,
            shared,
            audit_rule: RwLock::new(None),
            leader: tokio::sync::Mutex::new((None, HashSet::new())),
            tasks: Mutex::new(tasks),
            decoded: Default::default(),
        }))
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
        let e = |x: tokio_postgres::Error| self.err(x);
        t.run(
            "UPDATE requests SET state = $2, due_ms = $3, work = $4, record = $5, \
             deadline_ms = $6, attention = $7, at_risk = $8 WHERE id = $1",
            &[
                &new.id,
                &new.state.name(),
                &new.due_ms.map(ms),
                &work_of(new),
                &super::encode_text(new),
                &ms(new.deadline_ms),
                &new.needs_attention(),
                &new.at_risk_open(),
            ],
        )
        .await
        .map_err(e)?;
        let mut raised = 0;
        if let Some(ev) = self.event_rule() {
            raised = events::put_events(t, &(ev.rule)(old, new))
                .await
                .map_err(e)?;
        }
        if raised > 0 {
            t.run(NOTIFY_EVENTS, &[]).await.map_err(e)?;
        }
        // Made due now (an administrator's retry, a resume): wake every
        // instance, not only this one.
        if new.due_ms != old.due_ms && new.due_ms.is_some_and(|d| d <= self.clock_ms()) {
            t.run(NOTIFY_WORK, &[]).await.map_err(e)?;
        }
        let drafts = self
            .audit_rule()
            .map(|r| r(Some(old), new))
            .unwrap_or_default();
        chain::pend(t, drafts).await.map_err(e)?;
        Ok(raised)
    }

    fn after_events(&self, raised: usize) {
        if raised > 0 {
            if let Some(ev) = self.event_rule() {
                ev.notify.notify_one();
            }
        }
    }

    /// Loads, changes and writes one record under its row lock; `skip`
    /// passes over a row locked by another transaction.
    async fn change(
        &self,
        t: &Tx<'_>,
        id: &str,
        skip: bool,
        f: &super::Change<'_>,
    ) -> Result<Option<(RequestRecord, RequestRecord)>, StoreError> {
        let sql = if skip {
            "SELECT record FROM requests WHERE id = $1 FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT record FROM requests WHERE id = $1 FOR UPDATE"
        };
        let Some(row) = t.opt(sql, &[&id]).await.map_err(|e| self.err(e))? else {
            return if skip {
                Ok(None)
            } else {
                Err(StoreError::NotFound(id.to_owned()))
            };
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
        let now = now_ms();
        let rule = self.audit_rule();
        let out = self
            .tx(async |t| {
                let e = |x: tokio_postgres::Error| self.err(x);
                if let Some(k) = &key {
                    let entry = IdemEntry {
                        request_ids: records.iter().map(|r| r.id.clone()).collect(),
                        body_hash: k.body_hash.clone(),
                        created_ms: now,
                    };
                    let n = t
                        .run(
                            "INSERT INTO idempotency (client, key, entry, created_ms) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            &[
                                &k.client,
                                &k.key,
                                &serde_json::to_string(&entry).unwrap_or_default(),
                                &ms(now),
                            ],
                        )
                        .await
                        .map_err(e)?;
                    if n == 0 {
                        // Taken, by an earlier request or a concurrent one
                        // that committed first (the insert waited for it).
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
                        return Ok(Enqueued::Existing(held));
                    }
                }
                let mut drafts = Vec::new();
                for r in &records {
                    t.run(
                    "INSERT INTO requests (id, case_no, state, registry, due_ms, work, record, \
                     deadline_ms, attention, at_risk) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        &r.id,
                        &r.case,
                        &r.state.name(),
                        &r.registry,
                        &r.due_ms.map(ms),
                        &work_of(r),
                        &super::encode_text(r),
                        &ms(r.deadline_ms),
                        &r.needs_attention(),
                        &r.at_risk_open(),
                    ],
                ).await
                .map_err(e)?;
                    if let Some(rule) = &rule {
                        drafts.extend(rule(None, r));
                    }
                }
                if records.iter().any(|r| r.due_ms.is_some()) {
                    t.run(NOTIFY_WORK, &[]).await.map_err(e)?;
                }
                chain::pend(t, drafts).await.map_err(e)?;
                Ok(Enqueued::Stored)
            })
            .await;
        self.poke();
        out
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
        self.records(
            "SELECT id, record FROM requests WHERE case_no = $1 ORDER BY id",
            &[&case],
        )
        .await
    }

    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.with(async |c| {
            let rows = c
                .rows(
                    "SELECT due_ms, id, work FROM requests WHERE due_ms <= $1 \
                     ORDER BY due_ms, id LIMIT $2",
                    &[&ms(now_ms), &(limit as i64)],
                )
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
            let row = c
                .one(
                    "SELECT min(due_ms) FROM requests WHERE due_ms IS NOT NULL",
                    &[],
                )
                .await
                .map_err(|e| self.err(e))?;
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
                let Some((old, mut new)) = self.change(t, id, false, f).await? else {
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
        let now = self.clock_ms();
        let out = self
            .with(async |c| {
                let e = |x: tokio_postgres::Error| self.err(x);
                let t = c.transaction().await.map_err(e)?;
                let Some((old, mut new)) = self.change(&t, id, true, f).await? else {
                    return Ok(Lease::Passed);
                };
                let raised = self.write_change(&t, &old, &mut new).await?;
                // The registry's limits last: its gate row is locked from here
                // to the commit, and every instance's leases of that registry
                // take turns on it; the shorter, the better. (Locks are always
                // taken request row first, then gate row.)
                if let Some(g) = gate {
                    if let Err(until) = self.admit(&t, g, id, now).await? {
                        t.rollback().await.map_err(e)?;
                        return Ok(Lease::Blocked(until));
                    }
                }
                t.commit().await.map_err(e)?;
                self.after_events(raised);
                Ok(Lease::Taken(Box::new(new)))
            })
            .await?;
        self.poke();
        Ok(out)
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
            t.run("DELETE FROM requests WHERE id = $1", &[&id])
                .await
                .map_err(|e| self.err(e))?;
            t.run("DELETE FROM documents WHERE id = $1", &[&id])
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
        let first = self
            .records(
                "SELECT id, record FROM requests WHERE id = ANY(ARRAY[\
             (SELECT id FROM requests WHERE state = 'queued' ORDER BY id LIMIT 1), \
             (SELECT id FROM requests WHERE state = 'sending' ORDER BY id LIMIT 1), \
             (SELECT id FROM requests WHERE state = 'awaiting' ORDER BY id LIMIT 1), \
             (SELECT id FROM requests WHERE state = 'retrying' ORDER BY id LIMIT 1)])",
                &[],
            )
            .await?;
        t.oldest_open_ms = first.iter().map(|r| r.created_ms).min();
        Ok(t)
    }

    async fn by_deadline(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.records(
            "SELECT id, record FROM requests \
             WHERE state NOT IN ('delivered', 'dead', 'cancelled') AND deadline_ms <= $1 \
             ORDER BY deadline_ms, id LIMIT $2",
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
        macro_rules! by {
            ($cond:literal) => {
                (
                    concat!("SELECT id, record FROM requests WHERE ", $cond,
                        " AND id > $2 AND id < $3 AND ($4::text IS NULL OR registry = $4) ORDER BY id LIMIT $5"),
                    concat!("SELECT id, record FROM requests WHERE ", $cond,
                        " AND id > $2 AND id < $3 AND ($4::text IS NULL OR registry = $4) ORDER BY id DESC LIMIT $5"),
                )
            };
        }
        let (key, (asc, desc)) = if sel.attention {
            (None, by!("attention AND $1::text IS NULL"))
        } else if let Some(s) = sel.state {
            (Some(s.name().to_owned()), by!("state = $1"))
        } else if let Some(c) = &sel.case {
            (Some(c.clone()), by!("case_no = $1"))
        } else {
            (None, by!("$1::text IS NULL"))
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
                after = Some(r.id.clone());
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
