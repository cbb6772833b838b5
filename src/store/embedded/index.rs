//! The secondary trees of a record, changed in the record's transaction:
//! what it is due for, its case, its state, whether it needs an operator,
//! its deadline while open, and the counters by registry and state.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `due` | due time, big-endian u64 ‖ id | [`Work`] code |
//! | `by_case` | case number ‖ 0x00 ‖ id | empty |
//! | `by_state` | state code (one byte) ‖ id | empty |
//! | `by_state` | [`STAMP_PENDING`] ‖ next try, big-endian u64 ‖ id | empty: [`RequestRecord::evidence_due_ms`] (a pending timestamp or signed document) |
//! | `attention` | id | empty: [`RequestRecord::needs_attention`] |
//! | `deadlines` | deadline, big-endian u64 ‖ id | empty: open requests only |
//! | `counts` | registry ‖ 0x00 ‖ state name (or `!at_risk`) | big-endian u64 |
//!
//! Every write of a record goes through [`change`] with the record before
//! and after (`None` for one that did not exist or is removed), so the
//! trees cannot drift from the records.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::super::{RequestRecord, State, StoreError, Work};

/// The trees, inside one transaction.
pub(super) struct Ix<'a> {
    pub due: &'a TransactionalTree,
    pub by_case: &'a TransactionalTree,
    pub by_state: &'a TransactionalTree,
    pub attention: &'a TransactionalTree,
    pub deadlines: &'a TransactionalTree,
    pub counts: &'a TransactionalTree,
}

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

pub(super) const AT_RISK: &str = "!at_risk";

/// The prefix in `by_state` (no state's code) of documents waiting for
/// their evidence (a timestamp, an X-Road signed document), by when the
/// evidence job is next to try ([`RequestRecord::evidence_due_ms`]).
pub(super) const STAMP_PENDING: u8 = 0xfe;

pub(super) fn stamp_key(next_ms: u64, id: &str) -> Vec<u8> {
    let mut k = vec![STAMP_PENDING];
    k.extend_from_slice(&next_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn state_code(s: State) -> u8 {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

pub(super) fn due_key(due: u64, id: &str) -> Vec<u8> {
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn case_key(case: &str, id: &str) -> Vec<u8> {
    let mut k = case.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn state_key(s: State, id: &str) -> Vec<u8> {
    let mut k = vec![state_code(s)];
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn count_key(registry: &str, what: &str) -> Vec<u8> {
    let mut k = registry.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(what.as_bytes());
    k
}

/// The due index's value for `r`: what it is due for, as its code.
pub(super) fn due_value(r: &RequestRecord) -> Vec<u8> {
    Work::of(r)
        .map(|w| w.code().as_bytes().to_vec())
        .unwrap_or_default()
}

fn deadline_of(r: &RequestRecord) -> Option<Vec<u8>> {
    (!r.state.is_terminal()).then(|| due_key(r.deadline_ms, &r.id))
}

/// Counter changes of a transaction, written once each at its end: a
/// batch of accepts moves one counter by hundreds, not hundreds of times.
#[derive(Default)]
pub(super) struct Deltas(std::collections::BTreeMap<Vec<u8>, i64>);

impl Deltas {
    fn add(&mut self, key: Vec<u8>, d: i64) {
        *self.0.entry(key).or_default() += d;
    }

    pub(super) fn apply(self, counts: &TransactionalTree) -> TxResult {
        for (key, delta) in self.0 {
            if delta == 0 {
                continue;
            }
            let cur = counts
                .get(&key)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let n = cur.saturating_add_signed(delta);
            if n == 0 {
                counts.remove(key)?;
            } else {
                counts.insert(key, &n.to_be_bytes())?;
            }
        }
        Ok(())
    }
}

/// What a record puts in each secondary tree: the one description of the
/// indexes, used to write them ([`change`]) and to check them
/// ([`check`](super::check)).
pub(super) struct Entries {
    /// Key and value.
    pub due: Option<(Vec<u8>, Vec<u8>)>,
    pub case: Vec<u8>,
    pub state: Vec<u8>,
    pub attention: Option<Vec<u8>>,
    pub deadline: Option<Vec<u8>>,
    /// In `by_state` too.
    pub stamp: Option<Vec<u8>>,
    /// The counters it adds one to.
    pub counted: Vec<Vec<u8>>,
}

pub(super) fn entries(r: &RequestRecord) -> Entries {
    let mut counted = vec![count_key(&r.registry, r.state.name())];
    if r.at_risk_open() {
        counted.push(count_key(&r.registry, AT_RISK));
    }
    Entries {
        due: r.due_ms.map(|d| (due_key(d, &r.id), due_value(r))),
        case: case_key(&r.case, &r.id),
        state: state_key(r.state, &r.id),
        attention: r.needs_attention().then(|| r.id.as_bytes().to_vec()),
        deadline: deadline_of(r),
        stamp: r.evidence_due_ms().map(|at| stamp_key(at, &r.id)),
        counted,
    }
}

/// Brings every secondary tree from `old` to `new`; the counters' changes
/// go into `deltas`, applied once at the end of the transaction.
pub(super) fn change(
    ix: &Ix<'_>,
    deltas: &mut Deltas,
    old: Option<&RequestRecord>,
    new: Option<&RequestRecord>,
) -> TxResult {
    let (o, n) = (old.map(entries), new.map(entries));
    let (od, nd) = (
        o.as_ref().and_then(|e| e.due.clone()),
        n.as_ref().and_then(|e| e.due.clone()),
    );
    if od != nd {
        if let Some((k, _)) = od {
            ix.due.remove(k)?;
        }
        if let Some((k, v)) = nd {
            ix.due.insert(k, v)?;
        }
    }
    let keyed = |f: &dyn Fn(&Entries) -> Option<Vec<u8>>, tree: &TransactionalTree| -> TxResult {
        let (o, n) = (o.as_ref().and_then(f), n.as_ref().and_then(f));
        if o != n {
            if let Some(k) = o {
                tree.remove(k)?;
            }
            if let Some(k) = n {
                tree.insert(k, &[])?;
            }
        }
        Ok(())
    };
    keyed(&|e| Some(e.case.clone()), ix.by_case)?;
    keyed(&|e| Some(e.state.clone()), ix.by_state)?;
    keyed(&|e| e.stamp.clone(), ix.by_state)?;
    keyed(&|e| e.attention.clone(), ix.attention)?;
    keyed(&|e| e.deadline.clone(), ix.deadlines)?;
    let (o, n) = (
        o.map(|e| e.counted).unwrap_or_default(),
        n.map(|e| e.counted).unwrap_or_default(),
    );
    for k in o.iter().filter(|k| !n.contains(k)) {
        deltas.add(k.clone(), -1);
    }
    for k in n.iter().filter(|k| !o.contains(k)) {
        deltas.add(k.clone(), 1);
    }
    Ok(())
}
