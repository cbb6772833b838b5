//! Building and reading envelopes. Writing produces the unsigned XML that
//! `xml::dsig::sign` then signs; reading works on a tree the signature was
//! verified over, so nothing outside the signed content is ever read.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ns, ProtocolError, Subject};
use crate::config::{Member, ServiceConfig};
use crate::xml::dom::{Document, NodeId};

/// The X-Road headers of one exchange, plus our legal basis and purpose.
/// A response echoes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    pub client: Member,
    /// The registry (member and subsystem).
    pub service: Member,
    pub service_code: String,
    pub service_version: String,
    /// The request id (ULID); the same on every attempt of a request.
    pub id: String,
    /// The official handling the case.
    pub user_id: String,
    /// The case number, e.g. `351-12/2026-IV`.
    pub issue: String,
    pub legal_basis: String,
    pub purpose: String,
}

pub use crate::xml::escape as esc;

fn member_xml(out: &mut String, m: &Member) {
    let _ = write!(
        out,
        "<id:xRoadInstance>{}</id:xRoadInstance><id:memberClass>{}</id:memberClass><id:memberCode>{}</id:memberCode>",
        esc(&m.instance),
        esc(&m.class),
        esc(&m.code)
    );
    if let Some(s) = &m.subsystem {
        let _ = write!(out, "<id:subsystemCode>{}</id:subsystemCode>", esc(s));
    }
}

fn envelope(h: &Headers, request_hash: Option<&str>, body: &str) -> String {
    let mut o = String::with_capacity(1024 + body.len());
    let _ = write!(
        o,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{}\" xmlns:xrd=\"{}\" xmlns:id=\"{}\" xmlns:jum=\"{}\"><SOAP-ENV:Header>",
        ns::SOAP,
        ns::XROAD,
        ns::ID,
        ns::JUM
    );
    o.push_str(&format!(
        "<xrd:client id:objectType=\"{}\">",
        if h.client.subsystem.is_some() {
            "SUBSYSTEM"
        } else {
            "MEMBER"
        }
    ));
    member_xml(&mut o, &h.client);
    o.push_str("</xrd:client><xrd:service id:objectType=\"SERVICE\">");
    member_xml(&mut o, &h.service);
    let _ = write!(
        o,
        "<id:serviceCode>{}</id:serviceCode><id:serviceVersion>{}</id:serviceVersion></xrd:service>\
<xrd:id>{}</xrd:id><xrd:userId>{}</xrd:userId><xrd:issue>{}</xrd:issue><xrd:protocolVersion>4.0</xrd:protocolVersion>",
        esc(&h.service_code),
        esc(&h.service_version),
        esc(&h.id),
        esc(&h.user_id),
        esc(&h.issue)
    );
    if let Some(rh) = request_hash {
        let _ = write!(
            o,
            "<xrd:requestHash algorithmId=\"{}\">{}</xrd:requestHash>",
            ns::SHA512,
            esc(rh)
        );
    }
    let _ = write!(
        o,
        "<jum:legalBasis>{}</jum:legalBasis><jum:purpose>{}</jum:purpose></SOAP-ENV:Header><SOAP-ENV:Body>{}</SOAP-ENV:Body></SOAP-ENV:Envelope>",
        esc(&h.legal_basis),
        esc(&h.purpose),
        body
    );
    o
}

/// A request envelope (unsigned).
pub fn request(h: &Headers, payload: &str) -> String {
    envelope(h, None, payload)
}

/// A response envelope (unsigned): the request's headers echoed, the hash
/// of the request as received, and the answer.
pub fn response(h: &Headers, request_hash: &str, body: &str) -> String {
    envelope(h, Some(request_hash), body)
}

/// The request payload of `service` for `subject`.
pub fn payload(
    service_id: &str,
    service: &ServiceConfig,
    subject: &Subject,
) -> Result<String, ProtocolError> {
    if !service.subjects.iter().any(|k| k == subject.kind()) {
        return Err(ProtocolError::SubjectKind {
            service: service_id.to_owned(),
            kind: subject.kind(),
            accepted: service.subjects.join(", "),
        });
    }
    let p = &service.prefix;
    let mut o = format!(
        "<{p}:{} xmlns:{p}=\"{}\">",
        service.request,
        esc(&service.namespace)
    );
    for (field, value) in subject.fields() {
        let name = service
            .fields
            .get(field)
            .map(String::as_str)
            .unwrap_or(field);
        let _ = write!(o, "<{p}:{name}>{}</{p}:{name}>", esc(&value));
    }
    let _ = write!(o, "</{p}:{}>", service.request);
    Ok(o)
}

