//! Serving on PostgreSQL. First `jumgw serve --config
//! config/gateway-postgres.toml` as an operator runs it: the shipped file
//! (which extends gateway.toml) against a local PostgreSQL and `jumgw
//! simulate`, no --demo; only what differs on this machine comes from the
//! environment (the database, the simulator's ports, a client token). Then
//! an administrator's pause across two instances.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::*;

#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_postgres_configuration_file_delivers() {
    let url = jum_gateway::store::testing::fresh_database("config");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // the documented layout: config/ and certs/dev under the working folder
    std::fs::create_dir_all(root.join("config")).unwrap();
    for f in ["gateway.toml", "gateway-postgres.toml"] {
        std::fs::copy(
            manifest_dir().join("config").join(f),
            root.join("config").join(f),
        )
        .unwrap();
    }
    let certs = root.join("certs/dev");
    certs_init(&certs);
    let (_sim, ports) = start_simulator(root, &certs);
    write_data_keys(&root.join("data"));
    let port = free_port();
    let token_hash = jum_gateway::api::token_hash("t0k3n");
    let (daemon, said) = serve_configured(
        root,
        "config/gateway-postgres.toml",
        port,
        ports,
        &[
            "--schemas".into(),
            manifest_dir().join("schemas").display().to_string(),
        ],
        &[
            ("JUMGW_STORE__URL", url.clone()),
            ("JUMGW_CLIENTS__CASES__TOKEN_SHA256", token_hash),
        ],
        None,
    );
    assert!(said.contains("store: PostgreSQL"), "{said}");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
        .bearer_auth("t0k3n")
        .header("content-type", "application/json")
        .body(r#"{"case":{"number":"9/2026","legal_basis":"ZUP čl. 103","official":"o"},"purpose":"building permit","service":"cadastre.property-sheet","subject":{"ko":"803472","sheet":"1520"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("http://127.0.0.1:{port}/api/v1/requests/{id}");
        let v = get_json(&http, &url, Some("t0k3n")).await;
        if v["state"] == "delivered" {
            break;
        }
        assert!(Instant::now() < end, "not delivered: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its timestamp, found by the evidence job in the database's index of
    // pending ones.
    loop {
        let url = format!("http://127.0.0.1:{port}/api/v1/documents/{id}");
        let v = get_json(&http, &url, Some("t0k3n")).await;
        if v["timestamp"]["state"] == "stamped" {
            break;
        }
        assert!(Instant::now() < end, "not stamped: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(daemon);
    // it is in the database, not in a sled folder
    assert!(!root.join("data/store").exists());
    let o = jumgw()
        .args(["store", "export", "--store", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&id));

    // a --store that is neither sled nor a PostgreSQL URL
    let o = jumgw()
        .args(["serve", "--demo", "--store", "mysql://x/y", "--data-dir"])
        .arg(root.join("d2"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("expected `sled` or a URL postgres://"),
        "{}",
        text(&o)
    );
}

/// Two `serve --demo` instances on one database: an administrator's pause
/// given to one reaches the other at once (NOTIFY), the other sends
/// nothing to the paused registry, and a resume given to the other lets
/// the request through.
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_given_to_one_instance_holds_at_the_other() {
    let url = jum_gateway::store::testing::fresh_database("pause");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = on_postgres(&url);
    let (a, b) = (free_port(), free_port());
    let da = start_daemon_env(&data, a, &env);
    let db = start_daemon_env(&data, b, &env);
    let http = reqwest::Client::new();
    // What each instance's own simulator has answered for the cadastre.
    let cadastre_seen = || async {
        let mut n = 0;
        for d in [&da, &db] {
            let v = get_json(&http, &format!("{}/seen", d.1), None).await;
            n += v["by_registry"]["cadastre"].as_u64().unwrap_or(0);
        }
        n
    };
    let admin = |port: u16, path: &str| {
        http.post(format!("http://127.0.0.1:{port}/admin/v1/{path}"))
            .bearer_auth("demo-admin")
            .send()
    };
    let r = admin(a, "registries/cadastre/pause").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let paused_at_b = || async {
        let url = format!("http://127.0.0.1:{b}/admin/v1/registries");
        let v = get_json(&http, &url, Some("demo-admin")).await;
        v.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["registry"] == "cadastre")
            .map(|r| r["paused"] == true)
            .unwrap_or(false)
    };
    let end = Instant::now() + Duration::from_secs(5);
    while !paused_at_b().await {
        assert!(
            Instant::now() < end,
            "the pause did not reach the other instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a cadastre request filed at either instance waits
    let id = submit(&http, b, 2).await.unwrap();
    // The window is made of events, not of a pause: civil requests filed
    // after it, until each instance's own simulator has answered one (on
    // the shared database either instance may send any of them), so both
    // dispatchers have had a round with the cadastre request due.
    let civil_seen = |d: &Daemon| {
        let (http, control) = (http.clone(), d.1.clone());
        async move {
            let v = get_json(&http, &format!("{control}/seen"), None).await;
            v["by_registry"]["civil"].as_u64().unwrap_or(0)
        }
    };
    let end = Instant::now() + Duration::from_secs(60);
    let mut civil = Vec::new();
    let rounds = loop {
        let rounds = (civil_seen(&da).await, civil_seen(&db).await);
        if rounds.0 >= 1 && rounds.1 >= 1 {
            break rounds;
        }
        assert!(
            Instant::now() < end,
            "after {} civil requests, not both instances sent one: {rounds:?}",
            civil.len()
        );
        civil.push(submit(&http, a, 0).await.unwrap());
        civil.push(submit(&http, b, 0).await.unwrap());
        wait_delivered(&http, a, &civil).await;
    };
    eprintln!(
        "{} civil requests filed; sent by the instances {rounds:?}",
        civil.len()
    );
    assert_eq!(cadastre_seen().await, 0, "the paused registry was asked");
    let state = |port: u16, id: String| {
        let http = http.clone();
        async move {
            let url = format!("http://127.0.0.1:{port}/api/v1/requests/{id}");
            let v = get_json(&http, &url, Some("demo-backoffice")).await;
            v["state"].as_str().unwrap_or("?").to_owned()
        }
    };
    assert_eq!(state(a, id.clone()).await, "queued");
    let r = admin(b, "registries/cadastre/resume").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_delivered(&http, a, &[id]).await;
    // The control, by the same count: resumed, the registry is asked.
    assert!(cadastre_seen().await >= 1);
}

/// Two instances on one database, one on a machine whose clock is ten
/// minutes fast. Leases and due times are in the database's clock, so the
/// fast one neither takes over the other's leases (which by its own clock
/// expired long ago) nor files requests that the other sees as due only in
/// ten minutes: every request reaches a registry exactly once.
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_a_wrong_clock_takes_no_lease_of_another() {
    let url = jum_gateway::store::testing::fresh_database("clock");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = on_postgres(&url);
    let mut fast_env = env.clone();
    fast_env.push(("JUMGW_CLOCK_SKEW_MS".to_owned(), "600000".to_owned()));
    let (a, b) = (free_port(), free_port());
    let da = start_daemon_env(&data, a, &env);
    let db = start_daemon_env(&data, b, &fast_env);
    let http = reqwest::Client::new();
    // No faults, and slow registries: every send is in flight 300 ms.
    for sim in [&da.1, &db.1] {
        http.post(format!("{sim}/reset")).send().await.unwrap();
        let r = http
            .put(format!("{sim}/faults"))
            .body("*:latency=300ms")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let started = jum_gateway::time::now_ms();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            submit(&http, if i % 2 == 0 { a } else { b }, i)
                .await
                .unwrap(),
        );
    }
    wait_delivered(&http, a, &ids).await;
    let mut sent: std::collections::BTreeMap<String, u64> = Default::default();
    for sim in [&da.1, &db.1] {
        let v = get_json(&http, &format!("{sim}/seen"), None).await;
        for (id, n) in v["by_id"].as_object().unwrap() {
            *sent.entry(id.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    for id in &ids {
        assert_eq!(
            sent.get(id),
            Some(&1),
            "{id} reached the registries {:?} times",
            sent.get(id)
        );
    }
    // and what the fast instance filed carries the database's time
    let url = format!("http://127.0.0.1:{b}/api/v1/requests/{}", ids[1]);
    let v = get_json(&http, &url, Some("demo-backoffice")).await;
    let created = v["created_ms"].as_u64().unwrap();
    assert!(
        created.abs_diff(started) < 60_000,
        "created {created}, the test started at {started}"
    );
}
