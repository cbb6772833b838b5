//! The evidence job's other half: the X-Road security server's signed
//! document of each message that brought a document (ASiC-E: the message
//! as the security server logged it, its signature and the timestamp over
//! it), asked for through [`SignedDocSource`] after the answer, checked
//! against what the gateway kept, and kept beside the document as
//! `{request}.asice`.
//!
//! The security server timestamps its log in batches, so the container
//! is not there at once: a 404 is tried again on the evidence backoff
//! (`evidence.base`, `evidence.cap`), and once the document is older than
//! `evidence.signed_document_force_after` the security server is asked to
//! `force` its timestamp. A container that does not hold the document
//! byte for byte (a security server may answer for another message) is
//! refused with its reason and tried again; after
//! `evidence.signed_document_attempts` tries the signed document is given
//! up, visibly (`failed` with the reason, an error in the log, the
//! `jumgw_signed_documents_total{result="given-up"}` metric).
//!
//! Not checked here: X-Road's own signature in the container, which needs
//! the instance's global configuration (the verification configuration);
//! NIIS's `asicverifier` does that, offline (see the README's dossier
//! section). Documents come here only by [`QueueStore::evidence_due`],
//! the index shared with the timestamps.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::container::{Container, ContainerError, Limits};
use crate::config::{EvidenceConfig, GatewayConfig, RegistryProtocol};
use crate::lifecycle::{self, Event, RequestRecord, SignedDocRecord, SignedDocState};
use crate::store::crypt::DocumentCipher;
use crate::store::{QueueStore, StoreError};

/// The largest signed document read: the document, its attachments and a
/// few KiB of signature and hash chains.
pub const SIGNED_DOC_MAX_BYTES: usize = 64 << 20;

/// What the security server's ASiC-E says it is.
pub const ASIC_MIMETYPE: &str = "application/vnd.etsi.asic-e+zip";

/// The message as the security server logged it.
pub const MESSAGE_ENTRY: &str = "message.xml";

/// What the security server answered when asked for a message's signed
/// document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The container (200).
    Container(Vec<u8>),
    /// Not timestamped yet (404), with the security server's message.
    NotYet(String),
}

/// Where signed documents come from: the daemon implements it over the
/// exchange's client of the registry's security server (`evidence` does not
/// use `exchange`), tests over a fake.
#[async_trait::async_trait]
pub trait SignedDocSource: Send + Sync {
    /// The signed document of message `message_id` sent to `registry`,
    /// with the security server asked to timestamp it now when `force`.
    /// An error is the reason in words (tried again later).
    async fn fetch(&self, registry: &str, message_id: &str, force: bool)
        -> Result<Fetched, String>;
}

