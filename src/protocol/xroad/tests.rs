//! The X-Road codec against NIIS's schemas and the spec's own example
//! messages (`tests/vectors/x-road/`), and against their mutations.

use std::path::PathBuf;

use super::*;
use crate::protocol::envelope::{self, FaultCode};
use crate::protocol::Subject;
use crate::xml::Limits;

fn vector(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/x-road")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn text(name: &str) -> String {
    String::from_utf8(vector(name)).unwrap()
}

fn cfg() -> crate::config::GatewayConfig {
    crate::config::parse(
        include_str!("../../../config/gateway.toml"),
        "g",
        std::iter::empty(),
    )
    .unwrap()
}

fn python() -> PathBuf {
    std::env::var_os("JUMGW_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

fn sha512_b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(openssl::sha::sha512(b))
}

/// A subject each service of the catalogue takes.
fn subject_for(kinds: &[String]) -> Subject {
    match kinds[0].as_str() {
        "jmbg" => Subject::from_parts(Some("0512981717776"), None, None, None, None, None),
        "pib" => Subject::from_parts(None, Some("101134702"), None, None, None, None),
        "mb" => Subject::from_parts(None, None, Some("07002106"), None, None, None),
        "ko+sheet" => Subject::from_parts(None, None, None, Some("803472"), Some("1520"), None),
        "ko+parcel" => Subject::from_parts(None, None, None, Some("803472"), None, Some("1234/5")),
        k => panic!("no test subject of kind {k}"),
    }
    .unwrap()
}

fn built(service: &str, id: &str, inner: Option<&str>) -> String {
    let cfg = cfg();
    let svc = &cfg.services[service];
    let reg = &cfg.registries[&svc.registry];
    let inner = match inner {
        Some(i) => i.to_owned(),
        None => envelope::payload(service, svc, &subject_for(&svc.subjects)).unwrap(),
    };
    request(
        &Request {
            client: &cfg.gateway.client,
            service: &reg.member,
            service_code: svc.code(service),
            service_version: &svc.version,
            id,
            user_id: &format!("{}marija.kovac", cfg.gateway.country),
            issue: "351-12/2026-IV",
            legal_basis: "ZUP čl. 103 & <više>",
            purpose: "test",
            request_id: "01J9Z3Q4V8K2M6N0P1R3S5T7V9",
        },
        &svc.namespace,
        &svc.prefix,
        &inner,
    )
}

/// Every service's request, and a poll, conform to the official schemas
/// and pr-mess's rules, by an independent validator (xmlschema + lxml).
#[test]
fn requests_conform_to_the_official_schemas_by_an_independent_validator() {
    let cfg = cfg();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for service in cfg.services.keys() {
        let x = built(service, &uuid::Uuid::new_v4().to_string(), None);
        let f = dir.path().join(format!("{service}.xml"));
        std::fs::write(&f, &x).unwrap();
        files.push(f);
    }
    let poll = built(
        "civil.birth-extract",
        &uuid::Uuid::new_v4().to_string(),
        Some(&envelope::poll("T-1")),
    );
    let f = dir.path().join("poll.xml");
    std::fs::write(&f, &poll).unwrap();
    files.push(f);
    // The metaservice requests.
    let provider = &cfg.registries["civil"].member;
    for meta in [Meta::ListMethods, Meta::AllowedMethods] {
        let x = meta_request(
            meta,
            &cfg.gateway.client,
            provider,
            &uuid::Uuid::new_v4().to_string(),
            "",
        );
        let f = dir.path().join(format!("{}.xml", meta.code()));
        std::fs::write(&f, &x).unwrap();
        files.push(f);
    }
    // The negative control: a request as today's signed-XML profile
    // builds it (a ULID id, requestHash-free but no wrapper) is refused.
    let bad = built("civil.birth-extract", "01J9Z3Q4V8K2M6N0P1R3S5T7V9", None)
        .replace("<c:civil.birth-extract ", "<c:BirthExtractWrapper ")
        .replace("</c:civil.birth-extract>", "</c:BirthExtractWrapper>")
        .replace(
            "<id:memberClass>GOV</id:memberClass><id:memberCode>17862146</id:memberCode>",
            "<id:memberCode>17862146</id:memberCode>",
        );
    let f = dir.path().join("bad.xml");
    std::fs::write(&f, &bad).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/xroad_check.py");
    let out = std::process::Command::new(python())
        .arg(&script)
        .arg(&cfg.gateway.country)
        .args(&files)
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len() + 1);
    for l in &lines[..files.len()] {
        assert_eq!(l["errors"], serde_json::json!([]), "{l}");
    }
    let errors = lines[files.len()]["errors"].to_string();
    assert!(errors.contains("is not a UUID v4"), "{errors}");
    assert!(errors.contains("not the service code"), "{errors}");
    // The service header without its member class, by xmlschema's reading.
    assert!(errors.contains("service: "), "{errors}");
}

