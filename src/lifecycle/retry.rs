//! When to try again (backoff with full jitter, the attempts and the ZUP
//! deadline as limits), and what an attempt's outcome does to a request
//! that was being sent. No clocks or randomness inside: callers pass `now`
//! and the jitter.

use std::time::Duration;

use super::{AttemptRecord, Outcome, OutcomeKind, RequestRecord, State};
use crate::config::RetryConfig;
use crate::time::{Backoff, Jitter};

/// Security failures are retried at most this often, then the request dies.
pub const MAX_SECURITY_FAILURES: u32 = 3;

/// Delay before retry number `failures` (1 = after the first failure):
/// full jitter over `min(cap, base × factor^(failures-1))`, never shorter
/// than the registry's `Retry-After`. `jitter` is uniform in [0, 1).
pub fn backoff(
    p: &RetryConfig,
    failures: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    Backoff {
        base: p.base,
        factor: p.factor,
        max_steps: 64,
        cap: p.cap,
        jitter: Jitter::Full,
        floor: retry_after.unwrap_or_default(),
    }
    .delay(failures, jitter)
}

/// The due time of the next retry, or `None` when attempts or the
/// deadline are exhausted.
pub fn next_retry(
    p: &RetryConfig,
    failures: u32,
    now_ms: u64,
    retry_after: Option<Duration>,
    deadline_ms: u64,
    jitter: f64,
) -> Option<u64> {
    if failures >= p.max_attempts {
        return None;
    }
    let due = now_ms.saturating_add(backoff(p, failures, retry_after, jitter).as_millis() as u64);
    (due <= deadline_ms).then_some(due)
}

/// What an attempt did, for the record.
pub struct AttemptFacts<'a> {
    pub outcome: &'a Outcome,
    pub at_ms: u64,
    pub duration_ms: u64,
    pub http_status: Option<u16>,
    pub signer: Option<&'a str>,
    /// SHA-256 (hex) of the signer's certificate and of the anchor its
    /// chain ended at (documents only).
    pub signer_sha256: Option<&'a str>,
    pub signer_anchor_sha256: Option<&'a str>,
    /// How the signer's certificate stood (documents only).
    pub revocation: Option<&'a super::RevocationRecord>,
    /// A document is to be timestamped (a TSA is configured). Not one
    /// that came by X-Road (`message_id`): it waits for its signed
    /// document instead.
    pub stamp: bool,
    /// What the timestamp is to be on (SHA-256 hex of the document's
    /// decoded `ds:SignatureValue`), when the answer's verification found it.
    pub stamp_imprint: Option<&'a str>,
    /// X-Road: this attempt's message id. A document that came by X-Road
    /// waits for its security server's signed document of this message.
    pub message_id: Option<&'a str>,
    /// What came with the document, stored beside it.
    pub attachments: &'a [super::AttachmentRecord],
    /// X-Road: the charset the document's `Content-Type` named.
    pub charset: Option<&'a str>,
}

