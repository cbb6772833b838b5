//! An answer read as a client's security server checks it, and more:
//! every header of the request copied back in the same order with the
//! same values (prefixes free, `requestHash` may be added), `requestHash`
//! recomputed over the exact bytes sent with the algorithm its
//! `algorithmId` names, the wrapper named `{serviceCode}Response` in the
//! service's namespace, and the document the wrapper's first element
//! child. Faults: X-Road's own (any code outside the jum namespace) and
//! the service's (`jum:` codes), read but not judged here
//! (`exchange::classify` does).

use std::time::Duration;

use base64::Engine;

use super::ns;
use crate::protocol::envelope::{fault_retry_after, parse_xs_duration, FaultCode};
use crate::xml::dom::{Document, NodeId, NodeKind};
use crate::xml::Limits;

/// What a checked answer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The document: the wrapper's first element child, written out as a
    /// document of its own with the namespaces in scope (for validation).
    Document {
        /// The document element's namespace and local name.
        ns: String,
        local: String,
        document: Vec<u8>,
    },
    /// A ticket to poll (`jum:Accepted` in the wrapper).
    Accepted {
        ticket: String,
        retry_after: Duration,
    },
    /// The service's own fault (a `jum:` code).
    Fault {
        code: FaultCode,
        text: String,
        retry_after: Option<Duration>,
    },
    /// X-Road's fault (`Server.ServerProxy.AccessDenied`,
    /// `server.clientproxy.service_failed.network_error`, ...).
    XRoadFault { code: String, text: String },
}

/// Why an answer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// Not XML, or not a SOAP envelope.
    #[error("{0}")]
    Malformed(String),
    /// A header of the request not copied back as it was.
    #[error("headers not copied back: {0}")]
    Headers(String),
    /// `requestHash` not that of the request sent, or of an algorithm we
    /// do not take.
    #[error("requestHash: {0}")]
    RequestHash(String),
    /// The body is not the service's `…Response` wrapper around a document.
    #[error("{0}")]
    Wrapper(String),
}

const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";

fn name_of(doc: &Document, n: NodeId) -> String {
    doc.element(n)
        .map(|e| {
            if e.ns.is_empty() {
                e.local.clone()
            } else {
                format!("{{{}}}{}", e.ns, e.local)
            }
        })
        .unwrap_or_default()
}

