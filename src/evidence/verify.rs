//! `jumgw dossier verify`: a case dossier checked offline, with nothing
//! but its bytes and the CA certificates one trusts (by default those it
//! carries, and the report says so). Each file gets a finding: valid,
//! invalid with the reason, or not verifiable and why; the dossier holds
//! only when every finding is valid.
//!
//! Time matters: years later the certificates have expired. A registry's
//! signature is judged at the time its timestamp proves, our seal at the
//! time of its signature timestamp, each timestamp at its own time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use openssl::x509::X509;
use serde::Serialize;

use super::dossier::{manifest, AuditLine, CaseFacts, MANIFEST_FILE, MIMETYPE, SIGNATURE_FILE};
use super::stamper::{checkpoint_imprint, document_imprint};
use super::tsp;
use crate::pki::revocation::{self, ocsp, State};
use crate::xml::dsig::{name_to_string, TrustStore};
use crate::xml::xades;

/// Largest file read out of a container (a zip bomb stops here).
const MAX_FILE: u64 = 256 << 20;

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
}

struct Container {
    /// Name, bytes, stored uncompressed, extra field empty; in zip order.
    files: Vec<(String, Vec<u8>, bool, bool)>,
}

impl Container {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, b, ..)| b.as_slice())
    }
}

fn open(bytes: &[u8]) -> Result<Container, String> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a zip container: {e}"))?;
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for i in 0..z.len() {
        let mut f = z
            .by_index(i)
            .map_err(|e| format!("entry {i} cannot be read: {e}"))?;
        let name = f.name().to_owned();
        if name.starts_with('/') || name.split('/').any(|p| p == "..") || name.contains('\\') {
            return Err(format!("entry {name:?} has a path outside the container"));
        }
        if !seen.insert(name.clone()) {
            return Err(format!("entry {name:?} is there twice"));
        }
        if f.is_dir() {
            continue;
        }
        let stored = f.compression() == zip::CompressionMethod::Stored;
        let no_extra = f.extra_data().is_none_or(|e| e.is_empty());
        let mut data = Vec::new();
        (&mut f)
            .take(MAX_FILE + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("{name}: {e}"))?;
        if data.len() as u64 > MAX_FILE {
            return Err(format!("{name} is larger than {MAX_FILE} bytes"));
        }
        files.push((name, data, stored, no_extra));
    }
    Ok(Container { files })
}

fn rfc3339(ms: u64) -> String {
    revocation::rfc3339(ms)
}

