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
//!   every 30 s ([`QueueStore::clock_ms`]), so no instance trusts another
//!   machine's clock.
//! - **Registry limits.** Max in flight (live leases counted in the
//!   database), the request rate (a token bucket) and the circuit breaker
//!   are kept in the `gates` row of each registry, locked in the leasing
//!   transaction; an administrator's pause is a column of that row, pushed
//!   to every instance by `NOTIFY`.
//! - **Wake-ups.** Accepting a request, making one due now or raising an
//!   event sends `NOTIFY`; a listener thread per instance wakes its
//!   dispatcher or webhook sender, which otherwise sleep until the next
//!   due time.
//! - **Jobs of the whole store** (webhooks, backups, retention, the
//!   deadline watch, checkpoints) are held with a session advisory lock by
//!   one instance at a time, released when its connection ends (also by
//!   SIGKILL) and then taken by another ([`QueueStore::lead`]).
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
//! The `postgres` client is blocking; calls made on a runtime worker run in
//! [`tokio::task::block_in_place`], so the other tasks go on meanwhile.
//! Statements are prepared once per pooled connection ([`Conn`]). The
//! listener is the exception: it runs tokio-postgres on a small runtime of
//! its own thread.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use postgres::types::ToSql;
use postgres::NoTls;

use super::{
    now_ms, AuditTrail, Coordination, Documents, Due, Enqueued, EventRule, GateLimits, IdemEntry,
    IdemKey, Idempotency, Lease, Listing, Order, OutEvent, Outbox, Pause, RequestRecord, Requests,
    Selector, State, StoreError, Tally, Upkeep, Watch, Work,
};
use crate::limits::{Breaker, Limiter, Wait};

/// The newest schema this build knows.
pub const SCHEMA_VERSION: i32 = 4;

/// Versioned migrations, applied in order, each once, in one transaction
/// under an advisory lock (instances starting together take turns).
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE requests (
    id text PRIMARY KEY,
    case_no text NOT NULL,
    state text NOT NULL,
    registry text NOT NULL,
    due_ms bigint,
    work text,
    record text NOT NULL
);
CREATE INDEX requests_due ON requests (due_ms, id) WHERE due_ms IS NOT NULL;
CREATE INDEX requests_case ON requests (case_no, id);
CREATE INDEX requests_sending ON requests (registry, due_ms) WHERE state = 'sending';
CREATE TABLE documents (id text PRIMARY KEY, sealed bytea NOT NULL);
CREATE TABLE idempotency (
    client text NOT NULL,
    key text NOT NULL,
    entry text NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (client, key)
);
CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    created_ms bigint NOT NULL,
    body text NOT NULL,
    done boolean NOT NULL DEFAULT false
);
CREATE INDEX events_waiting ON events (seq) WHERE NOT done;
CREATE TABLE audit (seq bigint PRIMARY KEY, entry text NOT NULL);
CREATE TABLE audit_subject (subject text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (subject, seq));
CREATE TABLE audit_head (one int PRIMARY KEY CHECK (one = 1), seq bigint NOT NULL, hash text NOT NULL);
CREATE TABLE gates (
    registry text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false,
    paused_until bigint,
    limits text
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE audit_pending (id bigserial PRIMARY KEY, draft text NOT NULL);
"#,
    ),
    (
        3,
        // A gate row is made by the first lease of its registry; only an
        // administrator's pause or resume makes its pause columns count
        // (over the configuration's `paused`).
        r#"
ALTER TABLE gates ADD COLUMN pause_set boolean NOT NULL DEFAULT false;
"#,
    ),
    (
        4,
        // Queries instead of scans: the columns the admin list, the
        // dashboard and the deadline watch select by, and counters by
        // registry and state kept by a trigger in the writing transaction.
        // Counters are spread over 16 rows per (registry, state), picked by
        // transaction id, so concurrent writers rarely wait for each other;
        // a read sums them. The backfill computes what
        // `RequestRecord::needs_attention` and `at_risk_open` say.
        r#"
ALTER TABLE requests
    ADD COLUMN deadline_ms bigint,
    ADD COLUMN attention boolean NOT NULL DEFAULT false,
    ADD COLUMN at_risk boolean NOT NULL DEFAULT false;
UPDATE requests SET
    deadline_ms = (record::jsonb->>'deadline_ms')::bigint,
    attention = (state = 'dead' OR (state IN ('queued', 'sending', 'awaiting', 'retrying')
                 AND jsonb_array_length(record::jsonb->'attempts') >= 2)),
    at_risk = (state NOT IN ('delivered', 'dead', 'cancelled')
               AND coalesce((record::jsonb->>'at_risk')::boolean, false));
CREATE INDEX requests_state ON requests (state, id);
CREATE INDEX requests_attention ON requests (id) WHERE attention;
CREATE INDEX requests_deadline ON requests (deadline_ms, id)
    WHERE state NOT IN ('delivered', 'dead', 'cancelled');
CREATE TABLE request_counts (
    registry text NOT NULL,
    state text NOT NULL,
    shard int NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (registry, state, shard)
);
INSERT INTO request_counts
    SELECT registry, state, 0, count(*) FROM requests GROUP BY registry, state;
INSERT INTO request_counts
    SELECT registry, '!at_risk', 0, count(*) FROM requests WHERE at_risk GROUP BY registry;
CREATE FUNCTION jumgw_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    spread int := (txid_current() % 16)::int;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO request_counts VALUES (OLD.registry, OLD.state, spread, -1)
            ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n - 1;
        IF OLD.at_risk THEN
            INSERT INTO request_counts VALUES (OLD.registry, '!at_risk', spread, -1)
                ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n - 1;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO request_counts VALUES (NEW.registry, NEW.state, spread, 1)
            ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n + 1;
        IF NEW.at_risk THEN
            INSERT INTO request_counts VALUES (NEW.registry, '!at_risk', spread, 1)
                ON CONFLICT (registry, state, shard) DO UPDATE SET n = request_counts.n + 1;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER requests_count AFTER INSERT OR DELETE ON requests
    FOR EACH ROW EXECUTE FUNCTION jumgw_count();
CREATE TRIGGER requests_recount AFTER UPDATE OF state, registry, at_risk ON requests
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.registry IS DISTINCT FROM NEW.registry
          OR OLD.at_risk IS DISTINCT FROM NEW.at_risk)
    EXECUTE FUNCTION jumgw_count();
"#,
    ),
];

/// The advisory lock key of migrations ("jumgw" in ASCII).
const MIGRATION_LOCK: i64 = 0x6a_75_6d_67_77;

const WORK: &str = "jumgw_work";
const GATES: &str = "jumgw_gates";
const EVENTS: &str = "jumgw_events";
const NOTIFY_WORK: &str = "NOTIFY jumgw_work";
const NOTIFY_GATES: &str = "NOTIFY jumgw_gates";
const NOTIFY_EVENTS: &str = "NOTIFY jumgw_events";

type Pool = r2d2::Pool<Manager>;

/// A pooled connection and its prepared statements: each statement is
/// parsed once per connection instead of on every call (which costs a
/// round trip and the server's parse each time).
pub struct Conn {
    client: postgres::Client,
    cache: std::collections::HashMap<&'static str, postgres::Statement>,
}

