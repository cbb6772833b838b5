//! The full check of a sled store (at start, and `jumgw store check`) and
//! the salvage of what is still readable (`jumgw store salvage`).
//!
//! sled checksums every page it reads from disk and answers `Corruption`
//! on a bad one (or, on some damage, panics): reading every entry of every
//! tree finds damage on disk. Decoding every record and audit entry, and
//! comparing what each record puts in the indexes ([`index::entries`]) with
//! what is in them, finds what was written wrong. The comparison is by
//! digests that do not depend on order (a sum of one hash per entry), one
//! pass per tree and no memory in proportion to the store; only when a
//! digest disagrees is the tree walked again, to name the keys.
//!
//! The audit trail's links and hashes are `jumgw audit verify`'s to judge
//! (against the checkpoints); here every entry must decode.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;

use serde::Serialize;

use super::events::seq_of;
use super::{index, Trees};
use crate::store::backup::{BackupError, Lost, Sink};
use crate::store::trail::Entry;
use crate::store::{decode, decode_event, IdemEntry, RequestRecord, State};

pub use crate::store::integrity::{Damage, Report};

/// The message of a caught panic.
pub(super) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// A key as an operator reads it, by its tree's layout.
fn show(tree: &str, k: &[u8]) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let num = |b: &[u8]| {
        <[u8; 8]>::try_from(b)
            .map(|a| u64::from_be_bytes(a).to_string())
            .unwrap_or_else(|_| format!("0x{}", crate::store::trail::hex(b)))
    };
    match tree {
        "due" | "deadlines" if k.len() > 8 => format!("{} {}", num(&k[..8]), text(&k[8..])),
        "by_state" if !k.is_empty() => {
            let s = State::ALL.get(k[0] as usize).map_or("?", |s| s.name());
            format!("{s} {}", text(&k[1..]))
        }
        "by_case" | "idempotency" | "counts" => text(k).replace('\0', " "),
        "audit" | "outbox" => num(k),
        "audit_subject" if k.len() > 8 => {
            format!("{} {}", text(&k[..k.len() - 8]), num(&k[k.len() - 8..]))
        }
        _ => text(k),
    }
}

/// An entry of a tree, as sled hands it out.
type Item = (sled::IVec, sled::IVec);

/// Calls `f` on every readable entry of `tree`, in key order: forward
/// until the first entry sled cannot read, then backward from the end
/// down to it, so that a damaged page costs only the entries on it (and
/// those between, which [`salvage`] looks for by the other trees). What
/// could not be read is reported with the keys that bound it. Returns the
/// bounds of the unread stretch, if any.
fn walk(
    t: &sled::Tree,
    name: &str,
    report: &mut Report,
    mut f: impl FnMut(&sled::IVec, &sled::IVec),
) -> Option<(Option<sled::IVec>, Option<sled::IVec>)> {
    let mut n = 0u64;
    let mut last: Option<sled::IVec> = None;
    let forward = std::panic::catch_unwind(AssertUnwindSafe(|| {
        for item in t.iter() {
            let (k, v): Item = item.map_err(|e| e.to_string())?;
            f(&k, &v);
            n += 1;
            last = Some(k);
        }
        Ok::<(), String>(())
    }))
    .unwrap_or_else(|p| Err(format!("sled failed reading it: {}", panic_text(&*p))));
    let Err(why) = forward else {
        *report.read.entry(name.into()).or_default() += n;
        return None;
    };
    let mut first: Option<sled::IVec> = None;
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        for item in t.iter().rev() {
            let Ok((k, v)) = item else { break };
            if last.as_ref().is_some_and(|l| k <= *l) {
                break;
            }
            f(&k, &v);
            n += 1;
            first = Some(k);
        }
    }));
    *report.read.entry(name.into()).or_default() += n;
    let bound = |k: &Option<sled::IVec>, none: &str| {
        k.as_ref()
            .map_or_else(|| none.to_owned(), |k| show(name, k))
    };
    report.found(
        name,
        format!(
            "between {} and {}",
            bound(&last, "the start"),
            bound(&first, "the end")
        ),
        format!("unreadable: {why}"),
    );
    Some((last, first))
}