#[test]
fn a_request_is_as_the_spec_says() {
    let id = uuid::Uuid::new_v4().to_string();
    let x = built("civil.birth-extract", &id, None);
    let d = crate::xml::Document::parse(x.as_bytes(), &Limits::default()).unwrap();
    let h = d.child(d.root(), ns::SOAP, "Header").unwrap();
    let names: Vec<String> = d
        .child_elements(h)
        .map(|n| d.element(n).unwrap().local.clone())
        .collect();
    assert_eq!(
        names,
        [
            "client",
            "service",
            "id",
            "userId",
            "issue",
            "protocolVersion",
            "legalBasis",
            "purpose",
            "requestId"
        ]
    );
    assert!(!x.contains("requestHash"));
    assert!(x.contains(&format!("<xrd:id>{id}</xrd:id>")));
    assert!(x.contains("<xrd:userId>RSmarija.kovac</xrd:userId>"));
    assert!(x.contains("<id:serviceCode>civil.birth-extract</id:serviceCode><id:serviceVersion>v1</id:serviceVersion>"));
    assert!(x.contains("<jum:legalBasis>ZUP čl. 103 &amp; &lt;više&gt;</jum:legalBasis>"));
    let b = d.child(d.root(), ns::SOAP, "Body").unwrap();
    let w: Vec<_> = d.child_elements(b).collect();
    assert_eq!(w.len(), 1);
    assert!(d.is(w[0], "urn:jum-gateway:civil:1", "civil.birth-extract"));
    let inner: Vec<_> = d.child_elements(w[0]).collect();
    assert!(d.is(inner[0], "urn:jum-gateway:civil:1", "BirthExtractRequest"));
}

/// `config check` refuses a service code of an X-Road registry that is
/// not an identifier and an element name; a signed-XML registry's service
/// is not held to it.
#[test]
fn config_check_refuses_a_service_code_that_cannot_name_the_wrapper() {
    let mut c = cfg();
    c.registries.get_mut("civil").unwrap().protocol = crate::config::RegistryProtocol::XRoad;
    c.registries.get_mut("civil").unwrap().signer_ca = None;
    c.validate("g").unwrap();
    c.services
        .get_mut("civil.birth-extract")
        .unwrap()
        .service_code = Some("1birth".into());
    let e = c.validate("g").unwrap_err().to_string();
    assert!(
        e.contains("services.civil.birth-extract.service_code"),
        "{e}"
    );
    assert!(
        e.contains("the X-Road service code \"1birth\" starts with '1'"),
        "{e}"
    );
    c.registries.get_mut("civil").unwrap().protocol = crate::config::RegistryProtocol::SignedXml;
    c.registries.get_mut("civil").unwrap().signer_ca = Some("certs/dev/gateway-trust.pem".into());
    c.validate("g").unwrap();
}

// ---- the answer check, from the spec's E.1/E.2 ----

/// E.2 answering E.1, its requestHash made that of E.1's bytes (the
/// spec's is over some other rendering of E.1).
fn e2_for(sent: &[u8]) -> String {
    let e2 = text("pr-mess-E2-response.xml");
    let start = e2.find("<xrd:requestHash").unwrap();
    let end = e2.find("</xrd:requestHash>").unwrap() + "</xrd:requestHash>".len();
    format!(
        "{}<xrd:requestHash algorithmId=\"http://www.w3.org/2001/04/xmlenc#sha512\">{}</xrd:requestHash>{}",
        &e2[..start],
        sha512_b64(sent),
        &e2[end..]
    )
}

const P: &str = "http://producer.x-road.eu";

fn check_e(sent: &[u8], answer: &str) -> Result<Answer, CheckError> {
    check(
        sent,
        answer.as_bytes(),
        P,
        "exampleService",
        &Limits::default(),
    )
}

#[test]
fn the_spec_example_response_is_taken_and_its_document_read() {
    let sent = vector("pr-mess-E1-request.xml");
    let Answer::Document {
        ns,
        local,
        document,
    } = check_e(&sent, &e2_for(&sent)).unwrap()
    else {
        panic!("not a document")
    };
    assert_eq!((ns.as_str(), local.as_str()), ("", "exampleOutput"));
    assert_eq!(
        String::from_utf8(document).unwrap(),
        "<exampleOutput xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:id=\"http://x-road.eu/xsd/identifiers\" xmlns:ns1=\"http://producer.x-road.eu\" xmlns:xrd=\"http://x-road.eu/xsd/xroad.xsd\">bar</exampleOutput>"
    );
}

#[test]
fn the_spec_example_hash_is_not_that_of_the_example_request_and_is_refused() {
    let sent = vector("pr-mess-E1-request.xml");
    let e = check_e(&sent, &text("pr-mess-E2-response.xml")).unwrap_err();
    assert_eq!(
        e,
        CheckError::RequestHash("not the hash of the request sent".into())
    );
}

fn headers_refused(answer: &str, says: &str) {
    let sent = vector("pr-mess-E1-request.xml");
    match check_e(&sent, answer) {
        Err(CheckError::Headers(e)) => assert!(e.contains(says), "{e}"),
        other => panic!("{other:?}: not refused for headers ({says})\n{answer}"),
    }
}

