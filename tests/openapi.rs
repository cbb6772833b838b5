//! `/openapi.json` is enough to integrate: every operation is documented
//! with examples and exists as documented, and schemathesis, an independent
//! tool, finds no server error and no answer that breaks the schema when it
//! fuzzes a live `serve --demo`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

fn doc() -> Value {
    jum_gateway::api::openapi::document_json()
}

/// Follows a `$ref` into the components.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => v,
    }
}

fn has_example(doc: &Value, content: &Value) -> bool {
    content.as_object().unwrap().values().any(|media| {
        media.get("example").is_some()
            || media.get("examples").is_some()
            || resolve(doc, &media["schema"]).get("example").is_some()
            // A list: its items' example.
            || resolve(doc, &media["schema"]["items"]).get("example").is_some()
    })
}

#[test]
fn every_operation_is_documented_with_examples() {
    let d = doc();
    assert_eq!(d["openapi"], "3.1.0");
    let mut n = 0;
    for (path, ops) in d["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            n += 1;
            let what = format!("{method} {path}");
            assert!(op["summary"].is_string(), "{what} has no summary");
            if let Some(body) = op.get("requestBody") {
                assert!(
                    has_example(&d, &body["content"]),
                    "{what}: request body without an example"
                );
            }
            let ok = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(code, _)| code.starts_with('2'))
                .unwrap_or_else(|| panic!("{what} has no success response"))
                .1;
            if let Some(content) = ok.get("content") {
                assert!(
                    has_example(&d, content),
                    "{what}: success response without an example"
                );
            }
            let public =
                ["/healthz", "/readyz", "/openapi.json", "/metrics"].contains(&path.as_str());
            assert_eq!(
                op.get("security").is_none(),
                public,
                "{what}: security as the code does it"
            );
            for (code, r) in op["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    if path == "/readyz" {
                        continue;
                    }
                    assert!(
                        r["content"]["application/problem+json"].is_object(),
                        "{what} {code} is not problem+json"
                    );
                }
            }
        }
    }
    assert!(n >= 11, "only {n} operations");
}

/// Every time in ms has its RFC 3339 twin, in the document and on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ms_time_has_an_rfc3339_twin_in_the_document_and_the_answers() {
    let d = doc();
    let mut n = 0;
    for (name, schema) in d["components"]["schemas"].as_object().unwrap() {
        let Some(props) = schema["properties"].as_object() else {
            continue;
        };
        for k in props.keys().filter(|k| k.ends_with("_ms")) {
            if k == "duration_ms" || k == "total_ms" {
                continue;
            }
            let twin = format!("{}_utc", k.trim_end_matches("_ms"));
            assert_eq!(
                props[&twin]["format"], "date-time",
                "{name}.{k} has no {twin} in the OpenAPI document"
            );
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} times found in the schemas");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _daemon = start_daemon(&dir.path().join("data"), port);
    let http = reqwest::Client::new();
    let r: Value = http
        .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
        .bearer_auth("demo-backoffice")
        .json(&serde_json::json!({
            "case": {"number": "1/2026", "legal_basis": "ZUP čl. 103", "official": "o"},
            "purpose": "p", "service": "cadastre.property-sheet",
            "subject": {"ko": "803472", "sheet": "1520"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created = r["created_ms"].as_u64().unwrap();
    let utc = r["created_utc"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_rfc3339(utc).unwrap();
    assert_eq!(parsed.timestamp_millis() as u64, created, "{r}");
    assert!(
        r["delivered_utc"].is_null() && r.get("delivered_ms").is_some(),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_exists_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _daemon = start_daemon(&dir.path().join("data"), port);
    let http = reqwest::Client::new();
    for (path, ops) in doc()["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = format!(
                "http://127.0.0.1:{port}{}",
                path.replace("{id}", "nope").replace("{case}", "nope")
            );
            let r = http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .bearer_auth("demo-admin")
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                status != 405 && !body.contains("no such endpoint"),
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _daemon = start_daemon(&dir.path().join("data"), port);
    let st = python().with_file_name("st");
    // A fixed seed keeps CI repeatable; set JUMGW_ST_SEED to explore.
    let seed = std::env::var("JUMGW_ST_SEED").unwrap_or_else(|_| "20261125".into());
    let o = std::process::Command::new(&st)
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/openapi.json"))
        .args(["-H", "Authorization: Bearer demo-admin"])
        // Everything but "schema-valid data must be accepted": check digits,
        // subject combinations and the configured catalogue are rules a
        // JSON schema cannot state, so valid-looking data may get a 422.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "60", "--seed", &seed])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let tested: usize = out
        .split("Tested: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        tested >= 10,
        "schemathesis tested {tested} operations: {out}"
    );
}
