//! RFC 3161 on the client's side: the request we send, the reply we read,
//! and the check of a token, when it arrives and years later.
//!
//! A token is believed only once checked: its CMS signature (openssl's
//! CMS verification, at the time the token itself states), its signer
//! chaining to a configured TSA anchor with the timeStamping purpose, its
//! message imprint being the SHA-256 of what we asked about, and, for a
//! fresh one, our nonce and policy and a time near our clock. The ASN.1
//! is read with the RustCrypto `x509-tsp` and `cms` types; nothing here
//! trusts a field it has not checked.

use der::{Decode, Encode};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyParam;
use openssl::x509::{X509PurposeId, X509};
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

/// SHA-256, the one digest we ask for and accept.
pub const SHA256_OID: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-signedData.
pub const SIGNED_DATA_OID: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-ct-TSTInfo.
pub const TST_INFO_OID: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");

/// Why a reply or a token was not taken. The texts are what the API, the
/// dashboard and `jumgw dossier verify` show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TspError {
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("the TSA refused: status {status}{text}")]
    Refused { status: String, text: String },
    #[error("the token's signature does not verify or its signer is not a trusted TSA: {0}")]
    Signature(String),
    #[error("the token is about other data (its message imprint is not ours): a foreign token")]
    Imprint,
    #[error("the token answers another request (nonce differs)")]
    Nonce,
    #[error("the token is under policy {got}, not the configured {want}")]
    Policy { got: String, want: String },
    #[error("the token's time {got} is {off_s} s from our clock (tolerance {tol_s} s)")]
    Time { got: String, off_s: i64, tol_s: u64 },
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

fn malformed(what: &'static str) -> impl Fn(der::Error) -> TspError {
    move |e| TspError::Malformed {
        what,
        detail: e.to_string(),
    }
}

/// A request for a token on `imprint` (a SHA-256), with a fresh nonce.
pub struct Request {
    pub der: Vec<u8>,
    pub nonce: Vec<u8>,
}

/// Builds a request: SHA-256 imprint, a random 64-bit nonce, the TSA's
/// certificate asked for (so a token can be checked with nothing else).
pub fn request(imprint: &[u8; 32], policy: Option<&str>) -> Result<Request, TspError> {
    let mut nonce: [u8; 8] = rand::random();
    // Positive and minimal as DER wants it: high bit clear, first byte set.
    nonce[0] = (nonce[0] & 0x3f) | 0x40;
    let policy = match policy {
        Some(p) => Some(
            der::oid::ObjectIdentifier::new(p).map_err(|e| TspError::Malformed {
                what: "policy OID",
                detail: e.to_string(),
            })?,
        ),
        None => None,
    };
    let req = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: imprint_of(imprint)?,
        req_policy: policy,
        nonce: Some(der::asn1::Int::new(&nonce).map_err(malformed("nonce"))?),
        cert_req: true,
        extensions: None,
    };
    Ok(Request {
        der: req.to_der().map_err(malformed("request"))?,
        nonce: nonce.to_vec(),
    })
}

pub(super) fn imprint_of(digest: &[u8; 32]) -> Result<MessageImprint, TspError> {
    Ok(MessageImprint {
        hash_algorithm: spki::AlgorithmIdentifier {
            oid: SHA256_OID,
            parameters: Some(der::Any::null()),
        },
        hashed_message: der::asn1::OctetString::new(digest.to_vec())
            .map_err(malformed("imprint"))?,
    })
}

/// A checked token and what it says.
#[derive(Debug, Clone)]
pub struct Token {
    /// The TimeStampToken (a CMS ContentInfo), DER.
    pub der: Vec<u8>,
    pub time_ms: u64,
    /// The serial number, hex.
    pub serial: String,
    pub policy: String,
    /// The subject of the TSA's certificate.
    pub tsa: String,
}

/// What a fresh token must answer.
pub struct Expect<'a> {
    pub nonce: &'a [u8],
    pub policy: Option<&'a str>,
    pub now_ms: u64,
    pub tolerance: std::time::Duration,
}