#[test]
fn every_header_must_be_copied_back_in_order_with_its_values() {
    let sent = vector("pr-mess-E1-request.xml");
    let good = e2_for(&sent);
    // Each header dropped.
    for (tag, close) in [
        ("<xrd:client ", "</xrd:client>"),
        ("<xrd:service ", "</xrd:service>"),
        ("<xrd:id>", "</xrd:id>"),
        ("<xrd:userId>", "</xrd:userId>"),
        ("<xrd:issue>", "</xrd:issue>"),
        ("<xrd:protocolVersion>", "</xrd:protocolVersion>"),
    ] {
        let s = good.find(tag).unwrap();
        let e = good.find(close).unwrap() + close.len();
        let dropped = format!("{}{}", &good[..s], &good[e..]);
        headers_refused(&dropped, "");
    }
    // Reordered: userId before id.
    let id = "<xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0</xrd:id>";
    let user = "<xrd:userId>EE12345678901</xrd:userId>";
    let swapped = good.replace(id, "@@").replace(user, id).replace("@@", user);
    headers_refused(
        &swapped,
        "userId where {http://x-road.eu/xsd/xroad.xsd}id was sent",
    );
    // A value changed.
    headers_refused(
        &good.replace("4894e35d-bf0f-44a6-867a-8e51f1daa7e0", "4894e35d-bf0f-44a6-867a-8e51f1daa7e1"),
        "\"4894e35d-bf0f-44a6-867a-8e51f1daa7e1\" where \"4894e35d-bf0f-44a6-867a-8e51f1daa7e0\" was sent",
    );
    // An attribute changed.
    headers_refused(
        &good.replace(
            "<xrd:client id:objectType=\"SUBSYSTEM\">",
            "<xrd:client id:objectType=\"MEMBER\">",
        ),
        "objectType=MEMBER",
    );
    // A nested id element changed (the provider's member code).
    headers_refused(
        &good.replace(
            "<id:memberCode>MEMBER2</id:memberCode>",
            "<id:memberCode>MEMBER3</id:memberCode>",
        ),
        "Header/service/memberCode: \"MEMBER3\"",
    );
    // A nested element dropped (serviceVersion).
    headers_refused(
        &good.replace("<id:serviceVersion>v1</id:serviceVersion>", ""),
        "service: 5 elements where 6",
    );
    // An extra header inserted before ours.
    headers_refused(
        &good.replace(
            "<SOAP-ENV:Header>",
            "<SOAP-ENV:Header><xrd:issue>x</xrd:issue>",
        ),
        "issue where {http://x-road.eu/xsd/xroad.xsd}client was sent",
    );
    // No header at all.
    let s = good.find("<SOAP-ENV:Header>").unwrap();
    let e = good.find("</SOAP-ENV:Header>").unwrap() + "</SOAP-ENV:Header>".len();
    headers_refused(
        &format!("{}{}", &good[..s], &good[e..]),
        "no SOAP-ENV:Header",
    );
    // Controls: prefixes and whitespace are free, a header after ours is kept.
    let reprefixed = good.replace("xrd:", "x:").replace("xmlns:xrd=", "xmlns:x=");
    assert!(matches!(
        check_e(&sent, &reprefixed),
        Ok(Answer::Document { .. })
    ));
    let later = good.replace(
        "</SOAP-ENV:Header>",
        "<extra xmlns=\"urn:x\">1</extra></SOAP-ENV:Header>",
    );
    assert!(matches!(
        check_e(&sent, &later),
        Ok(Answer::Document { .. })
    ));
}

#[test]
fn request_hash_is_recomputed_by_its_algorithm() {
    use base64::Engine;
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let sent = vector("pr-mess-E1-request.xml");
    let good = e2_for(&sent);
    let with = |alg: &str, value: &str| -> String {
        let s = good.find("<xrd:requestHash").unwrap();
        let e = good.find("</xrd:requestHash>").unwrap() + "</xrd:requestHash>".len();
        format!(
            "{}<xrd:requestHash algorithmId=\"{alg}\">\n  {value}\n</xrd:requestHash>{}",
            &good[..s],
            &good[e..]
        )
    };
    let sha256 = b64(&openssl::sha::sha256(&sent));
    let sha384 = b64(&openssl::sha::sha384(&sent));
    assert!(matches!(
        check_e(
            &sent,
            &with("http://www.w3.org/2001/04/xmlenc#sha256", &sha256)
        ),
        Ok(Answer::Document { .. })
    ));
    assert!(matches!(
        check_e(
            &sent,
            &with("http://www.w3.org/2001/04/xmldsig-more#sha384", &sha384)
        ),
        Ok(Answer::Document { .. })
    ));
    // SHA-256's value under SHA-512's name, and the other way round.
    let wrong = CheckError::RequestHash("not the hash of the request sent".into());
    assert_eq!(
        check_e(&sent, &with(ns::SHA512, &sha256)).unwrap_err(),
        wrong
    );
    assert_eq!(
        check_e(
            &sent,
            &with(
                "http://www.w3.org/2001/04/xmlenc#sha256",
                &sha512_b64(&sent)
            )
        )
        .unwrap_err(),
        wrong
    );
    // The hash of other bytes (one more byte than was sent).
    let mut more = sent.clone();
    more.push(b'\n');
    assert_eq!(
        check_e(&sent, &with(ns::SHA512, &sha512_b64(&more))).unwrap_err(),
        wrong
    );
    // An algorithm not taken.
    let sha1 = b64(&openssl::sha::sha1(&sent));
    assert_eq!(
        check_e(&sent, &with("http://www.w3.org/2000/09/xmldsig#sha1", &sha1)).unwrap_err(),
        CheckError::RequestHash(
            "algorithm \"http://www.w3.org/2000/09/xmldsig#sha1\" is not SHA-256, SHA-384 or SHA-512".into()
        )
    );
    assert!(matches!(
        check_e(&sent, &with("", &sha1)),
        Err(CheckError::RequestHash(_))
    ));
    // Twice.
    let twice = good.replace(
        "</SOAP-ENV:Header>",
        &format!(
            "<xrd:requestHash algorithmId=\"{}\">{}</xrd:requestHash></SOAP-ENV:Header>",
            ns::SHA512,
            sha512_b64(&sent)
        ),
    );
    assert_eq!(
        check_e(&sent, &twice).unwrap_err(),
        CheckError::RequestHash("given twice".into())
    );
    // None: taken (the hash is optional in an answer).
    let s = good.find("<xrd:requestHash").unwrap();
    let e = good.find("</xrd:requestHash>").unwrap() + "</xrd:requestHash>".len();
    assert!(matches!(
        check_e(&sent, &format!("{}{}", &good[..s], &good[e..])),
        Ok(Answer::Document { .. })
    ));
}