/// The body of a poll for an asynchronous answer.
pub fn poll(ticket: &str) -> String {
    format!(
        "<jum:Poll><jum:ticket>{}</jum:ticket></jum:Poll>",
        esc(ticket)
    )
}

/// The body of an asynchronous acceptance.
pub fn accepted(ticket: &str, retry_after: Duration) -> String {
    format!(
        "<jum:Accepted><jum:ticket>{}</jum:ticket><jum:retryAfter>PT{}S</jum:retryAfter></jum:Accepted>",
        esc(ticket),
        retry_after.as_secs().max(1)
    )
}

/// Fault codes of the protocol (`faultcode` in the jum namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultCode {
    NotFound,
    InvalidSubject,
    NotAuthorized,
    Unavailable,
    Maintenance,
    BadSignature,
    Internal,
    /// Anything else, as `{namespace}local`.
    Other(String),
}

impl FaultCode {
    /// The code of a fault whose `faultcode` is `local` in namespace
    /// `code_ns`: one of ours in the jum namespace, else `{ns}local`.
    pub fn read(code_ns: &str, local: &str) -> FaultCode {
        if code_ns != ns::JUM {
            return FaultCode::Other(format!("{{{code_ns}}}{local}"));
        }
        match local {
            "NotFound" => FaultCode::NotFound,
            "InvalidSubject" => FaultCode::InvalidSubject,
            "NotAuthorized" => FaultCode::NotAuthorized,
            "Unavailable" => FaultCode::Unavailable,
            "Maintenance" => FaultCode::Maintenance,
            "BadSignature" => FaultCode::BadSignature,
            "Internal" => FaultCode::Internal,
            other => FaultCode::Other(format!("{{{code_ns}}}{other}")),
        }
    }

    pub fn local(&self) -> &str {
        match self {
            FaultCode::NotFound => "NotFound",
            FaultCode::InvalidSubject => "InvalidSubject",
            FaultCode::NotAuthorized => "NotAuthorized",
            FaultCode::Unavailable => "Unavailable",
            FaultCode::Maintenance => "Maintenance",
            FaultCode::BadSignature => "BadSignature",
            FaultCode::Internal => "Internal",
            FaultCode::Other(s) => s,
        }
    }
}

/// A SOAP fault body.
pub fn fault(code: &FaultCode, text: &str, retry_after: Option<Duration>) -> String {
    let mut detail = format!("<jum:FaultDetail><jum:message>{}</jum:message>", esc(text));
    if let Some(r) = retry_after {
        let _ = write!(
            detail,
            "<jum:retryAfter>PT{}S</jum:retryAfter>",
            r.as_secs().max(1)
        );
    }
    detail.push_str("</jum:FaultDetail>");
    format!(
        "<SOAP-ENV:Fault><faultcode>jum:{}</faultcode><faultstring>{}</faultstring><detail>{detail}</detail></SOAP-ENV:Fault>",
        code.local(),
        esc(text)
    )
}

/// What a body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A payload element (a request or a document).
    Payload {
        ns: String,
        local: String,
        node: NodeId,
    },
    Accepted {
        ticket: String,
        retry_after: Duration,
    },
    Poll {
        ticket: String,
    },
    Fault {
        code: FaultCode,
        text: String,
        retry_after: Option<Duration>,
    },
}

/// A read envelope.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub headers: Headers,
    pub request_hash: Option<String>,
    pub body: Body,
}

fn text_of(
    doc: &Document,
    parent: NodeId,
    ns_: &str,
    local: &'static str,
) -> Result<String, ProtocolError> {
    let n = doc
        .child(parent, ns_, local)
        .ok_or(ProtocolError::MissingHeader(local))?;
    Ok(doc.text(n).trim().to_owned())
}

fn member_of(doc: &Document, node: NodeId, what: &'static str) -> Result<Member, ProtocolError> {
    let t = |l: &'static str| {
        text_of(doc, node, ns::ID, l)
            .map_err(|_| ProtocolError::BadHeader(what, format!("id:{l} is missing")))
    };
    Ok(Member {
        instance: t("xRoadInstance")?,
        class: t("memberClass")?,
        code: t("memberCode")?,
        subsystem: doc
            .child(node, ns::ID, "subsystemCode")
            .map(|n| doc.text(n).trim().to_owned()),
    })
}

