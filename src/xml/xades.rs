//! XAdES (ETSI EN 319 132-1) detached signatures as ASiC-E (EN 319 162-1)
//! carries them in `META-INF/signatures*.xml`: one `ds:Signature` in an
//! `asic:XAdESSignatures` root, a `ds:Reference` with the SHA-256 of each
//! file by its name in the container, one to the `xades:SignedProperties`
//! (signing time, the signer certificate's digest, each file's media
//! type), and for the baseline B-T level a `xades:SignatureTimeStamp` on
//! the exclusive canonical form of `ds:SignatureValue`.
//!
//! Every part we sign is written here, then read back with our parser and
//! canonicalised: exclusive C14N of a subtree does not depend on where it
//! sits, so what we digest standalone is what a verifier digests in place.
//! Verification accepts this profile only (SHA-256, RSA or ECDSA, exclusive
//! C14N), like the enveloped one of [`super::dsig`].

use base64::Engine;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::Id;
use openssl::sign::Verifier;
use openssl::x509::X509;

use super::c14n::Options;
use super::dom::{Document, NodeId};
use super::dsig::{
    Algorithm, DsigError, SigningKey, DSIG_NS, ECDSA_SHA256, EXC_C14N, RSA_SHA256, SHA256,
};
use super::escape;
use super::reader::Limits;

pub const ASIC_NS: &str = "http://uri.etsi.org/02918/v1.2.1#";
pub const XADES_NS: &str = "http://uri.etsi.org/01903/v1.3.2#";
/// The `Type` of the reference to the signed properties, as ASiC-E's
/// validators (and XAdES 1.3.2 itself) spell it.
pub const SIGNED_PROPERTIES_TYPE: &str = "http://uri.etsi.org/01903#SignedProperties";
const ID: &str = "S0";

/// A file the signature covers.
pub struct DataObject<'a> {
    /// Its name in the container, as the reference's URI.
    pub uri: &'a str,
    pub bytes: &'a [u8],
    pub mime: &'a str,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn c14n_standalone(fragment: &str, limits: &Limits) -> Result<Vec<u8>, DsigError> {
    let doc = Document::parse(fragment.as_bytes(), limits)?;
    Ok(doc.canonicalize_subtree(doc.root(), &Options::exclusive(), Vec::new()))
}

/// A signature made but not yet timestamped (baseline B).
pub struct Signed {
    signed_info: String,
    signature_value: String,
    key_info: String,
    signed_properties: String,
    /// What the signature timestamp's imprint is the SHA-256 of.
    pub timestamp_input: Vec<u8>,
}

