//! The `jumgw` command line: argument parsing and dispatch only. Each
//! command calls into the module that owns the work.
//!
//! Exit codes: 0 success; 1 the input was examined and is invalid (a bad
//! check digit, a signature that does not verify, a schema violation);
//! 2 the command could not run (unreadable file, bad key, usage error).

mod admin;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ids;
use crate::xml::{self, c14n, Limits};

#[derive(Parser, Debug)]
#[command(
    name = "jumgw",
    version,
    about = "Gateway between a municipal one-stop shop and the state registries",
    long_about = "jumgw asks the cadastre, the civil registry and the tax administration for the \
data a case needs, by signed XML over mutual TLS, queues every request durably and delivers the \
signed answers into the case.\n\nExit codes: 0 success, 1 invalid input (bad identifier, \
signature or schema), 2 the command could not run."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway: back-office API, dispatcher, delivery into case folders.
    Serve {
        /// Gateway configuration (ignored with --demo, which uses the embedded one).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Zero set-up: development certificates (generated if missing) and the
        /// embedded registry simulator on free loopback ports.
        #[arg(long)]
        demo: bool,
        /// Where the store, the case folders (and with --demo the certificates) live.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Faults for the embedded simulator (with --demo), as for `jumgw simulate --faults`.
        #[arg(long, requires = "demo")]
        sim_faults: Option<String>,
        /// Folder with the schemas (default: $JUMGW_SCHEMAS or ./schemas).
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// The queue store: `sled` (in the data folder) or a PostgreSQL URL,
        /// postgres://user@host:port/db, shared by every instance given it.
        /// Overrides [store] of the configuration.
        #[arg(long)]
        store: Option<String>,
    },
    /// File a request through a running gateway's API (a client for operators and an example).
    #[command(
        long_about = "File one request through the back-office API of a running gateway, \
optionally wait until it is delivered and save the signed document.\n\nExit codes: 0 accepted \
(or, with --wait, delivered); 1 refused by the API (the problem is printed); 2 the command could \
not run; 5 the request ended dead or cancelled."
    )]
    Request(Box<RequestArgs>),
    /// The queue of a running gateway (admin token): list, show, retry, cancel, stats.
    Queue {
        #[command(subcommand)]
        command: admin::QueueCommand,
    },
    /// The registries of a running gateway (admin token): state, pause, resume.
    Registries {
        #[command(subcommand)]
        command: admin::RegistriesCommand,
    },
    /// The audit trail of a running gateway (admin token): verify, who used a person's data.
    Audit {
        #[command(subcommand)]
        command: admin::AuditCommand,
    },
    /// Back up and restore the store (the daemon must not be running).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Check Serbian identifiers (JMBG, PIB, MB, KO, parcel numbers).
    Ids {
        #[command(subcommand)]
        command: IdsCommand,
    },
    /// Canonicalise, sign, verify and validate XML documents.
    Xml {
        #[command(subcommand)]
        command: XmlCommand,
    },
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    #[cfg(feature = "simulator")]
    /// Run the registry simulator (civil, cadastre, tax) over HTTPS with client certificates.
    #[command(
        long_about = "Run the registry simulator: the server side of the protocol for the three \
registries, over HTTPS with client certificates required, with synthetic data and fault injection.\n\n\
Faults: comma-separated SCOPE:FAULT[=WHEN]; SCOPE is *, a registry or a service; WHEN is a rate \
0..1 or next:N. Faults: 500 503 429 reset drip truncate oversize malformed invalid badsig untrusted \
badhash unavailable maintenance async lost notfound; also latency=50ms or latency=20ms..200ms and \
async-delay=2s. Example: \"cadastre:503=0.1, tax:async=next:2\".\n\nA control endpoint (plain HTTP, \
loopback) serves GET/PUT/POST/DELETE /faults, GET /seen, POST /reset."
    )]
    Simulate {
        #[arg(long, default_value = "config/simulator.toml")]
        config: PathBuf,
        /// Address to listen on (the ports come from the configuration).
        #[arg(long)]
        listen: Option<String>,
        /// Faults to inject, replacing those of the configuration.
        #[arg(long)]
        faults: Option<String>,
    },
    /// One synchronous exchange with a registry, for diagnosis.
    #[command(
        long_about = "Perform one attempt with the gateway's configuration and write the \
registry's signed answer, byte for byte, to --out or standard output.\n\nExit codes: 0 a document; \
2 the command could not run; 3 accepted (answer later, ticket printed); 4 retryable failure; \
5 permanent failure; 6 security failure. The reason is printed on standard error."
    )]
    Exchange(Box<ExchangeArgs>),
    /// Measure performance against baselines measured in the same run.
    #[cfg(feature = "bench")]
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