#[test]
fn the_wrapper_must_be_the_service_code_and_response() {
    let sent = vector("pr-mess-E1-request.xml");
    let good = e2_for(&sent);
    let refused = |answer: &str, says: &str| match check_e(&sent, answer) {
        Err(CheckError::Wrapper(e)) => assert!(e.contains(says), "{e}"),
        other => panic!("{other:?}: not refused for its wrapper ({says})"),
    };
    refused(
        &good.replace("ns1:exampleServiceResponse>", "ns1:exampleServiceAnswer>"),
        "{http://producer.x-road.eu}exampleServiceAnswer where {http://producer.x-road.eu}exampleServiceResponse was expected",
    );
    refused(
        &good.replace(
            "<ns1:exampleServiceResponse>",
            "<ns1:exampleServiceResponse xmlns:ns1=\"http://other.x-road.eu\">",
        ),
        "{http://other.x-road.eu}exampleServiceResponse where",
    );
    refused(
        &good.replace(
            "<SOAP-ENV:Body>",
            "<SOAP-ENV:Body><ns1:exampleServiceResponse><x/></ns1:exampleServiceResponse>",
        ),
        "one exampleServiceResponse element, found 2",
    );
    refused(
        &good.replace("<exampleOutput>bar</exampleOutput>", "<!-- none -->text"),
        "exampleServiceResponse holds no document",
    );
    let s = good.find("<ns1:exampleServiceResponse>").unwrap();
    let e = good.find("</SOAP-ENV:Body>").unwrap();
    refused(&format!("{}{}", &good[..s], &good[e..]), "found 0");
    // The rest of the wrapper goes with the message: a second child is
    // not the document.
    let two = good.replace(
        "<exampleOutput>bar</exampleOutput>",
        "<exampleOutput>bar</exampleOutput><more>x</more>",
    );
    let Ok(Answer::Document { local, .. }) = check_e(&sent, &two) else {
        panic!()
    };
    assert_eq!(local, "exampleOutput");
}

#[test]
fn comments_cdata_and_whitespace_are_read_as_xml_says() {
    let sent = vector("pr-mess-E1-request.xml");
    let good = e2_for(&sent)
        .replace(
            "<exampleOutput>bar</exampleOutput>",
            "<!-- c --><exampleOutput><![CDATA[b<a>]]>r</exampleOutput>",
        )
        .replace(
            "<xrd:issue>12345</xrd:issue>",
            "<xrd:issue>\n   12345  </xrd:issue><!-- note -->",
        );
    let Ok(Answer::Document { document, .. }) = check_e(&sent, &good) else {
        panic!()
    };
    assert!(String::from_utf8(document)
        .unwrap()
        .ends_with(">b&lt;a&gt;r</exampleOutput>"));
}

#[test]
fn faults_of_both_kinds_and_the_annex_d_examples_are_read() {
    let sent = vector("pr-mess-E1-request.xml");
    assert_eq!(
        check_e(&sent, &text("pr-mess-D1-fault-technical.xml")).unwrap(),
        Answer::XRoadFault {
            code: "Server.ClientProxy.ServiceFailed.MissingBody".into(),
            text: "Malformed SOAP message: body missing".into()
        }
    );
    // D.2, a business error inside the body: the service's document, as
    // any other (its example answers a service "test" in a wrapper of
    // "exampleService"; sent here as that).
    let d2 = text("pr-mess-D2-fault-non-technical.xml");
    let sent_test = String::from_utf8(sent.clone()).unwrap().replace(
        "<id:serviceCode>exampleService</id:serviceCode>",
        "<id:serviceCode>test</id:serviceCode>",
    );
    let s = d2.find("<xrd:requestHash").unwrap();
    let e = d2.find("</xrd:requestHash>").unwrap() + "</xrd:requestHash>".len();
    let d2 = format!(
        "{}<xrd:requestHash algorithmId=\"{}\">{}</xrd:requestHash>{}",
        &d2[..s],
        ns::SHA512,
        sha512_b64(sent_test.as_bytes()),
        &d2[e..]
    );
    let Answer::Document { local, .. } = check_e(sent_test.as_bytes(), &d2).unwrap() else {
        panic!()
    };
    assert_eq!(local, "exampleOutput");
    // The snake form, a prefixed code, and the service's own jum: fault.
    let fault = |code: &str, extra: &str| {
        format!(
            "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\" xmlns:jum=\"{}\"><SOAP-ENV:Body><SOAP-ENV:Fault><faultcode>{code}</faultcode><faultstring>why</faultstring>{extra}</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>",
            ns::SOAP,
            ns::JUM
        )
    };
    assert_eq!(
        check_e(&sent, &fault("server.serverproxy.access_denied", "")).unwrap(),
        Answer::XRoadFault {
            code: "server.serverproxy.access_denied".into(),
            text: "why".into()
        }
    );
    assert_eq!(
        check_e(
            &sent,
            &fault("SOAP-ENV:Server.ServerProxy.AccessDenied", "")
        )
        .unwrap(),
        Answer::XRoadFault {
            code: "Server.ServerProxy.AccessDenied".into(),
            text: "why".into()
        }
    );
    assert_eq!(
        check_e(
            &sent,
            &fault("jum:Maintenance", "<detail><jum:FaultDetail><jum:message>m</jum:message><jum:retryAfter>PT60S</jum:retryAfter></jum:FaultDetail></detail>")
        )
        .unwrap(),
        Answer::Fault {
            code: FaultCode::Maintenance,
            text: "why".into(),
            retry_after: Some(std::time::Duration::from_secs(60))
        }
    );
}

