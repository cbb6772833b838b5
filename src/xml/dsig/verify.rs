//! Verification: the profile checked step by step, each step one named
//! function, in the order a document meets them; the signer looked up in
//! the trust store; then the signature value over `SignedInfo`, then the
//! digest of the document.

use base64::Engine;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::sign::Verifier;
use openssl::x509::X509;

use super::super::c14n::Options;
use super::super::dom::{Document, NodeId};
use super::super::reader::Limits;
use super::names::name_to_string;
use super::trust::{Checked, TrustStore};
use super::{
    signature_parent, Algorithm, DsigError, DSIG_NS, ECDSA_SHA256, ENVELOPED, EXC_C14N, RSA_SHA256,
    SHA256,
};

/// The result of a successful verification.
pub struct Verified {
    /// The document exactly as hashed (minus nothing: the Signature is in
    /// it, at `signature`, and is the only part that was not signed).
    pub doc: Document,
    pub signature: NodeId,
    pub signer: X509,
    /// The other certificates the signature carried, as they came.
    pub intermediates: Vec<X509>,
    /// The anchor the signer's chain ended at (see
    /// [`TrustStore::anchor_of`](super::TrustStore::anchor_of)).
    pub anchor: Option<X509>,
    /// The signer's issuer among the certificates it came with and the
    /// anchors ([`issuer_of`](super::issuer_of)): whom a
    /// revocation check asks.
    pub issuer: Option<X509>,
    pub algorithm: Algorithm,
}

impl Verified {
    /// Signer certificate subject as `CN=…, O=…`.
    pub fn signer_subject(&self) -> String {
        name_to_string(self.signer.subject_name())
    }
}

/// Verifies an enveloped signature and returns the verified tree. Each
/// step checks one thing the profile says, in this order, so that the
/// first thing wrong with a document is the one its refusal names; the
/// signature value is checked before the digest because `SignedInfo` is
/// small, and a bad signature ends there cheaply.
pub fn verify(input: &[u8], trust: &TrustStore, limits: &Limits) -> Result<Verified, DsigError> {
    let doc = Document::parse(input, limits)?;
    let signature = the_only_signature(&doc)?;
    check_placement(&doc, signature)?;
    let s = Sig { doc: &doc };
    let parts = signature_parts(&s, signature)?;
    let info = check_signed_info(&s, parts.signed_info)?;
    let reference = check_reference(&s, info.reference)?;
    let signature_bytes = b64_decode(&doc.text(parts.value), "ds:SignatureValue")?;
    let ders = offered_certificates(&s, parts.key_info)?;
    let Checked {
        cert: signer,
        key,
        intermediates,
        anchor,
        issuer,
        ..
    } = trust.signer(&ders)?;
    check_key_fits_method(info.algorithm, &key)?;
    check_signature_value(
        &doc,
        parts.signed_info,
        &info.c14n,
        info.algorithm,
        signature_bytes,
        &key,
    )?;
    check_digest(&doc, signature, &reference.c14n, &reference.digest)?;
    Ok(Verified {
        doc,
        signature,
        signer,
        intermediates,
        anchor,
        issuer,
        algorithm: info.algorithm,
    })
}

/// The document's one `ds:Signature`: none is refused, and so are two.
fn the_only_signature(doc: &Document) -> Result<NodeId, DsigError> {
    let sigs = doc.find_all(DSIG_NS, "Signature");
    match sigs.as_slice() {
        [] => Err(DsigError::NoSignature),
        [s] => Ok(*s),
        more => Err(DsigError::SignatureCount(more.len())),
    }
}

/// The signature is exactly where the profile puts it, nowhere else: the
/// last child element of the SOAP Header, or of the root element of a
/// document that is not an envelope.
fn check_placement(doc: &Document, signature: NodeId) -> Result<(), DsigError> {
    if signature == doc.root() {
        return Err(DsigError::Placement(
            "enveloping signatures (ds:Signature as the root element) are not accepted".into(),
        ));
    }
    let expected_parent = signature_parent(doc);
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
    Ok(())
}

