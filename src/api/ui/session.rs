//! Signing in and out: sessions held by the server (the cookie carries a
//! random session id, never the token; HttpOnly, SameSite=Strict, `Secure`
//! over HTTPS, for `/ui` only; `gateway.ui_session_lifetime` (eight hours)
//! at most; logging out ends the session on the server), the CSRF token
//! every form carries, and the language cookie.

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

/// The dashboard's sessions: a random id (the cookie) for each signed-in
/// administrator, with its CSRF token and expiry. In memory: a restart
/// signs everyone out.
#[derive(Default)]
pub struct Sessions(std::sync::Mutex<std::collections::HashMap<String, Session>>);

#[derive(Clone)]
struct Session {
    client: crate::api::Client,
    csrf: String,
    expires: std::time::Instant,
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sessions {
    /// A new session for `client`, lasting `lifetime`; returns its id.
    fn open(&self, client: crate::api::Client, lifetime: std::time::Duration) -> String {
        let id = random_hex(32);
        let now = std::time::Instant::now();
        let mut m = crate::sync::lock(&self.0);
        m.retain(|_, s| s.expires > now);
        m.insert(
            id.clone(),
            Session {
                client,
                csrf: random_hex(16),
                expires: now + lifetime,
            },
        );
        id
    }

    fn get(&self, id: &str) -> Option<Session> {
        let mut m = crate::sync::lock(&self.0);
        match m.get(id) {
            Some(s) if s.expires > std::time::Instant::now() => Some(s.clone()),
            Some(_) => {
                m.remove(id);
                None
            }
            None => None,
        }
    }

    fn close(&self, id: &str) {
        crate::sync::lock(&self.0).remove(id);
    }

    /// Sessions open now (for tests).
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.0).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
        let id = cookie(&parts.headers, "jumgw_session").ok_or_else(to_login)?;
        let s = state.sessions.get(id).ok_or_else(to_login)?;
        let who = crate::api::layers::Admin::check(s.client).map_err(|_| to_login())?;
        Ok(Ui {
            who,
            lang,
            csrf: s.csrf,
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
    // The peer-certificate extension is set on TLS connections only.
    let https = peer.is_some();
    let peer = peer.and_then(|axum::Extension(p)| p.0);
    match crate::api::authenticate(&st, token, peer.as_deref()) {
        Ok(c) if c.is_admin() => {
            let lifetime = st.config.gateway.ui_session_lifetime;
            let id = st.sessions.open(c, lifetime);
            let mut r = Redirect::to("/ui").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "jumgw_session={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
                lifetime.as_secs(),
                if https { "; Secure" } else { "" }
            )) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        _ => (StatusCode::UNAUTHORIZED, login_html(l, true)).into_response(),
    }
}

/// Ends the session on the server, then forgets its cookie.
pub async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, "jumgw_session") {
        st.sessions.close(id);
    }
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("jumgw_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
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
