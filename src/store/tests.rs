//! The store against a model: random enqueue / lease / fetch / accept /
//! fail / deliver / cancel / retry actions, clean restarts and crashes
//! (dropped without close), applied to a store and to a map, compared after
//! every step (as vector tests its disk buffer), on sled and PostgreSQL.
//! The runs must reach every state between them.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn record(n: u64, due: u64) -> RequestRecord {
    RequestRecord {
        v: RECORD_VERSION,
        id: format!("01TEST{n:020}"),
        client: "c".into(),
        case: format!("351-{}/2026-IV", n % 3),
        legal_basis: "ZUP".into(),
        official: "o".into(),
        purpose: "p".into(),
        service: "civil.birth-extract".into(),
        registry: if n.is_multiple_of(2) {
            "civil"
        } else {
            "cadastre"
        }
        .into(),
        subject: vec![("jmbg".into(), "0512981717776".into())],
        state: State::Queued,
        created_ms: n,
        deadline_ms: 10_000 + (n * 7919) % 1000,
        due_ms: Some(due),
        attempts: Vec::new(),
        security_failures: 0,
        ticket: None,
        document_id: None,
        signer: None,
        delivered_ms: None,
        error: None,
        at_risk: false,
        delivery_failures: 0,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(u8),
    /// Lease the first due request: for an exchange (or a poll), or the
    /// delivery of a fetched one.
    Lease,
    /// The leased exchange brought the document.
    Fetch(prop::sample::Index),
    /// The registry accepted it and will answer later (a ticket).
    Accept(prop::sample::Index),
    /// It failed: retried, or dead after its attempts.
    Fail(prop::sample::Index),
    /// It failed for good (the registry refused it): dead at once.
    Refuse(prop::sample::Index),
    /// The fetched document went into its case.
    Deliver(prop::sample::Index),
    Cancel(prop::sample::Index),
    Retry(prop::sample::Index),
    /// The deadline watch flags it.
    Flag(prop::sample::Index),
    /// The retention job removes a finished one.
    Remove(prop::sample::Index),
    /// Lease the first few due requests in one transaction, with
    /// their registries' limits where the store shares them.
    LeaseMany(u8),
    /// Several outcomes (fetch with its document, accept, fail, deliver,
    /// cancel) recorded in one transaction.
    Batch(Vec<(prop::sample::Index, u8)>),
    /// Close and reopen.
    Restart,
    /// Drop without closing (what a crash leaves), and reopen.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..4).prop_map(Op::Enqueue),
        4 => Just(Op::Lease),
        2 => any::<prop::sample::Index>().prop_map(Op::Fetch),
        1 => any::<prop::sample::Index>().prop_map(Op::Accept),
        2 => any::<prop::sample::Index>().prop_map(Op::Fail),
        1 => any::<prop::sample::Index>().prop_map(Op::Refuse),
        2 => any::<prop::sample::Index>().prop_map(Op::Deliver),
        1 => any::<prop::sample::Index>().prop_map(Op::Cancel),
        1 => any::<prop::sample::Index>().prop_map(Op::Retry),
        1 => any::<prop::sample::Index>().prop_map(Op::Flag),
        1 => any::<prop::sample::Index>().prop_map(Op::Remove),
        2 => (2u8..6).prop_map(Op::LeaseMany),
        2 => proptest::collection::vec((any::<prop::sample::Index>(), 0u8..5), 1..6).prop_map(Op::Batch),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// The transitions, written once and applied to both sides.
fn lease(r: &mut RequestRecord, now: u64) -> bool {
    if r.state.is_terminal() {
        return false;
    }
    if r.state != State::Fetched {
        r.state = State::Sending;
    }
    r.due_ms = Some(now + 30_000);
    true
}

fn fetch(r: &mut RequestRecord, now: u64) -> bool {
    if r.state != State::Sending {
        return false;
    }
    r.state = State::Fetched;
    r.document_id = Some(r.id.clone());
    r.ticket = None;
    r.due_ms = Some(now);
    true
}

fn accept(r: &mut RequestRecord, now: u64) -> bool {
    if r.state != State::Sending {
        return false;
    }
    r.state = State::Awaiting;
    r.ticket = Some(format!("T-{now}"));
    r.due_ms = Some(now + 500);
    true
}

fn deliver(r: &mut RequestRecord, now: u64) -> bool {
    if r.state != State::Fetched {
        return false;
    }
    r.state = State::Delivered;
    r.delivered_ms = Some(now);
    r.due_ms = None;
    true
}

fn fail(r: &mut RequestRecord, now: u64) -> bool {
    if r.state != State::Sending {
        return false;
    }
    r.attempts.push(AttemptRecord {
        at_ms: now,
        duration_ms: 1,
        http_status: Some(503),
        outcome: "retryable".into(),
        detail: "x".into(),
    });
    if r.attempts.len() >= 2 {
        r.state = State::Dead;
        r.due_ms = None;
    } else {
        r.state = State::Retrying;
        r.due_ms = Some(now + 1000 * r.attempts.len() as u64);
    }
    true
}

fn refuse(r: &mut RequestRecord) -> bool {
    if r.state != State::Sending {
        return false;
    }
    r.state = State::Dead;
    r.error = Some("permanent failure: registry found no data".into());
    r.due_ms = None;
    true
}

fn cancel(r: &mut RequestRecord) -> bool {
    if r.state.is_terminal() {
        return false;
    }
    r.state = State::Cancelled;
    r.due_ms = None;
    true
}

fn flag(r: &mut RequestRecord) -> bool {
    if r.state.is_terminal() || r.at_risk {
        return false;
    }
    r.at_risk = true;
    true
}

fn retry(r: &mut RequestRecord, now: u64) -> bool {
    if r.state != State::Dead {
        return false;
    }
    r.state = State::Queued;
    r.attempts.clear();
    r.due_ms = Some(now);
    true
}

/// What the generated cases reached, over all of them: a model test whose
/// generator never reaches a state compares nothing about it.
#[derive(Default)]
struct Reached {
    states: std::collections::BTreeSet<State>,
    restarts: usize,
    crashes: usize,
}

/// The store's queries (counters, pages by state and order, attention,
/// deadlines, filtered counts) against the same questions put to the model.
async fn compare_queries(
    store: &dyn QueueStore,
    model: &BTreeMap<String, RequestRecord>,
) -> Result<(), TestCaseError> {
    let t = store.tally().await.unwrap();
    let mut by: BTreeMap<(String, State), u64> = BTreeMap::new();
    for r in model.values() {
        *by.entry((r.registry.clone(), r.state)).or_default() += 1;
    }
    prop_assert_eq!(&t.by_registry, &by);
    prop_assert_eq!(
        t.at_risk,
        model.values().filter(|r| r.at_risk_open()).count() as u64
    );
    let oldest = model
        .values()
        .filter(|r| State::UNFETCHED.contains(&r.state))
        .map(|r| r.created_ms)
        .min();
    prop_assert_eq!(t.oldest_open_ms, oldest);
    async fn walk(store: &dyn QueueStore, sel: &Selector, order: Order) -> Vec<String> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list(&Listing {
                    selector: sel.clone(),
                    order,
                    after: after.clone(),
                    limit: 3,
                })
                .await
                .unwrap();
            let Some(last) = page.last() else {
                return out;
            };
            after = Some(last.id.clone());
            out.extend(page.into_iter().map(|r| r.id));
        }
    }
    let mut selectors: Vec<Selector> = State::ALL.iter().map(|s| Selector::state(*s)).collect();
    selectors.push(Selector::default());
    selectors.push(Selector {
        attention: true,
        ..Selector::default()
    });
    selectors.push(Selector {
        case: Some("351-1/2026-IV".into()),
        registry: Some("cadastre".into()),
        ..Selector::default()
    });
    selectors.push(Selector {
        state: Some(State::Dead),
        error: Some("NO DATA".into()),
        ..Selector::default()
    });
    for sel in &selectors {
        let want: Vec<String> = model
            .values()
            .filter(|r| sel.matches(r))
            .map(|r| r.id.clone())
            .collect();
        prop_assert_eq!(&walk(store, sel, Order::Oldest).await, &want, "{:?}", sel);
        let mut newest = want.clone();
        newest.reverse();
        prop_assert_eq!(&walk(store, sel, Order::Newest).await, &newest, "{:?}", sel);
        prop_assert_eq!(
            store.count(sel).await.unwrap(),
            want.len() as u64,
            "{:?}",
            sel
        );
    }
    let mut open: Vec<(u64, String)> = model
        .values()
        .filter(|r| !r.state.is_terminal() && r.deadline_ms <= 10_500)
        .map(|r| (r.deadline_ms, r.id.clone()))
        .collect();
    open.sort();
    let got: Vec<(u64, String)> = store
        .by_deadline(10_500, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.deadline_ms, r.id))
        .collect();
    prop_assert_eq!(got, open);
    Ok(())
}

