//! What an attempt's result means: one pure function from what was observed
//! to an [`Outcome`] (document, accepted, permanent, retryable, security).
//! What an outcome does to the request, and *when* to retry, is the life
//! cycle's (`lifecycle`), not here.

use std::time::Duration;

pub use crate::lifecycle::Outcome;
use crate::protocol::envelope::FaultCode;

/// How the transport failed, before any answer was read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// No connection (refused, unreachable, DNS).
    Connect(String),
    /// The registry's TLS certificate is not trusted: never retried blindly.
    UntrustedServer(String),
    /// Any other TLS failure (handshake refused, our certificate rejected).
    Tls(String),
    Timeout,
    /// The connection broke while sending or reading.
    Interrupted(String),
    /// The answer was larger than the configured limit.
    TooLarge {
        limit: usize,
    },
}

/// What the answer's bytes turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Not XML, or not an envelope.
    Malformed(String),
    /// Well-formed but unsigned (an error page, an unsigned fault).
    Unsigned { fault: Option<String> },
    /// The signature or its certificate does not verify.
    BadSignature(String),
    /// Signed, but the `requestHash` is not that of what we sent.
    HashMismatch,
    /// Signed, but it answers another request id.
    IdMismatch { expected: String, found: String },
    /// Signed, but not valid against the schemas.
    SchemaInvalid(String),
    /// Signed by a certificate that is revoked (or unknown to its CA).
    Revoked(String),
    /// Signed by a certificate whose revocation status the policy needs
    /// and could not be had.
    RevocationUnknown(String),
    /// A verified, valid document of the expected kind.
    Document,
    /// A verified, valid payload of another kind than the service's document.
    UnexpectedPayload(String),
    Accepted {
        ticket: String,
        retry_after: Duration,
    },
    Fault {
        code: FaultCode,
        text: String,
        retry_after: Option<Duration>,
    },
    /// X-Road: a header of the request not copied back as it was.
    HeadersNotCopied(String),
    /// X-Road: `requestHash` not that of the request sent, or of an
    /// algorithm not taken.
    RequestHashWrong(String),
    /// X-Road's own fault (a security server's, in either of its forms).
    XRoadFault { code: String, text: String },
    /// X-Road: the body is not the `{serviceCode}Response` wrapper the
    /// request's wrapper calls for (Document/Literal-Wrapped): not a
    /// document, and not one on the next try of the same service either.
    NotWrapped(String),
}

/// Whether an X-Road fault code is worth another try. Both of X-Road's
/// forms are read alike: the dotted CamelCase of older versions
/// (`Server.ServerProxy.ServiceFailed.NetworkError`) and the snake_case of
/// recent ones (`server.serverproxy.service_failed.network_error`), each
/// segment lower-cased without its underscores. A code is permanent when
/// one of its segments says the request itself, or our access to the
/// service, is wrong (sending it again changes nothing); anything else
/// (the service failed, network, I/O, timeouts, the database, an internal
/// error, a security server's own trouble) is transient.
pub fn x_road_fault_is_transient(code: &str) -> bool {
    const PERMANENT: &[&str] = &[
        "access_denied",
        "unknown_service",
        "service_disabled",
        "invalid_client_identifier",
        "invalid_protocol_version",
        "unknown_member",
        "service_type",
        "client_proxy_version_not_supported",
        "bad_request",
        "invalid_request",
        "invalid_content_type",
        "invalid_soap_action",
        "invalid_http_method",
        "invalid_message",
        "missing_header",
        "missing_header_field",
        "duplicate_header_field",
        "missing_body",
        "invalid_body",
        "inconsistent_headers",
        "missing_soap",
        "invalid_soap",
        "malformed_soap",
        "missing_rest",
        "invalid_xml",
        "invalid_encoded_id",
        "invalid_parameters",
        "service_missing_url",
        "service_malformed_url",
    ];
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_')
            .flat_map(char::to_lowercase)
            .collect()
    };
    !code
        .split('.')
        .map(norm)
        .any(|seg| PERMANENT.iter().any(|p| norm(p) == seg))
}

/// Everything the classification looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    Transport(Transport),
    Answer {
        status: u16,
        retry_after: Option<Duration>,
        content: Content,
        /// This attempt polled a ticket.
        polling: bool,
    },
}

fn retryable(reason: impl Into<String>, retry_after: Option<Duration>) -> Outcome {
    Outcome::Retryable {
        reason: reason.into(),
        retry_after,
    }
}

fn permanent(reason: impl Into<String>) -> Outcome {
    Outcome::Permanent {
        reason: reason.into(),
    }
}

fn security(reason: impl Into<String>) -> Outcome {
    Outcome::Security {
        reason: reason.into(),
    }
}

