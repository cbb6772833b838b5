//! X-Road attempts end to end against a small security-server double over
//! mutual TLS on loopback: it copies our headers back as a security server
//! and provider do, adds the `requestHash`, and answers in the forms a real
//! one sends, or breaks one rule.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;

use super::*;
use crate::config::{GatewayConfig, RegistryProtocol, RevocationPolicy};
use crate::exchange::Outcome;
use crate::protocol::{ns, Subject};

/// Path and query, content type, SOAPAction and body of a request.
type Asked = (String, Option<String>, Option<String>, Vec<u8>);

#[derive(Default)]
struct Seen {
    requests: Vec<Asked>,
    mode: String,
}

type Shared = Arc<Mutex<Seen>>;

fn birth_extract() -> String {
    let x = include_str!("../../../schemas/examples/response-civil-birth-extract.xml");
    let s = x.find("<c:BirthExtract ").unwrap();
    let e = x.find("</c:BirthExtract>").unwrap() + "</c:BirthExtract>".len();
    x[s..e].to_owned()
}

/// ISO-8859-1, characters beyond it as character references.
fn latin1(s: &str) -> Vec<u8> {
    let mut o = Vec::new();
    for c in s.chars() {
        if (c as u32) < 256 {
            o.push(c as u32 as u8);
        } else {
            o.extend_from_slice(format!("&#{};", c as u32).as_bytes());
        }
    }
    o
}

/// What the double answers to `req` in `mode`: (status, content type, body).
fn answer(mode: &str, req: &[u8]) -> (u16, String, Vec<u8>) {
    let r = String::from_utf8_lossy(req);
    let hs = r.find("<SOAP-ENV:Header>").unwrap() + "<SOAP-ENV:Header>".len();
    let he = r.find("</SOAP-ENV:Header>").unwrap();
    let mut header = r[hs..he].to_owned();
    let hash = base64::engine::general_purpose::STANDARD.encode(openssl::sha::sha512(req));
    let code = {
        let s = r.find("<id:serviceCode>").unwrap() + "<id:serviceCode>".len();
        r[s..s + r[s..].find('<').unwrap()].to_owned()
    };
    let mut doc = if r.contains("<jum:Poll>") {
        "<jum:Accepted><jum:ticket>T-2</jum:ticket><jum:retryAfter>PT5S</jum:retryAfter></jum:Accepted>".to_owned()
    } else {
        birth_extract()
    };
    let mut wrapper = format!("{code}Response");
    let mut hash_el = format!(
        "<xrd:requestHash algorithmId=\"{}\">{hash}</xrd:requestHash>",
        ns::SHA512
    );
    let mut rest = String::new();
    match mode {
        "no-copy" => {
            let s = header.find("<xrd:userId>").unwrap();
            let e = header.find("</xrd:userId>").unwrap() + "</xrd:userId>".len();
            header.replace_range(s..e, "");
        }
        "bad-hash" => hash_el = hash_el.replace(&hash[..8], "AAAAAAAA"),
        "wrong-wrapper" => wrapper = code.clone(),
        "schema-invalid" => doc = doc.replace("<c:sex>F</c:sex>", ""),
        "mtom" => rest = "<c:scan><xop:Include xmlns:xop=\"http://www.w3.org/2004/08/xop/include\" href=\"cid:scan%40jum\"/></c:scan>".into(),
        _ => {}
    }
    let soap = format!(
        "<?xml version=\"1.0\" encoding=\"{}\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\" xmlns:xrd=\"{}\" xmlns:id=\"{}\" xmlns:jum=\"{}\"><SOAP-ENV:Header>{header}{hash_el}</SOAP-ENV:Header><SOAP-ENV:Body><c:{wrapper} xmlns:c=\"urn:jum-gateway:civil:1\">{doc}{rest}</c:{wrapper}></SOAP-ENV:Body></SOAP-ENV:Envelope>",
        if mode == "latin1" { "ISO-8859-1" } else { "UTF-8" },
        ns::SOAP,
        ns::XROAD,
        ns::ID,
        ns::JUM
    );
    let fault = |code: &str| {
        format!("<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\"><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>{code}</faultcode><faultstring>said the security server</faultstring><faultactor/><detail><faultDetail xmlns=\"\">f31e7451</faultDetail></detail></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>", ns::SOAP).into_bytes()
    };
    let scan = b"%PDF-1.4 \x00\xff scan".to_vec();
    match mode {
        "latin1" => (200, "text/xml; charset=ISO-8859-1".into(), latin1(&soap)),
        // The charset named by the Content-Type alone (pr-mess 2.6's
        // preferred way): no XML declaration says it.
        "latin1-header" => {
            let bare = &soap[soap.find("<SOAP-ENV:Envelope").unwrap()..];
            (200, "text/xml; charset=ISO-8859-1".into(), latin1(bare))
        }
        "huge" => (200, "text/xml".into(), vec![b' '; 2 << 20]),
        "fault-dotted" => (
            500,
            "text/xml; charset=UTF-8".into(),
            fault("Server.ServerProxy.ServiceFailed.NetworkError"),
        ),
        "fault-snake" => (
            500,
            "text/xml; charset=UTF-8".into(),
            fault("server.clientproxy.access_denied"),
        ),
        "swa" | "mtom" => {
            let (ct, root) = if mode == "swa" {
                (
                    "multipart/related; type=\"text/xml\"; start=\"<root>\"; boundary=\"b1\"",
                    "text/xml; charset=UTF-8",
                )
            } else {
                (
                    "multipart/related; type=\"application/xop+xml\"; start=\"<root>\"; start-info=\"text/xml\"; boundary=\"b1\"",
                    "application/xop+xml; charset=UTF-8; type=\"text/xml\"",
                )
            };
            let mut b = format!("--b1\r\nContent-Type: {root}\r\nContent-Transfer-Encoding: 8bit\r\nContent-ID: <root>\r\n\r\n{soap}\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <scan@jum>\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\n\r\n").into_bytes();
            b.extend_from_slice(&scan);
            b.extend_from_slice(b"\r\n--b1--\r\n");
            (200, ct.into(), b)
        }
        _ => (200, "text/xml; charset=UTF-8".into(), soap.into_bytes()),
    }
}

