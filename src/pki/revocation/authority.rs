//! The CA's side of revocation, for the development PKI, the simulator
//! and tests: an OCSP responder that signs with the CA's key and echoes
//! the nonce, and CRLs with a growing CRL number. Revoking is one call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{BitString, Null, OctetString, Uint, UtcTime};
use der::{Decode, Encode};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;
use spki::AlgorithmIdentifierOwned;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::time::Time;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
    Version,
};

use super::{ocsp, oid, serial_digits};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthorityError(String);

fn err(e: impl std::fmt::Display) -> AuthorityError {
    AuthorityError(e.to_string())
}

/// A CA that answers for its certificates.
pub struct Authority {
    ca: X509,
    key: PKey<Private>,
    revoked: Mutex<BTreeMap<Vec<u8>, u64>>,
    crl_number: AtomicU64,
    /// How long an answer or a CRL is valid (its `nextUpdate`).
    pub validity: Duration,
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Authority {
    pub fn new(ca: X509, key: PKey<Private>) -> Authority {
        Authority {
            ca,
            key,
            revoked: Mutex::new(BTreeMap::new()),
            crl_number: AtomicU64::new(1),
            validity: Duration::from_secs(3600),
        }
    }

    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Authority, AuthorityError> {
        Ok(Authority::new(
            X509::from_pem(cert).map_err(err)?,
            PKey::private_key_from_pem(key).map_err(err)?,
        ))
    }

    pub fn ca(&self) -> &X509 {
        &self.ca
    }

    /// Revokes the certificate with this serial number (unsigned bytes).
    pub fn revoke(&self, serial: &[u8], at_ms: u64) {
        crate::sync::lock(&self.revoked).insert(serial_digits(serial), at_ms);
    }

    /// When `cert` was revoked, if it is.
    pub fn status_of(&self, cert: &X509) -> Option<u64> {
        let serial = cert.serial_number().to_bn().ok()?.to_vec();
        crate::sync::lock(&self.revoked)
            .get(&serial_digits(&serial))
            .copied()
    }

    /// Takes `cert` off the list (a certificate hold released).
    pub fn unrevoke(&self, cert: &X509) {
        if let Ok(serial) = cert.serial_number().to_bn().map(|b| b.to_vec()) {
            crate::sync::lock(&self.revoked).remove(&serial_digits(&serial));
        }
    }

    /// Revokes `cert`, if this CA issued it.
    pub fn revoke_cert(&self, cert: &X509, at_ms: u64) -> Result<(), AuthorityError> {
        let serial = cert.serial_number().to_bn().map_err(err)?.to_vec();
        self.revoke(&serial, at_ms);
        Ok(())
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        if self.key.id() == Id::RSA {
            AlgorithmIdentifierOwned {
                oid: oid::SHA256_RSA,
                parameters: Some(Null.into()),
            }
        } else {
            AlgorithmIdentifierOwned {
                oid: oid::ECDSA_SHA256,
                parameters: None,
            }
        }
    }

    fn sign(&self, tbs: &[u8]) -> Result<BitString, AuthorityError> {
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key).map_err(err)?;
        s.update(tbs).map_err(err)?;
        BitString::from_bytes(&s.sign_to_vec().map_err(err)?).map_err(err)
    }

    fn name(&self) -> Result<Name, AuthorityError> {
        Name::from_der(&self.ca.subject_name().to_der().map_err(err)?).map_err(err)
    }

    /// The answer to an OCSP request (DER) at `now_ms`: for each
    /// certificate asked about, good or revoked if this CA issued it,
    /// unknown if not; the request's nonce echoed. A request that cannot
    /// be read gets `malformedRequest`.
    pub fn respond(&self, request: &[u8], now_ms: u64) -> Vec<u8> {
        self.try_respond(request, now_ms, None).unwrap_or_else(|_| {
            OcspResponse::malformed_request()
                .to_der()
                .unwrap_or_default()
        })
    }

