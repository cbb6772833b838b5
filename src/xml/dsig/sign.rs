//! Signing: one streaming pass over the document (its digest, where the
//! signature goes, whether it is signed already), then the `ds:Signature`
//! written into the bytes as they came.

use base64::Engine;

use super::super::c14n::{Canonicalizer, Options};
use super::super::reader::{parse, Element, Limits, Sink};
use super::{Algorithm, DsigError, SigningKey, DSIG_NS, ENVELOPED, EXC_C14N, SHA256, SOAP_NS};

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
/// `signature_parent`), and whether the document is signed already.
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
    let si = signed_info(key.algorithm(), &b64.encode(digest));
    let sig = b64.encode(key.sign_bytes(si.as_bytes())?);
    let signature = format!(
        "<ds:Signature xmlns:ds=\"{DSIG_NS}\">{si}<ds:SignatureValue>{sig}</ds:SignatureValue>\
<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>",
        key.certificate_b64()
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
