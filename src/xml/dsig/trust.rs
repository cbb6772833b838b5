//! The trust store: the anchors a peer's signers must chain to, the pins
//! on the signer's subject and certificate, and the chains already built,
//! remembered for a while so that one registry's thousands of answers
//! do not each rebuild the same chain.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::pkey::{PKey, Public};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509KeyUsage, X509StoreContext, X509};

use super::names::{hex, rfc4514, NamePin};
use super::policy::{weak_certificate, MIN_RSA_BITS};
use super::DsigError;

/// Trust anchors for the signer certificates of one peer.
///
/// Verified signer certificates are remembered (by the SHA-256 of the
/// certificates offered) so that the chain is not rebuilt for every
/// document from the same registry: a registry signs thousands of answers
/// with one certificate. Validity dates and the subject pin are still
/// checked on every use; a remembered chain is re-checked after
/// [`TrustStore::RECHECK`].
pub struct TrustStore {
    store: X509Store,
    /// The certificates the store was made of, for whoever must find a
    /// signer's issuer (revocation checks).
    anchors: Vec<X509>,
    /// The time certificates are judged at, when not now.
    at: Option<i64>,
    /// The smallest RSA key a signer may have (at least [`MIN_RSA_BITS`]).
    pub min_rsa_bits: u32,
    /// Optional pin: the signer's subject must be this name, exactly.
    pub subject_pin: Option<NamePin>,
    /// Optional pin: the signer's certificate must be this one (SHA-256
    /// of its DER).
    pub cert_pin: Option<[u8; 32]>,
    checked: Mutex<HashMap<[u8; 32], Checked>>,
}

/// A signer whose chain was built to an anchor, and when.
#[derive(Clone)]
pub(super) struct Checked {
    pub(super) cert: X509,
    pub(super) key: PKey<Public>,
    /// The other certificates offered with it, parsed: openssl 3's parse
    /// of a certificate costs about as much as checking a signature, so
    /// it is done once per chain, not once per answer.
    pub(super) intermediates: Vec<X509>,
    /// The anchor its chain ended at, and its issuer among the offered
    /// certificates and the anchors ([`issuer_of`]), found with the chain.
    pub(super) anchor: Option<X509>,
    pub(super) issuer: Option<X509>,
    not_before: i64,
    not_after: i64,
    at: Instant,
}