fn cached(
    cache: &mut std::collections::HashMap<&'static str, postgres::Statement>,
    c: &mut impl postgres::GenericClient,
    sql: &'static str,
) -> Result<postgres::Statement, postgres::Error> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = c.prepare(sql)?;
    cache.insert(sql, s.clone());
    Ok(s)
}

/// The four ways of running a cached statement, for a connection and for
/// a transaction alike.
macro_rules! cached_calls {
    ($client:ident) => {
        pub fn execute(
            &mut self,
            sql: &'static str,
            p: &[&(dyn ToSql + Sync)],
        ) -> Result<u64, postgres::Error> {
            let s = cached(&mut self.cache, &mut self.$client, sql)?;
            self.$client.execute(&s, p)
        }
        pub fn query(
            &mut self,
            sql: &'static str,
            p: &[&(dyn ToSql + Sync)],
        ) -> Result<Vec<postgres::Row>, postgres::Error> {
            let s = cached(&mut self.cache, &mut self.$client, sql)?;
            self.$client.query(&s, p)
        }
        pub fn query_one(
            &mut self,
            sql: &'static str,
            p: &[&(dyn ToSql + Sync)],
        ) -> Result<postgres::Row, postgres::Error> {
            let s = cached(&mut self.cache, &mut self.$client, sql)?;
            self.$client.query_one(&s, p)
        }
        pub fn query_opt(
            &mut self,
            sql: &'static str,
            p: &[&(dyn ToSql + Sync)],
        ) -> Result<Option<postgres::Row>, postgres::Error> {
            let s = cached(&mut self.cache, &mut self.$client, sql)?;
            self.$client.query_opt(&s, p)
        }
    };
}

impl Conn {
    cached_calls!(client);

    pub fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        Ok(Tx {
            t: self.client.transaction()?,
            cache: &mut self.cache,
        })
    }

    pub fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }
}

/// A transaction on a [`Conn`], with its statement cache.
pub struct Tx<'a> {
    t: postgres::Transaction<'a>,
    cache: &'a mut std::collections::HashMap<&'static str, postgres::Statement>,
}

impl Tx<'_> {
    cached_calls!(t);

    pub fn commit(self) -> Result<(), postgres::Error> {
        self.t.commit()
    }

    pub fn rollback(self) -> Result<(), postgres::Error> {
        self.t.rollback()
    }
}

/// Logs the pool's failed connections with the server's reason.
#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<postgres::Error> for LogErrors {
    fn handle_error(&self, e: postgres::Error) {
        tracing::warn!(error = %why(&e), "PostgreSQL connection failed");
    }
}

/// Makes pool connections (r2d2's own PostgreSQL manager has no place
/// for the statement cache).
pub struct Manager {
    config: postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.config.connect(NoTls)?,
            cache: Default::default(),
        })
    }

    fn is_valid(&self, c: &mut Conn) -> Result<(), postgres::Error> {
        c.client.simple_query("").map(drop)
    }

    fn has_broken(&self, c: &mut Conn) -> bool {
        c.client.is_closed()
    }
}

/// Runs blocking database work without stalling the runtime's other tasks.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        // A current-thread runtime cannot lend its thread: use another.
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }),
        Err(_) => f(),
    }
}

fn ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn work_of(r: &RequestRecord) -> Option<String> {
    Work::of(r).map(|w| w.code().to_owned())
}

/// What the listener thread needs.
struct Shared {
    config: postgres::Config,
    /// The same, for the listener's asynchronous connection.
    listen_config: tokio_postgres::Config,
    url: String,
    stop: AtomicBool,
    /// Set (and signalled) when audit drafts await chaining.
    pending: (Mutex<bool>, std::sync::Condvar),
    /// Database clock minus ours, in ms.
    offset: AtomicI64,
    watch: RwLock<Option<Watch>>,
    events: RwLock<Option<EventRule>>,
}

impl Shared {
    /// Ends the chainer (at once) and the listener (within 200 ms), and
    /// with them their connections.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let (flag, cv) = &self.pending;
        *lock(flag) = true;
        cv.notify_all();
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    /// Taken out on drop, to close its connections off the runtime.
    pool: Option<Pool>,
    shared: Arc<Shared>,
    audit_rule: RwLock<Option<crate::audit::AuditRule>>,
    /// The connection that holds this instance's advisory locks, and the
    /// roles it holds.
    leader: Mutex<(Option<postgres::Client>, HashSet<String>)>,
    listener: Mutex<Option<std::thread::JoinHandle<()>>>,
    decoded: std::sync::atomic::AtomicU64,
}

/// `postgres://user@host:port/db`, without a password, for messages.
pub fn display_url(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// Makes a new, empty database on `server` (a URL without a database)
/// and returns its URL. For tests and benchmarks.
pub fn create_database(server: &str, tag: &str) -> Result<String, String> {
    let base = server.trim_end_matches('/').to_owned();
    let name = format!(
        "jumgw_{}_{}",
        tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        ulid::Ulid::new().to_string().to_lowercase()
    );
    admin(&base, format!("CREATE DATABASE {name}"))?;
    Ok(format!("{base}/{name}"))
}

/// Drops a database made by [`create_database`].
pub fn drop_database(server: &str, url: &str) -> Result<(), String> {
    let base = server.trim_end_matches('/');
    let name = url.rsplit('/').next().unwrap_or_default();
    if !name.starts_with("jumgw_")
        || name.contains(|c: char| !c.is_ascii_alphanumeric() && c != '_')
    {
        return Err(format!("{name}: not a database this program made"));
    }
    admin(base, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
}

/// One statement on the server's `postgres` database, off any runtime
/// thread (the blocking client may not run on one).
fn admin(base: &str, sql: String) -> Result<(), String> {
    let url = format!("{base}/postgres");
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, NoTls).map_err(|e| format!("{url}: {e}"))?;
        c.batch_execute(&sql).map_err(|e| format!("{url}: {e}"))
    })
    .join()
    .unwrap_or_else(|_| Err("the database thread panicked".into()))
}

