//! `docs/configuration.md`, made from this folder's own source: every key
//! of every section with its doc comment, and its default as the code
//! gives it (a configuration with only the required keys, read and
//! written back). A test keeps the checked-in file equal to what this
//! makes, so the reference cannot fall behind a new key.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::GatewayConfig;

/// The source the reference is read from.
const SOURCES: [&str; 2] = [include_str!("gateway.rs"), include_str!("mod.rs")];

/// A configuration with every required key and nothing else, one entry in
/// each table of named entries (`<name>`), so that their defaults show.
const MINIMAL: &str = r#"
[gateway]
client = { instance = "RS", class = "GOV", code = "1" }
tls_cert = "r"
tls_key = "r"
sign_cert = "r"
sign_key = "r"
api_tls = { cert = "r", key = "r" }
[registries.name]
url = "https://r/"
tls_ca = "r"
signer_ca = "r"
member = { instance = "RS", class = "GOV", code = "1" }
maintenance = [{ cron = "0 0 2 * * Sun", duration = "1h" }]
[services.name]
registry = "name"
namespace = "r"
prefix = "r"
request = "r"
document = "r"
subjects = ["jmbg"]
[clients.name]
token_sha256 = "r"
[procedures.name]
services = ["name"]
"#;

struct Field {
    name: String,
    ty: String,
    doc: String,
    required: bool,
}

struct Struct {
    doc: String,
    fields: Vec<Field>,
}

/// The structs of the configuration's source, by name.
fn structs() -> BTreeMap<String, Struct> {
    let mut out = BTreeMap::new();
    for src in SOURCES {
        let mut doc = Vec::<String>::new();
        let mut current: Option<(String, Struct)> = None;
        let mut default = false;
        for line in src.lines() {
            let t = line.trim();
            if let Some(d) = t.strip_prefix("///") {
                doc.push(d.trim().to_owned());
                continue;
            }
            if t.starts_with("#[serde(") {
                default |= t.contains("default");
                continue;
            }
            if t.starts_with("#[") {
                continue;
            }
            if let Some(rest) = t.strip_prefix("pub struct ") {
                if let Some(name) = rest.strip_suffix(" {") {
                    current = Some((
                        name.to_owned(),
                        Struct {
                            doc: doc.join(" "),
                            fields: Vec::new(),
                        },
                    ));
                }
            } else if t == "}" {
                if let Some((name, s)) = current.take() {
                    out.insert(name, s);
                }
            } else if let (Some((_, s)), Some(f)) = (current.as_mut(), t.strip_prefix("pub ")) {
                if let Some((name, ty)) = f.split_once(": ") {
                    let ty = ty.trim_end_matches(',').to_owned();
                    s.fields.push(Field {
                        name: name.to_owned(),
                        required: !default && !ty.starts_with("Option<"),
                        ty,
                        doc: doc.join(" "),
                    });
                }
            }
            doc.clear();
            default = false;
        }
    }
    out
}

/// The type inside `Option<…>`, `Vec<…>` or `BTreeMap<String, …>`, and
/// how the key is written: a table, a table of named entries, a list.
fn shape(ty: &str) -> (&str, &'static str) {
    if let Some(r) = ty.strip_prefix("Option<").and_then(|r| r.strip_suffix('>')) {
        return (r, "");
    }
    if let Some(r) = ty
        .strip_prefix("BTreeMap<String, ")
        .and_then(|r| r.strip_suffix('>'))
    {
        return (r, ".<name>");
    }
    if let Some(r) = ty.strip_prefix("Vec<").and_then(|r| r.strip_suffix('>')) {
        return (r, "[]");
    }
    (ty, "")
}

/// A default as it would be written in the file.
fn toml_value(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) => format!("`{s:?}`"),
        Value::Array(a) if a.is_empty() => "`[]`".into(),
        Value::Object(o) if o.is_empty() => "`{}`".into(),
        other => format!("`{other}`"),
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = v;
    for p in path {
        at = match at {
            Value::Object(m) => m.get(p.as_str())?,
            Value::Array(a) => a.first()?.get(p.as_str())?,
            _ => return None,
        };
    }
    Some(at)
}

