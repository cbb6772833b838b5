//! The exchange client against the real simulator, over real mTLS on
//! loopback: documents for all six services, every fault class, and the
//! certificate checks of both sides.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use jum_gateway::config;
use jum_gateway::exchange::{Call, Exchange, Outcome};
use jum_gateway::pki::{CertSpec, Issued, KeyKind, Role};
use jum_gateway::protocol::Subject;

fn subject(s: &str) -> Subject {
    let (k, v) = s.split_once('=').unwrap();
    match k {
        "jmbg" => Subject::from_parts(Some(v), None, None, None, None, None),
        "pib" => Subject::from_parts(None, Some(v), None, None, None, None),
        "ko+sheet" => {
            let (ko, sh) = v.split_once('/').unwrap();
            Subject::from_parts(None, None, None, Some(ko), Some(sh), None)
        }
        "ko+parcel" => {
            let (ko, p) = v.split_once(':').unwrap();
            Subject::from_parts(None, None, None, Some(ko), None, Some(p))
        }
        _ => unreachable!(),
    }
    .unwrap()
}

async fn attempt(
    ex: &Exchange,
    service: &str,
    subj: &Subject,
    id: &str,
    ticket: Option<&str>,
) -> jum_gateway::exchange::Attempt {
    ex.attempt(&Call {
        id,
        service,
        subject: subj,
        case: "351-12/2026-IV",
        official: "marija.kovac",
        legal_basis: "ZUP čl. 103",
        purpose: "test",
        ticket,
    })
    .await
    .unwrap()
}

/// The most common attempt in these tests: the example citizen's birth extract.
async fn birth_extract(ex: &Exchange) -> jum_gateway::exchange::Attempt {
    let s = subject("jmbg=0512981717776");
    attempt(
        ex,
        "civil.birth-extract",
        &s,
        &ulid::Ulid::new().to_string(),
        None,
    )
    .await
}

