//! The audit trail: who accessed whose data, when, in which case, on what
//! legal basis and for what purpose. Append-only and hash-chained: each
//! entry carries the hash of the one before and its own hash over all its
//! fields, so changing, removing or reordering an entry breaks the chain
//! from there on. The chain head is also written, now and then, to a
//! separate append-only checkpoint file, so that cutting entries off the
//! end is caught too.
//!
//! Subjects are never stored in clear: each identifier (JMBG, PIB, MB) is
//! kept as an HMAC-SHA256 under the audit key, which still lets "who used
//! my data" find every entry about one person.
//!
//! Entries about requests are the traces of their changes
//! ([`crate::lifecycle::effects`]), written by the store in the change's
//! transaction ([`rule`]): accepted, each exchange sent, and each answer
//! with its outcome. Document reads and administrators' actions are
//! appended by the API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::store::trail::hex;
pub use crate::store::trail::{AuditRule, Draft, Entry, Head, GENESIS};
use crate::store::{QueueStore, RequestRecord};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit key: {0}")]
    Key(String),
    #[error("audit checkpoints {path}: {detail}")]
    Checkpoints { path: String, detail: String },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// The HMAC key for subjects.
pub struct AuditKey {
    key: [u8; 32],
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn from_file(path: &Path, create: bool) -> Result<AuditKey, AuditError> {
        crate::store::crypt::read_key_file(path, create)
            .map(|key| AuditKey { key })
            .map_err(|e| AuditError::Key(e.to_string()))
    }

    pub fn from_bytes(key: [u8; 32]) -> AuditKey {
        AuditKey { key }
    }

    /// The keyed hash of one identifier, e.g. `("jmbg", "0512981717776")`.
    pub fn hash(&self, kind: &str, value: &str) -> String {
        let mac = openssl::pkey::PKey::hmac(&self.key)
            .and_then(|k| {
                let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &k)?;
                s.sign_oneshot_to_vec(format!("{kind}:{value}").as_bytes())
            })
            .unwrap_or_default();
        hex(&mac)
    }

    /// The keyed hashes of a subject's personal identifiers.
    pub fn subject(&self, fields: &[(String, String)]) -> Vec<String> {
        fields
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "jmbg" | "pib" | "mb"))
            .map(|(k, v)| self.hash(k, v))
            .collect()
    }
}

/// A draft about a request, with its case, legal basis and purpose.
pub fn about(key: &AuditKey, r: &RequestRecord, actor: &str, action: &str, outcome: &str) -> Draft {
    Draft {
        at_ms: crate::time::now_ms(),
        actor: actor.to_owned(),
        official: r.official.clone(),
        action: action.to_owned(),
        request_id: Some(r.id.to_string()),
        case: r.case.to_string(),
        service: r.service.to_string(),
        legal_basis: r.legal_basis.clone(),
        purpose: r.purpose.clone(),
        outcome: outcome.to_owned(),
        subject: key.subject(&r.subject),
        signer_sha256: None,
    }
}

/// The rule the daemon installs: an entry for each [`Trace`] of a change
/// (accepted, each exchange sent, each answer with its outcome).
///
/// [`Trace`]: crate::lifecycle::effects::Trace
pub fn rule(key: Arc<AuditKey>) -> AuditRule {
    use crate::lifecycle::effects::{effects, Trace};
    Arc::new(move |old, new| {
        effects(old, new)
            .trace
            .into_iter()
            .map(|t| match t {
                Trace::Accepted => about(&key, new, &new.client, "request.accepted", "accepted"),
                Trace::Sent => about(&key, new, &new.client, "exchange.sent", "sent"),
                Trace::Answered { at_ms, outcome } => {
                    // A document's answer names the certificate it was
                    // accepted from.
                    let document = outcome.starts_with("document");
                    let mut d = about(&key, new, &new.client, "exchange.answered", &outcome);
                    d.at_ms = at_ms;
                    d.signer_sha256 = new.signer_sha256.clone().filter(|_| document);
                    d
                }
            })
            .collect()
    })
}

/// A line of the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
}

