//! Several instances on one database, as a hub runs them: two stores
//! opened on the same database stand for two processes.
#![allow(clippy::unwrap_used)]

use super::schema::MIGRATIONS;
use super::*;
use crate::limits::BreakerState;
use crate::store::Pause;
use crate::store::QueueStore;
use crate::store::{AuditTrail, Upkeep};

fn record(n: u64, registry: &str) -> RequestRecord {
    let mut r = crate::lifecycle::record::testing::record()
        .case(format!("351-{}/2026", n % 5))
        .service(&format!("{registry}.x"), registry)
        .subject(&[("pib", "101134702")])
        .now(Duration::from_secs(3600))
        .build();
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

async fn two(tag: &str) -> (Arc<PgStore>, Arc<PgStore>) {
    let url = crate::store::testing::fresh_database(tag);
    (
        PgStore::open(&url, 4).await.unwrap(),
        PgStore::open(&url, 4).await.unwrap(),
    )
}

#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_lease_one_request_twice() {
    let (a, b) = two("lease").await;
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
                        taken.push(r.id.into_string());
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
    let (a, b) = two("limits").await;
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
    let (a, b) = two("pause").await;
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
    let (a, b) = two("idem").await;
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
        let s: Arc<dyn QueueStore> = PgStore::open(&url, 3).await.unwrap();
        s.enqueue(vec![record(1, "tax")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.close().await.unwrap();
        drop(s);
    }
    let probe = PgStore::open(&url, 2).await.unwrap();
    let count = async || {
        probe
            .with(async |c| {
                Ok(c.one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND application_name = 'jumgw listener'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0))
            })
            .await
            .unwrap()
    };
    let end = std::time::Instant::now() + Duration::from_secs(3);
    // the probe's own listener is the one left
    while count().await > 1 {
        assert!(
            std::time::Instant::now() < end,
            "{} listeners left",
            count().await
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
            tokio::spawn(async move { PgStore::open(&u, 2).await.map(drop) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let s = PgStore::open(&url, 2).await.unwrap();
    // A database of version 2 with a request and a gate row in it, as
    // an earlier build left it: opening it applies migrations 3 to 5
    // only, and keeps what was there (counted by 4's backfill).
    s.enqueue(vec![record(7, "tax")]).await.unwrap();
    s.with(async |c| {
        c.batch_execute(
            "INSERT INTO gates (registry, paused) VALUES ('tax', true); \
             ALTER TABLE gates DROP COLUMN pause_set; \
             DROP TRIGGER requests_count ON requests; \
             DROP TRIGGER requests_recount ON requests; \
             DROP FUNCTION jumgw_count(); DROP TABLE request_counts; \
             DROP INDEX requests_state; \
             ALTER TABLE requests DROP COLUMN deadline_ms, DROP COLUMN attention, \
                 DROP COLUMN at_risk, DROP COLUMN stamp_ms; \
             DELETE FROM jumgw_schema WHERE version IN (3, 4, 5)",
        )
        .await
        .unwrap();
        Ok(())
    })
    .await
    .unwrap();
    drop(s);
    let s = PgStore::open(&url, 2).await.unwrap();
    assert_eq!(s.scan(None, 10).await.unwrap().len(), 1);
    assert_eq!(s.tally().await.unwrap().state(State::Queued), 1);
    assert_eq!(s.by_deadline(u64::MAX, 10).await.unwrap().len(), 1);
    assert!(
        s.pauses().await.unwrap().is_empty(),
        "the old row is no admin pause"
    );
    s.with(async |c| {
        let n: i64 = c
            .one("SELECT count(*) FROM jumgw_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, MIGRATIONS.len() as i64);
        c.run("INSERT INTO jumgw_schema (version) VALUES (99)", &[])
            .await
            .unwrap();
        Ok(())
    })
    .await
    .unwrap();
    drop(s);
    let e = PgStore::open(&url, 2).await.err().unwrap().to_string();
    assert!(
        e.contains(&format!(
            "has schema version 99; this jumgw knows up to {SCHEMA_VERSION}"
        )),
        "{e}"
    );
    let e = PgStore::open("postgres://nobody@127.0.0.1:1/x", 2)
        .await
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
    let e = PgStore::open(&stranger, 2).await.err().unwrap().to_string();
    assert!(e.contains(r#"role "nobody" does not exist"#), "{e}");
}

/// The check of a PostgreSQL store names each way it can disagree with
/// itself: a record that does not decode, a column that disagrees with its
/// record, a counter off, a named document missing, an audit entry
/// unreadable; a store as the gateway wrote it is clean.
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_what_disagrees() {
    let url = crate::store::testing::fresh_database("check");
    let s = PgStore::open(&url, 2).await.unwrap();
    let recs: Vec<_> = (0..20).map(|i| record(i, "civil")).collect();
    let ids: Vec<String> = recs.iter().map(|r| r.id.to_string()).collect();
    s.enqueue(recs).await.unwrap();
    let fetched = [ids[4].as_str(), ids[5].as_str()];
    s.update_many(
        &fetched,
        &[(ids[4].as_str(), b"<a/>"), (ids[5].as_str(), b"<b/>")],
        &|r| {
            r.state = State::Fetched;
            r.document_id = Some(r.id.to_string());
            true
        },
    )
    .await
    .unwrap();
    s.audit_append(vec![crate::store::trail::Draft::default(); 3])
        .await
        .unwrap();
    let clean = s.check().await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.damage);
    assert_eq!(clean.read["requests"], 20);
    let sql = format!(
        "UPDATE requests SET record = '{{nope' WHERE id = '{a}'; \
         UPDATE requests SET state = 'dead' WHERE id = '{b}'; \
         DELETE FROM documents WHERE id = '{c}'; \
         INSERT INTO request_counts VALUES ('tax', 'queued', 0, 5); \
         UPDATE audit SET entry = 'x' WHERE seq = 2",
        a = ids[1],
        b = ids[2],
        c = ids[4]
    );
    s.with(async |c| {
        c.batch_execute(&sql).await.unwrap();
        Ok(())
    })
    .await
    .unwrap();
    let r = s.check().await.unwrap();
    let has = |table: &str, key: &str, what: &str| {
        r.damage
            .iter()
            .any(|d| d.tree == table && d.key.contains(key) && d.problem.contains(what))
    };
    let all = format!("{:#?} {ids:?}", r.damage);
    assert!(has("requests", &ids[1], "unreadable"), "{all}");
    assert!(
        has(
            "requests",
            &ids[2],
            "the row disagrees with its record in state"
        ),
        "{all}"
    );
    assert!(has("documents", &ids[4], "missing"), "{all}");
    assert!(has("request_counts", "tax queued", "counts 5"), "{all}");
    assert!(has("audit", "2", "unreadable"), "{all}");
    s.close().await.unwrap();
}

/// A parameter of a statement the plan test runs: bound (`sql`), and
/// written into an `EXECUTE` of the statement prepared by name (`ty`,
/// `literal`).
enum Arg {
    Text(Option<String>),
    Int(i64),
}

impl Arg {
    fn sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Arg::Text(t) => t,
            Arg::Int(i) => i,
        }
    }
    fn ty(&self) -> &'static str {
        match self {
            Arg::Text(_) => "text",
            Arg::Int(_) => "bigint",
        }
    }
    fn literal(&self) -> String {
        match self {
            Arg::Text(None) => "NULL".into(),
            Arg::Text(Some(t)) => format!("'{}'", t.replace('\'', "''")),
            Arg::Int(i) => i.to_string(),
        }
    }
}

/// An `EXPLAIN (FORMAT JSON)` result, read as its text.
struct Plan(String);

impl<'a> tokio_postgres::types::FromSql<'a> for Plan {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Plan(String::from_utf8(raw.to_vec())?))
    }
    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSON
    }
}