/// A sum of one hash per entry: equal for equal sets in any order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Digest {
    sum: u64,
    n: u64,
}

impl Digest {
    fn add(&mut self, k: &[u8], v: &[u8]) {
        // Fixed keys: the same hash in both passes of one run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        k.hash(&mut h);
        v.hash(&mut h);
        self.sum = self.sum.wrapping_add(h.finish());
        self.n += 1;
    }

    fn merge(&mut self, o: Digest) {
        self.sum = self.sum.wrapping_add(o.sum);
        self.n += o.n;
    }
}

/// The indexes the records call for, by tree. (A document whose record
/// does not name it is no damage: a fetch the record declined, e.g. after
/// a cancel, leaves one, removed with the record. A record that names a
/// missing document is looked up one by one.)
const INDEXES: [&str; 5] = ["due", "by_case", "by_state", "attention", "deadlines"];

/// What the records call for.
#[derive(Default)]
struct Wanted {
    digests: [Digest; 5],
    counts: BTreeMap<Vec<u8>, u64>,
}

impl Wanted {
    fn add(&mut self, r: &RequestRecord) {
        let e = index::entries(r);
        if let Some((k, v)) = &e.due {
            self.digests[0].add(k, v);
        }
        self.digests[1].add(&e.case, &[]);
        self.digests[2].add(&e.state, &[]);
        if let Some(k) = &e.stamp {
            self.digests[2].add(k, &[]);
        }
        if let Some(k) = &e.attention {
            self.digests[3].add(k, &[]);
        }
        if let Some(k) = &e.deadline {
            self.digests[4].add(k, &[]);
        }
        for k in e.counted {
            *self.counts.entry(k).or_default() += 1;
        }
    }

    fn merge(&mut self, o: Wanted) {
        for (a, b) in self.digests.iter_mut().zip(o.digests) {
            a.merge(b);
        }
        for (k, n) in o.counts {
            *self.counts.entry(k).or_default() += n;
        }
    }
}

fn index_tree<'a>(t: &'a Trees, name: &str) -> &'a sled::Tree {
    match name {
        "due" => &t.due,
        "by_case" => &t.by_case,
        "by_state" => &t.by_state,
        "attention" => &t.attention,
        _ => &t.deadlines,
    }
}

/// Decodes records handed over in batches: the decoding is most of the
/// check's work, so it runs on threads of its own beside the walk.
fn decode_records(
    rx: &std::sync::Mutex<std::sync::mpsc::Receiver<Vec<Item>>>,
    documents: &sled::Tree,
) -> (Wanted, Report) {
    let mut wanted = Wanted::default();
    let mut report = Report::default();
    loop {
        let batch = match crate::sync::lock(rx).recv() {
            Ok(b) => b,
            Err(_) => return (wanted, report),
        };
        for (k, v) in batch {
            match decode(&k, &v) {
                Ok(r) if r.id.as_bytes() != k.as_ref() => report.found(
                    "requests",
                    show("requests", &k),
                    format!("holds the record of {}", r.id),
                ),
                Ok(r) => {
                    if let Some(d) = &r.document_id {
                        match documents.contains_key(d.as_bytes()) {
                            Ok(true) => {}
                            Ok(false) => report.found(
                                "documents",
                                d.clone(),
                                "the request names this document, which is missing".into(),
                            ),
                            Err(e) => {
                                report.found("documents", d.clone(), format!("unreadable: {e}"))
                            }
                        }
                    }
                    wanted.add(&r)
                }
                Err(e) => report.found("requests", show("requests", &k), e.to_string()),
            }
        }
    }
}

