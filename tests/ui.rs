//! The dashboard in a real browser (Debian's headless Chromium, driven by
//! Playwright): it shows the counts the API reports, in three languages,
//! and its retry button works; the tax registry is reached over X-Road
//! (the simulator's front, its answers with an attachment): its panel says
//! what the security server allows, its document's page lists the
//! attachment and the message id. Screenshots land in target/ui-screenshots.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_reports_and_its_buttons_work() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("JUMGW_RETRY__MAX_ATTEMPTS", "3"),
        ("JUMGW_RETRY__BASE", "50ms"),
        ("JUMGW_RETRY__CAP", "100ms"),
        // 3 requests × 3 attempts: the breaker opens on the last failure.
        ("JUMGW_REGISTRIES__CADASTRE__BREAKER_FAILURES", "9"),
        ("JUMGW_REGISTRIES__CADASTRE__BREAKER_COOLDOWN", "60s"),
        ("JUMGW_REGISTRIES__TAX__PROTOCOL", "x-road"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let d = start_daemon_env(&dir.path().join("data"), port, &env);
    let http = reqwest::Client::new();
    http.put(format!("{}/faults", d.1))
        .body("cadastre:503, tax:swa")
        .send()
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut ids = Vec::new();
    for (i, (service, subject)) in [
        (
            "cadastre.property-sheet",
            json!({"ko": "803472", "sheet": "1520"}),
        ),
        (
            "cadastre.property-sheet",
            json!({"ko": "803472", "sheet": "1520"}),
        ),
        (
            "cadastre.property-sheet",
            json!({"ko": "803472", "sheet": "1520"}),
        ),
        ("civil.birth-extract", json!({"jmbg": "0512981717776"})),
        ("tax.property-tax-status", json!({"jmbg": "0512981717776"})),
    ]
    .into_iter()
    .enumerate()
    {
        ids.push(file(&http, &base, &format!("40-{i}/2026"), service, subject).await);
    }
    let stats = |http: reqwest::Client| {
        let base = base.clone();
        async move {
            http.get(format!("{base}/admin/v1/stats"))
                .bearer_auth("demo-admin")
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(http.clone()).await;
        if s["states"]["dead"] == 3 && s["states"]["delivered"] == 2 {
            break;
        }
        assert!(Instant::now() < end, "not settled: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One request that stays open (its registry paused): the deadline
    // list must show it, and none of the finished ones.
    let r = http
        .post(format!("{base}/admin/v1/registries/tax/pause"))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let parked = file(
        &http,
        &base,
        "41/2026",
        "tax.clearance-certificate",
        json!({"pib": "101134702"}),
    )
    .await;
    let api = stats(http.clone()).await;
    assert_eq!(api["states"]["queued"], 1, "{api}");

    // A delivered document, once the simulator's TSA has stamped it.
    let stamped = &ids[3];
    wait_stamped(
        &http,
        &base,
        std::slice::from_ref(stamped),
        Duration::from_secs(20),
    )
    .await;
    let shots = manifest_dir().join("target/ui-screenshots");
    let o = std::process::Command::new(python())
        .arg(manifest_dir().join("tests/py/ui_check.py"))
        .args([&base, "demo-admin", "0512981717776"])
        .arg(&shots)
        .arg(stamped)
        .args([&ids[4], "tax"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let seen: Value = serde_json::from_slice(&o.stdout).unwrap();

    assert_eq!(seen["redirected_to_login"], true);
    assert_eq!(seen["bad_token_refused"], true);
    for (state, n) in api["states"].as_object().unwrap() {
        assert_eq!(
            &seen["counts"][state], n,
            "{state}: page {seen} vs API {api}"
        );
    }
    let cad = seen["registries"]["cadastre"].as_str().unwrap();
    assert!(cad.contains("Breaker open") && cad.contains('■'), "{cad}");
    assert!(seen["registries"]["civil"]
        .as_str()
        .unwrap()
        .contains("Breaker closed"));
    assert_eq!(seen["charts"], 6, "two charts per registry");
    assert_eq!(seen["lang_sr"], true);
    assert!(seen["title_sr"].as_str().unwrap().contains("Konzola"));
    assert_eq!(seen["lang_hu"], true);
    assert!(seen["title_hu"].as_str().unwrap().contains("konzol"));

    // The retry button worked: the API no longer says dead.
    let rid = seen["retried"].as_str().unwrap();
    assert!(ids[..3].contains(&rid.to_owned()), "{seen}");
    assert!(seen["banner"].as_str().unwrap().contains(rid), "{seen}");
    let v: Value = http
        .get(format!("{base}/admin/v1/requests/{rid}"))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(v["state"], "dead", "{v}");
    assert!(
        seen["timeline_items"].as_u64().unwrap() >= 4,
        "filed + 3 attempts"
    );
    let rows: Vec<&str> = seen["deadline_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.contains(&parked) && r.contains("41/2026") && r.contains("days left")),
        "the open request is not on the deadline list: {rows:?}"
    );
    for done in &ids[3..] {
        assert!(
            !rows.iter().any(|r| r.contains(done.as_str())),
            "a delivered request {done} on the deadline list: {rows:?}"
        );
    }
    assert_eq!(seen["timestamp"], "stamped", "{seen}");
    // Over X-Road: the panel, the message id and the attachment.
    assert!(
        seen["x_road_panel"]
            .as_str()
            .is_some_and(|p| p.contains("all of ours allowed")),
        "{seen}"
    );
    let x: Value = http
        .get(format!("{base}/api/v1/requests/{}", ids[4]))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = x["attempts"][0]["message_id"].as_str().unwrap();
    assert_eq!(seen["x_road_message_ids"], json!([message]), "{seen}");
    let rows = seen["x_road_attachments"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{seen}");
    let row = rows[0].as_str().unwrap();
    let a = &x["attachments"][0];
    assert!(
        row.contains(a["content_type"].as_str().unwrap())
            && row.contains(a["sha256"].as_str().unwrap()),
        "{row} / {a}"
    );
    assert!(
        seen["timestamp_text"]
            .as_str()
            .unwrap()
            .contains("development TSA"),
        "{seen}"
    );
    assert!(seen["who_rows"].as_u64().unwrap() >= 4, "{seen}");
    assert_eq!(seen["who_page_has_jmbg"], false);
    for shot in [
        "overview-en",
        "overview-sr",
        "overview-hu",
        "request-en",
        "request-x-road-en",
        "deadlines-en",
        "audit-who-en",
    ] {
        let png = std::fs::read(shots.join(format!("{shot}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{shot}");
    }
}

/// Files a request for `case` as the back-office; its id.
async fn file(
    http: &reqwest::Client,
    base: &str,
    case: &str,
    service: &str,
    subject: Value,
) -> String {
    let v: Value = http
        .post(format!("{base}/api/v1/requests"))
        .bearer_auth("demo-backoffice")
        .json(&json!({"case": {"number": case, "legal_basis": "ZUP čl. 103", "official": "marija.kovac"},
                      "purpose": "building permit", "service": service, "subject": subject}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned()
}
