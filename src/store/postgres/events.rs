//! Webhook events on a shared database: written in the change's
//! transaction (an id written twice keeps the first), announced by
//! `NOTIFY`, and handed to the sender by sequence.

use async_trait::async_trait;

use super::conn::{Db, Tx};
use super::listen::NOTIFY_EVENTS;
use super::{ms, PgStore};
use crate::store::{EventRule, OutEvent, Outbox, StoreError};
use crate::sync::write;

pub(super) async fn put_events(
    t: &Tx<'_>,
    events: &[OutEvent],
) -> Result<usize, tokio_postgres::Error> {
    let mut n = 0;
    for e in events {
        n += t
            .run(
                "INSERT INTO events (event_id, created_ms, body) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id) DO NOTHING",
                &[
                    &e.id,
                    &ms(e.created_ms),
                    &serde_json::to_string(e).unwrap_or_default(),
                ],
            )
            .await? as usize;
    }
    Ok(n)
}

#[async_trait]
impl Outbox for PgStore {
    fn set_event_rule(&self, rule: EventRule) {
        *write(&self.shared.events) = Some(rule);
    }

    async fn emit(&self, events: Vec<OutEvent>) -> Result<usize, StoreError> {
        let n = self
            .tx(async |t| {
                let n = put_events(t, &events).await.map_err(|e| self.err(e))?;
                if n > 0 {
                    t.run(NOTIFY_EVENTS, &[]).await.map_err(|e| self.err(e))?;
                }
                Ok(n)
            })
            .await?;
        self.after_events(n);
        Ok(n)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutEvent)>, StoreError> {
        self.with(async |c| {
            let rows = c
                .rows(
                    "SELECT seq, body FROM events WHERE NOT done ORDER BY seq LIMIT $1",
                    &[&(limit as i64)],
                )
                .await
                .map_err(|e| self.err(e))?;
            rows.into_iter()
                .map(|r| {
                    let seq = r.get::<_, i64>(0).max(0) as u64;
                    let text: String = r.get(1);
                    Ok((seq, crate::store::decode_event(seq, text.as_bytes())?))
                })
                .collect()
        })
        .await
    }

    async fn event(&self, seq: u64) -> Result<Option<OutEvent>, StoreError> {
        self.with(async |c| {
            let row = c
                .opt(
                    "SELECT body FROM events WHERE seq = $1 AND NOT done",
                    &[&ms(seq)],
                )
                .await
                .map_err(|e| self.err(e))?;
            row.map(|r| {
                let text: String = r.get(0);
                crate::store::decode_event(seq, text.as_bytes())
            })
            .transpose()
        })
        .await
    }

    async fn outbox_retry(&self, seq: u64, event: &OutEvent) -> Result<(), StoreError> {
        let body = serde_json::to_string(event).map_err(|e| StoreError::Io(e.to_string()))?;
        self.with(async |c| {
            // Only if it is still waiting: never resurrect a sent event.
            c.run(
                "UPDATE events SET body = $2 WHERE seq = $1 AND NOT done",
                &[&ms(seq), &body],
            )
            .await
            .map(drop)
            .map_err(|e| self.err(e))
        })
        .await
    }

    async fn outbox_done(&self, seq: u64) -> Result<(), StoreError> {
        self.with(async |c| {
            c.run("UPDATE events SET done = true WHERE seq = $1", &[&ms(seq)])
                .await
                .map(drop)
                .map_err(|e| self.err(e))
        })
        .await
    }

    async fn purge_event_ids(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.with(async |c| {
            c.run(
                "DELETE FROM events WHERE done AND created_ms < $1",
                &[&ms(before_ms)],
            )
            .await
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
        })
        .await
    }
}
