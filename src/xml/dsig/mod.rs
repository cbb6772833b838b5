//! Enveloped XML-DSig (<https://www.w3.org/TR/xmldsig-core1/>) as the wire
//! protocol profiles it: one `ds:Signature`, the last child of
//! `SOAP-ENV:Header` (or of the root element for documents that are not SOAP
//! envelopes), one `Reference URI=""` with the transforms enveloped-signature
//! then exclusive C14N, SHA-256 digest, RSA-SHA256 or ECDSA-SHA256, and the
//! signer's certificate in `KeyInfo/X509Data/X509Certificate`.
//!
//! Verification accepts that profile and nothing else. Everything outside it
//! (SHA-1, HMAC, DSA, XPath, other transforms, several references, an
//! `Object`) is refused by name, because a verifier that accepts variants is
//! where signature-wrapping attacks live. It returns the verified tree so
//! callers read exactly what was hashed.
//!
//! Note: XML-DSig ECDSA signature values are raw `r ‖ s` (RFC 4050), not the
//! DER that openssl produces and expects; we convert both ways.

use base64::Engine;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509KeyUsage, X509Ref, X509StoreContext, X509};

use super::c14n::{Canonicalizer, Options};
use super::dom::{Document, NodeId};
use super::reader::{parse, Element, Limits, Sink, XmlError};

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const EXC_C14N_COMMENTS: &str = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments";
pub const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

/// Signature algorithms of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    EcdsaSha256,
}

impl Algorithm {
    pub fn uri(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => RSA_SHA256,
            Algorithm::EcdsaSha256 => ECDSA_SHA256,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::EcdsaSha256 => "ecdsa-sha256",
        }
    }

    pub fn from_name(s: &str) -> Option<Algorithm> {
        match s {
            "rsa-sha256" => Some(Algorithm::RsaSha256),
            "ecdsa-sha256" => Some(Algorithm::EcdsaSha256),
            _ => None,
        }
    }
}

