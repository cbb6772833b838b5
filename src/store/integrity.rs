//! What a check of a store found, whichever store: the trees (or tables)
//! read, and what is wrong, by tree and key. The sled store's full check
//! is `embedded::check`'s; PostgreSQL's, `postgres::check`'s.

use std::collections::BTreeMap;

use serde::Serialize;

/// One thing found wrong: the tree, the key (or the keys around what could
/// not be read) and what is wrong with it. Never a value: keys hold ids,
/// case numbers and keyed hashes, no personal data.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damage {
    pub tree: String,
    pub key: String,
    pub problem: String,
}

/// What the check found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Entries read, by tree.
    pub read: BTreeMap<String, u64>,
    /// The first [`Report::LISTED`] things found wrong.
    pub damage: Vec<Damage>,
    /// How many were found in all.
    pub problems: u64,
}

impl Report {
    pub const LISTED: usize = 200;

    pub fn is_clean(&self) -> bool {
        self.problems == 0
    }

    pub fn found(&mut self, tree: &str, key: String, problem: String) {
        self.problems += 1;
        if self.damage.len() < Self::LISTED {
            self.damage.push(Damage {
                tree: tree.into(),
                key,
                problem,
            });
        }
    }

    pub fn merge(&mut self, other: Report) {
        for (t, n) in other.read {
            *self.read.entry(t).or_default() += n;
        }
        for d in other.damage {
            if self.damage.len() < Self::LISTED {
                self.damage.push(d);
            }
        }
        self.problems += other.problems;
    }

    /// One line for the start-up error and the log.
    pub fn summary(&self) -> String {
        match self.damage.first() {
            None => "no damage found".into(),
            Some(d) => format!(
                "{} problem(s) found by the full check, the first in tree `{}` at {}: {}",
                self.problems, d.tree, d.key, d.problem
            ),
        }
    }
}
