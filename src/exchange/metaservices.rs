//! X-Road's metaservices `listMethods` and `allowedMethods` (service
//! metadata protocol, `pr-meta`), asked of an X-Road registry's provider
//! through the municipality's security server: which of our catalogue's
//! service codes it offers, and which of them we may call. Reporting only:
//! the security server enforces access, sending never waits for this.
//!
//! A minimal client of its own (the request, the capped read, the list of
//! `xrd:service/id:serviceCode` in the answer); it speaks to the registry's
//! security server through the same mutual-TLS client as its exchanges.

use futures_util::StreamExt;

use super::{Exchange, ExchangeError, RegistryClient};
use crate::config::Member;
use crate::protocol::ns;

/// What a registry's provider lists and allows, as service codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Methods {
    /// `listMethods`: the services the provider offers.
    pub listed: Vec<String>,
    /// `allowedMethods`: those our client may call.
    pub allowed: Vec<String>,
}

impl Exchange {
    /// Asks the security server of `registry` for its provider's
    /// `listMethods`, then `allowedMethods`. Only for an X-Road registry:
    /// the caller knows which are (a signed-XML registry's endpoint would
    /// answer with an error).
    pub async fn methods(&self, registry: &str) -> Result<Methods, ExchangeError> {
        let reg = self
            .registries
            .get(registry)
            .ok_or_else(|| ExchangeError::UnknownRegistry(registry.to_owned()))?;
        Ok(Methods {
            listed: self.metaservice(reg, "listMethods").await?,
            allowed: self.metaservice(reg, "allowedMethods").await?,
        })
    }

    async fn metaservice(
        &self,
        reg: &RegistryClient,
        code: &str,
    ) -> Result<Vec<String>, ExchangeError> {
        let fail = |detail: String| ExchangeError::Client {
            registry: reg.name.clone(),
            detail: format!("{code}: {detail}"),
        };
        let body = metaservice_request(&self.client, &reg.member, code, &message_id());
        let resp = reg
            .http
            .post(&reg.url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=UTF-8")
            .header("SOAPAction", "\"\"")
            .body(body)
            .send()
            .await
            .map_err(|e| fail(super::chain(&e)))?;
        let status = resp.status();
        // Read with a cap: an endless answer costs at most the limit.
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let c = chunk.map_err(|e| fail(super::chain(&e)))?;
            if bytes.len() + c.len() > reg.max_body {
                return Err(fail(format!("answer over {} bytes", reg.max_body)));
            }
            bytes.extend_from_slice(&c);
        }
        read_services(&bytes, code, &self.limits).map_err(|e| {
            if status.is_success() {
                fail(e)
            } else {
                fail(format!("HTTP {}: {e}", status.as_u16()))
            }
        })
    }
}

/// A new message id (a random UUID, version 4).
fn message_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn identifiers(m: &Member) -> String {
    let mut s = format!(
        "<id:xRoadInstance>{}</id:xRoadInstance><id:memberClass>{}</id:memberClass><id:memberCode>{}</id:memberCode>",
        esc(&m.instance),
        esc(&m.class),
        esc(&m.code)
    );
    if let Some(sub) = &m.subsystem {
        s.push_str(&format!(
            "<id:subsystemCode>{}</id:subsystemCode>",
            esc(sub)
        ));
    }
    s
}

/// The metaservice request `code` (listMethods, allowedMethods): the client
/// and the provider's service `code`, an empty body element.
fn metaservice_request(client: &Member, provider: &Member, code: &str, id: &str) -> String {
    let client_type = if client.subsystem.is_some() {
        "SUBSYSTEM"
    } else {
        "MEMBER"
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{soap}\" xmlns:xrd=\"{xrd}\" xmlns:id=\"{idns}\">\
<SOAP-ENV:Header>\
<xrd:client id:objectType=\"{client_type}\">{client}</xrd:client>\
<xrd:service id:objectType=\"SERVICE\">{provider}<id:serviceCode>{code}</id:serviceCode></xrd:service>\
<xrd:id>{id}</xrd:id>\
<xrd:protocolVersion>4.0</xrd:protocolVersion>\
</SOAP-ENV:Header>\
<SOAP-ENV:Body><xrd:{code}/></SOAP-ENV:Body>\
</SOAP-ENV:Envelope>",
        soap = ns::SOAP,
        xrd = ns::XROAD,
        idns = ns::ID,
        client = identifiers(client),
        provider = identifiers(provider),
    )
}

