//! The import rules of ARCHITECTURE.md ("Who may use whom"), checked
//! against the source: every `crate::part` that a part's code names (doc
//! and line comments aside) is a use of that part.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The parts each part of `src/` uses.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let part = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut used = BTreeSet::new();
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for name in crate_paths(code) {
                    if name != part {
                        used.insert(name);
                    }
                }
            }
        }
        out.insert(part, used);
    }
    out
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The first segment after each `crate::` in `code`, also inside groups:
/// `crate::{a, b::c}` uses a and b.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // the items at the group's own depth: `a`, `b::{c, d}`
            let (mut depth, mut item) = (0, String::new());
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// The rules: a part, and the parts it must not use (`None`: any).
fn rules() -> Vec<(String, Option<Vec<String>>)> {
    let doc = include_str!("../ARCHITECTURE.md");
    let start = doc
        .find("<!-- imports:begin -->")
        .expect("no imports:begin marker");
    let end = doc
        .find("<!-- imports:end -->")
        .expect("no imports:end marker");
    doc[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .map(|l| {
            if let Some(part) = l.strip_suffix(" uses nothing") {
                (part.to_owned(), None)
            } else {
                let (part, banned) = l.split_once(" does not use: ").unwrap_or_else(|| {
                    panic!("a rule reads 'X uses nothing' or 'X does not use: a, b': {l}")
                });
                (
                    part.to_owned(),
                    Some(banned.split(", ").map(str::to_owned).collect()),
                )
            }
        })
        .collect()
}

#[test]
fn every_part_keeps_to_the_import_rules() {
    let uses = uses();
    let rules = rules();
    // The rules the project was rebuilt on must stay written down.
    let named: BTreeSet<&str> = rules.iter().map(|(p, _)| p.as_str()).collect();
    for p in [
        "ids",
        "xml",
        "limits",
        "lifecycle",
        "store",
        "exchange",
        "api",
    ] {
        assert!(named.contains(p), "ARCHITECTURE.md has no rule for {p}");
    }
    let mut broken = Vec::new();
    for (part, banned) in &rules {
        let used = uses
            .get(part)
            .unwrap_or_else(|| panic!("a rule names {part}, which is not a folder of src/"));
        for u in used {
            let bad = match banned {
                None => true,
                Some(list) => list.contains(u),
            };
            if bad {
                broken.push(format!("{part} uses {u}"));
            }
        }
        if let Some(list) = banned {
            for b in list {
                assert!(
                    uses.contains_key(b),
                    "the rule for {part} names {b}, which is not a part"
                );
            }
        }
    }
    assert!(broken.is_empty(), "import rules broken: {broken:?}");
}

#[test]
fn the_reader_of_crate_paths_sees_groups_and_paths() {
    assert_eq!(
        crate_paths("use crate::{store::{self, Due}, limits, self};"),
        ["store", "limits"]
    );
    assert_eq!(
        crate_paths("let x = crate::audit::rule(k); crate::ids::redact(y)"),
        ["audit", "ids"]
    );
    assert!(crate_paths("no paths here").is_empty());
}
