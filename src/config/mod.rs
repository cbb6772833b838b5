//! Configuration files (`config/gateway.toml`, `config/simulator.toml`),
//! parsed once into typed values and validated at start with messages that
//! name the file, the key and the problem.
//!
//! Any key can be overridden by an environment variable: `JUMGW_` followed
//! by the key path in upper case with `__` between levels, e.g.
//! `JUMGW_REGISTRIES__CIVIL__URL=https://10.0.0.5:9441/`. Values are read
//! as figment reads them: booleans, numbers, `[a, b]` lists, `{k = v}`
//! tables, and anything else as a string. The layering (a file, the files
//! it `extends`, the environment) is figment's.
//!
//! Relative file paths in a configuration are resolved against the current
//! working directory, which is the repository root in every documented
//! command.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

mod check;
mod gateway;
mod load;
pub mod reference;
mod role;
mod simulator;

/// The registries the simulator plays and the development PKI makes
/// certificates for.
pub const REGISTRIES: [&str; 3] = ["civil", "cadastre", "tax"];
pub use role::{Duty, Role};

pub use gateway::*;
pub use load::{load, parse};
pub use simulator::*;

/// A duration written as `250ms`, `5s`, `10m`, `1h` or `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    // Whole numbers exactly (f64 would make 9276509424ms a hair longer).
    let unit_ms: Option<u64> = match unit.trim() {
        "ms" => Some(1),
        "s" => Some(1000),
        "m" | "min" => Some(60_000),
        "h" => Some(3_600_000),
        "d" => Some(86_400_000),
        _ => None,
    };
    if let (Ok(n), Some(u)) = (num.parse::<u64>(), unit_ms) {
        return n
            .checked_mul(u)
            .filter(|ms| *ms <= 10 * 365 * 86_400_000)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("{s:?} is out of range"));
    }
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 250ms, 5s, 10m, 1h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        "" => return Err(format!("{s:?} has no unit; write e.g. {s}s")),
        u => return Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m, h or d")),
    };
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Serde helper: a duration string.
pub mod duration {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    /// As it would be written: the largest unit that says it exactly.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

/// A duration as a configuration says it: `90d`, `5m`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= n && ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// An X-Road member or subsystem: `RS/GOV/08070431/jum-becej`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub instance: String,
    pub class: String,
    pub code: String,
    #[serde(default)]
    pub subsystem: Option<String>,
}

/// A maintenance window: starts at each time the cron expression names
/// (6 fields, seconds first, UTC) and lasts `duration`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// When it starts: 6 fields, seconds first, UTC (`0 0 2 * * Sun`).
    pub cron: String,
    /// How long it lasts.
    #[serde(with = "duration")]
    pub duration: Duration,
}

