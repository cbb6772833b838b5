//! CRLs (RFC 5280, section 5): read (DER or PEM, version 1 or 2), checked
//! against the CA that must have issued them (name, signature, its times
//! by the [`Freshness`] rule), and asked whether a serial number is on
//! them. Only a complete CRL is used: a delta CRL, one whose issuing
//! distribution point makes it partial or indirect, one with a critical
//! extension we do not process, or an entry with one, is refused as
//! unusable, saying which; a CRL scoped to a distribution point speaks
//! only of the certificates that name that point.
//!
//! The structures are read here rather than with `x509_cert::crl`, whose
//! `TbsCertList` requires the version field that a version 1 CRL (what
//! `openssl ca -gencrl` makes without CRL extensions) leaves out.

use std::sync::Arc;

use der::asn1::{AnyRef, BitString, ObjectIdentifier};
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use openssl::x509::X509;
use spki::AlgorithmIdentifierOwned;
use x509_cert::crl::RevokedCert;
use x509_cert::ext::Extensions;
use x509_cert::name::Name;
use x509_cert::time::Time;

use super::{
    oid, serial_digits, unix_ms, verify_signature, Answer, Freshness, RevocationError, Source,
    State,
};

type Serial = smallvec::SmallVec<[u8; 20]>;

/// A CRL that was checked against its CA.
#[derive(Debug, Clone)]
pub struct Crl {
    /// The CRL as read (DER), shared by the answers it gives.
    pub der: Arc<[u8]>,
    /// The CRL number (the `cRLNumber` extension), in decimal.
    pub number: Option<String>,
    pub this_update_ms: u64,
    pub next_update_ms: Option<u64>,
    /// Serial numbers (RFC 5280 caps them at 20 octets, so each lives
    /// inline: a 10 MiB CRL of tiny entries, half a million of them, is
    /// ~20 MB here, where a heap allocation per serial made it ~130 MB)
    /// with their revocation times.
    revoked: Vec<(Serial, u64)>,
    /// The distribution points (URIs) its issuing distribution point
    /// limits it to, if it names any: it speaks only of certificates that
    /// name one of them.
    scope: Option<Vec<String>>,
    /// The CA it was checked against, which must have issued any
    /// certificate it is asked about (by name and by signature: a CA of
    /// the same name with another key is another CA).
    issuer: X509,
}

fn bad(detail: impl std::fmt::Display) -> RevocationError {
    RevocationError::Malformed(detail.to_string())
}

fn unusable(detail: impl std::fmt::Display) -> RevocationError {
    RevocationError::Malformed(format!("the CRL cannot be used: {detail}"))
}

