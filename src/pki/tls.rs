//! HTTPS servers with client certificates, on tokio-rustls and hyper: the
//! registry simulator (client certificate required) and the back-office
//! API when it is served over TLS (client certificate optional or
//! required). A connection whose client certificate does not chain to the
//! configured CA never reaches a handler; a verified certificate's subject
//! is handed to the handlers as a [`PeerCert`] request extension.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
}

fn file_err(path: &Path, detail: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// The subject of the client certificate of a connection (verified against
/// the client CA), or None if the client sent none.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<String>);

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|e| file_err(path, e))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, "no private key in the file"))
}

/// A certificate chain with its key, for a rustls client or server: the
/// key a PKCS#11 URI names (proven the certificate's by a probe
/// signature), or a PEM file.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &Path,
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, String> {
    let text = key.to_string_lossy();
    let signing = if super::pkcs11::is_uri(&text) {
        super::pkcs11::tls_signing_key(&chain, &text)?
    } else {
        let der = load_key(key).map_err(|e| e.to_string())?;
        rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| format!("{}: {e}", key.display()))?
    };
    Ok(std::sync::Arc::new(rustls::sign::CertifiedKey::new(
        chain, signing,
    )))
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    /// Verified if sent; a client without one still connects.
    Optional,
}

/// A TLS server configuration that verifies client certificates against
/// `client_ca` (when given).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_checked(
        cert,
        key,
        client_ca,
        auth,
        None,
        crate::xml::dsig::MIN_RSA_BITS,
    )
}

/// [`server_config`], the clients' certificates also checked for
/// revocation by `revocation` (made with the CAs of `client_ca`, which
/// [`client_anchors`] reads), and our key and the clients' certificates
/// refused below `min_rsa_bits` (`gateway.min_rsa_bits`; never below
/// [`crate::xml::dsig::MIN_RSA_BITS`]).
pub fn server_config_checked(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    auth: ClientAuth,
    revocation: Option<super::revocation::tls::Gate>,
    min_rsa_bits: u32,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c).map_err(|e| file_err(ca, e))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| TlsError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(
                super::revocation::tls::ClientVerifier::new(verifier, revocation, min_rsa_bits),
            ))
        }
        None => builder.with_no_client_auth(),
    };
    let pem = |p: &Path| std::fs::read(p).map_err(|e| file_err(p, e));
    // A key on a token is judged by its certificate.
    let on_token = super::pkcs11::is_uri(&key.to_string_lossy());
    let key_pem = if on_token { Vec::new() } else { pem(key)? };
    if let Some(w) = crate::xml::dsig::weak_own_key(&key_pem, &pem(cert)?, min_rsa_bits) {
        return Err(TlsError::Tls(format!("{}: too weak: {w}", key.display())));
    }
    let certified = certified_key(load_certs(cert)?, key).map_err(|detail| TlsError::File {
        path: super::pkcs11::redact(&key.to_string_lossy()),
        detail,
    })?;
    let mut cfg =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The CA certificates of a PEM file, as the revocation checks want them.
pub fn client_anchors(path: &Path) -> Result<Vec<openssl::x509::X509>, TlsError> {
    load_certs(path)?
        .iter()
        .map(|c| openssl::x509::X509::from_der(c).map_err(|e| file_err(path, e)))
        .collect()
}

fn peer_subject(der: &[u8]) -> Option<String> {
    let cert = openssl::x509::X509::from_der(der).ok()?;
    Some(crate::xml::dsig::name_to_string(cert.subject_name()))
}

/// Told of every handshake refused, with the reason (a client certificate
/// of another CA, an expired one, none at all …).
pub type OnRefused = Arc<dyn Fn(&str) + Send + Sync>;

/// What a server holds against slow, idle or too many clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// From the connection to its first byte, the TLS handshake, and each
    /// request's headers (also between requests on a kept-alive
    /// connection): a client silent for longer is disconnected.
    pub header_timeout: std::time::Duration,
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How often an HTTP/2 connection is pinged: HTTP/2 has no header
    /// timeout between streams, so a ping unanswered within the header
    /// timeout closes a connection whose peer is gone or silent.
    pub ping_interval: std::time::Duration,
}

impl ServeLimits {
    /// File descriptors kept for everything else (the store, case files,
    /// registry connections, logs).
    const RESERVED_FDS: u64 = 512;

    /// `header_timeout`, a ping every 30 s, and as many connections as
    /// the process's open file limit allows after [`Self::RESERVED_FDS`]:
    /// about 20,000 idle connections exhausted it before, and then nothing
    /// (the store, the case folders) could open a file.
    pub fn for_this_process(header_timeout: std::time::Duration) -> ServeLimits {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        ServeLimits {
            header_timeout,
            max_connections: soft.saturating_sub(Self::RESERVED_FDS).clamp(64, 1 << 20) as usize,
            ping_interval: std::time::Duration::from_secs(30),
        }
    }

    /// At most `max` connections (never more than the file limit allows)
    /// and this ping interval.
    pub fn configured(
        mut self,
        max: Option<usize>,
        ping_interval: std::time::Duration,
    ) -> ServeLimits {
        if let Some(max) = max {
            self.max_connections = self.max_connections.min(max.max(1));
        }
        self.ping_interval = ping_interval;
        self
    }
}

/// Accepts connections, over TLS when `tls` is given, and serves `app` on
/// each until `stop` resolves; then lets requests in flight finish (for up
/// to 30 s) and closes idle connections. A connection over the limit waits
/// to be accepted; one that sends nothing within the header timeout is
/// closed.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    stop: impl std::future::Future<Output = ()>,
    on_refused: OnRefused,
    limits: ServeLimits,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // HTTP/2 has no header timeout between streams: a ping, unanswered
    // within the header timeout, closes a connection whose peer is gone.
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(limits.ping_interval))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s,
            _ = &mut stop => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
        };
        let Ok((tcp, peer)) = accepted else {
            continue;
        };
        let (acceptor, app, on_refused) = (acceptor.clone(), app.clone(), on_refused.clone());
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let wait = limits.header_timeout;
            // Nothing within the timeout: a client that opens connections
            // and sends nothing holds none of them for long.
            let mut first = [0u8; 1];
            match tokio::time::timeout(wait, tcp.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            // Who is calling, for the handlers that ask (the metrics'
            // allow-list): axum's `ConnectInfo`.
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let Some(acceptor) = acceptor else {
                let svc = TowerToHyperService::new(app);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                let _ = watcher.watch(conn.into_owned()).await;
                return;
            };
            let tls = match tokio::time::timeout(wait, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake refused");
                    on_refused(&e.to_string());
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| peer_subject(c));
            let app = app.layer(axum::Extension(PeerCert(subject)));
            let svc = TowerToHyperService::new(app);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; closing their connections");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configured maximum lowers the limit the file limit gives, and
    /// never raises it.
    #[test]
    fn a_configured_maximum_never_exceeds_the_file_limit() {
        let t = std::time::Duration::from_secs(10);
        let base = ServeLimits::for_this_process(t);
        assert!(base.max_connections >= 64);
        let ping = std::time::Duration::from_secs(1);
        let c = base.configured(Some(4), ping);
        assert_eq!((c.max_connections, c.ping_interval), (4, ping));
        let c = base.configured(Some(base.max_connections + 1000), ping);
        assert_eq!(c.max_connections, base.max_connections);
        let c = base.configured(None, ping);
        assert_eq!(c.max_connections, base.max_connections);
    }
}
