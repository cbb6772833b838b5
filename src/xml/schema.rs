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

/// Where the schemas are: `$JUMGW_SCHEMAS`, `./schemas`, or the source tree's.
pub fn default_dir() -> PathBuf {
    if let Ok(d) = std::env::var("JUMGW_SCHEMAS") {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("schemas");
    if local.join(ENTRY).exists() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
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
