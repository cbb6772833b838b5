//! `jumgw dossier verify`: a case dossier checked offline, with nothing
//! but its bytes and the CA certificates one trusts (by default those it
//! carries, and the report says so). Each file gets a finding: valid,
//! invalid with the reason, or not verifiable and why; the dossier holds
//! only when every finding is valid.
//!
//! Time matters: years later the certificates have expired. A registry's
//! signature is judged at the time its timestamp proves, our seal at the
//! time of its signature timestamp, each timestamp at its own time.
//!
//! Each document is bound to its registry and signer: `case.json` names
//! the certificate the gateway accepted from that registry and the anchor
//! its chain ended at (their SHA-256), and a document counts only if it is
//! signed by exactly that certificate, chained to exactly that anchor,
//! which must be trusted; never by our seal's key, and no certificate
//! signs for two registries. Where the document's `exchange.answered`
//! audit entry (chained, its checkpoint timestamped) names the certificate
//! too, it must be the same: `case.json` alone does not decide. A
//! `--registry-signer` pin, the verifier's own knowledge, must match too.
//! A kept OCSP answer or CRL is judged at the document's proven time.
//!
//! A document that came by X-Road is signed by no registry certificate:
//! it is bound instead to its security server's signed document
//! (`evidence/{request}.asice`), whose `message.xml` must be the document
//! byte for byte and whose `attachment1`.. its attachments (read strictly,
//! `signed::bind`). X-Road's own signature in that container needs the
//! instance's verification configuration and is left to NIIS's
//! `asicverifier`; the report says so and how. The headers its provider
//! copied back must name the request it is filed under (`jum:requestId`),
//! its case (`issue`), legal basis and purpose. Claiming X-Road does not
//! dodge the signer binding: a document whose `exchange.answered` audit
//! entry recorded a signer, or for which `case.json` names one, is held to
//! that signer.
//!
//! Each document is the answer to the request it is filed under (its
//! signed header echoes the request's id, case, service, official, legal
//! basis and purpose; its payload's subject fields, where it has them);
//! each request of `case.json` is listed once and was accepted, in this
//! case and with the same facts, as its `request.accepted` audit entry
//! says; every sealed file is one `case.json` names, a CA certificate or
//! an audit file. Nothing the seal does not vouch for is parsed. The
//! container is read strictly and within memory caps (`container.rs`).
//!
//! What it cannot prove: without `--trust` (or `--registry-ca`), only that
//! the dossier is consistent with the CAs it carries itself. Whoever holds
//! the seal's key and can get timestamps can rewrite `case.json`, the audit
//! excerpt and its checkpoint together, and so re-sign a document with
//! another registry's key once that registry's request is dropped: only a
//! `--registry-signer` or `--registry-ca` given for the registry closes
//! that, and the report says when none was. The subject is checked only
//! where the document names it (the trail keeps keyed hashes); the
//! request's hash is not (the dossier does not keep the request sent).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek};

use openssl::x509::X509;
use serde::Serialize;

use super::container::{self, Container};
use super::dossier::{AuditLine, CaseFacts, RequestFacts, MANIFEST_FILE, MIMETYPE, SIGNATURE_FILE};
use super::stamper::{checkpoint_imprint, document_imprint};
use super::tsp;
use crate::pki::revocation::{self, crl, ocsp, State};
use crate::protocol::envelope;
use crate::xml::dsig::{cert_sha256, hex, name_to_string, parse_sha256_pin, NamePin, TrustStore};
use crate::xml::xades;

/// The most a file of each kind may be, loaded to be read: small enough
/// that a hostile dossier keeps the verifier far under 256 MB.
mod cap {
    /// Parsed into typed facts, whose free-form parts (revocation,
    /// timestamp) may cost several times their text.
    pub const CASE: u64 = 4 << 20;
    pub const MANIFEST: u64 = 4 << 20;
    pub const SIGNATURE: u64 = 10 << 20;
    pub const TOKEN: u64 = 1 << 20;
    pub const OCSP: u64 = crate::pki::revocation::OCSP_MAX_BYTES as u64;
    /// What the gateway reads of a CRL when it fetches one: a kept CRL is
    /// one it read.
    pub const CRL: u64 = crate::pki::revocation::CRL_MAX_BYTES as u64;
    pub const PEM: u64 = 1 << 20;
    /// All the certificates a dossier carries, together.
    pub const PEMS: u64 = 4 << 20;
    pub const MIMETYPE: u64 = 1 << 10;
    pub const CHECKPOINT: u64 = 1 << 10;
    /// One line of the audit files, which are read line by line.
    pub const AUDIT_LINE: usize = 1 << 20;
    /// The case's audit entries, of which a few hashes each are kept.
    pub const AUDIT_ENTRIES: u64 = 64 << 20;
    /// An X-Road signed document: what the gateway reads of one.
    pub const SIGNED_DOC: u64 = crate::evidence::signed::SIGNED_DOC_MAX_BYTES as u64;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    Unverifiable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub file: String,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Whose CA certificates the chains were judged against.
    pub trust: String,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn holds(&self) -> bool {
        !self.findings.is_empty() && self.findings.iter().all(|f| f.verdict == Verdict::Valid)
    }

    fn add(&mut self, file: &str, verdict: Verdict, detail: impl Into<String>) {
        self.findings.push(Finding {
            file: file.to_owned(),
            verdict,
            detail: detail.into(),
        });
    }
    fn valid(&mut self, file: &str, d: impl Into<String>) {
        self.add(file, Verdict::Valid, d)
    }
    fn invalid(&mut self, file: &str, d: impl Into<String>) {
        self.add(file, Verdict::Invalid, d)
    }
    fn unverifiable(&mut self, file: &str, d: impl Into<String>) {
        self.add(file, Verdict::Unverifiable, d)
    }
    /// What reading `file` gave, or `None` with the reason reported: the
    /// file missing, or what was wrong with it.
    fn read<T, E: std::fmt::Display>(
        &mut self,
        file: &str,
        got: Option<Result<T, E>>,
    ) -> Option<T> {
        match got {
            None => {
                self.invalid(file, "missing");
                None
            }
            Some(Err(e)) => {
                self.invalid(file, e.to_string());
                None
            }
            Some(Ok(v)) => Some(v),
        }
    }
}

/// What the verifier brings.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// CA certificates (PEM) to judge every chain against; `None`: the
    /// ones the dossier carries.
    pub trust: Option<Vec<u8>>,
    /// Per registry, the CA certificates (PEM) its documents must chain
    /// to: the verifier's own knowledge of who that registry is.
    pub registry_cas: BTreeMap<String, Vec<u8>>,
    /// Per registry, the signer its documents must be signed by: the
    /// verifier's own knowledge, from outside the dossier, of who signs
    /// for that registry (what the dossier records, its holder can
    /// rewrite together with everything else).
    pub registry_signers: BTreeMap<String, Vec<SignerPin>>,
    pub limits: container::Limits,
}

/// A registry signer's pin, written as the gateway's `signer_subject` /
/// `signer_sha256` are: an RFC 4514 subject compared exactly, or the
/// SHA-256 of the certificate.
#[derive(Debug, Clone)]
pub enum SignerPin {
    Subject(NamePin),
    Sha256([u8; 32]),
}

impl SignerPin {
    /// A name has `=` in it; a certificate hash never does.
    pub fn parse(text: &str) -> Result<SignerPin, String> {
        if text.contains('=') {
            NamePin::parse(text).map(SignerPin::Subject)
        } else {
            parse_sha256_pin(text).map(SignerPin::Sha256)
        }
    }

    fn matches(&self, cert: &X509) -> bool {
        match self {
            SignerPin::Subject(p) => p.matches(cert.subject_name()),
            SignerPin::Sha256(h) => cert.to_der().is_ok_and(|d| openssl::sha::sha256(&d) == *h),
        }
    }
}

impl std::fmt::Display for SignerPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignerPin::Subject(p) => write!(f, "subject {p}"),
            SignerPin::Sha256(h) => write!(f, "SHA-256 {}", hex(h)),
        }
    }
}

fn sha256_of(c: &X509) -> String {
    cert_sha256(c).unwrap_or_default()
}

/// Loads `name` within `cap`, saying in the report why not.
fn load<R: Read + Seek>(
    c: &Container<R>,
    rep: &mut Report,
    name: &str,
    cap: u64,
) -> Option<Vec<u8>> {
    rep.read(name, c.load(name, cap))
}

/// Verifies a dossier held in memory (tests, small tools).
pub fn verify(bytes: &[u8], trust: Option<&[u8]>) -> Report {
    verify_file(
        std::io::Cursor::new(bytes),
        &Options {
            trust: trust.map(<[u8]>::to_vec),
            ..Options::default()
        },
    )
}