const SIX: [(&str, &str); 6] = [
    ("civil.birth-extract", "jmbg=0512981717776"),
    ("civil.citizenship-certificate", "jmbg=0512981717776"),
    ("cadastre.property-sheet", "ko+sheet=803472/1520"),
    ("cadastre.parcel", "ko+parcel=803472:1234/5"),
    ("tax.clearance-certificate", "pib=101134702"),
    ("tax.property-tax-status", "jmbg=0512981717776"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_services_return_documents_that_xmlsec1_and_xmllint_accept() {
    let env = setup("").await;
    let ex = env.exchange();
    for (service, s) in SIX {
        let id = ulid::Ulid::new().to_string();
        let a = attempt(&ex, service, &subject(s), &id, None).await;
        assert_eq!(a.outcome, Outcome::Document, "{service}: {}", a.outcome);
        let registry = service.split('.').next().unwrap();
        assert_eq!(
            a.signer.as_deref(),
            Some(format!("O=jum-gateway development, CN={registry} signer").as_str())
        );
        let f = env.dir.path().join(format!("{service}.xml"));
        std::fs::write(&f, a.response.unwrap()).unwrap();
        assert_xmlsec1_and_xmllint_accept(&f, &certs(env.dir.path()).join("ca.pem"), service);
    }
    let seen = env.seen().await;
    assert_eq!(seen["total"], 6);
    assert_eq!(seen["by_registry"]["cadastre"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_in_its_classification() {
    let env = setup("").await;
    let ex = env.exchange();
    let s = subject("jmbg=0512981717776");
    let cases: &[(&str, &str)] = &[
        ("civil:500=next:1", "retryable: registry returned 500"),
        ("civil:503=next:1", "retryable: registry returned 503"),
        ("civil:429=next:1", "retryable: registry returned 429, retry after 2 s"),
        ("civil:reset=next:1", "retryable: connection broke"),
        ("civil:truncate=next:1", "retryable: connection broke"),
        ("civil:drip=next:1", "retryable: no complete answer before the timeout"),
        ("civil:oversize=next:1", "retryable: answer larger than the limit of 10485760 bytes"),
        ("civil:malformed=next:1", "retryable: malformed answer: line 1"),
        ("civil:invalid=next:1", "retryable: schema-invalid answer"),
        ("civil:badsig=next:1", "security failure: response signature does not verify: digest of the signed content does not match"),
        ("civil:untrusted=next:1", "security failure: response signature does not verify: signer certificate is not trusted"),
        ("civil:badhash=next:1", "security failure: response requestHash does not match the request sent"),
        ("civil:unavailable=next:1", "retryable: registry unavailable: registry temporarily unavailable, retry after 30 s"),
        ("civil:maintenance=next:1", "retryable: registry in maintenance: scheduled maintenance, retry after 1800 s"),
        ("civil:notfound=next:1", "permanent failure: registry found no data"),
    ];
    for (spec, want) in cases {
        env.faults(spec).await;
        let a = attempt(
            &ex,
            "civil.birth-extract",
            &s,
            &ulid::Ulid::new().to_string(),
            None,
        )
        .await;
        assert!(
            a.outcome.to_string().starts_with(want),
            "{spec}: got {:?}, want {want:?}",
            a.outcome.to_string()
        );
        // the fault was used up: the next attempt succeeds
        let a = attempt(
            &ex,
            "civil.birth-extract",
            &s,
            &ulid::Ulid::new().to_string(),
            None,
        )
        .await;
        assert_eq!(a.outcome, Outcome::Document, "after {spec}");
    }
    // a subject the registry does not know
    let unknown = subject("jmbg=0101990800007");
    let a = attempt(
        &ex,
        "civil.birth-extract",
        &unknown,
        &ulid::Ulid::new().to_string(),
        None,
    )
    .await;
    assert!(
        a.outcome
            .to_string()
            .starts_with("permanent failure: registry found no data"),
        "{}",
        a.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_answers_are_polled_and_lost_tickets_noticed() {
    let env = setup("").await;
    let ex = env.exchange();
    let s = subject("ko+sheet=803472/1520");
    // The answer is ready only when the test says so (an hour's delay,
    // made ready through the simulator's control): the early poll is early
    // on any machine, and the same poll then fetches the document.
    env.faults("cadastre:async=next:1, cadastre:async-delay=1h")
        .await;
    let id = ulid::Ulid::new().to_string();
    let a = attempt(&ex, "cadastre.property-sheet", &s, &id, None).await;
    let Outcome::Accepted {
        ticket,
        retry_after,
    } = a.outcome
    else {
        panic!("{}", a.outcome)
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_secs(3600),
        "{retry_after:?}"
    );
    let early = attempt(&ex, "cadastre.property-sheet", &s, &id, Some(&ticket)).await;
    assert!(
        matches!(early.outcome, Outcome::Accepted { .. }),
        "{}",
        early.outcome
    );
    let r = env
        .control
        .post(format!("http://{}/tickets/ready", env.sim.control))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let ready = attempt(&ex, "cadastre.property-sheet", &s, &id, Some(&ticket)).await;
    assert!(
        matches!(ready.outcome, Outcome::Document),
        "{}",
        ready.outcome
    );
    let polls = 2;
    // polled once more, the ticket is gone
    let again = attempt(&ex, "cadastre.property-sheet", &s, &id, Some(&ticket)).await;
    assert!(
        matches!(again.outcome, Outcome::TicketLost { .. }),
        "{}",
        again.outcome
    );
    // a registry that loses tickets
    env.faults("cadastre:async=next:1, cadastre:async-delay=1ms")
        .await;
    let id2 = ulid::Ulid::new().to_string();
    let Outcome::Accepted { ticket, .. } = attempt(&ex, "cadastre.property-sheet", &s, &id2, None)
        .await
        .outcome
    else {
        panic!()
    };
    env.faults("cadastre:lost=next:1").await;
    let lost = attempt(&ex, "cadastre.property-sheet", &s, &id2, Some(&ticket)).await;
    assert!(
        matches!(lost.outcome, Outcome::TicketLost { .. }),
        "{}",
        lost.outcome
    );
    let seen = env.seen().await;
    assert_eq!(seen["by_id"][&id], 1 + polls + 1, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_injected_and_still_answered() {
    let env = setup("civil:latency=300ms").await;
    let ex = env.exchange();
    let a = birth_extract(&ex).await;
    assert_eq!(a.outcome, Outcome::Document);
    assert!(a.duration >= Duration::from_millis(300), "{:?}", a.duration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_by_the_registry() {
    let mut env = setup("").await;
    let other = Issued::new(&CertSpec::new("Other CA", Role::Ca), KeyKind::EcP256, None).unwrap();
    let intruder = Issued::new(
        &CertSpec::new("intruder", Role::TlsClient),
        KeyKind::EcP256,
        Some(&other),
    )
    .unwrap();
    let cert = write(
        env.dir.path(),
        "intruder.pem",
        &intruder.cert_pem().unwrap(),
    );
    let key = write(env.dir.path(), "intruder.key", &intruder.key_pem().unwrap());
    env.gw.gateway.tls_cert = cert;
    env.gw.gateway.tls_key = key;
    let ex = env.exchange();
    let a = birth_extract(&ex).await;
    assert!(
        matches!(a.outcome, Outcome::Retryable { .. }),
        "{}",
        a.outcome
    );
    // Refused in the handshake by the registry, for that certificate: not
    // any connection error. (Under TLS 1.3 the client may see the alert or
    // only a closed connection, as it races to write; the server knows,
    // and may note it a moment after the client has given up: waited for.)
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = env.seen().await;
        assert_eq!(seen["total"], 0, "the registry must not have handled it");
        let refused = seen["tls_refused"].as_array().unwrap();
        if refused.iter().any(|r| {
            r["registry"] == "civil" && r["error"].as_str().unwrap().contains("UnknownIssuer")
        }) {
            break;
        }
        assert!(std::time::Instant::now() < end, "{seen}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_certificate_from_another_ca_is_refused_by_the_gateway() {
    let mut env = setup("").await;
    let other = Issued::new(&CertSpec::new("Other CA", Role::Ca), KeyKind::EcP256, None).unwrap();
    let other_ca = write(env.dir.path(), "other-ca.pem", &other.cert_pem().unwrap());
    env.gw.registries.get_mut("civil").unwrap().tls_ca = other_ca;
    let ex = env.exchange();
    let a = birth_extract(&ex).await;
    assert!(
        a.outcome
            .to_string()
            .starts_with("security failure: registry TLS certificate is not trusted"),
        "{}",
        a.outcome
    );
    assert_eq!(env.seen().await["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_bad_signature_gets_jum_bad_signature() {
    let env = setup("").await;
    let c = certs(env.dir.path());
    let mut id = std::fs::read(c.join("gateway-tls.pem")).unwrap();
    id.extend(std::fs::read(c.join("gateway-tls.key")).unwrap());
    let http = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(c.join("ca.pem")).unwrap())
                .unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&id).unwrap())
        .build()
        .unwrap();
    let unsigned =
        std::fs::read(manifest_dir().join("schemas/examples/request-civil-birth-extract.xml"))
            .unwrap();
    let r = http
        .post(format!("https://{}/", env.sim.addrs["civil"]))
        .body(unsigned)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("<faultcode>jum:BadSignature</faultcode>"),
        "{body}"
    );
    assert!(body.contains("no ds:Signature found"), "{body}");
}

/// A signer pin is the whole name: the cadastre's simulator signs with
/// `CN=cadastre signer2` (the same CA, the same organisation); a pin of
/// `CN=cadastre signer`, with or without the organisation, refuses its
/// documents as a security failure naming the pin; the exact name holds.
/// `signer_sha256`: the signer certificate's own hash holds, another
/// certificate's (the genuine civil signer's) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_pins_hold_only_for_the_exact_signer() {
    // The simulator's CA issues the second signer.
    let mut env = setup_with("", |sc| {
        let read = |p: &Option<std::path::PathBuf>| std::fs::read(p.as_ref().unwrap()).unwrap();
        let ca = Issued {
            cert: openssl::x509::X509::from_pem(&read(&sc.ca_cert)).unwrap(),
            key: openssl::pkey::PKey::private_key_from_pem(&read(&sc.ca_key)).unwrap(),
        };
        let signer2 = Issued::new(
            &CertSpec::new("cadastre signer2", Role::Signing),
            KeyKind::EcP256,
            Some(&ca),
        )
        .unwrap();
        let dir = sc.ca_cert.as_ref().unwrap().parent().unwrap().to_owned();
        let c = sc.registries.get_mut("cadastre").unwrap();
        c.sign_cert = write(&dir, "signer2.pem", &signer2.cert_pem().unwrap());
        c.sign_key = write(&dir, "signer2.key", &signer2.key_pem().unwrap());
    })
    .await;
    let certs = env.dir.path().join("certs");
    let signer2 =
        openssl::x509::X509::from_pem(&std::fs::read(certs.join("signer2.pem")).unwrap()).unwrap();
    let sheet = subject("ko+sheet=803472/1520");
    let fetch = |env: &Env| {
        let ex = env.exchange();
        let sheet = sheet.clone();
        async move {
            attempt(
                &ex,
                "cadastre.property-sheet",
                &sheet,
                &ulid::Ulid::new().to_string(),
                None,
            )
            .await
            .outcome
        }
    };
    fn cadastre(env: &mut Env) -> &mut config::RegistryConfig {
        env.gw.registries.get_mut("cadastre").unwrap()
    }
    for pin in [
        "CN=cadastre signer",
        "CN=cadastre signer,O=jum-gateway development",
    ] {
        cadastre(&mut env).signer_subject = Some(pin.into());
        let o = fetch(&env).await.to_string();
        assert!(
            o.starts_with("security failure")
                && o.contains(&format!("is not the pinned signer \"{pin}\"")),
            "{pin}: {o}"
        );
    }
    // As openssl prints the name for a pin (RFC 2253 = RFC 4514).
    let o = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(certs.join("signer2.pem"))
        .output()
        .unwrap();
    let printed = String::from_utf8(o.stdout).unwrap();
    let printed = printed.trim().strip_prefix("subject=").unwrap().to_owned();
    assert_eq!(printed, "CN=cadastre signer2,O=jum-gateway development");
    cadastre(&mut env).signer_subject = Some(printed);
    assert_eq!(fetch(&env).await, Outcome::Document);

    let hex = |der: &[u8]| -> String {
        openssl::sha::sha256(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    cadastre(&mut env).signer_sha256 = Some(hex(&signer2.to_der().unwrap()));
    assert_eq!(fetch(&env).await, Outcome::Document);
    let civil =
        openssl::x509::X509::from_pem(&std::fs::read(certs.join("civil-sign.pem")).unwrap())
            .unwrap();
    let wrong = hex(&civil.to_der().unwrap());
    cadastre(&mut env).signer_sha256 = Some(wrong.clone());
    let o = fetch(&env).await.to_string();
    assert!(
        o.starts_with("security failure")
            && o.contains(&format!(
                "is not the pinned one ({})",
                wrong.replace(':', "").to_lowercase()
            )),
        "{o}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_asked_of_the_wrong_registry_is_not_authorized() {
    let mut env = setup("").await;
    // point the civil registry's URL at the tax simulator
    env.gw.registries.get_mut("civil").unwrap().url = format!("https://{}/", env.sim.addrs["tax"]);
    env.gw.registries.get_mut("civil").unwrap().signer_subject = None;
    let ex = env.exchange();
    let a = birth_extract(&ex).await;
    assert!(
        a.outcome
            .to_string()
            .starts_with("permanent failure: registry refused access"),
        "{}",
        a.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_answers_maintenance_until_it_ends() {
    let env = setup_with("", |sc| {
        // a window opening every second and lasting a minute: always open
        sc.registries.get_mut("tax").unwrap().maintenance = vec![config::MaintenanceWindow {
            cron: "* * * * * *".into(),
            duration: Duration::from_secs(60),
        }];
        // a window at 03:00 on 1 January that lasts one second: closed now
        // unless the test runs exactly then
        sc.registries.get_mut("civil").unwrap().maintenance = vec![config::MaintenanceWindow {
            cron: "0 0 3 1 1 *".into(),
            duration: Duration::from_secs(1),
        }];
    })
    .await;
    let ex = env.exchange();
    let a = attempt(
        &ex,
        "tax.clearance-certificate",
        &subject("pib=101134702"),
        &ulid::Ulid::new().to_string(),
        None,
    )
    .await;
    assert!(
        a.outcome.to_string().starts_with(
            "retryable: registry in maintenance: scheduled maintenance window, retry after"
        ),
        "{}",
        a.outcome
    );
    let a = birth_extract(&ex).await;
    assert_eq!(a.outcome, Outcome::Document);
}

/// An HTTPS server of Python's `ssl` (OpenSSL, not rustls) with `cert`
/// and `key`, answering any POST with 200 and a body that is no envelope,
/// each request it read counted in `log`; killed on drop.
struct PyTls(std::process::Child, u16);

impl PyTls {
    fn start(cert: &std::path::Path, key: &std::path::Path, log: &std::path::Path) -> PyTls {
        const SERVER: &str = r#"
import http.server, ssl, sys
cert, key, port, log = sys.argv[1:5]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with open(log, "a") as f:
            f.write("request\n")
        body = b"not an envelope"
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
# Security level 0: OpenSSL would not otherwise serve a key of 1024 bits,
# which is the point.
ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
ctx.load_cert_chain(cert, key)
s = http.server.HTTPServer(("127.0.0.1", int(port)), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("listening", flush=True)
s.serve_forever()
"#;
        let port = free_port();
        let mut child = std::process::Command::new(python())
            .args(["-c", SERVER])
            .arg(cert)
            .arg(key)
            .arg(port.to_string())
            .arg(log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            "listening",
            "the Python TLS server did not start"
        );
        PyTls(child, port)
    }
}

impl Drop for PyTls {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A registry whose TLS certificate (issued by the trusted CA, valid for
/// the address) has an RSA key of 1024 bits is refused in the handshake,
/// with a message naming the certificate and its key size, before any
/// request is sent; one of 2048 bits from the same server program is
/// connected to (its non-envelope answer read), and refused in turn once
/// `gateway.min_rsa_bits` is raised to 3072.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_tls_key_weaker_than_accepted_is_refused_naming_it() {
    let mut env = setup("").await;
    let certs = certs(env.dir.path());
    let dir = env.dir.path().to_owned();
    let log = dir.join("requests.log");
    let served = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let to = |env: &mut Env, server: &PyTls| {
        env.gw.registries.get_mut("civil").unwrap().url =
            format!("https://127.0.0.1:{}/", server.1);
    };

    let (cert, key) = openssl_issued(&certs, &dir, "civil registry rsa1024", 1024, "serverAuth");
    let weak = PyTls::start(&cert, &key, &log);
    to(&mut env, &weak);
    let a = birth_extract(&env.exchange()).await;
    assert_eq!(
        a.outcome.to_string(),
        "security failure: registry TLS certificate is not trusted: too weak: certificate \
         \"O=jum-gateway development, CN=civil registry rsa1024\" has an RSA key of 1024 bits; \
         at least 2048 are accepted"
    );
    assert_eq!(served(), 0, "no request may reach it");
    drop(weak);

    let (cert, key) = openssl_issued(&certs, &dir, "civil registry rsa2048", 2048, "serverAuth");
    let strong = PyTls::start(&cert, &key, &log);
    to(&mut env, &strong);
    let a = birth_extract(&env.exchange()).await;
    let said = a.outcome.to_string();
    assert!(
        !said.contains("TLS") && !said.contains("too weak"),
        "{said}"
    );
    assert_eq!(served(), 1, "{said}");

    // Raised: our own seal must then be stronger too (an EC key here).
    let (seal, seal_key) = openssl_issued(&certs, &dir, "gateway seal ec", 0, "emailProtection");
    env.gw.gateway.sign_cert = seal;
    env.gw.gateway.sign_key = seal_key;
    env.gw.gateway.min_rsa_bits = 3072;
    let a = birth_extract(&env.exchange()).await;
    assert_eq!(
        a.outcome.to_string(),
        "security failure: registry TLS certificate is not trusted: too weak: certificate \
         \"O=jum-gateway development, CN=civil registry rsa2048\" has an RSA key of 2048 bits; \
         at least 3072 are accepted"
    );
    assert_eq!(served(), 1, "no further request may reach it");
}
