//! `jumgw bench queries`: the operators' views over a big store. Fills a
//! store (sled, or a new database on a PostgreSQL server) with a mix of
//! requests as a busy hub would hold them, then calls each view over
//! loopback HTTP and reports its p50 and p99. The baseline, measured in
//! the same run on the same store, is one pass over every record: what
//! each of these views cost before they were served by counters and
//! indexes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::api::{self, Client};
use crate::store::{QueueStore, RequestRecord, State};

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

pub struct Options {
    pub json: bool,
    pub requests: u64,
    pub calls: usize,
    /// A PostgreSQL server URL (a database is made and dropped); None: sled.
    pub store: Option<String>,
}

const SERVICES: [(&str, &str); 3] = [
    ("civil.birth-extract", "civil"),
    ("cadastre.property-sheet", "cadastre"),
    ("tax.property-tax-status", "tax"),
];

const DAY: u64 = 86_400_000;

/// Request `i` of `n`, filed over the last 30 days: 60 % delivered, 10 %
/// dead, 20 % retrying and 10 % queued (those due tomorrow, so nothing is
/// sent while measuring); a tenth of the open ones near their deadline.
fn record(i: u64, n: u64, now: u64) -> RequestRecord {
    let (service, registry) = SERVICES[(i % 3) as usize];
    let filed = now - 30 * DAY + i * (30 * DAY / n.max(1));
    let mut r = super::queued(i % 5000, service, registry).at(filed);
    match i % 20 {
        0..=11 => {
            r.state = State::Delivered;
            r.due_ms = None;
            r.delivered_ms = Some(filed + 2_000);
        }
        12 | 13 => {
            r.state = State::Dead;
            r.due_ms = None;
            r.error = Some("permanent failure: registry found no data".into());
        }
        14..=17 => {
            r.state = State::Retrying;
            r.due_ms = Some(now + DAY);
            r.at_risk = i % 10 == 4;
        }
        _ => r.due_ms = Some(now + DAY),
    }
    r
}

async fn fill(store: &dyn QueueStore, n: u64) -> Result<(), String> {
    let now = crate::time::now_ms();
    let mut i = 0;
    while i < n {
        let batch: Vec<RequestRecord> =
            (i..(i + 5_000).min(n)).map(|k| record(k, n, now)).collect();
        i += batch.len() as u64;
        store.enqueue(batch).await.map_err(err)?;
    }
    store.flush().await.map_err(err)
}

/// p50 and p99 in ms of `calls` sequential GETs.
async fn time(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: &str,
    calls: usize,
) -> Result<(f64, f64), String> {
    let mut ms = Vec::with_capacity(calls);
    for k in 0..calls + calls / 10 {
        let t = Instant::now();
        let r = http
            .get(url)
            .bearer_auth(token)
            .header("cookie", session)
            .send()
            .await
            .map_err(err)?;
        let status = r.status();
        r.bytes().await.map_err(err)?;
        if !status.is_success() {
            return Err(format!("{url}: {status}"));
        }
        // The first tenth warms caches and connections.
        if k >= calls / 10 {
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok((at(0.5), at(0.99)))
}

pub fn run(o: Options) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(err)?;
    rt.block_on(async {
        let dir = tempfile::tempdir_in(".").map_err(err)?;
        let db = match &o.store {
            Some(server) => Some((
                server.clone(),
                crate::store::postgres::create_database(server, "queries")?,
            )),
            None => None,
        };
        let store: Arc<dyn QueueStore> = match &db {
            Some((_, url)) => crate::store::postgres::PgStore::open(url, 8)
                .await
                .map_err(err)?,
            None => {
                crate::store::SledStore::open(&dir.path().join("store"), 256 << 20).map_err(err)?
            }
        };
        let t = Instant::now();
        fill(&*store, o.requests).await?;
        let fill_s = t.elapsed().as_secs_f64();
        let out = measure(&o, store.clone(), dir.path(), fill_s).await;
        store.close().await.map_err(err)?;
        drop(store);
        if let Some((server, url)) = db {
            crate::store::postgres::drop_database(&server, &url)?;
        }
        let r = out?;
        if o.json {
            println!("{}", serde_json::to_string_pretty(&r).map_err(err)?);
        } else {
            for (k, v) in &r {
                println!("{k:<40} {v:>12.2}");
            }
        }
        Ok(())
    })
}

async fn measure(
    o: &Options,
    store: Arc<dyn QueueStore>,
    dir: &std::path::Path,
    fill_s: f64,
) -> Result<BTreeMap<String, f64>, String> {
    let token = "bench-admin";
    let state = super::paused_gateway(
        dir,
        store.clone(),
        [(api::token_hash(token), Client::unlimited("ops", true))]
            .into_iter()
            .collect(),
    )?
    .with_metrics(crate::metrics::install());
    let mut r: BTreeMap<String, f64> = BTreeMap::new();
    r.insert("requests".into(), o.requests as f64);
    r.insert("fill_s".into(), fill_s);
    // The baseline: one pass over every record, best of three.
    let mut scan_ms = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0u64;
        crate::store::for_each(&*store, |_| {
            n += 1;
            Ok::<(), crate::store::StoreError>(())
        })
        .await
        .map_err(err)?;
        if n != o.requests {
            return Err(format!("the store holds {n} requests, not {}", o.requests));
        }
        scan_ms = scan_ms.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    r.insert("baseline_full_scan_ms".into(), scan_ms);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let server = tokio::spawn(async move { axum::serve(listener, api::app(state)).await });
    let http = reqwest::Client::new();
    // The dashboard's session, signed in as an operator would.
    let signed_in = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(err)?
        .post(format!("http://{addr}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .map_err(err)?;
    let session = signed_in
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .ok_or("the dashboard gave no session")?
        .to_owned();
    let views = [
        ("metrics", "/metrics"),
        ("admin_stats", "/admin/v1/stats"),
        ("admin_list_dead", "/admin/v1/requests?state=dead"),
        ("dashboard_overview", "/ui"),
    ];
    let mut failed = None;
    for (name, path) in views {
        match time(
            &http,
            &format!("http://{addr}{path}"),
            token,
            &session,
            o.calls,
        )
        .await
        {
            Ok((p50, p99)) => {
                r.insert(format!("{name}_p50_ms"), p50);
                r.insert(format!("{name}_p99_ms"), p99);
                r.insert(format!("{name}_p99_vs_full_scan"), p99 / scan_ms);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    server.abort();
    match failed {
        Some(e) => Err(e),
        None => Ok(r),
    }
}
