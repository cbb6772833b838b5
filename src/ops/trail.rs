//! The audit trail's answers: its chain verified against the checkpoints,
//! and "who used my data" for one person. Both are themselves audited.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Ops, OpsError};
use crate::audit::{Draft, Verification};
use crate::time::now_ms;

/// "Who used my data": the person, and the period.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"jmbg": "0512981717776", "from": "2026-01-01T00:00:00Z"}))]
pub struct WhoIn {
    pub jmbg: String,
    /// RFC 3339; default: the beginning.
    pub from: Option<String>,
    /// RFC 3339; default: now.
    pub to: Option<String>,
}

/// One access to data about the person.
#[derive(Debug, Serialize, ToSchema)]
pub struct Access {
    pub seq: u64,
    pub at_ms: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub actor: String,
    pub official: String,
    pub action: String,
    pub case: String,
    pub service: String,
    pub legal_basis: String,
    pub purpose: String,
    pub outcome: String,
    pub request_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"subject": "0512******776", "accesses": [{"seq": 12, "at_ms": 1795643792420u64, "at": "2026-11-25T21:56:32Z", "actor": "pisarnica", "official": "marija.kovac", "action": "request.accepted", "case": "351-12/2026-IV", "service": "civil.citizenship-certificate", "legal_basis": "ZUP čl. 103", "purpose": "building permit", "outcome": "accepted", "request_id": "01KAW3Q3ZJ0N5W9K5T1X0Y8B2C"}]}))]
pub struct WhoOut {
    /// The JMBG, masked.
    pub subject: String,
    pub accesses: Vec<Access>,
}

fn time_arg(pointer: &str, v: Option<&str>, default: u64) -> Result<u64, OpsError> {
    match v {
        None => Ok(default),
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| d.timestamp_millis().max(0) as u64)
            .map_err(|e| OpsError::invalid(pointer, format!("not an RFC 3339 time: {e}"))),
    }
}

impl Ops {
    /// `who` walks the trail's chain and checks it against the
    /// checkpoints (audited, with what it found).
    pub async fn verify(&self, who: &str) -> Result<Verification, OpsError> {
        let checkpoints = match &self.checkpoints {
            Some(c) => c.read().map_err(OpsError::Checkpoints)?,
            None => Vec::new(),
        };
        let report = crate::audit::verify(&*self.store, &checkpoints)
            .await
            .map_err(OpsError::Verify)?;
        let found = if report.broken.is_some() {
            "broken"
        } else {
            "intact"
        };
        self.audit(who, "audit.verify", None, found).await?;
        Ok(report)
    }

    /// Every access to data about one person in the period (not
    /// audited: [`Ops::who`] is the audited question).
    pub async fn who_report(&self, b: &WhoIn) -> Result<WhoOut, OpsError> {
        let jmbg = crate::ids::Jmbg::parse(&b.jmbg)
            .map_err(|e| OpsError::invalid("/jmbg", e.to_string()))?;
        let from = time_arg("/from", b.from.as_deref(), 0)?;
        let to = time_arg("/to", b.to.as_deref(), u64::MAX)?;
        let hash = self.audit_key.hash("jmbg", &b.jmbg);
        let accesses = self
            .store
            .audit_by_subject(&hash)
            .await?
            .into_iter()
            .filter(|e| (from..=to).contains(&e.draft.at_ms))
            .map(|e| Access {
                seq: e.seq,
                at_ms: e.draft.at_ms,
                at: chrono::DateTime::<chrono::Utc>::from_timestamp_millis(e.draft.at_ms as i64)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                actor: e.draft.actor,
                official: e.draft.official,
                action: e.draft.action,
                case: e.draft.case,
                service: e.draft.service,
                legal_basis: e.draft.legal_basis,
                purpose: e.draft.purpose,
                outcome: e.draft.outcome,
                request_id: e.draft.request_id,
            })
            .collect();
        Ok(WhoOut {
            subject: jmbg.redacted(),
            accesses,
        })
    }

    /// "Who used my data", asked by `who`: itself an access to the
    /// person's data, so on the trail under the person's key.
    pub async fn who(&self, who: &str, b: &WhoIn) -> Result<WhoOut, OpsError> {
        let report = self.who_report(b).await?;
        let mut d = Draft {
            at_ms: now_ms(),
            actor: who.to_owned(),
            action: "audit.who".into(),
            outcome: format!("{} entries", report.accesses.len()),
            ..Draft::default()
        };
        d.subject = vec![self.audit_key.hash("jmbg", &b.jmbg)];
        self.store.audit_append(vec![d]).await?;
        Ok(report)
    }
}
