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

// The simulator's X-Road security-server front, asked directly with
// requests written here after the message protocol's own example (annex
// E1), and its answers read by independent code (Python's lxml, hashlib,
// email and zipfile; pyasice for the signed document).

/// A simulator with its X-Road front (the gateway's registries too are
/// set to X-Road; the tests that ask the front directly ignore them).
async fn xr_setup(faults: &str) -> Env {
    setup_x_road(faults).await
}

/// An HTTPS client with the gateway's TLS certificate, which is the
/// information system's.
fn xr_http(env: &Env) -> reqwest::Client {
    let c = certs(env.dir.path());
    let mut id = std::fs::read(c.join("gateway-tls.pem")).unwrap();
    id.extend(std::fs::read(c.join("gateway-tls.key")).unwrap());
    let roots =
        reqwest::Certificate::from_pem_bundle(&std::fs::read(c.join("gateway-trust.pem")).unwrap())
            .unwrap();
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .identity(reqwest::Identity::from_pem(&id).unwrap())
        .build()
        .unwrap()
}

/// A request for the example citizen's birth extract, as the message
/// protocol has it.
fn xr_request(id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xrd="http://x-road.eu/xsd/xroad.xsd" xmlns:id="http://x-road.eu/xsd/identifiers" xmlns:jum="urn:jum-gateway:exchange:1">
<SOAP-ENV:Header>
<xrd:client id:objectType="SUBSYSTEM"><id:xRoadInstance>RS</id:xRoadInstance><id:memberClass>GOV</id:memberClass><id:memberCode>08070431</id:memberCode><id:subsystemCode>jum-becej</id:subsystemCode></xrd:client>
<xrd:service id:objectType="SERVICE"><id:xRoadInstance>RS</id:xRoadInstance><id:memberClass>GOV</id:memberClass><id:memberCode>17862146</id:memberCode><id:subsystemCode>maticne-knjige</id:subsystemCode><id:serviceCode>civil.birth-extract</id:serviceCode><id:serviceVersion>v1</id:serviceVersion></xrd:service>
<xrd:id>{id}</xrd:id>
<xrd:userId>RSmarija.kovac</xrd:userId>
<xrd:issue>351-12/2026-IV</xrd:issue>
<xrd:protocolVersion>4.0</xrd:protocolVersion>
<jum:legalBasis>ZUP čl. 103</jum:legalBasis>
<jum:purpose>test</jum:purpose>
</SOAP-ENV:Header>
<SOAP-ENV:Body><c:civil.birth-extract xmlns:c="urn:jum-gateway:civil:1"><c:BirthExtractRequest><c:jmbg>0512981717776</c:jmbg></c:BirthExtractRequest></c:civil.birth-extract></SOAP-ENV:Body>
</SOAP-ENV:Envelope>"#
    )
}

/// POSTs `body` to the front: status, content type, bytes.
async fn xr_post(env: &Env, body: &str) -> (u16, String, Vec<u8>) {
    let r = xr_http(env)
        .post(format!("https://{}/", env.sim.x_road.unwrap()))
        .header("Content-Type", "text/xml; charset=UTF-8")
        .header("SOAPAction", "\"\"")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

/// A Python program's JSON output (argv[1..] after the program).
fn py_json(program: &str, args: &[&std::path::Path]) -> serde_json::Value {
    let o = std::process::Command::new(python())
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)))
}

/// The request's and the answer's headers (Clark name, exclusive C14N),
/// the answer's requestHash against hashlib's SHA-512 of the request, its
/// headers against the official xroad.xsd, and its body's wrapper and
/// first child, all read by lxml.
const XR_READ: &str = r#"
import sys, json, hashlib, base64
from lxml import etree
req = open(sys.argv[1], 'rb').read()
ans = open(sys.argv[2], 'rb').read()
S = '{http://schemas.xmlsoap.org/soap/envelope/}'
X = '{http://x-road.eu/xsd/xroad.xsd}'
def heads(doc):
    return [[h.tag, etree.tostring(h, method='c14n', exclusive=True).decode()] for h in doc.find(S + 'Header') if isinstance(h.tag, str)]
