//! The store against a model: random enqueue / lease / fetch / accept /
//! fail / deliver / cancel / retry actions, clean restarts and drops
//! without close, applied to a store and to a map, compared after every
//! step (as vector tests its disk buffer), on sled and PostgreSQL. The
//! runs must reach every state between them. A real crash is a process
//! killed by SIGKILL: [`a_killed_store_keeps_what_it_acknowledged_and_flushed`]
//! kills a child process working on a sled store and checks what survives.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::lifecycle::{OutcomeKind, SignedDocState, StampState};

fn record(n: u64, due: u64) -> RequestRecord {
    let registry = if n.is_multiple_of(2) {
        "civil"
    } else {
        "cadastre"
    };
    crate::lifecycle::record::testing::record()
        .id(&format!("01TEST{n:020}"))
        .case(format!("351-{}/2026-IV", n % 3))
        .service("civil.birth-extract", registry)
        .filed(n, 10_000 + (n * 7919) % 1000)
        .due(Some(due))
        .build()
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
    /// Drop without closing, and reopen: what a panic unwinding out of the
    /// gateway leaves. Not a crash: sled flushes when dropped (the crash is
    /// `a_killed_store_keeps_what_it_acknowledged_and_flushed`).
    Drop,
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
        1 => Just(Op::Drop),
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
    r.document_id = Some(r.id.to_string());
    r.ticket = None;
    r.due_ms = Some(now);
    // Its timestamp is to be asked for, at times that differ; some came by
    // X-Road, and wait for their signed document too (before or after
    // the timestamp), or only for that.
    let x_road = r.created_ms % 4;
    if x_road != 3 {
        r.stamp = Some(crate::lifecycle::StampRecord::pending(
            now + (r.created_ms % 3) * 100,
        ));
    }
    if x_road >= 2 {
        r.signed_document = Some(crate::lifecycle::SignedDocRecord::pending(
            &format!("m-{}", r.id),
            now + (r.created_ms % 5) * 75,
        ));
    }
    true
}

/// The evidence job's try at a pending timestamp: the first fails (tried
/// again later), the second brings the token.
fn stamp(r: &mut RequestRecord) -> bool {
    let Some(s) = r.stamp.as_mut().filter(|s| s.is_pending()) else {
        return false;
    };
    s.tries += 1;
    if s.tries == 1 {
        s.next_ms = s.next_ms.map(|n| n + 1000);
    } else {
        s.state = StampState::Stamped;
        s.next_ms = None;
        s.token = Some("MA==".into());
    }
    true
}

/// The evidence job's try at a pending signed document: a 404 (tried
/// again later), then kept.
fn sign(r: &mut RequestRecord) -> bool {
    let Some(s) = r.signed_document.as_mut().filter(|s| s.is_pending()) else {
        return false;
    };
    s.tries += 1;
    if s.tries == 1 {
        s.next_ms = s.next_ms.map(|n| n + 700);
    } else {
        s.state = SignedDocState::Kept;
        s.next_ms = None;
        s.document_id = Some(format!("{}.asice", r.id));
    }
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
        outcome: OutcomeKind::Retryable,
        detail: "x".into(),
        message_id: None,
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
    drops: usize,
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
        *by.entry((r.registry.to_string(), r.state)).or_default() += 1;
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
    // The pending evidence (timestamps, signed documents), by when the
    // earlier of the two is next to be asked for.
    let next = |s: Option<u64>| s.unwrap_or(0);
    let mut want: Vec<(u64, String)> = model
        .values()
        .filter_map(|r| {
            let stamp = r.stamp.as_ref().filter(|s| s.is_pending());
            let signed = r.signed_document.as_ref().filter(|s| s.is_pending());
            let at = match (stamp, signed) {
                (Some(a), Some(b)) => next(a.next_ms).min(next(b.next_ms)),
                (Some(a), None) => next(a.next_ms),
                (None, Some(b)) => next(b.next_ms),
                (None, None) => return None,
            };
            Some((at, r.id.to_string()))
        })
        .collect();
    want.sort();
    let got: Vec<(u64, String)> = store
        .evidence_due(1 << 50, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.evidence_due_ms().unwrap_or(u64::MAX), r.id.into_string()))
        .collect();
    prop_assert_eq!(&got, &want);
    // Read up to a time: only what is due by then.
    let cut = want.get(want.len() / 2).map_or(0, |(at, _)| *at);
    let got: Vec<String> = store
        .evidence_due(cut, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id.into_string())
        .collect();
    let due: Vec<String> = want
        .iter()
        .filter(|(at, _)| *at <= cut)
        .map(|(_, id)| id.clone())
        .collect();
    prop_assert_eq!(got, due);
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
            after = Some(last.id.to_string());
            out.extend(page.into_iter().map(|r| r.id.into_string()));
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
            .map(|r| r.id.to_string())
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
        .map(|r| (r.deadline_ms, r.id.to_string()))
        .collect();
    open.sort();
    let got: Vec<(u64, String)> = store
        .by_deadline(10_500, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.deadline_ms, r.id.into_string()))
        .collect();
    prop_assert_eq!(got, open);
    Ok(())
}

