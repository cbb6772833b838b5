//! CRLs (RFC 5280, section 5): read (DER or PEM), checked against the CA
//! that must have issued them (name, signature, `nextUpdate`), and asked
//! whether a serial number is on them.

use der::{Decode, Encode};
use openssl::x509::X509;
use x509_cert::crl::CertificateList;

use super::{oid, serial_digits, unix_ms, verify_signature, RevocationError};

/// A CRL that was checked against its CA.
#[derive(Debug, Clone)]
pub struct Crl {
    pub der: Vec<u8>,
    /// The CRL number (the `cRLNumber` extension), in decimal.
    pub number: Option<String>,
    pub this_update_ms: u64,
    pub next_update_ms: Option<u64>,
    revoked: Vec<(Vec<u8>, u64)>,
}

fn bad(detail: impl std::fmt::Display) -> RevocationError {
    RevocationError::Malformed(detail.to_string())
}

/// Big-endian unsigned bytes as decimal.
fn decimal(bytes: &[u8]) -> String {
    openssl::bn::BigNum::from_slice(bytes)
        .ok()
        .and_then(|n| n.to_dec_str().ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

impl Crl {
    /// Reads a CRL and checks it was issued by `issuer`, is signed by its
    /// key, and is not past its `nextUpdate` at `now_ms`.
    pub fn parse(bytes: &[u8], issuer: &X509, now_ms: u64) -> Result<Crl, RevocationError> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            openssl::x509::X509Crl::from_pem(bytes)
                .and_then(|c| c.to_der())
                .map_err(|e| bad(format!("not a PEM CRL: {e}")))?
        } else {
            bytes.to_vec()
        };
        let list = CertificateList::from_der(&der).map_err(|e| bad(format!("not a CRL: {e}")))?;
        let tbs = &list.tbs_cert_list;
        if tbs.issuer.to_der().map_err(bad)? != issuer.subject_name().to_der().map_err(bad)? {
            return Err(RevocationError::BadSignature(
                "the CRL is another CA's".into(),
            ));
        }
        let sig = list
            .signature
            .as_bytes()
            .ok_or_else(|| bad("the signature has unused bits"))?;
        verify_signature(
            &list.signature_algorithm,
            &tbs.to_der().map_err(bad)?,
            sig,
            issuer,
        )
        .map_err(|e| RevocationError::BadSignature(format!("the CRL's signature: {e}")))?;
        let this_update_ms = unix_ms(tbs.this_update.to_system_time());
        let next_update_ms = tbs.next_update.map(|t| unix_ms(t.to_system_time()));
        if let Some(n) = next_update_ms {
            if n < now_ms {
                return Err(RevocationError::Stale(format!(
                    "the CRL expired {} s ago (its nextUpdate)",
                    (now_ms - n) / 1000
                )));
            }
        }
        let number = tbs
            .crl_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == oid::CRL_NUMBER)
            .and_then(|e| x509_cert::ext::pkix::CrlNumber::from_der(e.extn_value.as_bytes()).ok())
            .map(|n| decimal(n.0.as_bytes()));
        let revoked = tbs
            .revoked_certificates
            .iter()
            .flatten()
            .map(|r| {
                (
                    serial_digits(r.serial_number.as_bytes()),
                    unix_ms(r.revocation_date.to_system_time()),
                )
            })
            .collect();
        Ok(Crl {
            der,
            number,
            this_update_ms,
            next_update_ms,
            revoked,
        })
    }

    /// When the certificate with this serial number was revoked, if it is.
    pub fn revoked_at(&self, serial: &[u8]) -> Option<u64> {
        let s = serial_digits(serial);
        self.revoked
            .iter()
            .find(|(r, _)| *r == s)
            .map(|(_, at)| *at)
    }
}
