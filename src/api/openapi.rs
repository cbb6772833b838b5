//! The OpenAPI 3.1 description served at `/openapi.json`, generated from
//! the handlers' annotations and the request and response types, so it
//! cannot drift from the code. The error responses every operation shares
//! are declared once here ([`ReadErrors`], [`WriteErrors`]).

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::{documents, problem, requests};

fn problem_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn responses(list: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(code, what)| (code.to_string(), problem_response(what)))
        .collect()
}

const AUTH: (&str, &str) = ("401", "Missing or unknown bearer token");
const INTERNAL: (&str, &str) = ("500", "Internal error (details in the gateway's log)");

/// Errors of a read: authentication, not found.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            AUTH,
            ("404", "No such resource, or not this client's"),
            INTERNAL,
        ])
    }
}

/// Errors of an operator's call: as a read, and 403 for a non-admin token.
pub struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut r = ReadErrors::responses();
        r.extend(responses(&[("403", "Not an admin token")]));
        r
    }
}

/// Errors of a POST that files requests.
pub struct WriteErrors;

impl IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        responses(&[
            (
                "400",
                "The body is not JSON of this operation's shape (unknown field, wrong type)",
            ),
            AUTH,
            ("403", "The client may not request this service"),
            ("409", "The Idempotency-Key was used with another body"),
            ("413", "The body is larger than gateway.max_request_bytes"),
            ("415", "The body is not application/json"),
            (
                "422",
                "Fields are invalid; `errors` names each by JSON pointer",
            ),
            ("429", "Over the client's rate; see Retry-After"),
            INTERNAL,
            (
                "503",
                "The store cannot take requests now (closing, or its disk or server failing for a moment); try again",
            ),
            (
                "507",
                "The gateway's disk is full: nothing is stored until an operator makes room (`insufficient-storage`)",
            ),
        ])
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A client token from the gateway's configuration (stored there as its SHA-256)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jum-gateway back-office API",
        description = "Files requests for data from the state registries (cadastre, civil registry, tax administration) on behalf of a case, and hands back the registries' signed documents. Every error is RFC 9457 application/problem+json with a stable `type`. Documents reach a client as it is configured: case folder, signed webhooks (Standard Webhooks: events request.delivered, request.failed, bundle.completed, request.deadline_at_risk, each `{type, timestamp, data}`), or pull through this API.",
        license(name = "EUPL-1.2")
    ),
    paths(
        requests::create,
        requests::create_bundle,
        requests::get_request,
        requests::get_case,
        requests::get_dossier,
        documents::get_document,
        documents::get_document_content,
        documents::get_attachment,
        documents::list_services,
        super::export,
        super::admin::list,
        super::admin::show,
        super::admin::retry,
        super::admin::cancel,
        super::admin::retry_dead,
        super::admin::get_stats,
        super::admin::list_registries,
        super::admin::pause,
        super::admin::resume,
        super::admin::audit_verify,
        super::admin::audit_who,
        super::healthz,
        super::metrics_text,
        super::readyz,
        super::openapi_json,
    ),
    components(schemas(problem::Problem, problem::FieldError)),
    modifiers(&Security),
    tags(
        (name = "requests", description = "File requests and follow them"),
        (name = "documents", description = "The registries' signed documents and the catalogue"),
        (name = "operations", description = "Health, readiness, backups"),
        (name = "administration", description = "The operators' console: queue, registries, audit (admin tokens)"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: with the `X_utc` twin of every `X_ms` time.
pub fn document_json() -> serde_json::Value {
    let mut v = serde_json::to_value(document()).unwrap_or_default();
    super::times::document(&mut v);
    v
}