#[test]
fn accepted_in_the_wrapper_is_a_ticket() {
    let sent = vector("pr-mess-E1-request.xml");
    let a = e2_for(&sent).replace(
        "<exampleOutput>bar</exampleOutput>",
        &format!("<jum:Accepted xmlns:jum=\"{}\"><jum:ticket>T-1</jum:ticket><jum:retryAfter>PT90S</jum:retryAfter></jum:Accepted>", ns::JUM),
    );
    assert_eq!(
        check_e(&sent, &a).unwrap(),
        Answer::Accepted {
            ticket: "T-1".into(),
            retry_after: std::time::Duration::from_secs(90)
        }
    );
}

#[test]
fn metaservice_answers_list_their_service_codes() {
    for (req, resp, meta, want) in [
        (
            "pr-meta-C2-listMethods-request.xml",
            "pr-meta-C3-listMethods-response.xml",
            Meta::ListMethods,
            vec!["allowedService", "disallowedService"],
        ),
        (
            "pr-meta-C4-allowedMethods-request.xml",
            "pr-meta-C5-allowedMethods-response.xml",
            Meta::AllowedMethods,
            vec!["allowedService"],
        ),
    ] {
        let sent = vector(req);
        let r = text(resp);
        let s = r.find("<xroad:requestHash").unwrap();
        let e = r.find("</xroad:requestHash>").unwrap() + "</xroad:requestHash>".len();
        let r = format!(
            "{}<xroad:requestHash algorithmId=\"{}\">{}</xroad:requestHash>{}",
            &r[..s],
            ns::SHA512,
            sha512_b64(&sent),
            &r[e..]
        );
        assert_eq!(
            methods_of(&sent, r.as_bytes(), meta, &Limits::default()).unwrap(),
            want
        );
        // The spec's own hash is not over its example request's bytes.
        assert!(matches!(
            methods_of(&sent, &vector(resp), meta, &Limits::default()),
            Err(CheckError::RequestHash(_))
        ));
    }
    // Ours: the same shape as C.2.
    let m = crate::config::Member {
        instance: "RS".into(),
        class: "GOV".into(),
        code: "1".into(),
        subsystem: None,
    };
    let x = meta_request(Meta::AllowedMethods, &m, &m, "i", "");
    assert!(x.contains("<xrd:client id:objectType=\"MEMBER\">"));
    assert!(x.contains("<id:serviceCode>allowedMethods</id:serviceCode></xrd:service><xrd:id>i</xrd:id><xrd:protocolVersion>4.0</xrd:protocolVersion></SOAP-ENV:Header><SOAP-ENV:Body><xrd:allowedMethods/></SOAP-ENV:Body>"));
}

// ---- what came over HTTP ----

fn lim() -> ReceiveLimits {
    ReceiveLimits::default()
}

#[test]
fn swa_from_the_spec_is_split_with_the_soap_part_byte_for_byte() {
    let ct = text("pr-mess-F-swa.content-type");
    let body = vector("pr-mess-F-swa.body");
    let r = receive(Some(ct.trim()), &body, &lim()).unwrap();
    let start = memchr::memmem::find(&body, b"<?xml").unwrap();
    let end = memchr::memmem::find(&body, b"\r\n--MIME_boundary\r\n").unwrap();
    assert_eq!(r.raw, &body[start..end]);
    assert_eq!(r.xml, r.raw);
    assert!(!r.mtom);
    assert_eq!(
        r.attachments,
        vec![Attachment {
            content_id: "data.bin".into(),
            content_type: "application/octet-stream; name=data.bin".into(),
            name: Some("data.bin".into()),
            bytes: b"This is attachment.\r\n".to_vec(),
        }]
    );
}

