//! Backups as JSON lines: one header line, then per request its record and,
//! if it has one, its document (base64, still the signed bytes). Written
//! request by request, so every exported request is consistent with its
//! document even while the daemon runs; `import` restores into an empty
//! store and rebuilds the indexes from the records. The audit trail follows
//! the requests, entry by entry, and is restored verbatim, so that its hash
//! chain still verifies in the new store.

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
}

fn line(w: &mut dyn Write, l: &Line) -> Result<(), BackupError> {
    serde_json::to_writer(&mut *w, l).map_err(std::io::Error::other)?;
    w.write_all(b"\n")?;
    Ok(())
}

pub async fn export(
    store: &dyn QueueStore,
    w: &mut (dyn Write + Send),
) -> Result<Counts, BackupError> {
    line(
        w,
        &Line::Header {
            format: FORMAT.into(),
            schema: SCHEMA_VERSION,
            exported_ms: super::now_ms(),
        },
    )?;
    let mut c = Counts::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(after.as_deref(), 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
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
            let id = r.id.clone();
            line(
                w,
                &Line::Request {
                    record: Box::new(r),
                },
            )?;
            c.requests += 1;
            if let Some(d) = doc {
                line(
                    w,
                    &Line::Document {
                        id,
                        base64: base64::engine::general_purpose::STANDARD.encode(d),
                    },
                )?;
                c.documents += 1;
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
            line(
                w,
                &Line::Audit {
                    entry: Box::new(entry),
                },
            )?;
            c.audit += 1;
        }
    }
    w.flush()?;
    Ok(c)
}

pub async fn import(store: &dyn QueueStore, r: &mut dyn BufRead) -> Result<Counts, BackupError> {
    if !store.scan(None, 1).await?.is_empty() || store.audit_head().await?.seq != 0 {
        return Err(BackupError::NotEmpty);
    }
    let mut audit = Vec::new();
    let mut c = Counts::default();
    let mut batch = Vec::new();
    let mut header = false;
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
            Line::Audit { entry } => {
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
