//! Documents (metadata, a JSON projection, the signed XML byte for byte,
//! the attachments an X-Road answer brought) and the service catalogue.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::requests::{attachments_out, visible, AttachmentOut};
use super::{ApiError, AppState, Client};
use crate::store::RequestRecord;

/// A visible request that has a document, and the document in clear.
async fn document_of(
    st: &AppState,
    who: &Client,
    id: &str,
) -> Result<(RequestRecord, Vec<u8>), ApiError> {
    let rec = st.store.get(id).await?;
    let rec = match rec {
        Some(r) if visible(who, &r) && r.document_id.is_some() => r,
        _ => return Err(ApiError::NotFound(format!("no document {id}"))),
    };
    let sealed = st
        .store
        .document(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no document {id}")))?;
    let plain = st.cipher.open(id, &sealed).map_err(ApiError::internal)?;
    // No personal data leaves without its trace in the audit trail.
    st.store
        .audit_append(vec![crate::audit::about(
            &st.audit_key,
            &rec,
            &who.name,
            "document.read",
            "read",
        )])
        .await?;
    Ok((rec, plain))
}

/// A generic JSON view of an element: text, or an object of children
/// (repeated names become arrays), attributes as `@name`.
fn project(doc: &crate::xml::Document, node: crate::xml::dom::NodeId) -> serde_json::Value {
    let Some(el) = doc.element(node) else {
        return serde_json::Value::Null;
    };
    let kids: Vec<_> = doc.child_elements(node).collect();
    if kids.is_empty() && el.attrs.is_empty() {
        return serde_json::Value::String(doc.text(node).trim().to_owned());
    }
    let mut m = serde_json::Map::new();
    for a in &el.attrs {
        m.insert(
            format!("@{}", a.local),
            serde_json::Value::String(a.value.clone()),
        );
    }
    for k in kids {
        let name = doc.element(k).map(|e| e.local.clone()).unwrap_or_default();
        let v = project(doc, k);
        match m.get_mut(&name) {
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(prev) => {
                let p = prev.take();
                *prev = serde_json::Value::Array(vec![p, v]);
            }
            None => {
                m.insert(name, v);
            }
        }
    }
    serde_json::Value::Object(m)
}

fn etag(bytes: &[u8]) -> String {
    let h: String = openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{h}\"")
}

