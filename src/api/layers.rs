//! What runs before a handler, as layers on the routers that need it:
//! who the caller is (bearer token, and the TLS client certificate for a
//! client bound to one), the admin role, the per-client request rate and
//! the JSON content type. Each answers with its own problem before the body
//! is read.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::{bearer_client, ApiError, AppState, Client, Duty, Role};
use crate::sync::lock;

/// The caller, authenticated once per request: a later layer or the
/// handler's [`Client`] extractor finds it in the request's extensions.
pub fn caller(st: &AppState, req: &mut Request) -> Result<Client, ApiError> {
    let client = bearer_client(st, req.headers(), req.extensions())?;
    req.extensions_mut().insert(client.clone());
    Ok(client)
}

/// A client with the admin role. Only [`Admin::check`] makes one, so an
/// operator's action (which takes an `&Admin`) cannot be reached by any
/// other client, whichever door it comes through (the admin API, the
/// dashboard).
#[derive(Debug, Clone)]
pub struct Admin(Client);

impl Admin {
    /// Any administrator (each may read what operators see).
    pub fn check(c: Client) -> Result<Admin, ApiError> {
        if c.is_admin() {
            Ok(Admin(c))
        } else {
            Err(ApiError::Forbidden(
                "the admin API needs an administrator's token".into(),
            ))
        }
    }

    /// May this administrator do `d`? Else 403 naming the role it needs.
    pub fn require(&self, d: Duty) -> Result<(), ApiError> {
        if self.0.role.may(d) {
            return Ok(());
        }
        let needs = match d {
            Duty::Read => "viewer",
            Duty::Act => "operator",
            Duty::Audit => "auditor",
        };
        Err(ApiError::Forbidden(format!(
            "{} is a {}; this needs the {needs} (or admin) role",
            self.0.name,
            Role::NAMES[self.0.role as usize]
        )))
    }
}

impl std::ops::Deref for Admin {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

impl axum::extract::FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        Admin::check(Client::from_request_parts(parts, state).await?)
    }
}

/// An administrator who may act (retry, cancel, pause, resume, export).
#[derive(Debug, Clone)]
pub struct Operator(pub Admin);

/// An administrator who may read the audit trail's answers.
#[derive(Debug, Clone)]
pub struct Auditor(pub Admin);

macro_rules! duty_extractor {
    ($t:ident, $duty:expr) => {
        impl $t {
            /// The same administrator, if its role allows this duty.
            pub fn of(a: &Admin) -> Result<$t, ApiError> {
                a.require($duty)?;
                Ok($t(a.clone()))
            }
        }

        impl std::ops::Deref for $t {
            type Target = Client;
            fn deref(&self) -> &Client {
                &self.0
            }
        }

        impl axum::extract::FromRequestParts<AppState> for $t {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &AppState,
            ) -> Result<Self, ApiError> {
                $t::of(&Admin::from_request_parts(parts, state).await?)
            }
        }
    };
}
duty_extractor!(Operator, Duty::Act);
duty_extractor!(Auditor, Duty::Audit);

/// Only administrators (401 without a known token, 403 with another's),
/// before anything of the request is read.
pub async fn admin_only(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    Admin::check(caller(&st, &mut req)?)?;
    Ok(next.run(req).await)
}

/// A client with `rate_per_s` files at most that many requests per second
/// (bursts of one second's worth); beyond, 429 with Retry-After.
pub async fn client_rate(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let who = caller(&st, &mut req)?;
    if let Some(rate) = who.rate_per_s {
        let now = crate::time::now_ms();
        let refused = {
            let mut limits = lock(&st.limits);
            limits
                .entry(who.name.clone())
                .or_insert_with(|| crate::limits::TokenBucket::new(rate, now))
                .take(now)
                .err()
        };
        if let Some(until) = refused {
            return Err(ApiError::TooMany(
                until.saturating_sub(now).div_ceil(1000).max(1),
            ));
        }
    }
    Ok(next.run(req).await)
}

/// The body must be declared `application/json` (parameters allowed).
/// Headers every answer carries: no page of ours may be framed (click-
/// jacking), load anything but its own inline style, run any script but
/// the print button's `window.print()` (by its hash), or be sniffed into
/// another type; and a referrer leaves only for our own pages.
pub async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             script-src 'unsafe-hashes' 'sha256-MguIPR6qNR8D3B+eAlK+bIRTZe8t3wkOY4B/56Me9FU='; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        axum::http::header::X_FRAME_OPTIONS,
        axum::http::HeaderValue::from_static("DENY"),
    );
    h.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        axum::http::header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("same-origin"),
    );
    r
}

pub async fn json_only(req: Request, next: Next) -> Result<Response, ApiError> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::MediaType);
    }
    Ok(next.run(req).await)
}
