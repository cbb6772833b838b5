//! Enveloped XML-DSig (<https://www.w3.org/TR/xmldsig-core1/>) as the wire
//! protocol profiles it: one `ds:Signature`, the last child of
//! `SOAP-ENV:Header` (or of the root element for documents that are not SOAP
//! envelopes), one `Reference URI=""` with the transforms enveloped-signature
//! then exclusive C14N, SHA-256 digest, RSA-SHA256 or ECDSA-SHA256, and the
//! signer's certificate in `KeyInfo/X509Data/X509Certificate`.
//!
//! Verification accepts that profile and nothing else. Everything outside it
//! (SHA-1, HMAC, DSA, XPath, other transforms, several references, an
//! `Object`) is refused by name, because a verifier that accepts variants is
//! where signature-wrapping attacks live. It returns the verified tree so
//! callers read exactly what was hashed.
//!
//! Note: XML-DSig ECDSA signature values are raw `r ‖ s` (RFC 4050), not the
//! DER that openssl produces and expects; we convert both ways.
//!
//! The rooms: `policy.rs` (what keys and certificates are strong enough),
//! `key.rs` (our signing keys, in a file or on a device), `sign.rs`,
//! `trust.rs` (the anchors, the pins and the chains already built),
//! `verify.rs` (the profile checked step by step) and `names.rs` (how
//! certificates and their names are written and pinned). This file holds
//! the profile they share: its URIs, its algorithms, its errors and where
//! the signature goes.

mod key;
mod names;
mod policy;
mod sign;
mod trust;
mod verify;

pub use key::{DeviceKey, SigningKey};
pub use names::{cert_sha256, hex, name_to_string, parse_sha256_pin, rfc4514, NamePin};
pub use policy::{weak_certificate, weak_key, weak_own_key, MIN_RSA_BITS};
pub use sign::sign;
pub use trust::{issuer_of, TrustStore};
pub use verify::{signature_value, verify, Verified};

use super::dom::{Document, NodeId};
use super::reader::XmlError;

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const EXC_C14N_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

/// Signature algorithms of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    EcdsaSha256,
}

impl Algorithm {
    pub fn uri(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => RSA_SHA256,
            Algorithm::EcdsaSha256 => ECDSA_SHA256,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::EcdsaSha256 => "ecdsa-sha256",
        }
    }

    pub fn from_name(s: &str) -> Option<Algorithm> {
        match s {
            "rsa-sha256" => Some(Algorithm::RsaSha256),
            "ecdsa-sha256" => Some(Algorithm::EcdsaSha256),
            _ => None,
        }
    }
}

/// Why signing or verification failed. The texts are what `jumgw xml
/// verify` prints and what a security event records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DsigError {
    #[error("malformed XML: {0}")]
    Xml(#[from] XmlError),
    /// The device that holds the key failed (removed, busy, broken): it
    /// may work again later.
    #[error("the key's device: {0}")]
    Device(String),
    #[error("no ds:Signature found")]
    NoSignature,
    #[error("found {0} ds:Signature elements; exactly one is accepted")]
    SignatureCount(usize),
    #[error("ds:Signature is in the wrong place: {0}")]
    Placement(String),
    #[error("malformed ds:Signature: {0}")]
    Structure(String),
    #[error("{what} {uri} is not accepted ({why})")]
    Refused {
        what: &'static str,
        uri: String,
        why: &'static str,
    },
    #[error("found {0} ds:Reference elements; exactly one is accepted")]
    ReferenceCount(usize),
    #[error("reference URI {0:?} is not accepted; only URI=\"\" (the whole document)")]
    ReferenceUri(String),
    #[error("signer certificate: {0}")]
    Certificate(String),
    #[error("signer certificate is not trusted: {0}")]
    Untrusted(String),
    #[error("signature method {method} does not fit the signer's {key} key")]
    AlgorithmMismatch { method: &'static str, key: String },
    #[error("signature value does not verify")]
    BadSignature,
    #[error("digest of the signed content does not match: the document was changed after signing")]
    DigestMismatch,
    #[error("document already carries a ds:Signature")]
    AlreadySigned,
    #[error("key: {0}")]
    Key(String),
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// Where the signature goes: the SOAP Header if the document is an
/// envelope with one, else the root element.
fn signature_parent(doc: &Document) -> NodeId {
    let root = doc.root();
    if doc.is(root, SOAP_NS, "Envelope") {
        if let Some(h) = doc.child(root, SOAP_NS, "Header") {
            return h;
        }
    }
    root
}
