//! XML as the registries exchange it: hardened reading ([`reader`]), a small
//! tree ([`dom`]), canonicalisation ([`c14n`]), enveloped signatures
//! ([`dsig`]) and XSD validation ([`schema`]).
//!
//! We own exclusive C14N and XML-DSig on quick-xml and openssl
//! rather than bind a C library: signing and verifying are the hot path of
//! every exchange, and the strict profile is the security boundary.

pub mod c14n;
pub mod dom;
pub mod dsig;
#[cfg(test)]
pub mod mutate;
pub mod reader;
pub mod schema;

pub use c14n::{canonicalize, Canonical, Options};
pub use dom::Document;
pub use dsig::{sign, verify, Algorithm, DsigError, SigningKey, TrustStore, Verified};
pub use reader::{Limits, XmlError};
