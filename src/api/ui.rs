//! The dashboard `/ui`: server-rendered HTML (no build step, no script
//! needed), in English, Serbian (Latin) and Hungarian. An administrator
//! signs in with an admin token, kept in an HttpOnly, SameSite=Strict
//! cookie that only `/ui` reads; every form carries a token derived from it
//! (CSRF). Actions go through the same functions as the admin API, so they
//! are audited the same way.
//!
//! States are told by a word and a shape, not colour alone, and the
//! colours are the Okabe–Ito palette, which colour-blind readers can tell
//! apart.

use std::fmt::Write as _;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::admin;
use super::{ApiError, AppState};
use crate::store::{now_ms, RequestRecord, State as RState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Sr,
    Hu,
}

impl Lang {
    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Sr => "sr-Latn",
            Lang::Hu => "hu",
        }
    }

    /// This language's word of an English, Serbian, Hungarian triple.
    fn pick(self, [en, sr, hu]: [&'static str; 3]) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Sr => sr,
            Lang::Hu => hu,
        }
    }

    fn from_code(c: &str) -> Option<Lang> {
        match c {
            "en" => Some(Lang::En),
            "sr" | "sr-Latn" => Some(Lang::Sr),
            "hu" => Some(Lang::Hu),
            _ => None,
        }
    }
}

/// The words of the dashboard: English, Serbian (Latin), Hungarian.
fn t(lang: Lang, key: &str) -> &'static str {
    let [en, sr, hu]: [&'static str; 3] = match key {
        "title" => [
            "Gateway console",
            "Konzola mrežnog prolaza",
            "Átjáró konzol",
        ],
        "overview" => ["Overview", "Pregled", "Áttekintés"],
        "deadlines" => ["ZUP deadlines", "Rokovi po ZUP-u", "ÁKE határidők"],
        "audit" => ["Audit", "Revizija", "Napló"],
        "logout" => ["Sign out", "Odjava", "Kilépés"],
        "login" => ["Sign in", "Prijava", "Belépés"],
        "token" => [
            "Admin token",
            "Administratorski token",
            "Adminisztrátori token",
        ],
        "login-failed" => [
            "That is not an admin token.",
            "To nije administratorski token.",
            "Ez nem adminisztrátori token.",
        ],
        "registries" => ["Registries", "Registri", "Nyilvántartások"],
        "queue" => [
            "Requests by state",
            "Zahtevi po stanju",
            "Kérelmek állapot szerint",
        ],
        "breaker" => ["Breaker", "Prekidač", "Megszakító"],
        "closed" => ["closed", "zatvoren", "zárva"],
        "open" => ["open", "otvoren", "nyitva"],
        "half-open" => ["half-open", "poluotvoren", "félig nyitva"],
        "paused" => ["paused", "pauzirano", "szüneteltetve"],
        "maintenance" => ["maintenance", "održavanje", "karbantartás"],
        "active" => ["active", "aktivan", "aktív"],
        "in-flight" => ["in flight", "u toku", "folyamatban"],
        "waiting" => ["waiting", "čeka", "várakozik"],
        "last-ok" => ["last success", "poslednji uspeh", "utolsó siker"],
        "last-error" => ["last error", "poslednja greška", "utolsó hiba"],
        "certs" => ["certificates", "sertifikati", "tanúsítványok"],
        "days" => ["days", "dana", "nap"],
        "pause" => ["Pause", "Pauziraj", "Szüneteltetés"],
        "resume" => ["Resume", "Nastavi", "Folytatás"],
        "retry-dead" => ["Retry dead", "Ponovi neuspele", "Sikertelenek újra"],
        "throughput" => [
            "Attempts per minute, last hour",
            "Pokušaji po minutu, poslednji sat",
            "Próbálkozások percenként, utolsó óra",
        ],
        "latency" => [
            "Average latency (ms), last hour",
            "Prosečno kašnjenje (ms), poslednji sat",
            "Átlagos késleltetés (ms), utolsó óra",
        ],
        "stuck" => [
            "Stuck and dead requests",
            "Zaglavljeni i neuspeli zahtevi",
            "Elakadt és sikertelen kérelmek",
        ],
        "none" => ["Nothing here.", "Ništa.", "Nincs ilyen."],
        "id" => ["Request", "Zahtev", "Kérelem"],
        "state" => ["State", "Stanje", "Állapot"],
        "service" => ["Service", "Usluga", "Szolgáltatás"],
        "case" => ["Case", "Predmet", "Ügy"],
        "age" => ["Age", "Starost", "Kor"],
        "error" => ["Error", "Greška", "Hiba"],
        "actions" => ["Actions", "Radnje", "Műveletek"],
        "retry" => ["Retry", "Ponovi", "Újra"],
        "cancel" => ["Cancel", "Otkaži", "Visszavonás"],
        "timeline" => ["Timeline", "Tok", "Idővonal"],
        "filed" => ["Filed", "Podnet", "Benyújtva"],
        "deadline" => ["Deadline", "Rok", "Határidő"],
        "official" => ["Official", "Službenik", "Ügyintéző"],
        "legal-basis" => ["Legal basis", "Pravni osnov", "Jogalap"],
        "purpose" => ["Purpose", "Svrha", "Cél"],
        "subject" => ["Subject", "Lice", "Érintett"],
        "attempt" => ["Attempt", "Pokušaj", "Próbálkozás"],
        "delivered" => ["Delivered", "Dostavljeno", "Kézbesítve"],
        "at-risk" => ["near its deadline", "blizu roka", "közel a határidőhöz"],
        "left" => ["left", "preostalo", "hátra"],
        "who" => [
            "Who used a person's data",
            "Ko je koristio podatke o licu",
            "Ki használta a személy adatait",
        ],
        "jmbg" => ["JMBG", "JMBG", "Személyi szám (JMBG)"],
        "search" => ["Search", "Traži", "Keresés"],
        "print" => ["Print", "Štampaj", "Nyomtatás"],
        "when" => ["When (UTC)", "Kada (UTC)", "Mikor (UTC)"],
        "action" => ["Action", "Radnja", "Művelet"],
        "verify" => [
            "Verify the audit trail",
            "Proveri revizioni trag",
            "Napló ellenőrzése",
        ],
        "intact" => [
            "The trail is intact",
            "Trag je neoštećen",
            "A napló sértetlen",
        ],
        "broken" => ["The trail is BROKEN", "Trag je OŠTEĆEN", "A napló SÉRÜLT"],
        "entries" => ["entries", "unosa", "bejegyzés"],
        "done" => ["Done", "Urađeno", "Kész"],
        "welcome" => ["Welcome", "Dobro došli", "Isten hozta"],
        "oldest" => [
            "oldest open request",
            "najstariji otvoren zahtev",
            "legrégebbi nyitott kérelem",
        ],
        _ => [""; 3],
    };
    lang.pick([en, sr, hu])
}

