//! The registry simulator: the server side of the exchange protocol for the
//! three registries, on HTTPS with client certificates required, with a
//! synthetic population ([`data`]) and fault injection ([`faults`]).
//!
//! Each request is checked as a registry would: the client certificate by
//! TLS, then the XML signature against the configured trust, then the
//! envelope. The answer echoes the request headers, carries the SHA-512 of
//! the request bytes as `xrd:requestHash`, and is signed with the registry's
//! signing key.
//!
//! A plain-HTTP control endpoint on loopback lets tests flip faults and ask
//! what was seen: `GET/PUT/POST/DELETE /faults`, `GET /seen`, `POST /reset`,
//! `POST /tickets/ready`, which makes every waiting asynchronous answer
//! ready now (a test then need not guess how long a delay is on its machine),
//! and `POST /held/release`, which lets go every request the `hold` fault
//! keeps (a test then holds requests out for as long as it needs, not for a
//! latency it hopes is long enough).
//!
//! With `[x_road]` set, an X-Road security-server front ([`xroad`]) serves
//! every registry over X-Road message protocol 4.0 on one more listener,
//! with the signed documents of its answers (`GET /asic`); `POST
//! /x-road/stamp` on the control endpoint timestamps every message that
//! waits for it. A registry's answer is made once ([`serve`]) and wrapped
//! by the front that was asked: signed here, or as X-Road's provider
//! security server returns it there.

pub mod data;
pub mod faults;
mod xroad;

use crate::pki::tls;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::config::{Member, SimulatorConfig};
use crate::pki::{CertSpec, Issued, KeyKind, Role};
use crate::protocol::envelope::{self, FaultCode, Headers};
use crate::protocol::{request_hash, Body as PBody};
use crate::xml::{self, dsig, Limits, SigningKey, TrustStore};
use data::{Answer, Fields, Population};
use faults::{Fault, FaultTable};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("faults: {0}")]
    Faults(#[from] faults::SpecError),
    #[error("{0}")]
    Https(#[from] crate::pki::tls::TlsError),
}

/// One request as the simulator saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub registry: String,
    pub service: String,
    pub id: String,
    pub poll: bool,
    pub outcome: String,
}

struct Ticket {
    ready_at: Instant,
    service: String,
    fields: Fields,
}

struct Registry {
    name: String,
    member: Member,
    key: SigningKey,
    maintenance: Vec<faults::Window>,
}

struct Shared {
    population: Population,
    gateway_trust: TrustStore,
    /// Signs the `untrusted` fault: a key whose CA nobody trusts.
    rogue: SigningKey,
    faults: Mutex<FaultTable>,
    seen: Mutex<Vec<Seen>>,
    /// `served_log`: the id of every request as it arrives and as it is
    /// answered, a line each.
    served: Option<Mutex<std::fs::File>>,
    /// Bumped by `POST /held/release`: a held request waits for the
    /// number to move past the one it saw on arrival.
    released: tokio::sync::watch::Sender<u64>,
    /// Requests the `hold` fault keeps now.
    held: std::sync::atomic::AtomicUsize,
    /// Handshakes refused, per registry, with the reason.
    tls_refused: Mutex<Vec<TlsRefused>>,
    tickets: Mutex<HashMap<String, Ticket>>,
    rng: Mutex<StdRng>,
    limits: Limits,
    /// The development CA's OCSP responder and CRL, when its key is given.
    authority: Option<crate::pki::revocation::authority::Authority>,
    /// A time-stamping authority whose certificate the same CA issues.
    tsa: Option<crate::evidence::tsa::Tsa>,
    /// Each registry's signing certificate, for the `revoked` fault.
    signers: BTreeMap<String, openssl::x509::X509>,
    /// The X-Road front's message log, by message id.
    x_road_log: Mutex<HashMap<String, xroad::Logged>>,
}

impl Shared {
    /// The CA revokes exactly the signers a `revoked` rule names (from when
    /// the rule first named them).
    fn apply_revocations(&self) {
        let Some(a) = &self.authority else { return };
        let faults = lock(&self.faults);
        for (name, cert) in &self.signers {
            if faults.has_state(Fault::Revoked, Some(name)) {
                if a.status_of(cert).is_none() {
                    let _ = a.revoke_cert(cert, crate::time::now_ms());
                }
            } else {
                a.unrevoke(cert);
            }
        }
    }
}