/// Why one try failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignedDocError {
    /// The security server could not be asked, or answered an error.
    #[error("the security server: {0}")]
    Fetch(String),
    /// Not timestamped yet (404).
    #[error("not timestamped yet: {0}")]
    NotYet(String),
    /// What came is not this document's signed document.
    #[error("the signed document is refused: {0}")]
    Refused(#[from] BindingError),
    /// Our own copy of the document cannot be read: it will not be
    /// readable later either.
    #[error("the document: {0}")]
    Document(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a container is not the signed document of a document: the rules
/// the job keeps it by and `dossier verify` holds it to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    #[error("not a readable ASiC-E container: {0}")]
    Container(#[from] ContainerError),
    #[error("its entries uncompress to more than {cap} bytes together, what a signed document may hold, reached at entry {name:?}")]
    TooLarge { cap: u64, name: String },
    #[error("its mimetype is {0:?}, not {ASIC_MIMETYPE}")]
    Mimetype(String),
    #[error("it has no {MESSAGE_ENTRY}")]
    NoMessage,
    #[error("its {MESSAGE_ENTRY} ({found} bytes, SHA-256 {found_sha256}) is not the document ({want} bytes, SHA-256 {want_sha256}): the signed document of another message")]
    MessageDiffers {
        found: u64,
        found_sha256: String,
        want: u64,
        want_sha256: String,
    },
    #[error("it has {found} attachment entries (attachment1..), the document {want} attachments")]
    AttachmentCount { found: usize, want: usize },
    #[error("its attachment{n} is not the document's attachment {n}")]
    AttachmentDiffers { n: usize },
    #[error("it has no signature (META-INF/*signatures*.xml)")]
    NoSignature,
}

/// What a container that holds a document says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Its signature entries (`META-INF/signatures.xml`, ...).
    pub signatures: Vec<String>,
    /// Whether it holds the security server's timestamp
    /// (`META-INF/timestamp.tst` or a timestamp hash chain).
    pub timestamped: bool,
    /// Whether it holds the attachments (a security server that logs no
    /// bodies, or signs in batches, leaves them out).
    pub attachments_logged: bool,
    /// Whether its `message.xml` is the document's bytes themselves, or
    /// their text written as UTF-8 (how NIIS's security server logs an
    /// answer that came in another charset or with a byte order mark).
    pub message_as_text: bool,
}

/// An attachment as it is compared: its size and SHA-256 (the dossier's
/// reader has these of every entry without loading it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    pub sha256: [u8; 32],
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            size: bytes.len() as u64,
            sha256: openssl::sha::sha256(bytes),
        }
    }
}

/// Checks that `container` is the security server's signed document of
/// `document` (the SOAP message exactly as received, in `charset` when its
/// Content-Type named one) and its `attachments`: an ASiC-E container,
/// read strictly, whose `mimetype` is [`ASIC_MIMETYPE`], whose
/// `message.xml` is the document byte for byte or its text written as
/// UTF-8 (NIIS's security server logs the message's text so: an answer in
/// ISO-8859-1 is logged as UTF-8), whose `attachment1`.. are the
/// attachments in order and no more, or none at all (a security server
/// that logs no bodies leaves them out), and which has a
/// `META-INF/*signatures*.xml`.
pub fn bind(
    container: &[u8],
    document: &[u8],
    charset: Option<&str>,
    attachments: &[Digest],
) -> Result<Bound, BindingError> {
    let limits = Limits {
        max_total: (SIGNED_DOC_MAX_BYTES as u64) * 2,
    };
    let c = Container::open(std::io::Cursor::new(container), limits).map_err(|e| match e {
        // Our cap, not the dossier reader's --max-total.
        ContainerError::Total { name, cap } => BindingError::TooLarge { cap, name },
        e => BindingError::Container(e),
    })?;
    let mimetype = match c.load("mimetype", 256) {
        Some(m) => m?,
        None => return Err(BindingError::Mimetype("(none)".into())),
    };
    if mimetype != ASIC_MIMETYPE.as_bytes() {
        return Err(BindingError::Mimetype(
            String::from_utf8_lossy(&mimetype).into_owned(),
        ));
    }
    let hex = crate::xml::dsig::hex;
    let message = c.entry(MESSAGE_ENTRY).ok_or(BindingError::NoMessage)?;
    let same = |m: &crate::evidence::container::Entry, d: &[u8]| {
        m.size == d.len() as u64 && m.sha256 == openssl::sha::sha256(d)
    };
    // The bytes as received, or their text as UTF-8 (the same bytes for a
    // UTF-8 answer without a byte order mark).
    let text = crate::protocol::xroad::logged_text(document, charset).ok();
    let (document, message_as_text) = if same(message, document) {
        (document, false)
    } else {
        match text.as_deref() {
            Some(t) if same(message, t) => (t, true),
            _ => {
                return Err(BindingError::MessageDiffers {
                    found: message.size,
                    found_sha256: hex(&message.sha256),
                    want: document.len() as u64,
                    want_sha256: hex(&openssl::sha::sha256(document)),
                })
            }
        }
    };
    let want_sha = openssl::sha::sha256(document);
    // The digests agree; the bytes too (the entry is within its size).
    match c.load(MESSAGE_ENTRY, document.len() as u64) {
        Some(Ok(m)) if m == document => {}
        Some(Err(e)) => return Err(e.into()),
        _ => {
            return Err(BindingError::MessageDiffers {
                found: message.size,
                found_sha256: hex(&message.sha256),
                want: document.len() as u64,
                want_sha256: hex(&want_sha),
            })
        }
    }
    // X-Road names attachments `attachment1`.. (AsicContainerEntries).
    let found = c
        .entries()
        .iter()
        .filter(|e| e.name.starts_with("attachment"))
        .count();
    let attachments_logged = found > 0 || attachments.is_empty();
    if attachments_logged && found != attachments.len() {
        return Err(BindingError::AttachmentCount {
            found,
            want: attachments.len(),
        });
    }
    for (i, a) in attachments
        .iter()
        .enumerate()
        .filter(|_| attachments_logged)
    {
        let n = i + 1;
        let e = c
            .entry(&format!("attachment{n}"))
            .ok_or(BindingError::AttachmentDiffers { n })?;
        if e.size != a.size || e.sha256 != a.sha256 {
            return Err(BindingError::AttachmentDiffers { n });
        }
    }
    let signatures: Vec<String> = c
        .entries()
        .iter()
        .filter(|e| is_signature_entry(&e.name))
        .map(|e| e.name.clone())
        .collect();
    if signatures.is_empty() {
        return Err(BindingError::NoSignature);
    }
    let timestamped = c.entries().iter().any(|e| {
        e.name == "META-INF/timestamp.tst" || e.name == "META-INF/ts-hash-chain-result.xml"
    });
    Ok(Bound {
        signatures,
        timestamped,
        attachments_logged,
        message_as_text,
    })
}

