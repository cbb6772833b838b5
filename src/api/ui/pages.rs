//! The pages and the actions behind their buttons (through the operators'
//! layer, like the admin API, so audited the same way); a failure is a page
//! of its own ([`ui_error`]).

use maud::{html, Markup};

use super::*;

/// A failure as a page of the dashboard, in the reader's language: the
/// problem's title and HTTP status (the same the admin API would answer),
/// and its detail; a 5xx says little, its detail goes to the log.
pub(super) fn ui_error(l: Lang, e: ApiError) -> Response {
    e.log_detail();
    let status = e.status();
    let title = problem_title(l, e.kind()).unwrap_or(e.title());
    let body = html! {
        section.problem data-status=(status.as_u16()) data-problem=(e.kind()) {
            h2 { (title) }
            p { "HTTP " (status.as_u16()) }
            p.muted { (e.to_string_for_ui()) }
            p { a href="/ui" { (t(l, "back")) } }
        }
    };
    (status, page(l, title, "", body, false)).into_response()
}

pub async fn overview(
    State(st): State<AppState>,
    ui: Ui,
    notice: axum::extract::Query<Notice>,
) -> Response {
    let l = ui.lang;
    let ops = st.ops();
    let data = async {
        let stats = ops.stats().await?;
        let regs = ops.registries(&stats);
        Ok::<_, OpsError>((stats, regs, ops.stuck(now_ms()).await?))
    };
    let (stats, regs, recs) = match data.await {
        Ok(d) => d,
        Err(e) => return ui_error(l, e.into()),
    };
    let now = now_ms();
    let stuck: Vec<&RequestRecord> = recs.iter().collect();
    let body = html! {
        (banner(notice.done.as_deref(), false))
        (banner(notice.failed.as_deref(), true))
        h2 { (t(l, "queue")) }
        dl.counts {
            @for s in RState::ALL {
                div {
                    dt { (state_word(l, s)) }
                    dd id={ "count-" (s.name()) } { (stats.states.get(s.name()).copied().unwrap_or(0)) }
                }
            }
        }
        @if let Some(o) = stats.oldest_queued_ms {
            p.muted { (t(l, "oldest")) ": " (ago(o)) }
        }
        h2 { (t(l, "registries")) }
        div.grid {
            @for r in &regs {
                (registry_card(&ops, &ui, &stats, r, now))
            }
        }
        h2 { (t(l, "stuck")) }
        div #stuck { (request_rows(&ui, &stuck, true)) }
    };
    page(l, t(l, "overview"), "overview", body, true).into_response()
}