/// Big-endian unsigned bytes as decimal.
fn decimal(bytes: &[u8]) -> String {
    openssl::bn::BigNum::from_slice(bytes)
        .ok()
        .and_then(|n| n.to_dec_str().ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The most a CRL's own extensions, or one revoked entry, may take: a
/// CRL number, an authority key id, an issuing distribution point; a
/// serial, a date, a reason. Beyond that it is not a CRL we read.
const MAX_EXTENSIONS_BYTES: usize = 16 << 10;
const MAX_ENTRY_BYTES: usize = 4 << 10;

const DELTA_CRL_INDICATOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.27");
const ISSUING_DISTRIBUTION_POINT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.28");
const AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const ISSUER_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.18");
const FRESHEST_CRL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.46");
const REASON_CODE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.21");
const INVALIDITY_DATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.24");
const CERTIFICATE_ISSUER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.29");

/// `CertificateList`, its `tbsCertList` kept as received so that the
/// signature is checked over those very bytes.
#[derive(der::Sequence)]
struct RawList<'a> {
    tbs: AnyRef<'a>,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

/// `TBSCertList`, version 1 or 2; the revoked entries left as bytes,
/// read one at a time.
struct Tbs<'a> {
    version: Option<u8>,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    this_update: Time,
    next_update: Option<Time>,
    revoked: Option<&'a [u8]>,
    /// The extensions' bytes, read once their size is known to be sane.
    extensions: Option<&'a [u8]>,
}

fn is_time(t: Tag) -> bool {
    matches!(t, Tag::UtcTime | Tag::GeneralizedTime)
}

fn read_tbs(value: &[u8]) -> der::Result<Tbs<'_>> {
    let mut r = SliceReader::new(value)?;
    let version = if !r.is_finished() && r.peek_tag()? == Tag::Integer {
        Some(r.decode::<u8>()?)
    } else {
        None
    };
    let signature = r.decode()?;
    let issuer = r.decode()?;
    let this_update = r.decode()?;
    let next_update = if !r.is_finished() && is_time(r.peek_tag()?) {
        Some(r.decode()?)
    } else {
        None
    };
    let revoked = if !r.is_finished() && r.peek_tag()? == Tag::Sequence {
        Some(r.decode::<AnyRef<'_>>()?.value())
    } else {
        None
    };
    let zero = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    let extensions = if !r.is_finished() && r.peek_tag()? == zero {
        let outer: AnyRef<'_> = r.decode()?;
        Some(outer.value())
    } else {
        None
    };
    r.finish(Tbs {
        version,
        signature,
        issuer,
        this_update,
        next_update,
        revoked,
        extensions,
    })
}

/// What a CRL extension means for its use: `Err(why)` when it makes the
/// CRL unusable; `Ok(Some(uris))` for an issuing distribution point that
/// scopes it to those distribution points; `Ok(None)` otherwise.
fn crl_extension(e: &x509_cert::ext::Extension) -> Result<Option<Vec<String>>, String> {
    match e.extn_id {
        DELTA_CRL_INDICATOR => {
            Err("a delta CRL is not a complete CRL (it carries a delta CRL indicator)".into())
        }
        ISSUING_DISTRIBUTION_POINT => {
            use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
            use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
            let idp = IssuingDistributionPoint::from_der(e.extn_value.as_bytes())
                .map_err(|err| format!("its issuing distribution point: {err}"))?;
            // A CRL for one distribution point, complete for end-entity
            // certificates (the signers and servers we ask about), is
            // processed, for the certificates that name that point; one
            // that leaves reasons or certificates out, or speaks for other
            // CAs, is not.
            if idp.indirect_crl {
                return Err(
                    "an indirect CRL (its issuing distribution point) is not handled".into(),
                );
            }
            if idp.only_some_reasons.is_some() {
                return Err(
                    "a CRL for only some reasons (its issuing distribution point) is not a complete CRL"
                        .into(),
                );
            }
            if idp.only_contains_ca_certs || idp.only_contains_attribute_certs {
                return Err(
                    "its issuing distribution point limits it to CA or attribute certificates"
                        .into(),
                );
            }
            match idp.distribution_point {
                None => Ok(None),
                Some(DistributionPointName::FullName(names)) => Ok(Some(
                    names
                        .iter()
                        .filter_map(|n| match n {
                            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
                            _ => None,
                        })
                        .collect(),
                )),
                Some(DistributionPointName::NameRelativeToCRLIssuer(_)) => Err(
                    "its issuing distribution point is named relative to the issuer, which is not handled"
                        .into(),
                ),
            }
        }
        o if !e.critical
            || o == oid::CRL_NUMBER
            || o == AUTHORITY_KEY_ID
            || o == ISSUER_ALT_NAME
            || o == FRESHEST_CRL =>
        {
            Ok(None)
        }
        o => Err(format!(
            "it has a critical extension {o} that is not handled"
        )),
    }
}

impl Crl {
    /// Reads a CRL and checks it was issued by `issuer`, is signed by its
    /// key, and is fresh at `now_ms` by the default rule.
    pub fn parse(bytes: &[u8], issuer: &X509, now_ms: u64) -> Result<Crl, RevocationError> {
        Crl::parse_with(bytes, issuer, now_ms, &Freshness::default())
    }

    /// [`Crl::parse`] with the freshness rule given.
    pub fn parse_with(
        bytes: &[u8],
        issuer: &X509,
        now_ms: u64,
        fresh: &Freshness,
    ) -> Result<Crl, RevocationError> {
        let der = if bytes.starts_with(b"-----BEGIN") {
            pem_body(bytes)?
        } else {
            bytes.to_vec()
        };
        let list = RawList::from_der(&der).map_err(|e| bad(format!("not a CRL: {e}")))?;
        if list.tbs.tag() != Tag::Sequence {
            return Err(bad("not a CRL: its tbsCertList is not a SEQUENCE"));
        }
        let tbs = read_tbs(list.tbs.value()).map_err(|e| bad(format!("not a CRL: {e}")))?;
        // A CRL has a handful of extensions; a million tiny ones (10 MiB)
        // took 250 MB to read.
        let extensions = match tbs.extensions {
            Some(b) if b.len() > MAX_EXTENSIONS_BYTES => {
                return Err(unusable(format!(
                    "its extensions take {} bytes, more than the {MAX_EXTENSIONS_BYTES} they may",
                    b.len()
                )))
            }
            Some(b) => Some(
                Extensions::from_der(b)
                    .map_err(|e| bad(format!("not a CRL: its extensions: {e}")))?,
            ),
            None => None,
        };
        match tbs.version {
            None | Some(1) => {}
            // RFC 5280 5.1.2.1: present only as v2; a version 1 CRL
            // leaves it out.
            Some(0) => {
                return Err(bad(
                    "not a CRL this reads: it writes out version 1, which a version 1 CRL leaves out (RFC 5280 5.1.2.1)",
                ))
            }
            Some(v) => {
                return Err(bad(format!(
                    "not a CRL this reads: version {} (1 and 2 are)",
                    u16::from(v) + 1
                )))
            }
        }
        if tbs.signature != list.signature_algorithm {
            return Err(bad(
                "the CRL names two signature algorithms (inside and outside what is signed)",
            ));
        }
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
            &list.tbs.to_der().map_err(bad)?,
            sig,
            issuer,
        )
        .map_err(|e| RevocationError::BadSignature(format!("the CRL's signature: {e}")))?;
        let this_update_ms = unix_ms(tbs.this_update.to_system_time());
        let next_update_ms = tbs.next_update.map(|t| unix_ms(t.to_system_time()));
        let mut scope = None;
        for e in extensions.iter().flatten() {
            if let Some(uris) = crl_extension(e).map_err(unusable)? {
                scope = Some(uris);
            }
        }
        fresh.check("the CRL", this_update_ms, next_update_ms, now_ms)?;
        let number = extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == oid::CRL_NUMBER)
            .and_then(|e| x509_cert::ext::pkix::CrlNumber::from_der(e.extn_value.as_bytes()).ok())
            .map(|n| decimal(n.0.as_bytes()));
        let mut revoked = Vec::new();
        if let Some(entries) = tbs.revoked {
            let mut r = SliceReader::new(entries).map_err(bad)?;
            while !r.is_finished() {
                let len =
                    usize::try_from(r.peek_header().map_err(bad)?.length).unwrap_or(usize::MAX);
                if len > MAX_ENTRY_BYTES {
                    return Err(unusable(format!(
                        "a revoked entry takes {len} bytes, more than the {MAX_ENTRY_BYTES} one may"
                    )));
                }
                let entry: RevokedCert = r
                    .decode()
                    .map_err(|e| bad(format!("a revoked entry: {e}")))?;
                let serial = Serial::from_slice(&serial_digits(entry.serial_number.as_bytes()));
                for x in entry.crl_entry_extensions.iter().flatten() {
                    let known = [REASON_CODE, INVALIDITY_DATE];
                    if x.critical && !known.contains(&x.extn_id) {
                        let what = if x.extn_id == CERTIFICATE_ISSUER {
                            "a certificate issuer (an indirect CRL)".to_owned()
                        } else {
                            format!("a critical extension {}", x.extn_id)
                        };
                        return Err(unusable(format!(
                            "the entry for serial {} has {what}, which is not handled",
                            decimal(&serial)
                        )));
                    }
                }
                revoked.push((serial, unix_ms(entry.revocation_date.to_system_time())));
            }
        }
        revoked.shrink_to_fit();
        Ok(Crl {
            der: der.into(),
            number,
            this_update_ms,
            next_update_ms,
            revoked,
            scope,
            issuer: issuer.clone(),
        })
    }

    /// When the certificate with this serial number was revoked, if it is.
    pub fn revoked_at(&self, serial: &[u8]) -> Option<u64> {
        let s = serial_digits(serial);
        self.revoked
            .iter()
            .find(|(r, _)| r.as_slice() == s.as_slice())
            .map(|(_, at)| *at)
    }

    /// What this CRL says of `cert`, as an answer from `url`.
    pub fn answer(
        &self,
        cert: &X509,
        url: &str,
        checked_ms: u64,
    ) -> Result<Answer, RevocationError> {
        let key = self.issuer.public_key().map_err(bad)?;
        if cert.issuer_name().to_der().map_err(bad)?
            != self.issuer.subject_name().to_der().map_err(bad)?
            || !cert.verify(&key).unwrap_or(false)
        {
            return Err(RevocationError::BadSignature(
                "the CRL is another CA's: the certificate names another issuer".into(),
            ));
        }
        if let Some(scope) = &self.scope {
            let named = super::crl_points(cert);
            if !scope.iter().any(|u| named.contains(u)) {
                return Err(unusable(format!(
                    "it covers only the distribution point {} (its issuing distribution point), \
                     which the certificate does not name",
                    scope.join(", ")
                )));
            }
        }
        let serial = cert.serial_number().to_bn().map_err(bad)?.to_vec();
        let state = match self.revoked_at(&serial) {
            Some(at_ms) => State::Revoked {
                at_ms,
                reason: None,
            },
            None => State::Good,
        };
        Ok(Answer {
            state,
            source: Source::Crl {
                number: self.number.clone(),
                url: url.to_owned(),
                der: self.der.clone(),
            },
            this_update_ms: self.this_update_ms,
            next_update_ms: self.next_update_ms,
            checked_ms,
        })
    }
}

/// Checks a kept CRL (DER) about `cert` (issued by `issuer`), as of `at_ms`
/// (the time of the document it vouched for): signed by the issuer,
/// version 1 or 2, no extension it cannot process, fresh at `at_ms` by
/// the default rule; and says the certificate's status on it.
pub fn check_kept(
    der: &[u8],
    cert: &X509,
    issuer: &X509,
    at_ms: u64,
) -> Result<Answer, RevocationError> {
    Crl::parse(der, issuer, at_ms)?.answer(cert, "kept", at_ms)
}

/// The DER inside one PEM `X509 CRL` block.
fn pem_body(bytes: &[u8]) -> Result<Vec<u8>, RevocationError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not a PEM CRL: not text"))?;
    let begin = "-----BEGIN X509 CRL-----";
    let end = "-----END X509 CRL-----";
    let start = text
        .find(begin)
        .ok_or_else(|| bad("not a PEM CRL: no BEGIN X509 CRL line"))?
        + begin.len();
    let stop = text[start..]
        .find(end)
        .ok_or_else(|| bad("not a PEM CRL: no END X509 CRL line"))?
        + start;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| bad(format!("not a PEM CRL: {e}")))
}