impl PgStore {
    /// Connects, applies migrations and starts the listener. `url` is a
    /// libpq URL or key=value string.
    pub fn open(url: &str, pool_size: u32) -> Result<Arc<PgStore>, StoreError> {
        let config = postgres::Config::from_str(url).map_err(|e| StoreError::Postgres {
            url: "(unreadable URL)".into(),
            detail: format!("{e}; expected postgres://user@host:port/database"),
        })?;
        let shown = display_url(&config);
        let err = |detail: String| StoreError::Postgres {
            url: shown.clone(),
            detail,
        };
        let mut config = config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("jumgw");
        let mut listen_config = tokio_postgres::Config::from_str(url).map_err(|e| err(why(&e)))?;
        listen_config
            .connect_timeout(Duration::from_secs(10))
            .application_name("jumgw listener");
        // One connection first, to fail at once with the server's reason
        // (the pool would retry for its whole timeout and say less).
        blocking(|| config.connect(NoTls).map(drop)).map_err(|e| err(why(&e)))?;
        let pool = blocking(|| {
            r2d2::Pool::builder()
                .error_handler(Box::new(LogErrors))
                .max_size(pool_size.max(2))
                .min_idle(Some(1))
                .connection_timeout(Duration::from_secs(10))
                // No probe query before every use (a round trip each): a
                // connection that died fails its statement, and the pool
                // drops it when it comes back closed.
                .test_on_check_out(true)
                .build(Manager {
                    config: config.clone(),
                })
        })
        .map_err(|e| err(why(&e)))?;
        let shared = Arc::new(Shared {
            config,
            listen_config,
            url: shown.clone(),
            stop: AtomicBool::new(false),
            pending: Default::default(),
            offset: AtomicI64::new(0),
            watch: RwLock::new(None),
            events: RwLock::new(None),
        });
        let store = PgStore {
            pool: Some(pool),
            shared: shared.clone(),
            audit_rule: RwLock::new(None),
            leader: Mutex::new((None, HashSet::new())),
            listener: Mutex::new(None),
            decoded: Default::default(),
        };
        store.with(|c| {
            migrate(&mut c.client, &shown)?;
            let off = measure_offset(&mut c.client)?;
            shared.offset.store(off, Ordering::Relaxed);
            Ok(())
        })?;
        let (s2, p2) = (
            shared.clone(),
            store.pool.clone().ok_or(StoreError::Closed)?,
        );
        std::thread::Builder::new()
            .name("jumgw-pg-chain".into())
            .spawn(move || chainer(&s2, p2))
            .map_err(|e| err(why(&e)))?;
        let handle = std::thread::Builder::new()
            .name("jumgw-pg-listen".into())
            .spawn(move || listen(&shared))
            .map_err(|e| err(why(&e)))?;
        *lock(&store.listener) = Some(handle);
        Ok(Arc::new(store))
    }

    fn err(&self, e: impl std::error::Error) -> StoreError {
        StoreError::Postgres {
            url: self.shared.url.clone(),
            detail: why(&e),
        }
    }

    /// Runs `f` on a pooled connection.
    fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        blocking(|| {
            let pool = self.pool.as_ref().ok_or(StoreError::Closed)?;
            let mut c = pool.get().map_err(|e| self.err(e))?;
            f(&mut c)
        })
    }

    /// Runs `f` in a transaction; commits if it returns `Ok`.
    fn tx<T: Send>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        self.with(|c| {
            let mut t = c.transaction().map_err(|e| self.err(e))?;
            let v = f(&mut t)?;
            t.commit().map_err(|e| self.err(e))?;
            Ok(v)
        })
    }

    fn audit_rule(&self) -> Option<crate::audit::AuditRule> {
        read(&self.audit_rule).clone()
    }

    /// Wakes the chainer after a commit that may have written drafts.
    fn poke(&self) {
        if read(&self.audit_rule).is_some() {
            let (flag, cv) = &self.shared.pending;
            *lock(flag) = true;
            cv.notify_one();
        }
    }

    /// Chains everything pending now (readers of the trail call this
    /// first, so they see every committed entry).
    fn chain_now(&self) -> Result<(), StoreError> {
        self.with(|c| {
            while chain_pending(c).map_err(|e| self.err(e))? == 5000 {}
            Ok(())
        })
    }

    fn event_rule(&self) -> Option<EventRule> {
        read(&self.shared.events).clone()
    }

    /// Writes a changed record with its events and audit entries; returns
    /// how many events it raised.
    fn write_change(
        &self,
        t: &mut Tx<'_>,
        old: &RequestRecord,
        new: &mut RequestRecord,
    ) -> Result<usize, StoreError> {
        let e = |x: postgres::Error| self.err(x);
        t.execute(
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
        .map_err(e)?;
        let mut raised = 0;
        if let Some(ev) = self.event_rule() {
            raised = put_events(t, &(ev.rule)(old, new)).map_err(e)?;
        }
        if raised > 0 {
            t.execute(NOTIFY_EVENTS, &[]).map_err(e)?;
        }
        // Made due now (an administrator's retry, a resume): wake every
        // instance, not only this one.
        if new.due_ms != old.due_ms && new.due_ms.is_some_and(|d| d <= self.clock_ms()) {
            t.execute(NOTIFY_WORK, &[]).map_err(e)?;
        }
        let drafts = self
            .audit_rule()
            .map(|r| r(Some(old), new))
            .unwrap_or_default();
        pend(t, drafts).map_err(e)?;
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
    fn change(
        &self,
        t: &mut Tx<'_>,
        id: &str,
        skip: bool,
        f: &super::Change<'_>,
    ) -> Result<Option<(RequestRecord, RequestRecord)>, StoreError> {
        let sql = if skip {
            "SELECT record FROM requests WHERE id = $1 FOR UPDATE SKIP LOCKED"
        } else {
            "SELECT record FROM requests WHERE id = $1 FOR UPDATE"
        };
        let Some(row) = t.query_opt(sql, &[&id]).map_err(|e| self.err(e))? else {
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

    /// The shared limits of a registry refuse or admit one more exchange.
    fn admit(
        &self,
        t: &mut Tx<'_>,
        g: &GateLimits,
        id: &str,
        now: u64,
    ) -> Result<Result<(), Option<u64>>, StoreError> {
        let e = |x: postgres::Error| self.err(x);
        let limits = self.lock_gate(t, &g.registry)?;
        let live: i64 = t
            .query_one(
                "SELECT count(*) FROM requests WHERE registry = $1 AND state = 'sending' \
                 AND due_ms > $2 AND id <> $3",
                &[&g.registry, &ms(now), &id],
            )
            .map_err(e)?
            .get(0);
        let mut s = Limiter::restore(limits.as_deref(), g, now);
        match s.admit(live.max(0) as usize, g, now) {
            Ok(()) => {}
            Err(Wait::Event) => return Ok(Err(None)),
            Err(Wait::Until(until)) => return Ok(Err(Some(until))),
        }
        t.execute(
            "UPDATE gates SET limits = $2 WHERE registry = $1",
            &[&g.registry, &s.keep()],
        )
        .map_err(e)?;
        Ok(Ok(()))
    }

    /// Locks a registry's gate row (made on first use) and returns the
    /// limits it keeps.
    fn lock_gate(&self, t: &mut Tx<'_>, registry: &str) -> Result<Option<String>, StoreError> {
        let e = |x: postgres::Error| self.err(x);
        let sql = "SELECT limits FROM gates WHERE registry = $1 FOR UPDATE";
        if let Some(row) = t.query_opt(sql, &[&registry]).map_err(e)? {
            return Ok(row.get(0));
        }
        t.execute(
            "INSERT INTO gates (registry) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&registry],
        )
        .map_err(e)?;
        Ok(t.query_one(sql, &[&registry]).map_err(e)?.get(0))
    }
}

/// An error with its causes: the postgres client's own text is often just
/// "db error", the server's message is in its source.
fn why(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}

use crate::sync::{lock, read, write};

fn migrate(c: &mut postgres::Client, url: &str) -> Result<(), StoreError> {
    let err = |e: postgres::Error| StoreError::Postgres {
        url: url.to_owned(),
        detail: format!("applying the schema: {}", why(&e)),
    };
    let mut t = c.transaction().map_err(err)?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err)?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS jumgw_schema (version int PRIMARY KEY, \
         applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .map_err(err)?;
    let found: i32 = t
        .query_one("SELECT coalesce(max(version), 0) FROM jumgw_schema", &[])
        .map_err(err)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: url.to_owned(),
            found: found as u32,
            known: SCHEMA_VERSION as u32,
        });
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        t.batch_execute(sql).map_err(err)?;
        t.execute("INSERT INTO jumgw_schema (version) VALUES ($1)", &[v])
            .map_err(err)?;
        tracing::info!(version = v, "applied PostgreSQL schema migration");
    }
    let genesis = crate::audit::Head::default();
    t.execute(
        "INSERT INTO audit_head (one, seq, hash) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
        &[&ms(genesis.seq), &genesis.hash],
    )
    .map_err(err)?;
    t.commit().map_err(err)
}

