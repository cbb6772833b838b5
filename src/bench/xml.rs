//! `jumgw bench xml`: our XML-DSig and exclusive C14N against raw openssl
//! (the bound for signing) and against libxmlsec1/lxml (the usual
//! implementation), all measured in one run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use openssl::hash::MessageDigest;
use openssl::sign::{Signer, Verifier};

use super::rate;
use crate::pki::{CertSpec, Issued, KeyKind, Role};
use crate::xml::{self, c14n, Limits};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("setup failed: {0}")]
    Setup(String),
    #[error("the python peer failed: {0}")]
    Peer(String),
}

fn setup<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// A ~400-byte request envelope as the gateway sends it (unsigned).
pub fn small_envelope() -> String {
    r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers" xmlns:jum="urn:jum-gateway:exchange:1"><SOAP-ENV:Header><xrd:id>01JDQ8Z5X3T4V6W7Y8Z9A0B1C2</xrd:id><xrd:userId>ref-0042</xrd:userId><xrd:issue>351-12/2026-IV</xrd:issue><xrd:protocolVersion>4.0</xrd:protocolVersion><jum:legalBasis>ZUP čl. 103</jum:legalBasis></SOAP-ENV:Header><SOAP-ENV:Body><c:BirthExtractRequest xmlns:c="urn:jum-gateway:civil:1"><c:jmbg>0512981717776</c:jmbg></c:BirthExtractRequest></SOAP-ENV:Body></SOAP-ENV:Envelope>"#.to_owned()
}

/// A property-sheet-like document of about `bytes` bytes, with namespaces,
/// attributes, escaped text and non-ASCII names, as registries return them.
pub fn large_document(bytes: usize) -> String {
    let mut s = String::from(
        r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xrd="http://x-road.eu/xsd/xroad.xsd"><SOAP-ENV:Header><xrd:id>01JDQ8Z5X3T4V6W7Y8Z9A0B1C2</xrd:id></SOAP-ENV:Header><SOAP-ENV:Body><k:PropertySheet xmlns:k="urn:jum-gateway:cadastre:1" ko="803472" sheet="1520">"#,
    );
    let mut i = 0u32;
    while s.len() < bytes {
        s.push_str(&format!(
            "\n  <k:parcel number=\"{}/{}\" area=\"{}\"><k:landUse>njiva 3. klase &amp; voćnjak</k:landUse><k:address>Zelena {} — Bečej</k:address><k:owner share=\"1/2\"><k:name>Đorđe Šoškić</k:name><k:jmbg>0512981717776</k:jmbg></k:owner></k:parcel>",
            1000 + i, i % 7 + 1, 300 + i * 7 % 5000, i % 90 + 1
        ));
        i += 1;
    }
    s.push_str("\n</k:PropertySheet></SOAP-ENV:Body></SOAP-ENV:Envelope>");
    s
}

fn default_python() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("target/venv/bin/python"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python"),
    ];
    candidates.into_iter().find(|p| p.exists())
}

fn peer_script() -> PathBuf {
    let local = PathBuf::from("tests/py/xml_peer.py");
    if local.exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/xml_peer.py")
    }
}

