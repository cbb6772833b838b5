//! Signing in and out: the admin token in an HttpOnly, SameSite=Strict
//! cookie that only `/ui` reads, the CSRF token every form carries, and
//! the language cookie.

use super::*;

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(super) fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, "jumgw_lang")
        .and_then(Lang::from_code)
        .unwrap_or(Lang::En)
}

pub(super) fn csrf_for(token: &str) -> String {
    openssl::sha::sha256(format!("csrf:{token}").as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A signed-in administrator.
pub struct Ui {
    pub(super) who: crate::api::layers::Admin,
    pub(super) lang: Lang,
    pub(super) csrf: String,
}

impl axum::extract::FromRequestParts<AppState> for Ui {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        let lang = lang_of(&parts.headers);
        let to_login = || Redirect::to("/ui/login").into_response();
        let token = cookie(&parts.headers, "jumgw_token").ok_or_else(to_login)?;
        let peer = parts
            .extensions
            .get::<crate::pki::tls::PeerCert>()
            .and_then(|p| p.0.clone());
        let who = crate::api::authenticate(state, token, peer.as_deref())
            .and_then(crate::api::layers::Admin::check)
            .map_err(|_| to_login())?;
        Ok(Ui {
            who,
            lang,
            csrf: csrf_for(token),
        })
    }
}

pub async fn login_page(headers: HeaderMap) -> Html<String> {
    login_html(lang_of(&headers), false)
}

pub(super) fn login_html(l: Lang, failed: bool) -> Html<String> {
    let body = maud::html! {
        h2 { (t(l, "title")) " · " (t(l, "welcome")) " · Dobro došli · Isten hozta" }
        @if failed {
            (banner(Some(t(l, "login-failed")), true))
        }
        form method="post" action="/ui/login" {
            label { (t(l, "token")) " " input type="password" name="token" autocomplete="current-password" autofocus; }
            " "
            button.primary { (t(l, "login")) }
        }
    };
    page(l, t(l, "login"), "", body, false)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub(super) token: String,
}

pub async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<crate::pki::tls::PeerCert>>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let l = lang_of(&headers);
    let Ok(Form(f)) = form else {
        return (StatusCode::BAD_REQUEST, login_html(l, true)).into_response();
    };
    let token = f.token.trim();
    let peer = peer.and_then(|axum::Extension(p)| p.0);
    match crate::api::authenticate(&st, token, peer.as_deref()) {
        Ok(c) if c.admin && token.bytes().all(|b| b.is_ascii_graphic()) => {
            let mut r = Redirect::to("/ui").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "jumgw_token={token}; Path=/ui; HttpOnly; SameSite=Strict"
            )) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        _ => (StatusCode::UNAUTHORIZED, login_html(l, true)).into_response(),
    }
}

pub async fn logout() -> Response {
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("jumgw_token=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

pub async fn set_lang(headers: HeaderMap, Path(code): Path<String>) -> Response {
    let lang = Lang::from_code(&code).unwrap_or(Lang::En);
    // Back to the page it was chosen on, if that was one of ours.
    let to = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.find("/ui").map(|i| r[i..].to_owned()))
        .filter(|p| !p.starts_with("/ui/lang"))
        .unwrap_or_else(|| "/ui".into());
    let mut r = Redirect::to(&to).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "jumgw_lang={}; Path=/ui; SameSite=Strict; Max-Age=31536000",
        lang.code()
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
