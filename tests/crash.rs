//! Crash safety, for real: `jumgw serve --demo` as a child process, a few
//! hundred requests across registries while the simulator injects latency,
//! 503s, resets and asynchronous answers, SIGKILL at moments chosen by a
//! seeded RNG, restarts on the same data. Every request that got a `202`
//! must end delivered, with exactly one document file in its case.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_and_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let seed: u64 = std::env::var("JUMGW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_125);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let total = 300;
    let kills: BTreeSet<usize> = [
        rng.random_range(30..100),
        rng.random_range(120..200),
        rng.random_range(220..290),
    ]
    .into();
    let mut accepted: Vec<String> = Vec::new();
    let mut daemon = start_daemon(&data, port);
    let mut kills_done = 0;
    let mut i = 0;
    while i < total {
        // submit in small concurrent bursts
        let burst: Vec<usize> = (i..(i + 10).min(total)).collect();
        let kill_now = kills.iter().any(|&k| k >= i && k < i + burst.len());
        let pid = daemon.0.id().to_string();
        // When a kill is due, it lands while this burst is being accepted:
        // requests between their transaction and their flush are at stake.
        let delay = Duration::from_millis(rng.random_range(0..30));
        let killer = async move {
            if kill_now {
                tokio::time::sleep(delay).await;
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            }
        };
        let futs = futures_util::future::join_all(burst.iter().map(|&k| submit(&http, port, k)));
        let (ids, ()) = tokio::join!(futs, killer);
        accepted.extend(ids.into_iter().flatten());
        i += burst.len();
        if kill_now {
            drop(daemon);
            daemon = start_daemon(&data, port);
            kills_done += 1;
        }
    }
    // one more crash while the queue drains
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    drop(daemon);
    let _daemon = start_daemon(&data, port);

    assert_eq!(kills_done, 3, "kills while accepting");
    assert!(
        accepted.len() >= total * 8 / 10,
        "only {} of {total} accepted",
        accepted.len()
    );
    let outcomes = until_delivered(&http, &[port], &accepted).await;

    // the faults really happened (or this test would prove nothing)
    assert!(
        outcomes.get("retryable").copied().unwrap_or(0) > 5,
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("accepted").copied().unwrap_or(0) > 5,
        "{outcomes:?}"
    );
    eprintln!(
        "accepted {} requests; attempt outcomes {outcomes:?}",
        accepted.len()
    );

    assert_one_document_each(&data, &accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_then_export_and_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let http = reqwest::Client::new();
    let mut daemon = start_daemon(&data, port);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&http, port, i).await.unwrap());
    }
    wait_delivered(&http, port, &ids).await;
    // the store is in use while the daemon runs
    let o = jumgw()
        .args(["store", "export", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is in use by another process"),
        "{}",
        text(&o)
    );
    // the log names subjects, but never a JMBG in clear
    let log = std::fs::read_to_string(daemon_log(port)).unwrap();
    assert!(
        log.contains("0512******776"),
        "the log should show masked subjects"
    );
    assert!(!log.contains("0512981717776"), "a JMBG in clear in the log");
    // SIGTERM: graceful
    let pid = daemon.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");

    let export = dir.path().join("export.jsonl");
    let o = jumgw()
        .args(["store", "export", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&export)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(": 6 requests, 6 documents"),
        "{}",
        text(&o)
    );
    let restored = dir.path().join("restored");
    let o = jumgw()
        .args(["store", "import", "--data-dir"])
        .arg(&restored)
        .arg(&export)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let again = dir.path().join("again.jsonl");
    let o = jumgw()
        .args(["store", "export", "--data-dir"])
        .arg(&restored)
        .arg("--out")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        export_body(&export),
        export_body(&again),
        "the restored store exports the same"
    );
    let o = jumgw()
        .args(["store", "import", "--data-dir"])
        .arg(&restored)
        .arg(&export)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("import restores into an empty store only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let http = reqwest::Client::new();
    let body = r#"{"case":{"number":"7/2026","legal_basis":"ZUP","official":"o"},"purpose":"ex officio data for the case","service":"tax.clearance-certificate","subject":{"pib":"101134702"}}"#;
    let post = || {
        http.post(format!("http://127.0.0.1:{port}/api/v1/requests"))
            .bearer_auth("demo-backoffice")
            .header("content-type", "application/json")
            .header("idempotency-key", "case-7-tax")
            .body(body)
            .send()
    };
    let daemon = start_daemon(&data, port);
    let first: serde_json::Value = post().await.unwrap().json().await.unwrap();
    drop(daemon); // SIGKILL
    let _daemon = start_daemon(&data, port);
    let r = post().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let again: serde_json::Value = r.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cli_files_waits_and_saves_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let _daemon = start_daemon(&data, port);
    let url = format!("http://127.0.0.1:{port}");
    let out = dir.path().join("sheet.xml");
    let o = jumgw()
        .args([
            "request",
            "--service",
            "cadastre.property-sheet",
            "--ko",
            "803472",
            "--sheet",
            "1520",
        ])
        .args([
            "--case",
            "351-12/2026-IV",
            "--legal-basis",
            "ZUP čl. 103",
            "--official",
            "marija.kovac",
            "--purpose",
            "building permit",
        ])
        .args(["--wait", "--url", &url, "--out"])
        .arg(&out)
        .env("JUMGW_TOKEN", "demo-backoffice")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("{id}: delivered")),
        "{}",
        text(&o)
    );
    let saved = std::fs::read(&out).unwrap();
    let in_case = std::fs::read(
        data.join("cases/351-12%2F2026-IV")
            .join(format!("{id}.cadastre.property-sheet.xml")),
    )
    .unwrap();
    assert_eq!(
        saved, in_case,
        "the saved document is the delivered one, byte for byte"
    );
    let o = jumgw()
        .args([
            "request",
            "--service",
            "civil.birth-extract",
            "--jmbg",
            "0512981717775",
        ])
        .args([
            "--case",
            "1",
            "--legal-basis",
            "x",
            "--official",
            "y",
            "--purpose",
            "z",
            "--url",
            &url,
            "--token",
            "demo-backoffice",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("/subject/jmbg: check digit should be 6, found 5"),
        "{}",
        text(&o)
    );
}