/// Database clock minus ours, taking the round trip's midpoint.
const DB_CLOCK: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Database clock minus ours, taking the round trip's midpoint.
fn measure_offset(c: &mut postgres::Client) -> Result<i64, StoreError> {
    let before = now_ms() as i64;
    let db: i64 = c
        .query_one(DB_CLOCK, &[])
        .map_err(|e| StoreError::Io(why(&e)))?
        .get(0);
    Ok(db - (before + now_ms() as i64) / 2)
}

fn put_events(t: &mut Tx<'_>, events: &[OutEvent]) -> Result<usize, postgres::Error> {
    let mut n = 0;
    for e in events {
        n += t.execute(
            "INSERT INTO events (event_id, created_ms, body) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO NOTHING",
            &[
                &e.id,
                &ms(e.created_ms),
                &serde_json::to_string(e).unwrap_or_default(),
            ],
        )? as usize;
    }
    Ok(n)
}

/// Writes audit drafts in the change's own transaction, to be chained
/// right after by [`chain_pending`]: so that no transaction holds the
/// chain's head through its commit, which made every audited change of
/// every instance wait for the one before (one disk flush each).
fn pend(t: &mut Tx<'_>, drafts: Vec<crate::audit::Draft>) -> Result<bool, postgres::Error> {
    for d in &drafts {
        t.execute(
            "INSERT INTO audit_pending (draft) VALUES ($1)",
            &[&serde_json::to_string(d).unwrap_or_default()],
        )?;
    }
    Ok(!drafts.is_empty())
}

/// Chains what is pending, in the order it was written, after the head;
/// one writer at a time (the head's row lock). Returns how many.
fn chain_pending(c: &mut Conn) -> Result<usize, postgres::Error> {
    let mut t = c.transaction()?;
    let row = t.query_one(
        "SELECT seq, hash FROM audit_head WHERE one = 1 FOR UPDATE",
        &[],
    )?;
    let rows = t.query(
        "SELECT id, draft FROM audit_pending ORDER BY id LIMIT 5000",
        &[],
    )?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (mut seq, mut hash): (i64, String) = (row.get(0), row.get(1));
    let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(r.get(0));
        let text: String = r.get(1);
        // A draft this program wrote; if it were unreadable, chaining it
        // as an empty entry keeps its place visible to `audit verify`.
        let d: crate::audit::Draft =
            serde_json::from_str(&text).unwrap_or_else(|e| crate::audit::Draft {
                action: "audit.unreadable".into(),
                outcome: e.to_string(),
                ..Default::default()
            });
        let e = crate::audit::Entry::chained(d, seq as u64 + 1, &hash);
        write_entry(&mut t, &e)?;
        seq = e.seq as i64;
        hash = e.hash;
    }
    t.execute("DELETE FROM audit_pending WHERE id = ANY($1)", &[&ids])?;
    t.execute(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE one = 1",
        &[&seq, &hash],
    )?;
    t.commit()?;
    Ok(rows.len())
}

/// The chainer: chains pending drafts soon after they are written (woken
/// by this instance's commits, and every 200 ms for other instances').
fn chainer(s: &Shared, pool: Pool) {
    while !s.stop.load(Ordering::Relaxed) {
        {
            let (flag, cv) = &s.pending;
            let mut f = lock(flag);
            if !*f {
                f = cv
                    .wait_timeout(f, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            *f = false;
        }
        let Ok(mut c) = pool.get() else { continue };
        loop {
            match chain_pending(&mut c) {
                Ok(5000) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %why(&e), "cannot chain audit entries; will retry");
                    break;
                }
            }
        }
    }
}

fn write_entry(t: &mut Tx<'_>, e: &crate::audit::Entry) -> Result<(), postgres::Error> {
    t.execute(
        "INSERT INTO audit (seq, entry) VALUES ($1, $2)",
        &[&ms(e.seq), &serde_json::to_string(e).unwrap_or_default()],
    )?;
    for s in &e.draft.subject {
        t.execute(
            "INSERT INTO audit_subject (subject, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[s, &ms(e.seq)],
        )?;
    }
    Ok(())
}

const PAUSES: &str = "SELECT registry, paused, paused_until FROM gates WHERE pause_set";

fn pauses_of(rows: Vec<postgres::Row>) -> Vec<Pause> {
    rows.into_iter()
        .map(|r| Pause {
            registry: r.get(0),
            paused: r.get(1),
            until: r.get::<_, Option<i64>>(2).map(|u| u.max(0) as u64),
        })
        .collect()
}

/// The listener: wakes this instance's dispatcher and webhook sender on
/// other instances' `NOTIFY`, pushes pauses, and keeps the clock offset.
/// It runs on a thread of its own with a small runtime: the blocking
/// client's notification wait does not end on its timeout once idle, so
/// the connection is driven asynchronously here.
fn listen(s: &Shared) {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(listen_async(s)),
        Err(e) => tracing::error!(error = %e, "no runtime for the PostgreSQL listener"),
    }
}