/// Verifies a dossier. `trust`: CA certificates (PEM) to judge every
/// chain against; `None`: the ones the dossier carries.
pub fn verify(bytes: &[u8], trust: Option<&[u8]>) -> Report {
    let mut rep = Report::default();
    let c = match open(bytes) {
        Ok(c) => c,
        Err(e) => {
            rep.invalid("(container)", e);
            return rep;
        }
    };
    // The mimetype rule of ASiC: first, stored, no extra field.
    match c.files.first() {
        Some((n, b, stored, no_extra)) if n == "mimetype" => {
            if b.as_slice() != MIMETYPE.as_bytes() {
                rep.invalid(
                    "mimetype",
                    format!("holds {:?}, not {MIMETYPE}", String::from_utf8_lossy(b)),
                );
            } else if !stored {
                rep.invalid("mimetype", "is compressed; ASiC wants it stored");
            } else if !no_extra {
                rep.invalid("mimetype", "has an extra field; ASiC wants none");
            } else {
                rep.valid("mimetype", MIMETYPE);
            }
        }
        _ => rep.invalid("mimetype", "is not the first entry of the container"),
    }
    let pem: Vec<u8> = match trust {
        Some(t) => {
            rep.trust = "the CA certificates given with --trust".into();
            t.to_vec()
        }
        None => {
            rep.trust = "the CA certificates the dossier carries (certificates/*.pem): give --trust to judge it against your own".into();
            c.files
                .iter()
                .filter(|(n, ..)| n.starts_with("certificates/") && n.ends_with(".pem"))
                .flat_map(|(_, b, ..)| b.iter().copied().chain(*b"\n"))
                .collect()
        }
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
    match c.get(SIGNATURE_FILE) {
        None => rep.invalid(SIGNATURE_FILE, "missing: the dossier is not sealed"),
        Some(sig) => match xades::verify(sig) {
            Err(e) => rep.invalid(SIGNATURE_FILE, format!("the seal does not hold: {e}")),
            Ok(v) => {
                let ts = v.timestamp.as_ref().map(|t| {
                    tsp::check_token(t, &openssl::sha::sha256(&v.timestamp_input), &anchors)
                });
                let sealed_at = match &ts {
                    Some(Ok(t)) => {
                        rep.valid(
                            &format!("{SIGNATURE_FILE}#timestamp"),
                            format!("signature timestamp at {} by {}", rfc3339(t.time_ms), t.tsa),
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
                match trust_at(sealed_at).and_then(|t| t.trusted_signer(&v.certificates)) {
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
                match c.get(MANIFEST_FILE) {
                    None => rep.invalid(MANIFEST_FILE, "missing"),
                    Some(m) if m == manifest(&listed).as_slice() => {
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
                sealed = true;
            }
        },
    }
    for (uri, _) in covered.iter() {
        if c.get(uri).is_none() {
            rep.invalid(
                uri,
                "missing: the seal covers it, the dossier no longer holds it (removed)",
            );
        }
    }
    let data_files: Vec<&(String, Vec<u8>, bool, bool)> = c
        .files
        .iter()
        .filter(|(n, ..)| n != "mimetype" && !n.starts_with("META-INF/"))
        .collect();
    let mut intact: BTreeSet<&str> = BTreeSet::new();
    for (name, bytes, ..) in &data_files {
        if !sealed {
            rep.unverifiable(
                name,
                "the seal does not hold, so nothing vouches for this file",
            );
            continue;
        }
        match covered.get(name) {
            None => rep.invalid(name, "not covered by the seal: added after sealing"),
            Some(d) if d.as_slice() != openssl::sha::sha256(bytes).as_slice() => rep.invalid(
                name,
                "changed after sealing: its SHA-256 is not the one the seal signed",
            ),
            Some(_) => {
                intact.insert(name);
            }
        }
    }
    for (name, ..) in &data_files {
        if name.starts_with("certificates/") && intact.contains(name.as_str()) {
            rep.valid(name, "CA certificates, sealed");
        }
    }

    let facts: CaseFacts = match c.get("case.json").map(serde_json::from_slice::<CaseFacts>) {
        Some(Ok(f)) => {
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
        Some(Err(e)) => {
            rep.invalid("case.json", format!("unreadable: {e}"));
            return rep;
        }
        None => {
            rep.invalid("case.json", "missing");
            return rep;
        }
    };

    for r in &facts.requests {
        let Some(doc_name) = &r.document else {
            continue;
        };
        let Some(doc) = c.get(doc_name) else {
            rep.invalid(doc_name, "missing");
            continue;
        };
        // When it was signed, as its timestamp proves.
        let mut signed_at = None;
        match r.timestamp_token.as_deref().map(|n| (n, c.get(n))) {
            Some((n, Some(token))) => match document_imprint(doc)
                .map_err(|e| e.to_string())
                .and_then(|i| tsp::check_token(token, &i, &anchors).map_err(|e| e.to_string()))
            {
                Ok(t) => {
                    rep.valid(
                        n,
                        format!(
                            "timestamp on {doc_name}'s signature at {} by {}",
                            rfc3339(t.time_ms),
                            t.tsa
                        ),
                    );
                    signed_at = Some(t.time_ms);
                }
                Err(e) => rep.invalid(n, e),
            },
            Some((n, None)) => rep.invalid(n, "missing"),
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
        let verified = trust_at(at)
            .and_then(|t| crate::xml::dsig::verify(doc, &t, &crate::xml::Limits::default()));
        let signer = match verified {
            Ok(v) => {
                rep.valid(
                    doc_name,
                    format!(
                        "signed by {} ({}; chain valid at {})",
                        v.signer_subject(),
                        r.registry,
                        at.map(rfc3339).unwrap_or_default()
                    ),
                );
                Some((v.signer, v.intermediates))
            }
            Err(e) => {
                rep.invalid(
                    doc_name,
                    format!("the registry's signature does not hold: {e}"),
                );
                None
            }
        };
        match (&r.ocsp, &signer) {
            (Some(n), Some((cert, intermediates))) => {
                let Some(der) = c.get(n) else {
                    rep.invalid(n, "missing");
                    continue;
                };
                let pool: Vec<X509> = anchors.iter().chain(intermediates).cloned().collect();
                let Some(issuer) = revocation::issuer_of(cert, &pool) else {
                    rep.unverifiable(n, "the signer's issuer is not among the CA certificates");
                    continue;
                };
                match ocsp::check_kept(der, cert, &issuer, at.unwrap_or(0)) {
                    Ok(a) => match a.state {
                        State::Good => rep.valid(
                            n,
                            format!(
                                "OCSP: {}'s signer not revoked (thisUpdate {})",
                                doc_name,
                                rfc3339(a.this_update_ms)
                            ),
                        ),
                        State::Revoked { at_ms, .. } => rep.invalid(
                            n,
                            format!("OCSP: the signer was revoked at {}", rfc3339(at_ms)),
                        ),
                        State::Unknown => rep.invalid(n, "OCSP: the signer is unknown to its CA"),
                    },
                    Err(e) => rep.invalid(n, format!("OCSP response for {doc_name}: {e}")),
                }
            }
            (Some(_), None) => {}
            (None, _) => {
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
                    format!("no OCSP response kept for its signer (revocation: {how})"),
                );
            }
        }
    }
    audit(&c, &facts, &anchors, &mut rep);
    rep
}

/// The audit excerpt: each entry's hash, the links of the chain, and the
/// checkpoint it reaches with its timestamp.
fn audit(c: &Container, facts: &CaseFacts, anchors: &[X509], rep: &mut Report) {
    const ENTRIES: &str = "audit/entries.jsonl";
    const CHAIN: &str = "audit/chain.txt";
    let Some(text) = c.get(ENTRIES) else {
        rep.invalid(ENTRIES, "missing");
        return;
    };
    let mut entries = Vec::new();
    for (i, line) in String::from_utf8_lossy(text).lines().enumerate() {
        match serde_json::from_str::<AuditLine>(line) {
            Ok(l) if l.entry.digest() == l.entry.hash => entries.push(l.entry),
            Ok(l) => {
                rep.invalid(
                    ENTRIES,
                    format!(
                        "entry {} was changed: its hash does not match its content",
                        l.entry.seq
                    ),
                );
                return;
            }
            Err(e) => {
                rep.invalid(ENTRIES, format!("line {} is not an entry: {e}", i + 1));
                return;
            }
        }
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
        return;
    }
    if entries.is_empty() {
        rep.unverifiable(ENTRIES, "the case has no audit entries");
        return;
    }
    let Some(chain) = c.get(CHAIN) else {
        rep.invalid(CHAIN, "missing");
        return;
    };
    let mut links: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut prev: Option<(u64, String)> = None;
    for (i, line) in String::from_utf8_lossy(chain).lines().enumerate() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [seq, p, h] = parts.as_slice() else {
            rep.invalid(CHAIN, format!("line {} is not `seq prev hash`", i + 1));
            return;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            rep.invalid(CHAIN, format!("line {}: no sequence number", i + 1));
            return;
        };
        if *h == "?" {
            rep.invalid(CHAIN, format!("the trail has a hole at entry {seq}"));
            return;
        }
        if let Some((ps, ph)) = &prev {
            if seq != ps + 1 || p != ph {
                rep.invalid(
                    CHAIN,
                    format!(
                        "entry {seq} does not link to entry {ps}: the chain was cut or changed"
                    ),
                );
                return;
            }
        }
        prev = Some((seq, (*h).to_owned()));
        links.insert(seq, ((*p).to_owned(), (*h).to_owned()));
    }
    for e in &entries {
        match links.get(&e.seq) {
            Some((p, h)) if *p == e.prev && *h == e.hash => {}
            _ => {
                rep.invalid(
                    CHAIN,
                    format!("entry {} is not where the chain says", e.seq),
                );
                return;
            }
        }
    }
    let Some((last_seq, last_hash)) = prev else {
        rep.invalid(CHAIN, "empty");
        return;
    };
    rep.valid(
        ENTRIES,
        format!(
            "{} entries, each hash holding, linked from entry {} to {}",
            entries.len(),
            entries[0].seq,
            last_seq
        ),
    );
    let cp = c
        .get("audit/checkpoint.txt")
        .map(|b| String::from_utf8_lossy(b).trim().to_owned());
    match (cp, c.get("audit/checkpoint.tst")) {
        (Some(cp), Some(token)) => {
            if cp != format!("{last_seq} {last_hash}") {
                rep.invalid("audit/checkpoint.txt", "is not the chain's last link");
                return;
            }
            match tsp::check_token(token, &checkpoint_imprint(last_seq, &last_hash), anchors) {
                Ok(t) => rep.valid(
                    "audit/checkpoint.tst",
                    format!("the chain up to entry {last_seq} existed at {} ({})", rfc3339(t.time_ms), t.tsa),
                ),
                Err(e) => rep.invalid("audit/checkpoint.tst", e.to_string()),
            }
        }
        _ => rep.unverifiable(
            CHAIN,
            "no timestamped checkpoint at its end: the links hold, but nothing proves when they existed",
        ),
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

    proptest::proptest! {
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