use crate::sync::lock;

fn read(path: &std::path::Path) -> Result<Vec<u8>, SimError> {
    std::fs::read(path).map_err(|e| SimError::File {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// A running simulator.
pub struct Simulator {
    /// Where each registry listens.
    pub addrs: BTreeMap<String, SocketAddr>,
    pub control: SocketAddr,
    /// Where the X-Road front listens, when `[x_road]` is set.
    pub x_road: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the three registries and the control endpoint.
pub async fn start(cfg: &SimulatorConfig) -> Result<Simulator, SimError> {
    let client_ca = read(&cfg.client_ca)?;
    let gateway_trust = TrustStore::from_pem(&client_ca).map_err(|e| SimError::File {
        path: cfg.client_ca.display().to_string(),
        detail: e.to_string(),
    })?;
    let rogue_ca = Issued::new(&CertSpec::new("rogue CA", Role::Ca), KeyKind::EcP256, None)
        .map_err(|e| SimError::Tls(e.to_string()))?;
    let rogue = Issued::new(
        &CertSpec::new("rogue signer", Role::Signing),
        KeyKind::EcP256,
        Some(&rogue_ca),
    )
    .map_err(|e| SimError::Tls(e.to_string()))?;
    let rogue = SigningKey::from_pem(
        &rogue.key_pem().map_err(|e| SimError::Tls(e.to_string()))?,
        &rogue.cert_pem().map_err(|e| SimError::Tls(e.to_string()))?,
        None,
    )
    .map_err(|e| SimError::Tls(e.to_string()))?;
    let shared = Arc::new(Shared {
        population: Population::generate(cfg.seed, cfg.population),
        gateway_trust,
        rogue,
        faults: Mutex::new(FaultTable {
            rules: faults::parse_spec(&cfg.faults)?,
        }),
        seen: Mutex::new(Vec::new()),
        served: match &cfg.served_log {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| SimError::File {
                        path: p.display().to_string(),
                        detail: e.to_string(),
                    })?,
            )),
            None => None,
        },
        released: tokio::sync::watch::Sender::new(0),
        held: std::sync::atomic::AtomicUsize::new(0),
        tls_refused: Mutex::new(Vec::new()),
        tickets: Mutex::new(HashMap::new()),
        rng: Mutex::new(StdRng::seed_from_u64(cfg.seed)),
        limits: Limits {
            max_size: cfg.max_body_bytes,
            ..Limits::default()
        },
        authority: match (&cfg.ca_cert, &cfg.ca_key) {
            (Some(c), Some(k)) => {
                let mut a =
                    crate::pki::revocation::authority::Authority::from_pem(&read(c)?, &read(k)?)
                        .map_err(|e| SimError::File {
                            path: k.display().to_string(),
                            detail: e.to_string(),
                        })?;
                // Short-lived answers, so that a revocation shows soon.
                a.validity = Duration::from_secs(120);
                Some(a)
            }
            _ => None,
        },
        tsa: match (&cfg.ca_cert, &cfg.ca_key) {
            (Some(c), Some(k)) => {
                let bad = |detail: String| SimError::File {
                    path: k.display().to_string(),
                    detail,
                };
                let cert =
                    openssl::x509::X509::from_pem(&read(c)?).map_err(|e| bad(e.to_string()))?;
                let key = openssl::pkey::PKey::private_key_from_pem(&read(k)?)
                    .map_err(|e| bad(e.to_string()))?;
                Some(
                    crate::evidence::tsa::Tsa::issued_by(&cert, &key)
                        .map_err(|e| bad(e.to_string()))?,
                )
            }
            _ => None,
        },
        signers: cfg
            .registries
            .iter()
            .filter_map(|(n, r)| {
                let pem = std::fs::read(&r.sign_cert).ok()?;
                Some((n.clone(), openssl::x509::X509::from_pem(&pem).ok()?))
            })
            .collect(),
        x_road_log: Mutex::new(HashMap::new()),
    });
    shared.apply_revocations();

    let mut addrs = BTreeMap::new();
    let mut tasks = Vec::new();
    let mut registries = Vec::new();
    for (name, r) in &cfg.registries {
        // A PEM file, or a key on a token, as the gateway's seal may be.
        let key = crate::pki::pkcs11::signing_key(&r.sign_key, &read(&r.sign_cert)?).map_err(
            |detail| SimError::File {
                path: crate::pki::pkcs11::redact(&r.sign_key.to_string_lossy()),
                detail,
            },
        )?;
        let maintenance = r
            .maintenance
            .iter()
            .map(crate::config::MaintenanceWindow::window)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|detail| SimError::File {
                path: format!("registries.{name}.maintenance"),
                detail,
            })?;
        let reg = Arc::new(Registry {
            name: name.clone(),
            member: r.member.clone(),
            key,
            maintenance,
        });
        registries.push(reg.clone());
        let app = Router::new()
            .route("/", post(handle))
            .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
            .with_state((reg, shared.clone()));
        let tls = tls::server_config(
            &r.tls_cert,
            &r.tls_key,
            Some(&cfg.client_ca),
            tls::ClientAuth::Required,
        )?;
        let addr = format!("{}:{}", cfg.listen, r.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| SimError::Listen {
                addr: addr.clone(),
                source,
            })?;
        addrs.insert(
            name.clone(),
            listener
                .local_addr()
                .map_err(|source| SimError::Listen { addr, source })?,
        );
        let (sh, registry) = (shared.clone(), name.clone());
        tasks.push(tokio::spawn(tls::serve(
            listener,
            Some(tls),
            app,
            std::future::pending(),
            Arc::new(move |error| {
                lock(&sh.tls_refused).push(TlsRefused {
                    registry: registry.clone(),
                    error: error.to_owned(),
                })
            }),
            tls::ServeLimits::for_this_process(std::time::Duration::from_secs(10)),
        )));
    }

    let x_road = match &cfg.x_road {
        Some(x) => {
            let (addr, task) = xroad::start(
                x,
                &cfg.listen,
                &cfg.client_ca,
                cfg.max_body_bytes,
                registries,
                shared.clone(),
            )
            .await?;
            tasks.push(task);
            Some(addr)
        }
        None => None,
    };

    let control = Router::new()
        .route(
            "/faults",
            get(faults_get)
                .put(faults_put)
                .post(faults_add)
                .delete(faults_clear),
        )
        .route("/seen", get(seen_get))
        .route("/reset", post(reset))
        .route("/tickets/ready", post(tickets_ready))
        .route("/held/release", post(held_release))
        .route("/ocsp", post(ocsp_post))
        .route("/ca.crl", get(crl_get))
        .route("/tsa", post(tsa_post))
        .route("/x-road/stamp", post(x_road_stamp))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(&cfg.control)
        .await
        .map_err(|source| SimError::Listen {
            addr: cfg.control.clone(),
            source,
        })?;
    let control_addr = listener.local_addr().map_err(|source| SimError::Listen {
        addr: cfg.control.clone(),
        source,
    })?;
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, control).await;
    }));
    Ok(Simulator {
        addrs,
        control: control_addr,
        x_road,
        tasks,
    })
}