/// X-Road's pattern of a signature entry: `META-INF/.*signatures.*\.xml`.
fn is_signature_entry(name: &str) -> bool {
    name.strip_prefix("META-INF/")
        .and_then(|rest| rest.strip_suffix(".xml"))
        .is_some_and(|stem| stem.contains("signatures"))
}

/// Where a request's signed document is stored.
pub fn document_id(request: &str) -> String {
    format!("{request}.asice")
}

/// The job's settings, from `evidence.*`.
#[derive(Debug, Clone)]
pub struct Policy {
    pub interval: Duration,
    pub batch: usize,
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub force_after: Duration,
}

impl Policy {
    pub fn of(cfg: &EvidenceConfig) -> Policy {
        Policy {
            interval: cfg.interval,
            batch: cfg.batch,
            attempts: cfg.signed_document_attempts,
            base: cfg.base,
            cap: cfg.cap,
            force_after: cfg.signed_document_force_after,
        }
    }

    /// When try `tries` (1 = the first) failed, the next is due after
    /// `base`·2^(tries−1), at most `cap`, the upper half jittered by
    /// `jitter` in [0, 1).
    pub fn backoff(&self, tries: u32, jitter: f64) -> Duration {
        use crate::time::{Backoff, Jitter};
        Backoff {
            base: self.base,
            factor: 2.0,
            max_steps: 20,
            cap: self.cap,
            jitter: Jitter::Half,
            floor: Duration::ZERO,
        }
        .delay(tries, jitter)
    }
}

/// The job.
pub struct SignedDocs {
    source: Arc<dyn SignedDocSource>,
    store: Arc<dyn QueueStore>,
    cipher: Arc<DocumentCipher>,
    policy: Policy,
}

/// One try's result: the new record, and the container to keep with it.
struct Tried {
    id: crate::ids::RequestId,
    record: SignedDocRecord,
    container: Option<Vec<u8>>,
}

