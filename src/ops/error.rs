//! What can go wrong with an operator's question or command.

use crate::audit::AuditError;
use crate::store::StoreError;

/// Why a question has no answer or a command was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// No request, or no registry, by that name.
    #[error("{0}")]
    NotFound(String),
    /// The request's state does not allow the command (retry a delivered
    /// request, cancel a finished one).
    #[error("{0}")]
    StateConflict(String),
    /// Arguments that do not hold, each with where it is (a JSON pointer)
    /// and why.
    #[error("some fields are invalid")]
    Invalid(Vec<(String, String)>),
    /// The store failed (full, closed, damaged …).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit trail's checkpoint file cannot be read.
    #[error("the audit trail's checkpoints cannot be read")]
    Checkpoints(#[source] AuditError),
    /// The audit trail cannot be walked to its end.
    #[error("the audit trail cannot be walked")]
    Verify(#[source] AuditError),
}

impl OpsError {
    /// One invalid argument.
    pub(super) fn invalid(pointer: &str, reason: impl Into<String>) -> OpsError {
        OpsError::Invalid(vec![(pointer.into(), reason.into())])
    }
}