type St = State<(Arc<Registry>, Arc<Shared>)>;

fn xml_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r
}

/// A body stream: some bytes, then optionally an error that aborts the
/// connection mid-answer.
fn broken_body(prefix: Vec<u8>, delay: Option<Duration>) -> Body {
    let stream = futures_util::stream::unfold(
        (prefix, 0usize, false),
        move |(data, pos, done)| async move {
            if done {
                return None;
            }
            if pos >= data.len() {
                return Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated fault",
                    )),
                    (data, pos, true),
                ));
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let step = if delay.is_some() { 1 } else { data.len() - pos };
            let chunk = Bytes::copy_from_slice(&data[pos..pos + step]);
            Some((Ok(chunk), (data, pos + step, false)))
        },
    );
    Body::from_stream(stream)
}

async fn handle(State((reg, sh)): St, body: Bytes) -> Response {
    // 1. The request must be signed by someone the registry trusts.
    let verified = match xml::verify(&body, &sh.gateway_trust, &sh.limits) {
        Ok(v) => v,
        Err(e) => return unsigned_fault(&reg, &sh, &format!("request rejected: {e}")),
    };
    let env = match envelope::read(&verified.doc) {
        Ok(e) => e,
        Err(e) => return unsigned_fault(&reg, &sh, &format!("request rejected: {e}")),
    };
    let h = env.headers;
    let hash = request_hash(&body);
    let asked = Asked {
        service: h.service_code.clone(),
        id: h.id.clone(),
        body: match &env.body {
            PBody::Poll { ticket } => AskedBody::Poll(ticket.clone()),
            PBody::Payload { node, .. } => AskedBody::Payload(
                verified
                    .doc
                    .child_elements(*node)
                    .filter_map(|c| {
                        verified
                            .doc
                            .element(c)
                            .map(|e| (e.local.clone(), verified.doc.text(c).trim().to_owned()))
                    })
                    .collect(),
            ),
            _ => AskedBody::Other,
        },
    };
    let wrong = (!h.service_code.starts_with(&format!("{}.", reg.name))
        || h.service.code != reg.member.code)
        .then(|| format!("this registry does not offer {}", h.service_code));
    let (status, body_xml, fault) = match serve(&reg, &sh, &asked, wrong).await {
        Reply::Raw(r) => return r,
        Reply::Answer {
            status,
            body,
            fault,
        } => (status, body, fault),
    };
    match fault {
        Some(Fault::BadHash) => signed(
            &reg.key,
            &h,
            &request_hash(b"some other request"),
            &body_xml,
            status,
            &sh,
        ),
        Some(Fault::Untrusted) => signed(&sh.rogue, &h, &hash, &body_xml, status, &sh),
        Some(Fault::BadSig) => {
            let r = sign_envelope(&reg.key, &h, &hash, &body_xml, &sh);
            // Change one character of signed content after signing.
            let tampered = String::from_utf8_lossy(&r).replacen("<xrd:userId>", "<xrd:userId>X", 1);
            xml_response(status, tampered)
        }
        Some(Fault::Truncate) => {
            truncated(status, sign_envelope(&reg.key, &h, &hash, &body_xml, &sh))
        }
        Some(Fault::Drip) => {
            let full = sign_envelope(&reg.key, &h, &hash, &body_xml, &sh);
            xml_response(status, broken_body(full, Some(Duration::from_millis(200))))
        }
        _ => signed(&reg.key, &h, &hash, &body_xml, status, &sh),
    }
}

