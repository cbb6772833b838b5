//! The store's async traits over the sync core: each call's sled work runs
//! on one of tokio's blocking threads ([`SledStore::blocking`], the one
//! place that spawns it and maps what goes wrong there), accepts and
//! flushes go through the group committer, changes through
//! [`SledStore::change_many`].

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use super::change::Applied;
use super::*;
use crate::store::trail::{AuditRule, Draft, Entry, Head};
use crate::sync::write;

impl SledStore {
    /// Runs `f` on the sync core on a blocking thread, with `args` (the
    /// caller's arguments, owned) moved there, so that a transaction
    /// waiting on sled's lock or on a page from disk never holds up the
    /// runtime's workers. What sled cannot read (an error or one of its
    /// panics) is noted in the store's health before the caller gets it.
    pub(super) fn blocking<A, T>(
        &self,
        args: A,
        f: impl FnOnce(&Core, A) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        A: Send + 'static,
        T: Send + 'static,
    {
        let core: Arc<Core> = self.core.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&core, args)))
                    .unwrap_or_else(|p| {
                        Err(StoreError::Corrupt {
                            id: "(a page)".into(),
                            detail: format!("sled failed reading it: {}", check::panic_text(&*p)),
                        })
                    });
                if let Err(e @ StoreError::Corrupt { .. }) = &r {
                    core.health.note(e);
                }
                r
            })
            .await
            .map_err(|e| StoreError::Io(format!("a store task failed: {e}")))?
        }
    }
}

#[async_trait]
impl Requests for SledStore {
    async fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<IdemKey>,
    ) -> Result<Enqueued, StoreError> {
        self.accept(records, key).await
    }

    async fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.blocking(id.to_owned(), |c, id| c.get_now(&id)).await
    }

    async fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
        self.blocking(case.to_owned(), |c, case| c.by_case_now(&case))
            .await
    }

    async fn evidence_due(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.blocking((), move |c, ()| c.evidence_due_now(now_ms, limit))
            .await
    }

    async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.blocking((), move |c, ()| c.due_now(now_ms, limit))
            .await
    }

    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        self.blocking((), |c, ()| c.next_due_now()).await
    }

    async fn update(&self, id: &str, f: &Change<'_>) -> Result<Option<RequestRecord>, StoreError> {
        match self.change_many(&[id], &[], f).await?.pop() {
            Some(Applied::Missing) | None => Err(StoreError::NotFound(id.to_owned())),
            Some(Applied::Declined) => Ok(None),
            Some(Applied::Done(r)) => Ok(Some(*r)),
        }
    }

    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        let keys = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        let raw = self.blocking(keys, |c, keys| c.get_many_now(&keys)).await?;
        raw.iter()
            .zip(ids)
            .map(|(v, id)| {
                v.as_ref()
                    .map(|v| self.decode(id.as_bytes(), v))
                    .transpose()
            })
            .collect()
    }

    async fn update_many(
        &self,
        ids: &[&str],
        documents: &[(&str, &[u8])],
        f: &Change<'_>,
    ) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        Ok(self
            .change_many(ids, documents, f)
            .await?
            .into_iter()
            .map(|c| match c {
                Applied::Done(r) => Some(*r),
                Applied::Declined | Applied::Missing => None,
            })
            .collect())
    }

    async fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.blocking(after.map(str::to_owned), move |c, after| {
            c.scan_now(after.as_deref(), limit)
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.blocking(id.to_owned(), |c, id| c.remove_now(&id))
            .await
    }

    async fn list(&self, q: &Listing) -> Result<Vec<RequestRecord>, StoreError> {
        self.blocking(q.clone(), |c, q| c.list_now(&q)).await
    }

    async fn count(&self, sel: &Selector) -> Result<u64, StoreError> {
        self.blocking(sel.clone(), |c, sel| c.count_now(&sel)).await
    }

    async fn tally(&self) -> Result<Tally, StoreError> {
        self.blocking((), |c, ()| c.tally_now()).await
    }

    async fn by_deadline(
        &self,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.blocking((), move |c, ()| c.by_deadline_now(until_ms, limit))
            .await
    }

    fn records_read(&self) -> u64 {
        self.decoded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl Documents for SledStore {
    async fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.blocking((id.to_owned(), bytes.to_vec()), |c, (id, bytes)| {
            c.put_document_now(&id, &bytes)
        })
        .await
    }

    async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blocking(id.to_owned(), |c, id| c.document_now(&id))
            .await
    }
}

