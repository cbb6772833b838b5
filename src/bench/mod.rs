//! Load generators and micro-benchmarks behind `jumgw bench`. Every figure
//! is reported beside a baseline measured in the same run on the same
//! machine, because these machines are shared and absolute timings drift.

pub mod e2e;
pub mod enqueue;
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
