//! SIGHUP (`systemctl reload jumgw`): the configuration file read again,
//! and what can change under a running gateway put in place — the API's
//! clients (tokens, roles, services, rates, certificate subjects) and the
//! registries' settings: connections (URL, timeouts, trust, signer pins,
//! revocation sources), limits (in flight, rate, breaker) and maintenance
//! windows. Queued work is untouched: the store, the dispatcher and the
//! attempts under way go on; an attempt finishes on the connection it
//! began with, and a lowered in-flight ceiling takes hold as attempts end. A file that does not load, or whose registries cannot be
//! reached with it, is refused whole and the configuration in force kept.
//! What only a restart can change is named in the log line, not applied.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::api::SharedClients;
use crate::config::GatewayConfig;
use crate::dispatch::Dispatcher;
use crate::exchange::Exchange;

/// What a reload works on.
pub struct Live {
    /// The file; None with --demo (the embedded configuration).
    pub path: Option<PathBuf>,
    pub schemas: PathBuf,
    /// The configuration in force.
    pub running: GatewayConfig,
    pub clients: SharedClients,
    /// The API's per-client rate buckets: a changed client's starts anew
    /// at its new rate.
    pub rates: Arc<std::sync::Mutex<BTreeMap<String, crate::limits::TokenBucket>>>,
    pub dispatcher: Arc<Dispatcher>,
    pub demo: bool,
}

/// Waits for SIGHUP and reloads, for as long as the daemon runs.
pub async fn on_hangup(mut live: Live) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let Some(path) = live.path.clone() else {
            tracing::warn!("SIGHUP: nothing to re-read, --demo runs on the embedded configuration");
            continue;
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        match reload(&mut live, &path) {
            Ok(said) => tracing::info!(file = %path.display(), "configuration re-read: {said}"),
            Err(why) => {
                tracing::error!(file = %path.display(), "configuration refused, the one in force is kept: {why}")
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// Reads `path`, puts in place what may change, says what changed.
fn reload(live: &mut Live, path: &std::path::Path) -> Result<String, String> {
    let new = GatewayConfig::load(path).map_err(|e| e.to_string())?;
    let old_names: Vec<&String> = live.running.registries.keys().collect();
    let new_names: Vec<&String> = new.registries.keys().collect();
    if old_names != new_names {
        return Err(format!(
            "the registries are {} in force and {} in the file: adding or removing one needs a restart",
            names(&old_names),
            names(&new_names)
        ));
    }
    // What a restart alone changes: every other section, and the limits
    // the dispatcher's gates were built with.
    let before = flat(&live.running);
    let after = flat(&new);
    let mut at_restart = Vec::new();
    let mut clients: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut registries: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for k in keys {
        if before.get(k) == after.get(k) {
            continue;
        }
        let parts: Vec<&str> = k.splitn(3, '.').collect();
        match parts.as_slice() {
            ["clients", name, rest] => {
                clients
                    .entry((*name).to_owned())
                    .or_default()
                    .insert(rest.split(['.', '[']).next().unwrap_or(rest).to_owned());
            }
            ["registries", name, rest] => {
                let key = rest.split(['.', '[']).next().unwrap_or(rest);
                if key == "paused" {
                    // How a registry starts; an administrator's pause is
                    // the store's, and stays as it is.
                    at_restart.push(format!("registries.{name}.{key}"));
                } else {
                    registries
                        .entry((*name).to_owned())
                        .or_default()
                        .insert(key.to_owned());
                }
            }
            _ => at_restart.push(k.split('[').next().unwrap_or(k).to_owned()),
        }
    }
    let mut merged = live.running.clone();
    merged.clients = new.clients.clone();
    for (name, r) in &new.registries {
        let Some(m) = merged.registries.get_mut(name) else {
            continue;
        };
        let mut taken = r.clone();
        taken.paused = m.paused;
        *m = taken;
    }
    if !registries.is_empty() {
        // Built first: a registry that cannot be reached with the new
        // settings refuses the whole file before anything changes.
        let exchange = Exchange::new(&merged, &live.schemas).map_err(|e| e.to_string())?;
        live.dispatcher.replace_exchange(Arc::new(exchange));
        for name in registries.keys() {
            if let Some(r) = merged.registries.get(name) {
                live.dispatcher.reconfigure_gate(name, r);
            }
        }
    }
    if !clients.is_empty() {
        *crate::sync::write(&live.clients) = Arc::new(super::clients(&merged, live.demo));
        let mut rates = crate::sync::lock(&live.rates);
        for name in clients.keys() {
            rates.remove(name);
        }
    }
    live.running = merged;
    let mut said = Vec::new();
    let listed = |keys: &BTreeSet<String>| keys.iter().cloned().collect::<Vec<_>>().join(", ");
    for (name, keys) in &clients {
        said.push(
            match (
                live_had(&before, "clients", name),
                live_had(&after, "clients", name),
            ) {
                (false, true) => format!("client {name} added"),
                (true, false) => format!("client {name} removed"),
                _ => format!("client {name}: {} changed", listed(keys)),
            },
        );
    }
    // Registries are neither added nor removed here (refused above).
    for (name, keys) in &registries {
        said.push(format!("registry {name}: {} changed", listed(keys)));
    }
    if said.is_empty() {
        said.push("no client or registry changed".into());
    }
    at_restart.sort();
    at_restart.dedup();
    if !at_restart.is_empty() {
        said.push(format!(
            "not applied until a restart: {}",
            at_restart.join(", ")
        ));
    }
    Ok(said.join("; "))
}

fn names(v: &[&String]) -> String {
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

fn live_had(flat: &BTreeMap<String, Value>, section: &str, name: &str) -> bool {
    let prefix = format!("{section}.{name}.");
    flat.keys().any(|k| k.starts_with(&prefix))
}

/// Every leaf of the configuration by its dotted key.
fn flat(cfg: &GatewayConfig) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(cfg) {
        walk(&v, String::new(), &mut out);
    }
    out
}

fn walk(v: &Value, at: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let key = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                walk(x, key, out);
            }
        }
        other => {
            out.insert(at, other.clone());
        }
    }
}