/// The children of `ds:Signature`, in the profile's order.
struct SignatureParts {
    signed_info: NodeId,
    value: NodeId,
    key_info: NodeId,
}

/// `ds:Signature` holds `SignedInfo`, `SignatureValue` and `KeyInfo`, in
/// that order, and nothing after them (no `ds:Object`).
fn signature_parts(s: &Sig<'_>, signature: NodeId) -> Result<SignatureParts, DsigError> {
    let kids = s.children(signature, "ds:Signature")?;
    let signed_info = s.require(&kids, 0, "SignedInfo", "Signature")?;
    let value = s.require(&kids, 1, "SignatureValue", "Signature")?;
    let key_info = s.require(&kids, 2, "KeyInfo", "Signature")?;
    if let Some(&extra) = kids.get(3) {
        let q = s
            .doc
            .element(extra)
            .map(|e| e.qname.clone())
            .unwrap_or_default();
        return Err(DsigError::Structure(format!(
            "{q} after ds:KeyInfo is not accepted"
        )));
    }
    Ok(SignatureParts {
        signed_info,
        value,
        key_info,
    })
}

/// What `ds:SignedInfo` says, once it is in the profile.
struct SignedInfo {
    /// How `SignedInfo` itself is canonicalised.
    c14n: Options,
    algorithm: Algorithm,
    reference: NodeId,
}

/// `ds:SignedInfo` names exclusive C14N, a signature method of the
/// profile, and one reference, to the whole document.
fn check_signed_info(s: &Sig<'_>, signed_info: NodeId) -> Result<SignedInfo, DsigError> {
    let si = s.children(signed_info, "ds:SignedInfo")?;
    let c14n_method = s.require(&si, 0, "CanonicalizationMethod", "SignedInfo")?;
    let c14n = s.exc_c14n(c14n_method, "canonicalization method")?;
    let sig_method = s.require(&si, 1, "SignatureMethod", "SignedInfo")?;
    let algorithm = check_signature_method(s, sig_method)?;
    let reference = check_one_reference_to_the_document(s, &si[2..])?;
    Ok(SignedInfo {
        c14n,
        algorithm,
        reference,
    })
}

/// RSA-SHA256 or ECDSA-SHA256; anything else is refused by name.
fn check_signature_method(s: &Sig<'_>, method: NodeId) -> Result<Algorithm, DsigError> {
    match s.algorithm(method)? {
        RSA_SHA256 => Ok(Algorithm::RsaSha256),
        ECDSA_SHA256 => Ok(Algorithm::EcdsaSha256),
        other => Err(refused("signature method", other)),
    }
}

/// After the methods, exactly one `ds:Reference`, and its `URI` is `""`:
/// the whole document, never a part of it chosen by id (where wrapping
/// attacks hide what was signed).
fn check_one_reference_to_the_document(s: &Sig<'_>, refs: &[NodeId]) -> Result<NodeId, DsigError> {
    let doc = s.doc;
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
    Ok(reference)
}

/// What the reference says, once it is in the profile.
struct Reference {
    /// How the document is canonicalised for its digest.
    c14n: Options,
    /// The digest the signer computed.
    digest: Vec<u8>,
}

/// `ds:Reference` holds the profile's transforms, SHA-256 as its digest
/// method, and a digest value in base64, and nothing else.
fn check_reference(s: &Sig<'_>, reference: NodeId) -> Result<Reference, DsigError> {
    let r = s.children(reference, "ds:Reference")?;
    let transforms = s.require(&r, 0, "Transforms", "Reference")?;
    let digest_method = s.require(&r, 1, "DigestMethod", "Reference")?;
    let digest_value = s.require(&r, 2, "DigestValue", "Reference")?;
    if r.len() > 3 {
        return Err(DsigError::Structure(
            "unexpected content in ds:Reference".into(),
        ));
    }
    let c14n = check_transforms(s, transforms)?;
    check_digest_method(s, digest_method)?;
    let digest = b64_decode(&s.doc.text(digest_value), "ds:DigestValue")?;
    Ok(Reference { c14n, digest })
}