async fn listen_async(s: &Shared) {
    use futures_util::StreamExt;
    let mut backoff = Duration::from_millis(200);
    while !s.stop.load(Ordering::Relaxed) {
        let (client, mut conn) = match s.listen_config.connect(tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %why(&e), url = %s.url, "PostgreSQL listener cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        // The connection's messages: notifications go to the loop below.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n.channel().to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %why(&e), "PostgreSQL listener lost its connection; reconnecting");
                        break;
                    }
                }
            }
        });
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {WORK}; LISTEN {GATES}; LISTEN {EVENTS}"))
            .await
        {
            tracing::warn!(error = %why(&e), "PostgreSQL listener cannot LISTEN; retrying");
            driver.abort();
            continue;
        }
        // Whatever was announced while this connection was down.
        wake(s, &client, &[WORK, GATES, EVENTS]).await;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut last_clock = std::time::Instant::now();
        loop {
            tokio::select! {
                ch = rx.recv() => {
                    let Some(ch) = ch else { break };
                    let mut got = vec![ch];
                    while let Ok(more) = rx.try_recv() {
                        got.push(more);
                    }
                    let got: Vec<&str> = got.iter().map(String::as_str).collect();
                    wake(s, &client, &got).await;
                }
                _ = tick.tick() => {
                    if s.stop.load(Ordering::Relaxed) {
                        driver.abort();
                        return;
                    }
                    if last_clock.elapsed() > Duration::from_secs(30) {
                        last_clock = std::time::Instant::now();
                        let before = now_ms() as i64;
                        match client.query_one(DB_CLOCK, &[]).await {
                            Ok(r) => s.offset.store(
                                r.get::<_, i64>(0) - (before + now_ms() as i64) / 2,
                                Ordering::Relaxed,
                            ),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        driver.abort();
    }
}

/// Passes on what the channels in `got` announced.
async fn wake(s: &Shared, client: &tokio_postgres::Client, got: &[&str]) {
    let watch = read(&s.watch).clone();
    if let Some(w) = watch {
        if got.contains(&GATES) {
            if let Ok(rows) = client.query(PAUSES, &[]).await {
                (w.pauses)(pauses_of(rows));
            }
            w.work.notify_one();
        }
        if got.contains(&WORK) {
            w.work.notify_one();
        }
    }
    if got.contains(&EVENTS) {
        if let Some(ev) = &*read(&s.events) {
            ev.notify.notify_one();
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.shared.stop();
        // Closing a blocking client runs its own little runtime, which
        // may not start on a runtime's thread.
        let pool = self.pool.take();
        let leader = lock(&self.leader).0.take();
        blocking(move || {
            drop(pool);
            drop(leader);
        });
    }
}

#[async_trait]
impl Requests for PgStore {
    async fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> Result<Enqueued, StoreError> {
        let now = now_ms();
        let rule = self.audit_rule();
        let out = self.tx(|t| {
            let e = |x: postgres::Error| self.err(x);
            if let Some(k) = &key {
                let entry = IdemEntry {
                    request_ids: records.iter().map(|r| r.id.clone()).collect(),
                    body_hash: k.body_hash.clone(),
                    created_ms: now,
                };
                let n = t
                    .execute(
                        "INSERT INTO idempotency (client, key, entry, created_ms) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[
                            &k.client,
                            &k.key,
                            &serde_json::to_string(&entry).unwrap_or_default(),
                            &ms(now),
                        ],
                    )
                    .map_err(e)?;
                if n == 0 {
                    // Taken, by an earlier request or a concurrent one
                    // that committed first (the insert waited for it).
                    let row = t
                        .query_one(
                            "SELECT entry FROM idempotency WHERE client = $1 AND key = $2",
                            &[&k.client, &k.key],
                        )
                        .map_err(e)?;
                    let text: String = row.get(0);
                    let held = serde_json::from_str(&text).map_err(|x| StoreError::Corrupt {
                        id: k.key.clone(),
                        detail: x.to_string(),
                    })?;
                    return Ok(Enqueued::Existing(held));
                }
            }
            let mut drafts = Vec::new();
            for r in &records {
                t.execute(
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
                )
                .map_err(e)?;
                if let Some(rule) = &rule {
                    drafts.extend(rule(None, r));
                }
            }
            if records.iter().any(|r| r.due_ms.is_some()) {
                t.execute(NOTIFY_WORK, &[]).map_err(e)?;
            }
            pend(t, drafts).map_err(e)?;
            Ok(Enqueued::Stored)
        });
        self.poke();
        out
    }

    async fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.with(|c| {
            let row = c
                .query_opt("SELECT record FROM requests WHERE id = $1", &[&id])
                .map_err(|e| self.err(e))?;
            row.map(|r| {
                self.decoded.fetch_add(1, Ordering::Relaxed);
                let text: String = r.get(0);
                super::decode(id.as_bytes(), text.as_bytes())
            })
            .transpose()
        })
    }

    async fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
        self.records(
            "SELECT id, record FROM requests WHERE case_no = $1 ORDER BY id",
            &[&case],
        )
    }

    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT due_ms, id, work FROM requests WHERE due_ms <= $1 \
                     ORDER BY due_ms, id LIMIT $2",
                    &[&ms(now_ms), &(limit as i64)],
                )
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
    }

    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        self.with(|c| {
            let row = c
                .query_one(
                    "SELECT min(due_ms) FROM requests WHERE due_ms IS NOT NULL",
                    &[],
                )
                .map_err(|e| self.err(e))?;
            Ok(row.get::<_, Option<i64>>(0).map(|d| d.max(0) as u64))
        })
    }

    async fn update(
        &self,
        id: &str,
        f: &super::Change<'_>,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let out = self.tx(|t| {
            let Some((old, mut new)) = self.change(t, id, false, f)? else {
                return Ok(None);
            };
            let raised = self.write_change(t, &old, &mut new)?;
            Ok(Some((new, raised)))
        })?;
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
        let out = self.with(|c| {
            let e = |x: postgres::Error| self.err(x);
            let mut t = c.transaction().map_err(e)?;
            let Some((old, mut new)) = self.change(&mut t, id, true, f)? else {
                return Ok(Lease::Passed);
            };
            let raised = self.write_change(&mut t, &old, &mut new)?;
            // The registry's limits last: its gate row is locked from here
            // to the commit, and every instance's leases of that registry
            // take turns on it; the shorter, the better. (Locks are always
            // taken request row first, then gate row.)
            if let Some(g) = gate {
                if let Err(until) = self.admit(&mut t, g, id, now)? {
                    t.rollback().map_err(e)?;
                    return Ok(Lease::Blocked(until));
                }
            }
            t.commit().map_err(e)?;
            self.after_events(raised);
            Ok(Lease::Taken(Box::new(new)))
        })?;
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
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.tx(|t| {
            t.execute("DELETE FROM requests WHERE id = $1", &[&id])
                .map_err(|e| self.err(e))?;
            t.execute("DELETE FROM documents WHERE id = $1", &[&id])
                .map_err(|e| self.err(e))?;
            Ok(())
        })
    }

    async fn list(&self, q: &Listing) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = Vec::new();
        self.walk(&q.selector, q.order, q.after.clone(), q.limit, |r| {
            out.push(r);
            out.len() < q.limit
        })?;
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
        })?;
        Ok(n)
    }

    async fn tally(&self) -> Result<Tally, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT registry, state, sum(n)::bigint FROM request_counts \
                 GROUP BY registry, state HAVING sum(n) <> 0",
                &[],
            )
            .map_err(|e| self.err(e))
        })?;
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
        let first = self.records(
            "SELECT id, record FROM requests WHERE id = ANY(ARRAY[\
             (SELECT id FROM requests WHERE state = 'queued' ORDER BY id LIMIT 1), \
             (SELECT id FROM requests WHERE state = 'sending' ORDER BY id LIMIT 1), \
             (SELECT id FROM requests WHERE state = 'awaiting' ORDER BY id LIMIT 1), \
             (SELECT id FROM requests WHERE state = 'retrying' ORDER BY id LIMIT 1)])",
            &[],
        )?;
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
    }

    fn records_read(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Documents for PgStore {
    async fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO documents (id, sealed) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&id, &bytes],
            )
            .map(drop)
            .map_err(|e| self.err(e))
        })
    }

    async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            Ok(
                c.query_opt("SELECT sealed FROM documents WHERE id = $1", &[&id])
                    .map_err(|e| self.err(e))?
                    .map(|r| r.get(0)),
            )
        })
    }
}

