//! Talking to registries: one reqwest + rustls client per registry (our
//! client certificate, that registry's CA as the only trust root, connect
//! and total timeouts, a keep-alive pool, a byte cap while reading), and
//! one attempt by the registry's protocol. Signed XML: build → sign → POST
//! → read with the cap → parse hardened → verify signature, certificate
//! chain, `requestHash` and the echoed id → validate against the schemas →
//! [`classify`]. X-Road ([`xroad`]): build with a new message id → POST to
//! the security server → read with the cap → receive (charset, SwA, MTOM)
//! → check the copied-back headers, `requestHash` and the wrapper →
//! validate the document → [`classify`]; also the metaservices and the
//! signed document of each message.

pub mod classify;
mod xroad;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::config::{GatewayConfig, Member, ServiceConfig};
use crate::lifecycle::{RevocationMethod, RevocationRecord, SignerStatus};
use crate::pki::revocation::{self, Checker, Verdict};
use crate::protocol::envelope::{self, Body, Headers};
use crate::protocol::{request_hash, Subject};
use crate::xml::schema::Validator;
use crate::xml::{self, dsig::DsigError, Limits, SigningKey, TrustStore};
pub use classify::{classify, Content, Observation, Outcome, Transport};
pub use xroad::{Methods, SignedDocFetch};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("registry {registry}: {detail}")]
    Client { registry: String, detail: String },
    #[error("unknown registry {0:?}")]
    UnknownRegistry(String),
    #[error("unknown service {0:?}")]
    UnknownService(String),
    #[error("service {service} belongs to registry {expected}, not {given}")]
    WrongRegistry {
        service: String,
        expected: String,
        given: String,
    },
    #[error("{0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
    #[error("signing: {0}")]
    Sign(DsigError),
    #[error("schemas: {0}")]
    Schema(#[from] crate::xml::schema::SchemaError),
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ExchangeError> {
    std::fs::read(path).map_err(|e| ExchangeError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// One registry's client.
pub struct RegistryClient {
    pub name: String,
    protocol: crate::config::RegistryProtocol,
    url: String,
    http: reqwest::Client,
    trust: TrustStore,
    member: Member,
    max_body: usize,
    revocation: revocation::Policy,
    sources: revocation::Sources,
}

/// What one request is, for the envelope.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The request id (ULID), the same on every attempt.
    pub id: &'a str,
    pub service: &'a str,
    pub subject: &'a Subject,
    pub case: &'a str,
    pub official: &'a str,
    pub legal_basis: &'a str,
    pub purpose: &'a str,
    /// Poll this ticket instead of asking anew.
    pub ticket: Option<&'a str>,
}

/// The record of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    /// The signed request as sent.
    pub request: Vec<u8>,
    pub status: Option<u16>,
    /// The answer's bytes as received (for a document: the signed envelope).
    pub response: Option<Vec<u8>>,
    /// Subject of the registry's signing certificate, once verified.
    pub signer: Option<String>,
    /// SHA-256 (hex) of that certificate's DER, once verified.
    pub signer_sha256: Option<String>,
    /// SHA-256 (hex) of the DER of the registry's trust anchor its chain
    /// ended at.
    pub signer_anchor_sha256: Option<String>,
    /// SHA-256 (hex) of the answer's decoded `ds:SignatureValue`: what its
    /// timestamp is to be on.
    pub signature_imprint: Option<String>,
    /// How the signer's certificate stood (for a document).
    pub revocation: Option<RevocationRecord>,
    /// The CRL that confirmed it (DER), when a CRL did: kept once per CRL
    /// beside the documents, named by `revocation.crl_sha256`.
    pub crl: Option<Arc<[u8]>>,
    pub duration: Duration,
    /// X-Road: this attempt's message id (`xrd:id`, new on every attempt).
    pub message_id: Option<String>,
    /// X-Road: what came with a document (SOAP with attachments, MTOM).
    pub attachments: Vec<crate::protocol::xroad::Attachment>,
    /// X-Road: the charset the document's `Content-Type` named (its bytes
    /// are kept as they came, in it).
    pub charset: Option<String>,
}

/// What the revocation check of a document's signer leaves: the record,
/// and the CRL to keep when a CRL confirmed it.
type Evidence = (RevocationRecord, Option<Arc<[u8]>>);

/// All registry clients, the signing key and the catalogue.
pub struct Exchange {
    registries: BTreeMap<String, RegistryClient>,
    services: BTreeMap<String, ServiceConfig>,
    client: Member,
    /// Put before the official's id in X-Road's `userId`.
    country: String,
    key: Arc<SigningKey>,
    validator: Validator,
    limits: Limits,
    checker: Arc<Checker>,
    grace: Duration,
    /// Documents taken with their signer's status unchecked, to be
    /// checked again ([`Exchange::recheck`]).
    rechecks: std::sync::Mutex<Vec<Recheck>>,
}

/// A document whose signer's revocation status is still to be had.
struct Recheck {
    request: String,
    cert: openssl::x509::X509,
    issuer: openssl::x509::X509,
    sources: revocation::Sources,
}

/// Rechecks waiting at most: beyond, the oldest are dropped (and stay
/// `unchecked`, as the record says).
const MAX_RECHECKS: usize = 100_000;

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

fn transport(e: &reqwest::Error) -> Transport {
    if e.is_timeout() {
        return Transport::Timeout;
    }
    let text = chain(e);
    // rustls's error is buried under connector wrappers (and an io::Error
    // whose source() skips it), so read its message: rustls says "invalid
    // peer certificate" only when *we* reject the server; a server that
    // rejects us shows as a received alert. A status not yet established
    // (`require`) is looked up meanwhile: worth another try.
    if text.contains("UnknownRevocationStatus") {
        return Transport::Tls(format!(
            "the registry's TLS certificate: revocation status not yet established: {text}"
        ));
    }
    // A key too weak, as the verifier words it (rustls wraps it as
    // "Other(OtherError(…))").
    if let Some(i) = text.find("too weak: ") {
        let weak = &text[i..];
        let weak = weak.find("))").map_or(weak, |end| &weak[..end]);
        return Transport::UntrustedServer(weak.to_owned());
    }
    if let Some(i) = text.find("invalid peer certificate") {
        return Transport::UntrustedServer(text[i..].to_owned());
    }
    if text.contains("tls")
        || text.contains("TLS")
        || text.contains("certificate")
        || text.contains("handshake")
    {
        return Transport::Tls(text);
    }
    if e.is_connect() {
        return Transport::Connect(text);
    }
    Transport::Interrupted(text)
}

/// Why a body could not be had whole.
pub(super) enum ReadFailed {
    TooLarge,
    Broke(reqwest::Error),
}

/// The body, at most `max` bytes: counted while reading, so that an
/// endless answer costs at most the limit.
pub(super) async fn read_capped(
    resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, (ReadFailed, Vec<u8>)> {
    if resp.content_length().is_some_and(|l| l as usize > max) {
        return Err((ReadFailed::TooLarge, Vec::new()));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if body.len() + c.len() > max {
                    return Err((ReadFailed::TooLarge, Vec::new()));
                }
                body.extend_from_slice(&c);
            }
            Err(e) => return Err((ReadFailed::Broke(e), body)),
        }
    }
    Ok(body)
}

