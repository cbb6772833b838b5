//! The life of one request, in one place. A request is made by
//! [`RequestRecord::queued`] when a back-office files it, and from then on
//! every change of its state is an [`Event`] given to [`apply`]: the
//! dispatcher's leases and attempt outcomes, deliveries, an
//! administrator's retry and cancel, the deadline watch. Nothing else sets a
//! record's state; the stores only persist what `apply` returns, and index
//! it by [`Work::of`].
//!
//! Pure: no clock, no randomness, no I/O. Callers pass `now` (the store's
//! clock, shared by every instance) and the jitter. The transitions are
//! listed in ARCHITECTURE.md ("Request life cycle"); a test walks every
//! (state, event) pair and checks the list against [`apply`].
//!
//! What a change raises besides the record is [`effects::effects`] of the
//! record before and after: the traces the audit trail records and what the
//! back-office is told. The audit trail and the webhook sender turn them
//! into entries and events, which the store writes in the same transaction.

/// An enum whose variants are kept and shown as names (records on disk,
/// API bodies, case.json, metric labels): serde and `name()` read the one
/// list written here, so they cannot disagree, and `ALL` lists every
/// variant in the order written.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The name it is kept and shown as.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub mod effects;
pub mod outcome;
pub mod record;
pub mod retry;

pub use outcome::{Outcome, OutcomeKind};
pub use record::{
    AttachmentRecord, AttemptRecord, RequestRecord, RevocationMethod, RevocationRecord,
    SignedDocRecord, SignedDocState, SignerStatus, StampRecord, StampState, State, SubjectRecord,
    RECORD_VERSION,
};
pub use retry::{backoff, next_retry, AttemptFacts, MAX_SECURITY_FAILURES};

use crate::config::RetryConfig;
use crate::ids::RegistryId;

/// Something that happens to a request.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    /// The dispatcher leases it for an exchange (or a poll of its ticket)
    /// until `until`, if it is still due at `due`, the index entry it read.
    Lease { due: u64, until: u64 },
    /// The dispatcher leases a fetched document's delivery until `until`,
    /// if it is still due at `due`.
    LeaseDelivery { due: u64, until: u64 },
    /// The attempt came back. A fetched document's delivery is leased at
    /// once, until `deliver_by`, by the same task.
    Answered {
        facts: &'a AttemptFacts<'a>,
        retry: &'a RetryConfig,
        jitter: f64,
        deliver_by: u64,
    },
    /// The document reached the client (case folder, webhook or pull).
    Delivered,
    /// Its delivery failed (`error`): tried again on the retry backoff,
    /// or, after `retry.delivery_attempts` failures, given up (dead) for
    /// an operator to see, fix and retry.
    DeliveryFailed {
        error: &'a str,
        retry: &'a RetryConfig,
        jitter: f64,
    },
    /// An administrator retries it: a dead or cancelled request starts
    /// over, a waiting one is due now.
    Retry,
    /// An administrator cancels it. One being sent finishes its attempt,
    /// whose answer is kept and not delivered.
    Cancel { by: &'a str },
    /// Its registry is not configured (any more): it cannot be sent.
    Unroutable,
    /// A finished request was found in the due index: take it out.
    Unindex,
    /// The deadline watch found it within the warning of its ZUP deadline.
    AtRisk,
    /// The revocation status of its document's signer, established after
    /// the document was taken `unchecked`.
    Rechecked { revocation: &'a RevocationRecord },
    /// The evidence job's try at its document's timestamp: the token, a
    /// failure to try again later, or one given up.
    Stamped { stamp: &'a StampRecord },
    /// The evidence job's try at its document's X-Road signed document
    /// (of the same message): kept, a failure to try again later, or one
    /// given up.
    SignedDocument { signed: &'a SignedDocRecord },
}

impl Event<'_> {
    /// The event's name, as ARCHITECTURE.md lists the transitions.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Lease { .. } => "lease",
            Event::LeaseDelivery { .. } => "lease-delivery",
            Event::Answered { facts, .. } => facts.outcome.kind().name(),
            Event::Delivered => "delivered",
            Event::DeliveryFailed { .. } => "delivery-failed",
            Event::Retry => "retry",
            Event::Cancel { .. } => "cancel",
            Event::Unroutable => "unroutable",
            Event::Unindex => "unindex",
            Event::AtRisk => "at-risk",
            Event::Rechecked { .. } => "rechecked",
            Event::Stamped { .. } => "stamped",
            Event::SignedDocument { .. } => "signed-document",
        }
    }
}

