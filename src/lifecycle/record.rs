//! A request's record: what is kept about it, its states, its attempts.
//! The stores keep records as JSON with a schema version `v`, so a later
//! version can migrate them on open; how a record changes is
//! [`super::apply`]'s.
//!
//! Its fields are typed (ids, the parsed subject, enums for states and
//! outcomes) but written exactly as the strings they were before they had
//! types, so records on disk, API bodies and case.json are unchanged and
//! no migration is needed; the tests below hold old records to that.

use serde::{Deserialize, Serialize};

use crate::ids::{CaseNumber, ClientId, RegistryId, RequestId, ServiceId};
use crate::lifecycle::OutcomeKind;
use crate::protocol::subject::{Subject, SubjectError};

/// The current record schema version.
pub const RECORD_VERSION: u32 = 1;

named_enum! {
    /// Life-cycle states; the names are those of the API.
    pub enum State {
        Queued = "queued",
        /// Leased to a dispatcher until `lease_until`.
        Sending = "sending",
        /// Accepted by the registry; poll the ticket when due.
        Awaiting = "awaiting",
        Retrying = "retrying",
        /// The document is here; delivery into the case is pending.
        Fetched = "fetched",
        Delivered = "delivered",
        Dead = "dead",
        Cancelled = "cancelled",
    }
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Delivered | State::Dead | State::Cancelled)
    }

    /// Open and not yet fetched: the registry is still to answer. The
    /// oldest of these is the queue's age.
    pub const UNFETCHED: [State; 4] = [
        State::Queued,
        State::Sending,
        State::Awaiting,
        State::Retrying,
    ];
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub http_status: Option<u16>,
    pub outcome: OutcomeKind,
    pub detail: String,
    /// The X-Road message id of this attempt (`xrd:id`): every attempt is
    /// a message of its own, and the security server's signed document of
    /// it is asked for by this id. Absent for the signed-XML profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// A request and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub v: u32,
    pub id: RequestId,
    /// The back-office client that submitted it.
    pub client: ClientId,
    pub case: CaseNumber,
    pub legal_basis: String,
    pub official: String,
    pub purpose: String,
    pub service: ServiceId,
    pub registry: RegistryId,
    /// Whom or what it is about, parsed; written as its fields by name.
    pub subject: SubjectRecord,
    pub state: State,
    pub created_ms: u64,
    /// ZUP deadline: never retried past it.
    pub deadline_ms: u64,
    /// When something next has to happen (the `due` index key), if anything.
    pub due_ms: Option<u64>,
    pub attempts: Vec<AttemptRecord>,
    /// Consecutive security failures.
    pub security_failures: u32,
    pub ticket: Option<String>,
    pub document_id: Option<String>,
    /// Subject of the registry's signing certificate, once fetched.
    #[serde(default)]
    pub signer: Option<String>,
    /// SHA-256 (lowercase hex) of the DER of the registry signer's
    /// certificate the gateway accepted: what binds the document to its
    /// signer in the dossier. Absent in records from before it was kept.
    #[serde(default)]
    pub signer_sha256: Option<String>,
    /// SHA-256 (lowercase hex) of the DER of the trust anchor (of the
    /// registry's `signer_ca`) its chain ended at.
    #[serde(default)]
    pub signer_anchor_sha256: Option<String>,
    pub delivered_ms: Option<u64>,
    /// Why it is dead, or the last error.
    pub error: Option<String>,
    /// Flagged by the deadline watch: within days of its ZUP deadline.
    #[serde(default)]
    pub at_risk: bool,
    /// Failed deliveries of its document since it was fetched.
    #[serde(default)]
    pub delivery_failures: u32,
    /// How the registry signer's certificate stood when the document came.
    #[serde(default)]
    pub revocation: Option<RevocationRecord>,
    /// The third party's timestamp on the document's signature (RFC 3161),
    /// when one is configured.
    #[serde(default)]
    pub stamp: Option<StampRecord>,
    /// What came with the document (X-Road: SOAP with attachments, MTOM),
    /// each stored beside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRecord>,
    /// X-Road: the security server's signed document (ASiC-E) of the
    /// message that brought the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_document: Option<SignedDocRecord>,
    /// X-Road: the charset its answer's `Content-Type` named. The document
    /// is kept byte for byte as it came (its signed document holds those
    /// bytes), so whoever reads it must know, when its XML declaration does
    /// not say (or says otherwise: HTTP's charset wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
}

