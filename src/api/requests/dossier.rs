//! The case dossier: the ASiC-E container of a case's documents and
//! their evidence, as this client may see them, sealed.

use axum::extract::{Path, State};

use super::visible;
use crate::api::{fields, ApiError, AppState, Client};

#[utoipa::path(
    get, path = "/api/v1/cases/{case}/dossier", tag = "requests",
    summary = "The case dossier: an ASiC-E container with every document as the registry signed it, its evidence, the case's facts and audit excerpt, sealed (XAdES B-T)",
    params(("case" = String, Path, description = "The case number, URL-encoded", example = "351-12/2026-IV")),
    responses(
        (status = 200, description = "The container, a zip (`jumgw dossier verify` checks it offline)", content_type = "application/vnd.etsi.asic-e+zip", body = String,
         example = "PK\u{3}\u{4}…mimetypeapplication/vnd.etsi.asic-e+zip…case.json…documents/…META-INF/signatures0.xml"),
        (status = 503, description = "The TSA cannot timestamp the seal now (`tsa-unavailable`)", body = crate::api::problem::Problem, content_type = "application/problem+json"),
        crate::api::problem::ReadErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_dossier(
    State(st): State<AppState>,
    who: Client,
    Path(case): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use crate::evidence::dossier::DossierError;
    use axum::response::IntoResponse;
    let case = fields::case_key(&case);
    let Some(d) = st.dossiers.clone() else {
        return Err(ApiError::NotFound(
            "dossiers are not offered by this gateway".into(),
        ));
    };
    let bytes = d
        .build(&case, &who.name, &|r| visible(&who, r))
        .await
        .map_err(|e| match e {
            DossierError::NoCase(_) => ApiError::NotFound(format!("no requests in case {case:?}")),
            DossierError::Store(e) => ApiError::from(e),
            DossierError::Tsa(d) => ApiError::TsaUnavailable(d),
            other => ApiError::internal(other),
        })?;
    let file: String = case
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/vnd.etsi.asic-e+zip".to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.asice\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
