//! What the verifier must refuse, each with its own message.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use jum_gateway::xml::{self, dsig::DsigError, Limits};
use proptest::prelude::*;

fn signed(pki: &Pki) -> String {
    String::from_utf8(
        xml::sign(
            envelope().as_bytes(),
            &pki.key(&pki.rsa),
            &Limits::default(),
        )
        .unwrap(),
    )
    .unwrap()
}

fn verify_err(pki: &Pki, doc: &str) -> String {
    match xml::verify(doc.as_bytes(), &pki.trust(), &Limits::default()) {
        Ok(_) => panic!("accepted:\n{doc}"),
        Err(e) => e.to_string(),
    }
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
    let i = s.find(a).unwrap() + a.len();
    let j = i + s[i..].find(b).unwrap();
    &s[i..j]
}

#[test]
fn the_untouched_document_verifies_and_exposes_the_signed_tree() {
    let pki = Pki::new();
    let doc = signed(&pki);
    let v = xml::verify(doc.as_bytes(), &pki.trust(), &Limits::default()).unwrap();
    let body_text = v.doc.text(v.doc.root());
    assert!(body_text.contains("0512981717776"));
    assert!(v.signer_subject().contains("CN=registry signer rsa"));
}

#[test]
fn changed_content_is_a_digest_mismatch() {
    let pki = Pki::new();
    let doc = signed(&pki).replace("0512981717776", "0512981717777");
    assert_eq!(
        verify_err(&pki, &doc),
        "digest of the signed content does not match: the document was changed after signing"
    );
}

#[test]
fn changed_signed_info_or_value_is_a_bad_signature() {
    let pki = Pki::new();
    let doc = signed(&pki);
    let digest = between(&doc, "<ds:DigestValue>", "</ds:DigestValue>");
    let mut d = digest.to_owned();
    d.replace_range(0..1, if d.starts_with('A') { "B" } else { "A" });
    assert_eq!(
        verify_err(&pki, &doc.replacen(digest, &d, 1)),
        "signature value does not verify"
    );
    let sv = between(&doc, "<ds:SignatureValue>", "</ds:SignatureValue>");
    let mut s = sv.to_owned();
    s.replace_range(5..6, if &s[5..6] == "A" { "B" } else { "A" });
    assert_eq!(
        verify_err(&pki, &doc.replacen(sv, &s, 1)),
        "signature value does not verify"
    );
}

#[test]
fn a_moved_signature_is_refused() {
    let pki = Pki::new();
    let doc = signed(&pki);
    let sig = format!(
        "<ds:Signature{}</ds:Signature>",
        between(&doc, "<ds:Signature", "</ds:Signature>")
    );
    let moved = doc
        .replace(&sig, "")
        .replace("</SOAP-ENV:Body>", &format!("{sig}</SOAP-ENV:Body>"));
    assert_eq!(
        verify_err(&pki, &moved),
        "ds:Signature is in the wrong place: it must be the last child of SOAP-ENV:Header"
    );
    let not_last = doc
        .replace(&sig, "")
        .replace("<xrd:userId>", &format!("{sig}<xrd:userId>"));
    assert_eq!(
        verify_err(&pki, &not_last),
        "ds:Signature is in the wrong place: it must be the last child element of its parent"
    );
}

#[test]
fn a_duplicated_signature_is_refused() {
    let pki = Pki::new();
    let doc = signed(&pki);
    let sig = format!(
        "<ds:Signature{}</ds:Signature>",
        between(&doc, "<ds:Signature", "</ds:Signature>")
    );
    let dup = doc.replace("</SOAP-ENV:Body>", &format!("{sig}</SOAP-ENV:Body>"));
    assert_eq!(
        verify_err(&pki, &dup),
        "found 2 ds:Signature elements; exactly one is accepted"
    );
}

#[test]
fn a_second_reference_is_refused() {
    let pki = Pki::new();
    let doc = signed(&pki);
    let r = format!(
        "<ds:Reference{}</ds:Reference>",
        between(&doc, "<ds:Reference", "</ds:Reference>")
    );
    let two = doc.replacen(&r, &format!("{r}{r}"), 1);
    assert_eq!(
        verify_err(&pki, &two),
        "found 2 ds:Reference elements; exactly one is accepted"
    );
    let other_uri = doc.replacen("<ds:Reference URI=\"\">", "<ds:Reference URI=\"#body\">", 1);
    assert_eq!(
        verify_err(&pki, &other_uri),
        "reference URI \"#body\" is not accepted; only URI=\"\" (the whole document)"
    );
}

