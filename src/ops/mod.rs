//! The operators' view of the gateway: the questions they ask and the
//! commands they give, whichever door they come through (the admin API,
//! the dashboard, `/metrics`, the alert watch). Each reader authorises its
//! caller first and serialises the answer its own way; what the answer
//! is, and what a command changes and puts on the audit trail, is decided
//! here once.
//!
//! Questions: requests by state ([`Ops::stats`]), the queue and one
//! request ([`queue`]), each registry's state ([`Ops::registries`]:
//! breaker, pause, queue, last answers, certificates, revocation,
//! protocol, what an X-Road security server allows), the certificates in
//! use ([`cert_info`]), the gateway's keys on PKCS#11 tokens
//! ([`Ops::tokens`]), the alert watch's [`Snapshot`], the gauges of
//! `/metrics` ([`Ops::levels`]), "who used my data" and the audit trail's
//! verification ([`trail`]).
//!
//! Commands: retry one request, retry the dead, cancel, pause and resume a
//! registry. Each is audited before it is done (an action that cannot be
//! audited is not done), under the name of the administrator its reader
//! authorised.
//!
//! Errors are [`OpsError`]: not found, not possible in this state, invalid
//! arguments, or the store's, audit's faults with their source; the API
//! turns them into problem+json.

mod error;
mod levels;
pub mod queue;
pub mod registries;
pub mod snapshot;
pub mod tokens;
pub mod trail;

use std::sync::Arc;

pub use error::OpsError;
pub use queue::{Filter, Listed, RetryDeadIn, RetryDeadOut};
pub use registries::{cert_info, CertOut, RegistryOut, Stats};
pub use snapshot::{CertFacts, GateFacts, Snapshot, TokenFacts};
pub use tokens::TokenOut;
pub use trail::{Access, WhoIn, WhoOut};

use crate::audit::{AuditKey, Checkpoints, Draft};
use crate::config::GatewayConfig;
use crate::dispatch::Dispatcher;
use crate::store::{QueueStore, RequestRecord};
use crate::time::now_ms;

/// What the operators' questions and commands need: the store, the
/// dispatcher (its gates), the configuration, the audit key and where the
/// trail's checkpoints are. Cheap to clone (shared handles); the API's
/// state makes one per call, the daemon one for the alert watch.
#[derive(Clone)]
pub struct Ops {
    pub store: Arc<dyn QueueStore>,
    pub dispatcher: Arc<Dispatcher>,
    pub config: Arc<GatewayConfig>,
    /// Keys subjects in the audit trail.
    pub audit_key: Arc<AuditKey>,
    /// Where the audit trail's checkpoints are; None: none are kept.
    pub checkpoints: Option<Checkpoints>,
}

impl Ops {
    /// Appends an administrator's action to the audit trail, about a
    /// request or not.
    async fn audit(
        &self,
        who: &str,
        action: &str,
        r: Option<&RequestRecord>,
        outcome: &str,
    ) -> Result<(), OpsError> {
        let draft = match r {
            Some(r) => crate::audit::about(&self.audit_key, r, who, action, outcome),
            None => Draft {
                at_ms: now_ms(),
                actor: who.to_owned(),
                action: action.to_owned(),
                outcome: outcome.to_owned(),
                ..Draft::default()
            },
        };
        Ok(self.store.audit_append(vec![draft]).await?)
    }
}
