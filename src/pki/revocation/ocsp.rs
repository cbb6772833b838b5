//! OCSP (RFC 6960) as a client: a request for one certificate with a
//! nonce, and every check of the answer before its status is believed:
//! the response's form, its signer (the issuing CA, or a responder the CA
//! delegated with `id-kp-OCSPSigning`), the signature, the nonce, the
//! certificate it speaks of, and its times ([`Freshness`]). A delegated
//! responder must be valid at the answer's producedAt.

use der::asn1::{Null, OctetString};
use der::{Decode, Encode};
use openssl::x509::X509;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::{Extension, Extensions};
use x509_cert::serial_number::SerialNumber;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponderId, TbsRequest, Version,
};

use super::{
    oid, serial_digits, unix_ms, verify_signature, Answer, Freshness, RevocationError, Source,
    State,
};

/// A request as sent: its DER, and what the answer must echo.
#[derive(Debug, Clone)]
pub struct Query {
    pub der: Vec<u8>,
    pub nonce: Vec<u8>,
    cert_id: CertId,
}

fn bad(detail: impl std::fmt::Display) -> RevocationError {
    RevocationError::Malformed(detail.to_string())
}

/// The certificate's id as OCSP names it: SHA-1 of the issuer's name and
/// key (RFC 5019 asks responders to accept SHA-1 ids, and every one does)
/// with the serial number.
pub fn cert_id(cert: &X509, issuer: &X509) -> Result<CertId, RevocationError> {
    let name = issuer.subject_name().to_der().map_err(bad)?;
    let key = subject_public_key(issuer)?;
    let serial = cert.serial_number().to_bn().map_err(bad)?.to_vec();
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: oid::SHA1,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(openssl::sha::sha1(&name).to_vec()).map_err(bad)?,
        issuer_key_hash: OctetString::new(openssl::sha::sha1(&key).to_vec()).map_err(bad)?,
        serial_number: serial_of(&serial)?,
    })
}

/// The bits of a certificate's subjectPublicKey (what OCSP's key hashes
/// are taken over), without the SPKI's algorithm.
pub fn subject_public_key(cert: &X509) -> Result<Vec<u8>, RevocationError> {
    let der = cert.to_der().map_err(bad)?;
    let c = x509_cert::Certificate::from_der(&der).map_err(bad)?;
    Ok(c.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec())
}

/// A serial number from its unsigned big-endian bytes.
pub fn serial_of(bytes: &[u8]) -> Result<SerialNumber, RevocationError> {
    // DER integers are signed: a leading bit set needs a zero byte first.
    let mut b = bytes.to_vec();
    if b.is_empty() || b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    SerialNumber::new(&b).map_err(bad)
}

pub(crate) fn nonce_extension(nonce: &[u8]) -> Result<Extension, RevocationError> {
    let value = OctetString::new(nonce.to_vec())
        .and_then(|n| n.to_der())
        .map_err(bad)?;
    Ok(Extension {
        extn_id: oid::OCSP_NONCE,
        critical: false,
        extn_value: OctetString::new(value).map_err(bad)?,
    })
}

/// The nonce an extension list carries, if any (its inner OCTET STRING).
pub fn nonce_of(exts: Option<&Extensions>) -> Option<Vec<u8>> {
    let e = exts?.iter().find(|e| e.extn_id == oid::OCSP_NONCE)?;
    match OctetString::from_der(e.extn_value.as_bytes()) {
        Ok(inner) => Some(inner.as_bytes().to_vec()),
        // A responder that puts the bare bytes there (RFC 6960's first
        // reading): take them as they are.
        Err(_) => Some(e.extn_value.as_bytes().to_vec()),
    }
}

/// A request for `cert` with a fresh 16-byte nonce.
pub fn query(cert: &X509, issuer: &X509) -> Result<Query, RevocationError> {
    let mut nonce = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut nonce).map_err(bad)?;
    let cert_id = cert_id(cert, issuer)?;
    let req = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: Some(vec![nonce_extension(&nonce)?]),
        },
        optional_signature: None,
    };
    Ok(Query {
        der: req.to_der().map_err(bad)?,
        nonce,
        cert_id,
    })
}

