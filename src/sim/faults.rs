//! Fault injection: which misbehaviour the simulator shows, for which
//! registry or service, how often.
//!
//! A specification is a comma-separated list of `SCOPE:FAULT[=WHEN]`:
//! - `SCOPE` is `*`, a registry (`cadastre`) or a service (`tax.clearance-certificate`);
//! - `WHEN` is a rate from 0 to 1 (`0.1`), or `next:N` for the next N
//!   matching requests; absent means always;
//! - `latency` takes a duration or a range instead: `latency=50ms`,
//!   `latency=20ms..200ms` (uniform); `hold` keeps each request it scopes
//!   until `POST /held/release` on the control endpoint.
//!
//! Faults: `500`, `503`, `429` (with `Retry-After: 2`), `reset` (the
//! connection drops before an answer), `drip` (the answer trickles slower
//! than any timeout), `truncate` (the body stops half-way), `oversize` (a
//! body over 10 MiB), `malformed` (not XML), `invalid` (signed, but
//! schema-invalid), `badsig` (the signature does not verify), `untrusted`
//! (signed by a certificate from another CA), `badhash` (wrong
//! `requestHash`), `unavailable` and `maintenance` (signed SOAP faults),
//! `async` (answered later: `jum:Accepted`, ready after `async-delay`,
//! default 1 s), `lost` (a polled ticket is unknown), `notfound`.
//! Two faults are states of the development CA rather than of answers:
//! `revoked` (the scope registry's signing certificate is revoked, in OCSP
//! and the CRL, from when the rule is set) and `ocsp-down` (the OCSP
//! responder and the CRL answer 503).
//!
//! Faults of the X-Road front (`[x_road]`, see `sim::xroad`), on its
//! answers: `xr-header-dropped`, `xr-header-changed` (`xrd:id` altered),
//! `xr-headers-reordered` (the request's headers not copied back as sent),
//! `badhash` (a `requestHash` over other bytes), `xr-wrapper` (the body's
//! wrapper not named `{serviceCode}Response`), X-Road technical faults
//! instead of the registry's answer: `xr-network`
//! (`Server.ServerProxy.ServiceFailed.NetworkError`, transient),
//! `xr-network-snake` (`server.serverproxy.service_failed.network_error`),
//! `xr-denied` (`Server.ServerProxy.AccessDenied`, permanent),
//! `xr-denied-snake` (`server.serverproxy.access_denied`); and forms a real
//! security server sends: `swa` (SOAP with attachments: the document and a
//! PDF attachment), `mtom` (MTOM: an `xop:Include` beside the document),
//! `latin1` (ISO-8859-1 in `Content-Type` and the XML declaration),
//! `bom` (a UTF-8 byte order mark), `cdata` (comments and a CDATA section
//! in the document). Two are states of the front: `unlisted` (the scope's
//! services are missing from `allowedMethods`) and `snake` (the front's
//! own refusals in the snake_case form of recent X-Road versions).
//!
//! Example: `cadastre:503=0.1, tax.clearance-certificate:async=next:2, *:latency=5ms..20ms`.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    Http500,
    Http503,
    Http429,
    Reset,
    Drip,
    Truncate,
    Oversize,
    Malformed,
    Invalid,
    BadSig,
    Untrusted,
    BadHash,
    Unavailable,
    Maintenance,
    Async,
    Lost,
    NotFound,
    Revoked,
    OcspDown,
    /// The TSA answers 503.
    TsaDown,
    XrHeaderDropped,
    XrHeaderChanged,
    XrHeadersReordered,
    XrWrapper,
    XrNetwork,
    XrNetworkSnake,
    XrDenied,
    XrDeniedSnake,
    Swa,
    Mtom,
    Latin1,
    Bom,
    Cdata,
    /// The scope's services are missing from the front's `allowedMethods`.
    Unlisted,
    /// The front's own refusals in the snake_case form.
    Snake,
}

