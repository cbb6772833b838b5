//! `jumgw bench e2e`: the whole path under load. The simulator and the
//! gateway run as separate processes on loopback, with real mutual TLS and
//! signatures on both sides; requests go in through the back-office API and
//! are counted when delivered into their case folders (fsync included).
//! Reported beside the crypto bound measured in the same run: cores × raw
//! openssl sign rate / 2 (every exchange needs two signatures, our request
//! and the registry's answer).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pki::KeyKind;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub struct Options {
    pub json: bool,
    pub requests: usize,
    pub alg: KeyKind,
    pub faults: String,
    /// Requests in flight at the API (closed loop).
    pub concurrency: usize,
    /// Offered load in requests/s (open loop); 0: as fast as accepted.
    pub rate: f64,
    /// How the bench client takes documents: folder (default) or pull.
    pub delivery: String,
    /// A PostgreSQL server (`postgres://user@host:port`): each measurement
    /// runs on a database of its own there, dropped afterwards. None: sled.
    pub store: Option<String>,
    /// Gateway instances sharing the store (PostgreSQL only).
    pub instances: usize,
    /// Only accept: the registries are paused, nothing is sent.
    pub accept_only: bool,
    /// Measure sled on one instance and PostgreSQL on 1..=scale instances,
    /// accepts and exchanges, as one table with ratios to sled.
    pub scale: usize,
    /// The registries' revocation policy in the gateway (their signers
    /// checked by OCSP at the simulator's development CA, or not).
    pub revocation: crate::config::RevocationPolicy,
    /// Documents timestamped by the simulator's TSA (the evidence job
    /// running beside the exchanges), or no TSA configured.
    pub timestamps: bool,
}

struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which may contain spaces: ") S ...".
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// Peak resident set of a process, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A loopback port free a moment ago, for a child process to listen on.
/// Chosen at random below the kernel's ephemeral range (32768 and up on
/// Linux), where no outgoing connection takes it as its source port in
/// the meantime, as one released by `bind(0)` can be.
pub fn free_port() -> Result<u16, String> {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free loopback port between 20000 and 32000".into())
}

/// Raw openssl signatures per second on one core, for the algorithm.
pub fn sign_rate(alg: KeyKind, seconds: f64) -> Result<f64, String> {
    let key = crate::pki::new_key(alg).map_err(err)?;
    let data = [7u8; 64];
    super::rate(seconds, || {
        let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)?;
        s.update(&data)?;
        s.sign_to_vec().map(drop)
    })
}

fn wait_for_line(child: &mut Child, prefix: &str, name: &str) -> Result<(), String> {
    use std::io::BufRead;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with(prefix) => break,
            Some(Ok(_)) => continue,
            _ => return Err(format!("{name} exited before it was ready")),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(())
}

struct Setup {
    _dir: tempfile::TempDir,
    sim: Proc,
    gws: Vec<Proc>,
    bases: Vec<String>,
    token: String,
    /// The database made for this run, dropped with the setup.
    db: Option<(String, String)>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for g in &mut self.gws {
            let _ = g.child.kill();
            let _ = g.child.wait();
        }
        if let Some((server, url)) = &self.db {
            let _ = crate::store::postgres::drop_database(server, url);
        }
    }
}