/// Reads a TSA's reply to `req` and checks its token against `imprint`.
pub fn read_reply(
    reply: &[u8],
    imprint: &[u8; 32],
    anchors: &[X509],
    expect: &Expect<'_>,
) -> Result<Token, TspError> {
    let resp = TimeStampResp::from_der(reply).map_err(malformed("TimeStampResp"))?;
    let status = resp.status.status as u8;
    // granted (0) and grantedWithMods (1) carry a token; the rest refuse.
    if status > 1 {
        let text = resp
            .status
            .status_string
            .as_ref()
            .map(|t| {
                let parts: Vec<String> = t.iter().map(|s| s.as_str().to_owned()).collect();
                format!(": {}", parts.join("; "))
            })
            .unwrap_or_default();
        let name = match status {
            2 => "rejection",
            3 => "waiting",
            4 => "revocationWarning",
            5 => "revocationNotification",
            _ => "unknown",
        };
        return Err(TspError::Refused {
            status: name.into(),
            text,
        });
    }
    let token = resp.time_stamp_token.ok_or(TspError::Malformed {
        what: "TimeStampResp",
        detail: "granted without a token".into(),
    })?;
    let der = token.to_der().map_err(malformed("token"))?;
    let (t, info) = check(&der, imprint, anchors)?;
    match &info.nonce {
        Some(n) if n.as_bytes() == expect.nonce => {}
        _ => return Err(TspError::Nonce),
    }
    if let Some(want) = expect.policy {
        if t.policy != want {
            return Err(TspError::Policy {
                got: t.policy,
                want: want.to_owned(),
            });
        }
    }
    let off_s = (t.time_ms as i64 - expect.now_ms as i64) / 1000;
    if off_s.unsigned_abs() > expect.tolerance.as_secs() {
        return Err(TspError::Time {
            got: crate::time::rfc3339_secs(t.time_ms),
            off_s,
            tol_s: expect.tolerance.as_secs(),
        });
    }
    Ok(t)
}

/// The SignedData inside a token, unverified.
fn signed_data(token: &[u8]) -> Result<cms::signed_data::SignedData, TspError> {
    let ci = cms::content_info::ContentInfo::from_der(token).map_err(malformed("token"))?;
    if ci.content_type != SIGNED_DATA_OID {
        return Err(TspError::Malformed {
            what: "token",
            detail: format!("content type {} is not signedData", ci.content_type),
        });
    }
    ci.content.decode_as().map_err(malformed("SignedData"))
}

/// The TSTInfo inside a token's SignedData, unverified: for its time
/// before the signature is checked at that time.
fn tst_info(sd: &cms::signed_data::SignedData) -> Result<TstInfo, TspError> {
    if sd.encap_content_info.econtent_type != TST_INFO_OID {
        return Err(TspError::Malformed {
            what: "token",
            detail: format!(
                "it encapsulates {}, not a TSTInfo",
                sd.encap_content_info.econtent_type
            ),
        });
    }
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(TspError::Malformed {
            what: "token",
            detail: "no TSTInfo in it".into(),
        })?;
    let octets: der::asn1::OctetString = content.decode_as().map_err(malformed("TSTInfo"))?;
    TstInfo::from_der(octets.as_bytes()).map_err(malformed("TSTInfo"))
}

/// A store of `anchors` that checks for the timeStamping purpose at
/// `at` (seconds since the epoch).
fn tsa_store(anchors: &[X509], at: i64) -> Result<X509Store, TspError> {
    let mut b = X509StoreBuilder::new()?;
    for a in anchors {
        b.add_cert(a.clone())?;
    }
    b.set_purpose(X509PurposeId::TIMESTAMP_SIGN)?;
    let mut p = X509VerifyParam::new()?;
    p.set_time(at as _);
    b.set_param(&p)?;
    Ok(b.build())
}

/// A TSA's certificates whose chain openssl built to the anchors once,
/// and the times at which that verdict holds for a later token carrying
/// the same certificates: every certificate it carries and every anchor
/// is valid then, so a chain built at that time would be built alike.
/// A TSA signs thousands of tokens with one certificate; openssl 3 takes
/// about as long to parse a certificate as to check a signature, and
/// building the chain again for each token cost more than the rest of
/// the token's check together.
#[derive(Clone)]
struct Known {
    signer: X509,
    /// Its DER, as the token's signed attributes name it.
    signer_der: Vec<u8>,
    subject: String,
    from: i64,
    until: i64,
}

/// Known signers by the SHA-256 of (the certificates a token carries,
/// the anchors); cleared when full.
static KNOWN: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<[u8; 32], Known>>> =
    std::sync::LazyLock::new(Default::default);