    /// [`Authority::respond`], with another key and certificate signing
    /// (a responder the CA never authorised, for tests), or a nonce of
    /// its own instead of the request's.
    pub fn try_respond(
        &self,
        request: &[u8],
        now_ms: u64,
        tamper: Option<&Tamper>,
    ) -> Result<Vec<u8>, AuthorityError> {
        let req = OcspRequest::from_der(request).map_err(err)?;
        let now_ms = tamper.and_then(|t| t.made_ms).unwrap_or(now_ms);
        let own = ocsp::cert_id(&self.ca, &self.ca).map_err(err)?;
        let revoked = crate::sync::lock(&self.revoked).clone();
        let now = OcspGeneralizedTime::try_from(at(now_ms)).map_err(err)?;
        let next = OcspGeneralizedTime::try_from(at(now_ms + self.validity.as_millis() as u64))
            .map_err(err)?;
        let mut responses = Vec::new();
        for r in &req.tbs_request.request_list {
            let id = &r.req_cert;
            let ours = id.issuer_name_hash == own.issuer_name_hash
                && id.issuer_key_hash == own.issuer_key_hash;
            let status = if !ours {
                CertStatus::unknown()
            } else {
                match revoked.get(&serial_digits(id.serial_number.as_bytes())) {
                    Some(ms) => CertStatus::revoked(RevokedInfo {
                        revocation_time: OcspGeneralizedTime::try_from(at(*ms)).map_err(err)?,
                        revocation_reason: Some(x509_cert::ext::pkix::CrlReason::KeyCompromise),
                    }),
                    None => CertStatus::good(),
                }
            };
            let mut cert_id = id.clone();
            if tamper.is_some_and(|t| t.sha256_ids) {
                let name = self.ca.subject_name().to_der().map_err(err)?;
                let key = ocsp::subject_public_key(&self.ca).map_err(err)?;
                let octets =
                    |b: &[u8]| der::asn1::OctetString::new(openssl::sha::sha256(b).to_vec());
                cert_id.hash_algorithm = spki::AlgorithmIdentifierOwned {
                    oid: der::asn1::ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1"),
                    parameters: None,
                };
                cert_id.issuer_name_hash = octets(&name).map_err(err)?;
                cert_id.issuer_key_hash = octets(&key).map_err(err)?;
            }
            let single = SingleResponse {
                cert_id,
                cert_status: status,
                this_update: now,
                next_update: (!tamper.is_some_and(|t| t.no_next_update)).then_some(next),
                single_extensions: None,
            };
            if tamper.is_some_and(|t| t.twice) {
                let mut again = single.clone();
                again.cert_status = CertStatus::revoked(RevokedInfo {
                    revocation_time: now,
                    revocation_reason: None,
                });
                responses.push(single);
                responses.push(again);
            } else {
                responses.push(single);
            }
        }
        let nonce = match tamper.and_then(|t| t.nonce.clone()) {
            Some(n) => Some(n),
            None => super::ocsp::nonce_of(req.tbs_request.request_extensions.as_ref()),
        };
        let mut extensions = match nonce.filter(|_| !tamper.is_some_and(|t| t.no_nonce)) {
            Some(n) => Some(vec![ocsp::nonce_extension(&n).map_err(err)?]),
            None => None,
        };
        if tamper.is_some_and(|t| t.critical_extension) {
            extensions
                .get_or_insert_with(Vec::new)
                .push(x509_cert::ext::Extension {
                    extn_id: der::asn1::ObjectIdentifier::new_unwrap("1.2.3.4.5"),
                    critical: true,
                    extn_value: der::asn1::OctetString::new(vec![5, 0]).map_err(err)?,
                });
        }
        let (signer_name, signer) = match tamper.and_then(|t| t.signer.as_ref()) {
            Some(a) => (a.name()?, a),
            None => (self.name()?, self),
        };
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByName(signer_name),
            produced_at: match tamper.and_then(|t| t.produced_ms) {
                Some(ms) => OcspGeneralizedTime::try_from(at(ms)).map_err(err)?,
                None => now,
            },
            responses,
            response_extensions: extensions,
        };
        let tbs = data.to_der().map_err(err)?;
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: signer.algorithm(),
            signature: signer.sign(&tbs)?,
            certs: match tamper.and_then(|t| t.signer.as_ref()) {
                Some(a) => Some(vec![x509_cert::Certificate::from_der(
                    &a.ca.to_der().map_err(err)?,
                )
                .map_err(err)?]),
                None => None,
            },
        };
        OcspResponse {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: oid::OCSP_BASIC,
                response: OctetString::new(basic.to_der().map_err(err)?).map_err(err)?,
            }),
        }
        .to_der()
        .map_err(err)
    }

    /// A CRL (DER) of every revoked certificate, valid from `now_ms` for
    /// [`Authority::validity`], with the next CRL number.
    pub fn crl(&self, now_ms: u64) -> Result<Vec<u8>, AuthorityError> {
        self.crl_valid(now_ms, now_ms + self.validity.as_millis() as u64)
    }

    /// A CRL with the given `thisUpdate` and `nextUpdate` (an expired one, for tests).
    pub fn crl_valid(&self, this_ms: u64, next_ms: u64) -> Result<Vec<u8>, AuthorityError> {
        let time = |ms: u64| -> Result<Time, AuthorityError> {
            Ok(Time::UtcTime(
                UtcTime::from_system_time(at(ms)).map_err(err)?,
            ))
        };
        let revoked = crate::sync::lock(&self.revoked).clone();
        let mut list = Vec::new();
        for (serial, ms) in &revoked {
            list.push(RevokedCert {
                serial_number: ocsp::serial_of(serial).map_err(err)?,
                revocation_date: time(*ms)?,
                crl_entry_extensions: None,
            });
        }
        let number = self.crl_number.fetch_add(1, Ordering::Relaxed);
        let number =
            x509_cert::ext::pkix::CrlNumber(Uint::new(&number.to_be_bytes()).map_err(err)?);
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: self.algorithm(),
            issuer: self.name()?,
            this_update: time(this_ms)?,
            next_update: Some(time(next_ms)?),
            revoked_certificates: (!list.is_empty()).then_some(list),
            crl_extensions: Some(vec![Extension {
                extn_id: oid::CRL_NUMBER,
                critical: false,
                extn_value: OctetString::new(number.to_der().map_err(err)?).map_err(err)?,
            }]),
        };
        let signature = self.sign(&tbs.to_der().map_err(err)?)?;
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: self.algorithm(),
            signature,
        }
        .to_der()
        .map_err(err)
    }
}

/// How a test's responder lies.
#[derive(Default)]
pub struct Tamper {
    /// Signs with this CA's key (one not authorised for the certificates).
    pub signer: Option<Authority>,
    /// Answers with this nonce instead of the request's.
    pub nonce: Option<Vec<u8>>,
    /// Answers without a nonce (a pre-produced or replayed answer).
    pub no_nonce: bool,
    /// Answers as of this time (thisUpdate, producedAt) instead of now.
    pub made_ms: Option<u64>,
    /// Answers without nextUpdate.
    pub no_next_update: bool,
    /// Says it was produced at this time (producedAt alone).
    pub produced_ms: Option<u64>,
    /// Speaks of each certificate twice: the second time revoked.
    pub twice: bool,
    /// Adds a critical response extension no client processes.
    pub critical_extension: bool,
    /// Names each certificate by SHA-256 hashes of the issuer, not SHA-1.
    pub sha256_ids: bool,
}