fn state_word(lang: Lang, s: RState) -> &'static str {
    let [en, sr, hu] = match s {
        RState::Queued => ["queued", "u redu", "sorban"],
        RState::Sending => ["sending", "šalje se", "küldés alatt"],
        RState::Awaiting => ["awaiting", "čeka odgovor", "válaszra vár"],
        RState::Retrying => ["retrying", "ponavlja se", "újrapróbálás"],
        RState::Fetched => ["fetched", "preuzeto", "letöltve"],
        RState::Delivered => ["delivered", "dostavljeno", "kézbesítve"],
        RState::Dead => ["dead", "neuspelo", "sikertelen"],
        RState::Cancelled => ["cancelled", "otkazano", "visszavonva"],
    };
    lang.pick([en, sr, hu])
}

use crate::xml::escape as esc;

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, "jumgw_lang")
        .and_then(Lang::from_code)
        .unwrap_or(Lang::En)
}

fn csrf_for(token: &str) -> String {
    openssl::sha::sha256(format!("csrf:{token}").as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A signed-in administrator.
pub struct Ui {
    who: super::layers::Admin,
    lang: Lang,
    csrf: String,
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
        let who = super::authenticate(state, token, peer.as_deref())
            .and_then(super::layers::Admin::check)
            .map_err(|_| to_login())?;
        Ok(Ui {
            who,
            lang,
            csrf: csrf_for(token),
        })
    }
}

const CSS: &str = r#"
:root{--ok:#0072B2;--warn:#E69F00;--bad:#D55E00;--fg:#1d2330;--muted:#5b6475;--bg:#f6f7f9;--card:#fff;--line:#dde1e8}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;gap:1.5rem;align-items:center;padding:.7rem 1.5rem;background:#14213d;color:#fff;flex-wrap:wrap}
header h1{font-size:1.1rem;margin:0;font-weight:600}
header a{color:#fff;text-decoration:none;opacity:.85}header a:hover,header a.here{opacity:1;text-decoration:underline}
header nav{display:flex;gap:1rem}.langs{margin-left:auto;display:flex;gap:.6rem}
main{max-width:1280px;margin:0 auto;padding:1.2rem 1.5rem}
h2{font-size:1.05rem;margin:1.6rem 0 .6rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:1rem}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem}
.card h3{margin:0 0 .5rem;font-size:1rem;display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.8rem;font-weight:600;border:1px solid}
.badge.ok{color:var(--ok);border-color:var(--ok)}.badge.warn{color:#8a5a00;border-color:var(--warn);background:#fff6e0}.badge.bad{color:#fff;background:var(--bad);border-color:var(--bad)}
dl.kv{display:grid;grid-template-columns:auto 1fr;gap:.15rem .8rem;margin:.4rem 0;font-size:.9rem}dl.kv dt{color:var(--muted)}dl.kv dd{margin:0}
.counts{display:flex;gap:.6rem;flex-wrap:wrap;margin:0;padding:0}
.counts div{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem .9rem;min-width:105px}
.counts dt{font-size:.8rem;color:var(--muted)}.counts dd{margin:0;font-size:1.4rem;font-weight:600;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%;background:var(--card);border:1px solid var(--line);border-radius:8px;font-size:.9rem}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}th{font-weight:600;color:var(--muted);font-size:.8rem}
td.num{font-variant-numeric:tabular-nums}code{font-size:.85rem}
form.inline{display:inline}button{font:inherit;font-size:.85rem;padding:.2rem .7rem;border-radius:6px;border:1px solid #8892a6;background:#fff;cursor:pointer}
button:hover{background:#eef1f6}button.primary{background:var(--ok);border-color:var(--ok);color:#fff}
.banner{padding:.6rem 1rem;border-radius:8px;background:#e8f3fb;border:1px solid var(--ok);margin-bottom:1rem}
.banner.bad{background:#fdeee6;border-color:var(--bad)}
svg{display:block;margin:.3rem 0}.muted{color:var(--muted)}
ol.timeline{list-style:none;padding:0;border-left:3px solid var(--line);margin-left:.5rem}
ol.timeline li{position:relative;padding:.2rem 0 .8rem 1rem}ol.timeline li::before{content:"";position:absolute;left:-.55rem;top:.45rem;width:.8rem;height:.8rem;border-radius:50%;background:var(--ok)}
ol.timeline li.bad::before{background:var(--bad);border-radius:0}
input[type=text],input[type=password]{font:inherit;padding:.3rem .5rem;border:1px solid #8892a6;border-radius:6px;min-width:16rem}
@media print{header,form,button,.noprint{display:none}body{background:#fff}table{border:none}}
"#;

fn page(ui_lang: Lang, title: &str, here: &str, body: &str, refresh: bool) -> Html<String> {
    let nav = [
        ("/ui", "overview"),
        ("/ui/deadlines", "deadlines"),
        ("/ui/audit", "audit"),
    ]
    .iter()
    .map(|(href, key)| {
        let class = if *key == here { " class=\"here\"" } else { "" };
        format!("<a href=\"{href}\"{class}>{}</a>", t(ui_lang, key))
    })
    .collect::<Vec<_>>()
    .join("");
    let langs = [("en", "English"), ("sr", "Srpski"), ("hu", "Magyar")]
        .iter()
        .map(|(c, n)| format!("<a href=\"/ui/lang/{c}\" lang=\"{c}\">{n}</a>"))
        .collect::<Vec<_>>()
        .join("");
    Html(format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
<title>{title} · jum-gateway</title><style>{CSS}</style></head><body>\
<header><h1>jum-gateway · {console}</h1><nav>{nav}</nav><div class=\"langs\">{langs}</div>\
<a href=\"/ui/logout\">{logout}</a></header><main>{body}</main></body></html>",
        lang = ui_lang.code(),
        refresh = if refresh {
            "<meta http-equiv=\"refresh\" content=\"15\">"
        } else {
            ""
        },
        title = esc(title),
        console = t(ui_lang, "title"),
        logout = t(ui_lang, "logout"),
    ))
}

fn when(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn button(ui: &Ui, action: &str, label: &str, primary: bool) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<button{}>{}</button></form>",
        esc(action),
        ui.csrf,
        if primary { " class=\"primary\"" } else { "" },
        esc(label)
    )
}

fn breaker_badge(lang: Lang, b: &str) -> String {
    let (class, shape) = match b {
        "closed" => ("ok", "●"),
        "half-open" => ("warn", "▲"),
        _ => ("bad", "■"),
    };
    format!(
        "<span class=\"badge {class}\">{shape} {} {}</span>",
        t(lang, "breaker"),
        t(lang, b)
    )
}

fn state_badge(lang: Lang, s: RState) -> String {
    let class = match s {
        RState::Delivered => "ok",
        RState::Dead | RState::Cancelled => "bad",
        _ => "warn",
    };
    format!(
        "<span class=\"badge {class}\" data-state=\"{}\">{}</span>",
        s.name(),
        state_word(lang, s)
    )
}

/// Bars of attempts per minute (failures on top, in the warning colour),
/// or a line of average latency.
fn chart(history: &[crate::dispatch::Minute], latency: bool, label: &str) -> String {
    let (w, h) = (360.0_f64, 60.0_f64);
    let n = history.len().max(1) as f64;
    let bw = w / n;
    let values: Vec<f64> = history
        .iter()
        .map(|m| {
            if latency {
                if m.attempts == 0 {
                    0.0
                } else {
                    m.total_ms as f64 / f64::from(m.attempts)
                }
            } else {
                f64::from(m.attempts)
            }
        })
        .collect();
    let max = values.iter().cloned().fold(1.0, f64::max);
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"{}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
<rect width=\"{w}\" height=\"{h}\" fill=\"#f0f2f6\"/>",
        esc(label)
    );
    if latency {
        let pts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * bw + bw / 2.0,
                    h - v / max * (h - 4.0)
                )
            })
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#0072B2\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
    } else {
        for (i, m) in history.iter().enumerate() {
            let total = f64::from(m.attempts) / max * (h - 4.0);
            let bad = f64::from(m.failures) / max * (h - 4.0);
            let x = i as f64 * bw;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#0072B2\"/>\
<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#D55E00\"/>",
                h - total,
                (bw - 1.0).max(1.0),
                total - bad,
                h - bad,
                (bw - 1.0).max(1.0),
                bad
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"12\" font-size=\"10\" fill=\"#5b6475\">max {max:.0}</text></svg>"
    );
    svg
}

fn banner(msg: Option<&str>, bad: bool) -> String {
    match msg {
        Some(m) => format!(
            "<div class=\"banner{}\" role=\"status\">{}</div>",
            if bad { " bad" } else { "" },
            esc(m)
        ),
        None => String::new(),
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct Notice {
    done: Option<String>,
    failed: Option<String>,
}

fn request_rows(ui: &Ui, recs: &[&RequestRecord], actions: bool) -> String {
    if recs.is_empty() {
        return format!("<p class=\"muted\">{}</p>", t(ui.lang, "none"));
    }
    let l = ui.lang;
    let mut o = format!(
        "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th>{}</tr></thead><tbody>",
        t(l, "id"),
        t(l, "state"),
        t(l, "service"),
        t(l, "case"),
        t(l, "age"),
        t(l, "error"),
        if actions {
            format!("<th>{}</th>", t(l, "actions"))
        } else {
            String::new()
        }
    );
    for r in recs {
        let _ = write!(
            o,
            "<tr data-id=\"{id}\"><td><a href=\"/ui/requests/{id}\"><code>{id}</code></a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td>",
            state_badge(l, r.state),
            esc(&r.service),
            esc(&r.case),
            ago(r.created_ms),
            esc(&crate::ids::redact_text(r.error.as_deref().unwrap_or(""))),
            id = esc(&r.id),
        );
        if actions {
            o.push_str("<td>");
            if matches!(
                r.state,
                RState::Dead
                    | RState::Cancelled
                    | RState::Retrying
                    | RState::Queued
                    | RState::Awaiting
            ) {
                o.push_str(&button(
                    ui,
                    &format!("/ui/requests/{}/retry", r.id),
                    t(l, "retry"),
                    true,
                ));
                o.push(' ');
            }
            if !r.state.is_terminal() {
                o.push_str(&button(
                    ui,
                    &format!("/ui/requests/{}/cancel", r.id),
                    t(l, "cancel"),
                    false,
                ));
            }
            o.push_str("</td>");
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    o
}

fn all_requests(st: &AppState) -> Result<Vec<RequestRecord>, ApiError> {
    let mut out = Vec::new();
    crate::store::for_each(&*st.store, |r| {
        out.push(r);
        Ok::<(), crate::store::StoreError>(())
    })?;
    Ok(out)
}

fn ui_error(e: ApiError) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

pub async fn overview(
    State(st): State<AppState>,
    ui: Ui,
    notice: axum::extract::Query<Notice>,
) -> Response {
    let st2 = st.clone();
    let data = tokio::task::spawn_blocking(move || {
        let stats = admin::stats(&st2)?;
        let regs = admin::registries(&st2, &stats);
        Ok::<_, ApiError>((stats, regs, all_requests(&st2)?))
    })
    .await;
    let (stats, regs, recs) = match data {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return ui_error(e),
        Err(e) => return ui_error(ApiError::Internal(e.to_string())),
    };
    let l = ui.lang;
    let now = now_ms();
    let mut b = String::new();
    b.push_str(&banner(notice.done.as_deref(), false));
    b.push_str(&banner(notice.failed.as_deref(), true));
    let _ = write!(b, "<h2>{}</h2><dl class=\"counts\">", t(l, "queue"));
    for s in RState::ALL {
        let _ = write!(
            b,
            "<div><dt>{}</dt><dd id=\"count-{}\">{}</dd></div>",
            state_word(l, s),
            s.name(),
            stats.states.get(s.name()).copied().unwrap_or(0)
        );
    }
    b.push_str("</dl>");
    if let Some(o) = stats.oldest_queued_ms {
        let _ = write!(b, "<p class=\"muted\">{}: {}</p>", t(l, "oldest"), ago(o));
    }
    let _ = write!(b, "<h2>{}</h2><div class=\"grid\">", t(l, "registries"));
    for r in &regs {
        let name = &r.gate.registry;
        let state = if r.gate.paused {
            format!("<span class=\"badge warn\">‖ {}</span>", t(l, "paused"))
        } else if r.gate.in_maintenance {
            format!(
                "<span class=\"badge warn\">⚒ {}</span>",
                t(l, "maintenance")
            )
        } else {
            format!("<span class=\"badge ok\">▶ {}</span>", t(l, "active"))
        };
        let waiting: u64 = r.queue.values().sum();
        let dead = stats
            .registries
            .get(name)
            .and_then(|m| m.get("dead"))
            .copied()
            .unwrap_or(0);
        let history = st
            .dispatcher
            .gates
            .get(name)
            .map(|g| g.history(now))
            .unwrap_or_default();
        let certs = r
            .certificates
            .iter()
            .map(|c| format!("{} {} {}", esc(&c.role), c.days_left, t(l, "days")))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            b,
            "<section class=\"card\" id=\"registry-{n}\"><h3>{n} {} {}</h3><dl class=\"kv\">\
<dt>{}</dt><dd>{}</dd><dt>{}</dt><dd data-waiting=\"{waiting}\">{waiting}</dd><dt>{}</dt><dd>{}</dd>\
<dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd></dl>\
<div class=\"muted\">{}</div>{}<div class=\"muted\">{}</div>{}<p>{} {}</p></section>",
            breaker_badge(l, r.gate.breaker),
            state,
            t(l, "in-flight"),
            r.gate.in_flight,
            t(l, "waiting"),
            t(l, "last-ok"),
            r.last.success_ms.map(ago).unwrap_or_else(|| "—".into()),
            t(l, "last-error"),
            esc(r.last.error.as_deref().unwrap_or("—")),
            t(l, "certs"),
            certs,
            t(l, "throughput"),
            chart(&history, false, t(l, "throughput")),
            t(l, "latency"),
            chart(&history, true, t(l, "latency")),
            if r.gate.paused {
                button(&ui, &format!("/ui/registries/{name}/resume"), t(l, "resume"), true)
            } else {
                button(&ui, &format!("/ui/registries/{name}/pause"), t(l, "pause"), false)
            },
            if dead > 0 {
                button(&ui, &format!("/ui/registries/{name}/retry-dead"), &format!("{} ({dead})", t(l, "retry-dead")), true)
            } else {
                String::new()
            },
            n = esc(name),
        );
    }
    b.push_str("</div>");
    // Dead, and open requests that failed more than once or have been
    // waiting for over 5 minutes.
    let mut stuck: Vec<&RequestRecord> = recs
        .iter()
        .filter(|r| {
            r.state == RState::Dead
                || (!r.state.is_terminal()
                    && r.state != RState::Fetched
                    && (r.attempts.len() >= 2 || now.saturating_sub(r.created_ms) > 5 * 60_000))
        })
        .collect();
    stuck.sort_by(|a, b| b.id.cmp(&a.id));
    stuck.truncate(100);
    let _ = write!(
        b,
        "<h2>{}</h2><div id=\"stuck\">{}</div>",
        t(l, "stuck"),
        request_rows(&ui, &stuck, true)
    );
    page(l, t(l, "overview"), "overview", &b, true).into_response()
}

pub async fn request_page(State(st): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    let l = ui.lang;
    let r = match st.store.get(&id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                page(l, &id, "", &format!("<p>{}</p>", t(l, "none")), false),
            )
                .into_response()
        }
        Err(e) => return ui_error(ApiError::Internal(e.to_string())),
    };
    let mut b = format!(
        "<h2>{} <code>{}</code> {}</h2><dl class=\"kv\">",
        t(l, "id"),
        esc(&r.id),
        state_badge(l, r.state)
    );
    for (k, v) in [
        ("service", r.service.clone()),
        ("case", r.case.clone()),
        ("official", r.official.clone()),
        ("legal-basis", r.legal_basis.clone()),
        ("purpose", r.purpose.clone()),
        ("subject", r.subject_redacted()),
        ("filed", when(r.created_ms)),
        ("deadline", when(r.deadline_ms)),
    ] {
        let _ = write!(b, "<dt>{}</dt><dd>{}</dd>", t(l, k), esc(&v));
    }
    b.push_str("</dl>");
    b.push_str(&request_rows(&ui, &[&r], true));
    let _ = write!(b, "<h2>{}</h2><ol class=\"timeline\">", t(l, "timeline"));
    let _ = write!(b, "<li>{} — {}</li>", when(r.created_ms), t(l, "filed"));
    for (i, a) in r.attempts.iter().enumerate() {
        let bad = !matches!(a.outcome.as_str(), "document" | "accepted");
        let _ = write!(
            b,
            "<li class=\"{}\">{} — {} {}: <strong>{}</strong>{} · {} ms<br><span class=\"muted\">{}</span></li>",
            if bad { "bad" } else { "" },
            when(a.at_ms),
            t(l, "attempt"),
            i + 1,
            esc(&a.outcome),
            a.http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
            a.duration_ms,
            esc(&crate::ids::redact_text(&a.detail)),
        );
    }
    if let Some(d) = r.delivered_ms {
        let _ = write!(b, "<li>{} — {}</li>", when(d), t(l, "delivered"));
    }
    b.push_str("</ol>");
    page(l, &r.id, "", &b, false).into_response()
}

pub async fn deadlines(State(st): State<AppState>, ui: Ui) -> Response {
    let l = ui.lang;
    let st2 = st.clone();
    let recs = match tokio::task::spawn_blocking(move || all_requests(&st2)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return ui_error(e),
        Err(e) => return ui_error(ApiError::Internal(e.to_string())),
    };
    let mut open: Vec<&RequestRecord> = recs.iter().filter(|r| !r.state.is_terminal()).collect();
    open.sort_by_key(|r| r.deadline_ms);
    let now = now_ms();
    let mut b = format!(
        "<h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t(l, "deadlines"),
        t(l, "deadline"),
        t(l, "id"),
        t(l, "state"),
        t(l, "service"),
        t(l, "case")
    );
    for r in open.iter().take(500) {
        let days = r.deadline_ms.saturating_sub(now) as f64 / 86_400_000.0;
        let _ = write!(
            b,
            "<tr><td>{} <span class=\"muted\">({days:.1} {} {})</span>{}</td><td><a href=\"/ui/requests/{id}\"><code>{id}</code></a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(r.deadline_ms),
            t(l, "days"),
            t(l, "left"),
            if r.at_risk {
                format!(" <span class=\"badge bad\">■ {}</span>", t(l, "at-risk"))
            } else {
                String::new()
            },
            state_badge(l, r.state),
            esc(&r.service),
            esc(&r.case),
            id = esc(&r.id),
        );
    }
    b.push_str("</tbody></table>");
    page(l, t(l, "deadlines"), "deadlines", &b, false).into_response()
}

fn audit_form(ui: &Ui, jmbg: &str) -> String {
    let l = ui.lang;
    format!(
        "<h2>{}</h2><form method=\"post\" action=\"/ui/audit\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label>{} <input type=\"text\" name=\"jmbg\" inputmode=\"numeric\" autocomplete=\"off\" value=\"{}\"></label> \
<button class=\"primary\">{}</button></form>\
<h2>{}</h2>{}",
        t(l, "who"),
        ui.csrf,
        t(l, "jmbg"),
        esc(jmbg),
        t(l, "search"),
        t(l, "verify"),
        button(ui, "/ui/audit/verify", t(l, "verify"), false)
    )
}

pub async fn audit_page(ui: Ui, notice: axum::extract::Query<Notice>) -> Response {
    let l = ui.lang;
    let mut b = banner(notice.done.as_deref(), false);
    b.push_str(&banner(notice.failed.as_deref(), true));
    b.push_str(&audit_form(&ui, ""));
    page(l, t(l, "audit"), "audit", &b, false).into_response()
}

#[derive(Debug, Deserialize)]
pub struct WhoForm {
    csrf: String,
    jmbg: String,
}

pub async fn audit_who(State(st): State<AppState>, ui: Ui, Form(f): Form<WhoForm>) -> Response {
    let l = ui.lang;
    if f.csrf != ui.csrf {
        return forbidden();
    }
    let body = admin::WhoIn {
        jmbg: f.jmbg.trim().to_owned(),
        from: None,
        to: None,
    };
    let report = match admin::do_who(&st, &ui.who, &body) {
        Ok(r) => r,
        Err(e) => {
            let mut b = banner(Some(&e.to_string_for_ui()), true);
            b.push_str(&audit_form(&ui, ""));
            return page(l, t(l, "audit"), "audit", &b, false).into_response();
        }
    };
    let mut b = audit_form(&ui, "");
    let _ = write!(
        b,
        "<h2>{} — {} ({})</h2><p class=\"noprint\"><button onclick=\"window.print()\">{}</button></p>\
<table id=\"accesses\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t(l, "who"),
        esc(&report.subject),
        report.accesses.len(),
        t(l, "print"),
        t(l, "when"),
        t(l, "action"),
        t(l, "official"),
        t(l, "case"),
        t(l, "service"),
        t(l, "legal-basis"),
        t(l, "purpose"),
    );
    for a in &report.accesses {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{} <span class=\"muted\">({})</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(a.at_ms),
            esc(&a.action),
            esc(&a.official),
            esc(&a.actor),
            esc(&a.case),
            esc(&a.service),
            esc(&a.legal_basis),
            esc(&a.purpose)
        );
    }
    b.push_str("</tbody></table>");
    page(l, t(l, "who"), "audit", &b, false).into_response()
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "the form is stale; reload the page").into_response()
}

fn back(to: &str, result: Result<String, ApiError>) -> Response {
    let (k, v) = match result {
        Ok(m) => ("done", m),
        Err(e) => ("failed", e.to_string_for_ui()),
    };
    let q: String = url_encode(&v);
    Redirect::to(&format!("{to}?{k}={q}")).into_response()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn audit_verify(State(st): State<AppState>, ui: Ui, Form(f): Form<CsrfForm>) -> Response {
    if f.csrf != ui.csrf {
        return forbidden();
    }
    let l = ui.lang;
    let st2 = st.clone();
    let report = tokio::task::spawn_blocking(move || {
        let cps = match &st2.checkpoints {
            Some(c) => c.read()?,
            None => Vec::new(),
        };
        crate::audit::verify(&*st2.store, &cps)
    })
    .await;
    match report {
        Ok(Ok(r)) => match r.broken {
            None => back(
                "/ui/audit",
                Ok(format!(
                    "{}: {} {}",
                    t(l, "intact"),
                    r.entries,
                    t(l, "entries")
                )),
            ),
            Some(b) => Redirect::to(&format!(
                "/ui/audit?failed={}",
                url_encode(&format!("{}: {} — {}", t(l, "broken"), b.seq, b.reason))
            ))
            .into_response(),
        },
        Ok(Err(e)) => back("/ui/audit", Err(ApiError::Internal(e.to_string()))),
        Err(e) => back("/ui/audit", Err(ApiError::Internal(e.to_string()))),
    }
}

pub async fn act_request(
    State(st): State<AppState>,
    ui: Ui,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if f.csrf != ui.csrf {
        return forbidden();
    }
    let l = ui.lang;
    let r = match action.as_str() {
        "retry" => admin::do_retry(&st, &ui.who, &id)
            .map(|r| format!("{}: {} → {}", t(l, "retry"), r.id, state_word(l, r.state))),
        "cancel" => admin::do_cancel(&st, &ui.who, &id)
            .map(|r| format!("{}: {} → {}", t(l, "cancel"), r.id, state_word(l, r.state))),
        _ => Err(ApiError::NotFound(format!("no action {action}"))),
    };
    back("/ui", r)
}

pub async fn act_registry(
    State(st): State<AppState>,
    ui: Ui,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if f.csrf != ui.csrf {
        return forbidden();
    }
    let l = ui.lang;
    let r = match action.as_str() {
        "pause" => admin::do_pause(&st, &ui.who, &name, None)
            .map(|_| format!("{name}: {}", t(l, "paused"))),
        "resume" => {
            admin::do_resume(&st, &ui.who, &name).map(|_| format!("{name}: {}", t(l, "active")))
        }
        "retry-dead" => admin::do_retry_dead(
            &st,
            &ui.who,
            admin::RetryDeadIn {
                registry: Some(name.clone()),
                ..Default::default()
            },
        )
        .await
        .map(|o| format!("{name}: {} {}/{}", t(l, "retry-dead"), o.retried, o.matched)),
        _ => Err(ApiError::NotFound(format!("no action {action}"))),
    };
    back("/ui", r)
}

pub async fn login_page(headers: HeaderMap) -> Html<String> {
    login_html(lang_of(&headers), false)
}

fn login_html(l: Lang, failed: bool) -> Html<String> {
    let body = format!(
        "<h2>{} · {} · Dobro došli · Isten hozta</h2>{}<form method=\"post\" action=\"/ui/login\">\
<label>{} <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label> \
<button class=\"primary\">{}</button></form>",
        t(l, "title"),
        t(l, "welcome"),
        if failed {
            banner(Some(t(l, "login-failed")), true)
        } else {
            String::new()
        },
        t(l, "token"),
        t(l, "login")
    );
    page(l, t(l, "login"), "", &body, false)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
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
    match super::authenticate(&st, token, peer.as_deref()) {
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

impl ApiError {
    /// The detail, and each bad field, on one line.
    pub fn to_string_for_ui(&self) -> String {
        match self {
            ApiError::Invalid(errs) => errs
                .iter()
                .map(|(p, r)| format!("{p}: {r}"))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }
}

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
