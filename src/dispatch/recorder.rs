//! The recorder: one writer of what attempts, deliveries and re-checks
//! come to, a batch of changes (with the documents stored beside them) per
//! store transaction.

use std::sync::Arc;

use super::Dispatcher;
use crate::store::{QueueStore, RequestRecord, StoreError};

/// What an attempt or a delivery came to, for the recorder: the change
/// to its request, and the document to store with it.
pub(super) struct Recorded {
    id: String,
    change: Box<dyn Fn(&mut RequestRecord) -> bool + Send + Sync>,
    document: Option<Vec<u8>>,
    /// Other documents stored in the same write (each id, sealed): the
    /// CRL that confirmed the document's signer, the document's
    /// attachments.
    extra: Vec<(String, Vec<u8>)>,
    done: tokio::sync::oneshot::Sender<Result<Option<RequestRecord>, StoreError>>,
}

/// Records what is waiting in one store transaction (`update_many`), then
/// the next: while one batch is written, the next gathers, so many
/// attempts share the cost of one write, as accepts share one flush.
pub(super) async fn recorder(
    store: Arc<dyn QueueStore>,
    mut rx: tokio::sync::mpsc::Receiver<Recorded>,
) {
    let mut held: Option<Recorded> = None;
    // One change per request in a batch: a second waits for the next.
    while let Some(batch) =
        crate::sync::gather(&mut rx, &mut held, 256, |o: &Recorded| Some(o.id.clone())).await
    {
        let result = {
            let at: std::collections::HashMap<&str, usize> = batch
                .iter()
                .enumerate()
                .map(|(i, o)| (o.id.as_str(), i))
                .collect();
            let ids: Vec<&str> = batch.iter().map(|o| o.id.as_str()).collect();
            let docs: Vec<(&str, &[u8])> = batch
                .iter()
                .filter_map(|o| o.document.as_deref().map(|d| (o.id.as_str(), d)))
                .chain(
                    batch
                        .iter()
                        .flat_map(|o| o.extra.iter().map(|(id, d)| (id.as_str(), d.as_slice()))),
                )
                .collect();
            let f = |r: &mut RequestRecord| {
                at.get(r.id.as_str()).is_some_and(|&i| (batch[i].change)(r))
            };
            store.update_many(&ids, &docs, &f).await
        };
        match result {
            Ok(records) => {
                for (o, r) in batch.into_iter().zip(records) {
                    let _ = o.done.send(Ok(r));
                }
            }
            Err(e) => {
                for o in batch {
                    let _ = o.done.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Dispatcher {
    /// Records a change through the recorder (batched with others).
    pub(super) async fn record(
        &self,
        id: &str,
        document: Option<Vec<u8>>,
        change: impl Fn(&mut RequestRecord) -> bool + Send + Sync + 'static,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.record_with(id, document, Vec::new(), change).await
    }

    /// [`Dispatcher::record`], keeping other documents (each id, sealed:
    /// a CRL, attachments) in the same write.
    pub(super) async fn record_with(
        &self,
        id: &str,
        document: Option<Vec<u8>>,
        extra: Vec<(String, Vec<u8>)>,
        change: impl Fn(&mut RequestRecord) -> bool + Send + Sync + 'static,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.outcomes
            .send(Recorded {
                id: id.to_owned(),
                change: Box::new(change),
                document,
                extra,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}
