//! Marks the PostgreSQL tests as ignored unless the run provides a server:
//! `./tests/run` sets `JUMGW_REQUIRE_PG` (and starts the server), and the
//! tests compile as `#[cfg_attr(not(jumgw_pg), ignore = "…")]`, so a plain
//! `cargo test` lists them as ignored, with the reason, instead of letting
//! them pass without running.
//!
//! The variable is a constant `1`, unlike the server's URL (a new port each
//! run), so a test run does not rebuild the crate for a new port.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(jumgw_pg)");
    println!("cargo::rerun-if-env-changed=JUMGW_REQUIRE_PG");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("JUMGW_REQUIRE_PG").is_some() {
        println!("cargo::rustc-cfg=jumgw_pg");
    }
}