/// The one place that decides what an attempt means.
pub fn classify(obs: &Observation) -> Outcome {
    let (status, retry_after, content, polling) = match obs {
        Observation::Transport(t) => {
            return match t {
                Transport::Connect(e) => retryable(format!("cannot connect: {e}"), None),
                Transport::UntrustedServer(e) => {
                    security(format!("registry TLS certificate is not trusted: {e}"))
                }
                Transport::Tls(e) => retryable(format!("TLS failed: {e}"), None),
                Transport::Timeout => retryable("no complete answer before the timeout", None),
                Transport::Interrupted(e) => retryable(format!("connection broke: {e}"), None),
                Transport::TooLarge { limit } => retryable(
                    format!("answer larger than the limit of {limit} bytes"),
                    None,
                ),
            }
        }
        Observation::Answer {
            status,
            retry_after,
            content,
            polling,
        } => (*status, *retry_after, content, *polling),
    };
    match content {
        // Security: whatever the HTTP status, a signed answer that does not
        // check out is never trusted.
        Content::BadSignature(e) => security(format!("response signature does not verify: {e}")),
        Content::HashMismatch => security("response requestHash does not match the request sent"),
        Content::Revoked(e) => security(format!("the registry's signing certificate is {e}")),
        Content::RevocationUnknown(e) => {
            retryable(format!("the registry's signing certificate: {e}"), None)
        }
        Content::IdMismatch { expected, found } => security(format!(
            "response answers request {found:?}, not {expected:?}"
        )),
        Content::HeadersNotCopied(e) => security(format!(
            "the answer does not copy back the request's headers: {e}"
        )),
        Content::RequestHashWrong(e) => security(format!("the answer's requestHash: {e}")),
        Content::NotWrapped(e) => permanent(format!("not a document: {e}")),
        Content::XRoadFault { code, text } => {
            if x_road_fault_is_transient(code) {
                retryable(format!("X-Road fault {code}: {text}"), retry_after)
            } else {
                permanent(format!("X-Road fault {code}: {text}"))
            }
        }
        Content::Fault {
            code,
            text,
            retry_after: fault_ra,
        } => {
            let ra = fault_ra.or(retry_after);
            match code {
                FaultCode::NotFound if polling => Outcome::TicketLost {
                    reason: text.clone(),
                },
                FaultCode::NotFound => permanent(format!("registry found no data: {text}")),
                FaultCode::InvalidSubject => {
                    permanent(format!("registry refused the subject: {text}"))
                }
                FaultCode::NotAuthorized => permanent(format!("registry refused access: {text}")),
                FaultCode::Unavailable => retryable(format!("registry unavailable: {text}"), ra),
                FaultCode::Maintenance => retryable(format!("registry in maintenance: {text}"), ra),
                FaultCode::Internal => retryable(format!("registry internal error: {text}"), ra),
                FaultCode::BadSignature => {
                    security(format!("registry rejected our signature: {text}"))
                }
                FaultCode::Other(c) => permanent(format!("registry fault {c}: {text}")),
            }
        }
        Content::Document if status == 200 => Outcome::Document,
        Content::Accepted {
            ticket,
            retry_after: r,
        } if status == 200 || status == 202 => Outcome::Accepted {
            ticket: ticket.clone(),
            retry_after: *r,
        },
        _ if status == 408 || status == 429 || status >= 500 => {
            retryable(format!("registry returned {status}"), retry_after)
        }
        _ if (400..500).contains(&status) => permanent(format!("registry returned {status}")),
        Content::Unsigned { fault: Some(f) } => security(format!("unsigned fault {f}")),
        Content::Unsigned { fault: None } => security("the answer is not signed"),
        Content::Malformed(e) => retryable(format!("malformed answer: {e}"), retry_after),
        Content::SchemaInvalid(e) => retryable(format!("schema-invalid answer: {e}"), retry_after),
        Content::UnexpectedPayload(p) => retryable(format!("unexpected payload {p}"), retry_after),
        Content::Document | Content::Accepted { .. } => retryable(
            format!("registry returned {status} with a document"),
            retry_after,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::OutcomeKind;

    fn answer(status: u16, content: Content) -> Observation {
        Observation::Answer {
            status,
            retry_after: None,
            content,
            polling: false,
        }
    }

    fn fault(code: FaultCode) -> Content {
        Content::Fault {
            code,
            text: "x".into(),
            retry_after: Some(Duration::from_secs(30)),
        }
    }

    /// Every fault the simulator can inject, and what it must mean.
    #[test]
    fn classification_table() {
        let ra = Some(Duration::from_secs(2));
        let table: Vec<(&str, Observation, &str)> = vec![
            ("document", answer(200, Content::Document), "document"),
            (
                "async",
                answer(
                    200,
                    Content::Accepted {
                        ticket: "T".into(),
                        retry_after: Duration::from_secs(1),
                    },
                ),
                "accepted",
            ),
            (
                "500 plain",
                answer(500, Content::Unsigned { fault: None }),
                "retryable",
            ),
            (
                "503 plain",
                answer(503, Content::Malformed("not XML".into())),
                "retryable",
            ),
            (
                "429",
                Observation::Answer {
                    status: 429,
                    retry_after: ra,
                    content: Content::Malformed("x".into()),
                    polling: false,
                },
                "retryable",
            ),
            (
                "408",
                answer(408, Content::Malformed("x".into())),
                "retryable",
            ),
            (
                "404 plain",
                answer(404, Content::Malformed("x".into())),
                "permanent",
            ),
            (
                "reset",
                Observation::Transport(Transport::Interrupted("reset".into())),
                "retryable",
            ),
            (
                "drip/timeout",
                Observation::Transport(Transport::Timeout),
                "retryable",
            ),
            (
                "truncate",
                Observation::Transport(Transport::Interrupted("incomplete body".into())),
                "retryable",
            ),
            (
                "oversize",
                Observation::Transport(Transport::TooLarge { limit: 10 }),
                "retryable",
            ),
            (
                "connect",
                Observation::Transport(Transport::Connect("refused".into())),
                "retryable",
            ),
            (
                "our cert refused",
                Observation::Transport(Transport::Tls("handshake".into())),
                "retryable",
            ),
            (
                "server cert untrusted",
                Observation::Transport(Transport::UntrustedServer("UnknownIssuer".into())),
                "security",
            ),
            (
                "malformed 200",
                answer(200, Content::Malformed("line 1".into())),
                "retryable",
            ),
            (
                "schema-invalid",
                answer(200, Content::SchemaInvalid("missing".into())),
                "retryable",
            ),
            (
                "badsig",
                answer(200, Content::BadSignature("digest".into())),
                "security",
            ),
            (
                "untrusted signer",
                answer(200, Content::BadSignature("not trusted".into())),
                "security",
            ),
            (
                "badsig on 500",
                answer(500, Content::BadSignature("digest".into())),
                "security",
            ),
            ("badhash", answer(200, Content::HashMismatch), "security"),
            (
                "other id",
                answer(
                    200,
                    Content::IdMismatch {
                        expected: "A".into(),
                        found: "B".into(),
                    },
                ),
                "security",
            ),
            (
                "unsigned 200",
                answer(200, Content::Unsigned { fault: None }),
                "security",
            ),
            (
                "unavailable",
                answer(500, fault(FaultCode::Unavailable)),
                "retryable",
            ),
            (
                "maintenance",
                answer(500, fault(FaultCode::Maintenance)),
                "retryable",
            ),
            (
                "internal",
                answer(500, fault(FaultCode::Internal)),
                "retryable",
            ),
            (
                "not found",
                answer(500, fault(FaultCode::NotFound)),
                "permanent",
            ),
            (
                "invalid subject",
                answer(500, fault(FaultCode::InvalidSubject)),
                "permanent",
            ),
            (
                "not authorized",
                answer(500, fault(FaultCode::NotAuthorized)),
                "permanent",
            ),
            (
                "they reject our signature",
                answer(500, fault(FaultCode::BadSignature)),
                "security",
            ),
            (
                "unknown fault",
                answer(500, fault(FaultCode::Other("{urn:x}Y".into()))),
                "permanent",
            ),
            (
                "lost ticket",
                Observation::Answer {
                    status: 500,
                    retry_after: None,
                    content: fault(FaultCode::NotFound),
                    polling: true,
                },
                "ticket-lost",
            ),
            (
                "unexpected payload",
                answer(200, Content::UnexpectedPayload("{urn:x}Y".into())),
                "retryable",
            ),
        ];
        for (name, obs, want) in table {
            let got = classify(&obs);
            assert_eq!(got.kind().name(), want, "{name}: {got}");
        }
    }

    #[test]
    fn retry_after_and_messages() {
        let o = classify(&answer(500, fault(FaultCode::Maintenance)));
        assert_eq!(
            o.to_string(),
            "retryable: registry in maintenance: x, retry after 30 s"
        );
        let o = classify(&Observation::Answer {
            status: 503,
            retry_after: Some(Duration::from_secs(30)),
            content: Content::Malformed("x".into()),
            polling: false,
        });
        assert_eq!(
            o.to_string(),
            "retryable: registry returned 503, retry after 30 s"
        );
        let o = classify(&answer(
            200,
            Content::BadSignature("digest of the signed content does not match".into()),
        ));
        assert_eq!(o.to_string(), "security failure: response signature does not verify: digest of the signed content does not match");
    }

    /// The dotted CamelCase form of a snake_case code
    /// (`server.serverproxy.access_denied` → `Server.ServerProxy.AccessDenied`).
    fn camel(code: &str) -> String {
        code.split('.')
            .map(|seg| match seg {
                "serverproxy" => "ServerProxy".to_owned(),
                "clientproxy" => "ClientProxy".to_owned(),
                _ => seg
                    .split('_')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect::<String>())
                            .unwrap_or_default()
                    })
                    .collect(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn x_road(status: u16, code: &str) -> Outcome {
        classify(&answer(
            status,
            Content::XRoadFault {
                code: code.into(),
                text: "said".into(),
            },
        ))
    }

    /// Every code of X-Road's ErrorCodes.java, in both forms and behind
    /// each prefix: what the issue names transient is retried, what it
    /// names permanent is not, and both forms always mean the same.
    #[test]
    fn x_road_fault_codes_of_both_forms() {
        let java = include_str!("../../tests/vectors/x-road/ErrorCodes.java");
        let mut codes = Vec::new();
        let mut prefixes = Vec::new();
        for line in java.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("public static final String ") else {
                continue;
            };
            let Some((name, value)) = rest.split_once(" = \"") else {
                continue;
            };
            let value = value.trim_end_matches("\";").to_owned();
            if name.ends_with("_X") && !name.starts_with("X_") {
                prefixes.push(value);
            } else if name.starts_with("X_") {
                codes.push(value);
            }
        }
        assert!(codes.len() > 80, "{codes:?}");
        assert!(prefixes.contains(&"server.serverproxy".to_owned()));
        let expect = |code: &str| -> Option<bool> {
            // The words: transient ...
            if [
                "service_failed",
                "network_error",
                "io_error",
                "database_error",
                "internal_error",
                "unknown_host",
                "timestamping_failed",
                "logging_failed",
                "maintenance_mode",
                "global_conf_outdated",
            ]
            .contains(&code)
            {
                return Some(true);
            }
            // ... and permanent.
            if [
                "access_denied",
                "unknown_service",
                "service_disabled",
                "invalid_client_identifier",
                "invalid_protocol_version",
                "unknown_member",
                "missing_body",
                "invalid_content_type",
            ]
            .contains(&code)
            {
                return Some(false);
            }
            None
        };
        let mut checked = 0;
        for prefix in &prefixes {
            for code in &codes {
                let snake = format!("{prefix}.{code}");
                let dotted = camel(&snake);
                let (a, b) = (x_road(500, &snake), x_road(500, &dotted));
                assert_eq!(
                    std::mem::discriminant(&a),
                    std::mem::discriminant(&b),
                    "{snake} and {dotted}"
                );
                if let Some(transient) = expect(code) {
                    let want = if transient { "retryable" } else { "permanent" };
                    assert_eq!(a.kind().name(), want, "{snake}");
                    assert_eq!(b.kind().name(), want, "{dotted}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 18 * prefixes.len() - 2, "{checked}");
        // The examples the issue and the spec name, and the wrapping of a
        // service's failure.
        for (code, want) in [
            ("Server.ServerProxy.ServiceFailed.NetworkError", "retryable"),
            (
                "server.serverproxy.service_failed.network_error",
                "retryable",
            ),
            ("Server.ServerProxy.AccessDenied", "permanent"),
            ("server.serverproxy.access_denied", "permanent"),
            ("Server.ClientProxy.UnknownService", "permanent"),
            ("Server.ClientProxy.ServiceFailed.MissingBody", "permanent"),
            (
                "Server.ServerProxy.ServiceFailed.InternalError",
                "retryable",
            ),
            ("Server.ClientProxy.InvalidProtocolVersion", "permanent"),
            ("Client.InvalidClientIdentifier", "permanent"),
            ("Server.ServerProxy.DatabaseError", "retryable"),
            ("SOAP-ENV:Server", "retryable"),
        ] {
            assert_eq!(x_road(500, code).kind().name(), want, "{code}");
            // The HTTP status does not change it.
            assert_eq!(x_road(200, code).kind().name(), want, "{code}");
        }
        assert_eq!(
            x_road(500, "Server.ServerProxy.AccessDenied"),
            Outcome::Permanent {
                reason: "X-Road fault Server.ServerProxy.AccessDenied: said".into()
            }
        );
    }

    #[test]
    fn x_road_refusals_are_security_failures() {
        for c in [
            Content::HeadersNotCopied("userId missing".into()),
            Content::RequestHashWrong("wrong".into()),
        ] {
            assert_eq!(
                classify(&answer(200, c.clone())).kind(),
                OutcomeKind::Security
            );
            assert_eq!(classify(&answer(500, c)).kind(), OutcomeKind::Security);
        }
    }
}
