//! The X-Road front: the simulator as a municipality's client security
//! server would face the gateway (X-Road message protocol 4.0, NIIS's
//! published specification; the official `xroad.xsd` and
//! `identifiers.xsd` are vendored under `tests/vectors/x-road/`).
//!
//! One HTTPS listener (client certificate required: the gateway's TLS
//! certificate is the information system's) for every simulated registry.
//! `POST /` takes a SOAP request and checks it as a security server does:
//! the headers valid against the official schemas; `client`, `service`
//! (objectType `SERVICE`), `id` and `protocolVersion` present, once each;
//! `protocolVersion` 4.0; no `requestHash`; the body one wrapper element
//! named after the `serviceCode`; the service known (its code is the
//! catalogue's service id, e.g. `cadastre.property-sheet`, under the
//! registry's member and subsystem); the client allowed (`[x_road]
//! clients`). A refusal is an X-Road technical fault
//! (`Server.ClientProxy.…` for what the client got wrong,
//! `Server.ServerProxy.UnknownService` / `AccessDenied`), in the snake_case
//! form of recent versions with the `snake` fault rule.
//!
//! The registry's answer (from [`super::serve`], unsigned) goes back as the
//! provider's security server returns it: every request header copied back
//! in order with the same values, `xrd:requestHash` (SHA-512 of the exact
//! request bytes), the body wrapper `{serviceCode}Response` holding the
//! document or `jum:Accepted`; a registry's `jum:` fault is forwarded as a
//! SOAP fault under the copied headers. `listMethods` and `allowedMethods`
//! are answered by the front from the registries' catalogue.
//!
//! Every answer is logged as the security server's message log keeps it:
//! `GET /asic?queryId=…&xRoadInstance=…&memberClass=…&memberCode=…
//! &subsystemCode=…&responseOnly&unique[&force]` serves its signed document
//! (ASiC-E: `mimetype` first and stored, `message.xml` the answer's SOAP
//! part byte for byte, `attachment1…`, `META-INF/manifest.xml`, and
//! `META-INF/signatures.xml`, a XAdES signature by the front's own key,
//! made at start). It answers 404 "Message signature has not been
//! timestamped yet!" until the message is timestamped: `asic_delay` after
//! the answer, at once with `force`, or when `POST /x-road/stamp` on the
//! control endpoint stamps every waiting message. Unlike a real security
//! server it keeps the answers' documents only (`requestOnly` is 404, and
//! `responseOnly&unique` is required).
//!
//! Fault rules (see [`super::faults`]) make the answers misbehave as the
//! gateway must notice (headers not copied back, a wrong `requestHash`, a
//! wrong wrapper, X-Road's technical faults in both forms) or take (SOAP
//! with attachments, MTOM, ISO-8859-1, a byte order mark, comments and
//! CDATA). The registries' transport faults (`500`, `503`, `429`, `reset`,
//! `truncate`, `drip`, `malformed`, `oversize`) and their own (`invalid`,
//! `notfound`, `unavailable`, `maintenance`, `async`, `lost`) come through
//! the front as a provider's security server passes them on; `badsig` and
//! `untrusted` do not apply (the security servers sign, not the registry). The service schemas allow nothing beside a document's own
//! elements, so MTOM's `xop:Include` travels in an `attachment` element
//! after the document inside the wrapper, which the protocol keeps with
//! the document.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{lock, serve, Asked, AskedBody, Fault, Registry, Reply, Shared, SimError, TlsRefused};
use crate::config::{Member, SimXRoad};
use crate::pki::{tls, CertSpec, Issued, KeyKind, Role};
use crate::protocol::{ns, request_hash};
use crate::xml::dom::{Document, NodeId};
use crate::xml::schema::Validator;
use crate::xml::{escape as esc, Options, SigningKey};

/// The SOAP 1.1 envelope as its own schema has it: headers and body
/// content checked where a schema declares them (`processContents="lax"`),
/// so the X-Road headers are checked against the official schema and the
/// rest is left to the service.
const SOAP_XSD: &str = r###"<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="http://schemas.xmlsoap.org/soap/envelope/"
  targetNamespace="http://schemas.xmlsoap.org/soap/envelope/" elementFormDefault="qualified">
  <xs:element name="Envelope"><xs:complexType><xs:sequence>
    <xs:element ref="tns:Header" minOccurs="0"/><xs:element ref="tns:Body"/>
  </xs:sequence><xs:anyAttribute namespace="##other" processContents="lax"/></xs:complexType></xs:element>
  <xs:element name="Header"><xs:complexType><xs:sequence>
    <xs:any namespace="##other" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence><xs:anyAttribute namespace="##other" processContents="lax"/></xs:complexType></xs:element>
  <xs:element name="Body"><xs:complexType><xs:sequence>
    <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence><xs:anyAttribute namespace="##any" processContents="lax"/></xs:complexType></xs:element>
</xs:schema>
"###;

const ENTRY_XSD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:import namespace="http://schemas.xmlsoap.org/soap/envelope/" schemaLocation="soap.xsd"/>
  <xs:import namespace="http://x-road.eu/xsd/xroad.xsd" schemaLocation="xroad.xsd"/>
  <xs:import namespace="http://x-road.eu/xsd/identifiers" schemaLocation="identifiers.xsd"/>
</xs:schema>
"#;