/// Why signing or verification failed. The texts are what `jumgw xml
/// verify` prints and what a security event records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DsigError {
    #[error("malformed XML: {0}")]
    Xml(#[from] XmlError),
    /// The device that holds the key failed (removed, busy, broken): it
    /// may work again later.
    #[error("the key's device: {0}")]
    Device(String),
    #[error("no ds:Signature found")]
    NoSignature,
    #[error("found {0} ds:Signature elements; exactly one is accepted")]
    SignatureCount(usize),
    #[error("ds:Signature is in the wrong place: {0}")]
    Placement(String),
    #[error("malformed ds:Signature: {0}")]
    Structure(String),
    #[error("{what} {uri} is not accepted ({why})")]
    Refused {
        what: &'static str,
        uri: String,
        why: &'static str,
    },
    #[error("found {0} ds:Reference elements; exactly one is accepted")]
    ReferenceCount(usize),
    #[error("reference URI {0:?} is not accepted; only URI=\"\" (the whole document)")]
    ReferenceUri(String),
    #[error("signer certificate: {0}")]
    Certificate(String),
    #[error("signer certificate is not trusted: {0}")]
    Untrusted(String),
    #[error("signature method {method} does not fit the signer's {key} key")]
    AlgorithmMismatch { method: &'static str, key: String },
    #[error("signature value does not verify")]
    BadSignature,
    #[error("digest of the signed content does not match: the document was changed after signing")]
    DigestMismatch,
    #[error("document already carries a ds:Signature")]
    AlreadySigned,
    #[error("key: {0}")]
    Key(String),
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

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

/// Writes SignedInfo in canonical form (so the bytes we sign are the bytes
/// we embed, and exclusive C14N of the embedded element reproduces them).
fn signed_info(alg: Algorithm, digest_b64: &str) -> String {
    format!(
        "<ds:SignedInfo xmlns:ds=\"{DSIG_NS}\">\
<ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"></ds:CanonicalizationMethod>\
<ds:SignatureMethod Algorithm=\"{}\"></ds:SignatureMethod>\
<ds:Reference URI=\"\"><ds:Transforms>\
<ds:Transform Algorithm=\"{ENVELOPED}\"></ds:Transform>\
<ds:Transform Algorithm=\"{EXC_C14N}\"></ds:Transform>\
</ds:Transforms><ds:DigestMethod Algorithm=\"{SHA256}\"></ds:DigestMethod>\
<ds:DigestValue>{digest_b64}</ds:DigestValue></ds:Reference></ds:SignedInfo>",
        alg.uri()
    )
}

/// Where the signature goes: the SOAP Header if the document is an
/// envelope with one, else the root element.
fn signature_parent(doc: &Document) -> NodeId {
    let root = doc.root();
    if doc.is(root, SOAP_NS, "Envelope") {
        if let Some(h) = doc.child(root, SOAP_NS, "Header") {
            return h;
        }
    }
    root
}

/// An element that may receive the signature: its name and byte spans.
#[derive(Default, Clone)]
struct Slot {
    qname: String,
    start_span: (usize, usize),
    end_span: (usize, usize),
    empty: bool,
}

/// One streaming pass for signing, with no tree: the digest of the
/// exclusive canonical form, where the signature goes (same rule as
/// [`signature_parent`]), and whether the document is signed already.
struct SignScan<'o> {
    c14n: Canonicalizer<'o, openssl::sha::Sha256>,
    depth: usize,
    envelope: bool,
    header_open: bool,
    root: Option<Slot>,
    header: Option<Slot>,
    signed: bool,
}

impl Sink for SignScan<'_> {
    fn start(&mut self, el: &Element<'_>) {
        self.c14n.start(el);
        let slot = || Slot {
            qname: el.qname.to_owned(),
            start_span: el.span,
            end_span: el.span,
            empty: el.empty,
        };
        if el.ns == DSIG_NS && el.local == "Signature" {
            self.signed = true;
        }
        if self.depth == 0 {
            self.root = Some(slot());
            self.envelope = el.ns == SOAP_NS && el.local == "Envelope";
        } else if self.depth == 1
            && self.envelope
            && self.header.is_none()
            && el.ns == SOAP_NS
            && el.local == "Header"
        {
            self.header = Some(slot());
            self.header_open = true;
        }
        self.depth += 1;
    }

    fn end(&mut self, span: (usize, usize)) {
        self.c14n.end(span);
        self.depth -= 1;
        match self.depth {
            0 => {
                if let Some(r) = &mut self.root {
                    r.end_span = span;
                }
            }
            1 if self.header_open => {
                self.header_open = false;
                if let Some(h) = &mut self.header {
                    h.end_span = span;
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, text: &str) {
        self.c14n.text(text);
    }

    fn comment(&mut self, text: &str) {
        self.c14n.comment(text);
    }

    fn pi(&mut self, target: &str, data: &str) {
        self.c14n.pi(target, data);
    }
}

/// Signs a document: returns it byte for byte, with a `ds:Signature`
/// inserted as the last child of the SOAP Header (or of the root).
pub fn sign(input: &[u8], key: &SigningKey, limits: &Limits) -> Result<Vec<u8>, DsigError> {
    let opts = Options::exclusive();
    let mut scan = SignScan {
        c14n: Canonicalizer::new(openssl::sha::Sha256::new(), &opts),
        depth: 0,
        envelope: false,
        header_open: false,
        root: None,
        header: None,
        signed: false,
    };
    parse(input, limits, &mut scan)?;
    if scan.signed {
        return Err(DsigError::AlreadySigned);
    }
    let slot = scan
        .header
        .or(scan.root)
        .ok_or_else(|| DsigError::Structure("no element to hold the signature".into()))?;
    let digest = scan.c14n.finish().finish();

    let b64 = &base64::engine::general_purpose::STANDARD;
    let si = signed_info(key.alg, &b64.encode(digest));
    let sig = b64.encode(key.sign_bytes(si.as_bytes())?);
    let signature = format!(
        "<ds:Signature xmlns:ds=\"{DSIG_NS}\">{si}<ds:SignatureValue>{sig}</ds:SignatureValue>\
<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
        key.cert_b64
    );
    let mut out = Vec::with_capacity(input.len() + signature.len() + 16);
    if slot.empty {
        // `<Header/>` becomes `<Header>…</Header>`.
        let (s, e) = slot.start_span;
        let slash = input[s..e]
            .iter()
            .rposition(|&b| b == b'/')
            .map(|p| s + p)
            .ok_or_else(|| DsigError::Structure("malformed empty element".into()))?;
        out.extend_from_slice(&input[..slash]);
        out.push(b'>');
        out.extend_from_slice(signature.as_bytes());
        out.extend_from_slice(format!("</{}>", slot.qname).as_bytes());
        out.extend_from_slice(&input[e..]);
    } else {
        let at = slot.end_span.0;
        out.extend_from_slice(&input[..at]);
        out.extend_from_slice(signature.as_bytes());
        out.extend_from_slice(&input[at..]);
    }
    Ok(out)
}

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

#[derive(Clone)]
struct Checked {
    cert: X509,
    key: PKey<Public>,
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
    fn signer(&self, ders: &[Vec<u8>]) -> Result<Checked, DsigError> {
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
                check_certificate(&signer, certs, self)?;
                let c = Checked {
                    key: signer.public_key()?,
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
}

/// The result of a successful verification.
pub struct Verified {
    /// The document exactly as hashed (minus nothing: the Signature is in
    /// it, at `signature`, and is the only part that was not signed).
    pub doc: Document,
    pub signature: NodeId,
    pub signer: X509,
    /// The other certificates the signature carried, as they came.
    pub intermediates: Vec<X509>,
    pub algorithm: Algorithm,
}

impl Verified {
    /// Signer certificate subject as `CN=…, O=…`.
    pub fn signer_subject(&self) -> String {
        name_to_string(self.signer.subject_name())
    }
}

/// Bytes as lowercase hex, as records and reports write digests.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The SHA-256 of a certificate's DER, in hex: how records, dossiers and
/// pins name one certificate. `None` only if openssl cannot encode what
/// it parsed.
pub fn cert_sha256(c: &X509Ref) -> Option<String> {
    c.to_der().ok().map(|d| hex(&openssl::sha::sha256(&d)))
}

/// A name as RFC 4514 writes it, most specific first, every special
/// character escaped (a comma inside a value is `\,`, a NUL `\00`), so
/// that a refused subject is never shown as if it were the pin.
pub fn rfc4514(n: &openssl::x509::X509NameRef) -> String {
    let mut parts: Vec<String> = n
        .entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?").to_owned();
            let raw = e.data().as_slice();
            let text = String::from_utf8_lossy(raw);
            let last = text.chars().count().saturating_sub(1);
            let mut v = String::new();
            for (i, ch) in text.chars().enumerate() {
                match ch {
                    ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                        v.push('\\');
                        v.push(ch);
                    }
                    '#' | ' ' if i == 0 => {
                        v.push('\\');
                        v.push(ch);
                    }
                    ' ' if i == last => v.push_str("\\ "),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        v.push_str(&format!("\\{:02X}", c as u32))
                    }
                    c => v.push(c),
                }
            }
            format!("{k}={v}")
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

/// A pinned distinguished name, written as RFC 4514 says (what `openssl
/// x509 -noout -subject -nameopt RFC2253` prints): the most specific RDN
/// first, `CN=cadastre signer,O=Republic Geodetic Authority,C=RS`, types
/// as short names (`CN`, `O`, `OU`, `C`, `L`, `ST`, `serialNumber`, ...)
/// or dotted OIDs, `\,` `\+` `\"` `\\` and `\XX` escapes, `+` between
/// the attributes of one RDN; a space after a separator is allowed. A
/// name matches when it has the same attributes, in the same order, with
/// exactly the same values: `CN=cadastre signer` matches neither
/// `CN=cadastre signer2` nor `CN=cadastre signer,O=Other`.
#[derive(Debug, Clone)]
pub struct NamePin {
    text: String,
    /// The attributes in the certificate's (DER) order: (type, value),
    /// the type as openssl names its OID (one name per OID).
    avas: Vec<(String, String)>,
    /// How many of them each RDN holds, in the same order: `CN=a+O=b` is
    /// one RDN of two, not two RDNs of one.
    groups: Vec<usize>,
}

impl std::fmt::Display for NamePin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for NamePin {
    type Err = String;
    fn from_str(s: &str) -> Result<NamePin, String> {
        NamePin::parse(s)
    }
}

impl NamePin {
    /// Reads a pin; what is wrong with it, precisely, if it does not read.
    pub fn parse(text: &str) -> Result<NamePin, String> {
        if text.trim().is_empty() {
            return Err("an empty name".into());
        }
        let mut rdns = Vec::new();
        for rdn in split_unescaped(text, ',')? {
            let mut avas = Vec::new();
            for ava in split_unescaped(&rdn, '+')? {
                let ava = ava.trim_start();
                let (ty, value) = ava
                    .split_once('=')
                    .ok_or_else(|| format!("{ava:?} is not TYPE=value"))?;
                let ty = ty.trim();
                if ty.is_empty() {
                    return Err(format!("{ava:?} has no attribute type"));
                }
                let obj = openssl::asn1::Asn1Object::from_str(ty)
                    .map_err(|_| format!("unknown attribute type {ty:?}"))?;
                if value.starts_with('#') {
                    return Err(format!(
                        "{ava:?}: a value written as #hex (BER) is not accepted; write it as text"
                    ));
                }
                let value = unescape(trim_unescaped_end(value))?;
                if value.is_empty() {
                    return Err(format!("{ava:?} has an empty value"));
                }
                avas.push((obj.to_string(), value));
            }
            rdns.push(avas);
        }
        // RFC 4514 writes the last RDN of the sequence first.
        rdns.reverse();
        Ok(NamePin {
            text: text.to_owned(),
            groups: rdns.iter().map(Vec::len).collect(),
            avas: rdns.into_iter().flatten().collect(),
        })
    }

    /// Is `name` exactly this one?
    #[allow(deprecated)] // as_utf8: a name with interior NULs does not match
    pub fn matches(&self, name: &openssl::x509::X509NameRef) -> bool {
        use der::Decode;
        let groups = name
            .to_der()
            .ok()
            .and_then(|d| x509_cert::name::Name::from_der(&d).ok())
            .map(|n| n.0.iter().map(|rdn| rdn.0.len()).collect::<Vec<_>>());
        if groups.as_ref() != Some(&self.groups) {
            return false;
        }
        let mut entries = name.entries();
        for (oid, value) in &self.avas {
            let Some(e) = entries.next() else {
                return false;
            };
            if e.object().to_string() != *oid {
                return false;
            }
            // openssl hands the value over as a C string: a NUL inside
            // would end it early, and `CN=signer\0evil` read as `signer`.
            if e.data().as_slice().contains(&0) {
                return false;
            }
            match e.data().as_utf8() {
                Ok(v) if v.to_string() == *value => {}
                _ => return false,
            }
        }
        entries.next().is_none()
    }
}

/// A certificate pin: 64 hex digits of the SHA-256 of its DER, upper or
/// lower case, with or without colons between the bytes (as `openssl x509
/// -noout -fingerprint -sha256` prints it).
pub fn parse_sha256_pin(text: &str) -> Result<[u8; 32], String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{text:?} is not a SHA-256 (64 hex digits, colons allowed)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
            .map_err(|e| format!("{text:?}: {e}"))?;
    }
    Ok(out)
}

/// `s` cut at each `sep` not escaped by a backslash (escapes kept).
fn split_unescaped(s: &str, sep: char) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let n = chars
                    .next()
                    .ok_or_else(|| format!("{s:?} ends with a lone backslash"))?;
                let last = out.last_mut().expect("never empty");
                last.push('\\');
                last.push(n);
            }
            c if c == sep => out.push(String::new()),
            c => out.last_mut().expect("never empty").push(c),
        }
    }
    if out.iter().any(|p| p.trim().is_empty()) {
        return Err(format!(
            "{s:?} has an empty part between {sep:?} separators"
        ));
    }
    Ok(out)
}

