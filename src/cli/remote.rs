//! The commands that talk to a running gateway over its API: `jumgw
//! request` (files a request and waits for it) and the operators' `jumgw
//! queue`, `jumgw registries`, `jumgw audit` over the admin API. Tables fit an 80-column terminal (wider if
//! `$COLUMNS` says so); `--json` prints the API's answer for scripts.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{failed, runtime, CmdResult, Fail, RequestArgs};

/// Where the gateway is and who asks.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token (default: $JUMGW_TOKEN).
    #[arg(long, env = "JUMGW_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// queued, sending, awaiting, retrying, fetched, delivered, dead, cancelled.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    registry: Option<String>,
    #[arg(long)]
    service: Option<String>,
    #[arg(long)]
    case: Option<String>,
    #[arg(long)]
    client: Option<String>,
    /// Text the last error contains.
    #[arg(long)]
    error: Option<String>,
    /// Filed longer ago than this (10m, 2h, 1d).
    #[arg(long)]
    older_than: Option<String>,
}

impl FilterArgs {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("state", &self.state),
            ("registry", &self.registry),
            ("service", &self.service),
            ("case", &self.case),
            ("client", &self.client),
            ("error", &self.error),
            ("older_than", &self.older_than),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// List requests, newest first (filters combine).
    Ls {
        #[command(flatten)]
        filter: FilterArgs,
        /// Oldest first.
        #[arg(long)]
        oldest: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Continue after this id (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// One request with every attempt.
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Retry one request now, or every dead one that matches (--dead).
    Retry {
        #[arg(required_unless_present = "dead")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        dead: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// With --dead: only count.
        #[arg(long, requires = "dead")]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a request that has not finished.
    Cancel {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Requests by state, overall and per registry.
    Stats {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum RegistriesCommand {
    /// Breaker, pause, maintenance, queue, last success and error.
    Ls {
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop sending to a registry (until --until, RFC 3339, or resume).
    Pause {
        name: String,
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Resume {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 at the first broken link.
    Verify {
        #[command(flatten)]
        remote: Remote,
    },
    /// Every access to data about a person: when, by whom, in which case, why.
    Who {
        jmbg: String,
        /// From this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

impl Remote {
    pub(super) fn new(url: &str, token: &str) -> Remote {
        Remote {
            url: url.to_owned(),
            token: token.to_owned(),
            json: false,
        }
    }
}

/// One call; a problem+json answer becomes exit 1 with its title, detail
/// and the fields it names.
pub(super) async fn call(
    http: &reqwest::Client,
    r: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Fail> {
    let base = r.url.trim_end_matches('/');
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(&r.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(failed(base))?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(failed(base))?;
    if status.is_success() {
        Ok(v)
    } else {
        Err(Fail::Invalid(problem_text(&v)))
    }
}

fn columns() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c: &usize| *c >= 40)
        .unwrap_or(80)
}

fn cut(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        format!("{s:<w$}")
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A table whose last column takes what the others leave.
pub fn table(headers: &[&str], widths: &[usize], rows: &[Vec<String>]) -> String {
    let fixed: usize = widths.iter().sum::<usize>() + widths.len();
    let last = columns().saturating_sub(fixed).max(8);
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(last);
            out.push_str(&cut(c, w));
            out.push(' ');
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn age(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let s = crate::time::now_ms().saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn when(ms: Option<u64>) -> String {
    ms.and_then(|m| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(m as i64))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print(remote: &Remote, v: &Value, text: impl FnOnce(&Value) -> String) -> CmdResult {
    let out = if remote.json {
        serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
    } else {
        text(v)
    };
    super::local::write_stdout(out.as_bytes())
}

fn request_rows(list: &[Value]) -> Vec<Vec<String>> {
    list.iter()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["state"]),
                s(&r["service"]),
                age(r["created_ms"].as_u64()),
                s(&r["error"]),
            ]
        })
        .collect()
}

const REQUEST_HEADERS: [&str; 5] = ["ID", "STATE", "SERVICE", "AGE", "ERROR"];
const REQUEST_WIDTHS: [usize; 4] = [26, 9, 22, 4];

fn show_request(v: &Value) -> String {
    let mut out = String::new();
    for (k, label) in [
        ("id", "id"),
        ("state", "state"),
        ("service", "service"),
        ("case", "case"),
        ("client", "client"),
        ("official", "official"),
        ("legal_basis", "legal basis"),
        ("purpose", "purpose"),
        ("subject", "subject"),
        ("document_id", "document"),
        ("error", "error"),
    ] {
        out.push_str(&format!("{label:<12} {}\n", s(&v[k])));
    }
    out.push_str(&format!(
        "{:<12} {}\n",
        "filed",
        when(v["created_ms"].as_u64())
    ));
    out.push_str(&format!(
        "{:<12} {}\n",
        "deadline",
        when(v["deadline_ms"].as_u64())
    ));
    let rows: Vec<Vec<String>> = v["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                when(a["at_ms"].as_u64()),
                format!("{}ms", s(&a["duration_ms"])),
                s(&a["http_status"]),
                s(&a["outcome"]),
                s(&a["detail"]),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["AT", "TOOK", "HTTP", "OUTCOME", "DETAIL"],
        &[19, 7, 4, 9],
        &rows,
    ));
    out
}

pub fn queue(cmd: QueueCommand) -> CmdResult {
    let http = reqwest::Client::new();
    runtime()?.block_on(async {
        match cmd {
            QueueCommand::Ls {
                filter,
                oldest,
                limit,
                after,
                remote,
            } => {
                let mut q = filter.pairs();
                q.push(("order", if oldest { "oldest" } else { "newest" }.into()));
                q.push(("limit", limit.to_string()));
                if let Some(a) = after {
                    q.push(("after", a));
                }
                let qs: Vec<String> = q
                    .iter()
                    .map(|(k, v)| format!("{k}={}", crate::api::requests::case_segment(v)))
                    .collect();
                let v = call(
                    &http,
                    &remote,
                    reqwest::Method::GET,
                    &format!("/admin/v1/requests?{}", qs.join("&")),
                    None,
                )
                .await?;
                print(&remote, &v, |v| {
                    let list = v["requests"].as_array().cloned().unwrap_or_default();
                    let mut out = table(&REQUEST_HEADERS, &REQUEST_WIDTHS, &request_rows(&list));
                    out.push_str(&format!("{} of {}", list.len(), s(&v["total"])));
                    if let Some(n) = v["next"].as_str() {
                        out.push_str(&format!("; more with --after {n}"));
                    }
                    out + "\n"
                })
            }
            QueueCommand::Show { id, remote } => {
                let v = call(
                    &http,
                    &remote,
                    reqwest::Method::GET,
                    &format!("/admin/v1/requests/{id}"),
                    None,
                )
                .await?;
                print(&remote, &v, show_request)
            }
            QueueCommand::Cancel { id, remote } => act(&http, &remote, &id, "cancel").await,
            QueueCommand::Retry {
                id: Some(id),
                remote,
                ..
            } => act(&http, &remote, &id, "retry").await,
            QueueCommand::Retry {
                id: None,
                filter,
                dry_run,
                remote,
                ..
            } => retry_dead(&http, &remote, &filter, dry_run).await,
            QueueCommand::Stats { remote } => {
                let v = call(
                    &http,
                    &remote,
                    reqwest::Method::GET,
                    "/admin/v1/stats",
                    None,
                )
                .await?;
                print(&remote, &v, |v| {
                    let states: Vec<String> = crate::store::State::ALL
                        .iter()
                        .map(|x| x.name().to_owned())
                        .collect();
                    let short = [
                        "queued", "sending", "awaiting", "retrying", "fetched", "deliv.", "dead",
                        "cancel.",
                    ];
                    let mut headers = vec!["REGISTRY"];
                    headers.extend(short);
                    let row = |name: &str, m: &Value| {
                        let mut r = vec![name.to_owned()];
                        r.extend(
                            states
                                .iter()
                                .map(|st| m[st].as_u64().unwrap_or(0).to_string()),
                        );
                        r
                    };
                    let mut rows: Vec<Vec<String>> = v["registries"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, m)| row(k, m))
                        .collect();
                    rows.push(row("all", &v["states"]));
                    let mut out = table(&headers, &[9, 7, 7, 8, 8, 7, 7, 6], &rows);
                    out.push_str(&format!(
                        "oldest open request filed {} ago; {} near their ZUP deadline\n",
                        age(v["oldest_queued_ms"].as_u64()),
                        s(&v["at_risk"])
                    ));
                    out
                })
            }
        }
    })
}

/// Retry or cancel one request; prints its new state.
async fn act(http: &reqwest::Client, remote: &Remote, id: &str, action: &str) -> CmdResult {
    let path = format!("/admin/v1/requests/{id}/{action}");
    let v = call(http, remote, reqwest::Method::POST, &path, None).await?;
    print(remote, &v, |v| {
        format!("{}: {}\n", s(&v["id"]), s(&v["state"]))
    })
}

/// Bulk retry with a progress bar: the matching ids first, then one retry
/// each, so that an interrupted run can simply be repeated.
async fn retry_dead(
    http: &reqwest::Client,
    remote: &Remote,
    filter: &FilterArgs,
    dry_run: bool,
) -> CmdResult {
    let mut body = serde_json::Map::new();
    for (k, v) in filter.pairs() {
        if k != "state" {
            body.insert(k.into(), Value::String(v));
        }
    }
    body.insert("dry_run".into(), Value::Bool(true));
    let found = call(
        http,
        remote,
        reqwest::Method::POST,
        "/admin/v1/requests/retry-dead",
        Some(Value::Object(body)),
    )
    .await?;
    let ids: Vec<String> = found["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect();
    if dry_run {
        return print(remote, &found, |v| {
            format!("{} dead requests match\n", s(&v["matched"]))
        });
    }
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    if remote.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} retried ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut retried, mut refused) = (0, Vec::new());
    for id in &ids {
        match call(
            http,
            remote,
            reqwest::Method::POST,
            &format!("/admin/v1/requests/{id}/retry"),
            None,
        )
        .await
        {
            Ok(_) => retried += 1,
            Err(Fail::Invalid(m)) => refused.push(format!("{id}: {m}")),
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let v = json!({"matched": ids.len(), "retried": retried, "refused": refused});
    print(remote, &v, |v| {
        let mut out = format!(
            "{} of {} dead requests retried\n",
            s(&v["retried"]),
            s(&v["matched"])
        );
        for r in &refused {
            out.push_str(&format!("  {r}\n"));
        }
        out
    })
}

pub fn registries(cmd: RegistriesCommand) -> CmdResult {
    let http = reqwest::Client::new();
    runtime()?.block_on(async {
        let (v, remote) = match cmd {
            RegistriesCommand::Ls { remote } => {
                let v = call(
                    &http,
                    &remote,
                    reqwest::Method::GET,
                    "/admin/v1/registries",
                    None,
                )
                .await?;
                return print(&remote, &v, |v| {
                    let rows: Vec<Vec<String>> = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            let queued: u64 = r["queue"]
                                .as_object()
                                .into_iter()
                                .flatten()
                                .filter_map(|(_, n)| n.as_u64())
                                .sum();
                            let state = if r["paused"] == true {
                                "paused"
                            } else if r["in_maintenance"] == true {
                                "maintenance"
                            } else {
                                "active"
                            };
                            let cert = r["certificates"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|c| c["days_left"].as_i64())
                                .min()
                                .map_or("-".into(), |d| format!("{d}d"));
                            vec![
                                s(&r["registry"]),
                                s(&r["breaker"]),
                                state.into(),
                                s(&r["in_flight"]),
                                queued.to_string(),
                                age(r["last"]["success_ms"].as_u64()),
                                cert,
                                format!(
                                    "{} {}",
                                    s(&r["revocation"]["policy"]),
                                    age(r["revocation"]["last_good_ms"].as_u64())
                                ),
                                s(&r["last"]["error"]),
                            ]
                        })
                        .collect();
                    table(
                        &[
                            "REGISTRY",
                            "BREAKER",
                            "STATE",
                            "FLY",
                            "QUEUE",
                            "OK AGO",
                            "CERT",
                            "REVOCATION",
                            "LAST ERROR",
                        ],
                        &[9, 9, 11, 3, 5, 6, 5, 14],
                        &rows,
                    )
                });
            }
            RegistriesCommand::Pause {
                name,
                until,
                remote,
            } => {
                let body = json!({"until": until});
                (
                    call(
                        &http,
                        &remote,
                        reqwest::Method::POST,
                        &format!("/admin/v1/registries/{name}/pause"),
                        Some(body),
                    )
                    .await?,
                    remote,
                )
            }
            RegistriesCommand::Resume { name, remote } => (
                call(
                    &http,
                    &remote,
                    reqwest::Method::POST,
                    &format!("/admin/v1/registries/{name}/resume"),
                    None,
                )
                .await?,
                remote,
            ),
        };
        print(&remote, &v, |v| {
            format!(
                "{}: {}{}\n",
                s(&v["registry"]),
                if v["paused"] == true {
                    "paused"
                } else {
                    "active"
                },
                v["paused_until"]
                    .as_u64()
                    .map(|u| format!(" until {}", when(Some(u))))
                    .unwrap_or_default()
            )
        })
    })
}

/// `jumgw dossier export`: the container, written whole or not at all.
pub fn dossier_export(case: &str, out: &std::path::Path, r: &Remote) -> CmdResult {
    let http = reqwest::Client::new();
    runtime()?.block_on(async {
        let base = r.url.trim_end_matches('/');
        let path: String = case
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let resp = http
            .get(format!("{base}/api/v1/cases/{path}/dossier"))
            .bearer_auth(&r.token)
            .send()
            .await
            .map_err(failed(base))?;
        let status = resp.status();
        if !status.is_success() {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(Fail::Invalid(problem_text(&v)));
        }
        let bytes = resp.bytes().await.map_err(failed(base))?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed("the output folder"))?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(failed("writing the dossier"))?;
        tmp.persist(out)
            .map_err(|e| Fail::Failed(format!("{}: {}", out.display(), e.error)))?;
        println!(
            "{} ({} bytes): check it with `jumgw dossier verify {}`",
            out.display(),
            bytes.len(),
            out.display()
        );
        Ok(())
    })
}

pub fn audit(cmd: AuditCommand) -> CmdResult {
    let http = reqwest::Client::new();
    runtime()?.block_on(async {
        match cmd {
            AuditCommand::Verify { remote } => {
                let v = call(
                    &http,
                    &remote,
                    reqwest::Method::POST,
                    "/admin/v1/audit/verify",
                    None,
                )
                .await?;
                print(&remote, &v, |v| match v["broken"].as_object() {
                    None => format!(
                        "intact: {} entries, head {} {}, {} checkpoints\n",
                        s(&v["entries"]),
                        s(&v["head_seq"]),
                        s(&v["head_hash"]),
                        s(&v["checkpoints"])
                    ),
                    Some(b) => format!("BROKEN at entry {}: {}\n", s(&b["seq"]), s(&b["reason"])),
                })?;
                if v["broken"].is_object() {
                    return Err(Fail::Code(1, "the audit trail is broken".into()));
                }
                Ok(())
            }
            AuditCommand::Who {
                jmbg,
                from,
                to,
                remote,
            } => {
                let v = call(
                    &http,
                    &remote,
                    reqwest::Method::POST,
                    "/admin/v1/audit/who",
                    Some(json!({"jmbg": jmbg, "from": from, "to": to})),
                )
                .await?;
                print(&remote, &v, |v| {
                    let rows: Vec<Vec<String>> = v["accesses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            vec![
                                when(a["at_ms"].as_u64()),
                                s(&a["action"]),
                                s(&a["official"]),
                                s(&a["case"]),
                                format!("{}; {}", s(&a["legal_basis"]), s(&a["purpose"])),
                            ]
                        })
                        .collect();
                    let mut out = format!(
                        "Accesses to data about {}: {}\n\n",
                        s(&v["subject"]),
                        rows.len()
                    );
                    out.push_str(&table(
                        &[
                            "WHEN (UTC)",
                            "ACTION",
                            "OFFICIAL",
                            "CASE",
                            "LEGAL BASIS; PURPOSE",
                        ],
                        &[19, 16, 12, 14],
                        &rows,
                    ));
                    out
                })
            }
        }
    })
}

/// A problem+json answer for a terminal: title, detail, each bad field.
pub(super) fn problem_text(v: &serde_json::Value) -> String {
    let mut m = format!(
        "{}: {}",
        v["title"].as_str().unwrap_or("refused"),
        v["detail"].as_str().unwrap_or("")
    );
    for e in v["errors"].as_array().into_iter().flatten() {
        m.push_str(&format!(
            "\n  {}: {}",
            e["pointer"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or("")
        ));
    }
    m
}

pub(super) fn request(a: RequestArgs) -> CmdResult {
    let subject: serde_json::Map<String, serde_json::Value> = a
        .subject
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    let body = serde_json::json!({
        "case": {"number": a.case, "legal_basis": a.legal_basis, "official": a.official},
        "service": a.service,
        "subject": subject,
        "purpose": a.purpose,
    });
    let base = a.url.trim_end_matches('/').to_owned();
    runtime()?.block_on(async {
        let http = reqwest::Client::new();
        let mut req = http
            .post(format!("{base}/api/v1/requests"))
            .bearer_auth(&a.token)
            .json(&body);
        if let Some(k) = &a.idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await.map_err(failed(&base))?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.map_err(failed(&base))?;
        if status.as_u16() != 202 {
            return Err(Fail::Invalid(problem_text(&v)));
        }
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        println!("{id}");
        if !a.wait {
            return Ok(());
        }
        let mut last = String::new();
        let remote = Remote::new(&base, &a.token);
        loop {
            let v = call(
                &http,
                &remote,
                reqwest::Method::GET,
                &format!("/api/v1/requests/{id}"),
                None,
            )
            .await?;
            let state = v["state"].as_str().unwrap_or("?").to_owned();
            let line = format!(
                "{state} ({} attempts)",
                v["attempts"].as_array().map_or(0, |x| x.len())
            );
            if line != last {
                eprintln!("{id}: {line}");
                last = line;
            }
            match state.as_str() {
                "delivered" => break,
                "dead" | "cancelled" => {
                    return Err(Fail::Code(
                        5,
                        format!("{id} ended {state}: {}", v["error"].as_str().unwrap_or("")),
                    ));
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
        if let Some(out) = &a.out {
            let bytes = http
                .get(format!("{base}/api/v1/documents/{id}/content"))
                .bearer_auth(&a.token)
                .send()
                .await
                .map_err(failed(&base))?
                .bytes()
                .await
                .map_err(failed(&base))?;
            std::fs::write(out, &bytes).map_err(failed(&out.display().to_string()))?;
            eprintln!("saved the signed document to {}", out.display());
        }
        Ok(())
    })
}
