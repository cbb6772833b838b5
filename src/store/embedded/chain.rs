//! The audit trail on sled: drafts chained after the head (held while
//! they are chained and written, so that writers take turns) in the
//! transaction of the change they record, the head found at start, and
//! the trail read back by sequence and by subject.

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::events::seq_of;
use super::*;
use crate::sync::{lock, read};

impl Trees {
    pub(super) fn audit_rule(&self) -> Option<crate::store::trail::AuditRule> {
        read(&self.audit_rule).clone()
    }

    pub(super) fn head(&self) -> std::sync::MutexGuard<'_, crate::store::trail::Head> {
        lock(&self.audit_head)
    }
}

/// Writes one chained entry and its subject index keys.
pub(super) fn put_entry(
    audit: &sled::transaction::TransactionalTree,
    by_subject: &sled::transaction::TransactionalTree,
    e: &crate::store::trail::Entry,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    let v = serde_json::to_vec(e)
        .map_err(|x| ConflictableTransactionError::Abort(StoreError::Io(x.to_string())))?;
    audit.insert(&e.seq.to_be_bytes(), v)?;
    for s in &e.draft.subject {
        let mut k = s.as_bytes().to_vec();
        k.extend_from_slice(&e.seq.to_be_bytes());
        by_subject.insert(k, &[])?;
    }
    Ok(())
}

/// Chains drafts after `head` and writes them; returns the new head.
pub(super) fn chain_in(
    audit: &sled::transaction::TransactionalTree,
    by_subject: &sled::transaction::TransactionalTree,
    head: &crate::store::trail::Head,
    drafts: Vec<crate::store::trail::Draft>,
) -> Result<crate::store::trail::Head, ConflictableTransactionError<StoreError>> {
    let mut h = head.clone();
    for d in drafts {
        let e = crate::store::trail::Entry::chained(d, h.seq + 1, &h.hash);
        put_entry(audit, by_subject, &e)?;
        h = crate::store::trail::Head {
            seq: e.seq,
            hash: e.hash,
        };
    }
    Ok(h)
}

/// Finds the chain's head when the store is opened: its newest entry.
pub(super) fn load_head(t: &Trees) -> Result<(), String> {
    if let Some((k, v)) = t.audit.last().map_err(|e| e.to_string())? {
        let e: crate::store::trail::Entry = serde_json::from_slice(&v).map_err(|e| {
            format!("the newest audit entry is unreadable ({e}); run `jumgw audit verify`")
        })?;
        *t.head() = crate::store::trail::Head {
            seq: seq_of(&k).map_err(|e| e.to_string())?,
            hash: e.hash,
        };
    }
    Ok(())
}

impl Core {
    pub(super) fn audit_append_now(
        &self,
        drafts: Vec<crate::store::trail::Draft>,
    ) -> Result<(), StoreError> {
        self.check_room()?;
        let mut head = self.t.head();
        let res = (&self.t.audit, &self.t.audit_subject)
            .transaction(|(audit, by_subject)| chain_in(audit, by_subject, &head, drafts.clone()));
        match res {
            Ok(h) => {
                *head = h;
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn audit_scan_now(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::store::trail::Entry, String>)>, StoreError> {
        let start = after_seq.saturating_add(1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.t.audit.range(start..).take(limit) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            out.push((seq, serde_json::from_slice(&v).map_err(|e| e.to_string())));
        }
        Ok(out)
    }

    pub(super) fn audit_by_subject_now(
        &self,
        hash: &str,
    ) -> Result<Vec<crate::store::trail::Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.audit_subject.scan_prefix(hash.as_bytes()) {
            let (k, _) = item?;
            let seq = &k[k.len().saturating_sub(8)..];
            if let Some(v) = self.t.audit.get(seq)? {
                out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    id: format!("audit entry {}", seq_of(seq).unwrap_or(0)),
                    detail: e.to_string(),
                })?);
            }
        }
        Ok(out)
    }

    pub(super) fn audit_restore_now(
        &self,
        entries: Vec<crate::store::trail::Entry>,
    ) -> Result<(), StoreError> {
        self.check_room()?;
        let mut head = self.t.head();
        let res = (&self.t.audit, &self.t.audit_subject).transaction(|(audit, by_subject)| {
            let mut h = head.clone();
            for e in &entries {
                if e.seq <= h.seq {
                    return Err(ConflictableTransactionError::Abort(StoreError::Corrupt {
                        id: format!("audit entry {}", e.seq),
                        detail: format!("the trail is already at entry {}", h.seq),
                    }));
                }
                put_entry(audit, by_subject, e)?;
                h = crate::store::trail::Head {
                    seq: e.seq,
                    hash: e.hash.clone(),
                };
            }
            Ok(h)
        });
        match res {
            Ok(h) => {
                *head = h;
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }
}
