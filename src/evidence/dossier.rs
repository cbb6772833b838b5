//! The case dossier: one ASiC-E container (ETSI EN 319 162-1) with all a
//! later reader needs to know what the registries said about a case,
//! when, and that it was valid then, with no gateway running:
//!
//! | file | what |
//! |---|---|
//! | `mimetype` | `application/vnd.etsi.asic-e+zip`, first and stored |
//! | `case.json` | the case's facts: number, legal basis, purpose, official, each request with its attempts and the evidence it has |
//! | `documents/{request}.xml` | each document byte for byte as the registry signed it |
//! | `documents/{request}.attachment-{n}` | X-Road: what came with the document (SOAP with attachments, MTOM), n from 1, byte for byte |
//! | `evidence/{request}.asice` | X-Road: the security server's signed document of the message that brought the document (its `message.xml` is the document, its `attachmentN` the attachments) |
//! | `evidence/{request}.tst` | its timestamp token (RFC 3161) on the SHA-256 of its decoded `ds:SignatureValue` |
//! | `evidence/{request}.ocsp` | the OCSP response that confirmed its signer was not revoked |
//! | `evidence/crl-{sha256}.crl` | a CRL that confirmed it, once per CRL however many documents it speaks for |
//! | `certificates/*.pem` | the registries' CAs, the TSA's CA, our seal's CA |
//! | `audit/entries.jsonl` | the case's audit entries, each with its place in the chain |
//! | `audit/chain.txt` | `seq prev hash` of every entry from the case's first to the checkpoint after its last: the links, without other people's entries |
//! | `audit/checkpoint.txt`, `audit/checkpoint.tst` | that checkpoint (`seq hash`) and its timestamp token |
//! | `META-INF/manifest.xml` | every file but `META-INF/*`, with its media type |
//! | `META-INF/signatures0.xml` | our seal (XAdES B-T) over every file but `META-INF/*` |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::stamper::{checkpoint_imprint, checkpoint_token_path, TsaClient};
use crate::audit::{AuditKey, Checkpoints};
use crate::lifecycle::{RequestRecord, SignedDocState};
use crate::store::crypt::DocumentCipher;
use crate::store::trail::Entry;
use crate::store::{QueueStore, StoreError};
use crate::xml::xades::{self, DataObject};
use crate::xml::SigningKey;

