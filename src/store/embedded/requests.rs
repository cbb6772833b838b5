//! Reading the queue on sled: one record or several, by case, what is
//! due, evidence due, pages in id order, the walks behind lists and
//! counts (the narrowest index from the cursor), the counters, deadlines.

use super::*;

impl Core {
    /// One record, as [`Requests::get`] gives it; for the walks here.
    pub(super) fn read(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.t
            .requests
            .get(id.as_bytes())?
            .map(|v| self.decode(id.as_bytes(), &v))
            .transpose()
    }

    /// One record for an operator's view: one that cannot be read is
    /// noted in the store's health and left out.
    pub(super) fn readable(&self, id: &str) -> Option<RequestRecord> {
        self.read(id).unwrap_or_else(|e| {
            self.health.note(&e);
            None
        })
    }

    /// Decodes a record read for a caller (counted: [`QueueStore::records_read`]).
    pub(super) fn decode(&self, id: &[u8], v: &[u8]) -> Result<RequestRecord, StoreError> {
        self.decoded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        decode(id, v)
    }

    /// Calls `f` on each request `sel` selects, in `order`, after the id
    /// `after`, until `f` says stop. Walks the narrowest index, seeking by
    /// filing time where the selector bounds it.
    pub(super) fn walk(
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
        let floor = sel
            .created_before
            .map(|b| key(&crate::store::query::id_floor(b)));
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

    pub(super) fn get_many_now(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<sled::IVec>>, StoreError> {
        ids.iter()
            .map(|id| Ok(self.t.requests.get(id.as_bytes())?))
            .collect()
    }

    pub(super) fn get_now(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.read(id)
    }

    pub(super) fn by_case_now(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
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

    pub(super) fn evidence_due_now(
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

    pub(super) fn due_now(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
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

    pub(super) fn next_due_now(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.t.due.first()?.map(|(k, _)| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&k[..8]);
            u64::from_be_bytes(b)
        }))
    }

    pub(super) fn scan_now(
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

    pub(super) fn list_now(&self, q: &Listing) -> Result<Vec<RequestRecord>, StoreError> {
        let mut out = Vec::new();
        self.walk(&q.selector, q.order, q.after.as_deref(), |r| {
            out.push(r);
            out.len() < q.limit
        })?;
        Ok(out)
    }

    pub(super) fn count_now(&self, sel: &Selector) -> Result<u64, StoreError> {
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

    pub(super) fn tally_now(&self) -> Result<Tally, StoreError> {
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

    pub(super) fn by_deadline_now(
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
}