/// One attachment of a document, stored under `document_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// Where it is stored (`{request}.attachment-{n}`, n from 1).
    pub document_id: String,
    /// Its MIME `Content-ID`, without the angle brackets.
    pub content_id: String,
    /// Its MIME type as the registry sent it.
    pub content_type: String,
    /// Its file name as the registry named it (never used as a path).
    #[serde(default)]
    pub name: Option<String>,
    pub size: u64,
    /// SHA-256 (lowercase hex) of its bytes.
    pub sha256: String,
}

/// The security server's signed document of one message: asked for by the
/// evidence job after the document came, kept when it checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDocRecord {
    pub state: SignedDocState,
    /// The X-Road message id (`queryId`) it is asked for by.
    pub message_id: String,
    #[serde(default)]
    pub tries: u32,
    /// When it was first due (the document's arrival): after a while the
    /// security server is asked to `force` its timestamp.
    pub since_ms: u64,
    #[serde(default)]
    pub next_ms: Option<u64>,
    /// Where it is stored once kept (`{request}.asice`).
    #[serde(default)]
    pub document_id: Option<String>,
    /// SHA-256 (lowercase hex) of the container, once kept.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl SignedDocRecord {
    pub fn pending(message_id: &str, now: u64) -> SignedDocRecord {
        SignedDocRecord {
            state: SignedDocState::Pending,
            message_id: message_id.to_owned(),
            tries: 0,
            since_ms: now,
            next_ms: Some(now),
            document_id: None,
            sha256: None,
            reason: None,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.state == SignedDocState::Pending
    }
}

named_enum! {
    /// Where the security server's signed document of a message stands.
    pub enum SignedDocState {
        /// To be asked for, at `next_ms`.
        Pending = "pending",
        /// Asked for, checked and stored.
        Kept = "kept",
        /// Given up: `reason` says why.
        Failed = "failed",
    }
}

/// A document's timestamp: asked for by the evidence job after the
/// document came, kept when it checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampRecord {
    pub state: StampState,
    #[serde(default)]
    pub tries: u32,
    #[serde(default)]
    pub next_ms: Option<u64>,
    /// The TimeStampToken (CMS ContentInfo), DER in base64.
    #[serde(default)]
    pub token: Option<String>,
    /// The time the TSA vouches for (its genTime).
    #[serde(default)]
    pub time_ms: Option<u64>,
    /// The TSA's certificate subject and the token's serial number (hex).
    #[serde(default)]
    pub tsa: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    /// Why the last try failed, or why it was given up.
    #[serde(default)]
    pub reason: Option<String>,
    /// What the token is to be on: the SHA-256 (hex) of the document's
    /// decoded `ds:SignatureValue`, found when the answer was verified,
    /// so that the evidence job need not read and parse the document
    /// again. Absent in records from before it was kept: the job reads
    /// the document then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imprint: Option<String>,
}

