//! What is strong enough: the smallest RSA key, the EC curves and the
//! certificate signature hashes accepted for our own keys and for every
//! signer we trust.

use openssl::nid::Nid;
use openssl::pkey::{Id, PKey};
use openssl::x509::X509;

use super::names::name_to_string;

/// The smallest RSA key accepted anywhere: our seal, our TLS keys and
/// every registry signer (`[gateway] min_rsa_bits` may raise it, never
/// lower it). EC keys must be on P-256 or P-384, and no certificate may
/// be signed with SHA-1 or MD5: what the ETSI and CA/Browser Forum
/// baselines have refused for years.
pub const MIN_RSA_BITS: u32 = 2048;

/// Why `key` is too weak to sign or to be trusted, if it is.
pub fn weak_key<T: openssl::pkey::HasPublic>(
    key: &openssl::pkey::PKeyRef<T>,
    min_rsa_bits: u32,
) -> Option<String> {
    match key.id() {
        Id::RSA => {
            let bits = key.bits();
            (bits < min_rsa_bits.max(MIN_RSA_BITS)).then(|| {
                format!(
                    "an RSA key of {bits} bits; at least {} are accepted",
                    min_rsa_bits.max(MIN_RSA_BITS)
                )
            })
        }
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|ec| ec.group().curve_name());
            match curve {
                Some(Nid::X9_62_PRIME256V1 | Nid::SECP384R1) => None,
                other => Some(format!(
                    "an EC key on {}; only P-256 and P-384 are accepted",
                    other
                        .and_then(|n| n.short_name().ok())
                        .unwrap_or("an unnamed curve")
                )),
            }
        }
        other => Some(format!(
            "a {other:?} key; only RSA and EC keys are accepted"
        )),
    }
}

/// Why `cert` is too weak to be trusted, if it is: its key, or the hash
/// its issuer signed it with.
pub fn weak_certificate(cert: &openssl::x509::X509Ref, min_rsa_bits: u32) -> Option<String> {
    let subject = name_to_string(cert.subject_name());
    let nid = cert.signature_algorithm().object().nid();
    if matches!(
        nid,
        Nid::SHA1WITHRSAENCRYPTION
            | Nid::ECDSA_WITH_SHA1
            | Nid::DSAWITHSHA1
            | Nid::MD5WITHRSAENCRYPTION
            | Nid::MD5WITHRSA
            | Nid::SHA1WITHRSA
    ) {
        return Some(format!(
            "certificate {subject:?} is signed with {}; SHA-1 and MD5 are not accepted",
            nid.long_name().unwrap_or("a weak hash")
        ));
    }
    let key = match cert.public_key() {
        Ok(k) => k,
        Err(e) => return Some(format!("certificate {subject:?}: unreadable key ({e})")),
    };
    weak_key(&key, min_rsa_bits).map(|w| format!("certificate {subject:?} has {w}"))
}

/// Why a PEM key and certificate of ours are too weak, if they are (an
/// unreadable one is left to whoever loads it, with its own message).
pub fn weak_own_key(key_pem: &[u8], cert_pem: &[u8], min_rsa_bits: u32) -> Option<String> {
    if let Ok(k) = PKey::private_key_from_pem(key_pem) {
        if let Some(w) = weak_key(&k, min_rsa_bits) {
            return Some(w);
        }
    }
    X509::from_pem(cert_pem)
        .ok()
        .and_then(|c| weak_certificate(&c, min_rsa_bits))
}
