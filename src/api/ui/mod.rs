//! The dashboard `/ui`: server-rendered HTML (no build step, no script
//! needed), in English, Serbian (Latin) and Hungarian. An administrator
//! signs in with an admin token, kept in an HttpOnly, SameSite=Strict
//! cookie that only `/ui` reads; every form carries a token derived from it
//! (CSRF). Questions and actions go through the operators' layer
//! ([`crate::ops`]), like the admin API's, so actions are audited the same
//! way; a failure is a page of the dashboard with the problem's title and
//! HTTP status.
//!
//! States are told by a word and a shape, not colour alone, and the
//! colours are the Okabe–Ito palette, which colour-blind readers can tell
//! apart.

mod html;
mod lang;
mod pages;
mod session;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::ops::{Ops, OpsError, RegistryOut, RetryDeadIn, Stats, WhoIn};
use crate::store::{RequestRecord, State as RState};
use crate::time::now_ms;

pub use html::Notice;
use html::*;
pub use lang::Lang;
use lang::*;
use pages::*;
pub use pages::{CsrfForm, WhoForm};
use session::*;
pub use session::{LoginForm, Sessions, Ui};

/// The dashboard (its own sign-in: a session cookie for `/ui`).
pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/ui", get(overview))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", get(logout))
        .route("/ui/lang/{code}", get(set_lang))
        .route("/ui/deadlines", get(deadlines))
        .route("/ui/audit", get(audit_page).post(audit_who))
        .route("/ui/audit/verify", post(audit_verify))
        .route("/ui/requests/{id}", get(request_page))
        .route("/ui/requests/{id}/{action}", post(act_request))
        .route("/ui/registries/{name}/{action}", post(act_registry))
}