impl StampRecord {
    pub fn pending(now: u64) -> StampRecord {
        StampRecord {
            state: StampState::Pending,
            tries: 0,
            next_ms: Some(now),
            token: None,
            time_ms: None,
            tsa: None,
            serial: None,
            imprint: None,
            reason: None,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.state == StampState::Pending
    }
}

named_enum! {
    /// Where a document's timestamp stands.
    pub enum StampState {
        /// To be asked for, at `next_ms`.
        Pending = "pending",
        /// Asked for, checked and kept (`token`).
        Stamped = "stamped",
        /// Given up: `reason` says why.
        Failed = "failed",
    }
}

/// The evidence kept with a document that its signer's certificate was
/// not revoked when it came (or why that was not established).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub status: SignerStatus,
    /// How a confirmed status was established.
    #[serde(default)]
    pub method: Option<RevocationMethod>,
    pub checked_ms: u64,
    #[serde(default)]
    pub this_update_ms: Option<u64>,
    #[serde(default)]
    pub next_update_ms: Option<u64>,
    #[serde(default)]
    pub crl_number: Option<String>,
    #[serde(default)]
    pub crl_url: Option<String>,
    /// The OCSP response that confirmed it, DER in base64.
    #[serde(default)]
    pub ocsp_response: Option<String>,
    /// Why the status was not established.
    #[serde(default)]
    pub reason: Option<String>,
    /// The CRL that confirmed it: lowercase hex SHA-256 of its DER, kept
    /// once per CRL among the documents as `crl-{hex}`.
    #[serde(default)]
    pub crl_sha256: Option<String>,
}

named_enum! {
    /// How a registry signer's certificate stood when its document came.
    pub enum SignerStatus {
        /// Confirmed not revoked.
        Good = "good",
        /// Not established, and accepted by the registry's `prefer` policy:
        /// to be checked again.
        Unchecked = "unchecked",
        /// Found revoked by that later check.
        Revoked = "revoked",
    }
}

named_enum! {
    /// What confirmed a revocation status.
    pub enum RevocationMethod {
        Ocsp = "ocsp",
        Crl = "crl",
    }
}

impl RequestRecord {
    /// A new request, queued and due now, with the deadline `deadline`
    /// from now.
    #[allow(clippy::too_many_arguments)]
    pub fn queued(
        client: &str,
        case: CaseNumber,
        legal_basis: String,
        official: String,
        purpose: String,
        service: ServiceId,
        registry: RegistryId,
        subject: impl Into<SubjectRecord>,
        deadline: std::time::Duration,
    ) -> RequestRecord {
        let now = crate::time::now_ms();
        RequestRecord {
            v: RECORD_VERSION,
            id: RequestId::new(),
            client: client.into(),
            case,
            legal_basis,
            official,
            purpose,
            service,
            registry,
            subject: subject.into(),
            state: State::Queued,
            created_ms: now,
            deadline_ms: crate::time::calendar::deadline_after(now, deadline),
            due_ms: Some(now),
            attempts: Vec::new(),
            security_failures: 0,
            ticket: None,
            document_id: None,
            signer: None,
            signer_sha256: None,
            signer_anchor_sha256: None,
            delivered_ms: None,
            error: None,
            at_risk: false,
            delivery_failures: 0,
            revocation: None,
            stamp: None,
            attachments: Vec::new(),
            signed_document: None,
            charset: None,
        }
    }

    /// Needs an operator: dead, or not yet fetched after failing twice.
    /// The stores index it, so the dashboard finds these without a scan.
    pub fn needs_attention(&self) -> bool {
        self.state == State::Dead
            || (State::UNFETCHED.contains(&self.state) && self.attempts.len() >= 2)
    }

    /// The documents stored beside its own, each under its own id: its
    /// attachments and its kept signed document. A backup carries them
    /// with the request, and retention removes them with it.
    pub fn documents_beside(&self) -> impl Iterator<Item = &str> {
        self.attachments
            .iter()
            .map(|a| a.document_id.as_str())
            .chain(
                self.signed_document
                    .as_ref()
                    .and_then(|s| s.document_id.as_deref()),
            )
    }

    /// Its document waits for a timestamp: the stores index it, so that
    /// the evidence job finds these without a scan.
    pub fn stamp_pending(&self) -> bool {
        self.stamp.as_ref().is_some_and(StampRecord::is_pending)
    }

