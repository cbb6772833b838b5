//! Our signing keys: a PEM key or a key on a device, loaded with its
//! certificate and checked against it once, then used for every
//! signature value we make.

use base64::Engine;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;

use super::policy::{weak_certificate, MIN_RSA_BITS};
use super::{Algorithm, DsigError};

/// A private key that signs where it lives (a smart card, a USB token, an
/// HSM) and never leaves it: the bytes to sign go in, the signature value
/// comes out in XML-DSig's form (PKCS#1 v1.5 for RSA, `r ‖ s` for ECDSA).
pub trait DeviceKey: Send + Sync {
    fn algorithm(&self) -> Algorithm;
    fn sign_sha256(&self, data: &[u8]) -> Result<Vec<u8>, String>;
}

enum Key {
    Soft(PKey<Private>),
    Device(std::sync::Arc<dyn DeviceKey>),
}

/// A private key with its certificate, loaded once and reused.
pub struct SigningKey {
    key: Key,
    cert_b64: String,
    alg: Algorithm,
}

impl SigningKey {
    /// Loads a PEM private key and certificate. The algorithm follows the
    /// key type unless `alg` forces one (which must fit).
    pub fn from_pem(
        key_pem: &[u8],
        cert_pem: &[u8],
        alg: Option<Algorithm>,
    ) -> Result<SigningKey, DsigError> {
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| DsigError::Key(format!("cannot read private key: {e}")))?;
        let cert = X509::from_pem(cert_pem)
            .map_err(|e| DsigError::Key(format!("cannot read certificate: {e}")))?;
        let natural = match key.id() {
            Id::RSA => Algorithm::RsaSha256,
            Id::EC => {
                let ec = key.ec_key()?;
                if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
                    return Err(DsigError::Key("only EC keys on P-256 are supported".into()));
                }
                Algorithm::EcdsaSha256
            }
            other => {
                return Err(DsigError::Key(format!(
                    "unsupported key type {other:?}; use RSA or EC P-256"
                )))
            }
        };
        if let Some(a) = alg {
            if a != natural {
                let kind = match natural {
                    Algorithm::RsaSha256 => "an RSA",
                    Algorithm::EcdsaSha256 => "an EC P-256",
                };
                return Err(DsigError::Key(format!(
                    "algorithm {} does not fit {kind} key",
                    a.name()
                )));
            }
        }
        if !cert.public_key()?.public_eq(&key) {
            return Err(DsigError::Key(
                "the certificate does not belong to the private key".into(),
            ));
        }
        if let Some(w) = weak_certificate(&cert, MIN_RSA_BITS) {
            return Err(DsigError::Key(format!("too weak to sign: {w}")));
        }
        Ok(SigningKey {
            key: Key::Soft(key),
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.to_der()?),
            alg: natural,
        })
    }

    /// A key on a device, with its certificate (PEM). The certificate must
    /// be the key's: a probe signed on the device must verify with the
    /// certificate's public key.
    pub fn from_device(
        device: std::sync::Arc<dyn DeviceKey>,
        cert_pem: &[u8],
    ) -> Result<SigningKey, DsigError> {
        let cert = X509::from_pem(cert_pem)
            .map_err(|e| DsigError::Key(format!("cannot read certificate: {e}")))?;
        if let Some(w) = weak_certificate(&cert, MIN_RSA_BITS) {
            return Err(DsigError::Key(format!("too weak to sign: {w}")));
        }
        let alg = device.algorithm();
        let public = cert.public_key()?;
        let probe = b"jum-gateway: is this certificate the key's?";
        let sig = device.sign_sha256(probe).map_err(DsigError::Key)?;
        let fits = match (alg, public.id()) {
            (Algorithm::RsaSha256, Id::RSA) => {
                let mut v = Verifier::new(MessageDigest::sha256(), &public)?;
                v.update(probe)?;
                v.verify(&sig).unwrap_or(false)
            }
            (Algorithm::EcdsaSha256, Id::EC) if sig.len() == 64 => {
                let der = EcdsaSig::from_private_components(
                    BigNum::from_slice(&sig[..32])?,
                    BigNum::from_slice(&sig[32..])?,
                )?
                .to_der()?;
                let mut v = Verifier::new(MessageDigest::sha256(), &public)?;
                v.update(probe)?;
                v.verify(&der).unwrap_or(false)
            }
            _ => false,
        };
        if !fits {
            return Err(DsigError::Key(
                "the certificate does not belong to the key on the device".into(),
            ));
        }
        Ok(SigningKey {
            key: Key::Device(device),
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.to_der()?),
            alg,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The certificate, DER in base64, as `ds:X509Certificate` holds it.
    pub fn certificate_b64(&self) -> &str {
        &self.cert_b64
    }

    /// A signature over `data` in XML-DSig's form (PKCS#1 v1.5, or ECDSA
    /// `r ‖ s`).
    pub fn sign_bytes(&self, data: &[u8]) -> Result<Vec<u8>, DsigError> {
        let key = match &self.key {
            Key::Soft(k) => k,
            Key::Device(d) => return d.sign_sha256(data).map_err(DsigError::Device),
        };
        let mut s = Signer::new(MessageDigest::sha256(), key)?;
        s.update(data)?;
        let sig = s.sign_to_vec()?;
        match self.alg {
            Algorithm::RsaSha256 => Ok(sig),
            Algorithm::EcdsaSha256 => {
                let der = EcdsaSig::from_der(&sig)?;
                let mut raw = der.r().to_vec_padded(32)?;
                raw.extend(der.s().to_vec_padded(32)?);
                Ok(raw)
            }
        }
    }
}