/// Is `got` (a responder's id of a certificate) the certificate `ours`
/// names? Serial numbers compare as integers (a responder may drop or add
/// a leading zero); the issuer's name and key hashes must be ours, with
/// SHA-1 as we sent them, or recomputed when the responder used SHA-2.
fn same_cert(got: &CertId, ours: &CertId, issuer: &X509) -> bool {
    if serial_digits(got.serial_number.as_bytes()) != serial_digits(ours.serial_number.as_bytes()) {
        return false;
    }
    if got.hash_algorithm.oid == ours.hash_algorithm.oid {
        return got.issuer_name_hash == ours.issuer_name_hash
            && got.issuer_key_hash == ours.issuer_key_hash;
    }
    let digest = match got.hash_algorithm.oid {
        o if o == SHA256 => openssl::hash::MessageDigest::sha256(),
        o if o == SHA384 => openssl::hash::MessageDigest::sha384(),
        o if o == SHA512 => openssl::hash::MessageDigest::sha512(),
        _ => return false,
    };
    let (Ok(name), Ok(key)) = (issuer.subject_name().to_der(), subject_public_key(issuer)) else {
        return false;
    };
    let hash = |b: &[u8]| openssl::hash::hash(digest, b).map(|d| d.to_vec()).ok();
    hash(&name).as_deref() == Some(got.issuer_name_hash.as_bytes())
        && hash(&key).as_deref() == Some(got.issuer_key_hash.as_bytes())
}

const SHA256: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
/// RFC 6960 4.4.8: says a "revoked" for a certificate never issued; read
/// or not, it changes nothing we rely on.
const EXTENDED_REVOKE: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.9");

/// Refuses a list of extensions with one twice (which of two nonces
/// holds?) or a critical one we do not process (RFC 5280 4.2: an answer
/// with it must not be used).
fn known_extensions(
    exts: Option<&Extensions>,
    known: &[der::asn1::ObjectIdentifier],
    whose: &str,
) -> Result<(), RevocationError> {
    let exts = exts.map(|e| e.as_slice()).unwrap_or_default();
    for (i, e) in exts.iter().enumerate() {
        if exts[..i].iter().any(|p| p.extn_id == e.extn_id) {
            return Err(bad(format!(
                "{whose} carries the extension {} twice",
                e.extn_id
            )));
        }
        if e.critical && !known.contains(&e.extn_id) {
            return Err(bad(format!(
                "{whose} has a critical extension {} that is not handled",
                e.extn_id
            )));
        }
    }
    Ok(())
}

/// May `responder` sign OCSP answers for certificates of `issuer`, as of
/// `produced_ms` (the answer's producedAt)? The CA itself may; another
/// certificate only if the CA issued it for that (`id-kp-OCSPSigning`,
/// RFC 6960 4.2.2.2) and it was valid when the answer was made: a
/// responder's key outlives its certificate on many a disk.
fn authorised(
    responder: &X509,
    issuer: &X509,
    produced_ms: u64,
    used_ms: u64,
) -> Result<(), RevocationError> {
    if responder.to_der().map_err(bad)? == issuer.to_der().map_err(bad)? {
        return Ok(());
    }
    let who = crate::xml::dsig::name_to_string(responder.subject_name());
    let refuse = |why: String| {
        RevocationError::BadSignature(format!(
            "signed by a certificate the CA did not authorise for OCSP: {why}"
        ))
    };
    let key = issuer.public_key().map_err(bad)?;
    let same_issuer = responder.issuer_name().to_der().map_err(bad)?
        == issuer.subject_name().to_der().map_err(bad)?;
    if !same_issuer || !responder.verify(&key).unwrap_or(false) {
        return Err(refuse(format!(
            "the responder {who:?} is not issued by the certificate's CA"
        )));
    }
    let der = responder.to_der().map_err(bad)?;
    let c = x509_cert::Certificate::from_der(&der).map_err(bad)?;
    let eku = c
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid::EXT_KEY_USAGE)
        .and_then(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
        });
    if !eku.is_some_and(|u| u.0.contains(&oid::KP_OCSP_SIGNING)) {
        return Err(refuse(format!(
            "the responder {who:?} does not carry id-kp-OCSPSigning"
        )));
    }
    let v = &c.tbs_certificate.validity;
    let (from, to) = (
        unix_ms(v.not_before.to_system_time()),
        unix_ms(v.not_after.to_system_time()),
    );
    if produced_ms < from || produced_ms > to {
        return Err(RevocationError::BadSignature(format!(
            "the delegated responder {who:?} was not valid when the answer was produced ({}): its certificate is valid from {} to {}",
            crate::time::rfc3339_secs(produced_ms),
            crate::time::rfc3339_secs(from),
            crate::time::rfc3339_secs(to)
        )));
    }
    // producedAt is the responder's own word: an expired responder could
    // date an answer back into its validity, so it must also be valid when
    // its answer is used (now, or the kept document's time).
    if used_ms < from || used_ms > to {
        return Err(RevocationError::BadSignature(format!(
            "the delegated responder {who:?} is not valid at {}, when its answer is used: its certificate is valid from {} to {}",
            crate::time::rfc3339_secs(used_ms),
            crate::time::rfc3339_secs(from),
            crate::time::rfc3339_secs(to)
        )));
    }
    Ok(())
}