#[async_trait]
impl Idempotency for PgStore {
    async fn idempotency(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError> {
        self.with(|c| {
            let row = c
                .query_opt(
                    "SELECT entry FROM idempotency WHERE client = $1 AND key = $2",
                    &[&client, &key],
                )
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
    }

    async fn purge_idempotency(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM idempotency WHERE created_ms < $1",
                &[&ms(before_ms)],
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
        })
    }
}

#[async_trait]
impl AuditTrail for PgStore {
    fn set_audit_rule(&self, rule: crate::audit::AuditRule) {
        *write(&self.audit_rule) = Some(rule);
    }

    async fn audit_append(&self, drafts: Vec<crate::audit::Draft>) -> Result<(), StoreError> {
        self.tx(|t| pend(t, drafts).map_err(|e| self.err(e)))?;
        // Chained before it returns, as on sled: the caller may read it.
        self.chain_now()
    }

    async fn audit_scan(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::audit::Entry, String>)>, StoreError> {
        self.chain_now()?;
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT seq, entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&ms(after_seq), &(limit as i64)],
                )
                .map_err(|e| self.err(e))?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let text: String = r.get(1);
                    (
                        r.get::<_, i64>(0).max(0) as u64,
                        serde_json::from_str(&text).map_err(|e| e.to_string()),
                    )
                })
                .collect())
        })
    }

    async fn audit_by_subject(&self, hash: &str) -> Result<Vec<crate::audit::Entry>, StoreError> {
        self.chain_now()?;
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT a.seq, a.entry FROM audit_subject s JOIN audit a ON a.seq = s.seq \
                     WHERE s.subject = $1 ORDER BY a.seq",
                    &[&hash],
                )
                .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|r| {
                    let text: String = r.get(1);
                    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                        id: format!("audit entry {}", r.get::<_, i64>(0)),
                        detail: e.to_string(),
                    })
                })
                .collect()
        })
    }

    async fn audit_head(&self) -> Result<crate::audit::Head, StoreError> {
        self.chain_now()?;
        self.with(|c| {
            let row = c
                .query_one("SELECT seq, hash FROM audit_head WHERE one = 1", &[])
                .map_err(|e| self.err(e))?;
            Ok(crate::audit::Head {
                seq: row.get::<_, i64>(0).max(0) as u64,
                hash: row.get(1),
            })
        })
    }

    async fn audit_restore(&self, entries: Vec<crate::audit::Entry>) -> Result<(), StoreError> {
        self.chain_now()?;
        self.tx(|t| {
            let e = |x: postgres::Error| self.err(x);
            let row = t
                .query_one(
                    "SELECT seq, hash FROM audit_head WHERE one = 1 FOR UPDATE",
                    &[],
                )
                .map_err(e)?;
            let mut seq = row.get::<_, i64>(0).max(0) as u64;
            let mut hash: String = row.get(1);
            for entry in &entries {
                if entry.seq != seq + 1 {
                    return Err(StoreError::Corrupt {
                        id: format!("audit entry {}", entry.seq),
                        detail: format!("expected entry {}", seq + 1),
                    });
                }
                write_entry(t, entry).map_err(e)?;
                seq = entry.seq;
                hash = entry.hash.clone();
            }
            t.execute(
                "UPDATE audit_head SET seq = $1, hash = $2 WHERE one = 1",
                &[&ms(seq), &hash],
            )
            .map_err(e)?;
            Ok(())
        })
    }
}

#[async_trait]
impl Outbox for PgStore {
    fn set_event_rule(&self, rule: EventRule) {
        *write(&self.shared.events) = Some(rule);
    }

    async fn emit(&self, events: Vec<OutEvent>) -> Result<usize, StoreError> {
        let n = self.tx(|t| {
            let n = put_events(t, &events).map_err(|e| self.err(e))?;
            if n > 0 {
                t.execute(NOTIFY_EVENTS, &[]).map_err(|e| self.err(e))?;
            }
            Ok(n)
        })?;
        self.after_events(n);
        Ok(n)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT seq, body FROM events WHERE NOT done ORDER BY seq LIMIT $1",
                    &[&(limit as i64)],
                )
                .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|r| {
                    let seq = r.get::<_, i64>(0).max(0) as u64;
                    let text: String = r.get(1);
                    Ok((seq, super::decode_event(seq, text.as_bytes())?))
                })
                .collect()
        })
    }

    async fn event(&self, seq: u64) -> Result<Option<OutEvent>, StoreError> {
        self.with(|c| {
            let row = c
                .query_opt(
                    "SELECT body FROM events WHERE seq = $1 AND NOT done",
                    &[&ms(seq)],
                )
                .map_err(|e| self.err(e))?;
            row.map(|r| {
                let text: String = r.get(0);
                super::decode_event(seq, text.as_bytes())
            })
            .transpose()
        })
    }

    async fn outbox_retry(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError> {
        let body = serde_json::to_string(event).map_err(|e| StoreError::Io(e.to_string()))?;
        self.with(|c| {
            // Only if it is still waiting: never resurrect a sent event.
            c.execute(
                "UPDATE events SET body = $2 WHERE seq = $1 AND NOT done",
                &[&ms(seq), &body],
            )
            .map(drop)
            .map_err(|e| self.err(e))
        })
    }

    async fn outbox_done(&self, seq: u64) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("UPDATE events SET done = true WHERE seq = $1", &[&ms(seq)])
                .map(drop)
                .map_err(|e| self.err(e))
        })
    }

    async fn purge_event_ids(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM events WHERE done AND created_ms < $1",
                &[&ms(before_ms)],
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
        })
    }
}

#[async_trait]
impl Coordination for PgStore {
    fn shares_limits(&self) -> bool {
        true
    }

    async fn gate_record(
        &self,
        g: &GateLimits,
        failed: bool,
        now_ms: u64,
    ) -> Result<Option<Breaker>, StoreError> {
        self.tx(|t| {
            let limits = self.lock_gate(t, &g.registry)?;
            let mut s = Limiter::restore(limits.as_deref(), g, now_ms);
            let before = s.keep();
            s.record(failed, now_ms);
            let after = s.keep();
            if after != before {
                t.execute(
                    "UPDATE gates SET limits = $2 WHERE registry = $1",
                    &[&g.registry, &after],
                )
                .map_err(|e| self.err(e))?;
            }
            Ok(Some(s.breaker().clone()))
        })
    }

    async fn set_pause(&self, p: &Pause) -> Result<(), StoreError> {
        self.tx(|t| {
            let e = |x: postgres::Error| self.err(x);
            t.execute(
                "INSERT INTO gates (registry, paused, paused_until, pause_set) \
                 VALUES ($1, $2, $3, true) ON CONFLICT (registry) \
                 DO UPDATE SET paused = $2, paused_until = $3, pause_set = true",
                &[&p.registry, &p.paused, &p.until.map(ms)],
            )
            .map_err(e)?;
            t.execute(NOTIFY_GATES, &[]).map_err(e)?;
            Ok(())
        })
    }