/// Signs `objects` with `key` at `signing_time` (RFC 3339, UTC, seconds).
pub fn sign(
    objects: &[DataObject<'_>],
    key: &SigningKey,
    signing_time: &str,
) -> Result<Signed, DsigError> {
    let limits = Limits::default();
    let cert_der = base64::engine::general_purpose::STANDARD
        .decode(key.certificate_b64())
        .map_err(|e| DsigError::Key(e.to_string()))?;
    let mut formats = String::new();
    let mut refs = String::new();
    for (i, o) in objects.iter().enumerate() {
        let uri = escape(o.uri);
        refs.push_str(&format!(
            "<ds:Reference Id=\"r-{i}\" URI=\"{uri}\"><ds:DigestMethod Algorithm=\"{SHA256}\"></ds:DigestMethod>\
<ds:DigestValue>{}</ds:DigestValue></ds:Reference>",
            b64(&openssl::sha::sha256(o.bytes))
        ));
        formats.push_str(&format!(
            "<xades:DataObjectFormat ObjectReference=\"#r-{i}\"><xades:MimeType>{}</xades:MimeType></xades:DataObjectFormat>",
            escape(o.mime)
        ));
    }
    let signed_properties = format!(
        "<xades:SignedProperties xmlns:ds=\"{DSIG_NS}\" xmlns:xades=\"{XADES_NS}\" Id=\"{ID}-SignedProperties\">\
<xades:SignedSignatureProperties><xades:SigningTime>{}</xades:SigningTime>\
<xades:SigningCertificateV2><xades:Cert><xades:CertDigest><ds:DigestMethod Algorithm=\"{SHA256}\"></ds:DigestMethod>\
<ds:DigestValue>{}</ds:DigestValue></xades:CertDigest></xades:Cert></xades:SigningCertificateV2>\
</xades:SignedSignatureProperties><xades:SignedDataObjectProperties>{formats}</xades:SignedDataObjectProperties>\
</xades:SignedProperties>",
        escape(signing_time),
        b64(&openssl::sha::sha256(&cert_der)),
    );
    let sp_digest = openssl::sha::sha256(&c14n_standalone(&signed_properties, &limits)?);
    let signed_info = format!(
        "<ds:SignedInfo xmlns:ds=\"{DSIG_NS}\"><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"></ds:CanonicalizationMethod>\
<ds:SignatureMethod Algorithm=\"{}\"></ds:SignatureMethod>{refs}\
<ds:Reference Type=\"{SIGNED_PROPERTIES_TYPE}\" URI=\"#{ID}-SignedProperties\"><ds:Transforms>\
<ds:Transform Algorithm=\"{EXC_C14N}\"></ds:Transform></ds:Transforms>\
<ds:DigestMethod Algorithm=\"{SHA256}\"></ds:DigestMethod><ds:DigestValue>{}</ds:DigestValue></ds:Reference></ds:SignedInfo>",
        key.algorithm().uri(),
        b64(&sp_digest)
    );
    let si = c14n_standalone(&signed_info, &limits)?;
    let value = b64(&key.sign_bytes(&si)?);
    let signature_value = format!(
        "<ds:SignatureValue xmlns:ds=\"{DSIG_NS}\" Id=\"{ID}-SIG\">{value}</ds:SignatureValue>"
    );
    let timestamp_input = c14n_standalone(&signature_value, &limits)?;
    Ok(Signed {
        signed_info,
        signature_value,
        key_info: format!(
            "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
            key.certificate_b64()
        ),
        signed_properties,
        timestamp_input,
    })
}

impl Signed {
    /// The signature file, with the signature timestamp `token` (a
    /// TimeStampToken, DER) when there is one: B-T, or B without.
    pub fn document(&self, token: Option<&[u8]>) -> Vec<u8> {
        let unsigned = match token {
            Some(t) => format!(
                "<xades:UnsignedProperties><xades:UnsignedSignatureProperties>\
<xades:SignatureTimeStamp Id=\"{ID}-TS\"><ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"></ds:CanonicalizationMethod>\
<xades:EncapsulatedTimeStamp>{}</xades:EncapsulatedTimeStamp></xades:SignatureTimeStamp>\
</xades:UnsignedSignatureProperties></xades:UnsignedProperties>",
                b64(t)
            ),
            None => String::new(),
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<asic:XAdESSignatures xmlns:asic=\"{ASIC_NS}\" \
xmlns:ds=\"{DSIG_NS}\" xmlns:xades=\"{XADES_NS}\"><ds:Signature Id=\"{ID}\">{}{}{}\
<ds:Object><xades:QualifyingProperties Target=\"#{ID}\">{}{unsigned}</xades:QualifyingProperties></ds:Object>\
</ds:Signature></asic:XAdESSignatures>\n",
            self.signed_info, self.signature_value, self.key_info, self.signed_properties
        )
        .into_bytes()
    }
}

/// What a signature file says, once its signature holds over its
/// signed info and signed properties. The references to files are for
/// the caller to check against the container.
#[derive(Debug)]
pub struct Verified {
    /// The signer certificate, then any others `ds:X509Data` carried, DER.
    pub certificates: Vec<Vec<u8>>,
    pub signing_time: String,
    /// Each file reference, in order.
    pub references: Vec<Reference>,
    /// The signature timestamp token (DER), if any.
    pub timestamp: Option<Vec<u8>>,
    /// What that token's imprint must be the SHA-256 of.
    pub timestamp_input: Vec<u8>,
}

/// A file the signature covers, as it says.
#[derive(Debug, Clone)]
pub struct Reference {
    pub uri: String,
    pub sha256: Vec<u8>,
    /// Its media type, from the signed properties.
    pub mime: Option<String>,
}

fn structure(s: impl Into<String>) -> DsigError {
    DsigError::Structure(s.into())
}

fn only(doc: &Document, ns: &str, local: &str) -> Result<NodeId, DsigError> {
    match doc.find_all(ns, local).as_slice() {
        [n] => Ok(*n),
        [] => Err(structure(format!("no {local}"))),
        more => Err(structure(format!(
            "{} {local} elements, not one",
            more.len()
        ))),
    }
}

fn decode(doc: &Document, n: NodeId, what: &str) -> Result<Vec<u8>, DsigError> {
    let clean: String = doc
        .text(n)
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| structure(format!("{what} is not base64: {e}")))
}

