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
    let (port, hook_port) = (free_port(), free_port());
    let seed: u64 = std::env::var("JUMGW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_125);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // A third of the requests come from a webhook client, whose deliveries
    // can repeat (a kill between the POST and its commit): the receiver
    // counts them per request.
    let hook = Hook::new(dir.path(), hook_port);
    let mut env = hook.env();
    // Only what the gateway flushes on purpose reaches the disk (sled's
    // own flush every 10 s, not every 500 ms): whatever the gateway must
    // not lose — an accept, a lease before its request leaves — has to be
    // flushed by it, or the checks below find it missing.
    env.push(("JUMGW_STORE__SLED_FLUSH_MS".into(), "10000".into()));

    let total = 300;
    let kills: BTreeSet<usize> = [
        rng.random_range(30..100),
        rng.random_range(120..200),
        rng.random_range(220..290),
    ]
    .into();
    let mut accepted: Vec<(String, &str)> = Vec::new();
    let served = served_log(&data);
    let mut daemon = start_daemon_env(&data, port, &env);
    // What each kill cut into, as seen at the kill.
    let mut cut: Vec<KillSeen> = Vec::new();
    let mut i = 0;
    while i < total {
        // submit in small concurrent bursts
        let burst: Vec<usize> = (i..(i + 10).min(total)).collect();
        let kill_now = kills.iter().any(|&k| k >= i && k < i + burst.len());
        // When a kill is due, it lands while this burst is being accepted:
        // requests between their transaction and their flush are at stake.
        let delay = Duration::from_millis(rng.random_range(0..30));
        let killer = async {
            if kill_now {
                let since = log_len(&served);
                tokio::time::sleep(delay).await;
                cut.push(
                    kill_in_flight(&mut daemon, &http, port, &served, since, "in a burst").await,
                );
            }
        };
        let http = &http;
        let futs = futures_util::future::join_all(burst.iter().map(|&k| {
            let token = client_of(k);
            async move { submit_as(http, port, k, token).await.map(|id| (id, token)) }
        }));
        let (ids, ()) = tokio::join!(futs, killer);
        accepted.extend(ids.into_iter().flatten());
        i += burst.len();
        if kill_now {
            daemon = start_daemon_env(&data, port, &env);
        }
    }
    // one more crash while the queue drains
    let since = log_len(&served);
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
    cut.push(kill_in_flight(&mut daemon, &http, port, &served, since, "while draining").await);
    // And one right after the restart, while it sends what was due (no
    // accepts flush anything then): leases that had not reached the disk
    // before their requests left would show in the audit check below. The
    // kill waits until a request of the restarted daemon is at its
    // registry (arrived in the simulator's log after the restart, not yet
    // answered; the killed one's leftovers in `sending` do not count), or
    // the audit check would prove nothing.
    let since = log_len(&served);
    let mut daemon = start_daemon_env(&data, port, &env);
    tokio::time::sleep(Duration::from_millis(rng.random_range(60..250))).await;
    cut.push(kill_in_flight(&mut daemon, &http, port, &served, since, "after a restart").await);
    let daemon = start_daemon_env(&data, port, &env);
    for k in &cut {
        eprintln!(
            "killed {}: {} requests sending, {} at the registry, {} answers in its window",
            k.when, k.sending, k.out, k.answered
        );
    }
    // Two planned kills in one burst would be one kill.
    assert_eq!(
        cut.len(),
        kills.len() + 2,
        "a planned kill did not happen: {cut:?}"
    );
    assert!(
        accepted.len() >= total * 8 / 10,
        "only {} of {total} accepted",
        accepted.len()
    );
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let (outcomes, views) = until_delivered(&http, &[port], &ids).await;

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

    let (folder, hooked): (Vec<_>, Vec<_>) = accepted
        .iter()
        .partition(|(_, token)| *token == "demo-backoffice");
    let folder: Vec<&RequestView> = folder.iter().map(|(id, _)| &views[id]).collect();
    assert!(
        folder.len() > 100 && hooked.len() > 50,
        "{} {}",
        folder.len(),
        hooked.len()
    );
    assert_documents_in_cases(&http, port, &data, &folder).await;
    let hooked: Vec<&RequestView> = hooked.iter().map(|(id, _)| &views[id]).collect();
    hook.assert_delivered_once(&http, port, &data, &hooked)
        .await;
    assert_every_exchange_audited(&http, port, &served_log(&data)).await;
    drop(daemon);
}

