//! The operators' console against a live daemon: find why the cadastre
//! fails (breaker open after the simulator's 503s), pause it, retry the
//! dead, resume; cancel; the audit trail answers "who used my data" and
//! catches tampering and truncation.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn on(port: u16) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, "demo-admin", body).await;
        assert!(s < 300, "{method} {path}: {s} {v}");
        v
    }

    async fn submit(&self, case: &str, service: &str, subject: Value) -> String {
        let body = json!({"case": {"number": case, "legal_basis": "ZUP čl. 103", "official": "marija.kovac"},
                          "purpose": "building permit", "service": service, "subject": subject});
        let (s, v) = self
            .call("POST", "/api/v1/requests", "demo-backoffice", Some(body))
            .await;
        assert_eq!(s, 202, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    async fn until(&self, id: &str, states: &[&str]) -> Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self
                .admin("GET", &format!("/admin/v1/requests/{id}"), None)
                .await;
            if states.contains(&v["state"].as_str().unwrap()) {
                return v;
            }
            assert!(Instant::now() < end, "{id} never reached {states:?}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn faults(d: &Daemon, spec: &str) {
    let r = reqwest::Client::new()
        .put(format!("{}/faults", d.1))
        .body(spec.to_owned())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// How many requests the simulator has answered for `registry`.
async fn sim_seen(d: &Daemon, registry: &str) -> u64 {
    let v: Value = reqwest::Client::new()
        .get(format!("{}/seen", d.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["by_registry"][registry].as_u64().unwrap_or(0)
}

fn env() -> Vec<(String, String)> {
    [
        ("JUMGW_RETRY__MAX_ATTEMPTS", "3"),
        ("JUMGW_RETRY__BASE", "50ms"),
        ("JUMGW_RETRY__CAP", "100ms"),
        // 3 requests × 3 attempts: the breaker opens on the last failure.
        ("JUMGW_REGISTRIES__CADASTRE__BREAKER_FAILURES", "9"),
        ("JUMGW_REGISTRIES__CADASTRE__BREAKER_COOLDOWN", "3s"),
        ("JUMGW_JOBS__AUDIT_CHECKPOINT_CRON", "* * * * * *"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_the_failing_registry_pauses_retries_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let d = start_daemon_env(&data, port, &env());
    faults(&d, "cadastre:503").await;
    let api = Api::on(port);

    // Back-office tokens do not open the console.
    let (s, v) = api
        .call("GET", "/admin/v1/requests", "demo-backoffice", None)
        .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (403, Some("urn:jum-gateway:problem:forbidden"))
    );

    let sheets: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                api.submit(
                    &format!("10-{i}/2026"),
                    "cadastre.property-sheet",
                    json!({"ko": "803472", "sheet": "1520"}),
                )
                .await,
            );
        }
        ids
    };
    let birth = api
        .submit(
            "11/2026",
            "civil.birth-extract",
            json!({"jmbg": "0512981717776"}),
        )
        .await;
    for id in &sheets {
        api.until(id, &["dead"]).await;
    }
    api.until(&birth, &["delivered"]).await;

    // Why? The registries view says it.
    let regs = api.admin("GET", "/admin/v1/registries", None).await;
    let cad = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["registry"] == "cadastre")
        .unwrap();
    // Tripped: open for its 3 s cool-down, half-open after it (no probe
    // goes while every cadastre request is dead), never closed.
    assert!(
        cad["breaker"] == "open" || cad["breaker"] == "half-open",
        "{cad}"
    );
    assert!(
        cad["last"]["error"].as_str().unwrap().contains("503"),
        "{cad}"
    );
    assert!(cad["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["days_left"].as_i64().unwrap() > 300));
    let civil = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["registry"] == "civil")
        .unwrap();
    assert_eq!(civil["breaker"], "closed");
    assert!(civil["last"]["success_ms"].is_u64());

    let page = api
        .admin(
            "GET",
            "/admin/v1/requests?state=dead&registry=cadastre&limit=2&order=oldest",
            None,
        )
        .await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["requests"][0]["id"], sheets[0].as_str());
    assert_eq!(page["requests"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let rest = api
        .admin(
            "GET",
            &format!("/admin/v1/requests?state=dead&registry=cadastre&order=oldest&after={next}"),
            None,
        )
        .await;
    assert_eq!(rest["requests"][0]["id"], sheets[2].as_str());
    assert!(rest["next"].is_null());
    let one = api
        .admin("GET", &format!("/admin/v1/requests/{}", sheets[0]), None)
        .await;
    assert_eq!(one["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(one["attempts"][0]["http_status"], 503);
    let (s, v) = api
        .call("GET", "/admin/v1/requests?state=asleep", "demo-admin", None)
        .await;
    assert_eq!(
        (s, v["errors"][0]["pointer"].as_str()),
        (422, Some("/state"))
    );

    // Pause, heal, retry the dead while paused: they wait.
    // Only the pause may hold them: the breaker's 3 s cool-down, from the
    // last failure the registries view reports, is over first.
    let opened = cad["last"]["error_ms"].as_u64().unwrap();
    while jum_gateway::time::now_ms() <= opened + 3_000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cadastre_seen = sim_seen(&d, "cadastre").await;
    let p = api
        .admin("POST", "/admin/v1/registries/cadastre/pause", None)
        .await;
    assert_eq!(p["paused"], true);
    faults(&d, "").await;
    let dry = api
        .admin(
            "POST",
            "/admin/v1/requests/retry-dead",
            Some(json!({"registry": "cadastre", "dry_run": true})),
        )
        .await;
    assert_eq!(
        (dry["matched"].as_u64(), dry["retried"].as_u64()),
        (Some(3), Some(0))
    );
    let done = api
        .admin(
            "POST",
            "/admin/v1/requests/retry-dead",
            Some(json!({"registry": "cadastre"})),
        )
        .await;
    assert_eq!(done["retried"], 3);
    // The window is made of events, not of a pause: a request to another
    // registry, filed after the retried ones were due, is delivered, so
    // the dispatcher has had its rounds with them due.
    let other = api
        .submit(
            "13/2026",
            "civil.birth-extract",
            json!({"jmbg": "0512981717776"}),
        )
        .await;
    api.until(&other, &["delivered"]).await;
    assert_eq!(
        sim_seen(&d, "cadastre").await,
        cadastre_seen,
        "the paused registry was asked"
    );
    for id in &sheets {
        let v = api
            .admin("GET", &format!("/admin/v1/requests/{id}"), None)
            .await;
        assert_eq!(v["state"], "queued", "paused: nothing is sent");
    }
    api.admin("POST", "/admin/v1/registries/cadastre/resume", None)
        .await;
    // The breaker still counts its cool-down; a probe goes when it ends.
    let (s, _) = api
        .call(
            "POST",
            "/admin/v1/registries/nowhere/pause",
            "demo-admin",
            None,
        )
        .await;
    assert_eq!(s, 404);

    // Cancel: only what has not finished.
    api.admin("POST", "/admin/v1/registries/civil/pause", Some(json!({})))
        .await;
    let c = api
        .submit(
            "12/2026",
            "civil.citizenship-certificate",
            json!({"jmbg": "0512981717776"}),
        )
        .await;
    let v = api
        .admin("POST", &format!("/admin/v1/requests/{c}/cancel"), None)
        .await;
    assert_eq!(v["state"], "cancelled");
    let (s, v) = api
        .call(
            "POST",
            &format!("/admin/v1/requests/{c}/cancel"),
            "demo-admin",
            None,
        )
        .await;
    assert_eq!(
        (s, v["type"].as_str()),
        (409, Some("urn:jum-gateway:problem:state-conflict"))
    );
    let (s, _) = api
        .call(
            "POST",
            &format!("/admin/v1/requests/{birth}/retry"),
            "demo-admin",
            None,
        )
        .await;
    assert_eq!(s, 409, "a delivered request is not retried");
    api.admin("POST", "/admin/v1/registries/civil/resume", None)
        .await;

    // Who used the data of 0512981717776?
    let doc = api
        .http
        .get(format!("{}/api/v1/documents/{birth}/content", api.base))
        .bearer_auth("demo-backoffice")
        .send()
        .await
        .unwrap();
    assert_eq!(doc.status(), 200);
    let who = api
        .admin(
            "POST",
            "/admin/v1/audit/who",
            Some(json!({"jmbg": "0512981717776"})),
        )
        .await;
    assert_eq!(who["subject"], "0512******776");
    let actions: Vec<(&str, &str)> = who["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["case"].as_str().unwrap()))
        .collect();
    for want in [
        ("request.accepted", "11/2026"),
        ("exchange.sent", "11/2026"),
        ("exchange.answered", "11/2026"),
        ("document.read", "11/2026"),
        ("request.accepted", "12/2026"),
        ("admin.cancel", "12/2026"),
    ] {
        assert!(actions.contains(&want), "{want:?} missing from {actions:?}");
    }
    assert!(who["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["legal_basis"] == "ZUP čl. 103"
            || a["action"].as_str().unwrap().starts_with("admin")));
    assert!(!who.to_string().contains("0512981717776"));
    let nobody = api
        .admin(
            "POST",
            "/admin/v1/audit/who",
            Some(json!({"jmbg": "0101990800007"})),
        )
        .await;
    assert_eq!(nobody["accesses"].as_array().unwrap().len(), 0);
    let report = api.admin("POST", "/admin/v1/audit/verify", None).await;
    assert!(report["broken"].is_null(), "{report}");
    assert!(report["entries"].as_u64().unwrap() > 20);

    for id in &sheets {
        api.until(id, &["delivered"]).await;
    }
}

/// SIGTERM, and waits: the daemon flushes its store and exits.
fn stop(mut d: Daemon) {
    d.sigterm();
}

/// Stops the daemon gracefully (its store flushed), changes the store with
/// `f`, and starts it again.
fn tamper(d: Daemon, data: &std::path::Path, port: u16, f: impl FnOnce(&sled::Tree)) -> Daemon {
    stop(d);
    {
        let db = sled::open(data.join("store")).unwrap();
        f(&db.open_tree("audit").unwrap());
        db.flush().unwrap();
    }
    start_daemon_env(data, port, &env())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_audit_trail_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let d = start_daemon_env(&data, port, &env());
    let api = Api::on(port);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            api.submit(
                &format!("20-{i}/2026"),
                "civil.birth-extract",
                json!({"jmbg": "0512981717776"}),
            )
            .await,
        );
    }
    for id in &ids {
        api.until(id, &["delivered"]).await;
    }
    // A checkpoint (every second here) covers the whole trail.
    let head = api.admin("POST", "/admin/v1/audit/verify", None).await;
    let checkpoints = data.join("audit/checkpoints.log");
    let end = Instant::now() + Duration::from_secs(10);
    let covered = || {
        std::fs::read_to_string(&checkpoints)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    while covered() < head["head_seq"].as_u64().unwrap() {
        assert!(Instant::now() < end, "no checkpoint of {head}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Someone edits entry 2: it no longer matches its hash.
    let d = tamper(d, &data, port, |audit| {
        let k = 2u64.to_be_bytes();
        let mut e: Value = serde_json::from_slice(&audit.get(k).unwrap().unwrap()).unwrap();
        e["purpose"] = json!("curiosity");
        audit.insert(k, serde_json::to_vec(&e).unwrap()).unwrap();
    });
    let r = api.admin("POST", "/admin/v1/audit/verify", None).await;
    assert_eq!(r["broken"]["seq"], 2, "{r}");
    assert!(
        r["broken"]["reason"].as_str().unwrap().contains("changed"),
        "{r}"
    );

    // Someone rewrites entry 2 with a correct hash: entry 3 no longer follows.
    let d = tamper(d, &data, port, |audit| {
        let k = 2u64.to_be_bytes();
        let mut e: jum_gateway::audit::Entry =
            serde_json::from_slice(&audit.get(k).unwrap().unwrap()).unwrap();
        e.hash = e.digest();
        audit.insert(k, serde_json::to_vec(&e).unwrap()).unwrap();
    });
    let r = api.admin("POST", "/admin/v1/audit/verify", None).await;
    assert_eq!(r["broken"]["seq"], 3, "{r}");

    // Put entry 2 back as it was by re-chaining everything after it is not
    // possible without the checkpoints noticing; cutting off the tail is
    // caught by them too.
    let seq: u64 = head["head_seq"].as_u64().unwrap();
    let d = tamper(d, &data, port, |audit| {
        // Restore a consistent chain up to entry 1 only: drop 2.. entirely.
        for s in 2..=seq + 100 {
            audit.remove(s.to_be_bytes()).unwrap();
        }
    });
    let r = api.admin("POST", "/admin/v1/audit/verify", None).await;
    assert!(
        r["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("removed from the end"),
        "{r}"
    );
    drop(d);
}

fn cli(port: u16, token: &str, args: &[&str]) -> (i32, String, String) {
    let o = jumgw()
        .args(args)
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .env("JUMGW_TOKEN", token)
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_from_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let d = start_daemon_env(&data, port, &env());
    faults(&d, "tax:notfound").await;
    let api = Api::on(port);
    let dead = api
        .submit(
            "30/2026",
            "tax.clearance-certificate",
            json!({"pib": "101134702"}),
        )
        .await;
    let ok = api
        .submit(
            "31/2026",
            "civil.birth-extract",
            json!({"jmbg": "0512981717776"}),
        )
        .await;
    api.until(&dead, &["dead"]).await;
    api.until(&ok, &["delivered"]).await;

    let (code, out, _) = cli(port, "demo-admin", &["queue", "ls"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().all(|l| l.chars().count() <= 80),
        "wider than 80 columns:\n{out}"
    );
    assert!(out.contains(&dead) && out.contains(&ok), "{out}");
    assert!(out.contains("2 of 2"), "{out}");
    let (_, out, _) = cli(
        port,
        "demo-admin",
        &["queue", "ls", "--state", "dead", "--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["requests"][0]["id"], dead.as_str());
    let (code, out, _) = cli(port, "demo-admin", &["queue", "show", &dead]);
    assert_eq!(code, 0);
    assert!(out.contains("registry found no data"), "{out}");
    let (code, out, _) = cli(port, "demo-admin", &["queue", "stats"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("tax ") && l.split_whitespace().nth(7) == Some("1")),
        "{out}"
    );
    let (code, out, _) = cli(port, "demo-admin", &["registries", "ls"]);
    assert_eq!(code, 0);
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    assert!(out.contains("cadastre") && out.contains("closed"), "{out}");

    let (code, out, _) = cli(port, "demo-admin", &["registries", "pause", "tax"]);
    assert_eq!((code, out.trim()), (0, "tax: paused"));
    faults(&d, "").await;
    let (code, out, _) = cli(
        port,
        "demo-admin",
        &["queue", "retry", "--dead", "--registry", "tax", "--dry-run"],
    );
    assert_eq!((code, out.trim()), (0, "1 dead requests match"));
    let (code, out, _) = cli(
        port,
        "demo-admin",
        &["queue", "retry", "--dead", "--registry", "tax"],
    );
    assert_eq!((code, out.trim()), (0, "1 of 1 dead requests retried"));
    let (code, _, _) = cli(port, "demo-admin", &["registries", "resume", "tax"]);
    assert_eq!(code, 0);
    api.until(&dead, &["delivered"]).await;
    let (code, _, err) = cli(port, "demo-admin", &["queue", "cancel", &ok]);
    assert_eq!(code, 1);
    assert!(err.contains("Not possible in this state"), "{err}");

    let (code, out, _) = cli(port, "demo-admin", &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("intact: "), "{out}");
    let (code, out, _) = cli(port, "demo-admin", &["audit", "who", "0512981717776"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Accesses to data about 0512******776"),
        "{out}"
    );
    assert!(
        out.contains("request.accepted") && out.contains("31/2026"),
        "{out}"
    );
    assert!(!out.contains("0512981717776"));
    let (_, out, _) = cli(
        port,
        "demo-admin",
        &["audit", "who", "0512981717776", "--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["accesses"].as_array().unwrap().len() >= 2);

    // Not an admin: refused, with the problem's words, exit 1.
    let (code, _, err) = cli(port, "demo-backoffice", &["queue", "ls"]);
    assert_eq!(code, 1);
    assert!(err.contains("administrator's token"), "{err}");
    let (code, _, err) = cli(port, "demo-admin", &["audit", "who", "0512981717775"]);
    assert_eq!(code, 1);
    assert!(err.contains("/jmbg: check digit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_carries_the_audit_trail_and_it_verifies_after_the_move() {
    let dir = tempfile::tempdir().unwrap();
    let (data, moved) = (dir.path().join("data"), dir.path().join("moved"));
    let port = free_port();
    let d = start_daemon_env(&data, port, &env());
    let api = Api::on(port);
    let id = api
        .submit(
            "50/2026",
            "civil.birth-extract",
            json!({"jmbg": "0512981717776"}),
        )
        .await;
    api.until(&id, &["delivered"]).await;
    let before = api.admin("POST", "/admin/v1/audit/verify", None).await;
    stop(d);

    let backup = dir.path().join("backup.jsonl");
    let o = jumgw()
        .args(["store", "export", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    independent_chain_check(&backup, &before);
    let o = jumgw()
        .args(["store", "import", "--data-dir"])
        .arg(&moved)
        .arg(&backup)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("audit entries"),
        "{}",
        text(&o)
    );
    // The keys move with the data (the audit key finds the person again).
    for k in ["documents.key", "audit.key"] {
        std::fs::create_dir_all(moved.join("keys")).unwrap();
        std::fs::copy(data.join("keys").join(k), moved.join("keys").join(k)).unwrap();
    }
    let _d = start_daemon_env(&moved, port, &env());
    let after = api.admin("POST", "/admin/v1/audit/verify", None).await;
    assert!(after["broken"].is_null(), "{after}");
    assert!(after["head_seq"].as_u64().unwrap() > before["head_seq"].as_u64().unwrap());
    let who = api
        .admin(
            "POST",
            "/admin/v1/audit/who",
            Some(json!({"jmbg": "0512981717776"})),
        )
        .await;
    assert!(
        who["accesses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["request_id"] == id.as_str() && a["action"] == "exchange.answered"),
        "{who}"
    );
}

/// The exported trail checked by a few lines of Python that know only the
/// documented format (src/store/trail.rs): every hash recomputed, every
/// link followed, ending where the daemon's own `audit verify` ended; and
/// the same check refusing the export with one entry's purpose changed.
fn independent_chain_check(export: &std::path::Path, verified: &Value) {
    let check = |file: &std::path::Path| {
        std::process::Command::new(python())
            .arg(manifest_dir().join("tests/py/audit_chain.py"))
            .arg(file)
            .output()
            .unwrap()
    };
    let o = check(export);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let head = verified["head_seq"].as_u64().unwrap();
    assert!(v["head_seq"].as_u64().unwrap() >= head, "{v} {verified}");
    // An answer with a document names its signer: that field is checked too.
    assert!(v["with_signer"].as_u64().unwrap() >= 1, "{v}");
    // The entry the daemon called the head has the hash it said.
    let lines: Vec<Value> = std::fs::read_to_string(export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at_head = lines
        .iter()
        .find(|l| l["kind"] == "audit" && l["entry"]["seq"] == head)
        .unwrap();
    assert_eq!(at_head["entry"]["hash"], verified["head_hash"]);

    // Negative control: one field of entry 2 changed.
    let tampered = export.with_extension("tampered.jsonl");
    let changed: Vec<String> = lines
        .into_iter()
        .map(|mut l| {
            if l["kind"] == "audit" && l["entry"]["seq"] == 2 {
                l["entry"]["purpose"] = json!("curiosity");
            }
            l.to_string()
        })
        .collect();
    std::fs::write(&tampered, changed.join("\n")).unwrap();
    let o = check(&tampered);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("entry 2: its hash"),
        "{}",
        text(&o)
    );
}

/// The operator's path through a damaged store: the daemon refuses to
/// start with the error that names `store check`; `store check` names the
/// damage by tree and key and exits 1; `store salvage` saves the rest and
/// lists the lost; imported into a new data folder it serves, and its
/// audit trail verifies up to the lost entries and names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_checked_salvaged_and_served_again() {
    let dir = tempfile::tempdir().unwrap();
    let (data, moved) = (dir.path().join("data"), dir.path().join("moved"));
    let port = free_port();
    let d = start_daemon_env(&data, port, &env());
    let api = Api::on(port);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            api.submit(
                &format!("60-{i}/2026"),
                "civil.birth-extract",
                json!({"jmbg": "0512981717776"}),
            )
            .await,
        );
    }
    for id in &ids {
        api.until(id, &["delivered"]).await;
    }
    stop(d);
    {
        let db = sled::open(data.join("store")).unwrap();
        db.open_tree("requests")
            .unwrap()
            .insert(ids[0].as_bytes(), &b"{\"v\":1,"[..])
            .unwrap();
        let audit = db.open_tree("audit").unwrap();
        for s in 3..=4u64 {
            audit.remove(s.to_be_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
    let o = jumgw()
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .current_dir(manifest_dir())
        .output()
        .unwrap();
    let said = text(&o);
    assert!(!o.status.success(), "{said}");
    for want in [
        "found by the full check",
        &ids[0],
        "jumgw store check",
        "backups",
    ] {
        assert!(said.contains(want), "{want}: {said}");
    }
    // Started without the check (as if the damage came while it ran): it
    // serves, says it is damaged, and the operators' views skip the record.
    let mut unchecked = env();
    unchecked.push(("JUMGW_STORE__FULL_CHECK".into(), "false".into()));
    let d = start_daemon_env(&data, port, &unchecked);
    let list = api.admin("GET", "/admin/v1/requests?limit=50", None).await;
    let listed: Vec<&str> = list["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(listed.len(), 4, "{list}");
    assert!(!listed.contains(&ids[0].as_str()), "{list}");
    api.admin("GET", "/admin/v1/stats", None).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["store_damaged"]["first"]
            .as_str()
            .unwrap()
            .contains(&ids[0]),
        "{body}"
    );
    let http = reqwest::Client::new();
    let gauge = metric(
        &http,
        &format!("http://127.0.0.1:{port}"),
        "jumgw_store_read_errors",
    )
    .await;
    assert!(gauge >= 1.0, "{gauge}");
    let (status, p) = api
        .call(
            "GET",
            &format!("/admin/v1/requests/{}", ids[0]),
            "demo-admin",
            None,
        )
        .await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(p["type"], "urn:jum-gateway:problem:store-damaged", "{p}");
    stop(d);

    let o = jumgw()
        .args(["store", "check", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("requests") && l.contains(&ids[0]) && l.contains("unreadable")),
        "{report}"
    );
    let salvage = dir.path().join("salvage.jsonl");
    let o = jumgw()
        .args(["store", "salvage", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&salvage)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(listed.contains(&ids[0]), "{listed}");
    assert!(listed.contains("3–4"), "{listed}");
    assert!(text(&o).contains("saved 4 requests"), "{}", text(&o));
    let o = jumgw()
        .args(["store", "import", "--data-dir"])
        .arg(&moved)
        .arg(&salvage)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for k in ["documents.key", "audit.key"] {
        std::fs::create_dir_all(moved.join("keys")).unwrap();
        std::fs::copy(data.join("keys").join(k), moved.join("keys").join(k)).unwrap();
    }
    let _d = start_daemon_env(&moved, port, &env());
    for id in &ids[1..] {
        api.until(id, &["delivered"]).await;
    }
    let r = api.admin("POST", "/admin/v1/audit/verify", None).await;
    assert_eq!(r["broken"]["seq"], 3, "{r}");
    assert!(
        r["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("entry 3 is missing (next is 5)"),
        "{r}"
    );
    assert_eq!(r["entries"], 2, "{r}");
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

/// A store sled panics on when it opens it (its snapshot lost and a
/// segment header damaged: sled finds pages it cannot place and panics
/// writing a new snapshot): `serve` and `store check` say only the error an operator
/// needs, naming the backups and `store salvage`; neither sled's panic
/// nor a backtrace reaches the terminal, even with RUST_BACKTRACE set.
/// The same store undamaged is checked clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_sled_panics_on_says_only_what_an_operator_needs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let d = start_daemon_env(&data, port, &env());
    // Enough traffic for sled to fill and reuse several 512 KiB segments.
    let http = reqwest::Client::new();
    let ids: Vec<String> = futures_util::future::join_all((0..150).map(|i| submit(&http, port, i)))
        .await
        .into_iter()
        .map(|id| id.expect("accepted"))
        .collect();
    let api = Api::on(port);
    for id in &ids {
        api.until(id, &["delivered", "dead"]).await;
    }
    stop(d);
    let run = |data: &std::path::Path, args: &[&str]| {
        jumgw()
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_BACKTRACE", "1")
            .current_dir(manifest_dir())
            .output()
            .unwrap()
    };
    let o = run(&data, &["store", "check"]);
    assert!(o.status.success(), "{}", text(&o));

    // Its snapshot gone (sled reads the whole log then) and one bit of a
    // segment's first byte flipped: of the segments whose damage sled
    // panics on, the first.
    let len = std::fs::metadata(data.join("store/db")).unwrap().len() as usize;
    let copy = dir.path().join("copy");
    let damaged = (0..len).step_by(512 << 10).find(|at| {
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&data, &copy);
        for e in std::fs::read_dir(copy.join("store")).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
            {
                std::fs::remove_file(p).unwrap();
            }
        }
        let db = copy.join("store/db");
        let mut bytes = std::fs::read(&db).unwrap();
        bytes[*at] ^= 0x10;
        std::fs::write(&db, &bytes).unwrap();
        text(&run(&copy, &["store", "check"])).contains("sled failed while reading it")
    });
    assert!(
        damaged.is_some(),
        "no segment header of {len} bytes makes sled panic"
    );
    for args in [
        &["serve", "--demo", "--listen", "127.0.0.1:0"][..],
        &["store", "check"][..],
    ] {
        let o = run(&copy, args);
        let said = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        for want in [
            "cannot be opened: sled failed while reading it",
            "jumgw store salvage",
            "backups",
        ] {
            assert!(said.contains(want), "{args:?}: {want}: {said}");
        }
        for never in ["panicked at", "backtrace", "serialization.rs"] {
            assert!(!said.contains(never), "{args:?}: {never}: {said}");
        }
        assert_eq!(
            said.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{args:?}: {said}"
        );
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
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