impl Fault {
    pub const ALL: [(&'static str, Fault); 35] = [
        ("500", Fault::Http500),
        ("503", Fault::Http503),
        ("429", Fault::Http429),
        ("reset", Fault::Reset),
        ("drip", Fault::Drip),
        ("truncate", Fault::Truncate),
        ("oversize", Fault::Oversize),
        ("malformed", Fault::Malformed),
        ("invalid", Fault::Invalid),
        ("badsig", Fault::BadSig),
        ("untrusted", Fault::Untrusted),
        ("badhash", Fault::BadHash),
        ("unavailable", Fault::Unavailable),
        ("maintenance", Fault::Maintenance),
        ("async", Fault::Async),
        ("lost", Fault::Lost),
        ("notfound", Fault::NotFound),
        ("revoked", Fault::Revoked),
        ("ocsp-down", Fault::OcspDown),
        ("tsa-down", Fault::TsaDown),
        ("xr-header-dropped", Fault::XrHeaderDropped),
        ("xr-header-changed", Fault::XrHeaderChanged),
        ("xr-headers-reordered", Fault::XrHeadersReordered),
        ("xr-wrapper", Fault::XrWrapper),
        ("xr-network", Fault::XrNetwork),
        ("xr-network-snake", Fault::XrNetworkSnake),
        ("xr-denied", Fault::XrDenied),
        ("xr-denied-snake", Fault::XrDeniedSnake),
        ("swa", Fault::Swa),
        ("mtom", Fault::Mtom),
        ("latin1", Fault::Latin1),
        ("bom", Fault::Bom),
        ("cdata", Fault::Cdata),
        ("unlisted", Fault::Unlisted),
        ("snake", Fault::Snake),
    ];

    /// A state of the CA or of the X-Road front, not a misbehaviour of
    /// one answer.
    pub fn is_state(self) -> bool {
        matches!(
            self,
            Fault::Revoked | Fault::OcspDown | Fault::TsaDown | Fault::Unlisted | Fault::Snake
        )
    }

    pub fn name(self) -> &'static str {
        Fault::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    Rate(f64),
    Next(u32),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    Fault { fault: Fault },
    Latency { min_ms: u64, max_ms: u64 },
    AsyncDelay { ms: u64 },
    Hold,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rule {
    pub scope: String,
    pub action: Action,
    pub when: When,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault spec {item:?}: {reason}")]
pub struct SpecError {
    pub item: String,
    pub reason: String,
}

fn duration_ms(s: &str) -> Result<u64, String> {
    crate::config::parse_duration(s).map(|d| d.as_millis() as u64)
}

/// Parses a specification (see the module doc).
pub fn parse_spec(spec: &str) -> Result<Vec<Rule>, SpecError> {
    let mut rules = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let err = |reason: String| SpecError {
            item: item.to_owned(),
            reason,
        };
        let (scope, rest) = item
            .split_once(':')
            .ok_or_else(|| err("expected SCOPE:FAULT[=WHEN], e.g. cadastre:503=0.1".into()))?;
        if scope.is_empty() {
            return Err(err("empty scope; use * for every registry".into()));
        }
        let (name, value) = match rest.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (rest.trim(), None),
        };
        let (action, when) = match name {
            "latency" => {
                let v = value.ok_or_else(|| {
                    err("latency needs a duration, e.g. latency=50ms or latency=20ms..200ms".into())
                })?;
                let (a, b) = match v.split_once("..") {
                    Some((a, b)) => (duration_ms(a).map_err(&err)?, duration_ms(b).map_err(&err)?),
                    None => {
                        let d = duration_ms(v).map_err(&err)?;
                        (d, d)
                    }
                };
                if b < a {
                    return Err(err("the range must go from low to high".into()));
                }
                (
                    Action::Latency {
                        min_ms: a,
                        max_ms: b,
                    },
                    When::Rate(1.0),
                )
            }
            "hold" => {
                if value.is_some() {
                    return Err(err(
                        "hold takes no value: it holds every request in scope".into()
                    ));
                }
                (Action::Hold, When::Rate(1.0))
            }
            "async-delay" => {
                let v = value.ok_or_else(|| err("async-delay needs a duration".into()))?;
                (
                    Action::AsyncDelay {
                        ms: duration_ms(v).map_err(&err)?,
                    },
                    When::Rate(1.0),
                )
            }
            _ => {
                let fault = Fault::ALL
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| {
                        err(format!(
                            "unknown fault {name:?}; known: latency, async-delay, hold, {}",
                            Fault::ALL.map(|(n, _)| n).join(", ")
                        ))
                    })?;
                let when = match value {
                    None => When::Rate(1.0),
                    Some(v) => match v.strip_prefix("next:") {
                        Some(n) => When::Next(
                            n.parse()
                                .map_err(|_| err(format!("{n:?} is not a count")))?,
                        ),
                        None => {
                            let r: f64 = v.parse().map_err(|_| {
                                err(format!("{v:?} is neither a rate (0 to 1) nor next:N"))
                            })?;
                            if !(0.0..=1.0).contains(&r) {
                                return Err(err(format!("rate {r} is outside 0 to 1")));
                            }
                            When::Rate(r)
                        }
                    },
                };
                (Action::Fault { fault }, when)
            }
        };
        rules.push(Rule {
            scope: scope.to_owned(),
            action,
            when,
        });
    }
    Ok(rules)
}

