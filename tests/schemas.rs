//! The schemas in schemas/ as two XSD engines see them: ours (libxml2 through
//! the `libxml` crate, behind `jumgw xml validate`) and `xmllint --schema`.

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
}

#[test]
fn broken_examples_fail_in_both_engines_for_the_intended_reason() {
    let expected = [
        ("debt-three-decimals.xml", "fractionDigits"),
        ("fault-code-not-qname.xml", "xs:QName"),
        (
            "jmbg-twelve-digits.xml",
            "'051298171777' is not accepted by the pattern",
        ),
        (
            "missing-request-id.xml",
            "Expected is ( {http://x-road.eu/xsd/xroad.xsd}id )",
        ),
        ("negative-area.xml", "'-612' is not a valid value"),
        (
            "parcel-leading-zero.xml",
            "'01234/5' is not accepted by the pattern",
        ),
        (
            "property-sheet-without-owners.xml",
            "Expected is ( {urn:jum-gateway:cadastre:1}B )",
        ),
        (
            "protocol-version-3.xml",
            "'3.1' is not an element of the set",
        ),
        (
            "request-hash-wrong-algorithm.xml",
            "attribute 'algorithmId'",
        ),
        (
            "two-payloads.xml",
            "BirthExtractRequest': This element is not expected",
        ),
        (
            "unknown-payload.xml",
            "No matching global element declaration",
        ),
    ];
    let files = examples("examples/invalid");
    assert_eq!(
        files.len(),
        expected.len(),
        "every broken example needs an expected reason"
    );
    for (name, reason) in expected {
        let f = schemas().join("examples/invalid").join(name);
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