fn names(responder: &X509, id: &ResponderId) -> Result<bool, RevocationError> {
    Ok(match id {
        ResponderId::ByName(n) => {
            n.to_der().map_err(bad)? == responder.subject_name().to_der().map_err(bad)?
        }
        ResponderId::ByKey(k) => {
            k.as_bytes() == openssl::sha::sha1(&subject_public_key(responder)?).as_slice()
        }
    })
}

/// Checks an answer to `q` about `cert` (issued by `issuer`) at `now_ms`
/// with the default rules (our nonce must come back; an answer without
/// `nextUpdate` at most [`Freshness::default`] old) and says what it
/// establishes. Anything that does not hold is an error naming what, and
/// the answer is not believed.
pub fn check(der: &[u8], q: &Query, issuer: &X509, now_ms: u64) -> Result<Answer, RevocationError> {
    check_answer(der, q, issuer, now_ms, &Freshness::default(), false)
}

/// [`check`] with the freshness rules given; `preproduced`: the responder
/// is known to answer from pre-produced responses (RFC 5019), which carry
/// no nonce, so only their age vouches for them.
pub fn check_answer(
    der: &[u8],
    q: &Query,
    issuer: &X509,
    now_ms: u64,
    fresh: &Freshness,
    preproduced: bool,
) -> Result<Answer, RevocationError> {
    let nonce = Nonce::Sent {
        nonce: &q.nonce,
        required: !preproduced,
    };
    check_with(der, &q.cert_id, nonce, issuer, now_ms, fresh)
}

/// Checks a kept answer about `cert` (issued by `issuer`), as of `at_ms`
/// (the time of the document it vouched for): what [`check`] checks,
/// the age rule at `at_ms`, except the nonce, which only the asker knew.
pub fn check_kept(
    der: &[u8],
    cert: &X509,
    issuer: &X509,
    at_ms: u64,
) -> Result<Answer, RevocationError> {
    check_with(
        der,
        &cert_id(cert, issuer)?,
        Nonce::Unknown,
        issuer,
        at_ms,
        &Freshness::default(),
    )
}

/// What we know of the nonce an answer must carry.
#[derive(Clone, Copy)]
enum Nonce<'a> {
    Sent {
        nonce: &'a [u8],
        required: bool,
    },
    /// A kept answer: whoever asked knew it.
    Unknown,
}