/// An answer cut half-way, with the `Content-Length` of the whole.
fn truncated(status: StatusCode, full: Vec<u8>) -> Response {
    let mut r = xml_response(status, broken_body(full[..full.len() / 2].to_vec(), None));
    if let Ok(v) = HeaderValue::from_str(&full.len().to_string()) {
        r.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    r
}

/// What a registry was asked, through whichever front.
struct Asked {
    /// The service's id (`cadastre.property-sheet`).
    pub service: String,
    /// The message's id, for the served log and `/seen`.
    pub id: String,
    pub body: AskedBody,
}

#[derive(Clone)]
enum AskedBody {
    Payload(Fields),
    Poll(String),
    /// Neither a request payload nor a poll.
    Other,
}

/// A registry's answer before a front wraps it (signs it, or wraps it as
/// X-Road's security server does).
enum Reply {
    /// The body's content: a document, `jum:Accepted`, or a `jum:` SOAP
    /// fault (status 500); `fault` is the rule that fired, for the front
    /// to apply what concerns the wrapping (hash, signature, transport).
    Answer {
        status: StatusCode,
        body: String,
        fault: Option<Fault>,
    },
    /// Answered as is: a transport-level fault.
    Raw(Response),
}

/// The registry itself: faults, maintenance, tickets and the population's
/// answer. `wrong` refuses a request meant for another registry (after
/// the arrival is logged and the fault rules consulted, as always).
async fn serve(reg: &Registry, sh: &Shared, asked: &Asked, wrong: Option<String>) -> Reply {
    let service = asked.service.clone();
    let poll = matches!(asked.body, AskedBody::Poll(_));
    let kind = if poll { "poll" } else { "request" };
    let log = |line: String| {
        if let Some(f) = &sh.served {
            use std::io::Write;
            // One write per line: lines of concurrent requests never mix.
            let _ = lock(f).write_all(line.as_bytes());
        }
    };
    // Every arrival is answered by exactly one line below (unless the
    // caller hangs up first): more arrivals than answers since a process
    // started means a request of that process is at the registry now.
    log(format!("{} {kind} arrived\n", asked.id));
    let decision = lock(&sh.faults).decide(&reg.name, &service, &mut *lock(&sh.rng));
    if decision.hold {
        let mut released = sh.released.subscribe();
        let at = *released.borrow_and_update();
        let _held = Held::count(&sh.held);
        // The sender lives in `sh`, which outlives this request.
        let _ = released.wait_for(|&n| n != at).await;
    }
    if let Some(l) = decision.latency {
        tokio::time::sleep(l).await;
    }
    let record = |outcome: &str| {
        log(format!("{} {kind}\n", asked.id));
        lock(&sh.seen).push(Seen {
            registry: reg.name.clone(),
            service: service.clone(),
            id: asked.id.clone(),
            poll,
            outcome: outcome.to_owned(),
        })
    };
    // A SOAP fault (HTTP 500, as SOAP 1.1 has it).
    let fault_reply = |code: FaultCode, text: &str, retry_after: Option<Duration>| Reply::Answer {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: envelope::fault(&code, text, retry_after),
        fault: None,
    };
    let answer = |status: StatusCode, body: String| Reply::Answer {
        status,
        body,
        fault: None,
    };
    let raw = Reply::Raw;
    if let Some(why) = wrong {
        record("wrong registry");
        return fault_reply(FaultCode::NotAuthorized, &why, None);
    }
    let now = chrono::Utc::now();
    let window_end = reg
        .maintenance
        .iter()
        .filter_map(|w| w.active_until(now))
        .max();
    let fault = match window_end {
        Some(end) => {
            record("maintenance window");
            let left = (end - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            return fault_reply(
                FaultCode::Maintenance,
                "scheduled maintenance window",
                Some(left),
            );
        }
        None => decision.fault,
    };
    if let Some(f) = fault {
        record(f.name());
    }
    match fault {
        Some(Fault::Http500) => {
            return raw(xml_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ))
        }
        Some(Fault::Http503) => {
            return raw(xml_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable",
            ))
        }
        Some(Fault::Http429) => {
            let mut r = xml_response(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return raw(r);
        }
        Some(Fault::Reset) => {
            return raw(xml_response(StatusCode::OK, broken_body(Vec::new(), None)))
        }
        Some(Fault::Malformed) => {
            return raw(xml_response(
                StatusCode::OK,
                "<SOAP-ENV:Envelope><not-closed>",
            ))
        }
        Some(Fault::Oversize) => {
            let filler = "<!-- padding -->".repeat(11 * 1024 * 1024 / 16 + 1);
            return raw(xml_response(
                StatusCode::OK,
                format!(
                    "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\">{filler}</SOAP-ENV:Envelope>",
                    dsig::SOAP_NS
                ),
            ));
        }
        Some(Fault::Unavailable) => {
            return fault_reply(
                FaultCode::Unavailable,
                "registry temporarily unavailable",
                Some(Duration::from_secs(30)),
            );
        }
        Some(Fault::Maintenance) => {
            return fault_reply(
                FaultCode::Maintenance,
                "scheduled maintenance",
                Some(Duration::from_secs(1800)),
            );
        }
        Some(Fault::NotFound) => {
            return fault_reply(FaultCode::NotFound, "not found (injected)", None);
        }
        _ => {}
    }

    // 2. The answer: at once, or by ticket.
    let (answer_service, fields) = match &asked.body {
        AskedBody::Poll(ticket) => {
            let t = if fault == Some(Fault::Lost) {
                None
            } else {
                lock(&sh.tickets).remove(ticket)
            };
            let Some(t) = t else {
                if fault.is_none() {
                    record("unknown ticket");
                }
                return fault_reply(
                    FaultCode::NotFound,
                    &format!("unknown ticket {ticket}"),
                    None,
                );
            };
            if t.ready_at > Instant::now() {
                let left = t.ready_at - Instant::now();
                lock(&sh.tickets).insert(ticket.clone(), t);
                if fault.is_none() {
                    record("not ready");
                }
                return answer(StatusCode::OK, envelope::accepted(ticket, left));
            }
            (t.service, t.fields)
        }
        AskedBody::Payload(fields) => {
            if fault == Some(Fault::Async) {
                let ticket = format!("{}-{}", reg.name.to_uppercase(), ulid::Ulid::new());
                let delay = decision.async_delay.unwrap_or(Duration::from_secs(1));
                lock(&sh.tickets).insert(
                    ticket.clone(),
                    Ticket {
                        ready_at: Instant::now() + delay,
                        service: service.clone(),
                        fields: fields.clone(),
                    },
                );
                return answer(StatusCode::OK, envelope::accepted(&ticket, delay));
            }
            (service.clone(), fields.clone())
        }
        AskedBody::Other => {
            record("bad body");
            return fault_reply(
                FaultCode::InvalidSubject,
                "the body is neither a request nor a poll",
                None,
            );
        }
    };
    let (status, body_xml) = match sh.population.answer(&answer_service, &fields) {
        Answer::Document(d) => (StatusCode::OK, d),
        Answer::NotFound(why) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            envelope::fault(&FaultCode::NotFound, &why, None),
        ),
    };
    if fault.is_none() {
        record(if status == StatusCode::OK {
            "document"
        } else {
            "not found"
        });
    }
    let body = if fault == Some(Fault::Invalid) {
        // The document lacks its required first child.
        body_xml.replacen("issuance>", "issuanceX>", 2)
    } else {
        body_xml
    };
    Reply::Answer {
        status,
        body,
        fault,
    }
}