/// Applies an attempt's outcome to a request that was `sending`. Returns
/// false (no change) if the request is no longer ours to change: an
/// administrator cancelled it meanwhile, or another lease took over.
pub(super) fn apply(
    r: &mut RequestRecord,
    f: &AttemptFacts<'_>,
    p: &RetryConfig,
    jitter: f64,
) -> bool {
    if r.state != State::Sending {
        return false;
    }
    let now = f.at_ms;
    r.attempts.push(AttemptRecord {
        at_ms: f.at_ms,
        duration_ms: f.duration_ms,
        http_status: f.http_status,
        outcome: f.outcome.kind(),
        detail: f.outcome.to_string(),
        message_id: f.message_id.map(str::to_owned),
    });
    let failures = r
        .attempts
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                OutcomeKind::Retryable | OutcomeKind::Security | OutcomeKind::TicketLost
            )
        })
        .count() as u32;
    let retry_or_die =
        |r: &mut RequestRecord, retry_after: Option<Duration>, why: String| match next_retry(
            p,
            failures,
            now,
            retry_after,
            r.deadline_ms,
            jitter,
        ) {
            Some(due) => {
                r.state = State::Retrying;
                r.due_ms = Some(due);
                r.error = Some(why);
            }
            None => {
                r.state = State::Dead;
                r.due_ms = None;
                r.error = Some(format!("{why} (attempts or ZUP deadline exhausted)"));
            }
        };
    match f.outcome {
        Outcome::Document => {
            r.state = State::Fetched;
            r.document_id = Some(r.id.to_string());
            r.signer = f.signer.map(str::to_owned);
            r.signer_sha256 = f.signer_sha256.map(str::to_owned);
            r.signer_anchor_sha256 = f.signer_anchor_sha256.map(str::to_owned);
            r.revocation = f.revocation.cloned();
            // A document that came by X-Road has no signature of its own to
            // stamp (no ds:SignatureValue): its timestamp is the security
            // server's, in its signed document.
            r.stamp = (f.stamp && f.message_id.is_none()).then(|| super::StampRecord {
                imprint: f.stamp_imprint.map(str::to_owned),
                ..super::StampRecord::pending(now)
            });
            r.attachments = f.attachments.to_vec();
            r.charset = f.charset.map(str::to_owned);
            r.signed_document = f
                .message_id
                .map(|m| super::SignedDocRecord::pending(m, now));
            r.security_failures = 0;
            r.ticket = None;
            r.error = None;
            r.due_ms = Some(now);
        }
        Outcome::Accepted {
            ticket,
            retry_after,
        } => {
            r.state = State::Awaiting;
            r.ticket = Some(ticket.clone());
            let due = now.saturating_add(retry_after.as_millis() as u64);
            if due > r.deadline_ms {
                r.state = State::Dead;
                r.due_ms = None;
                r.error = Some("the registry would answer after the ZUP deadline".into());
            } else {
                r.due_ms = Some(due);
            }
        }
        Outcome::TicketLost { reason } => {
            // Ask again from scratch.
            r.ticket = None;
            retry_or_die(r, None, format!("ticket lost: {reason}"));
        }
        Outcome::Permanent { reason } => {
            r.state = State::Dead;
            r.due_ms = None;
            r.error = Some(reason.clone());
        }
        Outcome::Retryable {
            reason,
            retry_after,
        } => retry_or_die(r, *retry_after, reason.clone()),
        Outcome::Security { reason } => {
            r.security_failures += 1;
            if r.security_failures >= MAX_SECURITY_FAILURES {
                r.state = State::Dead;
                r.due_ms = None;
                r.error = Some(format!(
                    "security failure, {} times: {reason}",
                    r.security_failures
                ));
            } else {
                retry_or_die(r, None, format!("security failure: {reason}"));
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig::default()
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = policy();
        assert_eq!(backoff(&p, 1, None, 0.999_999).as_secs(), 9);
        assert_eq!(backoff(&p, 3, None, 0.999_999).as_secs(), 39);
        assert_eq!(backoff(&p, 30, None, 0.999_999).as_secs(), 3599);
        assert_eq!(backoff(&p, 3, None, 0.0), Duration::ZERO);
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(120)), 0.1),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn retries_stop_at_max_attempts_and_the_deadline() {
        let p = policy();
        assert!(next_retry(&p, 11, 0, None, u64::MAX, 0.5).is_some());
        assert!(next_retry(&p, 12, 0, None, u64::MAX, 0.5).is_none());
        assert!(next_retry(&p, 1, 1000, Some(Duration::from_secs(60)), 30_000, 0.5).is_none());
    }

    fn sending() -> RequestRecord {
        crate::lifecycle::record::testing::record()
            .id("01X")
            .case("1")
            .subject(&[])
            .state(State::Sending)
            .filed(0, 15 * 86_400_000)
            .due(Some(60_000))
            .build()
    }

    fn facts(o: &Outcome) -> AttemptFacts<'_> {
        AttemptFacts {
            outcome: o,
            at_ms: 1000,
            duration_ms: 5,
            http_status: Some(200),
            signer: Some("CN=x"),
            signer_sha256: None,
            signer_anchor_sha256: None,
            revocation: None,
            stamp: false,
            stamp_imprint: None,
            message_id: None,
            attachments: &[],
            charset: None,
        }
    }

    #[test]
    fn outcomes_move_the_record() {
        let p = policy();
        let mut r = sending();
        assert!(apply(&mut r, &facts(&Outcome::Document), &p, 0.5));
        assert_eq!(
            (r.state, r.due_ms, r.signer.as_deref()),
            (State::Fetched, Some(1000), Some("CN=x"))
        );

        let mut r = sending();
        apply(
            &mut r,
            &facts(&Outcome::Accepted {
                ticket: "T".into(),
                retry_after: Duration::from_secs(2),
            }),
            &p,
            0.5,
        );
        assert_eq!(
            (r.state, r.due_ms, r.ticket.as_deref()),
            (State::Awaiting, Some(3000), Some("T"))
        );

        let mut r = sending();
        apply(
            &mut r,
            &facts(&Outcome::Permanent {
                reason: "no".into(),
            }),
            &p,
            0.5,
        );
        assert_eq!((r.state, r.due_ms), (State::Dead, None));

        let mut r = sending();
        apply(
            &mut r,
            &facts(&Outcome::Retryable {
                reason: "503".into(),
                retry_after: Some(Duration::from_secs(30)),
            }),
            &p,
            0.0,
        );
        assert_eq!((r.state, r.due_ms), (State::Retrying, Some(31_000)));

        let mut r = sending();
        for i in 0..3 {
            r.state = State::Sending;
            apply(
                &mut r,
                &facts(&Outcome::Security {
                    reason: "bad".into(),
                }),
                &p,
                0.0,
            );
            assert_eq!(r.state, if i < 2 { State::Retrying } else { State::Dead });
        }

        let mut r = sending();
        r.state = State::Cancelled;
        assert!(
            !apply(&mut r, &facts(&Outcome::Document), &p, 0.5),
            "a cancelled request is not moved"
        );
    }

    proptest! {
        #[test]
        /// Full jitter between nothing and the exponential ceiling (capped),
        /// never earlier than the registry's Retry-After: bounded on both
        /// sides, and exactly the jittered ceiling when no Retry-After says
        /// otherwise.
        fn backoff_is_bounded_on_both_sides(failures in 0u32..100, jitter in 0.0f64..=1.0, ra in proptest::option::of(0u64..10_000)) {
            let p = policy();
            let d = backoff(&p, failures, ra.map(Duration::from_secs), jitter);
            let retry_after = Duration::from_secs(ra.unwrap_or(0));
            let ceiling = (p.base.as_secs_f64() * p.factor.powi(failures.saturating_sub(1).min(64) as i32))
                .min(p.cap.as_secs_f64());
            let jittered = Duration::from_secs_f64(ceiling * jitter);
            prop_assert!(d <= p.cap.max(retry_after), "{d:?} above the cap");
            prop_assert!(d >= retry_after, "{d:?} before Retry-After {retry_after:?}");
            prop_assert!(d >= jittered.saturating_sub(Duration::from_micros(1)), "{d:?} below the jittered ceiling {jittered:?}");
            prop_assert_eq!(d, jittered.max(retry_after));
            // the ceiling grows with failures until the cap
            let next = backoff(&p, failures + 1, None, 1.0);
            prop_assert!(next >= backoff(&p, failures, None, 1.0));
            if failures >= 1 {
                prop_assert!(backoff(&p, failures, None, 1.0) >= p.base.min(p.cap));
            }
        }
    }
}
