//! Interoperability of our exclusive C14N and XML-DSig with independent
//! implementations: lxml (libxml2), xmlsec1 (libxmlsec1) and signxml.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::io::BufRead;

use base64::Engine;
use common::*;
use jum_gateway::xml::{self, c14n::Options, dsig, Document, Limits};

fn ours(doc: &[u8], opts: &Options) -> Result<String, String> {
    xml::canonicalize(doc, opts, &Limits::default())
        .map(|c| String::from_utf8(c.into_bytes()).unwrap())
        .map_err(|e| e.to_string())
}

#[test]
fn c14n_equals_lxml_on_thousands_of_generated_documents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.jsonl");
    let seed = std::env::var("JUMGW_C14N_SEED").unwrap_or_else(|_| "20261125".into());
    let o = peer(["c14n-gen", &seed, "3000", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let f = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let mut failures = Vec::new();
    let mut n = 0;
    for line in f.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let doc = v["doc"].as_str().unwrap();
        let prefixes: Vec<String> = v["prefixes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        let cases = [
            ("exc", Options::exclusive()),
            (
                "exc_comments",
                Options {
                    with_comments: true,
                    ..Options::exclusive()
                },
            ),
            ("inc", Options::default()),
            (
                "exc_prefixes",
                Options::exclusive().with_prefix_list(&prefixes.join(" ")),
            ),
        ];
        for (key, opts) in cases {
            let Some(expected) = v[key].as_str() else {
                continue;
            };
            let got = ours(doc.as_bytes(), &opts);
            if got.as_deref() != Ok(expected) {
                failures.push(format!("{key} prefixes={prefixes:?}\n doc: {doc:?}\n lxml: {expected:?}\n ours: {got:?}"));
            }
        }
        n += 1;
    }
    assert_eq!(n, 3000, "the generator wrote {n} documents");
    assert!(
        failures.is_empty(),
        "{} of {} comparisons differ from lxml; first ones:\n{}",
        failures.len(),
        n * 4,
        failures
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

#[test]
fn c14n_equals_lxml_on_vendored_vectors() {
    let mut files = Vec::new();
    for entry in walk(&manifest_dir().join("tests/vectors")) {
        if entry.extension().is_some_and(|e| e == "xml") {
            files.push(entry);
        }
    }
    assert!(files.len() >= 10, "vectors missing: {files:?}");
    let o = peer(
        std::iter::once("c14n".to_string()).chain(files.iter().map(|f| f.display().to_string())),
    );
    assert!(o.status.success(), "{}", text(&o));
    let forms: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let expected = &forms[f.display().to_string()];
        for (key, opts) in [
            ("exc", Options::exclusive()),
            (
                "exc_comments",
                Options {
                    with_comments: true,
                    ..Options::exclusive()
                },
            ),
            ("inc", Options::default()),
        ] {
            assert_eq!(
                ours(&data, &opts).as_deref(),
                Ok(expected[key].as_str().unwrap()),
                "{key} of {}",
                f.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The W3C exc-c14n interop: the published digests of one subtree under
/// the four combinations of comments and PrefixList.
#[test]
fn exc_c14n_reproduces_the_published_merlin_digests() {
    let data =
        std::fs::read(manifest_dir().join("tests/vectors/merlin-exc-c14n-one/exc-signature.xml"))
            .unwrap();
    let doc = Document::parse(&data, &Limits::default()).unwrap();
    let target = doc
        .find_all(dsig::DSIG_NS, "Object")
        .into_iter()
        .find(|&o| doc.attr(o, "Id") == Some("to-be-signed"))
        .unwrap();
    let expected = [
        (false, "", "7yOTjUu+9oEhShgyIIXDLjQ08aY="),
        (false, "bar #default", "09xMy0RTQM1Q91demYe/0F6AGXo="),
        (true, "", "ZQH+SkCN8c5y0feAr+aRTZDwyvY="),
        (true, "bar #default", "a1cTqBgbqpUt6bMJN4C6zFtnoyo="),
    ];
    for (comments, list, digest) in expected {
        let opts = Options {
            with_comments: comments,
            ..Options::exclusive().with_prefix_list(list)
        };
        let bytes = doc.canonicalize_subtree(target, &opts, Vec::new());
        let sha1 = openssl::hash::hash(openssl::hash::MessageDigest::sha1(), &bytes).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(sha1),
            digest,
            "comments={comments} prefixes={list:?}\n{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

fn xmlsec1_verify(pki: &Pki, file: &std::path::Path) -> std::process::Output {
    tool("xmlsec1")
        .args(["--verify", "--trusted-pem"])
        .arg(pki.path("ca.pem"))
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn our_signatures_verify_with_xmlsec1_and_signxml() {
    let pki = Pki::new();
    for (name, signer) in [("rsa", &pki.rsa), ("ec", &pki.ec)] {
        for doc in [
            envelope(),
            jum_gateway::bench::xml::large_document(20_000),
            "<r xmlns='urn:x'><a>š</a></r>".to_string(),
        ] {
            let signed = xml::sign(doc.as_bytes(), &pki.key(signer), &Limits::default()).unwrap();
            let f = write(pki.dir.path(), &format!("ours-{name}.xml"), &signed);
            let o = xmlsec1_verify(&pki, &f);
            assert!(
                o.status.success(),
                "xmlsec1 rejects our {name} signature: {}",
                text(&o)
            );
            for (oracle, cmd) in [
                ("signxml", "signxml-verify"),
                ("python-xmlsec", "xmlsec-verify"),
            ] {
                let o = peer([
                    cmd,
                    pki.path("ca.pem").to_str().unwrap(),
                    f.to_str().unwrap(),
                ]);
                assert!(
                    o.status.success(),
                    "{oracle} rejects our {name} signature: {}",
                    text(&o)
                );
            }
            // and our own verifier agrees
            xml::verify(&signed, &pki.trust(), &Limits::default()).unwrap();
        }
    }
}

/// The oracles must be able to say no, or the positive tests prove
/// nothing: each of xmlsec1, signxml and python-xmlsec refuses our
/// signature over a changed document (a digest failure) and a signature by
/// a signer of another CA (a trust failure), for both key types, while it
/// accepts the same signature untouched.
#[test]
fn every_oracle_refuses_tampered_documents_and_foreign_signers() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    for (name, signer) in [("rsa", &pki.rsa), ("ec", &pki.ec)] {
        let signed =
            xml::sign(envelope().as_bytes(), &pki.key(signer), &Limits::default()).unwrap();
        let tampered = String::from_utf8(signed.clone())
            .unwrap()
            .replace("0512981717776", "0512981717777");
        let foreign = xml::sign(
            envelope().as_bytes(),
            &pki.key(&pki.foreign),
            &Limits::default(),
        )
        .unwrap();
        let good = write(pki.dir.path(), &format!("good-{name}.xml"), &signed);
        let cases = [
            (
                "tampered",
                write(
                    pki.dir.path(),
                    &format!("tampered-{name}.xml"),
                    tampered.as_bytes(),
                ),
                [
                    "data and digest do not match",
                    "InvalidDigest",
                    "VerificationError",
                ],
            ),
            (
                "signed under another CA",
                write(pki.dir.path(), &format!("foreign-{name}.xml"), &foreign),
                [
                    "certificate verification failed",
                    "InvalidCertificate",
                    "failed to verify",
                ],
            ),
        ];
        // the untouched one passes all three: what fails below is the change
        assert!(xmlsec1_verify(&pki, &good).status.success());
        for cmd in ["signxml-verify", "xmlsec-verify"] {
            let o = peer([cmd, ca.to_str().unwrap(), good.to_str().unwrap()]);
            assert!(o.status.success(), "{cmd} on the good {name}: {}", text(&o));
        }
        for (what, f, [xmlsec1_says, signxml_says, pyxmlsec_says]) in &cases {
            let o = xmlsec1_verify(&pki, f);
            let said = text(&o).to_lowercase();
            assert!(
                !o.status.success(),
                "xmlsec1 accepts a {what} {name} document"
            );
            assert!(
                said.contains(xmlsec1_says),
                "xmlsec1 on the {what} {name}: {said}"
            );
            for (cmd, says) in [
                ("signxml-verify", signxml_says),
                ("xmlsec-verify", pyxmlsec_says),
            ] {
                let o = peer([cmd, ca.to_str().unwrap(), f.to_str().unwrap()]);
                assert_eq!(
                    o.status.code(),
                    Some(1),
                    "{cmd} on the {what} {name}: {}",
                    text(&o)
                );
                assert!(
                    String::from_utf8_lossy(&o.stderr).contains(says),
                    "{cmd} on the {what} {name}: {}",
                    text(&o)
                );
            }
        }
    }
}

fn template(alg_uri: &str) -> String {
    envelope().replace(
        "</SOAP-ENV:Header>",
        &format!(
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
<ds:SignatureMethod Algorithm=\"{alg_uri}\"/><ds:Reference URI=\"\"><ds:Transforms>\
<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue/>\
</ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data/></ds:KeyInfo>\
</ds:Signature></SOAP-ENV:Header>"
        ),
    )
}

#[test]
fn signatures_by_xmlsec1_and_signxml_verify_with_ours() {
    let pki = Pki::new();
    for (name, alg) in [("rsa", dsig::RSA_SHA256), ("ec", dsig::ECDSA_SHA256)] {
        let tmpl = write(
            pki.dir.path(),
            &format!("tmpl-{name}.xml"),
            template(alg).as_bytes(),
        );
        let out = pki.path(&format!("xmlsec1-{name}.xml"));
        let o = tool("xmlsec1")
            .arg("--sign")
            .arg("--privkey-pem")
            .arg(format!(
                "{},{}",
                pki.path(&format!("{name}.key")).display(),
                pki.path(&format!("{name}.pem")).display()
            ))
            .arg("--output")
            .arg(&out)
            .arg(&tmpl)
            .output()
            .unwrap();
        assert!(o.status.success(), "xmlsec1 --sign: {}", text(&o));
        let signed = std::fs::read(&out).unwrap();
        let v = xml::verify(&signed, &pki.trust(), &Limits::default()).unwrap_or_else(|e| {
            panic!(
                "xmlsec1 {name} signature rejected: {e}\n{}",
                String::from_utf8_lossy(&signed)
            )
        });
        assert!(v
            .signer_subject()
            .contains(&format!("registry signer {name}")));

        let src = write(pki.dir.path(), "plain.xml", envelope().as_bytes());
        let out = pki.path(&format!("signxml-{name}.xml"));
        let alg_name = if name == "rsa" {
            "rsa-sha256"
        } else {
            "ecdsa-sha256"
        };
        let o = peer([
            "signxml-sign",
            pki.path(&format!("{name}.key")).to_str().unwrap(),
            pki.path(&format!("{name}.pem")).to_str().unwrap(),
            alg_name,
            src.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "signxml sign: {}", text(&o));
        let signed = std::fs::read(&out).unwrap();
        xml::verify(&signed, &pki.trust(), &Limits::default()).unwrap_or_else(|e| {
            panic!(
                "signxml {name} signature rejected: {e}\n{}",
                String::from_utf8_lossy(&signed)
            )
        });
    }
}

#[test]
fn third_party_vectors_outside_the_profile_are_refused_by_name() {
    let pki = Pki::new();
    let trust = pki.trust();
    let v = manifest_dir().join("tests/vectors");
    let cases = [
        (
            "merlin-xmldsig-twenty-three/signature-enveloped-dsa.xml",
            "canonicalization method http://www.w3.org/TR/2001/REC-xml-c14n-20010315 is not accepted (only exclusive C14N 1.0 without comments)",
        ),
        (
            "merlin-xmldsig-twenty-three/signature-enveloping-hmac-sha1.xml",
            "enveloping signatures (ds:Signature as the root element) are not accepted",
        ),
        (
            "merlin-xmldsig-twenty-three/signature-enveloping-rsa.xml",
            "enveloping signatures (ds:Signature as the root element) are not accepted",
        ),
        (
            "merlin-xmldsig-twenty-three/signature-external-b64-dsa.xml",
            "enveloping signatures (ds:Signature as the root element) are not accepted",
        ),
        (
            "aleksey-xmldsig-01-enveloped/enveloped-sha256-rsa-sha256-test-1.xml",
            "it must be the last child element of its parent",
        ),
        ("merlin-exc-c14n-one/exc-signature.xml", "dsig:Object after ds:KeyInfo is not accepted"),
    ];
    for (file, expected) in cases {
        let data = std::fs::read(v.join(file)).unwrap();
        let err = xml::verify(&data, &trust, &Limits::default())
            .err()
            .unwrap_or_else(|| panic!("{file} verified"));
        assert!(err.to_string().contains(expected), "{file}: {err}");
    }
}

/// A registry signer certificate from the trusted CA, but with a key too
/// weak for a seal (RSA-1024, RSA-512, an EC key on P-521... P-224), or
/// signed by the CA with SHA-1: signxml signs with it (its signatures are
/// valid), and the verifier refuses each, naming the key or the hash. Our
/// own `xml sign` refuses such keys too.
#[test]
fn weak_signer_keys_and_sha1_certificates_are_refused_by_name() {
    use jum_gateway::pki::{issue, CertSpec, Role};
    use openssl::pkey::PKey;
    let pki = Pki::new();
    let spec = CertSpec::new("weak signer", Role::Signing);
    let ca = Some((&pki.ca.cert, &pki.ca.key));
    let rsa = |bits| PKey::from_rsa(openssl::rsa::Rsa::generate(bits).unwrap()).unwrap();
    let ec = |nid| {
        let g = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
        PKey::from_ec_key(openssl::ec::EcKey::generate(&g).unwrap()).unwrap()
    };
    let sha1_signed = |key: &PKey<openssl::pkey::Private>| {
        // The CA's signature over the certificate with SHA-1.
        let c = issue(&spec, key, ca).unwrap();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(c.serial_number()).unwrap();
        b.set_subject_name(c.subject_name()).unwrap();
        b.set_issuer_name(c.issuer_name()).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(c.not_before()).unwrap();
        b.set_not_after(c.not_after()).unwrap();
        let ku = openssl::x509::extension::KeyUsage::new()
            .critical()
            .digital_signature()
            .non_repudiation()
            .build()
            .unwrap();
        b.append_extension(ku).unwrap();
        b.sign(&pki.ca.key, openssl::hash::MessageDigest::sha1())
            .unwrap();
        b.build()
    };
    let strong = rsa(2048);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        &str,
        PKey<openssl::pkey::Private>,
        Option<openssl::x509::X509>,
        &str,
        &str,
    )> = vec![
        (
            "rsa1024",
            rsa(1024),
            None,
            "rsa-sha256",
            "an RSA key of 1024 bits; at least 2048 are accepted",
        ),
        (
            "rsa512",
            rsa(512),
            None,
            "rsa-sha256",
            "an RSA key of 512 bits; at least 2048 are accepted",
        ),
        (
            "p521",
            ec(openssl::nid::Nid::SECP521R1),
            None,
            "ecdsa-sha256",
            "an EC key on secp521r1; only P-256 and P-384 are accepted",
        ),
        (
            "sha1",
            strong.clone(),
            Some(sha1_signed(&strong)),
            "rsa-sha256",
            "is signed with sha1WithRSAEncryption; SHA-1 and MD5 are not accepted",
        ),
    ];
    for (name, key, cert, alg, why) in cases {
        let cert = cert.unwrap_or_else(|| issue(&spec, &key, ca).unwrap());
        let key_pem = key.private_key_to_pem_pkcs8().unwrap();
        let cert_pem = cert.to_pem().unwrap();
        let kp = write(pki.dir.path(), &format!("{name}.key"), &key_pem);
        let cp = write(pki.dir.path(), &format!("{name}.pem"), &cert_pem);
        let src = write(pki.dir.path(), "plain.xml", envelope().as_bytes());
        let out = pki.path(&format!("signxml-{name}.xml"));
        let o = peer([
            "signxml-sign",
            kp.to_str().unwrap(),
            cp.to_str().unwrap(),
            alg,
            src.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "signxml sign {name}: {}", text(&o));
        let signed = std::fs::read(&out).unwrap();
        match xml::verify(&signed, &pki.trust(), &Limits::default()) {
            Ok(_) => panic!("{name}: a weak signer was accepted"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.starts_with("signer certificate is not trusted: "),
                    "{name}: {e}"
                );
                assert!(e.contains(why), "{name}: {e}");
            }
        }
        // And we do not sign with such a key ourselves.
        let ours = xml::SigningKey::from_pem(&key_pem, &cert_pem, None);
        let e = ours.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("too weak to sign") || e.contains("only EC keys on P-256"),
            "{name}: {e}"
        );
    }
}
