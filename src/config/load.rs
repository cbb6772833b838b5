//! Reading a configuration: a file and the files it `extends`, then the
//! `JUMGW_*` environment, layered by figment and read into typed values,
//! with errors that name the file, the key and the problem.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// Reads a TOML file, applies `JUMGW_*` overrides and deserialises it.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let mut files = Vec::new();
    read_chain(path, 0, &mut files)?;
    layered(files, &path.display().to_string(), std::env::vars())
}

/// A file and the files it `extends` (a path relative to it), the one it
/// extends first: each layer overrides the one before key by key, so a
/// variant (config/gateway-postgres.toml) says only what differs.
fn read_chain(path: &Path, depth: usize, files: &mut Vec<toml::Table>) -> Result<(), ConfigError> {
    let origin = path.display().to_string();
    let perr = |message: String| ConfigError::Parse {
        path: origin.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: origin.clone(),
        source,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| perr(e.to_string()))?;
    if let Some(base) = table.remove("extends") {
        let base = base.as_str().ok_or_else(|| {
            perr("extends: expected the name of another configuration file".into())
        })?;
        if depth >= 4 {
            return Err(perr("extends: more than 4 files deep (a loop?)".into()));
        }
        read_chain(
            &path.parent().unwrap_or(Path::new(".")).join(base),
            depth + 1,
            files,
        )?;
    }
    files.push(table);
    Ok(())
}

/// Parses TOML text with the given environment overrides.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    env: impl Iterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string(),
    })?;
    layered(vec![table], origin, env)
}

/// The layers, lowest first (the files, then the environment), merged and
/// read by figment: tables merge key by key, anything else is replaced.
/// An environment value is read as figment reads one: `true`, numbers,
/// `[a, b]` lists and `{k = v}` tables, anything else a string; so
/// `JUMGW_CLIENTS__X__SERVICES='["civil.birth-extract"]'` sets a list.
fn layered<T: DeserializeOwned>(
    files: Vec<toml::Table>,
    origin: &str,
    env: impl Iterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    use figment::providers::Serialized;
    use figment::value::{Dict, Value};
    let top: std::collections::BTreeSet<String> =
        files.iter().flat_map(|t| t.keys().cloned()).collect();
    let mut fig = figment::Figment::new();
    for t in files {
        fig = fig.merge(Serialized::defaults(t));
    }
    let mut overrides = Dict::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("JUMGW_") else {
            continue;
        };
        // Variables that are not key paths (JUMGW_TOKEN, JUMGW_SCHEMAS) are
        // for other parts of the program.
        if !rest.contains("__") && !top.contains(&rest.to_lowercase()) {
            continue;
        }
        let keys: Vec<String> = rest.split("__").map(|s| s.to_lowercase()).collect();
        let value: Value = v
            .parse()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        set_path(&mut overrides, &keys, value);
    }
    fig = fig.merge(Serialized::defaults(overrides));
    fig.extract::<T>().map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: figment_message(e),
    })
}

/// A figment error as we say it: the key path, then the problem (its own
/// text names the profile and the provider's source location, which mean
/// nothing to an operator).
fn figment_message(e: figment::Error) -> String {
    use figment::error::Kind;
    let Some(e) = e.into_iter().next() else {
        return "unreadable configuration".into();
    };
    let what = match &e.kind {
        Kind::UnknownField(field, expected) => format!(
            "unknown field `{field}`, expected one of {}",
            expected
                .iter()
                .map(|x| format!("`{x}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::MissingField(field) => format!("missing field `{field}`"),
        other => other.to_string(),
    };
    // An unknown field is the last part of its path already (a missing
    // one's path is the table that lacks it).
    let path: Vec<&str> = match &e.kind {
        Kind::UnknownField(..) => e
            .path
            .iter()
            .take(e.path.len().saturating_sub(1))
            .map(String::as_str)
            .collect(),
        _ => e.path.iter().map(String::as_str).collect(),
    };
    if path.is_empty() {
        what
    } else {
        format!("{}: {what}", path.join("."))
    }
}

fn set_path(table: &mut figment::value::Dict, keys: &[String], v: figment::value::Value) {
    use figment::value::{Dict, Value};
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::from(Dict::new());
        }
        match entry {
            Value::Dict(_, next) => t = next,
            _ => return,
        }
    }
    t.insert(last.clone(), v);
}