#[async_trait]
impl Idempotency for SledStore {
    async fn idempotency(&self, client: &str, key: &str) -> Result<Option<IdemEntry>, StoreError> {
        self.blocking((client.to_owned(), key.to_owned()), |c, (client, key)| {
            c.idempotency_now(&client, &key)
        })
        .await
    }

    async fn purge_idempotency(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.blocking(before_ms, |c, before| c.purge_idempotency_now(before))
            .await
    }
}

#[async_trait]
impl AuditTrail for SledStore {
    fn set_audit_rule(&self, rule: AuditRule) {
        *write(&self.t.audit_rule) = Some(rule);
    }

    async fn audit_append(&self, drafts: Vec<Draft>) -> Result<(), StoreError> {
        self.blocking(drafts, |c, drafts| c.audit_append_now(drafts))
            .await
    }

    async fn audit_scan(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<Entry, String>)>, StoreError> {
        self.blocking((), move |c, ()| c.audit_scan_now(after_seq, limit))
            .await
    }

    async fn audit_by_subject(&self, hash: &str) -> Result<Vec<Entry>, StoreError> {
        self.blocking(hash.to_owned(), |c, hash| c.audit_by_subject_now(&hash))
            .await
    }

    async fn audit_head(&self) -> Result<Head, StoreError> {
        Ok(self.t.head().clone())
    }

    async fn audit_restore(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        self.blocking(entries, |c, entries| c.audit_restore_now(entries))
            .await
    }
}

#[async_trait]
impl Outbox for SledStore {
    fn set_event_rule(&self, rule: EventRule) {
        *write(&self.events) = Some(rule);
    }

    async fn emit(&self, events: Vec<OutEvent>) -> Result<usize, StoreError> {
        self.blocking(events, |c, events| c.emit_now(events)).await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError> {
        self.blocking(limit, |c, limit| c.outbox_now(limit)).await
    }

    async fn event(&self, seq: u64) -> Result<Option<OutEvent>, StoreError> {
        self.blocking(seq, |c, seq| c.event_now(seq)).await
    }

    async fn outbox_retry(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError> {
        self.blocking(event.clone(), move |c, event| {
            c.outbox_retry_now(seq, &event)
        })
        .await
    }

    async fn outbox_done(&self, seq: u64) -> Result<(), StoreError> {
        self.blocking(seq, |c, seq| c.outbox_done_now(seq)).await
    }

    async fn purge_event_ids(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.blocking(before_ms, |c, before| c.purge_event_ids_now(before))
            .await
    }
}

/// One process owns a sled store: its limits, pauses and clock are its own.
impl Coordination for SledStore {}

#[async_trait]
impl Upkeep for SledStore {
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.blocking((), |c, ()| c.size_on_disk_now()).await
    }

    fn read_faults(&self) -> Option<ReadFaults> {
        self.health.faults()
    }

    async fn check(&self) -> Result<crate::store::integrity::Report, StoreError> {
        self.blocking((), |c, ()| Ok(check::check(&c.t))).await
    }

    async fn writable(&self) -> bool {
        self.blocking((), |c, ()| Ok(c.writable_now()))
            .await
            .unwrap_or(false)
    }

    async fn close(&self) -> Result<(), StoreError> {
        SledStore::close(self).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flush_through().await
    }
}
