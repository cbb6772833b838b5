//! A time-stamping authority (RFC 3161), the server's side: what the
//! simulator serves for `serve --demo` and the tests, so that a newcomer's
//! documents come timestamped. Its replies are what `openssl ts -verify`
//! accepts: a SignedData over a TSTInfo, with the content type, message
//! digest and ESS signingCertificateV2 signed attributes, and the TSA's
//! certificate (timeStamping, critical) when asked for.

use der::asn1::{GeneralizedTime, Int, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Sequence};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;
use x509_tsp::{Accuracy, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use super::tsp::{SHA256_OID, SIGNED_DATA_OID, TST_INFO_OID};

const CONTENT_TYPE: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const SIGNING_TIME: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const SIGNING_CERTIFICATE_V2: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ECDSA_SHA256: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const RSA_SHA256: der::oid::ObjectIdentifier =
    der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// The demo TSA's policy (an arc under the private-enterprise example
/// space: nobody's real policy).
pub const DEMO_POLICY: &str = "1.3.6.1.4.1.32473.1.3161";

/// ESSCertIDv2 with the default hash (SHA-256) and no issuerSerial.
#[derive(Sequence)]
struct EssCertIdV2 {
    cert_hash: OctetString,
}

#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    #[error("DER: {0}")]
    Der(#[from] der::Error),
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

/// A TSA: its key, its certificate, its policy, its serial numbers.
pub struct Tsa {
    key: PKey<Private>,
    cert: X509,
    cert_der: Vec<u8>,
    policy: der::oid::ObjectIdentifier,
    serial: std::sync::atomic::AtomicU64,
    ess: Ess,
}

/// Which certificate the token's ESS signingCertificateV2 names: the TSA's
/// own (as RFC 3161 wants), another one, or none: the last two are what a
/// broken or hostile TSA sends, for the client's tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ess {
    #[default]
    Own,
    Other(Vec<u8>),
    Left,
}

impl Tsa {
    pub fn new(key: PKey<Private>, cert: X509) -> Result<Tsa, TsaError> {
        let cert_der = cert.to_der()?;
        Ok(Tsa {
            key,
            cert,
            cert_der,
            policy: der::oid::ObjectIdentifier::new_unwrap(DEMO_POLICY),
            serial: std::sync::atomic::AtomicU64::new((crate::lifecycle::now_ms() / 1000) << 20),
            ess: Ess::Own,
        })
    }

    /// The same TSA, naming `ess` in its tokens' signed attributes.
    pub fn with_ess(mut self, ess: Ess) -> Tsa {
        self.ess = ess;
        self
    }

    /// A TSA whose certificate the development CA issues now (EC P-256,
    /// timeStamping only).
    pub fn issued_by(ca_cert: &X509, ca_key: &PKey<Private>) -> Result<Tsa, TsaError> {
        let key = crate::pki::new_key(crate::pki::KeyKind::EcP256)?;
        let spec = crate::pki::CertSpec::new("jum-gateway development TSA", crate::pki::Role::Tsa);
        let cert = crate::pki::issue(&spec, &key, Some((ca_cert, ca_key)))?;
        Tsa::new(key, cert)
    }

    pub fn certificate(&self) -> &X509 {
        &self.cert
    }

    /// The reply to a request (DER in, DER out). A request we cannot
    /// read or whose digest is not SHA-256 gets a rejection, as RFC 3161
    /// says, not an HTTP error.
    pub fn respond(&self, request: &[u8]) -> Result<Vec<u8>, TsaError> {
        let req = match TimeStampReq::from_der(request) {
            Ok(r) if r.message_imprint.hash_algorithm.oid == SHA256_OID => r,
            Ok(_) => return reject(PkiFail::BadAlg, "only SHA-256 imprints"),
            Err(_) => return reject(PkiFail::BadDataFormat, "unreadable TimeStampReq"),
        };
        if req.req_policy.is_some_and(|p| p != self.policy) {
            return reject(PkiFail::UnacceptedPolicy, "policy not served here");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Whole seconds: GeneralizedTime in DER has no trailing zeros, and
        // an accuracy of one second says what the time is worth.
        let now = std::time::Duration::from_secs(now.as_secs());
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tst = TstInfo {
            version: TspVersion::V1,
            policy: self.policy,
            message_imprint: req.message_imprint,
            serial_number: Int::new(&positive(serial))?,
            gen_time: GeneralizedTime::from_unix_duration(now)?,
            accuracy: Some(Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce: req.nonce,
            tsa: None,
            extensions: None,
        };
        let tst_der = tst.to_der()?;
        let digest = openssl::sha::sha256(&tst_der);
        let named = match &self.ess {
            Ess::Other(der) => der.as_slice(),
            _ => self.cert_der.as_slice(),
        };
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                cert_hash: OctetString::new(openssl::sha::sha256(named).to_vec())?,
            }],
        };
        let attr = |oid, value: Any| -> Result<x509_cert::attr::Attribute, TsaError> {
            Ok(x509_cert::attr::Attribute {
                oid,
                values: SetOfVec::try_from(vec![value])?,
            })
        };
        let mut attrs = vec![
            attr(CONTENT_TYPE, Any::encode_from(&TST_INFO_OID)?)?,
            attr(
                SIGNING_TIME,
                Any::encode_from(&x509_cert::time::Time::GeneralTime(
                    GeneralizedTime::from_unix_duration(now)?,
                ))?,
            )?,
            attr(
                MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.to_vec())?)?,
            )?,
        ];
        if self.ess != Ess::Left {
            attrs.push(attr(SIGNING_CERTIFICATE_V2, Any::encode_from(&ess)?)?);
        }
        let signed_attrs: SetOfVec<x509_cert::attr::Attribute> = SetOfVec::try_from(attrs)?;
        // The signature covers the attributes as a SET (RFC 5652 5.4).
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(&signed_attrs.to_der()?)?;
        let signature = signer.sign_to_vec()?;
        let (sig_oid, sig_params) = match self.key.id() {
            Id::RSA => (RSA_SHA256, Some(Any::null())),
            _ => (ECDSA_SHA256, None),
        };
        let cert = x509_cert::Certificate::from_der(&self.cert_der)?;
        let sid = cms::cert::IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        };
        let signer_info = cms::signed_data::SignerInfo {
            version: cms::content_info::CmsVersion::V1,
            sid: cms::signed_data::SignerIdentifier::IssuerAndSerialNumber(sid),
            digest_alg: spki::AlgorithmIdentifierOwned {
                oid: SHA256_OID,
                parameters: None,
            },
            signed_attrs: Some(signed_attrs),
            signature_algorithm: spki::AlgorithmIdentifierOwned {
                oid: sig_oid,
                parameters: sig_params,
            },
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        let certificates = if req.cert_req {
            Some(cms::signed_data::CertificateSet::try_from(vec![
                cms::cert::CertificateChoices::Certificate(cert),
            ])?)
        } else {
            None
        };
        let signed = cms::signed_data::SignedData {
            version: cms::content_info::CmsVersion::V3,
            digest_algorithms: SetOfVec::try_from(vec![spki::AlgorithmIdentifierOwned {
                oid: SHA256_OID,
                parameters: None,
            }])?,
            encap_content_info: cms::signed_data::EncapsulatedContentInfo {
                econtent_type: TST_INFO_OID,
                econtent: Some(Any::encode_from(&OctetString::new(tst_der)?)?),
            },
            certificates,
            crls: None,
            signer_infos: cms::signed_data::SignerInfos::try_from(vec![signer_info])?,
        };
        let token = cms::content_info::ContentInfo {
            content_type: SIGNED_DATA_OID,
            content: Any::encode_from(&signed)?,
        };
        let resp = TimeStampResp {
            status: cmpv2::status::PkiStatusInfo {
                status: cmpv2::status::PkiStatus::Accepted,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(token),
        };
        Ok(resp.to_der()?)
    }
}

