//! Handing documents to the case, as each client chose in its
//! configuration (`clients.<name>.delivery`):
//!
//! - `folder` (the default): `{client's folder}/{case}/{request-id}.{service}.xml`
//!   (the client's folder: `clients.<name>.cases_dir`, or `data/cases/{name}`,
//!   so that two clients' cases of one number never share a folder),
//!   the registry's signed envelope byte for byte (X-Road: the SOAP message
//!   as the security server sent it), each attachment that came with it
//!   beside it as `{request-id}.{service}.attachment-{n}` (never under the
//!   registry's file name, which is outside input: the sidecar says it),
//!   plus a `.json` sidecar;
//!   written atomically and durably in batches (temporary files, a
//!   file-system sync, renames, another sync) and idempotently, so a redelivery after a crash rewrites the same file and
//!   never adds a second. This module.
//! - `webhook`: signed events on their own durable queue ([`webhook`]).
//! - `pull`: nothing is pushed; the client reads the case and its documents
//!   through the API.

pub mod webhook;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// X-Road: each attempt's message id, in order (the security server's
    /// log and signed documents know a message by it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    message_ids: Vec<&'a str>,
    /// What came with the document, each a file beside it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<SidecarAttachment<'a>>,
    /// The charset the document is in, when its answer's Content-Type
    /// named it (X-Road): the file holds the bytes as they came, which its
    /// XML declaration may not describe.
    #[serde(skip_serializing_if = "Option::is_none")]
    charset: Option<&'a str>,
}

#[derive(Serialize)]
struct SidecarAttachment<'a> {
    /// Its file in the case folder.
    file: String,
    content_id: &'a str,
    content_type: &'a str,
    /// The name the registry gave it (never used as a path).
    name: Option<&'a str>,
    size: u64,
    sha256: &'a str,
}

/// One document to deliver: its request, its bytes, and its attachments'
/// bytes in the order of the record's `attachments`.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub record: &'a RequestRecord,
    pub document: &'a [u8],
    pub attachments: &'a [&'a [u8]],
}

/// Writes a new file, mode 0640 whatever the umask allows beyond it, in
/// `group` where one is set.
fn write_private(path: &Path, bytes: &[u8], group: Option<u32>) -> std::io::Result<()> {
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
    if let Some(g) = group {
        std::os::unix::fs::fchown(&f, None, Some(g))?;
    }
    f.write_all(bytes)
}

/// Makes `dir` (and what is missing above it), 0750, in `group` where one
/// is set.
fn make_dir(dir: &Path, group: Option<u32>) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o750)
        .create(dir)?;
    if let Some(g) = group {
        std::os::unix::fs::chown(dir, None, Some(g))?;
    }
    Ok(())
}

/// The file name of a request's `n`-th attachment (from 1).
fn attachment_file(r: &RequestRecord, n: usize) -> String {
    format!("{}.{}.attachment-{n}", r.id, r.service)
}

/// A file to write: its name in the case folder and its bytes.
type NamedFile = (String, Vec<u8>);

/// Delivery into case folders: each client's under a folder of its own.
#[derive(Debug, Clone)]
pub struct CaseFolders {
    /// `data/cases`: a client's folder is a subfolder named after it,
    /// unless it has one of its own.
    pub root: PathBuf,
    /// `clients.<name>.cases_dir`, where set.
    pub own: BTreeMap<String, PathBuf>,
    /// `gateway.cases_group`: the group the folders and files are given
    /// (0750 and 0640), so that the back-office's readers need not be the
    /// gateway's user.
    pub group: Option<u32>,
}

impl CaseFolders {
    /// Every client under `root`, in the gateway's own group.
    pub fn new(root: PathBuf) -> CaseFolders {
        CaseFolders {
            root,
            own: BTreeMap::new(),
            group: None,
        }
    }