/// The records: every one decodes and names itself; what they call for
/// in the indexes. `None` when the tree could not be read whole (then the
/// indexes cannot be compared with it).
fn check_records(t: &Trees, report: &mut Report) -> Option<Wanted> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(8);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| s.spawn(|| decode_records(&rx, &t.documents)))
            .collect();
        let mut batch = Vec::with_capacity(1024);
        let gap = walk(&t.requests, "requests", report, |k, v| {
            batch.push((k.clone(), v.clone()));
            if batch.len() == 1024 {
                let _ = tx.send(std::mem::take(&mut batch));
            }
        });
        let _ = tx.send(batch);
        drop(tx);
        let mut wanted = Wanted::default();
        for w in workers {
            match w.join() {
                Ok((w, r)) => {
                    wanted.merge(w);
                    report.merge(r);
                }
                Err(p) => report.found(
                    "requests",
                    "(all)".into(),
                    format!("the check failed: {}", panic_text(&*p)),
                ),
            }
        }
        gap.is_none().then_some(wanted)
    })
}

/// The index trees as they are: their digests, and the counters.
/// The index digests and the counters, as the trees hold them.
type Held = ([Digest; 5], BTreeMap<Vec<u8>, u64>);

fn read_indexes(t: &Trees, report: &mut Report) -> Option<Held> {
    let mut digests = [Digest::default(); 5];
    let mut whole = true;
    for (i, name) in INDEXES.iter().enumerate() {
        let d = &mut digests[i];
        whole &= walk(index_tree(t, name), name, report, |k, v| d.add(k, v)).is_none();
    }
    // The documents are read whole too: a page that does not read is damage.
    walk(&t.documents, "documents", report, |_, _| {});
    let mut counts = BTreeMap::new();
    let mut bad = Vec::new();
    whole &= walk(
        &t.counts,
        "counts",
        report,
        |k, v| match <[u8; 8]>::try_from(v.as_ref()) {
            Ok(n) => {
                counts.insert(k.to_vec(), u64::from_be_bytes(n));
            }
            Err(_) => bad.push(k.to_vec()),
        },
    )
    .is_none();
    for k in bad {
        report.found("counts", show("counts", &k), "not a counter".into());
    }
    whole.then_some((digests, counts))
}

/// Names the keys of an index that disagrees with the records: slow (a
/// set of what the records call for), and run only when the digests said
/// there is something to find.
fn name_disagreement(t: &Trees, name: &str, report: &mut Report) {
    let mut wanted: HashSet<(Vec<u8>, Vec<u8>)> = HashSet::new();
    let mut dummy = Report::default();
    walk(&t.requests, "requests", &mut dummy, |k, v| {
        let Ok(r) = decode(k, v) else { return };
        let e = index::entries(&r);
        let key = match name {
            "due" => e.due,
            "by_case" => Some((e.case, Vec::new())),
            "by_state" => Some((e.state, Vec::new())),
            "attention" => e.attention.map(|k| (k, Vec::new())),
            _ => e.deadline.map(|k| (k, Vec::new())),
        };
        wanted.extend(key);
        if name == "by_state" {
            wanted.extend(e.stamp.map(|k| (k, Vec::new())));
        }
    });
    walk(index_tree(t, name), name, &mut dummy, |k, v| {
        if !wanted.remove(&(k.to_vec(), v.to_vec())) {
            report.found(
                name,
                show(name, k),
                "an index entry that no record calls for".into(),
            );
        }
    });
    for (k, _) in wanted {
        report.found(
            name,
            show(name, &k),
            "a record calls for this index entry, which is missing".into(),
        );
    }
}