/// `s` without its trailing spaces, unless the last is escaped.
fn trim_unescaped_end(s: &str) -> &str {
    let t = s.trim_end();
    if t.ends_with('\\') && t.len() < s.len() {
        &s[..t.len() + 1]
    } else {
        t
    }
}

/// RFC 4514 escapes undone: `\c` for a special character, `\XX` for a
/// byte of UTF-8.
fn unescape(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            bytes.push(b[i]);
            i += 1;
            continue;
        }
        let rest = &b[i + 1..];
        match rest {
            [h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = [*h, *l];
                let hex = std::str::from_utf8(&hex).map_err(|e| e.to_string())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
                i += 3;
            }
            [c, ..] if b" \"#+,;<=>\\".contains(c) => {
                bytes.push(*c);
                i += 2;
            }
            _ => {
                return Err(format!(
                    "{s:?} has a backslash before nothing it may escape"
                ))
            }
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{s:?}: its \\XX escapes are not UTF-8"))
}

#[allow(deprecated)] // as_utf8: names with interior NULs are not ours to show
pub fn name_to_string(n: &openssl::x509::X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let k = e.object().nid().short_name().unwrap_or("?");
            let v = e
                .data()
                .as_utf8()
                .map(|s| s.to_string())
                .unwrap_or_default();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn refused(what: &'static str, uri: &str) -> DsigError {
    // Most specific first: hmac-sha1 is refused for being HMAC.
    let why = if uri.contains("hmac") {
        "HMAC"
    } else if uri.contains("dsa-") && !uri.contains("ecdsa") {
        "DSA"
    } else if uri.contains("sha1") {
        "SHA-1"
    } else if uri.contains("xpath") || uri.contains("xmldsig-filter2") {
        "XPath"
    } else if uri.contains("md5") {
        "MD5"
    } else if uri.contains("c14n") {
        "only exclusive C14N 1.0 without comments"
    } else {
        "not in the protocol profile"
    };
    DsigError::Refused {
        what,
        uri: uri.to_owned(),
        why,
    }
}

/// Elements of the signature: each must be exactly where the profile puts
/// it, with no stray text.
struct Sig<'d> {
    doc: &'d Document,
}

