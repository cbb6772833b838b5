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
            serial: std::sync::atomic::AtomicU64::new((crate::time::now_ms() / 1000) << 20),
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

    /// The token `tsa` answers a request on `imprint` with, DER.
    fn token_on(tsa: &Tsa, imprint: &[u8; 32]) -> Vec<u8> {
        let req = crate::evidence::tsp::request(imprint, None).unwrap();
        let reply = tsa.respond(&req.der).unwrap();
        let r = x509_tsp::TimeStampResp::from_der(&reply).unwrap();
        r.time_stamp_token.unwrap().to_der().unwrap()
    }

    /// RFC 3161 2.4.1: a token must name its signing certificate in its
    /// signed attributes. One that names none, or another certificate (of
    /// another TSA), is refused even though its
    /// signature verifies and its signer chains.
    #[test]
    fn a_token_that_does_not_name_its_signer_is_refused() {
        let (tsa, ca) = tsa_and_ca();
        let imprint = openssl::sha::sha256(b"signature value");
        let token = |tsa: &Tsa| token_on(tsa, &imprint);
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

    /// Once a TSA's certificates are known (their chain built once), a
    /// token carrying the same certificates is still checked for its own
    /// signature: one with a byte of its signature changed, or signed by
    /// another key under the known certificate, is refused, before and
    /// after the known one.
    #[test]
    fn a_known_tsa_certificate_lets_no_forged_token_through() {
        let (tsa, ca) = tsa_and_ca();
        let imprint = openssl::sha::sha256(b"known signer");
        let token = |tsa: &Tsa| token_on(tsa, &imprint);
        let anchors = std::slice::from_ref(&ca);
        let genuine = token(&tsa);
        let mut flipped = genuine.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        let other_key = crate::pki::new_key(crate::pki::KeyKind::EcP256).unwrap();
        let impostor = token(&Tsa::new(other_key, tsa.cert.clone()).unwrap());
        let check = |t: &[u8]| crate::evidence::tsp::check_token(t, &imprint, anchors);
        // Cold: the chain is built for the forgery itself.
        assert!(matches!(
            check(&impostor),
            Err(crate::evidence::tsp::TspError::Signature(_))
        ));
        // Warm: the genuine token makes its certificates known...
        let first = check(&genuine).unwrap();
        let again = check(&genuine).unwrap();
        assert_eq!(first.tsa, again.tsa);
        assert!(first.tsa.contains("development TSA"), "{}", first.tsa);
        // ...and neither forgery rides on them.
        for forged in [&flipped, &impostor] {
            assert!(
                matches!(
                    check(forged),
                    Err(crate::evidence::tsp::TspError::Signature(_))
                ),
                "{:?}",
                check(forged).map(|t| t.serial)
            );
        }
        // Nor does a known token vouch under other anchors.
        let (_, foreign) = tsa_and_ca();
        assert!(matches!(
            crate::evidence::tsp::check_token(&genuine, &imprint, &[foreign]),
            Err(crate::evidence::tsp::TspError::Signature(_))
        ));
    }

    /// The first two signed attributes of a genuine token swapped in its
    /// bytes: what was signed is the attributes in their DER order, so
    /// openssl refuses the swapped token. A decoder that sorts them again
    /// would see the genuine token; a known TSA certificate must not let
    /// the swapped one through on that.
    fn with_signed_attributes_swapped(token: &[u8]) -> Vec<u8> {
        let ci = cms::content_info::ContentInfo::from_der(token).unwrap();
        let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
        let attrs = sd.signer_infos.0.as_slice()[0]
            .signed_attrs
            .as_ref()
            .unwrap();
        let a: Vec<Vec<u8>> = attrs.iter().map(|a| a.to_der().unwrap()).collect();
        assert!(
            a.len() >= 2 && a[0] != a[1],
            "two different signed attributes"
        );
        let both = [a[0].as_slice(), a[1].as_slice()].concat();
        let at = token
            .windows(both.len())
            .position(|w| w == both.as_slice())
            .unwrap();
        let mut out = token.to_vec();
        out[at..at + both.len()].copy_from_slice(&[a[1].as_slice(), a[0].as_slice()].concat());
        assert_ne!(out, token);
        out
    }

    #[test]
    fn a_token_with_its_signed_attributes_reordered_is_refused_cold_and_warm() {
        let imprint = openssl::sha::sha256(b"reordered");
        let token = |tsa: &Tsa| token_on(tsa, &imprint);
        for warm in [false, true] {
            let (tsa, ca) = tsa_and_ca();
            let anchors = std::slice::from_ref(&ca);
            let genuine = token(&tsa);
            let swapped = with_signed_attributes_swapped(&genuine);
            if warm {
                crate::evidence::tsp::check_token(&genuine, &imprint, anchors).unwrap();
            }
            let e = crate::evidence::tsp::check_token(&swapped, &imprint, anchors);
            assert!(
                matches!(e, Err(crate::evidence::tsp::TspError::Signature(_))),
                "warm {warm}: {:?}",
                e.map(|t| t.serial)
            );
            // And the genuine one still checks out after it.
            crate::evidence::tsp::check_token(&genuine, &imprint, anchors).unwrap();
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
            now_ms: crate::time::now_ms(),
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

    /// A genuine reply, what it was asked for and the anchor it chains
    /// to, made once for the property tests below.
    struct Genuine {
        reply: Vec<u8>,
        imprint: [u8; 32],
        nonce: Vec<u8>,
        ca: X509,
        /// What the signature binds, as the genuine token has it.
        signed: Signed,
    }

    /// The parts of a token its signature binds: the TSTInfo (with the
    /// imprint), the signed attributes, the signature value.
    #[derive(Debug, PartialEq, Eq)]
    struct Signed {
        tst_info: Vec<u8>,
        signed_attrs: Vec<u8>,
        signature: Vec<u8>,
    }

    fn signed_parts(token: &[u8]) -> Signed {
        let ci = cms::content_info::ContentInfo::from_der(token).unwrap();
        let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
        let octets: OctetString = sd.encap_content_info.econtent.unwrap().decode_as().unwrap();
        let [si] = sd.signer_infos.0.as_slice() else {
            panic!("one signer")
        };
        Signed {
            tst_info: octets.as_bytes().to_vec(),
            signed_attrs: si.signed_attrs.as_ref().unwrap().to_der().unwrap(),
            signature: si.signature.as_bytes().to_vec(),
        }
    }

    fn genuine() -> &'static Genuine {
        static G: std::sync::OnceLock<Genuine> = std::sync::OnceLock::new();
        G.get_or_init(|| {
            let (tsa, ca) = tsa_and_ca();
            let imprint = openssl::sha::sha256(b"the signature value of a document");
            let req = crate::evidence::tsp::request(&imprint, Some(DEMO_POLICY)).unwrap();
            let reply = tsa.respond(&req.der).unwrap();
            let token = x509_tsp::TimeStampResp::from_der(&reply)
                .unwrap()
                .time_stamp_token
                .unwrap()
                .to_der()
                .unwrap();
            Genuine {
                reply,
                imprint,
                nonce: req.nonce,
                ca,
                signed: signed_parts(&token),
            }
        })
    }

    /// Reads `reply` as the client that asked for the genuine one does:
    /// its imprint, nonce, policy and the TSA's anchor.
    fn read_as_asked(
        reply: &[u8],
    ) -> Result<crate::evidence::tsp::Token, crate::evidence::tsp::TspError> {
        let g = genuine();
        crate::evidence::tsp::read_reply(
            reply,
            &g.imprint,
            std::slice::from_ref(&g.ca),
            &crate::evidence::tsp::Expect {
                nonce: &g.nonce,
                policy: Some(DEMO_POLICY),
                now_ms: crate::time::now_ms(),
                // The genuine reply is made once for all cases: an hour
                // keeps it fresh however slow the machine.
                tolerance: std::time::Duration::from_secs(3600),
            },
        )
    }

    /// Where in a genuine reply a mutation lands: anywhere, or in a part
    /// the signature binds (found by its bytes, which the reply carries
    /// verbatim), so that those are hit in every run, not by luck.
    #[derive(Debug, Clone, Copy)]
    enum Region {
        Anywhere,
        TstInfo,
        Imprint,
        SignedAttrs,
        Signature,
    }

    fn region(reply: &[u8], r: Region) -> std::ops::Range<usize> {
        let g = genuine();
        let find = |needle: &[u8]| {
            let at = reply
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("the reply carries it verbatim");
            at..at + needle.len()
        };
        match r {
            Region::Anywhere => 0..reply.len(),
            Region::TstInfo => find(&g.signed.tst_info),
            Region::Imprint => find(&g.imprint),
            // Inside the SignerInfo the SET is IMPLICIT [0]: its content,
            // after the tag and length, is what the reply carries.
            Region::SignedAttrs => {
                let der = &g.signed.signed_attrs;
                let header = match der[1] {
                    0..=0x7f => 2,
                    long => 2 + (long & 0x7f) as usize,
                };
                find(&der[header..])
            }
            Region::Signature => find(&g.signed.signature),
        }
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        /// XOR one byte with a non-zero mask.
        Flip(Region, usize, u8),
        /// Cut the reply short.
        Truncate(usize),
        /// Insert a byte.
        Insert(Region, usize, u8),
        /// Remove a byte.
        Remove(Region, usize),
    }

    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        let region = prop_oneof![
            Just(Region::Anywhere),
            Just(Region::TstInfo),
            Just(Region::Imprint),
            Just(Region::SignedAttrs),
            Just(Region::Signature),
        ];
        prop_oneof![
            4 => (region.clone(), any::<usize>(), 1u8..=255).prop_map(|(r, i, m)| Mutation::Flip(r, i, m)),
            1 => any::<usize>().prop_map(Mutation::Truncate),
            1 => (region.clone(), any::<usize>(), any::<u8>()).prop_map(|(r, i, b)| Mutation::Insert(r, i, b)),
            1 => (region, any::<usize>()).prop_map(|(r, i)| Mutation::Remove(r, i)),
        ]
    }

    fn apply(reply: &[u8], m: &Mutation) -> Vec<u8> {
        let mut out = reply.to_vec();
        let at = |r: Region, i: usize| {
            let range = region(reply, r);
            range.start + i % range.len()
        };
        match *m {
            Mutation::Flip(r, i, mask) => out[at(r, i)] ^= mask,
            Mutation::Truncate(n) => out.truncate(n % reply.len()),
            Mutation::Insert(r, i, b) => out.insert(at(r, i), b),
            Mutation::Remove(r, i) => {
                out.remove(at(r, i));
            }
        }
        out
    }

    /// The positive control of the property below: the genuine reply,
    /// unmutated, is accepted, with the parts its signature binds.
    #[test]
    fn the_genuine_reply_of_the_property_test_is_accepted() {
        let g = genuine();
        let t = read_as_asked(&g.reply).unwrap();
        assert_eq!(signed_parts(&t.der), g.signed);
    }

    proptest::proptest! {
        /// No mutation of a genuine reply that changes what the token's
        /// signature binds (the TSTInfo with its imprint, the signed
        /// attributes, the signature) is accepted: a reply accepted after
        /// a mutation carries exactly the genuine token's signed parts (a
        /// change in unsigned bytes, e.g. the status granted ->
        /// grantedWithMods, may still be read). Every refusal says why.
        #[test]
        fn a_mutated_reply_is_accepted_only_with_the_genuine_signed_token(m in mutation()) {
            let g = genuine();
            let bad = apply(&g.reply, &m);
            match read_as_asked(&bad) {
                Ok(t) => proptest::prop_assert_eq!(&signed_parts(&t.der), &g.signed),
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// Arbitrary bytes are refused with a reason, and nothing panics
        /// (they cannot be a genuine reply: this shows only that).
        #[test]
        fn replies_of_any_bytes_are_refused_with_a_reason(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let g = genuine();
            let r = read_as_asked(&bytes);
            proptest::prop_assert!(r.is_err());
            let _ = crate::evidence::tsp::check_token(&bytes, &g.imprint, std::slice::from_ref(&g.ca));
        }
    }
}