/// The audit trail: every entry decodes and is numbered by its key; the
/// subject index agrees with the entries. Whether the chain links hold, and
/// where numbers are missing (a salvaged trail has holes on purpose), is
/// for `jumgw audit verify` to say, against the checkpoints: a trail
/// someone tampered with is evidence, not a reason to stop serving.
fn check_audit(t: &Trees, report: &mut Report) {
    let mut wanted = Digest::default();
    let mut head = 0u64;
    let mut found = Vec::new();
    let gap = walk(&t.audit, "audit", report, |k, v| {
        let seq = match seq_of(k) {
            Ok(s) => s,
            Err(_) => {
                found.push((show("audit", k), "not an entry number".to_string()));
                return;
            }
        };
        head = head.max(seq);
        let e: Entry = match serde_json::from_slice(v) {
            Ok(e) => e,
            Err(e) => {
                found.push((seq.to_string(), format!("unreadable: {e}")));
                return;
            }
        };
        if e.seq != seq {
            found.push((seq.to_string(), format!("says it is entry {}", e.seq)));
        }
        for s in &e.draft.subject {
            let mut key = s.as_bytes().to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            wanted.add(&key, &[]);
        }
    });
    for (k, p) in found {
        report.found("audit", k, p);
    }
    let mut have = Digest::default();
    let whole = walk(&t.audit_subject, "audit_subject", report, |k, _| {
        // Keys past the newest entry name nothing and are never read.
        let seq = k
            .len()
            .checked_sub(8)
            .and_then(|at| seq_of(&k[at..]).ok())
            .unwrap_or(u64::MAX);
        if seq <= head {
            have.add(k, &[])
        }
    })
    .is_none();
    if gap.is_none() && whole && have != wanted {
        report.found(
            "audit_subject",
            "(all)".into(),
            format!(
                "the subject index has {} entries where the trail calls for {}, or other ones",
                have.n, wanted.n
            ),
        );
    }
}

/// The small trees: idempotency keys, webhook events, their ids, meta.
fn check_rest(t: &Trees, meta: &sled::Tree, report: &mut Report) {
    let mut found = Vec::new();
    walk(&t.idempotency, "idempotency", report, |k, v| {
        if let Err(e) = serde_json::from_slice::<IdemEntry>(v) {
            found.push((
                "idempotency",
                show("idempotency", k),
                format!("unreadable: {e}"),
            ));
        }
    });
    walk(&t.outbox, "outbox", report, |k, v| {
        let seq = seq_of(k).unwrap_or(0);
        if let Err(e) = decode_event(seq, v) {
            found.push(("outbox", show("outbox", k), e.to_string()));
        }
    });
    walk(&t.outbox_ids, "outbox_ids", report, |k, v| {
        if v.len() != 16 {
            found.push((
                "outbox_ids",
                show("outbox_ids", k),
                "not a sequence number and a time".into(),
            ));
        }
    });
    walk(meta, "meta", report, |_, _| {});
    for (tree, k, p) in found {
        report.found(tree, k, p);
    }
}

/// The full check: every tree read, every record and audit entry decoded,
/// the indexes and counters compared with the records. The records, the
/// indexes and the audit trail are walked on threads of their own.
pub(super) fn check(t: &Trees) -> Report {
    let mut report = Report::default();
    let (mut r_idx, mut r_audit) = (Report::default(), Report::default());
    let (wanted, have) = std::thread::scope(|s| {
        let idx = s.spawn(|| read_indexes(t, &mut r_idx));
        let audit = s.spawn(|| {
            check_audit(t, &mut r_audit);
            check_rest(t, &t.meta, &mut r_audit);
        });
        let wanted = check_records(t, &mut report);
        let have = idx.join().ok().flatten();
        let _ = audit.join();
        (wanted, have)
    });
    report.merge(r_idx);
    report.merge(r_audit);
    // Compared only when both sides were read whole: a damaged page is
    // already reported, and would make every index look wrong.
    if let (Some(w), Some((digests, counts))) = (wanted, have) {
        for (i, name) in INDEXES.iter().enumerate() {
            if w.digests[i] != digests[i] {
                name_disagreement(t, name, &mut report);
            }
        }
        if w.counts != counts {
            let keys: BTreeSet<&Vec<u8>> = w.counts.keys().chain(counts.keys()).collect();
            for k in keys {
                let (a, b) = (
                    w.counts.get(k).copied().unwrap_or(0),
                    counts.get(k).copied().unwrap_or(0),
                );
                if a != b {
                    report.found(
                        "counts",
                        show("counts", k),
                        format!("counts {b} where the records are {a}"),
                    );
                }
            }
        }
    }
    report
}

/// What a salvage wrote and what it could not.
#[derive(Debug, Default, Serialize)]
pub struct Salvaged {
    pub counts: crate::store::backup::Counts,
    pub lost: Vec<Lost>,
}

/// A point read that survives sled's panics.
fn get(t: &sled::Tree, k: &[u8]) -> Result<Option<sled::IVec>, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| t.get(k).map_err(|e| e.to_string())))
        .unwrap_or_else(|p| Err(format!("sled failed reading it: {}", panic_text(&*p))))
}

