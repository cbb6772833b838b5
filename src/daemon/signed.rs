//! The signed documents' source for the evidence job: the exchange's own
//! client of each X-Road registry's security server
//! (`Exchange::signed_document`), the current one after a reload.

use std::sync::Arc;

use crate::dispatch::Dispatcher;
use crate::evidence::signed::{Fetched, SignedDocSource};
use crate::exchange::SignedDocFetch;

/// The security servers, through the dispatcher's current exchange.
pub struct SecurityServers(pub Arc<Dispatcher>);

#[async_trait::async_trait]
impl SignedDocSource for SecurityServers {
    async fn fetch(
        &self,
        registry: &str,
        message_id: &str,
        force: bool,
    ) -> Result<Fetched, String> {
        match self
            .0
            .exchange()
            .signed_document(registry, message_id, force)
            .await
        {
            Ok(SignedDocFetch::Container(c)) => Ok(Fetched::Container(c)),
            Ok(SignedDocFetch::NotYet(why)) => Ok(Fetched::NotYet(why)),
            Err(e) => Err(e.to_string()),
        }
    }
}
