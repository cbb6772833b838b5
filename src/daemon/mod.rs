//! `jumgw serve`: wires the store, exchange, dispatcher, delivery, alerts
//! and API together, and in `--demo` mode also development certificates
//! and the embedded registry simulator, so that nothing needs setting up.
//! Under systemd it says when it is ready (the store open, the API
//! listening) and pings the watchdog while the store answers; SIGHUP
//! re-reads the configuration (`reload.rs`). Shuts down gracefully on
//! SIGTERM/SIGINT: stops taking requests, lets attempts in flight finish and
//! be recorded, flushes the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{self, AppState, Client, Clients};
#[cfg(feature = "simulator")]
use crate::config::SimulatorConfig;
use crate::config::{self, GatewayConfig};
use crate::delivery::CaseFolders;
use crate::dispatch::Dispatcher;
use crate::exchange::Exchange;
use crate::store::QueueStore;

pub mod check;
pub mod jobs;
pub mod logs;
mod reload;
pub mod signed;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Exchange(#[from] crate::exchange::ExchangeError),
    #[cfg(feature = "simulator")]
    #[error("{0}")]
    Sim(#[from] crate::sim::SimError),
    #[error("serve --demo runs the built-in registry simulator, which this build of jumgw leaves out (it was built without the `simulator` feature, e.g. with --no-default-features). Run with --config and real registries, or use a build with the default features")]
    NoSimulator,
    #[error("development certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("scheduler: {0}")]
    Jobs(String),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Arg(String),
    #[error("{0}")]
    Webhooks(String),
    #[error("{0}")]
    Evidence(String),
    #[error("{0}")]
    Alerts(String),
    #[error("case folders: {0}")]
    Cases(String),
    #[error("API TLS: {0}")]
    Tls(#[from] crate::pki::tls::TlsError),
}

pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub demo: bool,
    pub data_dir: PathBuf,
    pub listen: String,
    /// Faults for the embedded simulator (demo only).
    pub sim_faults: Option<String>,
    /// Where the embedded simulator logs the requests it answered (demo only).
    pub sim_log: Option<PathBuf>,
    pub schemas: PathBuf,
    /// `--store`: `sled` or a PostgreSQL URL, over the configuration's.
    pub store: Option<String>,
}

/// The configuration `serve` reads without `--config`.
pub const DEFAULT_CONFIG: &str = "config/gateway.toml";

pub const DEMO_BACKOFFICE_TOKEN: &str = "demo-backoffice";
pub const DEMO_ADMIN_TOKEN: &str = "demo-admin";

#[cfg(feature = "simulator")]
const GATEWAY_TOML: &str = include_str!("../../config/gateway.toml");
#[cfg(feature = "simulator")]
const SIMULATOR_TOML: &str = include_str!("../../config/simulator.toml");

#[cfg(feature = "simulator")]
fn demo_configs(
    certs: &Path,
    faults: Option<String>,
) -> Result<(GatewayConfig, SimulatorConfig), DaemonError> {
    let c = certs.display().to_string();
    let mut sim: SimulatorConfig = config::parse(
        &SIMULATOR_TOML.replace("certs/dev", &c),
        "embedded simulator.toml",
        // JUMGW_* overrides address the gateway's configuration; the
        // embedded simulator is configured by --sim-faults only.
        std::iter::empty(),
    )?;
    sim.control = "127.0.0.1:0".into();
    for r in sim.registries.values_mut() {
        r.port = 0;
    }
    if let Some(f) = faults {
        sim.faults = f;
    }
    let gw: GatewayConfig = config::parse(
        &GATEWAY_TOML.replace("certs/dev", &c),
        "embedded gateway.toml",
        std::env::vars(),
    )?;
    Ok((gw, sim))
}

fn clients(cfg: &GatewayConfig, demo: bool) -> Clients {
    let mut c: Clients = cfg
        .clients
        .iter()
        .map(|(name, k)| {
            (
                k.token_sha256.to_lowercase(),
                Client {
                    name: name.clone(),
                    // checked when the configuration was loaded
                    role: api::Role::parse(&k.role).unwrap_or_default(),
                    services: k.services.clone(),
                    rate_per_s: k.rate_per_s,
                    tls_subject: k.tls_subject.clone(),
                },
            )
        })
        .collect();
    if demo {
        c.insert(
            api::token_hash(DEMO_BACKOFFICE_TOKEN),
            Client::unlimited("demo-backoffice", false),
        );
        c.insert(
            api::token_hash(DEMO_ADMIN_TOKEN),
            Client::unlimited("demo-admin", true),
        );
    }
    c
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `--demo`: development certificates, the embedded configuration, and the
/// registry simulator on free loopback ports (kept running while the
/// returned guard lives).
#[cfg(feature = "simulator")]
async fn demo(
    opts: &ServeOptions,
) -> Result<(GatewayConfig, Box<dyn std::any::Any + Send>), DaemonError> {
    let certs = opts.data_dir.join("certs");
    if !certs.join(crate::pki::files::CA).exists() {
        crate::pki::init_dev(&certs, false)?;
        logs::say(&format!(
            "generated development certificates in {}",
            certs.display()
        ));
    }
    let (mut gw, mut sim_cfg) = demo_configs(&certs, opts.sim_faults.clone())?;
    sim_cfg.served_log = opts.sim_log.clone();
    // The X-Road front, for a registry set to `protocol = "x-road"` (e.g.
    // JUMGW_REGISTRIES__CADASTRE__PROTOCOL=x-road): its internal TLS
    // certificate is one the development CA issued for loopback, which
    // the registry's `tls_ca` already trusts.
    sim_cfg.x_road = Some(crate::config::SimXRoad {
        port: 0,
        tls_cert: certs.join("cadastre-tls.pem"),
        tls_key: certs.join("cadastre-tls.key"),
        clients: vec![gw.gateway.client.clone()],
        asic_delay: std::time::Duration::from_secs(10),
    });
    let sim = crate::sim::start(&sim_cfg).await?;
    for (name, r) in gw.registries.iter_mut() {
        match (r.protocol, sim.x_road) {
            (crate::config::RegistryProtocol::XRoad, Some(a)) => r.url = format!("https://{a}/"),
            _ => {
                if let Some(a) = sim.addrs.get(name) {
                    r.url = format!("https://{a}/");
                }
            }
        }
        // The development CA answers on the simulator's control endpoint,
        // not at the fixed address its certificates name.
        r.ocsp_url
            .get_or_insert_with(|| format!("http://{}/ocsp", sim.control));
        r.crl
            .get_or_insert_with(|| format!("http://{}/ca.crl", sim.control));
    }
    // And so does its time-stamping authority.
    gw.evidence.tsa_url = Some(format!("http://{}/tsa", sim.control));
    logs::say(&format!(
        "embedded registry simulator: control on http://{}/",
        sim.control
    ));
    if let Some(a) = sim.x_road {
        logs::say(&format!("embedded X-Road security server on https://{a}/"));
    }
    gw.validate("embedded gateway.toml")?;
    Ok((gw, Box::new(sim)))
}

#[cfg(not(feature = "simulator"))]
async fn demo(
    _opts: &ServeOptions,
) -> Result<(GatewayConfig, Box<dyn std::any::Any + Send>), DaemonError> {
    Err(DaemonError::NoSimulator)
}

pub async fn serve(opts: ServeOptions) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&opts.data_dir)?;
    let config_path = opts
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let mut _sim = None;
    let mut cfg = if opts.demo {
        let (gw, sim) = demo(&opts).await?;
        _sim = Some(sim);
        gw
    } else {
        GatewayConfig::load(&config_path)?
    };

    if let Some(s) = &opts.store {
        cfg.store = config::StoreConfig::from_arg(s, &cfg.store).map_err(DaemonError::Arg)?;
    }
    let store = crate::store::open_configured(&cfg.store, &opts.data_dir).await?;
    // Relative key paths are inside the data folder (an absolute one stays).
    let key_file = opts.data_dir.join(&cfg.gateway.document_key_file);
    let cipher =
        crate::store::crypt::DocumentCipher::from_file(&key_file, opts.demo).map_err(|e| {
            DaemonError::Key(format!(
                "{e} (make one with `openssl rand -hex 32 > {}`)",
                key_file.display()
            ))
        })?;
    cipher
        .check(&*store)
        .await
        .map_err(|e| DaemonError::Key(e.to_string()))?;
    let cipher = Arc::new(cipher);
    let exchange = Arc::new(Exchange::new(&cfg, &opts.schemas)?);
    let revocation = exchange.revocation().clone();
    let cases = CaseFolders::configured(&cfg, &opts.data_dir).map_err(DaemonError::Cases)?;
    let dyn_store: Arc<dyn QueueStore> = store.clone();
    if dyn_store.shares_limits() {
        logs::say("store: PostgreSQL, shared with every instance on it");
    }
    let audit_key_file = opts.data_dir.join(&cfg.gateway.audit_key_file);
    let audit_key = Arc::new(
        crate::audit::AuditKey::from_file(&audit_key_file, opts.demo).map_err(|e| {
            DaemonError::Key(format!(
                "{e} (make one with `openssl rand -hex 32 > {}`)",
                audit_key_file.display()
            ))
        })?,
    );
    dyn_store.set_audit_rule(crate::audit::rule(audit_key.clone()));
    let hook_notify = Arc::new(tokio::sync::Notify::new());
    // One rule raises, in the change's own transaction, the clients'
    // webhook events and the operators' alerts about requests.
    let hooks = crate::delivery::webhook::event_rule(&cfg, hook_notify.clone());
    let alerts = crate::alerts::Alerts::configured(&cfg.alerts, dyn_store.clone())
        .map_err(|e| DaemonError::Alerts(e.to_string()))?;
    dyn_store.set_event_rule(if alerts.is_some() {
        let webhook_rule = hooks.rule.clone();
        crate::store::EventRule {
            rule: Arc::new(move |old, new| {
                let mut v = webhook_rule(old, new);
                v.extend(crate::alerts::request_alerts(old, new));
                v
            }),
            notify: hooks.notify,
        }
    } else {
        hooks
    });
    let webhooks = crate::delivery::webhook::Webhooks::new(&cfg, dyn_store.clone(), hook_notify)
        .map_err(|e| DaemonError::Webhooks(e.to_string()))?;
    let dispatcher = Dispatcher::new(
        &cfg,
        dyn_store.clone(),
        cipher.clone(),
        exchange,
        cases.clone(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stamper = crate::evidence::stamper::Stamper::new(
        &cfg,
        dyn_store.clone(),
        cipher.clone(),
        crate::audit::Checkpoints {
            path: opts.data_dir.join("audit").join("checkpoints.log"),
        },
    )
    .map_err(|e| DaemonError::Evidence(e.to_string()))?;
    let stamp_task = stamper.map(|s| tokio::spawn(s.run(stop_rx.clone())));
    // X-Road registries: their security servers' signed documents, with
    // or without a TSA.
    let signed_task = crate::evidence::signed::SignedDocs::new(
        &cfg,
        dyn_store.clone(),
        cipher.clone(),
        Arc::new(signed::SecurityServers(dispatcher.clone())),
    )
    .map(|s| tokio::spawn(s.run(stop_rx.clone())));
    let dispatch_task = tokio::spawn(dispatcher.clone().run(stop_rx.clone()));
    // X-Road: what each security server allows of our catalogue, asked at
    // start and hourly, beside the sending (which never waits for it).
    let methods_task = (!dispatcher.x_road_registries().is_empty()).then(|| {
        let d = dispatcher.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                d.report_methods().await;
                tokio::select! {
                    _ = tokio::time::sleep(crate::dispatch::METHODS_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    });
    let webhook_task = tokio::spawn(webhooks.run(stop_rx.clone()));
    let mut jobs = jobs::start(dyn_store.clone(), &cfg, &opts.data_dir)
        .await
        .map_err(|e| DaemonError::Jobs(e.to_string()))?;

    let dispatcher_handle = dispatcher.clone();
    let store_for_watchdog = dyn_store.clone();
    let (store_for_dossiers, cipher_for_dossiers, audit_key_for_dossiers) =
        (dyn_store.clone(), cipher.clone(), audit_key.clone());
    let state = AppState::new(
        &cfg,
        dyn_store,
        dispatcher,
        cipher,
        clients(&cfg, opts.demo),
    )
    .with_dossiers(
        crate::evidence::dossier::Dossiers::configured(
            &cfg,
            store_for_dossiers,
            cipher_for_dossiers,
            audit_key_for_dossiers,
            &opts.data_dir,
        )
        .map_err(|e| DaemonError::Evidence(e.to_string()))?,
    )
    .with_metrics(crate::metrics::install())
    .with_audit(
        audit_key,
        crate::audit::Checkpoints {
            path: opts.data_dir.join("audit").join("checkpoints.log"),
        },
    );
    let clients_handle = state.clients.clone();
    let rates_handle = state.limits.clone();
    let look = crate::alerts::watch::look(state.ops());
    let watch_task = tokio::spawn(
        crate::alerts::watch::Watch::new(
            &cfg.alerts,
            store_for_watchdog.clone(),
            look,
            opts.data_dir.clone(),
            crate::audit::Checkpoints {
                path: opts.data_dir.join("audit").join("checkpoints.log"),
            },
            alerts.is_some(),
        )
        .run(stop_rx.clone()),
    );
    let alerts_task = alerts.map(|a| tokio::spawn(a.run(stop_rx.clone())));
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: opts.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr()?;
    let tls = match &cfg.gateway.api_tls {
        Some(t) => {
            // The back-office clients' certificates: revoked ones refused
            // at the handshake, with the registries' checker.
            let gate = match &t.client_ca {
                Some(ca) => Some(crate::pki::revocation::tls::Gate::new(
                    revocation.clone(),
                    crate::pki::tls::client_anchors(ca)?,
                    t.revocation,
                    crate::pki::revocation::Sources {
                        ocsp_url: t.ocsp_url.clone(),
                        crl: t.crl.clone(),
                        ..Default::default()
                    },
                )),
                None => None,
            };
            Some(crate::pki::tls::server_config_checked(
                &t.cert,
                &t.key,
                t.client_ca.as_deref(),
                if t.require_client_cert {
                    crate::pki::tls::ClientAuth::Required
                } else {
                    crate::pki::tls::ClientAuth::Optional
                },
                gate,
                cfg.gateway.min_rsa_bits,
            )?)
        }
        None => None,
    };
    logs::say(&format!(
        "jumgw listening on {}://{addr}/ (data in {}, cases in {})",
        if tls.is_some() { "https" } else { "http" },
        opts.data_dir.display(),
        cases.root.display()
    ));
    if opts.demo {
        logs::say(&format!(
            "demo tokens: back-office {DEMO_BACKOFFICE_TOKEN}, admin {DEMO_ADMIN_TOKEN}"
        ));
    }
    // The store is open and the API listens: systemd (Type=notify) may
    // start what waits for us. Outside systemd there is no socket and
    // nothing is sent.
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    let watchdog = watchdog(store_for_watchdog.clone());
    let reloads = tokio::spawn(reload::on_hangup(reload::Live {
        path: if opts.demo {
            None
        } else {
            Some(config_path.clone())
        },
        schemas: opts.schemas.clone(),
        running: cfg.clone(),
        clients: clients_handle,
        rates: rates_handle,
        dispatcher: dispatcher_handle,
        demo: opts.demo,
    }));
    // One accept loop for HTTP and HTTPS, with a connection limit under
    // the file limit and timeouts for clients that send nothing.
    crate::pki::tls::serve(
        listener,
        tls,
        api::app(state),
        shutdown_signal(),
        Arc::new(|_| crate::metrics::api_tls_refused()),
        crate::pki::tls::ServeLimits::for_this_process(cfg.gateway.api_header_timeout).configured(
            cfg.gateway.api_max_connections,
            cfg.gateway.api_ping_interval,
        ),
    )
    .await;
    tracing::info!("shutting down: finishing attempts in flight");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    reloads.abort();
    if let Some(t) = methods_task {
        t.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = jobs.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = dispatch_task.await;
    let _ = webhook_task.await;
    // The watch only raises alerts (each a transaction of its own): it
    // need not finish a round, which may be an hour's audit walk.
    watch_task.abort();
    if let Some(t) = alerts_task {
        let _ = t.await;
    }
    if let Some(t) = stamp_task {
        let _ = t.await;
    }
    if let Some(t) = signed_task {
        let _ = t.await;
    }
    store.close().await?;
    Ok(())
}

/// Pings systemd's watchdog (when the unit has `WatchdogSec`) at half its
/// period, each time the store has answered: a daemon whose runtime or
/// store hangs stops pinging and is restarted.
fn watchdog(store: Arc<dyn QueueStore>) -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tick.tick().await;
            let answered = tokio::time::timeout(period / 2, store.next_due())
                .await
                .is_ok_and(|r| r.is_ok());
            if answered {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("the store did not answer in time: the watchdog is not pinged");
            }
        }
    }))
}

/// The `[log]` section, read before anything else so that even the
/// start-up is logged as asked; a file that does not parse is left for
/// `serve` to report.
pub fn log_settings(config: Option<&Path>, demo: bool) -> config::LogConfig {
    #[derive(serde::Deserialize, Default)]
    struct LogOnly {
        #[serde(default)]
        log: config::LogConfig,
    }
    if demo {
        return config::LogConfig::default();
    }
    let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
    config::load::<LogOnly>(path).unwrap_or_default().log
}

/// Threads for the store's blocking calls (see [`runtime`]).
const BLOCKING_THREADS: usize = 16;

/// The runtime `jumgw` runs on (the daemon, and every command that opens
/// a store).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The blocking threads run the store's work (sled transactions,
        // reads, case-folder syncs), each a short call. tokio's default
        // of 512 let every concurrent call have a thread of its own; each
        // thread then brought its own allocator heap, faulted in fresh
        // pages and was switched to: 15-20 % of an exchange's CPU. A few
        // threads, reused, do the same work warm.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}
