//! What a change of a request means besides the record itself: what the
//! audit trail must record, and what its back-office must be told. One
//! pure function of the record before and after, so the list of what is
//! recorded and told lives beside the transitions that cause it. The audit
//! trail turns [`Trace`]s into entries (with the subject's keyed hashes),
//! the webhook sender turns [`Tell`]s into events for the clients that take
//! them; the stores write both in the transaction of the change.

use super::{RequestRecord, State};

/// Something the audit trail records about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trace {
    /// Filed by a back-office.
    Accepted,
    /// Leased for an exchange: the subject's data is about to be asked for
    /// (recorded even if the answer never comes).
    Sent,
    /// An attempt came back, at `at_ms`, with this outcome.
    Answered { at_ms: u64, outcome: String },
}

/// Something the request's back-office is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tell {
    /// Flagged near its ZUP deadline while still open.
    AtRisk,
    /// The document reached the client.
    Delivered,
    /// Dead or cancelled.
    Failed,
}

/// What a change raises.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub trace: Vec<Trace>,
    pub tell: Vec<Tell>,
}

/// The effects of `old` becoming `new`; `old` is `None` for a request just
/// filed.
pub fn effects(old: Option<&RequestRecord>, new: &RequestRecord) -> Effects {
    let Some(old) = old else {
        return Effects {
            trace: vec![Trace::Accepted],
            tell: Vec::new(),
        };
    };
    let mut trace = Vec::new();
    // A lease for an exchange, also the lease again of one whose lease ran
    // out (its instance died mid-exchange): that is another exchange.
    if new.state == State::Sending && (old.state != State::Sending || new.due_ms != old.due_ms) {
        trace.push(Trace::Sent);
    }
    trace.extend(
        new.attempts
            .iter()
            .skip(old.attempts.len())
            .map(|a| Trace::Answered {
                at_ms: a.at_ms,
                outcome: match a.http_status {
                    Some(s) => format!("{} (HTTP {s})", a.outcome),
                    None => a.outcome.to_string(),
                },
            }),
    );
    let mut tell = Vec::new();
    if !old.at_risk && new.at_risk && !new.state.is_terminal() {
        tell.push(Tell::AtRisk);
    }
    if old.state != new.state {
        match new.state {
            State::Delivered => tell.push(Tell::Delivered),
            State::Dead | State::Cancelled => tell.push(Tell::Failed),
            _ => {}
        }
    }
    Effects { trace, tell }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::AttemptRecord;

    fn rec(state: State) -> RequestRecord {
        let mut r = crate::lifecycle::record::testing::record()
            .case("1")
            .legal("l", "o", "p")
            .subject(&[])
            .now(std::time::Duration::from_secs(60))
            .build();
        r.state = state;
        r
    }

    #[test]
    fn each_change_raises_what_it_means() {
        let queued = rec(State::Queued);
        assert_eq!(effects(None, &queued).trace, [Trace::Accepted]);
        let mut sending = rec(State::Sending);
        assert_eq!(effects(Some(&queued), &sending).trace, [Trace::Sent]);
        // A change of a request being sent that is no new lease is no send;
        // a lease again (the first ran out) is.
        assert!(effects(Some(&sending), &sending).trace.is_empty());
        let mut again = sending.clone();
        again.due_ms = sending.due_ms.map(|d| d + 30_000);
        assert_eq!(effects(Some(&sending), &again).trace, [Trace::Sent]);
        let before = sending.clone();
        sending.attempts.push(AttemptRecord {
            at_ms: 7,
            duration_ms: 1,
            http_status: Some(503),
            outcome: crate::lifecycle::OutcomeKind::Retryable,
            detail: String::new(),
            message_id: None,
        });
        sending.state = State::Retrying;
        assert_eq!(
            effects(Some(&before), &sending).trace,
            [Trace::Answered {
                at_ms: 7,
                outcome: "retryable (HTTP 503)".into()
            }]
        );
        let mut delivered = rec(State::Fetched);
        let fetched = delivered.clone();
        delivered.state = State::Delivered;
        assert_eq!(effects(Some(&fetched), &delivered).tell, [Tell::Delivered]);
        let mut dead = rec(State::Sending);
        let was = dead.clone();
        dead.state = State::Dead;
        assert_eq!(effects(Some(&was), &dead).tell, [Tell::Failed]);
        let mut flagged = rec(State::Queued);
        let unflagged = flagged.clone();
        flagged.at_risk = true;
        assert_eq!(effects(Some(&unflagged), &flagged).tell, [Tell::AtRisk]);
        // Flagged once: a later change of the flagged record tells nothing.
        assert!(effects(Some(&flagged), &flagged).tell.is_empty());
    }
}