/// Applies `ops` to a store (opened, and after a `Restart` or `Crash`
/// reopened, by `open`) and to the model, comparing after every step.
fn run_model(
    ops: Vec<Op>,
    open: &Open<'_>,
    reached: &std::sync::Mutex<Reached>,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut store = open().await;
        let mut model: BTreeMap<String, RequestRecord> = BTreeMap::new();
        let mut n = 0u64;
        let mut now = 1_000u64;
        for op in ops {
            now += 100;
            // An outcome picks among the requests it applies to (when
            // there are any, else any request: then the store must refuse
            // the change as the model does).
            let pick = |i: &prop::sample::Index, states: &[State]| {
                let fit: Vec<&String> = model
                    .values()
                    .filter(|r| states.contains(&r.state))
                    .map(|r| &r.id)
                    .collect();
                let all: Vec<&String> = model.keys().collect();
                let from = if fit.is_empty() { all } else { fit };
                (!from.is_empty()).then(|| from[i.index(from.len())].clone())
            };
            match op {
                Op::Enqueue(k) => {
                    let recs: Vec<_> = (0..k)
                        .map(|i| {
                            n += 1;
                            record(n, now + i as u64)
                        })
                        .collect();
                    store.enqueue(recs.clone()).await.unwrap();
                    for r in recs {
                        model.insert(r.id.clone(), r);
                    }
                }
                Op::Lease => {
                    let due: Vec<(u64, String)> = store
                        .due(now + 100_000, 1)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|d| (d.at_ms, d.id))
                        .collect();
                    let mut want: Vec<(u64, String)> = model
                        .values()
                        .filter_map(|r| r.due_ms.map(|d| (d, r.id.clone())))
                        .collect();
                    want.sort();
                    prop_assert_eq!(due.first(), want.first());
                    if let Some((_, id)) = due.first() {
                        let got = store.lease(id, None, &|r| lease(r, now)).await.unwrap();
                        let m = model.get_mut(id).unwrap();
                        let changed = lease(m, now);
                        prop_assert_eq!(matches!(got, Lease::Taken(_)), changed);
                    }
                }
                Op::LeaseMany(k) => {
                    let due = store.due(now + 100_000, k as usize).await.unwrap();
                    // Generous limits: every lease is admitted, but through
                    // the shared gate rows where the store keeps them.
                    let gates: Vec<GateLimits> = ["civil", "cadastre"]
                        .map(|g| GateLimits {
                            registry: g.into(),
                            max_in_flight: 1000,
                            rate_per_s: 1e6,
                            breaker_failures: 1000,
                            breaker_cooldown: std::time::Duration::from_secs(1),
                            lease_ms: 30_000,
                        })
                        .into();
                    let asks: Vec<(&str, Option<&GateLimits>)> = due
                        .iter()
                        .map(|d| {
                            let reg = &model[&d.id].registry;
                            let g = store
                                .shares_limits()
                                .then(|| gates.iter().find(|g| &g.registry == reg))
                                .flatten();
                            (d.id.as_str(), g)
                        })
                        .collect();
                    let got = store.lease_many(&asks, &|r| lease(r, now)).await.unwrap();
                    prop_assert_eq!(got.len(), asks.len());
                    for ((id, _), got) in asks.iter().zip(got) {
                        let changed = lease(model.get_mut(*id).unwrap(), now);
                        prop_assert_eq!(matches!(got, Lease::Taken(_)), changed, "{}", id);
                    }
                }
                Op::Batch(picks) => {
                    // One change per request in a batch (the recorder's rule).
                    let mut kinds: BTreeMap<String, u8> = BTreeMap::new();
                    for (i, kind) in picks {
                        let applies: &[State] = match kind {
                            3 => &[State::Fetched],
                            4 => &State::ALL,
                            _ => &[State::Sending],
                        };
                        if let Some(id) = pick(&i, applies) {
                            kinds.entry(id).or_insert(kind);
                        }
                    }
                    let change = |r: &mut RequestRecord| match kinds.get(&r.id) {
                        Some(0) => fetch(r, now),
                        Some(1) => accept(r, now),
                        Some(2) => fail(r, now),
                        Some(3) => deliver(r, now),
                        Some(_) => cancel(r),
                        None => false,
                    };
                    let ids: Vec<&str> = kinds.keys().map(String::as_str).collect();
                    let docs: Vec<(String, Vec<u8>)> = kinds
                        .iter()
                        .filter(|(_, k)| **k == 0)
                        .map(|(id, _)| (id.clone(), format!("doc of {id} at {now}").into_bytes()))
                        .collect();
                    let doc_refs: Vec<(&str, &[u8])> = docs
                        .iter()
                        .map(|(i, d)| (i.as_str(), d.as_slice()))
                        .collect();
                    let got = store.update_many(&ids, &doc_refs, &change).await.unwrap();
                    prop_assert_eq!(got.len(), ids.len());
                    for (id, got) in ids.iter().zip(got) {
                        let m = model.get_mut(*id).unwrap();
                        let changed = change(m);
                        prop_assert_eq!(got.as_ref(), changed.then_some(&*m), "{}", id);
                    }
                    for (id, doc) in &docs {
                        let stored = store.document(id).await.unwrap();
                        prop_assert_eq!(stored.as_ref(), Some(doc));
                    }
                }
                Op::Fetch(i)
                | Op::Accept(i)
                | Op::Fail(i)
                | Op::Refuse(i)
                | Op::Deliver(i)
                | Op::Cancel(i)
                | Op::Flag(i)
                | Op::Retry(i) => {
                    let applies: &[State] = match op {
                        Op::Fetch(_) | Op::Accept(_) | Op::Fail(_) | Op::Refuse(_) => {
                            &[State::Sending]
                        }
                        Op::Deliver(_) => &[State::Fetched],
                        Op::Retry(_) => &[State::Dead],
                        _ => &State::ALL,
                    };
                    let Some(id) = pick(&i, applies) else {
                        continue;
                    };
                    let f: Box<Change<'_>> = match op {
                        Op::Fetch(_) => Box::new(move |r| fetch(r, now)),
                        Op::Accept(_) => Box::new(move |r| accept(r, now)),
                        Op::Fail(_) => Box::new(move |r| fail(r, now)),
                        Op::Refuse(_) => Box::new(refuse),
                        Op::Deliver(_) => Box::new(move |r| deliver(r, now)),
                        Op::Cancel(_) => Box::new(cancel),
                        Op::Flag(_) => Box::new(flag),
                        _ => Box::new(move |r| retry(r, now)),
                    };
                    let got = store.update(&id, &*f).await.unwrap();
                    let changed = f(model.get_mut(&id).unwrap());
                    prop_assert_eq!(got.is_some(), changed);
                }
                Op::Remove(i) => {
                    let Some(id) = pick(&i, &[State::Delivered, State::Dead, State::Cancelled])
                    else {
                        continue;
                    };
                    if model[&id].state.is_terminal() {
                        store.remove(&id).await.unwrap();
                        model.remove(&id);
                    }
                }
                Op::Restart => {
                    store.close().await.unwrap();
                    drop(store);
                    store = open().await;
                    reached.lock().unwrap().restarts += 1;
                }
                Op::Crash => {
                    // No close: whatever the store acknowledged must be
                    // there when it opens again.
                    drop(store);
                    store = open().await;
                    reached.lock().unwrap().crashes += 1;
                }
            }
            reached
                .lock()
                .unwrap()
                .states
                .extend(model.values().map(|r| r.state));
            // compare everything
            for (id, want) in &model {
                let got = store.get(id).await.unwrap();
                prop_assert_eq!(got.as_ref(), Some(want));
            }
            let mut want: Vec<(u64, String)> = model
                .values()
                .filter_map(|r| r.due_ms.map(|d| (d, r.id.clone())))
                .collect();
            want.sort();
            let due = store.due(u64::MAX / 4, 10_000).await.unwrap();
            let got: Vec<(u64, String)> = due.iter().map(|d| (d.at_ms, d.id.clone())).collect();
            prop_assert_eq!(got, want);
            for d in due {
                let r = &model[&d.id];
                let work = if r.state == State::Fetched {
                    Work::Deliver
                } else {
                    Work::Exchange(r.registry.clone())
                };
                prop_assert_eq!(d.work, work);
            }
            compare_queries(&*store, &model).await?;
        }
        for case in ["351-0/2026-IV", "351-1/2026-IV"] {
            let by: Vec<String> = store
                .by_case(case)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            let want: Vec<String> = model
                .values()
                .filter(|r| r.case == case)
                .map(|r| r.id.clone())
                .collect();
            prop_assert_eq!(by, want);
        }
        store.close().await.unwrap();
        Ok(())
    })
}