impl Sig<'_> {
    fn children(&self, id: NodeId, what: &str) -> Result<Vec<NodeId>, DsigError> {
        if self.doc.has_text_content(id) {
            return Err(DsigError::Structure(format!("unexpected text in {what}")));
        }
        let kids: Vec<NodeId> = self.doc.child_elements(id).collect();
        for &k in &kids {
            if self.doc.element(k).is_some_and(|e| {
                e.ns != DSIG_NS && !(e.ns == EXC_C14N && e.local == "InclusiveNamespaces")
            }) {
                let q = self
                    .doc
                    .element(k)
                    .map(|e| e.qname.clone())
                    .unwrap_or_default();
                return Err(DsigError::Structure(format!(
                    "unexpected element {q} in {what}"
                )));
            }
        }
        Ok(kids)
    }

    fn require(
        &self,
        kids: &[NodeId],
        i: usize,
        local: &str,
        parent: &str,
    ) -> Result<NodeId, DsigError> {
        match kids.get(i) {
            Some(&k) if self.doc.is(k, DSIG_NS, local) => Ok(k),
            Some(&k) => Err(DsigError::Structure(format!(
                "expected ds:{local} in ds:{parent}, found {}",
                self.doc.element(k).map(|e| e.qname.as_str()).unwrap_or("?")
            ))),
            None => Err(DsigError::Structure(format!(
                "ds:{parent} lacks ds:{local}"
            ))),
        }
    }

    fn algorithm(&self, id: NodeId) -> Result<&str, DsigError> {
        self.doc.attr(id, "Algorithm").ok_or_else(|| {
            DsigError::Structure(format!(
                "{} has no Algorithm",
                self.doc
                    .element(id)
                    .map(|e| e.qname.as_str())
                    .unwrap_or("?")
            ))
        })
    }

    /// An exc-C14N method element, possibly with an InclusiveNamespaces child.
    fn exc_c14n(&self, id: NodeId, what: &'static str) -> Result<Options, DsigError> {
        let alg = self.algorithm(id)?;
        if alg != EXC_C14N {
            return Err(refused(what, alg));
        }
        let mut opts = Options::exclusive();
        let kids: Vec<NodeId> = self.doc.child_elements(id).collect();
        match kids.as_slice() {
            [] => {}
            [k] if self.doc.is(*k, EXC_C14N, "InclusiveNamespaces") => {
                let list = self.doc.attr(*k, "PrefixList").unwrap_or_default();
                opts = opts.with_prefix_list(list);
            }
            _ => {
                return Err(DsigError::Structure(format!(
                    "unexpected content in {what}"
                )))
            }
        }
        Ok(opts)
    }
}