/// The rows of `requests` a plan node and those under it read (returned
/// or filtered out, over every loop), and whether any is a sequential scan.
fn requests_read(node: &serde_json::Value) -> (f64, bool) {
    let num = |k: &str| node[k].as_f64().unwrap_or(0.0);
    let (mut rows, mut seq) = (0.0, false);
    if node["Relation Name"] == "requests" {
        rows += num("Actual Loops")
            * (num("Actual Rows")
                + num("Rows Removed by Filter")
                + num("Rows Removed by Index Recheck"));
        seq = node["Node Type"] == "Seq Scan";
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        let (r, s) = requests_read(child);
        rows += r;
        seq |= s;
    }
    (rows, seq)
}

/// "Queries, not scans" on PostgreSQL: over 20,000 requests (analysed),
/// each statement that reads requests for the dispatcher or an operator
/// (the walks of every listing and count by each index, both orders,
/// with and without a registry; the case; what is due; the oldest open;
/// the deadlines; the timestamps due) is run under `EXPLAIN ANALYZE` with
/// the parameters the store gives it, and must read no row by a
/// sequential scan and at most a tenth of the table (a page of 50 a
/// registry holds one in ten of may take ~500 rows by the primary key,
/// which the planner may prefer to the state index). A control shows the
/// same reading sees a query that does scan.
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_read_by_index() {
    use tokio_postgres::types::ToSql;
    let url = crate::store::testing::fresh_database("plans");
    let s = PgStore::open(&url, 2).await.unwrap();
    let now = s.clock_ms();
    const N: u64 = 20_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(2_000) {
        let recs: Vec<RequestRecord> = chunk
            .iter()
            .map(|&n| {
                let mut r = record(n, if n % 2 == 0 { "civil" } else { "tax" });
                r.case = format!("351-{}/2026", n / 10).into();
                r.deadline_ms = now + (n * 7919 % 30) * 86_400_000;
                match n % 20 {
                    0..=11 => {
                        r.state = State::Delivered;
                        r.due_ms = None;
                    }
                    12..=15 => {
                        r.state = State::Dead;
                        r.due_ms = None;
                    }
                    16..=17 => {
                        r.state = State::Retrying;
                        r.due_ms = Some(now + 86_400_000);
                    }
                    18 => r.due_ms = Some(now - 1_000),
                    _ => {
                        r.state = State::Fetched;
                        r.document_id = Some(r.id.to_string());
                        r.due_ms = Some(now + 3_600_000);
                        r.stamp = Some(crate::lifecycle::StampRecord::pending(now + n));
                        if n % 40 == 19 {
                            // Came by X-Road: its signed document is due too.
                            r.signed_document =
                                Some(crate::lifecycle::SignedDocRecord::pending("m", now + n / 2));
                        }
                    }
                }
                r
            })
            .collect();
        s.enqueue(recs).await.unwrap();
    }
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute("ANALYZE requests").await.unwrap();

    let top = Arg::Text(Some("ZZZZZZZZZZZZZZZZZZZZZZZZZZZ".to_owned()));
    let (none, lo, page) = (
        Arg::Text(None),
        Arg::Text(Some(String::new())),
        Arg::Int(50),
    );
    let text = |s: &str| Arg::Text(Some(s.to_owned()));
    let (dead, case, civil) = (text("dead"), text("351-777/2026"), text("civil"));
    let (until, t) = (
        Arg::Int(now as i64 + 7 * 86_400_000),
        Arg::Int(now as i64 + 5_000_000),
    );
    let walk = [&none, &lo, &top, &none, &page];
    let walk_civil = [&none, &lo, &top, &civil, &page];
    let state = [&dead, &lo, &top, &none, &page];
    let state_civil = [&dead, &lo, &top, &civil, &page];
    let in_case = [&case, &lo, &top, &none, &page];
    let now_ms = Arg::Int(now as i64);
    let queries: Vec<(&str, &str, Vec<&Arg>)> = vec![
        ("attention, oldest", WALK_ATTENTION.0, walk.to_vec()),
        ("attention, newest", WALK_ATTENTION.1, walk.to_vec()),
        (
            "attention of a registry",
            WALK_ATTENTION.0,
            walk_civil.to_vec(),
        ),
        ("a state, oldest", WALK_STATE.0, state.to_vec()),
        ("a state, newest", WALK_STATE.1, state.to_vec()),
        ("a state of a registry", WALK_STATE.1, state_civil.to_vec()),
        ("a case, oldest", WALK_CASE.0, in_case.to_vec()),
        ("a case, newest", WALK_CASE.1, in_case.to_vec()),
        ("everything, oldest", WALK_ALL.0, walk.to_vec()),
        ("everything, newest", WALK_ALL.1, walk_civil.to_vec()),
        ("by case", BY_CASE, vec![&case]),
        ("due", DUE, vec![&now_ms, &page]),
        ("next due", NEXT_DUE, vec![]),
        ("oldest open", OLDEST_OPEN, vec![]),
        ("deadlines", BY_DEADLINE, vec![&until, &page]),
        ("evidence due", EVIDENCE_DUE, vec![&t, &page]),
        // The control: a query no index serves.
        (
            "control",
            "SELECT id FROM requests WHERE record LIKE '%\"tax\"%' LIMIT 100000",
            vec![],
        ),
    ];
    // Each statement twice: planned for its values (as EXPLAIN with bound
    // parameters, and a statement prepared for one call, are), then as a
    // generic plan, which a statement prepared once per connection
    // (`prepare_cached`) may be switched to after five runs, and which
    // cannot see that a `$1 IS NULL` is true.
    let mut scans = Vec::new();
    for (n, (what, sql, params)) in queries.into_iter().enumerate() {
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(|a| a.sql()).collect();
        let row = c
            .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), &bound)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let custom: serde_json::Value = serde_json::from_str(&row.get::<_, Plan>(0).0).unwrap();
        let types: Vec<&str> = params.iter().map(|a| a.ty()).collect();
        let values: Vec<String> = params.iter().map(|a| a.literal()).collect();
        let (prepare, execute) = if params.is_empty() {
            (format!("PREPARE q{n} AS {sql}"), format!("EXECUTE q{n}"))
        } else {
            (
                format!("PREPARE q{n} ({}) AS {sql}", types.join(", ")),
                format!("EXECUTE q{n} ({})", values.join(", ")),
            )
        };
        c.batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; {prepare}"
        ))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let row = c
            .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {execute}"), &[])
            .await
            .unwrap_or_else(|e| panic!("{what}, generic: {e}"));
        c.batch_execute("RESET plan_cache_mode").await.unwrap();
        let generic: serde_json::Value = serde_json::from_str(&row.get::<_, Plan>(0).0).unwrap();
        for (how, plan) in [("custom", custom), ("generic", generic)] {
            let (rows, seq) = requests_read(&plan[0]["Plan"]);
            if what == "control" {
                assert!(
                    seq && rows >= N as f64,
                    "the control ({how} plan) read {rows} rows, seq {seq}: {plan}"
                );
            } else if seq || rows > (N / 10) as f64 {
                scans.push(format!(
                    "{what} ({how} plan): {rows} rows read{}: {sql}\n{plan}",
                    if seq { " by a Seq Scan" } else { "" }
                ));
            }
        }
    }
    assert!(scans.is_empty(), "{scans:#?}");
    s.close().await.unwrap();
}

#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_declined_change_stores_no_document() {
    let url = crate::store::testing::fresh_database("late");
    let s = PgStore::open(&url, 2).await.unwrap();
    crate::store::tests::a_declined_change_stores_no_document(&*s, record(1, "civil")).await;
}

#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_removed_request_takes_its_attachments() {
    let url = crate::store::testing::fresh_database("removed");
    let s = PgStore::open(&url, 2).await.unwrap();
    crate::store::tests::a_removed_request_takes_its_attachments(
        &*s,
        record(1, "civil"),
        record(2, "civil"),
    )
    .await;
}