/// The hub's case: three `jumgw serve` instances on one PostgreSQL
/// database and one shared data folder (keys, case folders), each with its
/// own embedded simulator. Requests go to the instances in turn; a seeded
/// RNG SIGKILLs one of them now and then (leases held by the dead one
/// expire in the database and another instance takes them over) and
/// restarts it. Every request that got a `202` must end delivered, with
/// exactly one document file in its case, and the one audit chain of all
/// instances must verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_survive_random_sigkills_and_deliver_once() {
    let Some(url) = jum_gateway::store::testing::fresh_database("crash") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed: u64 = std::env::var("JUMGW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_126);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut env = on_postgres(&url);
    env.push(("JUMGW_STORE__POOL_SIZE".to_owned(), "6".to_owned()));
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // One after the other: the first makes the keys the others read.
    let mut daemons: Vec<Daemon> = ports
        .iter()
        .map(|&p| start_daemon_env(&data, p, &env))
        .collect();

    let total = 300;
    let mut accepted: Vec<String> = Vec::new();
    let mut kills = 0;
    let mut i = 0;
    while i < total {
        let burst: Vec<usize> = (i..(i + 15).min(total)).collect();
        // About one burst in four kills an instance while it is accepting
        // and sending.
        let victim = (rng.random_range(0..4) == 0).then(|| rng.random_range(0..3usize));
        let delay = Duration::from_millis(rng.random_range(0..40));
        let pid = victim.map(|v| daemons[v].0.id().to_string());
        let killer = async move {
            if let Some(pid) = pid {
                tokio::time::sleep(delay).await;
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            }
        };
        let futs = futures_util::future::join_all(
            burst
                .iter()
                .map(|&k| submit(&http, ports[k % ports.len()], k)),
        );
        let (ids, ()) = tokio::join!(futs, killer);
        accepted.extend(ids.into_iter().flatten());
        i += burst.len();
        if let Some(v) = victim {
            // reaped before its port is taken again
            let _ = daemons[v].0.wait();
            daemons[v] = start_daemon_env(&data, ports[v], &env);
            kills += 1;
        }
    }
    // and one more while the queue drains
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
    let v = rng.random_range(0..3usize);
    let pid = daemons[v].0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    let _ = daemons[v].0.wait();
    daemons[v] = start_daemon_env(&data, ports[v], &env);
    kills += 1;

    assert!(kills >= 3, "only {kills} kills: the seed proves too little");
    assert!(
        accepted.len() >= total * 8 / 10,
        "only {} of {total} accepted",
        accepted.len()
    );
    until_delivered(&http, &ports, &accepted).await;

    assert_one_document_each(&data, &accepted);

    // every instance took part in sending
    for &p in &ports {
        let log = std::fs::read_to_string(daemon_log(p)).unwrap();
        assert!(
            log.contains("attempt"),
            "instance on {p} never sent anything"
        );
    }
    // one audit chain for all, intact
    let r = http
        .post(format!(
            "http://127.0.0.1:{}/admin/v1/audit/verify",
            ports[0]
        ))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["broken"].is_null(), "{v}");
    assert!(
        v["entries"].as_u64().unwrap() >= 3 * accepted.len() as u64,
        "{v}"
    );
    eprintln!(
        "3 instances, {kills} kills, {} accepted, all delivered once; audit {v}",
        accepted.len()
    );
}