/// Runs `cases` generated cases against the store `open` makes, then
/// checks that together they reached every state, restarts and crashes.
/// Opens the store under test (again, after a restart or a crash).
type Open<'a> = dyn Fn() -> futures_util::future::BoxFuture<'static, Arc<dyn QueueStore>> + 'a;

fn model_test(cases: u32, before_each: &dyn Fn(), open: &Open<'_>) {
    let reached = std::sync::Mutex::new(Reached::default());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 8..60), |ops| {
        before_each();
        run_model(ops, open, &reached)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let r = reached.into_inner().unwrap();
    for s in State::ALL {
        assert!(
            r.states.contains(&s),
            "no generated case reached {s:?}: {:?}",
            r.states
        );
    }
    assert!(
        r.restarts > 0 && r.crashes > 0,
        "restarts {} crashes {}",
        r.restarts,
        r.crashes
    );
}

#[test]
fn sled_store_behaves_like_the_model() {
    let dir = std::cell::RefCell::new(tempfile::tempdir().unwrap());
    // a fresh store for each case
    let fresh = || *dir.borrow_mut() = tempfile::tempdir().unwrap();
    model_test(40, &fresh, &|| {
        let s: Arc<dyn QueueStore> = SledStore::open(dir.borrow().path(), 8 << 20).unwrap();
        Box::pin(async move { s })
    });
}