fn check_with(
    der: &[u8],
    cert_id: &CertId,
    nonce: Nonce<'_>,
    issuer: &X509,
    now_ms: u64,
    fresh: &Freshness,
) -> Result<Answer, RevocationError> {
    let resp =
        OcspResponse::from_der(der).map_err(|e| bad(format!("not an OCSP response: {e}")))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(RevocationError::Unavailable(format!(
            "the responder answered {:?}",
            resp.response_status
        )));
    }
    let bytes = resp
        .response_bytes
        .ok_or_else(|| bad("a successful answer without a response"))?;
    if bytes.response_type != oid::OCSP_BASIC {
        return Err(bad(format!(
            "not a basic OCSP response ({})",
            bytes.response_type
        )));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| bad(format!("the basic response: {e}")))?;
    let data = &basic.tbs_response_data;

    // Who signed it: the CA, or a certificate it sent along.
    let mut candidates = vec![issuer.clone()];
    for c in basic.certs.iter().flatten() {
        let d = c.to_der().map_err(bad)?;
        candidates.push(X509::from_der(&d).map_err(bad)?);
    }
    let mut signer = None;
    for c in &candidates {
        if names(c, &data.responder_id)? {
            signer = Some(c);
            break;
        }
    }
    let signer = signer.ok_or_else(|| {
        RevocationError::BadSignature("the responder it names is not among its certificates".into())
    })?;
    let produced_ms = unix_ms(data.produced_at.0.to_system_time());
    // producedAt is the responder's own word: bound it by what else we
    // know, so that a responder whose certificate has expired cannot sign
    // now and date it back into its validity.
    let skew = fresh.skew.as_millis() as u64;
    if produced_ms > now_ms.saturating_add(skew) {
        return Err(bad(format!(
            "its producedAt ({}) is in the future",
            crate::time::rfc3339_secs(produced_ms)
        )));
    }
    authorised(signer, issuer, produced_ms, now_ms)?;
    let tbs = data.to_der().map_err(bad)?;
    let sig = basic
        .signature
        .as_bytes()
        .ok_or_else(|| bad("the signature has unused bits"))?;
    verify_signature(&basic.signature_algorithm, &tbs, sig, signer)
        .map_err(|e| RevocationError::BadSignature(format!("the response's signature: {e}")))?;

    match (nonce_of(data.response_extensions.as_ref()), nonce) {
        (Some(n), Nonce::Sent { nonce: want, .. }) if n != want => {
            return Err(RevocationError::BadSignature(
                "the nonce is not the one we sent (a replayed answer?)".into(),
            ))
        }
        (None, Nonce::Sent { required: true, .. }) => {
            return Err(RevocationError::BadSignature(
                "the answer does not carry the nonce we sent (a replayed answer?); a responder \
                 that answers from pre-produced responses is configured as such \
                 (ocsp_preproduced = true)"
                    .into(),
            ))
        }
        _ => {}
    }
    known_extensions(
        data.response_extensions.as_ref(),
        &[oid::OCSP_NONCE, EXTENDED_REVOKE],
        "the response",
    )?;
    let ours: Vec<_> = data
        .responses
        .iter()
        .filter(|r| same_cert(&r.cert_id, cert_id, issuer))
        .collect();
    let single = match ours.as_slice() {
        [] => return Err(bad("the answer does not speak of this certificate")),
        [one] => *one,
        more => {
            return Err(bad(format!(
                "the answer speaks of this certificate {} times: which one holds is not for \
                 the reader to choose",
                more.len()
            )))
        }
    };
    known_extensions(
        single.single_extensions.as_ref(),
        &[],
        "the certificate's status",
    )?;
    if produced_ms.saturating_add(skew) < unix_ms(single.this_update.0.to_system_time()) {
        return Err(bad(format!(
            "its producedAt ({}) comes before the thisUpdate it vouches for",
            crate::time::rfc3339_secs(produced_ms)
        )));
    }
    let this_update = unix_ms(single.this_update.0.to_system_time());
    let next_update = single.next_update.map(|t| unix_ms(t.0.to_system_time()));
    fresh.check("the OCSP answer", this_update, next_update, now_ms)?;
    if let Nonce::Sent { nonce: want, .. } = nonce {
        // An answer that echoes our fresh nonce was produced for this
        // request, now.
        if nonce_of(data.response_extensions.as_ref()).as_deref() == Some(want)
            && produced_ms.saturating_add(skew) < now_ms
        {
            return Err(RevocationError::BadSignature(format!(
                "it carries the nonce we just sent but says it was produced at {}, earlier \
                 than it can have been",
                crate::time::rfc3339_secs(produced_ms)
            )));
        }
    }

    let state = match single.cert_status {
        CertStatus::Good(_) => State::Good,
        CertStatus::Revoked(info) => State::Revoked {
            at_ms: unix_ms(info.revocation_time.0.to_system_time()),
            reason: info.revocation_reason.map(|r| format!("{r:?}")),
        },
        CertStatus::Unknown(_) => State::Unknown,
    };
    Ok(Answer {
        state,
        source: Source::Ocsp { der: der.to_vec() },
        this_update_ms: this_update,
        next_update_ms: next_update,
        checked_ms: now_ms,
    })
}
