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

/// A token in a temp folder (SoftHSM2), initialised, with PEM keys
/// imported under labels `seal-<name>`.
struct Token {
    conf: std::path::PathBuf,
    pin_file: std::path::PathBuf,
}

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

impl Token {
    fn new(pki: &Pki) -> Token {
        Token::with_keys(
            pki.dir.path(),
            &[("rsa", &pki.path("rsa.key")), ("ec", &pki.path("ec.key"))],
        )
    }

    fn with_keys(dir: &std::path::Path, keys: &[(&str, &std::path::Path)]) -> Token {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = write(
            dir,
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            )
            .as_bytes(),
        );
        let util = |args: &[&str]| {
            let o = std::process::Command::new("softhsm2-util")
                .args(args)
                .env("SOFTHSM2_CONF", &conf)
                .output()
                .expect("softhsm2-util (Debian's softhsm2; ./tests/run installs it)");
            assert!(o.status.success(), "softhsm2-util {args:?}: {}", text(&o));
        };
        util(&[
            "--init-token",
            "--free",
            "--label",
            "jumgw",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ]);
        for (i, (name, key)) in keys.iter().enumerate() {
            let p8 = dir.join(format!("{name}.p8"));
            let o = std::process::Command::new("openssl")
                .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
                .arg(key)
                .arg("-out")
                .arg(&p8)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", text(&o));
            util(&[
                "--import",
                p8.to_str().unwrap(),
                "--token",
                "jumgw",
                "--label",
                &format!("seal-{name}"),
                "--id",
                &format!("{:02x}", i + 1),
                "--pin",
                "1234",
            ]);
            std::fs::remove_file(&p8).unwrap();
        }
        let pin_file = write(dir, "pin", b"1234\n");
        Token { conf, pin_file }
    }

    fn uri(&self, key: &str) -> String {
        format!(
            "pkcs11:token=jumgw;object=seal-{key}?module-path={SOFTHSM}&pin-source=file:{}",
            self.pin_file.display()
        )
    }
}

/// The seal on a token: `xml sign --key pkcs11:…` signs on it with RSA and
/// with ECDSA, and xmlsec1 accepts both; a wrong PIN, a missing key and a
/// certificate of another key are refused with the URI named, never the
/// PIN; 64 signatures at once on one token all verify.
#[test]
fn xml_sign_with_the_seal_on_a_pkcs11_token() {
    if let Ok(dir) = std::env::var("JUMGW_TEST_TOKEN_DIR") {
        return many_signatures_at_once_on_one_token(std::path::Path::new(&dir));
    }
    let pki = Pki::new();
    let token = Token::new(&pki);
    let doc = write(pki.dir.path(), "env.xml", envelope().as_bytes());
    let p = |n: &str| pki.path(n).display().to_string();
    let sign = |key: &str, cert: &str| {
        jumgw()
            .args(["xml", "sign", "--key", key, "--cert", cert])
            .arg(&doc)
            .env("SOFTHSM2_CONF", &token.conf)
            .output()
            .unwrap()
    };
    for key in ["rsa", "ec"] {
        let o = sign(&token.uri(key), &p(&format!("{key}.pem")));
        assert!(o.status.success(), "{key}: {}", text(&o));
        let signed = write(pki.dir.path(), &format!("token-{key}.xml"), &o.stdout);
        assert_xmlsec1_accepts(
            &signed,
            &pki.path("ca.pem"),
            &format!("signed on the token with {key}"),
        );
    }
    let wrong_pin =
        format!("pkcs11:token=jumgw;object=seal-rsa?module-path={SOFTHSM}&pin-value=9999");
    let o = sign(&wrong_pin, &p("rsa.pem"));
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("is the PIN right"), "{}", err(&o));
    assert!(
        err(&o).contains("object=seal-rsa") && !err(&o).contains("9999"),
        "{}",
        err(&o)
    );
    let o = sign(&token.uri("dsa"), &p("rsa.pem"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("no private key with this label"),
        "{}",
        err(&o)
    );
    let o = sign(&token.uri("ec"), &p("rsa.pem"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("does not belong to the key on the device"),
        "{}",
        err(&o)
    );

    // Many at once, on one token, each on a session of its own: in a
    // process of its own, since the module reads SOFTHSM2_CONF from the
    // environment, which a test must not change under the others.
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "xml_sign_with_the_seal_on_a_pkcs11_token",
            "--test-threads",
            "1",
        ])
        .env("SOFTHSM2_CONF", &token.conf)
        .env("JUMGW_TEST_TOKEN_DIR", pki.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 passed"),
        "{}",
        text(&o)
    );
}

fn many_signatures_at_once_on_one_token(dir: &std::path::Path) {
    let uri = format!(
        "pkcs11:token=jumgw;object=seal-ec?module-path={SOFTHSM}&pin-source=file:{}",
        dir.join("pin").display()
    );
    let key = std::sync::Arc::new(
        jum_gateway::pki::pkcs11::signing_key(
            std::path::Path::new(&uri),
            &std::fs::read(dir.join("ec.pem")).unwrap(),
        )
        .unwrap(),
    );
    let trust = jum_gateway::xml::TrustStore::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap())
        .unwrap();
    let signed: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let key = key.clone();
                s.spawn(move || {
                    let body = envelope().replace("ref-0042", &format!("ref-{i:04}"));
                    jum_gateway::xml::sign(body.as_bytes(), &key, &Default::default()).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, doc) in signed.iter().enumerate() {
        let v = jum_gateway::xml::verify(doc, &trust, &Default::default());
        assert!(v.is_ok(), "signature {i}: {:?}", v.err());
    }
}

/// `serve --demo` with the municipality's seal on a token: the simulated
/// registries verify every request it signs there, and the documents come
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_seal_on_a_token_gets_documents() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = run(&[
        "certs",
        "init",
        "--dir",
        data.join("certs").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let token = Token::with_keys(dir.path(), &[("gw", &data.join("certs/gateway-sign.key"))]);
    // Only the token holds the seal now.
    std::fs::remove_file(data.join("certs/gateway-sign.key")).unwrap();
    let port = free_port();
    let env: Vec<(String, String)> = vec![
        ("SOFTHSM2_CONF".into(), token.conf.display().to_string()),
        ("JUMGW_GATEWAY__SIGN_KEY".into(), token.uri("gw")),
    ];
    let _d = start_daemon_env(&data, port, &env);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&http, port, i).await.expect("accepted"));
    }
    wait_delivered(&http, port, &ids).await;
}