/// The checkpoint file: one `<rfc3339> <seq> <hash>` line per checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub path: PathBuf,
}

impl Checkpoints {
    pub fn read(&self) -> Result<Vec<Checkpoint>, AuditError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(AuditError::Checkpoints {
                    path: self.path.display().to_string(),
                    detail: e.to_string(),
                })
            }
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                match parts.as_slice() {
                    [_, seq, hash] if hash.len() == 64 => Ok(Checkpoint {
                        seq: seq.parse().map_err(|_| self.bad(i, "sequence number"))?,
                        hash: (*hash).to_owned(),
                    }),
                    _ => Err(self.bad(i, "line")),
                }
            })
            .collect()
    }

    fn bad(&self, line: usize, what: &str) -> AuditError {
        AuditError::Checkpoints {
            path: self.path.display().to_string(),
            detail: format!("unreadable {what} on line {}", line + 1),
        }
    }

    /// Appends the head if it moved since the last checkpoint; fsyncs.
    pub fn append(&self, head: &Head) -> Result<bool, AuditError> {
        let err = |e: std::io::Error| AuditError::Checkpoints {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        };
        if head.seq == 0 || self.read()?.last().is_some_and(|c| c.seq == head.seq) {
            return Ok(false);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        writeln!(f, "{now} {} {}", head.seq, head.hash).map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(true)
    }
}

