//! A registry behind X-Road: the gateway is an information system and the
//! registry's `url` the municipality's security server, reached by the same
//! TLS client as any registry (our `tls_cert` is the information system's
//! authentication certificate, `tls_ca` trusts the security server). The
//! security servers sign, verify and log each message; the gateway builds
//! each attempt as a new message (a UUID v4 `id`), checks what comes back
//! as [`wire::check`] says, validates the document against the service's
//! schema, and asks its security server for the metaservices and for the
//! signed document of each message.

use std::time::Instant;

use super::{
    chain, classify, content_type, read_capped, retry_after, transport, Attempt, Call, Content,
    Exchange, ExchangeError, Observation, ReadFailed, RegistryClient, Transport,
};
use crate::config::{RegistryProtocol, ServiceConfig};
use crate::protocol::envelope;
use crate::protocol::xroad::{self as wire, Answer, CheckError, Meta};

/// What the security server lists for a provider (service codes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Methods {
    /// `listMethods`: every service the provider offers.
    pub listed: Vec<String>,
    /// `allowedMethods`: those our information system may call.
    pub allowed: Vec<String>,
}

/// The security server's answer to a signed-document query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedDocFetch {
    /// The ASiC-E container, as sent.
    Container(Vec<u8>),
    /// Not yet (404: the message is not timestamped yet), with the
    /// security server's message.
    NotYet(String),
}

/// A security server's plain-text error, shortened for a message.
fn excerpt(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    let t = t.trim();
    if t.chars().count() > 300 {
        format!("{}…", t.chars().take(300).collect::<String>())
    } else {
        t.to_owned()
    }
}