/// Applies `ops` to a store (opened, and after a `Restart` or `Drop`
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
                    .iter()
                    .filter(|(_, r)| states.contains(&r.state))
                    .map(|(id, _)| id)
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
                        model.insert(r.id.to_string(), r);
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
                        .filter_map(|r| r.due_ms.map(|d| (d, r.id.to_string())))
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
                    let change = |r: &mut RequestRecord| match kinds.get(r.id.as_str()) {
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
                    let mut applied = Vec::new();
                    for (id, got) in ids.iter().zip(got) {
                        let m = model.get_mut(*id).unwrap();
                        let changed = change(m);
                        prop_assert_eq!(got.as_ref(), changed.then_some(&*m), "{}", id);
                        if changed {
                            applied.push(*id);
                        }
                    }
                    // A document is stored with its change, never without.
                    for (id, doc) in &docs {
                        let stored = store.document(id).await.unwrap();
                        if applied.contains(&id.as_str()) {
                            prop_assert_eq!(stored.as_ref(), Some(doc));
                        } else {
                            prop_assert_ne!(stored.as_ref(), Some(doc));
                        }
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
                        Op::Flag(_) => Box::new(|r: &mut RequestRecord| {
                            let stamped = stamp(r);
                            let signed = sign(r);
                            flag(r) || stamped || signed
                        }),
                        _ => Box::new(move |r| retry(r, now)),
                    };
                    if let Op::Fetch(_) = op {
                        // As the recorder does: the document with the fetch.
                        store.put_document(&id, b"<doc/>").await.unwrap();
                    }
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
                Op::Drop => {
                    // No close: whatever the store acknowledged must be
                    // there when it opens again.
                    drop(store);
                    store = open().await;
                    reached.lock().unwrap().drops += 1;
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
                .filter_map(|r| r.due_ms.map(|d| (d, r.id.to_string())))
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
                .map(|r| r.id.into_string())
                .collect();
            let want: Vec<String> = model
                .values()
                .filter(|r| r.case == case)
                .map(|r| r.id.to_string())
                .collect();
            prop_assert_eq!(by, want);
        }
        // Whatever the actions left, the full check finds nothing wrong.
        let report = store.check().await.unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.damage);
        prop_assert_eq!(
            report.read.get("requests").copied(),
            Some(model.len() as u64)
        );
        store.close().await.unwrap();
        Ok(())
    })
}

/// Runs `cases` generated cases against the store `open` makes, then
/// checks that together they reached every state, restarts and drops.
/// Opens the store under test (again, after a restart or a drop).
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
        r.restarts > 0 && r.drops > 0,
        "restarts {} drops {}",
        r.restarts,
        r.drops
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

/// Names the data folder of the child that
/// [`a_killed_store_keeps_what_it_acknowledged_and_flushed`] kills; its
/// seed is in `JUMGW_STORE_CRASH_SEED`.
const CRASH_CHILD: &str = "JUMGW_STORE_CRASH_CHILD";

/// The entry the gateway writes with a lease for an exchange, as the
/// audit rule does: what must be durable before the request leaves.
fn sent_rule() -> trail::AuditRule {
    Arc::new(|old: Option<&RequestRecord>, new: &RequestRecord| {
        if new.state != State::Sending || old.is_some_and(|o| o.state == State::Sending) {
            return Vec::new();
        }
        vec![trail::Draft {
            at_ms: new.due_ms.unwrap_or(0),
            actor: new.client.to_string(),
            action: "exchange.sent".into(),
            request_id: Some(new.id.to_string()),
            case: new.case.to_string(),
            subject: vec![format!("{:064x}", new.created_ms)],
            ..trail::Draft::default()
        }]
    })
}

/// What the child reports, one line each, prefixed `CRASH `: `W id json`
/// before it writes a version of a record, `A id` once the store has
/// acknowledged it, `F` once a flush has completed, `S id` when it
/// "sends" a leased request (after the flush that follows its lease).
enum Said {
    Write(String, Box<RequestRecord>),
    Ack(String),
    Flushed,
    Sent(String),
}

fn said(line: &str) -> Option<Said> {
    // libtest's "test crash_child ... " may come first, with no newline.
    let rest = &line[line.find("CRASH ")? + 6..];
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(match kind {
        "W" => {
            let (id, json) = rest.split_once(' ').unwrap();
            Said::Write(id.into(), Box::new(serde_json::from_str(json).unwrap()))
        }
        "A" => Said::Ack(rest.into()),
        "F" => Said::Flushed,
        "S" => Said::Sent(rest.into()),
        _ => panic!("the child said {line}"),
    })
}

