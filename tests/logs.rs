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
            if ["delivered", "dead"].contains(&v["state"].as_str().unwrap()) {
                break;
            }
            assert!(Instant::now() < end, "{id} did not finish: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let text = daemon.log();
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