#[test]
fn swapped_or_weak_algorithms_are_refused_by_name() {
    let pki = Pki::new();
    let doc = signed(&pki);
    let swapped = doc.replace(xml::dsig::RSA_SHA256, xml::dsig::ECDSA_SHA256);
    assert_eq!(
        verify_err(&pki, &swapped),
        "signature method ecdsa-sha256 does not fit the signer's RSA key"
    );
    let sha1 = doc.replace(
        xml::dsig::RSA_SHA256,
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    );
    assert_eq!(
        verify_err(&pki, &sha1),
        "signature method http://www.w3.org/2000/09/xmldsig#rsa-sha1 is not accepted (SHA-1)"
    );
    let hmac = doc.replace(
        xml::dsig::RSA_SHA256,
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
    );
    assert!(verify_err(&pki, &hmac).ends_with("is not accepted (HMAC)"));
    let digest = doc.replace(xml::dsig::SHA256, "http://www.w3.org/2000/09/xmldsig#sha1");
    assert_eq!(
        verify_err(&pki, &digest),
        "digest method http://www.w3.org/2000/09/xmldsig#sha1 is not accepted (SHA-1)"
    );
    let xpath = doc.replacen(
        &format!("<ds:Transform Algorithm=\"{}\"></ds:Transform>", xml::dsig::EXC_C14N),
        "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xpath-19991116\"><ds:XPath>1</ds:XPath></ds:Transform>",
        2,
    );
    assert!(
        verify_err(&pki, &xpath).contains("REC-xpath-19991116 is not accepted (XPath)"),
        "{}",
        verify_err(&pki, &xpath)
    );
    let inclusive = doc.replacen(
        xml::dsig::EXC_C14N,
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        1,
    );
    assert!(verify_err(&pki, &inclusive)
        .contains("is not accepted (only exclusive C14N 1.0 without comments)"));
}

#[test]
fn wrong_certificates_are_refused() {
    let pki = Pki::new();
    let env = envelope();
    let sign_with = |i| {
        String::from_utf8(xml::sign(env.as_bytes(), &pki.key(i), &Limits::default()).unwrap())
            .unwrap()
    };
    assert_eq!(
        verify_err(&pki, &sign_with(&pki.foreign)),
        "signer certificate is not trusted: unable to get local issuer certificate"
    );
    assert_eq!(
        verify_err(&pki, &sign_with(&pki.expired)),
        "signer certificate is not trusted: certificate has expired"
    );
    assert_eq!(
        verify_err(&pki, &sign_with(&pki.encryption_only)),
        "signer certificate: key usage allows neither digitalSignature nor nonRepudiation"
    );
    // A valid signature whose embedded certificate was swapped for another
    // trusted one: the key no longer fits.
    let doc = sign_with(&pki.rsa);
    let theirs = between(&doc, "<ds:X509Certificate>", "</ds:X509Certificate>");
    let other = sign_with(&pki.ec);
    let ec_cert = between(&other, "<ds:X509Certificate>", "</ds:X509Certificate>");
    assert_eq!(
        verify_err(&pki, &doc.replace(theirs, ec_cert)),
        "signature method rsa-sha256 does not fit the signer's EC key"
    );
    let mut pinned = pki.trust();
    pinned.subject_pin = Some("CN=cadastre".parse().unwrap());
    let e = xml::verify(doc.as_bytes(), &pinned, &Limits::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("is not the pinned signer"), "{e}");
    // A pin is the whole name, exactly: a prefix of the signer's CN, or
    // its CN alone, is another name; the whole name holds.
    for (pin, holds) in [
        ("CN=registry signer rsa,O=jum-gateway development", true),
        ("CN=registry signer,O=jum-gateway development", false),
        ("CN=registry signer rs,O=jum-gateway development", false),
        ("CN=registry signer rsa", false),
    ] {
        pinned.subject_pin = Some(pin.parse().unwrap());
        let got = xml::verify(doc.as_bytes(), &pinned, &Limits::default());
        assert_eq!(got.is_ok(), holds, "{pin}: {:?}", got.err());
    }
    // The certificate itself: its SHA-256 holds, any other is refused.
    pinned.subject_pin = None;
    let der = pki.rsa.cert.to_der().unwrap();
    pinned.cert_pin = Some(openssl::sha::sha256(&der));
    assert!(xml::verify(doc.as_bytes(), &pinned, &Limits::default()).is_ok());
    pinned.cert_pin = Some(openssl::sha::sha256(&pki.ec.cert.to_der().unwrap()));
    let e = xml::verify(doc.as_bytes(), &pinned, &Limits::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("is not the pinned one"), "{e}");
}