pub fn run(json: bool, seconds: f64, python: Option<PathBuf>) -> Result<(), BenchError> {
    let limits = Limits::default();
    let ca =
        Issued::new(&CertSpec::new("bench CA", Role::Ca), KeyKind::Rsa2048, None).map_err(setup)?;
    let signer = Issued::new(
        &CertSpec::new("bench signer", Role::Signing),
        KeyKind::Rsa2048,
        Some(&ca),
    )
    .map_err(setup)?;
    let key = xml::SigningKey::from_pem(
        &signer.key_pem().map_err(setup)?,
        &signer.cert_pem().map_err(setup)?,
        None,
    )
    .map_err(setup)?;
    let trust = xml::TrustStore::from_pem(&ca.cert_pem().map_err(setup)?).map_err(setup)?;
    let small = small_envelope();
    let large = large_document(200 * 1024);
    let small_signed = xml::sign(small.as_bytes(), &key, &limits).map_err(setup)?;
    let large_signed = xml::sign(large.as_bytes(), &key, &limits).map_err(setup)?;

    let mut r: BTreeMap<&str, f64> = BTreeMap::new();
    r.insert("small_bytes", small.len() as f64);
    r.insert("large_bytes", large.len() as f64);

    // Baseline: openssl RSA-2048 PKCS#1 v1.5 over SHA-256, nothing else.
    let digest = openssl::sha::sha256(small.as_bytes());
    let raw_sign = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut s = Signer::new(MessageDigest::sha256(), &signer.key)?;
        s.update(&digest)?;
        s.sign_to_vec()
    };
    r.insert(
        "openssl_rsa_sign_per_s",
        rate(seconds, || raw_sign().map(drop)).map_err(BenchError::Setup)?,
    );
    let raw_sig = raw_sign().map_err(setup)?;
    let pubkey = signer.cert.public_key().map_err(setup)?;
    let raw_verify = || -> Result<(), String> {
        let mut v = Verifier::new(MessageDigest::sha256(), &pubkey).map_err(|e| e.to_string())?;
        v.update(&digest).map_err(|e| e.to_string())?;
        v.verify(&raw_sig)
            .map_err(|e| e.to_string())?
            .then_some(())
            .ok_or_else(|| "the baseline signature does not verify".to_string())
    };
    r.insert(
        "openssl_rsa_verify_per_s",
        rate(seconds, raw_verify).map_err(BenchError::Setup)?,
    );

    let measure =
        |f: &mut dyn FnMut() -> Result<(), String>| rate(seconds, f).map_err(BenchError::Setup);
    let e = |e: xml::DsigError| e.to_string();
    r.insert(
        "sign_small_per_s",
        measure(&mut || {
            xml::sign(small.as_bytes(), &key, &limits)
                .map(drop)
                .map_err(e)
        })?,
    );
    r.insert(
        "verify_small_per_s",
        measure(&mut || {
            xml::verify(&small_signed, &trust, &limits)
                .map(drop)
                .map_err(e)
        })?,
    );
    r.insert(
        "sign_large_per_s",
        measure(&mut || {
            xml::sign(large.as_bytes(), &key, &limits)
                .map(drop)
                .map_err(e)
        })?,
    );
    r.insert(
        "verify_large_per_s",
        measure(&mut || {
            xml::verify(&large_signed, &trust, &limits)
                .map(drop)
                .map_err(e)
        })?,
    );
    let opts = c14n::Options::exclusive();
    let c14n_rate = measure(&mut || {
        c14n::canonicalize(large.as_bytes(), &opts, &limits)
            .map(|c| drop(std::hint::black_box(c)))
            .map_err(|e| e.to_string())
    })?;
    r.insert("c14n_large_mb_s", c14n_rate * large.len() as f64 / 1e6);

    // The peer: libxmlsec1 (python-xmlsec) and lxml, same files, same run.
    let mut peer_ran = false;
    if let Some(py) = python.or_else(default_python) {
        let dir = tempfile::tempdir().map_err(setup)?;
        let w = |name: &str, data: &[u8]| -> Result<String, BenchError> {
            let p = dir.path().join(name);
            std::fs::write(&p, data).map_err(setup)?;
            Ok(p.to_string_lossy().into_owned())
        };
        let args = [
            w("small-signed.xml", &small_signed)?,
            w("small.xml", small.as_bytes())?,
            w("large.xml", large.as_bytes())?,
            w("key.pem", &signer.key_pem().map_err(setup)?)?,
            w("cert.pem", &signer.cert_pem().map_err(setup)?)?,
            w("ca.pem", &ca.cert_pem().map_err(setup)?)?,
        ];
        let out = Command::new(&py)
            .arg(peer_script())
            .arg("bench")
            .arg(seconds.to_string())
            .args(&args)
            .output()
            .map_err(|e| BenchError::Peer(format!("{}: {e}", py.display())))?;
        if !out.status.success() {
            return Err(BenchError::Peer(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let peer: BTreeMap<String, f64> = serde_json::from_slice(&out.stdout)
            .map_err(|e| BenchError::Peer(format!("unreadable output: {e}")))?;
        for (k, v) in peer {
            let k: &'static str = Box::leak(k.into_boxed_str());
            r.insert(k, v);
        }
        peer_ran = true;
    }

    let ratio = |a: &str, b: &str| match (r.get(a), r.get(b)) {
        (Some(x), Some(y)) if *y > 0.0 => Some(x / y),
        _ => None,
    };
    let ratios = [
        (
            "sign_small_vs_openssl_rsa_sign",
            ratio("sign_small_per_s", "openssl_rsa_sign_per_s"),
            0.95,
        ),
        (
            "verify_small_vs_xmlsec",
            ratio("verify_small_per_s", "xmlsec_verify_small_per_s"),
            5.0,
        ),
        (
            "c14n_large_vs_lxml",
            ratio("c14n_large_mb_s", "lxml_c14n_large_mb_s"),
            2.0,
        ),
    ];
    for (k, v, _) in &ratios {
        if let Some(v) = v {
            r.insert(k, *v);
        }
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&r).map_err(setup)?);
    } else {
        println!("{:<34} {:>14}", "measure", "value");
        for (k, v) in &r {
            println!("{k:<34} {v:>14.2}");
        }
        println!();
        for (k, v, target) in &ratios {
            match v {
                Some(v) => println!(
                    "{k:<34} {v:>8.2}  (target >= {target}) {}",
                    if *v >= *target { "met" } else { "NOT met" }
                ),
                None => println!("{k:<34} {:>8}  (peer not measured)", "-"),
            }
        }
        if !peer_ran {
            println!(
                "\nno Python peer: run ./tests/run once to create target/venv, or pass --python"
            );
        }
    }
    Ok(())
}
