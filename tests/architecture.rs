//! The import rules of ARCHITECTURE.md ("Who may use whom"), checked
//! against the source read as Rust (by `syn`, so comments and strings are
//! no code and an import may span many lines): every part of the crate
//! that a part's code names, through `crate::`, `super::` or `self::` in
//! a `use` (groups nested to any depth), a path in code, or a path in a
//! macro's arguments, is a use of that part.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// The parts each part of `src/` (a folder, or a file beside them) uses.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        // A folder is a part, and so is a file beside them (`lang.rs`,
        // `sync.rs`), but for the crate's root and the binary.
        let (part, files) = if path.is_dir() {
            let part = path.file_name().unwrap().to_string_lossy().into_owned();
            (part, rust_files(&path))
        } else {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.extension().is_none_or(|x| x != "rs") || ["lib", "main"].contains(&&*stem) {
                continue;
            }
            (stem, vec![path.clone()])
        };
        let mut used = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let module = module_path(&src, &file);
            let names =
                crate_paths(&text, &module).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            used.extend(names.into_iter().filter(|n| *n != part));
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

/// The module a file under `src` is: `api/ui/session.rs` is
/// `api::ui::session`, `api/mod.rs` is `api`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let mut m: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if m.last().is_some_and(|l| l == "mod") {
        m.pop();
    }
    m
}

/// The crate's top-level modules that the source of the module `module`
/// names: `crate::a` (also `$crate::a`), `super::…::a` that climbs to
/// the crate's root, `self::a` at the root; in `use` items (`use
/// crate::{a, b::{c, d}}` over any number of lines), in paths anywhere in
/// code, and in the tokens of macro calls. Comments and string literals
/// are not code.
fn crate_paths(source: &str, module: &[String]) -> Result<BTreeSet<String>, syn::Error> {
    let file = syn::parse_file(source)?;
    let mut r = Reader {
        module: module.to_vec(),
        found: BTreeSet::new(),
    };
    r.visit_file(&file);
    Ok(r.found)
}

struct Reader {
    /// The module being read, from the crate's root (inline `mod`s too).
    module: Vec<String>,
    found: BTreeSet<String>,
}