    /// Its document's X-Road signed document is still to be asked for.
    pub fn signed_document_pending(&self) -> bool {
        self.signed_document
            .as_ref()
            .is_some_and(SignedDocRecord::is_pending)
    }

    /// When the evidence job is next to try something for its document:
    /// the earliest next try of a pending timestamp and of a pending
    /// signed document, or `None` when neither waits. The stores index
    /// records by it (one index for both kinds), so that the job finds
    /// them without a scan.
    pub fn evidence_due_ms(&self) -> Option<u64> {
        let stamp = self
            .stamp
            .as_ref()
            .filter(|s| s.is_pending())
            .map(|s| s.next_ms.unwrap_or(0));
        let signed = self
            .signed_document
            .as_ref()
            .filter(|s| s.is_pending())
            .map(|s| s.next_ms.unwrap_or(0));
        match (stamp, signed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Flagged near its deadline and still open: what the at-risk count
    /// counts.
    pub fn at_risk_open(&self) -> bool {
        self.at_risk && !self.state.is_terminal()
    }

    /// Its deadline counted from its filing with a limit of `limit`
    /// (`retry.deadline`): a number of days as ZUP counts them, with
    /// Serbia's working days ([`crate::time::calendar::deadline_after`]).
    pub fn counting(mut self, limit: std::time::Duration) -> RequestRecord {
        self.deadline_ms = crate::time::calendar::deadline_after(self.created_ms, limit);
        self
    }

    /// The same request timed by another clock (the store's, where
    /// instances on several machines share it): created and due at `now`,
    /// its deadline as far from `now` as it was.
    pub fn at(mut self, now: u64) -> RequestRecord {
        let deadline = self.deadline_ms.saturating_sub(self.created_ms);
        // Ids sort in filing order, and the stores seek by filing time in
        // them: the id's time must be this clock's too.
        self.id = RequestId::at(now);
        self.created_ms = now;
        self.deadline_ms = now.saturating_add(deadline);
        self.due_ms = Some(now);
        self
    }

    /// The subject, as parsed when the request came or was read.
    pub fn subject(&self) -> Result<&Subject, SubjectError> {
        self.subject.parsed().map_err(Clone::clone)
    }

    /// For logs: the subject with JMBGs masked.
    pub fn subject_redacted(&self) -> String {
        self.subject()
            .map(|s| s.redacted())
            .unwrap_or_else(|_| "(invalid subject)".into())
    }
}

/// A request's subject as its record keeps it: parsed once, when the
/// request came (or when the record is read), and written as the list of
/// its fields by name (`[["ko","803472"],["sheet","1520"]]`), in the
/// order the API has always written them (jmbg, pib, mb, ko, sheet,
/// parcel).
///
/// A record whose fields do not make a subject (damaged, or from before a
/// rule) is still read, and written back as it was: refusing to read it
/// would hide the whole request from operators. Sending it fails with the
/// parse error, as it did when the subject was parsed at each attempt.
#[derive(Clone)]
pub struct SubjectRecord {
    fields: Vec<(String, String)>,
    parsed: Result<Subject, SubjectError>,
}

impl SubjectRecord {
    /// The field names in the order records write them.
    const ORDER: [&'static str; 6] = ["jmbg", "pib", "mb", "ko", "sheet", "parcel"];

    /// Parses the fields as a record or a client names them.
    pub fn from_fields(fields: Vec<(String, String)>) -> SubjectRecord {
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let parsed = Subject::from_parts(
            get("jmbg"),
            get("pib"),
            get("mb"),
            get("ko"),
            get("sheet"),
            get("parcel"),
        );
        SubjectRecord { fields, parsed }
    }

    pub fn parsed(&self) -> Result<&Subject, &SubjectError> {
        self.parsed.as_ref()
    }

    /// Its fields by name, as written.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }
}

impl From<Subject> for SubjectRecord {
    fn from(subject: Subject) -> SubjectRecord {
        let mut fields: Vec<(String, String)> = subject
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        fields.sort_by_key(|(k, _)| SubjectRecord::ORDER.iter().position(|o| o == k));
        SubjectRecord {
            fields,
            parsed: Ok(subject),
        }
    }
}

impl From<Vec<(String, String)>> for SubjectRecord {
    fn from(fields: Vec<(String, String)>) -> SubjectRecord {
        SubjectRecord::from_fields(fields)
    }
}

impl std::ops::Deref for SubjectRecord {
    type Target = [(String, String)];
    fn deref(&self) -> &[(String, String)] {
        &self.fields
    }
}

impl<'a> IntoIterator for &'a SubjectRecord {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.iter()
    }
}

/// Two subjects are the same when their fields are.
impl PartialEq for SubjectRecord {
    fn eq(&self, other: &SubjectRecord) -> bool {
        self.fields == other.fields
    }
}

impl Eq for SubjectRecord {}

/// As the list of fields prints, so that a record's `Debug` is as it was.
impl std::fmt::Debug for SubjectRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.fields, f)
    }
}