fn sign_envelope(key: &SigningKey, h: &Headers, hash: &str, body: &str, sh: &Shared) -> Vec<u8> {
    let x = envelope::response(h, hash, body);
    // Our own envelopes always sign; a failure here is a bug worth seeing.
    xml::sign(x.as_bytes(), key, &sh.limits)
        .unwrap_or_else(|e| format!("<!-- cannot sign: {e} -->").into_bytes())
}

fn signed(
    key: &SigningKey,
    h: &Headers,
    hash: &str,
    body: &str,
    status: StatusCode,
    sh: &Shared,
) -> Response {
    xml_response(status, sign_envelope(key, h, hash, body, sh))
}

/// A request we cannot even read gets an unsigned SOAP fault: there are no
/// headers to echo.
fn unsigned_fault(reg: &Registry, sh: &Shared, why: &str) -> Response {
    lock(&sh.seen).push(Seen {
        registry: reg.name.clone(),
        service: String::new(),
        id: String::new(),
        poll: false,
        outcome: "bad signature".into(),
    });
    xml_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\" xmlns:jum=\"urn:jum-gateway:exchange:1\"><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>jum:BadSignature</faultcode><faultstring>{}</faultstring></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>",
            dsig::SOAP_NS,
            envelope::esc(why)
        ),
    )
}

