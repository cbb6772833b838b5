//! Handing documents to the case, as each client chose in its
//! configuration (`clients.<name>.delivery`):
//!
//! - `folder` (the default): `{cases_dir}/{case}/{request-id}.{service}.xml`,
//!   the registry's signed envelope byte for byte, plus a `.json` sidecar;
//!   written atomically and durably in batches (temporary files, a
//!   file-system sync, renames, another sync) and idempotently, so a redelivery after a crash rewrites the same file and
//!   never adds a second. This module.
//! - `webhook`: signed events on their own durable queue ([`webhook`]).
//! - `pull`: nothing is pushed; the client reads the case and its documents
//!   through the API.

pub mod webhook;

use std::path::PathBuf;

use serde::Serialize;

use crate::store::RequestRecord;

/// A case number as a folder name: characters that are not letters, digits,
/// `-`, `_` or `.` are percent-encoded, so `351-12/2026-IV` becomes
/// `351-12%2F2026-IV` and can be read back. So are a leading or trailing
/// dot and the first letter of a name Windows reserves for devices (`CON`,
/// `AUX`, `NUL.2026`, `COM1` …), which SMB shares and Windows readers of
/// the case folders could not open otherwise.
pub fn case_folder(case: &str) -> String {
    let n = case.chars().count();
    let stem: String = case.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0');
    let mut out = String::with_capacity(case.len());
    for (i, c) in case.chars().enumerate() {
        let keep =
            (c.is_alphanumeric() || c == '-' || c == '_' || (c == '.' && i > 0 && i + 1 < n))
                && !(reserved && i == 0);
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
    /// The back-office client that filed it: two clients may use the same
    /// case number.
    client: &'a str,
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

/// Writes a new file, mode 0640 whatever the umask allows beyond it.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)?;
    // A file left from an earlier try keeps its old mode: set it.
    f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    f.write_all(bytes)
}

/// A file to write: its name in the case folder and its bytes.
type NamedFile = (String, Vec<u8>);

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

    /// Delivers many at once, durably, with two file-system syncs in all
    /// instead of three per document: every temporary file is written,
    /// the file system synced, every file renamed into place, synced again.
    /// Each result is that document's; safe to repeat.
    pub fn deliver_batch(&self, jobs: &[(&RequestRecord, &[u8])]) -> Vec<std::io::Result<PathBuf>> {
        let mut staged: Vec<std::io::Result<(PathBuf, Vec<String>)>> =
            Vec::with_capacity(jobs.len());
        for (r, doc) in jobs {
            staged.push(self.files(r, doc).and_then(|(dir, files)| {
                for (name, bytes) in &files {
                    write_private(&dir.join(format!(".{name}.tmp")), bytes)?;
                }
                Ok((dir, files.into_iter().map(|(n, _)| n).collect()))
            }));
        }
        let again = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        let first = self.sync();
        let mut out: Vec<std::io::Result<PathBuf>> = staged
            .into_iter()
            .map(|st| {
                let (dir, names) = st?;
                first.as_ref().map_err(again)?;
                for n in &names {
                    std::fs::rename(dir.join(format!(".{n}.tmp")), dir.join(n))?;
                }
                Ok(dir.join(&names[0]))
            })
            .collect();
        // The renames are durable only after the second sync.
        if out.iter().any(|r| r.is_ok()) {
            if let Err(e) = self.sync() {
                for r in out.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(again(&e));
                }
            }
        }
        out
    }

    /// Syncs the file system that holds the case folders.
    fn sync(&self) -> std::io::Result<()> {
        let root = std::fs::File::open(&self.root)?;
        nix::unistd::syncfs(&root).map_err(std::io::Error::from)
    }

    /// The folder of a request's case (created), and the document and
    /// sidecar to write into it: the document first, the sidecar names it.
    fn files(
        &self,
        r: &RequestRecord,
        document: &[u8],
    ) -> std::io::Result<(PathBuf, Vec<NamedFile>)> {
        let dir = self.root.join(case_folder(&r.case));
        // Personal data: readable by the gateway's user and its group (the
        // back-office's readers), not by every account on the machine.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o750)
            .create(&dir)?;
        let name = format!("{}.{}.xml", r.id, r.service);
        let sidecar = Sidecar {
            request_id: &r.id,
            client: &r.client,
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
        let sidecar_name = format!("{}.{}.json", r.id, r.service);
        Ok((dir, vec![(name, document.to_vec()), (sidecar_name, json)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_lands_every_document_and_sidecar_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases = CaseFolders {
            root: dir.path().to_owned(),
        };
        let recs: Vec<RequestRecord> = (0..5)
            .map(|i| {
                RequestRecord::queued(
                    "c",
                    format!("{}/2026", i % 2),
                    "ZUP".into(),
                    "o".into(),
                    "p".into(),
                    "civil.birth-extract".into(),
                    "civil".into(),
                    vec![("jmbg".into(), "0512981717776".into())],
                    std::time::Duration::from_secs(60),
                )
            })
            .collect();
        let docs: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("<doc n=\"{i}\"/>").into_bytes())
            .collect();
        let jobs: Vec<(&RequestRecord, &[u8])> = recs
            .iter()
            .zip(&docs)
            .map(|(r, d)| (r, d.as_slice()))
            .collect();
        let out = cases.deliver_batch(&jobs);
        for ((r, d), res) in jobs.iter().zip(&out) {
            let p = res.as_ref().unwrap();
            assert_eq!(p, &cases.document_path(r));
            assert_eq!(std::fs::read(p).unwrap(), *d);
            assert!(p.with_extension("json").exists());
        }
        // Repeating it (a redelivery after a crash) changes nothing.
        assert!(cases.deliver_batch(&jobs).iter().all(|r| r.is_ok()));
        for case in ["0%2F2026", "1%2F2026"] {
            let names: Vec<String> = std::fs::read_dir(dir.path().join(case))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("0%2F2026"))
                .unwrap()
                .count(),
            6
        );
    }

    #[test]
    fn case_numbers_become_safe_readable_folder_names() {
        assert_eq!(case_folder("351-12/2026-IV"), "351-12%2F2026-IV");
        assert_eq!(case_folder("../etc"), "%2E.%2Fetc");
        assert_eq!(case_folder("Predmet č. 7"), "Predmet%20č.%207");
        assert_eq!(case_folder(""), "%00");
        // What Windows and SMB readers cannot open.
        assert_eq!(case_folder("CON"), "%43ON");
        assert_eq!(case_folder("nul.2026"), "%6Eul.2026");
        assert_eq!(case_folder("COM1"), "%43OM1");
        assert_eq!(case_folder("LPT9.x"), "%4CPT9.x");
        assert_eq!(case_folder("COM0"), "COM0");
        assert_eq!(case_folder("CONTO-1"), "CONTO-1");
        assert_eq!(case_folder("351-12."), "351-12%2E");
        assert_eq!(case_folder("a..b"), "a..b");
    }
}
