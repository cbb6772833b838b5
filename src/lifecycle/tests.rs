//! Every (state, event) pair, against the list of transitions in
//! ARCHITECTURE.md: what the document says is what [`apply`] does.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;

const NOW: u64 = 1_000_000;
const DUE: u64 = 999_000;

fn record(state: State, due: Option<u64>, worn: bool) -> RequestRecord {
    let retry = RetryConfig::default();
    let mut r = crate::lifecycle::record::testing::record()
        .now(Duration::from_secs(86_400))
        .build();
    r.state = state;
    r.due_ms = due;
    r.deadline_ms = NOW + 86_400_000;
    if worn {
        // one failure from the last attempt, one security failure from
        // the last, and the ZUP deadline a second away
        for _ in 1..retry.max_attempts {
            r.attempts.push(AttemptRecord {
                at_ms: 0,
                duration_ms: 1,
                http_status: Some(503),
                outcome: OutcomeKind::Retryable,
                detail: "x".into(),
                message_id: None,
            });
        }
        r.security_failures = MAX_SECURITY_FAILURES - 1;
        r.deadline_ms = NOW + 1_000;
        // its document fetched, and one failed delivery from giving up
        r.document_id = Some(r.id.to_string());
        r.delivery_failures = retry.delivery_attempts - 1;
    }
    r
}

fn outcomes() -> Vec<Outcome> {
    vec![
        Outcome::Document,
        Outcome::Accepted {
            ticket: "T-1".into(),
            retry_after: Duration::from_secs(60),
        },
        Outcome::TicketLost {
            reason: "gone".into(),
        },
        Outcome::Permanent {
            reason: "no".into(),
        },
        Outcome::Retryable {
            reason: "503".into(),
            retry_after: None,
        },
        Outcome::Security {
            reason: "bad".into(),
        },
    ]
}

/// Every transition `apply` makes: (from, event, to), over records in
/// every state, due or not, fresh or with their attempts nearly spent.
fn transitions() -> BTreeSet<(String, &'static str, String)> {
    let retry = RetryConfig::default();
    let outcomes = outcomes();
    let facts: Vec<AttemptFacts<'_>> = outcomes
        .iter()
        .map(|o| AttemptFacts {
            outcome: o,
            at_ms: NOW,
            duration_ms: 5,
            http_status: Some(200),
            signer: Some("CN=registry"),
            signer_sha256: None,
            signer_anchor_sha256: None,
            revocation: None,
            stamp: false,
            stamp_imprint: None,
            message_id: None,
            attachments: &[],
            charset: None,
        })
        .collect();
    let rechecked = good_revocation();
    let mut events = vec![
        Event::Lease {
            due: DUE,
            until: NOW + 30_000,
        },
        Event::LeaseDelivery {
            due: DUE,
            until: NOW + 30_000,
        },
        Event::Delivered,
        Event::DeliveryFailed {
            error: "No space left on device",
            retry: &retry,
            jitter: 0.5,
        },
        Event::Retry,
        Event::Cancel { by: "admin" },
        Event::Unroutable,
        Event::Unindex,
        Event::AtRisk,
        Event::Rechecked {
            revocation: &rechecked,
        },
    ];
    for f in &facts {
        events.push(Event::Answered {
            facts: f,
            retry: &retry,
            jitter: 0.5,
            deliver_by: NOW + 30_000,
        });
    }
    let mut out = BTreeSet::new();
    for state in State::ALL {
        for due in [Some(DUE), None] {
            for worn in [false, true] {
                for e in &events {
                    let before = record(state, due, worn);
                    let mut r = before.clone();
                    let changed = apply(&mut r, e, NOW);
                    if changed {
                        assert!(
                            !r.state.is_terminal() || r.due_ms.is_none(),
                            "{state:?} --{}--> {:?} left it due",
                            e.name(),
                            r.state
                        );
                        out.insert((state.name().to_owned(), e.name(), r.state.name().to_owned()));
                    } else {
                        assert_eq!(
                            r,
                            before,
                            "{state:?} --{}--> changed nothing, yet moved",
                            e.name()
                        );
                    }
                }
            }
        }
    }
    out
}

/// The transitions ARCHITECTURE.md lists between its lifecycle markers.
fn documented() -> BTreeSet<(String, &'static str, String)> {
    let doc = include_str!("../../ARCHITECTURE.md");
    let start = doc
        .find("<!-- lifecycle:begin -->")
        .expect("no lifecycle:begin marker");
    let end = doc
        .find("<!-- lifecycle:end -->")
        .expect("no lifecycle:end marker");
    let mut out = BTreeSet::new();
    for line in doc[start..end].lines() {
        // `from --event--> to`, several events as `--a, b-->`
        if !line.starts_with(|c: char| c.is_ascii_lowercase()) {
            continue;
        }
        let Some((from, rest)) = line.split_once(" --") else {
            continue;
        };
        let (events, to) = rest.split_once("--> ").expect(line);
        for e in events.split(", ") {
            let e: &'static str = Box::leak(e.trim().to_owned().into_boxed_str());
            out.insert((from.trim().to_owned(), e, to.trim().to_owned()));
        }
    }
    out
}

#[test]
fn the_documented_life_cycle_is_what_apply_does() {
    let done = transitions();
    let said = documented();
    let missing: Vec<_> = done.difference(&said).collect();
    let wrong: Vec<_> = said.difference(&done).collect();
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "ARCHITECTURE.md does not list {missing:?}\nand lists what apply never does: {wrong:?}"
    );
}