/// The service codes an answer to `code` lists (`xrd:{code}Response`
/// holding `xrd:service` elements), or the fault it is.
fn read_services(
    bytes: &[u8],
    code: &str,
    limits: &crate::xml::Limits,
) -> Result<Vec<String>, String> {
    // A UTF-8 byte order mark is allowed before the declaration.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let doc = crate::xml::Document::parse(bytes, limits).map_err(|e| e.to_string())?;
    let root = doc.root();
    if !doc.is(root, ns::SOAP, "Envelope") {
        return Err("not a SOAP envelope".into());
    }
    let body = doc
        .child(root, ns::SOAP, "Body")
        .ok_or("no SOAP-ENV:Body")?;
    if let Some(fault) = doc.child(body, ns::SOAP, "Fault") {
        let text = |name: &str| {
            doc.child_elements(fault)
                .find(|&n| doc.element(n).is_some_and(|e| e.local == name))
                .map(|n| doc.text(n).trim().to_owned())
                .unwrap_or_default()
        };
        return Err(format!(
            "fault {}: {}",
            text("faultcode"),
            text("faultstring")
        ));
    }
    let response = doc
        .child(body, ns::XROAD, &format!("{code}Response"))
        .ok_or_else(|| format!("no xrd:{code}Response in the body"))?;
    let mut codes: Vec<String> = doc
        .child_elements(response)
        .filter(|&n| doc.is(n, ns::XROAD, "service"))
        .filter_map(|n| doc.child(n, ns::ID, "serviceCode"))
        .map(|n| doc.text(n).trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    codes.sort();
    codes.dedup();
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(sub: Option<&str>) -> Member {
        Member {
            instance: "RS".into(),
            class: "GOV".into(),
            code: "1234<5".into(),
            subsystem: sub.map(str::to_owned),
        }
    }

    #[test]
    fn the_request_names_the_client_and_the_providers_metaservice() {
        let r = metaservice_request(
            &member(Some("jum")),
            &member(None),
            "allowedMethods",
            "id-1",
        );
        let doc = crate::xml::Document::parse(r.as_bytes(), &Default::default()).unwrap();
        let header = doc.child(doc.root(), ns::SOAP, "Header").unwrap();
        let service = doc.child(header, ns::XROAD, "service").unwrap();
        let code = doc.child(service, ns::ID, "serviceCode").unwrap();
        assert_eq!(doc.text(code), "allowedMethods");
        let member_code = doc.child(service, ns::ID, "memberCode").unwrap();
        assert_eq!(doc.text(member_code), "1234<5");
        assert!(r.contains("id:objectType=\"SUBSYSTEM\""));
        assert!(r.contains("<xrd:allowedMethods/>"));
        let id = message_id();
        assert_eq!((id.len(), &id[14..15]), (36, "4"));
        assert_ne!(id, message_id());
    }

    #[test]
    fn an_answer_lists_its_service_codes_and_a_fault_is_an_error() {
        let answer = format!(
            "\u{FEFF}<e:Envelope xmlns:e=\"{}\" xmlns:x=\"{}\" xmlns:i=\"{}\"><e:Header/><e:Body>\
             <x:allowedMethodsResponse>\
             <x:service i:objectType=\"SERVICE\"><i:xRoadInstance>RS</i:xRoadInstance><i:serviceCode>b</i:serviceCode></x:service>\
             <x:service i:objectType=\"SERVICE\"><i:serviceCode>a</i:serviceCode></x:service>\
             </x:allowedMethodsResponse></e:Body></e:Envelope>",
            ns::SOAP,
            ns::XROAD,
            ns::ID
        );
        let limits = crate::xml::Limits::default();
        assert_eq!(
            read_services(answer.as_bytes(), "allowedMethods", &limits).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            read_services(answer.as_bytes(), "listMethods", &limits).unwrap_err(),
            "no xrd:listMethodsResponse in the body"
        );
        let fault = format!(
            "<e:Envelope xmlns:e=\"{}\"><e:Body><e:Fault><faultcode>Server.ClientProxy.NetworkError</faultcode>\
             <faultstring>down</faultstring></e:Fault></e:Body></e:Envelope>",
            ns::SOAP
        );
        assert_eq!(
            read_services(fault.as_bytes(), "listMethods", &limits).unwrap_err(),
            "fault Server.ClientProxy.NetworkError: down"
        );
    }
}