const KNOWN_CAPACITY: usize = 64;

fn known_key(certs: &[Vec<u8>], anchors: &[X509]) -> Result<[u8; 32], TspError> {
    let mut h = openssl::sha::Sha256::new();
    for c in certs {
        h.update(&(c.len() as u64).to_be_bytes());
        h.update(c);
    }
    h.update(b"|anchors|");
    for a in anchors {
        let d = a.to_der()?;
        h.update(&(d.len() as u64).to_be_bytes());
        h.update(&d);
    }
    Ok(h.finish())
}

fn unix_of(t: &openssl::asn1::Asn1TimeRef) -> Result<i64, TspError> {
    let d = openssl::asn1::Asn1Time::from_unix(0)?.diff(t)?;
    Ok(d.days as i64 * 86_400 + d.secs as i64)
}

/// The times at which every certificate of `certs` and `anchors` is valid.
fn common_validity(certs: &[X509], anchors: &[X509]) -> Result<(i64, i64), TspError> {
    let (mut from, mut until) = (i64::MIN, i64::MAX);
    for c in certs.iter().chain(anchors) {
        from = from.max(unix_of(c.not_before())?);
        until = until.min(unix_of(c.not_after())?);
    }
    Ok((from, until))
}

/// The token without the certificates it carries: what openssl is given
/// once their chain is known, with the signer's certificate beside it.
/// The signature covers the signed attributes, not the certificate set,
/// so what is checked is the same.
fn without_certificates(mut sd: cms::signed_data::SignedData) -> Result<Vec<u8>, TspError> {
    sd.certificates = None;
    let ci = cms::content_info::ContentInfo {
        content_type: SIGNED_DATA_OID,
        content: der::Any::encode_from(&sd).map_err(malformed("SignedData"))?,
    };
    ci.to_der().map_err(malformed("token"))
}

/// A token whose certificates are `k`'s, checked with `k`'s signer
/// without building its chain again: what the signature covers, and the
/// signer. `None` whenever anything differs from the check that made `k`
/// known, so that the full check decides (and names what is wrong):
/// - the token is not exactly the DER it decodes to (the certificates are
///   taken out by encoding it again, and an encoder sorts what a signer
///   may not have: openssl would check other bytes than it was given);
/// - its signed attributes name another certificate than `k`'s signer;
/// - openssl does not verify its signature with `k`'s signer.
fn known_signer(
    token: &[u8],
    sd: &cms::signed_data::SignedData,
    k: Known,
) -> Option<(Vec<u8>, Known)> {
    let again = cms::content_info::ContentInfo {
        content_type: SIGNED_DATA_OID,
        content: der::Any::encode_from(sd).ok()?,
    };
    if again.to_der().ok()? != token {
        return None;
    }
    if ess_names_its_signer(sd).ok()?.to_der().ok()? != k.signer_der {
        return None;
    }
    let mut cms =
        openssl::cms::CmsContentInfo::from_der(&without_certificates(sd.clone()).ok()?).ok()?;
    let mut signers = openssl::stack::Stack::new().ok()?;
    signers.push(k.signer.clone()).ok()?;
    let mut out = Vec::new();
    cms.verify(
        Some(&signers),
        None,
        None,
        Some(&mut out),
        openssl::cms::CMSOptions::BINARY | openssl::cms::CMSOptions::NO_SIGNER_CERT_VERIFY,
    )
    .ok()?;
    Some((out, k))
}

/// Checks a token on `imprint`: its signature, by a TSA certificate that
/// chains to `anchors` and was valid when the token says it was made, and
/// that it is about `imprint`. What a token proves years later; a fresh
/// one is checked further by [`read_reply`].
pub fn check_token(token: &[u8], imprint: &[u8; 32], anchors: &[X509]) -> Result<Token, TspError> {
    check(token, imprint, anchors).map(|(t, _)| t)
}

