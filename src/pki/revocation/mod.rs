//! Is a certificate we trust still valid, or was it revoked? OCSP
//! (`ocsp.rs`) from the certificate's AIA or a configured responder, CRLs
//! (`crl.rs`, version 1 or 2) from its distribution point or a configured
//! file or URL, each read with a cap and never through a redirect
//! (`pki::fetch`), believed only while fresh ([`Freshness`]: within
//! `thisUpdate`..`nextUpdate`, or not older than the maximum age without
//! a `nextUpdate`), answers cached under the same rule, and the policy
//! that decides what an exchange does when no answer can be had (`require`, `prefer`
//! with a grace since the last good answer, `off`). `authority.rs` is the
//! other side, for the development PKI and the simulator: an OCSP
//! responder and a CRL issuer over a CA's key.

pub mod authority;
pub mod crl;
pub mod ocsp;
pub mod tls;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::x509::X509;
use spki::AlgorithmIdentifierOwned;

pub use crate::config::RevocationPolicy as Policy;

/// Why a status could not be had, or an answer was not believed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// No responder answered, or it answered "try later".
    #[error("{0}")]
    Unavailable(String),
    /// Not an OCSP response or CRL, or one that contradicts itself.
    #[error("{0}")]
    Malformed(String),
    /// Signed by a key that may not sign it, or a replayed answer.
    #[error("{0}")]
    BadSignature(String),
    /// Past its `nextUpdate`.
    #[error("stale: {0}")]
    Stale(String),
    /// Nowhere to ask: no AIA, no CRL distribution point, nothing configured.
    #[error("the certificate names no OCSP responder or CRL, and none is configured")]
    NoSource,
}

impl RevocationError {
    /// The same kind of error, saying `detail` instead.
    fn reworded(self, detail: String) -> RevocationError {
        match self {
            RevocationError::Unavailable(_) => RevocationError::Unavailable(detail),
            RevocationError::Malformed(_) => RevocationError::Malformed(detail),
            RevocationError::BadSignature(_) => RevocationError::BadSignature(detail),
            RevocationError::Stale(_) => RevocationError::Stale(detail),
            RevocationError::NoSource => RevocationError::NoSource,
        }
    }
}

/// What an answer said of the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Good,
    Revoked {
        at_ms: u64,
        reason: Option<String>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// Where an answer came from, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The OCSP response, DER, as received.
    Ocsp { der: Vec<u8> },
    /// The CRL that said it, DER, as read.
    Crl {
        number: Option<String>,
        url: String,
        der: std::sync::Arc<[u8]>,
    },
}

/// A believed answer about one certificate.
#[derive(Debug, Clone)]
pub struct Answer {
    pub state: State,
    pub source: Source,
    pub this_update_ms: u64,
    pub next_update_ms: Option<u64>,
    pub checked_ms: u64,
}

impl Answer {
    pub fn method(&self) -> &'static str {
        match self.source {
            Source::Ocsp { .. } => "ocsp",
            Source::Crl { .. } => "crl",
        }
    }
}

/// What the policy makes of a certificate's status.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Confirmed not revoked.
    Good(Answer),
    /// Revoked, or unknown to its own CA's responder: never trusted.
    Revoked { reason: String },
    /// Not established, accepted by `prefer` within its grace: the
    /// document is flagged for a later check.
    Unchecked { reason: String },
    /// Not established and not accepted (`require`, or `prefer` past its
    /// grace): the attempt fails and is retried.
    Refused { reason: String },
    /// Not checked (`off`).
    Off,
}

impl Verdict {
    /// The name metrics and records use.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Good(_) => "good",
            Verdict::Revoked { .. } => "revoked",
            Verdict::Unchecked { .. } => "unchecked",
            Verdict::Refused { .. } => "refused",
            Verdict::Off => "off",
        }
    }
}

/// Where to ask, when the certificate's own pointers are not to be used.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub ocsp_url: Option<String>,
    /// A CRL file, or an http(s) URL.
    pub crl: Option<String>,
    /// The OCSP responder answers from pre-produced responses (RFC 5019):
    /// no nonce comes back, and only the answer's age vouches for it.
    pub ocsp_preproduced: bool,
}

/// How fresh an answer (an OCSP response, a CRL) must be to be believed:
/// with a `nextUpdate`, the time it is judged at lies between `thisUpdate`
/// and `nextUpdate`; without one, `thisUpdate` is at most `max_age` old.
/// Either way, `skew` of clocks that disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub max_age: Duration,
    pub skew: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            max_age: Duration::from_secs(3600),
            skew: Duration::from_secs(300),
        }
    }
}

