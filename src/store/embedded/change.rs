//! Changing records on sled: the caller's change made on the records as
//! read, then written in one transaction with their indexes, events,
//! audit entries and documents, each only if no other writer came first
//! (else read and changed again); and removal, with the documents beside.

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::chain::chain_in;
use super::events::put_event;
use super::*;
use crate::sync::read;

/// The outcome of a conditional write.
pub(super) enum Written {
    Done(Box<RequestRecord>),
    /// Another writer changed the record since it was read.
    Changed,
}

/// What a change came to, for each record asked.
pub(super) enum Applied {
    Done(Box<RequestRecord>),
    /// The change said no.
    Declined,
    /// No such record.
    Missing,
}

impl SledStore {
    /// Changes records, and stores documents beside them, in one
    /// transaction. `f` is the caller's and may borrow from it, so it runs
    /// here, on the records as read; the write, on a blocking thread, takes
    /// place for each record only if it is still what `f` saw (else it is
    /// read and changed again: another writer came first).
    pub(super) async fn change_many(
        &self,
        ids: &[&str],
        documents: &[(&str, &[u8])],
        f: &Change<'_>,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut out: Vec<Applied> = ids.iter().map(|_| Applied::Declined).collect();
        let mut todo: Vec<usize> = (0..ids.len()).collect();
        // A request's document goes with its record's write, and only if
        // that write takes place (a late answer, declined, must not replace
        // the document its record names), its attachments with it; the
        // others (CRLs) go at once.
        let (own, mut docs): (Vec<_>, Vec<_>) = documents
            .iter()
            .map(|(id, b)| (id.to_string(), b.to_vec()))
            .partition(|(id, _)| ids.contains(&document_owner(id)));
        while !todo.is_empty() || !docs.is_empty() {
            let keys: Vec<String> = todo.iter().map(|&i| ids[i].to_owned()).collect();
            let seen = self.blocking(keys, |c, keys| c.get_many_now(&keys)).await?;
            let mut writes = Vec::new();
            let mut slots = Vec::new();
            for (&i, seen) in todo.iter().zip(seen) {
                let Some(seen) = seen else {
                    out[i] = Applied::Missing;
                    continue;
                };
                let old = decode(ids[i].as_bytes(), &seen)?;
                let mut new = old.clone();
                if !f(&mut new) {
                    out[i] = Applied::Declined;
                    continue;
                }
                writes.push(Write {
                    id: ids[i].to_owned(),
                    seen: seen.to_vec(),
                    old,
                    new,
                });
                slots.push(i);
            }
            let mut docs = std::mem::take(&mut docs);
            docs.extend(
                own.iter()
                    .filter(|(id, _)| writes.iter().any(|w| w.id == document_owner(id)))
                    .cloned(),
            );
            let written = self
                .blocking((writes, docs), |c, (writes, docs)| {
                    c.update_batch_now(writes, docs)
                })
                .await?;
            todo.clear();
            for (i, w) in slots.into_iter().zip(written) {
                match w {
                    Written::Done(r) => out[i] = Applied::Done(r),
                    Written::Changed => todo.push(i),
                }
            }
        }
        Ok(out)
    }
}

/// One record to write: `new` over `old` if the record is still `seen`.
pub(super) struct Write {
    pub id: String,
    /// The bytes `old` was read from.
    pub seen: Vec<u8>,
    /// The record as read (decoded once, outside the transaction: if the
    /// stored bytes are still `seen`, this is what they decode to).
    pub old: RequestRecord,
    pub new: RequestRecord,
}