pub const MIMETYPE: &str = "application/vnd.etsi.asic-e+zip";
pub const SIGNATURE_FILE: &str = "META-INF/signatures0.xml";
pub const MANIFEST_FILE: &str = "META-INF/manifest.xml";
/// The longest chain excerpt kept: beyond it the audit excerpt carries
/// its entries' own hashes but not every link to the checkpoint.
const MAX_CHAIN: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DossierError {
    #[error("no case {0}")]
    NoCase(String),
    #[error("the seal: {0}")]
    Seal(String),
    #[error("the TSA, for the dossier's signature timestamp: {0}")]
    Tsa(String),
    #[error("a document of the case: {0}")]
    Document(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the container: {0}")]
    Zip(String),
}

/// The case's facts, as `case.json` holds them.
#[derive(Debug, Serialize, Deserialize)]
pub struct CaseFacts {
    pub case: String,
    pub exported_ms: u64,
    pub exported: String,
    pub exported_by: String,
    pub requests: Vec<RequestFacts>,
    pub audit: AuditFacts,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFacts {
    pub id: String,
    pub client: String,
    pub service: String,
    pub registry: String,
    pub legal_basis: String,
    pub purpose: String,
    pub official: String,
    pub subject: BTreeMap<String, String>,
    pub state: String,
    pub created_ms: u64,
    pub created: String,
    pub attempts: Vec<crate::lifecycle::AttemptRecord>,
    /// The registry signer's certificate the gateway accepted the document
    /// from: its subject and the SHA-256 (hex) of its DER. `dossier verify`
    /// accepts the document only signed by exactly that certificate.
    pub signer: Option<String>,
    #[serde(default)]
    pub signer_sha256: Option<String>,
    /// The trust anchor (of the registry's `signer_ca`) that certificate
    /// chained to: its subject, when the dossier carries it, and SHA-256.
    #[serde(default)]
    pub signer_anchor: Option<String>,
    #[serde(default)]
    pub signer_anchor_sha256: Option<String>,
    /// `documents/{id}.xml`, when it has a document.
    pub document: Option<String>,
    pub revocation: Option<serde_json::Value>,
    /// `evidence/{id}.ocsp`, when its OCSP response is kept.
    pub ocsp: Option<String>,
    /// `evidence/crl-{sha256}.crl`, when a CRL confirmed its signer's status.
    #[serde(default)]
    pub crl: Option<String>,
    pub timestamp: Option<serde_json::Value>,
    /// `evidence/{id}.tst`, when it is stamped.
    pub timestamp_token: Option<String>,
    /// X-Road: what came with its document, each a file of the dossier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentFacts>,
    /// X-Road: its security server's signed document as the gateway
    /// recorded it (`state` kept, pending or failed, `message_id`,
    /// `sha256`, `reason`). A document that names one is bound to it
    /// instead of to a signer certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_document: Option<serde_json::Value>,
    /// `evidence/{id}.asice`, when it is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_document_file: Option<String>,
    /// X-Road: the charset its answer's Content-Type named; the document
    /// is in it (kept as it came), whatever its XML declaration says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
}

/// One attachment of a document, as `case.json` lists it.
#[derive(Debug, Serialize, Deserialize)]
pub struct AttachmentFacts {
    /// `documents/{request}.attachment-{n}`.
    pub file: String,
    pub content_id: String,
    /// As the registry sent it.
    pub content_type: String,
    /// As the registry named it (never used as a path).
    #[serde(default)]
    pub name: Option<String>,
    pub size: u64,
    pub sha256: String,
}

/// Where a request's attachment `n` (from 1) is in the dossier.
pub fn attachment_file(request: &str, n: usize) -> String {
    format!("documents/{request}.attachment-{n}")
}

/// Where a request's X-Road signed document is in the dossier.
pub fn signed_document_file(request: &str) -> String {
    format!("evidence/{request}.asice")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditFacts {
    pub entries: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The checkpoint the chain excerpt reaches, if one does.
    pub checkpoint: Option<CheckpointFacts>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointFacts {
    pub seq: u64,
    pub hash: String,
    /// Its token is in the dossier.
    pub stamped: bool,
}

/// One line of `audit/entries.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditLine {
    pub entry: Entry,
}

/// What the daemon builds dossiers with.
pub struct Dossiers {
    pub store: Arc<dyn QueueStore>,
    pub cipher: Arc<DocumentCipher>,
    pub audit_key: Arc<AuditKey>,
    pub seal: Arc<SigningKey>,
    pub tsa: Option<TsaClient>,
    /// (file name, PEM) of every CA certificate the dossier carries.
    pub certificates: Vec<(String, Vec<u8>)>,
    pub checkpoints: Checkpoints,
}

/// Cases whose dossier is being exported, so that retention does not
/// take their records away meanwhile; and the case retention is removing
/// now, which an export waits for.
#[derive(Default)]
struct Busy {
    exporting: HashMap<String, usize>,
    purging: BTreeSet<String>,
}

fn busy() -> &'static std::sync::Mutex<Busy> {
    static B: std::sync::OnceLock<std::sync::Mutex<Busy>> = std::sync::OnceLock::new();
    B.get_or_init(Default::default)
}

/// Held while a case's dossier is built.
pub struct Exporting(String);

impl Exporting {
    pub async fn start(case: &str) -> Exporting {
        loop {
            {
                let mut b = crate::sync::lock(busy());
                if !b.purging.contains(case) {
                    *b.exporting.entry(case.to_owned()).or_default() += 1;
                    return Exporting(case.to_owned());
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Exporting {
    fn drop(&mut self) {
        let mut b = crate::sync::lock(busy());
        if let Some(n) = b.exporting.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                b.exporting.remove(&self.0);
            }
        }
    }
}

/// Held while retention removes a record of a case; `None` while an
/// export of the case runs (the record is kept for a later purge).
pub struct Purging(String);

impl Purging {
    pub fn start(case: &str) -> Option<Purging> {
        let mut b = crate::sync::lock(busy());
        if b.exporting.contains_key(case) {
            return None;
        }
        b.purging.insert(case.to_owned());
        Some(Purging(case.to_owned()))
    }
}

impl Drop for Purging {
    fn drop(&mut self) {
        crate::sync::lock(busy()).purging.remove(&self.0);
    }
}

fn mime_of(name: &str) -> &'static str {
    // An attachment is what the registry sent: its own type is in
    // case.json, not trusted to describe it here.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|e| e.starts_with("attachment-"))
    {
        return "application/octet-stream";
    }
    match name.rsplit('.').next() {
        Some("asice") => "application/vnd.etsi.asic-e+zip",
        Some("xml") => "text/xml",
        Some("json") => "application/json",
        Some("jsonl") => "application/jsonl",
        Some("tst") => "application/vnd.etsi.timestamp-token",
        Some("ocsp") => "application/ocsp-response",
        Some("crl") => "application/pkix-crl",
        Some("pem") => "application/pem-certificate-chain",
        _ => "text/plain",
    }
}

/// The manifest of `files` (name, media type), as `dossier verify`
/// rebuilds it to compare byte for byte.
pub fn manifest(files: &[(String, String)]) -> Vec<u8> {
    let mut m = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<manifest:manifest xmlns:manifest=\"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0\" manifest:version=\"1.2\">\n\
<manifest:file-entry manifest:full-path=\"/\" manifest:media-type=\"application/vnd.etsi.asic-e+zip\"/>\n",
    );
    for (name, mime) in files {
        m.push_str(&format!(
            "<manifest:file-entry manifest:full-path=\"{}\" manifest:media-type=\"{}\"/>\n",
            crate::xml::escape(name),
            crate::xml::escape(mime)
        ));
    }
    m.push_str("</manifest:manifest>\n");
    m.into_bytes()
}

fn b64d(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

impl Dossiers {
    /// From the configuration: our seal (a file or a key on a token), the
    /// TSA, and the CA certificates each dossier carries (the registries'
    /// signer CAs, the TSA's, our seal's), each once.
    pub fn configured(
        cfg: &crate::config::GatewayConfig,
        store: Arc<dyn QueueStore>,
        cipher: Arc<DocumentCipher>,
        audit_key: Arc<AuditKey>,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Dossiers>, DossierError> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| DossierError::Seal(format!("{}: {e}", p.display())))
        };
        let g = &cfg.gateway;
        let seal = crate::pki::pkcs11::signing_key(&g.sign_key, &read(&g.sign_cert)?)
            .map_err(DossierError::Seal)?;
        let mut certificates: Vec<(String, Vec<u8>)> = Vec::new();
        let mut add = |name: String, path: &std::path::Path| -> Result<(), DossierError> {
            let pem = read(path)?;
            if !certificates.iter().any(|(_, p)| *p == pem) {
                certificates.push((name, pem));
            }
            Ok(())
        };
        for (name, r) in &cfg.registries {
            if let Some(ca) = &r.signer_ca {
                add(format!("{name}-ca.pem"), ca)?;
            }
        }
        if let Some(p) = &cfg.evidence.tsa_trust {
            add("tsa-ca.pem".into(), p)?;
        }
        if let Some(p) = &cfg.evidence.seal_trust {
            add("seal-ca.pem".into(), p)?;
        }
        Ok(Arc::new(Dossiers {
            store,
            cipher,
            audit_key,
            seal: Arc::new(seal),
            tsa: TsaClient::configured(&cfg.evidence)
                .map_err(|e| DossierError::Tsa(e.to_string()))?,
            certificates,
            checkpoints: Checkpoints {
                path: data_dir.join("audit").join("checkpoints.log"),
            },
        }))
    }

    /// The dossier of `case`, exported by `actor`.
    /// Only the requests `visible` lets through are in it.
    pub async fn build(
        &self,
        case: &str,
        actor: &str,
        visible: &(dyn Fn(&RequestRecord) -> bool + Sync),
    ) -> Result<Vec<u8>, DossierError> {
        let _guard = Exporting::start(case).await;
        let mut records: Vec<RequestRecord> = self
            .store
            .by_case(case)
            .await?
            .into_iter()
            .filter(|r| visible(r))
            .collect();
        if records.is_empty() {
            return Err(DossierError::NoCase(case.to_owned()));
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        let now = crate::time::now_ms();
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut facts = Vec::new();
        for r in &records {
            facts.push(self.request_files(r, &mut files).await?);
        }
        self.checkpoint_now().await;
        let (audit, audit_files) = self.audit_excerpt(&records).await?;
        files.extend(audit_files);
        for (name, pem) in &self.certificates {
            files.push((format!("certificates/{name}"), pem.clone()));
        }
        let facts = CaseFacts {
            case: case.to_owned(),
            exported_ms: now,
            exported: crate::time::rfc3339_secs(now),
            exported_by: actor.to_owned(),
            requests: facts,
            audit,
        };
        let json =
            serde_json::to_vec_pretty(&facts).map_err(|e| DossierError::Zip(e.to_string()))?;
        files.insert(0, ("case.json".into(), json));

        let listed: Vec<(String, String)> = files
            .iter()
            .map(|(n, _)| (n.clone(), mime_of(n).to_owned()))
            .collect();
        let signing_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let seal = self.seal.clone();
        let objects: Vec<(String, Vec<u8>, String)> = files
            .iter()
            .zip(&listed)
            .map(|((n, b), (_, m))| (n.clone(), b.clone(), m.clone()))
            .collect();
        // The seal may be on a token: a blocking call.
        let signed = tokio::task::spawn_blocking(move || {
            let objs: Vec<DataObject<'_>> = objects
                .iter()
                .map(|(uri, bytes, mime)| DataObject { uri, bytes, mime })
                .collect();
            xades::sign(&objs, &seal, &signing_time)
        })
        .await
        .map_err(|e| DossierError::Seal(e.to_string()))?
        .map_err(|e| DossierError::Seal(e.to_string()))?;
        let token = match &self.tsa {
            Some(tsa) => Some(
                tsa.stamp(&openssl::sha::sha256(&signed.timestamp_input))
                    .await
                    .map_err(|e| DossierError::Tsa(e.to_string()))?
                    .der,
            ),
            None => None,
        };
        let signature = signed.document(token.as_deref());

        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let zerr = |e: &dyn std::fmt::Display| DossierError::Zip(e.to_string());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(zip::DateTime::default());
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("mimetype", stored).map_err(|e| zerr(&e))?;
        zip.write_all(MIMETYPE.as_bytes()).map_err(|e| zerr(&e))?;
        for (name, bytes) in &files {
            zip.start_file(name.as_str(), deflated)
                .map_err(|e| zerr(&e))?;
            zip.write_all(bytes).map_err(|e| zerr(&e))?;
        }
        zip.start_file(MANIFEST_FILE, deflated)
            .map_err(|e| zerr(&e))?;
        zip.write_all(&manifest(&listed)).map_err(|e| zerr(&e))?;
        zip.start_file(SIGNATURE_FILE, deflated)
            .map_err(|e| zerr(&e))?;
        zip.write_all(&signature).map_err(|e| zerr(&e))?;
        let out = zip.finish().map_err(|e| zerr(&e))?.into_inner();

        // Exporting a case is reading its personal data: each request's
        // trace in the audit trail.
        let drafts = records
            .iter()
            .map(|r| crate::audit::about(&self.audit_key, r, actor, "dossier.export", "exported"))
            .collect();
        self.store.audit_append(drafts).await?;
        Ok(out)
    }

    async fn request_files(
        &self,
        r: &RequestRecord,
        files: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<RequestFacts, DossierError> {
        let mut document = None;
        if let Some(doc_id) = &r.document_id {
            let sealed =
                self.store.document(doc_id).await?.ok_or_else(|| {
                    DossierError::Document(format!("{doc_id} is not in the store"))
                })?;
            let plain = self
                .cipher
                .open(doc_id, &sealed)
                .map_err(|e| DossierError::Document(e.to_string()))?;
            let name = format!("documents/{}.xml", r.id);
            files.push((name.clone(), plain));
            document = Some(name);
        }
        let ocsp = r
            .revocation
            .as_ref()
            .and_then(|v| v.ocsp_response.as_deref())
            .and_then(b64d)
            .map(|der| {
                let name = format!("evidence/{}.ocsp", r.id);
                files.push((name.clone(), der));
                name
            });
        let crl = match r.revocation.as_ref().and_then(|v| v.crl_sha256.as_deref()) {
            Some(hex) => {
                let id = format!("crl-{hex}");
                let name = format!("evidence/{id}.crl");
                // Once per CRL, however many documents it speaks for.
                if !files.iter().any(|(n, _)| *n == name) {
                    let sealed = self.store.document(&id).await?.ok_or_else(|| {
                        DossierError::Document(format!("the CRL {id} is not in the store"))
                    })?;
                    let der = self
                        .cipher
                        .open(&id, &sealed)
                        .map_err(|e| DossierError::Document(e.to_string()))?;
                    files.push((name.clone(), der));
                }
                Some(name)
            }
            None => None,
        };
        let mut attachments = Vec::with_capacity(r.attachments.len());
        for (i, a) in r.attachments.iter().enumerate() {
            let file = attachment_file(&r.id, i + 1);
            files.push((file.clone(), self.open_document(&a.document_id).await?));
            attachments.push(AttachmentFacts {
                file,
                content_id: a.content_id.clone(),
                content_type: a.content_type.clone(),
                name: a.name.clone(),
                size: a.size,
                sha256: a.sha256.clone(),
            });
        }
        let mut signed_file = None;
        if let Some(id) = r
            .signed_document
            .as_ref()
            .filter(|s| s.state == SignedDocState::Kept)
            .and_then(|s| s.document_id.as_deref())
        {
            let file = signed_document_file(&r.id);
            files.push((file.clone(), self.open_document(id).await?));
            signed_file = Some(file);
        }
        let timestamp_token = r
            .stamp
            .as_ref()
            .and_then(|s| s.token.as_deref())
            .and_then(b64d)
            .map(|der| {
                let name = format!("evidence/{}.tst", r.id);
                files.push((name.clone(), der));
                name
            });
        Ok(RequestFacts {
            id: r.id.to_string(),
            client: r.client.to_string(),
            service: r.service.to_string(),
            registry: r.registry.to_string(),
            legal_basis: r.legal_basis.clone(),
            purpose: r.purpose.clone(),
            official: r.official.clone(),
            subject: r.subject.iter().cloned().collect(),
            state: r.state.name().to_owned(),
            created_ms: r.created_ms,
            created: crate::time::rfc3339_secs(r.created_ms),
            attempts: r.attempts.clone(),
            signer: r.signer.clone(),
            signer_sha256: r.signer_sha256.clone(),
            signer_anchor: r
                .signer_anchor_sha256
                .as_deref()
                .and_then(|h| self.anchor_subject(h)),
            signer_anchor_sha256: r.signer_anchor_sha256.clone(),
            document,
            revocation: r.revocation.as_ref().map(|v| {
                let mut v = v.clone();
                v.ocsp_response = None;
                json(&v)
            }),
            ocsp,
            crl,
            timestamp: r.stamp.as_ref().map(|s| {
                let mut s = s.clone();
                s.token = None;
                json(&s)
            }),
            timestamp_token,
            attachments,
            signed_document: r.signed_document.as_ref().map(json),
            charset: r.charset.clone(),
            signed_document_file: signed_file,
        })
    }

    /// A stored document of the case (an attachment, a signed document),
    /// opened.
    async fn open_document(&self, id: &str) -> Result<Vec<u8>, DossierError> {
        let sealed = self
            .store
            .document(id)
            .await?
            .ok_or_else(|| DossierError::Document(format!("{id} is not in the store")))?;
        self.cipher
            .open(id, &sealed)
            .map_err(|e| DossierError::Document(e.to_string()))
    }

    /// The subject of the CA certificate the dossier carries whose DER has
    /// the SHA-256 `hex`.
    fn anchor_subject(&self, hex: &str) -> Option<String> {
        self.certificates
            .iter()
            .flat_map(|(_, pem)| openssl::x509::X509::stack_from_pem(pem).unwrap_or_default())
            .find(|c| {
                c.to_der()
                    .is_ok_and(|d| crate::store::trail::hex(&openssl::sha::sha256(&d)) == hex)
            })
            .map(|c| crate::xml::dsig::name_to_string(c.subject_name()))
    }

    /// Checkpoints the trail's head and has the checkpoint timestamped now,
    /// so that the excerpt reaches a checkpoint whose time is proven. A
    /// failure leaves the dossier with the last one there is (its report
    /// says so).
    async fn checkpoint_now(&self) {
        if let Err(e) = crate::audit::checkpoint(&*self.store, &self.checkpoints).await {
            tracing::warn!(error = %e, "cannot checkpoint the audit trail for a dossier");
            return;
        }
        let (Some(tsa), Ok(list)) = (&self.tsa, self.checkpoints.read()) else {
            return;
        };
        let Some(c) = list.last() else { return };
        let path = checkpoint_token_path(&self.checkpoints, c.seq);
        if path.exists() {
            return;
        }
        match tsa.stamp(&checkpoint_imprint(c.seq, &c.hash)).await {
            Ok(t) => {
                if let Err(e) = super::stamper::write_durably(&path, &t.der) {
                    tracing::warn!(error = %e, "cannot keep a checkpoint's token");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot timestamp the checkpoint for a dossier"),
        }
    }

    /// The first entry written at or after `at_ms`, by bisection: entries
    /// are appended in time order (within the clock's small disorder, which
    /// the caller's margin covers).
    async fn first_entry_after(&self, at_ms: u64, head: u64) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (1u64, head.max(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = match self.store.audit_scan(mid - 1, 1).await?.into_iter().next() {
                Some((_, Ok(e))) => e.draft.at_ms,
                // A hole: look later.
                _ => 0,
            };
            if at < at_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The case's audit entries, the chain's links from its first entry to
    /// the checkpoint after its last, and that checkpoint's token. The
    /// entries are found by a walk of the trail from the case's first
    /// filing (an entry names its request and case; not every one names a
    /// person), at most [`MAX_CHAIN`] entries long.
    async fn audit_excerpt(
        &self,
        records: &[RequestRecord],
    ) -> Result<(AuditFacts, Vec<(String, Vec<u8>)>), DossierError> {
        let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let case = &records[0].case;
        let head = self.store.audit_head().await?.seq;
        let filed = records.iter().map(|r| r.created_ms).min().unwrap_or(0);
        let start = self
            .first_entry_after(filed.saturating_sub(60_000), head)
            .await?;
        let cps = self.checkpoints.read().unwrap_or_default();
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut chain: Vec<(u64, Option<(String, String)>)> = Vec::new();
        let mut after = start.saturating_sub(1);
        let limit = start.saturating_add(MAX_CHAIN).min(head);
        'scan: while after < limit {
            let page = self.store.audit_scan(after, 1000).await?;
            if page.is_empty() {
                break;
            }
            for (seq, e) in page {
                if seq > limit {
                    break 'scan;
                }
                after = seq;
                match e {
                    Ok(e) => {
                        chain.push((seq, Some((e.prev.clone(), e.hash.clone()))));
                        let ours = e.draft.case == *case
                            || e.draft
                                .request_id
                                .as_deref()
                                .is_some_and(|i| ids.contains(i));
                        if ours {
                            entries.insert(seq, e);
                        }
                    }
                    // A hole in the trail: the verifier sees the link missing.
                    Err(_) => chain.push((seq, None)),
                }
            }
        }
        let first = entries.keys().next().copied();
        let last = entries.keys().next_back().copied();
        let mut files = Vec::new();
        let mut lines = String::new();
        for e in entries.values() {
            let line = serde_json::to_string(&AuditLine { entry: e.clone() })
                .map_err(|e| DossierError::Zip(e.to_string()))?;
            lines.push_str(&line);
            lines.push('\n');
        }
        files.push(("audit/entries.jsonl".to_owned(), lines.into_bytes()));
        let mut checkpoint = None;
        if let (Some(first), Some(last)) = (first, last) {
            // The links run to the first checkpoint at or after the case's
            // last entry that the walk reached, else to that entry.
            let cp = cps.into_iter().find(|c| c.seq >= last && c.seq <= after);
            let end = cp.as_ref().map_or(last, |c| c.seq);
            let mut text = String::new();
            for (seq, link) in chain.iter().filter(|(s, _)| (first..=end).contains(s)) {
                match link {
                    Some((p, h)) => text.push_str(&format!("{seq} {p} {h}\n")),
                    None => text.push_str(&format!("{seq} ? ?\n")),
                }
            }
            files.push(("audit/chain.txt".to_owned(), text.into_bytes()));
            if let Some(c) = cp {
                let token = std::fs::read(checkpoint_token_path(&self.checkpoints, c.seq)).ok();
                // A token is kept only if it is on this checkpoint.
                let token = token.filter(|t| {
                    self.tsa.as_ref().is_none_or(|tsa| {
                        super::tsp::check_token(
                            t,
                            &checkpoint_imprint(c.seq, &c.hash),
                            tsa.anchors(),
                        )
                        .is_ok()
                    })
                });
                files.push((
                    "audit/checkpoint.txt".to_owned(),
                    format!("{} {}\n", c.seq, c.hash).into_bytes(),
                ));
                let stamped = token.is_some();
                if let Some(t) = token {
                    files.push(("audit/checkpoint.tst".to_owned(), t));
                }
                checkpoint = Some(CheckpointFacts {
                    seq: c.seq,
                    hash: c.hash,
                    stamped,
                });
            }
        }
        Ok((
            AuditFacts {
                entries: entries.len(),
                first_seq: first,
                last_seq: last,
                checkpoint,
            },
            files,
        ))
    }
}

/// A record as JSON, for the facts (plain data: it always converts).
fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