async fn double(certs: &std::path::Path, seen: Shared) -> SocketAddr {
    let tls = crate::pki::tls::server_config(
        &certs.join("civil-tls.pem"),
        &certs.join("civil-tls.key"),
        Some(&certs.join("registry-trust.pem")),
        crate::pki::tls::ClientAuth::Required,
    )
    .unwrap();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let seen = seen.clone();
            async move {
                let h = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
                let mut s = seen.lock().unwrap();
                s.requests.push((uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(), h("content-type"), h("soapaction"), body.to_vec()));
                if uri.path() == "/asic" {
                    return match s.mode.as_str() {
                        "asic-404" | "asic-500" | "asic-500-other" => {
                            axum::response::Response::builder()
                                .status(if s.mode == "asic-404" { 404 } else { 500 })
                                .body(axum::body::Body::from(if s.mode == "asic-500-other" {
                                    "Failed to get timestamp from any time-stamping providers"
                                } else {
                                    "Message signature has not been timestamped yet!"
                                }))
                                .unwrap()
                        }
                        _ => axum::response::Response::builder()
                            .status(200)
                            .header("content-type", "application/vnd.etsi.asic-e+zip")
                            .body(axum::body::Body::from(b"PK\x03\x04container".to_vec()))
                            .unwrap(),
                    };
                }
                let body_s = String::from_utf8_lossy(&body).into_owned();
                let (status, ct, out) = if body_s.contains("<xrd:listMethods/>") || body_s.contains("<xrd:allowedMethods/>") {
                    let meta = if body_s.contains("<xrd:listMethods/>") { "listMethods" } else { "allowedMethods" };
                    let r = String::from_utf8_lossy(&body);
                    let hs = r.find("<SOAP-ENV:Header>").unwrap() + "<SOAP-ENV:Header>".len();
                    let he = r.find("</SOAP-ENV:Header>").unwrap();
                    let codes: &[&str] = if meta == "listMethods" {
                        &["civil.birth-extract", "civil.citizenship-certificate"]
                    } else {
                        &["civil.birth-extract"]
                    };
                    let services: String = codes
                        .iter()
                        .map(|c| format!("<xrd:service id:objectType=\"SERVICE\"><id:xRoadInstance>RS</id:xRoadInstance><id:memberClass>GOV</id:memberClass><id:memberCode>17862146</id:memberCode><id:subsystemCode>maticne-knjige</id:subsystemCode><id:serviceCode>{c}</id:serviceCode><id:serviceVersion>v1</id:serviceVersion></xrd:service>"))
                        .collect();
                    let x = format!(
                        "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\" xmlns:xrd=\"{}\" xmlns:id=\"{}\"><SOAP-ENV:Header>{}</SOAP-ENV:Header><SOAP-ENV:Body><xrd:{meta}Response>{services}</xrd:{meta}Response></SOAP-ENV:Body></SOAP-ENV:Envelope>",
                        ns::SOAP, ns::XROAD, ns::ID, &r[hs..he]
                    );
                    (200, "text/xml; charset=UTF-8".to_owned(), x.into_bytes())
                } else {
                    answer(&s.mode, &body)
                };
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", ct)
                    .body(axum::body::Body::from(out))
                    .unwrap()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::pki::tls::serve(
        listener,
        Some(tls),
        app,
        std::future::pending(),
        Arc::new(|_: &str| {}),
        crate::pki::tls::ServeLimits::for_this_process(std::time::Duration::from_secs(10)),
    ));
    addr
}