#[test]
fn mtom_from_the_spec_has_its_include_resolved_and_the_attachment_kept() {
    let ct = text("pr-mess-G-mtom.content-type");
    let body = vector("pr-mess-G-mtom.body");
    let r = receive(Some(ct.trim()), &body, &lim()).unwrap();
    assert!(r.mtom);
    let raw = String::from_utf8(r.raw.clone()).unwrap();
    assert!(raw.contains("<inc:Include href=\"cid:data.bin\""));
    let xml = String::from_utf8(r.xml.clone()).unwrap();
    assert!(!xml.contains("Include"), "{xml}");
    assert!(xml.contains("<exampleAttachment>\r\n                VGhpcyBpcyBhdHRhY2htZW50Lg0K\r\n            </exampleAttachment>"), "{xml}");
    assert_eq!(r.attachments.len(), 1);
    assert_eq!(r.attachments[0].bytes, b"This is attachment.\r\n");
    // An include naming no part.
    let bad = String::from_utf8(body)
        .unwrap()
        .replace("cid:data.bin", "cid:nothing%40here");
    assert_eq!(
        receive(Some(ct.trim()), bad.as_bytes(), &lim()).unwrap_err(),
        XRoadError::Mtom("xop:Include names cid:nothing@here, which no part has".into())
    );
}

fn multipart(parts: &[(&str, &[u8])], close: bool) -> Vec<u8> {
    let mut b = Vec::new();
    for (h, body) in parts {
        b.extend_from_slice(b"--B\r\n");
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(b"\r\n\r\n");
        b.extend_from_slice(body);
        b.extend_from_slice(b"\r\n");
    }
    if close {
        b.extend_from_slice(b"--B--\r\n");
    }
    b
}

const SOAP_PART: &[u8] = b"<?xml version=\"1.0\"?><a>soap</a>";

#[test]
fn attachment_transfer_encodings_are_undone() {
    let payload: Vec<u8> = (0u8..=255).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&payload);
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c) + "\r\n")
        .collect();
    let qp = quoted_printable::encode(&payload);
    for (enc, body) in [
        ("base64", wrapped.as_bytes().to_vec()),
        ("binary", payload.clone()),
        ("8bit", payload.clone()),
        ("quoted-printable", qp),
    ] {
        let m = multipart(
            &[
                ("Content-Type: text/xml; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit", SOAP_PART),
                (&format!("Content-Type: image/png\r\nContent-ID: <p1>\r\nContent-Transfer-Encoding: {enc}"), &body),
            ],
            true,
        );
        let r = receive(
            Some("multipart/related; type=\"text/xml\"; boundary=B"),
            &m,
            &lim(),
        )
        .unwrap();
        assert_eq!(r.raw, SOAP_PART);
        assert_eq!(r.attachments[0].bytes, payload, "{enc}");
        assert_eq!(r.attachments[0].content_type, "image/png");
    }
    let m = multipart(
        &[
            ("Content-Type: text/xml", SOAP_PART),
            ("Content-Transfer-Encoding: 7bit", b"plain text"),
        ],
        true,
    );
    let r = receive(Some("multipart/related; boundary=B"), &m, &lim()).unwrap();
    assert_eq!(r.attachments[0].bytes, b"plain text");
    assert_eq!(r.attachments[0].content_type, "application/octet-stream");
    let m = multipart(
        &[
            ("Content-Type: text/xml", SOAP_PART),
            ("Content-Transfer-Encoding: x-uue", b"x"),
        ],
        true,
    );
    assert_eq!(
        receive(Some("multipart/related; boundary=B"), &m, &lim()).unwrap_err(),
        XRoadError::Multipart("part 2: unknown Content-Transfer-Encoding \"x-uue\"".into())
    );
}

#[test]
fn the_soap_part_is_the_first_or_the_one_start_names() {
    let att: &[u8] = b"\x00\x01";
    let m = multipart(
        &[
            (
                "Content-Type: application/octet-stream\r\nContent-ID: <a>",
                att,
            ),
            ("Content-Type: text/xml\r\nContent-ID: <root>", SOAP_PART),
        ],
        true,
    );
    let r = receive(
        Some("multipart/related; start=\"<root>\"; boundary=B"),
        &m,
        &lim(),
    )
    .unwrap();
    assert_eq!(r.raw, SOAP_PART);
    assert_eq!(r.attachments[0].bytes, att);
    assert_eq!(
        receive(Some("multipart/related; boundary=B"), &m, &lim()).unwrap_err(),
        XRoadError::Multipart("the first part is application/octet-stream, not the SOAP message (text/xml or application/xop+xml); the SOAP part must come first or be named by start".into())
    );
    assert_eq!(
        receive(
            Some("multipart/related; start=\"<nope>\"; boundary=B"),
            &m,
            &lim()
        )
        .unwrap_err(),
        XRoadError::Multipart("no part has the Content-ID \"<nope>\" that start names".into())
    );
}