/// The official schemas, as NIIS publishes them.
const OFFICIAL: [(&str, &[u8]); 3] = [
    (
        "xroad.xsd",
        include_bytes!("../../tests/vectors/x-road/xroad.xsd"),
    ),
    (
        "identifiers.xsd",
        include_bytes!("../../tests/vectors/x-road/identifiers.xsd"),
    ),
    (
        "xml.xsd",
        include_bytes!("../../tests/vectors/x-road/xml.xsd"),
    ),
];

const XOP_NS: &str = "http://www.w3.org/2004/08/xop/include";
/// Messages kept for their signed documents.
const MAX_LOGGED: usize = 10_000;
const NOT_STAMPED: &str = "Message signature has not been timestamped yet!";

/// One answer as the security server's message log keeps it.
pub(super) struct Logged {
    client: Member,
    /// The SOAP part exactly as sent.
    message: Vec<u8>,
    /// Content type and bytes of each attachment, in order.
    attachments: Vec<(String, Vec<u8>)>,
    /// Timestamped from then on.
    stamp_at: Instant,
}

struct Front {
    registries: Vec<Arc<Registry>>,
    shared: Arc<Shared>,
    clients: Vec<Member>,
    asic_delay: Duration,
    validator: Validator,
    /// The security server's own signing key, for the signed documents.
    key: SigningKey,
    /// The schemas' folder, which libxml2 read at start.
    _schemas: tempfile::TempDir,
}

fn tls_err(e: impl std::fmt::Display) -> SimError {
    SimError::Tls(e.to_string())
}

/// Starts the front on `listen:cfg.port`; returns where it listens.
pub(super) async fn start(
    cfg: &SimXRoad,
    listen: &str,
    client_ca: &std::path::Path,
    max_body: usize,
    registries: Vec<Arc<Registry>>,
    shared: Arc<Shared>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), SimError> {
    let (dir, validator) = schemas(&shared.limits).map_err(|detail| SimError::File {
        path: "x_road schemas".into(),
        detail,
    })?;
    let ca = Issued::new(
        &CertSpec::new("simulated security server CA", Role::Ca),
        KeyKind::EcP256,
        None,
    )
    .map_err(tls_err)?;
    let signer = Issued::new(
        &CertSpec::new("simulated security server", Role::Signing),
        KeyKind::EcP256,
        Some(&ca),
    )
    .map_err(tls_err)?;
    let key = SigningKey::from_pem(
        &signer.key_pem().map_err(tls_err)?,
        &signer.cert_pem().map_err(tls_err)?,
        None,
    )
    .map_err(tls_err)?;
    let front = Arc::new(Front {
        registries,
        shared: shared.clone(),
        clients: cfg.clients.clone(),
        asic_delay: cfg.asic_delay,
        validator,
        key,
        _schemas: dir,
    });
    let app = Router::new()
        .route("/", post(soap))
        .route("/asic", get(asic))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(front);
    let tls = tls::server_config(
        &cfg.tls_cert,
        &cfg.tls_key,
        Some(client_ca),
        tls::ClientAuth::Required,
    )?;
    let addr = format!("{listen}:{}", cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| SimError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| SimError::Listen { addr, source })?;
    let sh = shared;
    let task = tokio::spawn(tls::serve(
        listener,
        Some(tls),
        app,
        std::future::pending(),
        Arc::new(move |error| {
            lock(&sh.tls_refused).push(TlsRefused {
                registry: "x-road".into(),
                error: error.to_owned(),
            })
        }),
        tls::ServeLimits::for_this_process(Duration::from_secs(10)),
    ));
    Ok((bound, task))
}

/// The official schemas (and the SOAP envelope's, lax) compiled in a
/// folder of their own, which libxml2 reads them from.
fn schemas(limits: &crate::xml::Limits) -> Result<(tempfile::TempDir, Validator), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.path().join(name), bytes)
            .map_err(|e| format!("{}: {e}", dir.path().join(name).display()))
    };
    for (name, bytes) in OFFICIAL {
        write(name, bytes)?;
    }
    write("soap.xsd", SOAP_XSD.as_bytes())?;
    write(crate::xml::schema::ENTRY, ENTRY_XSD.as_bytes())?;
    let validator = Validator::start(dir.path(), limits.clone()).map_err(|e| e.to_string())?;
    Ok((dir, validator))
}

/// `POST /x-road/stamp` on the control endpoint: every waiting message is
/// timestamped now.
pub(super) fn stamp_all(sh: &Shared) {
    let now = Instant::now();
    for l in lock(&sh.x_road_log).values_mut() {
        l.stamp_at = l.stamp_at.min(now);
    }
}

/// An X-Road fault code in both forms: `Server.ClientProxy.MissingHeaderField`
/// and `server.clientproxy.missing_header_field`.
#[derive(Clone, Copy)]
struct Code {
    proxy: Proxy,
    camel: &'static str,
}

#[derive(Clone, Copy)]
enum Proxy {
    Client,
    Server,
}

impl Code {
    const fn client(camel: &'static str) -> Code {
        Code {
            proxy: Proxy::Client,
            camel,
        }
    }
    const fn server(camel: &'static str) -> Code {
        Code {
            proxy: Proxy::Server,
            camel,
        }
    }