impl Serialize for SubjectRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fields.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SubjectRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<(String, String)>::deserialize(d).map(SubjectRecord::from_fields)
    }
}

/// One way for tests and benchmarks to make a record: sensible defaults
/// (a queued civil birth extract for one citizen, filed at 0 with a
/// 15-day deadline, due at once) and setters for what a test is about,
/// instead of the whole literal written again.
#[cfg(any(test, feature = "bench"))]
pub mod testing {
    use super::*;

    /// A queued record; see the module for its defaults.
    pub fn record() -> Builder {
        // Filed as the API files one, then moved to time 0.
        let r = RequestRecord::queued(
            "c",
            "1/2026".into(),
            "ZUP".into(),
            "o".into(),
            "p".into(),
            "civil.birth-extract".into(),
            "civil".into(),
            SubjectRecord::from_fields(vec![("jmbg".into(), "0512981717776".into())]),
            std::time::Duration::ZERO,
        );
        Builder(RequestRecord {
            created_ms: 0,
            deadline_ms: 15 * 86_400_000,
            due_ms: Some(0),
            ..r
        })
    }

    /// A record being made; [`Builder::build`] gives it.
    #[derive(Debug, Clone)]
    pub struct Builder(RequestRecord);

    impl Builder {
        /// Its id, taken as it is.
        pub fn id(mut self, id: &str) -> Builder {
            self.0.id = RequestId::named(id);
            self
        }

        pub fn client(mut self, client: &str) -> Builder {
            self.0.client = client.into();
            self
        }

        pub fn case(mut self, case: impl Into<CaseNumber>) -> Builder {
            self.0.case = case.into();
            self
        }

        /// The service asked and the registry that serves it.
        pub fn service(mut self, service: &str, registry: &str) -> Builder {
            self.0.service = service.into();
            self.0.registry = registry.into();
            self
        }

        /// The subject's fields by name (`jmbg`, `ko` and `sheet`, ...).
        pub fn subject(mut self, fields: &[(&str, &str)]) -> Builder {
            self.0.subject = SubjectRecord::from_fields(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            );
            self
        }

        /// The legal basis, the official and the purpose the case gives.
        pub fn legal(mut self, legal_basis: &str, official: &str, purpose: &str) -> Builder {
            self.0.legal_basis = legal_basis.into();
            self.0.official = official.into();
            self.0.purpose = purpose.into();
            self
        }

        /// Filed now by the system clock (its id of now too), due at once,
        /// with `deadline` to go: as [`RequestRecord::queued`] files one.
        pub fn now(mut self, deadline: std::time::Duration) -> Builder {
            let now = crate::time::now_ms();
            self.0.id = RequestId::at(now);
            self.0.created_ms = now;
            self.0.deadline_ms = crate::time::calendar::deadline_after(now, deadline);
            self.0.due_ms = Some(now);
            self
        }