impl MaintenanceWindow {
    /// The window, its cron expression read.
    pub fn window(&self) -> Result<crate::time::Window, String> {
        crate::time::Window::new(&self.cron, self.duration)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::path::Path;

    use super::*;

    const GW: &str = include_str!("../../config/gateway.toml");

    /// The shipped gateway.toml with the tables it leaves out, each with
    /// only its required keys: what the edits below start from, so that
    /// they reach the keys of those tables too.
    fn edited_base() -> &'static str {
        static BASE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "{GW}\n[gateway.api_tls]\ncert = \"certs/dev/api.pem\"\nkey = \"certs/dev/api.key\"\n\n\
                 [clients.office]\ntoken_sha256 = \"{}\"\n\n\
                 [alerts]\n\n[jobs]\n\n[log]\n\n[retry]\n\n[store]\n\n[webhooks]\n",
                "ab".repeat(32)
            )
        });
        &BASE
    }

    /// What the edits start from is itself read and valid.
    #[test]
    fn the_edits_start_from_a_valid_configuration() {
        let cfg = parse::<GatewayConfig>(edited_base(), "base.toml", std::iter::empty()).unwrap();
        cfg.validate("base.toml").unwrap();
    }

    /// The package's configuration offers the same services and
    /// procedures as the repository's: a service added to one is in both.
    #[test]
    fn the_shipped_configuration_has_the_repositorys_catalogue() {
        let ours: toml::Table = toml::from_str(GW).unwrap_or_else(|e| panic!("{e}"));
        let shipped: toml::Table = toml::from_str(include_str!("../../ops/debian/gateway.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        for section in ["services", "procedures"] {
            assert_eq!(
                ours[section], shipped[section],
                "[{section}] differs in ops/debian/gateway.toml"
            );
        }
        let cfg: GatewayConfig = parse(
            include_str!("../../ops/debian/gateway.toml"),
            "ops/debian/gateway.toml",
            std::iter::empty(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        cfg.validate("ops/debian/gateway.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.log.format, LogFormat::Json);
    }

    #[test]
    fn a_file_extends_another_and_says_only_what_differs() {
        let pg: GatewayConfig =
            load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway-postgres.toml"))
                .unwrap();
        let base: GatewayConfig = parse(GW, "gateway.toml", std::iter::empty()).unwrap();
        assert_eq!(pg.store.backend, StoreBackend::Postgres);
        assert_eq!(
            pg.store.url.as_deref(),
            Some("postgres://jumgw@127.0.0.1:5432/jumgw")
        );
        assert_eq!(base.store.backend, StoreBackend::Sled);
        assert_eq!(pg.services.len(), base.services.len());
        assert_eq!(pg.registries["tax"].url, base.registries["tax"].url);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "[x]\nkeep = 1\nchange = 1\n").unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "extends = \"a.toml\"\n[x]\nchange = 2\n",
        )
        .unwrap();
        let t: toml::Table = load(&dir.path().join("b.toml")).unwrap();
        assert_eq!(t["x"]["keep"].as_integer(), Some(1));
        assert_eq!(t["x"]["change"].as_integer(), Some(2));
        std::fs::write(dir.path().join("c.toml"), "extends = \"c.toml\"\n").unwrap();
        let e = load::<toml::Table>(&dir.path().join("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("extends: more than 4 files deep"), "{e}");
        std::fs::write(dir.path().join("d.toml"), "extends = 3\n").unwrap();
        let e = load::<toml::Table>(&dir.path().join("d.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("extends: expected the name of another configuration file"),
            "{e}"
        );
        let c = StoreConfig::from_arg("postgres://u@h:1/d", &StoreConfig::default()).unwrap();
        assert_eq!(
            (c.backend, c.url.as_deref()),
            (StoreBackend::Postgres, Some("postgres://u@h:1/d"))
        );
        assert!(StoreConfig::from_arg("sqlite://x", &StoreConfig::default()).is_err());
    }

    #[test]
    fn shipped_gateway_config_is_valid() {
        let c: GatewayConfig = parse(GW, "gateway.toml", std::iter::empty()).unwrap();
        c.validate("gateway.toml").unwrap();
        assert_eq!(c.services.len(), 6);
        assert_eq!(
            c.registries["civil"].connect_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn environment_overrides_keys() {
        let env = vec![
            (
                "JUMGW_REGISTRIES__CIVIL__URL".to_string(),
                "https://10.1.1.1:1/".to_string(),
            ),
            (
                "JUMGW_GATEWAY__MAX_BODY_BYTES".to_string(),
                "2048".to_string(),
            ),
            ("JUMGW_TOKEN".to_string(), "not a key".to_string()),
        ];
        let c: GatewayConfig = parse(GW, "gateway.toml", env.into_iter()).unwrap();
        assert_eq!(c.registries["civil"].url, "https://10.1.1.1:1/");
        assert_eq!(c.gateway.max_body_bytes, 2048);
    }

    #[test]
    fn lists_and_tables_can_be_set_from_the_environment() {
        let env = [
            ("JUMGW_CLIENTS__X__TOKEN_SHA256", "ab"),
            (
                "JUMGW_CLIENTS__X__SERVICES",
                r#"["civil.birth-extract", "tax.clearance-certificate"]"#,
            ),
            (
                "JUMGW_REGISTRIES__TAX__MEMBER",
                r#"{instance = "RS", class = "GOV", code = "08070431"}"#,
            ),
            // quoted: a string, though it looks like a number
            ("JUMGW_REGISTRIES__TAX__OCSP_URL", r#""12345""#),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c: GatewayConfig = parse(GW, "gateway.toml", env.into_iter()).unwrap();
        assert_eq!(
            c.clients["x"].services,
            ["civil.birth-extract", "tax.clearance-certificate"]
        );
        assert_eq!(c.registries["tax"].member.code, "08070431");
        // a table is merged into the file's key by key, as `extends` does
        assert_eq!(
            c.registries["tax"].member.subsystem.as_deref(),
            Some("poreska-uprava")
        );
        assert_eq!(c.registries["tax"].ocsp_url.as_deref(), Some("12345"));
        c.validate("gateway.toml").unwrap();
        // and a list where a string is wanted is refused naming the key
        let e = parse::<GatewayConfig>(
            GW,
            "gateway.toml",
            [(
                "JUMGW_REGISTRIES__CIVIL__URL".to_string(),
                "[1, 2]".to_string(),
            )]
            .into_iter(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("gateway.toml: registries.civil.url: "), "{e}");
    }

    #[test]
    fn clients_procedures_and_api_tls_are_cross_checked() {
        let check = |vars: &[(&str, &str)]| {
            let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            let c: GatewayConfig = parse(GW, "g.toml", env).unwrap();
            c.validate("g.toml").err().map(|e| e.to_string())
        };
        let hook = [
            ("JUMGW_CLIENTS__A__TOKEN_SHA256", "ab"),
            ("JUMGW_CLIENTS__A__DELIVERY", "webhook"),
        ];
        let e = check(&hook).unwrap();
        assert!(
            e.contains("clients.a.webhook_url") && e.contains("http://"),
            "{e}"
        );
        let mut with_url = hook.to_vec();
        with_url.push(("JUMGW_CLIENTS__A__WEBHOOK_URL", "http://127.0.0.1:1/"));
        let e = check(&with_url).unwrap();
        assert!(
            e.contains("clients.a.webhook_secret: must start with whsec_"),
            "{e}"
        );
        with_url.push((
            "JUMGW_CLIENTS__A__WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ));
        assert_eq!(check(&with_url), None);
        let c: GatewayConfig = parse(
            &format!("{GW}\n[procedures.x]\nservices = [\"civil.nothing\"]\n"),
            "g.toml",
            std::iter::empty(),
        )
        .unwrap();
        let e = c.validate("g.toml").unwrap_err().to_string();
        assert!(
            e.contains("procedures.x.services") && e.contains("civil.nothing"),
            "{e}"
        );
        let e = check(&[
            ("JUMGW_CLIENTS__B__TOKEN_SHA256", "ab"),
            ("JUMGW_CLIENTS__B__TLS_SUBJECT", "CN=b"),
        ])
        .unwrap();
        assert!(
            e.contains("clients.b.tls_subject") && e.contains("client_ca"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let broken = GW.replace("registry = \"tax\"", "registry = \"taxes\"");
        let c: GatewayConfig = parse(&broken, "g.toml", std::iter::empty()).unwrap();
        let e = c.validate("g.toml").unwrap_err().to_string();
        assert!(e.starts_with("g.toml: services.tax."), "{e}");
        assert!(e.ends_with("unknown registry \"taxes\""), "{e}");
        let e = parse::<GatewayConfig>(
            &GW.replace("timeout = \"30s\"", "timeout = \"30\""),
            "g.toml",
            std::iter::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no unit"), "{e}");
        let e = parse::<GatewayConfig>(
            &format!("{GW}\n[gateway2]\nx=1\n"),
            "g.toml",
            std::iter::empty(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `gateway2`"), "{e}");
        let e = parse::<GatewayConfig>(
            &format!("{GW}\n[clients.x]\ntoken_sha256 = \"00\"\nrole = \"superuser\"\n"),
            "g.toml",
            std::iter::empty(),
        )
        .unwrap()
        .validate("g.toml")
        .unwrap_err()
        .to_string();
        assert!(e.contains("clients.x.role"), "{e}");
        assert!(
            e.contains("one of backoffice, viewer, operator, auditor, admin"),
            "{e}"
        );
        // Keys may be required stronger, never weaker.
        let weaker = GW.replacen("[gateway]\n", "[gateway]\nmin_rsa_bits = 1024\n", 1);
        assert_ne!(weaker, GW);
        let e = parse::<GatewayConfig>(&weaker, "g.toml", std::iter::empty())
            .unwrap()
            .validate("g.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gateway.min_rsa_bits"), "{e}");
        assert!(e.contains("1024 is below 2048"), "{e}");
        let stronger = GW.replacen("[gateway]\n", "[gateway]\nmin_rsa_bits = 3072\n", 1);
        let cfg = parse::<GatewayConfig>(&stronger, "g.toml", std::iter::empty()).unwrap();
        cfg.validate("g.toml").unwrap();
        assert_eq!(cfg.gateway.min_rsa_bits, 3072);
    }

    /// The API's limits: the defaults as before, a value set is held, and
    /// one that would disable the limit is refused naming its key.
    #[test]
    fn the_api_limits_are_read_and_checked() {
        let with = |k: &str, v: &str| {
            let env = [(format!("JUMGW_GATEWAY__{k}"), v.to_owned())];
            let c: GatewayConfig = parse(GW, "g.toml", env.into_iter()).unwrap();
            c.validate("g.toml").map(|()| c).map_err(|e| e.to_string())
        };
        let c: GatewayConfig = parse(GW, "g.toml", std::iter::empty()).unwrap();
        assert_eq!(c.gateway.api_max_connections, None);
        assert_eq!(c.gateway.api_ping_interval, Duration::from_secs(30));
        assert_eq!(c.gateway.ui_session_lifetime, Duration::from_secs(8 * 3600));
        let c = with("API_MAX_CONNECTIONS", "4").unwrap();
        assert_eq!(c.gateway.api_max_connections, Some(4));
        let c = with("UI_SESSION_LIFETIME", "2s").unwrap();
        assert_eq!(c.gateway.ui_session_lifetime, Duration::from_secs(2));
        let c = with("API_PING_INTERVAL", "1s").unwrap();
        assert_eq!(c.gateway.api_ping_interval, Duration::from_secs(1));
        for (k, v, says) in [
            (
                "API_MAX_CONNECTIONS",
                "0",
                "g.toml: gateway.api_max_connections: must be at least 1",
            ),
            (
                "UI_SESSION_LIFETIME",
                "500ms",
                "g.toml: gateway.ui_session_lifetime: must be at least 1s",
            ),
            (
                "API_PING_INTERVAL",
                "0s",
                "g.toml: gateway.api_ping_interval: must be more than 0",
            ),
        ] {
            assert_eq!(with(k, v).unwrap_err(), says);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    /// What an edit of the shipped gateway.toml did, for the property to
    /// hold the outcome to.
    #[derive(Debug, Clone)]
    enum Edit {
        /// The line of this key removed: read with its default, or
        /// refused as missing, naming it.
        Removed,
        /// The line written twice: refused by TOML, naming the key.
        Twice,
        /// The key (at any depth, maybe inside an inline table) now holds
        /// this TOML value: refused naming the key, or read and holding
        /// exactly that value.
        Set(String),
        /// A key the schema does not have, added at this path (in a
        /// section or inside an inline table): refused naming its path,
        /// unless the table is a map that keeps it.
        Added(String),
    }

    /// The dotted path of a `[table]` header line, quoted parts unquoted.
    fn header_path(line: &str) -> Vec<String> {
        let mut v: toml::Value = toml::from_str::<toml::Table>(line)
            .map_or_else(|e| panic!("{line}: {e}"), toml::Value::Table);
        let mut path = Vec::new();
        while let toml::Value::Table(t) = v {
            let Some((k, next)) = t.into_iter().next() else {
                break;
            };
            path.push(k);
            v = next;
        }
        path
    }

    /// The kinds of value an edit writes.
    const VALUES: [&str; 16] = [
        "\"x\"",
        "-1",
        "0",
        "true",
        "[]",
        "{}",
        "\"1h\"",
        "\"-5s\"",
        "1e400",
        "\"\"",
        "[1, \"a\"]",
        "18446744073709551616",
        "\"https://10.0.0.1/\"",
        "[\"jmbg\"]",
        "1.5",
        "{ x = 1 }",
    ];

    /// [`schema_sites`], worked out once.
    #[allow(clippy::type_complexity)]
    fn sites() -> &'static (Vec<usize>, Vec<(Option<usize>, Vec<String>)>, Vec<String>) {
        static SITES: std::sync::LazyLock<(
            Vec<usize>,
            Vec<(Option<usize>, Vec<String>)>,
            Vec<String>,
        )> = std::sync::LazyLock::new(schema_sites);
        &SITES
    }

    /// The shipped gateway.toml (with the tables it leaves out, and the
    /// keys it leaves to their default) with one key changed as an operator might
    /// get it wrong: its line removed or repeated, its value (or the
    /// first value inside its inline table) replaced by one of another
    /// kind, or an unknown key added beside it or inside its inline table.
    /// Returns the text, the edited key's path, the edit and its line (from 1).
    fn edited_gateway_toml() -> impl Strategy<Value = (String, Vec<String>, Edit, usize)> {
        let (keyed, absent, _) = sites();
        (
            0..keyed.len() + absent.len(),
            0u8..6,
            prop::sample::select(VALUES.to_vec()),
        )
            .prop_map(|(at, how, v)| edit_at(at, how, v))
    }

    /// Edit number `at` of [`sites`] (a line of the file, then a key it
    /// leaves out), of kind `how`, writing `v` where it writes a value. A
    /// key the file leaves out is written (`Set`), or written twice.
    fn edit_at(at: usize, how: u8, v: &str) -> (String, Vec<String>, Edit, usize) {
        let (keyed, absent, _) = sites();
        let lines: Vec<&str> = edited_base().lines().collect();
        if let Some((header, path)) = at.checked_sub(keyed.len()).map(|a| &absent[a]) {
            // A key the file leaves to its default, written under
            // its table's header (or above every table).
            let key = path.last().unwrap();
            let at = header.map_or(0, |h| h + 1);
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let set = format!("{key} = {v}");
            let edit = if how == 1 {
                out.insert(at, set.clone());
                Edit::Twice
            } else {
                Edit::Set(v.to_owned())
            };
            out.insert(at, set);
            let line = at + 1 + usize::from(matches!(edit, Edit::Twice));
            return (out.join("\n"), path.clone(), edit, line);
        }
        let i = keyed[at];
        let mut path = lines[..i]
            .iter()
            .rev()
            .find(|l| l.starts_with('['))
            .map(|l| header_path(l))
            .unwrap_or_default();
        let (key, value) = lines[i].split_once(" = ").unwrap();
        let key = key.trim().to_owned();
        path.push(key.clone());
        let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        // Inside an inline table: `k = { a = 1, b = 2 }`.
        let inner = value
            .trim()
            .strip_prefix("{ ")
            .and_then(|t| t.split_once(" = "))
            .map(|(k, rest)| (k.to_owned(), rest));
        let edit = match (how, inner) {
            (0, _) => {
                out.remove(i);
                Edit::Removed
            }
            (1, _) => {
                out.insert(i, lines[i].to_owned());
                Edit::Twice
            }
            (2, _) => {
                out[i] = format!("{key} = {v}");
                Edit::Set(v.to_owned())
            }
            (4, Some((k, rest))) => {
                let tail = rest.split_once(", ").map_or("}", |(_, t)| t);
                let sep = if tail == "}" { " " } else { ", " };
                out[i] = format!("{key} = {{ {k} = {v}{sep}{tail}");
                path.push(k);
                Edit::Set(v.to_owned())
            }
            (5, Some(_)) => {
                out[i] = format!("{key} = {{ bogus_key = \"1\", {}", &value.trim()[2..]);
                path.push("bogus_key".into());
                Edit::Added("\"1\"".into())
            }
            _ => {
                out.insert(i, "bogus_key = \"1\"".into());
                path.pop();
                path.push("bogus_key".into());
                Edit::Added("\"1\"".into())
            }
        };
        let line = i + 1 + usize::from(matches!(edit, Edit::Twice));
        (out.join("\n"), path, edit, line)
    }

    /// Where the edits reach the keys of the schema (as the reference
    /// lists them, [`reference::keys`], so a new key is edited without a
    /// change here): the lines of the shipped file that set a key; the
    /// keys it leaves to their default, each with the line of its table's
    /// header to write it under (`None`: above every table), as paths (an
    /// entry of a table of named entries is the file's first); and the
    /// keys neither reaches (in a list's items, or in a table the file
    /// does not have), by their reference name.
    #[allow(clippy::type_complexity)]
    fn schema_sites() -> (Vec<usize>, Vec<(Option<usize>, Vec<String>)>, Vec<String>) {
        let lines: Vec<&str> = edited_base().lines().collect();
        let file: toml::Table = toml::from_str(edited_base()).unwrap();
        let keyed: Vec<usize> = (0..lines.len())
            .filter(|&i| {
                let l = lines[i].trim_start();
                !l.starts_with('#') && !l.starts_with('[') && l.contains(" = ")
            })
            .collect();
        let headers: Vec<(usize, Vec<String>)> = (0..lines.len())
            .filter(|&i| lines[i].starts_with('['))
            .map(|i| (i, header_path(lines[i])))
            .collect();
        let (mut absent, mut unreached) = (Vec::new(), Vec::new());
        'keys: for name in reference::keys() {
            let mut path: Vec<String> = Vec::new();
            let mut table = Some(&file);
            for part in name.split('.') {
                let part = if part == "<name>" {
                    match table.and_then(|t| t.keys().next()) {
                        Some(first) => first.clone(),
                        None => {
                            unreached.push(name);
                            continue 'keys;
                        }
                    }
                } else if part.ends_with("[]") {
                    unreached.push(name);
                    continue 'keys;
                } else {
                    part.to_owned()
                };
                table = table.and_then(|t| t.get(&part)).and_then(|v| v.as_table());
                path.push(part);
            }
            let parent = &path[..path.len() - 1];
            let key = path.last().unwrap();
            // The lines of its table: from its header to the next.
            let (from, header) = if parent.is_empty() {
                (0, None)
            } else {
                match headers.iter().find(|(_, p)| p == parent) {
                    Some((h, _)) => (h + 1, Some(*h)),
                    None => {
                        unreached.push(name);
                        continue;
                    }
                }
            };
            let to = headers
                .iter()
                .map(|(h, _)| *h)
                .find(|&h| h >= from)
                .unwrap_or(lines.len());
            let set = keyed.iter().any(|&i| {
                (from..to).contains(&i)
                    && lines[i].split(" = ").next().map(str::trim) == Some(key.as_str())
            });
            if !set {
                absent.push((header, path));
            }
        }
        (keyed, absent, unreached)
    }

    /// Every key of the schema is edited by the property below, as a line
    /// of the shipped file or written under its table; the keys it cannot
    /// reach are named here, each with the reason.
    #[test]
    fn the_edits_reach_every_key_of_the_schema() {
        let (_, absent, unreached) = schema_sites();
        let absent: Vec<String> = absent.iter().map(|(_, p)| p.join(".")).collect();
        for k in [
            "gateway.api_max_connections",
            "gateway.api_ping_interval",
            "gateway.ui_session_lifetime",
        ] {
            assert!(absent.iter().any(|a| a == k), "{k} not edited: {absent:?}");
        }
        // The edits write keys of tables, not of a list's items: the
        // maintenance windows' are read by their own tests.
        assert_eq!(
            unreached,
            [
                "registries.<name>.maintenance[].cron",
                "registries.<name>.maintenance[].duration"
            ]
        );
    }

    /// The value at `path` in the configuration as the program holds it
    /// (written back as JSON), if there is one.
    fn held<'a>(cfg: &'a serde_json::Value, path: &[String]) -> Option<&'a serde_json::Value> {
        path.iter().try_fold(cfg, |v, k| v.get(k))
    }

    /// A TOML value as JSON, for comparing with what the program holds.
    fn as_json(toml_value: &str) -> Option<serde_json::Value> {
        let t: toml::Table = toml::from_str(&format!("v = {toml_value}")).ok()?;
        serde_json::to_value(&t["v"]).ok()
    }

    /// What an edit must come to: refused naming what is wrong, or read
    /// holding what was written (see the property below).
    fn edit_holds(
        text: &str,
        path: &[String],
        edit: &Edit,
        line: usize,
    ) -> Result<(), TestCaseError> {
        let dotted = path.join(".");
        let (parent, key) = (path[..path.len() - 1].join("."), &path[path.len() - 1]);
        let refused = match parse::<GatewayConfig>(text, "edited.toml", std::iter::empty()) {
            Ok(cfg) => match cfg.validate("edited.toml") {
                Ok(()) => {
                    let holds = serde_json::to_value(&cfg).unwrap();
                    match edit {
                        Edit::Removed => {}
                        Edit::Twice => prop_assert!(false, "{dotted} twice was read"),
                        Edit::Set(v) | Edit::Added(v) => {
                            let want = as_json(v);
                            prop_assert!(
                                want.is_some(),
                                "{dotted} = {v}: read, but TOML cannot read {v}"
                            );
                            let got = held(&holds, path);
                            // A float key holds `-1` as `-1.0`.
                            let same = match (got, want.as_ref()) {
                                (Some(a), Some(b)) if a.is_number() && b.is_number() => {
                                    a.as_f64() == b.as_f64()
                                }
                                (a, b) => a == b,
                            };
                            prop_assert!(
                                same,
                                "{:?} at {} was read and validated, but the program holds {:?}",
                                edit,
                                dotted,
                                got
                            );
                        }
                    }
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            Err(e) => Some(e.to_string()),
        };
        if let Some(m) = refused {
            prop_assert!(m.starts_with("edited.toml: "), "{edit:?} at {dotted}: {m}");
            match edit {
                // TOML's own refusal says where: the line, which it quotes.
                Edit::Twice => prop_assert!(
                    m.contains(&format!("TOML parse error at line {line},"))
                        && m.contains("duplicate key")
                        && m.contains(&format!("{key} = ")),
                    "{dotted} twice: {m}"
                ),
                Edit::Set(v) if as_json(v).is_none() => prop_assert!(
                    m.contains(&format!("TOML parse error at line {line},")),
                    "{dotted} = {v}: {m}"
                ),
                // A cross-check names its other key too ("timeout:
                // must not be shorter than connect_timeout").
                Edit::Set(_) => prop_assert!(
                    m.contains(&format!("{dotted}: "))
                        || (m.contains(&format!("{parent}.")) && m.contains(key.as_str())),
                    "{edit:?}: the message does not name {dotted}: {m}"
                ),
                Edit::Added(_) => prop_assert!(
                    m.contains(&format!("{parent}: unknown field `{key}`")),
                    "{edit:?} at {dotted}: the message does not name it: {m}"
                ),
                Edit::Removed => prop_assert!(
                    m.contains(&format!("missing field `{key}`"))
                        || m.contains(&format!("{dotted}: ")),
                    "without {dotted}: {m}"
                ),
            }
        }
        Ok(())
    }

    /// Every key of the schema (a line of the file or one it leaves out)
    /// set to each kind of value: what the property below samples, all of
    /// it, for the edit that can go wrong most ways.
    #[test]
    fn every_key_set_to_each_kind_of_value_is_refused_naming_it_or_held() {
        let (keyed, absent, _) = sites();
        for at in 0..keyed.len() + absent.len() {
            for v in VALUES {
                let (text, path, edit, line) = edit_at(at, 2, v);
                if let Err(e) = edit_holds(&text, &path, &edit, line) {
                    panic!("{e}");
                }
            }
        }
    }

    proptest! {
        // Each case is one parse (~1 ms): enough cases that every kind of
        // edit meets every kind of key.
        #![proptest_config(ProptestConfig::with_cases(768))]

        /// An edited configuration is refused naming what is wrong, or
        /// read holding what was written: an unknown key (at any depth)
        /// is refused naming its path, a value of the wrong kind naming
        /// its key, a line twice naming the key; a value that is read and
        /// validated is the one the program then holds (never a default
        /// in its place, never dropped).
        #[test]
        fn an_edited_configuration_is_refused_naming_what_is_wrong((text, path, edit, line) in edited_gateway_toml()) {
            edit_holds(&text, &path, &edit, line)?;
        }
    }

    proptest! {
        /// A duration written back (`config check`, the reference) reads
        /// as the same duration.
        #[test]
        fn a_duration_written_back_reads_the_same(ms in 0u64..(10 * 365 * 86_400_000)) {
            let d = Duration::from_millis(ms);
            let s = format_duration(d);
            prop_assert_eq!(parse_duration(&s), Ok(d), "{}", s);
        }

        #[test]
        fn config_parsing_never_panics(s in "\\PC{0,200}") {
            let _ = parse::<GatewayConfig>(&s, "x", std::iter::empty());
            let _ = parse::<SimulatorConfig>(&s, "x", std::iter::empty());
            let _ = parse_duration(&s);
            let _ = webhook_key(&s);
            let _ = webhook_key(&format!("whsec_{s}"));
        }
    }

    /// A retry schedule that cannot move forward is refused naming its key;
    /// the edge of each rule is still taken.
    #[test]
    fn a_retry_schedule_that_cannot_move_forward_is_refused_naming_the_key() {
        let check = |line: &str| {
            let text = edited_base().replacen("\n[retry]\n", &format!("\n[retry]\n{line}\n"), 1);
            parse::<GatewayConfig>(&text, "r.toml", std::iter::empty())
                .unwrap()
                .validate("r.toml")
                .map_err(|e| e.to_string())
        };
        for (line, says) in [
            (
                "factor = -1.0",
                "r.toml: retry.factor: -1 must be a number of at least 1",
            ),
            ("factor = 0.5", "r.toml: retry.factor: 0.5 must be"),
            ("factor = nan", "r.toml: retry.factor: NaN must be"),
            ("factor = inf", "r.toml: retry.factor: inf must be"),
            ("base = \"0s\"", "r.toml: retry.base: must be more than 0"),
            ("lease = \"0s\"", "r.toml: retry.lease: must be more than 0"),
            (
                "deadline = \"0s\"",
                "r.toml: retry.deadline: must be more than 0",
            ),
            (
                "cap = \"1s\"",
                "r.toml: retry.cap: must not be shorter than retry.base",
            ),
            (
                "max_attempts = 0",
                "r.toml: retry.max_attempts: must be at least 1",
            ),
            (
                "delivery_attempts = 0",
                "r.toml: retry.delivery_attempts: must be at least 1",
            ),
        ] {
            let e = check(line).expect_err(line);
            assert!(e.starts_with(says), "{line}: {e}");
        }
        for line in [
            "factor = 1.0",
            "cap = \"10s\"",
            "max_attempts = 1",
            "delivery_attempts = 1",
        ] {
            assert_eq!(check(line), Ok(()), "{line}");
        }
    }

    /// X-Road's signed documents are tried at least once; the default is
    /// taken.
    #[test]
    fn signed_document_attempts_of_zero_are_refused_naming_the_key() {
        let check = |line: &str| {
            let text =
                edited_base().replacen("\n[evidence]\n", &format!("\n[evidence]\n{line}\n"), 1);
            assert_ne!(text, edited_base());
            parse::<GatewayConfig>(&text, "e.toml", std::iter::empty())
                .unwrap()
                .validate("e.toml")
                .map_err(|e| e.to_string())
        };
        let e = check("signed_document_attempts = 0").unwrap_err();
        assert!(
            e.starts_with("e.toml: evidence.signed_document_attempts: must be at least 1"),
            "{e}"
        );
        assert_eq!(check("signed_document_attempts = 1"), Ok(()));
        let d = EvidenceConfig::default();
        assert_eq!(
            (d.signed_document_attempts, d.signed_document_force_after),
            (20, std::time::Duration::from_secs(300))
        );
    }

    #[test]
    fn webhook_secrets_are_checked_with_a_precise_reason() {
        assert_eq!(
            webhook_key("abc").unwrap_err(),
            "must start with whsec_ (Standard Webhooks)"
        );
        assert!(webhook_key("whsec_!!")
            .unwrap_err()
            .starts_with("the part after whsec_ is not base64"));
        assert!(webhook_key("whsec_c2hvcnQ=")
            .unwrap_err()
            .starts_with("must hold 24 to 64 bytes, not 5"));
        assert_eq!(
            webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .len(),
            24
        );
    }
}