/// One registry on the overview: its breaker, pause, queue, last answers,
/// certificates, traffic of the last hour and its buttons.
fn registry_card(ops: &Ops, ui: &Ui, stats: &Stats, r: &RegistryOut, now: u64) -> Markup {
    let l = ui.lang;
    let name = &r.gate.registry;
    let waiting: u64 = r.queue.values().sum();
    let dead = stats
        .registries
        .get(name)
        .and_then(|m| m.get(crate::store::State::Dead.name()))
        .copied()
        .unwrap_or(0);
    let history = ops.history(name, now);
    let certs = r
        .certificates
        .iter()
        .map(|c| format!("{} {} {}", c.role, c.days_left, t(l, "days")))
        .collect::<Vec<_>>()
        .join(", ");
    html! {
        section.card id={ "registry-" (name) } {
            h3 {
                (name) " " (breaker_badge(l, r.gate.breaker)) " "
                @if r.gate.paused {
                    span class="badge warn" { "‖ " (t(l, "paused")) }
                } @else if r.gate.in_maintenance {
                    span class="badge warn" { "⚒ " (t(l, "maintenance")) }
                } @else {
                    span class="badge ok" { "▶ " (t(l, "active")) }
                }
            }
            dl.kv {
                dt { (t(l, "in-flight")) } dd { (r.gate.in_flight) }
                dt { (t(l, "waiting")) } dd data-waiting=(waiting) { (waiting) }
                dt { (t(l, "last-ok")) } dd { (r.last.success_ms.map(ago).unwrap_or_else(|| "—".into())) }
                dt { (t(l, "last-error")) } dd { (r.last.error.as_deref().unwrap_or("—")) }
                dt { (t(l, "certs")) } dd { (certs) }
                dt { (t(l, "revocation")) } dd data-revocation=(r.revocation.policy) {
                    (r.revocation.policy) " · " (t(l, "last-good")) " "
                    (r.revocation.last_good_ms.map(ago).unwrap_or_else(|| "—".into()))
                }
                @if r.protocol == "x-road" {
                    dt { (t(l, "x-road-services")) }
                    dd data-x-road-missing=(r.x_road.as_ref().map(|m| m.missing.join(" ")).unwrap_or_default()) {
                        @match &r.x_road {
                            None => span.muted { (t(l, "not-asked-yet")) },
                            Some(m) => {
                                @if let Some(e) = &m.error {
                                    span class="badge warn" { (t(l, "could-not-ask")) } " " span.muted { (e) }
                                } @else if m.missing.is_empty() {
                                    span class="badge ok" { (t(l, "all-allowed")) }
                                } @else {
                                    span class="badge bad" { (t(l, "not-allowed")) } " "
                                    @for (i, c) in m.missing.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        code { (c) }
                                    }
                                }
                                " · " (ago(m.checked_ms))
                            }
                        }
                    }
                }
            }
            div.muted { (t(l, "throughput")) }
            (chart(&history, false, t(l, "throughput")))
            div.muted { (t(l, "latency")) }
            (chart(&history, true, t(l, "latency")))
            p {
                @if r.gate.paused {
                    (button(ui, &format!("/ui/registries/{name}/resume"), t(l, "resume"), true))
                } @else {
                    (button(ui, &format!("/ui/registries/{name}/pause"), t(l, "pause"), false))
                }
                " "
                @if dead > 0 {
                    (button(ui, &format!("/ui/registries/{name}/retry-dead"), &format!("{} ({dead})", t(l, "retry-dead")), true))
                }
            }
        }
    }
}

pub async fn request_page(State(st): State<AppState>, ui: Ui, Path(id): Path<String>) -> Response {
    let l = ui.lang;
    let r = match st.ops().request(&id).await {
        Ok(r) => r,
        Err(e) => return ui_error(l, e.into()),
    };
    let facts = [
        ("service", r.service.to_string()),
        ("case", r.case.to_string()),
        ("official", r.official.clone()),
        ("legal-basis", r.legal_basis.clone()),
        ("purpose", r.purpose.clone()),
        ("subject", r.subject_redacted()),
        ("filed", when(r.created_ms)),
        ("deadline", when(r.deadline_ms)),
    ];
    let body = html! {
        h2 { (t(l, "id")) " " code { (r.id) } " " (state_badge(l, r.state)) }
        dl.kv {
            @for (k, v) in &facts {
                dt { (t(l, k)) } dd { (v) }
            }
            @if let Some(d) = &r.signed_document {
                dt { (t(l, "signed-document")) }
                dd data-signed-document=(d.state) {
                    (d.state) " · " code { (d.message_id) }
                    @if let Some(why) = &d.reason { " · " span.muted { (why) } }
                }
            }
            @if let Some(s) = &r.stamp {
                dt { (t(l, "timestamp")) }
                dd data-timestamp=(s.state) {
                    (s.state)
                    @if let Some(ms) = s.time_ms { " · " (when(ms)) }
                    @if let Some(tsa) = &s.tsa { " · " (tsa) }
                    @if let Some(why) = &s.reason { " · " span.muted { (why) } }
                }
            }
        }
        (request_rows(&ui, &[&r], true))
        h2 { (t(l, "timeline")) }
        ol.timeline {
            li { (when(r.created_ms)) " — " (t(l, "filed")) }
            @for (i, a) in r.attempts.iter().enumerate() {
                @let bad = !a.outcome.answered();
                li class=(if bad { "bad" } else { "" }) {
                    (when(a.at_ms)) " — " (t(l, "attempt")) " " (i + 1) ": "
                    strong { (a.outcome) }
                    @if let Some(s) = a.http_status { " (HTTP " (s) ")" }
                    " · " (a.duration_ms) " ms"
                    @if let Some(m) = &a.message_id {
                        " · " (t(l, "message-id")) " " code data-message-id=(m) { (m) }
                    }
                    br;
                    span.muted { (crate::ids::redact_text(&a.detail)) }
                }
            }
            @if let Some(d) = r.delivered_ms {
                li { (when(d)) " — " (t(l, "delivered")) }
            }
        }
        @if !r.attachments.is_empty() {
            h2 { (t(l, "attachments")) }
            table.attachments {
                tr { th { "#" } th { (t(l, "file-name")) } th { (t(l, "content-type")) } th { (t(l, "size")) } th { "SHA-256" } }
                @for (i, a) in r.attachments.iter().enumerate() {
                    tr data-attachment=(i + 1) {
                        td { (i + 1) }
                        td { (a.name.as_deref().unwrap_or("—")) }
                        td { code { (a.content_type) } }
                        td { (a.size) }
                        td { code { (a.sha256) } }
                    }
                }
            }
        }
    };
    page(l, &r.id, "", body, false).into_response()
}

