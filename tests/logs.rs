//! Personal data stays out of the logs: a daemon logging at debug level
//! takes hundreds of requests for distinct JMBGs (valid ones that are
//! found, valid ones that are not, ones with a wrong check digit, through
//! single requests and bundles) and its whole log is searched for each.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Distinct valid JMBGs (IDENTIFIERS.md), born on different days.
fn jmbgs(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < n {
        let (day, month, year) = (1 + i % 28, 1 + (i / 28) % 12, 950 + (i / 336) % 50);
        let serial = 100 + (i * 7) % 800;
        let first12 = format!("{day:02}{month:02}{year:03}80{serial:03}");
        let d: Vec<u32> = first12.bytes().map(|b| u32::from(b - b'0')).collect();
        let w = [7, 6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
        let s: u32 = d.iter().zip(w).map(|(a, b)| a * b).sum();
        let m = 11 - s % 11;
        let check = if m > 9 { 0 } else { m };
        let j = format!("{first12}{check}");
        assert!(jum_gateway::ids::Jmbg::parse(&j).is_ok(), "{j}");
        out.push(j);
        i += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_jmbg_reaches_the_log_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = start_daemon_env(
        &dir.path().join("data"),
        port,
        &[("JUMGW_LOG".into(), "debug".into())],
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut submitted: Vec<String> = jmbgs(240);
    // The example citizen is in the simulator's population: found.
    submitted.push("0512981717776".into());

    let services = [
        "civil.birth-extract",
        "civil.citizenship-certificate",
        "tax.property-tax-status",
        "tax.clearance-certificate",
    ];
    let mut ids = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, j) in submitted.iter().enumerate() {
        let (http, base, j) = (http.clone(), base.clone(), j.clone());
        let service = services[i % services.len()];
        tasks.spawn(async move {
            let body = if i % 10 == 0 {
                // A bundle: the JMBG as owner in the cadastre too.
                let url = format!("{base}/api/v1/cases/{i}%2F2026/requests");
                let b = format!(
                    r#"{{"legal_basis":"ZUP","official":"o","purpose":"p","requests":[{{"service":"{service}","subject":{{"jmbg":"{j}"}}}},{{"service":"cadastre.property-sheet","subject":{{"ko":"803472","jmbg":"{j}"}}}}]}}"#
                );
                (url, b)
            } else {
                let url = format!("{base}/api/v1/requests");
                let b = format!(
                    r#"{{"case":{{"number":"{i}/2026","legal_basis":"ZUP","official":"o"}},"purpose":"p","service":"{service}","subject":{{"jmbg":"{j}"}}}}"#
                );
                (url, b)
            };
            let r = http
                .post(&body.0)
                .bearer_auth("demo-backoffice")
                .header("content-type", "application/json")
                .header("idempotency-key", format!("k-{i}"))
                .body(body.1)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let v: serde_json::Value = r.json().await.unwrap();
            match v["requests"].as_array() {
                Some(list) => list
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect(),
                None => vec![v["id"].as_str().unwrap().to_owned()],
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.unwrap());
    }
    // Wrong check digits: refused, and the refusal is not logged with the number.
    for j in submitted.clone().iter().take(20) {
        let last = j.as_bytes()[12] - b'0';
        let bad = format!("{}{}", &j[..12], (last + 1) % 10);
        let r = http
            .post(format!("{base}/api/v1/requests"))
            .bearer_auth("demo-backoffice")
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"case":{{"number":"x","legal_basis":"ZUP","official":"o"}},"purpose":"p","service":"civil.birth-extract","subject":{{"jmbg":"{bad}"}}}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        submitted.push(bad);
    }

    // Until every request has finished (found: delivered; not found: dead).
    let end = Instant::now() + Duration::from_secs(120);
    let mut delivered = Vec::new();
    for id in &ids {
        loop {
            let v: serde_json::Value = http
                .get(format!("{base}/api/v1/requests/{id}"))
                .bearer_auth("demo-backoffice")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["state"] == "delivered" {
                delivered.push(id);
                break;
            }
            if v["state"] == "dead" {
                break;
            }
            assert!(Instant::now() < end, "{id} did not finish: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The log of a change may come a moment after the change: wait until
    // it has the lines of every one (each attempt, each delivery), rather
    // than for a guessed while.
    let end = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = daemon.log();
        let lines: Vec<&str> = text.lines().collect();
        let logged =
            |id: &str, what: &str| lines.iter().any(|l| l.contains(id) && l.contains(what));
        let missing = ids
            .iter()
            .filter(|id| !logged(id, "attempt"))
            .chain(
                delivered
                    .iter()
                    .copied()
                    .filter(|id| !logged(id, "delivered")),
            )
            .count();
        if missing == 0 {
            break text;
        }
        assert!(
            Instant::now() < end,
            "{missing} attempts or deliveries never logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let attempts = text.matches("attempt").count();
    assert!(
        attempts >= ids.len(),
        "the log is too thin to prove anything ({attempts} attempts for {} requests)",
        ids.len()
    );
    let leaked: Vec<&String> = submitted
        .iter()
        .filter(|j| text.contains(j.as_str()))
        .collect();
    assert!(leaked.is_empty(), "JMBGs in the log: {leaked:?}");
    // The subjects are there, masked.
    let masked = submitted
        .iter()
        .filter(|j| text.contains(&format!("{}******{}", &j[..4], &j[10..])))
        .count();
    assert!(masked >= 200, "only {masked} masked subjects in the log");
}

/// What an operator's journal gets: through a pipe (no terminal), in JSON
/// mode, every line of both streams is one JSON object without a colour
/// code, the attempt lines carry the request, registry and service as
/// fields, no JMBG is in clear, and the scheduler library says nothing at
/// INFO. Under systemd (Type=notify, here a socket of the test's), READY=1
/// comes once the API listens, the watchdog is pinged, STOPPING=1 at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_pipe_the_log_is_json_lines_and_systemd_hears_ready_and_the_watchdog() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = free_port();
    let mut child = jumgw()
        .args(["serve", "--demo", "--log-format", "json", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("JUMGW_LOG")
        .env_remove("WATCHDOG_PID")
        .current_dir(&cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut out_lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    loop {
        let l = out_lines
            .next()
            .expect("the daemon ended before it listened")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        stdout.push(l);
        if v["message"]
            .as_str()
            .unwrap()
            .starts_with("jumgw listening on")
        {
            break;
        }
    }
    let outs = std::thread::spawn(move || out_lines.map_while(Result::ok).collect::<Vec<String>>());
    // The socket is read all along, as systemd reads it: a datagram queue
    // left full (ten by default) would hold the daemon's next ping.
    let (said_tx, said_rx) = std::sync::mpsc::channel::<String>();
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            let s = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stopping = s.contains("STOPPING=1");
            if said_tx.send(s).is_err() || stopping {
                break;
            }
        }
    });
    let mut said = Vec::new();
    while !said.iter().any(|s: &String| s.contains("WATCHDOG=1")) {
        said.push(
            said_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("nothing from the daemon on NOTIFY_SOCKET"),
        );
    }
    assert!(said[0].contains("READY=1"), "{said:?}");

    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(submit(&http, port, i).await.unwrap());
    }
    wait_delivered(&http, port, &ids).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    listener.join().unwrap();
    said.extend(said_rx.try_iter());
    assert!(said.iter().any(|s| s.contains("STOPPING=1")), "{said:?}");

    stdout.extend(outs.join().unwrap());
    let stderr = errs.join().unwrap();
    assert!(!cwd.join("schemas").exists());
    let mut attempts = 0;
    for l in stdout.iter().chain(&stderr) {
        assert!(!l.contains('\u{1b}'), "an escape sequence: {l:?}");
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        assert!(
            !v["target"]
                .as_str()
                .unwrap_or("")
                .starts_with("tokio_cron_scheduler"),
            "the scheduler's chatter: {l}"
        );
        if v["message"] == "attempt" {
            attempts += 1;
            for f in ["request", "registry", "service"] {
                assert!(v[f].is_string(), "{f} is not a field: {l}");
            }
        }
        for (_, body) in BODIES {
            let subject: serde_json::Value = serde_json::from_str(body).unwrap();
            if let Some(j) = subject["jmbg"].as_str() {
                assert!(!l.contains(j), "a JMBG in clear: {l}");
            }
        }
    }
    assert!(attempts >= 12, "{attempts} attempt lines in {stderr:#?}");
}
