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
        let cnf = write(
            dir,
            "ca.cnf",
            format!(
                "[ca]\ndefault_ca = CA_default\n[CA_default]\ndir = {d}\ndatabase = $dir/index.txt\n\
                 new_certs_dir = $dir/newcerts\nserial = $dir/serial\ncrlnumber = $dir/crlnumber\n\
                 certificate = $dir/ca.pem\nprivate_key = $dir/ca.key\ndefault_md = sha256\n\
                 default_days = 30\ndefault_crl_days = 1\npolicy = policy_any\nunique_subject = no\n\
                 x509_extensions = signer_ext\n[policy_any]\ncommonName = supplied\n\
                 [signer_ext]\nbasicConstraints = CA:FALSE\n\
                 keyUsage = critical, digitalSignature, nonRepudiation\n\
                 authorityInfoAccess = OCSP;URI:http://127.0.0.1:{ocsp_port}\n\
                 [req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n\
                 [ca_ext]\nbasicConstraints = critical, CA:TRUE\n\
                 keyUsage = critical, keyCertSign, cRLSign\n",
                d = dir.display()
            )
            .as_bytes(),
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
        ca.ossl(&[
            "ca",
            "-revoke",
            "revoked.pem",
            "-crl_reason",
            "keyCompromise",
        ]);
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

/// The simulator's development CA, read by openssl: `openssl ocsp` as the
/// client accepts its responder's answers (signature, nonce) and reads
/// good, then revoked once the `revoked` fault is set; `openssl crl`
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
    let o = ask();
    let said = text(&o);
    assert!(said.contains("cadastre-sign.pem: revoked"), "{said}");

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

/// What the README promises a newcomer: `serve --demo`, the README's
/// bundle filed, and a few seconds later a dossier that `jumgw dossier
/// verify` (with no --trust and no gateway) and pyasice both accept, every
/// document timestamped by the simulator's TSA, whose tokens `openssl ts
/// -verify` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_dossier_verifies_offline_and_in_pyasice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let d = start_daemon(&data, port);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let r = http
        .post(format!("{base}/api/v1/cases/351-12%2F2026-IV/requests"))
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
    wait_delivered(&http, port, &ids).await;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = data.join("certs/ca.pem");
    wait_stamped(&http, &base, &ids, std::time::Duration::from_secs(20)).await;
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
    let out = dir.path().join("case.asice");
    let o = run(&[
        "dossier",
        "export",
        "351-12/2026-IV",
        "--out",
        out.to_str().unwrap(),
        "--url",
        &base,
        "--token",
        "demo-backoffice",
    ]);
    assert!(o.status.success(), "{}", text(&o));
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
    let mut ids = Vec::new();
    for _ in 0..40 {
        let (s, id) = file_one("first-token").await;
        assert_eq!(s, 202);
        ids.push(id);
    }
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
    // Every request filed before the reloads is delivered.
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
}
