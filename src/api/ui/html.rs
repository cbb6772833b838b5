//! The pieces every page is made of: the frame and its style, badges
//! (a word and a shape, not colour alone), charts, banners, request rows.
//! Markup is written with `maud`, which escapes every value it is given;
//! only the style sheet goes in as it is.

use crate::limits::BreakerShown;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::*;

pub(super) const CSS: &str = r#"
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

pub(super) fn page(
    ui_lang: Lang,
    title: &str,
    here: &str,
    body: Markup,
    refresh: bool,
) -> Html<String> {
    let nav = [
        ("/ui", "overview"),
        ("/ui/deadlines", "deadlines"),
        ("/ui/audit", "audit"),
    ];
    let langs = [("en", "English"), ("sr", "Srpski"), ("hu", "Magyar")];
    let doc = html! {
        (DOCTYPE)
        html lang=(ui_lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width,initial-scale=1";
                @if refresh {
                    meta http-equiv="refresh" content="15";
                }
                title { (title) " · jum-gateway" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { "jum-gateway · " (t(ui_lang, "title")) }
                    nav {
                        @for (href, key) in nav {
                            a href=(href) class=[(key == here).then_some("here")] { (t(ui_lang, key)) }
                        }
                    }
                    div.langs {
                        @for (c, n) in langs {
                            a href={ "/ui/lang/" (c) } lang=(c) { (n) }
                        }
                    }
                    a href="/ui/logout" { (t(ui_lang, "logout")) }
                }
                main { (body) }
            }
        }
    };
    Html(doc.into_string())
}

/// A time as the officials who read the dashboard live it: in Serbia,
/// with its zone (CET or CEST), so that a deadline that ends at midnight
/// there reads as 23:59:59, not as a UTC hour.
pub(super) fn when(ms: u64) -> String {
    use chrono::TimeZone;
    chrono_tz::Europe::Belgrade
        .timestamp_millis_opt(ms as i64)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
        .unwrap_or_default()
}

pub(super) fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

pub(super) fn button(ui: &Ui, action: &str, label: &str, primary: bool) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(ui.csrf);
            button class=[primary.then_some("primary")] { (label) }
        }
    }
}

pub(super) fn breaker_badge(lang: Lang, b: BreakerShown) -> Markup {
    let (class, shape) = match b {
        BreakerShown::Closed => ("ok", "●"),
        BreakerShown::HalfOpen => ("warn", "▲"),
        BreakerShown::Open => ("bad", "■"),
    };
    html! {
        span class={ "badge " (class) } { (shape) " " (t(lang, "breaker")) " " (t(lang, b.name())) }
    }
}

pub(super) fn state_badge(lang: Lang, s: RState) -> Markup {
    let class = match s {
        RState::Delivered => "ok",
        RState::Dead | RState::Cancelled => "bad",
        _ => "warn",
    };
    html! {
        span class={ "badge " (class) } data-state=(s.name()) { (state_word(lang, s)) }
    }
}

/// Bars of attempts per minute (failures on top, in the warning colour),
/// or a line of average latency.
pub(super) fn chart(history: &[crate::dispatch::Minute], latency: bool, label: &str) -> Markup {
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
    let f1 = |v: f64| format!("{v:.1}");
    let points = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{},{}",
                f1(i as f64 * bw + bw / 2.0),
                f1(h - v / max * (h - 4.0))
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        svg role="img" aria-label=(label) width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } {
            rect width=(w) height=(h) fill="#f0f2f6" {}
            @if latency {
                polyline fill="none" stroke="#0072B2" stroke-width="2" points=(points) {}
            } @else {
                @for (i, m) in history.iter().enumerate() {
                    @let total = f64::from(m.attempts) / max * (h - 4.0);
                    @let bad = f64::from(m.failures) / max * (h - 4.0);
                    @let x = f1(i as f64 * bw);
                    @let width = f1((bw - 1.0).max(1.0));
                    rect x=(x) y=(f1(h - total)) width=(width) height=(f1(total - bad)) fill="#0072B2" {}
                    rect x=(x) y=(f1(h - bad)) width=(width) height=(f1(bad)) fill="#D55E00" {}
                }
            }
            text x="4" y="12" font-size="10" fill="#5b6475" { "max " (format!("{max:.0}")) }
        }
    }
}

pub(super) fn banner(msg: Option<&str>, bad: bool) -> Markup {
    html! {
        @if let Some(m) = msg {
            div class={ "banner" @if bad { " bad" } } role="status" { (m) }
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct Notice {
    pub(super) done: Option<String>,
    pub(super) failed: Option<String>,
}

pub(super) fn request_rows(ui: &Ui, recs: &[&RequestRecord], actions: bool) -> Markup {
    let l = ui.lang;
    let heads = ["id", "state", "service", "case", "age", "error"];
    html! {
        @if recs.is_empty() {
            p.muted { (t(l, "none")) }
        } @else {
            table {
                thead { tr {
                    @for h in heads { th { (t(l, h)) } }
                    @if actions { th { (t(l, "actions")) } }
                } }
                tbody {
                    @for r in recs {
                        tr data-id=(r.id) {
                            td { a href={ "/ui/requests/" (r.id) } { code { (r.id) } } }
                            td { (state_badge(l, r.state)) }
                            td { (r.service) }
                            td { (r.case) }
                            td.num { (ago(r.created_ms)) }
                            td { (crate::ids::redact_text(r.error.as_deref().unwrap_or(""))) }
                            @if actions {
                                td {
                                    @if matches!(r.state, RState::Dead | RState::Cancelled | RState::Retrying | RState::Queued | RState::Awaiting) {
                                        (button(ui, &format!("/ui/requests/{}/retry", r.id), t(l, "retry"), true))
                                        " "
                                    }
                                    @if !r.state.is_terminal() {
                                        (button(ui, &format!("/ui/requests/{}/cancel", r.id), t(l, "cancel"), false))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn url_encode(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a back-office or a registry sends ends up in the pages as
    /// text, never as markup: the templates escape every value.
    #[test]
    fn outside_text_is_escaped_in_every_piece() {
        let evil = "<img src=x onerror=alert(1)>\"'&";
        let ui = Ui {
            who: crate::api::layers::Admin::check(crate::api::Client::unlimited("ops", true))
                .unwrap(),
            lang: Lang::En,
            csrf: "c".into(),
        };
        let mut r = crate::lifecycle::record::testing::record()
            .client("bo")
            .case(evil)
            .legal("l", "o", "p")
            .service(evil, "civil")
            .subject(&[])
            .now(std::time::Duration::from_secs(60))
            .build();
        r.state = RState::Dead;
        r.error = Some(evil.into());
        let html = page(
            Lang::En,
            evil,
            "",
            html! {
                (banner(Some(evil), true))
                (request_rows(&ui, &[&r], true))
                (chart(&[], false, evil))
            },
            false,
        )
        .0;
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;&quot;'&amp;"),
            "{html}"
        );
        // The title, the banner, the service, the case, the error, the
        // chart's label.
        assert_eq!(html.matches("&lt;img").count(), 6, "{html}");
    }
}