/// Exactly two transforms, enveloped-signature then exclusive C14N; a
/// transform outside the profile is refused by name.
fn check_transforms(s: &Sig<'_>, transforms: NodeId) -> Result<Options, DsigError> {
    let doc = s.doc;
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
    s.exc_c14n(t[1], "transform")
}

/// SHA-256, nothing else.
fn check_digest_method(s: &Sig<'_>, method: NodeId) -> Result<(), DsigError> {
    let dm = s.algorithm(method)?;
    if dm != SHA256 {
        return Err(refused("digest method", dm));
    }
    Ok(())
}

/// The certificates `ds:KeyInfo/ds:X509Data` offers, DER: the first is
/// the signer, any others are intermediates offered for path building.
fn offered_certificates(s: &Sig<'_>, key_info: NodeId) -> Result<Vec<Vec<u8>>, DsigError> {
    let doc = s.doc;
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
    Ok(ders)
}

/// The signature method fits the signer's key: RSA-SHA256 an RSA key,
/// ECDSA-SHA256 an EC key.
fn check_key_fits_method(alg: Algorithm, key: &PKey<Public>) -> Result<(), DsigError> {
    let key_fits = matches!(
        (alg, key.id()),
        (Algorithm::RsaSha256, Id::RSA) | (Algorithm::EcdsaSha256, Id::EC)
    );
    if !key_fits {
        return Err(DsigError::AlgorithmMismatch {
            method: alg.name(),
            key: match key.id() {
                Id::RSA => "RSA".into(),
                Id::EC => "EC".into(),
                Id::DSA => "DSA".into(),
                other => format!("type {}", other.as_raw()),
            },
        });
    }
    Ok(())
}

/// The signature value verifies, with the signer's key, over `SignedInfo`
/// canonicalised as it says.
fn check_signature_value(
    doc: &Document,
    signed_info: NodeId,
    c14n: &Options,
    alg: Algorithm,
    signature_bytes: Vec<u8>,
    key: &PKey<Public>,
) -> Result<(), DsigError> {
    let si_bytes = doc.canonicalize_subtree(signed_info, c14n, Vec::new());
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
    let mut v = Verifier::new(MessageDigest::sha256(), key)?;
    v.update(&si_bytes)?;
    if !v.verify(&der_sig).unwrap_or(false) {
        return Err(DsigError::BadSignature);
    }
    Ok(())
}

/// The document, canonicalised without its signature, has the digest
/// the signed reference holds: nothing changed after signing.
fn check_digest(
    doc: &Document,
    signature: NodeId,
    c14n: &Options,
    expected: &[u8],
) -> Result<(), DsigError> {
    let digest = doc
        .canonicalize_without(Some(signature), c14n, openssl::sha::Sha256::new())
        .finish();
    if digest.as_slice() != expected {
        return Err(DsigError::DigestMismatch);
    }
    Ok(())
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

/// The decoded bytes of a document's one `ds:SignatureValue`, wherever
/// it is: what a timestamp on the document's signature is on (its
/// SHA-256). A document with none or several is refused, so that what is
/// stamped is never a choice.
pub fn signature_value(doc: &Document) -> Result<Vec<u8>, String> {
    let values = doc.find_all(DSIG_NS, "SignatureValue");
    let [v] = values.as_slice() else {
        return Err(format!(
            "{} ds:SignatureValue elements, not one",
            values.len()
        ));
    };
    let text: String = doc
        .text(*v)
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("ds:SignatureValue is not base64: {e}"))
}

fn b64_decode(s: &str, what: &str) -> Result<Vec<u8>, DsigError> {
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| DsigError::Structure(format!("{what} is not valid base64: {e}")))
}
