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
pub mod xades;

pub use c14n::{canonicalize, Canonical, Options};
pub use dom::Document;
pub use dsig::{sign, verify, Algorithm, DeviceKey, DsigError, SigningKey, TrustStore, Verified};
pub use reader::{Limits, XmlError};

/// Escapes text for XML or HTML element content or a quoted attribute
/// value (either quote). The one escaper of the crate: envelopes, the
/// simulator's documents and the dashboard use it.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // a literal CR would be read back as a line feed
            '\r' => o.push_str("&#13;"),
            _ => o.push(c),
        }
    }
    o
}
