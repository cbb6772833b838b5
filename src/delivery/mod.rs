//! Handing documents to the case, as each client chose in its
//! configuration (`clients.<name>.delivery`):
//!
//! - `folder` (the default): `{cases_dir}/{case}/{request-id}.{service}.xml`,
//!   the registry's signed envelope byte for byte, plus a `.json` sidecar;
//!   written atomically (temp file, fsync, rename, fsync of the folder) and
//!   idempotently, so a redelivery after a crash rewrites the same file and
//!   never adds a second. This module.
//! - `webhook`: signed events on their own durable queue ([`webhook`]).
//! - `pull`: nothing is pushed; the client reads the case and its documents
//!   through the API.

pub mod webhook;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::store::RequestRecord;

/// A case number as a folder name: characters that are not letters, digits,
/// `-`, `_` or `.` are percent-encoded, so `351-12/2026-IV` becomes
/// `351-12%2F2026-IV` and can be read back.
pub fn case_folder(case: &str) -> String {
    let mut out = String::with_capacity(case.len());
    for (i, c) in case.chars().enumerate() {
        let keep = c.is_alphanumeric() || c == '-' || c == '_' || (c == '.' && i > 0);
        if keep {
            out.push(c);
        } else {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

#[derive(Serialize)]
struct Sidecar<'a> {
    request_id: &'a str,
    case: &'a str,
    service: &'a str,
    registry: &'a str,
    /// JMBGs masked: the document itself holds the data.
    subject: String,
    legal_basis: &'a str,
    official: &'a str,
    purpose: &'a str,
    created_ms: u64,
    fetched_ms: Option<u64>,
    attempts: usize,
    signer: Option<&'a str>,
    document: String,
}

/// Writes files into `dir` atomically and durably: each to a temporary
/// name, its data synced, then all renamed, then the folder synced once
/// (one folder sync for the document and its sidecar, not one each).
fn write_atomically(dir: &Path, files: &[(&str, &[u8])]) -> std::io::Result<()> {
    for (name, bytes) in files {
        let mut f = std::fs::File::create(dir.join(format!(".{name}.tmp")))?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    for (name, _) in files {
        std::fs::rename(dir.join(format!(".{name}.tmp")), dir.join(name))?;
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Delivery into case folders.
#[derive(Debug, Clone)]
pub struct CaseFolders {
    pub root: PathBuf,
}

impl CaseFolders {
    pub fn document_path(&self, r: &RequestRecord) -> PathBuf {
        self.root
            .join(case_folder(&r.case))
            .join(format!("{}.{}.xml", r.id, r.service))
    }

    /// Writes the document and its sidecar; safe to repeat.
    pub fn deliver(&self, r: &RequestRecord, document: &[u8]) -> std::io::Result<PathBuf> {
        let dir = self.root.join(case_folder(&r.case));
        std::fs::create_dir_all(&dir)?;
        let name = format!("{}.{}.xml", r.id, r.service);
        let sidecar = Sidecar {
            request_id: &r.id,
            case: &r.case,
            service: &r.service,
            registry: &r.registry,
            subject: r.subject_redacted(),
            legal_basis: &r.legal_basis,
            official: &r.official,
            purpose: &r.purpose,
            created_ms: r.created_ms,
            fetched_ms: r.attempts.last().map(|a| a.at_ms),
            attempts: r.attempts.len(),
            signer: r.signer.as_deref(),
            document: name.clone(),
        };
        let json = serde_json::to_vec_pretty(&sidecar).map_err(std::io::Error::other)?;
        // The sidecar names the document, so the document is renamed first.
        write_atomically(
            &dir,
            &[
                (name.as_str(), document),
                (&format!("{}.{}.json", r.id, r.service), &json),
            ],
        )?;
        Ok(dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_numbers_become_safe_readable_folder_names() {
        assert_eq!(case_folder("351-12/2026-IV"), "351-12%2F2026-IV");
        assert_eq!(case_folder("../etc"), "%2E.%2Fetc");
        assert_eq!(case_folder("Predmet č. 7"), "Predmet%20č.%207");
        assert_eq!(case_folder(""), "%00");
    }
}
