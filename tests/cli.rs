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

/// The address space `jumgw serve` is given in the memory tests: the
/// genuine daemon with this debug binary starts in 300 MiB (its libraries
/// mapped, its threads' stacks and two allocator arenas reserved) and not
/// in 256 MiB, measured with `prlimit --as`; 512 MiB leaves room for its
/// exchanges, and is half of what the 1 GB answer alone would take if it
/// were read whole.
const DAEMON_AS: u64 = 512 << 20;

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `jumgw simulate --help` names every fault rule the simulator knows.
#[test]
fn simulate_help_names_every_fault() {
    let o = run(&["simulate", "--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for (name, _) in jum_gateway::sim::faults::Fault::ALL {
        assert!(
            help.split([' ', ',', ';', '(', ')']).any(|w| w == name),
            "{name} is not in: {help}"
        );
    }
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

/// `jumgw deadline`: the last day first, then why; JSON too; a bad date
/// named. The expectations are counted by hand from the law (ZUP art.
/// 82-83, the holidays law) and that year's calendar.
#[test]
fn deadline_prints_the_last_day_of_a_zup_limit_and_why() {
    // 2021: 15 days from Monday 19 April reach Tuesday 4 May, off because
    // 2 May (Labour Day, and Easter) was a Sunday and Monday the 3rd was
    // Easter Monday: the limit ends Wednesday 5 May.
    let o = run(&["deadline", "--from", "2021-04-19", "--days", "15"]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("2021-05-05"), "{text}");
    assert!(
        text.contains("2021-05-04 (Tuesday): not a working day"),
        "{text}"
    );
    assert!(text.contains("Praznik rada fell on a Sunday"), "{text}");
    // 2026: Statehood Day, 15 February, on a Sunday; the limit from
    // Saturday 31 January moves over the 15th, 16th and 17th.
    let o = run(&["deadline", "--from", "2026-01-31", "--days", "15", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["last"], "2026-02-18", "{v}");
    assert_eq!(v["counted"], "2026-02-15", "{v}");
    let moved: Vec<&str> = v["moved_over"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["date"].as_str().unwrap())
        .collect();
    assert_eq!(moved, ["2026-02-15", "2026-02-16", "2026-02-17"], "{v}");
    // 2027: Easter on 2 May again; from Monday 19 April to Wednesday 5 May.
    let o = run(&["deadline", "--from", "2027-04-19", "--days", "15"]);
    assert_eq!(out(&o).lines().next(), Some("2027-05-05"), "{}", out(&o));
    // A working last day stays.
    let o = run(&["deadline", "--from", "2026-12-07", "--days", "3"]);
    assert_eq!(out(&o).lines().next(), Some("2026-12-10"), "{}", out(&o));
    let o = run(&["deadline", "--from", "9999-12-31", "--days", "400"]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(err(&o).contains("past the calendar"), "{}", err(&o));
    for bad in ["2026-02-30", "7.12.2026", "2026-1-5", "10000-01-01"] {
        let o = run(&["deadline", "--from", bad, "--days", "3"]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(
            err(&o).contains("is not a date written YYYY-MM-DD"),
            "{bad}: {}",
            err(&o)
        );
    }
}

#[test]
fn help_names_every_command_of_the_contract() {
    let o = run(&["--help"]);
    for c in ["ids", "xml", "bench", "deadline"] {
        assert!(out(&o).contains(c), "{c} missing from --help");
    }
    let o = run(&["xml", "--help"]);
    for c in ["c14n", "sign", "verify", "validate"] {
        assert!(out(&o).contains(c), "{c} missing from xml --help");
    }
}

/// How `jumgw xml c14n FILE` ended under a 200 MiB address space (the
/// 9 MB document below is read whole under 150 MiB): its peak memory in MB
/// as the kernel counts it for a finished child (Python's `getrusage`, not
/// our code), its exit code (negative: the signal that killed it, as an
/// OOM kill's -9 or an allocation failure's abort, -6) and what it said on
/// stderr.
fn c14n_peak(file: &std::path::Path) -> (f64, i32, String) {
    let exe = jumgw().get_program().to_owned();
    let o = std::process::Command::new(python())
        .args([
            "-c",
            "import json, resource, subprocess, sys\n\
             cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (200 << 20, 200 << 20))\n\
             r = subprocess.run([sys.argv[1], 'xml', 'c14n', sys.argv[2]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=cap)\n\
             print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode, r.stderr.decode('utf-8', 'replace')]))",
        ])
        .arg(exe)
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (kb, code, stderr): (f64, i32, String) =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (kb / 1024.0, code, stderr)
}

/// The XML tree stays a small multiple of its input: 10 MB of empty
/// elements is refused at the element limit before it grows (it took ~780
/// MB before), saying so with exit code 1 (not a panic's 101, not killed),
/// and 9 MB that is read whole stays under 100 MB too.
#[test]
fn a_large_document_is_held_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let empties = dir.path().join("empties.xml");
    std::fs::write(
        &empties,
        format!("<r>{}</r>", "<a/>".repeat(10 * 1024 * 1024 / 4 - 2)),
    )
    .unwrap();
    let (mb, code, stderr) = c14n_peak(&empties);
    assert_eq!(code, 1, "10 MB of empty elements is refused: {stderr}");
    let limit = jum_gateway::xml::Limits::default().max_elements;
    assert!(
        stderr.contains(&format!("more than {limit} elements")),
        "refused at the element limit: {stderr}"
    );
    assert!(mb < 100.0, "peak {mb:.0} MB");
    // Just under the element limit, 9 MB of text in them: read whole.
    let text = "x".repeat(95);
    let whole = dir.path().join("whole.xml");
    std::fs::write(
        &whole,
        format!("<r>{}</r>", format!("<a>{text}</a>").repeat(90_000)),
    )
    .unwrap();
    let (mb2, code, stderr) = c14n_peak(&whole);
    assert_eq!(
        code, 0,
        "a 9 MB document of 90,000 elements is canonicalised: {stderr}"
    );
    assert!(90_000 <= limit, "the document is under the limit");
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

    // TLS server certificates for the two keys, for the handshakes below.
    for (name, key) in [("rsa", &pki.rsa.key), ("ec", &pki.ec.key)] {
        let mut spec =
            jum_gateway::pki::CertSpec::new("localhost", jum_gateway::pki::Role::TlsServer);
        spec.san = vec!["localhost".into()];
        let c = jum_gateway::pki::issue(&spec, key, Some((&pki.ca.cert, &pki.ca.key))).unwrap();
        write(
            pki.dir.path(),
            &format!("{name}-tls.pem"),
            &c.to_pem().unwrap(),
        );
    }

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

/// A key whose token is taken out (its SoftHSM2 folder moved away): every
/// signature fails naming the key, yet the token is looked for only once
/// per backoff step, not once per signature, and looked for again later.
/// Another token put in its place, with another key under the same label,
/// is not used. The genuine one put back, the same key signs again, in the
/// same process, and its signature verifies with the key's certificate.
#[test]
fn a_key_whose_token_is_away_is_looked_for_with_backoff_and_used_again() {
    if let Ok(dir) = std::env::var("JUMGW_TEST_TOKEN_AWAY_DIR") {
        return token_away_and_back(std::path::Path::new(&dir));
    }
    let pki = Pki::new();
    let token = Token::new(&pki);
    // The impostor: a token of the same label, with another RSA key under
    // the same label, made in a folder of its own.
    let other = pki.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let other_key = other.join("other.key");
    let o = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    Token::with_keys(&other, &[("rsa", &other_key)]);
    // In a process of its own: the module reads SOFTHSM2_CONF from the
    // environment, and is initialised once per process.
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_key_whose_token_is_away_is_looked_for_with_backoff_and_used_again",
            "--test-threads",
            "1",
        ])
        .env("SOFTHSM2_CONF", &token.conf)
        .env("JUMGW_TEST_TOKEN_AWAY_DIR", pki.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 passed"),
        "{}",
        text(&o)
    );
}

fn token_away_and_back(dir: &std::path::Path) {
    use jum_gateway::xml::DeviceKey;
    let uri = format!(
        "pkcs11:token=jumgw;object=seal-rsa?module-path={SOFTHSM}&pin-source=file:{}",
        dir.join("pin").display()
    );
    let key = jum_gateway::pki::pkcs11::TokenKey::open(&uri).unwrap();
    let public = openssl::x509::X509::from_pem(&std::fs::read(dir.join("rsa.pem")).unwrap())
        .unwrap()
        .public_key()
        .unwrap();
    // As the gateway does once the key is proven against its certificate.
    key.bind(public.clone());
    let verifies = |sig: &[u8]| {
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
        v.update(b"to be signed").unwrap();
        v.verify(sig).unwrap()
    };
    assert!(verifies(&key.sign_sha256(b"to be signed").unwrap()));
    let state = jum_gateway::pki::pkcs11::state(&uri).unwrap();
    assert!(state.up && state.error.is_none(), "{state:?}");

    let tokens = dir.join("tokens");
    let folder = std::fs::read_dir(&tokens)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let away = dir.join("away");
    std::fs::rename(&folder, &away).unwrap();
    for _ in 0..50 {
        let e = key.sign_sha256(b"to be signed").unwrap_err();
        assert!(e.contains("object=seal-rsa") && !e.contains("1234"), "{e}");
    }
    let s = key.token_state();
    assert!(!s.up, "{s:?}");
    // 50 signatures, a handful of looks at most (the first at once, then
    // one per backoff step).
    assert!((1..=5).contains(&s.looks), "{s:?}");
    // Looked for again later, all the same.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while key.token_state().looks == s.looks {
        assert!(key.sign_sha256(b"to be signed").is_err());
        assert!(std::time::Instant::now() < end, "never looked for again");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Another token in its place: looked at, and refused.
    let other = std::fs::read_dir(dir.join("other/tokens"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let impostor = tokens.join(other.file_name().unwrap());
    std::fs::rename(&other, &impostor).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let e = key.sign_sha256(b"to be signed").unwrap_err();
        if e.contains("not the one its certificate names") {
            break;
        }
        assert!(std::time::Instant::now() < end, "{e}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!key.token_state().up);
    std::fs::rename(&impostor, &other).unwrap();

    std::fs::rename(&away, &folder).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sig = loop {
        match key.sign_sha256(b"to be signed") {
            Ok(sig) => break sig,
            Err(e) => assert!(std::time::Instant::now() < end, "not used again: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(verifies(&sig));
    let s = jum_gateway::pki::pkcs11::state(&uri).unwrap();
    assert!(s.up && s.error.is_none(), "{s:?}");
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
    // A TLS server (the API's, the simulator's) with its key on the token:
    // a client that trusts only the CA completes the handshake, by RSA-PSS
    // and by ECDSA.
    for key in ["rsa", "ec"] {
        let uri = format!(
            "pkcs11:token=jumgw;object=seal-{key}?module-path={SOFTHSM}&pin-source=file:{}",
            dir.join("pin").display()
        );
        let server = jum_gateway::pki::tls::server_config(
            &dir.join(format!("{key}-tls.pem")),
            std::path::Path::new(&uri),
            None,
            jum_gateway::pki::tls::ClientAuth::Optional,
        )
        .unwrap();
        tls_handshake(server, &dir.join("ca.pem"), key);
    }
}

fn tls_handshake(server: std::sync::Arc<rustls::ServerConfig>, ca: &std::path::Path, what: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await?;
            use tokio::io::AsyncWriteExt;
            tls.write_all(b"hello").await?;
            tls.shutdown().await
        });
        let mut roots = rustls::RootCertStore::empty();
        for c in jum_gateway::pki::tls::load_certs(ca).unwrap() {
            roots.add(c).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("{what}: handshake: {e}"));
        let mut got = Vec::new();
        use tokio::io::AsyncReadExt;
        let _ = tls.read_to_end(&mut got).await;
        assert_eq!(got, b"hello", "{what}");
        accept.await.unwrap().unwrap();
    });
}

/// `certs init --pkcs11` makes the gateway's seal and TLS client keys on
/// a token, never extractable (as OpenSC's pkcs11-tool reads them), and
/// `serve --demo` with both keys only there signs every request and
/// shakes every registry's hand on the token: the simulated registries
/// verify both, and 64 documents filed at once come back (up to 64
/// exchanges at a time on the one token), their signers checked for
/// revocation. With RSA keys (TLS by RSA-PSS) and with ECDSA keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_seal_and_tls_key_on_a_token_gets_documents() {
    for kind in ["rsa", "ec"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let token = Token::with_keys(dir.path(), &[]);
        let seal = token.uri("gw");
        let init = |extra: &[&str]| {
            jumgw()
                .args([
                    "certs",
                    "init",
                    "--key-type",
                    kind,
                    "--pkcs11",
                    &seal,
                    "--dir",
                ])
                .arg(data.join("certs"))
                .args(extra)
                .env("SOFTHSM2_CONF", &token.conf)
                .output()
                .unwrap()
        };
        let o = init(&[]);
        assert!(o.status.success(), "{kind}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            out.contains("gateway.tls_key") && !out.contains("1234"),
            "{out}"
        );
        for gone in ["gateway-sign.key", "gateway-tls.key"] {
            assert!(
                !data.join("certs").join(gone).exists(),
                "{kind}: {gone} written"
            );
        }
        // Again: the labels are taken, and only --force replaces them.
        let o = init(&[]);
        assert!(!o.status.success(), "{kind}: made twice");
        let o = init(&["--force"]);
        assert!(o.status.success(), "{kind}: {}", text(&o));

        let o = std::process::Command::new("pkcs11-tool")
            .args([
                "--module",
                SOFTHSM,
                "--login",
                "--pin",
                "1234",
                "--list-objects",
            ])
            .args(["--type", "privkey"])
            .env("SOFTHSM2_CONF", &token.conf)
            .output()
            .expect("pkcs11-tool (Debian's opensc; ./tests/run installs it)");
        assert!(o.status.success(), "{}", text(&o));
        let listed = String::from_utf8_lossy(&o.stdout).to_string();
        let keys: Vec<&str> = listed.split("Private Key Object").skip(1).collect();
        assert_eq!(keys.len(), 2, "{listed}");
        for k in &keys {
            assert!(
                k.contains("never extractable") && k.contains("sensitive"),
                "{kind}: {listed}"
            );
            assert!(
                k.contains(if kind == "rsa" { "RSA" } else { "EC" }),
                "{kind}: {listed}"
            );
        }
        assert!(listed.contains("seal-gw-tls"), "{listed}");

        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("SOFTHSM2_CONF".into(), token.conf.display().to_string()),
            ("JUMGW_GATEWAY__SIGN_KEY".into(), seal.clone()),
            (
                "JUMGW_GATEWAY__TLS_KEY".into(),
                jum_gateway::pki::tls_key_uri(&seal),
            ),
        ];
        // Up to 64 exchanges at once on the one token (three registries,
        // 22 each, and a rate that does not hold them back).
        for r in ["CIVIL", "CADASTRE", "TAX"] {
            env.push((format!("JUMGW_REGISTRIES__{r}__MAX_IN_FLIGHT"), "22".into()));
            env.push((format!("JUMGW_REGISTRIES__{r}__RATE_PER_S"), "1000".into()));
        }
        let d = start_daemon_env(&data, port, &env);
        let http = reqwest::Client::new();
        let ids: Vec<String> =
            futures_util::future::join_all((0..64).map(|i| submit(&http, port, i)))
                .await
                .into_iter()
                .map(|id| id.expect("accepted"))
                .collect();
        wait_delivered(&http, port, &ids).await;
        // Revocation was checked on the way, and counted.
        let metrics = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in [
            "jumgw_revocation_checks_total{",
            "jumgw_revocation_good_age_seconds{",
        ] {
            assert!(metrics.contains(name), "{name} missing:\n{metrics}");
        }
        // A case dossier sealed with the key on the token (XAdES B-T),
        // verified with nothing but its bytes.
        let base = format!("http://127.0.0.1:{port}");
        wait_stamped(&http, &base, &ids, std::time::Duration::from_secs(30)).await;
        let case = get_json(
            &http,
            &format!("{base}/api/v1/requests/{}", ids[0]),
            Some("demo-backoffice"),
        )
        .await["case"]
            .as_str()
            .unwrap()
            .to_owned();
        let file = dir.path().join(format!("{kind}.asice"));
        let o = run(&[
            "dossier",
            "export",
            &case,
            "--out",
            file.to_str().unwrap(),
            "--url",
            &base,
            "--token",
            "demo-backoffice",
        ]);
        assert!(o.status.success(), "{kind}: {}", text(&o));
        let (code, report) = dossier_verify(&file, &[]);
        assert_eq!(code, 0, "{kind}: {report}");
        assert!(
            report.contains("sealed by O=jum-gateway development, CN=jum-gateway signer"),
            "{report}"
        );
        drop(d);
    }
}

/// An `openssl ca` of its own in `dir`: a CA, signers issued through its
/// database (`good`, `revoked`, the latter revoked there), one issued
/// beside it (`unknown`, not in the database), CRLs by `openssl ca
/// -gencrl` (current, expired, and one signed by a twin CA of the same
/// name), and `openssl ocsp` responders over the database.
struct OpensslCa {
    dir: std::path::PathBuf,
    cnf: std::path::PathBuf,
}

impl OpensslCa {
    /// Its signers name `http://127.0.0.1:{ocsp_port}` as their OCSP
    /// responder (AIA).
    fn new(dir: &std::path::Path, ocsp_port: u16) -> OpensslCa {
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("index.txt"), b"").unwrap();
        std::fs::write(dir.join("serial"), b"1000\n").unwrap();
        std::fs::write(dir.join("crlnumber"), b"01\n").unwrap();
        // `crlnumber` and `crl_extensions` make a v2 CRL; without both,
        // `openssl ca -gencrl` makes a version 1 CRL.
        let cnf_with = |name: &str, crl: &str| {
            write(
                dir,
                name,
                format!(
                    "[ca]\ndefault_ca = CA_default\n[CA_default]\ndir = {d}\ndatabase = $dir/index.txt\n\
                     new_certs_dir = $dir/newcerts\nserial = $dir/serial\n{crl}\
                     certificate = $dir/ca.pem\nprivate_key = $dir/ca.key\ndefault_md = sha256\n\
                     default_days = 30\ndefault_crl_days = 1\npolicy = policy_any\nunique_subject = no\n\
                     x509_extensions = signer_ext\n[policy_any]\ncommonName = supplied\n\
                     [signer_ext]\nbasicConstraints = CA:FALSE\n\
                     keyUsage = critical, digitalSignature, nonRepudiation\n\
                     authorityInfoAccess = OCSP;URI:http://127.0.0.1:{ocsp_port}\n\
                     [req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n\
                     [ca_ext]\nbasicConstraints = critical, CA:TRUE\n\
                     keyUsage = critical, keyCertSign, cRLSign\n\
                     [delta_ext]\n2.5.29.27 = critical, DER:02:01:01\n",
                    d = dir.display()
                )
                .as_bytes(),
            )
        };
        let cnf = cnf_with("ca.cnf", "crlnumber = $dir/crlnumber\n");
        let cnf_v1 = cnf_with("ca-v1.cnf", "");
        let cnf_delta = cnf_with(
            "ca-delta.cnf",
            "crlnumber = $dir/crlnumber\ncrl_extensions = delta_ext\n",
        );
        let ca = OpensslCa {
            dir: dir.to_owned(),
            cnf,
        };
        ca.ossl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Oracle CA",
            "-days",
            "30",
            "-extensions",
            "ca_ext",
        ]);
        ca.ossl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "twin.key",
            "-out",
            "twin.pem",
            "-subj",
            "/CN=Oracle CA",
            "-days",
            "30",
            "-extensions",
            "ca_ext",
        ]);
        for name in ["good", "revoked", "unknown"] {
            ca.ossl(&[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name} signer"),
            ]);
        }
        for name in ["good", "revoked"] {
            ca.ossl(&[
                "ca",
                "-batch",
                "-notext",
                "-in",
                &format!("{name}.csr"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        // Beside the database: its responder has never heard of it.
        ca.ossl(&[
            "x509",
            "-req",
            "-in",
            "unknown.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "777",
            "-days",
            "30",
            "-out",
            "unknown.pem",
            "-extfile",
            "ca.cnf",
            "-extensions",
            "signer_ext",
        ]);
        // No reason: an entry without extensions, so that the CRL made
        // without CRL extensions is a version 1 CRL.
        ca.ossl(&["ca", "-revoke", "revoked.pem"]);
        ca.ossl(&["ca", "-gencrl", "-out", "crl.pem"]);
        ca.ossl(&[
            "ca",
            "-gencrl",
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200102000000Z",
            "-out",
            "expired-crl.pem",
        ]);
        ca.ossl(&[
            "ca",
            "-gencrl",
            "-keyfile",
            "twin.key",
            "-cert",
            "twin.pem",
            "-out",
            "twin-crl.pem",
        ]);
        for (cnf, out) in [(&cnf_v1, "v1-crl.pem"), (&cnf_delta, "delta-crl.pem")] {
            let o = std::process::Command::new("openssl")
                .args(["ca", "-gencrl", "-out", out, "-config"])
                .arg(cnf)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(o.status.success(), "openssl ca -gencrl {out}: {}", text(&o));
        }
        ca
    }

    fn ossl(&self, args: &[&str]) {
        let mut c = std::process::Command::new("openssl");
        c.args(args).current_dir(&self.dir);
        if matches!(args[0], "ca" | "req") {
            c.arg("-config").arg(&self.cnf);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    /// `openssl ocsp` answering for the database on `port`, signing with
    /// `signer` (the CA's own key, or another's); killed when dropped.
    fn responder(&self, port: u16, signer: &str) -> KillOnDrop {
        let log = self.dir.join(format!("ocsp-{port}-{signer}.log"));
        let child = std::process::Command::new("openssl")
            .args(["ocsp", "-index", "index.txt", "-port", &port.to_string()])
            .args([
                "-rsigner",
                &format!("{signer}.pem"),
                "-rkey",
                &format!("{signer}.key"),
            ])
            .args(["-CA", "ca.pem", "-nmin", "5"])
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Not by connecting: it serves one connection at a time and would
        // wait on an empty one.
        for _ in 0..200 {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("waiting for OCSP")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        KillOnDrop(child)
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `xml verify --crl` and `--ocsp` against `openssl ca`'s CRLs and
/// `openssl ocsp` over its database: a good signer passes; a revoked one,
/// one the responder does not know, an expired CRL, a CRL and OCSP answers
/// signed by a twin CA (the CA's name, another key) are each refused with
/// their reason (exit code 1); a responder that is down is a failure to
/// check (exit code 2), not a verdict. Nonces, stale answers and
/// responders the CA never authorised: `pki::revocation`'s unit tests.
#[test]
fn xml_verify_checks_revocation_against_openssl_ca_and_ocsp() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ca = OpensslCa::new(&dir.path().join("ca"), port);
    let doc = write(dir.path(), "env.xml", envelope().as_bytes());
    let signed: std::collections::HashMap<&str, std::path::PathBuf> =
        ["good", "revoked", "unknown"]
            .into_iter()
            .map(|n| {
                let o = jumgw()
                    .args(["xml", "sign", "--key"])
                    .arg(ca.path(&format!("{n}.key")))
                    .arg("--cert")
                    .arg(ca.path(&format!("{n}.pem")))
                    .arg(&doc)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{n}: {}", text(&o));
                (n, write(dir.path(), &format!("{n}.xml"), &o.stdout))
            })
            .collect();
    let verify = |who: &str, extra: &[&str]| {
        jumgw()
            .args(["xml", "verify", "--trust"])
            .arg(ca.path("ca.pem"))
            .args(extra)
            .arg(&signed[who])
            .output()
            .unwrap()
    };
    let crl = ca.path("crl.pem").display().to_string();
    let o = verify("good", &["--crl", &crl]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not revoked (CRL"), "{}", text(&o));
    let o = verify("revoked", &["--crl", &crl]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err(&o).contains("revoked since"), "{}", err(&o));
    let o = verify(
        "good",
        &["--crl", ca.path("expired-crl.pem").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err(&o).contains("expired"), "{}", err(&o));
    let o = verify(
        "good",
        &["--crl", ca.path("twin-crl.pem").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err(&o).contains("signature"), "{}", err(&o));

    let url = format!("http://127.0.0.1:{port}");
    {
        let _responder = ca.responder(port, "ca");
        let o = verify("good", &["--ocsp", &url]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("not revoked (OCSP"), "{}", text(&o));
        let o = verify("revoked", &["--ocsp", &url]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(err(&o).contains("revoked since"), "{}", err(&o));
        let o = verify("unknown", &["--ocsp", &url]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(err(&o).contains("unknown to the responder"), "{}", err(&o));
        // Both at once: each must hold.
        let o = verify("good", &["--ocsp", &url, "--crl", &crl]);
        assert!(o.status.success(), "{}", text(&o));
        // The responder the certificate names (its AIA).
        let o = verify("good", &["--ocsp", "aia"]);
        assert!(o.status.success(), "{}", text(&o));
        let o = verify("revoked", &["--ocsp", "aia"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    }
    {
        // Signed by a key of the same name as the CA's, not the CA's.
        let _responder = ca.responder(port, "twin");
        let o = verify("good", &["--ocsp", &url]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(err(&o).contains("signature"), "{}", err(&o));
    }
    for down in [url.as_str(), "aia"] {
        let o = verify("good", &["--ocsp", down]);
        assert_eq!(o.status.code(), Some(2), "{down}: {}", text(&o));
        assert!(err(&o).contains(&url), "{}", err(&o));
    }
}

/// Signed by each signer of an `openssl ca`: the envelope, by `xml sign`.
fn signed_by(
    ca: &OpensslCa,
    dir: &std::path::Path,
    who: &[&str],
) -> std::collections::HashMap<String, std::path::PathBuf> {
    let doc = write(dir, "env.xml", envelope().as_bytes());
    who.iter()
        .map(|n| {
            let o = jumgw()
                .args(["xml", "sign", "--key"])
                .arg(ca.path(&format!("{n}.key")))
                .arg("--cert")
                .arg(ca.path(&format!("{n}.pem")))
                .arg(&doc)
                .output()
                .unwrap();
            assert!(o.status.success(), "{n}: {}", text(&o));
            (n.to_string(), write(dir, &format!("{n}.xml"), &o.stdout))
        })
        .collect()
}

/// A version 1 CRL as `openssl ca -gencrl` makes it without CRL
/// extensions is read, for a good signer and a revoked one alike; a delta
/// CRL (`openssl ca` with a critical delta CRL indicator) is refused as
/// not complete; a CRL without nextUpdate (made by asn1crypto and
/// `cryptography`) two hours old is stale past the hour's maximum age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_verify_reads_v1_crls_and_refuses_stale_and_delta_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(&dir.path().join("ca"), free_port());
    let signed = signed_by(&ca, dir.path(), &["good", "revoked"]);
    let verify = |who: &str, crl: &std::path::Path| {
        jumgw()
            .args(["xml", "verify", "--trust"])
            .arg(ca.path("ca.pem"))
            .arg("--crl")
            .arg(crl)
            .arg(&signed[who])
            .output()
            .unwrap()
    };
    let shown = |crl: &std::path::Path| {
        let o = std::process::Command::new("openssl")
            .args(["crl", "-noout", "-text", "-in"])
            .arg(crl)
            .output()
            .unwrap();
        text(&o)
    };
    let v1 = ca.path("v1-crl.pem");
    assert!(shown(&v1).contains("Version 1 (0x0)"), "{}", shown(&v1));
    let o = verify("good", &v1);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not revoked (CRL"), "{}", text(&o));
    let o = verify("revoked", &v1);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err(&o).contains("revoked since"), "{}", err(&o));
    // The v2 CRL beside it, as before.
    let o = verify("good", &ca.path("crl.pem"));
    assert!(o.status.success(), "{}", text(&o));

    let delta = ca.path("delta-crl.pem");
    assert!(
        shown(&delta).contains("Delta CRL Indicator: critical"),
        "{}",
        shown(&delta)
    );
    for who in ["good", "revoked"] {
        let o = verify(who, &delta);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            err(&o).contains("a delta CRL is not a complete CRL"),
            "{}",
            err(&o)
        );
    }

    let py = PyResponder::start(&ca.path("ca.pem"), &ca.path("ca.key"), &[]);
    let undated = reqwest::get(py.url("/crl-undated"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let undated = write(dir.path(), "undated.crl", &undated);
    let o = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&undated)
        .output()
        .unwrap();
    assert!(text(&o).contains("Next Update: NONE"), "{}", text(&o));
    let o = verify("good", &undated);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        err(&o).contains("stale: the CRL has no nextUpdate") && err(&o).contains("maximum age"),
        "{}",
        err(&o)
    );
}

/// OCSP answers made by Python `cryptography`, not our code: a fresh good
/// answer verifies and a fresh revoked one is refused; a replayed answer
/// (400 days old, no nonce, no nextUpdate), an old one that echoes the
/// nonce, one signed by a delegated responder whose certificate expired
/// in 2021, one with another nonce than ours, one signed by a certificate
/// the CA issued but not for OCSP, one signed by another CA's responder,
/// one behind a 307 redirect to another port, and a responder that has
/// stopped (it answered a moment before) are each refused with their
/// reason; a valid delegated responder is believed.
#[test]
fn xml_verify_believes_only_fresh_ocsp_answers_from_an_authorised_responder() {
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(&dir.path().join("ca"), free_port());
    let signed = signed_by(&ca, dir.path(), &["good", "revoked"]);
    let revoked = ca.path("revoked.pem");
    let py = PyResponder::start(
        &ca.path("ca.pem"),
        &ca.path("ca.key"),
        &[("--revoked", &revoked)],
    );
    let other = PyResponder::start(&ca.path("ca.pem"), &ca.path("ca.key"), &[]);
    let verify = |who: &str, url: &str| {
        jumgw()
            .args(["xml", "verify", "--trust"])
            .arg(ca.path("ca.pem"))
            .args(["--ocsp", url])
            .arg(&signed[who])
            .output()
            .unwrap()
    };
    let o = verify("good", &py.url("/fresh"));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not revoked (OCSP"), "{}", text(&o));
    let o = verify("revoked", &py.url("/fresh"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err(&o).contains("revoked since"), "{}", err(&o));
    let o = verify("good", &py.url("/delegated"));
    assert!(o.status.success(), "{}", text(&o));

    let refused = [
        ("/replay", 1, "the answer does not carry the nonce we sent"),
        (
            "/old",
            1,
            "stale: the OCSP answer has no nextUpdate and its thisUpdate",
        ),
        ("/old", 1, "is 400 days old, more than the maximum age of 60 min"),
        (
            "/delegated-expired",
            1,
            "the delegated responder \"CN=delegated OCSP responder\" was not valid when the answer was produced",
        ),
        ("/delegated-expired", 1, "2021-06-30T00:00:00Z"),
        ("/wrong-nonce", 1, "the nonce is not the one we sent"),
        (
            "/unauthorised",
            1,
            "signed by a certificate the CA did not authorise for OCSP",
        ),
        (
            "/unauthorised",
            1,
            "the responder \"CN=not an OCSP responder\" does not carry id-kp-OCSPSigning",
        ),
        (
            "/foreign",
            1,
            "signed by a certificate the CA did not authorise for OCSP: the responder \
             \"CN=foreign OCSP responder\" is not issued by the certificate's CA",
        ),
    ];
    for (path, code, says) in refused {
        let o = verify("good", &py.url(path));
        assert_eq!(o.status.code(), Some(code), "{path}: {}", text(&o));
        assert!(err(&o).contains(says), "{path}: {}", err(&o));
    }
    // Told the responder pre-produces its answers, the replay is refused
    // for its age alone; an old answer holds only under a longer age.
    let with = |path: &str, extra: &[&str]| {
        jumgw()
            .args(["xml", "verify", "--trust"])
            .arg(ca.path("ca.pem"))
            .args(["--ocsp", &py.url(path)])
            .args(extra)
            .arg(&signed["good"])
            .output()
            .unwrap()
    };
    let o = with("/replay", &["--ocsp-preproduced"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        err(&o).contains("is 400 days old, more than the maximum age of 60 min"),
        "{}",
        err(&o)
    );
    let o = with("/old", &["--max-age", "401d"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = with("/replay", &["--ocsp-preproduced", "--max-age", "401d"]);
    assert!(o.status.success(), "{}", text(&o));
    // A responder that is down (this one stopped after it answered):
    // the status cannot be had, said so, and nothing is believed.
    let down = PyResponder::start(&ca.path("ca.pem"), &ca.path("ca.key"), &[]);
    let down_url = down.url("/fresh");
    let o = verify("good", &down_url);
    assert!(o.status.success(), "{}", text(&o));
    drop(down);
    let o = verify("good", &down_url);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        err(&o).contains(&format!("OCSP: {down_url}: error sending request")),
        "{}",
        err(&o)
    );
    assert!(!err(&o).contains("not revoked"), "{}", err(&o));
    let hop = py.url(&format!("/redirect/{}", other.port));
    let o = verify("good", &hop);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        err(&o).contains(&format!(
            "the responder redirected to {} (HTTP 307), which is not followed",
            other.url("/fresh")
        )),
        "{}",
        err(&o)
    );
}

/// A responder that answers 1 GB with a Content-Length, or 2 GB chunked
/// without one, and a CRL file of 1 GB: `xml verify` under an address
/// space of 256 MiB (the genuine check needs about 120 MiB with this
/// debug binary's libraries mapped) refuses each with a clean message
/// (exit 2), never an allocation failure; the genuine answer verifies
/// under the same limit.
#[test]
fn xml_verify_reads_hostile_answers_with_a_cap_under_a_memory_limit() {
    const LIMIT: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let ca = OpensslCa::new(&dir.path().join("ca"), free_port());
    let signed = signed_by(&ca, dir.path(), &["good"]);
    let py = PyResponder::start(&ca.path("ca.pem"), &ca.path("ca.key"), &[]);
    let verify = |extra: &[&std::ffi::OsStr]| {
        jumgw_limited(LIMIT)
            .args(["xml", "verify", "--trust"])
            .arg(ca.path("ca.pem"))
            .args(extra)
            .arg(&signed["good"])
            .output()
            .unwrap()
    };
    let fresh = py.url("/fresh");
    let o = verify(&["--ocsp".as_ref(), fresh.as_ref()]);
    assert!(
        o.status.success(),
        "the genuine check under the limit: {}",
        text(&o)
    );
    let big = dir.path().join("big.crl");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    for (what, args, says) in [
        (
            "1 GB declared",
            vec!["--ocsp".into(), py.url("/huge")],
            "the answer is larger than 1048576 bytes (it declares 1073741824)".to_owned(),
        ),
        (
            "2 GB chunked",
            vec!["--ocsp".into(), py.url("/chunked")],
            format!(
                "{}: the answer is larger than 1048576 bytes",
                py.url("/chunked")
            ),
        ),
        (
            "a CRL file of 1 GB",
            vec!["--crl".into(), big.display().to_string()],
            "the answer is larger than 10485760 bytes (it declares 1073741824)".to_owned(),
        ),
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let o = verify(&args);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", text(&o));
        assert!(err(&o).contains(&says), "{what}: {}", err(&o));
        assert!(
            !err(&o).contains("memory allocation"),
            "{what}: {}",
            err(&o)
        );
    }
}

/// The simulator's development CA, read by openssl: `openssl ocsp` as the
/// client accepts its responder's answers (signature, nonce) and reads
/// good, then revoked (verified, with its reason, online and again
/// offline; the same answer with its signature changed is refused) once
/// the `revoked` fault is set; `openssl crl`
/// verifies its CRL against the CA and finds the serial on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_ocsp_and_crl_satisfy_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    certs_init(&certs);
    let (_sim, ports) = start_simulator(dir.path(), &certs);
    let control = format!("http://127.0.0.1:{}", ports[0]);
    let ask = || {
        std::process::Command::new("openssl")
            .args(["ocsp", "-url", &format!("{control}/ocsp")])
            .arg("-issuer")
            .arg(certs.join("ca.pem"))
            .arg("-cert")
            .arg(certs.join("cadastre-sign.pem"))
            .arg("-CAfile")
            .arg(certs.join("ca.pem"))
            .output()
            .unwrap()
    };
    let ask_keeping = |answer: &std::path::Path| {
        let mut c = std::process::Command::new("openssl");
        c.args(["ocsp", "-url", &format!("{control}/ocsp")])
            .arg("-issuer")
            .arg(certs.join("ca.pem"))
            .arg("-cert")
            .arg(certs.join("cadastre-sign.pem"))
            .arg("-CAfile")
            .arg(certs.join("ca.pem"))
            .arg("-respout")
            .arg(answer);
        c.output().unwrap()
    };
    let o = ask();
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("Response verify OK"), "{said}");
    assert!(said.contains("cadastre-sign.pem: good"), "{said}");
    assert!(!said.contains("WARNING: no nonce"), "{said}");

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{control}/faults"))
        .body("cadastre:revoked")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    // The revoked answer, too, verifies under openssl (signature by the
    // CA, our nonce echoed), and says revoked with its reason; kept to be
    // read again offline.
    let answer = dir.path().join("revoked.ocsp");
    let o = ask_keeping(&answer);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("Response verify OK"), "{said}");
    assert!(!said.contains("WARNING: no nonce"), "{said}");
    assert!(said.contains("cadastre-sign.pem: revoked"), "{said}");
    assert!(said.contains("Reason: keyCompromise"), "{said}");
    let offline = |file: &std::path::Path| {
        // Read back offline there is no request whose nonce to compare
        // (the online ask above showed ours echoed).
        std::process::Command::new("openssl")
            .args(["ocsp", "-no_nonce", "-respin"])
            .arg(file)
            .arg("-issuer")
            .arg(certs.join("ca.pem"))
            .arg("-cert")
            .arg(certs.join("cadastre-sign.pem"))
            .arg("-CAfile")
            .arg(certs.join("ca.pem"))
            .output()
            .unwrap()
    };
    let o = offline(&answer);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("Response verify OK"), "{said}");
    assert!(said.contains("cadastre-sign.pem: revoked"), "{said}");
    // The same check refuses the answer with one bit of its signature
    // (the last bytes of a BasicOCSPResponse without certificates)
    // changed: "Response verify OK" above is openssl's verdict, not a
    // greeting.
    let mut forged = std::fs::read(&answer).unwrap();
    *forged.last_mut().unwrap() ^= 1;
    let forged_file = write(dir.path(), "forged.ocsp", &forged);
    let o = offline(&forged_file);
    let said = text(&o);
    assert!(!said.contains("Response verify OK"), "{said}");
    assert!(said.contains("Response Verify Failure"), "{said}");

    let crl = http
        .get(format!("{control}/ca.crl"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let crl_file = write(dir.path(), "ca.crl", &crl);
    let o = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl_file)
        .arg("-CAfile")
        .arg(certs.join("ca.pem"))
        .output()
        .unwrap();
    let said = text(&o);
    assert!(o.status.success() && said.contains("verify OK"), "{said}");
    let serial = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(certs.join("cadastre-sign.pem"))
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&serial.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string();
    assert!(
        said.replace(':', "")
            .to_uppercase()
            .contains(&serial.to_uppercase()),
        "{serial} not on the CRL: {said}"
    );
}

/// Timestamp tokens made by `openssl ts -reply` (tests/py/tsa.py, not our
/// TSA), each with one defect, are refused by the gateway's TSA client
/// with that defect named: another imprint, a signer of another CA, no
/// nonce or another one, another policy than the configured one, a time
/// two hours off. Beside them the honest token is taken (and `openssl ts
/// -verify` accepts it), and the tokens refused for their CA, policy or
/// time are taken when the client trusts that CA, asks for no policy or
/// allows three hours: each was refused for what its message says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_timestamp_tokens_with_one_defect_each_are_refused_naming_it() {
    use jum_gateway::evidence::stamper::TsaClient;
    let dir = tempfile::tempdir().unwrap();
    let mut tsa = TestTsa::new(&dir.path().join("tsa"));
    tsa.start();
    let other_ca = tsa.dir.join("other").join("ca.pem");
    let configured = |path: &str, change: &dyn Fn(&mut jum_gateway::config::EvidenceConfig)| {
        let mut cfg = jum_gateway::config::EvidenceConfig {
            tsa_url: Some(format!("{}{path}", tsa.url())),
            tsa_trust: Some(tsa.ca()),
            policy: Some("1.2.3.4.1".into()),
            ..Default::default()
        };
        change(&mut cfg);
        TsaClient::configured(&cfg).unwrap().unwrap()
    };
    let data = b"the signature value of a received document";
    let imprint = openssl::sha::sha256(data);

    let honest = configured("", &|_| {}).stamp(&imprint).await.unwrap();
    assert_eq!(honest.policy, "1.2.3.4.1");
    assert!(honest.tsa.contains("Test TSA"), "{}", honest.tsa);
    assert_openssl_ts_verifies(&honest.der, data, &tsa.ca(), "the honest token");

    for (path, says) in [
        (
            "wrong-imprint",
            "the token is about other data (its message imprint is not ours): a foreign token",
        ),
        (
            "other-ca",
            "the token's signature does not verify or its signer is not a trusted TSA",
        ),
        (
            "no-nonce",
            "the token answers another request (nonce differs)",
        ),
        (
            "wrong-nonce",
            "the token answers another request (nonce differs)",
        ),
        (
            "other-policy",
            "the token is under policy 1.2.3.4.5.6, not the configured 1.2.3.4.1",
        ),
        ("far-time", "s from our clock (tolerance 300 s)"),
    ] {
        let e = match configured(path, &|_| {}).stamp(&imprint).await {
            Ok(t) => panic!("{path}: taken, at {} under {}", t.time_ms, t.policy),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(says), "{path}: {e}");
        if path == "far-time" {
            // Two hours ahead, read as such (not a parse failure).
            let off: i64 = e
                .split(" is ")
                .nth(1)
                .and_then(|r| r.split(" s from").next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{e}"));
            assert!((7000..7400).contains(&off), "{e}");
        }
    }

    let other = configured("other-ca", &|c| c.tsa_trust = Some(other_ca.clone()))
        .stamp(&imprint)
        .await
        .unwrap();
    assert_openssl_ts_verifies(&other.der, data, &other_ca, "the other CA's token");
    let any_policy = configured("other-policy", &|c| c.policy = None)
        .stamp(&imprint)
        .await
        .unwrap();
    assert_eq!(any_policy.policy, "1.2.3.4.5.6");
    let late = configured("far-time", &|c| {
        c.tolerance = std::time::Duration::from_secs(3 * 3600)
    })
    .stamp(&imprint)
    .await
    .unwrap();
    assert!(late.time_ms > honest.time_ms + 7000 * 1000, "{late:?}");
}

/// A token taken away while the gateway runs (its SoftHSM2 folder moved
/// away) fails only the attempts: each is retryable, says the seal's
/// device failed, is counted in `/metrics` and logged; nothing is sent
/// unsigned and no request dies. `/readyz` names the token away and
/// `jumgw_token_up{key="seal"}` is 0; away past `alerts.token_away`, the
/// operators are mailed about it. Put back (the folder moved back),
/// the token is found again without a restart: every request filed
/// meanwhile is delivered, `/readyz` is ready and the gauge 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_taken_away_fails_attempts_and_is_used_again_when_back() {
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
    std::fs::remove_file(data.join("certs/gateway-sign.key")).unwrap();
    let certs = data.join("certs");
    let mails_out = dir.path().join("mails.jsonl");
    let smtp = start_smtp(
        &certs.join("cadastre-tls.pem"),
        &certs.join("cadastre-tls.key"),
        "jumgw",
        "pa55-w0rd",
        &mails_out,
    );
    let port = free_port();
    let env: Vec<(String, String)> = vec![
        ("SOFTHSM2_CONF".into(), token.conf.display().to_string()),
        ("JUMGW_GATEWAY__SIGN_KEY".into(), token.uri("gw")),
        // Retried soon, so that the test waits for behaviour, not backoff.
        ("JUMGW_RETRY__BASE".into(), "300ms".into()),
        ("JUMGW_RETRY__CAP".into(), "1s".into()),
        ("JUMGW_RETRY__MAX_ATTEMPTS".into(), "1000".into()),
        ("JUMGW_ALERTS__TO".into(), r#"["ops@opstina.rs"]"#.into()),
        ("JUMGW_ALERTS__SMTP".into(), format!("127.0.0.1:{}", smtp.1)),
        ("JUMGW_ALERTS__USER".into(), "jumgw".into()),
        ("JUMGW_ALERTS__PASSWORD".into(), "pa55-w0rd".into()),
        (
            "JUMGW_ALERTS__TLS_CA".into(),
            certs.join("ca.pem").display().to_string(),
        ),
        ("JUMGW_ALERTS__INTERVAL".into(), "1s".into()),
        ("JUMGW_ALERTS__CHECK".into(), "200ms".into()),
        ("JUMGW_ALERTS__TOKEN_AWAY".into(), "1s".into()),
    ];
    let d = start_daemon_env(&data, port, &env);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let first = submit(&http, port, 0).await.expect("accepted");
    wait_delivered(&http, port, &[first]).await;
    let up = "jumgw_token_up{key=\"seal\"}";
    assert_eq!(metric(&http, &base, up).await, 1.0);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // The token's folder moved away, as a token is pulled out.
    let tokens = dir.path().join("tokens");
    let folder = std::fs::read_dir(&tokens)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let away = dir.path().join("away");
    std::fs::rename(&folder, &away).unwrap();
    let mut ids = Vec::new();
    for i in 1..=6 {
        ids.push(submit(&http, port, i).await.expect("accepted"));
    }
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (v, body) = loop {
        // Under load: more filed while the token is away.
        ids.push(submit(&http, port, ids.len() + 1).await.expect("accepted"));
        let v = get_json(
            &http,
            &format!("{base}/api/v1/requests/{}", ids[0]),
            Some("demo-backoffice"),
        )
        .await;
        let failed = v["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| {
                a["outcome"] == "retryable"
                    && a["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("the seal's device failed"))
            })
            .count();
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        let status = ready.status();
        let body: serde_json::Value = ready.json().await.unwrap();
        if failed >= 2 && status == 503 {
            break (v, body);
        }
        assert!(std::time::Instant::now() < end, "{v}\n{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        matches!(v["state"].as_str(), Some("retrying" | "sending" | "queued")),
        "{v}"
    );
    let t = &body["tokens_away"][0];
    assert_eq!(t["key"], "seal", "{body}");
    assert_eq!(t["up"], false, "{body}");
    assert!(
        t["error"]
            .as_str()
            .is_some_and(|e| e.contains("object=seal-gw")),
        "{body}"
    );
    assert!(!body.to_string().contains("1234"), "the PIN shown: {body}");
    assert_eq!(metric(&http, &base, up).await, 0.0);
    let failures = metric(&http, &base, "jumgw_seal_device_failures_total").await;
    assert!(failures >= 2.0, "{failures}");
    assert!(
        d.log().contains("cannot sign: the seal's device failed")
            && d.log().contains("the key's token is away"),
        "{}",
        d.log()
    );
    // Still away: the operators are told, the key and why named.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let body: String = mails(&mails_out)
            .iter()
            .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
            .collect();
        if body.contains("A key's token (PKCS#11) has been away for long") {
            break body;
        }
        assert!(
            std::time::Instant::now() < end,
            "no alert: {body}\n{}",
            d.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        body.contains("seal") && body.contains("object=seal-gw"),
        "{body}"
    );
    assert!(!body.contains("1234"), "the PIN in a mail: {body}");

    // Put back: used again, without a restart.
    std::fs::rename(&away, &folder).unwrap();
    wait_delivered(&http, port, &ids).await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "{}",
            ready.text().await.unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&http, &base, up).await, 1.0);
    let last = submit(&http, port, 99).await.expect("accepted");
    wait_delivered(&http, port, &[last]).await;
    for id in &ids {
        let v = get_json(
            &http,
            &format!("{base}/api/v1/requests/{id}"),
            Some("demo-backoffice"),
        )
        .await;
        assert!(
            !v["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| matches!(a["outcome"].as_str(), Some("permanent" | "security"))),
            "{v}"
        );
    }
    assert!(d.log().contains("the key's token is back"), "{}", d.log());
}

/// The README's bundle filed with `serve --demo`, delivered and stamped,
/// and its case's dossier exported with `jumgw dossier export`. The
/// daemon keeps running: its TSA and OCSP responder serve a forger too.
struct DemoDossier {
    daemon: Daemon,
    data: std::path::PathBuf,
    base: String,
    ids: Vec<String>,
    out: std::path::PathBuf,
}

async fn demo_dossier(dir: &std::path::Path) -> DemoDossier {
    let data = dir.join("data");
    let port = free_port();
    let d = start_daemon(&data, port);
    let base = format!("http://127.0.0.1:{port}");
    let out = dir.join("case.asice");
    let ids = file_and_export(&base, "351-12/2026-IV", &out).await;
    DemoDossier {
        daemon: d,
        data,
        base,
        ids,
        out,
    }
}

/// The README's bundle (the building-permit procedure) filed in `case`
/// with the daemon at `base`, and its requests' ids once all are delivered.
async fn file_bundle(http: &reqwest::Client, base: &str, case: &str) -> Vec<String> {
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let r = http
        .post(format!(
            "{base}/api/v1/cases/{}/requests",
            case.replace('/', "%2F")
        ))
        .bearer_auth("demo-backoffice")
        .json(&serde_json::json!({
            "legal_basis": "ZUP čl. 103", "official": "marija.kovac", "purpose": "building permit",
            "procedure": "building-permit",
            "subject": {"jmbg": "0512981717776", "ko": "803472", "sheet": "1520"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    let ids: Vec<String> = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    wait_delivered(http, port, &ids).await;
    ids
}

/// The README's bundle filed in `case` with the daemon at `base`,
/// delivered and stamped, and the case's dossier exported to `out`.
async fn file_and_export(base: &str, case: &str, out: &std::path::Path) -> Vec<String> {
    let http = reqwest::Client::new();
    let ids = file_bundle(&http, base, case).await;
    wait_stamped(&http, base, &ids, std::time::Duration::from_secs(20)).await;
    let o = run(&[
        "dossier",
        "export",
        case,
        "--out",
        out.to_str().unwrap(),
        "--url",
        base,
        "--token",
        "demo-backoffice",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    ids
}

/// What the README promises a newcomer: `serve --demo`, the README's
/// bundle filed, and a few seconds later a dossier that `jumgw dossier
/// verify` (with no --trust and no gateway) and pyasice both accept, every
/// document timestamped by the simulator's TSA, whose tokens `openssl ts
/// -verify` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_dossier_verifies_offline_and_in_pyasice() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dossier(dir.path()).await;
    let (d, data, base, ids, out) = (demo.daemon, demo.data, demo.base, demo.ids, demo.out);
    let http = reqwest::Client::new();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = data.join("certs/ca.pem");
    for id in &ids {
        let doc = get_json(
            &http,
            &format!("{base}/api/v1/documents/{id}"),
            Some("demo-backoffice"),
        )
        .await;
        let xml = http
            .get(format!("{base}/api/v1/documents/{id}/content"))
            .bearer_auth("demo-backoffice")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let file = write(dir.path(), &format!("{id}.xml"), &xml);
        let token = b64
            .decode(doc["timestamp"]["token"].as_str().unwrap())
            .unwrap();
        assert_openssl_ts_verifies(&token, &signature_value_by_lxml(&file), &ca, id);
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jumgw_timestamps_total{for=\"document\",result=\"stamped\"}"),
        "{metrics}"
    );
    drop(d);
    let (code, report) = dossier_verify(&out, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("the CA certificates the dossier carries"),
        "{report}"
    );
    assert_eq!(report.matches("signed by").count(), 3, "{report}");
    let (ok, v) = asice_check(&out);
    assert!(ok, "{v:#}");
    // A foreign anchor is not the dossier's: with it, nothing chains.
    use jum_gateway::pki::{CertSpec, Issued, KeyKind, Role};
    let foreign = Issued::new(
        &CertSpec::new("someone else's CA", Role::Ca),
        KeyKind::EcP256,
        None,
    )
    .unwrap();
    let foreign = write(dir.path(), "foreign.pem", &foreign.cert_pem().unwrap());
    let (code, report) = dossier_verify(&out, &[&foreign]);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("the seal's certificate"), "{report}");
}

/// A configuration of the repository's on development certificates in
/// `dir`, with its data folder's keys: what `config check` passes.
fn checkable(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let certs = dir.join("certs");
    certs_init(&certs);
    let cfg = std::fs::read_to_string(manifest_dir().join("config/gateway.toml"))
        .unwrap()
        .replace("certs/dev", certs.to_str().unwrap());
    let file = write(dir, "gateway.toml", cfg.as_bytes());
    let data = dir.join("data");
    write_data_keys(&data);
    (file, data)
}

/// Our own TLS keys weaker than accepted stop `config check` (exit 1)
/// and `serve` (exit 2) before any work, each naming the key and its
/// size: the registries' client key (`gateway.tls_key`) and the API's
/// server key (`gateway.api_tls`), of RSA 1024 bits; and the API's key of
/// 2048 bits once `gateway.min_rsa_bits` is 3072. The positive control:
/// the API's key of 2048 bits under the default passes `config check` and
/// `serve` listens with it over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_tls_keys_weaker_than_accepted_stop_config_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = checkable(dir.path());
    let certs = dir.path().join("certs");
    let original = std::fs::read_to_string(&file).unwrap();
    let (weak_client, weak_client_key) =
        openssl_issued(&certs, dir.path(), "gateway rsa1024", 1024, "clientAuth");
    let (weak_api, weak_api_key) =
        openssl_issued(&certs, dir.path(), "api rsa1024", 1024, "serverAuth");
    let (api, api_key) = openssl_issued(&certs, dir.path(), "api rsa2048", 2048, "serverAuth");
    let (seal, seal_key) = openssl_issued(&certs, dir.path(), "seal ec", 0, "emailProtection");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let gateway_tls = |cert: &std::path::Path, key: &std::path::Path| {
        original
            .replacen(&path(&certs.join("gateway-tls.pem")), &path(cert), 1)
            .replacen(&path(&certs.join("gateway-tls.key")), &path(key), 1)
    };
    let api_tls = |text: &str, cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "{text}\n[gateway.api_tls]\ncert = {:?}\nkey = {:?}\n",
            path(cert),
            path(key)
        )
    };
    let raised = original
        .replacen("[gateway]", "[gateway]\nmin_rsa_bits = 3072", 1)
        .replacen(&path(&certs.join("gateway-sign.pem")), &path(&seal), 1)
        .replacen(&path(&certs.join("gateway-sign.key")), &path(&seal_key), 1);
    assert!(original.contains(&path(&certs.join("gateway-tls.key"))));
    assert!(raised.contains("min_rsa_bits = 3072") && raised.contains("seal ec.key"));
    let check = |name: &str| {
        jumgw()
            .args(["config", "check", "--quiet", "--config", name, "--data-dir"])
            .arg(&data)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // A `serve` that wrongly accepts the key listens for good: it is given
    // up to 60 s to stop, then killed and the test fails (not hangs).
    let serve = |name: &str| {
        let log = dir.path().join(format!("{name}.serve.log"));
        let mut child = jumgw()
            .args(["serve", "--config", name, "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() >= end {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!(
                    "{name}: serve was still running after 60 s, it took the key: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        (status, std::fs::read_to_string(&log).unwrap())
    };
    for (name, config, says) in [
        (
            "weak-client.toml",
            gateway_tls(&weak_client, &weak_client_key),
            format!(
                "{}: too weak: an RSA key of 1024 bits; at least 2048 are accepted",
                path(&weak_client_key)
            ),
        ),
        (
            "weak-api.toml",
            api_tls(&original, &weak_api, &weak_api_key),
            format!(
                "{}: too weak: an RSA key of 1024 bits; at least 2048 are accepted",
                path(&weak_api_key)
            ),
        ),
        (
            "raised-api.toml",
            api_tls(&raised, &api, &api_key),
            format!(
                "{}: too weak: an RSA key of 2048 bits; at least 3072 are accepted",
                path(&api_key)
            ),
        ),
    ] {
        write(dir.path(), name, config.as_bytes());
        let o = check(name);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert!(err(&o).contains(&says), "{name}: {}", text(&o));
        assert!(err(&o).starts_with(name), "{name}: {}", text(&o));
        let (status, said) = serve(name);
        assert_eq!(status.code(), Some(2), "{name}: {said}");
        assert!(said.contains(&says), "{name}: {said}");
    }

    // The same API key under the default minimum: valid, and served.
    write(
        dir.path(),
        "api.toml",
        api_tls(&original, &api, &api_key).as_bytes(),
    );
    let o = check("api.toml");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let port = free_port();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let (_daemon, said) = serve_configured(dir.path(), "api.toml", port, ports, &[], &[], None);
    assert!(said.contains("https://"), "{said}");
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.pem")).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let r = http
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn config_check_names_the_file_key_and_problem_or_prints_what_is_in_effect() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = checkable(dir.path());
    let check = |file: &std::path::Path, env: &[(&str, &str)]| {
        jumgw()
            .args(["config", "check", "--config"])
            .arg(file)
            .arg("--data-dir")
            .arg(&data)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let o = check(
        &file,
        &[
            ("JUMGW_EVIDENCE__USER", "tsa"),
            ("JUMGW_EVIDENCE__PASSWORD", "s3cret-tsa"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let shown = out(&o);
    assert!(shown.contains(": valid;"), "{shown}");
    // Defaults filled in, secrets masked, as TOML.
    let effective: toml::Table = toml::from_str(&shown).unwrap();
    assert_eq!(effective["retry"]["max_attempts"].as_integer(), Some(12));
    assert_eq!(effective["evidence"]["password"].as_str(), Some("********"));
    assert!(!shown.contains("s3cret-tsa"), "{shown}");

    let original = std::fs::read_to_string(&file).unwrap();
    let variant = |name: &str, from: &str, to: &str| {
        assert!(original.contains(from), "{from}");
        write(dir.path(), name, original.replacen(from, to, 1).as_bytes())
    };
    // Each: a broken file, and what the check must say of it.
    let cases = [
        (
            variant("swapped.toml", "gateway-sign.key", "gateway-tls.key"),
            vec!["swapped.toml", "the certificate does not belong to the private key"],
        ),
        (
            variant("missing.toml", "gateway-sign.pem", "nowhere.pem"),
            vec!["missing.toml", "nowhere.pem", "No such file"],
        ),
        (
            variant("cron.toml", "[gateway]", "[jobs]\nbackup_cron = \"every night\"\n\n[gateway]"),
            vec!["cron.toml", "jobs.backup_cron", "6-field cron"],
        ),
        (
            variant(
                "client.toml",
                "[gateway]",
                "[clients.pisarnica]\ntoken_sha256 = \"00\"\nservices = [\"civil.death-extract\"]\n\n[gateway]",
            ),
            vec!["client.toml", "clients.pisarnica.services", "unknown service \"civil.death-extract\""],
        ),
        (
            variant("url.toml", "url = \"https://127.0.0.1:9441/\"", "url = \"http://127.0.0.1:9441/\""),
            vec!["url.toml", "registries.civil.url", "must be an https:// URL"],
        ),
        (
            variant("smtp.toml", "[gateway]", "[alerts]\nto = [\"ops@opstina.rs\"]\n\n[gateway]"),
            vec!["smtp.toml", "alerts.smtp", "name the mail server"],
        ),        (
            variant(
                "pin.toml",
                "signer_subject = \"CN=cadastre signer,O=jum-gateway development\"",
                "signer_subject = \"cadastre signer\"",
            ),
            vec![
                "pin.toml",
                "registries.cadastre.signer_subject",
                "not a distinguished name as RFC 4514 writes it",
                "\"cadastre signer\" is not TYPE=value",
            ],
        ),
        (
            variant(
                "pin-type.toml",
                "signer_subject = \"CN=tax signer,O=jum-gateway development\"",
                "signer_subject = \"CN=tax signer,OO=jum-gateway development\"",
            ),
            vec!["registries.tax.signer_subject", "unknown attribute type \"OO\""],
        ),
        (
            variant(
                "sha.toml",
                "signer_subject = \"CN=civil signer,O=jum-gateway development\"",
                "signer_sha256 = \"ab:cd\"",
            ),
            vec!["registries.civil.signer_sha256", "is not a SHA-256 (64 hex digits, colons allowed)"],
        ),
    ];
    for (f, says) in cases {
        let o = check(&f, &[]);
        assert_eq!(o.status.code(), Some(1), "{}: {}", f.display(), text(&o));
        for s in says {
            assert!(
                err(&o).contains(s),
                "{}: wanted {s:?}: {}",
                f.display(),
                text(&o)
            );
        }
    }
    // Without the data folder's keys, neither can the daemon start.
    let o = jumgw()
        .args(["config", "check", "--quiet", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("elsewhere"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        err(&o).contains("gateway.document_key_file"),
        "{}",
        text(&o)
    );
}

#[test]
fn completions_complete_and_every_subcommand_has_a_man_page() {
    for (shell, mark) in [
        ("bash", "_jumgw()"),
        ("zsh", "#compdef jumgw"),
        ("fish", "complete -c jumgw"),
    ] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(out(&o).contains(mark), "{shell}: {}", out(&o));
    }
    // bash itself completes with it.
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "jumgw.bash",
        &run(&["completions", "bash"]).stdout,
    );
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}; COMP_WORDS=(jumgw con); COMP_CWORD=1; _jumgw jumgw con jumgw; echo \"${{COMPREPLY[@]}}\"; \
             COMP_WORDS=(jumgw config check --); COMP_CWORD=3; _jumgw jumgw -- check; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let said = out(&o);
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some("config"), "{said}");
    assert!(lines.next().unwrap_or("").contains("--data-dir"), "{said}");

    let man = dir.path().join("man");
    let o = run(&["man", "--out", man.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let help = out(&run(&["--help"]));
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.len() >= 14, "{subcommands:?}");
    for c in subcommands {
        let page = std::fs::read_to_string(man.join(format!("jumgw-{c}.1")))
            .unwrap_or_else(|e| panic!("no man page for {c}: {e}"));
        assert!(
            page.contains(".TH jumgw-") && page.contains(".SH NAME"),
            "{c}: {page}"
        );
    }
    let queue = std::fs::read_to_string(man.join("jumgw-queue-retry.1")).unwrap();
    assert!(queue.contains("jumgw queue retry"), "{queue}");
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened_to_at_most_2_5() {
    let unit = manifest_dir().join("ops/systemd/jumgw.service");
    let text_of = std::fs::read_to_string(&unit).unwrap();
    for k in [
        "Type=notify",
        "WatchdogSec=",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/jumgw",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(text_of.contains(k), "the unit lacks {k:?}");
    }
    // The unit as shipped, but for where the binary is on this machine.
    let dir = tempfile::tempdir().unwrap();
    let here = write(
        dir.path(),
        "jumgw.service",
        text_of
            .replace("/usr/bin/jumgw", env!("CARGO_BIN_EXE_jumgw"))
            .as_bytes(),
    );
    let o = tool("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&here)
        .output()
        .unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o));
    let o = tool("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let level: f64 = said
        .split("Overall exposure level for jumgw.service: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {said}"));
    println!("systemd-analyze security: exposure {level}");
    assert!(level <= 2.5, "exposure {level} is above 2.5:\n{said}");
}

#[test]
fn the_prometheus_rules_pass_promtool_and_their_unit_tests() {
    let dir = manifest_dir().join("ops/prometheus");
    let o = tool("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out(&o).contains("SUCCESS: 8 rules found"), "{}", text(&o));
    let o = tool("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // A rule broken on purpose is caught (the tests can fail).
    let tmp = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(dir.join("alerts.yml"))
        .unwrap()
        .replace("jumgw_breaker_state == 2", "jumgw_breaker_state == 1");
    write(tmp.path(), "alerts.yml", rules.as_bytes());
    std::fs::copy(
        dir.join("alerts_test.yml"),
        tmp.path().join("alerts_test.yml"),
    )
    .unwrap();
    let o = tool("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "a wrong rule passed its tests: {}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_unpacks_into_a_gateway_that_runs_from_anywhere() {
    let o = std::process::Command::new(manifest_dir().join("ops/debian/build-deb"))
        .args(["--profile", "dev", "--no-build", "--fast"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let version = env!("CARGO_PKG_VERSION");
    let deb = manifest_dir().join(format!("target/debian/jumgw_{version}-1_amd64.deb"));
    let listing = out(&tool("dpkg-deb").arg("-c").arg(&deb).output().unwrap());
    for path in [
        "./usr/bin/jumgw",
        "./etc/jumgw/gateway.toml",
        "./usr/lib/systemd/system/jumgw.service",
        "./usr/share/man/man1/jumgw.1.gz",
        "./usr/share/man/man1/jumgw-serve.1.gz",
        "./usr/share/man/man1/jumgw-config-check.1.gz",
        "./usr/share/bash-completion/completions/jumgw",
        "./usr/share/zsh/vendor-completions/_jumgw",
        "./usr/share/fish/vendor_completions.d/jumgw.fish",
        "./usr/share/doc/jumgw/configuration.md",
        "./usr/share/jumgw/prometheus/alerts.yml",
        "./usr/share/jumgw/grafana/jumgw.json",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} not in the package:\n{listing}"
        );
    }
    let ctl = tempfile::tempdir().unwrap();
    let o = tool("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(ctl.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let conffiles = std::fs::read_to_string(ctl.path().join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/jumgw/gateway.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctl.path().join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system --group --home /var/lib/jumgw"),
        "{postinst}"
    );
    let control = std::fs::read_to_string(ctl.path().join("control")).unwrap();
    assert!(control.contains("Depends: adduser"), "{control}");

    let root = tempfile::tempdir().unwrap();
    let o = tool("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let bin = root.path().join("usr/bin/jumgw");
    let o = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out(&o).trim(), format!("jumgw {version}"), "{}", text(&o));

    // The shipped configuration, as it is: the certificates it names are
    // not there yet, and the check says which.
    let shipped = root.path().join("etc/jumgw/gateway.toml");
    let data = root.path().join("var/lib/jumgw");
    let o = std::process::Command::new(&bin)
        .args(["config", "check", "--config"])
        .arg(&shipped)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        err(&o).contains("/etc/jumgw/certs/gateway-sign.pem"),
        "{}",
        text(&o)
    );
    // With certificates where it expects them (development ones, made by
    // the packaged binary) and the data folder's keys, it passes.
    let etc = root.path().join("etc/jumgw");
    let o = std::process::Command::new(&bin)
        .args(["certs", "init", "--dir"])
        .arg(etc.join("certs"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    write_data_keys(&data);
    let rooted = std::fs::read_to_string(&shipped)
        .unwrap()
        .replace("/etc/jumgw", etc.to_str().unwrap());
    let rooted = write(root.path(), "gateway-rooted.toml", rooted.as_bytes());
    let o = std::process::Command::new(&bin)
        .args(["config", "check", "--config"])
        .arg(&rooted)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(out(&o).contains("[registries.cadastre]"), "{}", text(&o));

    // serve --demo from a folder with no schemas/ beside it: a document
    // fetched and validated against the schemas inside the binary.
    let empty = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(&bin)
        .args(["serve", "--demo", "--data-dir", "data", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(empty.path())
        .env_remove("JUMGW_SCHEMAS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.starts_with("jumgw listening on"))),
        "the packaged binary did not start"
    );
    std::thread::spawn(move || for _ in lines {});
    assert!(!empty.path().join("schemas").exists());
    let http = reqwest::Client::new();
    let id = submit(&http, port, 0).await.unwrap();
    wait_delivered(&http, port, std::slice::from_ref(&id)).await;
    let _ = child.kill();
    let _ = child.wait();
}

/// The daemon itself, `jumgw serve` under an address space of 512 MiB, its
/// TSA and the civil registry's OCSP responder and CRL all hostile (1 GB
/// with a Content-Length, 2 GB chunked): it keeps serving, the document
/// is delivered under `prefer`, flagged unchecked with the cap as the
/// reason, and the timestamp is pending with the cap as its reason; a
/// run with the genuine TSA and responder under the same limit stamps
/// and confirms. Its peak resident memory stays under 256 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reads_hostile_tsa_ocsp_and_crl_answers_with_a_cap_under_a_memory_limit() {
    const LIMIT: u64 = DAEMON_AS;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).unwrap();
    let certs = root.join("certs/dev");
    certs_init(&certs);
    let (_sim, ports) = start_simulator(root, &certs);
    let py = PyResponder::start(&certs.join("ca.pem"), &certs.join("ca.key"), &[]);
    let base = std::fs::read_to_string(manifest_dir().join("config/gateway.toml")).unwrap();
    std::fs::write(
        root.join("config/gateway.toml"),
        format!(
            "{base}\n[clients.first]\ntoken_sha256 = \"{}\"\n",
            jum_gateway::api::token_hash("first-token")
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    for hostile in [true, false] {
        let data = root.join("data");
        let _ = std::fs::remove_dir_all(&data);
        write_data_keys(&data);
        let port = free_port();
        let log = root.join(format!("daemon-{hostile}.log"));
        let mut env = vec![("JUMGW_LOG", "info".to_owned())];
        if hostile {
            env.extend([
                ("JUMGW_EVIDENCE__TSA_URL", py.url("/huge")),
                ("JUMGW_REGISTRIES__CIVIL__OCSP_URL", py.url("/chunked")),
                ("JUMGW_REGISTRIES__CIVIL__CRL", py.url("/huge")),
            ]);
        } else {
            env.push((
                "JUMGW_REGISTRIES__CIVIL__OCSP_URL",
                format!("http://127.0.0.1:{}/ocsp", ports[0]),
            ));
        }
        let (mut daemon, _) = serve_configured_as(
            jumgw_limited(LIMIT),
            root,
            "config/gateway.toml",
            port,
            ports,
            &[],
            &env,
            Some(&log),
        );
        let r = http
            .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
            .bearer_auth("first-token")
            .header("content-type", "application/json")
            .body(r#"{"case":{"number":"9/2026","legal_basis":"ZUP čl. 103","official":"o"},"purpose":"p","service":"civil.birth-extract","subject":{"jmbg":"0512981717776"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", daemon.log());
        let v: serde_json::Value = r.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        let url = format!("http://127.0.0.1:{port}/api/v1/documents/{id}");
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let seen = loop {
            let r = http
                .get(&url)
                .bearer_auth("first-token")
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                let v: serde_json::Value = r.json().await.unwrap();
                let settled = if hostile {
                    v["timestamp"]["reason"].as_str().is_some()
                } else {
                    v["timestamp"]["state"] == "stamped"
                };
                if settled {
                    break v;
                }
            }
            assert!(
                daemon.0.try_wait().unwrap().is_none(),
                "the daemon ended: {}",
                daemon.log()
            );
            assert!(std::time::Instant::now() < end, "{}", daemon.log());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        if hostile {
            let reason = seen["revocation"]["reason"].as_str().unwrap_or("");
            assert_eq!(seen["revocation"]["status"], "unchecked", "{seen}");
            for says in [
                format!(
                    "OCSP {}: the answer is larger than 1048576 bytes",
                    py.url("/chunked")
                ),
                format!(
                    "CRL {}: {}: the answer is larger than 10485760 bytes (it declares 1073741824)",
                    py.url("/huge"),
                    py.url("/huge")
                ),
            ] {
                assert!(reason.contains(&says), "{says}: {seen}");
            }
            let stamp = seen["timestamp"]["reason"].as_str().unwrap_or("");
            assert!(
                stamp.contains("the answer is larger than 1048576 bytes (it declares 1073741824)"),
                "{seen}"
            );
        } else {
            assert_eq!(seen["revocation"]["status"], "good", "{seen}");
        }
        assert!(
            !daemon.log().contains("memory allocation"),
            "{}",
            daemon.log()
        );
        assert!(daemon.0.try_wait().unwrap().is_none(), "{}", daemon.log());
        // What it took at most, beside what it was allowed.
        let peak = peak_rss(daemon.0.id());
        eprintln!("hostile {hostile}: peak RSS {} MiB", peak >> 20);
        assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
        daemon.sigterm();
    }
}

/// `systemctl reload` (SIGHUP): the clients and the registries' settings
/// re-read from the file while requests are under way, none of them lost;
/// the log says what changed and what waits for a restart; a file that
/// does not load is refused whole and the configuration in force kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_clients_and_registries_without_dropping_queued_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).unwrap();
    let certs = root.join("certs/dev");
    certs_init(&certs);
    let (_sim, ports) = start_simulator(root, &certs);
    write_data_keys(&root.join("data"));
    let base = std::fs::read_to_string(manifest_dir().join("config/gateway.toml")).unwrap();
    let client = |name: &str| {
        format!(
            "\n[clients.{name}]\ntoken_sha256 = \"{}\"\n",
            jum_gateway::api::token_hash(&format!("{name}-token"))
        )
    };
    let file = root.join("config/gateway.toml");
    std::fs::write(&file, format!("{base}{}", client("first"))).unwrap();
    let port = free_port();
    let log = root.join("daemon.log");
    let (daemon, _) = serve_configured(
        root,
        "config/gateway.toml",
        port,
        ports,
        &[],
        &[("JUMGW_LOG", "info".into())],
        Some(&log),
    );
    let http = reqwest::Client::new();
    let file_one = |token: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(r#"{"case":{"number":"9/2026","legal_basis":"ZUP čl. 103","official":"o"},"purpose":"p","service":"cadastre.property-sheet","subject":{"ko":"803472","sheet":"1520"}}"#)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (status, v["id"].as_str().unwrap_or("").to_owned())
        }
    };
    assert_eq!(file_one("second-token").await.0, 401);
    // A slow cadastre (5 s an answer): requests are provably open across
    // the signal. The delay is a ceiling for the reload, not a guess:
    // were the reload slower, the check below would fail, not pass.
    let control = format!("http://127.0.0.1:{}", ports[0]);
    let faults = |spec: &'static str| {
        let (http, control) = (http.clone(), control.clone());
        async move {
            let r = http
                .put(format!("{control}/faults"))
                .body(spec)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    let answered = |id: String| {
        let (http, control) = (http.clone(), control.clone());
        async move {
            let v = get_json(&http, &format!("{control}/seen"), None).await;
            v["by_id"][id.as_str()].as_u64().unwrap_or(0)
        }
    };
    // The registry keeps every request until the test lets go (after the
    // reload), however long the steps in between take on this machine.
    faults("cadastre:hold").await;
    let release = || {
        let (http, control) = (http.clone(), control.clone());
        async move {
            let r = http
                .post(format!("{control}/held/release"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 204);
        }
    };
    let mut ids = Vec::new();
    for _ in 0..40 {
        let (s, id) = file_one("first-token").await;
        assert_eq!(s, 202);
        ids.push(id);
    }
    // Those the API shows sent and the registry holds, not answered.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let open = loop {
        let mut open = Vec::new();
        for id in &ids {
            let v = get_json(
                &http,
                &format!("http://127.0.0.1:{port}/api/v1/requests/{id}"),
                Some("first-token"),
            )
            .await;
            if v["state"] == "sending" && answered(id.clone()).await == 0 {
                open.push(id.clone());
            }
        }
        let held = get_json(&http, &format!("{control}/seen"), None).await["held"]
            .as_u64()
            .unwrap_or(0);
        if !open.is_empty() && held > 0 {
            break open;
        }
        assert!(
            std::time::Instant::now() < end,
            "no request was ever sending and held by the registry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(daemon.0.id()).unwrap()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    let wait_log = |what: &str, n: usize| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let l = daemon.log();
            if l.matches(what).count() >= n {
                return l;
            }
            assert!(
                std::time::Instant::now() < end,
                "no {what:?} in the log:\n{l}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    // A second client, a longer timeout and a new rate for the cadastre
    // (taken now), a registry to start paused (only at a restart).
    let changed = base
        .replacen(
            "[registries.cadastre]\nurl",
            "[registries.cadastre]\nrate_per_s = 20.0\nurl",
            1,
        )
        .replacen(
            "[registries.tax]\nurl",
            "[registries.tax]\npaused = true\nurl",
            1,
        )
        .replacen("timeout = \"30s\"", "timeout = \"31s\"", 2);
    assert_ne!(changed, base);
    std::fs::write(
        &file,
        format!("{changed}{}{}", client("first"), client("second")),
    )
    .unwrap();
    hup();
    let l = wait_log("configuration re-read", 1);
    let line = l
        .lines()
        .find(|l| l.contains("configuration re-read"))
        .unwrap();
    for want in [
        "client second added",
        "registry cadastre: rate_per_s, timeout changed",
        "registry civil: timeout changed",
        "not applied until a restart: registries.tax.paused",
    ] {
        assert!(line.contains(want), "{want:?} not in {line}");
    }
    // Re-read while they were out: the registry has answered none of them.
    for id in &open {
        assert_eq!(
            answered(id.clone()).await,
            0,
            "{id} was answered before the reload was done: it proves nothing"
        );
    }
    faults("").await;
    release().await;
    assert_eq!(file_one("second-token").await.0, 202);
    assert_eq!(file_one("first-token").await.0, 202);
    // A file that does not load: refused, the one in force kept.
    std::fs::write(
        &file,
        format!(
            "{}{}",
            changed.replacen("registry = \"cadastre\"", "registry = \"nowhere\"", 1),
            client("third")
        ),
    )
    .unwrap();
    hup();
    let l = wait_log("configuration refused, the one in force is kept", 1);
    assert!(l.contains("unknown registry \"nowhere\""), "{l}");
    assert_eq!(file_one("second-token").await.0, 202);
    assert_eq!(file_one("third-token").await.0, 401);
    // Every request filed before the reloads is delivered, those that
    // were out at the signal too, once (the registry asked once for each).
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for id in &ids {
        loop {
            let v = get_json(
                &http,
                &format!("http://127.0.0.1:{port}/api/v1/requests/{id}"),
                Some("first-token"),
            )
            .await;
            if v["state"] == "delivered" {
                break;
            }
            assert!(std::time::Instant::now() < end, "{id} not delivered: {v}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    for id in &open {
        assert_eq!(answered(id.clone()).await, 1, "{id}: asked again");
    }
}

fn entry<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &entries.iter().find(|(n, _)| n == name).unwrap().1
}

fn replace(entries: &mut [(String, Vec<u8>)], name: &str, bytes: Vec<u8>) {
    entries.iter_mut().find(|(n, _)| n == name).unwrap().1 = bytes;
}

/// What an insider holding the seal's key does with a dossier's data
/// files: seals them anew (XAdES B-T, with a genuine token from the TSA),
/// writes the manifest anew and zips them as the gateway does, with the
/// crate's own signer and the `zip` crate.
async fn reseal(
    entries: &[(String, Vec<u8>)],
    seal: &jum_gateway::xml::SigningKey,
    tsa: &jum_gateway::evidence::stamper::TsaClient,
) -> Vec<u8> {
    use jum_gateway::evidence::dossier::{manifest, MANIFEST_FILE, MIMETYPE, SIGNATURE_FILE};
    use jum_gateway::xml::xades::{self, DataObject};
    // The media types, as the genuine manifest gives them.
    let genuine = String::from_utf8_lossy(entry(entries, MANIFEST_FILE)).into_owned();
    let mime = |name: &str| -> String {
        genuine
            .lines()
            .find(|l| l.contains(&format!("full-path=\"{name}\"")))
            .and_then(|l| l.split("media-type=\"").nth(1))
            .and_then(|m| m.split('"').next())
            .unwrap_or("text/plain")
            .to_owned()
    };
    let files: Vec<(String, Vec<u8>, String)> = entries
        .iter()
        .filter(|(n, _)| n != "mimetype" && !n.starts_with("META-INF/"))
        .map(|(n, b)| (n.clone(), b.clone(), mime(n)))
        .collect();
    let objects: Vec<DataObject<'_>> = files
        .iter()
        .map(|(uri, bytes, mime)| DataObject { uri, bytes, mime })
        .collect();
    let signed = xades::sign(&objects, seal, "2026-12-07T12:00:00Z").unwrap();
    let token = tsa
        .stamp(&openssl::sha::sha256(&signed.timestamp_input))
        .await
        .unwrap()
        .der;
    let signature = signed.document(Some(&token));
    let listed: Vec<(String, String)> = files
        .iter()
        .map(|(n, _, m)| (n.clone(), m.clone()))
        .collect();
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    z.start_file("mimetype", stored).unwrap();
    z.write_all(MIMETYPE.as_bytes()).unwrap();
    for (n, b, _) in &files {
        z.start_file(n.as_str(), deflated).unwrap();
        z.write_all(b).unwrap();
    }
    z.start_file(MANIFEST_FILE, deflated).unwrap();
    z.write_all(&manifest(&listed)).unwrap();
    z.start_file(SIGNATURE_FILE, deflated).unwrap();
    z.write_all(&signature).unwrap();
    z.finish().unwrap().into_inner()
}

/// A registry's document with its signature taken away, a fact in it
/// changed, and signed again with `key`.
fn resign(doc: &[u8], change: (&str, &str), key: &jum_gateway::xml::SigningKey) -> Vec<u8> {
    let s = String::from_utf8(doc.to_vec()).unwrap();
    let a = s.find("<ds:Signature").expect("a ds:Signature");
    let b = s.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let unsigned = format!("{}{}", &s[..a], &s[b..]);
    assert!(unsigned.contains(change.0), "{unsigned}");
    let forged = unsigned.replacen(change.0, change.1, 1);
    jum_gateway::xml::sign(forged.as_bytes(), key, &jum_gateway::xml::Limits::default()).unwrap()
}

fn sha256_hex(der: &[u8]) -> String {
    openssl::sha::sha256(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The insider's forgery of the issue: the cadastre's document changed
/// and signed again by the gateway's own seal key (under its own
/// certificate, or one the CA issued in the cadastre signer's name), by
/// the tax registry's signer, or by a new key the same CA issued under the
/// same name, each
/// given a genuine timestamp from the same TSA and a genuine OCSP answer
/// for its certificate, and the dossier resealed with the seal's key.
/// Each holds together except for the document, which fails naming the
/// signer the gateway accepted from the cadastre; so does a forger who
/// also rewrites `case.json`. The genuine dossier holds (pyasice agrees),
/// and so does the genuine one resealed (the resealing changes nothing
/// else); `--registry-ca` insists on a registry's CA; a record from before
/// signers were kept is not verifiable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_re_signed_by_another_key_and_resealed_does_not_hold() {
    use jum_gateway::xml::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dossier(dir.path()).await;
    let certs = demo.data.join("certs");
    let ca = certs.join("ca.pem");
    let key = |base: &str| {
        SigningKey::from_pem(
            &std::fs::read(certs.join(format!("{base}.key"))).unwrap(),
            &std::fs::read(certs.join(format!("{base}.pem"))).unwrap(),
            None,
        )
        .unwrap()
    };
    let der_of = |base: &str| {
        openssl::x509::X509::from_pem(&std::fs::read(certs.join(format!("{base}.pem"))).unwrap())
            .unwrap()
            .to_der()
            .unwrap()
    };
    let seal = key("gateway-sign");
    let evidence: jum_gateway::config::EvidenceConfig = toml::from_str(&format!(
        "tsa_url = \"{}/tsa\"\ntsa_trust = \"{}\"",
        demo.daemon.1,
        ca.display()
    ))
    .unwrap();
    let tsa = jum_gateway::evidence::stamper::TsaClient::configured(&evidence)
        .unwrap()
        .unwrap();

    // The genuine dossier: each document with its registry and signer.
    let (code, report) = dossier_verify(&demo.out, &[&ca]);
    assert_eq!(code, 0, "{report}");
    let genuine = unzip(&demo.out);
    let facts: serde_json::Value = serde_json::from_slice(entry(&genuine, "case.json")).unwrap();
    let cadastre = facts["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["registry"] == "cadastre")
        .unwrap()
        .clone();
    let cad_sha = sha256_hex(&der_of("cadastre-sign"));
    assert_eq!(cadastre["signer_sha256"], cad_sha.as_str(), "{cadastre:#}");
    let ca_der = openssl::x509::X509::from_pem(&std::fs::read(&ca).unwrap())
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(
        cadastre["signer_anchor_sha256"],
        sha256_hex(&ca_der).as_str()
    );
    let doc_name = cadastre["document"].as_str().unwrap().to_owned();
    let tst_name = cadastre["timestamp_token"].as_str().unwrap().to_owned();
    let ocsp_name = cadastre["ocsp"].as_str().map(str::to_owned);
    let expected = format!("expected cadastre's signer O=jum-gateway development, CN=cadastre signer (SHA-256 {cad_sha})");
    assert!(
        report.contains(&format!(
            "{doc_name}: cadastre's document, the answer to request {} of case 351-12/2026-IV, signed by O=jum-gateway development, CN=cadastre signer (SHA-256 {cad_sha})",
            cadastre["id"].as_str().unwrap()
        )),
        "{report}"
    );
    // The audit trail recorded the same signer when the answer came.
    assert!(
        report.contains(&format!(
            "{doc_name}'s signer (SHA-256 {cad_sha}) is the one the gateway recorded when cadastre's answer came"
        )),
        "{report}"
    );
    let (ok, v) = asice_check(&demo.out);
    assert!(ok, "{v:#}");

    // Resealed unchanged, it still holds: the forgeries below fail for
    // what they change, not for how they are resealed.
    let same = write(
        dir.path(),
        "same.asice",
        &reseal(&genuine, &seal, &tsa).await,
    );
    let (code, report) = dossier_verify(&same, &[&ca]);
    assert_eq!(code, 0, "{report}");
    let (ok, v) = asice_check(&same);
    assert!(ok, "{v:#}");

    let other_ca = {
        use jum_gateway::pki::Issued;
        Issued {
            key: openssl::pkey::PKey::private_key_from_pem(
                &std::fs::read(certs.join("ca.key")).unwrap(),
            )
            .unwrap(),
            cert: openssl::x509::X509::from_pem(&std::fs::read(&ca).unwrap()).unwrap(),
        }
    };
    let twin = {
        use jum_gateway::pki::{CertSpec, Issued, KeyKind, Role};
        let i = Issued::new(
            &CertSpec::new("cadastre signer", Role::Signing),
            KeyKind::EcP256,
            Some(&other_ca),
        )
        .unwrap();
        SigningKey::from_pem(&i.key_pem().unwrap(), &i.cert_pem().unwrap(), None).unwrap()
    };
    // The seal's own key, under a certificate the CA issued in the
    // cadastre signer's name.
    let seal_renamed = {
        use jum_gateway::pki::{issue_for, CertSpec, Role};
        let key_pem = std::fs::read(certs.join("gateway-sign.key")).unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(&key_pem).unwrap();
        let cert = issue_for(
            &CertSpec::new("cadastre signer", Role::Signing),
            &key,
            Some(&other_ca.cert),
            &other_ca.key,
        )
        .unwrap();
        SigningKey::from_pem(&key_pem, &cert.to_pem().unwrap(), None).unwrap()
    };
    let http = reqwest::Client::new();
    let cert_of = |k: &SigningKey| {
        use base64::Engine;
        openssl::x509::X509::from_der(
            &base64::engine::general_purpose::STANDARD
                .decode(k.certificate_b64())
                .unwrap(),
        )
        .unwrap()
    };
    let forgers: Vec<(&str, SigningKey, Option<&str>, String)> = vec![
        (
            "the seal's key",
            key("gateway-sign"),
            None,
            format!("our seal's certificate: the seal is never a registry's signer ({expected})"),
        ),
        (
            "the tax registry's signer",
            key("tax-sign"),
            None,
            format!("not by the signer the gateway accepted from cadastre ({expected})"),
        ),
        (
            "the seal's key under a certificate in the cadastre signer's name",
            seal_renamed,
            None,
            format!("our seal's key: the seal is never a registry's signer ({expected})"),
        ),
        (
            "a key under the same CA and name",
            twin,
            None,
            format!("not by the signer the gateway accepted from cadastre ({expected})"),
        ),
        (
            "the tax registry's signer, case.json rewritten to name it",
            key("tax-sign"),
            Some("tax-sign"),
            "one certificate is not the signer of two registries".into(),
        ),
        (
            "the seal's key, case.json rewritten to name it",
            key("gateway-sign"),
            Some("gateway-sign"),
            "the seal is never a registry's signer".into(),
        ),
    ];
    for (who, forger, rewrite, want) in forgers {
        let mut entries = genuine.clone();
        let doc = resign(entry(&genuine, &doc_name), ("1520", "1521"), &forger);
        // A genuine timestamp on the forged signature, from the same TSA.
        let imprint = jum_gateway::evidence::stamper::document_imprint(&doc).unwrap();
        replace(
            &mut entries,
            &tst_name,
            tsa.stamp(&imprint).await.unwrap().der,
        );
        // A genuine OCSP answer on the forger's certificate, from the CA's
        // responder.
        if let Some(n) = &ocsp_name {
            let issuer = openssl::x509::X509::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
            let q = jum_gateway::pki::revocation::ocsp::query(&cert_of(&forger), &issuer).unwrap();
            let answer = http
                .post(format!("{}/ocsp", demo.daemon.1))
                .header("content-type", "application/ocsp-request")
                .body(q.der)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            replace(&mut entries, n, answer.to_vec());
        }
        replace(&mut entries, &doc_name, doc);
        if let Some(base) = rewrite {
            let mut f = facts.clone();
            for r in f["requests"].as_array_mut().unwrap() {
                if r["registry"] == "cadastre" {
                    r["signer_sha256"] = sha256_hex(&der_of(base)).into();
                }
            }
            replace(
                &mut entries,
                "case.json",
                serde_json::to_vec_pretty(&f).unwrap(),
            );
        }
        let bad = write(
            dir.path(),
            "forged.asice",
            &reseal(&entries, &seal, &tsa).await,
        );
        let (code, report) = dossier_verify(&bad, &[&ca]);
        assert_eq!(code, 1, "{who}: {report}");
        let invalid: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("INVALID") || l.starts_with("NOT VERIFIABLE"))
            .collect();
        assert!(
            invalid
                .iter()
                .any(|l| l.contains(&format!("{doc_name}: ")) && l.contains(&want)),
            "{who}: {want:?} not said of {doc_name} in\n{report}"
        );
        // Everything else holds: the seal, the timestamp, the manifest.
        assert!(
            invalid.iter().all(|l| l.contains(&doc_name)
                || l.contains("OCSP")
                // case.json's record of the stamp, not the new token's
                || l.contains("says its document was stamped at")
                || (rewrite.is_some() && l.contains("documents/"))),
            "{who}: more than the document fails:\n{report}"
        );
        // case.json rewritten is caught by the audit trail's record too.
        if let Some(base) = rewrite {
            let want = format!(
                "{doc_name}: case.json names the signer SHA-256 {}, but the audit trail's exchange.answered entry",
                sha256_hex(&der_of(base))
            );
            assert!(report.contains(&want), "{who}: {want:?} not in\n{report}");
        }
        let (ok, v) = asice_check(&bad);
        assert!(ok, "{who}: pyasice accepts the resealed container: {v:#}");
    }

    // A verifier who knows the cadastre's CA insists on it.
    let foreign = {
        use jum_gateway::pki::{CertSpec, Issued, KeyKind, Role};
        Issued::new(
            &CertSpec::new("another CA", Role::Ca),
            KeyKind::EcP256,
            None,
        )
        .unwrap()
    };
    let foreign = write(dir.path(), "foreign.pem", &foreign.cert_pem().unwrap());
    let registry_ca = |spec: String| {
        let o = jumgw()
            .args(["dossier", "verify"])
            .arg(&demo.out)
            .arg("--trust")
            .arg(&ca)
            .args(["--registry-ca", &spec])
            .output()
            .unwrap();
        (o.status.code().unwrap_or(-1), text(&o))
    };
    let (code, report) = registry_ca(format!("cadastre={}", ca.display()));
    assert_eq!(code, 0, "{report}");
    // A registry's name mistyped insists on nothing, and says so.
    let (code, report) = registry_ca(format!("cadaster={}", ca.display()));
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("(--registry-ca): no document of registry \"cadaster\" in this dossier"),
        "{report}"
    );
    let (code, report) = registry_ca(format!("cadastre={}", foreign.display()));
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!(
            "{doc_name}: its signer chains to O=jum-gateway development, CN=jum-gateway development CA, not to the CA given for cadastre with --registry-ca"
        )),
        "{report}"
    );

    // A dossier from before signers were recorded: not verifiable, never valid.
    let mut old = genuine.clone();
    let mut f = facts.clone();
    for r in f["requests"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("signer_sha256");
        r.as_object_mut().unwrap().remove("signer_anchor_sha256");
    }
    replace(
        &mut old,
        "case.json",
        serde_json::to_vec_pretty(&f).unwrap(),
    );
    let old = write(dir.path(), "old.asice", &reseal(&old, &seal, &tsa).await);
    let (code, report) = dossier_verify(&old, &[&ca]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!(
            "NOT VERIFIABLE  {doc_name}: the dossier does not record which certificate cadastre's answer was accepted from"
        )),
        "{report}"
    );
}

/// What an insider holding the seal's key and the TSA's service can do
/// beyond re-signing a document under its own name: file a genuine
/// document under another request (of the same registry, in the same case
/// or another), add a request of another case, change what case.json says
/// of a request, list one twice, seal a file case.json does not name; each
/// resealed and refused, naming what the document answers instead or what
/// the audit trail says. Last, the cadastre's document changed and signed
/// with the tax registry's key, the tax request dropped, case.json and
/// the audit trail rewritten (re-chained, its checkpoint stamped anew):
/// bound only to what the dossier records, it holds, and the report says
/// so; with `--registry-signer` it is refused, the genuine dossier holding
/// under the same pins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_or_request_from_elsewhere_does_not_hold() {
    use jum_gateway::evidence::dossier::AuditLine;
    use jum_gateway::evidence::stamper::{checkpoint_imprint, document_imprint, TsaClient};
    use jum_gateway::xml::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dossier(dir.path()).await;
    // Another case with two cadastre requests: the bundle filed twice.
    let other_out = dir.path().join("other.asice");
    file_and_export(&demo.base, "351-99/2026-IV", &other_out).await;
    file_and_export(&demo.base, "351-99/2026-IV", &other_out).await;
    let certs = demo.data.join("certs");
    let ca = certs.join("ca.pem");
    let key = |base: &str| {
        SigningKey::from_pem(
            &std::fs::read(certs.join(format!("{base}.key"))).unwrap(),
            &std::fs::read(certs.join(format!("{base}.pem"))).unwrap(),
            None,
        )
        .unwrap()
    };
    let seal = key("gateway-sign");
    let evidence: jum_gateway::config::EvidenceConfig = toml::from_str(&format!(
        "tsa_url = \"{}/tsa\"\ntsa_trust = \"{}\"",
        demo.daemon.1,
        ca.display()
    ))
    .unwrap();
    let tsa = TsaClient::configured(&evidence).unwrap().unwrap();
    let genuine = unzip(&demo.out);
    let other = unzip(&other_out);
    let facts: serde_json::Value = serde_json::from_slice(entry(&genuine, "case.json")).unwrap();
    let other_facts: serde_json::Value =
        serde_json::from_slice(entry(&other, "case.json")).unwrap();
    let of = |f: &serde_json::Value, reg: &str| -> Vec<serde_json::Value> {
        f["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["registry"] == reg)
            .cloned()
            .collect()
    };
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap().to_owned();
    let cad = of(&facts, "cadastre").remove(0);
    let others = of(&other_facts, "cadastre");
    assert_eq!(others.len(), 2, "{other_facts:#}");
    let (cad_id, doc_name, tst_name) = (
        s(&cad, "id"),
        s(&cad, "document"),
        s(&cad, "timestamp_token"),
    );
    let (a, b) = (&others[0], &others[1]);
    let (a_id, b_id) = (s(a, "id"), s(b, "id"));
    let with_facts = |entries: &mut Vec<(String, Vec<u8>)>, f: &serde_json::Value| {
        replace(entries, "case.json", serde_json::to_vec_pretty(f).unwrap())
    };
    let edit = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut f = facts.clone();
        for r in f["requests"].as_array_mut().unwrap() {
            if r["registry"] == "cadastre" {
                change(r);
            }
        }
        let mut e = genuine.clone();
        with_facts(&mut e, &f);
        e
    };
    type Entries = Vec<(String, Vec<u8>)>;
    let mut cases: Vec<(&str, Entries, Vec<String>)> = Vec::new();

    // another case's genuine cadastre document (and its token) filed
    // under this case's cadastre request.
    let mut e = genuine.clone();
    replace(&mut e, &doc_name, entry(&other, &s(a, "document")).to_vec());
    replace(
        &mut e,
        &tst_name,
        entry(&other, &s(a, "timestamp_token")).to_vec(),
    );
    cases.push((
        "another case's document",
        e,
        vec![format!("INVALID         {doc_name}: is the answer to request {a_id} of case 351-99/2026-IV, not to request {cad_id} of case 351-12/2026-IV it is filed under")],
    ));
    // Two documents of one registry in one case, swapped.
    let mut e = other.clone();
    for (x, y) in [(a, b), (b, a)] {
        for k in ["document", "timestamp_token"] {
            replace(&mut e, &s(x, k), entry(&other, &s(y, k)).to_vec());
        }
    }
    cases.push((
        "two documents of a case swapped",
        e,
        vec![
            format!("INVALID         {}: is the answer to request {b_id} of case 351-99/2026-IV, not to request {a_id} of case 351-99/2026-IV", s(a, "document")),
            format!("INVALID         {}: is the answer to request {a_id} of case 351-99/2026-IV, not to request {b_id} of case 351-99/2026-IV", s(b, "document")),
        ],
    ));
    // a request of another case added, its files with it.
    let mut f = facts.clone();
    f["requests"].as_array_mut().unwrap().push(a.clone());
    let mut e = genuine.clone();
    with_facts(&mut e, &f);
    for k in ["document", "timestamp_token", "ocsp"] {
        e.insert(2, (s(a, k), entry(&other, &s(a, k)).to_vec()));
    }
    cases.push((
        "a request of another case added",
        e,
        vec![
            format!("INVALID         case.json: request {a_id} has no request.accepted entry in the audit trail: the gateway did not accept it in this case"),
            format!("INVALID         {}: is the answer to request {a_id} of case 351-99/2026-IV, not to request {a_id} of case 351-12/2026-IV", s(a, "document")),
        ],
    ));
    // The same request twice.
    let mut f = facts.clone();
    f["requests"].as_array_mut().unwrap().push(cad.clone());
    let mut e = genuine.clone();
    with_facts(&mut e, &f);
    cases.push((
        "a request twice",
        e,
        vec![format!(
            "INVALID         case.json: request {cad_id} is listed twice"
        )],
    ));
    cases.push((
        "another purpose",
        edit(&|r| r["purpose"] = "tax audit".into()),
        vec![
            format!("INVALID         case.json: request {cad_id}: its purpose is \"tax audit\", the audit trail's request.accepted entry"),
            format!("INVALID         {doc_name}: answers request {cad_id} with purpose \"building permit\", case.json says \"tax audit\""),
        ],
    ));
    cases.push((
        "another official and client",
        edit(&|r| {
            r["official"] = "mallory".into();
            r["client"] = "someone".into();
        }),
        vec![
            format!("INVALID         case.json: request {cad_id}: its official is \"mallory\", the audit trail's request.accepted entry"),
            format!("INVALID         case.json: request {cad_id}: its client is \"someone\", the audit trail's request.accepted entry"),
        ],
    ));
    cases.push((
        "another sheet of the subject",
        edit(&|r| r["subject"]["sheet"] = "1521".into()),
        vec![format!("INVALID         {doc_name}: speaks of another sheet than the subject case.json names for request {cad_id}")],
    ));
    cases.push((
        "another state, revocation status and stamp time",
        edit(&|r| {
            r["state"] = "dead".into();
            r["revocation"]["status"] = "revoked".into();
            r["timestamp"]["time_ms"] = 1000.into();
        }),
        vec![
            format!("INVALID         case.json: request {cad_id} has a document but its state is \"dead\", not fetched or delivered"),
            format!("INVALID         case.json: request {cad_id} says its signer's revocation status was revoked, the kept evidence says good"),
            format!("INVALID         case.json: request {cad_id} says its document was stamped at 1970-01-01T00:00:01Z, its token says"),
        ],
    ));
    // sealed files case.json does not name.
    let mut e = genuine.clone();
    let corrected = format!("documents/{cad_id}-corrected.xml");
    e.insert(2, (corrected.clone(), entry(&genuine, &doc_name).to_vec()));
    e.push(("audit/notes.txt".into(), b"the sheet is 1521".to_vec()));
    cases.push((
        "sealed files case.json does not name",
        e,
        vec![
            format!("INVALID         {corrected}: not part of the dossier's structure: case.json does not name it"),
            "INVALID         audit/notes.txt: not part of the dossier's structure: case.json does not name it".into(),
        ],
    ));
    // a kept CRL larger than the gateway ever reads one.
    let crl_name = format!("evidence/crl-{}.crl", "0".repeat(64));
    let mut e = edit(&|r| r["crl"] = crl_name.clone().into());
    e.insert(2, (crl_name.clone(), vec![0x30; (10 << 20) + 1]));
    cases.push((
        "a CRL over the cap",
        e,
        vec![format!(
            "INVALID         {crl_name}: entry {crl_name:?}: {} bytes, more than the {} bytes a file of its kind may have",
            (10 << 20) + 1,
            10 << 20
        )],
    ));
    for (what, entries, wants) in cases {
        let f = write(
            dir.path(),
            "forged.asice",
            &reseal(&entries, &seal, &tsa).await,
        );
        let (code, report) = dossier_verify(&f, &[&ca]);
        assert_eq!(code, 1, "{what}: {report}");
        for want in wants {
            assert!(report.contains(&want), "{what}: {want:?} not in\n{report}");
        }
    }

    // the cadastre's document re-signed with the tax registry's key.
    let tax = of(&facts, "tax").remove(0);
    let tax_id = s(&tax, "id");
    let tax_files = [
        s(&tax, "document"),
        s(&tax, "timestamp_token"),
        s(&tax, "ocsp"),
    ];
    let tax_sha = sha256_hex(
        &openssl::x509::X509::from_pem(&std::fs::read(certs.join("tax-sign.pem")).unwrap())
            .unwrap()
            .to_der()
            .unwrap(),
    );
    let mut e: Vec<(String, Vec<u8>)> = genuine
        .iter()
        .filter(|(n, _)| !tax_files.contains(n))
        .cloned()
        .collect();
    let forged = resign(
        entry(&genuine, &doc_name),
        ("1520", "1521"),
        &key("tax-sign"),
    );
    let token = tsa
        .stamp(&document_imprint(&forged).unwrap())
        .await
        .unwrap();
    replace(&mut e, &tst_name, token.der.clone());
    replace(&mut e, &doc_name, forged);
    replace(
        &mut e,
        &s(&cad, "ocsp"),
        entry(&genuine, &s(&tax, "ocsp")).to_vec(),
    );
    // The trail without the tax request, the cadastre's answer naming the
    // tax signer, re-chained, its checkpoint stamped anew.
    let mut lines: Vec<AuditLine> = String::from_utf8_lossy(entry(&genuine, "audit/entries.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &AuditLine| l.entry.draft.request_id.as_deref() != Some(tax_id.as_str()))
        .collect();
    let (first, mut prev) = (lines[0].entry.seq, lines[0].entry.prev.clone());
    let (mut jsonl, mut chain) = (String::new(), String::new());
    for (i, l) in lines.iter_mut().enumerate() {
        let e = &mut l.entry;
        if e.draft.request_id.as_deref() == Some(cad_id.as_str()) && e.draft.signer_sha256.is_some()
        {
            e.draft.signer_sha256 = Some(tax_sha.clone());
        }
        e.seq = first + i as u64;
        e.prev = prev.clone();
        e.hash = e.digest();
        chain.push_str(&format!("{} {} {}\n", e.seq, e.prev, e.hash));
        prev = e.hash.clone();
        jsonl.push_str(&serde_json::to_string(l).unwrap());
        jsonl.push('\n');
    }
    let last = first + lines.len() as u64 - 1;
    replace(&mut e, "audit/entries.jsonl", jsonl.into_bytes());
    replace(&mut e, "audit/chain.txt", chain.into_bytes());
    replace(
        &mut e,
        "audit/checkpoint.txt",
        format!("{last} {prev}\n").into_bytes(),
    );
    replace(
        &mut e,
        "audit/checkpoint.tst",
        tsa.stamp(&checkpoint_imprint(last, &prev))
            .await
            .unwrap()
            .der,
    );
    let mut f = facts.clone();
    f["requests"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["registry"] != "tax");
    for r in f["requests"].as_array_mut().unwrap() {
        if r["registry"] == "cadastre" {
            r["signer"] = "O=jum-gateway development, CN=tax signer".into();
            r["signer_sha256"] = tax_sha.clone().into();
            r["timestamp"]["time_ms"] = token.time_ms.into();
        }
    }
    f["audit"]["entries"] = lines.len().into();
    f["audit"]["last_seq"] = last.into();
    f["audit"]["checkpoint"]["seq"] = last.into();
    f["audit"]["checkpoint"]["hash"] = prev.clone().into();
    // With the export's time as it was, the new token comes after it.
    with_facts(&mut e, &f);
    let late = write(dir.path(), "late.asice", &reseal(&e, &seal, &tsa).await);
    let (code, report) = dossier_verify(&late, &[&ca]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!(
            "INVALID         {tst_name}: timestamp on {doc_name}'s signature at "
        )),
        "{report}"
    );
    assert!(
        report.contains(", after the dossier was exported ("),
        "{report}"
    );
    // The export's time moved too: what the dossier records holds.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 5000;
    f["exported_ms"] = now.into();
    f["exported"] = jum_gateway::time::rfc3339_secs(now).into();
    with_facts(&mut e, &f);
    let tax2 = write(dir.path(), "tax2.asice", &reseal(&e, &seal, &tsa).await);
    let (code, report) = dossier_verify(&tax2, &[&ca]);
    assert_eq!(
        code, 0,
        "the forgery, bound only to what it records: {report}"
    );
    assert!(
        report.contains(&format!("{doc_name}: cadastre's document, the answer to request {cad_id} of case 351-12/2026-IV, signed by O=jum-gateway development, CN=tax signer (SHA-256 {tax_sha}), the signer the gateway accepted from it (no signer given for it with --registry-signer: bound only to what the dossier records)")),
        "{report}"
    );
    let cad_sha = sha256_hex(
        &openssl::x509::X509::from_pem(&std::fs::read(certs.join("cadastre-sign.pem")).unwrap())
            .unwrap()
            .to_der()
            .unwrap(),
    );
    let by_subject = "cadastre=CN=cadastre signer,O=jum-gateway development";
    let by_sha = format!("cadastre={}", cad_sha.to_uppercase());
    for pin in [by_subject.to_owned(), by_sha] {
        let (code, report) = verify_with(&tax2, &ca, &["--registry-signer", &pin]);
        assert_eq!(code, 1, "{pin}: {report}");
        assert!(
            report.contains(&format!("INVALID         {doc_name}: signed by O=jum-gateway development, CN=tax signer (SHA-256 {tax_sha}), not by the signer given for cadastre with --registry-signer (")),
            "{pin}: {report}"
        );
        let (code, report) = verify_with(
            &demo.out,
            &ca,
            &[
                "--registry-signer",
                &pin,
                "--registry-signer",
                &format!("tax={tax_sha}"),
            ],
        );
        assert_eq!(code, 0, "{pin}: the genuine dossier: {report}");
        assert!(
            report.contains("signed by O=jum-gateway development, CN=cadastre signer")
                && report.contains("the signer the gateway accepted from it and the one given for it with --registry-signer"),
            "{report}"
        );
    }
    // A pin that is no pin, or names a registry without documents.
    let (code, report) = verify_with(
        &demo.out,
        &ca,
        &["--registry-signer", "cadastre=CN=cadastre signer2"],
    );
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("not by the signer given for cadastre with --registry-signer (subject CN=cadastre signer2)"), "{report}");
    let (code, report) = verify_with(&demo.out, &ca, &["--registry-signer", "cadastre=12ab"]);
    assert_ne!(code, 0, "{report}");
    assert!(
        report.contains("--registry-signer cadastre: \"12ab\" is not a SHA-256"),
        "{report}"
    );
    let (code, report) = verify_with(
        &demo.out,
        &ca,
        &["--registry-signer", &format!("cadaster={tax_sha}")],
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report
            .contains("(--registry-signer): no document of registry \"cadaster\" in this dossier"),
        "{report}"
    );
    // --help says what a registry without a signer or CA given is bound to.
    let o = jumgw()
        .args(["dossier", "verify", "--help"])
        .output()
        .unwrap();
    let help = text(&o).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("--registry-signer")
            && help.contains("its documents are bound only to the signer the dossier records"),
        "{help}"
    );
}

/// `jumgw dossier verify --trust CA` on `file`, with more arguments.
fn verify_with(file: &std::path::Path, ca: &std::path::Path, args: &[&str]) -> (i32, String) {
    let o = jumgw()
        .args(["dossier", "verify"])
        .arg(file)
        .arg("--trust")
        .arg(ca)
        .args(args)
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), text(&o))
}

/// `zip` with `n` bytes before it, every offset moved by `n` so that the
/// central directory still finds each entry: a file that is also
/// something else (a PDF, an HTML page) to other readers.
fn prefixed(zip: &[u8], prefix: &[u8]) -> Vec<u8> {
    let n = prefix.len() as u32;
    let le = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let mut z = zip.to_vec();
    let end = z
        .windows(4)
        .rposition(|w| w == 0x0605_4b50u32.to_le_bytes())
        .unwrap();
    let (count, cd) = (
        u16::from_le_bytes([z[end + 10], z[end + 11]]),
        le(&z, end + 16),
    );
    let mut at = cd as usize;
    for _ in 0..count {
        assert_eq!(le(&z, at), 0x0201_4b50);
        let off = le(&z, at + 42) + n;
        z[at + 42..at + 46].copy_from_slice(&off.to_le_bytes());
        let len = |i: usize| u16::from_le_bytes([z[at + i], z[at + i + 1]]) as usize;
        at += 46 + len(28) + len(30) + len(32);
    }
    z[end + 16..end + 20].copy_from_slice(&(cd + n).to_le_bytes());
    let mut out = prefix.to_vec();
    out.extend_from_slice(&z);
    out
}

/// Each way of hiding something in the container, built from a genuine
/// dossier and run through the real `jumgw dossier verify`: refused, the
/// message naming the entry, where the `zip` crate and Python's zipfile
/// (shown for each) read the file without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_tricks_are_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dossier(dir.path()).await;
    drop(demo.daemon);
    let ca = demo.data.join("certs/ca.pem");
    let (code, report) = verify_with(&demo.out, &ca, &[]);
    assert_eq!(code, 0, "genuine: {report}");
    let genuine = std::fs::read(&demo.out).unwrap();
    let entries = unzip(&demo.out);
    let doc = entries
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| n.starts_with("documents/"))
        .unwrap();
    let python_reads = |f: &std::path::Path| {
        std::process::Command::new(python())
            .args([
                "-c",
                "import sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nfor i in z.infolist(): z.read(i)",
            ])
            .arg(f)
            .output()
            .unwrap()
            .status
            .success()
    };

    let mut cases: Vec<(&str, std::path::PathBuf, String)> = Vec::new();
    // A forged copy under the same name, before the genuine one.
    let f = dir.path().join("twice.asice");
    rezip(&demo.out, &f, |mut e| {
        let at = e.iter().position(|(n, _)| *n == doc).unwrap();
        let mut forged = e[at].1.clone();
        forged.extend_from_slice(b"<!-- forged -->");
        e.insert(1, (doc.clone(), forged));
        e
    });
    cases.push((
        "a name twice",
        f,
        format!("(container): entry {doc:?}: is in the central directory twice"),
    ));
    // The local header names another file than the central directory.
    let mut b = genuine.clone();
    let at = b
        .windows(4 + 26)
        .position(|w| {
            w[..4] == 0x0403_4b50u32.to_le_bytes()
                && b"case.json".len() == u16::from_le_bytes([w[26], w[27]]) as usize
        })
        .unwrap();
    assert_eq!(&b[at + 30..at + 39], b"case.json");
    b[at + 38] = b'N';
    let f = write(dir.path(), "local-name.asice", &b);
    cases.push((
        "a local header naming another file",
        f,
        "(container): entry \"case.json\": its local header names it \"case.jsoN\": the local header and the central directory disagree".into(),
    ));
    // 4 KB before the zip: also a PDF.
    let mut pdf = b"%PDF-1.4\n".to_vec();
    pdf.resize(4096, b' ');
    let f = write(dir.path(), "prefixed.asice", &prefixed(&genuine, &pdf));
    cases.push((
        "4 KB of garbage before the zip",
        f,
        "(container): 4096 bytes before the first local header (entry \"mimetype\")".into(),
    ));
    // An entry in META-INF/ that neither the manifest nor the seal covers.
    let f = dir.path().join("evil.asice");
    rezip(&demo.out, &f, |mut e| {
        e.push(("META-INF/evil.xml".into(), b"<evil/>".to_vec()));
        e
    });
    cases.push((
        "an unlisted META-INF/evil.xml",
        f,
        "META-INF/evil.xml: in META-INF/ but neither the manifest nor a signature".into(),
    ));
    // A directory entry with data.
    let f = dir.path().join("dir.asice");
    rezip(&demo.out, &f, |mut e| {
        e.push(("documents/".into(), b"hidden".to_vec()));
        e
    });
    cases.push((
        "a directory entry with data",
        f,
        "(container): entry \"documents/\": is a directory entry with data".into(),
    ));
    // Two documents given each other's names in an Info-ZIP Unicode path
    // field, no sealed byte changed: unzip extracts them swapped.
    let docs: Vec<String> = entries
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| n.starts_with("documents/"))
        .collect();
    let f = dir.path().join("upath.asice");
    let o = std::process::Command::new(python())
        .args([
            "-c",
            r#"
import sys, struct, zlib, zipfile
src, out, a, b = sys.argv[1:5]
z, w = zipfile.ZipFile(src), zipfile.ZipFile(out, "w")
for i in z.infolist():
    data, j = z.read(i), zipfile.ZipInfo(i.filename, i.date_time)
    j.compress_type = i.compress_type
    other = {a: b, b: a}.get(i.filename)
    if other:
        j.extra = struct.pack("<HHBI", 0x7075, 5 + len(other), 1, zlib.crc32(i.filename.encode())) + other.encode()
    w.writestr(j, data)
w.close()
"#,
        ])
        .arg(&demo.out)
        .arg(&f)
        .arg(&docs[0])
        .arg(&docs[1])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    cases.push((
        "an Info-ZIP Unicode path field",
        f,
        format!(
            "(container): entry {:?}: its central record carries an Info-ZIP Unicode path field (0x7075) naming it {:?}: a second name",
            docs[0], docs[1]
        ),
    ));
    // Bytes after the end record, beyond its comment.
    let mut b = genuine.clone();
    b.extend_from_slice(b"<html>also a page</html>");
    let f = write(dir.path(), "trailing.asice", &b);
    cases.push((
        "bytes after the end record",
        f,
        "(container): 24 bytes after the end of central directory record, beyond its 0-byte comment".into(),
    ));
    for (what, file, want) in cases {
        if what != "a local header naming another file" {
            assert!(python_reads(&file), "{what}: Python's zipfile reads it");
        }
        let (code, report) = verify_with(&file, &ca, &[]);
        assert_eq!(code, 1, "{what}: {report}");
        assert!(report.contains(&want), "{what}: {want:?} not in\n{report}");
    }

    // Any bytes of the genuine dossier changed: it no longer holds, or
    // what it holds is byte for byte the genuine content (a change to a
    // field nothing reads, such as the central record's "made by").
    let ca_pem = std::fs::read(&ca).unwrap();
    let read_all = |b: &[u8]| -> Option<Vec<(String, Vec<u8>)>> {
        use jum_gateway::evidence::container::{Container, Limits};
        let c = Container::open(std::io::Cursor::new(b), Limits::default()).ok()?;
        Some(
            c.entries()
                .iter()
                .map(|e| (e.name.clone(), c.load(&e.name, u64::MAX).unwrap().unwrap()))
                .collect(),
        )
    };
    let want = read_all(&genuine).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 200,
        ..Default::default()
    });
    let n = genuine.len();
    runner
        .run(
            &proptest::collection::vec((0..n, 1..=255u8), 1..4),
            |flips| {
                let mut b = genuine.clone();
                for (at, x) in &flips {
                    b[*at] ^= x;
                }
                let r = jum_gateway::evidence::verify::verify(&b, Some(&ca_pem));
                if r.holds() {
                    proptest::prop_assert_eq!(read_all(&b), Some(want.clone()), "{:?}", flips);
                }
                Ok(())
            },
        )
        .unwrap();
}

/// A zip bomb of the issue (12 entries of 255 MiB of zeros, deflated: a
/// file of ~3 MB, made here), and one entry over the per-entry cap, run
/// through `jumgw dossier verify` with 256 MB of address space (the
/// genuine dossier needs ~130 MB; before the caps, the bomb took 3.4 GB):
/// refused with the cap's message and an exit code, not killed. The
/// genuine dossier holds under the same limit, and `--max-total` lowers
/// the total cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_bomb_is_refused_within_an_address_space_limit() {
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dossier(dir.path()).await;
    drop(demo.daemon);
    let ca = demo.data.join("certs/ca.pem");
    let limited = |file: &std::path::Path, args: &[&str]| {
        let o = std::process::Command::new("prlimit")
            .arg(format!("--as={}", 256u64 << 20))
            .arg(env!("CARGO_BIN_EXE_jumgw"))
            .args(["dossier", "verify"])
            .arg(file)
            .arg("--trust")
            .arg(&ca)
            .args(args)
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    let (code, report) = limited(&demo.out, &[]);
    assert_eq!(
        code,
        Some(0),
        "the genuine dossier under the limit: {report}"
    );
    let bomb = |name: &str, n: usize, size: u64| {
        let file = dir.path().join(name);
        let o = std::process::Command::new(python())
            .args([
                "-c",
                r#"
import sys, zlib, struct
n, size, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = zlib.compressobj(9, zlib.DEFLATED, -15)
zeros, data, crc, left = bytes(1 << 20), [], 0, size
while left:
    k = min(left, len(zeros))
    data.append(c.compress(zeros[:k])); crc = zlib.crc32(zeros[:k], crc); left -= k
data.append(c.flush()); data = b"".join(data)
mt = b"application/vnd.etsi.asic-e+zip"
items = [(b"mimetype", 0, mt, zlib.crc32(mt), len(mt))] + [
    (b"bomb/%d.bin" % i, 8, data, crc, size) for i in range(n)]
body, central = b"", b""
for name, method, d, c32, usize in items:
    off = len(body)
    body += struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, 0, method, 0, 0x21, c32, len(d), usize, len(name), 0) + name + d
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 20, 20, 0, method, 0, 0x21, c32, len(d), usize, len(name), 0, 0, 0, 0, 0, off) + name
end = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, len(items), len(items), len(central), len(body), 0)
open(out, "wb").write(body + central + end)
"#,
            ])
            .arg(n.to_string())
            .arg(size.to_string())
            .arg(&file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        file
    };
    let big = bomb("bomb.asice", 12, 255 << 20);
    let len = std::fs::metadata(&big).unwrap().len();
    assert!(len < 4 << 20, "{len}");
    let (code, report) = limited(&big, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "the entries uncompress to more than {} bytes together (the total cap, --max-total), reached at entry \"bomb/2.bin\"",
            512u64 << 20
        )),
        "{report}"
    );
    // Under the default total, over a lower one.
    let two = bomb("two.asice", 2, 100 << 20);
    let (code, report) = limited(&two, &["--max-total", "150MiB"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "more than {} bytes together (the total cap, --max-total), reached at entry \"bomb/1.bin\"",
            150u64 << 20
        )),
        "{report}"
    );
    // Within both caps, it is read to the end, and refused for what it
    // is (no seal), not for its size.
    let (code, report) = limited(&two, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("META-INF/signatures0.xml: missing"),
        "{report}"
    );
    // Without the seal's key: case.json pointed at a CRL of half a
    // million entries added beside it, and a document filled with 10 MiB
    // of processing instructions. The seal no longer vouches for them, so
    // neither is parsed.
    let nokey = dir.path().join("nokey.asice");
    let o = std::process::Command::new(python())
        .args([
            "-c",
            r#"
import sys, json, zipfile
src, out = sys.argv[1:3]
def tlv(t, b):
    n = len(b)
    if n < 128: return bytes([t, n]) + b
    l = n.to_bytes((n.bit_length() + 7) // 8, "big"); return bytes([t, 0x80 | len(l)]) + l + b
alg = tlv(0x30, tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
name = tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, b"\x55\x04\x03") + tlv(0x0c, b"x"))))
t1, t2 = tlv(0x17, b"261207000000Z"), tlv(0x17, b"291207000000Z")
one = tlv(0x30, tlv(0x02, b"\x01") + t1)
tbs = tlv(0x30, tlv(0x02, b"\x01") + alg + name + t1 + t2 + tlv(0x30, one * 500000))
crl = tlv(0x30, tbs + alg + tlv(0x03, b"\0" + tlv(0x30, tlv(0x02, b"\x01") + tlv(0x02, b"\x01"))))
crl_name = "evidence/crl-" + "0" * 64 + ".crl"
z, w = zipfile.ZipFile(src), zipfile.ZipFile(out, "w")
done = False
for i in z.infolist():
    data = z.read(i)
    if i.filename == "case.json":
        c = json.loads(data); c["requests"][0]["crl"] = crl_name; data = json.dumps(c).encode()
    if i.filename.startswith("documents/") and not done:
        data = data.replace(b"<SOAP-ENV:Body>", b"<SOAP-ENV:Body>" + b"<?a?>" * (2 << 20), 1); done = True
    w.writestr(i, data, i.compress_type)
    if i.filename == "case.json":
        w.writestr(crl_name, crl, zipfile.ZIP_DEFLATED)
w.close()
"#,
        ])
        .arg(&demo.out)
        .arg(&nokey)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (code, report) = limited(&nokey, &[]);
    assert_eq!(code, Some(1), "{report}");
    for want in [
        "INVALID         case.json: changed after sealing".to_owned(),
        format!(
            "INVALID         evidence/crl-{}.crl: not covered by the seal: added after sealing",
            "0".repeat(64)
        ),
        "changed after sealing: its SHA-256 is not the one the seal signed".to_owned(),
    ] {
        assert!(report.contains(&want), "{want:?} not in\n{report}");
    }
    // Neither the CRL nor a document was read.
    assert!(
        !report.contains("CRL for") && !report.contains("signed by"),
        "{report}"
    );
    // The seal's own file filled with 9.5 MB of processing instructions
    // outside what it signs (no key needed): the XML reader's node budget
    // refuses it early, within the same address space.
    let pis = dir.path().join("seal-pis.asice");
    let o = std::process::Command::new(python())
        .args([
            "-c",
            r#"
import sys, zipfile
src, out = sys.argv[1:3]
z, w = zipfile.ZipFile(src), zipfile.ZipFile(out, "w")
for i in z.infolist():
    data = z.read(i)
    if i.filename == "META-INF/signatures0.xml":
        at = data.index(b"<ds:SignatureValue")
        data = data[:at] + b"<?a?>" * 1900000 + data[at:]
    w.writestr(i, data, i.compress_type)
w.close()
"#,
        ])
        .arg(&demo.out)
        .arg(&pis)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (code, report) = limited(&pis, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("META-INF/signatures0.xml: the seal does not hold: malformed XML")
            && report.contains("more than 250000 nodes"),
        "{report}"
    );
    // One entry over the per-entry cap.
    let one = bomb("one.asice", 1, (256 << 20) + 1);
    let (code, report) = limited(&one, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "entry \"bomb/0.bin\": its record says {} bytes uncompressed, more than the {} bytes an entry may have",
            (256u64 << 20) + 1,
            256u64 << 20
        )),
        "{report}"
    );
    let o = jumgw()
        .args(["dossier", "verify", "--help"])
        .output()
        .unwrap();
    assert!(text(&o).contains("--max-total"), "{}", text(&o));
}

/// An X-Road security server's signed document of `message`: an ASiC-E
/// with the message, its attachments and a signature entry.
fn x_road_asice(message: &[u8], attachments: &[&[u8]]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let deflated = zip::write::SimpleFileOptions::default();
    z.start_file("mimetype", stored).unwrap();
    z.write_all(b"application/vnd.etsi.asic-e+zip").unwrap();
    z.start_file("message.xml", deflated).unwrap();
    z.write_all(message).unwrap();
    for (i, a) in attachments.iter().enumerate() {
        z.start_file(format!("attachment{}", i + 1), deflated)
            .unwrap();
        z.write_all(a).unwrap();
    }
    z.start_file("META-INF/signatures.xml", deflated).unwrap();
    z.write_all(b"<asic:XAdESSignatures xmlns:asic=\"http://uri.etsi.org/02918/v1.2.1#\"/>")
        .unwrap();
    z.finish().unwrap().into_inner()
}

/// The insider's dodge of the signer binding: a signed-XML document of
/// the demo dossier re-filed as if it had come by X-Road (its signer
/// taken out of case.json, a signed document made for it, the dossier
/// resealed with the seal's key and a genuine timestamp). The audit trail
/// recorded its signer when the answer came, so it is refused, naming
/// that signer; so is the claim made beside the signer. The genuine
/// dossier resealed still holds, and the independent check reads the
/// forged signed document as consistent (it holds the document byte for
/// byte: the forgery is caught by the trail, not by its bytes) and
/// catches one that holds another message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_xml_document_claiming_an_x_road_signed_document_does_not_hold() {
    use jum_gateway::xml::SigningKey;
    let dir = tempfile::tempdir().unwrap();
    let demo = demo_dossier(dir.path()).await;
    let certs = demo.data.join("certs");
    let ca = certs.join("ca.pem");
    let seal = SigningKey::from_pem(
        &std::fs::read(certs.join("gateway-sign.key")).unwrap(),
        &std::fs::read(certs.join("gateway-sign.pem")).unwrap(),
        None,
    )
    .unwrap();
    let evidence: jum_gateway::config::EvidenceConfig = toml::from_str(&format!(
        "tsa_url = \"{}/tsa\"\ntsa_trust = \"{}\"",
        demo.daemon.1,
        ca.display()
    ))
    .unwrap();
    let tsa = jum_gateway::evidence::stamper::TsaClient::configured(&evidence)
        .unwrap()
        .unwrap();
    let genuine = unzip(&demo.out);
    let same = write(
        dir.path(),
        "same.asice",
        &reseal(&genuine, &seal, &tsa).await,
    );
    let (code, report) = dossier_verify(&same, &[&ca]);
    assert_eq!(code, 0, "{report}");

    let facts: serde_json::Value = serde_json::from_slice(entry(&genuine, "case.json")).unwrap();
    let i = facts["requests"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["registry"] == "cadastre")
        .unwrap();
    let id = facts["requests"][i]["id"].as_str().unwrap().to_owned();
    let sha = facts["requests"][i]["signer_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc_name = format!("documents/{id}.xml");
    let doc = entry(&genuine, &doc_name).to_vec();
    let asice_name = format!("evidence/{id}.asice");
    let forge = |container: &[u8], keep_signer: bool| {
        let mut facts = facts.clone();
        let r = &mut facts["requests"][i];
        if !keep_signer {
            for k in [
                "signer",
                "signer_sha256",
                "signer_anchor",
                "signer_anchor_sha256",
            ] {
                r[k] = serde_json::Value::Null;
            }
        }
        r["signed_document"] = serde_json::json!({
            "state": "kept", "message_id": "5b7f3f4e-1c1e-4f8e-9a57-0d5e3c1b2a90",
            "tries": 1, "since_ms": 0,
            "document_id": format!("{id}.asice"),
            "sha256": sha256_hex(container),
        });
        r["signed_document_file"] = asice_name.clone().into();
        let mut entries = genuine.clone();
        replace(
            &mut entries,
            "case.json",
            serde_json::to_vec_pretty(&facts).unwrap(),
        );
        let at = entries.iter().position(|(n, _)| n == &doc_name).unwrap() + 1;
        entries.insert(at, (asice_name.clone(), container.to_vec()));
        entries
    };

    // The signer dropped, X-Road claimed: the trail's signer decides.
    let container = x_road_asice(&doc, &[]);
    let dodged = write(
        dir.path(),
        "dodged.asice",
        &reseal(&forge(&container, false), &seal, &tsa).await,
    );
    let (code, report) = dossier_verify(&dodged, &[&ca]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(
            "case.json says it came by X-Road, bound to a signed document, but the audit trail's exchange.answered entry"
        ) && report.contains(&format!(
            "recorded the signer SHA-256 {sha} when cadastre's answer came: a signed-XML document, which must be bound to that signer"
        )),
        "{report}"
    );
    // The independent check reads the forged signed document as the
    // document's: the bytes agree, the trail does not.
    let (ok, v) = asice_check(&dodged);
    assert!(ok, "{v:#}");
    assert!(
        v["checks"].as_array().unwrap().iter().any(|c| c["check"]
            == format!("{asice_name}: message.xml is {doc_name}")
            && c["ok"] == true),
        "{v:#}"
    );

    // The claim beside the signer.
    let beside = write(
        dir.path(),
        "beside.asice",
        &reseal(&forge(&container, true), &seal, &tsa).await,
    );
    let (code, report) = dossier_verify(&beside, &[&ca]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("and an X-Road signed document for it: a signed-XML document is bound to its signer, which claiming X-Road does not replace"),
        "{report}"
    );

    // A signed document of another message: the independent check too.
    let other = x_road_asice(b"<other/>", &[]);
    let wrong = write(
        dir.path(),
        "wrong.asice",
        &reseal(&forge(&other, false), &seal, &tsa).await,
    );
    let (code, report) = dossier_verify(&wrong, &[&ca]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains(&format!(
            "not the signed document of {doc_name}: its message.xml"
        )),
        "{report}"
    );
    let (ok, v) = asice_check(&wrong);
    assert!(!ok, "{v:#}");
    assert!(
        v["checks"].as_array().unwrap().iter().any(|c| c["check"]
            == format!("{asice_name}: message.xml is {doc_name}")
            && c["ok"] == false),
        "{v:#}"
    );

    // A signed document whose message.xml inflates to 200 MiB (a file of
    // ~200 KB, made here with Python's zlib; under the per-entry cap, over
    // the signed document's total), read by `dossier verify` with 256 MiB
    // of address space: refused at the cap while inflating, with its
    // message, not killed; the genuine dossier holds under the same limit.
    let bomb_file = dir.path().join("inner-bomb.asice");
    let o = std::process::Command::new(python())
        .args([
            "-c",
            r#"
import sys, zlib, struct
out = sys.argv[1]
c = zlib.compressobj(9, zlib.DEFLATED, -15)
zeros, data, crc, left = bytes(1 << 20), [], 0, 200 << 20
while left:
    k = min(left, len(zeros))
    data.append(c.compress(zeros[:k])); crc = zlib.crc32(zeros[:k], crc); left -= k
data.append(c.flush()); data = b"".join(data)
mt = b"application/vnd.etsi.asic-e+zip"
items = [(b"mimetype", 0, mt, zlib.crc32(mt), len(mt)), (b"message.xml", 8, data, crc, 200 << 20)]
body, central = b"", b""
for name, method, d, c32, usize in items:
    off = len(body)
    body += struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, 0, method, 0, 0x21, c32, len(d), usize, len(name), 0) + name + d
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 20, 20, 0, method, 0, 0x21, c32, len(d), usize, len(name), 0, 0, 0, 0, 0, off) + name
end = struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, len(items), len(items), len(central), len(body), 0)
open(out, "wb").write(body + central + end)
"#,
        ])
        .arg(&bomb_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let inner_bomb = std::fs::read(&bomb_file).unwrap();
    assert!(inner_bomb.len() < 4 << 20, "{}", inner_bomb.len());
    let bombed = write(
        dir.path(),
        "bombed.asice",
        &reseal(&forge(&inner_bomb, false), &seal, &tsa).await,
    );
    let limited = |file: &std::path::Path| {
        let o = jumgw_limited(256 << 20)
            .args(["dossier", "verify"])
            .arg(file)
            .arg("--trust")
            .arg(&ca)
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    let (code, report) = limited(&same);
    assert_eq!(
        code,
        Some(0),
        "the genuine dossier under the limit: {report}"
    );
    let (code, report) = limited(&bombed);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "{asice_name}: not the signed document of {doc_name}: its entries uncompress to more than {} bytes together, what a signed document may hold, reached at entry \"message.xml\"",
            128u64 << 20
        )),
        "{report}"
    );
}

/// `serve --demo` with the cadastre over X-Road: the daemon runs the
/// evidence job for signed documents; once the demo's security-server
/// front has timestamped its log, the cadastre's signed document is in
/// the case's dossier, which `jumgw dossier verify` accepts and in which
/// it names the signed document; the other registries' documents are
/// timestamped by the TSA as before, the cadastre's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_one_registry_over_x_road_exports_its_signed_document_in_the_dossier() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("JUMGW_REGISTRIES__CADASTRE__PROTOCOL", "x-road"),
        ("JUMGW_EVIDENCE__BASE", "300ms"),
        ("JUMGW_EVIDENCE__CAP", "1s"),
        ("JUMGW_EVIDENCE__SIGNED_DOCUMENT_ATTEMPTS", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let d = start_daemon_env(&data, port, &env);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let case = "351-13/2026-IV";
    let ids = file_bundle(&http, &base, case).await;
    let mut cadastre = None;
    let mut others = Vec::new();
    for id in &ids {
        let v = get_json(
            &http,
            &format!("{base}/api/v1/requests/{id}"),
            Some("demo-admin"),
        )
        .await;
        if v["registry"] == "cadastre" {
            cadastre = Some(id.clone());
        } else {
            others.push(id.clone());
        }
    }
    let cadastre = cadastre.expect("the bundle asks the cadastre");
    wait_stamped(&http, &base, &others, std::time::Duration::from_secs(20)).await;
    // The front timestamps its log now rather than in 10 s.
    let r = http
        .post(format!("{}/x-road/stamp", d.1))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let out = dir.path().join("case.asice");
    let asice = format!("evidence/{cadastre}.asice");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = run(&[
            "dossier",
            "export",
            case,
            "--out",
            out.to_str().unwrap(),
            "--url",
            &base,
            "--token",
            "demo-backoffice",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        if unzip(&out).iter().any(|(n, _)| *n == asice) {
            break;
        }
        assert!(std::time::Instant::now() < end, "no {asice} in the dossier");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let doc = get_json(
        &http,
        &format!("{base}/api/v1/documents/{cadastre}"),
        Some("demo-admin"),
    )
    .await;
    assert!(
        doc["timestamp"].is_null(),
        "an X-Road document is not stamped by the TSA: {doc}"
    );
    drop(d);
    let (code, report) = dossier_verify(&out, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(&format!(
            "{asice}: the X-Road security server's signed document of it: {asice}, message id "
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "documents/{cadastre}.xml: cadastre's document, the answer to request {cadastre} of case {case}, came by X-Road"
        )),
        "{report}"
    );
    let (ok, v) = asice_check(&out);
    assert!(ok, "{v:#}");
}

/// `config check` asks each X-Road registry's security server (here an
/// independent stand-in, over mutual TLS) which services it allows: our
/// services it does not allow are a warning line naming the registry and
/// their service codes, not a failure; a security server that cannot be
/// reached is a note. A configuration without X-Road registries says
/// nothing of it (the positive control: all allowed, no line either).
#[test]
fn config_check_warns_of_services_an_x_road_security_server_does_not_allow() {
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = checkable(dir.path());
    let certs = dir.path().join("certs");
    let check = |env: &[(&str, String)]| {
        jumgw()
            .args(["config", "check", "--quiet", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };
    let x_road = |url: String| {
        vec![
            ("JUMGW_REGISTRIES__CADASTRE__PROTOCOL", "x-road".to_owned()),
            ("JUMGW_REGISTRIES__CADASTRE__URL", url),
        ]
    };
    let o = check(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!err(&o).contains("registries.cadastre"), "{}", err(&o));
    let (server, port) = start_xroad_metaservices(
        &certs,
        &["cadastre.property-sheet", "cadastre.parcel"],
        &["cadastre.parcel"],
    );
    let o = check(&x_road(format!("https://127.0.0.1:{port}/")));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        err(&o).contains(
            "warning: registries.cadastre: its security server does not allow services of our catalogue (allowedMethods): cadastre.property-sheet\n"
        ),
        "{}",
        err(&o)
    );
    drop(server);
    let (_all, port) = start_xroad_metaservices(
        &certs,
        &["cadastre.property-sheet", "cadastre.parcel"],
        &["cadastre.parcel", "cadastre.property-sheet"],
    );
    let o = check(&x_road(format!("https://127.0.0.1:{port}/")));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!err(&o).contains("registries.cadastre"), "{}", err(&o));
    let closed = free_port();
    let o = check(&x_road(format!("https://127.0.0.1:{closed}/")));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        err(&o).contains(
            "note: registries.cadastre: its security server could not be asked which services it allows, not checked: "
        ),
        "{}",
        err(&o)
    );
    assert!(!err(&o).contains("warning:"), "{}", err(&o));
}