#[utoipa::path(
    get, path = "/api/v1/documents/{id}", tag = "documents",
    summary = "A document's metadata, signer and a JSON projection of its payload",
    params(("id" = String, Path, description = "Document id (the id of the request that fetched it)")),
    responses((status = 200, body = DocumentOut), super::problem::ReadErrors),
    security(("bearer" = []))
)]
pub async fn get_document(
    State(st): State<AppState>,
    who: Client,
    Path(id): Path<String>,
) -> Result<Json<DocumentOut>, ApiError> {
    let (rec, plain) = document_of(&st, &who, &id).await?;
    let x_road = st
        .config
        .registries
        .get(rec.registry.as_str())
        .is_some_and(|r| r.protocol == crate::config::RegistryProtocol::XRoad)
        || rec.signed_document.is_some();
    let (doc, payload) = if x_road {
        // The SOAP message as the security server sent it (in its own
        // charset, perhaps): the payload is the wrapper's first element
        // child; what cannot be read again has no projection.
        let doc = crate::protocol::xroad::readable(&plain, rec.charset.as_deref())
            .ok()
            .and_then(|x| crate::xml::Document::parse(&x, &crate::xml::Limits::default()).ok());
        let payload = doc
            .as_ref()
            .and_then(|d| crate::protocol::xroad::document_node(d).map(|n| project(d, n)))
            .unwrap_or(serde_json::Value::Null);
        (doc, payload)
    } else {
        let parsed = crate::xml::Document::parse(&plain, &crate::xml::Limits::default());
        let doc = parsed.map_err(ApiError::internal)?;
        let env = crate::protocol::envelope::read(&doc).map_err(ApiError::internal)?;
        let payload = match env.body {
            crate::protocol::Body::Payload { node, .. } => project(&doc, node),
            _ => serde_json::Value::Null,
        };
        (Some(doc), payload)
    };
    // The signer certificate as received in the signature.
    let cert = doc
        .as_ref()
        .and_then(|doc| {
            doc.find_all(crate::xml::dsig::DSIG_NS, "X509Certificate")
                .first()
                .map(|&n| (doc, n))
        })
        .and_then(|(doc, n)| {
            use base64::Engine;
            let clean: String = doc.text(n).chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(clean).ok()
        })
        .and_then(|der| openssl::x509::X509::from_der(&der).ok());
    let signer = cert.as_ref().map(|c| SignerOut {
        subject: crate::xml::dsig::name_to_string(c.subject_name()),
        issuer: crate::xml::dsig::name_to_string(c.issuer_name()),
        not_before: c.not_before().to_string(),
        not_after: c.not_after().to_string(),
    });
    let attachments = attachments_out(&id, &rec.attachments);
    Ok(Json(DocumentOut {
        id,
        request_id: rec.id.into(),
        case: rec.case.into(),
        service: rec.service.into(),
        registry: rec.registry.into(),
        fetched_ms: rec.attempts.last().map(|a| a.at_ms),
        size: plain.len(),
        etag: etag(&plain),
        // Verified on receipt (signature, chain, requestHash, schema):
        // an unverified answer is never stored as a document. Over X-Road
        // the security servers sign; we checked what a client's security
        // server checks, and more.
        verification: if x_road {
            "verified on receipt: headers copied back, requestHash, schema (signed by the X-Road security servers)".into()
        } else {
            "verified on receipt".into()
        },
        signer,
        revocation: rec.revocation.map(|r| RevocationOut {
            status: r.status.name().to_owned(),
            method: r.method.map(|m| m.name().to_owned()),
            checked_ms: r.checked_ms,
            this_update_ms: r.this_update_ms,
            next_update_ms: r.next_update_ms,
            crl_number: r.crl_number,
            crl_url: r.crl_url,
            ocsp_response: r.ocsp_response,
            reason: r.reason,
            crl_sha256: r.crl_sha256,
        }),
        timestamp: rec.stamp.map(|s| StampOut {
            state: s.state.name().to_owned(),
            tries: s.tries,
            next_ms: s.next_ms,
            time_ms: s.time_ms,
            time: s.time_ms.map(crate::time::rfc3339_secs),
            tsa: s.tsa,
            serial: s.serial,
            token: s.token,
            reason: s.reason,
        }),
        attachments,
        payload,
    }))
}

/// The type an attachment is served with: its own when it is a valid MIME
/// type (RFC 2045 tokens, parameters allowed), else
/// `application/octet-stream`: the registry's header is outside input.
pub fn served_type(declared: &str) -> HeaderValue {
    const FALLBACK: HeaderValue = HeaderValue::from_static("application/octet-stream");
    match declared.trim().parse::<mime::Mime>() {
        Ok(m) => HeaderValue::from_str(m.as_ref()).unwrap_or(FALLBACK),
        Err(_) => FALLBACK,
    }
}

/// The file name an attachment is offered under: the last part of the
/// registry's name (no folders), only letters, digits, `.`, `-`, `_` and
/// `+` of ASCII (others become `_`), no leading dot, at most 100
/// characters; `attachment-{n}` when nothing is left.
pub fn served_name(name: Option<&str>, n: usize) -> String {
    let last = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let clean = clean.trim_start_matches('.');
    if clean.chars().all(|c| c == '_') {
        format!("attachment-{n}")
    } else {
        clean.to_owned()
    }
}