pub async fn deadlines(State(st): State<AppState>, ui: Ui) -> Response {
    let l = ui.lang;
    let recs = match st.ops().deadlines().await {
        Ok(r) => r,
        Err(e) => return ui_error(l, e.into()),
    };
    let open: Vec<&RequestRecord> = recs.iter().collect();
    let now = now_ms();
    let heads = ["deadline", "id", "state", "service", "case"];
    let body = html! {
        h2 { (t(l, "deadlines")) }
        table {
            thead { tr { @for h in heads { th { (t(l, h)) } } } }
            tbody {
                @for r in &open {
                    @let days = r.deadline_ms.saturating_sub(now) as f64 / 86_400_000.0;
                    tr {
                        td {
                            (when(r.deadline_ms)) " "
                            span.muted { "(" (format!("{days:.1}")) " " (t(l, "days")) " " (t(l, "left")) ")" }
                            @if r.at_risk {
                                " " span class="badge bad" { "■ " (t(l, "at-risk")) }
                            }
                        }
                        td { a href={ "/ui/requests/" (r.id) } { code { (r.id) } } }
                        td { (state_badge(l, r.state)) }
                        td { (r.service) }
                        td { (r.case) }
                    }
                }
            }
        }
    };
    page(l, t(l, "deadlines"), "deadlines", body, false).into_response()
}

pub(super) fn audit_form(ui: &Ui, jmbg: &str) -> Markup {
    let l = ui.lang;
    html! {
        h2 { (t(l, "who")) }
        form method="post" action="/ui/audit" {
            input type="hidden" name="csrf" value=(ui.csrf);
            label { (t(l, "jmbg")) " " input type="text" name="jmbg" inputmode="numeric" autocomplete="off" value=(jmbg); }
            " "
            button.primary { (t(l, "search")) }
        }
        h2 { (t(l, "verify")) }
        (button(ui, "/ui/audit/verify", t(l, "verify"), false))
    }
}

