//! A round: reads what is due, admits each request through its
//! registry's gate, leases all that may go in one transaction, flushes
//! once, then starts their attempts and deliveries; and how long to sleep
//! until the next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::gate::{Blocked, Gate};
use super::Dispatcher;
use crate::lifecycle::{self, Event};
use crate::limits::GateLimits;
use crate::store::{RequestRecord, State, StoreError};
use crate::sync::lock;

/// How long a round waits for more work to arrive before it reads what is
/// due.
const ROUND_GATHER: Duration = Duration::from_millis(2);

/// What a request leased in a round goes on to.
enum Planned {
    Deliver,
    Exchange {
        polling: bool,
        gate: Arc<Gate>,
        permit: OwnedSemaphorePermit,
    },
}

impl Dispatcher {
    /// One pass over what is due; returns how long to sleep. Reads what is
    /// due and its records, admits each through its registry's limits, and
    /// leases all that may go in one transaction; then flushes once and
    /// starts them.
    pub(super) async fn round(
        self: Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Result<Duration, StoreError> {
        // Every accept and every finished attempt wakes the dispatcher;
        // under load, rounds back to back would each walk the due index
        // for one new request. A round first lets the others of the burst
        // arrive: they are leased together, for a few ms of latency.
        tokio::time::sleep(ROUND_GATHER).await;
        let now = self.store.clock_ms();
        let mut earliest: Option<u64> = None;
        let mut event_blocked = false;
        let note = |b: Blocked, earliest: &mut Option<u64>, event: &mut bool| match b {
            Blocked::Until(t) => *earliest = Some(earliest.map_or(t, |e| e.min(t))),
            Blocked::Event => *event = true,
        };
        let mut due = self.store.due(now, 512).await?;
        {
            // Registries closed now, or without room for more: their
            // (other) requests are passed over before their records are read.
            let mut blocked: BTreeMap<String, Blocked> = BTreeMap::new();
            let busy = lock(&self.busy);
            // Each registry's requests, at most as many as it has permits.
            let mut room: BTreeMap<&str, usize> = BTreeMap::new();
            due.retain(|d| {
                if busy.contains(&d.id) {
                    return false;
                }
                let crate::store::Work::Exchange(reg) = &d.work else {
                    return true;
                };
                if let Some(b) = blocked.get(reg.as_str()) {
                    note(*b, &mut earliest, &mut event_blocked);
                    return false;
                }
                let Some(gate) = self.gates.get(reg.as_str()) else {
                    return true;
                };
                let left = room
                    .entry(&gate.name)
                    .or_insert_with(|| gate.in_flight.available_permits());
                let closed = gate.closed(now).or((*left == 0).then_some(Blocked::Event));
                if let Some(b) = closed {
                    note(b, &mut earliest, &mut event_blocked);
                    blocked.insert(reg.to_string(), b);
                    return false;
                }
                *left -= 1;
                true
            });
        }
        if due.is_empty() {
            return self.sleep_until_due(earliest, event_blocked).await;
        }
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        let records = self.store.get_many(&ids).await?;
        let lease_until = now + self.policy.lease.as_millis() as u64;
        // Registries found blocked by their limits in this pass.
        let mut blocked: BTreeMap<String, Blocked> = BTreeMap::new();
        // What each request is leased for, and what it then needs.
        let mut asks: Vec<(&str, Option<Arc<GateLimits>>)> = Vec::new();
        let mut events: std::collections::HashMap<&str, Event<'static>> = Default::default();
        let mut plans: Vec<Planned> = Vec::new();
        let mut unroutable: Vec<&str> = Vec::new();
        let mut unindex: Vec<&str> = Vec::new();
        for (d, rec) in due.iter().zip(records) {
            let Some(rec) = rec else { continue };
            match rec.state {
                State::Fetched => {
                    // Lease the delivery too, so that it is not started twice.
                    events.insert(
                        &d.id,
                        Event::LeaseDelivery {
                            due: d.at_ms,
                            until: lease_until,
                        },
                    );
                    asks.push((&d.id, None));
                    plans.push(Planned::Deliver);
                }
                State::Queued | State::Retrying | State::Awaiting | State::Sending => {
                    if let Some(b) = blocked.get(rec.registry.as_str()) {
                        note(*b, &mut earliest, &mut event_blocked);
                        continue;
                    }
                    let Some(gate) = self.gates.get(rec.registry.as_str()) else {
                        unroutable.push(&d.id);
                        continue;
                    };
                    let permit = match gate.admit(now) {
                        Ok(p) => p,
                        Err(b) => {
                            note(b, &mut earliest, &mut event_blocked);
                            blocked.insert(rec.registry.to_string(), b);
                            continue;
                        }
                    };
                    events.insert(
                        &d.id,
                        Event::Lease {
                            due: d.at_ms,
                            until: lease_until,
                        },
                    );
                    asks.push((&d.id, gate.shared.then(|| gate.limits())));
                    plans.push(Planned::Exchange {
                        polling: rec.state == State::Awaiting,
                        gate: gate.clone(),
                        permit,
                    });
                }
                // A terminal request left in the index: clear it.
                _ => unindex.push(&d.id),
            }
        }
        let leased = if asks.is_empty() {
            Vec::new()
        } else {
            let f = |r: &mut RequestRecord| {
                events
                    .get(r.id.as_str())
                    .is_some_and(|e| lifecycle::apply(r, e, now))
            };
            let asks: Vec<(&str, Option<&GateLimits>)> =
                asks.iter().map(|(id, g)| (*id, g.as_deref())).collect();
            self.store.lease_many(&asks, &f).await?
        };
        let mut starts = Vec::new();
        for (plan, lease) in plans.into_iter().zip(leased) {
            match (plan, lease) {
                (Planned::Deliver, crate::store::Lease::Taken(r)) => {
                    lock(&self.busy).insert(r.id.to_string());
                    let me = self.clone();
                    tasks.spawn(async move { me.deliver(*r, None).await });
                }
                (
                    Planned::Exchange {
                        polling,
                        gate,
                        permit,
                    },
                    crate::store::Lease::Taken(r),
                ) => {
                    lock(&self.busy).insert(r.id.to_string());
                    starts.push((*r, polling, gate, permit));
                }
                (Planned::Exchange { gate, .. }, crate::store::Lease::Blocked(until)) => {
                    let b = until.map_or(Blocked::Event, Blocked::Until);
                    note(b, &mut earliest, &mut event_blocked);
                    blocked.insert(gate.name.clone(), b);
                }
                // Someone else has it, or it changed since it was read.
                _ => {}
            }
        }
        // Write-ahead: the leases (and with them the `exchange.sent` audit
        // entries) are on disk before any of their requests leaves, so a
        // crash cannot hide an access to a person's data. One flush for
        // the round's leases.
        if !starts.is_empty() {
            if let Err(e) = self.store.flush().await {
                let mut busy = lock(&self.busy);
                for (r, ..) in &starts {
                    busy.remove(r.id.as_str());
                }
                // Their leases expire and they are leased again.
                return Err(e);
            }
            for (r, polling, gate, permit) in starts {
                let me = self.clone();
                tasks.spawn(async move { me.attempt(r, polling, gate, permit).await });
            }
        }
        for (ids, ev) in [(unroutable, Event::Unroutable), (unindex, Event::Unindex)] {
            if !ids.is_empty() {
                self.store
                    .update_many(&ids, &[], &|r| lifecycle::apply(r, &ev, now))
                    .await?;
            }
        }
        self.sleep_until_due(earliest, event_blocked).await
    }

    /// How long to sleep: until the next due time, a registry's limits
    /// open again, or (when only a finished attempt can unblock) a second.
    async fn sleep_until_due(
        &self,
        earliest: Option<u64>,
        event_blocked: bool,
    ) -> Result<Duration, StoreError> {
        let now = self.store.clock_ms();
        let next = self.store.next_due().await?.filter(|d| *d > now);
        let mut wake_at = [next, earliest].into_iter().flatten().min();
        if event_blocked {
            // Woken by the finished attempt; the timer is a safety net.
            wake_at = Some(wake_at.map_or(now + 1000, |w| w.min(now + 1000)));
        }
        Ok(Duration::from_millis(
            wake_at.map_or(5_000, |w| w.saturating_sub(now).clamp(1, 5_000)),
        ))
    }
}