/// Every key the reference lists, as its dotted path from the top:
/// `gateway.api_max_connections`, `registries.<name>.url` (an entry of a
/// table of named entries), `registries.<name>.maintenance[].cron` (a
/// key of each item of a list). Tests edit each of them.
pub fn keys() -> Vec<String> {
    let structs = structs();
    let mut out = Vec::new();
    let mut queue = vec![(String::new(), "GatewayConfig".to_owned())];
    while let Some((section, ty)) = queue.pop() {
        let Some(s) = structs.get(&ty) else { continue };
        for f in &s.fields {
            let (inner, how) = shape(&f.ty);
            let name = if section.is_empty() {
                f.name.clone()
            } else {
                format!("{section}.{}", f.name)
            };
            if structs.contains_key(inner) && inner != "Member" {
                queue.push((format!("{name}{how}"), inner.to_owned()));
            } else {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

/// The reference, as `docs/configuration.md` holds it.
pub fn markdown() -> String {
    let structs = structs();
    let minimal: Value = super::parse::<GatewayConfig>(MINIMAL, "reference", std::iter::empty())
        .ok()
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(Value::Null);
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every key of `gateway.toml` (`/etc/jumgw/gateway.toml` when installed from the \
         package), with its default. Made by `jumgw config reference` from the code; a test \
         keeps this file equal to it. Check a file before a restart with `jumgw config check \
         --config FILE`.\n\n\
         Any key can be set from the environment instead: `JUMGW_` and the key's path in \
         upper case, levels joined by `__`, e.g. `JUMGW_REGISTRIES__CIVIL__URL` or \
         `JUMGW_ALERTS__PASSWORD` (the better place for secrets). A file may begin with \
         `extends = \"base.toml\"` and say only what differs. Durations are written `250ms`, \
         `5s`, `10m`, `1h`, `1d`; relative paths are taken from the working directory, key \
         files from the data folder.\n",
    );
    let mut queue: Vec<(String, String, Vec<String>)> =
        vec![(String::new(), "GatewayConfig".into(), Vec::new())];
    while let Some((section, ty, path)) = queue.pop() {
        let Some(s) = structs.get(&ty) else { continue };
        let mut rows = String::new();
        let mut nested = Vec::new();
        for f in &s.fields {
            let (inner, how) = shape(&f.ty);
            let mut p = path.clone();
            p.push(f.name.clone());
            if structs.contains_key(inner) && inner != "Member" {
                let name = if section.is_empty() {
                    format!("{}{how}", f.name)
                } else {
                    format!("{section}.{}{how}", f.name)
                };
                if how == ".<name>" {
                    p.push("name".into());
                }
                nested.push((name, inner.to_owned(), p, f.doc.clone()));
                continue;
            }
            let default = if f.required {
                "required".to_owned()
            } else {
                lookup(&minimal, &p).map_or_else(|| "unset".into(), toml_value)
            };
            let doc = if f.doc.is_empty() {
                "—".to_owned()
            } else {
                f.doc.replace('|', "\\|")
            };
            let _ = writeln!(rows, "| `{}` | {default} | {doc} |", f.name);
        }
        if !rows.is_empty() {
            let title = if section.is_empty() {
                "(top level)".into()
            } else {
                format!("[{section}]")
            };
            let _ = write!(out, "\n## {title}\n\n");
            if !s.doc.is_empty() {
                let _ = write!(out, "{}\n\n", s.doc);
            }
            out.push_str("| Key | Default | Meaning |\n|---|---|---|\n");
            out.push_str(&rows);
        }
        // Sections in the order the struct names them.
        for (name, ty, p, _) in nested.into_iter().rev() {
            queue.push((name, ty, p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_and_key_of_the_configuration_is_in_the_reference() {
        let md = markdown();
        for section in [
            "[gateway]",
            "[gateway.api_tls]",
            "[registries.<name>]",
            "[registries.<name>.maintenance[]]",
            "[alerts]",
            "[log]",
            "[evidence]",
            "[clients.<name>]",
            "[services.<name>]",
        ] {
            assert!(
                md.contains(&format!("## {section}\n")),
                "no section {section}:\n{md}"
            );
        }
        assert!(md.contains("| `interval` | `\"5m\"` |"), "{md}");
        assert!(md.contains("| `url` | required |"), "{md}");
        assert!(md.contains("| `sled_flush_ms` | `500` |"), "{md}");
        assert!(md.contains("| `version` | `\"v1\"` |"), "{md}");
        // Every key says what it is for.
        let bare: Vec<&str> = md.lines().filter(|l| l.ends_with("| — |")).collect();
        assert!(bare.is_empty(), "keys without a description: {bare:?}");
        // The reference was written from a configuration that loads.
        assert!(
            super::super::parse::<GatewayConfig>(MINIMAL, "reference", std::iter::empty()).is_ok()
        );
    }
}

#[cfg(test)]
mod in_sync {
    #[test]
    fn docs_configuration_md_is_what_the_code_makes() {
        let checked_in = include_str!("../../docs/configuration.md");
        assert!(
            checked_in == super::markdown(),
            "docs/configuration.md is behind the code: run `jumgw config reference > docs/configuration.md`"
        );
    }
}