/// Writes a checkpoint of the store's durable head.
pub async fn checkpoint(store: &dyn QueueStore, file: &Checkpoints) -> Result<bool, AuditError> {
    // Never vouch for entries that a crash could still take back.
    store.flush().await?;
    let head = store.audit_head().await?;
    file.append(&head)
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"entries": 1280, "head_seq": 1280, "head_hash": "9f2c…", "checkpoints": 42, "broken": null}))]
pub struct Verification {
    pub entries: u64,
    pub head_seq: u64,
    pub head_hash: String,
    pub checkpoints: usize,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Broken {
    pub seq: u64,
    pub reason: String,
}

/// Walks the whole chain and checks it against the checkpoints.
pub async fn verify(
    store: &dyn QueueStore,
    checkpoints: &[Checkpoint],
) -> Result<Verification, AuditError> {
    let mut head = Head::default();
    let mut n = 0u64;
    let mut broken: Option<Broken> = None;
    let mut hashes: std::collections::BTreeMap<u64, String> = Default::default();
    let wanted: std::collections::BTreeSet<u64> = checkpoints.iter().map(|c| c.seq).collect();
    let mut after = 0u64;
    'walk: loop {
        let page = store.audit_scan(after, 1000).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (seq, item) in page {
            let fail = |reason: String| Broken { seq, reason };
            let e = match item {
                Ok(e) => e,
                Err(why) => {
                    broken = Some(fail(format!("entry {seq} is unreadable: {why}")));
                    break 'walk;
                }
            };
            if seq != head.seq + 1 {
                broken = Some(Broken {
                    seq: head.seq + 1,
                    reason: format!("entry {} is missing (next is {seq})", head.seq + 1),
                });
                break 'walk;
            }
            if e.seq != seq {
                broken = Some(fail(format!("entry {seq} says it is {}", e.seq)));
                break 'walk;
            }
            if e.prev != head.hash {
                broken = Some(fail(format!(
                    "entry {seq} does not follow entry {}: its link to the previous hash is wrong",
                    head.seq
                )));
                break 'walk;
            }
            if e.digest() != e.hash {
                broken = Some(fail(format!(
                    "entry {seq} was changed after it was written"
                )));
                break 'walk;
            }
            if wanted.contains(&seq) {
                hashes.insert(seq, e.hash.clone());
            }
            head = Head { seq, hash: e.hash };
            n += 1;
        }
    }
    if broken.is_none() {
        for c in checkpoints {
            match hashes.get(&c.seq) {
                Some(h) if *h == c.hash => {}
                Some(_) => {
                    broken = Some(Broken {
                        seq: c.seq,
                        reason: format!("entry {} differs from its checkpoint", c.seq),
                    });
                    break;
                }
                None => {
                    broken = Some(Broken {
                        seq: head.seq + 1,
                        reason: format!(
                            "the trail ends at entry {} but a checkpoint vouches for entry {}: entries were removed from the end",
                            head.seq, c.seq
                        ),
                    });
                    break;
                }
            }
        }
    }
    Ok(Verification {
        entries: n,
        head_seq: head.seq,
        head_hash: head.hash,
        checkpoints: checkpoints.len(),
        broken,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry with every field set to something a change can reach:
    /// no `None`, no empty text, no zero, two subjects. Written without
    /// `..Default::default()`, so a field added later must be set here.
    fn full_entry() -> Entry {
        let d = Draft {
            at_ms: 1_765_000_000_123,
            actor: "pisarnica".into(),
            official: "Jelena Petrović".into(),
            action: "exchange.answered".into(),
            request_id: Some("01JD8Z5M6X3B7P9QK2R4T6V8WY".into()),
            case: "351-12/2026".into(),
            service: "civil.birth-extract".into(),
            legal_basis: "ZUP čl. 9, 103".into(),
            purpose: "izdavanje rešenja".into(),
            outcome: "document".into(),
            subject: vec!["ab12".into(), "cd34".into()],
            signer_sha256: Some("5e".repeat(32)),
        };
        Entry::chained(d, 7, &"9a".repeat(32))
    }

    /// The field names as the entry's `Debug` writes them, which lists
    /// every field, serialised or not.
    fn field_names(e: &Entry) -> std::collections::BTreeSet<String> {
        let text = format!("{e:?}");
        let mut names = std::collections::BTreeSet::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_lowercase() && (i == 0 || matches!(b[i - 1], b' ' | b'{')) {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if text[i..].starts_with(": ") {
                    names.insert(text[start..i].to_owned());
                }
            }
            i += 1;
        }
        names
    }

    /// Every variant of `v` with one thing changed: a number, a text, an
    /// element of a list (and the list one longer, one shorter, reordered).
    fn changes(v: &serde_json::Value) -> Vec<serde_json::Value> {
        use serde_json::Value;
        match v {
            Value::Number(n) => vec![Value::from(n.as_u64().expect("a count") + 1)],
            Value::String(s) => vec![Value::from(format!("{s}x")), Value::from(&s[1..])],
            Value::Array(a) => {
                let mut out = Vec::new();
                for (i, x) in a.iter().enumerate() {
                    for c in changes(x) {
                        let mut b = a.clone();
                        b[i] = c;
                        out.push(Value::Array(b));
                    }
                }
                let mut longer = a.clone();
                longer.push(a[0].clone());
                let mut reversed = a.clone();
                reversed.reverse();
                out.extend([
                    Value::Array(longer),
                    Value::Array(a[1..].to_vec()),
                    Value::Array(reversed),
                ]);
                out
            }
            other => panic!("the test entry has {other}, which no change reaches"),
        }
    }

    #[test]
    fn an_entry_hash_covers_every_field() {
        let e = full_entry();
        assert_eq!(e.digest(), e.hash);
        let v = serde_json::to_value(&e).unwrap();
        let keys: std::collections::BTreeSet<String> =
            v.as_object().unwrap().keys().cloned().collect();
        // Every field is written (`draft` is flattened into the entry):
        // a field left out of the JSON would be left out of the hash.
        let mut fields = field_names(&e);
        assert!(fields.remove("draft"), "{fields:?}");
        assert!(fields.len() >= 15, "{fields:?}");
        assert_eq!(fields, keys, "fields of an entry that are not serialised");

        let mut tried = 0;
        for key in keys.iter().filter(|k| *k != "hash") {
            let value = &v[key.as_str()];
            assert!(
                !(value.is_null() || value == "" || value == 0 || value == &serde_json::json!([])),
                "{key} is not set in the test entry"
            );
            for c in changes(value) {
                let mut m = v.clone();
                m[key.as_str()] = c.clone();
                let changed: Entry = serde_json::from_value(m.clone()).unwrap();
                // The change is kept by the entry itself, so it is the
                // digest that must see it.
                assert_eq!(serde_json::to_value(&changed).unwrap(), m, "{key}");
                assert_ne!(
                    changed.digest(),
                    e.hash,
                    "{key} changed to {c} keeps the hash"
                );
                tried += 1;
            }
        }
        assert!(tried >= 30, "{tried}");
        // The hash itself is not hashed: an entry verifies after the
        // hash is written into it.
        let mut rewritten = e.clone();
        rewritten.hash = "00".repeat(32);
        assert_eq!(rewritten.digest(), e.hash);
    }

    proptest::proptest! {
        #[test]
        fn checkpoint_files_never_panic_the_reader(text in "\\PC{0,300}", lines in proptest::collection::vec("[0-9a-fT:Z -]{0,80}", 0..6)) {
            let dir = tempfile::tempdir().unwrap();
            let c = Checkpoints { path: dir.path().join("c.log") };
            std::fs::write(&c.path, format!("{text}\n{}", lines.join("\n"))).unwrap();
            if let Err(e) = c.read() {
                proptest::prop_assert!(e.to_string().contains("unreadable"), "{e}");
            }
        }
    }

    #[test]
    fn checkpoints_round_trip_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints {
            path: dir.path().join("audit/c.log"),
        };
        assert_eq!(c.read().unwrap(), vec![]);
        let h = Head {
            seq: 7,
            hash: "a".repeat(64),
        };
        assert!(c.append(&h).unwrap());
        assert!(
            !c.append(&h).unwrap(),
            "an unmoved head is not written twice"
        );
        assert_eq!(
            c.read().unwrap(),
            vec![Checkpoint {
                seq: 7,
                hash: "a".repeat(64)
            }]
        );
        std::fs::write(&c.path, "2026-11-25T00:00:00Z seven aaaa\n").unwrap();
        assert!(c
            .read()
            .unwrap_err()
            .to_string()
            .ends_with("unreadable line on line 1"));
    }