#[test]
fn stale_events_change_nothing() {
    // a lease read from an index entry that has moved on
    let mut r = record(State::Queued, Some(DUE + 1), false);
    assert!(!apply(
        &mut r,
        &Event::Lease {
            due: DUE,
            until: NOW
        },
        NOW
    ));
    // an answer for a request cancelled meanwhile
    let mut r = record(State::Cancelled, None, false);
    let f = AttemptFacts {
        outcome: &Outcome::Document,
        at_ms: NOW,
        duration_ms: 1,
        http_status: Some(200),
        signer: None,
        signer_sha256: None,
        signer_anchor_sha256: None,
        revocation: None,
        stamp: false,
        stamp_imprint: None,
        message_id: None,
        attachments: &[],
        charset: None,
    };
    let retry = RetryConfig::default();
    let answered = Event::Answered {
        facts: &f,
        retry: &retry,
        jitter: 0.0,
        deliver_by: NOW,
    };
    assert!(!apply(&mut r, &answered, NOW));
    assert_eq!(r.document_id, None);
}

#[test]
fn work_is_kept_as_a_code_and_read_back() {
    for w in [
        Work::Deliver,
        Work::Exchange("cadastre".into()),
        Work::Unknown,
    ] {
        assert_eq!(Work::from_code(w.code()), w);
    }
    let mut r = record(State::Fetched, Some(DUE), false);
    assert_eq!(Work::of(&r), Some(Work::Deliver));
    r.state = State::Retrying;
    assert_eq!(Work::of(&r), Some(Work::Exchange("civil".into())));
    r.due_ms = None;
    assert_eq!(Work::of(&r), None);
}

fn good_revocation() -> RevocationRecord {
    RevocationRecord {
        status: SignerStatus::Good,
        method: Some(RevocationMethod::Ocsp),
        checked_ms: NOW,
        this_update_ms: Some(NOW),
        next_update_ms: None,
        crl_number: None,
        crl_url: None,
        ocsp_response: Some("MAo=".into()),
        reason: None,
        crl_sha256: None,
    }
}

/// A document taken with its signer's status unchecked gets the status
/// once it is established, once; any other record is left alone.
#[test]
fn a_later_revocation_answer_fills_in_an_unchecked_document() {
    let good = good_revocation();
    let e = Event::Rechecked { revocation: &good };
    for state in [State::Fetched, State::Delivered] {
        let mut r = record(state, None, false);
        r.document_id = Some(r.id.to_string());
        assert!(!apply(&mut r, &e, NOW), "{state:?} without evidence");
        r.revocation = Some(RevocationRecord {
            status: SignerStatus::Unchecked,
            reason: Some("responder down".into()),
            ..good.clone()
        });
        assert!(apply(&mut r, &e, NOW));
        assert_eq!(r.revocation.as_ref(), Some(&good));
        assert_eq!(r.state, state);
        assert!(!apply(&mut r, &e, NOW), "{state:?} twice");
    }
}

/// A document that came by X-Road waits for its security server's signed
/// document and is not marked for a TSA stamp (it has no signature value
/// of its own); one that came directly is stamped as before.
#[test]
fn an_x_road_document_waits_for_its_signed_document_not_a_stamp() {
    let retry = RetryConfig::default();
    for (message_id, stamped, signed) in [(Some("m-1"), false, true), (None, true, false)] {
        let mut r = record(State::Sending, Some(DUE), false);
        let facts = AttemptFacts {
            outcome: &Outcome::Document,
            at_ms: NOW,
            duration_ms: 5,
            http_status: Some(200),
            signer: None,
            signer_sha256: None,
            signer_anchor_sha256: None,
            revocation: None,
            stamp: true,
            stamp_imprint: None,
            message_id,
            attachments: &[],
            charset: None,
        };
        let e = Event::Answered {
            facts: &facts,
            retry: &retry,
            jitter: 0.5,
            deliver_by: NOW + 30_000,
        };
        assert!(apply(&mut r, &e, NOW));
        assert_eq!(r.stamp.is_some(), stamped, "{message_id:?}");
        assert_eq!(r.signed_document.is_some(), signed, "{message_id:?}");
        assert_eq!(r.evidence_due_ms(), Some(NOW), "due for its evidence now");
    }
}

/// The job's try changes only the pending signed document of the same
/// message: not one kept or given up meanwhile, not another message's.
#[test]
fn a_signed_document_try_applies_to_its_pending_message_only() {
    let mut r = record(State::Fetched, None, false);
    let mut kept = SignedDocRecord::pending("m-1", NOW);
    kept.state = SignedDocState::Kept;
    kept.next_ms = None;
    kept.document_id = Some(format!("{}.asice", r.id));
    let e = Event::SignedDocument { signed: &kept };
    assert!(!apply(&mut r, &e, NOW), "no signed document waited");
    r.signed_document = Some(SignedDocRecord::pending("m-2", NOW));
    assert!(!apply(&mut r, &e, NOW), "another message's");
    r.signed_document = Some(SignedDocRecord::pending("m-1", NOW));
    assert_eq!(r.evidence_due_ms(), Some(NOW));
    assert!(apply(&mut r, &e, NOW));
    assert_eq!(r.signed_document.as_ref(), Some(&kept));
    assert_eq!(r.evidence_due_ms(), None, "nothing more to try");
    assert!(!apply(&mut r, &e, NOW), "twice");
}
