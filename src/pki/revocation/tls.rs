//! Revocation in TLS handshakes: a registry's server certificate, and a
//! back-office client's certificate at the API. rustls's own verifiers
//! check the chain first; then the checker's cached answer decides. A
//! handshake cannot wait for a responder, so a certificate with no answer
//! yet is looked up in the background: `prefer` lets that handshake
//! through, `require` refuses it (the next one finds the answer). A
//! registry's chain, and a client's, is also held to our key floor here,
//! so that a weak key is refused by name (rustls alone refuses an RSA key
//! under 2048 bits as a "BadSignature" and takes any from 2048 bits up).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use openssl::x509::X509;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{issuer_of, Checker, Policy, Sources, State};

/// What a handshake asks of a peer's certificate beyond its chain.
#[derive(Clone)]
pub struct Gate {
    checker: Arc<Checker>,
    anchors: Arc<Vec<X509>>,
    policy: Policy,
    sources: Arc<Sources>,
    pending: Arc<Mutex<HashSet<Vec<u8>>>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// `anchors`: the CAs that may have issued the peer's certificate.
    pub fn new(
        checker: Arc<Checker>,
        anchors: Vec<X509>,
        policy: Policy,
        sources: Sources,
    ) -> Gate {
        Gate {
            checker,
            anchors: Arc::new(anchors),
            policy,
            sources: Arc::new(sources),
            pending: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.policy == Policy::Off {
            return Ok(());
        }
        let unknown = || match self.policy {
            Policy::Require => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus,
            )),
            _ => Ok(()),
        };
        let Ok(cert) = X509::from_der(end_entity) else {
            return unknown();
        };
        let Some(issuer) = issuer_of(&cert, &self.anchors) else {
            return unknown();
        };
        match self.checker.cached(&cert, &issuer) {
            Some(State::Good) => Ok(()),
            Some(State::Revoked { .. } | State::Unknown) => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            None => {
                self.look_up_later(cert, issuer);
                unknown()
            }
        }
    }

    /// Asks for the certificate's status on the runtime, once at a time.
    fn look_up_later(&self, cert: X509, issuer: X509) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key = cert.to_der().unwrap_or_default();
        if !crate::sync::lock(&self.pending).insert(key.clone()) {
            return;
        }
        let gate = self.clone();
        rt.spawn(async move {
            if let Err(e) = gate.checker.status(&cert, &issuer, &gate.sources).await {
                tracing::warn!(subject = %crate::xml::dsig::name_to_string(cert.subject_name()), error = %e, "revocation status of a TLS peer not established");
            }
            crate::sync::lock(&gate.pending).remove(&key);
        });
    }
}

/// A server verifier (rustls's) that also asks the [`Gate`], and refuses
/// a chain with a key weaker than `min_rsa_bits` (or a curve other than
/// P-256/P-384, or a SHA-1 or MD5 signature) saying so: rustls alone
/// refuses an RSA key under 2048 bits only when the handshake's signature
/// is checked, as a "BadSignature", and takes any key from 2048 bits up.
#[derive(Debug)]
pub struct ServerVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    gate: Gate,
    min_rsa_bits: u32,
}

impl ServerVerifier {
    pub fn new(
        inner: Arc<dyn ServerCertVerifier>,
        gate: Gate,
        min_rsa_bits: u32,
    ) -> ServerVerifier {
        ServerVerifier {
            inner,
            gate,
            min_rsa_bits,
        }
    }
}

/// A peer certificate weaker than we accept; its text is what the
/// exchange reports (rustls shows an `Other` certificate error by its
/// `Debug`, hence the same text there).
#[derive(thiserror::Error)]
#[error("too weak: {0}")]
pub struct TooWeak(pub String);

impl std::fmt::Debug for TooWeak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

fn weak_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    min_rsa_bits: u32,
) -> Result<(), rustls::Error> {
    for der in std::iter::once(end_entity).chain(intermediates) {
        // Unreadable to openssl after rustls read it: left to the chain's
        // own verdict.
        let Ok(cert) = X509::from_der(der) else {
            continue;
        };
        if let Some(w) = crate::xml::dsig::weak_certificate(&cert, min_rsa_bits) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(TooWeak(w))),
            )));
        }
    }
    Ok(())
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        weak_chain(end_entity, intermediates, self.min_rsa_bits)?;
        self.gate.check(end_entity)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client verifier (rustls's) that also asks the [`Gate`] (where
/// revocation is checked), and refuses a chain weaker than
/// `min_rsa_bits` saying so, as [`ServerVerifier`] does: rustls takes any
/// RSA key from 2048 bits up.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    gate: Option<Gate>,
    min_rsa_bits: u32,
}

impl ClientVerifier {
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        gate: Option<Gate>,
        min_rsa_bits: u32,
    ) -> ClientVerifier {
        ClientVerifier {
            inner,
            gate,
            min_rsa_bits,
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        weak_chain(end_entity, intermediates, self.min_rsa_bits)?;
        if let Some(gate) = &self.gate {
            gate.check(end_entity)?;
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
