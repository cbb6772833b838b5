//! Backups as JSON lines: one header line, then per request its record and,
//! if it has one, its document (base64, still the signed bytes) and the
//! documents stored beside it (attachments, a signed document). Written
//! request by request, so every exported request is consistent with its
//! document even while the daemon runs; `import` restores into an empty
//! store and rebuilds the indexes from the records. The audit trail follows
//! the requests, entry by entry, and is restored verbatim, so that its hash
//! chain still verifies in the new store.
//!
//! A salvage (`jumgw store salvage`) writes the same format from a damaged
//! store, with a `lost` line for each thing it could not read; `import`
//! restores it, and accepts a hole in the audit numbering only where a
//! `lost` line declared it, so that `audit verify` on the restored store
//! stops at the hole and names it.

use std::io::{BufRead, Write};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{QueueStore, RequestRecord, StoreError, SCHEMA_VERSION};

pub const FORMAT: &str = "jum-gateway-export";

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Line {
    Header {
        format: String,
        schema: u32,
        exported_ms: u64,
    },
    Request {
        record: Box<RequestRecord>,
    },
    Document {
        id: String,
        base64: String,
    },
    /// An audit entry, verbatim: its chain verifies after the move.
    Audit {
        entry: Box<crate::store::trail::Entry>,
    },
    /// What a salvage could not read.
    Lost(Lost),
}

/// Something a salvage could not read: in which tree, which key (or the
/// keys around it), and why. Audit entries lost name their numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    pub tree: String,
    pub key: String,
    pub problem: String,
    /// For the audit trail: the first and last number lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seqs: Option<[u64; 2]>,
}

/// Writes an export line by line.
pub struct Sink<'a> {
    w: &'a mut (dyn Write + Send),
    pub counts: Counts,
}