/// The envelope's Header (if any) and Body.
fn envelope(doc: &Document) -> Result<(Option<NodeId>, NodeId), CheckError> {
    let root = doc.root();
    if !doc.is(root, ns::SOAP, "Envelope") {
        return Err(CheckError::Malformed(format!(
            "not a SOAP 1.1 envelope: the root element is {}",
            name_of(doc, root)
        )));
    }
    let kids: Vec<NodeId> = doc.child_elements(root).collect();
    let (header, body) = match kids.as_slice() {
        [b] if doc.is(*b, ns::SOAP, "Body") => (None, *b),
        [h, b] if doc.is(*h, ns::SOAP, "Header") && doc.is(*b, ns::SOAP, "Body") => (Some(*h), *b),
        _ => {
            return Err(CheckError::Malformed(format!(
                "the envelope must hold an optional SOAP-ENV:Header and a SOAP-ENV:Body, found {}",
                kids.iter()
                    .map(|k| name_of(doc, *k))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    Ok((header, body))
}

/// Two elements the same: name, attributes (namespace declarations
/// aside), text (trimmed) and element children, recursively. Prefixes
/// and whitespace between elements are free.
fn same(a: &Document, x: NodeId, b: &Document, y: NodeId, path: &str) -> Result<(), String> {
    let (ex, ey) = match (a.element(x), b.element(y)) {
        (Some(ex), Some(ey)) => (ex, ey),
        _ => return Err(format!("{path}: not an element")),
    };
    if ex.ns != ey.ns || ex.local != ey.local {
        return Err(format!(
            "{path}: {} where {} was sent",
            name_of(b, y),
            name_of(a, x)
        ));
    }
    let here = format!("{path}/{}", ex.local);
    let mut ax: Vec<(&str, &str, &str)> = ex
        .attrs
        .iter()
        .map(|t| (t.ns.as_str(), t.local.as_str(), t.value.as_str()))
        .collect();
    let mut ay: Vec<(&str, &str, &str)> = ey
        .attrs
        .iter()
        .map(|t| (t.ns.as_str(), t.local.as_str(), t.value.as_str()))
        .collect();
    ax.sort_unstable();
    ay.sort_unstable();
    if ax != ay {
        return Err(format!(
            "{here}: attributes {:?} where {:?} were sent",
            ay.iter()
                .map(|(_, l, v)| format!("{l}={v}"))
                .collect::<Vec<_>>(),
            ax.iter()
                .map(|(_, l, v)| format!("{l}={v}"))
                .collect::<Vec<_>>()
        ));
    }
    let kx: Vec<NodeId> = a.child_elements(x).collect();
    let ky: Vec<NodeId> = b.child_elements(y).collect();
    if kx.is_empty() && ky.is_empty() {
        let (tx, ty) = (a.text(x), b.text(y));
        if tx.trim() != ty.trim() {
            return Err(format!(
                "{here}: {:?} where {:?} was sent",
                ty.trim(),
                tx.trim()
            ));
        }
        return Ok(());
    }
    if kx.len() != ky.len() {
        return Err(format!(
            "{here}: {} elements where {} were sent",
            ky.len(),
            kx.len()
        ));
    }
    // Mixed content: text beside the children must be the same too.
    let text = |d: &Document, n: NodeId| -> String {
        d.element(n)
            .map(|e| {
                e.children
                    .iter()
                    .filter_map(|c| match &d.node(*c).kind {
                        NodeKind::Text(t) => Some(t.trim().to_owned()),
                        _ => None,
                    })
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    if text(a, x) != text(b, y) {
        return Err(format!("{here}: text beside the elements differs"));
    }
    for (cx, cy) in kx.into_iter().zip(ky) {
        same(a, cx, b, cy, &here)?;
    }
    Ok(())
}

/// The request's headers, in order, copied back; `requestHash` checked.
fn headers(
    sent: &Document,
    answer: &Document,
    header: Option<NodeId>,
    sent_bytes: &[u8],
) -> Result<(), CheckError> {
    let (sent_header, _) =
        envelope(sent).map_err(|e| CheckError::Headers(format!("the request: {e}")))?;
    let ours: Vec<NodeId> = match sent_header {
        Some(h) => sent.child_elements(h).collect(),
        None => Vec::new(),
    };
    let Some(header) = header else {
        return Err(CheckError::Headers(
            "the answer has no SOAP-ENV:Header".into(),
        ));
    };
    let mut theirs = Vec::new();
    let mut hash = None;
    for h in answer.child_elements(header) {
        if answer.is(h, ns::XROAD, "requestHash") {
            if hash.replace(h).is_some() {
                return Err(CheckError::RequestHash("given twice".into()));
            }
        } else {
            theirs.push(h);
        }
    }
    for (i, x) in ours.iter().enumerate() {
        let Some(y) = theirs.get(i) else {
            return Err(CheckError::Headers(format!(
                "{} is missing",
                name_of(sent, *x)
            )));
        };
        same(sent, *x, answer, *y, "Header").map_err(CheckError::Headers)?;
    }
    // Headers after ours: a provider may add its own; they are kept with
    // the message but read by no one.
    if let Some(h) = hash {
        let alg = answer.attr(h, "algorithmId").unwrap_or_default();
        let digest: Vec<u8> = match alg {
            SHA256 => openssl::sha::sha256(sent_bytes).to_vec(),
            SHA384 => openssl::sha::sha384(sent_bytes).to_vec(),
            ns::SHA512 => openssl::sha::sha512(sent_bytes).to_vec(),
            other => {
                return Err(CheckError::RequestHash(format!(
                    "algorithm {other:?} is not SHA-256, SHA-384 or SHA-512"
                )))
            }
        };
        let text: String = answer
            .text(h)
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let given = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| CheckError::RequestHash(format!("not base64: {e}")))?;
        if given != digest {
            return Err(CheckError::RequestHash(
                "not the hash of the request sent".into(),
            ));
        }
    }
    Ok(())
}

fn fault(doc: &Document, f: NodeId) -> Answer {
    let child = |name: &str| {
        doc.child(f, "", name)
            .map(|n| doc.text(n).trim().to_owned())
    };
    let code_text = child("faultcode").unwrap_or_default();
    let text = child("faultstring").unwrap_or_default();
    let (prefix, local) = match code_text.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", code_text.as_str()),
    };
    let code_ns = if prefix.is_empty() {
        ""
    } else {
        doc.lookup_prefix(f, prefix).unwrap_or_default()
    };
    if code_ns == ns::JUM {
        return Answer::Fault {
            code: FaultCode::read(code_ns, local),
            text,
            retry_after: fault_retry_after(doc, f),
        };
    }
    // X-Road's codes are written without a prefix; one that has the SOAP
    // namespace's (`SOAP-ENV:Server.…`) is read the same.
    Answer::XRoadFault {
        code: local.to_owned(),
        text,
    }
}

/// Checks an answer (`received`, UTF-8 XML as [`super::receive`] made it)
/// to the request `sent` (the exact bytes POSTed) of service `code` in
/// namespace `service_ns`.
pub fn check(
    sent: &[u8],
    received: &[u8],
    service_ns: &str,
    code: &str,
    limits: &Limits,
) -> Result<Answer, CheckError> {
    let doc = Document::parse(received, limits)
        .map_err(|e| CheckError::Malformed(format!("not XML: {e}")))?;
    let (header, body) = envelope(&doc)?;
    let kids: Vec<NodeId> = doc.child_elements(body).collect();
    // A fault is read whatever its headers: X-Road's own have none, and a
    // fault delivers nothing.
    if let [only] = kids.as_slice() {
        if doc.is(*only, ns::SOAP, "Fault") {
            return Ok(fault(&doc, *only));
        }
    }
    let ours = Document::parse(sent, limits)
        .map_err(|e| CheckError::Headers(format!("the request: {e}")))?;
    headers(&ours, &doc, header, sent)?;
    let wrapper = match kids.as_slice() {
        [only] => *only,
        _ => {
            return Err(CheckError::Wrapper(format!(
                "the body must hold one {code}Response element, found {}",
                kids.len()
            )))
        }
    };
    let want = format!("{code}Response");
    if !doc.is(wrapper, service_ns, &want) {
        return Err(CheckError::Wrapper(format!(
            "the body holds {} where {{{service_ns}}}{want} was expected",
            name_of(&doc, wrapper)
        )));
    }
    let Some(first) = doc.child_elements(wrapper).next() else {
        return Err(CheckError::Wrapper(format!("{want} holds no document")));
    };
    if doc.is(first, ns::JUM, "Accepted") {
        let t = |l: &str| {
            doc.child(first, ns::JUM, l)
                .map(|n| doc.text(n).trim().to_owned())
        };
        let ticket = t("ticket")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CheckError::Wrapper("jum:Accepted has no ticket".into()))?;
        let ra = t("retryAfter").unwrap_or_default();
        let retry_after = parse_xs_duration(&ra).ok_or_else(|| {
            CheckError::Wrapper(format!("jum:Accepted: retryAfter {ra:?} is not a duration"))
        })?;
        return Ok(Answer::Accepted {
            ticket,
            retry_after,
        });
    }
    let document = doc.canonicalize_subtree(first, &crate::xml::Options::default(), Vec::new());
    let (ns, local) = doc
        .element(first)
        .map(|e| (e.ns.clone(), e.local.clone()))
        .unwrap_or_default();
    Ok(Answer::Document {
        ns,
        local,
        document,
    })
}

/// The service codes a `listMethodsResponse` or `allowedMethodsResponse`
/// lists (pr-meta 3.2), after [`check`]'s header checks.
pub fn methods_of(
    sent: &[u8],
    received: &[u8],
    meta: super::Meta,
    limits: &Limits,
) -> Result<Vec<String>, CheckError> {
    let doc = Document::parse(received, limits)
        .map_err(|e| CheckError::Malformed(format!("not XML: {e}")))?;
    let (header, body) = envelope(&doc)?;
    let kids: Vec<NodeId> = doc.child_elements(body).collect();
    if let [only] = kids.as_slice() {
        if doc.is(*only, ns::SOAP, "Fault") {
            let f = fault(&doc, *only);
            return Err(CheckError::Wrapper(match f {
                Answer::XRoadFault { code, text }
                | Answer::Fault {
                    code: FaultCode::Other(code),
                    text,
                    ..
                } => {
                    format!("fault {code}: {text}")
                }
                Answer::Fault { code, text, .. } => format!("fault {}: {text}", code.local()),
                _ => "fault".into(),
            }));
        }
    }
    let ours = Document::parse(sent, limits)
        .map_err(|e| CheckError::Headers(format!("the request: {e}")))?;
    headers(&ours, &doc, header, sent)?;
    let want = format!("{}Response", meta.code());
    let wrapper = match kids.as_slice() {
        [w] if doc.is(*w, ns::XROAD, &want) => *w,
        _ => {
            return Err(CheckError::Wrapper(format!(
                "the body is not one xrd:{want}"
            )))
        }
    };
    let mut codes = Vec::new();
    for s in doc.child_elements(wrapper) {
        if !doc.is(s, ns::XROAD, "service") {
            continue;
        }
        if let Some(c) = doc.child(s, ns::ID, "serviceCode") {
            codes.push(doc.text(c).trim().to_owned());
        }
    }
    Ok(codes)
}
