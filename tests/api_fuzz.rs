//! JSON from clients never makes the API fail: arbitrary bytes, arbitrary
//! JSON, and valid bodies with one field replaced or removed, sent to both
//! POST endpoints, get a 202 or a 4xx problem+json, never a 5xx or a panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::*;
use jum_gateway::api::{self, AppState, Client};
use jum_gateway::store::QueueStore;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
        "[0-9]{0,14}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid() -> [Value; 3] {
    [
        json!({"case": {"number": "1/2026", "legal_basis": "ZUP", "official": "o"},
               "purpose": "p", "service": "civil.birth-extract", "subject": {"jmbg": "0512981717776"}}),
        json!({"legal_basis": "ZUP", "official": "o", "purpose": "p",
               "requests": [{"service": "cadastre.parcel", "subject": {"ko": "803472", "parcel": "1234/5"}}]}),
        json!({"legal_basis": "ZUP", "official": "o", "purpose": "p", "procedure": "building-permit",
               "subject": {"jmbg": "0512981717776", "ko": "803472", "sheet": "1520"}}),
    ]
}

/// A valid body with the value at one path (by index into its fields,
/// nested ones included) replaced by `v`, or removed when `v` is None.
fn mutate(mut body: Value, pick: usize, v: Option<Value>) -> Value {
    fn paths(v: &Value, prefix: String, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                let p = format!("{prefix}/{k}");
                out.push(p.clone());
                paths(child, p, out);
            }
        }
    }
    let mut all = Vec::new();
    paths(&body, String::new(), &mut all);
    let path = &all[pick % all.len()];
    let (parent, key) = path.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut body
    } else {
        body.pointer_mut(parent).unwrap()
    };
    if let Value::Object(m) = target {
        match v {
            Some(v) => {
                m.insert(key.to_owned(), v);
            }
            None => {
                m.remove(key);
            }
        }
    }
    body
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (0..3usize).prop_map(|w| valid()[w].to_string().into_bytes()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (
            0..3usize,
            any::<usize>(),
            proptest::option::of(json_value())
        )
            .prop_map(|(which, pick, v)| mutate(valid()[which].clone(), pick, v)
                .to_string()
                .into_bytes()),
    ]
}

#[test]
fn client_json_never_makes_the_api_fail() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (state, _env) = rt.block_on(async {
        let env = setup("").await;
        // The dispatcher never runs: requests stay queued, which is all
        // this needs.
        let Parts {
            store,
            cipher,
            dispatcher,
        } = env.parts();
        let dyn_store: Arc<dyn QueueStore> = store;
        let clients = [(api::token_hash("t"), Client::unlimited("t", false))]
            .into_iter()
            .collect();
        let state = AppState::new(&env.gw, dyn_store, dispatcher, cipher, clients);
        (state, env)
    });
    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // Both keys are taken first, so that fuzzed bodies under them meet
    // the idempotency check.
    for k in ["a", "b"] {
        let req = Request::post("/api/v1/requests")
            .header("authorization", "Bearer t")
            .header("content-type", "application/json")
            .header("idempotency-key", k)
            .body(Body::from(valid()[0].to_string()))
            .unwrap();
        let r = rt.block_on(api::app(state.clone()).oneshot(req)).unwrap();
        assert_eq!(r.status(), 202);
    }
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let kinds = std::sync::Mutex::new(std::collections::BTreeSet::new());
    proptest!(config, |(bytes in body(), bundle in any::<bool>(), key in proptest::option::of("[ab]"))| {
        let uri = if bundle { "/api/v1/cases/1%2F2026/requests" } else { "/api/v1/requests" };
        let mut req = Request::post(uri)
            .header("authorization", "Bearer t")
            .header("content-type", "application/json");
        if let Some(k) = &key {
            req = req.header("idempotency-key", k.as_str());
        }
        let r = rt.block_on(api::app(state.clone()).oneshot(req.body(Body::from(bytes.clone())).unwrap())).unwrap();
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert!(status == 202 || (400..500).contains(&status), "{status} for {text}");
        if status == 202 {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            prop_assert_eq!(ct.as_deref(), Some("application/problem+json"), "{}", text);
            kinds.lock().unwrap().insert(status);
        }
    });
    // The generator reaches both sides: accepted bodies and each refusal.
    assert!(accepted.into_inner() > 0, "nothing was accepted");
    let kinds = kinds.into_inner().unwrap();
    assert!(
        [400, 409, 422].iter().all(|k| kinds.contains(k)),
        "refusals seen: {kinds:?}"
    );
}