enum PkiFail {
    BadAlg,
    BadDataFormat,
    UnacceptedPolicy,
}

fn reject(why: PkiFail, text: &str) -> Result<Vec<u8>, TsaError> {
    use cmpv2::status::PkiFailureInfoValues as F;
    let fail = match why {
        PkiFail::BadAlg => F::BadAlg,
        PkiFail::BadDataFormat => F::BadDataFormat,
        PkiFail::UnacceptedPolicy => F::UnacceptedPolicy,
    };
    let resp = TimeStampResp {
        status: cmpv2::status::PkiStatusInfo {
            status: cmpv2::status::PkiStatus::Rejection,
            status_string: Some(vec![der::asn1::Utf8StringRef::new(text)?]),
            fail_info: Some(fail.into()),
        },
        time_stamp_token: None,
    };
    Ok(resp.to_der()?)
}

/// `n` as the bytes of a positive DER INTEGER.
fn positive(n: u64) -> Vec<u8> {
    let b = n.to_be_bytes();
    let first = b.iter().position(|&x| x != 0).unwrap_or(7);
    let mut v = b[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tsa_and_ca() -> (Tsa, X509) {
        let ca = crate::pki::Issued::new(
            &crate::pki::CertSpec::new("TSA test CA", crate::pki::Role::Ca),
            crate::pki::KeyKind::EcP256,
            None,
        )
        .unwrap();
        (Tsa::issued_by(&ca.cert, &ca.key).unwrap(), ca.cert)
    }

    /// RFC 3161 2.4.1: a token must name its signing certificate in its
    /// signed attributes. One that names none, or another certificate (of
    /// another TSA), is refused even though its
    /// signature verifies and its signer chains.
    #[test]
    fn a_token_that_does_not_name_its_signer_is_refused() {
        let (tsa, ca) = tsa_and_ca();
        let imprint = openssl::sha::sha256(b"signature value");
        let token = |tsa: &Tsa| {
            let req = crate::evidence::tsp::request(&imprint, None).unwrap();
            let reply = tsa.respond(&req.der).unwrap();
            let r = x509_tsp::TimeStampResp::from_der(&reply).unwrap();
            r.time_stamp_token.unwrap().to_der().unwrap()
        };
        let anchors = std::slice::from_ref(&ca);
        let own = token(&tsa);
        assert!(crate::evidence::tsp::check_token(&own, &imprint, anchors).is_ok());
        let other = tsa_and_ca().0.certificate().to_der().unwrap();
        let key = tsa.key.clone();
        let cert = tsa.cert.clone();
        for (ess, says) in [
            (Ess::Left, "does not name the certificate that signed it"),
            (Ess::Other(other), "is not the one that signed it"),
        ] {
            let hostile = Tsa::new(key.clone(), cert.clone()).unwrap().with_ess(ess);
            let e =
                crate::evidence::tsp::check_token(&token(&hostile), &imprint, anchors).unwrap_err();
            assert!(e.to_string().contains(says), "{says}: {e}");
        }
    }

    #[test]
    fn its_tokens_check_out_and_a_foreign_imprint_or_anchor_is_refused() {
        let (tsa, ca) = tsa_and_ca();
        let imprint = openssl::sha::sha256(b"signature value");
        let req = crate::evidence::tsp::request(&imprint, None).unwrap();
        let reply = tsa.respond(&req.der).unwrap();
        let expect = crate::evidence::tsp::Expect {
            nonce: &req.nonce,
            policy: Some(DEMO_POLICY),
            now_ms: crate::lifecycle::now_ms(),
            tolerance: std::time::Duration::from_secs(60),
        };
        let t =
            crate::evidence::tsp::read_reply(&reply, &imprint, std::slice::from_ref(&ca), &expect)
                .unwrap();
        assert_eq!(t.policy, DEMO_POLICY);
        assert!(t.tsa.contains("development TSA"), "{}", t.tsa);
        let other = openssl::sha::sha256(b"another value");
        assert!(matches!(
            crate::evidence::tsp::check_token(&t.der, &other, std::slice::from_ref(&ca)),
            Err(crate::evidence::tsp::TspError::Imprint)
        ));
        let (_, foreign_ca) = tsa_and_ca();
        assert!(matches!(
            crate::evidence::tsp::check_token(&t.der, &imprint, &[foreign_ca]),
            Err(crate::evidence::tsp::TspError::Signature(_))
        ));
        let wrong_nonce = crate::evidence::tsp::Expect {
            nonce: b"\x41\x41",
            ..expect
        };
        assert!(matches!(
            crate::evidence::tsp::read_reply(
                &reply,
                &imprint,
                std::slice::from_ref(&ca),
                &wrong_nonce
            ),
            Err(crate::evidence::tsp::TspError::Nonce)
        ));
    }

    #[test]
    fn unreadable_requests_are_rejected_in_rfc3161_terms() {
        let (tsa, ca) = tsa_and_ca();
        let reply = tsa.respond(b"\x30\x03\x02\x01\x01").unwrap();
        let expect = crate::evidence::tsp::Expect {
            nonce: b"",
            policy: None,
            now_ms: 0,
            tolerance: std::time::Duration::from_secs(1),
        };
        let err = crate::evidence::tsp::read_reply(&reply, &[0; 32], &[ca], &expect).unwrap_err();
        assert!(err.to_string().contains("rejection"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn replies_of_any_bytes_are_refused_with_a_reason(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let expect = crate::evidence::tsp::Expect {
                nonce: b"",
                policy: None,
                now_ms: 0,
                tolerance: std::time::Duration::from_secs(1),
            };
            let r = crate::evidence::tsp::read_reply(&bytes, &[0; 32], &[], &expect);
            proptest::prop_assert!(r.is_err());
            let _ = crate::evidence::tsp::check_token(&bytes, &[0; 32], &[]);
        }
    }
}