fn b64_decode(s: &str, what: &str) -> Result<Vec<u8>, DsigError> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| DsigError::Structure(format!("{what} is not valid base64: {e}")))
}

/// Verifies an enveloped signature and returns the verified tree.
pub fn verify(input: &[u8], trust: &TrustStore, limits: &Limits) -> Result<Verified, DsigError> {
    let doc = Document::parse(input, limits)?;
    let sigs = doc.find_all(DSIG_NS, "Signature");
    let signature = match sigs.as_slice() {
        [] => return Err(DsigError::NoSignature),
        [s] => *s,
        more => return Err(DsigError::SignatureCount(more.len())),
    };

    // Placement: exactly where the profile says, nowhere else.
    if signature == doc.root() {
        return Err(DsigError::Placement(
            "enveloping signatures (ds:Signature as the root element) are not accepted".into(),
        ));
    }
    let expected_parent = signature_parent(&doc);
    let parent = doc.parent(signature);
    if parent != Some(expected_parent) {
        let want = if expected_parent == doc.root() {
            "a child of the root element"
        } else {
            "the last child of SOAP-ENV:Header"
        };
        return Err(DsigError::Placement(format!("it must be {want}")));
    }
    if doc.child_elements(expected_parent).last() != Some(signature) {
        return Err(DsigError::Placement(
            "it must be the last child element of its parent".into(),
        ));
    }

    let s = Sig { doc: &doc };
    let kids = s.children(signature, "ds:Signature")?;
    let signed_info = s.require(&kids, 0, "SignedInfo", "Signature")?;
    let sig_value = s.require(&kids, 1, "SignatureValue", "Signature")?;
    let key_info = s.require(&kids, 2, "KeyInfo", "Signature")?;
    if let Some(&extra) = kids.get(3) {
        let q = doc
            .element(extra)
            .map(|e| e.qname.clone())
            .unwrap_or_default();
        return Err(DsigError::Structure(format!(
            "{q} after ds:KeyInfo is not accepted"
        )));
    }

    let si = s.children(signed_info, "ds:SignedInfo")?;
    let c14n_method = s.require(&si, 0, "CanonicalizationMethod", "SignedInfo")?;
    let si_opts = s.exc_c14n(c14n_method, "canonicalization method")?;
    let sig_method = s.require(&si, 1, "SignatureMethod", "SignedInfo")?;
    let alg = match s.algorithm(sig_method)? {
        RSA_SHA256 => Algorithm::RsaSha256,
        ECDSA_SHA256 => Algorithm::EcdsaSha256,
        other => return Err(refused("signature method", other)),
    };
    let refs: Vec<NodeId> = si[2..].to_vec();
    if refs.len() != 1 || !doc.is(refs[0], DSIG_NS, "Reference") {
        return Err(DsigError::ReferenceCount(
            refs.iter()
                .filter(|&&r| doc.is(r, DSIG_NS, "Reference"))
                .count(),
        ));
    }
    let reference = refs[0];
    match doc.attr(reference, "URI") {
        Some("") => {}
        Some(u) => return Err(DsigError::ReferenceUri(u.to_owned())),
        None => return Err(DsigError::ReferenceUri("(absent)".into())),
    }
    let r = s.children(reference, "ds:Reference")?;
    let transforms = s.require(&r, 0, "Transforms", "Reference")?;
    let digest_method = s.require(&r, 1, "DigestMethod", "Reference")?;
    let digest_value = s.require(&r, 2, "DigestValue", "Reference")?;
    if r.len() > 3 {
        return Err(DsigError::Structure(
            "unexpected content in ds:Reference".into(),
        ));
    }
    let t = s.children(transforms, "ds:Transforms")?;
    for &x in &t {
        if !doc.is(x, DSIG_NS, "Transform") {
            return Err(DsigError::Structure(
                "ds:Transforms may contain only ds:Transform".into(),
            ));
        }
    }
    if t.len() != 2 {
        for &x in &t {
            let a = s.algorithm(x)?;
            if a != ENVELOPED && a != EXC_C14N {
                return Err(refused("transform", a));
            }
        }
        return Err(DsigError::Structure(format!(
            "expected exactly two transforms (enveloped-signature, exclusive C14N), found {}",
            t.len()
        )));
    }
    let first = s.algorithm(t[0])?;
    if first != ENVELOPED {
        return Err(if first == EXC_C14N {
            DsigError::Structure("the enveloped-signature transform must come first".into())
        } else {
            refused("transform", first)
        });
    }
    if doc.child_elements(t[0]).next().is_some() {
        return Err(DsigError::Structure(
            "unexpected content in the enveloped-signature transform".into(),
        ));
    }
    let ref_opts = s.exc_c14n(t[1], "transform")?;
    let dm = s.algorithm(digest_method)?;
    if dm != SHA256 {
        return Err(refused("digest method", dm));
    }
    let expected_digest = b64_decode(&doc.text(digest_value), "ds:DigestValue")?;
    let signature_bytes = b64_decode(&doc.text(sig_value), "ds:SignatureValue")?;

    // The signer certificate: first X509Certificate is the signer, any
    // others are intermediates offered for path building.
    let ki = s.children(key_info, "ds:KeyInfo")?;
    let x509data = ki
        .iter()
        .copied()
        .find(|&k| doc.is(k, DSIG_NS, "X509Data"))
        .ok_or_else(|| DsigError::Structure("ds:KeyInfo has no ds:X509Data".into()))?;
    let mut ders = Vec::new();
    for c in doc.child_elements(x509data) {
        if doc.is(c, DSIG_NS, "X509Certificate") {
            ders.push(b64_decode(&doc.text(c), "ds:X509Certificate")?);
        }
    }
    if ders.is_empty() {
        return Err(DsigError::Structure(
            "ds:X509Data has no ds:X509Certificate".into(),
        ));
    }
    let Checked {
        cert: signer,
        key: pkey,
        ..
    } = trust.signer(&ders)?;

    let key_fits = matches!(
        (alg, pkey.id()),
        (Algorithm::RsaSha256, Id::RSA) | (Algorithm::EcdsaSha256, Id::EC)
    );
    if !key_fits {
        return Err(DsigError::AlgorithmMismatch {
            method: alg.name(),
            key: match pkey.id() {
                Id::RSA => "RSA".into(),
                Id::EC => "EC".into(),
                Id::DSA => "DSA".into(),
                other => format!("type {}", other.as_raw()),
            },
        });
    }

    // SignedInfo first: it is small, and a bad signature ends here cheaply.
    let si_bytes = doc.canonicalize_subtree(signed_info, &si_opts, Vec::new());
    let der_sig = match alg {
        Algorithm::RsaSha256 => signature_bytes,
        Algorithm::EcdsaSha256 => {
            if signature_bytes.len() != 64 {
                return Err(DsigError::BadSignature);
            }
            let r = BigNum::from_slice(&signature_bytes[..32])?;
            let sv = BigNum::from_slice(&signature_bytes[32..])?;
            EcdsaSig::from_private_components(r, sv)?.to_der()?
        }
    };
    let mut v = Verifier::new(MessageDigest::sha256(), &pkey)?;
    v.update(&si_bytes)?;
    if !v.verify(&der_sig).unwrap_or(false) {
        return Err(DsigError::BadSignature);
    }

    let digest = doc
        .canonicalize_without(Some(signature), &ref_opts, openssl::sha::Sha256::new())
        .finish();
    if digest.as_slice() != expected_digest.as_slice() {
        return Err(DsigError::DigestMismatch);
    }
    // The chain the signature offered (already checked to the anchors
    // with the signer): the issuer a revocation check asks about may be
    // among them rather than among the anchors.
    let intermediates = ders[1..]
        .iter()
        .filter_map(|d| X509::from_der(d).ok())
        .collect();
    Ok(Verified {
        doc,
        signature,
        signer,
        intermediates,
        algorithm: alg,
    })
}