impl<'a> Sink<'a> {
    /// Starts an export with its header line.
    pub fn new(w: &'a mut (dyn Write + Send)) -> Result<Sink<'a>, BackupError> {
        let mut s = Sink {
            w,
            counts: Counts::default(),
        };
        s.line(&Line::Header {
            format: FORMAT.into(),
            schema: SCHEMA_VERSION,
            exported_ms: crate::time::now_ms(),
        })?;
        Ok(s)
    }

    fn line(&mut self, l: &Line) -> Result<(), BackupError> {
        serde_json::to_writer(&mut *self.w, l).map_err(std::io::Error::other)?;
        self.w.write_all(b"\n")?;
        Ok(())
    }

    pub fn request(&mut self, r: RequestRecord) -> Result<(), BackupError> {
        self.counts.requests += 1;
        self.line(&Line::Request {
            record: Box::new(r),
        })
    }

    pub fn document(&mut self, id: String, bytes: &[u8]) -> Result<(), BackupError> {
        self.counts.documents += 1;
        self.line(&Line::Document {
            id,
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    pub fn audit(&mut self, entry: crate::store::trail::Entry) -> Result<(), BackupError> {
        self.counts.audit += 1;
        self.line(&Line::Audit {
            entry: Box::new(entry),
        })
    }

    pub fn lost(&mut self, lost: Lost) -> Result<(), BackupError> {
        self.counts.lost += 1;
        self.line(&Line::Lost(lost))
    }

    pub fn finish(self) -> Result<Counts, BackupError> {
        self.w.flush()?;
        Ok(self.counts)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {detail}")]
    Format { line: usize, detail: String },
    #[error("the target store is not empty; import restores into an empty store only")]
    NotEmpty,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub requests: usize,
    pub documents: usize,
    pub audit: usize,
    /// `lost` lines (a salvage's).
    pub lost: usize,
}

pub async fn export(
    store: &dyn QueueStore,
    w: &mut (dyn Write + Send),
) -> Result<Counts, BackupError> {
    let mut sink = Sink::new(w)?;
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(after.as_deref(), 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.to_string());
        for r in page {
            // Read the record again right before its document, so the pair is
            // consistent even if it changed since its page was read.
            let Some(r) = store.get(&r.id).await? else {
                continue;
            };
            let doc = if r.document_id.is_some() {
                store.document(&r.id).await?
            } else {
                None
            };
            // What came with the document (an X-Road document's
            // attachments, its signed document) goes with it: a restored
            // store answers the API and builds the dossier as the old one.
            let mut beside = Vec::new();
            for id in r.documents_beside() {
                if let Some(d) = store.document(id).await? {
                    beside.push((id.to_owned(), d));
                }
            }
            let id = r.id.to_string();
            sink.request(r)?;
            if let Some(d) = doc {
                sink.document(id, &d)?;
            }
            for (id, d) in beside {
                sink.document(id, &d)?;
            }
        }
    }
    let mut after = 0;
    loop {
        let page = store.audit_scan(after, 1000).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (seq, e) in page {
            let entry = e.map_err(|detail| StoreError::Corrupt {
                id: format!("audit entry {seq}"),
                detail,
            })?;
            sink.audit(entry)?;
        }
    }
    sink.finish()
}

pub async fn import(store: &dyn QueueStore, r: &mut dyn BufRead) -> Result<Counts, BackupError> {
    if !store.scan(None, 1).await?.is_empty() || store.audit_head().await?.seq != 0 {
        return Err(BackupError::NotEmpty);
    }
    let mut audit = Vec::new();
    let mut c = Counts::default();
    let mut batch = Vec::new();
    let mut header = false;
    // The audit numbers a salvage declared lost, and the next one due.
    let mut holes: Vec<[u64; 2]> = Vec::new();
    let mut next_seq = 1u64;
    for (i, l) in r.lines().enumerate() {
        let l = l?;
        if l.trim().is_empty() {
            continue;
        }
        let err = |detail: String| BackupError::Format {
            line: i + 1,
            detail,
        };
        match serde_json::from_str::<Line>(&l).map_err(|e| err(e.to_string()))? {
            Line::Header { format, schema, .. } => {
                if format != FORMAT || schema > SCHEMA_VERSION {
                    return Err(err(format!(
                        "not an export this jumgw can read ({format}, schema {schema})"
                    )));
                }
                header = true;
            }
            _ if !header => return Err(err("the export has no header line".into())),
            Line::Request { record } => {
                batch.push(*record);
                c.requests += 1;
                if batch.len() >= 500 {
                    store.enqueue(std::mem::take(&mut batch)).await?;
                }
            }
            Line::Document { id, base64 } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(base64)
                    .map_err(|e| err(e.to_string()))?;
                store.put_document(&id, &bytes).await?;
                c.documents += 1;
            }
            Line::Lost(lost) => {
                if let Some(h) = lost.audit_seqs {
                    holes.push(h);
                }
                c.lost += 1;
            }
            Line::Audit { entry } => {
                let declared =
                    |from: u64, to: u64| holes.iter().any(|[a, b]| *a <= from && to <= *b);
                if entry.seq < next_seq
                    || (entry.seq > next_seq && !declared(next_seq, entry.seq - 1))
                {
                    return Err(err(format!(
                        "audit entry {} where entry {next_seq} was due, and no lost line declares the entries between",
                        entry.seq
                    )));
                }
                next_seq = entry.seq + 1;
                audit.push(*entry);
                c.audit += 1;
                if audit.len() >= 1000 {
                    store.audit_restore(std::mem::take(&mut audit)).await?;
                }
            }
        }
    }
    if !header {
        return Err(BackupError::Format {
            line: 0,
            detail: "empty export".into(),
        });
    }
    store.enqueue(batch).await?;
    store.audit_restore(audit).await?;
    store.flush().await?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::prelude::*;
    use crate::store::SledStore;

    fn sample() -> Vec<String> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let s = SledStore::open(&dir.path().join("s"), 1 << 20).unwrap();
            let mut recs = Vec::new();
            for i in 0..3u64 {
                let mut r = crate::lifecycle::record::testing::record()
                    .case(format!("351-{i}/2026"))
                    .subject(&[])
                    .now(std::time::Duration::from_secs(3600))
                    .build();
                r.document_id = (i == 1).then(|| r.id.to_string());
                recs.push(r);
            }
            let id1 = recs[1].id.clone();
            s.enqueue(recs).await.unwrap();
            s.put_document(&id1, b"<doc/>").await.unwrap();
            s.audit_append(vec![crate::store::trail::Draft::default(); 3])
                .await
                .unwrap();
            let mut out = Vec::new();
            export(&*s, &mut out).await.unwrap();
            s.close().await.unwrap();
            String::from_utf8(out)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// An export changed anywhere (a line cut, replaced, dropped or
        /// moved, a hole declared or not) is restored or refused with the
        /// line and what is wrong: never a panic.
        #[test]
        fn a_changed_export_is_restored_or_refused_by_line(
            which in 0usize..100,
            cut in 0usize..400,
            kind in 0u8..5,
            junk in "[ -~]{0,40}",
        ) {
            let mut lines = sample();
            let i = which % lines.len();
            match kind {
                0 => { let l = &mut lines[i]; let c = cut.min(l.len()); l.truncate(c); }
                1 => lines[i] = junk.clone(),
                2 => { lines.remove(i); }
                3 => { let l = lines.remove(i); lines.insert(cut % (lines.len() + 1), l); }
                _ => lines.insert(i, r#"{"kind":"lost","tree":"audit","key":"2","problem":"x","audit_seqs":[2,2]}"#.into()),
            }
            let text = lines.join("\n");
            let rt = tokio::runtime::Runtime::new().unwrap();
            let res = rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let s = SledStore::open(&dir.path().join("s"), 1 << 20).unwrap();
                let r = import(&*s, &mut text.as_bytes()).await;
                s.close().await.unwrap();
                r
            });
            if let Err(e) = res {
                let m = e.to_string();
                prop_assert!(!m.is_empty());
                if let BackupError::Format { line, .. } = e {
                    prop_assert!(line <= lines.len(), "{}", m);
                }
            }
        }
    }
}
