//! Delivering fetched documents: to the case folder through one writer
//! that batches them (two file-system syncs per batch), or marked
//! delivered for clients that take them from the API; a failed delivery
//! recorded with when to try again.

use std::sync::Arc;

use rand::Rng;

use super::{Dispatcher, Fetched};
use crate::delivery::CaseFolders;
use crate::lifecycle::{self, Event};
use crate::store::{RequestRecord, State, StoreError};
use crate::sync::lock;

/// A document for its case folder, and who waits for the outcome.
pub(super) struct FolderJob {
    rec: RequestRecord,
    doc: Fetched,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

/// Writes what is waiting as one batch, then the next.
pub(super) async fn folder_writer(
    cases: CaseFolders,
    mut rx: tokio::sync::mpsc::Receiver<FolderJob>,
) {
    let mut held = None;
    while let Some(batch) = crate::sync::gather(&mut rx, &mut held, 128, |_| None::<()>).await {
        let cases = cases.clone();
        let (jobs, done): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|j| ((j.rec, j.doc), j.done)).unzip();
        let results = tokio::task::spawn_blocking(move || {
            let atts: Vec<Vec<&[u8]>> = jobs
                .iter()
                .map(|(_, d)| d.attachments.iter().map(Vec::as_slice).collect())
                .collect();
            let refs: Vec<crate::delivery::Delivery<'_>> = jobs
                .iter()
                .zip(&atts)
                .map(|((r, d), a)| crate::delivery::Delivery {
                    record: r,
                    document: &d.document,
                    attachments: a,
                })
                .collect();
            cases.deliver_batch(&refs)
        })
        .await;
        match results {
            Ok(results) => {
                for (tx, r) in done.into_iter().zip(results) {
                    let _ = tx.send(r.map(drop));
                }
            }
            Err(e) => {
                for tx in done {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    }
}

impl Dispatcher {
    /// Records a failed delivery: its error, and when to try again, or
    /// that it is given up (a delivery that fails the same way every time
    /// must not spin unseen).
    async fn delivery_failed(&self, id: &str, e: &StoreError) {
        let now = self.store.clock_ms();
        let error = crate::ids::redact_text(&e.to_string());
        let policy = self.policy.clone();
        let jitter: f64 = rand::rng().random();
        let why = error.clone();
        let recorded = self
            .record(id, None, move |r| {
                let ev = Event::DeliveryFailed {
                    error: &why,
                    retry: &policy,
                    jitter,
                };
                lifecycle::apply(r, &ev, now)
            })
            .await;
        match recorded {
            Ok(Some(r)) if r.state == State::Dead => {
                crate::metrics::delivery_failed(true);
                tracing::error!(request = %id, error = %error, failures = r.delivery_failures, "delivery failed again; given up, the request is dead until an operator retries it");
            }
            Ok(Some(r)) => {
                crate::metrics::delivery_failed(false);
                tracing::warn!(request = %id, error = %error, failures = r.delivery_failures, "delivery failed; will retry");
            }
            // Its lease expires and it is tried again.
            Ok(None) => {
                tracing::warn!(request = %id, error = %error, "delivery failed; will retry")
            }
            Err(re) => {
                tracing::warn!(request = %id, error = %error, record = %re, "delivery failed and could not be recorded; will retry")
            }
        }
    }

    /// A stored document (or attachment) in clear.
    async fn stored(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        let sealed = self
            .store
            .document(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("document {id}")))?;
        self.cipher
            .open(id, &sealed)
            .map_err(|e| StoreError::Io(e.to_string()))
    }

    async fn mark_delivered(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let now = self.store.clock_ms();
        self.record(id, None, move |r| {
            lifecycle::apply(r, &Event::Delivered, now)
        })
        .await
    }

    /// Delivers a fetched document: `fresh` is the document as the attempt
    /// that fetched it just verified (then the record is as that attempt
    /// left it); without it, the record and the document are read again
    /// (a delivery leased from the due index, after a restart or a failed
    /// delivery).
    pub(super) async fn deliver(self: Arc<Self>, rec: RequestRecord, fresh: Option<Fetched>) {
        let id = rec.id.to_string();
        let mode = self
            .modes
            .get(rec.client.as_str())
            .copied()
            .unwrap_or_default();
        let result = async {
            if fresh.is_none()
                && self
                    .store
                    .get(&id)
                    .await?
                    .is_none_or(|r| r.state != State::Fetched)
            {
                // Cancelled since it was leased: its document stays undelivered.
                return Ok(None);
            }
            if mode != crate::config::DeliveryMode::Folder {
                // The document is in the store for the API; a webhook
                // client hears of it from the event this change raises.
                return self.mark_delivered(&id).await;
            }
            let doc = match fresh {
                Some(doc) => doc,
                None => Fetched {
                    document: self.stored(&id).await?,
                    // A redelivery (after a crash, a failed delivery)
                    // takes them from the store, as the record lists them.
                    attachments: {
                        let mut all = Vec::with_capacity(rec.attachments.len());
                        for a in &rec.attachments {
                            all.push(self.stored(&a.document_id).await?);
                        }
                        all
                    },
                },
            };
            let (done, outcome) = tokio::sync::oneshot::channel();
            let io = |e: &dyn std::fmt::Display| StoreError::Io(e.to_string());
            self.folder_jobs
                .send(FolderJob {
                    rec: rec.clone(),
                    doc,
                    done,
                })
                .await
                .map_err(|e| io(&e))?;
            outcome.await.map_err(|e| io(&e))?.map_err(|e| io(&e))?;
            self.mark_delivered(&id).await
        }
        .await;
        lock(&self.busy).remove(&id);
        match result {
            Ok(Some(_)) => {
                crate::metrics::delivered(match mode {
                    crate::config::DeliveryMode::Folder => "folder",
                    crate::config::DeliveryMode::Webhook => "webhook",
                    crate::config::DeliveryMode::Pull => "pull",
                });
                tracing::info!(request = %id, case = %rec.case, "delivered")
            }
            Ok(None) => tracing::info!(request = %id, "not delivered: cancelled meanwhile"),
            Err(e) => self.delivery_failed(&id, &e).await,
        }
    }
}
