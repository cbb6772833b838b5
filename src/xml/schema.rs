//! XSD validation against `schemas/` with libxml2's validator.
//!
//! libxml2 schema contexts are not `Send`, so one dedicated thread owns the
//! compiled schema and validates byte buffers sent to it. Documents are
//! first read by our hardened reader (no DTD, no entities, limits); only
//! then does libxml2 see them, so its parser never expands anything.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use libxml::parser::Parser;
use libxml::schemas::{SchemaParserContext, SchemaValidationContext};

use super::reader::{parse, Limits, Sink, XmlError};

/// The schema every document is validated against: it imports the
/// envelope, the X-Road headers, the signature and every service schema.
pub const ENTRY: &str = "jum-gateway.xsd";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("cannot load schemas from {path}: {detail}")]
    Load { path: String, detail: String },
    #[error("malformed XML: {0}")]
    Xml(#[from] XmlError),
    #[error("schema-invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("the validation thread has stopped")]
    Stopped,
}

type Job = (Vec<u8>, mpsc::Sender<Result<(), Vec<String>>>);

/// A handle to the validation thread; cheap to clone.
#[derive(Clone)]
pub struct Validator {
    tx: mpsc::Sender<Job>,
    limits: Limits,
}

/// The schemas as this build of jumgw was made with them.
static EMBEDDED: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/schemas");

/// Where the schemas are: `$JUMGW_SCHEMAS`, else the ones built into the
/// binary, so that `jumgw` runs from any folder.
pub fn default_dir() -> PathBuf {
    if let Ok(d) = std::env::var("JUMGW_SCHEMAS") {
        return PathBuf::from(d);
    }
    embedded_dir().unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas"))
}

/// The built-in schemas written out once, for libxml2 reads the files an
/// `xs:import` names from disk. The folder is named by their content and
/// our uid, reused while it is ours alone and holds exactly them, so that
/// neither a run leaves a copy behind nor another user can plant one.
fn embedded_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // The XSDs only (the folder's examples are for people and tests).
    let files: Vec<&include_dir::File<'_>> = EMBEDDED
        .files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "xsd"))
        .collect();
    let mut h = openssl::sha::Sha256::new();
    for f in &files {
        h.update(f.path().to_string_lossy().as_bytes());
        h.update(&[0]);
        h.update(f.contents());
    }
    let digest = h.finish();
    let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let uid = nix::unistd::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("jumgw-schemas-{uid}-{tag}"));
    let ours = |d: &Path| -> bool {
        std::fs::symlink_metadata(d)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0)
            && files
                .iter()
                .all(|f| std::fs::read(d.join(f.path())).is_ok_and(|b| b == f.contents()))
    };
    if ours(&dir) {
        return Ok(dir);
    }
    // Written beside, then renamed into place: a reader never sees half.
    let fresh = tempfile::Builder::new()
        .prefix("jumgw-schemas-")
        .tempdir_in(std::env::temp_dir())?;
    std::fs::set_permissions(fresh.path(), std::fs::Permissions::from_mode(0o700))?;
    for f in &files {
        let to = fresh.path().join(f.path());
        if let Some(parent) = to.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        std::fs::write(&to, f.contents())?;
    }
    let fresh = fresh.keep();
    if std::fs::symlink_metadata(&dir).is_ok() {
        // Someone else's, stale or torn: ours replaces it only if we may.
        let _ = std::fs::remove_dir_all(&dir);
    }
    match std::fs::rename(&fresh, &dir) {
        Ok(()) if ours(&dir) => Ok(dir),
        // Another process won the race with the same content, or the name
        // is taken by what we may not remove: use our own copy.
        _ if ours(&dir) => {
            let _ = std::fs::remove_dir_all(&fresh);
            Ok(dir)
        }
        _ => Ok(fresh),
    }
}

fn format_errors(errs: Vec<libxml::error::StructuredError>) -> Vec<String> {
    errs.into_iter()
        .map(|e| {
            let msg = e.message.unwrap_or_else(|| "unknown error".into());
            let msg = msg.trim();
            match e.line {
                Some(l) if l > 0 => format!("line {l}: {msg}"),
                _ => msg.to_owned(),
            }
        })
        .collect()
}

struct Discard;
impl Sink for Discard {
    fn start(&mut self, _: &super::reader::Element<'_>) {}
    fn end(&mut self, _: (usize, usize)) {}
    fn text(&mut self, _: &str) {}
    fn comment(&mut self, _: &str) {}
    fn pi(&mut self, _: &str, _: &str) {}
}

impl Validator {
    /// Compiles the schemas in `dir` on a new thread; fails if they do not load.
    pub fn start(dir: &Path, limits: Limits) -> Result<Validator, SchemaError> {
        let entry = dir.join(ENTRY);
        let path = entry.to_string_lossy().into_owned();
        if !entry.exists() {
            return Err(SchemaError::Load {
                path,
                detail: "file not found".into(),
            });
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("xsd-validator".into())
            .spawn(move || {
                let mut pctx = SchemaParserContext::from_file(&path);
                let mut vctx = match SchemaValidationContext::from_parser(&mut pctx) {
                    Ok(v) => {
                        let _ = ready_tx.send(Ok(()));
                        v
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(SchemaError::Load {
                            path,
                            detail: format_errors(e).join("; "),
                        }));
                        return;
                    }
                };
                let parser = Parser::default();
                for (bytes, reply) in rx {
                    let r = match parser.parse_string(&bytes) {
                        Ok(doc) => vctx.validate_document(&doc).map_err(format_errors),
                        Err(e) => Err(vec![format!("libxml2 could not parse the document: {e:?}")]),
                    };
                    let _ = reply.send(r);
                }
            })
            .map_err(|e| SchemaError::Load {
                path: dir.display().to_string(),
                detail: e.to_string(),
            })?;
        ready_rx.recv().map_err(|_| SchemaError::Stopped)??;
        Ok(Validator { tx, limits })
    }

    /// Validates one document.
    pub fn validate(&self, bytes: &[u8]) -> Result<(), SchemaError> {
        parse(bytes, &self.limits, &mut Discard)?;
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .send((bytes.to_vec(), rtx))
            .map_err(|_| SchemaError::Stopped)?;
        rrx.recv()
            .map_err(|_| SchemaError::Stopped)?
            .map_err(SchemaError::Invalid)
    }
}
