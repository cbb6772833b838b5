//! The full check of a PostgreSQL store (`jumgw store check --store URL`):
//! every record and audit entry decodes, the columns the queries select by
//! agree with the records they were written from, the counters with the
//! records, and each document a record names is there. PostgreSQL checks
//! its own pages (data checksums, `amcheck`); this checks what we wrote.

use std::collections::BTreeMap;

use super::columns::{Role, COLUMNS, RECORD, SELECT};
use super::conn::Db;
use super::PgStore;
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
            let rows = self.query(&SELECT, &[&after, &PAGE]).await?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for row in &rows {
                n += 1;
                let id: String = row.get(0);
                let text: String = row.get(RECORD);
                let r = match decode(id.as_bytes(), text.as_bytes()) {
                    Ok(r) => r,
                    Err(e) => {
                        report.found("requests", id, e.to_string());
                        continue;
                    }
                };
                let differs: Vec<&str> = COLUMNS
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| c.role != Role::Record && !c.agrees(&r, row, *i))
                    .map(|(_, c)| c.name)
                    .collect();
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
