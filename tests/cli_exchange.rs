//! The end-to-end check, through the binaries as an operator would:
//! `jumgw certs init`, `jumgw simulate`, then `jumgw exchange` for each
//! service; every answer verifies with xmlsec1 and validates with xmllint.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;

#[test]
fn certs_init_simulate_and_exchange_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let o = jumgw()
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("civil-sign.pem  (expires "));
    let o = jumgw()
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "refuses to overwrite");
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists; use --force to overwrite"));

    let (sim, ports) = start_simulator(dir.path(), &certs);
    let c = certs.display().to_string();
    let gw_cfg = std::fs::read_to_string(manifest_dir().join("config/gateway.toml"))
        .unwrap()
        .replace("certs/dev", &c)
        .replace(":9441/", &format!(":{}/", ports[1]))
        .replace(":9442/", &format!(":{}/", ports[2]))
        .replace(":9443/", &format!(":{}/", ports[3]));
    let gw_path = write(dir.path(), "gateway.toml", gw_cfg.as_bytes());

    let cases: &[(&str, &str, &[&str])] = &[
        ("civil", "civil.birth-extract", &["--jmbg", "0512981717776"]),
        (
            "civil",
            "civil.citizenship-certificate",
            &["--jmbg", "0512981717776"],
        ),
        (
            "cadastre",
            "cadastre.property-sheet",
            &["--ko", "803472", "--sheet", "1520"],
        ),
        (
            "cadastre",
            "cadastre.parcel",
            &["--ko", "803472", "--parcel", "1234/5"],
        ),
        ("tax", "tax.clearance-certificate", &["--pib", "101134702"]),
        (
            "tax",
            "tax.property-tax-status",
            &["--jmbg", "0512981717776"],
        ),
    ];
    for (registry, service, subject) in cases {
        let out = dir.path().join(format!("{service}.xml"));
        let o = jumgw()
            .args([
                "exchange",
                "--registry",
                registry,
                "--service",
                service,
                "--config",
            ])
            .arg(&gw_path)
            .args(*subject)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{service}: {}", text(&o));
        assert_xmlsec1_and_xmllint_accept(&out, &certs.join("ca.pem"), service);
    }

    // classified failures: exit code and one line
    let o = jumgw()
        .args([
            "exchange",
            "--registry",
            "civil",
            "--service",
            "civil.birth-extract",
            "--jmbg",
            "0101990800007",
            "--config",
        ])
        .arg(&gw_path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("permanent failure: registry found no data")
    );
    let o = jumgw()
        .args([
            "exchange",
            "--registry",
            "tax",
            "--service",
            "civil.birth-extract",
            "--jmbg",
            "0512981717776",
            "--config",
        ])
        .arg(&gw_path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("belongs to registry civil, not tax"));
    drop(sim);
}
