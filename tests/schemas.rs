//! The schemas in schemas/ as two independent XSD engines see them: ours
//! (libxml2 through the `libxml` crate, behind `jumgw xml validate`) and
//! xmlschema (pure Python, sharing no code with libxml2). `xmllint
//! --schema` is asked too, as libxml2's own command line: it shows our
//! binding adds or loses nothing, but it is the same engine as ours.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use jum_gateway::xml::{self, Limits};

fn schemas() -> std::path::PathBuf {
    manifest_dir().join("schemas")
}

fn examples(sub: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(schemas().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    v.sort();
    v
}

fn ours(file: &std::path::Path) -> std::process::Output {
    jumgw()
        .args(["xml", "validate", "--schemas"])
        .arg(schemas())
        .arg(file)
        .output()
        .unwrap()
}

fn xmllint(file: &std::path::Path) -> std::process::Output {
    tool("xmllint")
        .args(["--noout", "--schema"])
        .arg(schemas().join("jum-gateway.xsd"))
        .arg(file)
        .output()
        .unwrap()
}

/// xmlschema's verdict on each file: valid, or the reasons.
fn xmlschema(files: &[std::path::PathBuf]) -> std::collections::BTreeMap<String, (bool, String)> {
    let mut args = vec![
        "xsd-validate".to_owned(),
        schemas().join("jum-gateway.xsd").display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let o = peer(&args);
    assert!(o.status.success(), "xmlschema: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(f, r)| {
            (
                f.clone(),
                (
                    r["valid"].as_bool().unwrap(),
                    r["reason"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

#[test]
fn every_example_validates_in_both_engines() {
    let files = examples("examples");
    assert!(files.len() >= 14, "{files:?}");
    for service in [
        "civil-birth-extract",
        "civil-citizenship-certificate",
        "cadastre-property-sheet",
        "cadastre-parcel",
        "tax-clearance-certificate",
        "tax-property-tax-status",
    ] {
        assert!(
            files
                .iter()
                .any(|f| f.ends_with(format!("response-{service}.xml"))),
            "no example document for {service}"
        );
    }
    for f in &files {
        let o = ours(f);
        assert!(
            o.status.success(),
            "ours rejects {}: {}",
            f.display(),
            text(&o)
        );
        let o = xmllint(f);
        assert!(
            o.status.success(),
            "xmllint rejects {}: {}",
            f.display(),
            text(&o)
        );
    }
    let theirs = xmlschema(&files);
    assert_eq!(theirs.len(), files.len());
    for (f, (valid, reason)) in theirs {
        assert!(valid, "xmlschema rejects {f}: {reason}");
    }
}

#[test]
fn broken_examples_fail_in_both_engines_for_the_intended_reason() {
    // (file, libxml2's reason, xmlschema's reason): each engine says it
    // in its own words, about the same defect.
    let expected = [
        (
            "debt-three-decimals.xml",
            "fractionDigits",
            "fraction digits has to be lesser or equal than 2",
        ),
        (
            "fault-code-not-qname.xml",
            "xs:QName",
            "value is not an xs:QName",
        ),
        (
            "jmbg-twelve-digits.xml",
            "'051298171777' is not accepted by the pattern",
            "value doesn't match any pattern of ['[0-9]{13}']",
        ),
        (
            "missing-request-id.xml",
            "Expected is ( {http://x-road.eu/xsd/xroad.xsd}id )",
            "Tag 'xrd:id' expected",
        ),
        (
            "negative-area.xml",
            "'-612' is not a valid value",
            "value must be positive",
        ),
        (
            "parcel-leading-zero.xml",
            "'01234/5' is not accepted by the pattern",
            "value doesn't match any pattern of ['[1-9][0-9]*(/[1-9][0-9]*)?']",
        ),
        (
            "property-sheet-without-owners.xml",
            "Expected is ( {urn:jum-gateway:cadastre:1}B )",
            "Tag 'k:B' expected",
        ),
        (
            "protocol-version-3.xml",
            "'3.1' is not an element of the set",
            "value must be one of ['4.0']",
        ),
        (
            "request-hash-wrong-algorithm.xml",
            "attribute 'algorithmId'",
            "value must be one of ['http://www.w3.org/2001/04/xmlenc#sha512']",
        ),
        (
            "two-payloads.xml",
            "BirthExtractRequest': This element is not expected",
            "Unexpected child with tag 'c:BirthExtractRequest'",
        ),
        (
            "unknown-payload.xml",
            "No matching global element declaration",
            "DeathExtractRequest' not found",
        ),
    ];
    let files = examples("examples/invalid");
    assert_eq!(
        files.len(),
        expected.len(),
        "every broken example needs an expected reason"
    );
    let theirs = xmlschema(&files);
    for (name, reason, their_reason) in expected {
        let f = schemas().join("examples/invalid").join(name);
        let (valid, said) = &theirs[&f.display().to_string()];
        assert!(!valid, "xmlschema accepts {name}");
        assert!(said.contains(their_reason), "xmlschema on {name}: {said}");
        let o = ours(&f);
        assert_eq!(o.status.code(), Some(1), "ours on {name}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(reason),
            "ours on {name}: {}",
            text(&o)
        );
        let o = xmllint(&f);
        assert!(!o.status.success(), "xmllint accepts {name}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(reason),
            "xmllint on {name}: {}",
            text(&o)
        );
    }
}

#[test]
fn signed_envelopes_validate_in_both_engines() {
    let pki = Pki::new();
    for name in [
        "request-civil-birth-extract.xml",
        "response-cadastre-property-sheet.xml",
        "response-fault-maintenance.xml",
    ] {
        let data = std::fs::read(schemas().join("examples").join(name)).unwrap();
        let signed = xml::sign(&data, &pki.key(&pki.ec), &Limits::default()).unwrap();
        let f = write(pki.dir.path(), name, &signed);
        let o = ours(&f);
        assert!(
            o.status.success(),
            "ours rejects signed {name}: {}",
            text(&o)
        );
        let o = xmllint(&f);
        assert!(
            o.status.success(),
            "xmllint rejects signed {name}: {}",
            text(&o)
        );
        let (valid, reason) = &xmlschema(std::slice::from_ref(&f))[&f.display().to_string()];
        assert!(valid, "xmlschema rejects signed {name}: {reason}");
    }
}

#[test]
fn malformed_or_hostile_input_is_refused_before_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "xxe.xml",
        b"<!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><a>&e;</a>",
    );
    let o = ours(&f);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("DOCTYPE declarations are refused"),
        "{}",
        text(&o)
    );
}