type Ctl = State<Arc<Shared>>;

async fn faults_get(State(sh): Ctl) -> Response {
    axum::Json(lock(&sh.faults).rules.clone()).into_response()
}

async fn faults_put(State(sh): Ctl, spec: String) -> Response {
    match faults::parse_spec(&spec) {
        Ok(r) => {
            lock(&sh.faults).rules = r;
            sh.apply_revocations();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn faults_add(State(sh): Ctl, spec: String) -> Response {
    match faults::parse_spec(&spec) {
        Ok(r) => {
            lock(&sh.faults).rules.extend(r);
            sh.apply_revocations();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn faults_clear(State(sh): Ctl) -> Response {
    lock(&sh.faults).rules.clear();
    sh.apply_revocations();
    StatusCode::NO_CONTENT.into_response()
}

/// The development CA, when it has its key and is not `ocsp-down`.
fn authority(
    sh: &Shared,
) -> Result<&crate::pki::revocation::authority::Authority, (StatusCode, &'static str)> {
    let Some(a) = &sh.authority else {
        return Err((
            StatusCode::NOT_FOUND,
            "no CA key configured (ca_cert, ca_key)",
        ));
    };
    if lock(&sh.faults).has_state(Fault::OcspDown, None) {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "ocsp-down"));
    }
    Ok(a)
}

/// The development CA's OCSP responder (RFC 6960 over HTTP POST).
async fn ocsp_post(State(sh): Ctl, body: Bytes) -> Response {
    let a = match authority(&sh) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let der = a.respond(&body, crate::time::now_ms());
    ([(header::CONTENT_TYPE, "application/ocsp-response")], der).into_response()
}

/// The time-stamping authority (RFC 3161 over HTTP): a TimeStampReq in,
/// a TimeStampResp out.
async fn tsa_post(State(sh): Ctl, body: Bytes) -> Response {
    let Some(t) = &sh.tsa else {
        return (
            StatusCode::NOT_FOUND,
            "no CA key configured (ca_cert, ca_key)",
        )
            .into_response();
    };
    if lock(&sh.faults).has_state(Fault::TsaDown, None) {
        return (StatusCode::SERVICE_UNAVAILABLE, "tsa-down").into_response();
    }
    match t.respond(&body) {
        Ok(der) => ([(header::CONTENT_TYPE, "application/timestamp-reply")], der).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The development CA's CRL (DER).
async fn crl_get(State(sh): Ctl) -> Response {
    let a = match authority(&sh) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    match a.crl(crate::time::now_ms()) {
        Ok(der) => ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct TlsRefused {
    registry: String,
    error: String,
}

#[derive(serde::Serialize)]
struct SeenReport {
    /// Handshakes refused (these never became requests).
    tls_refused: Vec<TlsRefused>,
    /// Requests the `hold` fault keeps now (arrived, not answered).
    held: usize,
    total: usize,
    by_registry: BTreeMap<String, usize>,
    by_service: BTreeMap<String, usize>,
    by_id: BTreeMap<String, usize>,
    requests: Vec<Seen>,
}

async fn seen_get(State(sh): Ctl) -> Response {
    let seen = lock(&sh.seen).clone();
    let mut r = SeenReport {
        tls_refused: lock(&sh.tls_refused).clone(),
        held: sh.held.load(std::sync::atomic::Ordering::SeqCst),
        total: seen.len(),
        by_registry: BTreeMap::new(),
        by_service: BTreeMap::new(),
        by_id: BTreeMap::new(),
        requests: Vec::new(),
    };
    for s in &seen {
        *r.by_registry.entry(s.registry.clone()).or_default() += 1;
        if !s.service.is_empty() {
            *r.by_service.entry(s.service.clone()).or_default() += 1;
        }
        if !s.id.is_empty() {
            *r.by_id.entry(s.id.clone()).or_default() += 1;
        }
    }
    r.requests = seen;
    axum::Json(r).into_response()
}

/// One request the `hold` fault keeps, counted while it is kept (also
/// when its caller hangs up and the handler is dropped).
struct Held<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Held<'a> {
    fn count(n: &'a std::sync::atomic::AtomicUsize) -> Held<'a> {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Held(n)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn held_release(State(sh): Ctl) -> Response {
    sh.released.send_modify(|n| *n += 1);
    StatusCode::NO_CONTENT.into_response()
}

async fn x_road_stamp(State(sh): Ctl) -> Response {
    xroad::stamp_all(&sh);
    StatusCode::NO_CONTENT.into_response()
}

async fn tickets_ready(State(sh): Ctl) -> Response {
    let now = Instant::now();
    for t in lock(&sh.tickets).values_mut() {
        t.ready_at = t.ready_at.min(now);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(sh): Ctl) -> Response {
    lock(&sh.seen).clear();
    lock(&sh.tls_refused).clear();
    lock(&sh.faults).rules.clear();
    lock(&sh.tickets).clear();
    lock(&sh.x_road_log).clear();
    StatusCode::NO_CONTENT.into_response()
}
