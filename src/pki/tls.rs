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
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let pem = |p: &Path| std::fs::read(p).map_err(|e| file_err(p, e));
    if let Some(w) =
        crate::xml::dsig::weak_own_key(&pem(key)?, &pem(cert)?, crate::xml::dsig::MIN_RSA_BITS)
    {
        return Err(TlsError::Tls(format!("{}: too weak: {w}", key.display())));
    }
    let mut cfg = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn peer_subject(der: &[u8]) -> Option<String> {
    let cert = openssl::x509::X509::from_der(der).ok()?;
    Some(crate::xml::dsig::name_to_string(cert.subject_name()))
}

/// Told of every handshake refused, with the reason (a client certificate
/// of another CA, an expired one, none at all …).
pub type OnRefused = Arc<dyn Fn(&str) + Send + Sync>;

/// Accepts TLS connections and serves `app` on each until `stop` resolves
/// (or the task is aborted); connections already open finish on their own.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<ServerConfig>,
    app: Router,
    stop: impl std::future::Future<Output = ()>,
    on_refused: OnRefused,
) {
    let acceptor = TlsAcceptor::from(cfg);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => return,
        };
        let Ok((tcp, peer)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let on_refused = on_refused.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake refused");
                    on_refused(&e.to_string());
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
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
