//! Webhook delivery against a back-office that is down, then restarts, with
//! the gateway killed in between: every event arrives once the receiver is
//! up, signed so that Python's hmac accepts it, in order per case.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use rand::RngCore;

const TOKEN: &str = "hook-token";

async fn case_view(http: &reqwest::Client, port: u16, case: &str) -> serde_json::Value {
    let enc = case.replace('/', "%2F");
    match http
        .get(format!("http://127.0.0.1:{port}/api/v1/cases/{enc}"))
        .bearer_auth(TOKEN)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoffice_that_was_down_gets_every_event_signed_and_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (port, hook_port) = (free_port(), free_port());
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    let token_hash: String = openssl::sha::sha256(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let env: Vec<(String, String)> = [
        ("JUMGW_CLIENTS__HOOK__TOKEN_SHA256", token_hash),
        ("JUMGW_CLIENTS__HOOK__DELIVERY", "webhook".into()),
        (
            "JUMGW_CLIENTS__HOOK__WEBHOOK_URL",
            format!("http://127.0.0.1:{hook_port}/events"),
        ),
        ("JUMGW_CLIENTS__HOOK__WEBHOOK_SECRET", secret.clone()),
        ("JUMGW_WEBHOOKS__BASE", "100ms".into()),
        ("JUMGW_WEBHOOKS__CAP", "400ms".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut daemon = start_daemon_env(&data, port, &env);
    let http = reqwest::Client::new();

    // Four building permits (a named procedure: three registries each), and
    // a case with one request that fails for good.
    let cases: Vec<String> = (1..=4).map(|i| format!("351-{i}/2026-IV")).collect();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for case in &cases {
        let r = http
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/cases/{}/requests",
                case.replace('/', "%2F")
            ))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(r#"{"legal_basis":"ZUP čl. 103","official":"marija.kovac","purpose":"building permit","procedure":"building-permit","subject":{"jmbg":"0512981717776","ko":"803472","sheet":"1520"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        let services: BTreeSet<&str> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["service"].as_str().unwrap())
            .collect();
        assert_eq!(
            services,
            BTreeSet::from([
                "cadastre.property-sheet",
                "civil.citizenship-certificate",
                "tax.property-tax-status"
            ])
        );
        expected.insert(
            case.clone(),
            v["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect(),
        );
    }
    let failing = "352-1/2026-IV".to_owned();
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!(r#"{{"case":{{"number":"{failing}","legal_basis":"ZUP","official":"o"}},"purpose":"p","service":"civil.birth-extract","subject":{{"jmbg":"0101990800007"}}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    expected.insert(
        failing.clone(),
        BTreeSet::from([v["id"].as_str().unwrap().to_owned()]),
    );

    // Everything finishes while the back-office is down.
    let end = Instant::now() + Duration::from_secs(60);
    for case in expected.keys() {
        while case_view(&http, port, case).await["complete"] != true {
            assert!(Instant::now() < end, "{case} did not complete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A webhook client's documents stay in the store: no case folder.
    assert!(!data.join("cases/hook").exists());

    // The gateway dies with every event still queued, and comes back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.sigkill();
    daemon = start_daemon_env(&data, port, &env);

    let out = tmp.path().join("received.jsonl");
    let _receiver = start_receiver(hook_port, &secret, &out, 3);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let got = received(&out);
        let bundles = got
            .iter()
            .filter(|e| e["type"] == "bundle.completed")
            .count();
        if bundles == expected.len() {
            break;
        }
        assert!(
            Instant::now() < end,
            "only {bundles} of {} bundles arrived: {got:?}\n{}",
            expected.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the outbox is empty nothing more will be sent: anything late
    // or repeated is in the file by then.
    let end = Instant::now() + Duration::from_secs(30);
    while webhook_backlog(&http, port).await != 0 {
        assert!(Instant::now() < end, "the webhook outbox never emptied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received(&out);

    assert!(
        got.iter().all(|e| e["verified"] == true),
        "Python's hmac rejected a signature: {got:?}"
    );
    let ids: BTreeSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "an event arrived twice: {got:?}");
    for (case, reqs) in &expected {
        let mine: Vec<&serde_json::Value> =
            got.iter().filter(|e| e["data"]["case"] == **case).collect();
        let (last, first) = mine.split_last().unwrap();
        assert_eq!(
            last["type"], "bundle.completed",
            "{case}: the bundle is reported after its requests: {mine:?}"
        );
        let reported: BTreeSet<String> = first
            .iter()
            .map(|e| e["data"]["request_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&reported, reqs, "{case}: one event per request");
        assert_eq!(first.len(), reqs.len());
        if *case == failing {
            assert_eq!(first[0]["type"], "request.failed");
            assert_eq!(last["data"]["failed"], 1);
        } else {
            assert!(first.iter().all(|e| e["type"] == "request.delivered"));
            assert_eq!(last["data"]["delivered"], 3);
            // The link in the event works, and gives the signed document.
            let url = first[0]["data"]["document_url"].as_str().unwrap();
            let r = http
                .get(format!("http://127.0.0.1:{port}{url}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.text().await.unwrap().contains("SignatureValue"));
        }
    }
    drop(daemon);

    // The receiver is not a pass-through: a wrong signature is refused.
    let r = http
        .post(format!("http://127.0.0.1:{hook_port}/events"))
        .header("webhook-id", "msg_forged")
        .header(
            "webhook-timestamp",
            (jum_gateway::time::now_ms() / 1000).to_string(),
        )
        .header(
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )
        .body(r#"{"type":"request.delivered","timestamp":"x","data":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a forged event: {:?}",
        received(&out).last()
    );
}

/// The operators' alerts: mailed through a server that demands STARTTLS
/// and a login, in the configured language, one digest per interval; and
/// an alert raised just before the gateway is killed is mailed after it
/// comes back (the alert is written with the change that raised it, or the
/// change is made again and raises it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_get_digests_by_starttls_and_an_alert_outlives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let certs = data.join("certs");
    // The demo's certificates, made first: the mail server's is issued by
    // the same CA, which the gateway is told to trust for it.
    certs_init(&certs);
    let out = dir.path().join("mails.jsonl");
    let smtp = start_smtp(
        &certs.join("cadastre-tls.pem"),
        &certs.join("cadastre-tls.key"),
        "jumgw",
        "pa55-w0rd",
        &out,
    );
    let env = |interval: &str| -> Vec<(String, String)> {
        [
            (
                "JUMGW_ALERTS__TO",
                r#"["ops@opstina.rs", "it@opstina.rs"]"#.to_owned(),
            ),
            ("JUMGW_ALERTS__FROM", "jumgw <jumgw@opstina.rs>".to_owned()),
            ("JUMGW_ALERTS__SMTP", format!("127.0.0.1:{}", smtp.1)),
            ("JUMGW_ALERTS__USER", "jumgw".to_owned()),
            ("JUMGW_ALERTS__PASSWORD", "pa55-w0rd".to_owned()),
            (
                "JUMGW_ALERTS__TLS_CA",
                certs.join("ca.pem").display().to_string(),
            ),
            ("JUMGW_ALERTS__INTERVAL", interval.to_owned()),
            ("JUMGW_ALERTS__CHECK", "200ms".to_owned()),
            ("JUMGW_ALERTS__LANGUAGE", "sr".to_owned()),
            (
                "JUMGW_ALERTS__DASHBOARD_URL",
                "https://gw.opstina.rs/ui".to_owned(),
            ),
            ("JUMGW_ALERTS__BREAKER_OPEN", "1s".to_owned()),
            // Every certificate of the demo ends within ten years.
            ("JUMGW_ALERTS__CERTIFICATE", "3650d".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let http = reqwest::Client::new();
    // A JMBG the civil registry has no entry for: the request ends dead.
    let unknown = "0101990710008";
    let port = free_port();
    let mut d = start_daemon_env(&data, port, &env("1h"));
    let r: serde_json::Value = http
        .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
        .bearer_auth("demo-backoffice")
        .json(&serde_json::json!({
            "case": {"number": "7/2026", "legal_basis": "ZUP čl. 103", "official": "marija.kovac"},
            "purpose": "p", "service": "civil.birth-extract", "subject": {"jmbg": unknown}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = r["id"].as_str().unwrap().to_owned();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(
            &http,
            &format!("http://127.0.0.1:{port}/api/v1/requests/{dead}"),
            Some("demo-backoffice"),
        )
        .await;
        if v["state"] == "dead" {
            break;
        }
        assert!(Instant::now() < end, "not dead: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed at once: the change may not be on disk yet, nor its alert.
    d.sigkill();
    assert!(
        mails(&out).is_empty(),
        "mailed before its interval: {:?}",
        mails(&out)
    );

    let port = free_port();
    let d = start_daemon_env(&data, port, &env("1s"));
    // The tax registry fails every time: its breaker opens and stays open.
    http.put(format!("{}/faults", d.1))
        .body("tax:503")
        .send()
        .await
        .unwrap();
    for i in 0..6 {
        submit(&http, port, 4 + 6 * i).await.unwrap();
    }
    let end = Instant::now() + Duration::from_secs(60);
    let all = loop {
        let got = mails(&out);
        let text: String = got.iter().map(|m| m["body"].as_str().unwrap()).collect();
        if text.contains(&dead) && text.contains("prekidač") && text.contains("gateway/seal") {
            break got;
        }
        assert!(
            Instant::now() < end,
            "alerts missing from {got:#?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One digest per interval, not one mail per alert: counted, not
    // timed. The alerts raised together (the breaker's and the dead
    // requests') share mails.
    let per_mail: Vec<usize> = all
        .iter()
        .map(|m| m["body"].as_str().unwrap().matches("\n* ").count())
        .collect();
    let alerts: usize = per_mail.iter().sum();
    assert!(alerts >= 10, "{alerts} alerts in {all:#?}");
    assert!(
        all.len() < alerts && per_mail.iter().any(|&n| n >= 2),
        "{} mails for {alerts} alerts ({per_mail:?}): not digested",
        all.len()
    );
    for m in &all {
        assert_eq!(m["tls"], true, "{m}");
        assert_eq!(m["authenticated"], true, "{m}");
        assert_eq!(m["login"], "jumgw", "{m}");
        assert_eq!(m["mail_from"], "jumgw@opstina.rs", "{m}");
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["ops@opstina.rs", "it@opstina.rs"]),
            "{m}"
        );
        assert!(
            m["subject"].as_str().unwrap().starts_with("[jumgw] "),
            "{m}"
        );
        let body = m["body"].as_str().unwrap();
        assert!(
            body.starts_with("Mrežnom prolazu je potreban operater:"),
            "{body}"
        );
        assert!(!body.contains(unknown), "a JMBG in a mail: {body}");
    }
    let text: String = all.iter().map(|m| m["body"].as_str().unwrap()).collect();
    // What, since when, and where to look.
    assert!(text.contains("Zahtev je mrtav"), "{text}");
    assert!(
        text.contains(&format!("https://gw.opstina.rs/ui/requests/{dead}")),
        "{text}"
    );
    assert!(text.contains("prekidač ostaje otvoren"), "{text}");
    assert!(text.contains("Sertifikat uskoro ističe"), "{text}");
    assert!(text.contains("Od: 20"), "{text}");
    // The dead request was told once, though raised on both sides of the crash.
    assert_eq!(
        text.matches(&format!("Odnosi se na: {dead}")).count(),
        1,
        "{text}"
    );
    let m = metric(
        &http,
        &format!("http://127.0.0.1:{port}"),
        "jumgw_alert_mails_total{result=\"sent\"}",
    )
    .await;
    assert!(m >= 1.0, "{m}");
}

/// A document that came by X-Road with an attachment (SOAP with
/// attachments, from the demo's simulator front): its `request.delivered`
/// event names the message and lists the attachment with the URL to fetch
/// it, which gives its bytes (their SHA-256 and size as the event says);
/// a signed-XML document's event has neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_road_delivery_event_lists_its_attachments_to_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (port, hook_port) = (free_port(), free_port());
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    let token_hash: String = openssl::sha::sha256(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let env: Vec<(String, String)> = [
        ("JUMGW_CLIENTS__HOOK__TOKEN_SHA256", token_hash),
        ("JUMGW_CLIENTS__HOOK__DELIVERY", "webhook".into()),
        (
            "JUMGW_CLIENTS__HOOK__WEBHOOK_URL",
            format!("http://127.0.0.1:{hook_port}/events"),
        ),
        ("JUMGW_CLIENTS__HOOK__WEBHOOK_SECRET", secret.clone()),
        ("JUMGW_REGISTRIES__CADASTRE__PROTOCOL", "x-road".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let daemon = start_daemon_env(&data, port, &env);
    let out = tmp.path().join("received.jsonl");
    let _receiver = start_receiver(hook_port, &secret, &out, 0);
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/faults", daemon.1))
        .body("cadastre:swa")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let mut ids = Vec::new();
    for (service, subject) in [
        (
            "cadastre.property-sheet",
            r#"{"ko":"803472","sheet":"1520"}"#,
        ),
        ("civil.birth-extract", r#"{"jmbg":"0512981717776"}"#),
    ] {
        let r = http
            .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(format!(r#"{{"case":{{"number":"9/2026","legal_basis":"ZUP","official":"o"}},"purpose":"p","service":"{service}","subject":{subject}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let end = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let got: Vec<serde_json::Value> = received(&out)
            .into_iter()
            .filter(|e| e["type"] == "request.delivered")
            .collect();
        if got.len() == 2 {
            break got;
        }
        assert!(Instant::now() < end, "{got:?}\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(delivered.iter().all(|e| e["verified"] == true));
    let of = |id: &str| {
        delivered
            .iter()
            .find(|e| e["data"]["request_id"] == id)
            .unwrap()
            .clone()
    };
    let x_road = of(&ids[0]);
    let d = &x_road["data"];
    assert!(
        d["message_id"].as_str().is_some_and(|m| m.len() == 36),
        "{d}"
    );
    let list = d["attachments"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{d}");
    assert_eq!(list[0]["n"], 1);
    let url = list[0]["url"].as_str().unwrap();
    assert_eq!(url, format!("/api/v1/documents/{}/attachments/1", ids[0]));
    let r = http
        .get(format!("http://127.0.0.1:{port}{url}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        list[0]["content_type"].as_str().unwrap()
    );
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename="));
    let bytes = r.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, list[0]["size"].as_u64().unwrap());
    let sha: String = openssl::sha::sha256(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(list[0]["sha256"], sha);
    // The signed-XML registry's event is as it always was.
    let signed = of(&ids[1]);
    assert!(signed["data"].get("attachments").is_none(), "{signed}");
    assert!(signed["data"].get("message_id").is_none(), "{signed}");
}