impl SignedDocs {
    /// The job, when a registry speaks X-Road (with or without a TSA).
    pub fn new(
        cfg: &GatewayConfig,
        store: Arc<dyn QueueStore>,
        cipher: Arc<DocumentCipher>,
        source: Arc<dyn SignedDocSource>,
    ) -> Option<Arc<SignedDocs>> {
        cfg.registries
            .values()
            .any(|r| r.protocol == RegistryProtocol::XRoad)
            .then(|| {
                Arc::new(SignedDocs::with(
                    Policy::of(&cfg.evidence),
                    store,
                    cipher,
                    source,
                ))
            })
    }

    pub fn with(
        policy: Policy,
        store: Arc<dyn QueueStore>,
        cipher: Arc<DocumentCipher>,
        source: Arc<dyn SignedDocSource>,
    ) -> SignedDocs {
        SignedDocs {
            source,
            store,
            cipher,
            policy,
        }
    }

    /// Runs rounds every `evidence.interval` until `stop`; a full batch is
    /// followed by the next at once.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut full = false;
            if self.store.lead("jobs").await {
                match self.round().await {
                    Ok(n) => full = n >= self.policy.batch,
                    Err(e) => tracing::warn!(error = %e, "signed-document round failed"),
                }
            }
            if full && !*stop.borrow() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.policy.interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One batch: the due signed documents asked for (a few at a time),
    /// what came of each recorded in one write, kept containers stored in
    /// it. Returns how many were tried.
    pub async fn round(&self) -> Result<usize, SignedDocError> {
        let now = self.store.clock_ms();
        // The index is shared with the timestamps: take those whose signed
        // document is due.
        let due: Vec<RequestRecord> = super::due_of(&*self.store, now, self.policy.batch, |r| {
            r.signed_document
                .as_ref()
                .is_some_and(|s| s.is_pending() && s.next_ms.unwrap_or(0) <= now)
        })
        .await?;
        crate::metrics::signed_documents_pending(due.len());
        if due.is_empty() {
            return Ok(0);
        }
        let tried: Vec<Tried> = futures_util::stream::iter(due)
            .map(|r| async move {
                let prev = r
                    .signed_document
                    .clone()
                    .unwrap_or_else(|| SignedDocRecord::pending("", now));
                let result = self.try_one(&r, &prev, now).await;
                let jitter: f64 = rand::random();
                let (record, container) = outcome(
                    &self.policy,
                    &r.id,
                    prev,
                    result,
                    self.store.clock_ms(),
                    jitter,
                );
                Tried {
                    id: r.id.clone(),
                    record,
                    container,
                }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let n = tried.len();
        let sealed: Vec<(String, Vec<u8>)> = tried
            .iter()
            .filter_map(|t| {
                let c = t.container.as_ref()?;
                let id = document_id(&t.id);
                match self.cipher.seal(&id, c) {
                    Ok(s) => Some((id, s)),
                    Err(e) => {
                        tracing::error!(request = %t.id, error = %e, "cannot seal a signed document");
                        None
                    }
                }
            })
            .collect();
        let by_id: std::collections::HashMap<crate::ids::RequestId, SignedDocRecord> = tried
            .into_iter()
            // A container that could not be sealed is not recorded as
            // kept: the record keeps its pending state and is tried again.
            .filter(|t| {
                t.container.is_none() || sealed.iter().any(|(id, _)| *id == document_id(&t.id))
            })
            .map(|t| (t.id, t.record))
            .collect();
        let ids: Vec<&str> = by_id.keys().map(|id| id.as_str()).collect();
        let docs: Vec<(&str, &[u8])> = sealed
            .iter()
            .map(|(id, b)| (id.as_str(), b.as_slice()))
            .collect();
        let now = self.store.clock_ms();
        let change = |r: &mut RequestRecord| match by_id.get(r.id.as_str()) {
            Some(s) => lifecycle::apply(r, &Event::SignedDocument { signed: s }, now),
            None => false,
        };
        self.store.update_many(&ids, &docs, &change).await?;
        Ok(n)
    }

    async fn try_one(
        &self,
        r: &RequestRecord,
        s: &SignedDocRecord,
        now: u64,
    ) -> Result<Vec<u8>, SignedDocError> {
        let (document, attachments) = self.kept(r).await?;
        let force = now.saturating_sub(s.since_ms) >= self.policy.force_after.as_millis() as u64;
        match self
            .source
            .fetch(&r.registry, &s.message_id, force)
            .await
            .map_err(SignedDocError::Fetch)?
        {
            Fetched::NotYet(why) => Err(SignedDocError::NotYet(why)),
            Fetched::Container(c) => {
                if c.len() > SIGNED_DOC_MAX_BYTES {
                    return Err(SignedDocError::Fetch(format!(
                        "the signed document has {} bytes, more than {SIGNED_DOC_MAX_BYTES}",
                        c.len()
                    )));
                }
                bind(&c, &document, r.charset.as_deref(), &attachments)?;
                Ok(c)
            }
        }
    }

    /// The document as stored, opened, and the digests of its attachments
    /// (opened one at a time).
    async fn kept(&self, r: &RequestRecord) -> Result<(Vec<u8>, Vec<Digest>), SignedDocError> {
        let open = |id: String| async move {
            let sealed = self
                .store
                .document(&id)
                .await?
                .ok_or_else(|| SignedDocError::Document(format!("{id} is not in the store")))?;
            self.cipher
                .open(&id, &sealed)
                .map_err(|e| SignedDocError::Document(e.to_string()))
        };
        let doc = open(r.document_id.clone().unwrap_or_else(|| r.id.to_string())).await?;
        let mut atts = Vec::with_capacity(r.attachments.len());
        for a in &r.attachments {
            atts.push(Digest::of(&open(a.document_id.clone()).await?));
        }
        Ok((doc, atts))
    }
}

/// The record of a try: kept (with the container to store), tried again
/// later, or given up. `now` is the store's clock, which the index is
/// read by.
fn outcome(
    policy: &Policy,
    request: &str,
    mut s: SignedDocRecord,
    result: Result<Vec<u8>, SignedDocError>,
    now: u64,
    jitter: f64,
) -> (SignedDocRecord, Option<Vec<u8>>) {
    s.tries += 1;
    match result {
        Ok(c) => {
            crate::metrics::signed_document("kept");
            tracing::info!(request = %request, message_id = %s.message_id, tries = s.tries, "the signed document is kept");
            s.state = SignedDocState::Kept;
            s.next_ms = None;
            s.document_id = Some(document_id(request));
            s.sha256 = Some(crate::xml::dsig::hex(&openssl::sha::sha256(&c)));
            s.reason = None;
            (s, Some(c))
        }
        Err(e) => {
            let reason = e.to_string();
            let hopeless = matches!(e, SignedDocError::Document(_));
            if hopeless || s.tries >= policy.attempts {
                crate::metrics::signed_document("given-up");
                tracing::error!(request = %request, message_id = %s.message_id, tries = s.tries, error = %reason, "a signed document is given up");
                s.state = SignedDocState::Failed;
                s.next_ms = None;
                s.reason = Some(format!("given up after {} tries: {reason}", s.tries));
            } else {
                let result = match e {
                    SignedDocError::NotYet(_) => "not-yet",
                    SignedDocError::Refused(_) => "refused",
                    _ => "failed",
                };
                crate::metrics::signed_document(result);
                if result == "not-yet" {
                    tracing::debug!(request = %request, message_id = %s.message_id, tries = s.tries, "the signed document is not timestamped yet");
                } else {
                    tracing::warn!(request = %request, message_id = %s.message_id, tries = s.tries, error = %reason, "a signed document try failed; it is tried again");
                }
                s.next_ms = Some(now + policy.backoff(s.tries, jitter).as_millis() as u64);
                s.reason = Some(reason);
            }
            (s, None)
        }
    }
}

#[cfg(test)]
mod tests;