    fn render(self, snake: bool) -> String {
        let (dotted, lower) = match self.proxy {
            Proxy::Client => ("Server.ClientProxy", "server.clientproxy"),
            Proxy::Server => ("Server.ServerProxy", "server.serverproxy"),
        };
        if !snake {
            return format!("{dotted}.{}", self.camel);
        }
        // Each dotted part to snake_case: ServiceFailed.NetworkError ->
        // service_failed.network_error.
        let parts: Vec<String> = self
            .camel
            .split('.')
            .map(|p| {
                let mut o = String::new();
                for (i, c) in p.chars().enumerate() {
                    if c.is_ascii_uppercase() && i > 0 {
                        o.push('_');
                    }
                    o.push(c.to_ascii_lowercase());
                }
                o
            })
            .collect();
        format!("{lower}.{}", parts.join("."))
    }
}

const MISSING_HEADER: Code = Code::client("MissingHeaderField");
const DUPLICATE_HEADER: Code = Code::client("DuplicateHeaderField");
const INVALID_PROTOCOL_VERSION: Code = Code::client("InvalidProtocolVersion");
const INVALID_SOAP: Code = Code::client("InvalidSoap");
const INVALID_BODY: Code = Code::client("InvalidBody");
const INVALID_CONTENT_TYPE: Code = Code::client("InvalidContentType");
const INVALID_CLIENT: Code = Code::client("InvalidClientIdentifier");
const UNKNOWN_SERVICE: Code = Code::server("UnknownService");
const ACCESS_DENIED: Code = Code::server("AccessDenied");
const NETWORK_ERROR: Code = Code::server("ServiceFailed.NetworkError");

/// A technical fault as X-Road sends it (message protocol, annex D1): no
/// headers, the code, the string, an empty actor, and a detail with an id.
fn technical_fault(code: &str, text: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\"><SOAP-ENV:Body><SOAP-ENV:Fault>\
<faultcode>{}</faultcode><faultstring>{}</faultstring><faultactor></faultactor><detail><faultDetail xmlns=\"\">{}</faultDetail></detail>\
</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>",
        ns::SOAP,
        esc(code),
        esc(text),
        ulid::Ulid::new()
    );
    soap_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "text/xml; charset=UTF-8",
        body.into_bytes(),
    )
}

fn soap_response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    let mut r = Response::new(axum::body::Body::from(body));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The `id:objectType` attribute.
fn object_type(doc: &Document, node: NodeId) -> Option<&str> {
    doc.element(node)?
        .attrs
        .iter()
        .find(|a| a.ns == ns::ID && a.local == "objectType")
        .map(|a| a.value.as_str())
}

fn member_text(doc: &Document, node: NodeId, local: &str) -> Option<String> {
    doc.child(node, ns::ID, local)
        .map(|n| doc.text(n).trim().to_owned())
}

fn member_of(doc: &Document, node: NodeId) -> Result<Member, String> {
    let need = |l: &str| member_text(doc, node, l).ok_or_else(|| format!("id:{l} is missing"));
    Ok(Member {
        instance: need("xRoadInstance")?,
        class: need("memberClass")?,
        code: need("memberCode")?,
        subsystem: member_text(doc, node, "subsystemCode"),
    })
}

fn show(m: &Member) -> String {
    let mut s = format!("{}/{}/{}", m.instance, m.class, m.code);
    if let Some(sub) = &m.subsystem {
        s.push('/');
        s.push_str(sub);
    }
    s
}

/// What the front read from a request it accepted.
struct Request {
    client: Member,
    service: Member,
    code: String,
    id: String,
    /// Each header element as sent (exclusive canonical form: the same
    /// names and values, with the namespaces it uses declared on it).
    headers: Vec<(String, String, Vec<u8>)>,
    /// The body's wrapper: namespace and prefix.
    wrapper_ns: String,
    wrapper_prefix: String,
    body: AskedBody,
}

