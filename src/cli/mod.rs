//! The `jumgw` command line: argument parsing and dispatch. Commands that
//! work on this machine (the store, certificates, identifiers, XML, one
//! exchange, the simulator) are in [`local`]; those that talk to a running
//! gateway over its API (`request`, `queue`, `registries`, `audit`) are in
//! [`remote`]. Each calls into the module that owns the work.
//!
//! Exit codes: 0 success; 1 the input was examined and is invalid (a bad
//! check digit, a signature that does not verify, a schema violation);
//! 2 the command could not run (unreadable file, bad key, usage error).

mod local;
mod remote;

use local::*;

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
        /// Append the id of every request the embedded simulator gets and answers
        /// to this file (with --demo): what the registry was asked, surviving a crash.
        #[arg(long, requires = "demo")]
        sim_log: Option<PathBuf>,
        /// Folder with the schemas (default: $JUMGW_SCHEMAS, else those built into jumgw).
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// The queue store: `sled` (in the data folder) or a PostgreSQL URL,
        /// postgres://user@host:port/db, shared by every instance given it.
        /// Overrides [store] of the configuration.
        #[arg(long)]
        store: Option<String>,
        /// `text` or `json` (one object per line); overrides [log] format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// The configuration: check a file before a restart, or print the reference of every key.
    #[command(
        long_about = "`check` validates everything `serve` would (the files exist and parse, keys \
belong to their certificates, cron expressions, URLs, the clients' services in the catalogue) \
without starting anything, and prints the effective configuration with secrets masked.\n\n\
`reference` prints docs/configuration.md: every key, its default and what it means.\n\n\
Exit codes of check: 0 valid; 1 invalid (the file, the key and the problem are printed); \
2 the command could not run."
    )]
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Shell completions for bash, zsh or fish, on standard output.
    #[command(long_about = "Print the completion script for a shell.\n\nbash: \
