//! `/metrics` parses with an independent parser (Python's
//! prometheus_client) and agrees with what the admin API reports.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use common::*;
use serde_json::Value;

fn parse(text: &str) -> Value {
    let mut child = std::process::Command::new(python())
        .arg(manifest_dir().join("tests/py/parse_metrics.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The sum of a sample's values over the samples whose labels include `with`.
fn sum(m: &Value, name: &str, with: &[(&str, &str)]) -> f64 {
    m["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == name && with.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_agree_with_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _d = start_daemon(&dir.path().join("data"), port);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..24 {
        ids.push(submit(&http, port, i).await.unwrap());
    }
    wait_delivered(&http, port, &ids).await;

    // The documents' timestamps follow their delivery by a round of the
    // evidence job: the scrape is taken once they are counted.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let body = loop {
        let r = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let body = r.text().await.unwrap();
        if body.contains("jumgw_timestamps_total{") {
            break body;
        }
        assert!(
            std::time::Instant::now() < end,
            "no timestamp counted: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let m = parse(&body);
    let stats: Value = http
        .get(format!("http://127.0.0.1:{port}/admin/v1/stats"))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(m["families"]["jumgw_queue_depth"], "gauge");
    assert_eq!(m["families"]["jumgw_attempt_duration_seconds"], "histogram");
    for (state, n) in stats["states"].as_object().unwrap() {
        assert_eq!(
            sum(&m, "jumgw_queue_depth", &[("state", state)]),
            n.as_f64().unwrap(),
            "{state}"
        );
    }
    assert_eq!(
        sum(&m, "jumgw_queue_depth", &[("state", "delivered")]),
        24.0
    );
    assert_eq!(
        sum(&m, "jumgw_accepted_total", &[("client", "demo-backoffice")]),
        24.0
    );
    assert_eq!(
        sum(&m, "jumgw_deliveries_total", &[("mode", "folder")]),
        24.0
    );
    let documents = sum(&m, "jumgw_attempts_total", &[("outcome", "document")]);
    assert_eq!(documents, 24.0);
    let all = sum(&m, "jumgw_attempts_total", &[]);
    assert_eq!(
        sum(&m, "jumgw_attempt_duration_seconds_count", &[]),
        all,
        "one duration per attempt"
    );
    for reg in ["civil", "cadastre", "tax"] {
        assert!(
            m["samples"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s[0] == "jumgw_breaker_state" && s[1]["registry"] == reg),
            "no breaker state for {reg}"
        );
    }
    assert!(
        sum(
            &m,
            "jumgw_certificate_days_left",
            &[("registry", "gateway"), ("role", "gateway tls")]
        ) > 300.0
    );
    assert!(sum(&m, "jumgw_store_bytes", &[]) > 0.0);

    // The Grafana dashboard and the Prometheus rules query only what this
    // scrape exposes (a histogram by its _bucket, _sum and _count).
    let exposed: std::collections::BTreeSet<String> = m["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap().to_owned())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(manifest_dir().join("ops/grafana/jumgw.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            queries.push((
                "ops/grafana/jumgw.json",
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let rules = std::fs::read_to_string(manifest_dir().join("ops/prometheus/alerts.yml")).unwrap();
    for l in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
    {
        queries.push(("ops/prometheus/alerts.yml", l.to_owned()));
    }
    let mut named = 0;
    for (file, q) in &queries {
        let mut rest = q.as_str();
        while let Some(i) = rest.find("jumgw_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            named += 1;
            assert!(
                exposed.contains(&name),
                "{file} queries {name}, which /metrics does not expose: {q}"
            );
        }
    }
    assert!(named >= 20, "only {named} metric names in the queries");
}