#[test]
fn broken_multiparts_are_refused_with_a_precise_message() {
    let good = multipart(
        &[
            ("Content-Type: text/xml", SOAP_PART),
            ("Content-ID: <x>", b"x"),
        ],
        true,
    );
    let refused = |ct: &str, body: &[u8], says: &str| {
        let e = receive(Some(ct), body, &lim()).unwrap_err().to_string();
        assert!(e.contains(says), "{e} (expected {says})");
    };
    assert!(receive(Some("multipart/related; boundary=B"), &good, &lim()).is_ok());
    refused(
        "multipart/related",
        &good,
        "the Content-Type names no boundary",
    );
    refused(
        "multipart/related; boundary=C",
        &good,
        "the boundary \"C\" is not in the body",
    );
    refused(
        "multipart/related; boundary=B; boundary=C",
        &good,
        "the Content-Type names 2 boundaries",
    );
    let open = multipart(
        &[
            ("Content-Type: text/xml", SOAP_PART),
            ("Content-ID: <x>", b"x"),
        ],
        false,
    );
    refused(
        "multipart/related; boundary=B",
        &open,
        "unterminated: part 2 has no closing boundary",
    );
    refused(
        "multipart/related; boundary=B",
        b"--B\r\nContent-Type: text/xml",
        "unterminated: part 1 ends in its headers",
    );
    refused(
        "multipart/related; boundary=B",
        b"--B--\r\n",
        "no part before the closing boundary",
    );
    let many: Vec<(&str, &[u8])> = std::iter::once(("Content-Type: text/xml", SOAP_PART))
        .chain(std::iter::repeat_n(("Content-ID: <x>", &b"x"[..]), 64))
        .collect();
    refused(
        "multipart/related; boundary=B",
        &multipart(&many, true),
        "more than 64 parts",
    );
    let long = format!("Content-Type: text/xml\r\nX-Pad: {}", "a".repeat(20_000));
    refused(
        "multipart/related; boundary=B",
        &multipart(&[(&long, SOAP_PART)], true),
        "part 1: headers longer than 16384 bytes",
    );
    refused(
        "multipart/related; boundary=B",
        &multipart(&[("Content-Type text/xml", SOAP_PART)], true),
        "a header line without a colon",
    );
    refused(
        "application/json",
        b"{}",
        "unsupported Content-Type \"application/json\"",
    );
    refused(
        "text/xml; charset=x-klingon",
        SOAP_PART,
        "unknown charset \"x-klingon\"",
    );
}

#[test]
fn charsets_byte_order_marks_and_declarations() {
    // ISO-8859-1, its declaration saying so: read right, declaration made UTF-8.
    let latin1: Vec<u8> =
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>M\xfcller Zo\xeb \xa9</a>".to_vec();
    let r = receive(Some("text/xml; charset=ISO-8859-1"), &latin1, &lim()).unwrap();
    assert_eq!(r.raw, latin1);
    assert_eq!(
        String::from_utf8(r.xml.clone()).unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>Müller Zoë ©</a>"
    );
    let d = crate::xml::Document::parse(&r.xml, &Limits::default()).unwrap();
    assert_eq!(d.text(d.root()), "Müller Zoë ©");
    // No charset: the declaration says.
    let r = receive(Some("text/xml"), &latin1, &lim()).unwrap();
    assert!(String::from_utf8(r.xml).unwrap().contains("Müller"));
    // windows-1250 for Serbian Latin.
    let (cp1250, _, _) =
        encoding_rs::WINDOWS_1250.encode("<a>Bečej, Čačak, Šid, Žabalj, Đurđevo</a>");
    assert!(cp1250.len() < "<a>Bečej, Čačak, Šid, Žabalj, Đurđevo</a>".len());
    let r = receive(Some("text/xml; charset=windows-1250"), &cp1250, &lim()).unwrap();
    assert_eq!(
        String::from_utf8(r.xml).unwrap(),
        "<a>Bečej, Čačak, Šid, Žabalj, Đurđevo</a>"
    );
    // A UTF-8 byte order mark: dropped from what is parsed, kept in raw.
    let bom = [b"\xEF\xBB\xBF".as_slice(), "<a>č</a>".as_bytes()].concat();
    let r = receive(Some("text/xml; charset=UTF-8"), &bom, &lim()).unwrap();
    assert_eq!(r.raw, bom);
    assert_eq!(r.xml, "<a>č</a>".as_bytes());
    // Bytes that are not UTF-8 under UTF-8.
    assert_eq!(
        receive(Some("text/xml; charset=utf-8"), &latin1, &lim()).unwrap_err(),
        XRoadError::Undecodable("UTF-8".into())
    );
    // The SOAP part's own charset in a multipart.
    let m = multipart(
        &[("Content-Type: text/xml; charset=ISO-8859-1", b"<a>\xfc</a>")],
        true,
    );
    let r = receive(Some("multipart/related; boundary=B"), &m, &lim()).unwrap();
    assert_eq!(r.xml, "<a>ü</a>".as_bytes());
    assert_eq!(r.raw, b"<a>\xfc</a>");
}

#[test]
fn a_kept_answer_reads_again_with_its_document() {
    let latin1: Vec<u8> =
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><S:Envelope xmlns:S=\"http://schemas.xmlsoap.org/soap/envelope/\"><S:Body><w:xResponse xmlns:w=\"urn:w\"><w:doc>M\xfcller</w:doc><w:more/></w:xResponse></S:Body></S:Envelope>"
            .to_vec();
    let x = readable(&latin1, None).unwrap();
    let d = crate::xml::Document::parse(&x, &Limits::default()).unwrap();
    let n = document_node(&d).unwrap();
    assert!(d.is(n, "urn:w", "doc"));
    assert_eq!(d.text(n), "Müller");
    let fault = vector("pr-mess-D1-fault-technical.xml");
    let d =
        crate::xml::Document::parse(&readable(&fault, None).unwrap(), &Limits::default()).unwrap();
    assert_eq!(document_node(&d), None);
}