fn start(o: &Options) -> Result<Setup, String> {
    let exe = std::env::current_exe().map_err(err)?;
    let dir = tempfile::tempdir().map_err(err)?;
    let certs = dir.path().join("certs");
    crate::pki::init_dev_with(&certs, false, o.alg).map_err(err)?;
    let c = certs.display().to_string();
    if o.instances > 1 && o.store.is_none() {
        return Err("--instances above 1 needs --store postgres://...: sled has one owner".into());
    }
    let ports: Vec<u16> = (0..4 + o.instances.max(1))
        .map(|_| free_port())
        .collect::<Result<_, _>>()?;
    let db = match &o.store {
        Some(server) => Some((
            server.clone(),
            crate::store::postgres::create_database(server, "bench")?,
        )),
        None => None,
    };
    let sim_toml = include_str!("../../config/simulator.toml")
        .replace("certs/dev", &c)
        .replace("127.0.0.1:9440", &format!("127.0.0.1:{}", ports[0]))
        .replace("port = 9441", &format!("port = {}", ports[1]))
        .replace("port = 9442", &format!("port = {}", ports[2]))
        .replace("port = 9443", &format!("port = {}", ports[3]));
    let token = "bench-e2e-token".to_owned();
    let hash = crate::api::token_hash(&token);
    // The development CA answers OCSP on the simulator's control port,
    // not at the default address its certificates name.
    let ocsp = format!("\nocsp_url = \"http://127.0.0.1:{}/ocsp\"", ports[0]);
    let tsa = if o.timestamps {
        format!("tsa_url = \"http://127.0.0.1:{}/tsa\"", ports[0])
    } else {
        String::new()
    };
    let gw_toml = include_str!("../../config/gateway.toml")
        .replace("certs/dev", &c)
        .replace("tsa_url = \"http://127.0.0.1:9440/tsa\"", &tsa)
        .replace(
            "\"https://127.0.0.1:9441/\"",
            &format!("\"https://127.0.0.1:{}/\"{ocsp}", ports[1]),
        )
        .replace(
            "\"https://127.0.0.1:9442/\"",
            &format!("\"https://127.0.0.1:{}/\"{ocsp}", ports[2]),
        )
        .replace(
            "\"https://127.0.0.1:9443/\"",
            &format!("\"https://127.0.0.1:{}/\"{ocsp}", ports[3]),
        )
        + &format!(
            "\n[clients.bench]\ntoken_sha256 = \"{hash}\"\nrole = \"admin\"\ndelivery = \"{}\"\n",
            o.delivery
        );
    let sim_path = dir.path().join("simulator.toml");
    let gw_path = dir.path().join("gateway.toml");
    std::fs::write(&sim_path, sim_toml).map_err(err)?;
    std::fs::write(&gw_path, gw_toml).map_err(err)?;

    let mut sim = Command::new(&exe);
    sim.args(["simulate", "--config"])
        .arg(&sim_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if !o.faults.is_empty() {
        sim.args(["--faults", &o.faults]);
    }
    let mut sim = Proc {
        child: sim.spawn().map_err(err)?,
        name: "simulator",
    };
    wait_for_line(&mut sim.child, "control on", sim.name)?;
    // The simulator is ready when its ports accept connections.
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", ports[3])).is_err() {
        if ready.elapsed() > Duration::from_secs(10) {
            return Err("the simulator did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let data = dir.path().join("data");
    // Outside --demo the keys must exist: made here, as an operator would.
    for k in ["documents.key", "audit.key"] {
        crate::store::crypt::read_key_file(&data.join("keys").join(k), true).map_err(err)?;
    }
    let mut setup = Setup {
        sim,
        gws: Vec::new(),
        bases: Vec::new(),
        token,
        db,
        _dir: dir,
    };
    // Instances share the data folder (keys, case folders) and the store.
    for (i, port) in ports[4..].iter().enumerate() {
        let log = setup._dir.path().join(format!("gateway-{i}.log"));
        let mut gw = Command::new(&exe);
        gw.args(["serve", "--config"])
            .arg(&gw_path)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--schemas")
            .arg(crate::xml::schema::default_dir())
            .env("JUMGW_LOG", "warn")
            .stderr(std::fs::File::create(&log).map_err(err)?)
            // Fast retries so that injected faults do not stall the run.
            .env("JUMGW_RETRY__BASE", "50ms")
            .env("JUMGW_RETRY__CAP", "500ms")
            .env("JUMGW_RETRY__MAX_ATTEMPTS", "40")
            .stdout(Stdio::piped());
        if let Some((_, url)) = &setup.db {
            gw.args(["--store", url]);
        }
        // The registries are not the limit being measured.
        for r in ["CIVIL", "CADASTRE", "TAX"] {
            gw.env(format!("JUMGW_REGISTRIES__{r}__RATE_PER_S"), "1000000")
                .env(format!("JUMGW_REGISTRIES__{r}__MAX_IN_FLIGHT"), "64")
                .env(
                    format!("JUMGW_REGISTRIES__{r}__BREAKER_FAILURES"),
                    "1000000",
                );
            gw.env(
                format!("JUMGW_REGISTRIES__{r}__REVOCATION"),
                o.revocation.name(),
            );
            if o.accept_only {
                gw.env(format!("JUMGW_REGISTRIES__{r}__PAUSED"), "true");
            }
        }
        let mut gw = Proc {
            child: gw.spawn().map_err(err)?,
            name: "gateway",
        };
        wait_for_line(&mut gw.child, "jumgw listening on", gw.name)
            .map_err(|e| format!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        setup.gws.push(gw);
        setup.bases.push(format!("http://127.0.0.1:{port}"));
    }
    Ok(setup)
}

/// One valid subject for each service of the shipped catalogue (the demo
/// simulator knows them all); the tests file the same.
pub const BODIES: [(&str, &str); 6] = [
    ("civil.birth-extract", r#"{"jmbg":"0512981717776"}"#),
    (
        "civil.citizenship-certificate",
        r#"{"jmbg":"0512981717776"}"#,
    ),
    (
        "cadastre.property-sheet",
        r#"{"ko":"803472","sheet":"1520"}"#,
    ),
    ("cadastre.parcel", r#"{"ko":"803472","parcel":"1234/5"}"#),
    ("tax.clearance-certificate", r#"{"pib":"101134702"}"#),
    ("tax.property-tax-status", r#"{"jmbg":"0512981717776"}"#),
];

/// GET an admin API resource of the gateway under test, as JSON.
async fn admin_get(http: &reqwest::Client, url: &str, token: &str) -> Result<Value, String> {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(err)?
        .json()
        .await
        .map_err(err)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs one measurement, or a sweep of offered loads with a chart.
pub fn run(o: Options, sweep: &[f64], chart: Option<&std::path::Path>) -> Result<(), String> {
    if o.scale > 0 {
        return scale(&o);
    }
    if sweep.is_empty() {
        let r = measure(&o)?;
        print(&o, &r)?;
        return Ok(());
    }
    let mut points = Vec::new();
    for &rate in sweep {
        let one = Options {
            rate,
            json: true,
            faults: o.faults.clone(),
            delivery: o.delivery.clone(),
            store: o.store.clone(),
            ..o
        };
        let r = measure(&one)?;
        if !o.json {
            eprintln!(
                "offered {rate:>7.0}/s: delivered {:>7.1}/s, p99 {:>6.0} ms",
                r["exchanges_per_s"].as_f64().unwrap_or(0.0),
                r["p99_ms"].as_f64().unwrap_or(0.0)
            );
        }
        points.push(r);
    }
    if let Some(path) = chart {
        std::fs::write(path, svg(&points)).map_err(err)?;
    }
    println!("{}", serde_json::to_string_pretty(&points).map_err(err)?);
    Ok(())
}

/// Throughput (left axis) and p99 latency (right axis) against offered load.
fn svg(points: &[BTreeMap<&str, Value>]) -> String {
    let get = |r: &BTreeMap<&str, Value>, k: &str| r.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let (w, h, pad) = (640.0, 360.0, 56.0);
    let xmax = points
        .iter()
        .map(|r| get(r, "offered_rate_per_s"))
        .fold(1.0, f64::max);
    let ymax = points
        .iter()
        .map(|r| get(r, "exchanges_per_s").max(get(r, "offered_rate_per_s")))
        .fold(1.0, f64::max);
    let lmax = points.iter().map(|r| get(r, "p99_ms")).fold(1.0, f64::max);
    let x = |v: f64| pad + v / xmax * (w - 2.0 * pad);
    let y = |v: f64, max: f64| h - pad - v / max * (h - 2.0 * pad);
    let line = |k: &str, max: f64| {
        points
            .iter()
            .map(|r| {
                format!(
                    "{:.1},{:.1}",
                    x(get(r, "offered_rate_per_s")),
                    y(get(r, k), max)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let alg = points
        .first()
        .and_then(|r| r.get("alg"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="#fff"/>
<text x="{pad}" y="24" font-size="14">jumgw bench e2e ({alg}): delivered/s and p99 against offered load</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="#333"/><line x1="{r}" y1="{pad}" x2="{r}" y2="{b}" stroke="#333"/>
<polyline fill="none" stroke="#bbb" stroke-dasharray="4 4" points="{x0:.1},{y0:.1} {x1:.1},{y1:.1}"/>
<polyline fill="none" stroke="#0072B2" stroke-width="2.5" points="{tp}"/>
<polyline fill="none" stroke="#D55E00" stroke-width="2.5" stroke-dasharray="6 3" points="{lat}"/>
<text x="{pad}" y="{lb}">0</text><text x="{r}" y="{lb}" text-anchor="end">{xmax:.0} offered/s</text>
<text x="8" y="{pad}" fill="#0072B2">{ymax:.0}/s</text><text x="{rl}" y="{pad}" fill="#D55E00">{lmax:.0} ms</text>
<text x="{pad}" y="44" fill="#0072B2">— delivered/s (left)</text><text x="240" y="44" fill="#D55E00">- - p99 ms (right)</text><text x="420" y="44" fill="#888">· · offered = delivered</text>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        lb = h - pad + 18.0,
        rl = w - pad + 4.0,
        x0 = x(0.0),
        y0 = y(0.0, ymax),
        x1 = x(xmax),
        y1 = y(xmax, ymax),
        tp = line("exchanges_per_s", ymax),
        lat = line("p99_ms", lmax),
    )
}

/// The baseline for accepts on PostgreSQL, on the same server in the same
/// run: `clients` connections each inserting a 600-byte row and committing,
/// one row per transaction, for `seconds`, in a database of its own.
fn pg_raw_commits(server: &str, clients: usize, seconds: f64) -> Result<f64, String> {
    let url = crate::store::postgres::create_database(server, "raw")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(err)?;
    let out = rt.block_on(async {
        let connect = || async {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(err)?;
            tokio::spawn(conn);
            Ok::<_, String>(c)
        };
        connect()
            .await?
            .batch_execute("CREATE TABLE raw (id bigserial PRIMARY KEY, body text NOT NULL)")
            .await
            .map_err(err)?;
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients.max(1) {
            let c = connect().await?;
            tasks.push(tokio::spawn(async move {
                let body = "x".repeat(600);
                let st = c
                    .prepare("INSERT INTO raw (body) VALUES ($1)")
                    .await
                    .map_err(err)?;
                let mut n = 0u64;
                while Instant::now() < end {
                    c.execute(&st, &[&body]).await.map_err(err)?;
                    n += 1;
                }
                Ok::<u64, String>(n)
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.map_err(err)??;
        }
        Ok::<f64, String>(n as f64 / start.elapsed().as_secs_f64())
    });
    drop(rt);
    let _ = crate::store::postgres::drop_database(server, &url);
    out
}

fn measure(o: &Options) -> Result<BTreeMap<&'static str, Value>, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let sign_per_s = sign_rate(o.alg, 1.0)?;
    let bound = cores * sign_per_s / 2.0;
    // The unit of CPU per exchange is one raw RSA-2048 sign, whatever the
    // run's algorithm, so that runs of both compare.
    let rsa_sign_per_s = match o.alg {
        KeyKind::Rsa2048 => sign_per_s,
        _ => sign_rate(KeyKind::Rsa2048, 1.0)?,
    };
    // Before anything of ours runs, so that it has the machine to itself.
    let pg_raw = match &o.store {
        Some(server) => Some(pg_raw_commits(server, o.concurrency, 3.0)?),
        None => None,
    };
    let setup = start(o)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(err)?;
    let gw_pids: Vec<u32> = setup.gws.iter().map(|g| g.child.id()).collect();
    let sim_pid = setup.sim.child.id();
    let gw_cpu = || gw_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let (gw_cpu0, sim_cpu0) = (gw_cpu(), cpu_seconds(sim_pid));
    let base = setup.bases[0].clone();
    let bar = indicatif::ProgressBar::new(o.requests as u64);
    if o.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(o.concurrency)
            .build()
            .map_err(err)?;
        let start = Instant::now();
        bar.set_message("submitted");
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(o.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..o.requests {
            if o.rate > 0.0 {
                let due = start + Duration::from_secs_f64(i as f64 / o.rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let permit = sem.clone().acquire_owned().await.map_err(err)?;
            // In turn to each instance, as a load balancer would.
            let (http, base, token) = (
                http.clone(),
                setup.bases[i % setup.bases.len()].clone(),
                setup.token.clone(),
            );
            let bar = bar.clone();
            tasks.spawn(async move {
                let (service, subject) = BODIES[i % BODIES.len()];
                let body = format!(
                    r#"{{"case":{{"number":"B-{}/2026","legal_basis":"ZUP čl. 103","official":"bench"}},"purpose":"load test","service":"{service}","subject":{subject}}}"#,
                    i % 97
                );
                let r = http
                    .post(format!("{base}/api/v1/requests"))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                drop(permit);
                bar.inc(1);
                match r {
                    Ok(r) if r.status().as_u16() == 202 => Ok(()),
                    Ok(r) => Err(format!("the API answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(err)??;
        }
        let submitted_s = start.elapsed().as_secs_f64();
        if o.accept_only {
            bar.finish_and_clear();
            return Ok((0, 0, submitted_s, submitted_s, Vec::new(), 0, 0, None));
        }
        bar.set_position(0);
        bar.set_message("delivered");
        // Until every request has finished.
        let (delivered, failed) = loop {
            let v = admin_get(&http, &format!("{base}/admin/v1/stats"), &setup.token).await?;
            let n = |s: &str| v["states"][s].as_u64().unwrap_or(0);
            bar.set_position(n("delivered"));
            if n("delivered") + n("dead") + n("cancelled") >= o.requests as u64 {
                break (n("delivered"), n("dead") + n("cancelled"));
            }
            if start.elapsed() > Duration::from_secs(600) {
                return Err("the run did not finish within 10 minutes".to_string());
            }
            // The count scans the store: poll rarely, or the watching
            // costs the gateway a visible share of its CPU.
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let elapsed = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        // Added latency per request: filed (202) to delivered, from the
        // gateway's own records.
        let mut lat = Vec::with_capacity(o.requests);
        let mut first_created = u64::MAX;
        let mut last_delivered = 0u64;
        let mut after: Option<String> = None;
        loop {
            let mut url =
                format!("{base}/admin/v1/requests?state=delivered&order=oldest&limit=500");
            if let Some(a) = &after {
                url.push_str(&format!("&after={a}"));
            }
            let v = admin_get(&http, &url, &setup.token).await?;
            for r in v["requests"].as_array().into_iter().flatten() {
                let (c, d) = (
                    r["created_ms"].as_u64().unwrap_or(0),
                    r["delivered_ms"].as_u64().unwrap_or(0),
                );
                first_created = first_created.min(c);
                last_delivered = last_delivered.max(d);
                lat.push(d.saturating_sub(c) as f64);
            }
            match v["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        // With a TSA: how long until every document had its timestamp
        // (the evidence job runs beside the exchanges, and on after them).
        let mut stamped_s = None;
        if o.timestamps {
            let want = "jumgw_timestamps_total{for=\"document\",result=\"stamped\"}".to_string();
            loop {
                // Whichever instance leads the jobs stamps: the sum of all.
                let mut n = 0.0;
                for b in &setup.bases {
                    let text = http
                        .get(format!("{b}/metrics"))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?
                        .text()
                        .await
                        .map_err(|e| e.to_string())?;
                    n += text
                        .lines()
                        .find_map(|l| l.strip_prefix(want.as_str()))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0);
                }
                if n >= delivered as f64 {
                    stamped_s = Some(start.elapsed().as_secs_f64());
                    break;
                }
                if start.elapsed() > Duration::from_secs(900) {
                    return Err(format!("{n} of {delivered} documents stamped after 15 minutes"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok::<_, String>((delivered, failed, elapsed, submitted_s, lat, first_created, last_delivered, stamped_s))
    });
    let (delivered, failed, elapsed, submitted_s, lat, first, last, stamped_s) = result?;
    let gw_cpu = gw_cpu() - gw_cpu0;
    let sim_cpu = cpu_seconds(sim_pid) - sim_cpu0;
    // Throughput over the span the gateway worked: first filed to last delivered.
    let span_s = (last.saturating_sub(first) as f64 / 1000.0).max(elapsed.min(0.001));
    let exchanges_per_s = delivered as f64 / span_s.max(0.001);
    let mut r: BTreeMap<&'static str, Value> = BTreeMap::new();
    r.insert(
        "alg",
        json!(match o.alg {
            KeyKind::Rsa2048 => "rsa-sha256",
            KeyKind::EcP256 => "ecdsa-sha256",
        }),
    );
    r.insert("requests", json!(o.requests));
    r.insert(
        "store",
        json!(if o.store.is_some() {
            "postgres"
        } else {
            "sled"
        }),
    );
    r.insert("instances", json!(o.instances.max(1)));
    r.insert("accept_only", json!(o.accept_only));
    r.insert("revocation", json!(o.revocation.name()));
    r.insert("timestamps", json!(o.timestamps));
    // From the first accept to the last document stamped, and the rate.
    r.insert("all_stamped_s", json!(stamped_s));
    r.insert(
        "stamps_per_s",
        json!(stamped_s.map(|t| delivered as f64 / t.max(0.001))),
    );
    r.insert("delivered", json!(delivered));
    r.insert("failed", json!(failed));
    r.insert("faults", json!(o.faults));
    r.insert("delivery", json!(o.delivery));
    r.insert("offered_rate_per_s", json!(o.rate));
    r.insert("concurrency", json!(o.concurrency));
    r.insert("exchanges_per_s", json!(exchanges_per_s));
    r.insert(
        "accepts_per_s",
        json!(o.requests as f64 / submitted_s.max(0.001)),
    );
    let accepts_per_s = o.requests as f64 / submitted_s.max(0.001);
    if let Some(raw) = pg_raw {
        r.insert("pg_raw_commits_per_s", json!(raw));
        r.insert("pg_accepts_vs_raw", json!(accepts_per_s / raw.max(1e-9)));
    }
    r.insert("sign_per_s_one_core", json!(sign_per_s));
    r.insert("cores", json!(cores));
    r.insert("crypto_bound_per_s", json!(bound));
    r.insert("vs_crypto_bound", json!(exchanges_per_s / bound));
    r.insert("p50_ms", json!(percentile(&lat, 0.5)));
    r.insert("p90_ms", json!(percentile(&lat, 0.9)));
    r.insert("p99_ms", json!(percentile(&lat, 0.99)));
    r.insert(
        "rss_mb",
        json!(gw_pids.iter().map(|p| peak_rss_mb(*p)).fold(0.0, f64::max)),
    );
    r.insert("simulator_rss_mb", json!(peak_rss_mb(sim_pid)));
    if o.accept_only {
        r.insert(
            "cpu_ms_per_accept_gateway",
            json!(gw_cpu * 1000.0 / o.requests.max(1) as f64),
        );
    } else {
        r.insert(
            "cpu_ms_per_exchange_gateway",
            json!(gw_cpu * 1000.0 / delivered.max(1) as f64),
        );
        // In units of one raw RSA-2048 sign of this run: what an exchange
        // costs us against what a signature must cost.
        r.insert(
            "gateway_cpu_per_exchange_in_signs",
            json!(gw_cpu * rsa_sign_per_s / delivered.max(1) as f64),
        );
        r.insert(
            "cpu_ms_per_exchange_simulator",
            json!(sim_cpu * 1000.0 / delivered.max(1) as f64),
        );
    }
    r.insert("elapsed_s", json!(elapsed));
    if !o.accept_only && delivered + failed < o.requests as u64 {
        return Err("not every request finished".into());
    }
    Ok(r)
}

type Figures = BTreeMap<&'static str, Value>;

/// The scale-out table: every configuration measured in this one run, so
/// that the ratios to sled compare like with like on a shared machine.
fn scale(o: &Options) -> Result<(), String> {
    let server = o
        .store
        .clone()
        .ok_or("--scale needs --store postgres://user@host:port")?;
    // (configuration, accepts only, whole path)
    type Row = (String, Figures, Figures);
    let mut rows: Vec<Row> = Vec::new();
    let configs: Vec<(String, Option<String>, usize)> =
        std::iter::once(("sled".to_owned(), None, 1))
            .chain((1..=o.scale).map(|n| (format!("PostgreSQL ×{n}"), Some(server.clone()), n)))
            .collect();
    for (name, store, instances) in configs {
        let one = |accept_only| Options {
            json: true,
            faults: o.faults.clone(),
            delivery: o.delivery.clone(),
            store: store.clone(),
            instances,
            accept_only,
            scale: 0,
            ..*o
        };
        if !o.json {
            eprintln!("measuring {name} ...");
        }
        let accepts = measure(&one(true))?;
        let full = measure(&one(false))?;
        rows.push((name, accepts, full));
    }
    let f = |r: &BTreeMap<&str, Value>, k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let (base_acc, base_ex) = (
        f(&rows[0].1, "accepts_per_s"),
        f(&rows[0].2, "exchanges_per_s"),
    );
    if o.json {
        let all: Vec<Value> = rows
            .iter()
            .map(|(n, a, e)| json!({"config": n, "accept_only": a, "e2e": e}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&all).map_err(err)?);
        return Ok(());
    }
    println!("| store | accepts/s | vs sled | exchanges/s | vs sled | vs crypto bound | p99 ms | gateway CPU ms/exchange (all instances) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, a, e) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
            f(a, "accepts_per_s"),
            f(a, "accepts_per_s") / base_acc.max(1e-9),
            f(e, "exchanges_per_s"),
            f(e, "exchanges_per_s") / base_ex.max(1e-9),
            f(e, "vs_crypto_bound"),
            f(e, "p99_ms"),
            f(e, "cpu_ms_per_exchange_gateway"),
        );
    }
    Ok(())
}

fn print(o: &Options, r: &BTreeMap<&str, Value>) -> Result<(), String> {
    if o.json {
        println!("{}", serde_json::to_string_pretty(r).map_err(err)?);
    } else {
        for (k, v) in r {
            match v.as_f64() {
                Some(f) => println!("{k:<32} {f:>12.2}"),
                None => println!("{k:<32} {v:>12}"),
            }
        }
    }
    Ok(())
}