/// Reads `t` forward from `from` while it can, into `into`.
fn read_from(t: &sled::Tree, from: &[u8], into: &mut BTreeMap<Vec<u8>, sled::IVec>) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        for item in t.range(from..) {
            let Ok((k, v)) = item else { break };
            if into.insert(k.to_vec(), v).is_some() {
                // Joined a stretch already read.
                break;
            }
        }
    }));
}

/// Everything readable of a tree: the walk around damage, then, where a
/// stretch could not be read, each key the other trees name in it
/// (`stones`) read on its own and the tree read forward from it.
fn readable(
    t: &sled::Tree,
    name: &str,
    stones: &BTreeSet<Vec<u8>>,
    lost: &mut Vec<Lost>,
) -> BTreeMap<Vec<u8>, sled::IVec> {
    let mut out = BTreeMap::new();
    let mut report = Report::default();
    let gap = walk(t, name, &mut report, |k, v| {
        out.insert(k.to_vec(), v.clone());
    });
    if let Some((lo, hi)) = gap {
        let inside = |k: &Vec<u8>| {
            lo.as_ref().is_none_or(|l| k.as_slice() > l.as_ref())
                && hi.as_ref().is_none_or(|h| k.as_slice() < h.as_ref())
        };
        for k in stones.iter().filter(|k| inside(k)) {
            if out.contains_key(k) {
                continue;
            }
            match get(t, k) {
                Ok(Some(_)) => read_from(t, k, &mut out),
                Ok(None) => {}
                Err(why) => lost.push(Lost {
                    tree: name.into(),
                    key: show(name, k),
                    problem: format!("unreadable: {why}"),
                    audit_seqs: None,
                }),
            }
        }
        for d in report.damage {
            lost.push(Lost {
                tree: d.tree,
                key: d.key,
                problem: format!(
                    "{} (what the other trees name there was looked up one by one)",
                    d.problem
                ),
                audit_seqs: None,
            });
        }
    }
    out
}

/// The request ids any tree names: where to look inside a damaged stretch
/// of `requests`.
fn named_ids(t: &Trees) -> BTreeSet<Vec<u8>> {
    let mut ids = BTreeSet::new();
    let mut report = Report::default();
    let suffix = |tree: &sled::Tree,
                  name: &str,
                  skip: usize,
                  ids: &mut BTreeSet<Vec<u8>>,
                  report: &mut Report| {
        walk(tree, name, report, |k, _| {
            if k.len() > skip {
                ids.insert(k[skip..].to_vec());
            }
        });
    };
    suffix(&t.due, "due", 8, &mut ids, &mut report);
    suffix(&t.deadlines, "deadlines", 8, &mut ids, &mut report);
    suffix(&t.by_state, "by_state", 1, &mut ids, &mut report);
    suffix(&t.attention, "attention", 0, &mut ids, &mut report);
    suffix(&t.documents, "documents", 0, &mut ids, &mut report);
    walk(&t.by_case, "by_case", &mut report, |k, _| {
        if let Some(p) = k.iter().position(|b| *b == 0) {
            ids.insert(k[p + 1..].to_vec());
        }
    });
    walk(&t.idempotency, "idempotency", &mut report, |_, v| {
        if let Ok(e) = serde_json::from_slice::<IdemEntry>(v) {
            ids.extend(e.request_ids.into_iter().map(String::into_bytes));
        }
    });
    walk(&t.audit, "audit", &mut report, |_, v| {
        if let Ok(e) = serde_json::from_slice::<Entry>(v) {
            ids.extend(e.draft.request_id.map(String::into_bytes));
        }
    });
    ids
}