struct Setup {
    _dir: tempfile::TempDir,
    ex: Exchange,
    seen: Shared,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("certs");
    crate::pki::init_dev(&c, false).unwrap();
    let seen: Shared = Arc::default();
    let addr = double(&c, seen.clone()).await;
    let mut gw: GatewayConfig = crate::config::parse(
        include_str!("../../../config/gateway.toml"),
        "g",
        std::iter::empty(),
    )
    .unwrap();
    gw.gateway.tls_cert = c.join("gateway-tls.pem");
    gw.gateway.tls_key = c.join("gateway-tls.key");
    gw.gateway.sign_cert = c.join("gateway-sign.pem");
    gw.gateway.sign_key = c.join("gateway-sign.key");
    gw.gateway.max_body_bytes = 1 << 20;
    for (name, r) in gw.registries.iter_mut() {
        r.tls_ca = c.join("gateway-trust.pem");
        r.signer_ca = Some(c.join("gateway-trust.pem"));
        r.revocation = RevocationPolicy::Off;
        if name == "civil" {
            r.protocol = RegistryProtocol::XRoad;
            r.signer_ca = None;
            r.signer_subject = None;
            r.url = format!("https://{addr}/");
            r.timeout = std::time::Duration::from_secs(5);
        }
    }
    let ex = Exchange::new(&gw, &crate::xml::schema::default_dir()).unwrap();
    Setup {
        _dir: dir,
        ex,
        seen,
    }
}