/// An answer's `Retry-After`, in seconds.
pub(super) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// An answer's `Content-Type`, as sent.
pub(super) fn content_type(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// A confirmed status as the document keeps it, and the CRL to keep when
/// a CRL confirmed it.
fn evidence(a: &revocation::Answer) -> Evidence {
    use base64::Engine;
    let (ocsp, number, url, crl) = match &a.source {
        revocation::Source::Ocsp { der } => (
            Some(base64::engine::general_purpose::STANDARD.encode(der)),
            None,
            None,
            None,
        ),
        revocation::Source::Crl { number, url, der } => {
            (None, number.clone(), Some(url.clone()), Some(der.clone()))
        }
    };
    let record = RevocationRecord {
        status: SignerStatus::Good,
        method: Some(method(&a.source)),
        checked_ms: a.checked_ms,
        this_update_ms: Some(a.this_update_ms),
        next_update_ms: a.next_update_ms,
        crl_number: number,
        crl_url: url,
        ocsp_response: ocsp,
        reason: None,
        crl_sha256: crl
            .as_deref()
            .map(|d| xml::dsig::hex(&openssl::sha::sha256(d))),
    };
    (record, crl)
}

/// How a revocation answer was established, as the record keeps it.
fn method(source: &revocation::Source) -> RevocationMethod {
    match source {
        revocation::Source::Ocsp { .. } => RevocationMethod::Ocsp,
        revocation::Source::Crl { .. } => RevocationMethod::Crl,
    }
}

/// The id under which a CRL is kept beside the documents.
pub fn crl_document_id(sha256_hex: &str) -> String {
    format!("crl-{sha256_hex}")
}

/// The registry signer's certificate an answer was accepted from: what
/// the record keeps so that the dossier binds the document to it.
#[derive(Debug, Clone)]
struct SignerSeen {
    subject: String,
    /// SHA-256 (hex) of its DER (a certificate openssl parsed always
    /// encodes; if it did not, the record says nothing rather than wrong).
    sha256: Option<String>,
    /// SHA-256 (hex) of the DER of the registry's anchor its chain ended at.
    anchor_sha256: Option<String>,
    /// SHA-256 (hex) of its one decoded `ds:SignatureValue`, if it has one.
    imprint: Option<String>,
}

impl SignerSeen {
    /// `body_len`: the answer's size, which decides whether the evidence
    /// job could read it (see `imprint`).
    fn of(v: &xml::Verified, body_len: usize) -> SignerSeen {
        SignerSeen {
            subject: v.signer_subject(),
            sha256: xml::dsig::cert_sha256(&v.signer),
            anchor_sha256: v.anchor.as_deref().and_then(xml::dsig::cert_sha256),
            // Only for a document the evidence job itself could read (its
            // limits are the default ones, which the exchange's may exceed):
            // one it could not is read by it, and fails there as before.
            imprint: (body_len <= xml::Limits::default().max_size)
                .then(|| xml::dsig::signature_value(&v.doc).ok())
                .flatten()
                .map(|b| xml::dsig::hex(&openssl::sha::sha256(&b))),
        }
    }
}

impl Exchange {
    /// Builds every registry client from the configuration.
    pub fn new(cfg: &GatewayConfig, schemas: &std::path::Path) -> Result<Exchange, ExchangeError> {
        let g = &cfg.gateway;
        // The seal: a PEM file, or a key on a token (PKCS#11 URI).
        let key = crate::pki::pkcs11::signing_key(&g.sign_key, &read(&g.sign_cert)?).map_err(
            |detail| ExchangeError::File {
                path: crate::pki::pkcs11::redact(&g.sign_key.to_string_lossy()),
                detail,
            },
        )?;
        // Our own keys, as strong as we ask of the registries' (their TLS
        // certificates are held to the same in the handshake, by
        // revocation::tls::ServerVerifier); a key on a token, by its
        // certificate.
        for (key, cert) in [(&g.sign_key, &g.sign_cert), (&g.tls_key, &g.tls_cert)] {
            let pem = if crate::pki::pkcs11::is_uri(&key.to_string_lossy()) {
                Vec::new()
            } else {
                read(key)?
            };
            if let Some(w) = crate::xml::dsig::weak_own_key(&pem, &read(cert)?, g.min_rsa_bits) {
                return Err(ExchangeError::File {
                    path: key.display().to_string(),
                    detail: format!("too weak: {w}"),
                });
            }
        }
        // Our TLS client certificate with its key (a PEM file or a key on a
        // token), once for all registries.
        let ours = crate::pki::tls::load_certs(&g.tls_cert).map_err(|e| ExchangeError::File {
            path: g.tls_cert.display().to_string(),
            detail: e.to_string(),
        })?;
        let identity = crate::pki::tls::certified_key(ours, &g.tls_key).map_err(|detail| {
            ExchangeError::File {
                path: crate::pki::pkcs11::redact(&g.tls_key.to_string_lossy()),
                detail,
            }
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let checker = Arc::new(Checker::default().with_freshness(revocation::Freshness {
            max_age: g.revocation_max_age,
            ..revocation::Freshness::default()
        }));
        let mut registries = BTreeMap::new();
        for (name, r) in &cfg.registries {
            let cerr = |detail: String| ExchangeError::Client {
                registry: name.clone(),
                detail,
            };
            let sources = revocation::Sources {
                ocsp_url: r.ocsp_url.clone(),
                crl: r.crl.clone(),
                ocsp_preproduced: r.ocsp_preproduced,
            };
            let mut roots = rustls::RootCertStore::empty();
            let mut anchors = Vec::new();
            for c in crate::pki::tls::load_certs(&r.tls_ca).map_err(|e| cerr(e.to_string()))? {
                anchors.push(
                    openssl::x509::X509::from_der(&c)
                        .map_err(|e| cerr(format!("{}: {e}", r.tls_ca.display())))?,
                );
                roots
                    .add(c)
                    .map_err(|e| cerr(format!("{}: {e}", r.tls_ca.display())))?;
            }
            // The registry's TLS certificate: its chain by rustls, then its
            // revocation status as the registry's policy says.
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| cerr(e.to_string()))?;
            let verifier = revocation::tls::ServerVerifier::new(
                webpki,
                revocation::tls::Gate::new(checker.clone(), anchors, r.revocation, sources.clone()),
                g.min_rsa_bits,
            );
            let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| cerr(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    identity.clone(),
                )));
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let http = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .https_only(true)
                .connect_timeout(r.connect_timeout)
                .timeout(r.timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
                .map_err(|e| cerr(chain(&e)))?;
            // An X-Road registry's answers are signed by the security
            // servers, not by the registry: no signer to trust here.
            let mut trust = match &r.signer_ca {
                Some(ca) => TrustStore::from_pem(&read(ca)?)
                    .map_err(|e| cerr(format!("{}: {e}", ca.display())))?,
                None => TrustStore::empty(),
            };
            trust.subject_pin = match &r.signer_subject {
                Some(p) => Some(
                    xml::dsig::NamePin::parse(p)
                        .map_err(|e| cerr(format!("signer_subject {p:?}: {e}")))?,
                ),
                None => None,
            };
            trust.cert_pin = match &r.signer_sha256 {
                Some(p) => Some(
                    xml::dsig::parse_sha256_pin(p)
                        .map_err(|e| cerr(format!("signer_sha256: {e}")))?,
                ),
                None => None,
            };
            trust.min_rsa_bits = g.min_rsa_bits;
            registries.insert(
                name.clone(),
                RegistryClient {
                    name: name.clone(),
                    protocol: r.protocol,
                    url: r.url.clone(),
                    http,
                    trust,
                    member: r.member.clone(),
                    max_body: g.max_body_bytes,
                    revocation: r.revocation,
                    sources,
                },
            );
        }
        let limits = Limits {
            max_size: g.max_body_bytes,
            max_text_len: g.max_body_bytes,
            ..Limits::default()
        };
        Ok(Exchange {
            registries,
            services: cfg.services.clone(),
            client: g.client.clone(),
            country: g.country.clone(),
            key: Arc::new(key),
            validator: Validator::start(schemas, limits.clone())?,
            limits,
            checker,
            grace: g.revocation_grace,
            rechecks: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The revocation checker the exchanges share (its answers, and the
    /// time of each registry's last good one).
    pub fn revocation(&self) -> &Arc<Checker> {
        &self.checker
    }

    /// Asks again about every document taken `unchecked`; answers, for
    /// each whose status is now established, its request id and the
    /// evidence (`good`, or `revoked` with the reason). The others wait
    /// for the next call. (Kept in memory: after a restart, a document
    /// still `unchecked` stays so, and its record says it.)
    /// Takes over the documents `old` was to check again, when this
    /// exchange replaces it (the configuration was re-read).
    pub fn adopt_rechecks(&self, old: &Exchange) {
        let moved = std::mem::take(&mut *crate::sync::lock(&old.rechecks));
        crate::sync::lock(&self.rechecks).extend(moved);
    }

    pub async fn recheck(&self) -> Vec<(String, RevocationRecord, Option<Arc<[u8]>>)> {
        let todo = std::mem::take(&mut *crate::sync::lock(&self.rechecks));
        let mut settled = Vec::new();
        let mut again = Vec::new();
        for r in todo {
            match self
                .checker
                .status_now(&r.cert, &r.issuer, &r.sources)
                .await
            {
                Ok(a) => {
                    let (mut e, crl) = evidence(&a);
                    if a.state != revocation::State::Good {
                        e.status = SignerStatus::Revoked;
                        e.reason = Some(match a.state {
                            revocation::State::Revoked { at_ms, .. } => format!(
                                "revoked since {}, found after the document was taken",
                                crate::time::rfc3339_secs(at_ms)
                            ),
                            _ => {
                                "unknown to its CA's responder, found after the document was taken"
                                    .into()
                            }
                        });
                    }
                    settled.push((r.request, e, crl));
                }
                Err(_) => again.push(r),
            }
        }
        let mut q = crate::sync::lock(&self.rechecks);
        again.append(&mut q);
        *q = again;
        settled
    }

    /// A registry's revocation policy.
    pub fn revocation_policy(&self, registry: &str) -> Option<revocation::Policy> {
        self.registries.get(registry).map(|r| r.revocation)
    }

    pub fn service(&self, id: &str) -> Option<&ServiceConfig> {
        self.services.get(id)
    }

    /// One attempt for `call`. Errors are only for requests that cannot be
    /// built (unknown service, wrong subject); everything that happens on
    /// the wire is an [`Outcome`].
    pub async fn attempt(&self, call: &Call<'_>) -> Result<Attempt, ExchangeError> {
        let svc = self
            .services
            .get(call.service)
            .ok_or_else(|| ExchangeError::UnknownService(call.service.to_owned()))?;
        let reg = self
            .registries
            .get(&svc.registry)
            .ok_or_else(|| ExchangeError::UnknownRegistry(svc.registry.clone()))?;
        if reg.protocol == crate::config::RegistryProtocol::XRoad {
            return self.attempt_x_road(call, svc, reg).await;
        }
        let headers = Headers {
            client: self.client.clone(),
            service: reg.member.clone(),
            service_code: call.service.to_owned(),
            service_version: svc.version.clone(),
            id: call.id.to_owned(),
            user_id: call.official.to_owned(),
            issue: call.case.to_owned(),
            legal_basis: call.legal_basis.to_owned(),
            purpose: call.purpose.to_owned(),
        };
        let body = match call.ticket {
            Some(t) => envelope::poll(t),
            None => envelope::payload(call.service, svc, call.subject)?,
        };
        let unsigned = envelope::request(&headers, &body);
        let request = match xml::sign(unsigned.as_bytes(), &self.key, &self.limits) {
            Ok(r) => r,
            // The seal's token removed or failing: this attempt fails, the
            // request is tried again on the retry schedule.
            Err(DsigError::Device(d)) => {
                tracing::error!(error = %d, registry = %svc.registry, "cannot sign: the seal's device failed");
                crate::metrics::seal_device_failed();
                return Ok(Attempt {
                    outcome: Outcome::Retryable {
                        reason: format!("the seal's device failed: {d}"),
                        retry_after: None,
                    },
                    request: Vec::new(),
                    status: None,
                    response: None,
                    signer: None,
                    signer_sha256: None,
                    signer_anchor_sha256: None,
                    signature_imprint: None,
                    revocation: None,
                    crl: None,
                    duration: Duration::ZERO,
                    message_id: None,
                    attachments: Vec::new(),
                    charset: None,
                });
            }
            Err(e) => return Err(ExchangeError::Sign(e)),
        };
        let started = Instant::now();
        let (status, response, observation, signer, revocation) = self
            .send(reg, svc, &headers, &request, call.ticket.is_some())
            .await;
        let (signer, signer_sha256, signer_anchor_sha256, signature_imprint) = match signer {
            Some(s) => (Some(s.subject), s.sha256, s.anchor_sha256, s.imprint),
            None => (None, None, None, None),
        };
        let (revocation, crl) = match revocation {
            Some((r, c)) => (Some(r), c),
            None => (None, None),
        };
        Ok(Attempt {
            outcome: classify(&observation),
            request,
            status,
            response,
            signer,
            signer_sha256,
            signer_anchor_sha256,
            signature_imprint,
            revocation,
            crl,
            duration: started.elapsed(),
            message_id: None,
            attachments: Vec::new(),
            charset: None,
        })
    }

    async fn send(
        &self,
        reg: &RegistryClient,
        svc: &ServiceConfig,
        headers: &Headers,
        request: &[u8],
        polling: bool,
    ) -> (
        Option<u16>,
        Option<Vec<u8>>,
        Observation,
        Option<SignerSeen>,
        Option<Evidence>,
    ) {
        let resp = match reg
            .http
            .post(&reg.url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(request.to_vec())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return (
                    None,
                    None,
                    Observation::Transport(transport(&e)),
                    None,
                    None,
                )
            }
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after(&resp);
        let body = match read_capped(resp, reg.max_body).await {
            Ok(b) => b,
            Err((ReadFailed::TooLarge, _)) => {
                let t = Transport::TooLarge {
                    limit: reg.max_body,
                };
                return (Some(status), None, Observation::Transport(t), None, None);
            }
            Err((ReadFailed::Broke(e), partial)) => {
                return (
                    Some(status),
                    Some(partial),
                    Observation::Transport(transport(&e)),
                    None,
                    None,
                )
            }
        };
        let (content, signer, revocation) = self.examine(reg, svc, headers, request, &body).await;
        (
            Some(status),
            Some(body),
            Observation::Answer {
                status,
                retry_after,
                content,
                polling,
            },
            signer,
            revocation,
        )
    }

    /// Verifies and reads an answer. Only the verified tree is read.
    async fn examine(
        &self,
        reg: &RegistryClient,
        svc: &ServiceConfig,
        headers: &Headers,
        request: &[u8],
        body: &[u8],
    ) -> (Content, Option<SignerSeen>, Option<Evidence>) {
        let verified = match xml::verify(body, &reg.trust, &self.limits) {
            Ok(v) => v,
            Err(DsigError::Xml(e)) => return (Content::Malformed(e.to_string()), None, None),
            Err(DsigError::NoSignature) => {
                // An unsigned answer: note a fault code if it carries one,
                // for the message, but trust nothing in it.
                let fault = xml::Document::parse(body, &self.limits).ok().and_then(|d| {
                    let f = d
                        .find_all(crate::protocol::ns::SOAP, "Fault")
                        .into_iter()
                        .next()?;
                    let c = d.child(f, "", "faultcode")?;
                    Some(d.text(c).trim().to_owned())
                });
                return (Content::Unsigned { fault }, None, None);
            }
            Err(e) => return (Content::BadSignature(e.to_string()), None, None),
        };
        let signer = Some(SignerSeen::of(&verified, body.len()));
        let env = match envelope::read(&verified.doc) {
            Ok(e) => e,
            Err(e) => return (Content::Malformed(e.to_string()), signer, None),
        };
        if env.request_hash.as_deref() != Some(request_hash(request).as_str()) {
            return (Content::HashMismatch, signer, None);
        }
        if env.headers.id != headers.id {
            return (
                Content::IdMismatch {
                    expected: headers.id.clone(),
                    found: env.headers.id,
                },
                signer,
                None,
            );
        }
        // Is the signer's certificate still good? Asked only of a genuine
        // answer to this request, so that no one makes us ask for nothing.
        let issuer = verified.issuer.clone();
        let verdict = self
            .checker
            .judge(
                &reg.name,
                reg.revocation,
                self.grace,
                &verified.signer,
                issuer.as_ref(),
                &reg.sources,
            )
            .await;
        let revocation = match verdict {
            Verdict::Revoked { reason } => return (Content::Revoked(reason), signer, None),
            Verdict::Refused { reason } => {
                return (Content::RevocationUnknown(reason), signer, None)
            }
            Verdict::Good(a) => Some(evidence(&a)),
            Verdict::Unchecked { reason } => {
                tracing::warn!(registry = %reg.name, %reason, "revocation not checked; the document is flagged");
                if let Some(issuer) = &issuer {
                    let mut q = crate::sync::lock(&self.rechecks);
                    if q.len() >= MAX_RECHECKS {
                        q.remove(0);
                    }
                    q.push(Recheck {
                        request: headers.id.clone(),
                        cert: verified.signer.clone(),
                        issuer: issuer.clone(),
                        sources: reg.sources.clone(),
                    });
                }
                Some((
                    RevocationRecord {
                        status: SignerStatus::Unchecked,
                        method: None,
                        checked_ms: crate::time::now_ms(),
                        this_update_ms: None,
                        next_update_ms: None,
                        crl_number: None,
                        crl_url: None,
                        ocsp_response: None,
                        reason: Some(reason),
                        crl_sha256: None,
                    },
                    None,
                ))
            }
            Verdict::Off => None,
        };
        let v = self.validator.clone();
        let bytes = body.to_vec();
        let valid = tokio::task::spawn_blocking(move || v.validate(&bytes)).await;
        match valid {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (Content::SchemaInvalid(e.to_string()), signer, None),
            Err(e) => {
                return (
                    Content::SchemaInvalid(format!("validation did not run: {e}")),
                    signer,
                    None,
                )
            }
        }
        let content = match env.body {
            Body::Payload { ns, local, .. } if ns == svc.namespace && local == svc.document => {
                Content::Document
            }
            Body::Payload { ns, local, .. } => {
                Content::UnexpectedPayload(format!("{{{ns}}}{local}"))
            }
            Body::Accepted {
                ticket,
                retry_after,
            } => Content::Accepted {
                ticket,
                retry_after,
            },
            Body::Fault {
                code,
                text,
                retry_after,
            } => Content::Fault {
                code,
                text,
                retry_after,
            },
            Body::Poll { .. } => Content::UnexpectedPayload("jum:Poll".into()),
        };
        (content, signer, revocation)
    }
}
