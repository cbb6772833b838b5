//! Revocation re-checks: what a later check of documents taken
//! `unchecked` establishes, recorded with the CRL that answered.

use super::Dispatcher;
use crate::lifecycle::{self, Event};
use crate::store::RequestRecord;

impl Dispatcher {
    /// Records what the re-check of `unchecked` documents established. A
    /// signer found revoked after its document was taken (and perhaps
    /// delivered) is logged as an error for an operator: the document
    /// stays, its evidence says so.
    pub(super) async fn recheck_revocations(&self) {
        for (id, evidence, crl) in self.exchange().recheck().await {
            if evidence.status == crate::lifecycle::SignerStatus::Revoked {
                tracing::error!(request = %id, reason = evidence.reason.as_deref().unwrap_or(""), "a document's signer turned out revoked after it was taken");
                crate::metrics::revocation_check("recheck", "revoked");
            }
            let crl = match self.sealed_crl(Some(&evidence), crl.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(request = %id, error = %e, "cannot seal the CRL of a revocation re-check");
                    continue;
                }
            };
            let now = self.store.clock_ms();
            let change = move |r: &mut RequestRecord| {
                lifecycle::apply(
                    r,
                    &Event::Rechecked {
                        revocation: &evidence,
                    },
                    now,
                )
            };
            let crl_id = crl.as_ref().map(|(c, _)| c.clone());
            match self
                .record_with(&id, None, crl.into_iter().collect(), change)
                .await
            {
                Ok(_) => self.crl_stored(crl_id),
                Err(e) => {
                    tracing::warn!(request = %id, error = %e, "cannot record a revocation re-check")
                }
            }
        }
    }
}