/// [`check_token`], with the TSTInfo it read.
fn check(token: &[u8], imprint: &[u8; 32], anchors: &[X509]) -> Result<(Token, TstInfo), TspError> {
    let sd = signed_data(token)?;
    let info = tst_info(&sd)?;
    let time_s = info.gen_time.to_unix_duration().as_secs() as i64;
    let certs = carried(&sd);
    let key = known_key(&certs, anchors)?;
    let known = KNOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .filter(|k| k.from <= time_s && time_s <= k.until)
        .cloned();
    let (out, known) = match known.and_then(|k| known_signer(token, &sd, k)) {
        Some(hit) => hit,
        None => {
            let store = tsa_store(anchors, time_s)?;
            let mut cms = openssl::cms::CmsContentInfo::from_der(token)?;
            let mut out = Vec::new();
            cms.verify(
                None,
                Some(&store),
                None,
                Some(&mut out),
                openssl::cms::CMSOptions::BINARY,
            )
            .map_err(|e| TspError::Signature(first_reason(&e)))?;
            let signer_der = ess_names_its_signer(&sd)?
                .to_der()
                .map_err(malformed("certificate"))?;
            let signer = X509::from_der(&signer_der)?;
            let parsed = certs
                .iter()
                .map(|d| X509::from_der(d))
                .collect::<Result<Vec<_>, _>>()?;
            let (from, until) = common_validity(&parsed, anchors)?;
            let k = Known {
                subject: crate::xml::dsig::name_to_string(signer.subject_name()),
                signer,
                signer_der,
                from,
                until,
            };
            let mut m = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
            if m.len() >= KNOWN_CAPACITY {
                m.clear();
            }
            m.insert(key, k.clone());
            (out, k)
        }
    };
    // What the signature covers is what we read.
    let signed = TstInfo::from_der(&out).map_err(malformed("TSTInfo"))?;
    if signed != info {
        return Err(TspError::Malformed {
            what: "token",
            detail: "the TSTInfo read differs from the one signed".into(),
        });
    }
    let mi = &info.message_imprint;
    if mi.hash_algorithm.oid != SHA256_OID || mi.hashed_message.as_bytes() != imprint {
        return Err(TspError::Imprint);
    }
    let token = Token {
        der: token.to_vec(),
        time_ms: info.gen_time.to_unix_duration().as_millis() as u64,
        serial: crate::store::trail::hex(info.serial_number.as_bytes()),
        policy: info.policy.to_string(),
        tsa: known.subject,
    };
    Ok((token, info))
}

const SIGNING_CERTIFICATE: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
const SIGNING_CERTIFICATE_V2: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");

/// ESSCertID (RFC 2634): the SHA-1 of a certificate.
#[derive(Clone, der::Sequence)]
struct EssCertId {
    cert_hash: der::asn1::OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<der::Any>,
}

/// ESSCertIDv2 (RFC 5035): the hash (SHA-256 unless named) of a certificate.
#[derive(Clone, der::Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<spki::AlgorithmIdentifierOwned>,
    cert_hash: der::asn1::OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<der::Any>,
}

#[derive(der::Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<der::Any>,
}

#[derive(der::Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<der::Any>,
}