    async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        self.with(|c| Ok(pauses_of(c.query(PAUSES, &[]).map_err(|e| self.err(e))?)))
    }

    fn watch(&self, w: Watch) {
        *write(&self.shared.watch) = Some(w);
    }

    async fn lead(&self, role: &str) -> bool {
        let mut l = lock(&self.leader);
        let (conn, held) = &mut *l;
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            // The locks went with the connection.
            *conn = None;
            held.clear();
        }
        if held.contains(role) {
            return true;
        }
        blocking(|| {
            if conn.is_none() {
                match self.shared.config.connect(NoTls) {
                    Ok(c) => *conn = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %why(&e), "cannot connect for an advisory lock");
                        return false;
                    }
                }
            }
            let Some(c) = conn.as_mut() else {
                return false;
            };
            match c.query_one(
                "SELECT pg_try_advisory_lock(hashtext('jumgw:' || $1))",
                &[&role],
            ) {
                Ok(r) if r.get::<_, bool>(0) => {
                    held.insert(role.to_owned());
                    tracing::info!(role, "this instance now leads");
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %why(&e), "advisory lock");
                    *conn = None;
                    held.clear();
                    false
                }
            }
        })
    }

    fn clock_ms(&self) -> u64 {
        (now_ms() as i64 + self.shared.offset.load(Ordering::Relaxed)).max(0) as u64
    }
}

#[async_trait]
impl Upkeep for PgStore {
    async fn writable(&self) -> bool {
        self.with(|c| {
            c.query_one("SELECT NOT pg_is_in_recovery()", &[])
                .map(|r| r.get::<_, bool>(0))
                .map_err(|e| self.err(e))
        })
        .unwrap_or(false)
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_one("SELECT pg_database_size(current_database())", &[])
                .map(|r| r.get::<_, i64>(0).max(0) as u64)
                .map_err(|e| self.err(e))
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every commit is already durable.
        Ok(())
    }

    async fn close(&self) -> Result<(), StoreError> {
        // The listener sees this within 200 ms and ends; nothing
        // waits for it (it writes nothing).
        self.shared.stop();
        lock(&self.listener).take();
        Ok(())
    }
}