/// The request checked as a client's security server does; a refusal is
/// the fault's code and text.
fn read_request(
    validator: &Validator,
    limits: &crate::xml::Limits,
    ctype: Option<&str>,
    bytes: &[u8],
) -> Result<Request, (Code, String)> {
    let ct = ctype.unwrap_or_default().to_ascii_lowercase();
    if !ct.starts_with("text/xml") {
        return Err((
            INVALID_CONTENT_TYPE,
            format!("Invalid content type: {:?}", ctype.unwrap_or_default()),
        ));
    }
    let doc = Document::parse(bytes, limits)
        .map_err(|e| (INVALID_SOAP, format!("Malformed SOAP message: {e}")))?;
    let root = doc.root();
    if !doc.is(root, ns::SOAP, "Envelope") {
        return Err((
            INVALID_SOAP,
            "Malformed SOAP message: not a SOAP 1.1 envelope".into(),
        ));
    }
    validator
        .validate(bytes)
        .map_err(|e| (INVALID_SOAP, format!("Malformed SOAP message: {e}")))?;
    let header = doc.child(root, ns::SOAP, "Header").ok_or((
        MISSING_HEADER,
        "Malformed SOAP message: header missing".into(),
    ))?;
    let mut found: BTreeMap<&str, NodeId> = BTreeMap::new();
    let mut headers = Vec::new();
    for h in doc.child_elements(header) {
        let Some(e) = doc.element(h) else { continue };
        if e.ns == ns::XROAD {
            if let Some(prev) = found.insert(
                match e.local.as_str() {
                    "client" => "client",
                    "service" => "service",
                    "id" => "id",
                    "userId" => "userId",
                    "issue" => "issue",
                    "protocolVersion" => "protocolVersion",
                    "requestHash" => "requestHash",
                    _ => "other",
                },
                h,
            ) {
                if doc.element(prev).is_some_and(|p| p.local == e.local) {
                    return Err((
                        DUPLICATE_HEADER,
                        format!("Duplicate header field '{}'", e.local),
                    ));
                }
            }
        }
        let c14n = doc.canonicalize_subtree(h, &Options::exclusive(), Vec::new());
        headers.push((e.ns.clone(), e.local.clone(), c14n));
    }
    let need = |name: &'static str| {
        found.get(name).copied().ok_or((
            MISSING_HEADER,
            format!("Required field '{name}' is missing"),
        ))
    };
    let client_node = need("client")?;
    let service_node = need("service")?;
    let id = doc.text(need("id")?).trim().to_owned();
    let version = doc.text(need("protocolVersion")?).trim().to_owned();
    if id.is_empty() {
        return Err((MISSING_HEADER, "Required field 'id' is empty".into()));
    }
    if version != "4.0" {
        return Err((
            INVALID_PROTOCOL_VERSION,
            format!("Unsupported protocol version '{version}'"),
        ));
    }
    if found.contains_key("requestHash") {
        return Err((
            INVALID_SOAP,
            "Malformed SOAP message: a request must not carry requestHash".into(),
        ));
    }
    let client = member_of(&doc, client_node)
        .map_err(|e| (INVALID_CLIENT, format!("Invalid client identifier: {e}")))?;
    match object_type(&doc, client_node) {
        Some("SUBSYSTEM") if client.subsystem.is_some() => {}
        Some("MEMBER") if client.subsystem.is_none() => {}
        other => {
            return Err((
                INVALID_CLIENT,
                format!(
                    "Invalid client identifier: objectType {other:?} for {}",
                    show(&client)
                ),
            ))
        }
    }
    let service = member_of(&doc, service_node)
        .map_err(|e| (MISSING_HEADER, format!("Malformed service identifier: {e}")))?;
    if object_type(&doc, service_node) != Some("SERVICE") {
        return Err((
            INVALID_SOAP,
            "Malformed SOAP message: the service's objectType must be SERVICE".into(),
        ));
    }
    let code = member_text(&doc, service_node, "serviceCode")
        .filter(|c| !c.is_empty())
        .ok_or((
            MISSING_HEADER,
            "Required field 'serviceCode' is missing".into(),
        ))?;
    let body = doc
        .child(root, ns::SOAP, "Body")
        .ok_or((INVALID_SOAP, "Malformed SOAP message: body missing".into()))?;
    let children: Vec<NodeId> = doc.child_elements(body).collect();
    let [wrapper] = children.as_slice() else {
        return Err((
            INVALID_BODY,
            format!(
                "Malformed SOAP message: the body holds {} elements, not one",
                children.len()
            ),
        ));
    };
    let w = doc
        .element(*wrapper)
        .ok_or((INVALID_BODY, "no wrapper".into()))?;
    if w.local != code {
        return Err((
            INVALID_BODY,
            format!(
                "Malformed SOAP message: the body's element {:?} is not named after the service code {code:?}",
                w.local
            ),
        ));
    }
    let inner = doc.child_elements(*wrapper).next();
    let body = match inner {
        Some(n) if doc.is(n, ns::JUM, "Poll") => AskedBody::Poll(
            doc.child(n, ns::JUM, "ticket")
                .map(|t| doc.text(t).trim().to_owned())
                .unwrap_or_default(),
        ),
        Some(n) => AskedBody::Payload(
            doc.child_elements(n)
                .filter_map(|c| {
                    doc.element(c)
                        .map(|e| (e.local.clone(), doc.text(c).trim().to_owned()))
                })
                .collect(),
        ),
        None => AskedBody::Other,
    };
    Ok(Request {
        client,
        service,
        code,
        id,
        headers,
        wrapper_ns: w.ns.clone(),
        wrapper_prefix: w.prefix.clone(),
        body,
    })
}