/// `%`-encoding of a query value (RFC 3986's unreserved characters kept).
fn query_value(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

impl Exchange {
    fn receive_limits(&self) -> wire::ReceiveLimits {
        wire::ReceiveLimits {
            xml: self.limits.clone(),
            max_resolved: self.limits.max_size.saturating_mul(4) / 3 + 4096,
            ..wire::ReceiveLimits::default()
        }
    }

    /// The registries spoken to over X-Road.
    pub fn x_road_registries(&self) -> Vec<String> {
        self.registries
            .values()
            .filter(|r| r.protocol == RegistryProtocol::XRoad)
            .map(|r| r.name.clone())
            .collect()
    }

    fn x_road_client(&self, registry: &str) -> Result<&RegistryClient, ExchangeError> {
        let reg = self
            .registries
            .get(registry)
            .ok_or_else(|| ExchangeError::UnknownRegistry(registry.to_owned()))?;
        if reg.protocol != RegistryProtocol::XRoad {
            return Err(ExchangeError::Client {
                registry: registry.to_owned(),
                detail: format!("speaks {}, not x-road", reg.protocol.name()),
            });
        }
        Ok(reg)
    }

    /// One X-Road attempt: a new message, with its own id.
    pub(super) async fn attempt_x_road(
        &self,
        call: &Call<'_>,
        svc: &ServiceConfig,
        reg: &RegistryClient,
    ) -> Result<Attempt, ExchangeError> {
        let message_id = uuid::Uuid::new_v4().to_string();
        let inner = match call.ticket {
            Some(t) => envelope::poll(t),
            None => envelope::payload(call.service, svc, call.subject)?,
        };
        let user_id = format!("{}{}", self.country, call.official);
        let code = svc.code(call.service);
        let request = wire::request(
            &wire::Request {
                client: &self.client,
                service: &reg.member,
                service_code: code,
                service_version: &svc.version,
                id: &message_id,
                user_id: &user_id,
                issue: call.case,
                legal_basis: call.legal_basis,
                purpose: call.purpose,
                request_id: call.id,
            },
            &svc.namespace,
            &svc.prefix,
            &inner,
        )
        .into_bytes();
        let started = Instant::now();
        let (status, response, observation, (attachments, charset)) = self
            .send_x_road(reg, svc, code, &request, call.ticket.is_some())
            .await;
        Ok(Attempt {
            outcome: classify(&observation),
            request,
            status,
            response,
            signer: None,
            signer_sha256: None,
            signer_anchor_sha256: None,
            signature_imprint: None,
            revocation: None,
            crl: None,
            duration: started.elapsed(),
            message_id: Some(message_id),
            attachments,
            charset,
        })
    }

    async fn post(
        &self,
        reg: &RegistryClient,
        request: &[u8],
    ) -> Result<reqwest::Response, reqwest::Error> {
        reg.http
            .post(&reg.url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=UTF-8")
            .header("SOAPAction", "\"\"")
            .body(request.to_vec())
            .send()
            .await
    }

    async fn send_x_road(
        &self,
        reg: &RegistryClient,
        svc: &ServiceConfig,
        code: &str,
        request: &[u8],
        polling: bool,
    ) -> (
        Option<u16>,
        Option<Vec<u8>>,
        Observation,
        (Vec<wire::Attachment>, Option<String>),
    ) {
        let resp = match self.post(reg, request).await {
            Ok(r) => r,
            Err(e) => {
                return (
                    None,
                    None,
                    Observation::Transport(transport(&e)),
                    (Vec::new(), None),
                )
            }
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after(&resp);
        let content_type = content_type(&resp);
        let body = match read_capped(resp, reg.max_body).await {
            Ok(b) => b,
            Err((ReadFailed::TooLarge, _)) => {
                let t = Transport::TooLarge {
                    limit: reg.max_body,
                };
                return (
                    Some(status),
                    None,
                    Observation::Transport(t),
                    (Vec::new(), None),
                );
            }
            Err((ReadFailed::Broke(e), partial)) => {
                return (
                    Some(status),
                    Some(partial),
                    Observation::Transport(transport(&e)),
                    (Vec::new(), None),
                )
            }
        };
        let answer = |content| Observation::Answer {
            status,
            retry_after,
            content,
            polling,
        };
        let received = match wire::receive(content_type.as_deref(), &body, &self.receive_limits()) {
            Ok(r) => r,
            Err(e) => {
                return (
                    Some(status),
                    Some(body),
                    answer(Content::Malformed(e.to_string())),
                    (Vec::new(), None),
                )
            }
        };
        // MTOM's parts come back into the XML as base64: a third larger
        // than they came, within the body's cap.
        let mut limits = self.limits.clone();
        limits.max_size = limits.max_size.saturating_mul(4) / 3 + 4096;
        limits.max_text_len = limits.max_size;
        let checked = wire::check(request, &received.xml, &svc.namespace, code, &limits);
        let content = match checked {
            Err(CheckError::Malformed(e)) => Content::Malformed(e),
            Err(CheckError::Headers(e)) => Content::HeadersNotCopied(e),
            Err(CheckError::RequestHash(e)) => Content::RequestHashWrong(e),
            Err(CheckError::Wrapper(e)) => Content::NotWrapped(e),
            Ok(Answer::XRoadFault { code, text }) => Content::XRoadFault { code, text },
            Ok(Answer::Fault {
                code,
                text,
                retry_after,
            }) => Content::Fault {
                code,
                text,
                retry_after,
            },
            Ok(Answer::Accepted {
                ticket,
                retry_after,
            }) => Content::Accepted {
                ticket,
                retry_after,
            },
            Ok(Answer::Document {
                ns,
                local,
                document,
            }) => {
                if ns != svc.namespace || local != svc.document {
                    Content::UnexpectedPayload(format!(
                        "{{{ns}}}{local} where {{{}}}{} was expected",
                        svc.namespace, svc.document
                    ))
                } else {
                    let v = self.validator.clone();
                    match tokio::task::spawn_blocking(move || v.validate(&document)).await {
                        Ok(Ok(())) => Content::Document,
                        Ok(Err(e)) => Content::SchemaInvalid(e.to_string()),
                        Err(e) => Content::SchemaInvalid(format!("validation did not run: {e}")),
                    }
                }
            }
        };
        let attachments = if content == Content::Document {
            (received.attachments, received.charset)
        } else {
            (Vec::new(), None)
        };
        (
            Some(status),
            Some(received.raw),
            answer(content),
            attachments,
        )
    }

    /// Asks the registry's security server which services its provider
    /// lists (`listMethods`) and which our information system may call
    /// (`allowedMethods`). Reporting only: sending never waits for it.
    pub async fn methods(&self, registry: &str) -> Result<Methods, ExchangeError> {
        let reg = self.x_road_client(registry)?;
        let mut out = Methods::default();
        for meta in [Meta::ListMethods, Meta::AllowedMethods] {
            let id = uuid::Uuid::new_v4().to_string();
            let request = wire::meta_request(meta, &self.client, &reg.member, &id, "").into_bytes();
            let fail = |detail: String| ExchangeError::Client {
                registry: registry.to_owned(),
                detail: format!("{}: {detail}", meta.code()),
            };
            let resp = self
                .post(reg, &request)
                .await
                .map_err(|e| fail(chain(&e)))?;
            let status = resp.status().as_u16();
            let content_type = content_type(&resp);
            let body = match read_capped(resp, reg.max_body).await {
                Ok(b) => b,
                Err((ReadFailed::TooLarge, _)) => {
                    return Err(fail(format!("answer larger than {} bytes", reg.max_body)))
                }
                Err((ReadFailed::Broke(e), _)) => return Err(fail(chain(&e))),
            };
            let received = wire::receive(content_type.as_deref(), &body, &self.receive_limits())
                .map_err(|e| fail(format!("HTTP {status}: {e}")))?;
            let codes = wire::methods_of(&request, &received.xml, meta, &self.limits)
                .map_err(|e| fail(format!("HTTP {status}: {e}")))?;
            match meta {
                Meta::ListMethods => out.listed = codes,
                Meta::AllowedMethods => out.allowed = codes,
            }
        }
        Ok(out)
    }

    /// The signed document of message `message_id` (ug-sigdoc): an ASiC-E
    /// container from the registry's security server, asked with our
    /// client's identifiers, the response only, `unique`, and `force`
    /// (have it timestamped now) when asked. Read with the same cap as
    /// answers.
    pub async fn signed_document(
        &self,
        registry: &str,
        message_id: &str,
        force: bool,
    ) -> Result<SignedDocFetch, ExchangeError> {
        let reg = self.x_road_client(registry)?;
        let fail = |detail: String| ExchangeError::Client {
            registry: registry.to_owned(),
            detail: format!("signed document of {message_id}: {detail}"),
        };
        // `{url}/asic` (ug-sigdoc: the security server's `asic` service,
        // at its root when `url` is the security server's own address; a
        // proxy that puts it under a path keeps it there).
        let base =
            reqwest::Url::parse(&reg.url).map_err(|e| fail(format!("url {:?}: {e}", reg.url)))?;
        let mut url = base
            .as_str()
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        url.push_str("/asic?queryId=");
        url.push_str(&query_value(message_id));
        let c = &self.client;
        for (k, v) in [
            ("xRoadInstance", Some(&c.instance)),
            ("memberClass", Some(&c.class)),
            ("memberCode", Some(&c.code)),
            ("subsystemCode", c.subsystem.as_ref()),
        ] {
            if let Some(v) = v {
                url.push_str(&format!("&{k}={}", query_value(v)));
            }
        }
        url.push_str("&responseOnly&unique");
        if force {
            url.push_str("&force");
        }
        let resp = reg
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(chain(&e)))?;
        let status = resp.status().as_u16();
        let body = match read_capped(resp, reg.max_body).await {
            Ok(b) => b,
            Err((ReadFailed::TooLarge, _)) => {
                return Err(fail(format!("larger than {} bytes", reg.max_body)))
            }
            Err((ReadFailed::Broke(e), _)) => return Err(fail(chain(&e))),
        };
        match status {
            200 => Ok(SignedDocFetch::Container(body)),
            404 => Ok(SignedDocFetch::NotYet(excerpt(&body))),
            // Versions that answer a missing timestamp as an internal
            // error (ug-sigdoc 2.3) say so in its message.
            500 if String::from_utf8_lossy(&body).contains("not been timestamped yet") => {
                Ok(SignedDocFetch::NotYet(excerpt(&body)))
            }
            s => Err(fail(format!("HTTP {s}: {}", excerpt(&body)))),
        }
    }
}

#[cfg(test)]
mod tests;