/// The child: works on a sled store (leases, outcomes, flushes, as the
/// dispatcher does) and says each step on standard output, until killed.
/// Sled's own flusher is held off (a minute), so only the store's flushes
/// make anything durable.
#[test]
#[ignore = "the child process of a_killed_store_keeps_what_it_acknowledged_and_flushed, run by it"]
fn crash_child() {
    use std::io::Write;
    let dir = std::env::var(CRASH_CHILD).expect("run by the crash test");
    let mut seed: u64 = std::env::var("JUMGW_STORE_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let mut rnd = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        writeln!(o, "CRASH {s}").unwrap();
        o.flush().unwrap();
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let o = Opening {
            cache_bytes: 8 << 20,
            flush_ms: 60_000,
            full_check: false,
            ..Opening::default()
        };
        let store = SledStore::open_with(std::path::Path::new(&dir), &o).unwrap();
        store.set_audit_rule(sent_rule());
        let mut model: BTreeMap<String, RequestRecord> = BTreeMap::new();
        let write =
            |r: &RequestRecord| say(format!("W {} {}", r.id, serde_json::to_string(r).unwrap()));
        let (mut n, mut now) = (0u64, 1_000u64);
        loop {
            now += 100;
            match rnd(10) {
                0..=2 => {
                    let recs: Vec<_> = (0..1 + rnd(3))
                        .map(|_| {
                            n += 1;
                            record(n, now)
                        })
                        .collect();
                    recs.iter().for_each(write);
                    store.enqueue(recs.clone()).await.unwrap();
                    // An accept is flushed before it is answered.
                    for r in recs {
                        say(format!("A {}", r.id));
                        model.insert(r.id.to_string(), r);
                    }
                    say("F".into());
                }
                3..=4 => {
                    let due = store.due(now, 4).await.unwrap();
                    let ids: Vec<&str> = due
                        .iter()
                        .filter(|d| !matches!(model[&d.id].state, State::Sending | State::Fetched))
                        .map(|d| d.id.as_str())
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    for id in &ids {
                        let mut m = model[*id].clone();
                        lease(&mut m, now);
                        write(&m);
                    }
                    let asks: Vec<(&str, Option<&GateLimits>)> =
                        ids.iter().map(|id| (*id, None)).collect();
                    let got = store.lease_many(&asks, &|r| lease(r, now)).await.unwrap();
                    let mut taken = Vec::new();
                    for l in got {
                        if let Lease::Taken(r) = l {
                            say(format!("A {}", r.id));
                            taken.push(r.id.to_string());
                            model.insert(r.id.to_string(), *r);
                        }
                    }
                    // As the dispatcher does: the round's leases flushed,
                    // then its requests sent.
                    store.flush().await.unwrap();
                    say("F".into());
                    for id in taken {
                        say(format!("S {id}"));
                    }
                }
                5..=7 => {
                    let open: Vec<String> = model
                        .values()
                        .filter(|r| matches!(r.state, State::Sending | State::Fetched))
                        .map(|r| r.id.to_string())
                        .collect();
                    if open.is_empty() {
                        continue;
                    }
                    let id = &open[rnd(open.len() as u64) as usize];
                    let how = rnd(3);
                    let f = |r: &mut RequestRecord| match (r.state, how) {
                        (State::Fetched, _) => deliver(r, now),
                        (_, 0) => fail(r, now),
                        (_, 1) => accept(r, now),
                        _ => fetch(r, now),
                    };
                    let mut m = model[id].clone();
                    f(&mut m);
                    write(&m);
                    // As the recorder does: a document with its fetch.
                    let doc = format!("<doc id=\"{id}\"/>").into_bytes();
                    let docs: Vec<(&str, &[u8])> = match &m.document_id {
                        Some(_) if m.state == State::Fetched => vec![(id.as_str(), &doc)],
                        _ => Vec::new(),
                    };
                    let got = store.update_many(&[id], &docs, &f).await.unwrap();
                    let got = got.into_iter().next().flatten().unwrap();
                    say(format!("A {id}"));
                    model.insert(id.clone(), got);
                }
                8 => {
                    store.flush().await.unwrap();
                    say("F".into());
                }
                _ => {
                    let open: Vec<String> = model
                        .values()
                        .filter(|r| !r.state.is_terminal())
                        .map(|r| r.id.to_string())
                        .collect();
                    if open.is_empty() {
                        continue;
                    }
                    let id = &open[rnd(open.len() as u64) as usize];
                    let mut m = model[id].clone();
                    cancel(&mut m);
                    write(&m);
                    let got = store.update(id, &cancel).await.unwrap().unwrap();
                    say(format!("A {id}"));
                    model.insert(id.clone(), got);
                }
            }
        }
    });
}