impl Freshness {
    /// Does `what` (thisUpdate, nextUpdate) hold at `now_ms`?
    pub fn check(
        &self,
        what: &str,
        this_update: u64,
        next_update: Option<u64>,
        now_ms: u64,
    ) -> Result<(), RevocationError> {
        let skew = self.skew.as_millis() as u64;
        if this_update > now_ms.saturating_add(skew) {
            return Err(RevocationError::Malformed(format!(
                "{what}'s thisUpdate ({}) is in the future",
                crate::time::rfc3339_secs(this_update)
            )));
        }
        match next_update {
            Some(n) if n < this_update => Err(RevocationError::Malformed(format!(
                "{what}'s nextUpdate comes before its thisUpdate"
            ))),
            Some(n) if n.saturating_add(skew) < now_ms => Err(RevocationError::Stale(format!(
                "{what} expired: its nextUpdate ({}) passed {} s ago",
                crate::time::rfc3339_secs(n),
                (now_ms - n) / 1000
            ))),
            Some(_) => Ok(()),
            None => {
                let age = now_ms.saturating_sub(this_update);
                if age > (self.max_age.as_millis() as u64).saturating_add(skew) {
                    Err(RevocationError::Stale(format!(
                        "{what} has no nextUpdate and its thisUpdate ({}) is {} old, more than the maximum age of {}",
                        crate::time::rfc3339_secs(this_update),
                        span(age),
                        span(self.max_age.as_millis() as u64)
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Until when an answer judged good may be used again without asking.
    fn until(&self, this_update: u64, next_update: Option<u64>) -> u64 {
        match next_update {
            Some(n) => n.saturating_add(self.skew.as_millis() as u64),
            None => this_update.saturating_add(self.max_age.as_millis() as u64),
        }
    }
}

/// A span of milliseconds for people: days, hours, minutes or seconds.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} h", s / 3600),
        s if s >= 120 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

pub(crate) mod oid {
    use der::asn1::ObjectIdentifier as O;
    pub const SHA1: O = O::new_unwrap("1.3.14.3.2.26");
    pub const OCSP_BASIC: O = O::new_unwrap("1.3.6.1.5.5.7.48.1.1");
    pub const OCSP_NONCE: O = O::new_unwrap("1.3.6.1.5.5.7.48.1.2");
    pub const KP_OCSP_SIGNING: O = O::new_unwrap("1.3.6.1.5.5.7.3.9");
    pub const EXT_KEY_USAGE: O = O::new_unwrap("2.5.29.37");
    pub const CRL_NUMBER: O = O::new_unwrap("2.5.29.20");
    pub const SHA256_RSA: O = O::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_RSA: O = O::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_RSA: O = O::new_unwrap("1.2.840.113549.1.1.13");
    pub const ECDSA_SHA256: O = O::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: O = O::new_unwrap("1.2.840.10045.4.3.3");
    pub const ECDSA_SHA512: O = O::new_unwrap("1.2.840.10045.4.3.4");
}

/// A serial number's bytes without leading zeros: DER writes a zero byte
/// before a high bit, and responders differ in whether they keep it.
pub(crate) fn serial_digits(b: &[u8]) -> Vec<u8> {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b[i..].to_vec()
}

/// The cache key of `cert`: its OCSP certificate id, DER.
fn key_of(cert: &X509, issuer: &X509) -> Result<Vec<u8>, RevocationError> {
    let id = ocsp::cert_id(cert, issuer)?;
    der::Encode::to_der(&id).map_err(|e| RevocationError::Malformed(e.to_string()))
}

pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks `sig` over `tbs` by `signer`'s key with `alg` (RSA PKCS#1 v1.5
/// or ECDSA, SHA-256 and up; SHA-1 is not taken).
pub(crate) fn verify_signature(
    alg: &AlgorithmIdentifierOwned,
    tbs: &[u8],
    sig: &[u8],
    signer: &X509,
) -> Result<(), String> {
    let digest = match alg.oid {
        o if o == oid::SHA256_RSA || o == oid::ECDSA_SHA256 => MessageDigest::sha256(),
        o if o == oid::SHA384_RSA || o == oid::ECDSA_SHA384 => MessageDigest::sha384(),
        o if o == oid::SHA512_RSA || o == oid::ECDSA_SHA512 => MessageDigest::sha512(),
        o => return Err(format!("unsupported signature algorithm {o}")),
    };
    let key = signer.public_key().map_err(|e| e.to_string())?;
    let mut v = openssl::sign::Verifier::new(digest, &key).map_err(|e| e.to_string())?;
    v.update(tbs).map_err(|e| e.to_string())?;
    match v.verify(sig) {
        Ok(true) => Ok(()),
        _ => Err("does not verify with the signer's key".into()),
    }
}

/// The OCSP responders of a certificate's AIA.
fn aia_ocsp(cert: &X509) -> Vec<String> {
    cert.ocsp_responders()
        .map(|s| s.iter().map(|u| u.to_string()).collect())
        .unwrap_or_default()
}

/// The URIs of a certificate's CRL distribution points.
fn crl_points(cert: &X509) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(points) = cert.crl_distribution_points() {
        for p in &points {
            let Some(names) = p.distpoint().and_then(|d| d.fullname()) else {
                continue;
            };
            out.extend(names.iter().filter_map(|n| n.uri().map(str::to_owned)));
        }
    }
    out
}

/// The CA certificate among `anchors` that issued `cert`.
pub fn issuer_of(cert: &X509, anchors: &[X509]) -> Option<X509> {
    crate::xml::dsig::issuer_of(cert, anchors)
}

/// The largest OCSP answer read: a few certificates and one status.
pub const OCSP_MAX_BYTES: usize = 1 << 20;
/// The largest CRL read: a national CA's full CRL is a few MiB, and
/// one this large read and parsed stays well within the daemon's memory.
pub const CRL_MAX_BYTES: usize = 10 << 20;

/// How long an answer without `nextUpdate` is kept before asking again.
const NO_NEXT_UPDATE: Duration = Duration::from_secs(300);
/// After failing to get an answer, how long before asking again.
const RETRY_FAILED: Duration = Duration::from_secs(30);
/// An answer is asked for again this long before its `nextUpdate`.
const EARLY: Duration = Duration::from_secs(60);

/// Answers about certificates, cached until their `nextUpdate`, and the
/// time of the last good answer per name (a registry) for the grace.
pub struct Checker {
    http: reqwest::Client,
    answers: Mutex<HashMap<Vec<u8>, Answer>>,
    /// Recent failures to get an answer, so that a responder that is
    /// down costs one timeout per certificate per [`RETRY_FAILED`], not
    /// one per exchange.
    failures: Mutex<HashMap<Vec<u8>, (u64, RevocationError)>>,
    crls: Mutex<HashMap<String, crl::Crl>>,
    last_good: Mutex<HashMap<String, u64>>,
    started_ms: u64,
    max_bytes: usize,
    max_crl_bytes: usize,
    fresh: Freshness,
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new(Duration::from_secs(5))
    }
}

impl Checker {
    pub fn new(timeout: Duration) -> Checker {
        Checker {
            // No redirects: an answer comes from the responder asked, or
            // not at all (a redirect is reported, see `fetch`).
            http: crate::pki::fetch::client(timeout)
                .build()
                .unwrap_or_default(),
            answers: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            crls: Mutex::new(HashMap::new()),
            last_good: Mutex::new(HashMap::new()),
            started_ms: crate::time::now_ms(),
            max_bytes: OCSP_MAX_BYTES,
            max_crl_bytes: CRL_MAX_BYTES,
            fresh: Freshness::default(),
        }
    }

    /// The checker with another freshness rule (`revocation_max_age`).
    pub fn with_freshness(mut self, fresh: Freshness) -> Checker {
        self.fresh = fresh;
        self
    }

    /// Until when a cached answer is used without asking again: before
    /// its `nextUpdate` (less [`EARLY`]), or, without one, a few minutes
    /// and never past the maximum age, so that a kept answer is held to
    /// the rule a new one is.
    fn fresh_until(&self, a: &Answer) -> u64 {
        let asked_again = a
            .next_update_ms
            .map(|n| n.saturating_sub(EARLY.as_millis() as u64))
            .unwrap_or(a.checked_ms + NO_NEXT_UPDATE.as_millis() as u64);
        asked_again.min(self.fresh.until(a.this_update_ms, a.next_update_ms))
    }

    /// The last good answer for `name`, if there was one since the start.
    pub fn last_good_ms(&self, name: &str) -> Option<u64> {
        crate::sync::lock(&self.last_good).get(name).copied()
    }

    /// Every name's last good answer.
    pub fn last_good_all(&self) -> Vec<(String, u64)> {
        crate::sync::lock(&self.last_good)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// The cached answer's state for `cert`, while fresh; never asks.
    pub fn cached(&self, cert: &X509, issuer: &X509) -> Option<State> {
        let key = key_of(cert, issuer).ok()?;
        let now = crate::time::now_ms();
        let answers = crate::sync::lock(&self.answers);
        let a = answers.get(&key)?;
        (now < self.fresh_until(a)).then(|| a.state.clone())
    }

    async fn fetch(&self, url: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, RevocationError> {
        let down = |e: &dyn std::fmt::Display| RevocationError::Unavailable(format!("{url}: {e}"));
        let is_ocsp = body.is_some();
        let req = match body {
            Some(b) => self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/ocsp-request")
                .body(b),
            None => self.http.get(url),
        };
        let resp = req.send().await.map_err(|e| down(&e))?;
        if let Some(r) = crate::pki::fetch::redirected(&resp) {
            return Err(RevocationError::Unavailable(format!("{url}: {r}")));
        }
        if !resp.status().is_success() {
            return Err(down(&format!("HTTP {}", resp.status())));
        }
        let cap = if is_ocsp {
            self.max_bytes
        } else {
            self.max_crl_bytes
        };
        crate::pki::fetch::body(resp, cap)
            .await
            .map_err(|e| match e {
                crate::pki::fetch::BodyError::TooLarge { .. } => {
                    RevocationError::Malformed(format!("{url}: {e}"))
                }
                e => down(&e),
            })
    }

    async fn crl(&self, at: &str, issuer: &X509, now: u64) -> Result<crl::Crl, RevocationError> {
        // Kept until shortly before its nextUpdate, or, without one, before
        // it is older than the maximum age (all that vouches for it then).
        let fresh = |c: &crl::Crl| {
            let until = c
                .next_update_ms
                .unwrap_or(c.this_update_ms + self.fresh.max_age.as_millis() as u64);
            until > now + EARLY.as_millis() as u64
        };
        // Keyed by the place and the CA it was checked against: the same
        // file or URL must not answer for another CA's certificates.
        let key = format!(
            "{at}\0{}",
            crate::xml::dsig::cert_sha256(issuer).unwrap_or_default()
        );
        if let Some(c) = crate::sync::lock(&self.crls).get(&key) {
            if fresh(c) {
                return Ok(c.clone());
            }
        }
        let bytes = if at.starts_with("http://") || at.starts_with("https://") {
            self.fetch(at, None).await?
        } else {
            crate::pki::fetch::file(std::path::Path::new(at), self.max_crl_bytes).map_err(|e| {
                match e {
                    crate::pki::fetch::BodyError::TooLarge { .. } => {
                        RevocationError::Malformed(format!("{at}: {e}"))
                    }
                    e => RevocationError::Unavailable(format!("{at}: {e}")),
                }
            })?
        };
        let c = crl::Crl::parse_with(&bytes, issuer, now, &self.fresh)?;
        crate::sync::lock(&self.crls).insert(key, c.clone());
        Ok(c)
    }

    /// The status of `cert` (issued by `issuer`): from the cache while
    /// fresh, else OCSP (configured responder, else the AIA's), then the
    /// CRL (configured, else the distribution points'). The first believed
    /// answer counts; when none, the last error says why.
    pub async fn status(
        &self,
        cert: &X509,
        issuer: &X509,
        sources: &Sources,
    ) -> Result<Answer, RevocationError> {
        self.lookup(cert, issuer, sources, true, true).await
    }

    /// [`Checker::status`], asking again even when the last try failed a
    /// moment ago (for the periodic re-check, which sets its own pace).
    pub async fn status_now(
        &self,
        cert: &X509,
        issuer: &X509,
        sources: &Sources,
    ) -> Result<Answer, RevocationError> {
        if let Ok(key) = key_of(cert, issuer) {
            crate::sync::lock(&self.failures).retain(|k, _| !k.starts_with(&key));
        }
        self.lookup(cert, issuer, sources, true, true).await
    }

    /// The status by OCSP alone (configured responder, else the AIA's).
    pub async fn ocsp_only(
        &self,
        cert: &X509,
        issuer: &X509,
        sources: &Sources,
    ) -> Result<Answer, RevocationError> {
        self.lookup(cert, issuer, sources, true, false).await
    }

    /// The status by the CRL alone (configured, else the distribution points').
    pub async fn crl_only(
        &self,
        cert: &X509,
        issuer: &X509,
        sources: &Sources,
    ) -> Result<Answer, RevocationError> {
        self.lookup(cert, issuer, sources, false, true).await
    }

    async fn lookup(
        &self,
        cert: &X509,
        issuer: &X509,
        sources: &Sources,
        use_ocsp: bool,
        use_crl: bool,
    ) -> Result<Answer, RevocationError> {
        let now = crate::time::now_ms();
        let key = key_of(cert, issuer)?;
        if let Some(a) = crate::sync::lock(&self.answers).get(&key) {
            if now < self.fresh_until(a) {
                return Ok(a.clone());
            }
        }
        // Failures are remembered per place asked, too.
        let mut failed_key = key.clone();
        for s in [&sources.ocsp_url, &sources.crl] {
            failed_key.push(0);
            failed_key.extend(s.as_deref().unwrap_or("").as_bytes());
        }
        failed_key.extend([use_ocsp as u8, use_crl as u8]);
        if let Some((until, e)) = crate::sync::lock(&self.failures).get(&failed_key) {
            if now < *until {
                return Err(e.clone());
            }
        }
        let mut last = RevocationError::NoSource;
        // Every source's failure, so that the last one does not hide why
        // the first was refused (a replayed OCSP answer, then no CRL).
        let mut said = Vec::new();
        let responders = match &sources.ocsp_url {
            _ if !use_ocsp => Vec::new(),
            Some(u) => vec![u.clone()],
            None => aia_ocsp(cert),
        };
        let mut answer = None;
        for url in responders {
            let q = ocsp::query(cert, issuer)?;
            match self.fetch(&url, Some(q.der.clone())).await {
                Ok(body) => match ocsp::check_answer(
                    &body,
                    &q,
                    issuer,
                    crate::time::now_ms(),
                    &self.fresh,
                    sources.ocsp_preproduced,
                ) {
                    Ok(a) => {
                        crate::metrics::revocation_check("ocsp", a_kind(&a.state));
                        answer = Some(a);
                        break;
                    }
                    Err(e) => {
                        crate::metrics::revocation_check("ocsp", "error");
                        tracing::warn!(responder = %url, error = %e, "an OCSP answer was not believed");
                        said.push(format!("OCSP {url}: {e}"));
                        last = e;
                    }
                },
                Err(e) => {
                    crate::metrics::revocation_check("ocsp", "unavailable");
                    said.push(format!("OCSP {e}"));
                    last = e;
                }
            }
        }
        if answer.is_none() && use_crl {
            let points = match &sources.crl {
                Some(c) => vec![c.clone()],
                None => crl_points(cert),
            };
            for at in points {
                match self
                    .crl(&at, issuer, now)
                    .await
                    .and_then(|c| c.answer(cert, &at, now))
                {
                    Ok(a) => {
                        crate::metrics::revocation_check("crl", a_kind(&a.state));
                        answer = Some(a);
                        break;
                    }
                    Err(e) => {
                        crate::metrics::revocation_check("crl", "error");
                        tracing::warn!(crl = %at, error = %e, "a CRL could not be used");
                        said.push(format!("CRL {at}: {e}"));
                        last = e;
                    }
                }
            }
        }
        let Some(a) = answer else {
            if said.len() > 1 {
                last = last.reworded(said.join("; "));
            }
            // Nowhere to ask costs nothing to find out again.
            if !matches!(last, RevocationError::NoSource) {
                let until = now + RETRY_FAILED.as_millis() as u64;
                let mut f = crate::sync::lock(&self.failures);
                if f.len() > 4096 {
                    f.clear();
                }
                f.insert(failed_key, (until, last.clone()));
            }
            return Err(last);
        };
        crate::sync::lock(&self.failures).remove(&failed_key);
        let mut answers = crate::sync::lock(&self.answers);
        if answers.len() > 4096 {
            answers.clear();
        }
        answers.insert(key, a.clone());
        Ok(a)
    }

    /// What `policy` makes of `cert`'s status, for `name` (a registry):
    /// a good answer renews the grace of `name`.
    pub async fn judge(
        &self,
        name: &str,
        policy: Policy,
        grace: Duration,
        cert: &X509,
        issuer: Option<&X509>,
        sources: &Sources,
    ) -> Verdict {
        if policy == Policy::Off {
            return Verdict::Off;
        }
        let got = match issuer {
            Some(i) => self.status(cert, i, sources).await,
            None => Err(RevocationError::Unavailable(
                "its issuer is not among the trusted CAs".into(),
            )),
        };
        let reason = match got {
            Ok(a) => match &a.state {
                State::Good => {
                    crate::sync::lock(&self.last_good).insert(name.to_owned(), a.checked_ms);
                    crate::metrics::revocation_good(name, a.checked_ms);
                    return Verdict::Good(a);
                }
                State::Revoked { at_ms, reason } => {
                    return Verdict::Revoked {
                        reason: format!(
                            "revoked since {} ({}){}",
                            crate::time::rfc3339_secs(*at_ms),
                            a.method(),
                            reason
                                .as_deref()
                                .map(|r| format!(", reason {r}"))
                                .unwrap_or_default()
                        ),
                    }
                }
                // Its own CA's responder does not know it: no CA issued
                // it that we can ask about (RFC 6960 2.2).
                State::Unknown => {
                    return Verdict::Revoked {
                        reason: "unknown to its CA's OCSP responder".into(),
                    }
                }
            },
            Err(e) => e.to_string(),
        };
        match policy {
            Policy::Require => Verdict::Refused {
                reason: format!("revocation status not established: {reason}"),
            },
            _ => {
                let since = self.last_good_ms(name).unwrap_or(self.started_ms);
                let age = crate::time::now_ms().saturating_sub(since);
                if age > grace.as_millis() as u64 {
                    Verdict::Refused {
                        reason: format!(
                            "revocation status not established for {} min (grace {} min): {reason}",
                            age / 60_000,
                            grace.as_secs() / 60
                        ),
                    }
                } else {
                    Verdict::Unchecked { reason }
                }
            }
        }
    }
}

fn a_kind(s: &State) -> &'static str {
    match s {
        State::Good => "good",
        State::Revoked { .. } => "revoked",
        State::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::authority::{Authority, Tamper};
    use super::*;
    use crate::pki::{CertSpec, Issued, KeyKind, Role};

    struct Ca {
        authority: Authority,
        leaf: X509,
    }

    fn ca(kind: KeyKind) -> Ca {
        let ca = Issued::new(&CertSpec::new("Test CA", Role::Ca), kind, None).unwrap();
        let leaf = Issued::new(&CertSpec::new("signer", Role::Signing), kind, Some(&ca)).unwrap();
        Ca {
            authority: Authority::new(ca.cert, ca.key),
            leaf: leaf.cert,
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    /// What a hostile responder can say within a well-signed answer: our
    /// certificate twice with two statuses, a critical extension no one
    /// processes, a producedAt dated back (or before its thisUpdate), a
    /// nonce twice. Each is refused, saying why; an answer naming the
    /// certificate by SHA-256 hashes is read (its "revoked" counts).
    #[test]
    fn an_answer_that_contradicts_itself_or_is_dated_back_is_refused() {
        let c = ca(KeyKind::EcP256);
        let issuer = c.authority.ca().clone();
        let q = ocsp::query(&c.leaf, &issuer).unwrap();
        let answer = |t: Tamper| {
            let der = c.authority.try_respond(&q.der, NOW, Some(&t)).unwrap();
            ocsp::check(&der, &q, &issuer, NOW)
        };
        assert_eq!(answer(Tamper::default()).unwrap().state, State::Good);
        for (t, says) in [
            (
                Tamper {
                    twice: true,
                    ..Tamper::default()
                },
                "speaks of this certificate 2 times",
            ),
            (
                Tamper {
                    critical_extension: true,
                    ..Tamper::default()
                },
                "the response has a critical extension 1.2.3.4.5 that is not handled",
            ),
            (
                Tamper {
                    produced_ms: Some(NOW - 5 * 86_400_000),
                    ..Tamper::default()
                },
                "comes before the thisUpdate it vouches for",
            ),
            (
                // Its status as of 20 minutes ago, signed (it says) 10
                // minutes ago, yet carrying the nonce we just sent.
                Tamper {
                    made_ms: Some(NOW - 20 * 60_000),
                    produced_ms: Some(NOW - 10 * 60_000),
                    ..Tamper::default()
                },
                "carries the nonce we just sent but says it was produced at",
            ),
            (
                Tamper {
                    produced_ms: Some(NOW + 86_400_000),
                    ..Tamper::default()
                },
                "producedAt",
            ),
        ] {
            let e = answer(t).unwrap_err();
            assert!(e.to_string().contains(says), "{says}: {e}");
        }
        // Without our nonce (a pre-produced answer), producedAt may not
        // come before the thisUpdate it vouches for.
        let kept = c
            .authority
            .try_respond(
                &q.der,
                NOW,
                Some(&Tamper {
                    no_nonce: true,
                    produced_ms: Some(NOW - 3_600_000),
                    ..Tamper::default()
                }),
            )
            .unwrap();
        let e = ocsp::check_kept(&kept, &c.leaf, &issuer, NOW).unwrap_err();
        assert!(e.to_string().contains("comes before the thisUpdate"), "{e}");
        // SHA-256 certificate ids: read, and a revocation is seen.
        c.authority.revoke_cert(&c.leaf, NOW - 1000).unwrap();
        let a = answer(Tamper {
            sha256_ids: true,
            ..Tamper::default()
        })
        .unwrap();
        assert!(matches!(a.state, State::Revoked { .. }), "{:?}", a.state);
    }

    #[test]
    fn ocsp_answers_are_believed_only_when_everything_holds() {
        for kind in [KeyKind::EcP256, KeyKind::Rsa2048] {
            let c = ca(kind);
            let issuer = c.authority.ca().clone();
            let q = ocsp::query(&c.leaf, &issuer).unwrap();
            let good = ocsp::check(&c.authority.respond(&q.der, NOW), &q, &issuer, NOW).unwrap();
            assert_eq!(good.state, State::Good);
            assert_eq!(good.next_update_ms, Some(NOW + 3_600_000));

            c.authority.revoke_cert(&c.leaf, NOW - 1000).unwrap();
            let a = ocsp::check(&c.authority.respond(&q.der, NOW), &q, &issuer, NOW).unwrap();
            assert!(matches!(a.state, State::Revoked { at_ms, .. } if at_ms == NOW - 1000));

            // Past its nextUpdate (and the five minutes of skew).
            let later = NOW + 3_600_000 + 6 * 60_000;
            let e = ocsp::check(&c.authority.respond(&q.der, NOW), &q, &issuer, later).unwrap_err();
            assert!(matches!(e, RevocationError::Stale(_)), "{e}");

            // Another request's nonce: a replay.
            let other = ocsp::query(&c.leaf, &issuer).unwrap();
            let e =
                ocsp::check(&c.authority.respond(&other.der, NOW), &q, &issuer, NOW).unwrap_err();
            assert!(e.to_string().contains("nonce"), "{e}");
            let t = Tamper {
                nonce: Some(vec![7; 16]),
                ..Tamper::default()
            };
            let e = ocsp::check(
                &c.authority.try_respond(&q.der, NOW, Some(&t)).unwrap(),
                &q,
                &issuer,
                NOW,
            )
            .unwrap_err();
            assert!(e.to_string().contains("nonce"), "{e}");

            // Signed by a CA the certificate's CA never authorised.
            let t = Tamper {
                signer: Some(ca(KeyKind::EcP256).authority),
                ..Tamper::default()
            };
            let e = ocsp::check(
                &c.authority.try_respond(&q.der, NOW, Some(&t)).unwrap(),
                &q,
                &issuer,
                NOW,
            )
            .unwrap_err();
            assert!(matches!(e, RevocationError::BadSignature(_)), "{e}");

            // Asked about another CA's certificate, it answers unknown.
            let stranger = ca(kind);
            let sq = ocsp::query(&stranger.leaf, stranger.authority.ca()).unwrap();
            let a = ocsp::check(&c.authority.respond(&sq.der, NOW), &sq, &issuer, NOW).unwrap();
            assert_eq!(a.state, State::Unknown);

            for junk in [&b""[..], b"\x30\x03\x0a\x01\x00", b"not der at all"] {
                let e = ocsp::check(junk, &q, &issuer, NOW).unwrap_err();
                assert!(!e.to_string().is_empty());
            }
        }
    }

    /// A CRL whose own extensions are a million tiny ones (10 MiB of them
    /// took 250 MB to read), or that writes out version 1, is refused
    /// before its signature is even looked at, saying why.
    #[test]
    fn a_crl_with_oversized_extensions_or_an_explicit_v1_is_refused() {
        fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let n = body.len();
            if n < 128 {
                out.push(n as u8);
            } else {
                let len = n.to_be_bytes();
                let skip = len.iter().take_while(|b| **b == 0).count();
                out.push(0x80 | (len.len() - skip) as u8);
                out.extend_from_slice(&len[skip..]);
            }
            out.extend_from_slice(body);
            out
        }
        let c = ca(KeyKind::EcP256);
        let issuer = c.authority.ca().clone();
        let alg = tlv(
            0x30,
            &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
        );
        let name = issuer.subject_name().to_der().unwrap();
        let t = tlv(0x17, b"261207000000Z");
        let crl = |version: Option<u8>, exts: &[u8]| {
            let mut tbs = Vec::new();
            if let Some(v) = version {
                tbs.extend(tlv(0x02, &[v]));
            }
            tbs.extend(&alg);
            tbs.extend(&name);
            tbs.extend(&t);
            tbs.extend(&t);
            if !exts.is_empty() {
                tbs.extend(tlv(0xa0, &tlv(0x30, exts)));
            }
            let mut list = tlv(0x30, &tbs);
            list.extend(&alg);
            list.extend(tlv(
                0x03,
                &[0, 0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01],
            ));
            tlv(0x30, &list)
        };
        // A non-critical private extension, 10 bytes, 100,000 times.
        let one = tlv(
            0x30,
            &[&tlv(0x06, &[0x2a, 0x03])[..], &tlv(0x04, &[0x05, 0x00])].concat(),
        );
        let many = crl(Some(1), &one.repeat(100_000));
        let e = crl::Crl::parse(&many, &issuer, NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("the CRL cannot be used: its extensions take 1000005 bytes, more than the 16384 they may"),
            "{e}"
        );
        let e = crl::Crl::parse(&crl(Some(0), &[]), &issuer, NOW).unwrap_err();
        assert!(e.to_string().contains("it writes out version 1"), "{e}");
    }

    /// A CRL checked against its CA answers only for that CA's
    /// certificates, whatever file or URL it came from.
    #[test]
    fn a_crl_speaks_only_of_its_own_cas_certificates() {
        let c = ca(KeyKind::EcP256);
        let other = ca(KeyKind::EcP256);
        let issuer = c.authority.ca().clone();
        let list = crl::Crl::parse(&c.authority.crl(NOW).unwrap(), &issuer, NOW).unwrap();
        assert_eq!(list.answer(&c.leaf, "x", NOW).unwrap().state, State::Good);
        let e = list.answer(&other.leaf, "x", NOW).unwrap_err();
        assert!(e.to_string().contains("another CA's"), "{e}");
    }

    #[test]
    fn crls_are_checked_against_their_ca_and_time() {
        let c = ca(KeyKind::EcP256);
        let issuer = c.authority.ca().clone();
        let serial = c.leaf.serial_number().to_bn().unwrap().to_vec();
        let crl = crl::Crl::parse(&c.authority.crl(NOW).unwrap(), &issuer, NOW).unwrap();
        assert_eq!(crl.revoked_at(&serial), None);
        assert_eq!(crl.number.as_deref(), Some("1"));
        c.authority.revoke_cert(&c.leaf, NOW - 5000).unwrap();
        let crl = crl::Crl::parse(&c.authority.crl(NOW).unwrap(), &issuer, NOW).unwrap();
        assert_eq!(crl.revoked_at(&serial), Some(NOW - 5000));
        assert_eq!(crl.number.as_deref(), Some("2"));

        let expired = c
            .authority
            .crl_valid(NOW - 7_200_000, NOW - 3_600_000)
            .unwrap();
        let e = crl::Crl::parse(&expired, &issuer, NOW).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");

        let other =
            Issued::new(&CertSpec::new("Other CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let other = Authority::new(other.cert, other.key);
        let e = crl::Crl::parse(&other.crl(NOW).unwrap(), &issuer, NOW).unwrap_err();
        assert!(e.to_string().contains("another CA"), "{e}");
        // Same name, another key: the signature gives it away.
        let twin = Issued::new(&CertSpec::new("Test CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let twin = Authority::new(twin.cert, twin.key);
        let e = crl::Crl::parse(&twin.crl(NOW).unwrap(), &issuer, NOW).unwrap_err();
        assert!(matches!(e, RevocationError::BadSignature(_)), "{e}");
    }

    /// What each policy makes of no answer, of a good one and of a
    /// revoked one; a good answer renews the grace.
    #[tokio::test]
    async fn policies_decide_what_an_unestablished_status_means() {
        let c = ca(KeyKind::EcP256);
        let issuer = c.authority.ca().clone();
        let none = Sources::default();
        let checker = Checker::default();
        std::thread::sleep(Duration::from_millis(5));
        let day = Duration::from_secs(86_400);
        let judge = |policy, grace, sources: Sources| {
            let (checker, leaf, issuer) = (&checker, c.leaf.clone(), issuer.clone());
            async move {
                checker
                    .judge("civil", policy, grace, &leaf, Some(&issuer), &sources)
                    .await
            }
        };
        assert!(matches!(
            judge(Policy::Off, day, none.clone()).await,
            Verdict::Off
        ));
        let v = judge(Policy::Require, day, none.clone()).await;
        assert!(
            matches!(&v, Verdict::Refused { reason } if reason.contains("names no OCSP")),
            "{v:?}"
        );
        let v = judge(Policy::Prefer, day, none.clone()).await;
        assert!(matches!(v, Verdict::Unchecked { .. }), "{v:?}");
        // Past the grace (none left since the start): refused.
        let v = judge(Policy::Prefer, Duration::ZERO, none.clone()).await;
        assert!(matches!(v, Verdict::Refused { .. }), "{v:?}");

        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("ca.crl");
        std::fs::write(&crl, c.authority.crl(crate::time::now_ms()).unwrap()).unwrap();
        let from_crl = Sources {
            crl: Some(crl.display().to_string()),
            ..Sources::default()
        };
        let v = judge(Policy::Require, day, from_crl.clone()).await;
        assert!(
            matches!(&v, Verdict::Good(a) if a.method() == "crl"),
            "{v:?}"
        );
        assert!(checker.last_good_ms("civil").is_some());
        // A good answer just now: within even a short grace.
        let v = judge(Policy::Prefer, Duration::from_secs(60), none.clone()).await;
        assert!(matches!(v, Verdict::Good(_)), "cached: {v:?}");

        let revoked = ca(KeyKind::EcP256);
        revoked
            .authority
            .revoke_cert(&revoked.leaf, crate::time::now_ms() - 1000)
            .unwrap();
        std::fs::write(&crl, revoked.authority.crl(crate::time::now_ms()).unwrap()).unwrap();
        let v = Checker::default()
            .judge(
                "tax",
                Policy::Prefer,
                day,
                &revoked.leaf,
                Some(revoked.authority.ca()),
                &from_crl,
            )
            .await;
        assert!(
            matches!(&v, Verdict::Revoked { reason } if reason.starts_with("revoked since")),
            "{v:?}"
        );
    }

    /// A signer under an intermediate CA that only the signature carries:
    /// its issuer is found there, and only there.
    #[test]
    fn the_issuer_may_come_with_the_signature() {
        let root = Issued::new(&CertSpec::new("Root CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let inter = Issued::new(
            &CertSpec::new("Issuing CA", Role::Ca),
            KeyKind::EcP256,
            Some(&root),
        )
        .unwrap();
        let leaf = Issued::new(
            &CertSpec::new("deep signer", Role::Signing),
            KeyKind::EcP256,
            Some(&inter),
        )
        .unwrap();
        let key = crate::xml::SigningKey::from_pem(
            &leaf.key_pem().unwrap(),
            &leaf.cert_pem().unwrap(),
            None,
        )
        .unwrap();
        let limits = crate::xml::Limits::default();
        let signed = crate::xml::sign(b"<a xmlns=\"urn:x\"><b>1</b></a>", &key, &limits).unwrap();
        use base64::Engine;
        let extra = base64::engine::general_purpose::STANDARD.encode(inter.cert.to_der().unwrap());
        // KeyInfo is not signed: the chain may be added after signing.
        let signed = String::from_utf8(signed).unwrap().replacen(
            "</ds:X509Certificate>",
            &format!("</ds:X509Certificate><ds:X509Certificate>{extra}</ds:X509Certificate>"),
            1,
        );
        let trust = crate::xml::TrustStore::from_pem(&root.cert_pem().unwrap()).unwrap();
        let v = crate::xml::verify(signed.as_bytes(), &trust, &limits).unwrap();
        assert_eq!(v.intermediates.len(), 1);
        assert_eq!(issuer_of(&v.signer, trust.anchors()), None);
        let mut candidates = v.intermediates.clone();
        candidates.extend_from_slice(trust.anchors());
        let found = issuer_of(&v.signer, &candidates).unwrap();
        assert_eq!(found.to_der().unwrap(), inter.cert.to_der().unwrap());
    }

    const DAY: u64 = 86_400_000;

    /// A delegated OCSP responder issued by `ca` for `[from, to]` (ms),
    /// with the extended key usage named (openssl's short name), or none.
    fn delegated(
        ca: &Authority,
        ca_key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
        from: u64,
        to: u64,
        eku: Option<&str>,
    ) -> Authority {
        use openssl::x509::extension::ExtendedKeyUsage;
        let key = crate::pki::new_key(KeyKind::EcP256).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "delegated responder")
            .unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = openssl::bn::BigNum::from_u32(4242).unwrap();
        b.set_serial_number(&serial.to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(ca.ca().subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        let t = |ms: u64| openssl::asn1::Asn1Time::from_unix((ms / 1000) as i64).unwrap();
        b.set_not_before(&t(from)).unwrap();
        b.set_not_after(&t(to)).unwrap();
        if let Some(eku) = eku {
            b.append_extension(ExtendedKeyUsage::new().other(eku).build().unwrap())
                .unwrap();
        }
        b.sign(ca_key, MessageDigest::sha256()).unwrap();
        Authority::new(b.build(), key)
    }

    /// An answer without nextUpdate is believed only while young; our
    /// nonce must come back unless the responder pre-produces answers;
    /// a kept answer is held to the age rule at its document's time.
    #[test]
    fn ocsp_answers_are_fresh_and_carry_our_nonce() {
        let c = ca(KeyKind::EcP256);
        let issuer = c.authority.ca().clone();
        let q = ocsp::query(&c.leaf, &issuer).unwrap();
        let f = Freshness::default();
        let answer = |t: Tamper| c.authority.try_respond(&q.der, NOW, Some(&t)).unwrap();
        let replay = answer(Tamper {
            no_nonce: true,
            no_next_update: true,
            made_ms: Some(NOW - 400 * DAY),
            ..Tamper::default()
        });
        let e = ocsp::check_answer(&replay, &q, &issuer, NOW, &f, false).unwrap_err();
        assert!(
            e.to_string().contains("does not carry the nonce we sent"),
            "{e}"
        );
        let e = ocsp::check_answer(&replay, &q, &issuer, NOW, &f, true).unwrap_err();
        assert!(matches!(e, RevocationError::Stale(_)), "{e}");
        assert!(
            e.to_string().contains("no nextUpdate") && e.to_string().contains("400 days old"),
            "{e}"
        );
        let e = ocsp::check_kept(&replay, &c.leaf, &issuer, NOW).unwrap_err();
        assert!(matches!(e, RevocationError::Stale(_)), "{e}");
        // At its own time, a kept answer holds.
        let kept = ocsp::check_kept(&replay, &c.leaf, &issuer, NOW - 400 * DAY + 60_000).unwrap();
        assert_eq!(kept.state, State::Good);

        // Pre-produced, young: believed on its age alone.
        let young = answer(Tamper {
            no_nonce: true,
            no_next_update: true,
            made_ms: Some(NOW - 30 * 60_000),
            ..Tamper::default()
        });
        let a = ocsp::check_answer(&young, &q, &issuer, NOW, &f, true).unwrap();
        assert_eq!(a.state, State::Good);
        let e = ocsp::check_answer(&young, &q, &issuer, NOW, &f, false).unwrap_err();
        assert!(e.to_string().contains("nonce"), "{e}");
        // With our nonce, no nextUpdate: the age rule alone.
        let fresh = answer(Tamper {
            no_next_update: true,
            made_ms: Some(NOW - 30 * 60_000),
            // Signed now, in answer to our request, of a status it knew
            // half an hour ago.
            produced_ms: Some(NOW),
            ..Tamper::default()
        });
        assert!(ocsp::check(&fresh, &q, &issuer, NOW).is_ok());
        let e = ocsp::check(&fresh, &q, &issuer, NOW + 2 * 3_600_000).unwrap_err();
        assert!(e.to_string().contains("maximum age of 60 min"), "{e}");
        let longer = Freshness {
            max_age: Duration::from_secs(4 * 3600),
            ..f
        };
        // (A pre-produced one: an answer that echoes our nonce was made
        // just now, and is not read two hours later.)
        assert!(
            ocsp::check_answer(&young, &q, &issuer, NOW + 2 * 3_600_000, &longer, true).is_ok()
        );
        let e = ocsp::check_answer(&young, &q, &issuer, NOW + 2 * 3_600_000, &f, true).unwrap_err();
        assert!(e.to_string().contains("maximum age of 60 min"), "{e}");
        // With nextUpdate: before thisUpdate (less the skew) is refused too.
        let e = ocsp::check(
            &c.authority.respond(&q.der, NOW),
            &q,
            &issuer,
            NOW - 3_600_000,
        )
        .unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
    }

    /// A delegated responder is believed only when the CA issued it for
    /// OCSP and it was valid when the answer was produced.
    #[test]
    fn a_delegated_responder_must_be_authorised_and_valid() {
        let ca_issued =
            Issued::new(&CertSpec::new("Test CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let leaf = Issued::new(
            &CertSpec::new("signer", Role::Signing),
            KeyKind::EcP256,
            Some(&ca_issued),
        )
        .unwrap();
        let key = ca_issued.key.clone();
        let authority = Authority::new(ca_issued.cert.clone(), ca_issued.key.clone());
        let issuer = authority.ca().clone();
        let q = ocsp::query(&leaf.cert, &issuer).unwrap();
        let with = |signer: Authority| {
            authority
                .try_respond(
                    &q.der,
                    NOW,
                    Some(&Tamper {
                        signer: Some(signer),
                        ..Tamper::default()
                    }),
                )
                .unwrap()
        };
        let good = with(delegated(
            &authority,
            &key,
            NOW - DAY,
            NOW + DAY,
            Some("OCSPSigning"),
        ));
        assert_eq!(
            ocsp::check(&good, &q, &issuer, NOW).unwrap().state,
            State::Good
        );
        let expired = with(delegated(
            &authority,
            &key,
            NOW - 400 * DAY,
            NOW - 300 * DAY,
            Some("OCSPSigning"),
        ));
        let e = ocsp::check(&expired, &q, &issuer, NOW).unwrap_err();
        assert!(matches!(e, RevocationError::BadSignature(_)), "{e}");
        assert!(
            e.to_string()
                .contains("was not valid when the answer was produced"),
            "{e}"
        );
        // Without an extended key usage, or with one for another purpose
        // (a TLS server certificate the CA issued): not authorised.
        for eku in [None, Some("serverAuth")] {
            let other = with(delegated(&authority, &key, NOW - DAY, NOW + DAY, eku));
            let e = ocsp::check(&other, &q, &issuer, NOW).unwrap_err();
            assert!(
                e.to_string().contains("does not carry id-kp-OCSPSigning"),
                "{eku:?}: {e}"
            );
        }
        // Issued by a twin CA (the same name, another key).
        let twin = Issued::new(&CertSpec::new("Test CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let twin_ca = Authority::new(twin.cert.clone(), twin.key.clone());
        let foreign = with(delegated(
            &twin_ca,
            &twin.key,
            NOW - DAY,
            NOW + DAY,
            Some("OCSPSigning"),
        ));
        let e = ocsp::check(&foreign, &q, &issuer, NOW).unwrap_err();
        assert!(
            e.to_string().contains("not issued by the certificate's CA"),
            "{e}"
        );
    }

    /// A CRL as a CA signs it: `version` absent (v1) or v2, the times,
    /// the revoked serials (with entry extensions) and CRL extensions.
    fn crl_of(
        ca: &Issued,
        v2: bool,
        this_ms: u64,
        next_ms: Option<u64>,
        revoked: &[(&X509, Option<x509_cert::ext::Extension>)],
        exts: Vec<x509_cert::ext::Extension>,
    ) -> Vec<u8> {
        use der::{Decode, Encode};
        use x509_cert::time::Time;
        let time = |ms: u64| {
            Time::UtcTime(
                der::asn1::UtcTime::from_system_time(
                    std::time::UNIX_EPOCH + Duration::from_millis(ms),
                )
                .unwrap(),
            )
        };
        let mut body = Vec::new();
        if v2 {
            body.extend(1u8.to_der().unwrap());
        }
        let alg = spki::AlgorithmIdentifierOwned {
            oid: oid::ECDSA_SHA256,
            parameters: None,
        };
        body.extend(alg.to_der().unwrap());
        body.extend(ca.cert.subject_name().to_der().unwrap());
        body.extend(time(this_ms).to_der().unwrap());
        if let Some(n) = next_ms {
            body.extend(time(n).to_der().unwrap());
        }
        if !revoked.is_empty() {
            let list: Vec<x509_cert::crl::RevokedCert> = revoked
                .iter()
                .map(|(c, x)| x509_cert::crl::RevokedCert {
                    serial_number: ocsp::serial_of(&c.serial_number().to_bn().unwrap().to_vec())
                        .unwrap(),
                    revocation_date: time(this_ms - 1000),
                    crl_entry_extensions: x.clone().map(|x| vec![x]),
                })
                .collect();
            body.extend(list.to_der().unwrap());
        }
        if !exts.is_empty() {
            let inner = exts.to_der().unwrap();
            let explicit = der::asn1::Any::new(
                der::Tag::ContextSpecific {
                    constructed: true,
                    number: der::TagNumber::N0,
                },
                inner,
            )
            .unwrap();
            body.extend(explicit.to_der().unwrap());
        }
        let tbs = der::asn1::Any::new(der::Tag::Sequence, body)
            .unwrap()
            .to_der()
            .unwrap();
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &ca.key).unwrap();
        signer.update(&tbs).unwrap();
        let sig = der::asn1::BitString::from_bytes(&signer.sign_to_vec().unwrap()).unwrap();
        let mut whole = tbs;
        whole.extend(alg.to_der().unwrap());
        whole.extend(sig.to_der().unwrap());
        let der = der::asn1::Any::new(der::Tag::Sequence, whole)
            .unwrap()
            .to_der()
            .unwrap();
        let _ = der::asn1::Any::from_der(&der).unwrap();
        der
    }

    fn ext(oid: &str, critical: bool, value: &[u8]) -> x509_cert::ext::Extension {
        x509_cert::ext::Extension {
            extn_id: der::asn1::ObjectIdentifier::new_unwrap(oid),
            critical,
            extn_value: der::asn1::OctetString::new(value.to_vec()).unwrap(),
        }
    }

    /// Version 1 and 2 CRLs are read alike; one without nextUpdate is
    /// stale past the maximum age; a delta CRL, an indirect one, or an
    /// entry with a critical extension not handled makes it unusable.
    #[test]
    fn crls_of_both_versions_are_read_and_partial_ones_refused() {
        let ca_i = Issued::new(&CertSpec::new("Test CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let good = Issued::new(
            &CertSpec::new("good", Role::Signing),
            KeyKind::EcP256,
            Some(&ca_i),
        )
        .unwrap()
        .cert;
        let bad = Issued::new(
            &CertSpec::new("bad", Role::Signing),
            KeyKind::EcP256,
            Some(&ca_i),
        )
        .unwrap()
        .cert;
        let issuer = ca_i.cert.clone();
        for v2 in [false, true] {
            let der = crl_of(
                &ca_i,
                v2,
                NOW - 1000,
                Some(NOW + DAY),
                &[(&bad, None)],
                vec![],
            );
            let crl = crl::Crl::parse(&der, &issuer, NOW).unwrap();
            assert_eq!(
                crl.answer(&good, "f", NOW).unwrap().state,
                State::Good,
                "v2 {v2}"
            );
            assert!(
                matches!(
                    crl.answer(&bad, "f", NOW).unwrap().state,
                    State::Revoked { .. }
                ),
                "v2 {v2}"
            );
            let kept = crl::check_kept(&der, &bad, &issuer, NOW).unwrap();
            assert!(matches!(kept.state, State::Revoked { .. }));
            assert!(matches!(&kept.source, Source::Crl { der: d, .. } if **d == *der));
        }
        let undated = crl_of(&ca_i, false, NOW - 2 * 3_600_000, None, &[], vec![]);
        let e = crl::Crl::parse(&undated, &issuer, NOW).unwrap_err();
        assert!(matches!(e, RevocationError::Stale(_)), "{e}");
        assert!(e.to_string().contains("no nextUpdate"), "{e}");
        assert!(crl::Crl::parse(&undated, &issuer, NOW - 3_600_000).is_ok());

        let delta = crl_of(
            &ca_i,
            true,
            NOW,
            Some(NOW + DAY),
            &[],
            vec![ext("2.5.29.27", true, &[2, 1, 5])],
        );
        let e = crl::Crl::parse(&delta, &issuer, NOW).unwrap_err();
        assert!(
            e.to_string().contains("a delta CRL is not a complete CRL"),
            "{e}"
        );
        // An issuing distribution point for indirect CRLs ([4] TRUE).
        let indirect = crl_of(
            &ca_i,
            true,
            NOW,
            Some(NOW + DAY),
            &[],
            vec![ext("2.5.29.28", true, &[0x30, 3, 0x84, 1, 0xff])],
        );
        let e = crl::Crl::parse(&indirect, &issuer, NOW).unwrap_err();
        assert!(e.to_string().contains("indirect CRL"), "{e}");
        // One that only names its distribution point is a complete CRL.
        let plain_idp = crl_of(
            &ca_i,
            true,
            NOW,
            Some(NOW + DAY),
            &[],
            vec![ext("2.5.29.28", true, &[0x30, 0])],
        );
        assert!(crl::Crl::parse(&plain_idp, &issuer, NOW).is_ok());
        // One for a distribution point: only for the certificates that
        // name it.
        let uri = b"http://x/ca.crl";
        let mut gn = vec![0x86, uri.len() as u8];
        gn.extend(uri);
        let mut full = vec![0xa0, gn.len() as u8];
        full.extend(&gn);
        let mut dp = vec![0xa0, full.len() as u8];
        dp.extend(&full);
        let mut idp = vec![0x30, dp.len() as u8];
        idp.extend(&dp);
        let scoped = crl_of(
            &ca_i,
            true,
            NOW,
            Some(NOW + DAY),
            &[],
            vec![ext("2.5.29.28", true, &idp)],
        );
        let scoped = crl::Crl::parse(&scoped, &issuer, NOW).unwrap();
        let e = scoped.answer(&good, "f", NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("covers only the distribution point http://x/ca.crl"),
            "{e}"
        );
        let mut spec = CertSpec::new("pointed", Role::Signing);
        spec.crl_url = Some("http://x/ca.crl".into());
        let pointed = Issued::new(&spec, KeyKind::EcP256, Some(&ca_i))
            .unwrap()
            .cert;
        assert_eq!(
            scoped.answer(&pointed, "f", NOW).unwrap().state,
            State::Good
        );
        let unknown = crl_of(
            &ca_i,
            true,
            NOW,
            Some(NOW + DAY),
            &[],
            vec![ext("1.2.3.4", true, &[5, 0])],
        );
        let e = crl::Crl::parse(&unknown, &issuer, NOW).unwrap_err();
        assert!(e.to_string().contains("critical extension 1.2.3.4"), "{e}");
        let entry = crl_of(
            &ca_i,
            true,
            NOW,
            Some(NOW + DAY),
            &[(&bad, Some(ext("2.5.29.29", true, &[0x30, 0])))],
            vec![],
        );
        let e = crl::Crl::parse(&entry, &issuer, NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("certificate issuer (an indirect CRL)"),
            "{e}"
        );
        // A reason code, critical or not, is understood.
        let reason = crl_of(
            &ca_i,
            true,
            NOW,
            Some(NOW + DAY),
            &[(&bad, Some(ext("2.5.29.21", false, &[10, 1, 1])))],
            vec![],
        );
        assert!(crl::Crl::parse(&reason, &issuer, NOW).is_ok());
    }

    /// A cached answer without nextUpdate is reused no longer than the
    /// maximum age allows, however recently it was asked for; with one,
    /// until shortly before it.
    #[test]
    fn a_cached_answer_is_held_to_the_age_rule() {
        let checker = Checker::default();
        let answer = |this: u64, next: Option<u64>| Answer {
            state: State::Good,
            source: Source::Ocsp { der: Vec::new() },
            this_update_ms: this,
            next_update_ms: next,
            checked_ms: NOW,
        };
        let old = answer(NOW - 59 * 60_000, None);
        assert_eq!(checker.fresh_until(&old), NOW + 60_000);
        let young = answer(NOW - 60_000, None);
        assert_eq!(
            checker.fresh_until(&young),
            NOW + NO_NEXT_UPDATE.as_millis() as u64
        );
        let dated = answer(NOW, Some(NOW + DAY));
        assert_eq!(
            checker.fresh_until(&dated),
            NOW + DAY - EARLY.as_millis() as u64
        );
    }

    /// A CRL's URL that redirects is not followed, and says where to.
    #[tokio::test]
    async fn a_redirected_crl_is_not_followed() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/ca.crl\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        let c = ca(KeyKind::EcP256);
        let sources = Sources {
            crl: Some(format!("http://{addr}/ca.crl")),
            ..Sources::default()
        };
        let e = Checker::default()
            .crl_only(&c.leaf, c.authority.ca(), &sources)
            .await
            .unwrap_err();
        assert!(matches!(e, RevocationError::Unavailable(_)), "{e}");
        assert!(
            e.to_string().contains(
                "the responder redirected to http://127.0.0.1:1/ca.crl (HTTP 307), which is not followed"
            ),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Whatever bytes come back, an answer is refused with a message
        /// or read, never a panic.
        #[test]
        fn any_bytes_are_an_answer_or_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let c = ca(KeyKind::EcP256);
            let issuer = c.authority.ca().clone();
            let q = ocsp::query(&c.leaf, &issuer).unwrap();
            let _ = ocsp::check(&bytes, &q, &issuer, NOW);
            let _ = crl::Crl::parse(&bytes, &issuer, NOW);
            let _ = crl::check_kept(&bytes, &c.leaf, &issuer, NOW);
        }

        /// A genuine CRL, v1 or v2, with one byte changed: refused, or
        /// read with the same entries (never a panic, never a revoked
        /// certificate read as good).
        #[test]
        fn a_changed_byte_never_unrevokes(v2 in proptest::prelude::any::<bool>(), at in 0usize..2000, bit in 0u8..8) {
            let ca_i = Issued::new(&CertSpec::new("Test CA", Role::Ca), KeyKind::EcP256, None).unwrap();
            let bad = Issued::new(&CertSpec::new("bad", Role::Signing), KeyKind::EcP256, Some(&ca_i)).unwrap().cert;
            let mut der = crl_of(&ca_i, v2, NOW - 1000, Some(NOW + DAY), &[(&bad, None)], vec![]);
            let i = at % der.len();
            der[i] ^= 1 << bit;
            if let Ok(c) = crl::Crl::parse(&der, &ca_i.cert, NOW) {
                let revoked = matches!(c.answer(&bad, "f", NOW).unwrap().state, State::Revoked { .. });
                proptest::prop_assert!(revoked);
            }
        }

        /// A genuine answer with one byte changed is never believed to say
        /// something else than the original: refused, or the same status.
        #[test]
        fn a_changed_byte_never_changes_the_status(at in 0usize..2000, bit in 0u8..8) {
            let c = ca(KeyKind::EcP256);
            let issuer = c.authority.ca().clone();
            let q = ocsp::query(&c.leaf, &issuer).unwrap();
            let mut der = c.authority.respond(&q.der, NOW);
            let i = at % der.len();
            der[i] ^= 1 << bit;
            if let Ok(a) = ocsp::check(&der, &q, &issuer, NOW) {
                proptest::prop_assert_eq!(a.state, State::Good);
            }
        }
    }
}