`jumgw completions bash > /usr/share/bash-completion/completions/jumgw`; zsh: \
`jumgw completions zsh > /usr/share/zsh/vendor-completions/_jumgw`; fish: \
`jumgw completions fish > /usr/share/fish/vendor_completions.d/jumgw.fish` (the Debian \
package installs all three).")]
    Completions {
        #[arg(value_enum)]
        shell: ShellArg,
    },
    /// Man pages for jumgw and every subcommand (roff), written into a folder.
    Man {
        /// The folder to write jumgw.1, jumgw-serve.1, ... into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
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
        command: remote::QueueCommand,
    },
    /// The registries of a running gateway (admin token): state, pause, resume.
    Registries {
        #[command(subcommand)]
        command: remote::RegistriesCommand,
    },
    /// The audit trail of a running gateway (admin token): verify, who used a person's data.
    Audit {
        #[command(subcommand)]
        command: remote::AuditCommand,
    },
    /// Case dossiers: export one from a running gateway (ASiC-E), verify one offline.
    #[command(
        long_about = "A case dossier is one ASiC-E container (ETSI EN 319 162-1): every document of \
the case as the registry signed it, their timestamps and OCSP responses, the case's facts and audit \
excerpt, and the CA certificates, sealed by the municipality (XAdES B-T).\n\n`export` asks a running \
gateway for it; `verify` checks one with no gateway and no network.\n\nExit codes of verify: 0 every \
check holds; 1 something is invalid or cannot be verified (the report says which file and why); \
2 the command could not run."
    )]
    Dossier {
        #[command(subcommand)]
        command: DossierCommand,
    },
    /// Back up and restore the store (the daemon must not be running).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// The last day of a ZUP time limit: counted from the day after the
    /// event, a last day that is not a working day in Serbia (weekend,
    /// non-working state holiday, the Sunday rule) moved to the next one.
    #[command(
        long_about = "The last day of a time limit in days, as ZUP counts it (art. 82-83): the count \
starts on the day after the event; when the last day is a Saturday, a Sunday or a non-working state \
holiday of Serbia (1-2 January, 7 January, 15-16 February, Orthodox Good Friday to Easter Monday, 1-2 May, \
11 November, and the first working day after 1-2 January, 15-16 February, 1-2 May or 11 November when one \
falls on a Sunday), the limit ends on the next working day. Prints the last day first, then how it was \
found; the request deadlines of the gateway are counted the same way."
    )]
    Deadline {
        /// The day of the event (filing, delivery), YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// The limit in days (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
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
badhash unavailable maintenance async lost notfound; states of the development CA: revoked ocsp-down \
tsa-down; also latency=50ms or latency=20ms..200ms and async-delay=2s; hold keeps requests until POST /held/release. Example: \"cadastre:503=0.1, tax:async=next:2\".\n\n\
With an [x_road] section, an X-Road security-server front (message protocol 4.0) serves every registry on \
one more HTTPS port: requests checked against the official schemas and refused with X-Road faults, \
listMethods/allowedMethods, and GET /asic for the signed document of each answer (404 until timestamped). \
Its faults: xr-header-dropped xr-header-changed xr-headers-reordered (headers not copied back), badhash \
(wrong requestHash), xr-wrapper (not {serviceCode}Response), xr-network xr-network-snake (transient \
ServiceFailed.NetworkError, dotted or snake_case), xr-denied xr-denied-snake (permanent AccessDenied), \
swa (SOAP with attachments), mtom, latin1 (ISO-8859-1), bom, cdata (comments and CDATA); states: \
unlisted (missing from allowedMethods), snake (the front's own refusals in snake_case).\n\n\
A control endpoint (plain HTTP, \
loopback) serves GET/PUT/POST/DELETE /faults, GET /seen, POST /reset, POST /tickets/ready \
(every waiting asynchronous answer ready now), POST /held/release (every held request goes on) and \
POST /x-road/stamp (every signed document waiting for its timestamp stamped now)."
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate a configuration as `serve` would and print it, secrets masked.
    Check {
        /// As `serve --config` (on a server: /etc/jumgw/gateway.toml).
        #[arg(long, default_value = crate::daemon::DEFAULT_CONFIG)]
        config: PathBuf,
        /// The data folder, where relative key files are (as `serve --data-dir`).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Folder with the schemas (default: $JUMGW_SCHEMAS, else those built into jumgw).
        #[arg(long)]
        schemas: Option<PathBuf>,
        /// Say only whether it is valid, not the effective configuration.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the reference of every key (docs/configuration.md).
    Reference,
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
    /// Check a stopped sled store whole (every tree read, every record and
    /// audit entry decoded, the indexes compared with the records) and list
    /// what is damaged, by tree and key. Exit 0: no damage; 1: damage found;
    /// 2: the store cannot be opened at all.
    Check {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
        /// Check this store instead of the data folder's sled: a PostgreSQL
        /// URL, postgres://user@host:port/db (while the gateway runs, too).
        #[arg(long)]
        store: Option<String>,
    },
    /// Save every readable request, document and audit entry of a damaged,
    /// stopped sled store as an export (restore it with `store import`),
    /// with a `lost` line for each thing that could not be read.
    Salvage {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The export to write.
        #[arg(long, short)]
        out: PathBuf,
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
        /// Overwrite existing files (and, with --pkcs11, keys of the same labels on the token).
        #[arg(long)]
        force: bool,
        /// Make the gateway's seal and TLS client keys on this PKCS#11 token
        /// (an RFC 7512 URI naming the seal's label; the TLS key gets the
        /// label with `-tls`), never extractable; only their certificates
        /// are written.
        #[arg(long, value_name = "URI")]
        pkcs11: Option<String>,
        /// The signing keys' type (the gateway's seal and the registries' signers).
        #[arg(long, value_enum, default_value_t = KeyType::Rsa)]
        key_type: KeyType,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum KeyType {
    /// RSA, 2048 bits.
    Rsa,
    /// ECDSA on P-256.
    Ec,
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
    /// Folder with the schemas (default: $JUMGW_SCHEMAS, else those built into jumgw).
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
        /// PEM private key (RSA or EC P-256), or a key on a token: an RFC 7512
        /// URI, pkcs11:token=…;object=…?module-path=…&pin-source=file:… (PIN
        /// also from $JUMGW_PKCS11_PIN).
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
        /// Also check that the signer's certificate is not on this CRL
        /// (DER or PEM, version 1 or 2, signed by its CA, complete, and
        /// fresh: before its nextUpdate, or without one not older than
        /// --max-age).
        #[arg(long, value_name = "FILE")]
        crl: Option<PathBuf>,
        /// Also ask this OCSP responder whether the signer's certificate is
        /// revoked; `aia` asks the one its certificate names. Its answer
        /// must carry our nonce and be fresh.
        #[arg(long, value_name = "URL|aia")]
        ocsp: Option<String>,
        /// The OCSP responder answers from pre-produced responses, without
        /// a nonce: believe an answer on its age alone.
        #[arg(long, requires = "ocsp")]
        ocsp_preproduced: bool,
        /// How old an OCSP answer or CRL without nextUpdate may be.
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = crate::config::parse_duration)]
        max_age: std::time::Duration,
        #[command(flatten)]
        input: Input,
    },
    /// Validate a document against the XSDs in schemas/: exit 0 valid, 1 invalid.
    Validate {
        /// Folder with the schemas (default: $JUMGW_SCHEMAS, else those built into jumgw).
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
    /// The operators' views (metrics, stats, the dead, the dashboard) over a store of
    /// N requests, p50/p99 of each against one full pass over the store.
    Queries {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// Timed calls of each view.
        #[arg(long, default_value_t = 100)]
        calls: usize,
        /// A PostgreSQL server URL (a database is made for the run and dropped);
        /// absent: sled.
        #[arg(long)]
        store: Option<String>,
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
        /// The registries' revocation policy in the gateway: require, prefer or off.
        #[arg(long, default_value = "prefer")]
        revocation: String,
        /// Configure no TSA: documents are not timestamped (by default the
        /// simulator's TSA stamps each one, beside the exchanges).
        #[arg(long)]
        no_timestamps: bool,
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

#[derive(Subcommand, Debug)]
enum DossierCommand {
    /// Download a case's dossier from a running gateway (GET /api/v1/cases/{case}/dossier).
    Export {
        case: String,
        /// Where to write it (e.g. CASE.asice).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Check a dossier offline: the container, every signature, timestamp, OCSP response and CRL, the audit links.
    #[command(
        long_about = "Check a dossier offline. The container is read strictly (one entry per name, local \
headers agreeing with the central directory, no bytes outside the entries, nothing in META-INF/ but the \
manifest and signatures, no directory entries) and within memory caps: 256 MiB per entry, --max-total in all. \
Each document must be signed by exactly the certificate the gateway accepted from its registry (recorded in \
case.json with its SHA-256), chained to exactly the anchor recorded for it, which must be trusted; never by the \
seal, and no certificate may sign for two registries. Each document must be the answer to the request it is \
filed under (its signed header's request id, case, service, official, legal basis, purpose and subject), \
each request of case.json must be one the audit trail records as accepted in that case with the same facts, \
and every sealed file must be one case.json names, a CA certificate or an audit file. Without --trust it \
judges the dossier against the CA certificates it carries, which proves only that it is consistent with \
itself. Without --registry-signer (or --registry-ca) for a registry, its documents are bound only to the \
signer the dossier records: whoever holds the seal's key and the TSA's service can rewrite that record, the \
audit excerpt and its checkpoint together and re-sign a document with another registry's key; give each \
registry's signer (or CA) from your own knowledge to close that. When the seal does not hold, no other file \
is read but mimetype and, without --trust, the certificates/*.pem the seal is judged by."
    )]
    Verify {
        file: PathBuf,
        /// CA certificates (PEM) to judge every chain against; repeat for several.
        /// Without: the ones the dossier carries (the report says so).
        #[arg(long)]
        trust: Vec<PathBuf>,
        /// NAME=FILE.pem: the CA certificates registry NAME's documents must chain to (repeatable);
        /// they are trusted for that registry.
        #[arg(long = "registry-ca", value_name = "NAME=FILE.pem")]
        registry_ca: Vec<String>,
        /// NAME=PIN: registry NAME's documents must be signed by this signer (repeatable; any one of
        /// several): an RFC 4514 subject compared exactly (CN=cadastre signer,O=...), or the SHA-256 of the
        /// certificate (64 hex digits, colons allowed), as the gateway's signer_subject and
        /// signer_sha256. Without it a registry is bound only to the signer the dossier records.
        #[arg(long = "registry-signer", value_name = "NAME=PIN")]
        registry_signer: Vec<String>,
        /// The most all entries may uncompress to together (e.g. 512MiB, 1GiB, or bytes); one entry
        /// may have at most 256 MiB.
        #[arg(long, value_name = "SIZE", default_value = "512MiB", value_parser = local::byte_size)]
        max_total: u64,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
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

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Deadline { from, days, json } => local::deadline(&from, days, json),
        Command::Ids { command } => match command {
            IdsCommand::Check { kind, value } => ids_check(kind, &value),
        },
        Command::Xml { command } => xml_command(command),
        Command::Certs {
            command:
                CertsCommand::Init {
                    dir,
                    force,
                    pkcs11,
                    key_type,
                },
        } => certs_init(
            &dir,
            force,
            match key_type {
                KeyType::Rsa => crate::pki::KeyKind::Rsa2048,
                KeyType::Ec => crate::pki::KeyKind::EcP256,
            },
            pkcs11.as_deref(),
        ),
        #[cfg(feature = "simulator")]
        Command::Simulate {
            config,
            listen,
            faults,
        } => simulate(&config, listen, faults),
        Command::Exchange(args) => exchange(*args),
        Command::Store { command } => store_command(command),
        Command::Request(args) => remote::request(*args),
        Command::Queue { command } => remote::queue(command),
        Command::Registries { command } => remote::registries(command),
        Command::Audit { command } => remote::audit(command),
        Command::Dossier { command } => match command {
            DossierCommand::Export { case, out, remote } => {
                remote::dossier_export(&case, &out, &remote)
            }
            DossierCommand::Verify {
                file,
                trust,
                registry_ca,
                registry_signer,
                max_total,
                json,
            } => local::dossier_verify(
                &file,
                &trust,
                &registry_ca,
                &registry_signer,
                max_total,
                json,
            ),
        },
        Command::Serve {
            config,
            demo,
            data_dir,
            listen,
            sim_faults,
            sim_log,
            schemas,
            store,
            log_format,
        } => {
            let settings = crate::daemon::log_settings(config.as_deref(), demo);
            let format = match log_format {
                Some(LogFormatArg::Text) => crate::config::LogFormat::Text,
                Some(LogFormatArg::Json) => crate::config::LogFormat::Json,
                None => settings.format,
            };
            let _logs = crate::daemon::logs::init(format, &settings.filter);
            let opts = crate::daemon::ServeOptions {
                config,
                demo,
                data_dir,
                listen,
                sim_faults,
                sim_log,
                schemas: schemas.unwrap_or_else(xml::schema::default_dir),
                store,
            };
            let served = runtime().and_then(|rt| {
                rt.block_on(crate::daemon::serve(opts))
                    .map_err(|e| Fail::Failed(e.to_string()))
            });
            return match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let (Fail::Failed(m) | Fail::Invalid(m) | Fail::Code(_, m)) = e;
                    crate::daemon::logs::fatal(&m);
                    ExitCode::from(2)
                }
            };
        }
        Command::Config { command } => match command {
            ConfigCommand::Check {
                config,
                data_dir,
                schemas,
                quiet,
            } => local::config_check(&config, &data_dir, schemas, quiet),
            ConfigCommand::Reference => {
                local::write_stdout(crate::config::reference::markdown().as_bytes())
            }
        },
        Command::Completions { shell } => {
            let shell = match shell {
                ShellArg::Bash => clap_complete::Shell::Bash,
                ShellArg::Zsh => clap_complete::Shell::Zsh,
                ShellArg::Fish => clap_complete::Shell::Fish,
            };
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut command(), "jumgw", &mut buf);
            local::write_stdout(&buf)
        }
        Command::Man { out } => man_pages(&out),
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
                revocation,
                no_timestamps,
            } => {
                let revocation = match revocation.as_str() {
                    "require" => crate::config::RevocationPolicy::Require,
                    "prefer" => crate::config::RevocationPolicy::Prefer,
                    "off" => crate::config::RevocationPolicy::Off,
                    other => {
                        return finish(Err(Fail::Invalid(format!(
                            "--revocation {other:?}: use require, prefer or off"
                        ))))
                    }
                };
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
                        revocation,
                        timestamps: !no_timestamps,
                    },
                    &sweep,
                    chart.as_deref(),
                )
                .map_err(Fail::Failed)
            }
            BenchCommand::Queries {
                json,
                requests,
                calls,
                store,
            } => crate::bench::queries::run(crate::bench::queries::Options {
                json,
                requests,
                calls,
                store,
            })
            .map_err(Fail::Failed),
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

fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    crate::daemon::runtime().map_err(failed("tokio runtime"))
}

/// The whole command line, as clap sees it (for completions and man pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// `jumgw.1` and one page per subcommand, `jumgw-queue-list.1` and so on.
fn man_pages(out: &std::path::Path) -> CmdResult {
    fn write(cmd: &clap::Command, name: &str, out: &std::path::Path) -> CmdResult {
        let cmd = cmd
            .clone()
            .name(name.to_owned())
            .bin_name(name.replace('-', " "));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut buf)
            .map_err(failed("man page"))?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, buf).map_err(failed(&path.display().to_string()))?;
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                write(sub, &format!("{name}-{}", sub.get_name()), out)?;
            }
        }
        Ok(())
    }
    std::fs::create_dir_all(out).map_err(failed(&out.display().to_string()))?;
    let mut cmd = command();
    cmd.build();
    write(&cmd, "jumgw", out)
}