/// Applies `e` to `r` at `now`. Returns whether it changed anything: false
/// leaves `r` as it was (the event does not apply in its state, or is
/// stale: another lease, a cancel, took over meanwhile).
pub fn apply(r: &mut RequestRecord, e: &Event<'_>, now: u64) -> bool {
    let changed = match *e {
        Event::Lease { due, until } => {
            if r.due_ms != Some(due) || r.state.is_terminal() || r.state == State::Fetched {
                return false;
            }
            r.state = State::Sending;
            r.due_ms = Some(until);
            true
        }
        Event::LeaseDelivery { due, until } => {
            if r.state != State::Fetched || r.due_ms != Some(due) {
                return false;
            }
            r.due_ms = Some(until);
            true
        }
        Event::Answered {
            facts,
            retry,
            jitter,
            deliver_by,
        } => {
            let changed = retry::apply(r, facts, retry, jitter);
            if changed && r.state == State::Fetched {
                r.due_ms = Some(deliver_by);
            }
            changed
        }
        Event::Delivered => {
            if r.state != State::Fetched {
                return false;
            }
            r.state = State::Delivered;
            r.delivered_ms = Some(now);
            true
        }
        Event::DeliveryFailed {
            error,
            retry,
            jitter,
        } => {
            if r.state != State::Fetched {
                return false;
            }
            r.delivery_failures += 1;
            let n = r.delivery_failures;
            if n >= retry.delivery_attempts {
                r.state = State::Dead;
                r.error = Some(format!("delivery failed {n} times, last: {error}"));
            } else {
                r.error = Some(format!(
                    "delivery failed ({n} of {}): {error}",
                    retry.delivery_attempts
                ));
                let wait = backoff(retry, n, None, jitter);
                r.due_ms = Some(now + wait.as_millis() as u64);
            }
            true
        }
        // A document whose delivery was given up is delivered again, not
        // asked for again.
        Event::Retry
            if r.state == State::Dead && r.document_id.is_some() && r.delivery_failures > 0 =>
        {
            r.state = State::Fetched;
            r.due_ms = Some(now);
            r.error = None;
            r.delivery_failures = 0;
            true
        }
        Event::Retry => match r.state {
            State::Dead | State::Cancelled => {
                r.state = State::Queued;
                r.due_ms = Some(now);
                r.error = None;
                r.security_failures = 0;
                true
            }
            State::Queued | State::Retrying | State::Awaiting => {
                r.due_ms = Some(now);
                true
            }
            State::Sending | State::Fetched | State::Delivered => false,
        },
        Event::Cancel { by } => {
            if r.state.is_terminal() {
                return false;
            }
            r.state = State::Cancelled;
            r.error = Some(format!("cancelled by {by}"));
            true
        }
        Event::Unroutable => {
            // A fetched request has its document: it needs no registry.
            if r.state.is_terminal() || r.state == State::Fetched {
                return false;
            }
            r.state = State::Dead;
            r.error = Some(format!("registry {} is not configured", r.registry));
            true
        }
        Event::Unindex => {
            if !r.state.is_terminal() || r.due_ms.is_none() {
                return false;
            }
            true
        }
        Event::AtRisk => {
            if r.at_risk || r.state.is_terminal() {
                return false;
            }
            r.at_risk = true;
            true
        }
        Event::Rechecked { revocation } => {
            let unchecked = r
                .revocation
                .as_ref()
                .is_some_and(|v| v.status == SignerStatus::Unchecked);
            if r.document_id.is_none() || !unchecked {
                return false;
            }
            r.revocation = Some((*revocation).clone());
            true
        }
        Event::Stamped { stamp } => {
            if !r.stamp_pending() {
                return false;
            }
            r.stamp = Some((*stamp).clone());
            true
        }
        Event::SignedDocument { signed } => {
            // Only the pending signed document of the same message: a
            // late try must not overwrite one kept or given up meanwhile.
            let same = r
                .signed_document
                .as_ref()
                .is_some_and(|s| s.is_pending() && s.message_id == signed.message_id);
            if !same {
                return false;
            }
            r.signed_document = Some((*signed).clone());
            true
        }
    };
    // A finished request is due for nothing.
    if changed && r.state.is_terminal() {
        r.due_ms = None;
    }
    changed
}

/// What a due request is due for, kept in the due index so that the
/// dispatcher can pass over requests of a blocked registry without
/// reading them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Delivery into the case (not limited by the registry).
    Deliver,
    /// An exchange with this registry (a first send, a retry, a poll).
    Exchange(RegistryId),
    /// Written without a value: read the record.
    Unknown,
}

impl Work {
    /// What `r` is due for, if it is due at all.
    pub fn of(r: &RequestRecord) -> Option<Work> {
        r.due_ms?;
        Some(if r.state == State::Fetched {
            Work::Deliver
        } else {
            Work::Exchange(r.registry.clone())
        })
    }

    /// As the stores keep it: `!deliver`, or the registry's name (which
    /// cannot start with `!`).
    pub fn code(&self) -> &str {
        match self {
            Work::Deliver => "!deliver",
            Work::Exchange(r) => r,
            Work::Unknown => "",
        }
    }

    pub fn from_code(s: &str) -> Work {
        match s {
            "" => Work::Unknown,
            "!deliver" => Work::Deliver,
            reg => Work::Exchange(reg.into()),
        }
    }
}

#[cfg(test)]
mod tests;