q = etree.fromstring(req)
# The charset HTTP named for the answer, if any, wins over its declaration.
a = etree.fromstring(ans, etree.XMLParser(encoding=sys.argv[4])) if len(sys.argv) > 4 else etree.fromstring(ans)
schema = etree.XMLSchema(etree.parse(sys.argv[3]))
invalid = []
for h in a.find(S + 'Header'):
    if isinstance(h.tag, str) and h.tag.startswith(X) and not schema.validate(etree.fromstring(etree.tostring(h))):
        invalid.append(str(schema.error_log))
rh = a.find(S + 'Header/' + X + 'requestHash')
body = [e for e in a.find(S + 'Body') if isinstance(e.tag, str)]
json.dump({
    'request': heads(q), 'answer': heads(a), 'invalid': invalid,
    'hash': ''.join(rh.text.split()) if rh is not None else None,
    'algorithm': rh.get('algorithmId') if rh is not None else None,
    'sha512': base64.b64encode(hashlib.sha512(req).digest()).decode(),
    'wrapper': body[0].tag if body else None,
    'document': next((c.tag for c in body[0] if isinstance(c.tag, str)), None) if body else None,
    'texts': {e.tag.split('}')[1]: e.text for e in a.iter() if isinstance(e.tag, str) and e.text and e.text.strip()},
}, sys.stdout)
"#;

fn xr_read(env: &Env, request: &str, answer: &[u8]) -> serde_json::Value {
    xr_read_in(env, request, answer, None)
}

/// [`xr_read`] of an answer in the charset its Content-Type named.
fn xr_read_in(env: &Env, request: &str, answer: &[u8], charset: Option<&str>) -> serde_json::Value {
    let d = env.dir.path();
    let q = write(d, "xr-request.xml", request.as_bytes());
    let a = write(d, "xr-answer.xml", answer);
    let xsd = manifest_dir().join("tests/vectors/x-road/xroad.xsd");
    let mut args = vec![q, a, xsd];
    args.extend(charset.map(std::path::PathBuf::from));
    let args: Vec<&std::path::Path> = args.iter().map(|p| p.as_path()).collect();
    py_json(XR_READ, &args)
}