#[test]
fn a_signature_cannot_hide_extra_content() {
    let pki = Pki::new();
    let doc = signed(&pki);
    let obj = doc.replace("</ds:KeyInfo>", "</ds:KeyInfo><ds:Object>x</ds:Object>");
    assert_eq!(
        verify_err(&pki, &obj),
        "malformed ds:Signature: ds:Object after ds:KeyInfo is not accepted"
    );
    assert!(matches!(
        xml::verify(envelope().as_bytes(), &pki.trust(), &Limits::default()),
        Err(DsigError::NoSignature)
    ));
    assert!(matches!(
        xml::sign(doc.as_bytes(), &pki.key(&pki.rsa), &Limits::default()),
        Err(DsigError::AlreadySigned)
    ));
}

#[test]
fn an_empty_header_gets_the_signature() {
    let pki = Pki::new();
    let doc = "<S:Envelope xmlns:S='http://schemas.xmlsoap.org/soap/envelope/'><S:Header/><S:Body><x/></S:Body></S:Envelope>";
    let s = xml::sign(doc.as_bytes(), &pki.key(&pki.ec), &Limits::default()).unwrap();
    let s = String::from_utf8(s).unwrap();
    assert!(s.starts_with("<S:Envelope xmlns:S='http://schemas.xmlsoap.org/soap/envelope/'><S:Header><ds:Signature"), "{s}");
    xml::verify(s.as_bytes(), &pki.trust(), &Limits::default()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any change of one character of signed text or attribute values fails.
    #[test]
    fn any_one_byte_change_of_signed_content_fails(pick in any::<prop::sample::Index>(), repl in "[a-zA-Z0-9]") {
        let pki = PKI.with(|p| p.clone());
        let doc = SIGNED.with(|s| s.clone());
        let sig_start = doc.find("<ds:Signature").unwrap();
        let sig_end = doc.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        // positions of alphanumerics in text nodes or attribute values, outside the signature
        let b = doc.as_bytes();
        let mut in_tag = false;
        let mut quote: Option<u8> = None;
        let mut attr_is_ns = false;
        let mut candidates = Vec::new();
        for (i, &c) in b.iter().enumerate() {
            match (in_tag, quote, c) {
                (false, _, b'<') => in_tag = true,
                (true, None, b'>') => in_tag = false,
                (true, None, b'"') | (true, None, b'\'') => {
                    quote = Some(c);
                    let before = &doc[..i];
                    let name_start = before.rfind(' ').unwrap_or(0);
                    attr_is_ns = before[name_start..].trim_start().starts_with("xmlns");
                }
                (true, Some(q), _) if c == q => quote = None,
                _ => {}
            }
            let in_value = in_tag && quote.is_some() && !attr_is_ns && c != b'"' && c != b'\'';
            if (i < sig_start || i >= sig_end) && c.is_ascii_alphanumeric() && (!in_tag || in_value) {
                candidates.push(i);
            }
        }
        let i = candidates[pick.index(candidates.len())];
        let r = repl.as_bytes()[0];
        prop_assume!(b[i] != r);
        let mut m = b.to_vec();
        m[i] = r;
        // Inside an entity or character reference the change breaks the
        // XML itself; anywhere else the digest must be what catches it.
        let in_ref = doc[..i].rfind('&').is_some_and(|a| !doc[a..i].contains(';') && i - a < 8);
        match xml::verify(&m, &pki.0.trust(), &Limits::default()) {
            Ok(_) => prop_assert!(false, "change at {} accepted", i),
            Err(e) if in_ref => prop_assert!(matches!(e, xml::DsigError::Xml(_)), "change at {} in a reference: {}", i, e),
            Err(e) => prop_assert!(matches!(e, xml::DsigError::DigestMismatch), "change at {}: {}", i, e),
        }
    }

    /// Sign then verify always succeeds, for both key types.
    #[test]
    fn sign_then_verify_round_trips(text in "[a-zA-Z0-9 čćšđž<>&\"'\n\t]{0,40}", attr in "[a-z &<\"]{0,10}", ec in any::<bool>()) {
        let pki = PKI.with(|p| p.clone());
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;");
        let doc = format!("<r xmlns='urn:t' a=\"{}\"><c>{}</c></r>", esc(&attr), esc(&text));
        let key = if ec { pki.0.key(&pki.0.ec) } else { pki.0.key(&pki.0.rsa) };
        let s = xml::sign(doc.as_bytes(), &key, &Limits::default()).unwrap();
        let v = xml::verify(&s, &pki.0.trust(), &Limits::default());
        prop_assert!(v.is_ok(), "{:?}", v.err().map(|e| e.to_string()));
    }
}

#[derive(Clone)]
struct SharedPki(std::rc::Rc<Pki>);

thread_local! {
    static PKI: SharedPki = SharedPki(std::rc::Rc::new(Pki::new()));
    static SIGNED: String = PKI.with(|p| signed(&p.0));
}

#[test]
fn a_remembered_certificate_does_not_weaken_any_check() {
    let pki = Pki::new();
    let mut trust = pki.trust();
    let doc = signed(&pki);
    for _ in 0..3 {
        xml::verify(doc.as_bytes(), &trust, &Limits::default()).unwrap();
    }
    let tampered = doc.replace("0512981717776", "0512981717777");
    assert!(matches!(
        xml::verify(tampered.as_bytes(), &trust, &Limits::default()),
        Err(DsigError::DigestMismatch)
    ));
    let foreign = xml::sign(
        envelope().as_bytes(),
        &pki.key(&pki.foreign),
        &Limits::default(),
    )
    .unwrap();
    assert!(matches!(
        xml::verify(&foreign, &trust, &Limits::default()),
        Err(DsigError::Untrusted(_))
    ));
    trust.subject_pin = Some("CN=cadastre".parse().unwrap());
    assert!(matches!(
        xml::verify(doc.as_bytes(), &trust, &Limits::default()),
        Err(DsigError::Untrusted(_))
    ));
    // the signer's certificate with a different "intermediate" offered is a
    // different chain, checked afresh
    let theirs = between(&doc, "<ds:X509Certificate>", "</ds:X509Certificate>");
    let other = String::from_utf8(
        xml::sign(
            envelope().as_bytes(),
            &pki.key(&pki.foreign),
            &Limits::default(),
        )
        .unwrap(),
    )
    .unwrap();
    let foreign_cert = between(&other, "<ds:X509Certificate>", "</ds:X509Certificate>");
    let with_extra = doc.replace(
        &format!("{theirs}</ds:X509Certificate>"),
        &format!(
            "{theirs}</ds:X509Certificate><ds:X509Certificate>{foreign_cert}</ds:X509Certificate>"
        ),
    );
    trust.subject_pin = None;
    xml::verify(with_extra.as_bytes(), &trust, &Limits::default()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Hostile input never panics the verifier: random bytes overwritten
    /// anywhere in a valid signed document, including inside the signature.
    #[test]
    fn verify_never_panics_on_mutated_documents(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let pki = PKI.with(|p| p.clone());
        let mut doc = SIGNED.with(|s| s.clone()).into_bytes();
        for (i, b) in edits {
            let at = i.index(doc.len());
            doc[at] = b;
        }
        let _ = xml::verify(&doc, &pki.0.trust(), &Limits::default());
    }

    /// Certificate and key parsers reject garbage with an error.
    #[test]
    fn trust_and_key_loading_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), pem_body in "[A-Za-z0-9+/=\n]{0,200}") {
        let pem = format!("-----BEGIN CERTIFICATE-----\n{pem_body}\n-----END CERTIFICATE-----\n");
        prop_assert!(xml::TrustStore::from_pem(pem.as_bytes()).is_err());
        let _ = xml::TrustStore::from_pem(&bytes);
        let _ = xml::SigningKey::from_pem(&bytes, pem.as_bytes(), None);
    }
}
