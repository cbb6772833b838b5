//! Events for back-office clients (webhooks), kept in the store so that
//! they are as durable as the requests they speak of. An event is written
//! in the same transaction as the record change it reports (see
//! [`EventRule`]), so a crash can neither lose it nor report a change that
//! did not happen. Each event has a stable id (the `webhook-id`): writing
//! an id twice keeps the first, which is what makes repeated emission
//! (after a crash, or by two tasks finishing a case together) harmless.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::RequestRecord;

/// The client name under which the operators' alerts wait: `@` is not
/// in any configured client's name, so no webhook takes them.
pub const ALERTS: &str = "@alerts";

/// One event waiting to reach its client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutEvent {
    /// Stable id, sent as `webhook-id`.
    pub id: String,
    /// The client it is for.
    pub client: String,
    /// Events of one client and case are sent in order, one at a time.
    pub case: String,
    /// `request.delivered`, `request.failed`, `bundle.completed`,
    /// `request.deadline_at_risk`.
    pub kind: String,
    pub created_ms: u64,
    pub data: serde_json::Value,
    #[serde(default)]
    pub attempts: u32,
    /// Not to be sent before (ms since the epoch).
    #[serde(default)]
    pub next_ms: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl OutEvent {
    /// One of the operators' alerts, mailed, not a client's webhook.
    pub fn is_alert(&self) -> bool {
        self.client == ALERTS
    }
}

/// Decides, inside the store's transaction, which events a record change
/// raises: `(before, after)` → events. It may run more than once per
/// change and must not have side effects.
pub type EventFn = dyn Fn(&RequestRecord, &RequestRecord) -> Vec<OutEvent> + Send + Sync;

/// The rule, and whom to wake when it raised events.
#[derive(Clone)]
pub struct EventRule {
    pub rule: Arc<EventFn>,
    pub notify: Arc<tokio::sync::Notify>,
}
