//! Talking to registries: one reqwest + rustls client per registry (our
//! client certificate, that registry's CA as the only trust root, connect
//! and total timeouts, a keep-alive pool, a byte cap while reading), and
//! one attempt = build → sign → POST → read with the cap → parse hardened →
//! verify signature, certificate chain, `requestHash` and the echoed id →
//! validate against the schemas → [`classify`].

pub mod classify;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::config::{GatewayConfig, Member, ServiceConfig};
use crate::protocol::envelope::{self, Body, Headers};
use crate::protocol::{request_hash, Subject};
use crate::xml::schema::Validator;
use crate::xml::{self, dsig::DsigError, Limits, SigningKey, TrustStore};
pub use classify::{classify, Content, Observation, Outcome, Transport};

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
    url: String,
    http: reqwest::Client,
    trust: TrustStore,
    member: Member,
    max_body: usize,
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
    pub duration: Duration,
}

/// All registry clients, the signing key and the catalogue.
pub struct Exchange {
    registries: BTreeMap<String, RegistryClient>,
    services: BTreeMap<String, ServiceConfig>,
    client: Member,
    key: Arc<SigningKey>,
    validator: Validator,
    limits: Limits,
}

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
    // rejects us shows as a received alert.
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
        // keys are held to the same by rustls, which takes no RSA key under
        // 2048 bits and no SHA-1 signature); a key on a token, by its
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
        if crate::pki::pkcs11::is_uri(&g.tls_key.to_string_lossy()) {
            return Err(ExchangeError::File {
                path: crate::pki::pkcs11::redact(&g.tls_key.to_string_lossy()),
                detail: "a TLS client key on a token is not supported yet: give a PEM file (the seal, gateway.sign_key, may be on the token)".into(),
            });
        }
        let mut identity = read(&g.tls_cert)?;
        identity.push(b'\n');
        identity.extend(read(&g.tls_key)?);
        let mut registries = BTreeMap::new();
        for (name, r) in &cfg.registries {
            let cerr = |detail: String| ExchangeError::Client {
                registry: name.clone(),
                detail,
            };
            let roots = reqwest::Certificate::from_pem_bundle(&read(&r.tls_ca)?)
                .map_err(|e| cerr(format!("{}: {e}", r.tls_ca.display())))?;
            let id = reqwest::Identity::from_pem(&identity)
                .map_err(|e| cerr(format!("{}: {e}", g.tls_cert.display())))?;
            let http = reqwest::Client::builder()
                .tls_certs_only(roots)
                .identity(id)
                .https_only(true)
                .connect_timeout(r.connect_timeout)
                .timeout(r.timeout)
                .pool_idle_timeout(Duration::from_secs(90))
                .build()
                .map_err(|e| cerr(chain(&e)))?;
            let mut trust = TrustStore::from_pem(&read(&r.signer_ca)?)
                .map_err(|e| cerr(format!("{}: {e}", r.signer_ca.display())))?;
            trust.subject_pin = r.signer_subject.clone();
            trust.min_rsa_bits = g.min_rsa_bits;
            registries.insert(
                name.clone(),
                RegistryClient {
                    name: name.clone(),
                    url: r.url.clone(),
                    http,
                    trust,
                    member: r.member.clone(),
                    max_body: g.max_body_bytes,
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
            key: Arc::new(key),
            validator: Validator::start(schemas, limits.clone())?,
            limits,
        })
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
                    duration: Duration::ZERO,
                });
            }
            Err(e) => return Err(ExchangeError::Sign(e)),
        };
        let started = Instant::now();
        let (status, response, observation, signer) = self
            .send(reg, svc, &headers, &request, call.ticket.is_some())
            .await;
        Ok(Attempt {
            outcome: classify(&observation),
            request,
            status,
            response,
            signer,
            duration: started.elapsed(),
        })
    }

    async fn send(
        &self,
        reg: &RegistryClient,
        svc: &ServiceConfig,
        headers: &Headers,
        request: &[u8],
        polling: bool,
    ) -> (Option<u16>, Option<Vec<u8>>, Observation, Option<String>) {
        let resp = match reg
            .http
            .post(&reg.url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(request.to_vec())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return (None, None, Observation::Transport(transport(&e)), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let too_large = || {
            let t = Transport::TooLarge {
                limit: reg.max_body,
            };
            (Some(status), None, Observation::Transport(t), None)
        };
        if resp
            .content_length()
            .is_some_and(|l| l as usize > reg.max_body)
        {
            return too_large();
        }
        // Read with a cap: an endless answer costs at most the limit.
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    if body.len() + c.len() > reg.max_body {
                        return too_large();
                    }
                    body.extend_from_slice(&c);
                }
                Err(e) => {
                    return (
                        Some(status),
                        Some(body),
                        Observation::Transport(transport(&e)),
                        None,
                    )
                }
            }
        }
        let (content, signer) = self.examine(reg, svc, headers, request, &body).await;
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
    ) -> (Content, Option<String>) {
        let verified = match xml::verify(body, &reg.trust, &self.limits) {
            Ok(v) => v,
            Err(DsigError::Xml(e)) => return (Content::Malformed(e.to_string()), None),
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
                return (Content::Unsigned { fault }, None);
            }
            Err(e) => return (Content::BadSignature(e.to_string()), None),
        };
        let signer = Some(verified.signer_subject());
        let env = match envelope::read(&verified.doc) {
            Ok(e) => e,
            Err(e) => return (Content::Malformed(e.to_string()), signer),
        };
        if env.request_hash.as_deref() != Some(request_hash(request).as_str()) {
            return (Content::HashMismatch, signer);
        }
        if env.headers.id != headers.id {
            return (
                Content::IdMismatch {
                    expected: headers.id.clone(),
                    found: env.headers.id,
                },
                signer,
            );
        }
        let v = self.validator.clone();
        let bytes = body.to_vec();
        let valid = tokio::task::spawn_blocking(move || v.validate(&bytes)).await;
        match valid {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (Content::SchemaInvalid(e.to_string()), signer),
            Err(e) => {
                return (
                    Content::SchemaInvalid(format!("validation did not run: {e}")),
                    signer,
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
        (content, signer)
    }
}