#[utoipa::path(
    get, path = "/api/v1/documents/{id}/attachments/{n}", tag = "documents",
    summary = "One attachment of an X-Road document, byte for byte",
    params(
        ("id" = String, Path, description = "Document id (the id of the request that fetched it)"),
        ("n" = usize, Path, description = "The attachment's number, from 1"),
    ),
    responses(
        (status = 200, description = "The attachment, with its content type (application/octet-stream when the registry's is not a valid MIME type), offered as a download",
         content_type = "application/octet-stream", body = Vec<u8>,
         headers(
             ("Content-Disposition" = String, description = "attachment; filename=\"...\" (the registry's name, made safe)"),
             ("X-Content-Type-Options" = String, description = "nosniff"),
             ("ETag" = String, description = "SHA-256 of the bytes"),
         ),
         example = "%PDF-1.7 …"),
        super::problem::ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_attachment(
    State(st): State<AppState>,
    who: Client,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let absent = || ApiError::NotFound(format!("no attachment {n} of document {id}"));
    let rec = match st.store.get(&id).await? {
        Some(r) if visible(&who, &r) && r.document_id.is_some() => r,
        _ => return Err(absent()),
    };
    let number: usize = n.parse().map_err(|_| absent())?;
    let a = number
        .checked_sub(1)
        .and_then(|i| rec.attachments.get(i))
        .ok_or_else(absent)?;
    let sealed = st
        .store
        .document(&a.document_id)
        .await?
        .ok_or_else(absent)?;
    let plain = st
        .cipher
        .open(&a.document_id, &sealed)
        .map_err(ApiError::internal)?;
    // No personal data leaves without its trace in the audit trail.
    st.store
        .audit_append(vec![crate::audit::about(
            &st.audit_key,
            &rec,
            &who.name,
            "document.read",
            "read",
        )])
        .await?;
    let tag = etag(&plain);
    let mut r = (StatusCode::OK, plain).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, served_type(&a.content_type));
    // Never rendered by a browser as what it claims to be (an HTML
    // "attachment" would run in the API's origin): downloaded, unsniffed.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let disposition = format!(
        "attachment; filename=\"{}\"",
        served_name(a.name.as_deref(), number)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    Ok(r)
}

/// The third party's timestamp on the document's signature value (RFC
/// 3161): its token once had, or where getting it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct StampOut {
    /// `pending` (asked for by the evidence job; tried again at
    /// `next_ms` after a failure), `stamped`, or `failed` (given up after
    /// `evidence.attempts` tries, `reason` says why).
    pub state: String,
    pub tries: u32,
    pub next_ms: Option<u64>,
    /// The time the TSA vouches for, in ms and as RFC 3339.
    pub time_ms: Option<u64>,
    pub time: Option<String>,
    /// The TSA certificate's subject.
    pub tsa: Option<String>,
    /// The token's serial number, hex.
    pub serial: Option<String>,
    /// The TimeStampToken, DER in base64: `openssl ts -verify -token_in`
    /// reads it; its imprint is the SHA-256 of the decoded bytes of the
    /// document's `ds:SignatureValue`.
    pub token: Option<String>,
    pub reason: Option<String>,
}

/// How the signer's certificate stood when the document came: the OCSP
/// response (or the CRL) that confirmed it, or why it was not checked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevocationOut {
    /// `good` (confirmed not revoked), `unchecked` (not established;
    /// accepted by the registry's `prefer` policy, asked again later), or
    /// `revoked` (found so by a later check, after the document was taken).
    pub status: String,
    /// `ocsp` or `crl`.
    pub method: Option<String>,
    pub checked_ms: u64,
    pub this_update_ms: Option<u64>,
    pub next_update_ms: Option<u64>,
    pub crl_number: Option<String>,
    pub crl_url: Option<String>,
    /// The OCSP response, DER in base64: `openssl ocsp -respin` reads it.
    pub ocsp_response: Option<String>,
    pub reason: Option<String>,
    /// The CRL that confirmed it: the SHA-256 (hex) of its DER, kept once
    /// per CRL beside the documents and put in the case's dossier.
    pub crl_sha256: Option<String>,
}

