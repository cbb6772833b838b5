//! An attempt: one exchange with a registry for one request and what it
//! comes to: the gate's breaker and history, the document, its CRL and
//! its attachments sealed and recorded with the outcome in one write, and
//! a fetched document handed on to delivery.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::OwnedSemaphorePermit;

use super::gate::Gate;
use super::Dispatcher;
use crate::exchange::{Call, Outcome};
use crate::lifecycle::{self, AttemptFacts, Event};
use crate::lifecycle::{AttachmentRecord, RevocationRecord};
use crate::store::{RequestRecord, State};
use crate::sync::lock;

/// A fetched document in clear, with its attachments (in the order of the
/// record's `attachments`).
pub struct Fetched {
    pub document: Vec<u8>,
    pub attachments: Vec<Vec<u8>>,
}

/// A document to store: its id and its bytes, sealed under that id.
pub type Sealed = (String, Vec<u8>);

/// An X-Road document's attachments as the store keeps them: each sealed
/// under its document id (`{request}.attachment-{n}`, n from 1), to be
/// written in the same transaction as the document, and what the record
/// says of each (metadata only: a record stays small whatever came).
pub fn seal_attachments(
    cipher: &crate::store::crypt::DocumentCipher,
    request: &str,
    attachments: &[crate::protocol::xroad::Attachment],
) -> Result<(Vec<Sealed>, Vec<AttachmentRecord>), crate::store::crypt::CryptError> {
    let mut sealed = Vec::with_capacity(attachments.len());
    let mut records = Vec::with_capacity(attachments.len());
    for (i, a) in attachments.iter().enumerate() {
        let id = attachment_id(request, i + 1);
        sealed.push((id.clone(), cipher.seal(&id, &a.bytes)?));
        records.push(AttachmentRecord {
            document_id: id,
            content_id: a.content_id.clone(),
            content_type: a.content_type.clone(),
            name: a.name.clone(),
            size: a.bytes.len() as u64,
            sha256: hex(&openssl::sha::sha256(&a.bytes)),
        });
    }
    Ok((sealed, records))
}