/// Writes every readable request (with its document) and audit entry as
/// an export (`store import` restores it), and a `lost` line for each
/// thing it could not read; audit entries lost are declared by their
/// numbers, so that the restored trail verifies up to the hole.
pub(super) fn salvage(
    t: &Trees,
    w: &mut (dyn std::io::Write + Send),
) -> Result<Salvaged, BackupError> {
    let mut lost = Vec::new();
    let mut sink = Sink::new(w)?;
    let stones = named_ids(t);
    let records = readable(&t.requests, "requests", &stones, &mut lost);
    for (k, v) in records {
        let r = match decode(&k, &v) {
            Ok(r) => r,
            Err(e) => {
                lost.push(Lost {
                    tree: "requests".into(),
                    key: show("requests", &k),
                    problem: e.to_string(),
                    audit_seqs: None,
                });
                continue;
            }
        };
        let doc = match &r.document_id {
            None => None,
            Some(d) => match get(&t.documents, d.as_bytes()) {
                Ok(Some(bytes)) => Some((d.clone(), bytes)),
                Ok(None) => {
                    lost.push(Lost {
                        tree: "documents".into(),
                        key: d.clone(),
                        problem: "missing: the request is kept without it".into(),
                        audit_seqs: None,
                    });
                    None
                }
                Err(why) => {
                    lost.push(Lost {
                        tree: "documents".into(),
                        key: d.clone(),
                        problem: format!("unreadable: {why}; the request is kept without it"),
                        audit_seqs: None,
                    });
                    None
                }
            },
        };
        let mut beside = Vec::new();
        for d in r.documents_beside() {
            match get(&t.documents, d.as_bytes()) {
                Ok(Some(bytes)) => beside.push((d.to_owned(), bytes)),
                Ok(None) => lost.push(Lost {
                    tree: "documents".into(),
                    key: d.to_owned(),
                    problem: "missing: the request is kept without it".into(),
                    audit_seqs: None,
                }),
                Err(why) => lost.push(Lost {
                    tree: "documents".into(),
                    key: d.to_owned(),
                    problem: format!("unreadable: {why}; the request is kept without it"),
                    audit_seqs: None,
                }),
            }
        }
        let mut r = r;
        if doc.is_none() {
            // The import would otherwise promise a document it has not got.
            r.document_id = None;
        }
        sink.request(r)?;
        if let Some((id, bytes)) = doc {
            sink.document(id, &bytes)?;
        }
        for (id, bytes) in beside {
            sink.document(id, &bytes)?;
        }
    }
    // The trail: the entries the subject index names stand in the holes.
    let mut stones = BTreeSet::new();
    let mut report = Report::default();
    walk(&t.audit_subject, "audit_subject", &mut report, |k, _| {
        if k.len() >= 8 {
            stones.insert(k[k.len() - 8..].to_vec());
        }
    });
    let mut trail_lost = Vec::new();
    let entries = readable(&t.audit, "audit", &stones, &mut trail_lost);
    let mut good: Vec<Entry> = Vec::new();
    for (k, v) in entries {
        let Ok(seq) = seq_of(&k) else { continue };
        match serde_json::from_slice::<Entry>(&v) {
            Ok(e) if e.seq == seq => good.push(e),
            Ok(e) => trail_lost.push(Lost {
                tree: "audit".into(),
                key: seq.to_string(),
                problem: format!("says it is entry {}", e.seq),
                audit_seqs: None,
            }),
            Err(e) => trail_lost.push(Lost {
                tree: "audit".into(),
                key: seq.to_string(),
                problem: format!("unreadable: {e}"),
                audit_seqs: None,
            }),
        }
    }
    // Each hole in the numbering, declared before the entries.
    let mut next = 1u64;
    let mut holes = Vec::new();
    for e in &good {
        if e.seq > next {
            holes.push(Lost {
                tree: "audit".into(),
                key: if e.seq - 1 == next {
                    next.to_string()
                } else {
                    format!("{next}–{}", e.seq - 1)
                },
                problem: "audit entries lost: the chain verifies up to here".into(),
                audit_seqs: Some([next, e.seq - 1]),
            });
        }
        next = e.seq + 1;
    }
    lost.extend(trail_lost);
    lost.extend(holes);
    for l in &lost {
        sink.lost(l.clone())?;
    }
    for e in good {
        sink.audit(e)?;
    }
    Ok(Salvaged {
        counts: sink.finish()?,
        lost,
    })
}