fn unix_of(t: &Asn1TimeRef) -> Result<i64, DsigError> {
    let d = Asn1Time::from_unix(0)?.diff(t)?;
    Ok(d.days as i64 * 86_400 + d.secs as i64)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl TrustStore {
    /// How long a verified chain is trusted before it is built again.
    pub const RECHECK: Duration = Duration::from_secs(300);
    const CAPACITY: usize = 64;

    pub fn from_pem(pem: &[u8]) -> Result<TrustStore, DsigError> {
        TrustStore::from_pem_at(pem, None)
    }

    /// A store with no anchor: every signature is refused.
    pub fn empty() -> TrustStore {
        TrustStore {
            store: X509StoreBuilder::new()
                .expect("an empty X509 store is always built")
                .build(),
            at: None,
            anchors: Vec::new(),
            min_rsa_bits: MIN_RSA_BITS,
            subject_pin: None,
            cert_pin: None,
            checked: Mutex::new(HashMap::new()),
        }
    }

    /// Anchors that judge certificates as of `at` (seconds since the
    /// epoch) instead of now: a document verified years later, at the
    /// time a timestamp proves it was signed, after its certificates
    /// expired.
    pub fn from_pem_at(pem: &[u8], at: Option<i64>) -> Result<TrustStore, DsigError> {
        let certs = X509::stack_from_pem(pem)
            .map_err(|e| DsigError::Certificate(format!("cannot read trust anchors: {e}")))?;
        if certs.is_empty() {
            return Err(DsigError::Certificate(
                "the trust file holds no certificate".into(),
            ));
        }
        let mut b = X509StoreBuilder::new()?;
        for c in &certs {
            b.add_cert(c.clone())?;
        }
        if let Some(t) = at {
            let mut p = openssl::x509::verify::X509VerifyParam::new()?;
            p.set_time(t as _);
            b.set_param(&p)?;
        }
        Ok(TrustStore {
            store: b.build(),
            at,
            anchors: certs,
            min_rsa_bits: MIN_RSA_BITS,
            subject_pin: None,
            cert_pin: None,
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// The trusted certificates, as given.
    pub fn anchors(&self) -> &[X509] {
        &self.anchors
    }

    /// The signer certificate, once its chain is trusted (and its
    /// subject pinned, if a pin is set). `ders` are the offered
    /// certificates, signer first.
    pub fn trusted_signer(&self, ders: &[Vec<u8>]) -> Result<X509, DsigError> {
        Ok(self.signer(ders)?.cert)
    }

    /// The signer certificate and its key, once its chain is trusted.
    /// `ders` are the offered certificates, signer first.
    pub(super) fn signer(&self, ders: &[Vec<u8>]) -> Result<Checked, DsigError> {
        let mut h = openssl::sha::Sha256::new();
        for d in ders {
            h.update(&(d.len() as u64).to_be_bytes());
            h.update(d);
        }
        let id = h.finish();
        let now = self.at.unwrap_or_else(unix_now);
        let cached = self
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        let c = match cached {
            Some(c)
                if c.at.elapsed() < Self::RECHECK && c.not_before <= now && now <= c.not_after =>
            {
                c
            }
            _ => {
                let mut certs = Vec::with_capacity(ders.len());
                for d in ders {
                    certs.push(
                        X509::from_der(d)
                            .map_err(|e| DsigError::Certificate(format!("cannot parse: {e}")))?,
                    );
                }
                let signer = certs.remove(0);
                let anchor = check_certificate(&signer, certs.clone(), self)?;
                let mut candidates = certs.clone();
                candidates.extend_from_slice(&self.anchors);
                let c = Checked {
                    key: signer.public_key()?,
                    issuer: issuer_of(&signer, &candidates),
                    intermediates: certs,
                    anchor,
                    not_before: unix_of(signer.not_before())?,
                    not_after: unix_of(signer.not_after())?,
                    cert: signer,
                    at: Instant::now(),
                };
                let mut m = self.checked.lock().unwrap_or_else(|e| e.into_inner());
                if m.len() >= Self::CAPACITY {
                    m.clear();
                }
                m.insert(id, c.clone());
                c
            }
        };
        if let Some(pin) = &self.subject_pin {
            if !pin.matches(c.cert.subject_name()) {
                let subject = rfc4514(c.cert.subject_name());
                return Err(DsigError::Untrusted(format!(
                    "subject {subject:?} is not the pinned signer {:?}",
                    pin.to_string()
                )));
            }
        }
        if let Some(pin) = &self.cert_pin {
            let got = openssl::sha::sha256(&c.cert.to_der()?);
            if &got != pin {
                return Err(DsigError::Untrusted(format!(
                    "the signer's certificate (SHA-256 {}) is not the pinned one ({})",
                    hex(&got),
                    hex(pin)
                )));
            }
        }
        Ok(c)
    }

    /// The trusted certificate a signer's chain ends at (which of the
    /// anchors vouches for it), as the store builds the chain; `None` if
    /// it does not chain. The dossier records it per document so that a
    /// verifier checks the document against its registry's anchor, not
    /// merely against any anchor it trusts.
    pub fn anchor_of(&self, signer: &X509, intermediates: &[X509]) -> Option<X509> {
        let mut chain = Stack::new().ok()?;
        for c in intermediates {
            chain.push(c.clone()).ok()?;
        }
        let mut ctx = X509StoreContext::new().ok()?;
        ctx.init(&self.store, signer, &chain, |c| {
            if !c.verify_cert()? {
                return Ok(None);
            }
            Ok(c.chain()
                .and_then(|s| s.iter().last().map(|x| x.to_owned())))
        })
        .ok()
        .flatten()
    }
}

/// The certificate among `candidates` that issued `cert`: its subject is
/// `cert`'s issuer and its key verifies `cert`'s signature. Whom a
/// revocation check asks about a signer.
pub fn issuer_of(cert: &X509, candidates: &[X509]) -> Option<X509> {
    let want = cert.issuer_name().to_der().ok()?;
    candidates
        .iter()
        .find(|a| {
            a.subject_name().to_der().ok().as_deref() == Some(want.as_slice())
                && a.public_key()
                    .is_ok_and(|k| cert.verify(&k).unwrap_or(false))
        })
        .cloned()
}

/// The signer may sign (its key usage), it and the certificates offered
/// with it are strong enough, and they chain to one of the anchors: the
/// anchor the chain ended at.
fn check_certificate(
    signer: &X509,
    intermediates: Vec<X509>,
    trust: &TrustStore,
) -> Result<Option<X509>, DsigError> {
    if let Some(ku) = signer.key_usage() {
        if !ku.intersects(X509KeyUsage::DIGITAL_SIGNATURE | X509KeyUsage::NON_REPUDIATION) {
            return Err(DsigError::Certificate(
                "key usage allows neither digitalSignature nor nonRepudiation".into(),
            ));
        }
    }
    for c in std::iter::once(signer).chain(&intermediates) {
        if let Some(w) = weak_certificate(c, trust.min_rsa_bits) {
            return Err(DsigError::Untrusted(w));
        }
    }
    let mut chain = Stack::new()?;
    for c in intermediates {
        chain.push(c)?;
    }
    let mut ctx = X509StoreContext::new()?;
    let result = ctx.init(&trust.store, signer, &chain, |c| {
        let ok = c.verify_cert()?;
        let anchor = c
            .chain()
            .and_then(|s| s.iter().last().map(|x| x.to_owned()));
        Ok((ok, c.error(), anchor))
    })?;
    if !result.0 {
        return Err(DsigError::Untrusted(result.1.error_string().to_owned()));
    }
    Ok(result.2)
}
