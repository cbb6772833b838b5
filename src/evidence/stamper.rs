//! The evidence job: asks the TSA for a token on every received
//! document's signature value and on every audit checkpoint, in batches,
//! off the path of exchanges and deliveries. A document waits in the
//! store's index of pending timestamps (durable: a restart loses none);
//! a try that fails is tried again on a backoff, and after
//! `evidence.attempts` tries the timestamp is given up, visibly, with its
//! reason. A checkpoint's token is the file `{seq}.tst` beside the
//! checkpoint file; a checkpoint without one is still to be stamped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use openssl::x509::X509;

use super::tsp::{self, Expect, Token, TspError};
use crate::config::{EvidenceConfig, GatewayConfig};
use crate::ids::RequestId;
use crate::lifecycle::{self, Event, RequestRecord, StampRecord, StampState};
use crate::store::crypt::DocumentCipher;
use crate::store::{QueueStore, StoreError};

/// Why the job could not be set up, or one try failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StampError {
    #[error("evidence configuration: {0}")]
    Config(String),
    #[error("the TSA at {url}: {detail}")]
    Http { url: String, detail: String },
    #[error(transparent)]
    Token(#[from] TspError),
    #[error("the document: {0}")]
    Document(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The imprint a document's token is on: SHA-256 of the decoded bytes of
/// its (one) `ds:SignatureValue`.
pub fn document_imprint(document: &[u8]) -> Result<[u8; 32], StampError> {
    Ok(openssl::sha::sha256(&signature_value(document)?))
}

/// The decoded `ds:SignatureValue` of a signed document.
pub fn signature_value(document: &[u8]) -> Result<Vec<u8>, StampError> {
    let doc = crate::xml::dom::Document::parse(document, &crate::xml::reader::Limits::default())
        .map_err(|e| StampError::Document(e.to_string()))?;
    crate::xml::dsig::signature_value(&doc).map_err(StampError::Document)
}

/// The imprint a checkpoint's token is on: SHA-256 of `"{seq} {hash}"`.
pub fn checkpoint_imprint(seq: u64, hash: &str) -> [u8; 32] {
    openssl::sha::sha256(format!("{seq} {hash}").as_bytes())
}

/// Where the token of checkpoint `seq` is kept, beside the checkpoint file.
pub fn checkpoint_token_path(checkpoints: &crate::audit::Checkpoints, seq: u64) -> PathBuf {
    checkpoints
        .path
        .with_file_name("checkpoints")
        .join(format!("{seq}.tst"))
}

/// The largest TSA reply read.
pub const TSA_MAX_BYTES: usize = 1 << 20;

/// A client of one TSA.
pub struct TsaClient {
    url: String,
    http: reqwest::Client,
    anchors: Vec<X509>,
    cfg: EvidenceConfig,
}

impl TsaClient {
    /// The configured TSA, or `None` without `evidence.tsa_url`.
    pub fn configured(cfg: &EvidenceConfig) -> Result<Option<TsaClient>, StampError> {
        let Some(url) = cfg.tsa_url.clone() else {
            return Ok(None);
        };
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| StampError::Config(format!("{}: {e}", p.display())))
        };
        let trust = cfg.tsa_trust.as_ref().ok_or_else(|| {
            StampError::Config(
                "evidence.tsa_url is set but evidence.tsa_trust (the TSA's CA) is not".into(),
            )
        })?;
        let anchors = tsp::anchors_from_pem(&read(trust)?)
            .map_err(|e| StampError::Config(format!("{}: {e}", trust.display())))?;
        let mut b = crate::pki::fetch::client(cfg.timeout);
        if let Some(ca) = &cfg.tls_ca {
            for c in reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| StampError::Config(format!("{}: {e}", ca.display())))?
            {
                b = b.add_root_certificate(c);
            }
        }
        match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => {
                let mut pem = read(c)?;
                pem.extend(read(k)?);
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| StampError::Config(format!("evidence.tls_cert/tls_key: {e}")))?;
                b = b.identity(id);
            }
            (None, None) => {}
            _ => {
                return Err(StampError::Config(
                    "evidence.tls_cert and evidence.tls_key go together".into(),
                ))
            }
        }
        let http = b
            .build()
            .map_err(|e| StampError::Config(format!("the TSA's HTTP client: {e}")))?;
        Ok(Some(TsaClient {
            url,
            http,
            anchors,
            cfg: cfg.clone(),
        }))
    }

    /// The TSA's trust anchors.
    pub fn anchors(&self) -> &[X509] {
        &self.anchors
    }

    /// One token on `imprint`, checked.
    pub async fn stamp(&self, imprint: &[u8; 32]) -> Result<Token, StampError> {
        let req = tsp::request(imprint, self.cfg.policy.as_deref())?;
        let http = |detail: String| StampError::Http {
            url: self.url.clone(),
            detail,
        };
        let mut post = self
            .http
            .post(&self.url)
            .header("content-type", "application/timestamp-query")
            .body(req.der);
        if let Some(user) = &self.cfg.user {
            post = post.basic_auth(user, self.cfg.password.as_deref());
        }
        let resp = post.send().await.map_err(|e| http(chain(&e)))?;
        if let Some(r) = crate::pki::fetch::redirected(&resp) {
            return Err(http(r));
        }
        let status = resp.status();
        if !status.is_success() {
            return Err(http(format!("HTTP {status}")));
        }
        // Read with the cap as it comes: a reply is a token of a few KiB.
        let body = crate::pki::fetch::body(resp, TSA_MAX_BYTES)
            .await
            .map_err(|e| http(chain(&e)))?;
        Ok(tsp::read_reply(
            &body,
            imprint,
            &self.anchors,
            &Expect {
                nonce: &req.nonce,
                policy: self.cfg.policy.as_deref(),
                now_ms: crate::time::now_ms(),
                tolerance: self.cfg.tolerance,
            },
        )?)
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The job.
pub struct Stamper {
    tsa: TsaClient,
    store: Arc<dyn QueueStore>,
    cipher: Arc<DocumentCipher>,
    checkpoints: crate::audit::Checkpoints,
    /// Checkpoints whose last try failed: when to try again, and tries.
    checkpoint_retry: std::sync::Mutex<std::collections::HashMap<u64, (u64, u32)>>,
    /// The size of the checkpoint file when every checkpoint in it had its
    /// token: until it grows, there is nothing to read (it gains a line an
    /// hour, for years).
    checkpoints_done: std::sync::Mutex<Option<u64>>,
}

impl Stamper {
    pub fn new(
        cfg: &GatewayConfig,
        store: Arc<dyn QueueStore>,
        cipher: Arc<DocumentCipher>,
        checkpoints: crate::audit::Checkpoints,
    ) -> Result<Option<Arc<Stamper>>, StampError> {
        Ok(TsaClient::configured(&cfg.evidence)?.map(|tsa| {
            Arc::new(Stamper {
                tsa,
                store,
                cipher,
                checkpoints,
                checkpoint_retry: Default::default(),
                checkpoints_done: Default::default(),
            })
        }))
    }

    /// Runs rounds every `evidence.interval` until `stop`; a round that
    /// found a full batch is followed by the next at once, so that a
    /// backlog (after the TSA was down, or under load) drains at the TSA's
    /// pace, not one batch per interval.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let mut full = false;
            if self.store.lead("jobs").await {
                match self.round().await {
                    Ok(n) => full = n >= self.tsa.cfg.batch,
                    Err(e) => tracing::warn!(error = %e, "evidence round failed"),
                }
                self.checkpoints_round().await;
            }
            if full && !*stop.borrow() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tsa.cfg.interval) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// When try `tries` (1 = the first) failed, the next is due after the
    /// backoff: `base`·2^(tries−1), at most `cap`, with half of it jittered.
    fn backoff(&self, tries: u32) -> Duration {
        use crate::time::{Backoff, Jitter};
        let c = &self.tsa.cfg;
        let backoff = Backoff {
            base: c.base,
            factor: 2.0,
            max_steps: 20,
            cap: c.cap,
            jitter: Jitter::Half,
            floor: Duration::ZERO,
        };
        backoff.delay(tries, rand::random())
    }

    /// One batch of documents: asks for their tokens (a few at a time) and
    /// records what came of each in one write. Returns how many were tried.
    pub async fn round(&self) -> Result<usize, StampError> {
        let now = self.store.clock_ms();
        // The index is shared with the signed documents: take those whose
        // timestamp is due.
        let due: Vec<RequestRecord> = super::due_of(&*self.store, now, self.tsa.cfg.batch, |r| {
            r.stamp
                .as_ref()
                .is_some_and(|s| s.is_pending() && s.next_ms.unwrap_or(0) <= now)
        })
        .await?;
        crate::metrics::timestamps_pending(due.len());
        if due.is_empty() {
            return Ok(0);
        }
        let tried: Vec<(RequestId, StampRecord)> = futures_util::stream::iter(due)
            .map(|r| async move {
                let prev = r.stamp.clone().unwrap_or_else(|| StampRecord::pending(now));
                let result = self.stamp_document(&r).await;
                (
                    r.id.clone(),
                    self.outcome(prev, result, self.store.clock_ms()),
                )
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let n = tried.len();
        let by_id: std::collections::HashMap<RequestId, StampRecord> = tried.into_iter().collect();
        let ids: Vec<&str> = by_id.keys().map(RequestId::as_str).collect();
        let now = self.store.clock_ms();
        let change = |r: &mut RequestRecord| match by_id.get(r.id.as_str()) {
            Some(s) => lifecycle::apply(r, &Event::Stamped { stamp: s }, now),
            None => false,
        };
        self.store.update_many(&ids, &[], &change).await?;
        Ok(n)
    }

    async fn stamp_document(&self, r: &RequestRecord) -> Result<Token, StampError> {
        // Found when the answer was verified; a record from before that
        // was kept has its document read for it.
        let known = r
            .stamp
            .as_ref()
            .and_then(|s| s.imprint.as_deref())
            .and_then(|h| crate::xml::dsig::parse_sha256_pin(h).ok());
        if let Some(imprint) = known {
            return self.tsa.stamp(&imprint).await;
        }
        let id = r.document_id.as_deref().unwrap_or(&r.id);
        let sealed = self
            .store
            .document(id)
            .await?
            .ok_or_else(|| StampError::Document("not in the store".into()))?;
        let plain = self
            .cipher
            .open(id, &sealed)
            .map_err(|e| StampError::Document(e.to_string()))?;
        let imprint = document_imprint(&plain)?;
        self.tsa.stamp(&imprint).await
    }

    /// The record of a try: stamped, tried again later, or given up.
    /// `now` is the store's clock, which the index of pending timestamps
    /// is read by (shared by every instance on PostgreSQL).
    fn outcome(
        &self,
        mut s: StampRecord,
        result: Result<Token, StampError>,
        now: u64,
    ) -> StampRecord {
        s.tries += 1;
        match result {
            Ok(t) => {
                crate::metrics::timestamp("document", "stamped");
                s.state = StampState::Stamped;
                s.next_ms = None;
                s.token = Some(base64::engine::general_purpose::STANDARD.encode(&t.der));
                s.time_ms = Some(t.time_ms);
                s.tsa = Some(t.tsa);
                s.serial = Some(t.serial);
                s.reason = None;
                // The token names what it is on.
                s.imprint = None;
            }
            Err(e) => {
                let reason = e.to_string();
                // A document that cannot be read will not be readable later.
                let hopeless = matches!(e, StampError::Document(_));
                if hopeless || s.tries >= self.tsa.cfg.attempts {
                    crate::metrics::timestamp("document", "given-up");
                    tracing::error!(error = %reason, tries = s.tries, "a document's timestamp is given up");
                    s.state = StampState::Failed;
                    s.next_ms = None;
                } else {
                    crate::metrics::timestamp("document", "failed");
                    tracing::warn!(error = %reason, tries = s.tries, "a timestamp failed; it is tried again");
                    s.next_ms = Some(now + self.backoff(s.tries).as_millis() as u64);
                }
                s.reason = Some(reason);
            }
        }
        s
    }

    /// Stamps the checkpoints that have no token yet (each once due).
    pub async fn checkpoints_round(&self) {
        let size = std::fs::metadata(&self.checkpoints.path)
            .map(|m| m.len())
            .ok();
        if size.is_some() && *crate::sync::lock(&self.checkpoints_done) == size {
            return;
        }
        let list = match self.checkpoints.read() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit checkpoints to stamp them");
                return;
            }
        };
        let now = crate::time::now_ms();
        for c in list {
            let path = checkpoint_token_path(&self.checkpoints, c.seq);
            if path.exists() {
                continue;
            }
            let retry = crate::sync::lock(&self.checkpoint_retry)
                .get(&c.seq)
                .copied();
            if retry.is_some_and(|(at, _)| at > now) {
                continue;
            }
            match self.tsa.stamp(&checkpoint_imprint(c.seq, &c.hash)).await {
                Ok(t) => {
                    if let Err(e) = write_durably(&path, &t.der) {
                        tracing::warn!(error = %e, path = %path.display(), "cannot keep a checkpoint's token");
                        let tries = retry.map_or(1, |(_, n)| n + 1);
                        let at = now + self.backoff(tries).as_millis() as u64;
                        crate::sync::lock(&self.checkpoint_retry).insert(c.seq, (at, tries));
                        continue;
                    }
                    crate::metrics::timestamp("checkpoint", "stamped");
                    crate::sync::lock(&self.checkpoint_retry).remove(&c.seq);
                }
                Err(e) => {
                    crate::metrics::timestamp("checkpoint", "failed");
                    tracing::warn!(error = %e, seq = c.seq, "a checkpoint's timestamp failed; it is tried again");
                    let tries = retry.map_or(1, |(_, n)| n + 1);
                    let at = now + self.backoff(tries).as_millis() as u64;
                    crate::sync::lock(&self.checkpoint_retry).insert(c.seq, (at, tries));
                    // The TSA is likely down for the others too.
                    return;
                }
            }
        }
        if crate::sync::lock(&self.checkpoint_retry).is_empty() {
            *crate::sync::lock(&self.checkpoints_done) = size;
        }
    }
}

/// Writes a file whole or not at all, and syncs it and its folder.
pub(super) fn write_durably(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}