        pub fn state(mut self, state: State) -> Builder {
            self.0.state = state;
            self
        }

        pub fn due(mut self, due_ms: Option<u64>) -> Builder {
            self.0.due_ms = due_ms;
            self
        }

        /// Filed at `created_ms`, to be done by `deadline_ms`.
        pub fn filed(mut self, created_ms: u64, deadline_ms: u64) -> Builder {
            self.0.created_ms = created_ms;
            self.0.deadline_ms = deadline_ms;
            self
        }

        pub fn build(self) -> RequestRecord {
            self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn states_and_outcomes_are_written_as_the_names_records_always_had() {
        let outcomes = [
            "document",
            "accepted",
            "ticket-lost",
            "permanent",
            "retryable",
            "security",
        ];
        for (k, old) in OutcomeKind::ALL.into_iter().zip(outcomes) {
            assert_eq!(json(&k), format!("\"{old}\""));
            assert_eq!(k.name(), old);
            assert_eq!(serde_json::from_str::<OutcomeKind>(&json(&old)).unwrap(), k);
        }
        for (s, old) in StampState::ALL
            .into_iter()
            .zip(["pending", "stamped", "failed"])
        {
            assert_eq!(json(&s), format!("\"{old}\""));
            assert_eq!(s.name(), old);
            assert_eq!(serde_json::from_str::<StampState>(&json(&old)).unwrap(), s);
        }
        for (s, old) in SignedDocState::ALL
            .into_iter()
            .zip(["pending", "kept", "failed"])
        {
            assert_eq!(json(&s), format!("\"{old}\""));
            assert_eq!(s.name(), old);
            assert_eq!(
                serde_json::from_str::<SignedDocState>(&json(&old)).unwrap(),
                s
            );
        }
        for (s, old) in SignerStatus::ALL
            .into_iter()
            .zip(["good", "unchecked", "revoked"])
        {
            assert_eq!(json(&s), format!("\"{old}\""));
            assert_eq!(s.name(), old);
            assert_eq!(
                serde_json::from_str::<SignerStatus>(&json(&old)).unwrap(),
                s
            );
        }
        for (m, old) in RevocationMethod::ALL.into_iter().zip(["ocsp", "crl"]) {
            assert_eq!(json(&m), format!("\"{old}\""));
            assert_eq!(m.name(), old);
            assert_eq!(
                serde_json::from_str::<RevocationMethod>(&json(&old)).unwrap(),
                m
            );
        }
        // A name no record ever had is refused, not taken for another.
        assert!(serde_json::from_str::<OutcomeKind>("\"ticket_lost\"").is_err());
        assert!(serde_json::from_str::<StampState>("\"Stamped\"").is_err());
    }

    /// Records as the stores kept them before their fields had types of
    /// their own: read and written again, byte for byte.
    const OLD: [&str; 3] = [
        r#"{"v":1,"id":"01JDQ8Z5X3T4V6W7Y8Z9A0B1C2","client":"pisarnica","case":"351-12/2026-IV","legal_basis":"ZUP čl. 103","official":"marija","purpose":"ex officio data for the case","service":"civil.birth-extract","registry":"civil","subject":[["jmbg","0512981717776"]],"state":"delivered","created_ms":1700000000000,"deadline_ms":1701296000000,"due_ms":null,"attempts":[{"at_ms":1700000001000,"duration_ms":40,"http_status":503,"outcome":"retryable","detail":"HTTP 503"},{"at_ms":1700000002000,"duration_ms":30,"http_status":200,"outcome":"accepted","detail":"accepted: ticket T-1, poll after 5 s"},{"at_ms":1700000003000,"duration_ms":20,"http_status":404,"outcome":"ticket-lost","detail":"ticket lost: unknown"},{"at_ms":1700000004000,"duration_ms":25,"http_status":200,"outcome":"document","detail":"document"}],"security_failures":0,"ticket":null,"document_id":"01JDQ8Z5X3T4V6W7Y8Z9A0B1C2","signer":"CN=civil","signer_sha256":"ab","signer_anchor_sha256":"cd","delivered_ms":1700000005000,"error":null,"at_risk":false,"delivery_failures":1,"revocation":{"status":"good","method":"ocsp","checked_ms":1700000004000,"this_update_ms":1700000000000,"next_update_ms":1700086400000,"crl_number":null,"crl_url":null,"ocsp_response":"MAA=","reason":null,"crl_sha256":null},"stamp":{"state":"stamped","tries":1,"next_ms":null,"token":"MAA=","time_ms":1700000006000,"tsa":"CN=tsa 01","serial":"01","reason":null}}"#,
        r#"{"v":1,"id":"01JDQ8Z5X3T4V6W7Y8Z9A0B1C3","client":"c","case":"1/2026","legal_basis":"ZUP","official":"o","purpose":"p","service":"cadastre.property-sheet","registry":"cadastre","subject":[["ko","803472"],["sheet","1520"]],"state":"dead","created_ms":5,"deadline_ms":10,"due_ms":null,"attempts":[{"at_ms":6,"duration_ms":1,"http_status":null,"outcome":"security","detail":"security failure: x","message_id":"0b9d7e52"},{"at_ms":7,"duration_ms":1,"http_status":400,"outcome":"permanent","detail":"permanent failure: y"}],"security_failures":1,"ticket":null,"document_id":null,"signer":null,"signer_sha256":null,"signer_anchor_sha256":null,"delivered_ms":null,"error":"permanent failure: y","at_risk":true,"delivery_failures":0,"revocation":{"status":"revoked","method":"crl","checked_ms":8,"this_update_ms":null,"next_update_ms":null,"crl_number":"7","crl_url":"http://crl","ocsp_response":null,"reason":"revoked","crl_sha256":"ef"},"stamp":{"state":"failed","tries":3,"next_ms":null,"token":null,"time_ms":null,"tsa":null,"serial":null,"reason":"given up"},"attachments":[{"document_id":"01JDQ8Z5X3T4V6W7Y8Z9A0B1C3.attachment-1","content_id":"a@b","content_type":"application/pdf","name":"x.pdf","size":3,"sha256":"00"}],"signed_document":{"state":"failed","message_id":"0b9d7e52","tries":3,"since_ms":6,"next_ms":null,"document_id":null,"sha256":null,"reason":"given up"},"charset":"windows-1250"}"#,
        r#"{"v":1,"id":"01JDQ8Z5X3T4V6W7Y8Z9A0B1C4","client":"c","case":"2/2026","legal_basis":"ZUP","official":"o","purpose":"p","service":"civil.birth-extract","registry":"civil","subject":[["jmbg","0512981717776"]],"state":"fetched","created_ms":5,"deadline_ms":10,"due_ms":9,"attempts":[],"security_failures":0,"ticket":null,"document_id":"01JDQ8Z5X3T4V6W7Y8Z9A0B1C4","signer":null,"signer_sha256":null,"signer_anchor_sha256":null,"delivered_ms":null,"error":null,"at_risk":false,"delivery_failures":0,"revocation":{"status":"unchecked","method":null,"checked_ms":8,"this_update_ms":null,"next_update_ms":null,"crl_number":null,"crl_url":null,"ocsp_response":null,"reason":"responder down","crl_sha256":null},"stamp":{"state":"pending","tries":0,"next_ms":9,"token":null,"time_ms":null,"tsa":null,"serial":null,"reason":null},"signed_document":{"state":"pending","message_id":"m","tries":0,"since_ms":6,"next_ms":7,"document_id":null,"sha256":null,"reason":null}}"#,
    ];

    #[test]
    fn an_old_record_reads_and_writes_back_byte_for_byte() {
        for old in OLD {
            let r: RequestRecord = serde_json::from_str(old).unwrap();
            assert_eq!(serde_json::to_string(&r).unwrap(), old);
        }
        let r: RequestRecord = serde_json::from_str(OLD[1]).unwrap();
        assert_eq!(r.case, "1/2026");
        assert_eq!(r.registry, "cadastre");
        assert_eq!(r.attempts[0].outcome, OutcomeKind::Security);
        let v = r.revocation.as_ref().unwrap();
        assert_eq!(
            (v.status, v.method),
            (SignerStatus::Revoked, Some(RevocationMethod::Crl))
        );
        assert_eq!(r.stamp.as_ref().unwrap().state, StampState::Failed);
        assert_eq!(
            r.signed_document.as_ref().unwrap().state,
            SignedDocState::Failed
        );
        let r: RequestRecord = serde_json::from_str(OLD[2]).unwrap();
        assert!(r.stamp_pending() && r.signed_document_pending());
        assert_eq!(r.evidence_due_ms(), Some(7));
    }

    #[test]
    fn a_subject_is_written_as_the_api_always_wrote_its_fields() {
        // As the API stored them: the fields given, in the order jmbg,
        // pib, mb, ko, sheet, parcel, each as the client wrote it.
        let cases: [&[(&str, &str)]; 7] = [
            &[("jmbg", "0512981717776")],
            &[("pib", "101134702")],
            &[("mb", "07004044")],
            &[("ko", "803472"), ("sheet", "1520")],
            &[("ko", "803472"), ("parcel", "1234/5")],
            &[("jmbg", "0512981717776"), ("ko", "803472")],
            &[("mb", "07004044"), ("ko", "803472")],
        ];
        for fields in cases {
            let get = |k: &str| fields.iter().find(|(f, _)| *f == k).map(|(_, v)| *v);
            let parsed = Subject::from_parts(
                get("jmbg"),
                get("pib"),
                get("mb"),
                get("ko"),
                get("sheet"),
                get("parcel"),
            )
            .unwrap();
            let old: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let kept = SubjectRecord::from(parsed.clone());
            assert_eq!(json(&kept), json(&old), "{}", parsed.kind());
            let read: SubjectRecord = serde_json::from_str(&json(&old)).unwrap();
            assert_eq!(read.parsed(), Ok(&parsed));
            assert_eq!(read, kept);
        }
    }

    #[test]
    fn a_subject_that_does_not_parse_is_read_and_written_back_as_it_was() {
        for old in [
            r#"[]"#,
            r#"[["jmbg","0512981717777"]]"#,
            r#"[["sheet","1"],["x","y"]]"#,
        ] {
            let read: SubjectRecord = serde_json::from_str(old).unwrap();
            assert_eq!(json(&read), old);
            assert!(read.parsed().is_err(), "{old}");
        }
        let mut r = testing::record().build();
        r.subject = serde_json::from_str(r#"[["jmbg","0512981717777"]]"#).unwrap();
        assert_eq!(
            r.subject().unwrap_err().to_string(),
            "jmbg: check digit should be 6, found 7"
        );
        assert_eq!(r.subject_redacted(), "(invalid subject)");
    }

    #[test]
    fn the_builder_makes_what_the_constructor_makes_where_tests_do_not_say() {
        let built = testing::record().build();
        let q = RequestRecord::queued(
            "c",
            "1/2026".into(),
            "ZUP".into(),
            "o".into(),
            "p".into(),
            "civil.birth-extract".into(),
            "civil".into(),
            vec![("jmbg".into(), "0512981717776".into())],
            std::time::Duration::from_secs(15 * 86_400),
        )
        .at(0);
        // The deadline is one the builder says (15 days of plain time from
        // 0); the constructor counts it by the ZUP calendar from the day it
        // was really filed on.
        assert_eq!(
            built,
            RequestRecord {
                id: built.id.clone(),
                deadline_ms: built.deadline_ms,
                ..q
            }
        );
    }
}
