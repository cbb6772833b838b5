//! Load generators and micro-benchmarks behind `jumgw bench`. Every figure
//! is reported beside a baseline measured in the same run on the same
//! machine, because these machines are shared and absolute timings drift.

pub mod e2e;
pub mod enqueue;
pub mod queries;
pub mod xml;

use std::time::{Duration, Instant};

/// Runs `f` repeatedly for about `seconds` (after a short warm-up) and
/// returns calls per second; the first error ends the measurement.
pub fn rate<E: std::fmt::Display, F: FnMut() -> Result<(), E>>(
    seconds: f64,
    mut f: F,
) -> Result<f64, String> {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs_f64(seconds / 10.0) {
        f().map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    let budget = Duration::from_secs_f64(seconds);
    loop {
        for _ in 0..4 {
            f().map_err(|e| e.to_string())?;
        }
        n += 4;
        if start.elapsed() >= budget {
            break;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A request as the benchmarks file them: in case `351-{case}/2026-IV`,
/// for one citizen, with a 15-day deadline, queued and due now.
pub(crate) fn queued(case: u64, service: &str, registry: &str) -> crate::store::RequestRecord {
    crate::lifecycle::record::testing::record()
        .client("bench")
        .case(format!("351-{case}/2026-IV"))
        .legal(
            "Zakon o opštem upravnom postupku, čl. 103",
            "bench",
            "benchmark",
        )
        .service(service, registry)
        .now(Duration::from_secs(15 * 86_400))
        .build()
}

/// The gateway's API state over `store`, with the embedded configuration,
/// development certificates made in `dir`, every registry paused (so no
/// dispatching competes with what is measured) and `clients`.
pub(crate) fn paused_gateway(
    dir: &std::path::Path,
    store: std::sync::Arc<dyn crate::store::QueueStore>,
    clients: crate::api::Clients,
) -> Result<crate::api::AppState, String> {
    use std::sync::Arc;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let certs = dir.join("certs");
    crate::pki::init_dev(&certs, true).map_err(|e| err(&e))?;
    let text = include_str!("../../config/gateway.toml")
        .replace("certs/dev", &certs.display().to_string());
    let mut cfg: crate::config::GatewayConfig =
        crate::config::parse(&text, "embedded gateway.toml", std::iter::empty())
            .map_err(|e| err(&e))?;
    for r in cfg.registries.values_mut() {
        r.paused = true;
    }
    let exchange = Arc::new(
        crate::exchange::Exchange::new(&cfg, &crate::xml::schema::default_dir())
            .map_err(|e| err(&e))?,
    );
    let cipher = Arc::new(
        crate::store::crypt::DocumentCipher::from_hex(
            &crate::store::crypt::DocumentCipher::generate_hex().map_err(|e| err(&e))?,
        )
        .map_err(|e| err(&e))?,
    );
    let dispatcher = crate::dispatch::Dispatcher::new(
        &cfg,
        store.clone(),
        cipher.clone(),
        exchange,
        crate::delivery::CaseFolders::new(dir.join("cases")),
    );
    Ok(crate::api::AppState::new(
        &cfg, store, dispatcher, cipher, clients,
    ))
}