    /// As the configuration says: the clients' own folders (relative ones
    /// under the data folder) and the group, found by name.
    pub fn configured(
        cfg: &crate::config::GatewayConfig,
        data_dir: &Path,
    ) -> Result<CaseFolders, String> {
        let group = match &cfg.gateway.cases_group {
            None => None,
            Some(name) => Some(
                nix::unistd::Group::from_name(name)
                    .map_err(|e| format!("gateway.cases_group {name:?}: {e}"))?
                    .ok_or_else(|| format!("gateway.cases_group {name:?}: no such group"))?
                    .gid
                    .as_raw(),
            ),
        };
        let own = cfg
            .clients
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), data_dir.join(c.cases_dir.as_ref()?))))
            .collect();
        let cases = CaseFolders {
            root: data_dir.join("cases"),
            own,
            group,
        };
        // A group the gateway may not give is a start-up error, not a
        // failure of every delivery later.
        if let Some(g) = group {
            make_dir(&cases.root, None)
                .and_then(|_| std::os::unix::fs::chown(&cases.root, None, Some(g)))
                .map_err(|e| {
                    format!(
                        "gateway.cases_group: {} cannot be given to group {g}: {e} (is the gateway's user a member?)",
                        cases.root.display()
                    )
                })?;
        }
        Ok(cases)
    }

    /// The folder of one client's cases.
    pub fn client_dir(&self, client: &str) -> PathBuf {
        self.own
            .get(client)
            .cloned()
            .unwrap_or_else(|| self.root.join(case_folder(client)))
    }

    pub fn document_path(&self, r: &RequestRecord) -> PathBuf {
        self.client_dir(&r.client)
            .join(case_folder(&r.case))
            .join(format!("{}.{}.xml", r.id, r.service))
    }

    /// Where a request's `n`-th attachment (from 1) lands: beside its
    /// document, named after the request and service only.
    pub fn attachment_path(&self, r: &RequestRecord, n: usize) -> PathBuf {
        self.document_path(r).with_file_name(attachment_file(r, n))
    }

    /// Delivers many at once, durably, with two file-system syncs in all
    /// instead of three per document: every temporary file is written,
    /// the file system synced, every file renamed into place, synced again.
    /// A document's attachments and sidecar go in the same batch, synced
    /// as it is. Each result is that document's; safe to repeat.
    pub fn deliver_batch(&self, jobs: &[Delivery<'_>]) -> Vec<std::io::Result<PathBuf>> {
        let mut staged: Vec<std::io::Result<(PathBuf, Vec<String>)>> =
            Vec::with_capacity(jobs.len());
        let mut bases = std::collections::BTreeSet::new();
        for job in jobs {
            bases.insert(self.client_dir(&job.record.client));
            staged.push(self.files(job).and_then(|(dir, files)| {
                for (name, bytes) in &files {
                    write_private(&dir.join(format!(".{name}.tmp")), bytes, self.group)?;
                }
                Ok((dir, files.into_iter().map(|(n, _)| n).collect()))
            }));
        }
        let again = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        let first = self.sync(&bases);
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
            if let Err(e) = self.sync(&bases) {
                for r in out.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(again(&e));
                }
            }
        }
        out
    }

    /// Syncs the file systems that hold these clients' folders (a client's
    /// own folder may be on another).
    fn sync(&self, bases: &std::collections::BTreeSet<PathBuf>) -> std::io::Result<()> {
        for b in bases {
            make_dir(b, self.group)?;
            let dir = std::fs::File::open(b)?;
            nix::unistd::syncfs(&dir).map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// The folder of a request's case (created), and the document, its
    /// attachments and sidecar to write into it: the document first, the
    /// sidecar names them.
    fn files(&self, job: &Delivery<'_>) -> std::io::Result<(PathBuf, Vec<NamedFile>)> {
        let r = job.record;
        if job.attachments.len() != r.attachments.len() {
            return Err(std::io::Error::other(format!(
                "{} attachments to deliver where the record lists {}",
                job.attachments.len(),
                r.attachments.len()
            )));
        }
        let base = self.client_dir(&r.client);
        make_dir(&base, self.group)?;
        let dir = base.join(case_folder(&r.case));
        // Personal data: readable by the gateway's user and its group (the
        // back-office's readers), not by every account on the machine.
        make_dir(&dir, self.group)?;
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
            charset: r.charset.as_deref(),
            message_ids: r
                .attempts
                .iter()
                .filter_map(|a| a.message_id.as_deref())
                .collect(),
            attachments: r
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| SidecarAttachment {
                    file: attachment_file(r, i + 1),
                    content_id: &a.content_id,
                    content_type: &a.content_type,
                    name: a.name.as_deref(),
                    size: a.size,
                    sha256: &a.sha256,
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&sidecar).map_err(std::io::Error::other)?;
        let sidecar_name = format!("{}.{}.json", r.id, r.service);
        let mut files = vec![(name, job.document.to_vec())];
        for (i, bytes) in job.attachments.iter().enumerate() {
            files.push((attachment_file(r, i + 1), bytes.to_vec()));
        }
        files.push((sidecar_name, json));
        Ok((dir, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clients' cases of one number land in two folders, each under
    /// its client's (its own where configured), the sidecar names the
    /// client, and folders and files are in the configured group, 0750 and
    /// 0640.
    #[test]
    fn each_client_has_its_folder_and_the_group_is_given() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // The gateway's own group: one it may always give.
        let gid = nix::unistd::getgid().as_raw();
        let mut cases = CaseFolders::new(dir.path().join("cases"));
        cases
            .own
            .insert("arhiva".into(), dir.path().join("elsewhere"));
        cases.group = Some(gid);
        let filed = |client: &str| {
            crate::lifecycle::record::testing::record()
                .client(client)
                .case("351-12/2026-IV")
                .subject(&[])
                .now(std::time::Duration::from_secs(60))
                .build()
        };
        let (a, b, c) = (filed("pisarnica"), filed("gradjevina"), filed("arhiva"));
        let one = |record, document| Delivery {
            record,
            document,
            attachments: &[],
        };
        let out = cases.deliver_batch(&[one(&a, b"<a/>"), one(&b, b"<b/>"), one(&c, b"<c/>")]);
        let paths: Vec<PathBuf> = out.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            paths[0],
            dir.path()
                .join("cases/pisarnica/351-12%2F2026-IV")
                .join(format!("{}.civil.birth-extract.xml", a.id))
        );
        assert!(paths[1].starts_with(dir.path().join("cases/gradjevina/351-12%2F2026-IV")));
        assert!(paths[2].starts_with(dir.path().join("elsewhere/351-12%2F2026-IV")));
        for (p, who) in paths.iter().zip(["pisarnica", "gradjevina", "arhiva"]) {
            let side: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p.with_extension("json")).unwrap()).unwrap();
            assert_eq!(side["client"], who);
            let f = std::fs::metadata(p).unwrap();
            assert_eq!((f.mode() & 0o777, f.gid()), (0o640, gid));
            let d = std::fs::metadata(p.parent().unwrap()).unwrap();
            assert_eq!((d.mode() & 0o777, d.gid()), (0o750, gid));
        }
    }

    #[test]
    fn a_batch_lands_every_document_and_sidecar_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases = CaseFolders::new(dir.path().to_owned());
        let recs: Vec<RequestRecord> = (0..5)
            .map(|i| {
                crate::lifecycle::record::testing::record()
                    .case(format!("{}/2026", i % 2))
                    .now(std::time::Duration::from_secs(60))
                    .build()
            })
            .collect();
        let docs: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("<doc n=\"{i}\"/>").into_bytes())
            .collect();
        let jobs: Vec<Delivery<'_>> = recs
            .iter()
            .zip(&docs)
            .map(|(record, d)| Delivery {
                record,
                document: d,
                attachments: &[],
            })
            .collect();
        let out = cases.deliver_batch(&jobs);
        for (job, res) in jobs.iter().zip(&out) {
            let p = res.as_ref().unwrap();
            assert_eq!(p, &cases.document_path(job.record));
            assert_eq!(std::fs::read(p).unwrap(), job.document);
            assert!(p.with_extension("json").exists());
        }
        // Repeating it (a redelivery after a crash) changes nothing.
        assert!(cases.deliver_batch(&jobs).iter().all(|r| r.is_ok()));
        for case in ["0%2F2026", "1%2F2026"] {
            let names: Vec<String> = std::fs::read_dir(dir.path().join("c").join(case))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("c/0%2F2026"))
                .unwrap()
                .count(),
            6
        );
    }

    /// An X-Road document's attachments land beside it under names made
    /// of the request and service only (a registry's hostile file name
    /// stays in the sidecar, never a path), in the same batch, and the
    /// sidecar lists each with the attempts' message ids; a redelivery
    /// rewrites the same files.
    #[test]
    fn attachments_land_beside_their_document_and_the_sidecar_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let cases = CaseFolders::new(dir.path().join("cases"));
        let mut r = crate::lifecycle::record::testing::record()
            .client("pisarnica")
            .case("7/2026")
            .service("cadastre.property-sheet", "cadastre")
            .subject(&[])
            .now(std::time::Duration::from_secs(60))
            .build();
        for (i, m) in ["m-1", "m-2"].into_iter().enumerate() {
            r.attempts.push(crate::lifecycle::AttemptRecord {
                at_ms: 1_000 + i as u64,
                duration_ms: 1,
                http_status: Some(200),
                outcome: crate::lifecycle::OutcomeKind::Retryable,
                detail: String::new(),
                message_id: Some(m.into()),
            });
        }
        let bytes: [&[u8]; 2] = [b"%PDF-1.7 plan", b"<html>not for a browser</html>"];
        for (i, (name, ty)) in [
            (Some("../../etc/passwd"), "application/pdf"),
            (None, "text/html"),
        ]
        .into_iter()
        .enumerate()
        {
            r.attachments.push(crate::lifecycle::AttachmentRecord {
                document_id: format!("{}.attachment-{}", r.id, i + 1),
                content_id: format!("part{}@registry", i + 1),
                content_type: ty.into(),
                name: name.map(str::to_owned),
                size: bytes[i].len() as u64,
                sha256: openssl::sha::sha256(bytes[i])
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            });
        }
        let job = Delivery {
            record: &r,
            document: b"<soap/>",
            attachments: &bytes,
        };
        let doc = cases.deliver_batch(&[job]).remove(0).unwrap();
        let folder = doc.parent().unwrap().to_owned();
        for (i, b) in bytes.iter().enumerate() {
            let p = cases.attachment_path(&r, i + 1);
            assert_eq!(p.parent().unwrap(), folder);
            assert_eq!(
                p.file_name().unwrap().to_string_lossy(),
                format!("{}.cadastre.property-sheet.attachment-{}", r.id, i + 1)
            );
            assert_eq!(std::fs::read(&p).unwrap(), *b);
        }
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(!dir.path().join("etc").exists());
        let side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(doc.with_extension("json")).unwrap()).unwrap();
        assert_eq!(side["message_ids"], serde_json::json!(["m-1", "m-2"]));
        let listed = side["attachments"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0]["file"],
            format!("{}.cadastre.property-sheet.attachment-1", r.id)
        );
        assert_eq!(listed[0]["name"], "../../etc/passwd");
        assert_eq!(listed[0]["content_type"], "application/pdf");
        assert_eq!(listed[0]["content_id"], "part1@registry");
        assert_eq!(listed[1]["size"], bytes[1].len());
        assert_eq!(listed[1]["sha256"], r.attachments[1].sha256.as_str());
        assert!(listed[1]["name"].is_null());
        // Again (a redelivery after a crash): the same four files.
        assert!(cases.deliver_batch(&[job]).remove(0).is_ok());
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 4);
        // Fewer bytes than the record lists is refused, not half written.
        let short = Delivery {
            attachments: &bytes[..1],
            ..job
        };
        let err = cases.deliver_batch(&[short]).remove(0).unwrap_err();
        assert!(
            err.to_string()
                .contains("1 attachments to deliver where the record lists 2"),
            "{err}"
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