impl Core {
    /// Writes each `new` over its record if that is still `seen` (the
    /// bytes the caller's change was made from), with their indexes,
    /// events and audit entries, and the documents beside them (one under
    /// a record's id only if that record is written), in one transaction:
    /// a record changed (or removed) by another writer since it was read is
    /// left alone (`Changed`).
    pub(super) fn update_batch_now(
        &self,
        writes: Vec<Write>,
        documents: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Written>, StoreError> {
        self.check_room()?;
        let events = read(&self.events).clone();
        let t = &self.t;
        let rule = t.audit_rule();
        let mut head = t.head();
        let res = (
            &t.requests,
            &t.due,
            &t.outbox,
            &t.outbox_ids,
            &t.audit,
            &t.audit_subject,
            &t.by_case,
            &t.by_state,
            &t.attention,
            &t.deadlines,
            &t.counts,
            &t.documents,
        )
            .transaction(
                |(
                    req,
                    due,
                    outbox,
                    ids,
                    audit,
                    audit_subject,
                    by_case,
                    by_state,
                    attention,
                    deadlines,
                    counts,
                    docs,
                )| {
                    let ix = index::Ix {
                        due,
                        by_case,
                        by_state,
                        attention,
                        deadlines,
                        counts,
                    };
                    // Rebuilt on every run: sled may run this closure again.
                    let mut deltas = index::Deltas::default();
                    let mut drafts = Vec::new();
                    let mut raised = 0;
                    let mut out = Vec::with_capacity(writes.len());
                    for Write { id, seen, old, new } in &writes {
                        let Some(cur) = req.get(id.as_bytes())? else {
                            // Removed meanwhile (retention): nothing to change.
                            out.push(None);
                            continue;
                        };
                        if cur != seen.as_slice() {
                            out.push(None);
                            continue;
                        }
                        index::change(&ix, &mut deltas, Some(old), Some(new))?;
                        req.insert(id.as_bytes(), encode(new))?;
                        if let Some(ev) = &events {
                            for e in (ev.rule)(old, new) {
                                raised += put_event(outbox, ids, &e)?;
                            }
                        }
                        if let Some(r) = &rule {
                            drafts.extend(r(Some(old), new));
                        }
                        out.push(Some(new.clone()));
                    }
                    // A record's document only if its write took place.
                    for (id, bytes) in &documents {
                        let lost = writes
                            .iter()
                            .zip(&out)
                            .any(|(w, r)| &w.id == id && r.is_none());
                        if !lost {
                            docs.insert(id.as_bytes(), bytes.as_slice())?;
                        }
                    }
                    deltas.apply(ix.counts)?;
                    let new_head = chain_in(audit, audit_subject, &head, drafts)?;
                    Ok((out, raised, new_head))
                },
            );
        let res = res.map(|(out, raised, new_head)| {
            *head = new_head;
            (out, raised)
        });
        drop(head);
        match res {
            Ok((out, raised)) => {
                if raised > 0 {
                    if let Some(ev) = &events {
                        ev.notify.notify_one();
                    }
                }
                Ok(out
                    .into_iter()
                    .map(|r| r.map_or(Written::Changed, |r| Written::Done(Box::new(r))))
                    .collect())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    pub(super) fn remove_now(&self, id: &str) -> Result<(), StoreError> {
        self.check_room()?;
        let t = &self.t;
        let res = (
            &t.requests,
            &t.due,
            &t.by_case,
            &t.documents,
            &t.by_state,
            &t.attention,
            &t.deadlines,
            &t.counts,
        )
            .transaction(
                |(req, due, by_case, docs, by_state, attention, deadlines, counts)| {
                    let ix = index::Ix {
                        due,
                        by_case,
                        by_state,
                        attention,
                        deadlines,
                        counts,
                    };
                    if let Some(cur) = req.remove(id.as_bytes())? {
                        let r = decode(id.as_bytes(), &cur)
                            .map_err(ConflictableTransactionError::Abort)?;
                        let mut deltas = index::Deltas::default();
                        index::change(&ix, &mut deltas, Some(&r), None)?;
                        deltas.apply(ix.counts)?;
                        docs.remove(id.as_bytes())?;
                        // And every document of its own beside it
                        // (`{id}.*`: attachments, a signed document).
                        for d in r.documents_beside() {
                            docs.remove(d.as_bytes())?;
                        }
                    }
                    Ok(())
                },
            );
        match res {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}