/// `PT2M`, `PT30S`, `PT1H30M`, `P1DT2H`: the xs:duration subset registries use.
pub fn parse_xs_duration(s: &str) -> Option<Duration> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let mul = units.iter().find(|(u, _)| *u == c)?.1;
                secs += num.parse::<f64>().ok()? * mul;
                num.clear();
            }
        }
        num.is_empty().then_some(())
    };
    take(date, &[('D', 86_400.0)])?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    (secs.is_finite() && secs <= 30.0 * 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// The `retryAfter` a fault of ours carries in its detail
/// (`jum:FaultDetail`), if any.
pub fn fault_retry_after(doc: &Document, fault: NodeId) -> Option<Duration> {
    doc.child(fault, "", "detail")
        .and_then(|d| doc.child(d, ns::JUM, "FaultDetail"))
        .and_then(|fd| doc.child(fd, ns::JUM, "retryAfter"))
        .and_then(|n| parse_xs_duration(&doc.text(n)))
}

/// Reads an envelope from a (verified) tree.
pub fn read(doc: &Document) -> Result<Envelope, ProtocolError> {
    let root = doc.root();
    if !doc.is(root, ns::SOAP, "Envelope") {
        let e = doc
            .element(root)
            .map(|e| format!("{{{}}}{}", e.ns, e.local))
            .unwrap_or_default();
        return Err(ProtocolError::NotEnvelope(format!("root element is {e}")));
    }
    let header = doc
        .child(root, ns::SOAP, "Header")
        .ok_or_else(|| ProtocolError::NotEnvelope("no SOAP-ENV:Header".into()))?;
    let body = doc
        .child(root, ns::SOAP, "Body")
        .ok_or_else(|| ProtocolError::NotEnvelope("no SOAP-ENV:Body".into()))?;

    let client = doc
        .child(header, ns::XROAD, "client")
        .ok_or(ProtocolError::MissingHeader("client"))?;
    let service = doc
        .child(header, ns::XROAD, "service")
        .ok_or(ProtocolError::MissingHeader("service"))?;
    let version = text_of(doc, header, ns::XROAD, "protocolVersion")?;
    if version != "4.0" {
        return Err(ProtocolError::BadHeader(
            "protocolVersion",
            format!("{version:?}, expected \"4.0\""),
        ));
    }
    let request_hash = match doc.child(header, ns::XROAD, "requestHash") {
        Some(n) => {
            let alg = doc.attr(n, "algorithmId").unwrap_or_default();
            if alg != ns::SHA512 {
                return Err(ProtocolError::BadHeader(
                    "requestHash",
                    format!("algorithm {alg:?} is not SHA-512"),
                ));
            }
            Some(doc.text(n).trim().to_owned())
        }
        None => None,
    };
    let headers = Headers {
        client: member_of(doc, client, "client")?,
        service: member_of(doc, service, "service")?,
        service_code: text_of(doc, service, ns::ID, "serviceCode")
            .map_err(|_| ProtocolError::BadHeader("service", "id:serviceCode is missing".into()))?,
        service_version: doc
            .child(service, ns::ID, "serviceVersion")
            .map(|n| doc.text(n).trim().to_owned())
            .unwrap_or_default(),
        id: text_of(doc, header, ns::XROAD, "id")?,
        user_id: text_of(doc, header, ns::XROAD, "userId")?,
        issue: text_of(doc, header, ns::XROAD, "issue")?,
        legal_basis: text_of(doc, header, ns::JUM, "legalBasis")?,
        purpose: text_of(doc, header, ns::JUM, "purpose")?,
    };

    let kids: Vec<NodeId> = doc.child_elements(body).collect();
    let [only] = kids.as_slice() else {
        return Err(ProtocolError::BodyCount(kids.len()));
    };
    let el = doc.element(*only).ok_or(ProtocolError::BodyCount(0))?;
    let body = if el.ns == ns::SOAP && el.local == "Fault" {
        let code_text = doc
            .child(*only, "", "faultcode")
            .map(|n| doc.text(n).trim().to_owned())
            .ok_or_else(|| ProtocolError::BadBody("fault", "no faultcode".into()))?;
        let (prefix, local) = code_text
            .split_once(':')
            .unwrap_or(("", code_text.as_str()));
        let code_ns = doc.lookup_prefix(*only, prefix).unwrap_or_default();
        let code = FaultCode::read(code_ns, local);
        let text = doc
            .child(*only, "", "faultstring")
            .map(|n| doc.text(n).trim().to_owned())
            .unwrap_or_default();
        let retry_after = fault_retry_after(doc, *only);
        Body::Fault {
            code,
            text,
            retry_after,
        }
    } else if el.ns == ns::JUM && el.local == "Accepted" {
        let ticket = text_of(doc, *only, ns::JUM, "ticket")
            .map_err(|_| ProtocolError::BadBody("jum:Accepted", "no ticket".into()))?;
        let ra = text_of(doc, *only, ns::JUM, "retryAfter")
            .map_err(|_| ProtocolError::BadBody("jum:Accepted", "no retryAfter".into()))?;
        let retry_after = parse_xs_duration(&ra).ok_or_else(|| {
            ProtocolError::BadBody(
                "jum:Accepted",
                format!("retryAfter {ra:?} is not a duration"),
            )
        })?;
        Body::Accepted {
            ticket,
            retry_after,
        }
    } else if el.ns == ns::JUM && el.local == "Poll" {
        let ticket = text_of(doc, *only, ns::JUM, "ticket")
            .map_err(|_| ProtocolError::BadBody("jum:Poll", "no ticket".into()))?;
        Body::Poll { ticket }
    } else {
        Body::Payload {
            ns: el.ns.clone(),
            local: el.local.clone(),
            node: *only,
        }
    };
    Ok(Envelope {
        headers,
        request_hash,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Limits;

    fn headers() -> Headers {
        Headers {
            client: Member {
                instance: "RS".into(),
                class: "GOV".into(),
                code: "08070431".into(),
                subsystem: Some("jum-becej".into()),
            },
            service: Member {
                instance: "RS".into(),
                class: "GOV".into(),
                code: "17862146".into(),
                subsystem: Some("maticne-knjige".into()),
            },
            service_code: "civil.birth-extract".into(),
            service_version: "v1".into(),
            id: ulid::Ulid::new().to_string(),
            user_id: "marija.kovac".into(),
            issue: "351-12/2026-IV".into(),
            legal_basis: "ZUP čl. 103 & <više>".into(),
            purpose: "test".into(),
        }
    }

    #[test]
    fn built_envelopes_validate_and_read_back() {
        let v = crate::xml::schema::Validator::start(
            &crate::xml::schema::default_dir(),
            Limits::default(),
        )
        .unwrap();
        let h = headers();
        let cfg: crate::config::GatewayConfig = crate::config::parse(
            include_str!("../../config/gateway.toml"),
            "g",
            std::iter::empty(),
        )
        .unwrap();
        let subjects = [
            (
                "civil.birth-extract",
                Subject::Jmbg(crate::ids::Jmbg::parse("0512981717776").unwrap()),
            ),
            (
                "cadastre.property-sheet",
                Subject::from_parts(None, None, None, Some("803472"), Some("1520"), None).unwrap(),
            ),
            (
                "cadastre.property-sheet",
                Subject::from_parts(
                    Some("0512981717776"),
                    None,
                    None,
                    Some("803472"),
                    None,
                    None,
                )
                .unwrap(),
            ),
            (
                "cadastre.parcel",
                Subject::from_parts(None, None, None, Some("803472"), None, Some("1234/5"))
                    .unwrap(),
            ),
            (
                "tax.clearance-certificate",
                Subject::from_parts(None, Some("101134702"), None, None, None, None).unwrap(),
            ),
            (
                "tax.property-tax-status",
                Subject::from_parts(Some("0512981717776"), None, None, None, None, None).unwrap(),
            ),
        ];
        for (sid, subject) in subjects {
            let p = payload(sid, &cfg.services[sid], &subject).unwrap();
            let x = request(&h, &p);
            v.validate(x.as_bytes())
                .unwrap_or_else(|e| panic!("{sid}: {e}\n{x}"));
            let doc = Document::parse(x.as_bytes(), &Limits::default()).unwrap();
            let env = read(&doc).unwrap();
            assert_eq!(env.headers, h);
            assert!(matches!(env.body, Body::Payload { .. }));
        }
        let x = response(
            &h,
            &super::super::request_hash(b"x"),
            &accepted("T-12345678", Duration::from_secs(90)),
        );
        v.validate(x.as_bytes()).unwrap();
        let env = read(&Document::parse(x.as_bytes(), &Limits::default()).unwrap()).unwrap();
        assert_eq!(
            env.body,
            Body::Accepted {
                ticket: "T-12345678".into(),
                retry_after: Duration::from_secs(90)
            }
        );
        let x = response(
            &h,
            "aGFzaA==",
            &fault(
                &FaultCode::Maintenance,
                "down",
                Some(Duration::from_secs(60)),
            ),
        );
        v.validate(x.as_bytes()).unwrap();
        let env = read(&Document::parse(x.as_bytes(), &Limits::default()).unwrap()).unwrap();
        assert_eq!(
            env.body,
            Body::Fault {
                code: FaultCode::Maintenance,
                text: "down".into(),
                retry_after: Some(Duration::from_secs(60))
            }
        );
        let x = request(&h, &poll("T-12345678"));
        v.validate(x.as_bytes()).unwrap();
    }

    #[test]
    fn a_service_refuses_a_subject_of_the_wrong_kind() {
        let cfg: crate::config::GatewayConfig = crate::config::parse(
            include_str!("../../config/gateway.toml"),
            "g",
            std::iter::empty(),
        )
        .unwrap();
        let s = Subject::from_parts(None, Some("101134702"), None, None, None, None).unwrap();
        let e = payload(
            "civil.birth-extract",
            &cfg.services["civil.birth-extract"],
            &s,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "service civil.birth-extract does not take a pib subject; it takes jmbg"
        );
    }

    /// Envelopes of every body kind: a request, a document, a fault, an
    /// accepted answer and a poll.
    fn envelopes() -> Vec<Vec<u8>> {
        let h = headers();
        vec![
            request(&h, "<civ:BirthExtractRequest xmlns:civ=\"urn:jum-gateway:civil:1\"><civ:jmbg>0512981717776</civ:jmbg></civ:BirthExtractRequest>").into_bytes(),
            include_bytes!("../../schemas/examples/response-cadastre-property-sheet.xml").to_vec(),
            response(&h, "aGFzaA==", &fault(&FaultCode::Maintenance, "down", Some(Duration::from_secs(60)))).into_bytes(),
            response(&h, "aGFzaA==", &accepted("T-12345678", Duration::from_secs(1))).into_bytes(),
            request(&h, &poll("T-12345678")).into_bytes(),
        ]
    }

    #[test]
    fn every_unmutated_envelope_reads() {
        for x in envelopes() {
            let d = Document::parse(&x, &Limits::default()).unwrap();
            read(&d).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&x)));
        }
    }

    proptest::proptest! {
        /// Envelopes from outside never panic the reader, however their
        /// structure is changed: the edits keep them well-formed, so the
        /// tree is always built and `read` always runs on it.
        #[test]
        fn reading_restructured_envelopes_never_panics(
            which in 0usize..5,
            edits in proptest::collection::vec(crate::xml::mutate::edit(), 1..6),
        ) {
            let x = crate::xml::mutate::apply_all(&envelopes()[which], &edits);
            let d = Document::parse(&x, &Limits::default());
            proptest::prop_assert!(d.is_ok(), "an edit broke well-formedness: {:?}\n{}", d.err(), String::from_utf8_lossy(&x));
            if let Ok(d) = d {
                let _ = read(&d);
            }
        }

        /// Byte-level changes of one envelope (one root): the parser
        /// refuses most; what it builds, `read` takes without panicking.
        #[test]
        fn reading_byte_mutated_envelopes_never_panics(
            which in 0usize..5,
            edits in proptest::collection::vec((0usize..4000, proptest::prelude::any::<u8>()), 1..4),
        ) {
            let mut x = envelopes()[which].clone();
            for (i, b) in edits {
                let at = i % x.len();
                x[at] = b;
            }
            if let Ok(d) = Document::parse(&x, &Limits::default()) {
                let _ = read(&d);
            }
        }
    }

    #[test]
    fn xs_durations() {
        assert_eq!(parse_xs_duration("PT2M"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_xs_duration("PT1H30M5S"),
            Some(Duration::from_secs(5405))
        );
        assert_eq!(
            parse_xs_duration("P1DT1S"),
            Some(Duration::from_secs(86_401))
        );
        assert_eq!(parse_xs_duration("2 minutes"), None);
        assert_eq!(parse_xs_duration("PT5X"), None);
    }
}