async fn soap(State(front): State<Arc<Front>>, hdrs: HeaderMap, bytes: Bytes) -> Response {
    let sh = &front.shared;
    let snake_all = lock(&sh.faults).has_service_state(Fault::Snake, "*", "*");
    let ctype = hdrs.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let req = match read_request(&front.validator, &sh.limits, ctype, &bytes) {
        Ok(r) => r,
        Err((code, text)) => return technical_fault(&code.render(snake_all), &text),
    };
    let service_id = format!("{}/{}", show(&req.service), req.code);
    let Some(reg) = front
        .registries
        .iter()
        .find(|r| r.member == req.service)
        .cloned()
    else {
        return technical_fault(
            &UNKNOWN_SERVICE.render(snake_all),
            &format!("Unknown service: SERVICE:{service_id}"),
        );
    };
    let snake = lock(&sh.faults).has_service_state(Fault::Snake, &reg.name, &req.code);
    let meta = matches!(req.code.as_str(), "listMethods" | "allowedMethods");
    if meta && req.wrapper_ns != ns::XROAD {
        return technical_fault(
            &INVALID_BODY.render(snake),
            &format!(
                "Malformed SOAP message: {} is in the namespace {}",
                req.code,
                ns::XROAD
            ),
        );
    }
    let known = super::data::SERVICES
        .iter()
        .any(|s| *s == req.code && s.starts_with(&format!("{}.", reg.name)));
    if !meta && !known {
        return technical_fault(
            &UNKNOWN_SERVICE.render(snake),
            &format!("Unknown service: SERVICE:{service_id}"),
        );
    }
    if !front.clients.is_empty() && !front.clients.contains(&req.client) {
        return technical_fault(
            &ACCESS_DENIED.render(snake),
            &format!(
                "Request is not allowed: SERVICE:{service_id} (client {})",
                show(&req.client)
            ),
        );
    }
    let hash = request_hash(&bytes);
    if meta {
        let inner = methods(&front, &reg, &req);
        let xml = envelope(&req.headers, &hash, &inner);
        return log_and_send(&front, &req, None, xml.into_bytes(), Vec::new());
    }

    let asked = Asked {
        service: req.code.clone(),
        id: req.id.clone(),
        body: req.body.clone(),
    };
    let (status, body, fault) = match serve(&reg, sh, &asked, None).await {
        Reply::Raw(r) => return r,
        Reply::Answer {
            status,
            body,
            fault,
        } => (status, body, fault),
    };
    match fault {
        Some(Fault::XrNetwork | Fault::XrNetworkSnake) => {
            return technical_fault(
                &NETWORK_ERROR.render(fault == Some(Fault::XrNetworkSnake)),
                &format!("Service {service_id} failed: connection refused (simulated)"),
            )
        }
        Some(Fault::XrDenied | Fault::XrDeniedSnake) => {
            return technical_fault(
                &ACCESS_DENIED.render(fault == Some(Fault::XrDeniedSnake)),
                &format!("Request is not allowed: SERVICE:{service_id}"),
            )
        }
        _ => {}
    }

    // The headers as the provider copies them back, unless a rule says not.
    let mut headers = req.headers.clone();
    match fault {
        Some(Fault::XrHeaderDropped) => {
            let at = headers
                .iter()
                .position(|(n, l, _)| n == ns::XROAD && l == "issue")
                .unwrap_or(headers.len().saturating_sub(1));
            if at < headers.len() {
                headers.remove(at);
            }
        }
        Some(Fault::XrHeaderChanged) => {
            for h in headers
                .iter_mut()
                .filter(|(n, l, _)| n == ns::XROAD && l == "id")
            {
                let text = String::from_utf8_lossy(&h.2).replacen(
                    &format!(">{}<", esc(&req.id)),
                    &format!(">{}-changed<", esc(&req.id)),
                    1,
                );
                h.2 = text.into_bytes();
            }
        }
        Some(Fault::XrHeadersReordered) if headers.len() > 1 => headers.swap(0, 1),
        _ => {}
    }
    let hash = if fault == Some(Fault::BadHash) {
        request_hash(b"some other request")
    } else {
        hash
    };
    let cid = format!(
        "attachment1-{}@sim.jum-gateway",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let inner = if status == StatusCode::OK {
        let prefix = if req.wrapper_prefix.is_empty() {
            "ns1"
        } else {
            req.wrapper_prefix.as_str()
        };
        let name = if fault == Some(Fault::XrWrapper) {
            format!("{}Result", req.code)
        } else {
            format!("{}Response", req.code)
        };
        let document = if fault == Some(Fault::Cdata) {
            with_comments_and_cdata(&body)
        } else {
            body
        };
        let extra = if fault == Some(Fault::Mtom) {
            format!(
                "<{prefix}:attachment><xop:Include xmlns:xop=\"{XOP_NS}\" href=\"cid:{}\"/></{prefix}:attachment>",
                esc(&cid)
            )
        } else {
            String::new()
        };
        format!(
            "<{prefix}:{name} xmlns:{prefix}=\"{}\">{document}{extra}</{prefix}:{name}>",
            esc(&req.wrapper_ns)
        )
    } else {
        // The registry's own SOAP fault, forwarded whole.
        body
    };
    let mut xml = envelope(&headers, &hash, &inner);
    if fault == Some(Fault::Cdata) {
        xml = xml.replacen(
            "<SOAP-ENV:Header>",
            "<SOAP-ENV:Header><!-- copied back -->",
            1,
        );
    }
    let attachment = matches!(fault, Some(Fault::Swa | Fault::Mtom)).then(|| Part {
        cid: cid.clone(),
        content_type: "application/pdf".into(),
        name: "izvod.pdf".into(),
        bytes: attachment_bytes(&req.id),
    });
    let (ctype, soap_bytes) = match fault {
        // The charset named by the Content-Type alone, pr-mess 2.6's
        // preferred way: no XML declaration says it, so whoever keeps the
        // bytes as they came must keep the charset with them.
        Some(Fault::Latin1) => (
            "text/xml; charset=ISO-8859-1".to_owned(),
            latin1(
                xml.find("<SOAP-ENV:Envelope")
                    .map_or(xml.as_str(), |i| &xml[i..]),
            ),
        ),
        Some(Fault::Bom) => {
            let mut b = vec![0xEF, 0xBB, 0xBF];
            b.extend_from_slice(xml.as_bytes());
            ("text/xml; charset=UTF-8".to_owned(), b)
        }
        _ => ("text/xml; charset=UTF-8".to_owned(), xml.into_bytes()),
    };
    let mut r = log_and_send(
        &front,
        &req,
        Some((status, ctype, fault)),
        soap_bytes,
        attachment.into_iter().collect(),
    );
    match fault {
        Some(Fault::Truncate) => r = super::truncated(status, body_bytes(r).await),
        Some(Fault::Drip) => {
            let ct = r.headers().get(header::CONTENT_TYPE).cloned();
            let full = body_bytes(r).await;
            r = Response::new(super::broken_body(full, Some(Duration::from_millis(200))));
            *r.status_mut() = status;
            if let Some(ct) = ct {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
        }
        _ => {}
    }
    r
}

async fn body_bytes(r: Response) -> Vec<u8> {
    axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

struct Part {
    cid: String,
    content_type: String,
    name: String,
    bytes: Vec<u8>,
}

/// A small PDF-looking attachment with every byte value in it, so that a
/// reader that is not binary-safe shows.
fn attachment_bytes(id: &str) -> Vec<u8> {
    let mut b = format!("%PDF-1.4\n% simulated extract for message {id}\n").into_bytes();
    b.extend(0u8..=255);
    b.extend_from_slice(b"\r\n\r\n--not-a-boundary\r\n%%EOF\n");
    b
}

/// Logs the answer for its signed document and sends it: a SOAP message,
/// or SOAP with attachments / MTOM when there are attachments.
fn log_and_send(
    front: &Front,
    req: &Request,
    how: Option<(StatusCode, String, Option<Fault>)>,
    soap: Vec<u8>,
    parts: Vec<Part>,
) -> Response {
    let (status, ctype, fault) =
        how.unwrap_or((StatusCode::OK, "text/xml; charset=UTF-8".into(), None));
    let mut log = lock(&front.shared.x_road_log);
    // A long demo must not grow without bound: the oldest goes first, as
    // a security server's message log archives and forgets.
    if log.len() >= MAX_LOGGED {
        if let Some(oldest) = log
            .iter()
            .min_by_key(|(_, l)| l.stamp_at)
            .map(|(k, _)| k.clone())
        {
            log.remove(&oldest);
        }
    }
    log.insert(
        req.id.clone(),
        Logged {
            client: req.client.clone(),
            message: soap.clone(),
            attachments: parts
                .iter()
                .map(|p| (p.content_type.clone(), p.bytes.clone()))
                .collect(),
            stamp_at: Instant::now() + front.asic_delay,
        },
    );
    drop(log);
    if parts.is_empty() {
        return soap_response(status, &ctype, soap);
    }
    let mtom = fault == Some(Fault::Mtom);
    let boundary = format!("jumgw-sim-{}", ulid::Ulid::new().to_string().to_lowercase());
    let root = "<rootpart@sim.jum-gateway>";
    let mut body = Vec::with_capacity(soap.len() + 1024);
    let root_type = if mtom {
        "application/xop+xml; charset=UTF-8; type=\"text/xml\""
    } else {
        "text/xml; charset=UTF-8"
    };
    let _ = write!(
        body,
        "--{boundary}\r\nContent-Type: {root_type}\r\nContent-Transfer-Encoding: 8bit\r\nContent-ID: {root}\r\n\r\n"
    );
    body.extend_from_slice(&soap);
    for p in &parts {
        let _ = write!(
            body,
            "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{}>\r\nContent-Disposition: attachment; filename=\"{}\"\r\n\r\n",
            p.content_type, p.cid, p.name
        );
        body.extend_from_slice(&p.bytes);
    }
    let _ = write!(body, "\r\n--{boundary}--\r\n");
    let ctype = if mtom {
        format!(
            "multipart/related; type=\"application/xop+xml\"; start=\"{root}\"; start-info=\"text/xml\"; boundary=\"{boundary}\""
        )
    } else {
        format!("multipart/related; type=\"text/xml\"; start=\"{root}\"; boundary=\"{boundary}\"")
    };
    soap_response(status, &ctype, body)
}

/// The answer's envelope: the headers, `requestHash`, and the body (whose
/// `jum:Accepted` or `jum:` fault uses the prefix declared here).
fn envelope(headers: &[(String, String, Vec<u8>)], hash: &str, body: &str) -> String {
    let mut o = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\" xmlns:jum=\"{}\"><SOAP-ENV:Header>",
        ns::SOAP,
        ns::JUM
    );
    for (_, _, h) in headers {
        o.push_str(&String::from_utf8_lossy(h));
    }
    o.push_str(&format!(
        "<xrd:requestHash xmlns:xrd=\"{}\" algorithmId=\"{}\">{}</xrd:requestHash>",
        ns::XROAD,
        ns::SHA512,
        esc(hash)
    ));
    o.push_str("</SOAP-ENV:Header><SOAP-ENV:Body>");
    o.push_str(body);
    o.push_str("</SOAP-ENV:Body></SOAP-ENV:Envelope>");
    o
}

/// The metaservices' answer (service metadata protocol): every service of
/// the registry (`listMethods`), or those the client may call
/// (`allowedMethods`: not those an `unlisted` rule hides).
fn methods(front: &Front, reg: &Registry, req: &Request) -> String {
    let faults = lock(&front.shared.faults);
    let mut o = format!(
        "<xroad:{}Response xmlns:xroad=\"{}\" xmlns:id=\"{}\">",
        req.code,
        ns::XROAD,
        ns::ID
    );
    for s in super::data::SERVICES
        .iter()
        .filter(|s| s.starts_with(&format!("{}.", reg.name)))
    {
        if req.code == "allowedMethods" && faults.has_service_state(Fault::Unlisted, &reg.name, s) {
            continue;
        }
        o.push_str("<xroad:service id:objectType=\"SERVICE\">");
        o.push_str(&format!(
            "<id:xRoadInstance>{}</id:xRoadInstance><id:memberClass>{}</id:memberClass><id:memberCode>{}</id:memberCode>",
            esc(&reg.member.instance),
            esc(&reg.member.class),
            esc(&reg.member.code)
        ));
        if let Some(sub) = &reg.member.subsystem {
            o.push_str(&format!(
                "<id:subsystemCode>{}</id:subsystemCode>",
                esc(sub)
            ));
        }
        o.push_str(&format!(
            "<id:serviceCode>{}</id:serviceCode><id:serviceVersion>v1</id:serviceVersion></xroad:service>",
            esc(s)
        ));
    }
    o.push_str(&format!("</xroad:{}Response>", req.code));
    o
}

/// A comment before the document and inside it, and its first text in a
/// CDATA section: the same document to any XML reader.
fn with_comments_and_cdata(doc: &str) -> String {
    let mut out = String::from("<!-- answered by the simulated registry -->");
    // The first text between a start tag and an end tag.
    let mut wrapped = false;
    let mut rest = doc;
    while let Some(gt) = rest.find('>') {
        let (head, tail) = rest.split_at(gt + 1);
        out.push_str(head);
        rest = tail;
        if !wrapped {
            if let Some(lt) = rest.find('<') {
                let text = &rest[..lt];
                if !text.trim().is_empty() && rest[lt..].starts_with("</") && !text.contains('&') {
                    out.push_str("<![CDATA[");
                    out.push_str(text);
                    out.push_str("]]><!-- the text above is CDATA -->");
                    rest = &rest[lt..];
                    wrapped = true;
                }
            }
        }
    }
    out.push_str(rest);
    out
}

/// ISO-8859-1 bytes of `xml`; a character Latin-1 cannot hold is written
/// as a character reference, so the text read back is the same.
fn latin1(xml: &str) -> Vec<u8> {
    let mut o = Vec::with_capacity(xml.len());
    for c in xml.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => o.push(b),
            Err(_) => o.extend_from_slice(format!("&#{};", u32::from(c)).as_bytes()),
        }
    }
    o
}

