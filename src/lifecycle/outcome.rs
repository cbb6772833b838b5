//! What an attempt came to, as the life cycle reads it: the exchange
//! client classifies what a registry answered into one of these
//! (`exchange::classify`), and [`super::apply`] moves the request by it.

use std::fmt;
use std::time::Duration;

/// The meaning of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A signed document for the case.
    Document,
    /// The registry answers later: poll with the ticket.
    Accepted {
        ticket: String,
        retry_after: Duration,
    },
    /// The ticket being polled is unknown to the registry: send the request again.
    TicketLost { reason: String },
    /// Will not succeed by retrying.
    Permanent { reason: String },
    /// May succeed later.
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Never delivered; raises a security event; retried at most 3 times.
    Security { reason: String },
}

impl Outcome {
    /// What kind of outcome it is, as records keep it.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Document => OutcomeKind::Document,
            Outcome::Accepted { .. } => OutcomeKind::Accepted,
            Outcome::TicketLost { .. } => OutcomeKind::TicketLost,
            Outcome::Permanent { .. } => OutcomeKind::Permanent,
            Outcome::Retryable { .. } => OutcomeKind::Retryable,
            Outcome::Security { .. } => OutcomeKind::Security,
        }
    }
}

named_enum! {
    /// An outcome without its details: what an attempt's record keeps
    /// (`AttemptRecord::outcome`), written as its name.
    pub enum OutcomeKind {
        Document = "document",
        Accepted = "accepted",
        TicketLost = "ticket-lost",
        Permanent = "permanent",
        Retryable = "retryable",
        Security = "security",
    }
}

impl OutcomeKind {
    /// The registry answered with something for the case: a document or
    /// a ticket. Anything else is a failed attempt.
    pub fn answered(self) -> bool {
        matches!(self, OutcomeKind::Document | OutcomeKind::Accepted)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Document => write!(f, "document"),
            Outcome::Accepted {
                ticket,
                retry_after,
            } => {
                write!(
                    f,
                    "accepted: ticket {ticket}, poll after {} s",
                    retry_after.as_secs()
                )
            }
            Outcome::TicketLost { reason } => write!(f, "ticket lost: {reason}"),
            Outcome::Permanent { reason } => write!(f, "permanent failure: {reason}"),
            Outcome::Retryable {
                reason,
                retry_after: Some(d),
            } => {
                write!(f, "retryable: {reason}, retry after {} s", d.as_secs())
            }
            Outcome::Retryable {
                reason,
                retry_after: None,
            } => write!(f, "retryable: {reason}"),
            Outcome::Security { reason } => write!(f, "security failure: {reason}"),
        }
    }
}

impl Outcome {
    /// Does this outcome say the registry is unhealthy (for the breaker)?
    pub fn is_registry_failure(&self) -> bool {
        matches!(self, Outcome::Retryable { .. })
    }
}