/// A real crash: a child process works on a sled store and is killed by
/// SIGKILL at a point that differs from run to run (after 20 to 400 of its
/// steps); the store is then opened again and must hold what does hold of
/// a crash:
/// - every record acknowledged *and* flushed before the kill is there, as
///   that version or a later one the child wrote (changes acknowledged
///   but not yet flushed may be lost: they repeat an attempt or a
///   delivery);
/// - leases are durable before they are used: every request the child
///   "sent" is leased, with its `exchange.sent` entry, after the restart;
/// - the audit chain is whole (each entry's hash and link).
///
/// A kill loses what the process held in memory, not what the kernel had
/// from it: this shows the store's flushes reach the file, not that the
/// file reaches the disk (fsync).
#[test]
fn a_killed_store_keeps_what_it_acknowledged_and_flushed() {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let (mut pending_at_kill, mut sent_total) = (0usize, 0usize);
    for cycle in 0..24u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(&exe)
            .args([
                "store::tests::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CRASH_CHILD, dir.path())
            .env("JUMGW_STORE_CRASH_SEED", (cycle * 7919 + 17).to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let kill_after = 20 + (cycle * 173) % 380;
        let mut log = Vec::new();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut killed = false;
        // Everything the child said before it died is true, also what is
        // read after the kill.
        for line in lines.by_ref() {
            if let Some(s) = said(&line.unwrap()) {
                log.push(s);
            }
            if !killed && log.len() as u64 >= kill_after {
                child.kill().unwrap();
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "cycle {cycle}: the child ended otherwise ({status:?}) after {} steps: {err}",
            log.len()
        );

        // Per record: the versions written, in order, and whether each was
        // acknowledged before the last flush.
        let last_flush = log.iter().rposition(|s| matches!(s, Said::Flushed));
        let mut versions: BTreeMap<String, Vec<(RequestRecord, bool)>> = BTreeMap::new();
        let mut sent: BTreeMap<String, usize> = BTreeMap::new();
        for (at, s) in log.iter().enumerate() {
            match s {
                Said::Write(id, r) => versions
                    .entry(id.clone())
                    .or_default()
                    .push(((**r).clone(), false)),
                Said::Ack(id) => {
                    if last_flush.is_some_and(|f| at < f) {
                        versions.get_mut(id).unwrap().last_mut().unwrap().1 = true;
                    } else {
                        pending_at_kill += 1;
                    }
                }
                Said::Sent(id) => *sent.entry(id.clone()).or_default() += 1,
                Said::Flushed => {}
            }
        }
        sent_total += sent.values().sum::<usize>();

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = SledStore::open(dir.path(), 8 << 20).unwrap();
            for (id, vs) in &versions {
                let got = store.get(id).await.unwrap();
                // From the last version flushed on, any the child wrote.
                let floor = vs.iter().rposition(|(_, durable)| *durable);
                let allowed = &vs[floor.unwrap_or(0)..];
                let ok = match &got {
                    None => floor.is_none(),
                    Some(g) => allowed.iter().any(|(v, _)| v == g),
                };
                assert!(
                    ok,
                    "cycle {cycle}: {id}, acknowledged and flushed as {:?}, came back as {:?}",
                    floor.map(|f| (vs[f].0.state, vs[f].0.due_ms)),
                    got.map(|g| (g.state, g.due_ms))
                );
            }
            // The chain, and an exchange.sent entry per request sent.
            let mut prev = trail::GENESIS.to_owned();
            let mut entries: BTreeMap<String, usize> = BTreeMap::new();
            let mut after = 0;
            loop {
                let page = store.audit_scan(after, 1000).await.unwrap();
                let Some((last, _)) = page.last() else { break };
                after = *last;
                for (seq, e) in page {
                    let e = e.unwrap();
                    assert_eq!((e.seq, &e.prev), (seq, &prev), "cycle {cycle}: entry {seq} does not follow");
                    assert_eq!(e.digest(), e.hash, "cycle {cycle}: entry {seq}");
                    *entries.entry(e.draft.request_id.clone().unwrap()).or_default() += 1;
                    prev = e.hash;
                }
            }
            for (id, n) in &sent {
                let logged = entries.get(id).copied().unwrap_or(0);
                assert!(
                    logged >= *n,
                    "cycle {cycle}: {id} was sent {n} times after its lease was flushed, the trail has {logged} exchange.sent entries"
                );
            }
            store.close().await.unwrap();
        });
    }
    // The kills came while the child had work that was not yet durable,
    // and while it sent: the checks above had something to hold.
    assert!(
        pending_at_kill > 0 && sent_total >= 24,
        "{pending_at_kill} {sent_total}"
    );
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
    assert!(e.contains("an index entry that no record calls for"), "{e}");
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
        // What a store written before the indexes looks like. sled's
        // flush runs on its own thread pool, which may still hold the
        // folder's lock for a moment after the flush is done: wait for it.
        let mut tries = 0;
        let db = loop {
            match sled::open(dir.path()) {
                Ok(db) => break db,
                Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
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
            let (s, id) = (s.clone(), r.id.to_string());
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

/// An answer that comes after another has concluded the exchange (the
/// first lease ran out while its registry was slow, and a second exchange
/// of the same request got there first) is declined, and its document with
/// it: the stored document stays the one the record was fetched with, so
/// the API serves what went into the case; so do its attachments
/// (`{id}.attachment-{n}`). A document under another id (a CRL) is stored
/// all the same.
pub(super) async fn a_declined_change_stores_no_document(s: &dyn QueueStore, r: RequestRecord) {
    let id = r.id.to_string();
    let attachment = format!("{id}.attachment-1");
    s.enqueue(vec![r]).await.unwrap();
    let fetch = |r: &mut RequestRecord| {
        if r.state == State::Fetched {
            return false;
        }
        r.state = State::Fetched;
        r.document_id = Some(r.id.to_string());
        true
    };
    let got = s
        .update_many(
            &[id.as_str()],
            &[(id.as_str(), b"first"), (attachment.as_str(), b"first-a")],
            &fetch,
        )
        .await
        .unwrap();
    assert!(got[0].is_some());
    let got = s
        .update_many(
            &[id.as_str()],
            &[
                (id.as_str(), b"late"),
                (attachment.as_str(), b"late-a"),
                ("crl-1", b"crl"),
            ],
            &fetch,
        )
        .await
        .unwrap();
    assert!(got[0].is_none(), "the late answer was applied");
    assert_eq!(
        s.document(&id).await.unwrap().as_deref(),
        Some(&b"first"[..]),
        "a declined change replaced the document"
    );
    assert_eq!(
        s.document(&attachment).await.unwrap().as_deref(),
        Some(&b"first-a"[..]),
        "a declined change replaced the document's attachment"
    );
    assert_eq!(
        s.document("crl-1").await.unwrap().as_deref(),
        Some(&b"crl"[..])
    );
}

/// A request removed (retention) takes the documents of its own with it:
/// its document and the attachments its record names; another request's
/// stay.
pub(super) async fn a_removed_request_takes_its_attachments(
    s: &dyn QueueStore,
    r: RequestRecord,
    other: RequestRecord,
) {
    let (id, keep) = (r.id.to_string(), other.id.to_string());
    s.enqueue(vec![r, other]).await.unwrap();
    let names = |id: &str| {
        [
            id.to_owned(),
            format!("{id}.attachment-1"),
            format!("{id}.attachment-2"),
        ]
    };
    for who in [&id, &keep] {
        let docs = names(who);
        let listed: Vec<crate::lifecycle::AttachmentRecord> = docs[1..]
            .iter()
            .map(|d| crate::lifecycle::AttachmentRecord {
                document_id: d.clone(),
                content_id: "c".into(),
                content_type: "application/pdf".into(),
                name: None,
                size: 1,
                sha256: "00".repeat(32),
            })
            .collect();
        let pairs: Vec<(&str, &[u8])> = docs.iter().map(|d| (d.as_str(), &b"x"[..])).collect();
        let fetch = move |r: &mut RequestRecord| {
            r.state = State::Delivered;
            r.due_ms = None;
            r.document_id = Some(r.id.to_string());
            r.attachments = listed.clone();
            true
        };
        s.update_many(&[who.as_str()], &pairs, &fetch)
            .await
            .unwrap();
    }
    s.remove(&id).await.unwrap();
    for d in names(&id) {
        assert!(
            s.document(&d).await.unwrap().is_none(),
            "{d} outlived its request"
        );
    }
    for d in names(&keep) {
        assert!(
            s.document(&d).await.unwrap().is_some(),
            "{d} went with another request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sled_a_removed_request_takes_its_attachments() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    a_removed_request_takes_its_attachments(&*s, record(1, 5), record(2, 5)).await;
    s.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sled_a_declined_change_stores_no_document() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(dir.path(), 1 << 20).unwrap();
    a_declined_change_stores_no_document(&*s, record(1, 5)).await;
    s.close().await.unwrap();
}

/// A stopped store with bytes flipped at random places in its files, or a
/// file cut short: every trial ends in a clean start whose export equals
/// the original's, or in the clear start-up error that names the backups,
/// never in a panic (sled's panics on some damage are caught) or in a start
/// that then fails to read. Where the start is refused, the salvage writes
/// only what the original held (read from a copy, a request may come back
/// as it was earlier).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_never_panics_at_start() {
    use rand::{Rng, SeedableRng};
    let base = tempfile::tempdir().unwrap();
    let store_dir = base.path().join("store");
    let original = {
        let s = SledStore::open(&store_dir, 8 << 20).unwrap();
        rich_store(&s, 2_000).await;
        s.close().await.unwrap();
        drop(s);
        let s = SledStore::open(&store_dir, 8 << 20).unwrap();
        let lines = export_lines(&*s).await.unwrap();
        s.close().await.unwrap();
        lines
    };
    let known: std::collections::HashSet<&String> = original.iter().collect();
    let ids: std::collections::HashSet<String> = original
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["record"]["id"].as_str().map(str::to_owned))
        .collect();
    let files: Vec<std::path::PathBuf> = walk_files(&store_dir)
        .into_iter()
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    assert!(!files.is_empty());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1705);
    let (mut clean, mut refused, mut unopenable) = (0, 0, 0);
    let mut salvaged: Vec<usize> = Vec::new();
    let mut served_wrong = Vec::new();
    let trials = 150;
    for trial in 0..trials {
        let dir = base.path().join(format!("t{trial}"));
        copy_dir(&store_dir, &dir.join("store"));
        let victim = dir.join("store").join(
            files[rng.random_range(0..files.len())]
                .strip_prefix(&store_dir)
                .unwrap(),
        );
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
                let got = export_lines(&*s).await;
                if got.as_ref() != Ok(&original) || s.read_faults().is_some() {
                    served_wrong.push((trial, got.map(|g| g.len()), s.read_faults()));
                }
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
                match embedded::Repair::open_for_salvage(&dir.join("store")) {
                    Err(_) => unopenable += 1,
                    Ok((repair, copied)) => {
                        let mut out = Vec::new();
                        if repair.salvage(&mut out).is_ok() {
                            let text = String::from_utf8(out).unwrap();
                            let mut kept = 0;
                            for l in text.lines().skip(1) {
                                if l.starts_with("{\"kind\":\"lost\"") {
                                    continue;
                                }
                                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                                // A request whose document was lost is kept without it.
                                let with_doc = v["record"]["id"].as_str().map(|id| {
                                    l.replace(
                                        "\"document_id\":null",
                                        &format!("\"document_id\":\"{id}\""),
                                    )
                                });
                                let exact = known.contains(&l.to_string())
                                    || with_doc.is_some_and(|w| known.contains(&w));
                                // Read from a copy, sled may give a request as it
                                // was earlier; never one the original did not hold,
                                // and audit entries and documents only as written.
                                let earlier = copied.is_some()
                                    && v["kind"] == "request"
                                    && v["record"]["id"]
                                        .as_str()
                                        .is_some_and(|id| ids.contains(id));
                                assert!(
                                    exact || earlier,
                                    "trial {trial}: salvaged a line the original did not have: {l}"
                                );
                                if exact {
                                    kept += 1;
                                }
                            }
                            salvaged.push(kept);
                        }
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(clean + refused, trials);
    let all = original.len();
    let share = |f: &dyn Fn(usize) -> bool| salvaged.iter().filter(|n| f(**n)).count();
    eprintln!(
        "{trials} damaged stores: {clean} opened with everything, {refused} refused with the start-up error \
         ({unopenable} that sled cannot open at all, nor a copy with a fresh conf or without its snapshot). \
         Of the {} salvages, of the original's {all} lines: {} kept all, {} kept 90 % or more, {} kept none",
        salvaged.len(),
        share(&|n| n == all),
        share(&|n| n * 10 >= all * 9),
        share(&|n| n == 0),
    );
    assert!(
        served_wrong.is_empty(),
        "opened, but did not serve the original: {served_wrong:?}"
    );
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The store's export without its header (which carries the time).
async fn export_lines(s: &dyn QueueStore) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    crate::store::backup::export(s, &mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect())
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

/// A store as the gateway leaves it: requests with their audit entries,
/// some fetched with their documents. Returns the ids.
async fn rich_store(s: &SledStore, n: u64) -> Vec<String> {
    // One entry per request accepted, with a subject, as the audit rule
    // writes them.
    s.set_audit_rule(Arc::new(
        |old: Option<&RequestRecord>, new: &RequestRecord| {
            if old.is_some() {
                return Vec::new();
            }
            vec![trail::Draft {
                at_ms: new.created_ms,
                actor: new.client.to_string(),
                action: "request.accepted".into(),
                request_id: Some(new.id.to_string()),
                case: new.case.to_string(),
                subject: vec![format!("{:064x}", new.created_ms % 7)],
                ..trail::Draft::default()
            }]
        },
    ));
    let recs: Vec<_> = (0..n).map(|i| record(i, 5_000 + i)).collect();
    let ids: Vec<String> = recs.iter().map(|r| r.id.to_string()).collect();
    s.enqueue(recs).await.unwrap();
    let fetched: Vec<&str> = ids.iter().step_by(4).map(String::as_str).collect();
    let docs: Vec<(&str, Vec<u8>)> = fetched
        .iter()
        .map(|id| (*id, format!("<doc id=\"{id}\"/>").into_bytes()))
        .collect();
    let docs: Vec<(&str, &[u8])> = docs.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    s.update_many(&fetched, &docs, &|r| {
        r.state = State::Fetched;
        r.document_id = Some(r.id.to_string());
        r.due_ms = Some(9_000);
        true
    })
    .await
    .unwrap();
    ids
}

fn has(report: &embedded::check::Report, tree: &str, key: &str, problem: &str) -> bool {
    report
        .damage
        .iter()
        .any(|d| d.tree == tree && d.key.contains(key) && d.problem.contains(problem))
}

/// Each way a store can disagree with itself is found by the full check,
/// named by tree and key, and refuses the start with the error that
/// points to `store check` and the backups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_check_names_what_is_wrong_by_tree_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let ids = {
        let s = SledStore::open(&path, 8 << 20).unwrap();
        let ids = rich_store(&s, 300).await;
        s.close().await.unwrap();
        ids
    };
    {
        let clean = embedded::Repair::open(&path).unwrap().check();
        assert!(clean.is_clean(), "{:?}", clean.damage);
        assert_eq!(clean.read["requests"], 300);
        assert_eq!(clean.read["documents"], 75);
        assert_eq!(clean.read["audit"], 300);
        assert_eq!(clean.read["by_state"], 300);
    }
    {
        let s = SledStore::open(&path, 8 << 20).unwrap();
        let t = &s.t;
        // An index entry lost, a record rewritten as garbage, a document
        // gone, a counter off, an audit entry unreadable.
        let mut k = vec![State::ALL.iter().position(|x| *x == State::Queued).unwrap() as u8];
        k.extend_from_slice(ids[1].as_bytes());
        t.by_state.remove(k).unwrap();
        t.requests
            .insert(ids[2].as_bytes(), &b"{not json"[..])
            .unwrap();
        t.documents.remove(ids[4].as_bytes()).unwrap();
        t.counts
            .insert(&b"cadastre\0queued"[..], &999u64.to_be_bytes())
            .unwrap();
        t.audit.insert(7u64.to_be_bytes(), &b"garbage"[..]).unwrap();
        s.close().await.unwrap();
    }
    let report = embedded::Repair::open(&path).unwrap().check();
    let all = format!("{:#?}", report.damage);
    assert!(has(&report, "requests", &ids[2], "unreadable"), "{all}");
    assert!(
        has(
            &report,
            "by_state",
            &ids[1],
            "a record calls for this index entry, which is missing"
        ),
        "{all}"
    );
    assert!(
        has(
            &report,
            "documents",
            &ids[4],
            "the request names this document, which is missing"
        ),
        "{all}"
    );
    assert!(
        has(&report, "counts", "cadastre queued", "counts 999"),
        "{all}"
    );
    assert!(has(&report, "audit", "7", "unreadable"), "{all}");
    // The garbage record's index entries name nothing now.
    assert!(
        has(
            &report,
            "due",
            &ids[2],
            "an index entry that no record calls for"
        ),
        "{all}"
    );
    let e = SledStore::open(&path, 8 << 20).err().unwrap();
    let m = e.to_string();
    assert!(matches!(e, StoreError::Damaged { .. }), "{m}");
    for want in [
        "found by the full check",
        "jumgw store check",
        "jumgw store salvage",
        "backups",
    ] {
        assert!(m.contains(want), "{want}: {m}");
    }
    // Without the check it opens (an operator's choice for a huge store).
    let s = SledStore::open_with(
        &path,
        &Opening {
            full_check: false,
            ..Opening::default()
        },
    )
    .unwrap();
    s.close().await.unwrap();
}

/// A salvage writes what is readable and a `lost` line for the rest; the
/// store it is imported into holds exactly the original less what was
/// lost, and its audit trail verifies up to the hole and names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salvage_keeps_what_is_readable_and_the_trail_verifies_up_to_the_hole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (ids, original) = {
        let s = SledStore::open(&path, 8 << 20).unwrap();
        let ids = rich_store(&s, 120).await;
        let original = export_lines(&*s).await.unwrap();
        let t = &s.t;
        t.requests
            .insert(ids[8].as_bytes(), &b"\x00\x01"[..])
            .unwrap();
        for seq in 10..=12u64 {
            t.audit.remove(seq.to_be_bytes()).unwrap();
        }
        s.close().await.unwrap();
        (ids, original)
    };
    let mut out = Vec::new();
    let saved = embedded::Repair::open(&path)
        .unwrap()
        .salvage(&mut out)
        .unwrap();
    assert_eq!(saved.counts.requests, 119);
    assert_eq!(saved.counts.documents, 29);
    assert_eq!(saved.counts.audit, 117);
    assert!(
        saved
            .lost
            .iter()
            .any(|l| l.tree == "requests" && l.key == ids[8]),
        "{:?}",
        saved.lost
    );
    assert!(
        saved
            .lost
            .iter()
            .any(|l| l.tree == "audit" && l.audit_seqs == Some([10, 12]) && l.key == "10–12"),
        "{:?}",
        saved.lost
    );
    let fresh = tempfile::tempdir().unwrap();
    let restored = SledStore::open(&fresh.path().join("store"), 8 << 20).unwrap();
    crate::store::backup::import(&*restored, &mut out.as_slice())
        .await
        .unwrap();
    // Exactly the original, less the lost record and the lost entries.
    // The record (fetched: with its document) and the three entries.
    let lost_line = |l: &String| {
        l.contains(&format!("\"id\":\"{}\"", ids[8]))
            || (10..=12)
                .any(|s| l.starts_with(&format!("{{\"kind\":\"audit\",\"entry\":{{\"seq\":{s},")))
    };
    let want: Vec<String> = original.iter().filter(|l| !lost_line(l)).cloned().collect();
    assert_eq!(want.len(), original.len() - 5);
    let got = export_lines(&*restored).await.unwrap();
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter()
            .filter(|l| !b.contains(l))
            .map(|l| l.chars().take(160).collect())
            .collect()
    };
    assert!(
        got == want,
        "restored but not in the original: {:?}\nin the original but not restored: {:?}",
        only(&got, &want),
        only(&want, &got)
    );
    // The trail keeps its numbers, with the hole where it was (that
    // `audit verify` names it is the daemon test's).
    let seqs: Vec<u64> = restored
        .audit_scan(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, e)| {
            assert!(e.is_ok());
            s
        })
        .collect();
    let want: Vec<u64> = (1..=9).chain(13..=120).collect();
    assert_eq!(seqs, want);
    assert_eq!(restored.audit_head().await.unwrap().seq, 120);
    restored.close().await.unwrap();
    // A hole no `lost` line declares is refused at import.
    let undeclared: Vec<u8> = String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("{\"kind\":\"lost\""))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    let fresh = tempfile::tempdir().unwrap();
    let s = SledStore::open(&fresh.path().join("store"), 8 << 20).unwrap();
    let e = crate::store::backup::import(&*s, &mut undeclared.as_slice())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no lost line declares"), "{e}");
    s.close().await.unwrap();
}

