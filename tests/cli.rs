//! The command-line contract of DESIGN.md: names, exit codes, messages.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

fn run(args: &[&str]) -> std::process::Output {
    jumgw().args(args).output().unwrap()
}

fn run_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut c = jumgw()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    c.wait_with_output().unwrap()
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn ids_check_prints_parts_or_the_exact_defect() {
    let o = run(&["ids", "check", "jmbg", "0512981717776"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out(&o).contains("date of birth: 1981-12-05"), "{}", out(&o));
    assert!(out(&o).contains("region: 71"));
    assert!(out(&o).contains("serial: 777 (female)"));

    let cases: &[(&[&str], &str)] = &[
        (&["jmbg", "0512981717775"], "invalid: check digit should be 6, found 5"),
        (&["jmbg", "3102981717776"], "invalid: day 31 does not exist in month 02 of 1981"),
        (&["jmbg", "05129817"], "invalid: JMBG must have 13 digits, found 8"),
        (&["pib", "101134703"], "invalid: check digit should be 2, found 3"),
        (&["mb", "07350768"], "invalid: check digit should be 7, found 8"),
        (&["ko", "803473"], "invalid: check digit should be 2, found 3"),
        (&["parcel", "12/0"], "invalid: parcel sub-number must be a positive number without leading zeros, found \"0\""),
        (&["parcel", "803471:1234/5"], "invalid: check digit should be 2, found 1"),
    ];
    for (args, msg) in cases {
        let mut a = vec!["ids", "check"];
        a.extend_from_slice(args);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert_eq!(err(&o).trim(), *msg, "{args:?}");
    }
    for (kind, v) in [
        ("pib", "101134702"),
        ("mb", "07350767"),
        ("ko", "803472"),
        ("municipality", "80110"),
        ("parcel", "803472:1234/5"),
        ("sheet", "1520"),
    ] {
        let o = run(&["ids", "check", kind, v]);
        assert!(o.status.success(), "{kind} {v}: {}", text(&o));
    }
    let o = run(&["ids", "check", "iban", "1"]);
    assert_eq!(o.status.code(), Some(2), "unknown kind is a usage error");
}

#[test]
fn xml_c14n_reads_stdin_and_files() {
    let doc = b"<?xml version='1.0'?><a:r xmlns:a='urn:a' xmlns:b='urn:b' z='1' a:y='2'><!--c--><b:x/></a:r>";
    let o = run_stdin(&["xml", "c14n", "--exclusive"], doc);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        out(&o),
        "<a:r xmlns:a=\"urn:a\" z=\"1\" a:y=\"2\"><b:x xmlns:b=\"urn:b\"></b:x></a:r>"
    );
    let o = run_stdin(&["xml", "c14n", "--exclusive", "--with-comments", "-"], doc);
    assert!(out(&o).contains("<!--c-->"));
    let o = run_stdin(&["xml", "c14n"], doc);
    assert_eq!(
        out(&o),
        "<a:r xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" z=\"1\" a:y=\"2\"><b:x></b:x></a:r>"
    );
    let o = run_stdin(&["xml", "c14n", "--exclusive"], b"<a><b></a>");
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).starts_with("-: line 1, column"), "{}", err(&o));
    let o = run(&["xml", "c14n", "/no/such/file.xml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("/no/such/file.xml"), "{}", err(&o));
}

#[test]
fn xml_sign_and_verify_round_trip_with_exit_codes() {
    let pki = Pki::new();
    let doc = write(pki.dir.path(), "env.xml", envelope().as_bytes());
    let p = |n: &str| pki.path(n).display().to_string();
    for (key, alg) in [("rsa", "rsa-sha256"), ("ec", "ecdsa-sha256")] {
        let signed = pki.path(&format!("signed-{key}.xml"));
        let o = run(&[
            "xml",
            "sign",
            "--key",
            &p(&format!("{key}.key")),
            "--cert",
            &p(&format!("{key}.pem")),
            "--alg",
            alg,
            "--out",
            signed.to_str().unwrap(),
            doc.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let o = run(&[
            "xml",
            "verify",
            "--trust",
            &p("ca.pem"),
            signed.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            out(&o).contains(&format!(
                "valid {alg} signature by O=jum-gateway development, CN=registry signer"
            )),
            "{}",
            out(&o)
        );

        let bytes = std::fs::read(&signed).unwrap();
        let tampered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("ref-0042", "ref-0043");
        let o = run_stdin(
            &["xml", "verify", "--trust", &p("ca.pem")],
            tampered.as_bytes(),
        );
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(err(&o).trim(), "invalid: digest of the signed content does not match: the document was changed after signing");

        let o = run_stdin(&["xml", "verify", "--trust", &p("other-ca.pem")], &bytes);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            err(&o).contains("signer certificate is not trusted"),
            "{}",
            err(&o)
        );
    }
    // stdin to stdout
    let o = run_stdin(
        &["xml", "sign", "--key", &p("ec.key"), "--cert", &p("ec.pem")],
        envelope().as_bytes(),
    );
    assert!(o.status.success());
    let o = run_stdin(&["xml", "verify", "--trust", &p("ca.pem"), "-"], &o.stdout);
    assert!(o.status.success(), "{}", text(&o));

    let o = run(&[
        "xml",
        "sign",
        "--key",
        &p("ec.key"),
        "--cert",
        &p("ec.pem"),
        "--alg",
        "rsa-sha256",
        doc.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        err(&o).trim(),
        "error: key: algorithm rsa-sha256 does not fit an EC P-256 key"
    );
    let o = run(&[
        "xml",
        "sign",
        "--key",
        &p("ec.key"),
        "--cert",
        &p("rsa.pem"),
        doc.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("the certificate does not belong to the private key"));
    let o = run(&[
        "xml",
        "verify",
        "--trust",
        &p("ca.pem"),
        doc.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err(&o).trim(), "invalid: no ds:Signature found");
}

#[test]
fn help_names_every_command_of_the_contract() {
    let o = run(&["--help"]);
    for c in ["ids", "xml", "bench"] {
        assert!(out(&o).contains(c), "{c} missing from --help");
    }
    let o = run(&["xml", "--help"]);
    for c in ["c14n", "sign", "verify", "validate"] {
        assert!(out(&o).contains(c), "{c} missing from xml --help");
    }
}

/// Peak memory of `jumgw xml c14n FILE`, in MB, as the kernel counts it
/// for a finished child (Python's `getrusage`, not our code), and whether
/// it succeeded.
fn peak_mb(file: &std::path::Path) -> (f64, bool) {
    let exe = jumgw().get_program().to_owned();
    let o = std::process::Command::new(python())
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             r = subprocess.run([sys.argv[1], 'xml', 'c14n', sys.argv[2]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
             print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)",
        ])
        .arg(exe)
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut f = text.split_whitespace();
    let kb: f64 = f
        .next()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{}", text));
    (kb / 1024.0, f.next() == Some("0"))
}

/// The XML tree stays a small multiple of its input: 10 MB of empty
/// elements is refused at the element limit before it grows (it took ~780
/// MB before), and 9 MB that is read whole stays under 100 MB too.
#[test]
fn a_large_document_is_held_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let empties = dir.path().join("empties.xml");
    std::fs::write(
        &empties,
        format!("<r>{}</r>", "<a/>".repeat(10 * 1024 * 1024 / 4 - 2)),
    )
    .unwrap();
    let (mb, ok) = peak_mb(&empties);
    assert!(!ok, "10 MB of empty elements is refused");
    assert!(mb < 100.0, "peak {mb:.0} MB");
    // Just under the element limit, 9 MB of text in them: read whole.
    let text = "x".repeat(95);
    let whole = dir.path().join("whole.xml");
    std::fs::write(
        &whole,
        format!("<r>{}</r>", format!("<a>{text}</a>").repeat(90_000)),
    )
    .unwrap();
    let (mb2, ok) = peak_mb(&whole);
    assert!(ok, "a 9 MB document of 90,000 elements is canonicalised");
    assert!(mb2 < 100.0, "peak {mb2:.0} MB");
    eprintln!(
        "peak memory: {mb:.0} MB refusing 10 MB of empty elements, {mb2:.0} MB reading 9 MB whole"
    );
}
