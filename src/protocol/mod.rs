//! The exchange protocol between the gateway and the registries (the XSDs
//! in `schemas/` define it): SOAP 1.1 envelopes with X-Road 4.0 headers plus our
//! legal basis and purpose, one payload per body, faults and asynchronous
//! tickets. This module builds and reads envelopes; signing and transport
//! are elsewhere (`xml::dsig`, `exchange`). It also owns subjects and the
//! service catalogue, which is data from the configuration.

pub mod envelope;
pub mod subject;
pub mod xroad;

pub use envelope::{Body, FaultCode, Headers};
pub use subject::Subject;

/// Namespaces of the protocol.
pub mod ns {
    pub const SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
    pub const XROAD: &str = "http://x-road.eu/xsd/xroad.xsd";
    pub const ID: &str = "http://x-road.eu/xsd/identifiers";
    pub const JUM: &str = "urn:jum-gateway:exchange:1";
    pub const SHA512: &str = "http://www.w3.org/2001/04/xmlenc#sha512";
}

/// What is wrong with an envelope or a request to build one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("not a SOAP envelope: {0}")]
    NotEnvelope(String),
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("malformed header {0}: {1}")]
    BadHeader(&'static str, String),
    #[error("the body must hold exactly one element, found {0}")]
    BodyCount(usize),
    #[error("malformed {0}: {1}")]
    BadBody(&'static str, String),
    #[error("unknown service {0:?}")]
    UnknownService(String),
    #[error("service {service} does not take a {kind} subject; it takes {accepted}")]
    SubjectKind {
        service: String,
        kind: &'static str,
        accepted: String,
    },
}

/// Base64 SHA-512 of the request bytes as sent: `xrd:requestHash`.
pub fn request_hash(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(openssl::sha::sha512(bytes))
}
