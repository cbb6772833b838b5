//! The group committer: one task takes every accept (and flush) that is
//! waiting, writes the accepts with their idempotency keys, indexes and
//! audit entries in one transaction, flushes once, then answers them all.

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::{mpsc, oneshot};

use super::chain::chain_in;
use super::idempotency::idem_key;
use super::*;
use crate::sync::lock;

pub(super) type Batch = (
    Vec<RequestRecord>,
    Option<IdemKey>,
    oneshot::Sender<Result<Enqueued, StoreError>>,
);

impl SledStore {
    /// How long a group-commit flush may take before its accepts fail.
    pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    /// Stores new requests through the committer: when this returns they
    /// survive a crash.
    pub(super) async fn accept(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> Result<Enqueued, StoreError> {
        self.check_space()?;
        let (tx, rx) = oneshot::channel();
        let committer = lock(&self.committer).clone();
        let committer = committer.ok_or(StoreError::Closed)?;
        committer
            .send((records, key, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Flushes through the committer, as an empty batch: sled 0.34 can
    /// hang when several tasks flush at once, so one task does every
    /// flush (sled's own, once the committer is gone).
    pub(super) async fn flush_through(&self) -> Result<(), StoreError> {
        let committer = lock(&self.committer).clone();
        let Some(committer) = committer else {
            return self
                .t
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(StoreError::from);
        };
        let (tx, rx) = oneshot::channel();
        committer
            .send((Vec::new(), None, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?.map(|_| ())
    }
}

/// Group commit: takes every batch that is waiting, writes them in one
/// transaction, flushes once, then answers them all.
pub(super) async fn commit_loop(t: Trees, mut rx: mpsc::Receiver<Batch>) {
    let mut held = None;
    while let Some(mut pending) =
        crate::sync::gather(&mut rx, &mut held, 4096, |_| None::<()>).await
    {
        let now = now_ms();
        let rule = t.audit_rule();
        // The transaction on a blocking thread, with the batch it writes.
        let t2 = t.clone();
        let batch = std::mem::take(&mut pending);
        let done = tokio::task::spawn_blocking(move || {
            let t = t2;
            let pending = batch;
            let res = {
                let mut head = t.head();
                let res = (
                    &t.requests,
                    &t.due,
                    &t.by_case,
                    &t.idempotency,
                    &t.audit,
                    &t.audit_subject,
                    &t.by_state,
                    &t.attention,
                    &t.deadlines,
                    &t.counts,
                )
                    .transaction(
                        |(
                            req,
                            due,
                            by_case,
                            idem,
                            audit,
                            audit_subject,
                            by_state,
                            attention,
                            deadlines,
                            counts,
                        )| {
                            let ix = index::Ix {
                                due,
                                by_case,
                                by_state,
                                attention,
                                deadlines,
                                counts,
                            };
                            let mut drafts = Vec::new();
                            // Rebuilt on every run: sled may run this closure again.
                            let mut outcomes = Vec::with_capacity(pending.len());
                            let mut deltas = index::Deltas::default();
                            for (records, key, _) in &pending {
                                if let Some(k) = key {
                                    let kb = idem_key(&k.client, &k.key);
                                    // Read-your-writes: a duplicate within this batch sees the first.
                                    if let Some(v) = idem.get(&kb)? {
                                        let e: IdemEntry =
                                            serde_json::from_slice(&v).map_err(|e| {
                                                ConflictableTransactionError::Abort(
                                                    StoreError::Corrupt {
                                                        id: k.key.clone(),
                                                        detail: e.to_string(),
                                                    },
                                                )
                                            })?;
                                        outcomes.push(Enqueued::Existing(e));
                                        continue;
                                    }
                                    let e = IdemEntry {
                                        request_ids: records
                                            .iter()
                                            .map(|r| r.id.to_string())
                                            .collect(),
                                        body_hash: k.body_hash.clone(),
                                        created_ms: now,
                                    };
                                    idem.insert(kb, serde_json::to_vec(&e).unwrap_or_default())?;
                                }
                                for r in records {
                                    let old = req
                                        .insert(r.id.as_bytes(), encode(r))?
                                        .map(|v| decode(r.id.as_bytes(), &v))
                                        .transpose()
                                        .map_err(ConflictableTransactionError::Abort)?;
                                    index::change(&ix, &mut deltas, old.as_ref(), Some(r))?;
                                    if let Some(rule) = &rule {
                                        drafts.extend(rule(None, r));
                                    }
                                }
                                outcomes.push(Enqueued::Stored);
                            }
                            deltas.apply(ix.counts)?;
                            let new_head = chain_in(audit, audit_subject, &head, drafts)?;
                            Ok::<_, ConflictableTransactionError<StoreError>>((outcomes, new_head))
                        },
                    )
                    .map_err(|e: TransactionError<StoreError>| match e {
                        TransactionError::Abort(e) => e,
                        TransactionError::Storage(e) => StoreError::from(e),
                    });
                res.map(|(outcomes, new_head)| {
                    *head = new_head;
                    outcomes
                })
            };
            (pending, res)
        })
        .await;
        let res = match done {
            Ok((batch, res)) => {
                pending = batch;
                res
            }
            // The batch went with the failed task; its callers see their
            // replies dropped, which they report as a closed store.
            Err(e) => Err(StoreError::Io(format!("the committer failed: {e}"))),
        };
        let res = match res {
            Ok(outcomes) => {
                match tokio::time::timeout(SledStore::FLUSH_TIMEOUT, t.db.flush_async()).await {
                    Ok(Ok(_)) => Ok(outcomes),
                    Ok(Err(e)) => Err(StoreError::from(e)),
                    Err(_) => Err(StoreError::Io(
                        "the disk did not complete a flush in time".into(),
                    )),
                }
            }
            Err(e) => Err(e),
        };
        match res {
            Ok(outcomes) => {
                for ((_, _, reply), o) in pending.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(o));
                }
            }
            Err(e) => {
                for (_, _, reply) in pending.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