/// Verifies the dossier in `file`, read streaming.
pub fn verify_file<R: Read + Seek>(file: R, opts: &Options) -> Report {
    let mut rep = Report::default();
    let c = match Container::open(file, opts.limits) {
        Ok(c) => c,
        Err(e) => {
            rep.trust = "none: the container was refused before any signature was read".into();
            rep.invalid("(container)", e.to_string());
            return rep;
        }
    };
    // The mimetype rule of ASiC: first, stored, no extra field.
    match c.entries().first() {
        Some(e) if e.name == "mimetype" => {
            let b = c
                .load("mimetype", cap::MIMETYPE)
                .and_then(Result::ok)
                .unwrap_or_default();
            if b.as_slice() != MIMETYPE.as_bytes() {
                rep.invalid(
                    "mimetype",
                    format!("holds {:?}, not {MIMETYPE}", String::from_utf8_lossy(&b)),
                );
            } else if !e.stored() {
                rep.invalid("mimetype", "is compressed; ASiC wants it stored");
            } else if !e.no_extra {
                rep.invalid("mimetype", "has an extra field; ASiC wants none");
            } else {
                rep.valid("mimetype", MIMETYPE);
            }
        }
        _ => rep.invalid("mimetype", "is not the first entry of the container"),
    }
    // What neither the manifest nor the seal covers has no place here.
    for e in c.entries() {
        let n = e.name.as_str();
        if e.is_dir() {
            rep.invalid(
                n,
                "a directory entry: neither the manifest nor the seal covers it",
            );
        } else if let Some(rest) = n.strip_prefix("META-INF/") {
            let signature = rest.starts_with("signatures") && rest.ends_with(".xml");
            if n == SIGNATURE_FILE || n == MANIFEST_FILE {
            } else if signature {
                rep.unverifiable(n, "a signature other than our seal: not verified");
            } else {
                rep.invalid(
                    n,
                    "in META-INF/ but neither the manifest nor a signature: neither the manifest nor the seal covers it",
                );
            }
        }
    }

    let mut carried: Vec<u8> = Vec::new();
    for e in c
        .entries()
        .iter()
        .filter(|e| e.name.starts_with("certificates/") && e.name.ends_with(".pem"))
    {
        if carried.len() as u64 + e.size > cap::PEMS {
            rep.invalid(
                &e.name,
                format!(
                    "the certificates carried pass {} bytes together: more than a dossier's CAs",
                    cap::PEMS
                ),
            );
            break;
        }
        match c.load(&e.name, cap::PEM) {
            Some(Ok(b)) => {
                carried.extend_from_slice(&b);
                carried.push(b'\n');
            }
            Some(Err(err)) => rep.invalid(&e.name, err.to_string()),
            None => {}
        }
    }
    let pem: Vec<u8> = match &opts.trust {
        Some(t) => {
            rep.trust = "the CA certificates given with --trust".into();
            t.clone()
        }
        None => {
            rep.trust = "the CA certificates the dossier carries (certificates/*.pem): give --trust to judge it against your own".into();
            carried
        }
    };
    if !opts.registry_cas.is_empty() {
        rep.trust
            .push_str(", and for a registry's documents the CA given for it with --registry-ca");
    }
    // A registry's CA given by the verifier is trusted for its documents
    // (and only for them).
    let registry_pem = |registry: &str| -> Vec<u8> {
        let mut p = pem.clone();
        if let Some(extra) = opts.registry_cas.get(registry) {
            p.push(b'\n');
            p.extend_from_slice(extra);
        }
        p
    };

    let anchors = X509::stack_from_pem(&pem).unwrap_or_default();
    if anchors.is_empty() {
        rep.invalid("(trust)", "no CA certificate to judge the chains against");
    }
    let trust_at =
        |at_ms: Option<u64>| TrustStore::from_pem_at(&pem, at_ms.map(|m| (m / 1000) as i64));

    // Our seal, and which files it covers.
    let mut covered: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Whether the seal's file list can be believed at all.
    let mut sealed = false;
    // The seal's certificate, never a registry's signer.
    let mut seal_cert: Option<X509> = None;
    // When the seal's timestamp proves it was made.
    let mut sealed_at_ms: Option<u64> = None;
    match c.load(SIGNATURE_FILE, cap::SIGNATURE) {
        None => rep.invalid(SIGNATURE_FILE, "missing: the dossier is not sealed"),
        Some(Err(e)) => rep.invalid(SIGNATURE_FILE, e.to_string()),
        Some(Ok(sig)) => match xades::verify(&sig) {
            Err(e) => rep.invalid(SIGNATURE_FILE, format!("the seal does not hold: {e}")),
            Ok(v) => {
                seal_cert = v.certificates.first().and_then(|d| X509::from_der(d).ok());
                let ts = v.timestamp.as_ref().map(|t| {
                    tsp::check_token(t, &openssl::sha::sha256(&v.timestamp_input), &anchors)
                });
                let sealed_at = match &ts {
                    Some(Ok(t)) => {
                        rep.valid(
                            &format!("{SIGNATURE_FILE}#timestamp"),
                            format!(
                                "signature timestamp at {} by {}",
                                crate::time::rfc3339_secs(t.time_ms),
                                t.tsa
                            ),
                        );
                        Some(t.time_ms)
                    }
                    Some(Err(e)) => {
                        rep.invalid(&format!("{SIGNATURE_FILE}#timestamp"), e.to_string());
                        None
                    }
                    None => {
                        rep.unverifiable(
                            &format!("{SIGNATURE_FILE}#timestamp"),
                            "no signature timestamp (XAdES B, not B-T): when it was sealed is not proven",
                        );
                        None
                    }
                };
                sealed_at_ms = sealed_at;
                let trusted = trust_at(sealed_at).and_then(|t| t.trusted_signer(&v.certificates));
                // A seal anyone could make vouches for nothing.
                let believed = trusted.is_ok();
                match trusted {
                    Ok(cert) => rep.valid(
                        SIGNATURE_FILE,
                        format!(
                            "sealed by {} at {} (XAdES {})",
                            name_to_string(cert.subject_name()),
                            v.signing_time,
                            if sealed_at.is_some() { "B-T" } else { "B" }
                        ),
                    ),
                    Err(e) => rep.invalid(SIGNATURE_FILE, format!("the seal's certificate: {e}")),
                }
                let listed: Vec<(String, String)> = v
                    .references
                    .iter()
                    .map(|r| (r.uri.clone(), r.mime.clone().unwrap_or_default()))
                    .collect();
                match load(&c, &mut rep, MANIFEST_FILE, cap::MANIFEST) {
                    None => {}
                    Some(m) if m == super::dossier::manifest(&listed) => {
                        rep.valid(MANIFEST_FILE, format!("lists the {} sealed files", listed.len()))
                    }
                    Some(_) => rep.invalid(
                        MANIFEST_FILE,
                        "differs from the manifest of the sealed files (changed, or lists other files)",
                    ),
                }
                for r in v.references {
                    covered.insert(r.uri, r.sha256);
                }
                sealed = believed;
            }
        },
    }
    for uri in covered.keys() {
        if c.entry(uri).is_none() {
            rep.invalid(
                uri,
                "missing: the seal covers it, the dossier no longer holds it (removed)",
            );
        }
    }
    let data_files: Vec<&container::Entry> = c
        .entries()
        .iter()
        .filter(|e| e.name != "mimetype" && !e.name.starts_with("META-INF/") && !e.is_dir())
        .collect();
    let mut intact: BTreeSet<&str> = BTreeSet::new();
    for e in &data_files {
        let name = e.name.as_str();
        if !sealed {
            rep.unverifiable(
                name,
                "the seal does not hold, so nothing vouches for this file: not read",
            );
            continue;
        }
        match covered.get(name) {
            None => rep.invalid(name, "not covered by the seal: added after sealing"),
            Some(d) if d.as_slice() != e.sha256.as_slice() => rep.invalid(
                name,
                "changed after sealing: its SHA-256 is not the one the seal signed",
            ),
            Some(_) => {
                intact.insert(name);
            }
        }
    }
    for e in &data_files {
        if e.name.starts_with("certificates/") && intact.contains(e.name.as_str()) {
            rep.valid(&e.name, "CA certificates, sealed");
        }
    }
    // Nothing the seal does not vouch for is read: what no one vouches
    // for is no evidence, and a parser is not fed what anyone could write.
    if !sealed {
        return rep;
    }
    if !intact.contains("case.json") {
        if c.entry("case.json").is_none() && !covered.contains_key("case.json") {
            rep.invalid("case.json", "missing");
        }
        return rep;
    }
    // A file the seal vouches for, or None (its finding is made).
    let sealed_load = |rep: &mut Report, name: &str, cap: u64| -> Option<Vec<u8>> {
        if c.entry(name).is_none() {
            if !covered.contains_key(name) {
                rep.invalid(name, "missing");
            }
            return None;
        }
        if !intact.contains(name) {
            return None;
        }
        load(&c, rep, name, cap)
    };

    let facts: CaseFacts = match c
        .load("case.json", cap::CASE)
        .map(|r| r.map(|b| serde_json::from_slice::<CaseFacts>(&b)))
    {
        Some(Ok(Ok(f))) => {
            if intact.contains("case.json") {
                rep.valid(
                    "case.json",
                    format!(
                        "case {}: {} requests, exported {} by {}",
                        f.case,
                        f.requests.len(),
                        f.exported,
                        f.exported_by
                    ),
                );
            }
            f
        }
        Some(Ok(Err(e))) => {
            rep.invalid("case.json", format!("unreadable: {e}"));
            return rep;
        }
        Some(Err(e)) => {
            rep.invalid("case.json", e.to_string());
            return rep;
        }
        None => {
            rep.invalid("case.json", "missing");
            return rep;
        }
    };

    structure(&facts, &data_files, &mut rep);

    // A name mistyped would otherwise insist on nothing.
    for name in opts.registry_cas.keys().chain(opts.registry_signers.keys()) {
        if !facts
            .requests
            .iter()
            .any(|r| r.registry == *name && r.document.is_some())
        {
            let (opt, what) = if opts.registry_cas.contains_key(name) {
                ("(--registry-ca)", "the CA")
            } else {
                ("(--registry-signer)", "the signer")
            };
            rep.unverifiable(
                opt,
                format!("no document of registry {name:?} in this dossier: {what} given for it was not used"),
            );
        }
    }
    let seal_sha = seal_cert.as_ref().map(sha256_of);
    let seal_key = seal_cert
        .as_ref()
        .and_then(|c| c.public_key().ok())
        .and_then(|k| k.public_key_to_der().ok());
    // Which registry each signer certificate signed for, to refuse one
    // certificate speaking for two registries.
    let mut signed_for: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in &facts.requests {
        let Some(doc_name) = &r.document else {
            continue;
        };
        let Some(doc) = sealed_load(
            &mut rep,
            doc_name,
            crate::xml::Limits::default().max_size as u64,
        ) else {
            continue;
        };
        if claims_x_road(r) {
            x_road(
                r,
                doc_name,
                &doc,
                &c,
                &intact,
                &facts.case,
                &mut rep,
                &mut |rep, n, cap| sealed_load(rep, n, cap),
            );
            continue;
        }
        // Only X-Road's security server signs attachments.
        for a in &r.attachments {
            rep.invalid(
                &a.file,
                format!(
                    "an attachment of {doc_name}, which did not come by X-Road: nothing signed it"
                ),
            );
        }
        // When it was signed, as its timestamp proves.
        let mut signed_at = None;
        match r.timestamp_token.as_deref() {
            Some(n) => {
                if let Some(token) = sealed_load(&mut rep, n, cap::TOKEN) {
                    match document_imprint(&doc)
                    .map_err(|e| e.to_string())
                    .and_then(|i| tsp::check_token(&token, &i, &anchors).map_err(|e| e.to_string()))
                {
                    // Stamped after the dossier was made: a token fetched
                    // for a document put in afterwards (genTime has a
                    // precision of a second).
                    Ok(t) if t.time_ms > facts.exported_ms + 1000 => rep.invalid(
                        n,
                        format!(
                            "timestamp on {doc_name}'s signature at {}, after the dossier was exported ({}): not the token the dossier was made with",
                            crate::time::rfc3339_secs(t.time_ms),
                            facts.exported
                        ),
                    ),
                    Ok(t) => {
                        if recorded_time(r) != Some(t.time_ms) {
                            rep.invalid(
                                "case.json",
                                format!(
                                    "request {} says its document was stamped at {}, its token says {}",
                                    r.id,
                                    recorded_time(r).map(crate::time::rfc3339_secs).unwrap_or_else(|| "no time".into()),
                                    crate::time::rfc3339_secs(t.time_ms)
                                ),
                            );
                        }
                        rep.valid(
                            n,
                            format!(
                                "timestamp on {doc_name}'s signature at {} by {}",
                                crate::time::rfc3339_secs(t.time_ms),
                                t.tsa
                            ),
                        );
                        signed_at = Some(t.time_ms);
                    }
                    Err(e) => rep.invalid(n, e),
                }
                }
            }
            None => rep.unverifiable(
                doc_name,
                format!(
                    "no timestamp: when the registry signed it is not proven (its timestamp is {})",
                    r.timestamp
                        .as_ref()
                        .and_then(|t| t.get("state"))
                        .and_then(|s| s.as_str())
                        .unwrap_or("absent")
                ),
            ),
        }
        // Judged at its proven time, else at the gateway's record of it.
        let at = signed_at.or(r.attempts.last().map(|a| a.at_ms));
        let doc_pem = registry_pem(&r.registry);
        let store = TrustStore::from_pem_at(&doc_pem, at.map(|m| (m / 1000) as i64));
        let verified = store.as_ref().map_err(|e| e.to_string()).and_then(|t| {
            crate::xml::dsig::verify(&doc, t, &crate::xml::Limits::default())
                .map_err(|e| e.to_string())
        });
        let expected = match (&r.signer, &r.signer_sha256) {
            (Some(s), Some(h)) => format!("{s} (SHA-256 {h})"),
            (None, Some(h)) => format!("SHA-256 {h}"),
            (Some(s), None) => s.clone(),
            (None, None) => "none recorded".into(),
        };
        let signer = match verified {
            Ok(v) => {
                let got = sha256_of(&v.signer);
                let got_key = v
                    .signer
                    .public_key()
                    .ok()
                    .and_then(|k| k.public_key_to_der().ok());
                let anchor = store
                    .as_ref()
                    .ok()
                    .and_then(|t| t.anchor_of(&v.signer, &v.intermediates));
                let anchor_sha = anchor.as_ref().map(sha256_of);
                let anchor_name = anchor
                    .as_ref()
                    .map(|a| name_to_string(a.subject_name()))
                    .unwrap_or_else(|| "no anchor".into());
                let by = format!("{} (SHA-256 {got})", v.signer_subject());
                let pins = opts.registry_signers.get(&r.registry);
                let answer = answers(&v.doc, r, &facts.case);
                let bound = if let Err(why) = answer {
                    Err(Bound::Invalid(why))
                } else if pins.is_some_and(|p| !p.iter().any(|p| p.matches(&v.signer))) {
                    Err(Bound::Invalid(format!(
                        "signed by {by}, not by the signer given for {} with --registry-signer ({})",
                        r.registry,
                        pins.into_iter()
                            .flatten()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )))
                } else {
                    bind(
                        &BindFacts {
                            doc_name,
                            registry: &r.registry,
                            expected: &expected,
                            recorded: r.signer_sha256.as_deref(),
                            recorded_anchor: r.signer_anchor_sha256.as_deref(),
                            got: &got,
                            by: &by,
                            anchor: anchor.as_ref(),
                            anchor_sha: anchor_sha.as_deref(),
                            anchor_name: &anchor_name,
                            seal: (seal_sha.as_deref(), seal_key.as_deref()),
                            got_key: got_key.as_deref(),
                            registry_ca: opts.registry_cas.get(&r.registry).map(Vec::as_slice),
                        },
                        &mut signed_for,
                    )
                };
                match bound {
                    Ok(()) => rep.valid(
                        doc_name,
                        format!(
                            "{}'s document, the answer to request {} of case {}, signed by {by}, the signer the gateway accepted from it{}; chained to {anchor_name} (SHA-256 {}), valid at {}",
                            r.registry,
                            r.id,
                            facts.case,
                            if pins.is_some() {
                                " and the one given for it with --registry-signer"
                            } else {
                                " (no signer given for it with --registry-signer: bound only to what the dossier records)"
                            },
                            anchor_sha.as_deref().unwrap_or("?"),
                            at.map(crate::time::rfc3339_secs).unwrap_or_default()
                        ),
                    ),
                    Err(Bound::Invalid(why)) => {
                        rep.invalid(doc_name, why);
                    }
                    Err(Bound::Unverifiable(why)) => rep.unverifiable(doc_name, why),
                    Err(Bound::Twice {
                        other_doc,
                        why,
                        other_why,
                    }) => {
                        rep.invalid(doc_name, why);
                        // The other document was judged before this one
                        // was seen: it no longer stands.
                        for f in rep.findings.iter_mut().filter(|f| {
                            f.file == other_doc && f.verdict == Verdict::Valid
                        }) {
                            f.verdict = Verdict::Invalid;
                            f.detail = other_why.clone();
                        }
                    }
                }
                Some((v.signer, v.intermediates))
            }
            Err(e) => {
                rep.invalid(
                    doc_name,
                    format!(
                        "the registry's signature does not hold: {e} (expected {}'s signer {expected})",
                        r.registry
                    ),
                );
                None
            }
        };
        let Some((cert, intermediates)) = &signer else {
            continue;
        };
        let pool: Vec<X509> = X509::stack_from_pem(&doc_pem)
            .unwrap_or_default()
            .into_iter()
            .chain(intermediates.iter().cloned())
            .collect();
        let issuer = revocation::issuer_of(cert, &pool);
        let mut proven = false;
        if let Some(n) = &r.ocsp {
            proven = true;
            match (sealed_load(&mut rep, n, cap::OCSP), &issuer) {
                (None, _) => {}
                (Some(_), None) => {
                    rep.unverifiable(n, "the signer's issuer is not among the CA certificates")
                }
                (Some(der), Some(issuer)) => {
                    match ocsp::check_kept(&der, cert, issuer, at.unwrap_or(0)) {
                        Ok(a) => match a.state {
                            State::Good => {
                                said_good(&mut rep, r);
                                rep.valid(
                                    n,
                                    format!(
                                        "OCSP: {}'s signer not revoked (thisUpdate {})",
                                        doc_name,
                                        crate::time::rfc3339_secs(a.this_update_ms)
                                    ),
                                )
                            }
                            State::Revoked { at_ms, .. } => rep.invalid(
                                n,
                                format!(
                                    "OCSP: the signer was revoked at {}",
                                    crate::time::rfc3339_secs(at_ms)
                                ),
                            ),
                            State::Unknown => {
                                rep.invalid(n, "OCSP: the signer is unknown to its CA")
                            }
                        },
                        Err(e) => rep.invalid(n, format!("OCSP response for {doc_name}: {e}")),
                    }
                }
            }
        }
        if let Some(n) = &r.crl {
            proven = true;
            match (sealed_load(&mut rep, n, cap::CRL), &issuer) {
                (None, _) => {}
                (Some(_), None) => {
                    rep.unverifiable(n, "the signer's issuer is not among the CA certificates")
                }
                (Some(der), Some(issuer)) => {
                    let at = at.unwrap_or(0);
                    match crl_status(&der, cert, issuer, at) {
                        Ok(None) => {
                            said_good(&mut rep, r);
                            rep.valid(
                                n,
                                format!(
                                    "CRL: {doc_name}'s signer not on it at {}",
                                    crate::time::rfc3339_secs(at)
                                ),
                            )
                        }
                        Ok(Some(when)) if when <= at => rep.invalid(
                            n,
                            format!(
                                "CRL: the signer was revoked at {}",
                                crate::time::rfc3339_secs(when)
                            ),
                        ),
                        Ok(Some(when)) => {
                            said_good(&mut rep, r);
                            rep.valid(
                                n,
                                format!(
                                    "CRL: {doc_name}'s signer revoked only later ({}), not when it signed",
                                    crate::time::rfc3339_secs(when)
                                ),
                            )
                        }
                        Err(e) => rep.invalid(n, format!("CRL for {doc_name}: {e}")),
                    }
                }
            }
        }
        if !proven {
            let how = r
                .revocation
                .as_ref()
                .map(|v| {
                    format!(
                        "{} by {}",
                        v.get("status").and_then(|s| s.as_str()).unwrap_or("?"),
                        v.get("method")
                            .and_then(|s| s.as_str())
                            .unwrap_or("nothing")
                    )
                })
                .unwrap_or_else(|| "not checked".into());
            rep.unverifiable(
                doc_name,
                format!("no OCSP response or CRL kept for its signer (revocation: {how})"),
            );
        }
    }
    let trail = if AUDIT_FILES[..2].iter().all(|f| intact.contains(f)) {
        audit(&c, &facts, &anchors, sealed_at_ms, &mut rep)
    } else {
        Trail::default()
    };
    if trail.held {
        against_trail(&facts, &trail, &mut rep);
    } else {
        rep.unverifiable(
            "case.json",
            "its facts cannot be checked against the audit trail, which does not hold",
        );
    }
    let answered = &trail.answered;
    // A document the trail says came signed by a registry's certificate
    // is held to it, whatever case.json claims.
    for r in facts.requests.iter().filter(|r| claims_x_road(r)) {
        let (Some(doc_name), Some((seq, sha))) = (&r.document, answered.get(&r.id)) else {
            continue;
        };
        rep.invalid(
            doc_name,
            format!(
                "case.json says it came by X-Road, bound to a signed document, but the audit trail's exchange.answered entry {seq} recorded the signer SHA-256 {sha} when {}'s answer came: a signed-XML document, which must be bound to that signer",
                r.registry
            ),
        );
    }
    // The signer case.json names is the one the audit trail recorded when
    // the answer came, in an entry the timestamped chain holds: case.json
    // alone, rewritten and resealed, does not decide.
    for r in &facts.requests {
        let (Some(doc_name), Some(recorded)) = (&r.document, &r.signer_sha256) else {
            continue;
        };
        match answered.get(&r.id) {
            Some((seq, sha)) if sha == recorded => rep.valid(
                &format!("audit/entries.jsonl#{seq}"),
                format!("{doc_name}'s signer (SHA-256 {sha}) is the one the gateway recorded when {}'s answer came", r.registry),
            ),
            Some((seq, sha)) => rep.invalid(
                doc_name,
                format!(
                    "case.json names the signer SHA-256 {recorded}, but the audit trail's exchange.answered entry {seq} recorded SHA-256 {sha} when {}'s answer came",
                    r.registry
                ),
            ),
            // The trail holds but records no signer for this answer: the
            // signer rests on case.json alone, which the seal's holder can
            // rewrite.
            None if trail.held => rep.unverifiable(
                doc_name,
                "the audit trail records no signer for its answer (no exchange.answered entry with the signer's SHA-256): the signer case.json names rests on case.json alone",
            ),
            None => {}
        }
    }
    rep
}