impl Reader {
    /// A path's leading segments: the top-level module it names, if it
    /// starts from the crate's root (`crate`) or climbs to it (`super`,
    /// `self`).
    fn note(&mut self, segments: &[String]) {
        let mut at: Vec<String> = self.module.clone();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                at.clear();
                rest = &rest[1..];
            }
            Some("super" | "self") => {
                while let Some(s) = rest.first() {
                    match s.as_str() {
                        "super" => {
                            if at.pop().is_none() {
                                return; // above the crate: not ours to judge
                            }
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            _ => return,
        }
        // Below a top-level module already: its first segment is the part.
        let name = match at.first() {
            Some(top) => top.clone(),
            None => match rest.first() {
                Some(n) => n.clone(),
                None => return,
            },
        };
        if name != "self" {
            self.found.insert(name);
        }
    }

    /// Each path a `use` tree names, with the segments before it.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.note(prefix);
                prefix.pop();
            }
            syn::UseTree::Rename(n) => {
                prefix.push(n.ident.to_string());
                self.note(prefix);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                prefix.push("*".into());
                self.note(prefix);
                prefix.pop();
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `crate :: a`, `super :: a` … in a macro's tokens, at any depth.
    fn tokens(&mut self, tokens: TokenStream) {
        let list: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < list.len() {
            match &list[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if ["crate", "super", "self"].contains(&&*id.to_string()) => {
                    // The path: idents joined by `::` (two `:` puncts).
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while j + 2 < list.len() {
                        match (&list[j], &list[j + 1], &list[j + 2]) {
                            (TokenTree::Punct(a), TokenTree::Punct(b), TokenTree::Ident(n))
                                if a.as_char() == ':' && b.as_char() == ':' =>
                            {
                                segments.push(n.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if segments.len() > 1 {
                        self.note(&segments);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Reader {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.note(&segments);
        syn::visit::visit_path(self, p);
    }

    // `pub(crate)`, `pub(super)`: who may see an item, not a use.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    // An attribute's arguments are tokens too (`#[utoipa::path(body =
    // crate::x::T)]`, `#[arg(default_value = crate::y::Z)]`).
    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        if let syn::Meta::List(l) = &a.meta {
            self.tokens(l.tokens.clone());
        }
        syn::visit::visit_attribute(self, a);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// A rule of ARCHITECTURE.md: which parts a part may use.
#[derive(Debug)]
enum Rule {
    /// `X uses nothing`
    Nothing,
    /// `X uses only: a, b`
    Only(Vec<String>),
    /// `X does not use: a, b`
    Not(Vec<String>),
    /// `X may use any part`: the top of the house.
    Any,
}

impl Rule {
    fn allows(&self, part: &str) -> bool {
        match self {
            Rule::Nothing => false,
            Rule::Only(list) => list.iter().any(|p| p == part),
            Rule::Not(list) => !list.iter().any(|p| p == part),
            Rule::Any => true,
        }
    }

    fn names(&self) -> &[String] {
        match self {
            Rule::Nothing | Rule::Any => &[],
            Rule::Only(l) | Rule::Not(l) => l,
        }
    }
}

/// The rules, as ARCHITECTURE.md writes them between its markers.
fn rules() -> Vec<(String, Rule)> {
    rules_in(include_str!("../ARCHITECTURE.md"))
}

fn rules_in(doc: &str) -> Vec<(String, Rule)> {
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
            let list = |s: &str| s.split(", ").map(str::to_owned).collect();
            if let Some(part) = l.strip_suffix(" uses nothing") {
                (part.to_owned(), Rule::Nothing)
            } else if let Some(part) = l.strip_suffix(" may use any part") {
                (part.to_owned(), Rule::Any)
            } else if let Some((part, allowed)) = l.split_once(" uses only: ") {
                (part.to_owned(), Rule::Only(list(allowed)))
            } else if let Some((part, banned)) = l.split_once(" does not use: ") {
                (part.to_owned(), Rule::Not(list(banned)))
            } else {
                panic!("a rule reads 'X uses nothing', 'X uses only: a, b', 'X does not use: a, b' or 'X may use any part': {l}")
            }
        })
        .collect()
}

/// Each use a rule forbids: "part uses other".
fn broken(uses: &BTreeMap<String, BTreeSet<String>>, rules: &[(String, Rule)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (part, rule) in rules {
        let used = uses
            .get(part)
            .unwrap_or_else(|| panic!("a rule names {part}, which is not a folder of src/"));
        for u in used {
            if !rule.allows(u) {
                broken.push(format!("{part} uses {u}"));
            }
        }
        for b in rule.names() {
            assert!(
                uses.contains_key(b),
                "the rule for {part} names {b}, which is not a part"
            );
        }
    }
    broken
}

/// Every loop between parts, each as the path that closes it
/// (`a -> b -> a`): the parts of each strongly connected component of the
/// graph of uses (Tarjan), and within one, a shortest way back to its
/// first part.
fn loops(uses: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    struct T<'a> {
        uses: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.uses.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.uses.contains_key(w) {
                    continue; // a file of src/, not a folder: no part
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    c.push(w);
                    if w == v {
                        break;
                    }
                }
                self.out.push(c);
            }
        }
    }
    let mut t = T {
        uses,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in uses.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    let mut found = Vec::new();
    for mut c in t.out {
        let self_loop = c.len() == 1 && uses[c[0]].contains(c[0]);
        if c.len() < 2 && !self_loop {
            continue;
        }
        c.sort();
        // A shortest way from the first part back to it, within the loop.
        let inside: BTreeSet<&str> = c.iter().copied().collect();
        let start = c[0];
        let mut came: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut end = None;
        while let Some(v) = queue.pop_front() {
            for w in &uses[v] {
                let w = w.as_str();
                if w == start {
                    end = Some(v);
                    break;
                }
                if inside.contains(w) && !came.contains_key(w) {
                    came.insert(w, v);
                    queue.push_back(w);
                }
            }
            if end.is_some() {
                break;
            }
        }
        let mut path = vec![start];
        let mut at = end.unwrap();
        while at != start {
            path.push(at);
            at = came[at];
        }
        path[1..].reverse();
        path.push(start);
        found.push(format!(
            "{} (the loop holds {})",
            path.join(" -> "),
            c.join(", ")
        ));
    }
    found
}

#[test]
fn every_part_keeps_to_the_import_rules() {
    let uses = uses();
    let rules = rules();
    // Every folder of src/ is a part with a rule, and no part is in a
    // loop with another: each stands above all it uses.
    let ruled: BTreeSet<&str> = rules.iter().map(|(p, _)| p.as_str()).collect();
    let unruled: Vec<&String> = uses
        .keys()
        .filter(|p| !ruled.contains(p.as_str()))
        .collect();
    assert!(
        unruled.is_empty(),
        "ARCHITECTURE.md has no rule for {unruled:?}"
    );
    let loops = loops(&uses);
    assert!(loops.is_empty(), "parts that use each other: {loops:?}");
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
    // The reader sees the tree: parts that are known to use others do.
    for (part, other) in [
        ("api", "store"),
        ("dispatch", "exchange"),
        ("daemon", "api"),
    ] {
        assert!(
            uses[part].contains(other),
            "{part} is read as not using {other}: {:?}",
            uses[part]
        );
    }
    let broken = broken(&uses, &rules);
    assert!(broken.is_empty(), "import rules broken: {broken:?}");
}

fn names(source: &str, module: &[&str]) -> Vec<String> {
    let module: Vec<String> = module.iter().map(|m| m.to_string()).collect();
    crate_paths(source, &module).unwrap().into_iter().collect()
}

#[test]
fn the_reader_of_crate_paths_sees_groups_and_paths() {
    assert_eq!(
        names("use crate::{store::{self, Due}, limits, self};", &["api"]),
        ["limits", "store"]
    );
    assert_eq!(
        names(
            "fn f() { let x = crate::audit::rule(k); crate::ids::redact(y) }",
            &["api"]
        ),
        ["audit", "ids"]
    );
    assert!(names("fn no_paths_here() {}", &["api"]).is_empty());
    // Over many lines, nested, renamed, globbed; `super` climbing to the
    // root from a file and from an inline module; paths in types, in
    // `impl`s and in a macro's and an attribute's arguments; `$crate` in a macro's body.
    let source = r#"
        use crate::{
            limits,
            store::{
                self,
                Due,
            },
            exchange as ex,
        };
        use super::super::audit::{
            Draft,
        };
        use super::sibling::Thing;
        pub(crate) struct S(crate::ids::RequestId);
        impl crate::protocol::Envelope for S {}
        fn f() -> Result<(), crate::pki::TlsError> {
            tracing::info!(id = %crate::metrics::accepted("x", 1), "{}", super::super::dispatch::X);
            Ok(())
        }
        macro_rules! m { () => { $crate::evidence::seal() } }
        #[utoipa::path(get, responses((status = 200, body = crate::ops::Stats)))]
        fn handler() {}
        mod tests {
            use super::super::super::delivery::*;
            use super::*;
        }
        // use crate::commented_out;
        /// Docs name crate::doc_only, and so does "crate::a_string".
        const S: &str = "crate::a_string";
    "#;
    assert_eq!(
        names(source, &["api", "ui"]),
        [
            "api", "audit", "delivery", "dispatch", "evidence", "exchange", "ids", "limits",
            "metrics", "ops", "pki", "protocol", "store"
        ]
    );
}

/// A forbidden import written as a group over many lines, or reached by
/// `super::` from a part's own module, is caught by the rules as they
/// are written; the same file without it is not.
#[test]
fn a_forbidden_import_over_many_lines_is_caught() {
    let rules = rules();
    let check = |source: &str| {
        let mut uses: BTreeMap<String, BTreeSet<String>> =
            uses().into_keys().map(|p| (p, BTreeSet::new())).collect();
        uses.insert(
            "lifecycle".into(),
            crate_paths(source, &["lifecycle".to_owned(), "retry".to_owned()])
                .unwrap()
                .into_iter()
                .filter(|n| n != "lifecycle")
                .collect(),
        );
        broken(&uses, &rules)
    };
    let forbidden =
        "use crate::{\n    ids::RequestId,\n    store::{\n        QueueStore,\n    },\n};\n";
    assert_eq!(check(forbidden), ["lifecycle uses store"]);
    assert_eq!(
        check("fn f() { let _ = super::super::dispatch::Dispatcher::new; }"),
        ["lifecycle uses dispatch"]
    );
    assert!(check("use crate::{\n    ids::RequestId,\n    time::now_ms,\n};\n").is_empty());
    // Under "uses only", a part not named is forbidden too.
    assert_eq!(check("use crate::limits;"), ["lifecycle uses limits"]);
}

/// The loop finder finds a loop of any length, names it by a way around
/// it, and finds none where the uses only go down.
#[test]
fn a_loop_between_parts_is_found() {
    let graph = |edges: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            m.entry(a.to_string()).or_default().insert(b.to_string());
            m.entry(b.to_string()).or_default();
        }
        m
    };
    let down = [
        ("api", "ops"),
        ("ops", "store"),
        ("api", "store"),
        ("store", "ids"),
    ];
    assert!(loops(&graph(&down)).is_empty());
    let mut around = down.to_vec();
    around.push(("store", "api"));
    assert_eq!(
        loops(&graph(&around)),
        ["api -> store -> api (the loop holds api, ops, store)"]
    );
    assert_eq!(
        loops(&graph(&[
            ("config", "pki"),
            ("pki", "metrics"),
            ("metrics", "config"),
            ("ids", "ids")
        ])),
        [
            "config -> pki -> metrics -> config (the loop holds config, metrics, pki)",
            "ids -> ids (the loop holds ids)"
        ]
    );
}