/// `GET /asic`: the signed document of one answer (see the module doc).
async fn asic(
    State(front): State<Arc<Front>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let text = |status: StatusCode, msg: &str| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            msg.to_owned(),
        )
            .into_response()
    };
    for p in ["queryId", "xRoadInstance", "memberClass", "memberCode"] {
        if q.get(p).is_none_or(|v| v.is_empty()) {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("Missing parameter \"{p}\""),
            );
        }
    }
    let (request_only, response_only) = (
        q.contains_key("requestOnly"),
        q.contains_key("responseOnly"),
    );
    if request_only && response_only {
        return text(
            StatusCode::BAD_REQUEST,
            "Parameters \"requestOnly\" and \"responseOnly\" are mutually exclusive",
        );
    }
    if q.contains_key("unique") && !(request_only || response_only) {
        return text(
            StatusCode::BAD_REQUEST,
            "Parameter \"unique\" must be used with \"requestOnly\" or \"responseOnly\"",
        );
    }
    if !(response_only && q.contains_key("unique")) {
        return text(
            StatusCode::BAD_REQUEST,
            "this simulated security server serves single documents of responses: add responseOnly&unique",
        );
    }
    let client = Member {
        instance: q["xRoadInstance"].clone(),
        class: q["memberClass"].clone(),
        code: q["memberCode"].clone(),
        subsystem: q.get("subsystemCode").filter(|s| !s.is_empty()).cloned(),
    };
    let force = q.contains_key("force");
    let (message, attachments) = {
        let mut log = lock(&front.shared.x_road_log);
        let Some(l) = log.get_mut(&q["queryId"]).filter(|l| l.client == client) else {
            return text(StatusCode::NOT_FOUND, "No signed documents found");
        };
        if force {
            l.stamp_at = l.stamp_at.min(Instant::now());
        }
        if l.stamp_at > Instant::now() {
            return text(StatusCode::NOT_FOUND, NOT_STAMPED);
        }
        (l.message.clone(), l.attachments.clone())
    };
    match container(&front.key, &message, &attachments) {
        Ok(zip) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    crate::evidence::dossier::MIMETYPE.to_owned(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}-response.asice\"",
                        q["queryId"].replace(['"', '\\', '\r', '\n'], "_")
                    ),
                ),
            ],
            zip,
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// The ASiC-E container of one message: `mimetype` first and stored,
/// `message.xml`, `attachmentN`, the manifest, and a XAdES signature over
/// the message and its attachments.
fn container(
    key: &SigningKey,
    message: &[u8],
    attachments: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, String> {
    use crate::xml::xades::{self, DataObject};
    let mut files: Vec<(String, String, &[u8])> =
        vec![("message.xml".into(), "text/xml".into(), message)];
    for (i, (ctype, bytes)) in attachments.iter().enumerate() {
        files.push((format!("attachment{}", i + 1), ctype.clone(), bytes));
    }
    let objects: Vec<DataObject<'_>> = files
        .iter()
        .map(|(n, m, b)| DataObject {
            uri: n,
            bytes: b,
            mime: m,
        })
        .collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let signature = xades::sign(&objects, key, &now)
        .map_err(|e| e.to_string())?
        .document(None);
    let zerr = |e: &dyn std::fmt::Display| e.to_string();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("mimetype", stored).map_err(|e| zerr(&e))?;
    zip.write_all(crate::evidence::dossier::MIMETYPE.as_bytes())
        .map_err(|e| zerr(&e))?;
    for (name, _, bytes) in &files {
        zip.start_file(name.as_str(), deflated)
            .map_err(|e| zerr(&e))?;
        zip.write_all(bytes).map_err(|e| zerr(&e))?;
    }
    let listed: Vec<(String, String)> = files
        .iter()
        .map(|(n, m, _)| (n.clone(), m.clone()))
        .collect();
    zip.start_file("META-INF/manifest.xml", deflated)
        .map_err(|e| zerr(&e))?;
    zip.write_all(&crate::evidence::dossier::manifest(&listed))
        .map_err(|e| zerr(&e))?;
    zip.start_file("META-INF/signatures.xml", deflated)
        .map_err(|e| zerr(&e))?;
    zip.write_all(&signature).map_err(|e| zerr(&e))?;
    zip.finish().map(|c| c.into_inner()).map_err(|e| zerr(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_codes_in_both_forms() {
        assert_eq!(
            NETWORK_ERROR.render(false),
            "Server.ServerProxy.ServiceFailed.NetworkError"
        );
        assert_eq!(
            NETWORK_ERROR.render(true),
            "server.serverproxy.service_failed.network_error"
        );
        assert_eq!(
            ACCESS_DENIED.render(true),
            "server.serverproxy.access_denied"
        );
        assert_eq!(
            MISSING_HEADER.render(true),
            "server.clientproxy.missing_header_field"
        );
    }

    #[test]
    fn latin1_keeps_the_text() {
        let xml = "<a>Szabó Éva, Bečej</a>";
        let b = latin1(xml);
        // Each Latin-1 byte is the code point of its character.
        let back: String = b.iter().map(|&c| char::from(c)).collect();
        assert_eq!(back, "<a>Szabó Éva, Be&#269;ej</a>");
        assert!(
            b.contains(&0xF3) && b.contains(&0xC9),
            "ó and É are one byte each"
        );
    }

    const GENUINE: &str = concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" "#,
        r#"xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers"><SOAP-ENV:Header>"#,
        r#"<xrd:client id:objectType="SUBSYSTEM"><id:xRoadInstance>RS</id:xRoadInstance><id:memberClass>GOV</id:memberClass>"#,
        r#"<id:memberCode>08070431</id:memberCode><id:subsystemCode>jum-becej</id:subsystemCode></xrd:client>"#,
        r#"<xrd:service id:objectType="SERVICE"><id:xRoadInstance>RS</id:xRoadInstance><id:memberClass>GOV</id:memberClass>"#,
        r#"<id:memberCode>17862146</id:memberCode><id:subsystemCode>maticne-knjige</id:subsystemCode>"#,
        r#"<id:serviceCode>civil.birth-extract</id:serviceCode></xrd:service><xrd:id>m1</xrd:id>"#,
        r#"<xrd:protocolVersion>4.0</xrd:protocolVersion></SOAP-ENV:Header><SOAP-ENV:Body>"#,
        r#"<c:civil.birth-extract xmlns:c="urn:jum-gateway:civil:1"><c:BirthExtractRequest><c:jmbg>0512981717776</c:jmbg>"#,
        r#"</c:BirthExtractRequest></c:civil.birth-extract></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );

    fn validator() -> &'static (tempfile::TempDir, Validator) {
        static V: std::sync::OnceLock<(tempfile::TempDir, Validator)> = std::sync::OnceLock::new();
        V.get_or_init(|| schemas(&crate::xml::Limits::default()).unwrap())
    }

    fn read(bytes: &[u8]) -> Result<Request, (Code, String)> {
        read_request(
            &validator().1,
            &crate::xml::Limits::default(),
            Some("text/xml; charset=UTF-8"),
            bytes,
        )
    }

    #[test]
    fn the_genuine_request_is_read() {
        let r = read(GENUINE.as_bytes())
            .map_err(|(c, t)| (c.render(false), t))
            .unwrap();
        assert_eq!(
            (r.code.as_str(), r.id.as_str()),
            ("civil.birth-extract", "m1")
        );
        assert_eq!(r.headers.len(), 4);
        assert!(matches!(r.body, AskedBody::Payload(ref f) if f["jmbg"] == "0512981717776"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any bytes, and the genuine request with one byte changed or cut
        /// short: read, or refused with a fault code and a message; never
        /// a panic.
        #[test]
        fn requests_are_read_or_refused_with_a_message(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in 0usize..GENUINE.len(),
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..GENUINE.len(),
        ) {
            let mut changed = GENUINE.as_bytes().to_vec();
            changed[at] = byte;
            for input in [&junk[..], &changed[..], &GENUINE.as_bytes()[..cut]] {
                if let Err((code, text)) = read(input) {
                    proptest::prop_assert!(code.render(false).starts_with("Server."));
                    proptest::prop_assert!(!text.is_empty());
                }
            }
        }
    }

    #[test]
    fn comments_and_cdata_keep_the_text() {
        let d = "<k:A xmlns:k=\"u\"><k:b>one</k:b><k:c>two &amp; three</k:c></k:A>";
        let w = with_comments_and_cdata(d);
        assert!(w.contains("<![CDATA[one]]>"), "{w}");
        let l = crate::xml::Limits::default();
        let a = Document::parse(d.as_bytes(), &l).unwrap();
        let b = Document::parse(w.as_bytes(), &l).unwrap();
        assert_eq!(a.text(a.root()), b.text(b.root()));
    }
}