/// RFC 3161 2.4.1 (and RFC 5816): the token's signed attributes name the
/// TSA's certificate (ESS signingCertificate or signingCertificateV2), so
/// that no other certificate of the same key or name can be put in its
/// place; the first certificate named must be the one that signed.
fn ess_names_its_signer(
    sd: &cms::signed_data::SignedData,
) -> Result<&x509_cert::Certificate, TspError> {
    let refuse = |why: &str| TspError::Signature(why.to_owned());
    // RFC 3161 2.4.2: one signer, the TSA.
    let si = match sd.signer_infos.0.as_slice() {
        [one] => one,
        [] => return Err(refuse("the token has no signer")),
        more => {
            return Err(refuse(&format!(
                "the token has {} signers; a timestamp has one, the TSA",
                more.len()
            )))
        }
    };
    let cert = signer_certificate(sd, si)
        .ok_or_else(|| refuse("the token does not carry the certificate that signed it"))?;
    let attrs = si
        .signed_attrs
        .as_ref()
        .map(|a| a.as_slice())
        .unwrap_or_default();
    // Each attribute once, with one value: two that disagree leave it to
    // the reader which certificate is meant.
    for (i, a) in attrs.iter().enumerate() {
        if attrs[..i].iter().any(|b| b.oid == a.oid) || a.values.len() != 1 {
            return Err(refuse(&format!(
                "the token's signed attribute {} is there twice or has other than one value",
                a.oid
            )));
        }
    }
    let first = |oid| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
            .map(|v| v.to_der())
    };
    let (alg, hash) = if let Some(v2) = first(SIGNING_CERTIFICATE_V2) {
        let v2 = v2.map_err(malformed("signingCertificateV2"))?;
        let sc = SigningCertificateV2::from_der(&v2).map_err(malformed("signingCertificateV2"))?;
        let id = sc
            .certs
            .into_iter()
            .next()
            .ok_or_else(|| refuse("its signingCertificateV2 names no certificate"))?;
        let alg = match id.hash_algorithm.map(|a| a.oid) {
            None => openssl::hash::MessageDigest::sha256(),
            Some(o) if o == SHA256_OID => openssl::hash::MessageDigest::sha256(),
            Some(o) if o.to_string() == "2.16.840.1.101.3.4.2.2" => {
                openssl::hash::MessageDigest::sha384()
            }
            Some(o) if o.to_string() == "2.16.840.1.101.3.4.2.3" => {
                openssl::hash::MessageDigest::sha512()
            }
            Some(o) => {
                return Err(refuse(&format!(
                    "its signingCertificateV2 hashes the certificate with {o}, which is not read"
                )))
            }
        };
        (alg, id.cert_hash)
    } else if let Some(v1) = first(SIGNING_CERTIFICATE) {
        let v1 = v1.map_err(malformed("signingCertificate"))?;
        let sc = SigningCertificate::from_der(&v1).map_err(malformed("signingCertificate"))?;
        let id = sc
            .certs
            .into_iter()
            .next()
            .ok_or_else(|| refuse("its signingCertificate names no certificate"))?;
        (openssl::hash::MessageDigest::sha1(), id.cert_hash)
    } else {
        return Err(refuse(
            "the token does not name the certificate that signed it (no ESS signingCertificate \
             or signingCertificateV2 attribute, RFC 3161 2.4.1)",
        ));
    };
    let der = cert.to_der().map_err(malformed("certificate"))?;
    if openssl::hash::hash(alg, &der)?.as_ref() != hash.as_bytes() {
        return Err(refuse(
            "the certificate its signed attributes name is not the one that signed it",
        ));
    }
    Ok(cert)
}

/// The certificate among those a token carries that its signer names.
fn signer_certificate<'a>(
    sd: &'a cms::signed_data::SignedData,
    si: &cms::signed_data::SignerInfo,
) -> Option<&'a x509_cert::Certificate> {
    sd.certificates.as_ref()?.0.iter().find_map(|c| match c {
        cms::cert::CertificateChoices::Certificate(c) => {
            let ours = match &si.sid {
                cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(i) => {
                    i.serial_number == c.tbs_certificate.serial_number
                        && i.issuer == c.tbs_certificate.issuer
                }
                cms::signed_data::SignerIdentifier::SubjectKeyIdentifier(k) => {
                    ski_of(c).as_deref() == Some(k.0.as_bytes())
                }
            };
            ours.then_some(c)
        }
        _ => None,
    })
}

/// A certificate's subjectKeyIdentifier extension, if it has one.
fn ski_of(c: &x509_cert::Certificate) -> Option<Vec<u8>> {
    let e = c
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.14")?;
    let k = der::asn1::OctetString::from_der(e.extn_value.as_bytes()).ok()?;
    Some(k.as_bytes().to_vec())
}

/// The certificates a token carries (the TSA's, and any chain), DER.
pub fn certificates(token: &[u8]) -> Vec<Vec<u8>> {
    signed_data(token)
        .map(|sd| carried(&sd))
        .unwrap_or_default()
}

/// The certificates a SignedData carries, DER.
fn carried(sd: &cms::signed_data::SignedData) -> Vec<Vec<u8>> {
    sd.certificates
        .as_ref()
        .map(|c| {
            c.0.iter()
                .filter_map(|c| match c {
                    cms::cert::CertificateChoices::Certificate(c) => c.to_der().ok(),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .iter()
        .map(|e| e.reason().unwrap_or("unknown").to_owned())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads anchors from PEM.
pub fn anchors_from_pem(pem: &[u8]) -> Result<Vec<X509>, TspError> {
    let v = X509::stack_from_pem(pem)?;
    if v.is_empty() {
        return Err(TspError::Malformed {
            what: "TSA trust file",
            detail: "it holds no certificate".into(),
        });
    }
    Ok(v)
}