    #[test]
    fn the_rule_records_accepted_sent_and_answered() {
        use crate::store::{AttemptRecord, State};
        let key = Arc::new(AuditKey::from_bytes([1; 32]));
        let r = rule(key.clone());
        let q = crate::lifecycle::record::testing::record()
            .client("pisarnica")
            .legal("ZUP", "marija", "permit")
            .now(std::time::Duration::from_secs(60))
            .build();
        let accepted = r(None, &q);
        assert_eq!(accepted[0].action, "request.accepted");
        assert_eq!(accepted[0].subject, vec![key.hash("jmbg", "0512981717776")]);
        let mut sending = q.clone();
        sending.state = State::Sending;
        let sent = r(Some(&q), &sending);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (sent[0].action.as_str(), sent[0].official.as_str()),
            ("exchange.sent", "marija")
        );
        let mut answered = sending.clone();
        answered.state = State::Fetched;
        answered.attempts.push(AttemptRecord {
            at_ms: 5,
            duration_ms: 1,
            http_status: Some(200),
            outcome: crate::lifecycle::OutcomeKind::Document,
            detail: "document".into(),
            message_id: None,
        });
        let a = r(Some(&sending), &answered);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].action.as_str(), a[0].outcome.as_str(), a[0].at_ms),
            ("exchange.answered", "document (HTTP 200)", 5)
        );
        assert!(
            r(Some(&answered), &answered).is_empty(),
            "no change, no entry"
        );
    }

    #[test]
    fn subjects_are_keyed_hashes_of_identifiers_only() {
        let k = AuditKey::from_bytes([7; 32]);
        let fields = vec![
            ("ko".to_string(), "803472".to_string()),
            ("jmbg".to_string(), "0512981717776".to_string()),
        ];
        let h = k.subject(&fields);
        assert_eq!(h, vec![k.hash("jmbg", "0512981717776")]);
        assert_eq!(h[0].len(), 64);
        assert!(!h[0].contains("0512981717776"));
        assert_ne!(
            h[0],
            AuditKey::from_bytes([8; 32]).hash("jmbg", "0512981717776")
        );
    }
}