async fn audit_verify(http: &reqwest::Client, port: u16) -> serde_json::Value {
    http.post(format!("http://127.0.0.1:{port}/admin/v1/audit/verify"))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn sigterm(d: &mut Daemon) {
    std::process::Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status()
        .unwrap();
    assert!(d.0.wait().unwrap().success(), "graceful shutdown exits 0");
}

/// A municipality moves from sled to PostgreSQL and back with `store
/// export` / `store import`: requests, documents and the audit chain
/// arrive intact (the chain verifies against the checkpoints written
/// before the move), and the gateway goes on working on the new store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_move_a_store_from_sled_to_postgres_and_back() {
    let Some(url) = jum_gateway::store::testing::fresh_database("move") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let http = reqwest::Client::new();
    let run = |args: &[&str]| {
        let o = jumgw().args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let d = data.to_str().unwrap();

    // 1. on sled
    let fast_checkpoints = [(
        "JUMGW_JOBS__AUDIT_CHECKPOINT_CRON".to_owned(),
        "* * * * * *".to_owned(),
    )];
    let mut daemon = start_daemon_env(&data, port, &fast_checkpoints);
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&http, port, i).await.unwrap());
    }
    wait_delivered(&http, port, &ids).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a checkpoint of the head
    let before = audit_verify(&http, port).await;
    assert!(before["broken"].is_null(), "{before}");
    assert!(before["checkpoints"].as_u64().unwrap() >= 1, "{before}");
    sigterm(&mut daemon);
    let first = dir.path().join("sled.jsonl");
    let f = first.to_str().unwrap();
    run(&["store", "export", "--data-dir", d, "--out", f]);

    // 2. into PostgreSQL, and the gateway on it
    let said = run(&["store", "import", "--store", &url, f]);
    assert!(said.contains(": 6 requests, 6 documents, "), "{said}");
    assert!(said.starts_with("postgres://jumgw@"), "{said}");
    let o = jumgw()
        .args(["store", "import", "--store", &url, f])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("import restores into an empty store only"));
    let on_pg = on_postgres(&url);
    let mut daemon = start_daemon_env(&data, port, &on_pg);
    let moved = audit_verify(&http, port).await;
    assert!(
        moved["broken"].is_null(),
        "the chain broke in the move: {moved}"
    );
    assert!(
        moved["entries"].as_u64() > before["entries"].as_u64(),
        "{before} {moved}"
    );
    assert_eq!(moved["checkpoints"], before["checkpoints"], "{moved}");
    // documents sealed on sled open on PostgreSQL, byte for byte
    let r = http
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/documents/{}/content",
            ids[0]
        ))
        .bearer_auth("demo-backoffice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.bytes().await.unwrap();
    let in_case = std::fs::read_dir(data.join("cases"))
        .unwrap()
        .flat_map(|c| std::fs::read_dir(c.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&ids[0]) && n.ends_with(".xml")
        })
        .unwrap();
    assert_eq!(body.as_ref(), std::fs::read(in_case).unwrap().as_slice());
    // and new work on the new store
    let more = vec![
        submit(&http, port, 6).await.unwrap(),
        submit(&http, port, 7).await.unwrap(),
    ];
    wait_delivered(&http, port, &more).await;
    sigterm(&mut daemon);

    // 3. and back to sled, in a new data folder with the same keys
    let second = dir.path().join("pg.jsonl");
    let s = second.to_str().unwrap();
    let said = run(&["store", "export", "--store", &url, "--out", s]);
    assert!(said.contains(": 8 requests, 8 documents, "), "{said}");
    let back = dir.path().join("back");
    let b = back.to_str().unwrap();
    copy_dir(&data.join("keys"), &back.join("keys"));
    copy_dir(&data.join("audit"), &back.join("audit"));
    run(&["store", "import", "--data-dir", b, s]);
    let third = dir.path().join("back.jsonl");
    run(&[
        "store",
        "export",
        "--data-dir",
        b,
        "--out",
        third.to_str().unwrap(),
    ]);
    assert_eq!(
        export_body(&second),
        export_body(&third),
        "sled holds what PostgreSQL held"
    );
    let _daemon = start_daemon(&back, port);
    let home = audit_verify(&http, port).await;
    assert!(home["broken"].is_null(), "{home}");
    assert!(
        home["entries"].as_u64() > moved["entries"].as_u64(),
        "{home}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Waits (up to 3 minutes) until every accepted request is delivered,
/// asking the instances in turn; none may end dead or cancelled. Returns
/// how many attempts had each outcome.
async fn until_delivered(
    http: &reqwest::Client,
    ports: &[u16],
    accepted: &[String],
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut pending: BTreeSet<String> = accepted.iter().cloned().collect();
    let mut last_states = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        for (n, id) in pending.clone().into_iter().enumerate() {
            // any instance answers for all
            let port = ports[n % ports.len()];
            let r = http
                .get(format!("http://127.0.0.1:{port}/api/v1/requests/{id}"))
                .bearer_auth("demo-backoffice")
                .send()
                .await;
            let Ok(r) = r else { continue };
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let state = v["state"].as_str().unwrap_or("?").to_owned();
            assert!(
                state != "dead" && state != "cancelled",
                "{id} ended {state}: {v}"
            );
            if state == "delivered" {
                pending.remove(&id);
                for a in v["attempts"].as_array().into_iter().flatten() {
                    *outcomes
                        .entry(a["outcome"].as_str().unwrap_or("?").to_owned())
                        .or_insert(0usize) += 1;
                }
            }
            last_states.insert(id, state);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        pending.is_empty(),
        "{} accepted requests not delivered: {:?}",
        pending.len(),
        pending
            .iter()
            .take(5)
            .map(|p| (p, &last_states[p]))
            .collect::<Vec<_>>()
    );
    outcomes
}

/// Exactly one document file per accepted request, in its case folder.
fn assert_one_document_each(data: &Path, accepted: &[String]) {
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    for case in std::fs::read_dir(data.join("cases")).unwrap() {
        for f in std::fs::read_dir(case.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".xml") && !name.starts_with('.') {
                *files
                    .entry(name.split('.').next().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
    }
    for id in accepted {
        assert_eq!(
            files.get(id),
            Some(&1),
            "request {id} has {:?} document files",
            files.get(id)
        );
    }
    // (A request whose 202 a kill cut off may be delivered too: rightly.)
    assert!(files.values().all(|&n| n == 1), "a request delivered twice");
}

/// An export's lines after its header (which holds the export's time).
fn export_body(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}