proptest::proptest! {
    /// The splitter takes any mutation of a multipart body without
    /// panicking: it splits it or says why not.
    #[test]
    fn the_mime_splitter_never_panics(
        which in 0usize..2,
        edits in proptest::collection::vec((0usize..4000, proptest::prelude::any::<u8>()), 0..8),
        cut in 0usize..4000,
    ) {
        let (ct, mut body) = if which == 0 {
            (text("pr-mess-F-swa.content-type"), vector("pr-mess-F-swa.body"))
        } else {
            (text("pr-mess-G-mtom.content-type"), vector("pr-mess-G-mtom.body"))
        };
        for (i, b) in edits {
            let at = i % body.len();
            body[at] = b;
        }
        let _ = receive(Some(ct.trim()), &body, &lim());
        body.truncate(cut % (body.len() + 1));
        let _ = receive(Some(ct.trim()), &body, &lim());
    }

    /// Any Content-Type with any body: read, or refused with a reason.
    #[test]
    fn receive_never_panics_on_any_type_and_body(
        ct in "(multipart/related|text/xml|application/xop\\+xml)?(; ?[a-z-]{1,8}=(\"[^\"]{0,12}\"|[A-Za-z0-9<>@.-]{0,12})){0,4}",
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        prefix in "(--[A-Za-z0-9<>]{0,6}(\r?\n)?([A-Za-z-]{1,12}: ?[^\r\n]{0,20}\r?\n){0,3}(\r?\n)?)?",
    ) {
        let mut b = prefix.into_bytes();
        b.extend_from_slice(&body);
        let _ = receive(Some(&ct), &b, &lim());
        let _ = receive(None, &b, &lim());
    }

    /// The answer check takes any byte mutation of the spec's answer (and
    /// any well-formedness-keeping edit) without panicking.
    #[test]
    fn the_answer_check_never_panics(
        edits in proptest::collection::vec((0usize..4000, proptest::prelude::any::<u8>()), 0..4),
        tree in proptest::collection::vec(crate::xml::mutate::edit(), 0..4),
    ) {
        let sent = vector("pr-mess-E1-request.xml");
        let mut a = crate::xml::mutate::apply_all(e2_for(&sent).as_bytes(), &tree);
        let _ = check(&sent, &a, P, "exampleService", &Limits::default());
        for (i, b) in edits {
            let at = i % a.len();
            a[at] = b;
        }
        let _ = check(&sent, &a, P, "exampleService", &Limits::default());
    }
}

/// An MTOM message whose one part is named by `includes` includes: each
/// would be the part again in base64 (here 50,000 × 1.3 MB, 70 GB).
fn mtom_bomb(includes: usize) -> (String, Vec<u8>) {
    let include = "<xop:Include href=\"cid:big\"/>".repeat(includes);
    let soap = format!("<e xmlns:xop=\"http://www.w3.org/2004/08/xop/include\">{include}</e>");
    let mut b = format!(
        "--B\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"text/xml\"\r\n\r\n{soap}\r\n--B\r\nContent-ID: <big>\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    )
    .into_bytes();
    b.extend(std::iter::repeat_n(b'x', 1 << 20));
    b.extend_from_slice(b"\r\n--B--\r\n");
    (
        "multipart/related; type=\"application/xop+xml\"; boundary=B".into(),
        b,
    )
}

/// Run by [`an_mtom_bomb_is_refused_within_bounded_memory`] in a child
/// process under an address-space limit.
#[test]
#[ignore = "run under prlimit by an_mtom_bomb_is_refused_within_bounded_memory"]
fn mtom_bomb_child() {
    let includes = match std::env::var("JUMGW_TEST_MTOM").as_deref() {
        Ok("bomb") => 50_000,
        _ => 3,
    };
    let (ct, body) = mtom_bomb(includes);
    let limits = ReceiveLimits {
        xml: Limits {
            max_size: 10 << 20,
            max_text_len: 10 << 20,
            ..Limits::default()
        },
        max_resolved: (10 << 20) * 4 / 3 + 4096,
        ..ReceiveLimits::default()
    };
    match receive(Some(&ct), &body, &limits) {
        Ok(r) => println!("RESOLVED {}", r.xml.len()),
        Err(e) => println!("REFUSED {e}"),
    }
}

#[test]
fn an_mtom_bomb_is_refused_within_bounded_memory() {
    let run = |mode: &str| {
        let out = std::process::Command::new("prlimit")
            .arg(format!("--as={}", 256u64 << 20))
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "protocol::xroad::tests::mtom_bomb_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("JUMGW_TEST_MTOM", mode)
            .output()
            .unwrap();
        let so = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{mode}: {so}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        so
    };
    // The genuine case resolves within the limit ...
    let ok = run("genuine");
    assert!(
        ok.contains(&format!("RESOLVED {}", 3 * 1_398_104 + 57)),
        "{ok}"
    );
    // ... the bomb is refused, counted before anything is made.
    let bomb = run("bomb");
    assert!(
        bomb.contains(&format!(
            "REFUSED MTOM: the message with its xop:Include parts resolved is larger than {} bytes",
            (10 << 20) * 4 / 3 + 4096
        )),
        "{bomb}"
    );
}
