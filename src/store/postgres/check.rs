//! The full check of a PostgreSQL store (`jumgw store check --store URL`):
//! every record and audit entry decodes, the columns the queries select by
//! agree with the records they were written from, the counters with the
//! records, and each document a record names is there. PostgreSQL checks
//! its own pages (data checksums, `amcheck`); this checks what we wrote.

use std::collections::BTreeMap;

use super::conn::Db;
use super::{Columns, PgStore};
use crate::store::integrity::Report;
use crate::store::{decode, StoreError};

/// Rows per page of the walk.
const PAGE: i64 = 5_000;

impl PgStore {
    /// One query on a pooled session.
    async fn query(
        &self,
        sql: &str,
        p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.with(async |c| c.rows(sql, p).await.map_err(|e| self.err(e)))
            .await
    }

    pub(super) async fn check_all(&self) -> Result<Report, StoreError> {
        let mut report = Report::default();
        let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut after = String::new();
        let mut n = 0u64;
        let mut named: Vec<String> = Vec::new();
        loop {
            let rows = self
                .query(
                    "SELECT id, case_no, state, registry, due_ms, work, record, deadline_ms, \
                     attention, at_risk, stamp_ms FROM requests WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &PAGE],
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for row in &rows {
                n += 1;
                let id: String = row.get(0);
                let text: String = row.get(6);
                let r = match decode(id.as_bytes(), text.as_bytes()) {
                    Ok(r) => r,
                    Err(e) => {
                        report.found("requests", id, e.to_string());
                        continue;
                    }
                };
                let want = Columns::of(std::iter::once(&r));
                let mut differs = Vec::new();
                if want.ids[0] != id {
                    differs.push("id");
                }
                if want.cases[0] != row.get::<_, String>(1) {
                    differs.push("case_no");
                }
                if want.states[0] != row.get::<_, String>(2) {
                    differs.push("state");
                }
                if want.registries[0] != row.get::<_, String>(3) {
                    differs.push("registry");
                }
                if want.dues[0] != row.get::<_, Option<i64>>(4) {
                    differs.push("due_ms");
                }
                if want.works[0] != row.get::<_, Option<String>>(5) {
                    differs.push("work");
                }
                if Some(want.deadlines[0]) != row.get::<_, Option<i64>>(7) {
                    differs.push("deadline_ms");
                }
                if want.attention[0] != row.get::<_, bool>(8) {
                    differs.push("attention");
                }
                if want.at_risk[0] != row.get::<_, bool>(9) {
                    differs.push("at_risk");
                }
                if want.stamps[0] != row.get::<_, Option<i64>>(10) {
                    differs.push("stamp_ms");
                }
                if !differs.is_empty() {
                    report.found(
                        "requests",
                        id.clone(),
                        format!(
                            "the row disagrees with its record in {}",
                            differs.join(", ")
                        ),
                    );
                }
                named.extend(r.document_id.clone());
                *counts
                    .entry((r.registry.to_string(), r.state.name().to_owned()))
                    .or_default() += 1;
                if r.at_risk_open() {
                    *counts
                        .entry((r.registry.to_string(), "!at_risk".to_owned()))
                        .or_default() += 1;
                }
            }
        }
        report.read.insert("requests".into(), n);
        // The counters, summed over their shards.
        let held = self
            .query(
                "SELECT registry, state, sum(n)::bigint FROM request_counts GROUP BY registry, state",
                &[],
            )
            .await?;
        let mut have: BTreeMap<(String, String), i64> = BTreeMap::new();
        for row in held {
            let n: i64 = row.get(2);
            if n != 0 {
                have.insert((row.get(0), row.get(1)), n);
            }
        }
        let keys: std::collections::BTreeSet<_> =
            counts.keys().chain(have.keys()).cloned().collect();
        for k in keys {
            let (a, b) = (
                counts.get(&k).copied().unwrap_or(0),
                have.get(&k).copied().unwrap_or(0),
            );
            if a != b {
                report.found(
                    "request_counts",
                    format!("{} {}", k.0, k.1),
                    format!("counts {b} where the records are {a}"),
                );
            }
        }
        // Documents the records name, looked up a page at a time.
        for page in named.chunks(PAGE as usize) {
            let have: std::collections::HashSet<String> = self
                .query("SELECT id FROM documents WHERE id = ANY($1)", &[&page])
                .await?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
            for d in page.iter().filter(|d| !have.contains(*d)) {
                report.found(
                    "documents",
                    d.clone(),
                    "the request names this document, which is missing".into(),
                );
            }
        }
        // The audit trail: every entry decodes and is numbered by its key.
        let mut after = 0i64;
        let mut n = 0u64;
        loop {
            let rows = self
                .query(
                    "SELECT seq, entry FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &PAGE],
                )
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for row in &rows {
                n += 1;
                let seq: i64 = row.get(0);
                let text: String = row.get(1);
                match serde_json::from_str::<crate::store::trail::Entry>(&text) {
                    Ok(e) if e.seq as i64 == seq => {}
                    Ok(e) => report.found(
                        "audit",
                        seq.to_string(),
                        format!("says it is entry {}", e.seq),
                    ),
                    Err(e) => report.found("audit", seq.to_string(), format!("unreadable: {e}")),
                }
            }
        }
        report.read.insert("audit".into(), n);
        Ok(report)
    }
}
