//! What the audit trail keeps: entries, each chained to the one before by
//! its hash, and the chain's head. The stores write and read these; what
//! goes into them, and checking them, is the audit trail's
//! ([`crate::audit`]).
//!
//! # The bytes an entry's hash covers
//!
//! `hash` is the SHA-256, as 64 lowercase hex digits, of the entry written
//! as compact JSON (no whitespace) with `hash` set to `""`, its keys in
//! this order: `seq`, `at_ms`, `actor`, `official`, `action`,
//! `request_id` (`null` when none), `case`, `service`, `legal_basis`,
//! `purpose`, `outcome`, `subject` (an array of texts), `signer_sha256`
//! (only when present), `prev`, `hash`. Texts are UTF-8 as they are, with
//! only `"`, `\` and the control characters escaped (`\b \f \n \r \t`,
//! the others as `\u00xx`); numbers are plain integers. `prev` is the
//! previous entry's hash, 64 zeros for entry 1, and `seq` counts from 1
//! without a gap. `tests/py/audit_chain.py` checks an export (`jumgw store
//! export`) by this description alone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::RequestRecord;

/// An entry before it is chained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub at_ms: u64,
    /// The API client (back-office system or administrator).
    pub actor: String,
    /// The official on whose behalf, when known.
    pub official: String,
    /// request.accepted, exchange.sent, exchange.answered, document.read, admin.retry, admin.cancel,
    /// admin.retry-dead, admin.pause, admin.resume, audit.who, ...
    pub action: String,
    pub request_id: Option<String>,
    pub case: String,
    pub service: String,
    pub legal_basis: String,
    pub purpose: String,
    pub outcome: String,
    /// Keyed hashes of the subject's identifiers.
    pub subject: Vec<String>,
    /// On `exchange.answered` with a document: the SHA-256 (hex) of the
    /// registry signer's certificate the gateway accepted, so that the
    /// chain, timestamped at its checkpoints, binds the document to its
    /// signer as well. Absent elsewhere, and then not written: entries
    /// without it hash as they always did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_sha256: Option<String>,
}

/// A chained entry, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(flatten)]
    pub draft: Draft,
    /// Hash of the previous entry (64 zeros for the first).
    pub prev: String,
    /// SHA-256 over this entry with `hash` empty, hex.
    pub hash: String,
}

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Entry {
    pub fn chained(draft: Draft, seq: u64, prev: &str) -> Entry {
        let mut e = Entry {
            seq,
            draft,
            prev: prev.to_owned(),
            hash: String::new(),
        };
        e.hash = e.digest();
        e
    }

    /// The hash this entry should have.
    pub fn digest(&self) -> String {
        let mut c = self.clone();
        c.hash.clear();
        // Field order is the struct's: the same bytes on every run.
        hex(&openssl::sha::sha256(
            &serde_json::to_vec(&c).unwrap_or_default(),
        ))
    }
}

/// The newest entry's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.into(),
        }
    }
}

/// What a record change adds to the trail: `(None, new)` for a request
/// just accepted, `(Some(old), new)` for a change. Runs inside the store's
/// transaction; may run more than once; no side effects.
pub type AuditRule =
    Arc<dyn Fn(Option<&RequestRecord>, &RequestRecord) -> Vec<Draft> + Send + Sync>;