impl PgStore {
    /// Calls `f` on each request `sel` selects, in `order`, after the id
    /// `after`, until `f` says stop: pages of `batch` rows from the index
    /// that fits (state, attention, case, or the primary key), filtered
    /// here by the fields no column holds.
    fn walk(
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
            let page = self.records_by(sql, &[&key, &lo, &hi, &sel.registry, &batch], false)?;
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

    fn records(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.records_by(sql, params, true)
    }

    /// `cached`: a statement prepared once per connection. Not for the
    /// walks of [`PgStore::walk`]: after five runs PostgreSQL may keep a
    /// generic plan, which cannot see how narrow the id bounds are and
    /// sorts a whole state (half a second at a million requests) where a
    /// plan for the values walks the index a page long.
    fn records_by(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        cached: bool,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.with(|c| {
            let rows = if cached {
                c.query(sql, params)
            } else {
                c.client.query(sql, params)
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
    }

    /// Empties every table (tests and `store import` into a fresh
    /// database use a database of their own instead; this is for tests).
    #[doc(hidden)]
    pub fn truncate_all(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.batch_execute(
                "TRUNCATE requests, request_counts, documents, idempotency, events, audit, audit_subject, gates; \
                 UPDATE audit_head SET seq = 0, hash = repeat('0', 64)",
            )
            .map_err(|e| self.err(e))
        })
    }
}

#[cfg(test)]
mod tests {
    //! Several instances on one database, as a hub runs them: two stores
    //! opened on the same database stand for two processes.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::limits::BreakerState;
    use crate::store::QueueStore;

    fn record(n: u64, registry: &str) -> RequestRecord {
        let mut r = RequestRecord::queued(
            "c",
            format!("351-{}/2026", n % 5),
            "ZUP".into(),
            "o".into(),
            "p".into(),
            format!("{registry}.x"),
            registry.into(),
            vec![("pib".into(), "101134702".into())],
            Duration::from_secs(3600),
        );
        r.due_ms = Some(1_000 + n);
        r
    }

    fn limits(registry: &str, max_in_flight: usize, rate: f64) -> GateLimits {
        GateLimits {
            registry: registry.into(),
            max_in_flight,
            rate_per_s: rate,
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(5),
            lease_ms: 30_000,
        }
    }

    fn send(until: u64) -> impl Fn(&mut RequestRecord) -> bool + Sync {
        move |r: &mut RequestRecord| {
            if r.state != State::Queued {
                return false;
            }
            r.state = State::Sending;
            r.due_ms = Some(until);
            true
        }
    }

    fn two(tag: &str) -> (Arc<PgStore>, Arc<PgStore>) {
        let url = crate::store::testing::fresh_database(tag);
        (
            PgStore::open(&url, 4).unwrap(),
            PgStore::open(&url, 4).unwrap(),
        )
    }

    #[cfg_attr(
        not(jumgw_pg),
        ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
    )]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_never_lease_one_request_twice() {
        let (a, b) = two("lease");
        let recs: Vec<_> = (0..300).map(|n| record(n, "tax")).collect();
        a.enqueue(recs.clone()).await.unwrap();
        let now = a.clock_ms();
        let run = |s: Arc<PgStore>| {
            tokio::spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let due = s.due(now, 50).await.unwrap();
                    if due.is_empty() {
                        break;
                    }
                    for d in due {
                        let at = d.at_ms;
                        let f = move |r: &mut RequestRecord| {
                            if r.due_ms != Some(at) {
                                return false;
                            }
                            r.state = State::Sending;
                            r.due_ms = Some(u64::MAX / 8);
                            true
                        };
                        if let Lease::Taken(r) = s.lease(&d.id, None, &f).await.unwrap() {
                            taken.push(r.id);
                        }
                    }
                }
                taken
            })
        };
        let (x, y) = tokio::join!(run(a.clone()), run(b.clone()));
        let (x, y) = (x.unwrap(), y.unwrap());
        let mut all: Vec<String> = x.iter().chain(y.iter()).cloned().collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(n, all.len(), "a request was leased twice");
        assert_eq!(n, 300, "every request leased once");
        assert!(
            !x.is_empty() && !y.is_empty(),
            "both instances took part: {} and {}",
            x.len(),
            y.len()
        );
    }

    #[cfg_attr(
        not(jumgw_pg),
        ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
    )]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_rate_and_breaker_hold_across_instances() {
        let (a, b) = two("limits");
        a.enqueue((0..10).map(|n| record(n, "civil")).collect())
            .await
            .unwrap();
        let ids: Vec<String> = a
            .due(u64::MAX / 8, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        let now = a.clock_ms();
        // max 3 in flight in all: two here, one there, then neither.
        let g = limits("civil", 3, 1000.0);
        let f = send(now + 60_000);
        for (s, id) in [(&a, &ids[0]), (&b, &ids[1]), (&a, &ids[2])] {
            assert!(matches!(
                s.lease(id, Some(&g), &f).await.unwrap(),
                Lease::Taken(_)
            ));
        }
        assert!(matches!(
            b.lease(&ids[3], Some(&g), &f).await.unwrap(),
            Lease::Blocked(None)
        ));
        assert!(matches!(
            a.lease(&ids[3], Some(&g), &f).await.unwrap(),
            Lease::Blocked(None)
        ));
        // a refused lease changed nothing
        assert_eq!(b.get(&ids[3]).await.unwrap().unwrap().state, State::Queued);
        // the gate row the leases made is no administrator's pause
        assert!(a.pauses().await.unwrap().is_empty());

        // one request per 1,000 s in all: one instance's token is gone for
        // the other (however slowly this machine goes on to ask)
        let g = limits("civil", 100, 0.001);
        let got = a.lease(&ids[4], Some(&g), &f).await.unwrap();
        assert!(matches!(got, Lease::Taken(_)), "{got:?}");
        match b.lease(&ids[5], Some(&g), &f).await.unwrap() {
            Lease::Blocked(Some(until)) => assert!(until > now, "{until} {now}"),
            other => panic!("the other instance got past the rate: {other:?}"),
        }

        // the breaker opens on failures seen by either instance (and stays
        // open for ten minutes, longer than any pause of this machine)
        let g = GateLimits {
            breaker_cooldown: Duration::from_secs(600),
            ..limits("civil", 100, 1000.0)
        };
        a.gate_record(&g, true, now).await.unwrap();
        let br = b.gate_record(&g, true, now).await.unwrap().unwrap();
        assert!(matches!(br.state(), BreakerState::Open { .. }));
        match a.lease(&ids[6], Some(&g), &f).await.unwrap() {
            Lease::Blocked(Some(until)) => assert!(until >= now + 600_000, "{until} {now}"),
            other => panic!("an open breaker let a lease through: {other:?}"),
        }
    }

    #[cfg_attr(
        not(jumgw_pg),
        ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
    )]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pause_reaches_the_other_instance_and_wakes_it() {
        let (a, b) = two("pause");
        let seen: Arc<Mutex<Vec<Pause>>> = Default::default();
        let s2 = seen.clone();
        let work = Arc::new(tokio::sync::Notify::new());
        b.watch(Watch {
            work: work.clone(),
            pauses: Arc::new(move |p| *lock(&s2) = p),
        });
        // The listener connects in the background, and a NOTIFY before it
        // listens reaches nobody: pause again until the other instance has
        // heard it (a deadline, not a guess of how long connecting takes).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&seen).is_empty() && std::time::Instant::now() < deadline {
            a.set_pause(&Pause {
                registry: "tax".into(),
                paused: true,
                until: Some(4_102_444_800_000),
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            *lock(&seen),
            vec![Pause {
                registry: "tax".into(),
                paused: true,
                until: Some(4_102_444_800_000)
            }]
        );
        // a request accepted by one instance wakes the other
        let woken = work.notified();
        a.enqueue(vec![record(1, "tax")]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("NOTIFY woke the other instance");
        assert_eq!(b.pauses().await.unwrap().len(), 1);
    }

    #[cfg_attr(
        not(jumgw_pg),
        ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
    )]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_idempotency_key_stores_once_across_instances() {
        let (a, b) = two("idem");
        let key = IdemKey {
            client: "c".into(),
            key: "k-1".into(),
            body_hash: "h".into(),
        };
        let (x, y) = tokio::join!(
            a.enqueue_once(vec![record(1, "tax")], Some(key.clone())),
            b.enqueue_once(vec![record(2, "tax")], Some(key.clone()))
        );
        let outcomes = [x.unwrap(), y.unwrap()];
        assert_eq!(
            outcomes.iter().filter(|o| **o == Enqueued::Stored).count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(a.scan(None, 10).await.unwrap().len(), 1);
    }

    /// A closed store leaves no connection behind (its listener, idle and
    /// waiting for notifications, must still see that it is to stop).
    #[cfg_attr(
        not(jumgw_pg),
        ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
    )]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_store_releases_its_connections() {
        let url = crate::store::testing::fresh_database("close");
        for _ in 0..5 {
            let s: Arc<dyn QueueStore> = PgStore::open(&url, 3).unwrap();
            s.enqueue(vec![record(1, "tax")]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.close().await.unwrap();
            drop(s);
        }
        let probe = PgStore::open(&url, 2).unwrap();
        let count = || {
            probe
                .with(|c| {
                    Ok(c.query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid() \
                         AND application_name = 'jumgw listener'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0))
                })
                .unwrap()
        };
        let end = std::time::Instant::now() + Duration::from_secs(3);
        // the probe's own listener is the one left
        while count() > 1 {
            assert!(
                std::time::Instant::now() < end,
                "{} listeners left",
                count()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[cfg_attr(
        not(jumgw_pg),
        ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
    )]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
        let url = crate::store::testing::fresh_database("migrate");
        // instances starting together take turns
        let opens: Vec<_> = (0..3)
            .map(|_| {
                let u = url.clone();
                std::thread::spawn(move || PgStore::open(&u, 2).map(drop))
            })
            .collect();
        for o in opens {
            o.join().unwrap().unwrap();
        }
        let s = PgStore::open(&url, 2).unwrap();
        // A database of version 2 with a request and a gate row in it, as
        // an earlier build left it: opening it applies migrations 3 and 4
        // only, and keeps what was there (counted by 4's backfill).
        s.enqueue(vec![record(7, "tax")]).await.unwrap();
        s.with(|c| {
            c.batch_execute(
                "INSERT INTO gates (registry, paused) VALUES ('tax', true); \
                 ALTER TABLE gates DROP COLUMN pause_set; \
                 DROP TRIGGER requests_count ON requests; \
                 DROP TRIGGER requests_recount ON requests; \
                 DROP FUNCTION jumgw_count(); DROP TABLE request_counts; \
                 DROP INDEX requests_state; \
                 ALTER TABLE requests DROP COLUMN deadline_ms, DROP COLUMN attention, \
                     DROP COLUMN at_risk; \
                 DELETE FROM jumgw_schema WHERE version IN (3, 4)",
            )
            .unwrap();
            Ok(())
        })
        .unwrap();
        drop(s);
        let s = PgStore::open(&url, 2).unwrap();
        assert_eq!(s.scan(None, 10).await.unwrap().len(), 1);
        assert_eq!(s.tally().await.unwrap().state(State::Queued), 1);
        assert_eq!(s.by_deadline(u64::MAX, 10).await.unwrap().len(), 1);
        assert!(
            s.pauses().await.unwrap().is_empty(),
            "the old row is no admin pause"
        );
        s.with(|c| {
            let n: i64 = c
                .query_one("SELECT count(*) FROM jumgw_schema", &[])
                .unwrap()
                .get(0);
            assert_eq!(n, MIGRATIONS.len() as i64);
            c.execute("INSERT INTO jumgw_schema (version) VALUES (99)", &[])
                .unwrap();
            Ok(())
        })
        .unwrap();
        drop(s);
        let e = PgStore::open(&url, 2).err().unwrap().to_string();
        assert!(
            e.contains(&format!(
                "has schema version 99; this jumgw knows up to {SCHEMA_VERSION}"
            )),
            "{e}"
        );
        let e = PgStore::open("postgres://nobody@127.0.0.1:1/x", 2)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("PostgreSQL at postgres://nobody@127.0.0.1:1/x: ")
                && e.contains("Connection refused"),
            "{e}"
        );
        // the server's own reason, not the client's "db error"
        let (server, _) = url.rsplit_once('/').unwrap();
        let stranger = format!("{}/x", server.replacen("://jumgw@", "://nobody@", 1));
        let e = PgStore::open(&stranger, 2).err().unwrap().to_string();
        assert!(e.contains(r#"role "nobody" does not exist"#), "{e}");
    }
}