/// The subject of a request, as flags (see IDENTIFIERS.md).
#[derive(Args, Debug)]
struct SubjectArgs {
    #[arg(long)]
    jmbg: Option<String>,
    #[arg(long)]
    pib: Option<String>,
    #[arg(long)]
    mb: Option<String>,
    /// Cadastral municipality code, with --sheet, --parcel, --jmbg or --mb.
    #[arg(long)]
    ko: Option<String>,
    #[arg(long)]
    sheet: Option<String>,
    #[arg(long)]
    parcel: Option<String>,
}

impl SubjectArgs {
    /// The flags given, by field name.
    fn fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("jmbg", &self.jmbg),
            ("pib", &self.pib),
            ("mb", &self.mb),
            ("ko", &self.ko),
            ("sheet", &self.sheet),
            ("parcel", &self.parcel),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Args, Debug)]
struct RequestArgs {
    /// Service, e.g. cadastre.property-sheet (GET /api/v1/services lists them).
    #[arg(long)]
    service: String,
    #[command(flatten)]
    subject: SubjectArgs,
    /// Case number, e.g. 351-12/2026-IV.
    #[arg(long)]
    case: String,
    #[arg(long)]
    legal_basis: String,
    #[arg(long)]
    official: String,
    /// Why the case needs the data (goes into the envelope and the audit trail).
    #[arg(long)]
    purpose: String,
    /// Idempotency-Key, so that repeating the command files one request.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait until it is delivered (or dead), printing its progress.
    #[arg(long)]
    wait: bool,
    /// With --wait: save the signed document here.
    #[arg(long, short, requires = "wait")]
    out: Option<PathBuf>,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token (default: $JUMGW_TOKEN).
    #[arg(long, env = "JUMGW_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Write everything (requests, attempts, documents) as JSON lines.
    Export {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Ask a running daemon instead (its admin API), e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// Admin token for --url (default: $JUMGW_TOKEN).
        #[arg(long, env = "JUMGW_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Read this store instead of the data folder's sled: a PostgreSQL
        /// URL, postgres://user@host:port/db.
        #[arg(long)]
        store: Option<String>,
    },
    /// Restore an export into an empty store.
    Import {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The export (JSON lines); `-` reads standard input.
        file: String,
        /// Restore into this store instead of the data folder's sled: a
        /// PostgreSQL URL, postgres://user@host:port/db.
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Generate the development PKI: a CA, the gateway's and each registry's TLS and signing certificates.
    Init {
        #[arg(long, default_value = "certs/dev")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct ExchangeArgs {
    /// Registry to ask (civil, cadastre, tax); must be the service's.
    #[arg(long)]
    registry: String,
    /// Service, e.g. civil.birth-extract (see config/gateway.toml).
    #[arg(long)]
    service: String,
    #[command(flatten)]
    subject: SubjectArgs,
    /// Case number.
    #[arg(long, default_value = "000-0/0000-DIAG")]
    case: String,
    /// The official asking.
    #[arg(long, default_value = "diagnosis")]
    official: String,
    #[arg(long, default_value = "Zakon o opštem upravnom postupku, čl. 103")]
    legal_basis: String,
    #[arg(long, default_value = "diagnosis by an administrator")]
    purpose: String,
    /// Poll this ticket of an earlier accepted request (use --id of that request too).
    #[arg(long)]
    ticket: Option<String>,
    /// Request id (ULID); default: a new one.
    #[arg(long)]
    id: Option<String>,
    /// Write the answer here instead of standard output.
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "config/gateway.toml")]
    config: PathBuf,
    /// Folder with the schemas (default: $JUMGW_SCHEMAS or ./schemas).
    #[arg(long)]
    schemas: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum IdsCommand {
    /// Validate one identifier and print its parts; exit 1 with the reason if invalid.
    Check {
        /// What kind of identifier VALUE is.
        kind: IdKind,
        /// The value, e.g. 0512981717776 (JMBG) or 1234/5 (parcel).
        value: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum IdKind {
    /// Personal number, 13 digits.
    Jmbg,
    /// Tax identification number, 9 digits.
    Pib,
    /// Registration number of a legal entity, 8 digits.
    Mb,
    /// Cadastral municipality code, 6 digits.
    Ko,
    /// Municipality code, 5 digits.
    Municipality,
    /// Parcel number broj[/podbroj], optionally prefixed with the KO: 803472:1234/5.
    Parcel,
    /// Property sheet number.
    Sheet,
}

#[derive(Args, Debug)]
struct Input {
    /// The document; `-` or nothing reads standard input.
    #[arg(default_value = "-")]
    file: String,
    /// Largest document accepted, in bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_size: usize,
}

#[derive(Subcommand, Debug)]
enum XmlCommand {
    /// Write the canonical form of a document to standard output.
    C14n {
        /// Exclusive XML Canonicalization 1.0 (default: inclusive C14N 1.0).
        #[arg(long)]
        exclusive: bool,
        /// Keep comments.
        #[arg(long)]
        with_comments: bool,
        /// InclusiveNamespaces PrefixList for exclusive C14N, e.g. "bar #default".
        #[arg(long, requires = "exclusive")]
        prefix_list: Option<String>,
        #[command(flatten)]
        input: Input,
    },
    /// Sign a document (enveloped XML-DSig) and write it to standard output.
    Sign {
        /// PEM private key (RSA or EC P-256).
        #[arg(long)]
        key: PathBuf,
        /// PEM certificate of that key; it is embedded in the signature.
        #[arg(long)]
        cert: PathBuf,
        /// Signature algorithm; must fit the key. Default: from the key type.
        #[arg(long, value_parser = ["rsa-sha256", "ecdsa-sha256"])]
        alg: Option<String>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[command(flatten)]
        input: Input,
    },
    /// Verify an enveloped signature: exit 0 valid, 1 invalid (reason on stderr).
    Verify {
        /// PEM file with the CA certificate(s) the signer must chain to.
        #[arg(long)]
        trust: PathBuf,
        #[command(flatten)]
        input: Input,
    },
    /// Validate a document against the XSDs in schemas/: exit 0 valid, 1 invalid.
    Validate {
        /// Folder with the schemas (default: $JUMGW_SCHEMAS or ./schemas).
        #[arg(long)]
        schemas: Option<PathBuf>,
        #[command(flatten)]
        input: Input,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Durable accepts/s through the API against raw sled group commit; restart over 1M queued.
    Enqueue {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Concurrent clients (and raw sled writers).
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Queued requests for the restart measurement (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        restart_requests: u64,
    },
    /// The whole path: simulator and gateway as processes, mTLS and signatures on
    /// both sides, N requests through the API until delivered, against the crypto bound.
    E2e {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Signature algorithm of both sides: rsa-sha256 or ecdsa-sha256.
        #[arg(long, default_value = "rsa-sha256")]
        alg: String,
        /// Faults for the simulator, e.g. "*:503=0.1, *:async=0.05".
        #[arg(long, default_value = "")]
        faults: String,
        /// Requests in flight at the API (closed loop).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Offered load in requests/s (open loop); 0: as fast as accepted.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Delivery of the bench client: folder (into case folders, fsync) or pull.
        #[arg(long, default_value = "folder")]
        delivery: String,
        /// Offered loads to sweep (open loop), e.g. 200,400,800; prints JSON per point.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<f64>,
        /// With --sweep: write an SVG chart of delivered/s and p99 against offered load.
        #[arg(long, requires = "sweep")]
        chart: Option<PathBuf>,
        /// Run on PostgreSQL: a server URL, postgres://user@host:port; each
        /// measurement makes a database of its own there and drops it.
        #[arg(long)]
        store: Option<String>,
        /// Gateway instances sharing the store, behind round-robin (needs --store).
        #[arg(long, default_value_t = 1)]
        instances: usize,
        /// Measure accepts only: the registries stay paused.
        #[arg(long)]
        accept_only: bool,
        /// With --store: sled on one instance, then PostgreSQL on 1..=N
        /// instances (accepts, then the whole path), as one Markdown table
        /// with ratios to sled measured in the same run.
        #[arg(long, default_value_t = 0, requires = "store")]
        scale: usize,
    },
    /// Sign, verify and canonicalise against raw openssl and libxmlsec1/lxml.
    Xml {
        /// One JSON object on standard output instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds to spend on each measurement.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Python with lxml and xmlsec for the peer measurements
        /// (default: target/venv/bin/python if present).
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

/// Failure of a command: `Invalid` exits 1, `Failed` exits 2, `Code`
/// exits with its own code.
enum Fail {
    Invalid(String),
    Failed(String),
    Code(u8, String),
}

type CmdResult = Result<(), Fail>;

fn failed<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> Fail + '_ {
    move |e| Fail::Failed(format!("{context}: {e}"))
}

fn read_input(input: &Input) -> Result<Vec<u8>, Fail> {
    let mut buf = Vec::new();
    let res = if input.file == "-" {
        std::io::stdin()
            .take(input.max_size as u64 + 1)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(&input.file)
            .and_then(|f| f.take(input.max_size as u64 + 1).read_to_end(&mut buf))
    };
    res.map_err(failed(&input.file))?;
    if buf.len() > input.max_size {
        return Err(Fail::Invalid(format!(
            "{}: larger than the limit of {} bytes",
            input.file, input.max_size
        )));
    }
    Ok(buf)
}

fn limits(input: &Input) -> Limits {
    Limits {
        max_size: input.max_size,
        max_text_len: input.max_size,
        ..Limits::default()
    }
}

fn write_stdout(bytes: &[u8]) -> CmdResult {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(failed("standard output"))
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ids { command } => match command {
            IdsCommand::Check { kind, value } => ids_check(kind, &value),
        },
        Command::Xml { command } => xml_command(command),
        Command::Certs {
            command: CertsCommand::Init { dir, force },
        } => certs_init(&dir, force),
        #[cfg(feature = "simulator")]
        Command::Simulate {
            config,
            listen,
            faults,
        } => simulate(&config, listen, faults),
        Command::Exchange(args) => exchange(*args),
        Command::Store { command } => store_command(command),
        Command::Request(args) => request(*args),
        Command::Queue { command } => admin::queue(command),
        Command::Registries { command } => admin::registries(command),
        Command::Audit { command } => admin::audit(command),
        Command::Serve {
            config,
            demo,
            data_dir,
            listen,
            sim_faults,
            schemas,
            store,
        } => {
            init_logs();
            let opts = crate::daemon::ServeOptions {
                config,
                demo,
                data_dir,
                listen,
                sim_faults,
                schemas: schemas.unwrap_or_else(xml::schema::default_dir),
                store,
            };
            runtime().and_then(|rt| {
                rt.block_on(crate::daemon::serve(opts))
                    .map_err(|e| Fail::Failed(e.to_string()))
            })
        }
        #[cfg(feature = "bench")]
        Command::Bench { command } => match command {
            BenchCommand::Enqueue {
                json,
                seconds,
                clients,
                restart_requests,
            } => crate::bench::enqueue::run(json, seconds, clients, restart_requests)
                .map_err(Fail::Failed),
            BenchCommand::E2e {
                json,
                requests,
                alg,
                faults,
                concurrency,
                rate,
                delivery,
                sweep,
                chart,
                store,
                instances,
                accept_only,
                scale,
            } => {
                let alg = match alg.as_str() {
                    "rsa-sha256" => crate::pki::KeyKind::Rsa2048,
                    "ecdsa-sha256" => crate::pki::KeyKind::EcP256,
                    other => {
                        return finish(Err(Fail::Invalid(format!(
                            "--alg {other:?}: use rsa-sha256 or ecdsa-sha256"
                        ))))
                    }
                };
                crate::bench::e2e::run(
                    crate::bench::e2e::Options {
                        json,
                        requests,
                        alg,
                        faults,
                        concurrency,
                        rate,
                        delivery,
                        store,
                        instances,
                        accept_only,
                        scale,
                    },
                    &sweep,
                    chart.as_deref(),
                )
                .map_err(Fail::Failed)
            }
            BenchCommand::Xml {
                json,
                seconds,
                python,
            } => crate::bench::xml::run(json, seconds, python)
                .map_err(|e| Fail::Failed(e.to_string())),
        },
    };
    finish(result)
}

fn finish(result: CmdResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Invalid(m)) => {
            eprintln!("{m}");
            ExitCode::from(1)
        }
        Err(Fail::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Fail::Code(c, m)) => {
            eprintln!("{m}");
            ExitCode::from(c)
        }
    }
}

/// A problem+json answer for a terminal: title, detail, each bad field.
fn problem_text(v: &serde_json::Value) -> String {
    let mut m = format!(
        "{}: {}",
        v["title"].as_str().unwrap_or("refused"),
        v["detail"].as_str().unwrap_or("")
    );
    for e in v["errors"].as_array().into_iter().flatten() {
        m.push_str(&format!(
            "\n  {}: {}",
            e["pointer"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or("")
        ));
    }
    m
}

fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(failed("tokio runtime"))
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JUMGW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

fn request(a: RequestArgs) -> CmdResult {
    let subject: serde_json::Map<String, serde_json::Value> = a
        .subject
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    let body = serde_json::json!({
        "case": {"number": a.case, "legal_basis": a.legal_basis, "official": a.official},
        "service": a.service,
        "subject": subject,
        "purpose": a.purpose,
    });
    let base = a.url.trim_end_matches('/').to_owned();
    runtime()?.block_on(async {
        let http = reqwest::Client::new();
        let mut req = http
            .post(format!("{base}/api/v1/requests"))
            .bearer_auth(&a.token)
            .json(&body);
        if let Some(k) = &a.idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await.map_err(failed(&base))?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.map_err(failed(&base))?;
        if status.as_u16() != 202 {
            return Err(Fail::Invalid(problem_text(&v)));
        }
        let id = v["id"].as_str().unwrap_or_default().to_owned();
        println!("{id}");
        if !a.wait {
            return Ok(());
        }
        let mut last = String::new();
        let remote = admin::Remote::new(&base, &a.token);
        loop {
            let v = admin::call(
                &http,
                &remote,
                reqwest::Method::GET,
                &format!("/api/v1/requests/{id}"),
                None,
            )
            .await?;
            let state = v["state"].as_str().unwrap_or("?").to_owned();
            let line = format!(
                "{state} ({} attempts)",
                v["attempts"].as_array().map_or(0, |x| x.len())
            );
            if line != last {
                eprintln!("{id}: {line}");
                last = line;
            }
            match state.as_str() {
                "delivered" => break,
                "dead" | "cancelled" => {
                    return Err(Fail::Code(
                        5,
                        format!("{id} ended {state}: {}", v["error"].as_str().unwrap_or("")),
                    ));
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
        if let Some(out) = &a.out {
            let bytes = http
                .get(format!("{base}/api/v1/documents/{id}/content"))
                .bearer_auth(&a.token)
                .send()
                .await
                .map_err(failed(&base))?
                .bytes()
                .await
                .map_err(failed(&base))?;
            std::fs::write(out, &bytes).map_err(failed(&out.display().to_string()))?;
            eprintln!("saved the signed document to {}", out.display());
        }
        Ok(())
    })
}

/// The store a `store` command works on, and how to name it.
fn open_store(
    data_dir: &std::path::Path,
    url: Option<&str>,
) -> Result<(std::sync::Arc<dyn crate::store::QueueStore>, PathBuf), Fail> {
    let cfg = match url {
        Some(u) => {
            crate::config::StoreConfig::from_arg(u, &Default::default()).map_err(Fail::Invalid)?
        }
        None => crate::config::StoreConfig::default(),
    };
    let name = match &cfg.url {
        Some(u) => <postgres::Config as std::str::FromStr>::from_str(u)
            .map(|c| PathBuf::from(crate::store::postgres::display_url(&c)))
            .unwrap_or_else(|_| PathBuf::from("PostgreSQL")),
        None => data_dir.to_owned(),
    };
    let store =
        crate::store::open_configured(&cfg, data_dir).map_err(|e| Fail::Failed(e.to_string()))?;
    Ok((store, name))
}

fn store_command(cmd: StoreCommand) -> CmdResult {
    use crate::store::backup;
    runtime()?.block_on(async {
        let (dir, result) = match cmd {
            StoreCommand::Export {
                data_dir,
                out,
                url: Some(url),
                token,
                ..
            } => {
                let token = token.ok_or_else(|| {
                    Fail::Failed("--url needs an admin token (--token or JUMGW_TOKEN)".into())
                })?;
                let r = reqwest::Client::new()
                    .get(format!(
                        "{}/admin/v1/store/export",
                        url.trim_end_matches('/')
                    ))
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(failed(&url))?;
                if !r.status().is_success() {
                    let status = r.status();
                    return Err(Fail::Failed(format!(
                        "{url}: {status}: {}",
                        r.text().await.unwrap_or_default()
                    )));
                }
                let bytes = r.bytes().await.map_err(failed(&url))?;
                let n = bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| l.starts_with(b"{\"kind\":\"request\""))
                    .count();
                match &out {
                    Some(p) => {
                        std::fs::write(p, &bytes).map_err(failed(&p.display().to_string()))?
                    }
                    None => write_stdout(&bytes)?,
                }
                let count = |kind: &str| {
                    let prefix = format!("{{\"kind\":\"{kind}\"");
                    bytes
                        .split(|&b| b == b'\n')
                        .filter(|l| l.starts_with(prefix.as_bytes()))
                        .count()
                };
                (
                    data_dir,
                    crate::store::backup::Counts {
                        requests: n,
                        documents: count("document"),
                        audit: count("audit"),
                    },
                )
            }
            StoreCommand::Export {
                data_dir,
                out,
                url: None,
                store,
                ..
            } => {
                let (store, data_dir) = open_store(&data_dir, store.as_deref())?;
                let counts = match &out {
                    Some(p) => {
                        let f =
                            std::fs::File::create(p).map_err(failed(&p.display().to_string()))?;
                        let mut w = std::io::BufWriter::new(f);
                        backup::export(&*store, &mut w)
                    }
                    None => backup::export(
                        &*store,
                        &mut std::io::BufWriter::new(std::io::stdout().lock()),
                    ),
                }
                .map_err(|e| Fail::Failed(e.to_string()))?;
                store
                    .close()
                    .await
                    .map_err(|e| Fail::Failed(e.to_string()))?;
                (data_dir, counts)
            }
            StoreCommand::Import {
                data_dir,
                file,
                store,
            } => {
                let (store, data_dir) = open_store(&data_dir, store.as_deref())?;
                let counts = if file == "-" {
                    backup::import(
                        &*store,
                        &mut std::io::BufReader::new(std::io::stdin().lock()),
                    )
                    .await
                } else {
                    let f = std::fs::File::open(&file).map_err(failed(&file))?;
                    backup::import(&*store, &mut std::io::BufReader::new(f)).await
                }
                .map_err(|e| Fail::Invalid(format!("{file}: {e}")))?;
                store
                    .close()
                    .await
                    .map_err(|e| Fail::Failed(e.to_string()))?;
                (data_dir, counts)
            }
        };
        eprintln!(
            "{}: {} requests, {} documents, {} audit entries",
            dir.display(),
            result.requests,
            result.documents,
            result.audit
        );
        Ok(())
    })
}

fn certs_init(dir: &std::path::Path, force: bool) -> CmdResult {
    let written = crate::pki::init_dev(dir, force).map_err(|e| Fail::Failed(e.to_string()))?;
    for w in written {
        match w.expires {
            Some(e) => println!("wrote {}  (expires {e})", w.path.display()),
            None => println!("wrote {}", w.path.display()),
        }
    }
    Ok(())
}

#[cfg(feature = "simulator")]
fn simulate(config: &std::path::Path, listen: Option<String>, faults: Option<String>) -> CmdResult {
    init_logs();
    let mut cfg =
        crate::config::SimulatorConfig::load(config).map_err(|e| Fail::Failed(e.to_string()))?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(f) = faults {
        cfg.faults = f;
    }
    runtime()?.block_on(async {
        let sim = crate::sim::start(&cfg)
            .await
            .map_err(|e| Fail::Failed(e.to_string()))?;
        for (name, addr) in &sim.addrs {
            println!("{name} listening on https://{addr}/");
        }
        println!("control on http://{}/", sim.control);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tokio::signal::ctrl_c().await.map_err(failed("signal"))?;
        drop(sim);
        Ok(())
    })
}

fn exchange(a: ExchangeArgs) -> CmdResult {
    use crate::exchange::{Call, Exchange, Outcome};
    let cfg =
        crate::config::GatewayConfig::load(&a.config).map_err(|e| Fail::Failed(e.to_string()))?;
    let svc = cfg.services.get(&a.service).ok_or_else(|| {
        Fail::Failed(format!(
            "unknown service {:?}; known: {}",
            a.service,
            cfg.services.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    if svc.registry != a.registry {
        return Err(Fail::Failed(format!(
            "service {} belongs to registry {}, not {}",
            a.service, svc.registry, a.registry
        )));
    }
    let subject = crate::protocol::subject::Subject::from_parts(
        a.subject.jmbg.as_deref(),
        a.subject.pib.as_deref(),
        a.subject.mb.as_deref(),
        a.subject.ko.as_deref(),
        a.subject.sheet.as_deref(),
        a.subject.parcel.as_deref(),
    )
    .map_err(|e| Fail::Invalid(format!("invalid subject: {e}")))?;
    let schemas = a.schemas.clone().unwrap_or_else(xml::schema::default_dir);
    let id =
        a.id.clone()
            .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let attempt = runtime()?.block_on(async {
        let ex = Exchange::new(&cfg, &schemas).map_err(|e| Fail::Failed(e.to_string()))?;
        ex.attempt(&Call {
            id: &id,
            service: &a.service,
            subject: &subject,
            case: &a.case,
            official: &a.official,
            legal_basis: &a.legal_basis,
            purpose: &a.purpose,
            ticket: a.ticket.as_deref(),
        })
        .await
        .map_err(|e| Fail::Failed(e.to_string()))
    })?;
    let code = match &attempt.outcome {
        Outcome::Document => 0,
        Outcome::Accepted { .. } => 3,
        Outcome::Retryable { .. } | Outcome::TicketLost { .. } => 4,
        Outcome::Permanent { .. } => 5,
        Outcome::Security { .. } => 6,
    };
    if code != 0 {
        let extra = match &attempt.outcome {
            Outcome::Accepted { .. } => {
                format!(" (request id {id}; poll with --id {id} --ticket TICKET)")
            }
            _ => String::new(),
        };
        return Err(Fail::Code(code, format!("{}{extra}", attempt.outcome)));
    }
    let bytes = attempt.response.unwrap_or_default();
    match a.out {
        Some(p) => std::fs::write(&p, &bytes).map_err(failed(&p.display().to_string()))?,
        None => write_stdout(&bytes)?,
    }
    eprintln!(
        "document from {} signed by {} in {} ms",
        a.registry,
        attempt.signer.unwrap_or_default(),
        attempt.duration.as_millis()
    );
    Ok(())
}

fn ids_check(kind: IdKind, value: &str) -> CmdResult {
    let invalid = |e: ids::IdError| Fail::Invalid(format!("invalid: {e}"));
    let lines: Vec<String> = match kind {
        IdKind::Jmbg => {
            let j = ids::Jmbg::parse(value).map_err(invalid)?;
            let sex = match j.sex() {
                ids::Sex::Male => "male",
                ids::Sex::Female => "female",
            };
            vec![
                format!("valid JMBG {}", j.as_str()),
                format!("date of birth: {}", j.birth_date()),
                format!("region: {:02}", j.region()),
                format!("serial: {:03} ({sex})", j.serial()),
                format!("check digit: {}", &value[12..]),
            ]
        }
        IdKind::Pib => {
            let p = ids::Pib::parse(value).map_err(invalid)?;
            vec![
                format!("valid PIB {p}"),
                format!("check digit: {}", &value[8..]),
            ]
        }
        IdKind::Mb => {
            let m = ids::Mb::parse(value).map_err(invalid)?;
            vec![
                format!("valid MB {m}"),
                format!("check digit: {}", &value[7..]),
            ]
        }
        IdKind::Ko => {
            let k = ids::KoCode::parse(value).map_err(invalid)?;
            vec![
                format!("valid KO code {k}"),
                format!("check digit: {}", &value[5..]),
            ]
        }
        IdKind::Municipality => {
            let k = ids::MunicipalityCode::parse(value).map_err(invalid)?;
            vec![
                format!("valid municipality code {k}"),
                format!("check digit: {}", &value[4..]),
            ]
        }
        IdKind::Parcel => {
            let (ko, parcel) = match value.split_once(':') {
                Some((ko, p)) => (Some(ids::KoCode::parse(ko).map_err(invalid)?), p),
                None => (None, value),
            };
            let p = ids::ParcelNumber::parse(parcel).map_err(invalid)?;
            let mut v = vec![format!("valid parcel {p}")];
            if let Some(ko) = ko {
                v.push(format!("KO: {ko}"));
            }
            v.push(format!("number: {}", p.number));
            v.push(format!(
                "sub-number: {}",
                p.sub.map_or("none".to_owned(), |s| s.to_string())
            ));
            v
        }
        IdKind::Sheet => {
            let s = ids::SheetNumber::parse(value).map_err(invalid)?;
            vec![format!("valid property sheet number {}", s.0)]
        }
    };
    println!("{}", lines.join("\n"));
    Ok(())
}

fn xml_command(cmd: XmlCommand) -> CmdResult {
    match cmd {
        XmlCommand::C14n {
            exclusive,
            with_comments,
            prefix_list,
            input,
        } => {
            let bytes = read_input(&input)?;
            let mut opts = c14n::Options {
                exclusive,
                with_comments,
                inclusive_prefixes: Vec::new(),
            };
            if let Some(l) = prefix_list {
                opts = opts.with_prefix_list(&l);
            }
            let out = c14n::WriteOutput {
                inner: std::io::BufWriter::new(std::io::stdout().lock()),
                error: None,
            };
            let mut out = c14n::canonicalize_into(&bytes, &opts, &limits(&input), out)
                .map_err(|e| Fail::Invalid(format!("{}: {e}", input.file)))?;
            if let Some(e) = out.error {
                return Err(failed("standard output")(e));
            }
            out.inner.flush().map_err(failed("standard output"))
        }
        XmlCommand::Sign {
            key,
            cert,
            alg,
            out,
            input,
        } => {
            let key_pem = std::fs::read(&key).map_err(failed(&key.display().to_string()))?;
            let cert_pem = std::fs::read(&cert).map_err(failed(&cert.display().to_string()))?;
            let alg = alg.as_deref().and_then(xml::Algorithm::from_name);
            let k = xml::SigningKey::from_pem(&key_pem, &cert_pem, alg)
                .map_err(|e| Fail::Failed(e.to_string()))?;
            let bytes = read_input(&input)?;
            let signed = xml::sign(&bytes, &k, &limits(&input))
                .map_err(|e| Fail::Invalid(format!("{}: {e}", input.file)))?;
            match out {
                Some(p) => std::fs::write(&p, signed).map_err(failed(&p.display().to_string())),
                None => write_stdout(&signed),
            }
        }
        XmlCommand::Verify { trust, input } => {
            let pem = std::fs::read(&trust).map_err(failed(&trust.display().to_string()))?;
            let store = xml::TrustStore::from_pem(&pem).map_err(|e| Fail::Failed(e.to_string()))?;
            let bytes = read_input(&input)?;
            let v = xml::verify(&bytes, &store, &limits(&input))
                .map_err(|e| Fail::Invalid(format!("invalid: {e}")))?;
            println!(
                "valid {} signature by {}",
                v.algorithm.name(),
                v.signer_subject()
            );
            Ok(())
        }
        XmlCommand::Validate { schemas, input } => {
            let dir = schemas.unwrap_or_else(xml::schema::default_dir);
            let v = xml::schema::Validator::start(&dir, limits(&input))
                .map_err(|e| Fail::Failed(e.to_string()))?;
            let bytes = read_input(&input)?;
            v.validate(&bytes)
                .map_err(|e| Fail::Invalid(format!("{}: {e}", input.file)))?;
            println!("{}: valid", input.file);
            Ok(())
        }
    }
}
