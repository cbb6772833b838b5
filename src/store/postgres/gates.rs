//! What instances sharing the database agree on: each registry's limits
//! and pause in its `gates` row, who leads the store's jobs, the clock.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio_postgres::NoTls;

use super::conn::{Db, Tx};
use super::listen::{pauses_of, NOTIFY_GATES, PAUSES};
use super::{ms, why, PgStore};
use crate::limits::{Breaker, Limiter, Wait};
use crate::store::{Coordination, GateLimits, Pause, StoreError, Watch};
use crate::sync::write;
use crate::time::now_ms;

impl PgStore {
    /// Admits requests of one registry (`ids`, none of them written yet)
    /// against its shared limits, in the gate row it locks: how many of
    /// them, in order, the limits admit, and for the rest until when they
    /// refuse (`None`: until an attempt finishes). The gate row is locked
    /// from here to the commit and every instance's leases of that
    /// registry take turns on it, so it is taken last (request rows
    /// first, then gate rows).
    pub(super) async fn admit_many(
        &self,
        t: &Tx<'_>,
        g: &GateLimits,
        ids: &[&str],
        now: u64,
    ) -> Result<(usize, Option<u64>), StoreError> {
        let e = |x: tokio_postgres::Error| self.err(x);
        let limits = self.lock_gate(t, &g.registry).await?;
        let live: i64 = t
            .one(
                "SELECT count(*) FROM requests WHERE registry = $1 AND state = 'sending' \
                 AND due_ms > $2 AND id <> ALL($3)",
                &[&g.registry, &ms(now), &ids],
            )
            .await
            .map_err(e)?
            .get(0);
        let mut s = Limiter::restore(limits.as_deref(), g, now);
        let mut admitted = 0;
        let mut until = None;
        for _ in ids {
            match s.admit(live.max(0) as usize + admitted, g, now) {
                Ok(()) => admitted += 1,
                Err(Wait::Event) => break,
                Err(Wait::Until(u)) => {
                    until = Some(u);
                    break;
                }
            }
        }
        if admitted > 0 {
            t.run(
                "UPDATE gates SET limits = $2 WHERE registry = $1",
                &[&g.registry, &s.keep()],
            )
            .await
            .map_err(e)?;
        }
        Ok((admitted, until))
    }

    /// Locks a registry's gate row (made on first use) and returns the
    /// limits it keeps.
    async fn lock_gate(&self, t: &Tx<'_>, registry: &str) -> Result<Option<String>, StoreError> {
        let e = |x: tokio_postgres::Error| self.err(x);
        let sql = "SELECT limits FROM gates WHERE registry = $1 FOR UPDATE";
        if let Some(row) = t.opt(sql, &[&registry]).await.map_err(e)? {
            return Ok(row.get(0));
        }
        t.run(
            "INSERT INTO gates (registry) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&registry],
        )
        .await
        .map_err(e)?;
        Ok(t.one(sql, &[&registry]).await.map_err(e)?.get(0))
    }
}

#[async_trait]
impl Coordination for PgStore {
    fn shares_limits(&self) -> bool {
        true
    }

    async fn gate_record(
        &self,
        g: &GateLimits,
        failed: bool,
        now_ms: u64,
    ) -> Result<Option<Breaker>, StoreError> {
        self.tx(async |t| {
            let limits = self.lock_gate(t, &g.registry).await?;
            let mut s = Limiter::restore(limits.as_deref(), g, now_ms);
            let before = s.keep();
            s.record(failed, now_ms);
            let after = s.keep();
            if after != before {
                t.run(
                    "UPDATE gates SET limits = $2 WHERE registry = $1",
                    &[&g.registry, &after],
                )
                .await
                .map_err(|e| self.err(e))?;
            }
            Ok(Some(s.breaker().clone()))
        })
        .await
    }

    async fn set_pause(&self, p: &Pause) -> Result<(), StoreError> {
        self.tx(async |t| {
            let e = |x: tokio_postgres::Error| self.err(x);
            t.run(
                "INSERT INTO gates (registry, paused, paused_until, pause_set) \
                 VALUES ($1, $2, $3, true) ON CONFLICT (registry) \
                 DO UPDATE SET paused = $2, paused_until = $3, pause_set = true",
                &[&p.registry, &p.paused, &p.until.map(ms)],
            )
            .await
            .map_err(e)?;
            t.run(NOTIFY_GATES, &[]).await.map_err(e)?;
            Ok(())
        })
        .await
    }

    async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        self.with(async |c| {
            Ok(pauses_of(
                c.rows(PAUSES, &[]).await.map_err(|e| self.err(e))?,
            ))
        })
        .await
    }

    fn watch(&self, w: Watch) {
        *write(&self.shared.watch) = Some(w);
    }

    async fn lead(&self, role: &str) -> bool {
        let mut l = self.leader.lock().await;
        let (conn, held) = &mut *l;
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            // The locks went with the connection.
            *conn = None;
            held.clear();
        }
        if held.contains(role) {
            return true;
        }
        if conn.is_none() {
            // A session of its own, never pooled: its advisory locks live
            // as long as it does (and end with it, also on SIGKILL).
            match self.shared.config.connect(NoTls).await {
                Ok((c, driver)) => {
                    tokio::spawn(driver);
                    *conn = Some(c);
                }
                Err(e) => {
                    tracing::warn!(error = %why(&e), "cannot connect for an advisory lock");
                    return false;
                }
            }
        }
        let Some(c) = conn.as_ref() else {
            return false;
        };
        match c
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('jumgw:' || $1))",
                &[&role],
            )
            .await
        {
            Ok(r) if r.get::<_, bool>(0) => {
                held.insert(role.to_owned());
                tracing::info!(role, "this instance now leads");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %why(&e), "advisory lock");
                *conn = None;
                held.clear();
                false
            }
        }
    }

    fn clock_ms(&self) -> u64 {
        (now_ms() as i64 + self.shared.offset.load(Ordering::Relaxed)).max(0) as u64
    }
}
