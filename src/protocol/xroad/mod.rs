//! X-Road message protocol 4.0, as a client information system speaks it
//! (NIIS's published specification; the official schemas and the spec's
//! example messages are vendored in `tests/vectors/x-road/`): requests
//! with the X-Road headers and a Document/Literal-Wrapped body
//! ([`request`]), what came over HTTP made into one SOAP message
//! ([`receive`]: the charset of `Content-Type`, a byte order mark, SOAP
//! with attachments and MTOM), answers read as a client's security server
//! would check them, and more ([`check`]: every header copied back,
//! `requestHash`, the `…Response` wrapper, faults in both of X-Road's
//! forms), and the metaservices `listMethods` and `allowedMethods`.
//!
//! Not supported: REST (`r1`), and X-Road's own signatures, which the
//! security servers make and verify.

mod check;
mod mime;

use std::fmt::Write as _;

pub use check::{check, methods_of, Answer, CheckError};
pub use mime::{receive, ReceiveLimits, Received};

use super::ns;
use crate::config::Member;
use crate::xml::escape as esc;

/// One attachment of an answer (SOAP with attachments or MTOM), as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Its `Content-ID`, without the angle brackets.
    pub content_id: String,
    /// Its `Content-Type`, as sent (`application/octet-stream` when none).
    pub content_type: String,
    /// Its file name, from `Content-Disposition` or the type's `name`.
    pub name: Option<String>,
    /// Its bytes, the transfer encoding undone.
    pub bytes: Vec<u8>,
}

/// What is wrong with what came over HTTP, before any XML is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XRoadError {
    #[error("Content-Type {0:?} cannot be read: {1}")]
    ContentType(String, String),
    #[error("unsupported Content-Type {0:?}: expected text/xml, multipart/related or application/xop+xml")]
    UnsupportedType(String),
    #[error("unknown charset {0:?}")]
    Charset(String),
    #[error("the text is not valid {0}")]
    Undecodable(String),
    #[error("multipart: {0}")]
    Multipart(String),
    #[error("MTOM: {0}")]
    Mtom(String),
}

/// The Xop namespace of MTOM's `xop:Include`.
pub const XOP: &str = "http://www.w3.org/2004/08/xop/include";

/// What one request is, in X-Road's terms.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Our information system (`gateway.client`).
    pub client: &'a Member,
    /// The service provider (the registry's `member`).
    pub service: &'a Member,
    pub service_code: &'a str,
    /// `id:serviceVersion`, left out when empty.
    pub service_version: &'a str,
    /// This message's id: new on every attempt.
    pub id: &'a str,
    /// The official, with the country code before it (`RSmarija.kovac`).
    pub user_id: &'a str,
    /// The case number.
    pub issue: &'a str,
    pub legal_basis: &'a str,
    pub purpose: &'a str,
    /// The request's own id (ULID), the same on every attempt.
    pub request_id: &'a str,
}

fn member_xml(
    out: &mut String,
    tag: &str,
    object_type: &str,
    m: &Member,
    service: Option<(&str, &str)>,
) {
    let _ = write!(
        out,
        "<xrd:{tag} id:objectType=\"{object_type}\"><id:xRoadInstance>{}</id:xRoadInstance><id:memberClass>{}</id:memberClass><id:memberCode>{}</id:memberCode>",
        esc(&m.instance),
        esc(&m.class),
        esc(&m.code)
    );
    if let Some(s) = &m.subsystem {
        let _ = write!(out, "<id:subsystemCode>{}</id:subsystemCode>", esc(s));
    }
    if let Some((code, version)) = service {
        let _ = write!(out, "<id:serviceCode>{}</id:serviceCode>", esc(code));
        if !version.is_empty() {
            let _ = write!(
                out,
                "<id:serviceVersion>{}</id:serviceVersion>",
                esc(version)
            );
        }
    }
    let _ = write!(out, "</xrd:{tag}>");
}

fn client_type(m: &Member) -> &'static str {
    if m.subsystem.is_some() {
        "SUBSYSTEM"
    } else {
        "MEMBER"
    }
}

