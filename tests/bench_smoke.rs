//! `jumgw bench e2e` runs to completion from a clean checkout: a few
//! hundred requests through both processes. Only completion is asserted;
//! the figures belong in BENCHMARKS.md, never in a pass/fail test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// 200 requests through `jumgw bench e2e` with `extra` arguments; its JSON.
fn bench(extra: &[&str]) -> serde_json::Value {
    let o = jumgw()
        .args(["bench", "e2e", "--requests", "200", "--json"])
        .args(["--concurrency", "16"])
        .args(extra)
        .current_dir(manifest_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["delivered"], 200, "{v}");
    v
}

#[test]
fn the_e2e_bench_completes() {
    let v = bench(&[]);
    for k in [
        "exchanges_per_s",
        "crypto_bound_per_s",
        "p50_ms",
        "p99_ms",
        "rss_mb",
    ] {
        assert!(v[k].is_number(), "{k} missing: {v}");
    }
}

/// The same on PostgreSQL with two instances sharing the queue.
#[cfg_attr(
    not(jumgw_pg),
    ignore = "needs PostgreSQL: ./tests/run starts a server (JUMGW_REQUIRE_PG, JUMGW_TEST_PG)"
)]
#[test]
fn the_e2e_bench_completes_on_postgres_with_two_instances() {
    let server = std::env::var("JUMGW_TEST_PG")
        .expect("this test needs PostgreSQL: JUMGW_TEST_PG is not set (./tests/run sets it)");
    let v = bench(&["--store", &server, "--instances", "2"]);
    assert_eq!(v["instances"], 2, "{v}");
    assert_eq!(v["store"], "postgres", "{v}");
}