/// Write-ahead: whatever the registry was asked, the audit trail says so,
/// crashes or not. Every request that reached the simulator (its log
/// outlives the killed processes; those a kill cut at the registry
/// included) has at least as many `exchange.sent` entries in the verified
/// chain as it arrived there; a lease that reached the disk only after its
/// request had left would be missing here.
async fn assert_every_exchange_audited(http: &reqwest::Client, port: u16, served: &Path) {
    let v = audit_verify(http, port).await;
    assert!(v["broken"].is_null(), "the audit chain is broken: {v}");
    let mut asked: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(served).unwrap().lines() {
        // Arrivals, answered or not: a request the kill cut at the
        // registry had left the gateway all the same.
        if !line.ends_with(" arrived") {
            continue;
        }
        let id = line.split_whitespace().next().unwrap_or_default();
        *asked.entry(id.to_owned()).or_default() += 1;
    }
    assert!(
        asked.len() > 100,
        "{} requests reached the simulator",
        asked.len()
    );
    let export = http
        .get(format!("http://127.0.0.1:{port}/admin/v1/store/export"))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for line in export.lines() {
        let l: serde_json::Value = serde_json::from_str(line).unwrap();
        if l["kind"] == "audit" && l["entry"]["action"] == "exchange.sent" {
            let id = l["entry"]["request_id"].as_str().unwrap_or_default();
            *sent.entry(id.to_owned()).or_default() += 1;
        }
    }
    eprintln!(
        "{} requests reached the simulator {} times; {} exchange.sent entries",
        asked.len(),
        asked.values().sum::<usize>(),
        sent.values().sum::<usize>()
    );
    let missing: Vec<String> = asked
        .iter()
        .filter(|(id, n)| sent.get(*id).copied().unwrap_or(0) < **n)
        .map(|(id, n)| {
            format!(
                "{id}: asked {n}, sent {}",
                sent.get(id).copied().unwrap_or(0)
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} requests reached the registry more often than the audit trail says: {:?}",
        missing.len(),
        asked.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Who files request number `k`: every third comes from the webhook client.
fn client_of(k: usize) -> &'static str {
    if k % 3 == 2 {
        HOOK_TOKEN
    } else {
        "demo-backoffice"
    }
}

const HOOK_TOKEN: &str = "hook-token";

/// A back-office that takes its documents by webhook: the receiver of
/// `tests/py/webhook_receiver.py` (Python's hmac, independent of ours) on
/// `port`, writing every POST it gets to a file.
struct Hook {
    secret: String,
    port: u16,
    out: std::path::PathBuf,
    _receiver: Receiver,
}

impl Hook {
    fn new(dir: &Path, port: u16) -> Hook {
        let secret = format!("whsec_{}", base64_of(&rand::random::<[u8; 32]>()));
        let out = dir.join("received.jsonl");
        let receiver = start_receiver(port, &secret, &out, 0);
        Hook {
            secret,
            port,
            out,
            _receiver: receiver,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            (
                "JUMGW_CLIENTS__HOOK__TOKEN_SHA256",
                jum_gateway::api::token_hash(HOOK_TOKEN),
            ),
            ("JUMGW_CLIENTS__HOOK__DELIVERY", "webhook".into()),
            (
                "JUMGW_CLIENTS__HOOK__WEBHOOK_URL",
                format!("http://127.0.0.1:{}/events", self.port),
            ),
            ("JUMGW_CLIENTS__HOOK__WEBHOOK_SECRET", self.secret.clone()),
            ("JUMGW_WEBHOOKS__BASE", "100ms".into()),
            ("JUMGW_WEBHOOKS__CAP", "400ms".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Every request of `reqs` reported `request.delivered` by exactly one
    /// event (one `webhook-id`; a repeated POST of the same id is allowed,
    /// and must carry the same event), each signature verified by the
    /// receiver, no case folder written, and the linked document verifies
    /// (xmlsec1, each one). The event's id is made from the request's, and
    /// the outbox keeps an id once, so a second delivery of one request
    /// would not show here as a second event: what this shows is that
    /// every request was told, once per id, signed, with its document.
    /// Deliveries by two instances at once are shown by the case folders
    /// of each start (the PostgreSQL test).
    async fn assert_delivered_once(
        &self,
        http: &reqwest::Client,
        port: u16,
        data: &Path,
        reqs: &[&RequestView],
    ) {
        let want: BTreeSet<&str> = reqs.iter().map(|r| r.id.as_str()).collect();
        let end = Instant::now() + Duration::from_secs(60);
        let got = loop {
            let got = received(&self.out);
            let seen: BTreeSet<&str> = got
                .iter()
                .filter(|e| e["type"] == "request.delivered")
                .filter_map(|e| e["data"]["request_id"].as_str())
                .collect();
            if want.is_subset(&seen) {
                break got;
            }
            assert!(
                Instant::now() < end,
                "{} of {} webhook deliveries arrived",
                want.intersection(&seen).count(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Once the outbox is empty nothing more will be sent: a second
        // delivery of any request is in the file by then.
        let end = Instant::now() + Duration::from_secs(30);
        while webhook_backlog(http, port).await != 0 {
            assert!(Instant::now() < end, "the webhook outbox never emptied");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(got);
        let got = received(&self.out);
        assert!(
            got.iter().all(|e| e["verified"] == true),
            "a signature failed: {got:?}"
        );
        let mut by_id: BTreeMap<&str, &serde_json::Value> = BTreeMap::new();
        for e in &got {
            let id = e["id"].as_str().unwrap();
            if let Some(first) = by_id.insert(id, e) {
                assert_eq!(
                    (&first["type"], &first["data"]),
                    (&e["type"], &e["data"]),
                    "webhook-id {id} was sent with two different events"
                );
            }
        }
        let mut delivered: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, e) in &by_id {
            if e["type"] == "request.delivered" {
                delivered
                    .entry(e["data"]["request_id"].as_str().unwrap())
                    .or_default()
                    .push(id);
            }
        }
        for r in reqs {
            let events = &delivered[r.id.as_str()];
            assert_eq!(
                events.len(),
                1,
                "request {} was delivered by {} distinct events: {events:?}",
                r.id,
                events.len()
            );
            assert!(
                !data.join("cases").join(r.folder()).join(r.file()).exists(),
                "a webhook client's document {} went into a case folder",
                r.id
            );
        }
        // the document each event links to is the registry's, signed
        let ca = data.join("certs/ca.pem");
        for r in reqs {
            let e = by_id[delivered[r.id.as_str()][0]];
            let url = e["data"]["document_url"].as_str().unwrap();
            let body = get_bytes(http, &format!("http://127.0.0.1:{port}{url}")).await;
            let f = data.parent().unwrap().join(format!("hook-{}.xml", r.id));
            std::fs::write(&f, &body).unwrap();
            assert_xmlsec1_accepts(&f, &ca, &r.id);
        }
    }
}

/// How many requests are open (neither delivered, dead nor cancelled),
/// from the admin API's counts: the work a kill cuts into.
async fn open_requests(http: &reqwest::Client, port: u16) -> u64 {
    let v = get_json(
        http,
        &format!("http://127.0.0.1:{port}/admin/v1/stats"),
        Some("demo-admin"),
    )
    .await;
    v["states"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(s, _)| !["delivered", "dead", "cancelled"].contains(&s.as_str()))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum()
}

/// What a kill cut into: requests leased for an exchange (`sending`) at
/// the last look before the signal, how many had arrived at the
/// registries' simulator in the kill's window and were not answered yet
/// (`out`), and how many answers it gave in that window (from before the
/// kill's delay until the process was gone: the simulator runs inside the
/// killed daemon).
#[derive(Debug)]
struct KillSeen {
    when: &'static str,
    sending: u64,
    out: usize,
    answered: usize,
}

/// The simulator's log, in lines (arrivals and answers).
fn log_len(served: &Path) -> usize {
    std::fs::read_to_string(served)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// From line `since` of the simulator's log on: how many requests arrived
/// and are not answered (at the registry now), and how many answers.
/// A request is its id and kind (`request` or `poll`); an answer to one
/// that arrived before `since` is not counted against a later arrival.
fn out_and_answered(served: &Path, since: usize) -> (usize, usize) {
    let log = std::fs::read_to_string(served).unwrap_or_default();
    let mut open: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut answers = 0;
    for line in log.lines().skip(since) {
        let mut w = line.split_whitespace();
        let key = (
            w.next().unwrap_or_default().to_owned(),
            w.next().unwrap_or_default().to_owned(),
        );
        if w.next() == Some("arrived") {
            *open.entry(key).or_default() += 1;
        } else {
            answers += 1;
            *open.entry(key).or_default() -= 1;
        }
    }
    (open.values().filter(|&&n| n > 0).count(), answers)
}

/// SIGKILLs `daemon` once requests are provably in flight: leased for an
/// exchange, and one of this process's requests at the registry (arrived
/// in the simulator's log after line `since`, taken when the kill's
/// window opened, and not answered). Waits for that (up to 30 s) rather
/// than trusting the delay before: a kill on an idle queue fails the test
/// here, since whatever the checks find after it would prove nothing.
async fn kill_in_flight(
    daemon: &mut Daemon,
    http: &reqwest::Client,
    port: u16,
    served: &Path,
    since: usize,
    when: &'static str,
) -> KillSeen {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let sending = in_state(http, port, "sending").await;
        let (out, _) = out_and_answered(served, since);
        if sending > 0 && out > 0 {
            daemon.sigkill();
            // What the log said at the kill (the process is gone: no line
            // is added after it).
            let (out, answered) = out_and_answered(served, since);
            return KillSeen {
                when,
                sending,
                out,
                answered,
            };
        }
        assert!(
            Instant::now() < end,
            "nothing of this process was at the registry for 30 s when the daemon was to \
             be killed {when} ({sending} requests sending, {:?} out and answers since): \
             the kill would prove nothing",
            out_and_answered(served, since)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many requests are in `state`, from the admin API's counts.
async fn in_state(http: &reqwest::Client, port: u16, state: &str) -> u64 {
    let v = get_json(
        http,
        &format!("http://127.0.0.1:{port}/admin/v1/stats"),
        Some("demo-admin"),
    )
    .await;
    v["states"][state].as_u64().unwrap_or(0)
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
    let log = daemon.log();
    assert!(
        log.contains("0512******776"),
        "the log should show masked subjects"
    );
    assert!(!log.contains("0512981717776"), "a JMBG in clear in the log");
    // SIGTERM: graceful
    let status = daemon.sigterm();
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
    let mut daemon = start_daemon(&data, port);
    let first: serde_json::Value = post().await.unwrap().json().await.unwrap();
    daemon.sigkill();
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
        data.join("cases/demo-backoffice/351-12%2F2026-IV")
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
/// database and one shared data folder (keys), each with its own embedded
/// simulator. Requests go to the instances in turn; a seeded RNG SIGKILLs
/// one of them now and then (leases held by the dead one expire in the
/// database and another instance takes them over) and restarts it. Every
/// request that got a `202` must end delivered, and the one audit chain of
/// all instances must verify.
///
/// Delivered once, seen from outside: each start of an instance writes its
/// case folders under a folder of its own (`cases-by-start/{n}`), so a
/// document written by two instances is two files, not one file written
/// twice, and logs to a file of its own the deliveries it recorded (the
/// `delivered` line, written once its change to `delivered` committed).
/// At most one start records a request delivered. A second copy is
/// allowed only from a start that was killed and did not record that
/// delivery (it died between writing the file and recording it); any
/// other second copy means two instances held the delivery at once. A
/// third of the requests come from a webhook client, whose receiver
/// (Python's hmac) counts the events about each request; their recorded
/// deliveries are counted the same way.
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_survive_random_sigkills_and_deliver_once() {
    let url = jum_gateway::store::testing::fresh_database("crash");
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
    let hook = Hook::new(dir.path(), free_port());
    let mut env = on_postgres(&url);
    env.push(("JUMGW_STORE__POOL_SIZE".to_owned(), "6".to_owned()));
    env.extend(hook.env());
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    // Each start of an instance, numbered, with case folders and a log of
    // its own.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut starts = 0usize;
    // The port (the instance) of each start, by its number.
    let mut start_ports: Vec<u16> = Vec::new();
    let mut start = |port: u16| {
        start_ports.push(port);
        let mut env = env.clone();
        // The demo's own client, configured, for a folder of its own.
        env.push((
            "JUMGW_CLIENTS__DEMO-BACKOFFICE__TOKEN_SHA256".to_owned(),
            jum_gateway::api::token_hash("demo-backoffice"),
        ));
        env.push((
            "JUMGW_CLIENTS__DEMO-BACKOFFICE__CASES_DIR".to_owned(),
            format!("cases-by-start/{starts}"),
        ));
        starts += 1;
        let log = logs.join(format!("start-{}.log", starts - 1));
        (starts - 1, start_daemon_logged(&data, port, &env, &log))
    };
    // One after the other: the first makes the keys the others read.
    let mut daemons: Vec<(usize, Daemon)> = ports.iter().map(|&p| start(p)).collect();
    let mut killed: BTreeSet<usize> = BTreeSet::new();

    let total = 300;
    let mut accepted: Vec<(String, &str)> = Vec::new();
    let mut i = 0;
    while i < total {
        let burst: Vec<usize> = (i..(i + 15).min(total)).collect();
        // About one burst in four kills an instance while it is accepting
        // and sending.
        let victim = (rng.random_range(0..4) == 0).then(|| rng.random_range(0..3usize));
        let delay = Duration::from_millis(rng.random_range(0..40));
        let other = ports[(victim.unwrap_or(0) + 1) % ports.len()];
        let killer = async {
            if let Some(v) = victim {
                tokio::time::sleep(delay).await;
                let open = open_requests(&http, other).await;
                daemons[v].1.sigkill();
                killed.insert(daemons[v].0);
                assert!(
                    open > 0,
                    "nothing was in flight when instance {v} was killed"
                );
            }
        };
        let http = &http;
        let futs = futures_util::future::join_all(burst.iter().map(|&k| {
            let token = client_of(k);
            let port = ports[k % ports.len()];
            async move { submit_as(http, port, k, token).await.map(|id| (id, token)) }
        }));
        let (ids, ()) = tokio::join!(futs, killer);
        accepted.extend(ids.into_iter().flatten());
        i += burst.len();
        if let Some(v) = victim {
            // reaped (by sigkill) before its port is taken again
            daemons[v] = start(ports[v]);
        }
    }
    // and one more while the queue drains
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
    let v = rng.random_range(0..3usize);
    let open = open_requests(&http, ports[(v + 1) % 3]).await;
    daemons[v].1.sigkill();
    killed.insert(daemons[v].0);
    assert!(
        open > 0,
        "the queue had drained before the last kill: it proves nothing"
    );
    daemons[v] = start(ports[v]);

    let kills = killed.len();
    assert!(kills >= 3, "only {kills} kills: the seed proves too little");
    assert!(
        accepted.len() >= total * 8 / 10,
        "only {} of {total} accepted",
        accepted.len()
    );
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let (_, views) = until_delivered(&http, &ports, &ids).await;
    let (folder, hooked): (Vec<_>, Vec<_>) = accepted
        .iter()
        .partition(|(_, token)| *token == "demo-backoffice");
    let folder: Vec<&RequestView> = folder.iter().map(|(id, _)| &views[id]).collect();
    let hooked: Vec<&RequestView> = hooked.iter().map(|(id, _)| &views[id]).collect();
    assert!(
        folder.len() > 100 && hooked.len() > 50,
        "{} {}",
        folder.len(),
        hooked.len()
    );

    // Which starts recorded each request delivered, by their own logs (a
    // killed start may have lost its last lines: it then counts as not
    // having recorded, and its copy as excused, never the other way).
    let mut recorded: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for n in 0..starts {
        let log = std::fs::read_to_string(logs.join(format!("start-{n}.log"))).unwrap_or_default();
        for id in delivered_in_log(&log) {
            recorded.entry(id).or_default().insert(n);
        }
    }
    for r in folder.iter().chain(&hooked) {
        let by = recorded.get(&r.id).cloned().unwrap_or_default();
        assert!(
            by.len() <= 1,
            "request {} was recorded delivered by starts {by:?}: delivered more than once",
            r.id
        );
    }
    let recorded_folder = folder
        .iter()
        .filter(|r| recorded.contains_key(&r.id))
        .count();
    assert!(
        recorded_folder * 2 > folder.len(),
        "the logs show only {recorded_folder} of {} folder deliveries: the check above \
         would see too little",
        folder.len()
    );
    // Every copy of each document, by the start that wrote it.
    let by_start = data.join("cases-by-start");
    let mut twice = 0;
    let mut files = Vec::new();
    for r in &folder {
        let copies: Vec<(usize, std::path::PathBuf)> = (0..starts)
            .map(|n| {
                let f = by_start
                    .join(n.to_string())
                    .join(jum_gateway::delivery::case_folder(&r.case))
                    .join(r.file());
                (n, f)
            })
            .filter(|(_, f)| f.exists())
            .collect();
        assert!(
            !copies.is_empty(),
            "{} has no document in any case folder",
            r.id
        );
        // Excused: a copy by a killed start that did not record it.
        let by = recorded.get(&r.id).cloned().unwrap_or_default();
        let unexcused: Vec<usize> = copies
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !killed.contains(n) || by.contains(n))
            .collect();
        assert!(
            unexcused.len() <= 1,
            "request {} was delivered by starts {unexcused:?}, each either not killed or \
             having recorded the delivery (recorded by {by:?}): two instances held its \
             delivery at once (starts killed: {killed:?})",
            r.id
        );
        twice += usize::from(copies.len() > 1);
        files.extend(copies.into_iter().map(|(_, f)| (*r, f)));
    }
    assert_documents_are_the_served(&http, ports[0], &data, &files).await;
    hook.assert_delivered_once(&http, ports[0], &data, &hooked)
        .await;

    // every instance took part in sending, in one of its starts (its last
    // may have found nothing left to send)
    for port in &ports {
        let sent = (0..starts).filter(|&n| start_ports[n] == *port).any(|n| {
            std::fs::read_to_string(logs.join(format!("start-{n}.log")))
                .unwrap_or_default()
                .contains("attempt")
        });
        assert!(
            sent,
            "the instance on port {port} never sent anything in any of its starts"
        );
    }
    // one audit chain for all, intact
    let v = audit_verify(&http, ports[0]).await;
    assert!(v["broken"].is_null(), "{v}");
    assert!(
        v["entries"].as_u64().unwrap() >= 3 * accepted.len() as u64,
        "{v}"
    );
    assert_every_exchange_audited(&http, ports[0], &served_log(&data)).await;
    eprintln!(
        "3 instances, {starts} starts, {kills} kills, {} accepted ({} by webhook), all \
         delivered ({} recorded in the starts' logs); {twice} documents written again \
         after a kill; audit {v}",
        accepted.len(),
        hooked.len(),
        recorded.len()
    );
}

/// The request ids a daemon's log says it delivered: the dispatcher's
/// `delivered request=<id>` line, written after the change committed.
fn delivered_in_log(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once(": delivered request=").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
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
    assert!(d.sigterm().success(), "graceful shutdown exits 0");
}

/// A municipality moves from sled to PostgreSQL and back with `store
/// export` / `store import`: requests, documents and the audit chain
/// arrive intact (the chain verifies against the checkpoints written
/// before the move), and the gateway goes on working on the new store.
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_move_a_store_from_sled_to_postgres_and_back() {
    let url = jum_gateway::store::testing::fresh_database("move");
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
    // a checkpoint of the chain (written every second)
    let end = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let v = audit_verify(&http, port).await;
        if v["checkpoints"].as_u64().unwrap_or(0) >= 1 {
            break v;
        }
        assert!(Instant::now() < end, "no audit checkpoint within 20 s: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    // Carried over; the checkpoint job (each minute at :30) may have
    // added one since.
    assert!(
        moved["checkpoints"].as_u64() >= before["checkpoints"].as_u64(),
        "{before} {moved}"
    );
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
    let in_case = std::fs::read_dir(data.join("cases/demo-backoffice"))
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

/// Copies a folder with its subfolders (the audit folder keeps the
/// checkpoints' timestamp tokens in one).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Waits (up to 3 minutes) until every accepted request is delivered,
/// asking the instances in turn; none may end dead or cancelled. Returns
/// how many attempts had each outcome, and each request as last seen.
async fn until_delivered(
    http: &reqwest::Client,
    ports: &[u16],
    accepted: &[String],
) -> (BTreeMap<String, usize>, BTreeMap<String, RequestView>) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut pending: BTreeSet<String> = accepted.iter().cloned().collect();
    let mut last_states = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut views = BTreeMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        for (n, id) in pending.clone().into_iter().enumerate() {
            // any instance answers for all
            let port = ports[n % ports.len()];
            let r = http
                .get(format!("http://127.0.0.1:{port}/api/v1/requests/{id}"))
                .bearer_auth("demo-admin")
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
                views.insert(id.clone(), RequestView::of(&v));
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
    (outcomes, views)
}

/// Every request of `reqs` has its document in its case folder, whole
/// (see [`assert_documents_are_the_served`]), and no request id has
/// documents in two case folders.
async fn assert_documents_in_cases(
    http: &reqwest::Client,
    port: u16,
    data: &Path,
    reqs: &[&RequestView],
) {
    let files: Vec<(&RequestView, std::path::PathBuf)> = reqs
        .iter()
        .map(|r| (*r, data.join("cases").join(r.folder()).join(r.file())))
        .collect();
    assert_documents_are_the_served(http, port, data, &files).await;
    // one document per request id, wherever it went
    let mut files: BTreeMap<String, usize> = BTreeMap::new();
    let cases = std::fs::read_dir(data.join("cases"))
        .unwrap()
        .flat_map(|client| std::fs::read_dir(client.unwrap().path()).unwrap());
    for case in cases {
        for f in std::fs::read_dir(case.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".xml") && !name.starts_with('.') {
                *files
                    .entry(name.split('.').next().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
    }
    assert!(
        files.iter().all(|(_, &n)| n == 1),
        "a request has documents in two places: {:?}",
        files.iter().filter(|(_, &n)| n > 1).collect::<Vec<_>>()
    );
}

/// Each file is its request's document, whole: byte for byte the document
/// the API serves, verified by xmlsec1 against the development CA, with a
/// sidecar that names it.
async fn assert_documents_are_the_served(
    http: &reqwest::Client,
    port: u16,
    data: &Path,
    files: &[(&RequestView, std::path::PathBuf)],
) {
    let ca = data.join("certs/ca.pem");
    for (r, file) in files {
        assert_file_is_the_served_document(
            http,
            &format!("http://127.0.0.1:{port}"),
            &r.id,
            file,
            &ca,
        )
        .await;
        let sidecar = file.with_extension("json");
        let side: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&sidecar).unwrap_or_else(|e| panic!("{}: {e}", sidecar.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
        assert_eq!(side["request_id"], r.id.as_str(), "{}", sidecar.display());
        assert_eq!(side["case"], r.case.as_str(), "{}", sidecar.display());
        assert_eq!(side["document"], r.file(), "{}", sidecar.display());
    }
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