/// The signed document is the registry's answer to the request it is
/// filed under: its header echoes that request's id, case, service,
/// official, legal basis and purpose (what the gateway checked at
/// receipt, with the request's hash, which the dossier does not keep),
/// and where its payload names a field of the subject, the subject's
/// value. Read from the tree the signature was verified over.
fn answers(doc: &crate::xml::Document, r: &RequestFacts, case: &str) -> Result<(), String> {
    let env = envelope::read(doc)
        .map_err(|e| format!("its signed content is not a registry's answer: {e}"))?;
    let h = &env.headers;
    if h.id != r.id || h.issue != case {
        return Err(format!(
            "is the answer to request {} of case {}, not to request {} of case {} it is filed under",
            h.id, h.issue, r.id, case
        ));
    }
    let echoed = [
        ("service", &h.service_code, &r.service),
        ("official", &h.user_id, &r.official),
        ("legal basis", &h.legal_basis, &r.legal_basis),
        ("purpose", &h.purpose, &r.purpose),
    ];
    for (what, signed, listed) in echoed {
        if signed != listed {
            return Err(format!(
                "answers request {} with {what} {signed:?}, case.json says {listed:?}",
                r.id
            ));
        }
    }
    if env.request_hash.is_none() {
        return Err(format!(
            "names request {} but carries no requestHash: not an answer",
            r.id
        ));
    }
    let envelope::Body::Payload { node, .. } = env.body else {
        return Err(format!("is not a document answering request {}", r.id));
    };
    // Leaves only: a composite element's text is several fields run
    // together. The values are not written out (personal data).
    for (field, value) in &r.subject {
        let mut found = false;
        let mut same = false;
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let kids: Vec<_> = doc.child_elements(n).collect();
            if kids.is_empty() {
                if doc.element(n).is_some_and(|e| e.local == *field) {
                    found = true;
                    same |= doc.text(n).trim() == value.as_str();
                }
            } else {
                stack.extend(kids);
            }
        }
        if found && !same {
            return Err(format!(
                "speaks of another {field} than the subject case.json names for request {}",
                r.id
            ));
        }
    }
    Ok(())
}

