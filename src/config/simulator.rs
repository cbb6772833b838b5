//! The registry simulator's configuration (`config/simulator.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::gateway::default_max_body;
use super::{duration, load, ConfigError, MaintenanceWindow, Member};

/// One registry as the simulator serves it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRegistry {
    /// Port on `listen`; 0 picks a free one (printed at start).
    pub port: u16,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub sign_cert: PathBuf,
    pub sign_key: PathBuf,
    pub member: Member,
    /// Scheduled maintenance: during a window every request gets a signed
    /// `jum:Maintenance` fault.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceWindow>,
}

/// The X-Road security-server front (`[x_road]`): one HTTPS listener that
/// speaks X-Road message protocol 4.0 to the gateway on behalf of every
/// simulated registry, as a municipality's client security server would.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimXRoad {
    /// Port on `listen`; 0 picks a free one (printed at start).
    pub port: u16,
    /// The security server's internal TLS certificate and key (what the
    /// gateway's `tls_ca` for an X-Road registry trusts).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Clients allowed to call the registries' services; empty: any
    /// client. Another gets `Server.ServerProxy.AccessDenied`.
    #[serde(default)]
    pub clients: Vec<Member>,
    /// How long after an answer the security server timestamps its
    /// signature: until then `GET /asic` answers 404 (unless `force`).
    #[serde(default = "default_asic_delay", with = "duration")]
    pub asic_delay: Duration,
}

fn default_asic_delay() -> Duration {
    Duration::from_secs(10)
}

/// `config/simulator.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Plain-HTTP control endpoint (faults, what was seen); loopback only.
    #[serde(default = "default_control")]
    pub control: String,
    /// CA bundle for client TLS certificates and request signatures.
    pub client_ca: PathBuf,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Citizens in the synthetic population.
    #[serde(default = "default_population")]
    pub population: usize,
    /// Fault specification applied at start (see `jumgw simulate --help`).
    #[serde(default)]
    pub faults: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Appends the id of every request to this file as it arrives
    /// (`<id> request arrived` or `<id> poll arrived`) and as it is answered
    /// (`<id> request` or `<id> poll`), a line each: a record of what the
    /// registry was asked that outlives the process running it.
    #[serde(default)]
    pub served_log: Option<PathBuf>,
    pub registries: BTreeMap<String, SimRegistry>,
    /// The development CA's certificate and key: with both, the control
    /// endpoint serves OCSP (`POST /ocsp`) and a CRL (`GET /ca.crl`) for
    /// it, and the `revoked` fault revokes a registry's signer.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
    /// The X-Road security-server front; off unless set.
    #[serde(default)]
    pub x_road: Option<SimXRoad>,
}

fn default_listen() -> String {
    "127.0.0.1".into()
}
fn default_control() -> String {
    "127.0.0.1:9440".into()
}
fn default_seed() -> u64 {
    20_261_125
}
fn default_population() -> usize {
    500
}

impl SimulatorConfig {
    pub fn load(path: &Path) -> Result<SimulatorConfig, ConfigError> {
        let c: SimulatorConfig = load(path)?;
        let origin = path.display().to_string();
        for (name, r) in &c.registries {
            for (i, w) in r.maintenance.iter().enumerate() {
                w.window().map_err(|message| ConfigError::Invalid {
                    path: origin.clone(),
                    key: format!("registries.{name}.maintenance[{i}].cron"),
                    message,
                })?;
            }
        }
        for name in c.registries.keys() {
            if !super::REGISTRIES.contains(&name.as_str()) {
                return Err(ConfigError::Invalid {
                    path: origin,
                    key: format!("registries.{name}"),
                    message: format!("the simulator knows {}", super::REGISTRIES.join(", ")),
                });
            }
        }
        Ok(c)
    }
}