/// The same actions and model on PostgreSQL: one database, emptied before
/// each case (making one takes a second).
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[test]
fn postgres_store_behaves_like_the_model() {
    let url = testing::fresh_database("model");
    let empty = || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = postgres::PgStore::open(&url, 2).await.unwrap();
            s.truncate_all().await.unwrap();
            s.close().await.unwrap();
        })
    };
    model_test(24, &empty, &|| {
        let u = url.clone();
        Box::pin(async move {
            let s: Arc<dyn QueueStore> = postgres::PgStore::open(&u, 4).await.unwrap();
            s
        })
    });
}

#[tokio::test]
async fn a_store_from_the_future_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let e = SledStore::open(dir.path(), 1 << 20)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!(
            "has schema version 99; this jumgw knows up to {}",
            super::embedded::TREES_VERSION
        )),
        "{e}"
    );
}

#[tokio::test]
async fn a_damaged_index_is_a_start_up_error_that_names_the_backups() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        s.enqueue(vec![record(1, 5)]).await.unwrap();
        s.t.requests.remove(record(1, 5).id.as_bytes()).unwrap();
        s.close().await.unwrap();
    }
    let e = SledStore::open(dir.path(), 1 << 20)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("due index names a missing request"), "{e}");
    assert!(
        e.contains("restore the latest backup with `jumgw store import`"),
        "{e}"
    );
}