/// A record that stops reading while the gateway runs: operators' views
/// skip it and go on, the store's health counts it (for `/readyz` and the
/// alert metric: the daemon test), and a direct read of it is the
/// store-damaged error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_error_while_running_is_counted_and_views_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = SledStore::open(&dir.path().join("store"), 8 << 20).unwrap();
    let ids = rich_store(&s, 30).await;
    assert_eq!(s.read_faults(), None);
    s.t.requests
        .insert(ids[3].as_bytes(), &b"{\"v\":"[..])
        .unwrap();
    let all = s
        .list(&Listing {
            selector: Selector::default(),
            order: Order::Oldest,
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 29);
    let queued = s
        .list(&Listing {
            selector: Selector {
                state: Some(State::Queued),
                ..Selector::default()
            },
            order: Order::Newest,
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 22 - 1);
    let case = s.by_case(&record(3, 0).case).await.unwrap();
    assert_eq!(case.len(), 9);
    s.tally().await.unwrap();
    let faults = s.read_faults().expect("counted");
    assert!(faults.count >= 3, "{faults:?}");
    assert!(faults.first.contains(&ids[3]), "{faults:?}");
    assert!(matches!(
        s.get(&ids[3]).await,
        Err(StoreError::Corrupt { .. })
    ));
    s.close().await.unwrap();
}

/// What is stored beside a document (an X-Road document's attachments and
/// its signed document) goes with its request into an export and a
/// salvage, and comes back with it on import: a restored store serves the
/// attachments and builds the dossier as the old one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_and_a_salvage_carry_the_documents_beside_a_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let s = SledStore::open(&path, 8 << 20).unwrap();
    let r = record(1, 5_000);
    let id = r.id.to_string();
    s.enqueue(vec![r]).await.unwrap();
    let beside = [
        (format!("{id}.attachment-1"), b"%PDF-1.7 one".to_vec()),
        (format!("{id}.attachment-2"), b"two".to_vec()),
        (format!("{id}.asice"), b"PK container".to_vec()),
    ];
    let mut docs: Vec<(&str, &[u8])> = vec![(&id, b"<doc/>")];
    docs.extend(beside.iter().map(|(i, d)| (i.as_str(), d.as_slice())));
    s.update_many(&[id.as_str()], &docs, &|r| {
        r.state = State::Fetched;
        r.document_id = Some(r.id.to_string());
        r.attachments = (1..=2)
            .map(|n| crate::lifecycle::AttachmentRecord {
                document_id: format!("{}.attachment-{n}", r.id),
                content_id: format!("part{n}"),
                content_type: "application/pdf".into(),
                name: None,
                size: 3,
                sha256: String::new(),
            })
            .collect();
        let mut sd = crate::lifecycle::SignedDocRecord::pending("m-1", 1);
        sd.state = SignedDocState::Kept;
        sd.next_ms = None;
        sd.document_id = Some(format!("{}.asice", r.id));
        r.signed_document = Some(sd);
        true
    })
    .await
    .unwrap();
    let exported = export_lines(&*s).await.unwrap();
    let mut exported_bytes = Vec::new();
    crate::store::backup::export(&*s, &mut exported_bytes)
        .await
        .unwrap();
    s.close().await.unwrap();
    drop(s);
    let mut salvaged = Vec::new();
    let saved = embedded::Repair::open(&path)
        .unwrap()
        .salvage(&mut salvaged)
        .unwrap();
    assert!(saved.lost.is_empty(), "{:?}", saved.lost);
    assert_eq!(saved.counts.documents, 4);
    for (what, dump) in [("export", exported_bytes), ("salvage", salvaged)] {
        let fresh = tempfile::tempdir().unwrap();
        let restored = SledStore::open(&fresh.path().join("store"), 8 << 20).unwrap();
        let c = crate::store::backup::import(&*restored, &mut dump.as_slice())
            .await
            .unwrap();
        assert_eq!(c.documents, 4, "{what}");
        assert_eq!(
            restored.document(&id).await.unwrap().as_deref(),
            Some(&b"<doc/>"[..]),
            "{what}"
        );
        for (i, d) in &beside {
            assert_eq!(
                restored.document(i).await.unwrap().as_ref(),
                Some(d),
                "{what}: {i}"
            );
        }
        assert_eq!(export_lines(&*restored).await.unwrap(), exported, "{what}");
        restored.close().await.unwrap();
    }
}
