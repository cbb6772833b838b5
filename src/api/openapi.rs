//! The OpenAPI 3.1 description served at `/openapi.json`, generated from
//! the handlers' annotations and the request and response types, so it
//! cannot drift from the code. The error responses every operation shares
//! are declared with the problems themselves ([`super::problem::ReadErrors`],
//! [`super::problem::WriteErrors`]).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{documents, problem, requests};

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