/// The registry's signing certificate, as it came in the signature.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignerOut {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
}

/// A document's metadata and a JSON view of its payload.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C", "request_id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C",
    "case": "351-12/2026-IV", "service": "cadastre.property-sheet", "registry": "cadastre",
    "fetched_ms": 1795643792420u64, "size": 4210, "etag": "\"5f2c…\"",
    "verification": "verified on receipt",
    "signer": {"subject": "CN=cadastre signer", "issuer": "CN=JUM dev CA",
               "not_before": "Nov 25 00:00:00 2026 GMT", "not_after": "Nov 25 00:00:00 2027 GMT"},
    "payload": {"ko": "803472", "sheet": "1520"}
}))]
pub struct DocumentOut {
    /// The document id (the id of the request that fetched it).
    pub id: String,
    pub request_id: String,
    pub case: String,
    pub service: String,
    pub registry: String,
    pub fetched_ms: Option<u64>,
    /// Bytes of the signed XML.
    pub size: usize,
    /// The ETag of `/content`.
    pub etag: String,
    pub verification: String,
    pub signer: Option<SignerOut>,
    /// The revocation evidence for the signer (absent when not checked: `revocation = "off"`).
    pub revocation: Option<RevocationOut>,
    /// Its timestamp (absent when no TSA is configured).
    pub timestamp: Option<StampOut>,
    /// What came with it (X-Road: SOAP with attachments, MTOM); empty
    /// for a signed-XML document.
    pub attachments: Vec<AttachmentOut>,
    /// The payload as JSON: elements become keys (repeated ones arrays),
    /// attributes `@name`, leaves their text.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

#[utoipa::path(
    get, path = "/api/v1/documents/{id}/content", tag = "documents",
    summary = "The registry's signed XML, byte for byte",
    params(("id" = String, Path, description = "Document id (the id of the request that fetched it)"), ("If-None-Match" = Option<String>, Header, nullable = false, description = "An ETag from an earlier answer")),
    responses(
        (status = 200, description = "The signed envelope", content_type = "text/xml", body = String,
         headers(("ETag" = String, description = "SHA-256 of the bytes")),
         example = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><env:Envelope xmlns:env=\"http://schemas.xmlsoap.org/soap/envelope/\">…<ds:Signature>…</ds:Signature></env:Envelope>"),
        (status = 304, description = "Unchanged since the ETag given",
         headers(("ETag" = String, description = "SHA-256 of the bytes"))),
        super::problem::ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_document_content(
    State(st): State<AppState>,
    who: Client,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let (rec, plain) = document_of(&st, &who, &id).await?;
    let tag = etag(&plain);
    // The bytes as they came: an X-Road answer may be in another charset,
    // named by its Content-Type then (kept on the record) or by its XML
    // declaration (which a charset here would override: RFC 7303).
    let content_type = match (&rec.charset, rec.signed_document.is_some()) {
        (Some(c), _) => HeaderValue::from_str(&format!("text/xml; charset={c}"))
            .unwrap_or(HeaderValue::from_static("text/xml")),
        (None, true) => HeaderValue::from_static("text/xml"),
        (None, false) => HeaderValue::from_static("text/xml; charset=utf-8"),
    };
    let mut r = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(tag.as_str())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, plain).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, content_type);
        r
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    Ok(r)
}

#[utoipa::path(
    get, path = "/api/v1/services", tag = "documents",
    summary = "The service catalogue, each registry's current state, and the named procedures",
    responses((status = 200, body = ServicesOut), super::problem::ReadErrors),
    security(("bearer" = []))
)]
pub async fn list_services(State(st): State<AppState>, _who: Client) -> Json<ServicesOut> {
    let services = st
        .services
        .iter()
        .map(|(id, s)| ServiceOut {
            id: id.clone(),
            title: s.title.clone(),
            registry: s.registry.clone(),
            subjects: s.subjects.clone(),
            registry_state: st.dispatcher.gates.get(&s.registry).map(|g| g.status()),
        })
        .collect();
    let procedures = st
        .procedures
        .iter()
        .map(|(id, p)| ProcedureOut {
            id: id.clone(),
            title: p.title.clone(),
            services: p.services.clone(),
        })
        .collect();
    Json(ServicesOut {
        services,
        procedures,
    })
}