fn check_certificate(
    signer: &X509,
    intermediates: Vec<X509>,
    trust: &TrustStore,
) -> Result<(), DsigError> {
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
        Ok((ok, c.error()))
    })?;
    if !result.0 {
        return Err(DsigError::Untrusted(result.1.error_string().to_owned()));
    }
    Ok(())
}

impl TrustStore {
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

#[cfg(test)]
mod tests {
    use super::{parse_sha256_pin, NamePin};

    fn name(entries: &[(&str, &str)]) -> openssl::x509::X509Name {
        let mut b = openssl::x509::X509NameBuilder::new().unwrap();
        for (k, v) in entries {
            b.append_entry_by_text(k, v).unwrap();
        }
        b.build()
    }

    #[test]
    fn a_subject_pin_is_the_whole_name_exactly() {
        let signer = name(&[
            ("C", "RS"),
            ("O", "RGZ, Beograd"),
            ("CN", "cadastre signer"),
        ]);
        for ok in [
            "CN=cadastre signer,O=RGZ\\, Beograd,C=RS",
            "CN=cadastre signer, O=RGZ\\2C Beograd, C=RS",
            "commonName=cadastre signer,2.5.4.10=RGZ\\, Beograd,C=RS",
        ] {
            assert!(NamePin::parse(ok).unwrap().matches(&signer), "{ok}");
        }
        for no in [
            "CN=cadastre signer",
            "CN=cadastre signer2,O=RGZ\\, Beograd,C=RS",
            "CN=cadastre signe,O=RGZ\\, Beograd,C=RS",
            "C=RS,O=RGZ\\, Beograd,CN=cadastre signer",
            "CN=cadastre signer,O=RGZ\\, Beograd,C=RS,DC=x",
            "CN=Cadastre signer,O=RGZ\\, Beograd,C=RS",
        ] {
            assert!(!NamePin::parse(no).unwrap().matches(&signer), "{no}");
        }
        // A NUL inside a value (which openssl's C strings would end at):
        // `CN=cadastre signer\0evil` is not `CN=cadastre signer`.
        let utf8 = |v: &[u8]| {
            let mut atv = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, v.len() as u8];
            atv.extend_from_slice(v);
            let mut seq = vec![0x30, atv.len() as u8];
            seq.extend(atv);
            let mut set = vec![0x31, seq.len() as u8];
            set.extend(seq);
            let mut name = vec![0x30, set.len() as u8];
            name.extend(set);
            openssl::x509::X509Name::from_der(&name).unwrap()
        };
        assert!(NamePin::parse("CN=cadastre signer")
            .unwrap()
            .matches(&utf8(b"cadastre signer")));
        for evil in [&b"cadastre signer\0evil"[..], b"cadastre signer\0"] {
            assert!(!NamePin::parse("CN=cadastre signer")
                .unwrap()
                .matches(&utf8(evil)));
        }
        // A refused subject is shown escaped, never as if it were a pin.
        let lookalike = name(&[("CN", "civil signer,O=jum-gateway development")]);
        assert_eq!(
            super::rfc4514(&lookalike),
            "CN=civil signer\\,O\\=jum-gateway development"
        );
        assert_eq!(super::rfc4514(&utf8(b"a\0b ")), "CN=a\\00b\\ ");
        assert_eq!(
            super::rfc4514(&signer),
            "CN=cadastre signer,O=RGZ\\, Beograd,C=RS"
        );
        // RDN boundaries count: one RDN of two attributes is not two RDNs.
        let multi = {
            let ava = |oid: u8, v: &[u8]| {
                let mut a = vec![0x06, 0x03, 0x55, 0x04, oid, 0x0c, v.len() as u8];
                a.extend_from_slice(v);
                let mut seq = vec![0x30, a.len() as u8];
                seq.extend(a);
                seq
            };
            let both = [ava(3, b"x"), ava(10, b"y")].concat();
            let mut set = vec![0x31, both.len() as u8];
            set.extend(both);
            let mut name = vec![0x30, set.len() as u8];
            name.extend(set);
            openssl::x509::X509Name::from_der(&name).unwrap()
        };
        assert!(NamePin::parse("CN=x+O=y").unwrap().matches(&multi));
        for no in ["O=y,CN=x", "CN=x,O=y"] {
            assert!(!NamePin::parse(no).unwrap().matches(&multi), "{no}");
        }
        assert!(!NamePin::parse("CN=x+O=y")
            .unwrap()
            .matches(&name(&[("O", "y"), ("CN", "x")])));
        let short = name(&[("CN", "cadastre signer2")]);
        assert!(!NamePin::parse("CN=cadastre signer")
            .unwrap()
            .matches(&short));
        for (bad, says) in [
            ("", "empty name"),
            ("cadastre signer", "is not TYPE=value"),
            ("CN=a,,O=b", "empty part"),
            ("XX=a", "unknown attribute type"),
            ("CN=", "empty value"),
            ("CN=#0403616263", "#hex"),
            ("CN=a\\", "lone backslash"),
            ("CN=a\\q", "backslash before nothing"),
        ] {
            let e = NamePin::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        /// Whatever a configuration says, a pin is read or refused with a
        /// message, never a panic; one that reads matches a name built
        /// from its own text only if it reads back the same.
        #[test]
        fn any_text_is_a_pin_or_refused(text in "[ -~]{0,60}") {
            match NamePin::parse(&text) {
                Ok(p) => proptest::prop_assert_eq!(p.to_string(), text.clone()),
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
            let _ = parse_sha256_pin(&text);
        }

        /// Any name, its values escaped as RFC 4514 says, is pinned by
        /// that text, and by no other value.
        #[test]
        fn a_name_is_pinned_by_its_escaped_text(cn in "[ -~]{1,20}", o in "[ -~]{1,20}") {
            let esc = |v: &str| {
                let mut out = String::new();
                for (i, c) in v.chars().enumerate() {
                    let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.len() && c == ' ');
                    if edge || ",+\"\\<>;=".contains(c) {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out
            };
            let n = name(&[("O", &o), ("CN", &cn)]);
            let text = format!("CN={},O={}", esc(&cn), esc(&o));
            let pin = NamePin::parse(&text);
            proptest::prop_assert!(pin.as_ref().is_ok_and(|p| p.matches(&n)), "{text:?}: {pin:?}");
            let other = name(&[("O", &o), ("CN", &format!("{cn}x"))]);
            proptest::prop_assert!(!pin.unwrap().matches(&other));
        }
    }

    #[test]
    fn a_certificate_pin_is_64_hex_digits_colons_allowed() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_sha256_pin(&hex).unwrap(), [0xab; 32]);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_sha256_pin(&colons).unwrap(), [0xab; 32]);
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            let e = parse_sha256_pin(bad).unwrap_err();
            assert!(e.contains("64 hex digits"), "{bad}: {e}");
        }
    }
}