fn in_scope(scope: &str, registry: &str, service: &str) -> bool {
    scope == "*" || scope == registry || scope == service
}

/// What to do with one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decision {
    pub latency: Option<Duration>,
    pub fault: Option<Fault>,
    pub async_delay: Option<Duration>,
    /// Kept until the control endpoint releases held requests.
    pub hold: bool,
}

/// The rules in force; the first matching fault rule that fires wins.
#[derive(Debug, Default)]
pub struct FaultTable {
    pub rules: Vec<Rule>,
}

impl FaultTable {
    pub fn decide<R: Rng>(&mut self, registry: &str, service: &str, rng: &mut R) -> Decision {
        let mut d = Decision::default();
        for rule in self
            .rules
            .iter_mut()
            .filter(|r| in_scope(&r.scope, registry, service))
        {
            match &rule.action {
                Action::Latency { min_ms, max_ms } => {
                    if d.latency.is_none() {
                        d.latency =
                            Some(Duration::from_millis(rng.random_range(*min_ms..=*max_ms)));
                    }
                }
                Action::AsyncDelay { ms } => d.async_delay = Some(Duration::from_millis(*ms)),
                Action::Hold => d.hold = true,
                Action::Fault { fault } => {
                    if d.fault.is_some() || fault.is_state() {
                        continue;
                    }
                    let fire = match &mut rule.when {
                        When::Rate(r) => rng.random_bool(r.clamp(0.0, 1.0)),
                        When::Next(n) if *n > 0 => {
                            *n -= 1;
                            true
                        }
                        When::Next(_) => false,
                    };
                    if fire {
                        d.fault = Some(*fault);
                    }
                }
            }
        }
        // Spent next:N rules are dropped so a listing shows what is left.
        self.rules.retain(|r| r.when != When::Next(0));
        d
    }
}

impl FaultTable {
    /// Is `fault` set for `scope` (a registry name), or for every registry?
    pub fn has_state(&self, fault: Fault, registry: Option<&str>) -> bool {
        self.rules.iter().any(|r| {
            r.action == Action::Fault { fault }
                && match registry {
                    Some(reg) => r.scope == "*" || r.scope == reg,
                    None => true,
                }
        })
    }

    /// Is the state `fault` set for `service` (by its scope: `*`, its
    /// registry or itself)?
    pub fn has_service_state(&self, fault: Fault, registry: &str, service: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.action == Action::Fault { fault } && in_scope(&r.scope, registry, service))
    }
}

