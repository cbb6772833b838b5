//! A request's record: what is kept about it, its states, its attempts.
//! The stores keep records as JSON with a schema version `v`, so a later
//! version can migrate them on open; how a record changes is
//! [`super::apply`]'s.

use serde::{Deserialize, Serialize};

/// The current record schema version.
pub const RECORD_VERSION: u32 = 1;

/// Life-cycle states; the names are those of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    /// Leased to a dispatcher until `lease_until`.
    Sending,
    /// Accepted by the registry; poll the ticket when due.
    Awaiting,
    Retrying,
    /// The document is here; delivery into the case is pending.
    Fetched,
    Delivered,
    Dead,
    Cancelled,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Delivered | State::Dead | State::Cancelled)
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sending => "sending",
            State::Awaiting => "awaiting",
            State::Retrying => "retrying",
            State::Fetched => "fetched",
            State::Delivered => "delivered",
            State::Dead => "dead",
            State::Cancelled => "cancelled",
        }
    }

    /// Open and not yet fetched: the registry is still to answer. The
    /// oldest of these is the queue's age.
    pub const UNFETCHED: [State; 4] = [
        State::Queued,
        State::Sending,
        State::Awaiting,
        State::Retrying,
    ];

    pub const ALL: [State; 8] = [
        State::Queued,
        State::Sending,
        State::Awaiting,
        State::Retrying,
        State::Fetched,
        State::Delivered,
        State::Dead,
        State::Cancelled,
    ];
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub http_status: Option<u16>,
    /// document, accepted, ticket-lost, permanent, retryable, security.
    pub outcome: String,
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
    /// ULID.
    pub id: String,
    /// The back-office client that submitted it.
    pub client: String,
    pub case: String,
    pub legal_basis: String,
    pub official: String,
    pub purpose: String,
    pub service: String,
    pub registry: String,
    /// Subject fields by name (jmbg, pib, mb, ko, sheet, parcel).
    pub subject: Vec<(String, String)>,
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
    /// `pending` (to be asked for, at `next_ms`), `kept` or `failed`
    /// (given up: `reason` says why).
    pub state: String,
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
            state: "pending".into(),
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
        self.state == "pending"
    }
}

/// A document's timestamp: asked for by the evidence job after the
/// document came, kept when it checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StampRecord {
    /// `pending` (to be asked for, at `next_ms`), `stamped` or `failed`
    /// (given up: `reason` says why).
    pub state: String,
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
}

impl StampRecord {
    pub fn pending(now: u64) -> StampRecord {
        StampRecord {
            state: "pending".into(),
            tries: 0,
            next_ms: Some(now),
            token: None,
            time_ms: None,
            tsa: None,
            serial: None,
            reason: None,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.state == "pending"
    }
}

/// The evidence kept with a document that its signer's certificate was
/// not revoked when it came (or why that was not established).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// `good`: confirmed not revoked; `unchecked`: not established, and
    /// accepted by the registry's `prefer` policy, to be checked again;
    /// `revoked`: found so by that later check.
    pub status: String,
    /// `ocsp` or `crl`, for a confirmed status.
    #[serde(default)]
    pub method: Option<String>,
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

impl RequestRecord {
    /// A new request, queued and due now, with the deadline `deadline`
    /// from now.
    #[allow(clippy::too_many_arguments)]
    pub fn queued(
        client: &str,
        case: String,
        legal_basis: String,
        official: String,
        purpose: String,
        service: String,
        registry: String,
        subject: Vec<(String, String)>,
        deadline: std::time::Duration,
    ) -> RequestRecord {
        let now = crate::time::now_ms();
        RequestRecord {
            v: RECORD_VERSION,
            id: ulid::Ulid::new().to_string(),
            client: client.to_owned(),
            case,
            legal_basis,
            official,
            purpose,
            service,
            registry,
            subject,
            state: State::Queued,
            created_ms: now,
            deadline_ms: now + deadline.as_millis() as u64,
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

    /// The same request timed by another clock (the store's, where
    /// instances on several machines share it): created and due at `now`,
    /// its deadline as far from `now` as it was.
    pub fn at(mut self, now: u64) -> RequestRecord {
        let deadline = self.deadline_ms.saturating_sub(self.created_ms);
        // Ids sort in filing order, and the stores seek by filing time in
        // them: the id's time must be this clock's too.
        self.id = ulid::Ulid::from_parts(now, rand::random()).to_string();
        self.created_ms = now;
        self.deadline_ms = now.saturating_add(deadline);
        self.due_ms = Some(now);
        self
    }

    /// The subject rebuilt and checked again from its stored fields.
    pub fn subject(
        &self,
    ) -> Result<crate::protocol::Subject, crate::protocol::subject::SubjectError> {
        let get = |k: &str| {
            self.subject
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.as_str())
        };
        crate::protocol::Subject::from_parts(
            get("jmbg"),
            get("pib"),
            get("mb"),
            get("ko"),
            get("sheet"),
            get("parcel"),
        )
    }

    /// For logs: the subject with JMBGs masked.
    pub fn subject_redacted(&self) -> String {
        self.subject()
            .map(|s| s.redacted())
            .unwrap_or_else(|_| "(invalid subject)".into())
    }
}