/// One service of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceOut {
    pub id: String,
    pub title: String,
    pub registry: String,
    /// Subject kinds it takes: jmbg, pib, mb, ko+sheet, ko+parcel, ko+jmbg, ko+mb.
    pub subjects: Vec<String>,
    pub registry_state: Option<crate::dispatch::GateStatus>,
}

/// A named procedure: what a kind of case needs, for bundles.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcedureOut {
    pub id: String,
    pub title: String,
    pub services: Vec<String>,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "services": [{"id": "cadastre.property-sheet", "title": "Property sheet (list nepokretnosti)",
                  "registry": "cadastre", "subjects": ["ko+sheet", "ko+jmbg", "ko+mb"],
                  "registry_state": {"registry": "cadastre", "breaker": "closed", "paused": false,
                                     "in_maintenance": false, "in_flight": 0}}],
    "procedures": [{"id": "building-permit", "title": "Building permit (građevinska dozvola)",
                    "services": ["cadastre.property-sheet", "tax.property-tax-status", "civil.citizenship-certificate"]}]
}))]
pub struct ServicesOut {
    pub services: Vec<ServiceOut>,
    pub procedures: Vec<ProcedureOut>,
}

/// Documents and the service catalogue.
pub fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/api/v1/documents/{id}", get(get_document))
        .route("/api/v1/documents/{id}/content", get(get_document_content))
        .route(
            "/api/v1/documents/{id}/attachments/{n}",
            get(get_attachment),
        )
        .route("/api/v1/services", get(list_services))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_and_types_are_made_safe() {
        assert_eq!(served_name(Some("../../etc/passwd"), 1), "passwd");
        assert_eq!(served_name(Some("..\\..\\boot.ini"), 1), "boot.ini");
        assert_eq!(served_name(Some("plan \"1\".pdf"), 2), "plan__1_.pdf");
        assert_eq!(served_name(Some(".htaccess"), 3), "htaccess");
        assert_eq!(served_name(Some("../"), 4), "attachment-4");
        assert_eq!(served_name(Some("план.pdf"), 5), "____.pdf");
        assert_eq!(served_name(None, 6), "attachment-6");
        assert_eq!(served_type("application/pdf"), "application/pdf");
        assert_eq!(served_type("text/html"), "text/html");
        // As the mime crate writes it back.
        assert_eq!(
            served_type("text/plain; charset=UTF-8"),
            "text/plain; charset=utf-8"
        );
        for bad in [
            "",
            "pdf",
            "text/html\r\nSet-Cookie: a=b",
            "a/b/c",
            "te xt/html",
        ] {
            assert_eq!(served_type(bad), "application/octet-stream", "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever a registry names or types an attachment, what is
        /// served is a quoted file name of safe ASCII and a header value
        /// that is a MIME type.
        #[test]
        fn served_names_and_types_are_safe_for_any_input(name in proptest::option::of(".{0,300}"), ty in ".{0,200}", n in 1usize..1000) {
            let s = served_name(name.as_deref(), n);
            proptest::prop_assert!(!s.is_empty() && s.len() <= 100, "{s:?}");
            proptest::prop_assert!(!s.starts_with('.'), "{s:?}");
            proptest::prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')), "{s:?}");
            let t = served_type(&ty);
            let t = t.to_str().map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert!(t.parse::<mime::Mime>().is_ok(), "{t:?}");
            proptest::prop_assert!(!t.contains(['\r', '\n']), "{t:?}");
        }
    }
}
