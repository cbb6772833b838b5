//! The pages and the actions behind their buttons (through the admin
//! API's functions, so audited the same way).

use super::*;

/// How long an open request may wait before the overview lists it.
const STUCK_AFTER_MS: u64 = 5 * 60_000;

/// The newest 100 requests that need an operator: dead, failed twice, or
/// open for over [`STUCK_AFTER_MS`]. From the attention index and the
/// state index sought at that age, so at most 500 records are read.
pub(super) fn stuck(st: &AppState, now: u64) -> Result<Vec<RequestRecord>, ApiError> {
    use crate::store::{Listing, Order, Selector};
    let newest = |selector: Selector| {
        st.store.list(&Listing {
            selector,
            order: Order::Newest,
            after: None,
            limit: 100,
        })
    };
    let mut out = newest(Selector {
        attention: true,
        ..Selector::default()
    })?;
    for s in crate::store::query::UNFETCHED {
        out.extend(newest(Selector {
            state: Some(s),
            created_before: Some(now.saturating_sub(STUCK_AFTER_MS)),
            ..Selector::default()
        })?);
    }
    out.sort_by(|a, b| b.id.cmp(&a.id));
    out.dedup_by(|a, b| a.id == b.id);
    out.truncate(100);
    Ok(out)
}

pub(super) fn ui_error(e: ApiError) -> Response {
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
        Ok::<_, ApiError>((stats, regs, stuck(&st2, now_ms())?))
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
    let stuck: Vec<&RequestRecord> = recs.iter().collect();
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
    let recs = match tokio::task::spawn_blocking(move || st2.store.by_deadline(u64::MAX, 500)).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return ui_error(e.into()),
        Err(e) => return ui_error(ApiError::Internal(e.to_string())),
    };
    let open: Vec<&RequestRecord> = recs.iter().collect();
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

pub(super) fn audit_form(ui: &Ui, jmbg: &str) -> String {
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
    pub(super) csrf: String,
    pub(super) jmbg: String,
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
    pub(super) csrf: String,
}

pub(super) fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "the form is stale; reload the page").into_response()
}

pub(super) fn back(to: &str, result: Result<String, ApiError>) -> Response {
    let (k, v) = match result {
        Ok(m) => ("done", m),
        Err(e) => ("failed", e.to_string_for_ui()),
    };
    let q: String = url_encode(&v);
    Redirect::to(&format!("{to}?{k}={q}")).into_response()
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
