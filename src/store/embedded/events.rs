//! Webhook events on sled: the `outbox` tree of waiting events by
//! sequence number and `outbox_ids` of every id written (an id written
//! twice keeps the first), the sender's reads and its bookkeeping.

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::*;
use crate::sync::read;

pub(super) fn seq_of(k: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(k)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            id: "outbox".into(),
            detail: "a key is not a sequence number".into(),
        })
}

/// Writes an event unless its id was written before; 1 if written.
pub(super) fn put_event(
    outbox: &sled::transaction::TransactionalTree,
    ids: &sled::transaction::TransactionalTree,
    e: &OutEvent,
) -> Result<usize, ConflictableTransactionError<StoreError>> {
    if ids.get(e.id.as_bytes())?.is_some() {
        return Ok(0);
    }
    let seq = outbox.generate_id()?;
    let mut v = seq.to_be_bytes().to_vec();
    v.extend_from_slice(&e.created_ms.to_be_bytes());
    ids.insert(e.id.as_bytes(), v)?;
    outbox.insert(
        &seq.to_be_bytes(),
        serde_json::to_vec(e)
            .map_err(|x| ConflictableTransactionError::Abort(StoreError::Io(x.to_string())))?,
    )?;
    Ok(1)
}

impl Core {
    pub(super) fn emit_now(&self, events: Vec<OutEvent>) -> Result<usize, StoreError> {
        self.check_room()?;
        let res = (&self.t.outbox, &self.t.outbox_ids).transaction(|(outbox, ids)| {
            let mut n = 0;
            for e in &events {
                n += put_event(outbox, ids, e)?;
            }
            Ok(n)
        });
        let n = match res {
            Ok(n) => n,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        };
        if n > 0 {
            if let Some(ev) = &*read(&self.events) {
                ev.notify.notify_one();
            }
        }
        Ok(n)
    }

    pub(super) fn outbox_now(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.outbox.iter().take(limit) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            out.push((seq, decode_event(seq, &v)?));
        }
        Ok(out)
    }

    pub(super) fn event_now(&self, seq: u64) -> Result<Option<OutEvent>, StoreError> {
        self.t
            .outbox
            .get(seq.to_be_bytes())?
            .map(|v| decode_event(seq, &v))
            .transpose()
    }

    pub(super) fn outbox_retry_now(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError> {
        self.check_room()?;
        let v = serde_json::to_vec(event).map_err(|e| StoreError::Io(e.to_string()))?;
        // Only if it is still waiting: never resurrect a sent event.
        let Some(cur) = self.t.outbox.get(seq.to_be_bytes())? else {
            return Ok(());
        };
        let _ = self
            .t
            .outbox
            .compare_and_swap(seq.to_be_bytes(), Some(cur), Some(v))?;
        Ok(())
    }

    pub(super) fn outbox_done_now(&self, seq: u64) -> Result<(), StoreError> {
        self.check_room()?;
        self.t.outbox.remove(seq.to_be_bytes())?;
        Ok(())
    }

    pub(super) fn purge_event_ids_now(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.check_room()?;
        let mut n = 0;
        for item in self.t.outbox_ids.iter() {
            let (k, v) = item?;
            if v.len() != 16 {
                self.t.outbox_ids.remove(k)?;
                continue;
            }
            let seq = seq_of(&v[..8])?;
            let created = seq_of(&v[8..])?;
            if created < before_ms && !self.t.outbox.contains_key(seq.to_be_bytes())? {
                self.t.outbox_ids.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