/// Where a request's `n`-th attachment (from 1) is stored.
pub fn attachment_id(request: &str, n: usize) -> String {
    format!("{request}.attachment-{n}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Dispatcher {
    /// The CRL that confirmed a document's signer, sealed under its id
    /// (`crl-{sha256}`), to store beside the document; `None` when no CRL
    /// did, or when this process already stored that CRL (the same id is
    /// the same bytes: one copy per CRL).
    pub(super) fn sealed_crl(
        &self,
        revocation: Option<&RevocationRecord>,
        der: Option<&[u8]>,
    ) -> Result<Option<(String, Vec<u8>)>, crate::store::crypt::CryptError> {
        let (Some(hex), Some(der)) = (revocation.and_then(|r| r.crl_sha256.as_deref()), der) else {
            return Ok(None);
        };
        let id = crate::exchange::crl_document_id(hex);
        if lock(&self.kept_crls).contains(&id) {
            return Ok(None);
        }
        let sealed = self.cipher.seal(&id, der)?;
        Ok(Some((id, sealed)))
    }

    /// Remembers that the CRL `id` is stored (its write went through).
    pub(super) fn crl_stored(&self, id: Option<String>) {
        if let Some(id) = id {
            let mut kept = lock(&self.kept_crls);
            if kept.len() > 1024 {
                kept.clear();
            }
            kept.insert(id);
        }
    }

    pub(super) async fn attempt(
        self: Arc<Self>,
        rec: RequestRecord,
        polling: bool,
        gate: Arc<Gate>,
        permit: OwnedSemaphorePermit,
    ) {
        let id = rec.id.to_string();
        let result = match rec.subject() {
            Ok(subject) => {
                let call = Call {
                    id: &rec.id,
                    service: &rec.service,
                    subject,
                    case: &rec.case,
                    official: &rec.official,
                    legal_basis: &rec.legal_basis,
                    purpose: &rec.purpose,
                    ticket: if polling { rec.ticket.as_deref() } else { None },
                };
                self.exchange()
                    .attempt(&call)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        drop(permit);
        let now = self.store.clock_ms();
        let mut message_id = None;
        let mut attachments = Vec::new();
        let mut charset = None;
        let (outcome, status, duration_ms, signer, document, revocation, crl) = match result {
            Ok(a) => {
                let doc = (a.outcome == Outcome::Document)
                    .then_some(a.response)
                    .flatten();
                let crl = doc.as_ref().and(a.crl);
                // Every attempt's message id is recorded (the security
                // server's log knows each message by it); attachments
                // only come with a document.
                message_id = a.message_id;
                if doc.is_some() {
                    attachments = a.attachments;
                    charset = a.charset;
                }
                (
                    a.outcome,
                    a.status,
                    a.duration.as_millis() as u64,
                    (
                        a.signer,
                        a.signer_sha256,
                        a.signer_anchor_sha256,
                        a.signature_imprint,
                    ),
                    doc,
                    a.revocation,
                    crl,
                )
            }
            // The request cannot even be built (a service removed from the
            // configuration, say): nothing will change by retrying.
            Err(e) => (
                Outcome::Permanent { reason: e },
                None,
                0,
                (None, None, None, None),
                None,
                None,
                None,
            ),
        };
        crate::metrics::attempt(
            &rec.registry,
            &rec.service,
            outcome.kind().name(),
            Duration::from_millis(duration_ms),
        );
        let failed = outcome.is_registry_failure();
        if gate.shared {
            match self.store.gate_record(&gate.limits(), failed, now).await {
                Ok(Some(b)) => lock(&gate.limiter).mirror(b),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(registry = %rec.registry, error = %e, "cannot record the attempt in the shared breaker")
                }
            }
        } else {
            lock(&gate.limiter).record(failed, now);
        }
        gate.record_minute(
            now,
            failed || matches!(outcome, Outcome::Security { .. }),
            duration_ms,
        );
        {
            let mut last = lock(&gate.last);
            match &outcome {
                Outcome::Document | Outcome::Accepted { .. } => last.success_ms = Some(now),
                o if failed || matches!(o, Outcome::Security { .. }) => {
                    last.error_ms = Some(now);
                    last.error = Some(crate::ids::redact_text(&o.to_string()));
                }
                _ => {}
            }
        }
        tracing::info!(request = %id, registry = %rec.registry, service = %rec.service, subject = %rec.subject_redacted(), outcome = %crate::ids::redact_text(&outcome.to_string()), "attempt");
        let sealed = match &document {
            Some(doc) => match self.cipher.seal(&id, doc) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(request = %id, error = %e, "cannot seal the document; the attempt will be repeated");
                    lock(&self.busy).remove(&id);
                    self.wake();
                    return;
                }
            },
            None => None,
        };
        let crl = match self.sealed_crl(revocation.as_ref(), crl.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(request = %id, error = %e, "cannot seal the CRL; the attempt will be repeated");
                lock(&self.busy).remove(&id);
                self.wake();
                return;
            }
        };
        let (sealed_attachments, attachment_records) = match seal_attachments(
            &self.cipher,
            &id,
            &attachments,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(request = %id, error = %e, "cannot seal an attachment; the attempt will be repeated");
                lock(&self.busy).remove(&id);
                self.wake();
                return;
            }
        };
        let jitter: f64 = rand::rng().random();
        // A fetched document is delivered at once by this task: its
        // delivery lease is taken in the same write as the attempt.
        let lease_until = now + self.policy.lease.as_millis() as u64;
        let policy = self.policy.clone();
        let stamp = self.stamps;
        let (signer, signer_sha256, signer_anchor_sha256, imprint) = signer;
        let change = move |r: &mut RequestRecord| {
            let facts = AttemptFacts {
                outcome: &outcome,
                at_ms: now,
                duration_ms,
                http_status: status,
                signer: signer.as_deref(),
                signer_sha256: signer_sha256.as_deref(),
                signer_anchor_sha256: signer_anchor_sha256.as_deref(),
                stamp_imprint: imprint.as_deref(),
                revocation: revocation.as_ref(),
                stamp,
                message_id: message_id.as_deref(),
                attachments: &attachment_records,
                charset: charset.as_deref(),
            };
            let answered = Event::Answered {
                facts: &facts,
                retry: &policy,
                jitter,
                deliver_by: lease_until,
            };
            lifecycle::apply(r, &answered, now)
        };
        // The document (with the CRL that vouched for its signer and its
        // attachments) is stored in the same transaction as the outcome.
        let crl_id = crl.as_ref().map(|(c, _)| c.clone());
        let extra = crl.into_iter().chain(sealed_attachments).collect();
        match self.record_with(&id, sealed, extra, change).await {
            Ok(Some(r)) if r.state == State::Fetched => {
                self.crl_stored(crl_id);
                let fresh = document.map(|document| Fetched {
                    document,
                    attachments: attachments.into_iter().map(|a| a.bytes).collect(),
                });
                self.clone().deliver(r, fresh).await;
            }
            Ok(_) => {
                self.crl_stored(crl_id);
                lock(&self.busy).remove(&id);
            }
            Err(e) => {
                lock(&self.busy).remove(&id);
                tracing::error!(request = %id, error = %e, "cannot record the attempt; it will be repeated")
            }
        }
        self.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// An X-Road answer's attachments, from a hand-made attempt: each
    /// sealed under its own id (bound to it: it does not open under
    /// another), its record metadata only, and stored in the write of the
    /// document's change or not at all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attachments_are_sealed_under_their_ids_and_stored_with_their_document_or_not_at_all() {
        use crate::protocol::xroad::Attachment;
        use crate::store::prelude::*;
        let cipher = crate::store::crypt::DocumentCipher::from_hex(&"7".repeat(64)).unwrap();
        let came = vec![
            Attachment {
                content_id: "plan@registry".into(),
                content_type: "application/pdf".into(),
                name: Some("../../etc/passwd".into()),
                bytes: b"%PDF-1.7".to_vec(),
            },
            Attachment {
                content_id: "x".into(),
                content_type: "text/html".into(),
                name: None,
                bytes: vec![0u8; 70_000],
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path(), 1 << 20).unwrap();
        let r = crate::lifecycle::record::testing::record()
            .service("cadastre.property-sheet", "cadastre")
            .subject(&[])
            .now(Duration::from_secs(60))
            .build();
        let id = r.id.clone();
        let (sealed, records) = seal_attachments(&cipher, &id, &came).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|a| a.document_id.as_str())
                .collect::<Vec<_>>(),
            [format!("{id}.attachment-1"), format!("{id}.attachment-2")]
        );
        assert_eq!(records[0].name.as_deref(), Some("../../etc/passwd"));
        assert_eq!(records[1].size, 70_000);
        assert_eq!(records[0].sha256, hex(&openssl::sha::sha256(b"%PDF-1.7")));
        // The record holds metadata only, however large the attachment.
        assert!(serde_json::to_vec(&records).unwrap().len() < 600);
        assert!(cipher.open(&sealed[1].0, &sealed[0].1).is_err());
        store.enqueue(vec![r]).await.unwrap();
        let docs: Vec<(&str, &[u8])> = std::iter::once((id.as_str(), &b"<doc/>"[..]))
            .chain(sealed.iter().map(|(i, b)| (i.as_str(), b.as_slice())))
            .collect();
        // Declined (as a late answer is): neither the document nor an
        // attachment is stored.
        let got = store
            .update_many(&[id.as_str()], &docs, &|_r: &mut RequestRecord| false)
            .await
            .unwrap();
        assert!(got[0].is_none());
        assert!(store.document(&id).await.unwrap().is_none());
        for (i, _) in &sealed {
            assert!(
                store.document(i).await.unwrap().is_none(),
                "{i} stored without its change"
            );
        }
        let listed = records.clone();
        let got = store
            .update_many(&[id.as_str()], &docs, &move |r: &mut RequestRecord| {
                r.attachments = listed.clone();
                true
            })
            .await
            .unwrap();
        assert_eq!(got[0].as_ref().unwrap().attachments, records);
        for ((i, _), a) in sealed.iter().zip(&came) {
            let back = store.document(i).await.unwrap().unwrap();
            assert_eq!(cipher.open(i, &back).unwrap(), a.bytes);
        }
        store.close().await.unwrap();
    }

    /// A write that fails (the disk full under the store's reserve) stores
    /// neither the document nor any of its attachments: one transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_stores_neither_the_document_nor_its_attachments() {
        use crate::store::prelude::*;
        let cipher = crate::store::crypt::DocumentCipher::from_hex(&"7".repeat(64)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = crate::lifecycle::record::testing::record()
            .service("cadastre.property-sheet", "cadastre")
            .subject(&[])
            .now(Duration::from_secs(60))
            .build();
        let id = r.id.clone();
        let store = crate::store::SledStore::open(dir.path(), 1 << 20).unwrap();
        store.enqueue(vec![r]).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        let store = crate::store::SledStore::open_with(
            dir.path(),
            &crate::store::Opening {
                cache_bytes: 1 << 20,
                min_free: u64::MAX,
                ..Default::default()
            },
        )
        .unwrap();
        let came = [crate::protocol::xroad::Attachment {
            content_id: "a".into(),
            content_type: "application/pdf".into(),
            name: None,
            bytes: b"%PDF".to_vec(),
        }];
        let (sealed, records) = seal_attachments(&cipher, &id, &came).unwrap();
        let mut docs: Vec<(&str, &[u8])> = vec![(id.as_str(), b"<doc/>")];
        docs.extend(sealed.iter().map(|(i, b)| (i.as_str(), b.as_slice())));
        let e = store
            .update_many(&[id.as_str()], &docs, &move |r: &mut RequestRecord| {
                r.attachments = records.clone();
                true
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Full { .. }), "{e}");
        assert!(store.document(&id).await.unwrap().is_none());
        assert!(store.document(&sealed[0].0).await.unwrap().is_none());
        assert!(store
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .attachments
            .is_empty());
        store.close().await.unwrap();
    }
}
