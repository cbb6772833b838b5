//! Every time the API writes as `X_ms` (ms since the epoch, for programs)
//! is written beside it as `X_utc` (RFC 3339, UTC, to the millisecond, for
//! people and for tools that read dates), in every JSON answer and in the
//! OpenAPI document. Done once here, on the way out, so that no answer
//! can have one without the other. Durations (`duration_ms`, `total_ms`)
//! are not times and get no sibling.

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use serde_json::{Map, Value};

/// `_ms` fields that are lengths of time, not points in it.
const DURATIONS: [&str; 2] = ["duration_ms", "total_ms"];

/// JSON answers larger than this are passed on as they are (exports are
/// streamed JSON lines, not JSON, and pass anyway).
const MAX_REWRITE: usize = 32 << 20;

/// The name beside `key`, if `key` is a time.
fn sibling(key: &str) -> Option<String> {
    let stem = key.strip_suffix("_ms")?;
    (!DURATIONS.contains(&key) && !stem.is_empty()).then(|| format!("{stem}_utc"))
}

/// Adds `X_utc` beside every `X_ms` in `v`, at any depth.
pub fn add(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let mut extra = Vec::new();
            for (k, x) in m.iter_mut() {
                add(x);
                if let Some(name) = sibling(k) {
                    let t = match x {
                        Value::Number(n) => n
                            .as_u64()
                            .map_or(Value::Null, |ms| Value::String(crate::time::rfc3339(ms))),
                        _ => Value::Null,
                    };
                    extra.push((name, t));
                }
            }
            for (k, t) in extra {
                m.entry(k).or_insert(t);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(add),
        _ => {}
    }
}

/// The layer: JSON answers (problems included) get their `_utc` fields.
pub async fn beside_ms(r: Response) -> Response {
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REWRITE).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    add(&mut v);
    let out = serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

/// The OpenAPI document says the same: beside every `X_ms` property of a
/// schema, an `X_utc` string in date-time format (required where it is).
pub fn document(doc: &mut Value) {
    match doc {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get_mut("properties") {
                let mut extra = Map::new();
                for (k, schema) in props.iter() {
                    if let Some(name) = sibling(k) {
                        let nullable = schema.to_string().contains("\"null\"");
                        extra.insert(
                            name,
                            serde_json::json!({
                                "type": if nullable { serde_json::json!(["string", "null"]) } else { serde_json::json!("string") },
                                "format": "date-time",
                                "description": format!("`{k}` as RFC 3339, in UTC, to the millisecond."),
                            }),
                        );
                    }
                }
                let required: Vec<String> = m
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| {
                        r.iter()
                            .filter_map(Value::as_str)
                            .filter_map(sibling)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(Value::Object(props)) = m.get_mut("properties") {
                    for (k, v) in extra {
                        props.entry(k).or_insert(v);
                    }
                }
                if let Some(Value::Array(r)) = m.get_mut("required") {
                    r.extend(required.into_iter().map(Value::String));
                }
            }
            for (k, x) in m.iter_mut() {
                // An example is an answer: it gets its siblings too.
                if k == "example" {
                    add(x);
                } else {
                    document(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(document),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_time_gets_its_rfc3339_twin_and_durations_do_not() {
        let mut v = serde_json::json!({
            "created_ms": 1796180168952u64,
            "delivered_ms": null,
            "attempts": [{"at_ms": 0, "duration_ms": 120}],
            "history": {"total_ms": 5},
        });
        add(&mut v);
        assert_eq!(v["created_utc"], "2026-12-02T02:56:08.952Z");
        assert_eq!(v["delivered_utc"], Value::Null);
        assert_eq!(v["attempts"][0]["at_utc"], "1970-01-01T00:00:00.000Z");
        assert!(v["attempts"][0].get("duration_utc").is_none());
        assert!(v["history"].get("total_utc").is_none());
    }
}