fn fault_of(body: &[u8]) -> (String, String) {
    let t = String::from_utf8_lossy(body);
    let between = |a: &str, b: &str| {
        let s = t.find(a).map(|i| i + a.len()).unwrap_or(0);
        let e = t[s..].find(b).map(|i| s + i).unwrap_or(s);
        t[s..e]
            .replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    (
        between("<faultcode>", "</faultcode>"),
        between("<faultstring>", "</faultstring>"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_x_road_front_answers_as_a_provider_security_server_does() {
    let env = xr_setup("").await;
    let id = ulid::Ulid::new().to_string();
    let req = xr_request(&id);
    let (status, ct, body) = xr_post(&env, &req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "text/xml; charset=UTF-8");
    let r = xr_read(&env, &req, &body);
    // Every request header copied back, in order, with the same values;
    // then the requestHash, SHA-512 of the exact bytes sent.
    let sent = r["request"].as_array().unwrap();
    let back = r["answer"].as_array().unwrap();
    assert_eq!(sent.len(), 8);
    assert_eq!(&back[..sent.len()], &sent[..]);
    assert_eq!(back.len(), sent.len() + 1);
    assert_eq!(r["algorithm"], "http://www.w3.org/2001/04/xmlenc#sha512");
    assert_eq!(r["hash"], r["sha512"]);
    assert_eq!(r["invalid"], serde_json::json!([]), "the official schema");
    assert_eq!(
        r["wrapper"],
        "{urn:jum-gateway:civil:1}civil.birth-extractResponse"
    );
    assert_eq!(r["document"], "{urn:jum-gateway:civil:1}BirthExtract");
    assert_eq!(r["texts"]["jmbg"], "0512981717776");
    let seen = env.seen().await;
    assert_eq!(seen["by_service"]["civil.birth-extract"], 1);
    assert_eq!(seen["by_id"][&id], 1);

    // The metaservices list the registry's services, and an `unlisted`
    // rule hides one from allowedMethods only.
    let meta = |code: &str| {
        req.replace("civil.birth-extract</id:serviceCode>", &format!("{code}</id:serviceCode>"))
            .replace("<id:serviceVersion>v1</id:serviceVersion>", "")
            .replace(
                r#"<c:civil.birth-extract xmlns:c="urn:jum-gateway:civil:1"><c:BirthExtractRequest><c:jmbg>0512981717776</c:jmbg></c:BirthExtractRequest></c:civil.birth-extract>"#,
                &format!("<xrd:{code}/>"),
            )
    };
    env.faults("civil.citizenship-certificate:unlisted").await;
    for (code, want) in [
        (
            "listMethods",
            vec!["civil.birth-extract", "civil.citizenship-certificate"],
        ),
        ("allowedMethods", vec!["civil.birth-extract"]),
    ] {
        let q = meta(code);
        let (status, _, body) = xr_post(&env, &q).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let r = xr_read(&env, &q, &body);
        assert_eq!(
            r["wrapper"],
            format!("{{http://x-road.eu/xsd/xroad.xsd}}{code}Response")
        );
        let text = String::from_utf8_lossy(&body);
        let codes: Vec<String> = text[text.find("<SOAP-ENV:Body>").unwrap()..]
            .split("<id:serviceCode>")
            .skip(1)
            .map(|s| s.split('<').next().unwrap().to_owned())
            .collect();
        assert_eq!(codes, want, "{code}");
        let sent = r["request"].as_array().unwrap();
        assert_eq!(&r["answer"].as_array().unwrap()[..sent.len()], &sent[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_x_road_front_refuses_what_a_security_server_refuses() {
    let env = xr_setup("").await;
    let genuine = xr_request("1");
    let cut = |from: &str, to: &str| {
        let s = genuine.find(from).unwrap();
        let e = genuine[s..].find(to).unwrap() + s + to.len();
        format!("{}{}", &genuine[..s], &genuine[e..])
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (cut("<xrd:client", "</xrd:client>"), "Server.ClientProxy.MissingHeaderField", "Required field 'client' is missing"),
        (cut("<xrd:service", "</xrd:service>"), "Server.ClientProxy.MissingHeaderField", "Required field 'service' is missing"),
        (cut("<xrd:id>", "</xrd:id>"), "Server.ClientProxy.MissingHeaderField", "Required field 'id' is missing"),
        (cut("<xrd:protocolVersion>", "</xrd:protocolVersion>"), "Server.ClientProxy.MissingHeaderField", "Required field 'protocolVersion' is missing"),
        (genuine.replace(">4.0<", ">3.1<"), "Server.ClientProxy.InvalidProtocolVersion", "Unsupported protocol version '3.1'"),
        (
            genuine.replace("</xrd:protocolVersion>", "</xrd:protocolVersion><xrd:requestHash algorithmId=\"http://www.w3.org/2001/04/xmlenc#sha512\">AAAA</xrd:requestHash>"),
            "Server.ClientProxy.InvalidSoap",
            "Malformed SOAP message: a request must not carry requestHash",
        ),
        (
            genuine.replace("<xrd:id>1</xrd:id>", "<xrd:id>1</xrd:id><xrd:id>2</xrd:id>"),
            "Server.ClientProxy.DuplicateHeaderField",
            "Duplicate header field 'id'",
        ),
        (
            genuine.replace("c:civil.birth-extract", "c:BirthExtract"),
            "Server.ClientProxy.InvalidBody",
            "Malformed SOAP message: the body's element \"BirthExtract\" is not named after the service code \"civil.birth-extract\"",
        ),
        (
            genuine.replace("civil.birth-extract", "civil.death-certificate"),
            "Server.ServerProxy.UnknownService",
            "Unknown service: SERVICE:RS/GOV/17862146/maticne-knjige/civil.death-certificate",
        ),
        (
            genuine.replace(">17862146<", ">17211226<"),
            "Server.ServerProxy.UnknownService",
            "Unknown service: SERVICE:RS/GOV/17211226/maticne-knjige/civil.birth-extract",
        ),
        (
            genuine.replace(">08070431<", ">08070432<"),
            "Server.ServerProxy.AccessDenied",
            "Request is not allowed: SERVICE:RS/GOV/17862146/maticne-knjige/civil.birth-extract (client RS/GOV/08070432/jum-becej)",
        ),
        (
            genuine.replace(r#"<xrd:client id:objectType="SUBSYSTEM">"#, r#"<xrd:client id:objectType="SERVICE">"#),
            "Server.ClientProxy.InvalidClientIdentifier",
            "Invalid client identifier: objectType Some(\"SERVICE\") for RS/GOV/08070431/jum-becej",
        ),
        (
            genuine.replace(r#"<xrd:client id:objectType="SUBSYSTEM">"#, r#"<xrd:client id:objectType="PERSON">"#),
            "Server.ClientProxy.InvalidSoap",
            "Malformed SOAP message: schema-invalid: ",
        ),
        (
            genuine.replace("<id:memberClass>GOV</id:memberClass><id:memberCode>08070431", "<id:memberCode>08070431"),
            "Server.ClientProxy.InvalidSoap",
            "Malformed SOAP message: schema-invalid: ",
        ),
    ];
    for (req, code, text) in &cases {
        let (status, _, body) = xr_post(&env, req).await;
        let (c, t) = fault_of(&body);
        assert_eq!(status, 500, "{code}");
        assert_eq!(&c, code, "{t}");
        assert!(t.starts_with(text), "{code}: {t}");
    }
    // No client certificate: no information system, refused at the handshake.
    let c = certs(env.dir.path());
    let anonymous = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(
                &std::fs::read(c.join("gateway-trust.pem")).unwrap(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    assert!(anonymous
        .post(format!("https://{}/", env.sim.x_road.unwrap()))
        .header("Content-Type", "text/xml; charset=UTF-8")
        .body(genuine.clone())
        .send()
        .await
        .is_err());
    let refused = env.seen().await["tls_refused"].clone();
    assert_eq!(refused[0]["registry"], "x-road", "{refused}");
    // Not SOAP 1.1's content type.
    let r = xr_http(&env)
        .post(format!("https://{}/", env.sim.x_road.unwrap()))
        .header("Content-Type", "application/soap+xml; charset=UTF-8")
        .body(genuine.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(
        fault_of(&r.bytes().await.unwrap()),
        (
            "Server.ClientProxy.InvalidContentType".to_owned(),
            "Invalid content type: \"application/soap+xml; charset=UTF-8\"".to_owned()
        )
    );
    assert_eq!(
        env.seen().await["total"],
        0,
        "no refused request reaches a registry"
    );
    // The snake_case form of recent versions, by rule.
    env.faults("*:snake").await;
    let (_, _, body) = xr_post(&env, &cases[8].0).await;
    assert_eq!(fault_of(&body).0, "server.serverproxy.unknown_service");
    let (_, _, body) = xr_post(&env, &cases[0].0).await;
    assert_eq!(fault_of(&body).0, "server.clientproxy.missing_header_field");
    // The positive control: the genuine request still gets its document.
    let (status, _, body) = xr_post(&env, &genuine).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(env.seen().await["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_x_road_front_serves_signed_documents_once_timestamped() {
    let env = xr_setup("").await;
    let http = xr_http(&env);
    let front = env.sim.x_road.unwrap();
    let (id, other) = (ulid::Ulid::new().to_string(), ulid::Ulid::new().to_string());
    let (_, _, answer) = xr_post(&env, &xr_request(&id)).await;
    let (_, _, answer2) = xr_post(&env, &xr_request(&other)).await;
    let client = "xRoadInstance=RS&memberClass=GOV&memberCode=08070431&subsystemCode=jum-becej";
    let get = |q: String| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("https://{front}/asic?{q}"))
                .send()
                .await
                .unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (r.status().as_u16(), ct, r.bytes().await.unwrap().to_vec())
        }
    };
    let said = |r: &(u16, String, Vec<u8>)| (r.0, String::from_utf8_lossy(&r.2).into_owned());
    assert_eq!(
        said(&get(format!("{client}&responseOnly&unique")).await),
        (400, "Missing parameter \"queryId\"".into())
    );
    assert_eq!(
        said(
            &get(format!(
                "queryId={id}&{client}&requestOnly&responseOnly&unique"
            ))
            .await
        ),
        (
            400,
            "Parameters \"requestOnly\" and \"responseOnly\" are mutually exclusive".into()
        )
    );
    assert_eq!(
        said(&get(format!("queryId={id}&{client}&unique")).await),
        (
            400,
            "Parameter \"unique\" must be used with \"requestOnly\" or \"responseOnly\"".into()
        )
    );
    assert_eq!(
        said(&get(format!("queryId={id}&xRoadInstance=RS&memberClass=GOV&memberCode=08070432&subsystemCode=jum-becej&responseOnly&unique")).await),
        (404, "No signed documents found".into()),
        "another client's identifiers"
    );
    let not_yet = (
        404,
        "Message signature has not been timestamped yet!".to_owned(),
    );
    assert_eq!(
        said(&get(format!("queryId={id}&{client}&responseOnly&unique")).await),
        not_yet
    );
    assert_eq!(
        said(&get(format!("queryId={id}&{client}&responseOnly&unique")).await),
        not_yet
    );
    // `force` stamps it at once.
    let (status, ct, zip) = get(format!("queryId={id}&{client}&responseOnly&unique&force")).await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/vnd.etsi.asic-e+zip")
    );
    let f = write(env.dir.path(), "answer.asice", &zip);
    let entries = unzip(&f);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "mimetype",
            "message.xml",
            "META-INF/manifest.xml",
            "META-INF/signatures.xml"
        ]
    );
    assert_eq!(entries[0].1, b"application/vnd.etsi.asic-e+zip");
    assert_eq!(
        entries[1].1, answer,
        "message.xml is the answer byte for byte"
    );
    let stored = py_json(
        "import sys,zipfile,json; json.dump(zipfile.ZipFile(sys.argv[1]).infolist()[0].compress_type, sys.stdout)",
        &[&f],
    );
    assert_eq!(stored, 0, "mimetype is stored");
    // X-Road keeps a message's timestamp beside its signature, not in it
    // (XAdES B): every other check of the independent reader passes.
    let (_, report) = asice_check(&f);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["pyasice: META-INF/signatures.xml signature timestamp"],
        "{report}"
    );
    assert!(report["checks"].as_array().unwrap().iter().any(|c| {
        c["check"] == "pyasice: META-INF/signatures.xml signature value" && c["ok"] == true
    }));
    // The other message waits until the control endpoint stamps it.
    assert_eq!(
        said(&get(format!("queryId={other}&{client}&responseOnly&unique")).await),
        not_yet
    );
    let r = env
        .control
        .post(format!("http://{}/x-road/stamp", env.sim.control))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _, zip) = get(format!("queryId={other}&{client}&responseOnly&unique")).await;
    assert_eq!(status, 200);
    let entries = unzip(&write(env.dir.path(), "other.asice", &zip));
    assert_eq!(entries[1].1, answer2);
}

/// The forms a real security server sends, read by Python: the charset
/// from Content-Type, the byte order mark, multipart/related (SwA and
/// MTOM) split by the email package, comments and CDATA by lxml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_x_road_front_sends_every_form_a_security_server_may() {
    let env = xr_setup("").await;
    let req = xr_request("forms");
    let (_, _, plain) = xr_post(&env, &req).await;
    let mother = |b: &[u8]| {
        let t = String::from_utf8_lossy(b).into_owned();
        t.contains("<c:firstName>Erzsébet</c:firstName>")
    };
    assert!(mother(&plain), "the example citizen's mother is Erzsébet");

    env.faults("civil:latin1=next:1").await;
    let (status, ct, body) = xr_post(&env, &req).await;
    assert_eq!((status, ct.as_str()), (200, "text/xml; charset=ISO-8859-1"));
    assert!(
        body.windows(9).any(|w| w == b"Erzs\xe9bet<"),
        "é is one Latin-1 byte"
    );
    assert!(std::str::from_utf8(&body).is_err(), "not UTF-8");
    assert!(
        !body.starts_with(b"<?xml"),
        "the charset named by HTTP alone"
    );
    let r = xr_read_in(&env, &req, &body, Some("ISO-8859-1"));
    assert_eq!(r["hash"], r["sha512"]);
    let texts = |mut v: serde_json::Value| {
        // The only text that differs from one answer to the next.
        v["texts"].as_object_mut().unwrap().remove("issuedAt");
        v["texts"].clone()
    };
    let p = texts(xr_read(&env, &req, &plain));
    assert_eq!(texts(r), p, "the same text once decoded");

    env.faults("civil:bom=next:1").await;
    let (_, ct, body) = xr_post(&env, &req).await;
    assert_eq!(ct, "text/xml; charset=UTF-8");
    assert_eq!(&body[..3], b"\xEF\xBB\xBF");
    assert_eq!(texts(xr_read(&env, &req, &body)), p);

    env.faults("civil:cdata=next:1").await;
    let (_, _, body) = xr_post(&env, &req).await;
    let t = String::from_utf8_lossy(&body);
    assert!(t.contains("<![CDATA[") && t.contains("<!--"), "{t}");
    assert_eq!(texts(xr_read(&env, &req, &body)), p);

    const PARTS: &str = r#"
import sys, json, email, email.policy
raw = open(sys.argv[1], 'rb').read()
msg = email.message_from_bytes(b'Content-Type: ' + open(sys.argv[2], 'rb').read() + b'\r\n\r\n' + raw, policy=email.policy.HTTP)
parts = list(msg.iter_parts())
json.dump({'type': msg.get_content_type(), 'start': msg.get_param('start'), 'parts': [
    {'type': p.get_content_type(), 'id': p['Content-ID'], 'name': p.get_filename(), 'bytes': list(p.get_payload(decode=True))}
    for p in parts]}, sys.stdout)
"#;
    for (rule, root_type, ctype) in [
        ("swa", "text/xml", "multipart/related; type=\"text/xml\""),
        (
            "mtom",
            "application/xop+xml",
            "multipart/related; type=\"application/xop+xml\"",
        ),
    ] {
        env.faults(&format!("civil:{rule}=next:1")).await;
        let (status, ct, body) = xr_post(&env, &req).await;
        assert_eq!(status, 200);
        assert!(ct.starts_with(ctype), "{ct}");
        let d = env.dir.path();
        let m = py_json(
            PARTS,
            &[
                &write(d, "mime.body", &body),
                &write(d, "mime.type", ct.as_bytes()),
            ],
        );
        assert_eq!(m["type"], "multipart/related");
        let parts = m["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 2, "{rule}");
        assert_eq!(parts[0]["type"], root_type);
        assert_eq!(parts[0]["id"], m["start"]);
        let soap: Vec<u8> = parts[0]["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        let attachment: Vec<u8> = parts[1]["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(parts[1]["type"], "application/pdf");
        assert_eq!(parts[1]["name"], "izvod.pdf");
        assert!(attachment.starts_with(b"%PDF-1.4\n"));
        assert!((0u8..=255).all(|b| attachment.contains(&b)), "binary-safe");
        let r = xr_read(&env, &req, &soap);
        assert_eq!(r["hash"], r["sha512"], "{rule}");
        assert_eq!(r["document"], "{urn:jum-gateway:civil:1}BirthExtract");
        let cid = parts[1]["id"]
            .as_str()
            .unwrap()
            .trim_matches(['<', '>'])
            .to_owned();
        let soap = String::from_utf8(soap).unwrap();
        assert_eq!(
            soap.contains(&format!("<xop:Include xmlns:xop=\"http://www.w3.org/2004/08/xop/include\" href=\"cid:{cid}\"/>")),
            rule == "mtom",
            "{soap}"
        );
    }
}

// The gateway's X-Road exchange against the front: the request the front
// saw passed its checks (the official schemas among them), and each form
// and fault of an answer ends as the issue says.

async fn xr_gateway(faults: &str) -> Env {
    setup_x_road(faults).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_exchanges_get_every_document_through_the_front() {
    let env = xr_gateway("").await;
    let ex = env.exchange();
    let mut ids = std::collections::BTreeSet::new();
    for (service, s) in SIX {
        let a = attempt(
            &ex,
            service,
            &subject(s),
            &ulid::Ulid::new().to_string(),
            None,
        )
        .await;
        assert_eq!(a.outcome, Outcome::Document, "{service}: {}", a.outcome);
        let id = a.message_id.clone().unwrap();
        assert!(ids.insert(id.clone()), "a new message id on each attempt");
        assert!(a.signer.is_none() && a.attachments.is_empty());
        // The request as sent, and the answer as received: the headers
        // copied back and the hash of those exact bytes, by lxml/hashlib.
        let req = String::from_utf8(a.request.clone()).unwrap();
        let r = xr_read(&env, &req, a.response.as_ref().unwrap());
        let sent = r["request"].as_array().unwrap();
        assert_eq!(&r["answer"].as_array().unwrap()[..sent.len()], &sent[..]);
        assert_eq!(r["hash"], r["sha512"]);
        assert_eq!(r["invalid"], serde_json::json!([]));
        assert_eq!(r["texts"]["id"], id.as_str());
        assert_eq!(
            r["wrapper"].as_str().unwrap().rsplit('}').next().unwrap(),
            format!("{service}Response")
        );
    }
    let seen = env.seen().await;
    assert_eq!(seen["total"], 6);
    for id in &ids {
        assert_eq!(seen["by_id"][id], 1, "the front passed {id} on once");
    }
    // One request, two attempts: two messages.
    let s = subject("jmbg=0512981717776");
    let rid = ulid::Ulid::new().to_string();
    let a = attempt(&ex, "civil.birth-extract", &s, &rid, None).await;
    let b = attempt(&ex, "civil.birth-extract", &s, &rid, None).await;
    assert_ne!(a.message_id, b.message_id);

    // An asynchronous answer: the ticket in the wrapper, then the poll.
    env.faults("civil:async=next:1").await;
    let a = attempt(&ex, "civil.birth-extract", &s, &rid, None).await;
    let Outcome::Accepted { ticket, .. } = &a.outcome else {
        panic!("{}", a.outcome)
    };
    let ready = env
        .control
        .post(format!("http://{}/tickets/ready", env.sim.control))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 204);
    let p = attempt(&ex, "civil.birth-extract", &s, &rid, Some(ticket)).await;
    assert_eq!(p.outcome, Outcome::Document, "{}", p.outcome);

    // The metaservices: every service listed, one hidden from allowedMethods.
    env.faults("cadastre.parcel:unlisted").await;
    let m = ex.methods("cadastre").await.unwrap();
    assert_eq!(m.listed, ["cadastre.property-sheet", "cadastre.parcel"]);
    assert_eq!(m.allowed, ["cadastre.property-sheet"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_answers_end_in_their_outcomes() {
    let env = xr_gateway("").await;
    let ex = env.exchange();
    const H: &str = "security failure: the answer does not copy back the request's headers: Header";
    const X: &str = "{http://x-road.eu/xsd/xroad.xsd}";
    const C: &str = "{urn:jum-gateway:civil:1}civil.birth-extract";
    const S: &str = "SERVICE:RS/GOV/17862146/maticne-knjige/civil.birth-extract";
    let cases: Vec<(&str, String)> = vec![
        ("civil:xr-header-dropped=next:1", format!("{H}: {X}protocolVersion where {X}issue was sent")),
        ("civil:xr-header-changed=next:1", format!("{H}/id: \"")),
        ("civil:xr-headers-reordered=next:1", format!("{H}: {X}service where {X}client was sent")),
        ("civil:badhash=next:1", "security failure: the answer's requestHash: not the hash of the request sent".into()),
        ("civil:xr-wrapper=next:1", format!("permanent failure: not a document: the body holds {C}Result where {C}Response was expected")),
        (
            "civil:xr-network=next:1",
            "retryable: X-Road fault Server.ServerProxy.ServiceFailed.NetworkError: Service RS/GOV/17862146/maticne-knjige/civil.birth-extract failed".into(),
        ),
        (
            "civil:xr-network-snake=next:1",
            "retryable: X-Road fault server.serverproxy.service_failed.network_error: Service RS/GOV/17862146/maticne-knjige/civil.birth-extract failed".into(),
        ),
        (
            "civil:xr-denied=next:1",
            format!("permanent failure: X-Road fault Server.ServerProxy.AccessDenied: Request is not allowed: {S}"),
        ),
        (
            "civil:xr-denied-snake=next:1",
            format!("permanent failure: X-Road fault server.serverproxy.access_denied: Request is not allowed: {S}"),
        ),
        ("civil:notfound=next:1", "permanent failure: registry found no data".into()),
        ("civil:unavailable=next:1", "retryable: registry unavailable".into()),
        ("civil:503=next:1", "retryable: registry returned 503".into()),
        ("civil:truncate=next:1", "retryable: connection broke".into()),
        ("civil:drip=next:1", "retryable: no complete answer before the timeout".into()),
    ];
    for (spec, want) in &cases {
        env.faults(spec).await;
        let got = birth_extract(&ex).await.outcome.to_string();
        assert!(got.starts_with(want.as_str()), "{spec}: {got}");
    }
    // The positive control.
    assert_eq!(birth_extract(&ex).await.outcome, Outcome::Document);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_answers_in_every_form_deliver_the_same_document() {
    let env = xr_gateway("").await;
    let ex = env.exchange();
    let plain = birth_extract(&ex).await;
    assert_eq!(plain.outcome, Outcome::Document);
    let text_of = |a: &jum_gateway::exchange::Attempt| {
        let req = String::from_utf8(a.request.clone()).unwrap();
        let mut v = xr_read_in(
            &env,
            &req,
            a.response.as_ref().unwrap(),
            a.charset.as_deref(),
        );
        assert_eq!(v["hash"], v["sha512"]);
        v["texts"].as_object_mut().unwrap().remove("issuedAt");
        v["texts"].as_object_mut().unwrap().remove("id");
        v["texts"].as_object_mut().unwrap().remove("requestHash");
        v["texts"].as_object_mut().unwrap().remove("requestId");
        v["texts"].clone()
    };
    let want = text_of(&plain);
    assert_eq!(want["firstName"], "Erzsébet");
    for rule in ["latin1", "bom", "cdata", "swa", "mtom"] {
        env.faults(&format!("civil:{rule}=next:1")).await;
        let a = birth_extract(&ex).await;
        assert_eq!(a.outcome, Outcome::Document, "{rule}: {}", a.outcome);
        // The SOAP part exactly as received: what the signed document holds.
        let raw = a.response.clone().unwrap();
        match rule {
            "latin1" => assert!(raw.windows(9).any(|w| w == b"Erzs\xe9bet<"), "{rule}"),
            "bom" => assert_eq!(&raw[..3], b"\xEF\xBB\xBF"),
            "cdata" => assert!(raw.windows(9).any(|w| w == b"<![CDATA[")),
            _ => assert!(raw.starts_with(b"<?xml"), "{rule}: the SOAP part only"),
        }
        assert_eq!(text_of(&a), want, "{rule}");
        if rule == "swa" || rule == "mtom" {
            assert_eq!(a.attachments.len(), 1, "{rule}");
            let at = &a.attachments[0];
            assert_eq!(at.content_type, "application/pdf");
            assert_eq!(at.name.as_deref(), Some("izvod.pdf"));
            assert!(at.bytes.starts_with(b"%PDF-1.4\n"));
            assert!((0u8..=255).all(|b| at.bytes.contains(&b)), "binary-safe");
        } else {
            assert!(a.attachments.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_road_answers_signed_document_is_not_yet_until_timestamped() {
    use jum_gateway::exchange::SignedDocFetch;
    let env = xr_gateway("civil:swa=next:1").await;
    let ex = env.exchange();
    let a = birth_extract(&ex).await;
    assert_eq!(a.outcome, Outcome::Document);
    let id = a.message_id.clone().unwrap();
    for _ in 0..2 {
        match ex.signed_document("civil", &id, false).await.unwrap() {
            SignedDocFetch::NotYet(why) => {
                assert_eq!(why, "Message signature has not been timestamped yet!")
            }
            SignedDocFetch::Container(_) => panic!("not timestamped yet"),
        }
    }
    let SignedDocFetch::Container(zip) = ex.signed_document("civil", &id, true).await.unwrap()
    else {
        panic!("force stamps it")
    };
    let entries = unzip(&write(env.dir.path(), "signed.asice", &zip));
    assert_eq!(
        entries[0],
        (
            "mimetype".into(),
            b"application/vnd.etsi.asic-e+zip".to_vec()
        )
    );
    assert_eq!(entries[1].0, "message.xml");
    assert_eq!(
        &entries[1].1,
        a.response.as_ref().unwrap(),
        "byte for byte the answer received"
    );
    assert_eq!(
        entries[2],
        ("attachment1".into(), a.attachments[0].bytes.clone())
    );
    // Another message's, once the control endpoint stamps it.
    let b = birth_extract(&ex).await;
    let bid = b.message_id.unwrap();
    assert!(matches!(
        ex.signed_document("civil", &bid, false).await.unwrap(),
        SignedDocFetch::NotYet(_)
    ));
    env.control
        .post(format!("http://{}/x-road/stamp", env.sim.control))
        .send()
        .await
        .unwrap();
    let SignedDocFetch::Container(zip) = ex.signed_document("civil", &bid, false).await.unwrap()
    else {
        panic!("stamped")
    };
    assert_eq!(
        unzip(&write(env.dir.path(), "b.asice", &zip))[1].1,
        b.response.unwrap()
    );
    // An unknown message is a 404 too, with the security server's word.
    match ex
        .signed_document("civil", "no-such-message", false)
        .await
        .unwrap()
    {
        SignedDocFetch::NotYet(why) => assert_eq!(why, "No signed documents found"),
        SignedDocFetch::Container(_) => panic!("no such message"),
    }
}