#[tokio::test]
async fn a_store_in_use_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path(), 1 << 20).unwrap();
    let e = SledStore::open(dir.path(), 1 << 20)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is in use by another process"), "{e}");
}

#[tokio::test]
async fn a_store_of_the_first_layout_is_indexed_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let mut dead = record(2, 5);
        dead.state = State::Dead;
        dead.due_ms = None;
        s.enqueue(vec![record(1, 5), dead, record(3, 7)])
            .await
            .unwrap();
        s.close().await.unwrap();
    }
    {
        // What a store written before the indexes looks like.
        let db = sled::open(dir.path()).unwrap();
        for t in ["by_state", "attention", "deadlines", "counts"] {
            db.drop_tree(t).unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .insert("schema", &1u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let t = s.tally().await.unwrap();
    assert_eq!(t.state(State::Queued), 2);
    assert_eq!(t.state(State::Dead), 1);
    assert_eq!(t.oldest_open_ms, Some(1));
    let dead = s
        .list(&Listing {
            selector: Selector {
                attention: true,
                ..Selector::default()
            },
            order: Order::Newest,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(s.by_deadline(u64::MAX, 10).await.unwrap().len(), 2);
    s.close().await.unwrap();
}

/// sled runs a change on the caller's side and writes it only if the
/// record is still what the change saw: concurrent changes of one record
/// are each applied once, none lost to another's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_of_one_record_are_none_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    let r = record(1, 5);
    s.enqueue(vec![r.clone()]).await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (s, id) = (s.clone(), r.id.clone());
            tokio::spawn(async move {
                s.update(&id, &|x| {
                    x.security_failures += 1;
                    true
                })
                .await
                .unwrap()
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.get(&r.id).await.unwrap().unwrap().security_failures, 64);
    s.close().await.unwrap();
}

/// A stopped store with bytes flipped at random places in its files, or a
/// file cut short, opens cleanly or fails with the clear start-up error
/// that names the backups; sled's panics on some damage are caught and
/// become that error. (Whether a store that opens then serves every read
/// is the start-up check's to say, which is not written yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_never_panics_at_start() {
    use rand::{Rng, SeedableRng};
    let base = tempfile::tempdir().unwrap();
    let store_dir = base.path().join("store");
    {
        let s = SledStore::open(&store_dir, 8 << 20).unwrap();
        for chunk in 0..10u64 {
            let recs: Vec<_> = (0..200).map(|i| record(chunk * 200 + i, 5_000)).collect();
            s.enqueue(recs).await.unwrap();
        }
        s.close().await.unwrap();
    }
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&store_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    assert!(!files.is_empty());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1705);
    let (mut clean, mut refused) = (0, 0);
    let trials = 60;
    for trial in 0..trials {
        let dir = base.path().join(format!("t{trial}"));
        copy_dir(&store_dir, &dir.join("store"));
        let victim = dir
            .join("store")
            .join(files[rng.random_range(0..files.len())].file_name().unwrap());
        let mut bytes = std::fs::read(&victim).unwrap();
        if trial % 5 == 4 {
            let cut = rng.random_range(0..bytes.len());
            bytes.truncate(cut);
        } else {
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
        }
        std::fs::write(&victim, &bytes).unwrap();
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            SledStore::open(&dir.join("store"), 8 << 20)
        }));
        match opened {
            Err(_) => panic!("trial {trial}: opening the damaged store panicked"),
            Ok(Ok(s)) => {
                clean += 1;
                let _ = s.close().await;
            }
            Ok(Err(e)) => {
                refused += 1;
                let m = e.to_string();
                assert!(
                    matches!(e, StoreError::Damaged { .. } | StoreError::TooNew { .. }),
                    "trial {trial}: {m}"
                );
                if let StoreError::Damaged { .. } = e {
                    assert!(m.contains("backups"), "trial {trial}: {m}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(clean + refused, trials);
    eprintln!("{trials} damaged stores: {clean} opened, {refused} refused with the start-up error");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