fn envelope(r: &Request<'_>, extra: bool, body: &str) -> String {
    let mut o = String::with_capacity(1536 + body.len());
    let _ = write!(
        o,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\" xmlns:xrd=\"{}\" xmlns:id=\"{}\"{}><SOAP-ENV:Header>",
        ns::SOAP,
        ns::XROAD,
        ns::ID,
        if extra {
            format!(" xmlns:jum=\"{}\"", ns::JUM)
        } else {
            String::new()
        }
    );
    member_xml(&mut o, "client", client_type(r.client), r.client, None);
    member_xml(
        &mut o,
        "service",
        "SERVICE",
        r.service,
        Some((r.service_code, r.service_version)),
    );
    let _ = write!(o, "<xrd:id>{}</xrd:id>", esc(r.id));
    if !r.user_id.is_empty() {
        let _ = write!(o, "<xrd:userId>{}</xrd:userId>", esc(r.user_id));
    }
    if !r.issue.is_empty() {
        let _ = write!(o, "<xrd:issue>{}</xrd:issue>", esc(r.issue));
    }
    o.push_str("<xrd:protocolVersion>4.0</xrd:protocolVersion>");
    if extra {
        // Security servers forward the SOAP message whole and the provider
        // copies every header back: ours travel with the X-Road ones.
        let _ = write!(
            o,
            "<jum:legalBasis>{}</jum:legalBasis><jum:purpose>{}</jum:purpose><jum:requestId>{}</jum:requestId>",
            esc(r.legal_basis),
            esc(r.purpose),
            esc(r.request_id)
        );
    }
    let _ = write!(
        o,
        "</SOAP-ENV:Header><SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    );
    o
}

/// A request (UTF-8): the headers `client`, `service` (objectType SERVICE,
/// `serviceVersion` only when set), `id`, `userId`, `issue`,
/// `protocolVersion` 4.0, then ours in the jum namespace (`legalBasis`,
/// `purpose`, `requestId`); no `requestHash`. The body is one wrapper in
/// the service's namespace named by the service code (Document/Literal-
/// Wrapped) holding `inner`. The code must be an XML name: `config check`
/// makes sure of it.
pub fn request(r: &Request<'_>, wrapper_ns: &str, wrapper_prefix: &str, inner: &str) -> String {
    let code = r.service_code;
    let p = wrapper_prefix;
    let body = format!(
        "<{p}:{code} xmlns:{p}=\"{}\">{inner}</{p}:{code}>",
        esc(wrapper_ns)
    );
    envelope(r, true, &body)
}

/// A kept X-Road answer (the SOAP part as received) made readable by the
/// hardened reader: decoded by its XML declaration (else as UTF-8), the
/// byte order mark gone. (A charset named only by the HTTP Content-Type
/// is not in the kept bytes: such an answer reads here only if it was
/// UTF-8.)
pub fn readable(raw: &[u8], charset: Option<&str>) -> Result<Vec<u8>, XRoadError> {
    mime::to_utf8(raw, charset)
}

/// The text of a SOAP message as received, written as UTF-8 with nothing
/// else changed (its declaration neither): what NIIS's security server
/// logs as a signed document's `message.xml` (the message's text as a
/// Java string, written as UTF-8), which is the received bytes themselves
/// only when they were UTF-8 without a byte order mark.
pub fn logged_text(raw: &[u8], charset: Option<&str>) -> Result<Vec<u8>, XRoadError> {
    mime::text_of(raw, charset).map(String::into_bytes)
}

/// The document of a read X-Road answer: the first element child of the
/// body's wrapper (`None` for a fault or a body without one).
pub fn document_node(doc: &crate::xml::Document) -> Option<crate::xml::dom::NodeId> {
    let body = doc.child(doc.root(), ns::SOAP, "Body")?;
    let wrapper = doc.child_elements(body).next()?;
    if doc.is(wrapper, ns::SOAP, "Fault") {
        return None;
    }
    doc.child_elements(wrapper).next()
}

/// Which metaservice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    ListMethods,
    AllowedMethods,
}

impl Meta {
    pub fn code(self) -> &'static str {
        match self {
            Meta::ListMethods => "listMethods",
            Meta::AllowedMethods => "allowedMethods",
        }
    }
}

/// A metaservice request (pr-meta 3.1): the provider's `listMethods` or
/// `allowedMethods`, an empty `xrd:` body element, no headers of ours.
pub fn meta_request(
    meta: Meta,
    client: &Member,
    provider: &Member,
    id: &str,
    user_id: &str,
) -> String {
    let r = Request {
        client,
        service: provider,
        service_code: meta.code(),
        service_version: "",
        id,
        user_id,
        issue: "",
        legal_basis: "",
        purpose: "",
        request_id: "",
    };
    envelope(&r, false, &format!("<xrd:{}/>", meta.code()))
}

#[cfg(test)]
mod tests;