/// Loads a file the seal vouches for, or makes its finding.
type SealedLoad<'a> = dyn FnMut(&mut Report, &str, u64) -> Option<Vec<u8>> + 'a;

/// `case.json` says the request's document came by X-Road.
fn claims_x_road(r: &RequestFacts) -> bool {
    r.signed_document.is_some() || r.signed_document_file.is_some()
}

/// Judges an X-Road document: bound to its security server's signed
/// document, byte for byte, with its attachments; or, without one kept,
/// not verifiable, saying why.
#[allow(clippy::too_many_arguments)]
fn x_road<R: Read + Seek>(
    r: &RequestFacts,
    doc_name: &str,
    doc: &[u8],
    c: &Container<R>,
    intact: &BTreeSet<&str>,
    case: &str,
    rep: &mut Report,
    sealed_load: &mut SealedLoad<'_>,
) {
    // One or the other: a signer named beside a signed document is a
    // signed-XML document dressed as X-Road.
    if r.signer.is_some() || r.signer_sha256.is_some() || r.signer_anchor_sha256.is_some() {
        rep.invalid(
            doc_name,
            format!(
                "case.json names a registry signer ({}) and an X-Road signed document for it: a signed-XML document is bound to its signer, which claiming X-Road does not replace",
                r.signer_sha256.as_deref().or(r.signer.as_deref()).unwrap_or("?")
            ),
        );
        return;
    }
    let recorded = r.signed_document.as_ref();
    let field = |k: &str| {
        recorded
            .and_then(|s| s.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let message_id = field("message_id").unwrap_or_else(|| "(none recorded)".into());
    let Some(file) = &r.signed_document_file else {
        rep.unverifiable(
            doc_name,
            format!(
                "{}'s document came by X-Road (message id {message_id}) and its signed document is not kept ({}{}): it is bound to no signature",
                r.registry,
                field("state").unwrap_or_else(|| "absent".into()),
                field("reason").map(|w| format!(": {w}")).unwrap_or_default()
            ),
        );
        return;
    };
    let Some(container) = sealed_load(rep, file, cap::SIGNED_DOC) else {
        return;
    };
    if let Some(want) = field("sha256") {
        let got = hex(&openssl::sha::sha256(&container));
        if got != want {
            rep.invalid(
                file,
                format!("its SHA-256 is {got}, case.json records {want} for the signed document the gateway kept"),
            );
            return;
        }
    }
    // The attachments, by the digests the container reader took of them:
    // only sealed ones count.
    let mut digests = Vec::with_capacity(r.attachments.len());
    for a in &r.attachments {
        match c.entry(&a.file) {
            Some(e) if intact.contains(a.file.as_str()) => {
                if hex(&e.sha256) != a.sha256 || e.size != a.size {
                    rep.invalid(
                        &a.file,
                        format!(
                            "{} bytes, SHA-256 {}: case.json lists {} bytes, SHA-256 {}",
                            e.size,
                            hex(&e.sha256),
                            a.size,
                            a.sha256
                        ),
                    );
                }
                digests.push(crate::evidence::signed::Digest {
                    size: e.size,
                    sha256: e.sha256,
                });
            }
            Some(_) => return,
            None => {
                rep.invalid(&a.file, "missing");
                return;
            }
        }
    }
    match crate::evidence::signed::bind(&container, doc, r.charset.as_deref(), &digests) {
        Ok(b) => {
            rep.valid(
                file,
                format!(
                    "the X-Road security server's signed document of it: {file}, message id {message_id}{}{}{}; its X-Road signature and timestamp are not verified here (they need the X-Road instance's global configuration): verify them with NIIS's asicverifier: java -jar asicverifier.jar <verificationconf> {file} (the verification configuration from the security server's /verificationconf)",
                    if b.timestamped { ", with a timestamp entry" } else { "" },
                    if b.message_as_text { ", its message.xml the document's text as UTF-8" } else { "" },
                    if b.attachments_logged { "" } else { ", the attachments not logged in it" }
                ),
            );
            // Bound to its signed document, and so to its message; that
            // message must be the answer to this request.
            if let Err(why) = x_road_answers(doc, r, case) {
                rep.invalid(doc_name, why);
                return;
            }
            rep.valid(
                doc_name,
                format!(
                    "{}'s document, the answer to request {} of case {case}, came by X-Road: it is byte for byte the message.xml of its security server's signed document {file}",
                    r.registry, r.id
                ),
            );
            for (i, a) in r.attachments.iter().enumerate() {
                rep.valid(
                    &a.file,
                    format!(
                        "attachment {} of {doc_name} ({}), byte for byte the attachment{} of {file}",
                        i + 1,
                        a.content_type,
                        i + 1
                    ),
                );
            }
        }
        Err(e) => {
            rep.invalid(file, format!("not the signed document of {doc_name}: {e}"));
            rep.invalid(
                doc_name,
                format!("came by X-Road, but is not bound to its signed document {file}: {e}"),
            );
        }
    }
}

/// An X-Road document is the answer to the request it is filed under:
/// the headers its provider copied back (the client's security server
/// checked them at receipt) name this request (`jum:requestId`), case
/// (`issue`), legal basis and purpose. Read with the charset its answer's
/// Content-Type named (kept on the record), else its XML declaration's,
/// as it was received.
fn x_road_answers(doc: &[u8], r: &RequestFacts, case: &str) -> Result<(), String> {
    use crate::protocol::ns;
    let content_type = r.charset.as_ref().map(|c| format!("text/xml; charset={c}"));
    let received =
        crate::protocol::xroad::receive(content_type.as_deref(), doc, &Default::default())
            .map_err(|e| format!("is not an X-Road message: {e}"))?;
    let d = crate::xml::Document::parse(&received.xml, &crate::xml::Limits::default())
        .map_err(|e| format!("is not an X-Road message: {e}"))?;
    let header = d
        .child(d.root(), ns::SOAP, "Header")
        .ok_or("is not an X-Road message: it has no SOAP header")?;
    let one = |namespace: &str, local: &str| -> Result<String, String> {
        let found: Vec<_> = d
            .child_elements(header)
            .filter(|n| d.is(*n, namespace, local))
            .collect();
        match found.as_slice() {
            [n] => Ok(d.text(*n)),
            _ => Err(format!(
                "has {} {{{namespace}}}{local} headers, not one: not the answer to request {} as the gateway sent it",
                found.len(),
                r.id
            )),
        }
    };
    let said = [
        ("request", one(ns::JUM, "requestId")?, r.id.as_str()),
        ("case", one(ns::XROAD, "issue")?, case),
        (
            "legal basis",
            one(ns::JUM, "legalBasis")?,
            r.legal_basis.as_str(),
        ),
        ("purpose", one(ns::JUM, "purpose")?, r.purpose.as_str()),
    ];
    for (what, header, listed) in said {
        if header != listed {
            return Err(format!(
                "answers the {what} {header:?}, not the {listed:?} of request {} it is filed under",
                r.id
            ));
        }
    }
    Ok(())
}

/// The audit files a dossier has besides what `case.json` names.
const AUDIT_FILES: [&str; 4] = [
    "audit/entries.jsonl",
    "audit/chain.txt",
    "audit/checkpoint.txt",
    "audit/checkpoint.tst",
];

/// Every data file is one `case.json` names, where the dossier's layout
/// puts it, a CA certificate, or an audit file: a sealed file nothing
/// names would otherwise stand beside the case unmentioned (a
/// "corrected" document, a note). Each request is listed once.
fn structure(facts: &CaseFacts, data_files: &[&container::Entry], rep: &mut Report) {
    let mut named: BTreeSet<&str> = BTreeSet::from(["case.json"]);
    named.extend(AUDIT_FILES);
    let mut ids = BTreeSet::new();
    for r in &facts.requests {
        if !ids.insert(r.id.as_str()) {
            rep.invalid(
                "case.json",
                format!("request {} is listed twice: one request, one entry", r.id),
            );
        }
        let crl_name = |n: &str| {
            n.strip_prefix("evidence/crl-")
                .and_then(|h| h.strip_suffix(".crl"))
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        // Every file case.json names for this request, under the one name
        // the dossier gives it.
        let mut files: Vec<(String, &String, String)> = [
            ("document", &r.document, format!("documents/{}.xml", r.id)),
            ("OCSP response", &r.ocsp, format!("evidence/{}.ocsp", r.id)),
            (
                "timestamp token",
                &r.timestamp_token,
                format!("evidence/{}.tst", r.id),
            ),
        ]
        .into_iter()
        .filter_map(|(what, file, want)| Some((what.to_owned(), file.as_ref()?, want)))
        .collect();
        files.extend(r.attachments.iter().enumerate().map(|(i, a)| {
            (
                format!("attachment {}", i + 1),
                &a.file,
                super::dossier::attachment_file(&r.id, i + 1),
            )
        }));
        if let Some(f) = &r.signed_document_file {
            files.push((
                "signed document".into(),
                f,
                super::dossier::signed_document_file(&r.id),
            ));
        }
        for (what, file, want) in files {
            if *file != want {
                rep.invalid(
                    "case.json",
                    format!(
                        "request {} files its {what} as {file:?}, not {want:?}",
                        r.id
                    ),
                );
            }
            named.insert(file);
        }
        if let Some(n) = &r.crl {
            if !crl_name(n) {
                rep.invalid(
                    "case.json",
                    format!(
                        "request {} files its CRL as {n:?}, not evidence/crl-<SHA-256>.crl",
                        r.id
                    ),
                );
            }
            named.insert(n);
        }
    }
    for e in data_files {
        let n = e.name.as_str();
        let certificate = n
            .strip_prefix("certificates/")
            .is_some_and(|f| f.ends_with(".pem") && !f.contains('/'));
        if !named.contains(n) && !certificate {
            rep.invalid(
                n,
                "not part of the dossier's structure: case.json does not name it",
            );
        }
    }
}

/// The time `case.json` says a request's document was stamped at.
fn recorded_time(r: &RequestFacts) -> Option<u64> {
    r.timestamp
        .as_ref()
        .and_then(|t| t.get("time_ms"))
        .and_then(serde_json::Value::as_u64)
}

/// The kept evidence says the signer was good: so must `case.json`.
fn said_good(rep: &mut Report, r: &RequestFacts) {
    let status = r
        .revocation
        .as_ref()
        .and_then(|v| v.get("status"))
        .and_then(|s| s.as_str());
    if status != Some("good") {
        rep.invalid(
            "case.json",
            format!(
                "request {} says its signer's revocation status was {}, the kept evidence says good",
                r.id,
                status.unwrap_or("not recorded")
            ),
        );
    }
}

/// A kept CRL's word on `cert` at `at_ms`: when it was revoked, if it is
/// on the list.
fn crl_status(der: &[u8], cert: &X509, issuer: &X509, at_ms: u64) -> Result<Option<u64>, String> {
    match crl::check_kept(der, cert, issuer, at_ms)
        .map_err(|e| e.to_string())?
        .state
    {
        State::Good => Ok(None),
        State::Revoked { at_ms, .. } => Ok(Some(at_ms)),
        State::Unknown => Err("the CRL does not speak of this certificate".into()),
    }
}

/// Why a verified signature is not the one the dossier binds the
/// document to.
enum Bound {
    Invalid(String),
    Unverifiable(String),
    /// Its certificate also signed `other_doc` for another registry: both
    /// are invalid.
    Twice {
        other_doc: String,
        why: String,
        other_why: String,
    },
}

struct BindFacts<'a> {
    doc_name: &'a str,
    registry: &'a str,
    /// The recorded signer, as the report names it.
    expected: &'a str,
    recorded: Option<&'a str>,
    recorded_anchor: Option<&'a str>,
    /// SHA-256 of the certificate that signed it.
    got: &'a str,
    /// It, as the report names it.
    by: &'a str,
    anchor: Option<&'a X509>,
    anchor_sha: Option<&'a str>,
    anchor_name: &'a str,
    /// Our seal's certificate hash and public key.
    seal: (Option<&'a str>, Option<&'a [u8]>),
    got_key: Option<&'a [u8]>,
    registry_ca: Option<&'a [u8]>,
}

/// The document's signer is the one the gateway accepted from its
/// registry, under that registry's anchor.
fn bind(
    f: &BindFacts<'_>,
    signed_for: &mut BTreeMap<String, (String, String)>,
) -> Result<(), Bound> {
    let (reg, doc) = (f.registry, f.doc_name);
    // The seal's key under another certificate is the seal all the same.
    let seal_cert = f.seal.0 == Some(f.got);
    let seal_key = f.seal.1.is_some() && f.seal.1 == f.got_key;
    if seal_cert || seal_key {
        return Err(Bound::Invalid(format!(
            "signed by {}, our seal's {}: the seal is never a registry's signer (expected {reg}'s signer {})",
            f.by,
            if seal_cert { "certificate" } else { "key" },
            f.expected
        )));
    }
    if f.seal.0.is_some() && f.seal.0 == f.recorded {
        return Err(Bound::Invalid(format!(
            "case.json names our seal's certificate as {reg}'s signer: the seal is never a registry's signer"
        )));
    }
    let Some(recorded) = f.recorded else {
        return Err(Bound::Unverifiable(format!(
            "the dossier does not record which certificate {reg}'s answer was accepted from (a record from before signers were kept): signed by {}, which cannot be checked to be {reg}'s signer",
            f.by
        )));
    };
    if recorded != f.got {
        return Err(Bound::Invalid(format!(
            "signed by {}, not by the signer the gateway accepted from {reg} (expected {reg}'s signer {})",
            f.by, f.expected
        )));
    }
    if let Some((other_reg, other_doc)) = signed_for.get(f.got) {
        if other_reg != reg {
            return Err(Bound::Twice {
                other_doc: other_doc.clone(),
                why: format!(
                    "signed by {}, which also signed {other_doc} for {other_reg}: one certificate is not the signer of two registries (expected {reg}'s signer {})",
                    f.by, f.expected
                ),
                other_why: format!(
                    "signed by {}, which also signed {doc} for {reg}: one certificate is not the signer of two registries",
                    f.by
                ),
            });
        }
    } else {
        signed_for.insert(f.got.to_owned(), (reg.to_owned(), doc.to_owned()));
    }
    let Some(recorded_anchor) = f.recorded_anchor else {
        return Err(Bound::Unverifiable(format!(
            "the dossier does not record the anchor {reg}'s signer chained to"
        )));
    };
    if f.anchor_sha != Some(recorded_anchor) {
        return Err(Bound::Invalid(format!(
            "its signer chains to {} (SHA-256 {}), not to {reg}'s anchor the gateway recorded (SHA-256 {recorded_anchor}); expected signer {}",
            f.anchor_name,
            f.anchor_sha.unwrap_or("?"),
            f.expected
        )));
    }
    if let Some(pem) = f.registry_ca {
        let mine: Vec<String> = X509::stack_from_pem(pem)
            .unwrap_or_default()
            .iter()
            .map(sha256_of)
            .collect();
        let ok = f.anchor.map(sha256_of).is_some_and(|a| mine.contains(&a));
        if !ok {
            return Err(Bound::Invalid(format!(
                "its signer chains to {}, not to the CA given for {reg} with --registry-ca (expected signer {})",
                f.anchor_name, f.expected
            )));
        }
    }
    Ok(())
}

/// The audit excerpt: each entry's hash, the links of the chain, and the
/// checkpoint it reaches with its timestamp. Both files are read line by
/// line; what is kept is a few hashes per entry of the case.
///
/// Returns, once the chain holds, each request's document signer as its
/// `exchange.answered` entry recorded it: request id -> (seq, SHA-256).
fn audit<R: Read + Seek>(
    c: &Container<R>,
    facts: &CaseFacts,
    anchors: &[X509],
    sealed_at_ms: Option<u64>,
    rep: &mut Report,
) -> Trail {
    const ENTRIES: &str = "audit/entries.jsonl";
    const CHAIN: &str = "audit/chain.txt";
    // seq -> (prev, hash), and whether the chain was seen to hold it.
    let mut entries: BTreeMap<u64, (String, String, bool)> = BTreeMap::new();
    let mut answered: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut accepted: BTreeMap<String, Accepted> = BTreeMap::new();
    let mut documents: BTreeSet<String> = BTreeSet::new();
    if let Some(e) = c.entry(ENTRIES).filter(|e| e.size > cap::AUDIT_ENTRIES) {
        rep.invalid(
            ENTRIES,
            format!(
                "{} bytes, more than the {} bytes a case's audit entries may have",
                e.size,
                cap::AUDIT_ENTRIES
            ),
        );
        return Trail::default();
    }
    let read = c.for_each_line(
        ENTRIES,
        cap::AUDIT_LINE,
        |i, line| match serde_json::from_slice::<AuditLine>(line) {
            Ok(l) if l.entry.digest() == l.entry.hash => {
                let d = &l.entry.draft;
                if let (Some(id), Some(sha), "exchange.answered") =
                    (&d.request_id, &d.signer_sha256, d.action.as_str())
                {
                    answered.insert(id.clone(), (l.entry.seq, sha.clone()));
                }
                if let (Some(id), "exchange.answered") = (&d.request_id, d.action.as_str()) {
                    if d.outcome.starts_with("document") {
                        documents.insert(id.clone());
                    }
                }
                if let (Some(id), "request.accepted") = (&d.request_id, d.action.as_str()) {
                    accepted.entry(id.clone()).or_insert_with(|| Accepted {
                        seq: l.entry.seq,
                        client: d.actor.clone(),
                        case: d.case.clone(),
                        service: d.service.clone(),
                        official: d.official.clone(),
                        legal_basis: d.legal_basis.clone(),
                        purpose: d.purpose.clone(),
                    });
                }
                entries.insert(l.entry.seq, (l.entry.prev, l.entry.hash, false));
                Ok(())
            }
            Ok(l) => Err(format!(
                "entry {} was changed: its hash does not match its content",
                l.entry.seq
            )),
            Err(e) => Err(format!("line {i} is not an entry: {e}")),
        },
    );
    if rep.read(ENTRIES, read).is_none() {
        return Trail::default();
    }
    if entries.len() != facts.audit.entries {
        rep.invalid(
            ENTRIES,
            format!(
                "{} entries, case.json says {}",
                entries.len(),
                facts.audit.entries
            ),
        );
        return Trail::default();
    }
    let Some(first_seq) = entries.keys().next().copied() else {
        rep.unverifiable(ENTRIES, "the case has no audit entries");
        return Trail::default();
    };
    let mut prev: Option<(u64, String)> = None;
    let read = c.for_each_line(CHAIN, cap::AUDIT_LINE, |i, line| {
        let line = String::from_utf8_lossy(line);
        let parts: Vec<&str> = line.split(' ').collect();
        let [seq, p, h] = parts.as_slice() else {
            return Err(format!("line {i} is not `seq prev hash`"));
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return Err(format!("line {i}: no sequence number"));
        };
        if *h == "?" {
            return Err(format!("the trail has a hole at entry {seq}"));
        }
        if let Some((ps, ph)) = &prev {
            if seq != ps + 1 || p != ph {
                return Err(format!(
                    "entry {seq} does not link to entry {ps}: the chain was cut or changed"
                ));
            }
        }
        if let Some((ep, eh, seen)) = entries.get_mut(&seq) {
            if ep != p || eh != h {
                return Err(format!("entry {seq} is not where the chain says"));
            }
            *seen = true;
        }
        prev = Some((seq, (*h).to_owned()));
        Ok(())
    });
    if rep.read(CHAIN, read).is_none() {
        return Trail::default();
    }
    if let Some(seq) = entries
        .iter()
        .find(|(_, (.., seen))| !seen)
        .map(|(s, _)| *s)
    {
        rep.invalid(CHAIN, format!("entry {seq} is not where the chain says"));
        return Trail::default();
    }
    let Some((last_seq, last_hash)) = prev else {
        rep.invalid(CHAIN, "empty");
        return Trail::default();
    };
    rep.valid(
        ENTRIES,
        format!(
            "{} entries, each hash holding, linked from entry {first_seq} to {last_seq}",
            entries.len(),
        ),
    );
    let cp = c
        .load("audit/checkpoint.txt", cap::CHECKPOINT)
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let token = c
        .load("audit/checkpoint.tst", cap::TOKEN)
        .and_then(Result::ok);
    match (cp, token) {
        (Some(cp), Some(token)) => {
            if cp != format!("{last_seq} {last_hash}") {
                rep.invalid("audit/checkpoint.txt", "is not the chain's last link");
                return Trail::default();
            }
            match tsp::check_token(&token, &checkpoint_imprint(last_seq, &last_hash), anchors) {
                // The checkpoint is stamped before the dossier is sealed:
                // one stamped later was put in afterwards.
                Ok(t) if sealed_at_ms.is_some_and(|s| t.time_ms > s + 1000) => rep.invalid(
                    "audit/checkpoint.tst",
                    format!(
                        "the checkpoint was stamped at {}, after the dossier was sealed ({}): not the one the dossier was made with",
                        crate::time::rfc3339_secs(t.time_ms),
                        sealed_at_ms.map(crate::time::rfc3339_secs).unwrap_or_default()
                    ),
                ),
                Ok(t) => rep.valid(
                    "audit/checkpoint.tst",
                    format!("the chain up to entry {last_seq} existed at {} ({})", crate::time::rfc3339_secs(t.time_ms), t.tsa),
                ),
                Err(e) => rep.invalid("audit/checkpoint.tst", e.to_string()),
            }
        }
        _ => rep.unverifiable(
            CHAIN,
            "no timestamped checkpoint at its end: the links hold, but nothing proves when they existed",
        ),
    }
    Trail {
        held: true,
        answered,
        accepted,
        documents,
    }
}

/// What the audit trail, once its chain holds, says of the case's requests.
#[derive(Default)]
struct Trail {
    held: bool,
    /// request id -> (seq, SHA-256 of the signer its exchange.answered entry names).
    answered: BTreeMap<String, (u64, String)>,
    /// request id -> its request.accepted entry.
    accepted: BTreeMap<String, Accepted>,
    /// Requests whose answer the trail records as a document.
    documents: BTreeSet<String>,
}

/// The facts a request.accepted entry carries in clear.
struct Accepted {
    seq: u64,
    client: String,
    case: String,
    service: String,
    official: String,
    legal_basis: String,
    purpose: String,
}

/// `case.json`'s facts against the trail: every request was accepted by
/// the gateway, in this case, as `case.json` describes it. The trail
/// keeps the subject only as keyed hashes, which cannot be recomputed
/// without the gateway's audit key, and does not name the registry (its
/// signer does): those are not checked here.
fn against_trail(facts: &CaseFacts, trail: &Trail, rep: &mut Report) {
    for r in &facts.requests {
        let Some(a) = trail.accepted.get(&r.id) else {
            rep.invalid(
                "case.json",
                format!(
                    "request {} has no request.accepted entry in the audit trail: the gateway did not accept it in this case",
                    r.id
                ),
            );
            continue;
        };
        let pairs = [
            ("case", &a.case, &facts.case),
            ("client", &a.client, &r.client),
            ("service", &a.service, &r.service),
            ("official", &a.official, &r.official),
            ("legal basis", &a.legal_basis, &r.legal_basis),
            ("purpose", &a.purpose, &r.purpose),
        ];
        for (what, trail_says, listed) in pairs {
            if trail_says != listed {
                rep.invalid(
                    "case.json",
                    format!(
                        "request {}: its {what} is {listed:?}, the audit trail's request.accepted entry {} says {trail_says:?}",
                        r.id, a.seq
                    ),
                );
            }
        }
        let has_doc = trail.documents.contains(&r.id);
        if has_doc != r.document.is_some() {
            rep.invalid(
                "case.json",
                if has_doc {
                    format!("request {}: the audit trail records a document answered, case.json files none", r.id)
                } else {
                    format!("request {}: case.json files a document, the audit trail records no document answered", r.id)
                },
            );
        }
        if r.document.is_some() && !matches!(r.state.as_str(), "fetched" | "delivered") {
            rep.invalid(
                "case.json",
                format!(
                    "request {} has a document but its state is {:?}, not fetched or delivered",
                    r.id, r.state
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn small_container() -> Vec<u8> {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, body) in [
            ("mimetype", MIMETYPE.as_bytes()),
            ("case.json", b"{\"case\":\"1\"}".as_slice()),
            (MANIFEST_FILE, b"<manifest/>".as_slice()),
            (
                SIGNATURE_FILE,
                b"<asic:XAdESSignatures xmlns:asic=\"http://uri.etsi.org/02918/v1.2.1#\"/>"
                    .as_slice(),
            ),
        ] {
            z.start_file(name, stored).unwrap();
            z.write_all(body).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    /// A zip of `files`, as the dossier's reader opens it.
    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, body) in files {
            z.start_file(*name, o).unwrap();
            z.write_all(body).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    /// An X-Road request of case.json: its document, one attachment, and
    /// its signed document as `signed` says.
    fn x_road_facts(signed: serde_json::Value, file: Option<&str>) -> RequestFacts {
        serde_json::from_value(serde_json::json!({
            "id": "01XR", "client": "c", "service": "civil.birth-extract", "registry": "civil",
            "legal_basis": "ZUP", "purpose": "p", "official": "o", "subject": {},
            "state": "delivered", "created_ms": 0, "created": "", "attempts": [],
            "signer": null, "document": "documents/01XR.xml", "revocation": null, "ocsp": null,
            "timestamp": null, "timestamp_token": null,
            "attachments": [{"file": "documents/01XR.attachment-1", "content_id": "a1",
                "content_type": "application/pdf", "size": 9,
                "sha256": hex(&openssl::sha::sha256(b"%PDF-1.7\n"))}],
            "signed_document": signed,
            "signed_document_file": file,
        }))
        .unwrap()
    }

    /// Judges the X-Road document of a dossier whose files are `files`,
    /// every one sealed.
    fn judge_x_road(r: &RequestFacts, files: &[(&str, &[u8])]) -> Report {
        let bytes = zip_of(files);
        let c = Container::open(std::io::Cursor::new(bytes), container::Limits::default()).unwrap();
        let intact: BTreeSet<&str> = files.iter().map(|(n, _)| *n).collect();
        let doc = c.load("documents/01XR.xml", 1 << 20).unwrap().unwrap();
        let mut rep = Report::default();
        let mut load = |rep: &mut Report, n: &str, cap: u64| load(&c, rep, n, cap);
        x_road(
            r,
            "documents/01XR.xml",
            &doc,
            &c,
            &intact,
            "1/2026",
            &mut rep,
            &mut load,
        );
        rep
    }

    #[test]
    fn an_x_road_document_is_bound_to_its_signed_document() {
        let answer = |request: &str| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xrd=\"http://x-road.eu/xsd/xroad.xsd\" xmlns:jum=\"urn:jum-gateway:exchange:1\"><SOAP-ENV:Header><xrd:id>m-7</xrd:id><xrd:userId>RSo</xrd:userId><xrd:issue>1/2026</xrd:issue><xrd:protocolVersion>4.0</xrd:protocolVersion><jum:legalBasis>ZUP</jum:legalBasis><jum:purpose>p</jum:purpose><jum:requestId>{request}</jum:requestId></SOAP-ENV:Header><SOAP-ENV:Body><birthExtractResponse/></SOAP-ENV:Body></SOAP-ENV:Envelope>"
            )
            .into_bytes()
        };
        let genuine_doc = answer("01XR");
        let doc: &[u8] = &genuine_doc;
        let att: &[u8] = b"%PDF-1.7\n";
        let asice = |message: &[u8], attachment: &[u8]| {
            zip_of(&[
                ("mimetype", b"application/vnd.etsi.asic-e+zip"),
                ("message.xml", message),
                ("attachment1", attachment),
                ("META-INF/signatures.xml", b"<XAdESSignatures/>"),
            ])
        };
        let genuine = asice(doc, att);
        let signed = |sha: &[u8]| {
            serde_json::json!({"state": "kept", "message_id": "m-7",
                "sha256": hex(&openssl::sha::sha256(sha))})
        };
        let r = x_road_facts(signed(&genuine), Some("evidence/01XR.asice"));
        let files = |asice: &[u8]| -> Vec<(&str, Vec<u8>)> {
            vec![
                ("documents/01XR.xml", doc.to_vec()),
                ("documents/01XR.attachment-1", att.to_vec()),
                ("evidence/01XR.asice", asice.to_vec()),
            ]
        };
        let run = |r: &RequestFacts, f: Vec<(&str, Vec<u8>)>| {
            let f: Vec<(&str, &[u8])> = f.iter().map(|(n, b)| (*n, b.as_slice())).collect();
            judge_x_road(r, &f)
        };
        // The genuine one holds, and names the signed document.
        let rep = run(&r, files(&genuine));
        assert!(rep.holds(), "{:#?}", rep.findings);
        let text = format!("{:?}", rep.findings);
        assert!(text.contains("the X-Road security server's signed document of it: evidence/01XR.asice, message id m-7; its X-Road signature and timestamp are not verified here (they need the X-Road instance's global configuration): verify them with NIIS's asicverifier: java -jar asicverifier.jar <verificationconf> evidence/01XR.asice"), "{text}");
        assert!(
            text.contains("byte for byte the attachment1 of evidence/01XR.asice"),
            "{text}"
        );

        // Another message's signed document (resealed, case.json updated).
        let other = asice(b"<Envelope><Body><other/></Body></Envelope>", att);
        let r2 = x_road_facts(signed(&other), Some("evidence/01XR.asice"));
        let rep = run(&r2, files(&other));
        assert!(!rep.holds());
        assert!(
            rep.findings.iter().any(|f| f.file == "documents/01XR.xml"
                && f.verdict == Verdict::Invalid
                && f.detail.contains("came by X-Road, but is not bound to its signed document evidence/01XR.asice: its message.xml")),
            "{:#?}",
            rep.findings
        );
        // Another attachment in the signed document.
        let swapped = asice(doc, b"%PDF-1.7\nX");
        let r3 = x_road_facts(signed(&swapped), Some("evidence/01XR.asice"));
        let rep = run(&r3, files(&swapped));
        assert!(
            rep.findings.iter().any(|f| f
                .detail
                .contains("its attachment1 is not the document's attachment 1")),
            "{:#?}",
            rep.findings
        );
        // The signed document swapped after case.json recorded its digest.
        let rep = run(&r, files(&other));
        assert!(
            rep.findings
                .iter()
                .any(|f| f.file == "evidence/01XR.asice" && f.detail.contains("case.json records")),
            "{:#?}",
            rep.findings
        );
        // Another request's answer, with its own signed document: the
        // copied-back headers name the other request.
        let foreign = answer("01OTHER");
        let foreign_asice = asice(&foreign, att);
        let r5 = x_road_facts(signed(&foreign_asice), Some("evidence/01XR.asice"));
        let mut f = files(&foreign_asice);
        f[0].1 = foreign.clone();
        let rep = run(&r5, f);
        assert!(
            rep.findings.iter().any(|f| f.file == "documents/01XR.xml"
                && f.verdict == Verdict::Invalid
                && f.detail == "answers the request \"01OTHER\", not the \"01XR\" of request 01XR it is filed under"),
            "{:#?}",
            rep.findings
        );
        // Not kept: said so, and the dossier does not hold.
        let pending = x_road_facts(
            serde_json::json!({"state": "failed", "message_id": "m-7", "reason": "given up after 20 tries: not timestamped yet"}),
            None,
        );
        let rep = run(&pending, files(&genuine));
        assert!(!rep.holds());
        assert!(
            rep.findings.iter().any(|f| f.verdict == Verdict::Unverifiable
                && f.detail == "civil's document came by X-Road (message id m-7) and its signed document is not kept (failed: given up after 20 tries: not timestamped yet): it is bound to no signature"),
            "{:#?}",
            rep.findings
        );
        // A signer named beside it: a signed-XML document dressed as X-Road.
        let mut dressed = x_road_facts(signed(&genuine), Some("evidence/01XR.asice"));
        dressed.signer_sha256 = Some("ab".repeat(32));
        let rep = run(&dressed, files(&genuine));
        assert!(
            rep.findings.iter().any(|f| f.verdict == Verdict::Invalid
                && f.detail.contains("claiming X-Road does not replace")),
            "{:#?}",
            rep.findings
        );
    }

    #[test]
    fn an_unsealed_container_does_not_hold_and_says_why() {
        let r = verify(&small_container(), None);
        assert!(!r.holds());
        assert!(r
            .findings
            .iter()
            .any(|f| f.file == SIGNATURE_FILE && f.verdict == Verdict::Invalid));
        let r = verify(b"not a zip", None);
        assert_eq!(r.findings[0].file, "(container)");
        assert!(
            r.findings[0].detail.starts_with("not a zip container"),
            "{:?}",
            r.findings
        );
    }

    #[test]
    fn a_signer_pin_is_a_subject_or_a_certificate_hash() {
        let cert = crate::pki::Issued::new(
            &crate::pki::CertSpec::new("cadastre signer", crate::pki::Role::Signing),
            crate::pki::KeyKind::EcP256,
            None,
        )
        .unwrap()
        .cert;
        let sha = hex(&openssl::sha::sha256(&cert.to_der().unwrap()));
        let subject = name_to_string(cert.subject_name());
        let mut rdns: Vec<&str> = subject.split(", ").collect();
        rdns.reverse();
        let rfc4514 = rdns.join(",");
        for ok in [rfc4514.clone(), sha.clone(), sha.to_uppercase()] {
            assert!(SignerPin::parse(&ok).unwrap().matches(&cert), "{ok}");
        }
        for no in [format!("{rfc4514}2"), "0".repeat(64)] {
            assert!(!SignerPin::parse(&no).unwrap().matches(&cert), "{no}");
        }
        let e = SignerPin::parse("12ab").unwrap_err();
        assert!(e.contains("is not a SHA-256"), "{e}");
        let e = SignerPin::parse("XX=y").unwrap_err();
        assert!(e.contains("unknown attribute type"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_signer_pin_or_refused_without_panic(text in "\\PC{0,80}") {
            let _ = SignerPin::parse(&text);
        }

        #[test]
        fn any_bytes_or_damaged_container_is_judged_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8),
        ) {
            proptest::prop_assert!(!verify(&bytes, None).holds());
            let mut c = small_container();
            let n = c.len();
            for (at, x) in flips {
                c[at % n] ^= x | 1;
            }
            proptest::prop_assert!(!verify(&c, None).holds());
        }
    }
}
