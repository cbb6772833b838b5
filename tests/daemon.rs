//! The daemon's behaviours against the simulator's faults, in-process:
//! retries, the circuit breaker, pause, maintenance windows, the security
//! cap, asynchronous answers, permanent failures, delivery into the case,
//! the write-ahead lease (a recording store behind a checking relay);
//! requests go in through the API router itself.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::*;
use jum_gateway::api::{self, AppState, Client};
use jum_gateway::config::MaintenanceWindow;
use jum_gateway::dispatch::Dispatcher;
use jum_gateway::lifecycle::{
    OutcomeKind, RevocationMethod, SignedDocState, SignerStatus, StampState,
};
use jum_gateway::store::crypt::DocumentCipher;
use jum_gateway::store::prelude::*;
use jum_gateway::store::{Change, Lease, QueueStore, RequestRecord, SledStore, State, StoreError};
use tower::ServiceExt;

struct Running {
    env: Env,
    cipher: Arc<DocumentCipher>,
    store: Arc<SledStore>,
    dispatcher: Arc<Dispatcher>,
    state: AppState,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn run(
    mut env: Env,
    adjust: impl FnOnce(&mut jum_gateway::config::GatewayConfig),
) -> Running {
    env.gw.retry.base = Duration::from_millis(50);
    env.gw.retry.cap = Duration::from_millis(200);
    for r in env.gw.registries.values_mut() {
        r.breaker_cooldown = Duration::from_millis(500);
    }
    adjust(&mut env.gw);
    let Parts {
        store,
        cipher,
        dispatcher,
    } = env.parts();
    let dyn_store: Arc<dyn QueueStore> = store.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(dispatcher.clone().run(rx));
    let client = |name: &str, services: Vec<String>, rate_per_s: Option<f64>| Client {
        name: name.into(),
        role: jum_gateway::api::Role::Backoffice,
        services,
        rate_per_s,
        tls_subject: None,
    };
    let clients = [
        (api::token_hash("t"), client("backoffice", vec![], None)),
        (
            api::token_hash("a"),
            Client {
                role: jum_gateway::api::Role::Admin,
                ..client("ops", vec![], None)
            },
        ),
        (
            api::token_hash("viewer"),
            Client {
                role: jum_gateway::api::Role::Viewer,
                ..client("vera", vec![], None)
            },
        ),
        (
            api::token_hash("operator"),
            Client {
                role: jum_gateway::api::Role::Operator,
                ..client("ognjen", vec![], None)
            },
        ),
        (
            api::token_hash("auditor"),
            Client {
                role: jum_gateway::api::Role::Auditor,
                ..client("ana", vec![], None)
            },
        ),
        // one request per 100 s: the second is refused however slowly it comes
        (api::token_hash("l"), client("limited", vec![], Some(0.01))),
        (
            api::token_hash("x"),
            client("tax-office", vec!["tax.clearance-certificate".into()], None),
        ),
    ]
    .into_iter()
    .collect();
    let state = AppState::new(
        &env.gw,
        dyn_store,
        dispatcher.clone(),
        cipher.clone(),
        clients,
    );
    Running {
        env,
        cipher,
        store,
        dispatcher,
        state,
        _stop: stop,
    }
}

impl Running {
    async fn submit(&self, service: &str, subject: &str) -> String {
        let body = format!(
            r#"{{"case":{{"number":"351-12/2026-IV","legal_basis":"ZUP čl. 103","official":"o"}},"purpose":"ex officio data for the case","service":"{service}","subject":{subject}}}"#
        );
        let (status, _, v) = call(self, "POST", "/api/v1/requests", "t", body).await;
        assert_eq!(status, 202, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    async fn until(&self, id: &str, want: State, within: Duration) -> RequestRecord {
        let end = Instant::now() + within;
        loop {
            let r = self.store.get(id).await.unwrap().unwrap();
            if r.state == want {
                return r;
            }
            assert!(
                Instant::now() < end,
                "{id} is {:?}, not {want:?}, after {within:?}: {r:?}",
                r.state
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

const BIRTH: (&str, &str) = ("civil.birth-extract", r#"{"jmbg":"0512981717776"}"#);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_the_registry_answers_then_delivers_into_the_case() {
    let d = run(setup("civil:503=next:2").await, |_| {}).await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d
        .until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let outcomes: Vec<&str> = r.attempts.iter().map(|a| a.outcome.name()).collect();
    assert_eq!(outcomes, ["retryable", "retryable", "document"]);
    // Its deadline is counted as ZUP counts 15 days: it ends at midnight
    // in Serbia, on a working day at least 15 days after the filing day.
    {
        use chrono::{Datelike, TimeZone};
        let belgrade = |ms: u64| {
            chrono_tz::Europe::Belgrade
                .timestamp_millis_opt(ms as i64)
                .unwrap()
        };
        let end = belgrade(r.deadline_ms + 1);
        assert_eq!(end.time(), chrono::NaiveTime::MIN, "{end}");
        let filed = belgrade(r.created_ms).date_naive();
        let last = belgrade(r.deadline_ms).date_naive();
        assert!((last - filed).num_days() >= 15, "{filed} -> {last}");
        assert!(last.weekday().num_days_from_monday() < 5, "{last}");
        assert_eq!(
            Some(last),
            jum_gateway::time::calendar::limit(filed, 15).map(|l| l.last)
        );
    }
    let file = d
        .env
        .dir
        .path()
        .join("cases/backoffice/351-12%2F2026-IV")
        .join(format!("{id}.civil.birth-extract.xml"));
    let xml = std::fs::read(&file).unwrap();
    assert_eq!(
        xml,
        d.cipher
            .open(&id, &d.store.document(&id).await.unwrap().unwrap())
            .unwrap(),
        "the signed envelope, byte for byte"
    );
    let sidecar = std::fs::read_to_string(file.with_extension("json")).unwrap();
    assert!(
        sidecar.contains("\"subject\": \"jmbg=0512******776\""),
        "{sidecar}"
    );
    assert!(sidecar.contains("\"client\": \"backoffice\""), "{sidecar}");
    use std::os::unix::fs::PermissionsExt;
    for f in [file.clone(), file.with_extension("json")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{}: {mode:o}", f.display());
    }
    let mode = std::fs::metadata(file.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);
    assert!(
        !sidecar.contains("0512981717776"),
        "no JMBG in clear in the sidecar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_consecutive_failures_and_closes_when_the_registry_heals() {
    // A first cool-down of 3 s (then 6 s, 12 s): the window below, a few
    // rounds of the dispatcher, ends well within the 9 s before a second
    // probe could come, however loaded the machine (at 500 ms two probes
    // fell into it on a busy one).
    let d = run(setup("tax:503").await, |g| {
        let tax = g.registries.get_mut("tax").unwrap();
        tax.breaker_failures = 3;
        tax.breaker_cooldown = Duration::from_secs(3);
    })
    .await;
    let ids: Vec<String> = futures_util::future::join_all(
        (0..6).map(|_| d.submit("tax.clearance-certificate", r#"{"pib":"101134702"}"#)),
    )
    .await;
    let gate = &d.dispatcher.gates["tax"];
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while gate.status().breaker != jum_gateway::limits::BreakerShown::Open {
        assert!(std::time::Instant::now() < end, "{:?}", gate.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // what was already on its way when it opened has landed
    while gate.status().in_flight > 0 {
        assert!(std::time::Instant::now() < end, "{:?}", gate.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tax_seen = || async {
        d.env.seen().await["by_registry"]["tax"]
            .as_u64()
            .unwrap_or(0)
    };
    let seen_open = tax_seen().await;
    // While open, nothing (or one probe, if the cool-down ends meanwhile)
    // more reaches the registry. The window is made of events, not of a
    // pause: every tax request is due again, and then the dispatcher has
    // had a round, shown by a civil request filed after that delivered.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = jum_gateway::time::now_ms();
        let mut all_due = true;
        for id in &ids {
            let r = d.store.get(id).await.unwrap().unwrap();
            all_due &= r.state == State::Retrying && r.due_ms.is_some_and(|t| t <= now);
        }
        if all_due {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the tax requests never all waited, due, behind the open breaker \
             (they are being sent): {:?}, the registry asked {} times since it opened",
            gate.status(),
            tax_seen().await - seen_open
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let civil = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&civil, State::Delivered, Duration::from_secs(15))
        .await;
    let seen_later = tax_seen().await;
    assert!(
        seen_later <= seen_open + 1,
        "the breaker let requests through: {seen_open} -> {seen_later}"
    );
    // The control, seen by the same count: the probes that each cool-down
    // lets through do reach the registry.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while tax_seen().await <= seen_later {
        assert!(
            std::time::Instant::now() < end,
            "no probe after the cool-down: {:?}",
            gate.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.env.faults("").await;
    // The next probe comes after the doubled cool-down (up to 12 s).
    for id in &ids {
        d.until(id, State::Delivered, Duration::from_secs(60)).await;
    }
    assert_eq!(
        d.dispatcher.gates["tax"].status().breaker,
        jum_gateway::limits::BreakerShown::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_registry_gets_nothing_until_resumed() {
    let d = run(setup("").await, |g| {
        g.registries.get_mut("civil").unwrap().paused = true
    })
    .await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    // The window is an event, not a pause: a request to another registry,
    // filed after the paused one was due, is delivered, so the dispatcher
    // has had its rounds with the paused request due.
    let other = d
        .submit("tax.clearance-certificate", r#"{"pib":"101134702"}"#)
        .await;
    d.until(&other, State::Delivered, Duration::from_secs(15))
        .await;
    assert_eq!(
        d.store.get(&id).await.unwrap().unwrap().state,
        State::Queued
    );
    let seen = d.env.seen().await;
    assert_eq!(
        (
            seen["total"].as_u64(),
            seen["by_registry"]["civil"].as_u64().unwrap_or(0)
        ),
        (Some(1), 0),
        "only the other registry was asked: {seen}"
    );
    d.dispatcher.gates["civil"].pause(false, None);
    d.dispatcher.wake();
    d.until(&id, State::Delivered, Duration::from_secs(15))
        .await;
    // The control, by the same count: once resumed, the registry is asked.
    assert_eq!(d.env.seen().await["by_registry"]["civil"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_out_a_known_maintenance_window() {
    let d = run(setup("").await, |g| {
        g.registries.get_mut("cadastre").unwrap().maintenance = vec![MaintenanceWindow {
            cron: "* * * * * *".into(),
            duration: Duration::from_secs(3600),
        }];
    })
    .await;
    let id = d
        .submit("cadastre.parcel", r#"{"ko":"803472","parcel":"1234/5"}"#)
        .await;
    let other = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&other, State::Delivered, Duration::from_secs(5))
        .await;
    assert_eq!(
        d.store.get(&id).await.unwrap().unwrap().state,
        State::Queued
    );
    assert!(d.dispatcher.gates["cadastre"].status().in_maintenance);
    assert!(d.env.seen().await["by_registry"]["cadastre"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_failures_stop_after_three_and_are_never_delivered() {
    let d = run(setup("civil:badsig").await, |_| {}).await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d.until(&id, State::Dead, Duration::from_secs(10)).await;
    assert_eq!(r.attempts.len(), 3);
    assert!(r
        .error
        .unwrap()
        .starts_with("security failure, 3 times: response signature does not verify"));
    assert!(d.store.document(&id).await.unwrap().is_none());
    assert!(!d.env.dir.path().join("cases").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_answers_are_polled_and_permanent_failures_end_dead() {
    let d = run(
        setup("cadastre:async=next:1, cadastre:async-delay=300ms").await,
        |_| {},
    )
    .await;
    let id = d
        .submit(
            "cadastre.property-sheet",
            r#"{"ko":"803472","sheet":"1520"}"#,
        )
        .await;
    d.until(&id, State::Awaiting, Duration::from_secs(5)).await;
    let r = d.until(&id, State::Delivered, Duration::from_secs(5)).await;
    assert_eq!(r.attempts.first().unwrap().outcome, OutcomeKind::Accepted);
    let gone = d.submit(BIRTH.0, r#"{"jmbg":"0101990800007"}"#).await;
    let r = d.until(&gone, State::Dead, Duration::from_secs(5)).await;
    assert_eq!(r.attempts.len(), 1);
    assert!(r.error.unwrap().starts_with("registry found no data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_422_naming_each_field() {
    let d = run(setup("").await, |_| {}).await;
    let body = r#"{"case":{"number":"","legal_basis":"x","official":"y"},"purpose":"ex officio data for the case","service":"civil.birth-extract","subject":{"pib":"101134702"}}"#;
    let (status, headers, v) = call(&d, "POST", "/api/v1/requests", "t", body.into()).await;
    assert_eq!(status, 422);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(v["type"], "urn:jum-gateway:problem:validation-failed");
    assert_eq!(v["errors"][0]["pointer"], "/case/number");
    assert_eq!(v["errors"][1]["pointer"], "/subject");
    assert_eq!(
        v["errors"][1]["reason"],
        "civil.birth-extract does not take a pib subject; it takes jmbg"
    );
    let req = Request::post("/api/v1/requests")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The scheme is case-insensitive (RFC 7235).
    for scheme in ["bearer", "BEARER", "Bearer "] {
        let req = Request::get("/api/v1/services")
            .header("authorization", format!("{scheme} t"))
            .body(Body::empty())
            .unwrap();
        let r = api::app(d.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{scheme:?}");
    }
}

/// What was accepted before and could never be sent or delivered: case
/// numbers past `xrd:issue`'s 255 characters or a folder name's 255 bytes,
/// control characters in any field. Each is now a 422 naming the field;
/// and a case number typed in NFD is the same case as in NFC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_can_never_succeed_is_refused_at_the_door() {
    let d = run(setup("").await, |_| {}).await;
    let body = |number: &str, official: &str, legal: &str, purpose: &str| {
        serde_json::json!({
            "case": {"number": number, "legal_basis": legal, "official": official},
            "purpose": purpose, "service": "civil.birth-extract",
            "subject": {"jmbg": "0512981717776"}
        })
        .to_string()
    };
    let refused = [
        (
            body(&"/".repeat(100), "o", "ZUP", "p"),
            "/case/number",
            "300 bytes",
        ),
        (
            body(&"Ж".repeat(128), "o", "ZUP", "p"),
            "/case/number",
            "256 bytes",
        ),
        (
            body(&"7".repeat(256), "o", "ZUP", "p"),
            "/case/number",
            "256 characters",
        ),
        (
            body(&"7".repeat(1000), "o", "ZUP", "p"),
            "/case/number",
            "1000 characters",
        ),
        (
            body("351\u{1}-12", "o", "ZUP", "p"),
            "/case/number",
            "U+0001",
        ),
        (
            body("351-12", "mari\u{1f}ja", "ZUP", "p"),
            "/case/official",
            "U+001F",
        ),
        (
            body("351-12", "o", "ZUP \u{fffe}", "p"),
            "/case/legal_basis",
            "U+FFFE",
        ),
        (
            body("351-12", "o", "ZUP", "ex \u{7}officio"),
            "/purpose",
            "U+0007",
        ),
        (
            body("351-12", "marija\nkovac", "ZUP", "p"),
            "/case/official",
            "U+000A",
        ),
    ];
    for (b, pointer, why) in refused {
        let (status, _, v) = call(&d, "POST", "/api/v1/requests", "t", b.clone()).await;
        assert_eq!(status, 422, "{b}: {v}");
        assert_eq!(v["errors"][0]["pointer"], pointer, "{b}: {v}");
        let reason = v["errors"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{b}: {reason}");
    }
    assert_eq!(d.store.count(&Default::default()).await.unwrap(), 0);
    // A line break is fine in the purpose and the legal basis.
    let (status, _, _) = call(
        &d,
        "POST",
        "/api/v1/requests",
        "t",
        body("351-12", "o", "ZUP\nčl. 103", "one\ntwo"),
    )
    .await;
    assert_eq!(status, 202);
    // NFD and NFC spellings of one case number are one case.
    let nfd = "Predmet-c\u{30c}-7";
    let (status, _, v) = call(
        &d,
        "POST",
        "/api/v1/requests",
        "t",
        body(nfd, "o", "ZUP", "p"),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["case"], "Predmet-\u{10d}-7");
    let (status, _, v) = call(
        &d,
        "GET",
        "/api/v1/cases/Predmet-c%CC%8C-7",
        "t",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["case"], "Predmet-\u{10d}-7");
    assert_eq!(v["requests"].as_array().unwrap().len(), 1);
}

/// A delivery that fails the same way every time (here the case's folder
/// cannot be made: a file has its name) no longer spins unseen: each
/// failure is recorded with its error and counted, the request is dead
/// after `retry.delivery_attempts`, and once the cause is fixed an
/// operator's retry delivers the document it already has, without asking
/// the registry again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_always_fails_is_given_up_visibly_and_retried_by_an_operator() {
    let d = run(setup("").await, |g| g.retry.delivery_attempts = 3).await;
    let cases = d.env.dir.path().join("cases/backoffice");
    std::fs::create_dir_all(&cases).unwrap();
    let blocker = cases.join("351-12%2F2026-IV");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d.until(&id, State::Dead, Duration::from_secs(20)).await;
    assert_eq!(r.delivery_failures, 3);
    let error = r.error.as_deref().unwrap();
    assert!(
        error.starts_with("delivery failed 3 times, last: "),
        "{error}"
    );
    assert_eq!(r.attempts.len(), 1, "the registry was asked once");
    let (status, _, v) = call(
        &d,
        "GET",
        "/admin/v1/requests?state=dead",
        "a",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v.to_string().contains(&id),
        "operators see it among the dead: {v}"
    );
    std::fs::remove_file(&blocker).unwrap();
    let (status, _, v) = call(
        &d,
        "POST",
        &format!("/admin/v1/requests/{id}/retry"),
        "a",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = d
        .until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    assert_eq!(r.attempts.len(), 1, "delivered from the document it had");
    assert!(blocker
        .join(format!("{id}.civil.birth-extract.xml"))
        .exists());
}

/// Each administrator's role allows its own work and refuses the rest
/// with a 403 naming the role needed, through the API and the dashboard
/// alike; what an operator does is audited under its own name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_allow_their_work_and_refuse_the_rest() {
    let d = run(setup("").await, |_| {}).await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let who = r#"{"jmbg":"0512981717776"}"#.to_owned();
    let calls: [(&str, String, &str, Option<String>); 6] = [
        ("GET", "/admin/v1/stats".into(), "read", None),
        ("GET", format!("/admin/v1/requests/{id}"), "read", None),
        (
            "POST",
            "/admin/v1/registries/civil/pause".into(),
            "act",
            Some("{}".into()),
        ),
        (
            "POST",
            "/admin/v1/registries/civil/resume".into(),
            "act",
            None,
        ),
        ("POST", "/admin/v1/audit/who".into(), "audit", Some(who)),
        ("POST", "/admin/v1/audit/verify".into(), "audit", None),
    ];
    let roles = [
        ("viewer", &["read"][..], "vera"),
        ("operator", &["read", "act"][..], "ognjen"),
        ("auditor", &["read", "audit"][..], "ana"),
        ("a", &["read", "act", "audit"][..], "ops"),
    ];
    for (token, may, name) in roles {
        for (method, uri, duty, body) in &calls {
            let (status, _, v) =
                call(&d, method, uri, token, body.clone().unwrap_or_default()).await;
            if may.contains(duty) {
                assert!(status < 300, "{name} {method} {uri}: {status} {v}");
            } else {
                assert_eq!(status, 403, "{name} {method} {uri}: {v}");
                let needs = match *duty {
                    "act" => "operator",
                    "audit" => "auditor",
                    _ => "viewer",
                };
                let detail = v["detail"].as_str().unwrap();
                assert!(detail.contains(&format!("needs the {needs}")), "{detail}");
                assert!(detail.contains(name), "{detail}");
            }
        }
    }
    // A back-office token is no administrator at all.
    let (status, _, _) = call(&d, "GET", "/admin/v1/stats", "t", String::new()).await;
    assert_eq!(status, 403);
    // The operator's pause is on record under its own name.
    let trail = d.store.audit_scan(0, 10_000).await.unwrap();
    assert!(
        trail
            .iter()
            .filter_map(|(_, e)| e.as_ref().ok())
            .any(|e| e.draft.actor == "ognjen" && e.draft.action.contains("pause")),
        "the operator's pause is audited under its name"
    );
    // On the dashboard: a viewer signs in and sees, but may not act.
    let session = sign_in(&d, "viewer", false).await;
    let page = Request::get("/ui")
        .header("cookie", format!("jumgw_session={session}"))
        .body(Body::empty())
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(page).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = String::from_utf8(
        axum::body::to_bytes(r.into_body(), 1 << 24)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let act = Request::post("/ui/registries/civil/pause")
        .header("cookie", format!("jumgw_session={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={csrf}")))
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(act).await.unwrap();
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("failed="), "{to}");
    assert!(to.contains("operator"), "{to}");
    assert!(
        !d.dispatcher.gates["civil"].status().paused,
        "a viewer paused nothing"
    );
}

/// The process's one metrics recorder (a process has one), for the tests
/// that scrape `/metrics` with it.
fn recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    static R: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    R.get_or_init(|| {
        jum_gateway::metrics::install().expect("no other recorder in this test process")
    })
    .clone()
}

/// Held by a test while it scrapes with [`recorder`]: a scrape sets the
/// gauges (queue depth …) from its own store before it renders them.
static SCRAPES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `/metrics` answer: its status, content type and body.
async fn scrape(d: &Running, r: Request<Body>) -> (u16, String, String) {
    let r = api::app(d.state.clone()).oneshot(r).await.unwrap();
    let status = r.status().as_u16();
    let kind = r.headers()[axum::http::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let body = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
    (status, kind, String::from_utf8(body.to_vec()).unwrap())
}

/// What a scrape of this test's gateway must hold: the queue depth of
/// each registry and its paused flag, as this gateway has them.
fn is_the_metrics_page(text: &str) {
    assert!(text.contains("# TYPE jumgw_queue_depth gauge"), "{text}");
    for r in ["civil", "cadastre", "tax"] {
        assert!(
            text.contains(&format!(
                "jumgw_queue_depth{{registry=\"{r}\",state=\"dead\"}} 0"
            )),
            "{r}: {text}"
        );
        assert!(
            text.contains(&format!("jumgw_registry_paused{{registry=\"{r}\"}} 0")),
            "{r}: {text}"
        );
    }
}

/// `/metrics` may require a token of its own: without it, or with another,
/// 401 saying what it needs; with it, the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_token_of_their_own() {
    let _scraping = SCRAPES.lock().await;
    let mut d = run(setup("").await, |g| {
        g.gateway.metrics_token_sha256 = Some(api::token_hash("scrape-me").to_uppercase())
    })
    .await;
    d.state = d.state.clone().with_metrics(Some(recorder()));
    let get = |auth: Option<&str>| {
        let mut r = Request::get("/metrics");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Body::empty()).unwrap()
    };
    for auth in [
        None,
        Some("Bearer t"),
        Some("Bearer scrape-me-not"),
        Some("Basic c2NyYXBlLW1l"),
        Some("Bearer SCRAPE-ME"),
    ] {
        let (status, kind, body) = scrape(&d, get(auth)).await;
        assert_eq!(
            (status, kind.as_str()),
            (401, "application/problem+json"),
            "{auth:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["detail"], "/metrics needs the metrics token: Authorization: Bearer <token>",
            "{auth:?}: {v}"
        );
        assert!(!body.contains("jumgw_queue_depth"), "{auth:?}: {body}");
    }
    let (status, kind, text) = scrape(&d, get(Some("Bearer scrape-me"))).await;
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("text/plain"), "{kind}");
    is_the_metrics_page(&text);
}

/// `/metrics` may answer only to some networks: a caller outside them gets
/// 403 naming the address, one inside the page (as the accept loop tells
/// the handler who is calling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_answer_only_to_an_allow_list() {
    let _scraping = SCRAPES.lock().await;
    let mut d = run(setup("").await, |g| {
        g.gateway.metrics_allow = vec!["10.20.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()]
    })
    .await;
    d.state = d.state.clone().with_metrics(Some(recorder()));
    let from = |ip: &str| {
        let mut r = Request::get("/metrics").body(Body::empty()).unwrap();
        r.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                ip.parse().unwrap(),
                40000,
            )));
        r
    };
    for (ip, named) in [
        ("127.0.0.1", "127.0.0.1"),
        ("10.21.0.1", "10.21.0.1"),
        ("::ffff:10.1.0.1", "10.1.0.1"),
    ] {
        let (status, kind, body) = scrape(&d, from(ip)).await;
        assert_eq!(
            (status, kind.as_str()),
            (403, "application/problem+json"),
            "{ip}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["detail"],
            format!("/metrics answers only to gateway.metrics_allow; {named} is not in it"),
            "{ip}"
        );
    }
    let (status, _, body) = scrape(&d, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, 403, "no peer address: refused");
    assert!(body.contains("this caller is not in it"), "{body}");
    for ip in ["10.20.3.4", "::ffff:10.20.0.9", "::1"] {
        let (status, kind, text) = scrape(&d, from(ip)).await;
        assert_eq!(status, 200, "{ip}: {text}");
        assert!(kind.starts_with("text/plain"), "{ip}: {kind}");
        is_the_metrics_page(&text);
    }
}

/// A request without its purpose: a 422 naming `/purpose`.
const NO_PURPOSE: &str = r#"{"case":{"number":"1/2026","legal_basis":"ZUP","official":"o"},"service":"civil.birth-extract","subject":{"jmbg":"0512981717776"}}"#;

/// Every answer of every part of the API carries the security headers
/// (no framing, no sniffing, no foreign loads, no referrer abroad): the
/// back-office JSON, a document, each kind of problem+json refusal, the
/// administration, the dashboard, the metrics, the OpenAPI document and
/// the health checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_route_carries_the_security_headers() {
    let _scraping = SCRAPES.lock().await;
    let mut d = run(setup("").await, |_| {}).await;
    d.state = d.state.clone().with_metrics(Some(recorder()));
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let session = sign_in(&d, "a", false).await;
    let request = |method: &str, uri: &str, token: Option<&str>, body: &str| {
        let mut r = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.header("content-type", "application/json")
            .header("cookie", format!("jumgw_session={session}"))
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(d.state.max_body + 1));
    let answers = [
        (
            "GET",
            "/api/v1/services".to_owned(),
            Some("t"),
            "",
            200,
            "application/json",
        ),
        (
            "GET",
            format!("/api/v1/requests/{id}"),
            Some("t"),
            "",
            200,
            "application/json",
        ),
        (
            "GET",
            format!("/api/v1/documents/{id}/content"),
            Some("t"),
            "",
            200,
            "text/xml",
        ),
        (
            "GET",
            "/api/v1/services".to_owned(),
            None,
            "",
            401,
            "application/problem+json",
        ),
        (
            "GET",
            "/api/v1/requests/01KAW3Q3ZJ0N5W9K5T1X0Y8B2C".to_owned(),
            Some("t"),
            "",
            404,
            "application/problem+json",
        ),
        (
            "POST",
            "/api/v1/requests".to_owned(),
            Some("t"),
            "{}",
            400,
            "application/problem+json",
        ),
        (
            "POST",
            "/api/v1/requests".to_owned(),
            Some("t"),
            NO_PURPOSE,
            422,
            "application/problem+json",
        ),
        (
            "POST",
            "/api/v1/requests".to_owned(),
            Some("t"),
            &big,
            413,
            "application/problem+json",
        ),
        (
            "DELETE",
            "/api/v1/services".to_owned(),
            Some("t"),
            "",
            405,
            "application/problem+json",
        ),
        (
            "GET",
            "/nowhere".to_owned(),
            None,
            "",
            404,
            "application/problem+json",
        ),
        (
            "GET",
            "/admin/v1/stats".to_owned(),
            Some("a"),
            "",
            200,
            "application/json",
        ),
        (
            "GET",
            "/admin/v1/stats".to_owned(),
            Some("t"),
            "",
            403,
            "application/problem+json",
        ),
        (
            "GET",
            "/admin/v1/store/export".to_owned(),
            Some("a"),
            "",
            200,
            "application/x-ndjson",
        ),
        ("GET", "/ui".to_owned(), None, "", 200, "text/html"),
        ("GET", "/ui/login".to_owned(), None, "", 200, "text/html"),
        ("GET", "/metrics".to_owned(), None, "", 200, "text/plain"),
        (
            "GET",
            "/openapi.json".to_owned(),
            None,
            "",
            200,
            "application/json",
        ),
        ("GET", "/healthz".to_owned(), None, "", 200, "text/plain"),
        (
            "GET",
            "/readyz".to_owned(),
            None,
            "",
            200,
            "application/json",
        ),
    ];
    for (method, uri, token, body, status, kind) in answers {
        let r = api::app(d.state.clone())
            .oneshot(request(method, &uri, token, body))
            .await
            .unwrap();
        let h = r.headers();
        let what = format!("{method} {uri} ({token:?})");
        assert_eq!(r.status().as_u16(), status, "{what}");
        let got = h
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(got.starts_with(kind), "{what}: {got}");
        let csp = h
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no content-security-policy"))
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert_eq!(
            h.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"DENY"[..]),
            "{what}"
        );
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{what}"
        );
        assert_eq!(
            h.get("referrer-policy").map(|v| v.as_bytes()),
            Some(&b"same-origin"[..]),
            "{what}"
        );
    }
}

/// The CSRF token of a signed-in dashboard session, from its page.
async fn csrf_of(d: &Running, session: &str) -> String {
    let page = Request::get("/ui/audit")
        .header("cookie", format!("jumgw_session={session}"))
        .body(Body::empty())
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(page).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
    String::from_utf8_lossy(&html)
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned()
}

/// A form posted on the dashboard; where it sends the browser back to.
async fn ui_post(d: &Running, session: &str, uri: &str, form: &str) -> String {
    let csrf = csrf_of(d, session).await;
    let act = Request::post(uri)
        .header("cookie", format!("jumgw_session={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={csrf}{form}")))
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(act).await.unwrap();
    let to = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    let status = r.status().as_u16();
    let body = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
    match to {
        Some(to) => {
            assert!(to.contains("done="), "{uri}: {to}");
            to
        }
        None => {
            // The "who used my data" answer is a page.
            assert_eq!(status, 200, "{uri}");
            String::from_utf8_lossy(&body).into_owned()
        }
    }
}

/// Every administrator's action, from the API and from the dashboard, is
/// on the audit trail under the name of the account that did it, and
/// about the request it was done to: pause, resume, retry, retry of the
/// dead, cancel, a backup, a walk of the chain, "who used my data".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_action_is_audited_under_the_acting_account() {
    let d = run(setup("").await, |_| {}).await;
    let now = jum_gateway::time::now_ms();
    let dead: Vec<RequestRecord> = (1..=4)
        .map(|i| {
            let mut r = jum_gateway::lifecycle::record::testing::record()
                .client("backoffice")
                .case(format!("dead-{i}/2026"))
                .service(BIRTH.0, "civil")
                .now(Duration::from_secs(86_400 * 30))
                .build()
                .at(now - 60_000);
            r.state = State::Dead;
            r.due_ms = None;
            r.error = Some("permanent failure".into());
            r
        })
        .collect();
    let dead_ids: Vec<String> = dead.iter().map(|r| r.id.to_string()).collect();
    d.store.enqueue(dead).await.unwrap();
    let ok = |(status, _, v): (u16, axum::http::HeaderMap, serde_json::Value)| {
        assert!(status < 300, "{status}: {v}");
        v
    };
    let api = |method: &'static str, uri: String, token: &'static str, body: &'static str| {
        let d = &d;
        async move { ok(call(d, method, &uri, token, body.into()).await) }
    };
    // From the API: the operator ognjen, the admin ops, the auditor ana.
    api(
        "POST",
        "/admin/v1/registries/civil/pause".into(),
        "operator",
        "{}",
    )
    .await;
    let q1 = d.submit(BIRTH.0, BIRTH.1).await;
    let q2 = d.submit(BIRTH.0, BIRTH.1).await;
    api(
        "POST",
        format!("/admin/v1/requests/{q1}/cancel"),
        "operator",
        "",
    )
    .await;
    api(
        "POST",
        format!("/admin/v1/requests/{}/retry", dead_ids[0]),
        "operator",
        "",
    )
    .await;
    let v = api(
        "POST",
        "/admin/v1/requests/retry-dead".into(),
        "operator",
        r#"{"case":"dead-2/2026"}"#,
    )
    .await;
    assert_eq!(v["retried"], 1, "{v}");
    api("GET", "/admin/v1/store/export".into(), "a", "").await;
    api("POST", "/admin/v1/audit/verify".into(), "auditor", "").await;
    api(
        "POST",
        "/admin/v1/audit/who".into(),
        "auditor",
        r#"{"jmbg":"0512981717776"}"#,
    )
    .await;
    // From the dashboard: ops and ana signed in.
    let ops = sign_in(&d, "a", false).await;
    ui_post(&d, &ops, &format!("/ui/requests/{q2}/cancel"), "").await;
    api(
        "POST",
        "/admin/v1/registries/civil/resume".into(),
        "operator",
        "",
    )
    .await;
    ui_post(&d, &ops, "/ui/registries/civil/pause", "").await;
    ui_post(&d, &ops, "/ui/registries/civil/resume", "").await;
    ui_post(&d, &ops, &format!("/ui/requests/{}/retry", dead_ids[2]), "").await;
    ui_post(&d, &ops, "/ui/registries/civil/retry-dead", "").await;
    let ana = sign_in(&d, "auditor", false).await;
    ui_post(&d, &ana, "/ui/audit/verify", "").await;
    let page = ui_post(&d, &ana, "/ui/audit", "&jmbg=0512981717776").await;
    assert!(
        page.contains("admin.cancel"),
        "the dashboard's answer lists the accesses"
    );

    let trail = d.store.audit_scan(0, 100_000).await.unwrap();
    let mut done: Vec<(String, String, Option<String>)> = trail
        .iter()
        .map(|(_, e)| e.as_ref().unwrap())
        .filter(|e| e.draft.action.starts_with("admin.") || e.draft.action.starts_with("audit."))
        .map(|e| {
            (
                e.draft.actor.clone(),
                e.draft.action.clone(),
                e.draft.request_id.clone(),
            )
        })
        .collect();
    done.sort();
    let entry = |who: &str, action: &str, id: Option<&String>| {
        (who.to_owned(), action.to_owned(), id.cloned())
    };
    let mut want = vec![
        entry("ognjen", "admin.pause", None),
        entry("ognjen", "admin.cancel", Some(&q1)),
        entry("ognjen", "admin.retry", Some(&dead_ids[0])),
        entry("ognjen", "admin.retry-dead", None),
        entry("ognjen", "admin.resume", None),
        entry("ops", "admin.export", None),
        entry("ana", "audit.verify", None),
        entry("ana", "audit.who", None),
        entry("ops", "admin.cancel", Some(&q2)),
        entry("ops", "admin.pause", None),
        entry("ops", "admin.resume", None),
        entry("ops", "admin.retry", Some(&dead_ids[2])),
        entry("ops", "admin.retry-dead", None),
        entry("ana", "audit.verify", None),
        entry("ana", "audit.who", None),
    ];
    want.sort();
    assert_eq!(done, want, "each action once, under its account's name");
}

/// Signs in to the dashboard with `token`; the session id from its cookie.
async fn sign_in(d: &Running, token: &str, https: bool) -> String {
    let mut req = Request::post("/ui/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap();
    if https {
        // What the TLS accept loop adds to every request on a TLS connection.
        req.extensions_mut()
            .insert(jum_gateway::pki::tls::PeerCert(None));
    }
    let r = api::app(d.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed in");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let id = cookie
        .strip_prefix("jumgw_session=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    if https {
        assert!(cookie.contains("; Secure"), "{cookie}");
    } else {
        assert!(!cookie.contains("Secure"), "{cookie}");
    }
    id
}

/// The dashboard's session: a random id in the cookie (never the token),
/// HttpOnly and SameSite=Strict, `Secure` over HTTPS; logging out ends it
/// on the server, so a copied cookie is worth nothing afterwards. Every
/// answer says it may not be framed, sniffed or load anything foreign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sessions_hold_no_token_and_end_on_the_server() {
    let d = run(setup("").await, |_| {}).await;
    let page = |cookie: &str| {
        Request::get("/ui")
            .header("cookie", cookie.to_owned())
            .body(Body::empty())
            .unwrap()
    };
    // The token itself is no longer a cookie that signs in.
    let r = api::app(d.state.clone())
        .oneshot(page("jumgw_token=a"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let id = sign_in(&d, "a", false).await;
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_ne!(id, "a");
    assert_ne!(sign_in(&d, "a", true).await, id, "each sign-in its own id");
    let r = api::app(d.state.clone())
        .oneshot(page(&format!("jumgw_session={id}")))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    // A back-office token is not an administrator's.
    let req = Request::post("/ui/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("token=t"))
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let open = d.state.sessions.len();
    let r = api::app(d.state.clone())
        .oneshot(
            Request::get("/ui/logout")
                .header("cookie", format!("jumgw_session={id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(d.state.sessions.len(), open - 1, "ended on the server");
    let r = api::app(d.state.clone())
        .oneshot(page(&format!("jumgw_session={id}")))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "the old cookie signs in no more");
    assert_eq!(r.headers()["location"], "/ui/login");
}

/// A failure on the dashboard is a page of the dashboard, in the reader's
/// language, with the problem's title and the HTTP status the admin API
/// answers for the same thing (an unknown request: 404), not a bare 500
/// with the error's text; a refused action comes back to the overview
/// with the reason in its banner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failure_as_a_page_with_the_problems_title_and_status() {
    let d = run(setup("").await, |_| {}).await;
    let session = sign_in(&d, "a", false).await;
    let get = |uri: String, lang: &'static str| {
        let state = d.state.clone();
        let session = session.clone();
        async move {
            let req = Request::get(uri)
                .header(
                    "cookie",
                    format!("jumgw_session={session}; jumgw_lang={lang}"),
                )
                .body(Body::empty())
                .unwrap();
            let r = api::app(state).oneshot(req).await.unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
            (status, ct, String::from_utf8(b.to_vec()).unwrap())
        }
    };
    // Positive control: a request that exists has its page, and no problem.
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&id, State::Delivered, Duration::from_secs(15))
        .await;
    let (status, ct, html) = get(format!("/ui/requests/{id}"), "en").await;
    assert_eq!(status, 200, "{html}");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(html.contains(&format!("<code>{id}</code>")), "{html}");
    assert!(!html.contains("data-problem"), "{html}");

    // An unknown one: the admin API's problem, as a page.
    let unknown = "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C";
    let (api_status, _, problem) = call(
        &d,
        "GET",
        &format!("/admin/v1/requests/{unknown}"),
        "a",
        String::new(),
    )
    .await;
    assert_eq!(api_status, 404, "{problem}");
    let title = problem["title"].as_str().unwrap();
    assert_eq!(title, "No such resource");
    let (status, ct, html) = get(format!("/ui/requests/{unknown}"), "en").await;
    assert_eq!(status, 404, "{html}");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{html}"
    );
    // The dashboard's frame (its heading and menu), then the problem.
    assert!(html.contains("Gateway console"), "{html}");
    assert!(html.contains("href=\"/ui/deadlines\""), "{html}");
    assert!(
        html.contains(&format!("<title>{title} · jum-gateway</title>")),
        "{html}"
    );
    assert!(html.contains(&format!("<h2>{title}</h2>")), "{html}");
    assert!(
        html.contains("data-status=\"404\" data-problem=\"not-found\""),
        "{html}"
    );
    assert!(html.contains("HTTP 404"), "{html}");
    assert!(html.contains(&format!("no request {unknown}")), "{html}");
    // In the reader's language, like the rest of the dashboard.
    let (status, _, html) = get(format!("/ui/requests/{unknown}"), "sr").await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains("<html lang=\"sr-Latn\">"), "{html}");
    assert!(html.contains("<h2>Nema takvog resursa</h2>"), "{html}");
    assert!(html.contains("Konzola mrežnog prolaza"), "{html}");
    assert!(!html.contains(title), "{html}");

    // A retry of a delivered request: refused as the API refuses it (409),
    // and the overview tells why.
    let (api_status, _, problem) = call(
        &d,
        "POST",
        &format!("/admin/v1/requests/{id}/retry"),
        "a",
        String::new(),
    )
    .await;
    assert_eq!(api_status, 409, "{problem}");
    let detail = problem["detail"].as_str().unwrap().to_owned();
    assert_eq!(
        detail,
        format!("request {id} is delivered: nothing to retry")
    );
    let csrf = csrf_of(&d, &session).await;
    let act = Request::post(format!("/ui/requests/{id}/retry"))
        .header("cookie", format!("jumgw_session={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={csrf}")))
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(act).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with("/ui?failed="), "{to}");
    let (status, _, html) = get(to, "en").await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!(
            "<div class=\"banner bad\" role=\"status\">{detail}</div>"
        )),
        "{html}"
    );
}

/// A dashboard session lasts `gateway.ui_session_lifetime` from its
/// sign-in: its cookie says so (Max-Age), the page answers it before, and
/// once the lifetime has passed the same cookie is sent to sign in again
/// (and never earlier than the lifetime after the sign-in began); a new
/// sign-in then works at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_ends_when_its_lifetime_is_over() {
    let lifetime = Duration::from_secs(2);
    let d = run(setup("").await, |g| {
        g.gateway.ui_session_lifetime = lifetime
    })
    .await;
    let page = |id: &str| {
        let req = Request::get("/ui")
            .header("cookie", format!("jumgw_session={id}"))
            .body(Body::empty())
            .unwrap();
        let app = api::app(d.state.clone());
        async move {
            let r = app.oneshot(req).await.unwrap();
            let to = r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (r.status().as_u16(), to)
        }
    };
    let login = || async {
        let req = Request::post("/ui/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("token=a"))
            .unwrap();
        let r = api::app(d.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(r.status().as_u16(), 303);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("; Max-Age=2"), "{cookie}");
        cookie
            .strip_prefix("jumgw_session=")
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned()
    };
    // Accepted before its end: seen on the first try unless the machine
    // stalled for the whole lifetime, then tried again, for up to a minute.
    let tries_end = Instant::now() + Duration::from_secs(60);
    let (id, signed) = loop {
        assert!(
            Instant::now() < tries_end,
            "no session was served before its end in a minute of sign-ins"
        );
        let began = Instant::now();
        let id = login().await;
        let first = page(&id).await;
        if first.0 == 200 {
            break (id, began);
        }
        assert!(
            began.elapsed() >= lifetime,
            "refused {:?} after sign-in: {first:?}",
            began.elapsed()
        );
    };
    let ceiling = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, to) = page(&id).await;
        if status == 303 {
            assert_eq!(to.as_deref(), Some("/ui/login"));
            assert!(
                signed.elapsed() >= lifetime,
                "ended {:?} after sign-in, before its lifetime",
                signed.elapsed()
            );
            break;
        }
        assert_eq!(status, 200);
        assert!(
            Instant::now() < ceiling,
            "the session outlived its lifetime by a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(page(&id).await.0, 303, "and stays ended");
    let fresh = login().await;
    assert_eq!(page(&fresh).await.0, 200, "a new sign-in works at once");
}

async fn get(d: &Running, uri: &str, etag: Option<&str>) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::get(uri).header("authorization", "Bearer t");
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
    }
    let r = api::app(d.state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (
        status,
        headers,
        axum::body::to_bytes(r.into_body(), 1 << 24)
            .await
            .unwrap()
            .to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_encrypted_at_rest_and_served_byte_exact() {
    let d = run(setup("").await, |_| {}).await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let file = d
        .env
        .dir
        .path()
        .join("cases/backoffice/351-12%2F2026-IV")
        .join(format!("{id}.civil.birth-extract.xml"));
    let delivered = std::fs::read(&file).unwrap();

    let (status, headers, body) = get(&d, &format!("/api/v1/documents/{id}/content"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, delivered, "byte for byte");
    assert_eq!(headers["content-type"], "text/xml; charset=utf-8");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = get(&d, &format!("/api/v1/documents/{id}/content"), Some(&etag)).await;
    assert_eq!(status, 304);

    let (status, _, body) = get(&d, &format!("/api/v1/documents/{id}"), None).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["payload"]["person"]["jmbg"], "0512981717776");
    assert_eq!(v["payload"]["person"]["firstName"], "Jelena");
    assert!(
        v["signer"]["subject"]
            .as_str()
            .unwrap()
            .ends_with("CN=civil signer"),
        "{v}"
    );
    assert_eq!(v["etag"], etag);
    let (status, _, _) = get(&d, "/api/v1/documents/01NOSUCHDOCUMENT000000000", None).await;
    assert_eq!(status, 404);

    let (_, _, body) = get(&d, "/api/v1/services", None).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["services"].as_array().unwrap().len(), 6);
    assert_eq!(v["services"][0]["registry_state"]["breaker"], "closed");

    // nothing of the document in clear in the raw store files
    d.store.flush().await.unwrap();
    let marker = "Matično područje";
    assert!(String::from_utf8_lossy(&delivered).contains(marker));
    let mut files = vec![d.env.dir.path().join("store")];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            seen += bytes.len();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "document text in clear in {}",
                p.display()
            );
        }
    }
    assert!(seen > 0);
}

async fn post_with_key(d: &Running, key: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, _, v) = call_with(
        d,
        "POST",
        "/api/v1/requests",
        "t",
        &[("idempotency-key", key)],
        body.to_owned(),
    )
    .await;
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_gives_the_same_answer_and_refuses_another_body() {
    let d = run(setup("").await, |g| {
        g.registries.get_mut("civil").unwrap().paused = true
    })
    .await;
    let body = r#"{"case":{"number":"1/2026","legal_basis":"ZUP","official":"o"},"purpose":"ex officio data for the case","service":"civil.birth-extract","subject":{"jmbg":"0512981717776"}}"#;
    let (s1, v1) = post_with_key(&d, "order-42", body).await;
    let (s2, v2) = post_with_key(&d, "order-42", body).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(v1["id"], v2["id"], "same key, same body: same request");
    let other = body.replace("1/2026", "2/2026");
    let (s3, v3) = post_with_key(&d, "order-42", &other).await;
    assert_eq!(s3, 409);
    assert_eq!(v3["type"], "urn:jum-gateway:problem:idempotency-key-reused");
    let (s4, v4) = post_with_key(&d, "bad key with spaces", body).await;
    assert_eq!(s4, 422);
    assert_eq!(v4["errors"][0]["pointer"], "Idempotency-Key");
    // concurrent submissions with one key store one request
    let results =
        futures_util::future::join_all((0..8).map(|_| post_with_key(&d, "burst-7", &other))).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, 202);
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let queued: u64 = d.store.tally().await.unwrap().state(State::Queued);
    assert_eq!(queued, 2, "one request per key");
    // keys expire
    assert_eq!(
        d.store
            .purge_idempotency(jum_gateway::time::now_ms() + 1)
            .await
            .unwrap(),
        2
    );
    let (s5, v5) = post_with_key(&d, "order-42", &other).await;
    assert_eq!(s5, 202);
    assert_ne!(v5["id"], v1["id"], "an expired key is a new request");
}

async fn call(
    d: &Running,
    method: &str,
    uri: &str,
    token: &str,
    body: String,
) -> (u16, axum::http::HeaderMap, serde_json::Value) {
    call_with(d, method, uri, token, &[], body).await
}

/// A request through the API router, with the bearer token and JSON body
/// every test sends, plus `extra` headers.
async fn call_with(
    d: &Running,
    method: &str,
    uri: &str,
    token: &str,
    extra: &[(&str, &str)],
    body: String,
) -> (u16, axum::http::HeaderMap, serde_json::Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = api::app(d.state.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&b).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_problem_json_with_its_own_type() {
    let d = run(setup("").await, |g| {
        g.registries.get_mut("civil").unwrap().paused = true
    })
    .await;
    let body = r#"{"case":{"number":"1/2026","legal_basis":"ZUP","official":"o"},"purpose":"ex officio data for the case","service":"civil.birth-extract","subject":{"jmbg":"0512981717776"}}"#;
    let cases: Vec<(&str, &str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "/api/v1/requests",
            "t",
            "x".repeat(70 * 1024),
            413,
            "body-too-large",
        ),
        (
            "DELETE",
            "/api/v1/requests",
            "t",
            String::new(),
            405,
            "method-not-allowed",
        ),
        (
            "POST",
            "/api/v1/requests",
            "x",
            body.into(),
            403,
            "forbidden",
        ),
        (
            "POST",
            "/api/v1/requests",
            "t",
            body.replace("}}", "},\"extra\":1}"),
            400,
            "malformed-json",
        ),
        (
            "POST",
            "/api/v1/requests",
            "t",
            "[1,2".into(),
            400,
            "malformed-json",
        ),
        (
            "GET",
            "/api/v1/nothing-here",
            "t",
            String::new(),
            404,
            "not-found",
        ),
        (
            "GET",
            "/api/v1/requests/01NOSUCHREQUEST0000000000",
            "t",
            String::new(),
            404,
            "not-found",
        ),
        (
            "GET",
            "/admin/v1/store/export",
            "t",
            String::new(),
            403,
            "forbidden",
        ),
    ];
    for (method, uri, token, body, status, kind) in cases {
        let (s, h, v) = call(&d, method, uri, token, body).await;
        assert_eq!(s, status, "{method} {uri}: {v}");
        assert_eq!(
            h["content-type"], "application/problem+json",
            "{method} {uri}"
        );
        assert_eq!(
            v["type"],
            format!("urn:jum-gateway:problem:{kind}"),
            "{method} {uri}: {v}"
        );
        assert_eq!(v["status"], status);
    }
    let (_, _, v) = call(&d, "POST", "/api/v1/requests", "x", body.into()).await;
    assert_eq!(
        v["detail"],
        "client tax-office may not request civil.birth-extract"
    );
    // the rate-limited client: one per 100 s
    let (s1, _, _) = call(&d, "POST", "/api/v1/requests", "l", body.into()).await;
    let (s2, h2, v2) = call(&d, "POST", "/api/v1/requests", "l", body.into()).await;
    assert_eq!((s1, s2), (202, 429), "{v2}");
    let wait: u64 = h2["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((90..=100).contains(&wait), "retry after {wait} s");
    assert_eq!(v2["type"], "urn:jum-gateway:problem:rate-limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_bundle_asks_every_registry_in_one_call() {
    let d = run(setup("").await, |_| {}).await;
    let body = r#"{"legal_basis":"ZUP čl. 103","official":"marija.kovac","purpose":"building permit","requests":[
        {"service":"cadastre.property-sheet","subject":{"ko":"803472","sheet":"1520"}},
        {"service":"tax.property-tax-status","subject":{"jmbg":"0512981717776"}},
        {"service":"civil.citizenship-certificate","subject":{"jmbg":"0512981717776"}}]}"#;
    let (s, h, v) = call(
        &d,
        "POST",
        "/api/v1/cases/351-12%2F2026-IV/requests",
        "t",
        body.into(),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(h["location"], "/api/v1/cases/351-12%2F2026-IV");
    assert_eq!(v["case"], "351-12/2026-IV");
    let ids: Vec<String> = v["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        d.until(id, State::Delivered, Duration::from_secs(10)).await;
    }
    let (s, _, v) = call(
        &d,
        "GET",
        "/api/v1/cases/351-12%2F2026-IV",
        "t",
        String::new(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            v["delivered"].as_u64(),
            v["pending"].as_u64(),
            v["complete"].as_bool()
        ),
        (Some(3), Some(0), Some(true)),
        "{v}"
    );

    let bad = body.replace(
        "\"subject\":{\"jmbg\":\"0512981717776\"}},\n        {\"service\":\"civil",
        "\"subject\":{\"jmbg\":\"0512981717775\"}},\n        {\"service\":\"civil",
    );
    let (s, _, v) = call(&d, "POST", "/api/v1/cases/9%2F2026/requests", "t", bad).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["errors"][0]["pointer"], "/requests/1/subject/jmbg");
    assert_eq!(v["errors"][0]["reason"], "check digit should be 6, found 5");
    assert_eq!(
        d.store.by_case("9/2026").await.unwrap().len(),
        0,
        "nothing of an invalid bundle is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_procedure_files_what_it_needs_and_purpose_is_required() {
    let d = run(setup("").await, |_| {}).await;
    let (s, _, v) = call(
        &d,
        "POST",
        "/api/v1/cases/5%2F2026/requests",
        "t",
        r#"{"legal_basis":"ZUP čl. 103","official":"o","purpose":"building permit","procedure":"building-permit","subject":{"jmbg":"0512981717776","ko":"803472","sheet":"1520"}}"#.into(),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let mut got: Vec<(String, Vec<(String, String)>)> = d
        .store
        .by_case("5/2026")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.service.into_string(), r.subject.to_vec()))
        .collect();
    got.sort();
    let f = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        got,
        vec![
            (
                "cadastre.property-sheet".into(),
                vec![f("ko", "803472"), f("sheet", "1520")]
            ),
            (
                "civil.citizenship-certificate".into(),
                vec![f("jmbg", "0512981717776")]
            ),
            (
                "tax.property-tax-status".into(),
                vec![f("jmbg", "0512981717776")]
            ),
        ],
        "each service takes the fields of its own subject kind"
    );

    for (body, pointer, reason) in [
        (
            r#"{"legal_basis":"x","official":"o","purpose":"p","procedure":"no-such","subject":{"jmbg":"0512981717776"}}"#,
            "/procedure",
            "unknown procedure \"no-such\"; known: building-permit, child-allowance",
        ),
        (
            r#"{"legal_basis":"x","official":"o","purpose":"p","procedure":"building-permit","subject":{"jmbg":"0512981717776"}}"#,
            "/subject",
            "cadastre.property-sheet (in building-permit) needs one of: ko+sheet, ko+jmbg, ko+mb",
        ),
        (
            r#"{"legal_basis":"x","official":"o","purpose":"p","procedure":"building-permit"}"#,
            "/subject",
            "a procedure needs a subject",
        ),
        (
            r#"{"legal_basis":"x","official":"o","purpose":"p"}"#,
            "/requests",
            "give either requests, or a procedure with a subject",
        ),
        (
            r#"{"legal_basis":"x","official":"o","procedure":"building-permit","subject":{"jmbg":"0512981717776","ko":"803472"}}"#,
            "/purpose",
            "required: why the case needs this data (it goes into the envelope and the audit trail)",
        ),
    ] {
        let (s, _, v) = call(&d, "POST", "/api/v1/cases/6%2F2026/requests", "t", body.into()).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["errors"][0]["pointer"], pointer, "{body}: {v}");
        assert_eq!(v["errors"][0]["reason"], reason, "{body}: {v}");
    }
    let no_purpose = r#"{"case":{"number":"1/2026","legal_basis":"ZUP","official":"o"},"service":"civil.birth-extract","subject":{"jmbg":"0512981717776"}}"#;
    let (s, _, v) = call(&d, "POST", "/api/v1/requests", "t", no_purpose.into()).await;
    assert_eq!(
        (s, v["errors"][0]["pointer"].as_str()),
        (422, Some("/purpose")),
        "{v}"
    );
    let (s, _, v) = call(&d, "GET", "/api/v1/services", "t", String::new()).await;
    assert_eq!(s, 200);
    assert_eq!(v["procedures"][0]["id"], "building-permit", "{v}");
}

/// With 3,000 requests in the store, the operators' views (the metrics
/// scrape, the stats, the first page of the dead, the dashboard's overview
/// and deadlines) read only what they show: from counters and indexes, not
/// by a walk over every record. Their answers are checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_views_read_only_what_they_show() {
    let _scraping = SCRAPES.lock().await;
    let mut d = run(setup("").await, |_| {}).await;
    d.state = d.state.clone().with_metrics(Some(recorder()));
    let now = jum_gateway::time::now_ms();
    let mut recs = Vec::new();
    for i in 0..3000u64 {
        let mut r = jum_gateway::lifecycle::record::testing::record()
            .client("backoffice")
            .case(format!("351-{}/2026-IV", i % 40))
            .service(BIRTH.0, "civil")
            .now(Duration::from_secs(86_400 * 30))
            .build()
            .at(now - 3_600_000 + i);
        match i % 10 {
            0..=5 => {
                r.state = State::Delivered;
                r.due_ms = None;
            }
            6 | 7 => {
                r.state = State::Dead;
                r.due_ms = None;
                r.error = Some("permanent failure".into());
            }
            // Waiting for a retry tomorrow: the dispatcher leaves them.
            _ => {
                r.state = State::Retrying;
                r.due_ms = Some(now + 86_400_000);
            }
        }
        recs.push(r);
    }
    d.store.enqueue(recs).await.unwrap();
    let read = |what: &str, max: u64, before: u64| {
        let n = d.store.records_read() - before;
        assert!(n <= max, "{what} read {n} records (at most {max} expected)");
    };
    let session = sign_in(&d, "a", false).await;
    let admin = |uri: &str| {
        Request::get(uri)
            .header("authorization", "Bearer a")
            .header("cookie", format!("jumgw_session={session}"))
            .body(Body::empty())
            .unwrap()
    };
    let body = |r: axum::response::Response| async move {
        assert_eq!(r.status(), 200);
        String::from_utf8(
            axum::body::to_bytes(r.into_body(), 1 << 24)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    };
    let app = || api::app(d.state.clone());

    let b = d.store.records_read();
    let text = body(app().oneshot(admin("/metrics")).await.unwrap()).await;
    assert!(
        text.contains("jumgw_queue_depth{registry=\"civil\",state=\"dead\"} 600"),
        "{text}"
    );
    read("/metrics", 10, b);

    let b = d.store.records_read();
    let v: serde_json::Value =
        serde_json::from_str(&body(app().oneshot(admin("/admin/v1/stats")).await.unwrap()).await)
            .unwrap();
    assert_eq!(v["states"]["delivered"], 1800);
    assert_eq!(v["states"]["dead"], 600);
    assert_eq!(v["registries"]["civil"]["retrying"], 600);
    assert_eq!(v["oldest_queued_ms"], now - 3_600_000 + 8);
    read("/admin/v1/stats", 10, b);

    let b = d.store.records_read();
    let v: serde_json::Value = serde_json::from_str(
        &body(
            app()
                .oneshot(admin("/admin/v1/requests?state=dead"))
                .await
                .unwrap(),
        )
        .await,
    )
    .unwrap();
    assert_eq!(v["total"], 600);
    assert_eq!(v["requests"].as_array().unwrap().len(), 50);
    assert!(v["next"].is_string());
    read("/admin/v1/requests?state=dead", 60, b);

    let b = d.store.records_read();
    let html = body(app().oneshot(admin("/ui")).await.unwrap()).await;
    assert!(html.contains("id=\"count-dead\">600<"), "{html}");
    read("/ui", 500, b);

    let b = d.store.records_read();
    body(app().oneshot(admin("/ui/deadlines")).await.unwrap()).await;
    read("/ui/deadlines", 500, b);
}

/// Revocation on the whole path, with the simulator's development CA as
/// OCSP responder: a document keeps the OCSP response that confirmed its
/// signer, shown by the API and verified by `openssl ocsp -respin`; a
/// signer the CA revoked makes each attempt a security failure, never
/// delivered. With the responder (and the CRL) down, `require` refuses
/// (the request retries, saying why), `prefer` delivers the document
/// flagged "unchecked" with the reason, `off` delivers it unasked; once
/// the responder is back, the re-check fills in the flagged document's
/// evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_checked_and_its_evidence_kept_with_the_document() {
    let d = run(setup("tax:revoked").await, |_| {}).await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d
        .until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let rev = r.revocation.clone().expect("revocation evidence");
    assert_eq!(
        (rev.status, rev.method),
        (SignerStatus::Good, Some(RevocationMethod::Ocsp))
    );
    let (status, _, v) = call(
        &d,
        "GET",
        &format!("/api/v1/documents/{id}"),
        "t",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revocation"]["status"], "good", "{v}");
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(v["revocation"]["ocsp_response"].as_str().unwrap())
        .unwrap();
    let certs = d.env.dir.path().join("certs");
    let resp = write(d.env.dir.path(), "kept.ocsp", &der);
    let o = std::process::Command::new("openssl")
        // The nonce was our request's; openssl has none to compare with.
        .args(["ocsp", "-no_nonce", "-respin"])
        .arg(&resp)
        .arg("-issuer")
        .arg(certs.join("ca.pem"))
        .arg("-CAfile")
        .arg(certs.join("ca.pem"))
        .arg("-cert")
        .arg(certs.join("civil-sign.pem"))
        .output()
        .unwrap();
    let said = text(&o);
    assert!(
        said.contains("Response verify OK") && said.contains("civil-sign.pem: good"),
        "{said}"
    );

    let tax = d
        .submit("tax.clearance-certificate", r#"{"pib":"101134702"}"#)
        .await;
    let r = d.until(&tax, State::Dead, Duration::from_secs(15)).await;
    let error = r.error.unwrap_or_default();
    assert!(
        error.contains("signing certificate is revoked since"),
        "{error}"
    );
    assert!(r
        .attempts
        .iter()
        .all(|a| a.outcome == OutcomeKind::Security));
    assert!(d.store.document(&tax).await.unwrap().is_none());

    let d = run(setup("*:ocsp-down").await, |gw| {
        gw.registries.get_mut("civil").unwrap().revocation =
            jum_gateway::config::RevocationPolicy::Require;
        gw.registries.get_mut("tax").unwrap().revocation =
            jum_gateway::config::RevocationPolicy::Off;
        gw.gateway.revocation_recheck = Duration::from_millis(300);
    })
    .await;
    let civil = d.submit(BIRTH.0, BIRTH.1).await;
    let cadastre = d
        .submit(
            "cadastre.property-sheet",
            r#"{"ko":"803472","sheet":"1520"}"#,
        )
        .await;
    let tax = d
        .submit("tax.clearance-certificate", r#"{"pib":"101134702"}"#)
        .await;
    let r = d
        .until(&cadastre, State::Delivered, Duration::from_secs(10))
        .await;
    let rev = r.revocation.unwrap();
    assert_eq!(rev.status, SignerStatus::Unchecked);
    // `off`: not asked, and the document says nothing of it.
    let r = d
        .until(&tax, State::Delivered, Duration::from_secs(10))
        .await;
    assert_eq!(r.revocation, None);
    assert!(
        rev.reason.unwrap_or_default().contains("503"),
        "{:?}",
        r.attempts
    );
    let r = d
        .until(&civil, State::Retrying, Duration::from_secs(10))
        .await;
    // Under `require` not even the registry's TLS certificate passes: the
    // request is never sent to a registry whose standing is unknown.
    assert!(
        r.error
            .unwrap_or_default()
            .contains("TLS certificate: revocation status not yet established"),
        "{:?}",
        r.attempts
    );
    assert!(d.store.document(&civil).await.unwrap().is_none());

    // The responder is back: the flagged document gets its evidence.
    let r = d
        .env
        .control
        .delete(format!("http://{}/faults", d.env.sim.control))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = d.store.get(&cadastre).await.unwrap().unwrap();
        let rev = r.revocation.unwrap();
        if rev.status == SignerStatus::Good {
            assert_eq!(rev.method, Some(RevocationMethod::Ocsp));
            assert!(rev.ocsp_response.is_some());
            break;
        }
        assert!(Instant::now() < end, "still {rev:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Under `revocation = "require"`, the signer's status from an OCSP
/// responder of Python `cryptography` (the registries' TLS certificates
/// get fresh answers from it; only the civil signer gets the hostile
/// one): a fresh good answer delivers the document; a replayed one (400
/// days old, no nonce, no nextUpdate) is refused for its missing nonce,
/// and, where the registry says its responder pre-produces answers, for
/// its age; one signed by a delegated responder expired in 2021, and a
/// 307 redirect to an honest responder on another port, are refused.
/// Refused, the request retries and is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_believes_only_a_fresh_ocsp_answer_from_an_authorised_responder() {
    let cases = [
        ("/fresh", false, None),
        (
            "/replay",
            false,
            Some("the answer does not carry the nonce we sent"),
        ),
        (
            "/replay",
            true,
            Some("has no nextUpdate and its thisUpdate"),
        ),
        (
            "/replay",
            true,
            Some("is 400 days old, more than the maximum age of 60 min"),
        ),
        (
            "/delegated-expired",
            false,
            Some("was not valid when the answer was produced"),
        ),
        // To an honest responder on another port: not followed either.
        (
            "/redirect",
            false,
            Some("(HTTP 307), which is not followed"),
        ),
    ];
    for (path, preproduced, refused) in cases {
        let env = setup("").await;
        let certs = env.dir.path().join("certs");
        let py = PyResponder::start(
            &certs.join("ca.pem"),
            &certs.join("ca.key"),
            &[("--victim", &certs.join("civil-sign.pem"))],
        );
        let honest = PyResponder::start(&certs.join("ca.pem"), &certs.join("ca.key"), &[]);
        let path = if path == "/redirect" {
            format!("/redirect/{}", honest.port)
        } else {
            path.to_owned()
        };
        let d = run(env, |gw| {
            let civil = gw.registries.get_mut("civil").unwrap();
            civil.revocation = jum_gateway::config::RevocationPolicy::Require;
            civil.ocsp_url = Some(py.url(&path));
            civil.ocsp_preproduced = preproduced;
            civil.crl = None;
        })
        .await;
        let id = d.submit(BIRTH.0, BIRTH.1).await;
        let Some(says) = refused else {
            let r = d
                .until(&id, State::Delivered, Duration::from_secs(15))
                .await;
            let rev = r.revocation.unwrap();
            assert_eq!(
                (rev.status, rev.method),
                (SignerStatus::Good, Some(RevocationMethod::Ocsp))
            );
            continue;
        };
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let r = d.store.get(&id).await.unwrap().unwrap();
            assert_ne!(r.state, State::Delivered, "{path}: delivered: {r:?}");
            assert!(r.document_id.is_none(), "{path}: {r:?}");
            let error = r.error.clone().unwrap_or_default();
            if error.contains(says) {
                assert!(
                    error.contains("revocation status not established"),
                    "{error}"
                );
                break;
            }
            assert!(Instant::now() < end, "{path}: {says:?} never said: {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(d.store.document(&id).await.unwrap().is_none());
    }
}

/// A document whose signer a CRL confirmed keeps that CRL: its record
/// names the CRL's SHA-256, and the store holds it once, sealed, under
/// `crl-{sha256}`, for every document it confirmed (two documents, one
/// id, so one copy), which opens to the CRL the simulator's CA signed,
/// verified by `openssl crl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_checked_by_one_crl_keep_one_copy_of_it() {
    let d = run(setup("").await, |gw| {
        let civil = gw.registries.get_mut("civil").unwrap();
        civil.revocation = jum_gateway::config::RevocationPolicy::Require;
        // No OCSP: the CRL of the simulator's CA.
        civil.ocsp_url = Some("http://127.0.0.1:9/ocsp".into());
    })
    .await;
    let (mut kept, mut ids) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let id = d.submit(BIRTH.0, BIRTH.1).await;
        ids.push(id.clone());
        let r = d
            .until(&id, State::Delivered, Duration::from_secs(15))
            .await;
        let rev = r.revocation.unwrap();
        assert_eq!(
            (rev.status, rev.method),
            (SignerStatus::Good, Some(RevocationMethod::Crl))
        );
        kept.push(rev.crl_sha256.expect("the CRL's hash"));
    }
    assert_eq!(kept[0], kept[1], "two documents, one CRL");
    let (status, _, v) = call(
        &d,
        "GET",
        &format!("/api/v1/documents/{}", ids[1]),
        "t",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["revocation"]["crl_sha256"], kept[1], "{v}");
    let id = format!("crl-{}", kept[0]);
    let sealed = d.store.document(&id).await.unwrap().expect("the CRL kept");
    let der = d.cipher.open(&id, &sealed).unwrap();
    assert_eq!(
        jum_gateway::store::trail::hex(&openssl::sha::sha256(&der)),
        kept[0]
    );
    let file = write(d.env.dir.path(), "kept.crl", &der);
    let o = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-issuer", "-in"])
        .arg(&file)
        .arg("-CAfile")
        .arg(d.env.dir.path().join("certs/ca.pem"))
        .output()
        .unwrap();
    assert!(text(&o).contains("verify OK"), "{}", text(&o));
}

/// Every document and every audit checkpoint gets a timestamp from a TSA
/// that is `openssl ts -reply` (not our code), asked for by the evidence
/// job while the TSA is down (pending, with the reason), then once it is
/// up (stamped); `openssl ts -verify` accepts every token kept. The
/// case's dossier is accepted by `jumgw dossier verify`, by pyasice and
/// zipfile, its documents by xmlsec1; each kind of tampering is caught
/// with its own message, and by the independent check (zipfile, lxml,
/// hashlib, pyasice) in exactly the checks that name it; the store's
/// export carries the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_checkpoints_are_timestamped_and_the_dossier_verifies_offline() {
    let env = setup("").await;
    let mut tsa = TestTsa::new(&env.dir.path().join("tsa"));
    tsa.auth = Some("jumgw:s3cret".into());
    let (tsa_url, tsa_ca) = (tsa.url(), tsa.ca());
    let certs = env.dir.path().join("certs");
    let d = run(env, |gw| {
        let e = &mut gw.evidence;
        e.tsa_url = Some(tsa_url);
        e.tsa_trust = Some(tsa_ca.clone());
        e.policy = Some("1.2.3.4.1".into());
        e.user = Some("jumgw".into());
        e.password = Some("s3cret".into());
        e.interval = Duration::from_millis(100);
        e.base = Duration::from_millis(100);
        e.cap = Duration::from_millis(300);
    })
    .await;
    let data = d.env.dir.path().to_owned();
    let checkpoints = jum_gateway::audit::Checkpoints {
        path: data.join("audit").join("checkpoints.log"),
    };
    let dyn_store: Arc<dyn QueueStore> = d.store.clone();
    // The trail the daemon writes (each request accepted, sent, answered),
    // which the dossier's verifier holds case.json's requests to.
    dyn_store.set_audit_rule(jum_gateway::audit::rule(d.state.audit_key.clone()));
    // The TSA's CA does not exist until it first starts: the job and the
    // dossiers are made once it has, the job first asking a TSA that is
    // not there.
    let stamper_before = jum_gateway::evidence::stamper::Stamper::new(
        &{
            let mut g = d.env.gw.clone();
            g.evidence.tsa_trust = Some(certs.join("ca.pem"));
            g
        },
        dyn_store.clone(),
        d.cipher.clone(),
        checkpoints.clone(),
    )
    .unwrap()
    .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let down = tokio::spawn(stamper_before.run(rx.clone()));

    let ids = [
        d.submit(BIRTH.0, BIRTH.1).await,
        d.submit(
            "cadastre.property-sheet",
            r#"{"ko":"803472","sheet":"1520"}"#,
        )
        .await,
        d.submit("tax.clearance-certificate", r#"{"pib":"101134702"}"#)
            .await,
    ];
    for id in &ids {
        d.until(id, State::Delivered, Duration::from_secs(15)).await;
    }
    // Delivered without waiting for the TSA; the timestamp is pending,
    // with why the last try failed.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = d.store.get(&ids[0]).await.unwrap().unwrap();
        let s = r
            .stamp
            .clone()
            .expect("a TSA is configured: a stamp record");
        assert_eq!(s.state, StampState::Pending, "{s:?}");
        // What the token is to be on was found when the answer was
        // verified: the SHA-256 of the stored document's signature value,
        // as the document itself gives it.
        let sealed = d.store.document(&ids[0]).await.unwrap().unwrap();
        let plain = d.cipher.open(&ids[0], &sealed).unwrap();
        let want = jum_gateway::evidence::stamper::document_imprint(&plain).unwrap();
        assert_eq!(
            s.imprint.as_deref(),
            Some(jum_gateway::xml::dsig::hex(&want).as_str()),
            "{s:?}"
        );
        if s.tries >= 1 {
            assert!(s.reason.as_deref().unwrap_or("").contains("TSA"), "{s:?}");
            break;
        }
        assert!(Instant::now() < end, "never tried: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, v) = call(
        &d,
        "GET",
        &format!("/api/v1/documents/{}", ids[0]),
        "t",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["timestamp"]["state"], "pending", "{v}");

    tsa.start();
    // It asks for its password: a wrong one is a failure that says so.
    let mut wrong = d.env.gw.evidence.clone();
    wrong.password = Some("wrong".into());
    let err = jum_gateway::evidence::stamper::TsaClient::configured(&wrong)
        .unwrap()
        .unwrap()
        .stamp(&[7; 32])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    let _ = stop.send(true);
    let _ = down.await;
    let stamper = jum_gateway::evidence::stamper::Stamper::new(
        &d.env.gw,
        dyn_store.clone(),
        d.cipher.clone(),
        checkpoints.clone(),
    )
    .unwrap()
    .unwrap();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(stamper.run(rx));
    let mut records = Vec::new();
    for id in &ids {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let r = d.store.get(id).await.unwrap().unwrap();
            if r.stamp
                .as_ref()
                .is_some_and(|s| s.state == StampState::Stamped)
            {
                records.push(r);
                break;
            }
            assert!(Instant::now() < end, "{id} not stamped: {:?}", r.stamp);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let docs = data.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for r in &records {
        let sealed = d.store.document(&r.id).await.unwrap().unwrap();
        let plain = d.cipher.open(&r.id, &sealed).unwrap();
        let file = write(&docs, &format!("{}.xml", r.id), &plain);
        let token = b64
            .decode(r.stamp.as_ref().unwrap().token.as_deref().unwrap())
            .unwrap();
        assert_openssl_ts_verifies(&token, &signature_value_by_lxml(&file), &tsa_ca, &r.id);
        assert!(r
            .stamp
            .as_ref()
            .unwrap()
            .tsa
            .as_deref()
            .unwrap()
            .contains("Test TSA"));
    }

    // The job stamps a checkpoint the schedule makes.
    assert!(jum_gateway::audit::checkpoint(&*dyn_store, &checkpoints)
        .await
        .unwrap());
    let made = checkpoints.read().unwrap().last().unwrap().clone();
    let token_file = jum_gateway::evidence::stamper::checkpoint_token_path(&checkpoints, made.seq);
    let end = Instant::now() + Duration::from_secs(10);
    while !token_file.exists() {
        assert!(Instant::now() < end, "checkpoint {} not stamped", made.seq);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_openssl_ts_verifies(
        &std::fs::read(&token_file).unwrap(),
        format!("{} {}", made.seq, made.hash).as_bytes(),
        &tsa_ca,
        "the scheduled checkpoint",
    );

    let dossiers = jum_gateway::evidence::dossier::Dossiers::configured(
        &d.env.gw,
        dyn_store.clone(),
        d.cipher.clone(),
        d.state.audit_key.clone(),
        &data,
    )
    .unwrap();
    let state = d.state.clone().with_dossiers(dossiers);
    let resp = api::app(state.clone())
        .oneshot(
            Request::builder()
                .uri("/api/v1/cases/351-12%2F2026-IV/dossier")
                .header("authorization", "Bearer t")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.etsi.asic-e+zip"
    );
    let zip = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let file = write(&data, "case.asice", &zip);

    let dev_ca = certs.join("ca.pem");
    let (code, report) = dossier_verify(&file, &[&dev_ca, &tsa_ca]);
    assert_eq!(code, 0, "{report}");
    for want in [
        "XAdES B-T",
        "Test TSA",
        "OCSP: documents/",
        "linked from entry",
        "the chain up to entry",
    ] {
        assert!(report.contains(want), "{want:?} not in {report}");
    }
    let (ok, v) = asice_check(&file);
    assert!(ok, "{v:#}");
    // The checkpoint the dossier's audit excerpt reaches: stamped, beside
    // the checkpoint file, and openssl agrees.
    let list = checkpoints.read().unwrap();
    let last = list.last().unwrap();
    let token = std::fs::read(jum_gateway::evidence::stamper::checkpoint_token_path(
        &checkpoints,
        last.seq,
    ))
    .unwrap();
    assert_openssl_ts_verifies(
        &token,
        format!("{} {}", last.seq, last.hash).as_bytes(),
        &tsa_ca,
        "the checkpoint",
    );

    // The documents in the dossier are the registries' bytes: xmlsec1.
    let out = data.join("unzipped");
    extract_zip(&file, &out);
    for r in &records {
        assert_xmlsec1_accepts(&out.join(format!("documents/{}.xml", r.id)), &dev_ca, &r.id);
    }

    // Each tampering, caught with its own message.
    let [civil, cadastre, _] = &ids;
    let doc = format!("documents/{civil}.xml");
    let cases: Vec<(&str, Box<Rezip>, String)> = vec![
        (
            "a changed byte",
            Box::new({
                let doc = doc.clone();
                move |mut e| {
                    for (n, b) in e.iter_mut() {
                        if *n == doc {
                            let at = b.len() / 2;
                            b[at] ^= 0x01;
                        }
                    }
                    e
                }
            }),
            format!("{doc}: changed after sealing"),
        ),
        (
            "a removed file",
            Box::new({
                let doc = doc.clone();
                move |e| e.into_iter().filter(|(n, _)| *n != doc).collect()
            }),
            format!("{doc}: missing: the seal covers it"),
        ),
        (
            "an added file",
            Box::new(|mut e| {
                e.push(("documents/extra.xml".into(), b"<a/>".to_vec()));
                e
            }),
            "documents/extra.xml: not covered by the seal".into(),
        ),
        (
            "a foreign timestamp token",
            Box::new({
                let (a, b) = (
                    format!("evidence/{civil}.tst"),
                    format!("evidence/{cadastre}.tst"),
                );
                move |e| swap(e, &a, &b)
            }),
            // Not read: the seal no longer vouches for it.
            format!("evidence/{civil}.tst: changed after sealing"),
        ),
        (
            "a swapped OCSP response",
            Box::new({
                let (a, b) = (
                    format!("evidence/{civil}.ocsp"),
                    format!("evidence/{cadastre}.ocsp"),
                );
                move |e| swap(e, &a, &b)
            }),
            format!("evidence/{civil}.ocsp: changed after sealing"),
        ),
    ];
    for (what, change, want) in cases {
        let bad = data.join("bad.asice");
        rezip(&file, &bad, change);
        let (code, report) = dossier_verify(&bad, &[&dev_ca, &tsa_ca]);
        assert_eq!(code, 1, "{what}: {report}");
        assert!(report.contains(&want), "{what}: {want:?} not in\n{report}");
        // What the seal no longer vouches for is not parsed.
        assert!(
            !report.contains("a foreign token") && !report.contains("does not speak of"),
            "{what}: {report}"
        );
        // The independent verdict (tests/py/asice_check.py: zipfile,
        // lxml and hashlib of its own, then pyasice) sees each tampering,
        // in the checks that name it and no other.
        let (ok, v) = asice_check(&bad);
        assert!(!ok, "the independent check missed {what}: {v:#}");
        let failed: std::collections::BTreeSet<String> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["check"].as_str().unwrap().to_owned())
            .collect();
        let digest = |n: &str| format!("digest of {n}");
        let (tst, ocsp) = (
            [civil, cadastre].map(|i| format!("evidence/{i}.tst")),
            [civil, cadastre].map(|i| format!("evidence/{i}.ocsp")),
        );
        let listed = "the manifest lists every data file and no other".to_owned();
        let signed = "every data file is signed".to_owned();
        let pyasice_opens = "pyasice opens the container (manifest matches)".to_owned();
        let expected: std::collections::BTreeSet<String> = match what {
            "a changed byte" => [digest(&doc)].into(),
            "a removed file" => [digest(&doc), listed, signed, pyasice_opens].into(),
            "an added file" => [listed, signed, pyasice_opens].into(),
            "a foreign timestamp token" => tst.iter().map(|n| digest(n)).collect(),
            "a swapped OCSP response" => ocsp.iter().map(|n| digest(n)).collect(),
            other => unreachable!("{other}"),
        };
        assert_eq!(failed, expected, "{what}: {v:#}");
    }

    // The store's export carries the tokens and the OCSP responses.
    let resp = api::app(state)
        .oneshot(
            Request::builder()
                .uri("/admin/v1/store/export")
                .header("authorization", "Bearer a")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    for r in &records {
        let line = text
            .lines()
            .find(|l| l.contains(r.id.as_str()) && l.contains("\"stamp\""))
            .unwrap_or_else(|| panic!("{} not exported with its stamp", r.id));
        assert!(
            line.contains(r.stamp.as_ref().unwrap().token.as_deref().unwrap()),
            "{line}"
        );
        assert!(
            line.contains(
                r.revocation
                    .as_ref()
                    .unwrap()
                    .ocsp_response
                    .as_deref()
                    .unwrap()
            ),
            "{line}"
        );
    }
}

/// A change to a container's entries (name, bytes).
type Rezip = dyn Fn(Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)>;

fn swap(mut e: Vec<(String, Vec<u8>)>, a: &str, b: &str) -> Vec<(String, Vec<u8>)> {
    let ia = e.iter().position(|(n, _)| n == a).unwrap();
    let ib = e.iter().position(|(n, _)| n == b).unwrap();
    let (da, db) = (e[ia].1.clone(), e[ib].1.clone());
    e[ia].1 = db;
    e[ib].1 = da;
    e
}

/// A TSA that stays down (the simulator's `tsa-down`): the document is
/// delivered all the same, its timestamp tried `evidence.attempts` times
/// on the backoff and then given up, visibly, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_that_cannot_be_had_is_given_up_with_its_reason() {
    let d = run(setup("*:tsa-down").await, |gw| {
        let e = &mut gw.evidence;
        e.attempts = 3;
        e.interval = Duration::from_millis(50);
        e.base = Duration::from_millis(50);
        e.cap = Duration::from_millis(100);
    })
    .await;
    let store: Arc<dyn QueueStore> = d.store.clone();
    let stamper = jum_gateway::evidence::stamper::Stamper::new(
        &d.env.gw,
        store,
        d.cipher.clone(),
        jum_gateway::audit::Checkpoints {
            path: d.env.dir.path().join("audit/checkpoints.log"),
        },
    )
    .unwrap()
    .unwrap();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(stamper.run(rx));
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let end = Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = d.store.get(&id).await.unwrap().unwrap().stamp.unwrap();
        if s.state != StampState::Pending {
            break s;
        }
        assert!(Instant::now() < end, "still pending: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((s.state, s.tries), (StampState::Failed, 3), "{s:?}");
    assert!(
        s.reason.as_deref().unwrap_or("").contains("HTTP 503"),
        "{s:?}"
    );
    assert!(s.token.is_none() && s.next_ms.is_none(), "{s:?}");
    let (_, _, v) = call(
        &d,
        "GET",
        &format!("/api/v1/documents/{id}"),
        "t",
        String::new(),
    )
    .await;
    assert_eq!(v["timestamp"]["state"], "failed", "{v}");
}

/// A document whose signer's status a CRL confirmed: its case's dossier
/// carries that CRL (`evidence/crl-{sha256}.crl`, once however many
/// documents it speaks for, the very DER `openssl crl` verifies under the
/// CA), names it in `case.json`, and `jumgw dossier verify` checks it at
/// the document's time as it checks a kept OCSP answer: a signer not on
/// it holds, a signer revoked before is refused with the date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_crl_is_in_the_dossier_once_and_verified() {
    use jum_gateway::lifecycle::RevocationRecord;
    let d = run(setup("").await, |_| {}).await;
    let ids = [
        d.submit(
            "cadastre.property-sheet",
            r#"{"ko":"803472","sheet":"1520"}"#,
        )
        .await,
        d.submit("tax.clearance-certificate", r#"{"pib":"101134702"}"#)
            .await,
    ];
    for id in &ids {
        d.until(id, State::Delivered, Duration::from_secs(15)).await;
    }
    let data = d.env.dir.path().to_owned();
    let certs = data.join("certs");
    let ca = certs.join("ca.pem");
    let authority = jum_gateway::pki::revocation::authority::Authority::from_pem(
        &std::fs::read(&ca).unwrap(),
        &std::fs::read(certs.join("ca.key")).unwrap(),
    )
    .unwrap();
    let dyn_store: Arc<dyn QueueStore> = d.store.clone();
    let dossiers = jum_gateway::evidence::dossier::Dossiers::configured(
        &d.env.gw,
        dyn_store.clone(),
        d.cipher.clone(),
        d.state.audit_key.clone(),
        &data,
    )
    .unwrap();
    // The CRL kept as the revocation check keeps it, and named on both
    // records.
    let keep = |crl: Vec<u8>| {
        let (store, cipher, ids) = (d.store.clone(), d.cipher.clone(), ids.clone());
        async move {
            let hex: String = openssl::sha::sha256(&crl)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let id = format!("crl-{hex}");
            store
                .put_document(&id, &cipher.seal(&id, &crl).unwrap())
                .await
                .unwrap();
            for r in &ids {
                let hex = hex.clone();
                store
                    .update(r, &move |r: &mut RequestRecord| {
                        r.revocation = Some(RevocationRecord {
                            status: SignerStatus::Good,
                            method: Some(RevocationMethod::Crl),
                            checked_ms: r.attempts.last().unwrap().at_ms,
                            this_update_ms: None,
                            next_update_ms: None,
                            crl_number: None,
                            crl_url: None,
                            ocsp_response: None,
                            crl_sha256: Some(hex.clone()),
                            reason: None,
                        });
                        true
                    })
                    .await
                    .unwrap();
            }
            hex
        }
    };
    let now = jum_gateway::time::now_ms();
    let hex = keep(authority.crl(now).unwrap()).await;
    let zip = dossiers
        .build("351-12/2026-IV", "t", &|_| true)
        .await
        .unwrap();
    let file = write(&data, "crl.asice", &zip);
    let name = format!("evidence/crl-{hex}.crl");
    let entries = {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip.clone())).unwrap();
        (0..z.len())
            .map(|i| z.by_index(i).unwrap().name().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        entries.iter().filter(|n| **n == name).count(),
        1,
        "{entries:?}"
    );
    // The kept bytes are the CRL its CA signed: openssl agrees.
    let out = data.join("unzipped-crl");
    extract_zip(&file, &out);
    let o = std::process::Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-in"])
        .arg(out.join(&name))
        .arg("-CAfile")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(text(&o).contains("verify OK"), "{}", text(&o));
    let facts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("case.json")).unwrap()).unwrap();
    for r in facts["requests"].as_array().unwrap() {
        assert_eq!(r["crl"], name.as_str(), "{r:#}");
    }
    let (_, report) = dossier_verify(&file, &[&ca]);
    for id in &ids {
        let want = format!("valid           {name}: CRL: documents/{id}.xml's signer not on it");
        assert!(report.contains(&want), "{want:?} not in\n{report}");
    }

    // The cadastre's signer revoked before its document came.
    let signer =
        openssl::x509::X509::from_pem(&std::fs::read(certs.join("cadastre-sign.pem")).unwrap())
            .unwrap();
    authority.revoke_cert(&signer, now - 3_600_000).unwrap();
    let hex = keep(authority.crl(now).unwrap()).await;
    let zip = dossiers
        .build("351-12/2026-IV", "t", &|_| true)
        .await
        .unwrap();
    let file = write(&data, "crl-revoked.asice", &zip);
    let (code, report) = dossier_verify(&file, &[&ca]);
    assert_eq!(code, 1, "{report}");
    let name = format!("evidence/crl-{hex}.crl");
    assert!(
        report.contains(&format!(
            "INVALID         {name}: CRL: the signer was revoked at {}",
            jum_gateway::time::rfc3339_secs(now - 3_600_000)
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "valid           {name}: CRL: documents/{}.xml's signer not on it",
            ids[1]
        )),
        "{report}"
    );
}

/// The store as the dispatcher sees it, recording what was leased for an
/// exchange and what each completed flush covered: the leases taken, and
/// the `exchange.sent` entries written, before the flush began.
struct Recording {
    inner: Arc<SledStore>,
    log: std::sync::Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    /// Each lease for an exchange (state `sending`), in order.
    leased: Vec<String>,
    /// How many of `leased` the last completed flush covered.
    leases_flushed: usize,
    /// `exchange.sent` entries per request that the last completed flush covered.
    sent_flushed: std::collections::HashMap<String, usize>,
    flushes: usize,
}

impl Recording {
    /// What is not yet durable of the leases taken so far: leases no flush
    /// covered, and leases whose `exchange.sent` entry no flush covered.
    fn not_durable(&self) -> Vec<String> {
        let l = self.log.lock().unwrap();
        let mut per_id: std::collections::HashMap<&str, usize> = Default::default();
        let mut out = Vec::new();
        for (i, id) in l.leased.iter().enumerate() {
            let n = per_id.entry(id).or_default();
            *n += 1;
            if i >= l.leases_flushed {
                out.push(format!("the lease of {id} is not flushed"));
            } else if l.sent_flushed.get(id).copied().unwrap_or(0) < *n {
                out.push(format!("the exchange.sent entry of {id} is not flushed"));
            }
        }
        out
    }
}

type Entries = Vec<(u64, Result<jum_gateway::store::trail::Entry, String>)>;

#[async_trait::async_trait]
impl Requests for Recording {
    async fn enqueue_once(
        &self,
        records: Vec<RequestRecord>,
        key: Option<jum_gateway::store::IdemKey>,
    ) -> Result<jum_gateway::store::Enqueued, StoreError> {
        self.inner.enqueue_once(records, key).await
    }
    async fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn by_case(&self, case: &str) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.by_case(case).await
    }
    async fn evidence_due(&self, now: u64, limit: usize) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.evidence_due(now, limit).await
    }
    async fn due(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<Vec<jum_gateway::store::Due>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn next_due(&self) -> Result<Option<u64>, StoreError> {
        self.inner.next_due().await
    }
    async fn update(&self, id: &str, f: &Change<'_>) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.update(id, f).await
    }
    async fn lease(
        &self,
        id: &str,
        gate: Option<&jum_gateway::store::GateLimits>,
        f: &Change<'_>,
    ) -> Result<Lease, StoreError> {
        let l = self.inner.lease(id, gate, f).await?;
        self.note(std::slice::from_ref(&l));
        Ok(l)
    }
    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        self.inner.get_many(ids).await
    }
    async fn update_many(
        &self,
        ids: &[&str],
        documents: &[(&str, &[u8])],
        f: &Change<'_>,
    ) -> Result<Vec<Option<RequestRecord>>, StoreError> {
        self.inner.update_many(ids, documents, f).await
    }
    async fn lease_many(
        &self,
        asks: &[(&str, Option<&jum_gateway::store::GateLimits>)],
        f: &Change<'_>,
    ) -> Result<Vec<Lease>, StoreError> {
        let l = self.inner.lease_many(asks, f).await?;
        self.note(&l);
        Ok(l)
    }
    async fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.scan(after, limit).await
    }
    async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.inner.remove(id).await
    }
    async fn list(
        &self,
        q: &jum_gateway::store::Listing,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.list(q).await
    }
    async fn count(&self, s: &jum_gateway::store::Selector) -> Result<u64, StoreError> {
        self.inner.count(s).await
    }
    async fn tally(&self) -> Result<jum_gateway::store::Tally, StoreError> {
        self.inner.tally().await
    }
    async fn by_deadline(
        &self,
        until: u64,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.by_deadline(until, limit).await
    }
    fn records_read(&self) -> u64 {
        self.inner.records_read()
    }
}

impl Recording {
    fn note(&self, leases: &[Lease]) {
        let mut l = self.log.lock().unwrap();
        for lease in leases {
            if let Lease::Taken(r) = lease {
                if r.state == State::Sending {
                    l.leased.push(r.id.to_string());
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Documents for Recording {
    async fn put_document(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.put_document(id, bytes).await
    }
    async fn document(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.document(id).await
    }
}

#[async_trait::async_trait]
impl Idempotency for Recording {
    async fn idempotency(
        &self,
        client: &str,
        key: &str,
    ) -> Result<Option<jum_gateway::store::IdemEntry>, StoreError> {
        self.inner.idempotency(client, key).await
    }
    async fn purge_idempotency(&self, before: u64) -> Result<usize, StoreError> {
        self.inner.purge_idempotency(before).await
    }
}

#[async_trait::async_trait]
impl AuditTrail for Recording {
    fn set_audit_rule(&self, rule: jum_gateway::store::trail::AuditRule) {
        self.inner.set_audit_rule(rule)
    }
    async fn audit_append(
        &self,
        drafts: Vec<jum_gateway::store::trail::Draft>,
    ) -> Result<(), StoreError> {
        self.inner.audit_append(drafts).await
    }
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Entries, StoreError> {
        self.inner.audit_scan(after, limit).await
    }
    async fn audit_by_subject(
        &self,
        hash: &str,
    ) -> Result<Vec<jum_gateway::store::trail::Entry>, StoreError> {
        self.inner.audit_by_subject(hash).await
    }
    async fn audit_head(&self) -> Result<jum_gateway::store::trail::Head, StoreError> {
        self.inner.audit_head().await
    }
    async fn audit_restore(
        &self,
        entries: Vec<jum_gateway::store::trail::Entry>,
    ) -> Result<(), StoreError> {
        self.inner.audit_restore(entries).await
    }
}

#[async_trait::async_trait]
impl Outbox for Recording {
    fn set_event_rule(&self, rule: jum_gateway::store::EventRule) {
        self.inner.set_event_rule(rule)
    }
    async fn emit(&self, events: Vec<jum_gateway::store::OutEvent>) -> Result<usize, StoreError> {
        self.inner.emit(events).await
    }
    async fn outbox(
        &self,
        limit: usize,
    ) -> Result<Vec<(u64, jum_gateway::store::OutEvent)>, StoreError> {
        self.inner.outbox(limit).await
    }
    async fn event(&self, seq: u64) -> Result<Option<jum_gateway::store::OutEvent>, StoreError> {
        self.inner.event(seq).await
    }
    async fn outbox_retry(
        &self,
        seq: u64,
        event: &jum_gateway::store::OutEvent,
    ) -> Result<(), StoreError> {
        self.inner.outbox_retry(seq, event).await
    }
    async fn outbox_done(&self, seq: u64) -> Result<(), StoreError> {
        self.inner.outbox_done(seq).await
    }
    async fn purge_event_ids(&self, before: u64) -> Result<usize, StoreError> {
        self.inner.purge_event_ids(before).await
    }
}

// The defaults of a store one process owns, as sled's.
impl Coordination for Recording {}

#[async_trait::async_trait]
impl Upkeep for Recording {
    async fn writable(&self) -> bool {
        self.inner.writable().await
    }
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk().await
    }
    /// Covers what was written before it began, once it completes.
    async fn flush(&self) -> Result<(), StoreError> {
        let leases = self.log.lock().unwrap().leased.len();
        let mut sent: std::collections::HashMap<String, usize> = Default::default();
        let mut after = 0;
        loop {
            let page = self.inner.audit_scan(after, 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, e) in page {
                let e = e.expect("a readable entry");
                if e.draft.action == "exchange.sent" {
                    *sent.entry(e.draft.request_id.unwrap()).or_default() += 1;
                }
            }
        }
        self.inner.flush().await?;
        let mut l = self.log.lock().unwrap();
        l.leases_flushed = leases;
        l.sent_flushed = sent;
        l.flushes += 1;
        Ok(())
    }
    fn read_faults(&self) -> Option<jum_gateway::store::ReadFaults> {
        self.inner.read_faults()
    }
    async fn check(&self) -> Result<jum_gateway::store::integrity::Report, StoreError> {
        self.inner.check().await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}

/// The write-ahead lease, shown without timing: a round's leases and their
/// `exchange.sent` entries are flushed before any request of the round
/// leaves. The store is wrapped to record each lease and what each
/// completed flush covered; the civil registry is reached through a relay
/// that, each time bytes from the gateway arrive, asks the wrapper whether
/// every lease taken so far and its entry are durable. Requests go one at a
/// time so that no other round's lease is pending while one is sent; no
/// other flusher (API group commit aside, checkpoints, webhooks) runs here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rounds_leases_and_sent_entries_are_flushed_before_a_request_leaves() {
    let mut env = setup("").await;
    let registry = env.sim.addrs["civil"];
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    env.gw.registries.get_mut("civil").unwrap().url =
        format!("https://{}/", relay.local_addr().unwrap());
    let inner = SledStore::open(&env.dir.path().join("store"), 8 << 20).unwrap();
    let store = Arc::new(Recording {
        inner,
        log: Default::default(),
    });
    store.set_audit_rule(jum_gateway::audit::rule(Arc::new(
        jum_gateway::audit::AuditKey::from_bytes([7; 32]),
    )));
    let dyn_store: Arc<dyn QueueStore> = store.clone();

    // The relay: the gateway's bytes are passed on only after the check.
    let seen = Arc::new(std::sync::Mutex::new((0usize, Vec::<String>::new())));
    {
        let (store, seen) = (store.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let (mut from, _) = relay.accept().await.unwrap();
                let (store, seen) = (store.clone(), seen.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let to = tokio::net::TcpStream::connect(registry).await.unwrap();
                    let (mut from_r, mut from_w) = from.split();
                    let (mut to_r, mut to_w) = to.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            let n = from_r.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            {
                                let mut s = seen.lock().unwrap();
                                s.0 += 1;
                                s.1.extend(store.not_durable());
                            }
                            if to_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_w.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut to_r, &mut from_w).await;
                        let _ = from_w.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
    }

    let cipher =
        Arc::new(DocumentCipher::from_hex(&DocumentCipher::generate_hex().unwrap()).unwrap());
    let dispatcher = Dispatcher::new(
        &env.gw,
        dyn_store.clone(),
        cipher.clone(),
        Arc::new(env.exchange()),
        jum_gateway::delivery::CaseFolders::configured(&env.gw, env.dir.path()).unwrap(),
    );
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(dispatcher.clone().run(rx));
    let backoffice = Client {
        name: "backoffice".into(),
        role: jum_gateway::api::Role::Backoffice,
        services: vec![],
        rate_per_s: None,
        tls_subject: None,
    };
    let state = AppState::new(
        &env.gw,
        dyn_store,
        dispatcher.clone(),
        cipher,
        [(api::token_hash("t"), backoffice)].into_iter().collect(),
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = format!(
            r#"{{"case":{{"number":"351-{i}/2026-IV","legal_basis":"ZUP čl. 103","official":"o"}},"purpose":"ex officio data for the case","service":"civil.birth-extract","subject":{{"jmbg":"0512981717776"}}}}"#
        );
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/requests")
            .header("authorization", "Bearer t")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let r = api::app(state.clone()).oneshot(req).await.unwrap();
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let id = v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let r = store.get(&id).await.unwrap().unwrap();
            if r.state == State::Delivered {
                break;
            }
            assert!(
                Instant::now() < end,
                "{id} is {:?} after 60 s: {r:?}",
                r.state
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        ids.push(id);
    }
    let (chunks, late) = seen.lock().unwrap().clone();
    assert!(
        late.is_empty(),
        "requests left before their round was durable: {late:?}"
    );
    // The relay did see the exchanges, and the leases it checked.
    let l = store.log.lock().unwrap();
    assert!(chunks >= 3, "{chunks}");
    // A round may lease a request again (a retry after a 503 or a reset):
    // at least one lease of each of the three.
    assert!(l.leased.len() >= 3, "{:?}", l.leased);
    for id in &ids {
        assert!(l.leased.contains(id), "{id} never leased: {:?}", l.leased);
    }
    assert!(
        l.sent_flushed.values().sum::<usize>() >= 3,
        "{:?}",
        l.sent_flushed
    );
}

/// A request through the API router, its answer's bytes as they are.
async fn raw(d: &Running, uri: &str, token: &str) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    let req = Request::get(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(req).await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
    (status, headers, b.to_vec())
}

/// A document that came by X-Road with its attachments, as dispatch
/// records it (the record's attempts with their message ids, the sealed
/// attachments in the document's write), for the API's views of it. The
/// registry is paused so that nothing sends it.
async fn x_road_document(
    d: &Running,
    attachments: &[(&str, Option<&str>, &[u8])],
) -> RequestRecord {
    let mut rec = jum_gateway::lifecycle::record::testing::record()
        .client("backoffice")
        .case("351-12/2026-IV")
        .legal("ZUP čl. 103", "o", "ex officio data for the case")
        .service("cadastre.property-sheet", "cadastre")
        .subject(&[("ko", "803472"), ("sheet", "1520")])
        .now(Duration::from_secs(86_400))
        .build();
    let id = rec.id.clone();
    d.store.enqueue(vec![rec.clone()]).await.unwrap();
    let came: Vec<jum_gateway::protocol::xroad::Attachment> = attachments
        .iter()
        .enumerate()
        .map(
            |(i, (ty, name, bytes))| jum_gateway::protocol::xroad::Attachment {
                content_id: format!("part{}@cadastre", i + 1),
                content_type: ty.to_string(),
                name: name.map(str::to_owned),
                bytes: bytes.to_vec(),
            },
        )
        .collect();
    let (sealed, records) = jum_gateway::dispatch::seal_attachments(&d.cipher, &id, &came).unwrap();
    let soap = "<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\">\
        <SOAP-ENV:Header/><SOAP-ENV:Body><k:cadastre.property-sheetResponse xmlns:k=\"urn:jum-gateway:cadastre:1\">\
        <k:PropertySheet><k:ko>803472</k:ko><k:sheet>1520</k:sheet></k:PropertySheet>\
        </k:cadastre.property-sheetResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>";
    let doc = d.cipher.seal(&id, soap.as_bytes()).unwrap();
    let mut docs: Vec<(&str, &[u8])> = vec![(id.as_str(), doc.as_slice())];
    docs.extend(sealed.iter().map(|(i, b)| (i.as_str(), b.as_slice())));
    let listed = records.clone();
    let now = jum_gateway::time::now_ms();
    let got = d
        .store
        .update_many(&[id.as_str()], &docs, &move |r: &mut RequestRecord| {
            for (i, outcome) in [OutcomeKind::Retryable, OutcomeKind::Document]
                .into_iter()
                .enumerate()
            {
                r.attempts.push(jum_gateway::store::AttemptRecord {
                    at_ms: now + i as u64,
                    duration_ms: 12,
                    http_status: Some(if i == 0 { 500 } else { 200 }),
                    outcome,
                    detail: outcome.name().into(),
                    message_id: Some(format!("0b9d7e52-1f4a-4c8e-9d3b-00000000000{}", i + 1)),
                });
            }
            r.state = State::Delivered;
            r.due_ms = None;
            r.document_id = Some(r.id.to_string());
            r.delivered_ms = Some(now);
            r.attachments = listed.clone();
            r.signed_document = Some(jum_gateway::lifecycle::SignedDocRecord::pending(
                "0b9d7e52-1f4a-4c8e-9d3b-000000000002",
                now,
            ));
            true
        })
        .await
        .unwrap();
    rec = got[0].clone().unwrap();
    rec
}

/// An X-Road document's attachments through the API: the request shows
/// each attempt's message id, the attachments and the signed document's
/// state; the document lists them; each is served byte for byte as a
/// download, its type as the registry declared it only when that is a
/// valid MIME type, `nosniff`, and under a file name made safe. A hostile
/// name (`../../etc/passwd`, quotes) and a hostile type (`text/html`, one
/// with a header folded in) are neutralised; a missing number and
/// another client's document are 404 problem+json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_attachments_are_listed_and_served_as_safe_downloads() {
    let d = run(setup("").await, |g| {
        g.registries.get_mut("cadastre").unwrap().paused = true
    })
    .await;
    let pdf: &[u8] = b"%PDF-1.7 the plan of parcel 1520";
    let html: &[u8] = b"<html><script>alert(document.cookie)</script></html>";
    let r = x_road_document(
        &d,
        &[
            ("application/pdf", Some("../../etc/passwd"), pdf),
            ("text/html", Some("plan\"; x=\".html"), html),
            ("text/html\r\nSet-Cookie: a=b", None, b"folded"),
        ],
    )
    .await;
    let id = r.id.clone();
    let (status, _, v) = call(
        &d,
        "GET",
        &format!("/api/v1/requests/{id}"),
        "t",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["attempts"][0]["message_id"],
        "0b9d7e52-1f4a-4c8e-9d3b-000000000001"
    );
    assert_eq!(
        v["attempts"][1]["message_id"],
        "0b9d7e52-1f4a-4c8e-9d3b-000000000002"
    );
    assert_eq!(v["signed_document"]["state"], "pending", "{v}");
    assert_eq!(
        v["signed_document"]["message_id"],
        "0b9d7e52-1f4a-4c8e-9d3b-000000000002"
    );
    assert_eq!(v["attachments"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["attachments"][0]["name"], "../../etc/passwd");
    assert_eq!(v["attachments"][0]["size"], pdf.len());
    let (status, _, doc) = call(
        &d,
        "GET",
        &format!("/api/v1/documents/{id}"),
        "t",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["payload"]["ko"], "803472", "{doc}");
    let listed = doc["attachments"].as_array().unwrap();
    assert_eq!(listed[1]["content_type"], "text/html");
    assert_eq!(
        listed[1]["url"],
        format!("/api/v1/documents/{id}/attachments/2")
    );
    assert_eq!(
        listed[0]["sha256"],
        openssl::sha::sha256(pdf)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let header = |h: &axum::http::HeaderMap, k: &str| {
        h.get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let served = |n: usize| {
        let (d, uri) = (&d, format!("/api/v1/documents/{id}/attachments/{n}"));
        async move { raw(d, &uri, "t").await }
    };
    // The positive control: the PDF as it came, as its own type.
    let (status, h, body) = served(1).await;
    assert_eq!(status, 200);
    assert_eq!(body, pdf);
    assert_eq!(header(&h, "content-type"), "application/pdf");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&h, "content-disposition"),
        "attachment; filename=\"passwd\""
    );
    // HTML stays HTML, but downloaded, never sniffed nor rendered here.
    let (status, h, body) = served(2).await;
    assert_eq!(status, 200);
    assert_eq!(body, html);
    assert_eq!(header(&h, "content-type"), "text/html");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&h, "content-disposition"),
        "attachment; filename=\"plan___x__.html\""
    );
    // A type that is no MIME type is not passed on.
    let (status, h, body) = served(3).await;
    assert_eq!(status, 200);
    assert_eq!(body, b"folded");
    assert_eq!(header(&h, "content-type"), "application/octet-stream");
    assert!(h.get("set-cookie").is_none());
    assert_eq!(
        header(&h, "content-disposition"),
        "attachment; filename=\"attachment-3\""
    );
    for n in ["4", "0", "one"] {
        let (status, h, body) =
            raw(&d, &format!("/api/v1/documents/{id}/attachments/{n}"), "t").await;
        assert_eq!(status, 404, "{n}");
        assert_eq!(
            header(&h, "content-type"),
            "application/problem+json",
            "{n}"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["detail"],
            format!("no attachment {n} of document {id}"),
            "{v}"
        );
    }
    // Another back-office does not see it; an administrator does.
    let (status, _, _) = served_as(&d, &id, "x").await;
    assert_eq!(status, 404);
    let (status, _, body) = served_as(&d, &id, "a").await;
    assert_eq!((status, body.as_slice()), (200, pdf));
    // Each read is on the audit trail.
    let trail = d.store.audit_scan(0, 10_000).await.unwrap();
    let reads = trail
        .iter()
        .filter_map(|(_, e)| e.as_ref().ok())
        .filter(|e| e.draft.action == "document.read" && e.draft.request_id.as_deref() == Some(&id))
        .count();
    assert!(reads >= 5, "{reads} reads on the trail");
    // The dashboard's request page lists them and the message ids.
    let session = sign_in(&d, "viewer", false).await;
    let page = Request::get(format!("/ui/requests/{id}"))
        .header("cookie", format!("jumgw_session={session}"))
        .body(Body::empty())
        .unwrap();
    let r = api::app(d.state.clone()).oneshot(page).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = String::from_utf8(
        axum::body::to_bytes(r.into_body(), 1 << 24)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        html.contains("data-message-id=\"0b9d7e52-1f4a-4c8e-9d3b-000000000001\""),
        "{html}"
    );
    assert!(html.contains("data-attachment=\"3\""), "{html}");
    assert!(html.contains("../../etc/passwd"), "{html}");
    assert!(
        html.contains("plan&quot;; x=&quot;.html"),
        "the name escaped: {html}"
    );
    assert!(html.contains("data-signed-document=\"pending\""), "{html}");
}

async fn served_as(d: &Running, id: &str, token: &str) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    raw(d, &format!("/api/v1/documents/{id}/attachments/1"), token).await
}

/// What an X-Road registry's security server allows of our catalogue, as
/// an independent stand-in answers listMethods and allowedMethods over
/// mutual TLS: a service it does not allow is on the registry's panel (the
/// admin API and the dashboard), counted by the metrics, and raised once
/// as an alert; a security server that cannot be reached is reported as
/// such, and is no alert. The signed-XML registries are not asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_an_x_road_security_server_does_not_allow_are_reported_on_the_panel_and_alerted() {
    let _scraping = SCRAPES.lock().await;
    let env = setup("").await;
    let (server, port) = start_xroad_metaservices(
        &certs(env.dir.path()),
        &[
            "cadastre.property-sheet",
            "cadastre.parcel",
            "cadastre.other",
        ],
        &["cadastre.parcel"],
    );
    let mut d = run(env, |g| {
        let c = g.registries.get_mut("cadastre").unwrap();
        c.protocol = jum_gateway::config::RegistryProtocol::XRoad;
        c.url = format!("https://127.0.0.1:{port}/");
        c.paused = true;
    })
    .await;
    d.state = d.state.clone().with_metrics(Some(recorder()));
    assert_eq!(d.dispatcher.x_road_registries(), ["cadastre"]);
    let reports = d.dispatcher.report_methods().await;
    assert_eq!(reports.len(), 1);
    let cadastre = &reports["cadastre"];
    assert_eq!(cadastre.error, None);
    assert_eq!(
        cadastre.listed,
        [
            "cadastre.other",
            "cadastre.parcel",
            "cadastre.property-sheet"
        ]
    );
    assert_eq!(cadastre.allowed, ["cadastre.parcel"]);
    assert_eq!(cadastre.missing, ["cadastre.property-sheet"]);
    let (status, _, v) = call(&d, "GET", "/admin/v1/registries", "a", String::new()).await;
    assert_eq!(status, 200, "{v}");
    let panel = |v: &serde_json::Value, name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["registry"] == name)
            .unwrap()
            .clone()
    };
    let c = panel(&v, "cadastre");
    assert_eq!(c["protocol"], "x-road");
    assert_eq!(
        c["x_road"]["missing"],
        serde_json::json!(["cadastre.property-sheet"]),
        "{c}"
    );
    assert!(c["x_road"]["checked_utc"].is_string(), "{c}");
    assert_eq!(panel(&v, "civil")["protocol"], "signed-xml");
    assert!(panel(&v, "civil")["x_road"].is_null());
    let session = sign_in(&d, "viewer", false).await;
    let overview = |session: String| {
        let d = &d;
        async move {
            let page = Request::get("/ui")
                .header("cookie", format!("jumgw_session={session}"))
                .body(Body::empty())
                .unwrap();
            let r = api::app(d.state.clone()).oneshot(page).await.unwrap();
            String::from_utf8(
                axum::body::to_bytes(r.into_body(), 1 << 24)
                    .await
                    .unwrap()
                    .to_vec(),
            )
            .unwrap()
        }
    };
    let html = overview(session.clone()).await;
    assert!(
        html.contains("data-x-road-missing=\"cadastre.property-sheet\""),
        "{html}"
    );
    assert!(
        html.contains("<code>cadastre.property-sheet</code>"),
        "{html}"
    );
    // The metrics: one missing for cadastre, and promtool reads the page.
    let (status, _, text) = scrape(&d, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("jumgw_xroad_services_missing{registry=\"cadastre\"} 1"),
        "{text}"
    );
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let o = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // It reads the whole page (a parse error would stop it) and has
    // nothing to say of the new gauge (its lint of older names aside).
    assert!(
        !said.contains("error while linting") && !said.contains("jumgw_xroad"),
        "promtool check metrics: {said}"
    );
    // The alert, through the daemon's Look: once while it holds.
    let look = jum_gateway::alerts::watch::look(d.state.ops());
    let mut watch = jum_gateway::alerts::watch::Watch::new(
        &jum_gateway::config::AlertsConfig {
            free_bytes: 0,
            paused: Duration::from_secs(3600),
            ..Default::default()
        },
        d.store.clone(),
        look,
        d.env.dir.path().to_owned(),
        jum_gateway::audit::Checkpoints {
            path: d.env.dir.path().join("checkpoints.log"),
        },
        true,
    );
    watch.round().await.unwrap();
    watch.round().await.unwrap();
    let alerts: Vec<serde_json::Value> = d
        .store
        .outbox(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == "alert.services-not-allowed")
        .map(|(_, e)| e.data)
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["about"], "cadastre");
    assert_eq!(alerts[0]["detail"], "cadastre.property-sheet");
    // The security server gone: reported as such, nothing else claimed.
    drop(server);
    let reports = d.dispatcher.report_methods().await;
    let gone = &reports["cadastre"];
    assert!(
        gone.error.as_deref().unwrap_or("").contains("listMethods"),
        "{gone:?}"
    );
    assert!(gone.missing.is_empty() && gone.allowed.is_empty());
    let html = overview(session).await;
    assert!(html.contains("data-x-road-missing=\"\""), "{html}");
    let (_, _, v) = call(&d, "GET", "/admin/v1/registries", "a", String::new()).await;
    assert!(panel(&v, "cadastre")["x_road"]["error"].is_string(), "{v}");
}

// X-Road: a registry reached through the simulator's security-server front.

fn case_file(d: &Running, id: &str, service: &str) -> std::path::PathBuf {
    d.env
        .dir
        .path()
        .join("cases/backoffice/351-12%2F2026-IV")
        .join(format!("{id}.{service}.xml"))
}

/// The first-name texts of a delivered answer, as lxml reads it with the
/// charset its sidecar names (the answer's Content-Type said it) or else
/// the encoding it declares.
fn first_names(file: &std::path::Path) -> Vec<String> {
    let o = std::process::Command::new(python())
        .args([
            "-c",
            "import sys,json\nfrom lxml import etree\n\
             side=json.load(open(sys.argv[2]))\n\
             p=etree.XMLParser(encoding=side['charset']) if 'charset' in side else None\n\
             d=etree.parse(sys.argv[1], p)\n\
             json.dump([e.text for e in d.iter('{urn:jum-gateway:civil:1}firstName')], sys.stdout)",
        ])
        .arg(file)
        .arg(file.with_extension("json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_answers_are_retried_as_new_messages_and_delivered() {
    let d = run(
        setup_x_road("civil:xr-network=next:1, civil:xr-network-snake=next:1").await,
        |_| {},
    )
    .await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d
        .until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let outcomes: Vec<&str> = r.attempts.iter().map(|a| a.outcome.name()).collect();
    assert_eq!(outcomes, ["retryable", "retryable", "document"]);
    assert!(
        r.attempts[0]
            .detail
            .contains("Server.ServerProxy.ServiceFailed.NetworkError"),
        "{:?}",
        r.attempts[0]
    );
    assert!(
        r.attempts[1]
            .detail
            .contains("server.serverproxy.service_failed.network_error"),
        "{:?}",
        r.attempts[1]
    );
    // Each attempt was a message of its own at the security server.
    let seen = d.env.seen().await;
    let ids: std::collections::BTreeSet<&str> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{seen}");
    assert!(
        !ids.contains(id.as_str()),
        "the request's own id is not a message id"
    );
    let file = case_file(&d, &id, BIRTH.0);
    assert_eq!(first_names(&file), ["Jelena", "Đorđe", "Erzsébet"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_answers_in_latin1_with_attachments_or_a_bom_are_delivered_with_their_text() {
    let d = run(setup_x_road("").await, |_| {}).await;
    for rule in ["latin1", "swa", "mtom", "bom", "cdata"] {
        d.env.faults(&format!("civil:{rule}=next:1")).await;
        let id = d.submit(BIRTH.0, BIRTH.1).await;
        let r = d
            .until(&id, State::Delivered, Duration::from_secs(10))
            .await;
        assert_eq!(r.attempts.len(), 1, "{rule}");
        let file = case_file(&d, &id, BIRTH.0);
        assert_eq!(
            first_names(&file),
            ["Jelena", "Đorđe", "Erzsébet"],
            "{rule}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_security_failures_are_never_delivered_and_denials_end_dead() {
    let d = run(
        setup_x_road("civil:xr-header-changed, cadastre:xr-denied-snake").await,
        |_| {},
    )
    .await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d.until(&id, State::Dead, Duration::from_secs(10)).await;
    assert_eq!(r.attempts.len(), 3);
    let e = r.error.unwrap();
    assert!(
        e.starts_with("security failure, 3 times: the answer does not copy back the request's headers: Header/id: "),
        "{e}"
    );
    assert!(d.store.document(&id).await.unwrap().is_none());
    assert!(!case_file(&d, &id, BIRTH.0).exists());

    let denied = d
        .submit(
            "cadastre.property-sheet",
            r#"{"ko":"803472","sheet":"1520"}"#,
        )
        .await;
    let r = d.until(&denied, State::Dead, Duration::from_secs(10)).await;
    assert!(
        r.attempts.len() <= 2,
        "at most a confirming retry: {:?}",
        r.attempts
    );
    let e = r.error.unwrap();
    assert!(
        e.contains("server.serverproxy.access_denied: Request is not allowed: SERVICE:RS/GOV/17211226/katastar/cadastre.property-sheet"),
        "{e}"
    );
    assert!(d.store.document(&denied).await.unwrap().is_none());
    // The positive control: with the rules gone, the same request is delivered.
    d.env.faults("").await;
    let ok = d.submit(BIRTH.0, BIRTH.1).await;
    d.until(&ok, State::Delivered, Duration::from_secs(10))
        .await;
}

/// X-Road's own evidence end to end: a document over X-Road through the
/// simulator's security-server front is not marked for a TSA stamp; its
/// signed document is asked for and answered 404 until the front
/// timestamps its log (`POST /x-road/stamp`), then kept (its message.xml
/// the document byte for byte), put into the case dossier, and named by
/// `jumgw dossier verify`; the independent check agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_road_documents_signed_document_is_kept_once_stamped_and_verified_in_the_dossier() {
    use jum_gateway::evidence::signed::{bind, SignedDocs};
    let d = run(setup_x_road("").await, |gw| {
        let e = &mut gw.evidence;
        e.interval = Duration::from_millis(100);
        e.base = Duration::from_millis(100);
        e.cap = Duration::from_millis(300);
        // Far more tries than the test waits for: it is the 404s that
        // are counted.
        e.signed_document_attempts = 10_000;
    })
    .await;
    let data = d.env.dir.path().to_owned();
    let dyn_store: Arc<dyn QueueStore> = d.store.clone();
    dyn_store.set_audit_rule(jum_gateway::audit::rule(d.state.audit_key.clone()));
    let job = SignedDocs::new(
        &d.env.gw,
        dyn_store.clone(),
        d.cipher.clone(),
        Arc::new(jum_gateway::daemon::signed::SecurityServers(
            d.dispatcher.clone(),
        )),
    )
    .expect("an X-Road registry: the job runs");
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(job.run(rx));

    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d
        .until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    let message_id = r.attempts.last().unwrap().message_id.clone().unwrap();
    assert!(r.stamp.is_none(), "an X-Road document gets no TSA stamp");
    // Asked for, and not timestamped yet.
    let end = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let r = d.store.get(&id).await.unwrap().unwrap();
        let s = r.signed_document.unwrap();
        if s.tries >= 2 {
            break s;
        }
        assert!(Instant::now() < end, "never asked: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (s.state, s.message_id.as_str()),
        (SignedDocState::Pending, message_id.as_str())
    );
    assert!(
        s.reason
            .as_deref()
            .unwrap()
            .contains("Message signature has not been timestamped yet"),
        "{s:?}"
    );
    assert!(d
        .store
        .document(&format!("{id}.asice"))
        .await
        .unwrap()
        .is_none());
    // The security server timestamps its log: the next try keeps it.
    let r = d
        .env
        .control
        .post(format!("http://{}/x-road/stamp", d.env.sim.control))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let end = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let r = d.store.get(&id).await.unwrap().unwrap();
        let s = r.signed_document.unwrap();
        if s.state != SignedDocState::Pending {
            break s;
        }
        assert!(Instant::now() < end, "not kept: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(s.state, SignedDocState::Kept, "{s:?}");
    let open = |id: String| {
        let (store, cipher) = (d.store.clone(), d.cipher.clone());
        async move {
            let sealed = store.document(&id).await.unwrap().unwrap();
            cipher.open(&id, &sealed).unwrap()
        }
    };
    let container = open(format!("{id}.asice")).await;
    let document = open(id.clone()).await;
    assert_eq!(
        s.sha256.as_deref(),
        Some(jum_gateway::xml::dsig::hex(&openssl::sha::sha256(&container)).as_str())
    );
    bind(&container, &document, None, &[]).unwrap();

    // The case's dossier carries it, and its verifier names it.
    let dossiers = jum_gateway::evidence::dossier::Dossiers::configured(
        &d.env.gw,
        dyn_store.clone(),
        d.cipher.clone(),
        d.state.audit_key.clone(),
        &data,
    )
    .unwrap();
    let state = d.state.clone().with_dossiers(dossiers);
    let resp = api::app(state)
        .oneshot(
            Request::builder()
                .uri("/api/v1/cases/351-12%2F2026-IV/dossier")
                .header("authorization", "Bearer t")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let zip = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let file = write(&data, "case.asice", &zip);
    let ca = data.join("certs").join("ca.pem");
    let (code, report) = dossier_verify(&file, &[&ca]);
    for want in [
        format!("evidence/{id}.asice: the X-Road security server's signed document of it: evidence/{id}.asice, message id {message_id}"),
        format!("its X-Road signature and timestamp are not verified here (they need the X-Road instance's global configuration): verify them with NIIS's asicverifier: java -jar asicverifier.jar <verificationconf> evidence/{id}.asice"),
        format!("documents/{id}.xml: civil's document, the answer to request {id} of case 351-12/2026-IV, came by X-Road: it is byte for byte the message.xml of its security server's signed document evidence/{id}.asice"),
    ] {
        assert!(report.contains(&want), "{want:?} not in {report}");
    }
    assert_eq!(code, 0, "{report}");
    let (ok, v) = asice_check(&file);
    assert!(ok, "{v:#}");
}

/// An X-Road answer with attachments, end to end over the simulator's
/// security-server front (SwA and MTOM): the attachment is stored sealed
/// in the write of its document, lands beside it in the case folder with
/// the sidecar listing it and the message id, is served by the API byte
/// for byte; after a crash between the fetch and the delivery (the case
/// folder lost, the request fetched again), the redelivery takes it from
/// the store. The front's `unlisted` state shows as services not allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_road_attachments_reach_the_case_folder_the_sidecar_and_the_api() {
    let d = run(setup_x_road("").await, |_| {}).await;
    for rule in ["swa", "mtom"] {
        d.env.faults(&format!("civil:{rule}=next:1")).await;
        let id = d.submit(BIRTH.0, BIRTH.1).await;
        let r = d
            .until(&id, State::Delivered, Duration::from_secs(10))
            .await;
        let message = r.attempts.last().unwrap().message_id.clone().unwrap();
        assert_eq!(r.attachments.len(), 1, "{rule}: {:?}", r.attachments);
        let a = &r.attachments[0];
        assert_eq!(a.document_id, format!("{id}.attachment-1"));
        let stored = d
            .cipher
            .open(
                &a.document_id,
                &d.store.document(&a.document_id).await.unwrap().unwrap(),
            )
            .unwrap();
        assert_eq!(stored.len() as u64, a.size, "{rule}");
        let doc = case_file(&d, &id, BIRTH.0);
        let beside = doc.with_file_name(format!("{id}.{}.attachment-1", BIRTH.0));
        assert_eq!(std::fs::read(&beside).unwrap(), stored, "{rule}");
        let sha = |b: &[u8]| -> String {
            openssl::sha::sha256(b)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect()
        };
        let side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(doc.with_extension("json")).unwrap()).unwrap();
        assert_eq!(
            side["message_ids"],
            serde_json::json!([message]),
            "{rule}: {side}"
        );
        assert_eq!(
            side["attachments"][0]["file"],
            format!("{id}.{}.attachment-1", BIRTH.0)
        );
        assert_eq!(
            side["attachments"][0]["sha256"],
            sha(&stored),
            "{rule}: {side}"
        );
        assert_eq!(
            side["attachments"][0]["content_type"],
            a.content_type.as_str()
        );
        let (status, _, v) = call(
            &d,
            "GET",
            &format!("/api/v1/documents/{id}"),
            "t",
            String::new(),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert!(v["payload"].to_string().contains("Erzsébet"), "{rule}: {v}");
        assert_eq!(v["attachments"][0]["sha256"], sha(&stored), "{rule}: {v}");
        let (status, _, body) =
            raw(&d, &format!("/api/v1/documents/{id}/attachments/1"), "t").await;
        assert_eq!(
            (status, body.as_slice()),
            (200, stored.as_slice()),
            "{rule}"
        );
        if rule == "mtom" {
            continue;
        }
        // A crash after the fetch and before the delivery: nothing in the
        // case folder, the request fetched and due for delivery.
        for f in [&doc, &beside, &doc.with_extension("json")] {
            std::fs::remove_file(f).unwrap();
        }
        let now = jum_gateway::time::now_ms();
        d.store
            .update_many(&[id.as_str()], &[], &move |r: &mut RequestRecord| {
                r.state = State::Fetched;
                r.delivered_ms = None;
                r.due_ms = Some(now);
                true
            })
            .await
            .unwrap();
        d.dispatcher.wake();
        d.until(&id, State::Delivered, Duration::from_secs(10))
            .await;
        assert_eq!(
            std::fs::read(&beside).unwrap(),
            stored,
            "redelivered from the store"
        );
        assert!(doc.with_extension("json").exists());
    }
    // The positive control: an answer without attachments has none; one
    // in ISO-8859-1 reads again for the API's projection of it.
    d.env.faults("civil:latin1=next:1").await;
    let id = d.submit(BIRTH.0, BIRTH.1).await;
    let r = d
        .until(&id, State::Delivered, Duration::from_secs(10))
        .await;
    assert!(r.attachments.is_empty());
    let (status, _, doc) = call(
        &d,
        "GET",
        &format!("/api/v1/documents/{id}"),
        "t",
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert!(doc["payload"].to_string().contains("Erzsébet"), "{doc}");
    assert_eq!(doc["attachments"], serde_json::json!([]));
    assert!(r.attempts[0].message_id.is_some());
    let side = std::fs::read_to_string(case_file(&d, &id, BIRTH.0).with_extension("json")).unwrap();
    assert!(!side.contains("\"attachments\""), "{side}");
    // allowedMethods of the front without the cadastre's services.
    d.env.faults("cadastre:unlisted").await;
    let reports = d.dispatcher.report_methods().await;
    assert_eq!(
        reports["cadastre"].missing,
        ["cadastre.parcel", "cadastre.property-sheet"],
        "{reports:?}"
    );
    assert!(reports["civil"].missing.is_empty(), "{reports:?}");
    assert!(
        reports["civil"].allowed.contains(&BIRTH.0.to_owned()),
        "{reports:?}"
    );
}

/// `serve --demo` with `JUMGW_REGISTRIES__CADASTRE__PROTOCOL=x-road`: the
/// cadastre is reached through the embedded security-server front, the
/// other registries as before, and every request is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_one_registry_over_x_road_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let d = start_daemon_env(
        &data,
        port,
        &[(
            "JUMGW_REGISTRIES__CADASTRE__PROTOCOL".into(),
            "x-road".into(),
        )],
    );
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&http, port, i).await.unwrap());
    }
    wait_delivered(&http, port, &ids).await;
    // The cadastre's requests came to the registry as X-Road messages
    // (ids the gateway made per attempt, not the requests' own), the
    // others' with the requests' ids as before.
    let seen: serde_json::Value = http
        .get(format!("{}/seen", d.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for s in seen["requests"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let by_request = ids.iter().any(|r| r == id);
        if s["registry"] == "cadastre" {
            assert!(!by_request && id.len() == 36, "an X-Road message id: {s}");
        } else if !s["poll"].as_bool().unwrap() {
            assert!(by_request, "{s}");
        }
    }
    assert!(
        seen["by_registry"]["cadastre"].as_u64().unwrap() >= 2,
        "{seen}"
    );
}