pub async fn audit_page(ui: Ui, notice: axum::extract::Query<Notice>) -> Response {
    let l = ui.lang;
    let body = html! {
        (banner(notice.done.as_deref(), false))
        (banner(notice.failed.as_deref(), true))
        (audit_form(&ui, ""))
    };
    page(l, t(l, "audit"), "audit", body, false).into_response()
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
    let body = WhoIn {
        jmbg: f.jmbg.trim().to_owned(),
        from: None,
        to: None,
    };
    let report = match async {
        let who = crate::api::layers::Auditor::of(&ui.who)?;
        Ok::<_, ApiError>(st.ops().who(&who.name, &body).await?)
    }
    .await
    {
        Ok(r) => r,
        Err(e) => {
            let body = html! {
                (banner(Some(&e.to_string_for_ui()), true))
                (audit_form(&ui, ""))
            };
            return page(l, t(l, "audit"), "audit", body, false).into_response();
        }
    };
    let heads = [
        "when",
        "action",
        "official",
        "case",
        "service",
        "legal-basis",
        "purpose",
    ];
    let body = html! {
        (audit_form(&ui, ""))
        h2 { (t(l, "who")) " — " (report.subject) " (" (report.accesses.len()) ")" }
        p.noprint { button onclick="window.print()" { (t(l, "print")) } }
        table #accesses {
            thead { tr { @for h in heads { th { (t(l, h)) } } } }
            tbody {
                @for a in &report.accesses {
                    tr {
                        td { (when(a.at_ms)) }
                        td { (a.action) }
                        td { (a.official) " " span.muted { "(" (a.actor) ")" } }
                        td { (a.case) }
                        td { (a.service) }
                        td { (a.legal_basis) }
                        td { (a.purpose) }
                    }
                }
            }
        }
    };
    page(l, t(l, "who"), "audit", body, false).into_response()
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
    let who = match crate::api::layers::Auditor::of(&ui.who) {
        Ok(w) => w,
        Err(e) => return back("/ui/audit", Err(e)),
    };
    // Audited as from the API: who walked the chain, and what it found.
    let report = st.ops().verify(&who.name).await.map_err(ApiError::from);
    match report {
        Ok(r) => match r.broken {
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
        Err(e) => back("/ui/audit", Err(e)),
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
    let who = match crate::api::layers::Operator::of(&ui.who) {
        Ok(o) => o,
        Err(e) => return back("/ui", Err(e)),
    };
    let ops = st.ops();
    let r = match action.as_str() {
        "retry" => ops
            .retry(&who.name, &id)
            .await
            .map(|r| format!("{}: {} → {}", t(l, "retry"), r.id, state_word(l, r.state))),
        "cancel" => ops
            .cancel(&who.name, &id)
            .await
            .map(|r| format!("{}: {} → {}", t(l, "cancel"), r.id, state_word(l, r.state))),
        _ => Err(OpsError::NotFound(format!("no action {action}"))),
    };
    back("/ui", r.map_err(ApiError::from))
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
    let who = match crate::api::layers::Operator::of(&ui.who) {
        Ok(o) => o,
        Err(e) => return back("/ui", Err(e)),
    };
    let ops = st.ops();
    let r = match action.as_str() {
        "pause" => ops
            .pause(&who.name, &name, None)
            .await
            .map(|_| format!("{name}: {}", t(l, "paused"))),
        "resume" => ops
            .resume(&who.name, &name)
            .await
            .map(|_| format!("{name}: {}", t(l, "active"))),
        "retry-dead" => ops
            .retry_dead(
                &who.name,
                RetryDeadIn {
                    registry: Some(name.clone()),
                    ..Default::default()
                },
            )
            .await
            .map(|o| format!("{name}: {} {}/{}", t(l, "retry-dead"), o.retried, o.matched)),
        _ => Err(OpsError::NotFound(format!("no action {action}"))),
    };
    back("/ui", r.map_err(ApiError::from))
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn shown(l: Lang, e: ApiError) -> (u16, String) {
        let r = ui_error(l, e);
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// A conflict is told with its status and reason; a fault of ours
    /// (5xx) with its status and title only, its detail kept for the log.
    #[tokio::test]
    async fn the_error_page_has_the_problems_status_and_title_and_no_inner_detail() {
        let (status, html) = shown(
            Lang::Hu,
            ApiError::StateConflict("request 01X is delivered: nothing to retry".into()),
        )
        .await;
        assert_eq!(status, 409);
        assert!(
            html.contains("<h2>Ebben az állapotban nem lehetséges</h2>"),
            "{html}"
        );
        assert!(html.contains("HTTP 409"), "{html}");
        assert!(
            html.contains("request 01X is delivered: nothing to retry"),
            "{html}"
        );
        let (status, html) = shown(
            Lang::En,
            ApiError::Unavailable("postgres://jumgw@db.local: connection refused".into()),
        )
        .await;
        assert_eq!(status, 503);
        assert!(html.contains("<h2>Temporarily unavailable</h2>"), "{html}");
        assert!(!html.contains("db.local"), "{html}");
        let (status, html) = shown(
            Lang::En,
            ApiError::Invalid(vec![("/jmbg".into(), "check digit".into())]),
        )
        .await;
        assert_eq!(status, 422);
        assert!(html.contains("/jmbg: check digit"), "{html}");
    }
}