/// Checks a signature file: its structure, that the signed properties are
/// the ones signed, that the signer certificate is the one the signed
/// properties name, and the signature value with that certificate's key.
/// Whether the certificate is to be trusted, and the file references, are
/// the caller's to judge.
pub fn verify(input: &[u8]) -> Result<Verified, DsigError> {
    let doc = Document::parse(input, &Limits::default())?;
    if !doc.is(doc.root(), ASIC_NS, "XAdESSignatures") {
        return Err(structure("the root is not asic:XAdESSignatures"));
    }
    let signature = only(&doc, DSIG_NS, "Signature")?;
    let signed_info = only(&doc, DSIG_NS, "SignedInfo")?;
    let sig_value = only(&doc, DSIG_NS, "SignatureValue")?;
    let sp = only(&doc, XADES_NS, "SignedProperties")?;
    for n in [signed_info, sig_value] {
        if doc.parent(n) != Some(signature) {
            return Err(structure(
                "ds:SignedInfo and ds:SignatureValue belong in ds:Signature",
            ));
        }
    }
    let exc = Options::exclusive();
    let kids: Vec<NodeId> = doc.child_elements(signed_info).collect();
    let method = |n: NodeId| doc.attr(n, "Algorithm").unwrap_or_default().to_owned();
    let [c14n, sm, refs @ ..] = kids.as_slice() else {
        return Err(structure("ds:SignedInfo lacks its methods"));
    };
    if !doc.is(*c14n, DSIG_NS, "CanonicalizationMethod") || method(*c14n) != EXC_C14N {
        return Err(structure(
            "only exclusive C14N is accepted for ds:SignedInfo",
        ));
    }
    let alg = match method(*sm).as_str() {
        RSA_SHA256 => Algorithm::RsaSha256,
        ECDSA_SHA256 => Algorithm::EcdsaSha256,
        other => {
            return Err(structure(format!(
                "signature method {other} is not accepted"
            )))
        }
    };
    let sp_id = doc.attr(sp, "Id").unwrap_or_default().to_owned();
    let mut references = Vec::new();
    let mut sp_covered = false;
    for &r in refs {
        if !doc.is(r, DSIG_NS, "Reference") {
            return Err(structure(
                "ds:SignedInfo holds something other than references",
            ));
        }
        let uri = doc
            .attr(r, "URI")
            .ok_or_else(|| structure("a ds:Reference without URI"))?
            .to_owned();
        let parts: Vec<NodeId> = doc.child_elements(r).collect();
        let digest_method = parts
            .iter()
            .find(|&&p| doc.is(p, DSIG_NS, "DigestMethod"))
            .ok_or_else(|| structure(format!("reference {uri} has no ds:DigestMethod")))?;
        if method(*digest_method) != SHA256 {
            return Err(structure(format!(
                "reference {uri}: only SHA-256 is accepted"
            )));
        }
        let value = parts
            .iter()
            .find(|&&p| doc.is(p, DSIG_NS, "DigestValue"))
            .ok_or_else(|| structure(format!("reference {uri} has no ds:DigestValue")))?;
        let digest = decode(&doc, *value, "ds:DigestValue")?;
        let transforms: Vec<String> = parts
            .iter()
            .filter(|&&p| doc.is(p, DSIG_NS, "Transforms"))
            .flat_map(|&t| doc.child_elements(t).collect::<Vec<_>>())
            .map(method)
            .collect();
        if let Some(frag) = uri.strip_prefix('#') {
            if frag != sp_id || doc.attr(r, "Type") != Some(SIGNED_PROPERTIES_TYPE) {
                return Err(structure(format!(
                    "reference {uri} points into the signature at something other than its signed properties"
                )));
            }
            if transforms != [EXC_C14N] {
                return Err(structure(
                    "the signed properties are to be digested with exclusive C14N",
                ));
            }
            let got = openssl::sha::sha256(&doc.canonicalize_subtree(sp, &exc, Vec::new()));
            if got.as_slice() != digest.as_slice() {
                return Err(structure(
                    "the signed properties were changed after signing",
                ));
            }
            sp_covered = true;
        } else {
            if !transforms.is_empty() {
                return Err(structure(format!(
                    "reference {uri}: files are digested as they are, without transforms"
                )));
            }
            references.push(Reference {
                uri,
                sha256: digest,
                mime: doc.attr(r, "Id").map(|id| format!("#{id}")),
            });
        }
    }
    if !sp_covered {
        return Err(structure(
            "the signed properties are not signed (no reference to them)",
        ));
    }
    // The media types the signed properties give, by reference id.
    let formats: std::collections::HashMap<String, String> = doc
        .find_all(XADES_NS, "DataObjectFormat")
        .into_iter()
        .filter(|&f| doc.ancestors(f).contains(&sp))
        .filter_map(|f| {
            let target = doc.attr(f, "ObjectReference")?.to_owned();
            let mime = doc.child(f, XADES_NS, "MimeType").map(|m| doc.text(m))?;
            Some((target, mime))
        })
        .collect();
    for r in &mut references {
        r.mime = r.mime.take().and_then(|id| formats.get(&id).cloned());
    }
    let certificates: Vec<Vec<u8>> = doc
        .find_all(DSIG_NS, "X509Certificate")
        .into_iter()
        .map(|n| decode(&doc, n, "ds:X509Certificate"))
        .collect::<Result<_, _>>()?;
    let signer = certificates
        .first()
        .ok_or_else(|| structure("no signer certificate in ds:KeyInfo"))?;
    let cert_digest = doc
        .find_all(XADES_NS, "CertDigest")
        .into_iter()
        .flat_map(|n| doc.child_elements(n).collect::<Vec<_>>())
        .find(|&n| doc.is(n, DSIG_NS, "DigestValue"))
        .ok_or_else(|| structure("no xades:SigningCertificateV2 digest"))?;
    if decode(&doc, cert_digest, "xades:CertDigest")? != openssl::sha::sha256(signer).as_slice() {
        return Err(structure(
            "the signer certificate is not the one the signed properties name",
        ));
    }
    let cert = X509::from_der(signer).map_err(|e| DsigError::Certificate(e.to_string()))?;
    let key = cert.public_key()?;
    let value = decode(&doc, sig_value, "ds:SignatureValue")?;
    let der_sig = match (alg, key.id()) {
        (Algorithm::RsaSha256, Id::RSA) => value,
        (Algorithm::EcdsaSha256, Id::EC) if value.len() == 64 => EcdsaSig::from_private_components(
            BigNum::from_slice(&value[..32])?,
            BigNum::from_slice(&value[32..])?,
        )?
        .to_der()?,
        (Algorithm::EcdsaSha256, Id::EC) => return Err(DsigError::BadSignature),
        _ => {
            return Err(DsigError::AlgorithmMismatch {
                method: alg.name(),
                key: format!("{:?}", key.id()),
            })
        }
    };
    let si = doc.canonicalize_subtree(signed_info, &exc, Vec::new());
    let mut v = Verifier::new(MessageDigest::sha256(), &key)?;
    v.update(&si)?;
    if !v.verify(&der_sig).unwrap_or(false) {
        return Err(DsigError::BadSignature);
    }
    let signing_time = doc
        .find_all(XADES_NS, "SigningTime")
        .first()
        .map(|&n| doc.text(n))
        .unwrap_or_default();
    let timestamp = match doc.find_all(XADES_NS, "EncapsulatedTimeStamp").as_slice() {
        [] => None,
        [t] => Some(decode(&doc, *t, "xades:EncapsulatedTimeStamp")?),
        _ => return Err(structure("more than one signature timestamp")),
    };
    Ok(Verified {
        certificates,
        signing_time,
        references,
        timestamp,
        timestamp_input: doc.canonicalize_subtree(sig_value, &exc, Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed EC seal, made with openssl alone (`xml` is a leaf).
    fn key() -> SigningKey {
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        use openssl::x509::extension::KeyUsage;
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = openssl::pkey::PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "seal").unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().digital_signature().build().unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = b.build();
        SigningKey::from_pem(
            &key.private_key_to_pem_pkcs8().unwrap(),
            &cert.to_pem().unwrap(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn signs_and_verifies_and_catches_changes() {
        let k = key();
        let objs = [
            DataObject {
                uri: "a.xml",
                bytes: b"<a/>",
                mime: "text/xml",
            },
            DataObject {
                uri: "b & c.json",
                bytes: b"{}",
                mime: "application/json",
            },
        ];
        let s = sign(&objs, &k, "2026-12-01T10:00:00Z").unwrap();
        let doc = s.document(Some(b"token"));
        let v = verify(&doc).unwrap();
        assert_eq!(v.references.len(), 2);
        assert_eq!(v.references[1].uri, "b & c.json");
        assert_eq!(v.references[1].mime.as_deref(), Some("application/json"));
        assert_eq!(
            v.references[0].sha256,
            openssl::sha::sha256(b"<a/>").to_vec()
        );
        assert_eq!(v.timestamp.as_deref(), Some(&b"token"[..]));
        assert_eq!(v.timestamp_input, s.timestamp_input);
        let text = String::from_utf8(doc).unwrap();
        let changed = text.replace("2026-12-01T10:00:00Z", "2026-12-01T10:00:01Z");
        assert!(verify(changed.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("signed properties were changed"));
        let changed = text.replace("application/json", "text/plain");
        assert!(verify(changed.as_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_refused_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            proptest::prop_assert!(verify(&bytes).is_err());
        }
    }
}