pub use crate::time::Window;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let r = parse_spec(
            "cadastre:503=0.1, tax.clearance-certificate:async=next:2, *:latency=5ms..20ms",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0].action,
            Action::Fault {
                fault: Fault::Http503
            }
        );
        assert_eq!(r[0].when, When::Rate(0.1));
        assert_eq!(r[1].when, When::Next(2));
        assert_eq!(
            r[2].action,
            Action::Latency {
                min_ms: 5,
                max_ms: 20
            }
        );
    }

    #[test]
    fn hold_scopes_like_any_rule_and_takes_no_value() {
        let mut t = FaultTable {
            rules: parse_spec("cadastre:hold, *:latency=1ms").unwrap(),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!(
            t.decide("cadastre", "cadastre.property-sheet", &mut rng)
                .hold
        );
        assert!(!t.decide("civil", "civil.birth-extract", &mut rng).hold);
        assert_eq!(
            parse_spec("cadastre:hold=0.5").unwrap_err().reason,
            "hold takes no value: it holds every request in scope"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            parse_spec("cadastre").unwrap_err().reason,
            "expected SCOPE:FAULT[=WHEN], e.g. cadastre:503=0.1"
        );
        assert!(parse_spec("civil:404")
            .unwrap_err()
            .reason
            .starts_with("unknown fault \"404\""));
        assert_eq!(
            parse_spec("civil:503=1.5").unwrap_err().reason,
            "rate 1.5 is outside 0 to 1"
        );
        assert!(parse_spec("civil:latency=fast").is_err());
    }

    #[test]
    fn next_n_fires_exactly_n_times_for_its_scope_only() {
        let mut t = FaultTable {
            rules: parse_spec("tax:503=next:2").unwrap(),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            t.decide("civil", "civil.birth-extract", &mut rng).fault,
            None
        );
        assert_eq!(
            t.decide("tax", "tax.property-tax-status", &mut rng).fault,
            Some(Fault::Http503)
        );
        assert_eq!(
            t.decide("tax", "tax.clearance-certificate", &mut rng).fault,
            Some(Fault::Http503)
        );
        assert_eq!(
            t.decide("tax", "tax.clearance-certificate", &mut rng).fault,
            None
        );
        assert!(t.rules.is_empty());
    }

    /// One rule as the grammar has it (`SCOPE:FAULT[=WHEN]`), right or
    /// wrong in one part: the scope, the name or the value.
    fn rule() -> impl Strategy<Value = (String, bool)> {
        let scope = prop_oneof![
            Just(("*".to_owned(), true)),
            prop::sample::select(vec![
                "civil",
                "cadastre",
                "tax",
                "tax.clearance-certificate"
            ])
            .prop_map(|s| (s.to_owned(), true)),
            Just((" ".to_owned(), false)),
        ];
        let names: Vec<&'static str> = Fault::ALL.iter().map(|(n, _)| *n).collect();
        let fault = prop_oneof![
            4 => (prop::sample::select(names), prop_oneof![
                Just((String::new(), true)),
                (0.0f64..=1.0).prop_map(|r| (format!("={r}"), true)),
                (0u32..50).prop_map(|n| (format!("=next:{n}"), true)),
                (1.01f64..9.0).prop_map(|r| (format!("={r}"), false)),
                "[a-z:=.-]{1,8}".prop_map(|v| (format!("={v}"), false)),
            ]).prop_map(|(n, (v, ok))| (format!("{n}{v}"), ok)),
            1 => ((0u32..500), (0u32..500), "(ms|s)").prop_map(|(a, b, u)| {
                (format!("latency={a}{u}..{b}{u}"), a <= b)
            }),
            1 => (0u32..5000).prop_map(|a| (format!("async-delay={a}ms"), true)),
            1 => "[a-z0-9]{1,8}".prop_map(|n| {
                let known = Fault::ALL.iter().any(|(k, _)| *k == n);
                (n, known)
            }),
        ];
        (scope, fault).prop_map(|((s, s_ok), (f, f_ok))| (format!("{s}:{f}"), s_ok && f_ok))
    }

    proptest! {
        #[test]
        fn spec_parsing_never_panics(s in "\\PC{0,60}") {
            let _ = parse_spec(&s);
        }

        /// Specs built from the grammar parse, one rule per item; a spec
        /// with one wrong part is refused naming that item.
        #[test]
        fn specs_from_the_grammar_parse_or_name_the_wrong_item(rules in proptest::collection::vec(rule(), 1..5)) {
            let spec = rules.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ");
            match parse_spec(&spec) {
                Ok(parsed) => {
                    prop_assert!(rules.iter().all(|(_, ok)| *ok), "{spec:?} accepted");
                    prop_assert_eq!(parsed.len(), rules.len());
                }
                Err(e) => {
                    let bad: Vec<&str> = rules.iter().filter(|(_, ok)| !ok).map(|(r, _)| r.trim()).collect();
                    prop_assert!(!bad.is_empty(), "{spec:?} refused: {e}");
                    prop_assert!(bad.contains(&e.item.trim()), "{spec:?}: {e} names another item");
                }
            }
        }
    }
}
