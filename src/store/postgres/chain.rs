//! The audit trail on a shared database: drafts written in each change's
//! transaction, chained after the commit by one writer at a time, and
//! read back (after chaining what is pending).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::conn::{Conn, Db, Pool, Tx};
use super::{ms, why, PgStore, Shared};
use crate::store::{AuditTrail, StoreError};
use crate::sync::write;

/// Writes audit drafts in the change's own transaction, to be chained
/// right after by [`chain_pending`]: so that no transaction holds the
/// chain's head through its commit, which made every audited change of
/// every instance wait for the one before (one disk flush each).
pub(super) async fn pend(
    t: &Tx<'_>,
    drafts: Vec<crate::store::trail::Draft>,
) -> Result<bool, tokio_postgres::Error> {
    match drafts.as_slice() {
        [] => {}
        [d] => {
            t.run(
                "INSERT INTO audit_pending (draft) VALUES ($1)",
                &[&serde_json::to_string(d).unwrap_or_default()],
            )
            .await?;
        }
        many => {
            // One statement; the serial ids follow the drafts' order.
            let texts: Vec<String> = many
                .iter()
                .map(|d| serde_json::to_string(d).unwrap_or_default())
                .collect();
            t.run(
                "INSERT INTO audit_pending (draft) \
                 SELECT d FROM unnest($1::text[]) WITH ORDINALITY AS x(d, n) ORDER BY n",
                &[&texts],
            )
            .await?;
        }
    }
    Ok(!drafts.is_empty())
}

/// Chains what is pending, in the order it was written, after the head;
/// one writer at a time (the head's row lock). Returns how many.
pub(super) async fn chain_pending(c: &mut Conn) -> Result<usize, tokio_postgres::Error> {
    let t = c.transaction().await?;
    let row = t
        .one(
            "SELECT seq, hash FROM audit_head WHERE one = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let rows = t
        .rows(
            "SELECT id, draft FROM audit_pending ORDER BY id LIMIT 5000",
            &[],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let (mut seq, mut hash): (i64, String) = (row.get(0), row.get(1));
    let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(r.get(0));
        let text: String = r.get(1);
        // A draft this program wrote; if it were unreadable, chaining it
        // as an empty entry keeps its place visible to `audit verify`.
        let d: crate::store::trail::Draft =
            serde_json::from_str(&text).unwrap_or_else(|e| crate::store::trail::Draft {
                action: "audit.unreadable".into(),
                outcome: e.to_string(),
                ..Default::default()
            });
        let e = crate::store::trail::Entry::chained(d, seq as u64 + 1, &hash);
        write_entry(&t, &e).await?;
        seq = e.seq as i64;
        hash = e.hash;
    }
    t.run("DELETE FROM audit_pending WHERE id = ANY($1)", &[&ids])
        .await?;
    t.run(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE one = 1",
        &[&seq, &hash],
    )
    .await?;
    t.commit().await?;
    Ok(rows.len())
}

/// The chainer: chains pending drafts soon after they are written (woken
/// by this instance's commits, and every 200 ms for other instances').
pub(super) async fn chainer(s: Arc<Shared>, pool: Pool) {
    while !s.stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = s.pending.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Ok(mut c) = pool.get().await else {
            continue;
        };
        loop {
            match chain_pending(&mut c).await {
                Ok(5000) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %why(&e), "cannot chain audit entries; will retry");
                    break;
                }
            }
        }
    }
}

pub(super) async fn write_entry(
    t: &Tx<'_>,
    e: &crate::store::trail::Entry,
) -> Result<(), tokio_postgres::Error> {
    t.run(
        "INSERT INTO audit (seq, entry) VALUES ($1, $2)",
        &[&ms(e.seq), &serde_json::to_string(e).unwrap_or_default()],
    )
    .await?;
    for s in &e.draft.subject {
        t.run(
            "INSERT INTO audit_subject (subject, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[s, &ms(e.seq)],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl AuditTrail for PgStore {
    fn set_audit_rule(&self, rule: crate::store::trail::AuditRule) {
        *write(&self.audit_rule) = Some(rule);
    }

    async fn audit_append(
        &self,
        drafts: Vec<crate::store::trail::Draft>,
    ) -> Result<(), StoreError> {
        self.tx(async |t| pend(t, drafts).await.map_err(|e| self.err(e)))
            .await?;
        // Chained before it returns, as on sled: the caller may read it.
        self.chain_now().await
    }

    async fn audit_scan(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Result<crate::store::trail::Entry, String>)>, StoreError> {
        self.chain_now().await?;
        self.with(async |c| {
            let rows = c
                .rows(
                    "SELECT seq, entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&ms(after_seq), &(limit as i64)],
                )
                .await
                .map_err(|e| self.err(e))?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let text: String = r.get(1);
                    (
                        r.get::<_, i64>(0).max(0) as u64,
                        serde_json::from_str(&text).map_err(|e| e.to_string()),
                    )
                })
                .collect())
        })
        .await
    }

    async fn audit_by_subject(
        &self,
        hash: &str,
    ) -> Result<Vec<crate::store::trail::Entry>, StoreError> {
        self.chain_now().await?;
        self.with(async |c| {
            let rows = c
                .rows(
                    "SELECT a.seq, a.entry FROM audit_subject s JOIN audit a ON a.seq = s.seq \
                     WHERE s.subject = $1 ORDER BY a.seq",
                    &[&hash],
                )
                .await
                .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|r| {
                    let text: String = r.get(1);
                    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                        id: format!("audit entry {}", r.get::<_, i64>(0)),
                        detail: e.to_string(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn audit_head(&self) -> Result<crate::store::trail::Head, StoreError> {
        self.chain_now().await?;
        self.with(async |c| {
            let row = c
                .one("SELECT seq, hash FROM audit_head WHERE one = 1", &[])
                .await
                .map_err(|e| self.err(e))?;
            Ok(crate::store::trail::Head {
                seq: row.get::<_, i64>(0).max(0) as u64,
                hash: row.get(1),
            })
        })
        .await
    }

    async fn audit_restore(
        &self,
        entries: Vec<crate::store::trail::Entry>,
    ) -> Result<(), StoreError> {
        self.chain_now().await?;
        self.tx(async |t| {
            let e = |x: tokio_postgres::Error| self.err(x);
            let row = t
                .one(
                    "SELECT seq, hash FROM audit_head WHERE one = 1 FOR UPDATE",
                    &[],
                )
                .await
                .map_err(e)?;
            let mut seq = row.get::<_, i64>(0).max(0) as u64;
            let mut hash: String = row.get(1);
            for entry in &entries {
                if entry.seq <= seq {
                    return Err(StoreError::Corrupt {
                        id: format!("audit entry {}", entry.seq),
                        detail: format!("the trail is already at entry {seq}"),
                    });
                }
                write_entry(t, entry).await.map_err(e)?;
                seq = entry.seq;
                hash = entry.hash.clone();
            }
            t.run(
                "UPDATE audit_head SET seq = $1, hash = $2 WHERE one = 1",
                &[&ms(seq), &hash],
            )
            .await
            .map_err(e)?;
            Ok(())
        })
        .await
    }
}