async fn attempt(s: &Setup, mode: &str, ticket: Option<&str>) -> Attempt {
    s.seen.lock().unwrap().mode = mode.into();
    let subject = Subject::from_parts(Some("0512981717776"), None, None, None, None, None).unwrap();
    s.ex.attempt(&Call {
        id: "01J9Z3Q4V8K2M6N0P1R3S5T7V9",
        service: "civil.birth-extract",
        subject: &subject,
        case: "351-12/2026-IV",
        official: "marija.kovac",
        legal_basis: "ZUP čl. 103",
        purpose: "test",
        ticket,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn x_road_attempts_end_to_end_against_a_security_server_double() {
    let s = setup().await;
    assert_eq!(s.ex.x_road_registries(), vec!["civil".to_owned()]);

    // A document: every attempt a new message with its own UUID v4 id.
    let a = attempt(&s, "plain", None).await;
    assert_eq!(a.outcome, Outcome::Document, "{:?}", a.outcome);
    let b = attempt(&s, "plain", None).await;
    assert_eq!(b.outcome, Outcome::Document);
    let (ia, ib) = (a.message_id.clone().unwrap(), b.message_id.clone().unwrap());
    assert_ne!(ia, ib);
    assert_eq!(uuid::Uuid::parse_str(&ia).unwrap().get_version_num(), 4);
    assert!(a.signer.is_none() && a.revocation.is_none());
    {
        let seen = s.seen.lock().unwrap();
        let (path, ct, action, body) = &seen.requests[0];
        assert_eq!(path, "/");
        assert_eq!(ct.as_deref(), Some("text/xml; charset=UTF-8"));
        assert_eq!(action.as_deref(), Some("\"\""));
        assert_eq!(body, &a.request);
        assert!(String::from_utf8_lossy(body).contains(&format!("<xrd:id>{ia}</xrd:id>")));
    }
    // What is kept is the SOAP message as received.
    let resp = String::from_utf8(a.response.clone().unwrap()).unwrap();
    assert!(resp.contains("<c:civil.birth-extractResponse"));

    // ISO-8859-1.
    let a = attempt(&s, "latin1", None).await;
    assert_eq!(a.outcome, Outcome::Document, "{:?}", a.outcome);
    assert!(a.response.unwrap().windows(6).any(|w| w == b"Erzs\xe9b"));
    // Its charset named by the Content-Type alone: kept as it came, the
    // charset with it, so that it reads again as the text it was.
    let a = attempt(&s, "latin1-header", None).await;
    assert_eq!(a.outcome, Outcome::Document, "{:?}", a.outcome);
    assert!(
        a.charset
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("ISO-8859-1")),
        "{:?}",
        a.charset
    );
    let raw = a.response.unwrap();
    assert!(raw.starts_with(b"<SOAP-ENV:Envelope"));
    assert!(raw.windows(6).any(|w| w == b"Erzs\xe9b"));
    let again = crate::protocol::xroad::readable(&raw, a.charset.as_deref()).unwrap();
    assert!(String::from_utf8(again).unwrap().contains("Erzsébet"));
    assert!(crate::protocol::xroad::readable(&raw, None).is_err());

    // SOAP with attachments, and MTOM: the attachment kept with the document.
    for mode in ["swa", "mtom"] {
        let a = attempt(&s, mode, None).await;
        assert_eq!(a.outcome, Outcome::Document, "{mode}: {:?}", a.outcome);
        assert_eq!(a.attachments.len(), 1, "{mode}");
        assert_eq!(a.attachments[0].content_id, "scan@jum");
        assert_eq!(a.attachments[0].name.as_deref(), Some("scan.pdf"));
        assert_eq!(a.attachments[0].bytes, b"%PDF-1.4 \x00\xff scan");
        assert!(a.response.unwrap().starts_with(b"<?xml"));
    }

    // A poll: the same wrapper holding jum:Poll; a ticket back.
    let a = attempt(&s, "plain", Some("T-1")).await;
    assert!(
        matches!(a.outcome, Outcome::Accepted { ref ticket, .. } if ticket == "T-2"),
        "{:?}",
        a.outcome
    );

    // Refusals.
    let reason = |o: &Outcome| format!("{o:?}");
    let a = attempt(&s, "no-copy", None).await;
    assert!(
        matches!(a.outcome, Outcome::Security { .. }),
        "{:?}",
        a.outcome
    );
    assert!(
        reason(&a.outcome).contains("does not copy back the request's headers"),
        "{:?}",
        a.outcome
    );
    assert!(a.attachments.is_empty());
    let a = attempt(&s, "bad-hash", None).await;
    assert!(
        matches!(a.outcome, Outcome::Security { .. }),
        "{:?}",
        a.outcome
    );
    assert!(reason(&a.outcome).contains("requestHash: not the hash of the request sent"));
    let a = attempt(&s, "wrong-wrapper", None).await;
    assert!(
        matches!(a.outcome, Outcome::Permanent { .. }),
        "{:?}",
        a.outcome
    );
    assert!(reason(&a.outcome).contains("civil.birth-extractResponse was expected"));
    let a = attempt(&s, "schema-invalid", None).await;
    assert!(
        matches!(a.outcome, Outcome::Retryable { .. }),
        "{:?}",
        a.outcome
    );
    assert!(
        reason(&a.outcome).contains("schema-invalid"),
        "{:?}",
        a.outcome
    );
    let a = attempt(&s, "fault-dotted", None).await;
    assert!(
        matches!(a.outcome, Outcome::Retryable { .. }),
        "{:?}",
        a.outcome
    );
    assert!(reason(&a.outcome)
        .contains("Server.ServerProxy.ServiceFailed.NetworkError: said the security server"));
    let a = attempt(&s, "fault-snake", None).await;
    assert!(
        matches!(a.outcome, Outcome::Permanent { .. }),
        "{:?}",
        a.outcome
    );
    assert!(reason(&a.outcome).contains("server.clientproxy.access_denied"));

    // An answer beyond the cap, read no further.
    let a = attempt(&s, "huge", None).await;
    assert_eq!(
        a.outcome,
        Outcome::Retryable {
            reason: "answer larger than the limit of 1048576 bytes".into(),
            retry_after: None
        }
    );

    // The metaservices.
    let m = s.ex.methods("civil").await.unwrap();
    assert_eq!(
        m.listed,
        ["civil.birth-extract", "civil.citizenship-certificate"]
    );
    assert_eq!(m.allowed, ["civil.birth-extract"]);
    assert!(s.ex.methods("tax").await.is_err());

    // The signed document, asked with our client's identifiers.
    s.seen.lock().unwrap().mode = "asic-404".into();
    assert_eq!(
        s.ex.signed_document("civil", &ia, false).await.unwrap(),
        SignedDocFetch::NotYet("Message signature has not been timestamped yet!".into())
    );
    s.seen.lock().unwrap().mode = "asic-500".into();
    assert_eq!(
        s.ex.signed_document("civil", &ia, false).await.unwrap(),
        SignedDocFetch::NotYet("Message signature has not been timestamped yet!".into())
    );
    s.seen.lock().unwrap().mode = "asic-500-other".into();
    let e =
        s.ex.signed_document("civil", &ia, false)
            .await
            .unwrap_err()
            .to_string();
    assert!(
        e.ends_with(&format!("signed document of {ia}: HTTP 500: Failed to get timestamp from any time-stamping providers")),
        "{e}"
    );
    s.seen.lock().unwrap().mode = "asic".into();
    assert_eq!(
        s.ex.signed_document("civil", &ia, true).await.unwrap(),
        SignedDocFetch::Container(b"PK\x03\x04container".to_vec())
    );
    let seen = s.seen.lock().unwrap();
    let asked: Vec<&String> = seen
        .requests
        .iter()
        .map(|r| &r.0)
        .filter(|p| p.starts_with("/asic"))
        .collect();
    assert_eq!(asked.len(), 4);
    assert_eq!(
        [asked[0], asked[3]],
        [
            &format!("/asic?queryId={ia}&xRoadInstance=RS&memberClass=GOV&memberCode=08070431&subsystemCode=jum-becej&responseOnly&unique"),
            &format!("/asic?queryId={ia}&xRoadInstance=RS&memberClass=GOV&memberCode=08070431&subsystemCode=jum-becej&responseOnly&unique&force"),
        ]
    );
}
