//! The signed documents' source for the evidence job: a GET of each X-Road
//! registry's security server's `/asic` endpoint (the signed document
//! download of NIIS's ug-sigdoc manual) with the client's identifiers,
//! over HTTPS with the gateway's TLS certificate as the information
//! system's. Its own small client for now; the exchange's client of the
//! same security server is the place for it once it fetches these.

use std::collections::BTreeMap;

use crate::config::{GatewayConfig, Member, RegistryProtocol};
use crate::evidence::signed::{Fetched, SignedDocSource, SIGNED_DOC_MAX_BYTES};

/// The security servers of the X-Road registries, by registry.
pub struct SecurityServers {
    client: Member,
    servers: BTreeMap<String, (String, Result<reqwest::Client, String>)>,
}

impl SecurityServers {
    pub fn new(cfg: &GatewayConfig) -> SecurityServers {
        let g = &cfg.gateway;
        let servers = cfg
            .registries
            .iter()
            .filter(|(_, r)| r.protocol == RegistryProtocol::XRoad)
            .map(|(name, r)| {
                let http = (|| {
                    let read = |p: &std::path::Path| {
                        std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
                    };
                    let mut b = crate::pki::fetch::client(r.timeout).https_only(true);
                    for c in reqwest::Certificate::from_pem_bundle(&read(&r.tls_ca)?)
                        .map_err(|e| format!("{}: {e}", r.tls_ca.display()))?
                    {
                        b = b.add_root_certificate(c);
                    }
                    if crate::pki::pkcs11::is_uri(&g.tls_key.to_string_lossy()) {
                        return Err(
                            "a TLS key on a token is not used for signed documents yet".into()
                        );
                    }
                    let mut pem = read(&g.tls_cert)?;
                    pem.extend(read(&g.tls_key)?);
                    let id = reqwest::Identity::from_pem(&pem)
                        .map_err(|e| format!("gateway.tls_cert/tls_key: {e}"))?;
                    b.identity(id).build().map_err(|e| e.to_string())
                })();
                (name.clone(), (r.url.clone(), http))
            })
            .collect();
        SecurityServers {
            client: g.client.clone(),
            servers,
        }
    }
}

/// `{url}/asic?queryId=..&xRoadInstance=..&memberClass=..&memberCode=..
/// [&subsystemCode=..]&responseOnly&unique[&force]`, the client's
/// identifiers, each value percent-encoded.
pub fn asic_url(base: &str, client: &Member, message_id: &str, force: bool) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut q = format!(
        "{}/asic?queryId={}&xRoadInstance={}&memberClass={}&memberCode={}",
        base.trim_end_matches('/'),
        enc(message_id),
        enc(&client.instance),
        enc(&client.class),
        enc(&client.code)
    );
    if let Some(s) = &client.subsystem {
        q.push_str(&format!("&subsystemCode={}", enc(s)));
    }
    q.push_str("&responseOnly&unique");
    if force {
        q.push_str("&force");
    }
    q
}

#[async_trait::async_trait]
impl SignedDocSource for SecurityServers {
    async fn fetch(
        &self,
        registry: &str,
        message_id: &str,
        force: bool,
    ) -> Result<Fetched, String> {
        let (base, http) = self
            .servers
            .get(registry)
            .ok_or_else(|| format!("registry {registry} is not an X-Road registry (any more)"))?;
        let http = http.as_ref().map_err(|e| e.clone())?;
        let url = asic_url(base, &self.client, message_id, force);
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET /asic: {e}"))?;
        if let Some(r) = crate::pki::fetch::redirected(&resp) {
            return Err(r);
        }
        let status = resp.status();
        // The security server's messages are short plain text.
        let text = |b: Vec<u8>| {
            String::from_utf8_lossy(&b[..b.len().min(500)])
                .trim()
                .to_owned()
        };
        if status == reqwest::StatusCode::NOT_FOUND {
            let body = crate::pki::fetch::body(resp, 4096)
                .await
                .unwrap_or_default();
            return Ok(Fetched::NotYet(text(body)));
        }
        if !status.is_success() {
            let body = crate::pki::fetch::body(resp, 4096)
                .await
                .unwrap_or_default();
            return Err(format!("HTTP {}: {}", status.as_u16(), text(body)));
        }
        crate::pki::fetch::body(resp, SIGNED_DOC_MAX_BYTES)
            .await
            .map(Fetched::Container)
            .map_err(|e| format!("reading the signed document: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asic_url_names_the_client_and_encodes_its_values() {
        let client = Member {
            instance: "RS".into(),
            class: "GOV".into(),
            code: "07 01&2".into(),
            subsystem: Some("one-stop".into()),
        };
        assert_eq!(
            asic_url("https://ss.example/", &client, "a/b", false),
            "https://ss.example/asic?queryId=a%2Fb&xRoadInstance=RS&memberClass=GOV&memberCode=07%2001%262&subsystemCode=one-stop&responseOnly&unique"
        );
        let mut plain = client.clone();
        plain.subsystem = None;
        assert!(asic_url("https://ss", &plain, "m", true)
            .ends_with("&memberCode=07%2001%262&responseOnly&unique&force"));
    }
}
