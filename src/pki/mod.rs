//! Keys and X.509 certificates made with openssl: the development PKI
//! (`jumgw certs init`) and the throw-away PKIs of tests, including the
//! deliberately wrong ones (other CA, expired, wrong key usage).

pub mod fetch;
pub mod pkcs11;
pub mod revocation;
pub mod tls;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    EcP256,
}

pub fn new_key(kind: KeyKind) -> Result<PKey<Private>, openssl::error::ErrorStack> {
    match kind {
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?),
        KeyKind::EcP256 => {
            let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&g)?)
        }
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ca,
    /// XML signatures: digitalSignature + nonRepudiation.
    Signing,
    TlsServer,
    TlsClient,
    /// A leaf whose key usage forbids signing (keyEncipherment only).
    EncryptionOnly,
    /// A time-stamping authority (RFC 3161): timeStamping, critical, and
    /// nothing else, as RFC 3161 2.3 wants it.
    Tsa,
}

#[derive(Debug, Clone)]
pub struct CertSpec {
    pub common_name: String,
    pub organization: String,
    pub role: Role,
    /// DNS names and IP addresses for TLS server certificates.
    pub san: Vec<String>,
    /// Validity start relative to now, in days (negative: in the past).
    pub not_before_days: i64,
    /// Validity end relative to now, in days.
    pub not_after_days: i64,
    /// The OCSP responder the certificate names (its AIA).
    pub ocsp_url: Option<String>,
    /// The CRL distribution point the certificate names.
    pub crl_url: Option<String>,
}

impl CertSpec {
    pub fn new(cn: &str, role: Role) -> CertSpec {
        CertSpec {
            common_name: cn.to_owned(),
            organization: "jum-gateway development".to_owned(),
            role,
            san: Vec::new(),
            not_before_days: -1,
            not_after_days: if role == Role::Ca { 3650 } else { 825 },
            ocsp_url: None,
            crl_url: None,
        }
    }
}

fn time(days: i64) -> Result<Asn1Time, openssl::error::ErrorStack> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Asn1Time::from_unix(now + days * 86_400)
}

/// Issues a certificate for `key`; self-signed when `issuer` is `None`.
pub fn issue(
    spec: &CertSpec,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
) -> Result<X509, openssl::error::ErrorStack> {
    issue_for(
        spec,
        key,
        issuer.map(|(c, _)| c),
        issuer.map_or(key, |(_, k)| k),
    )
}

/// Issues a certificate for a public key (one whose private half lives
/// on a token, say), signed by `signer`, the key of `issuer` (or of the
/// certificate itself when `issuer` is `None`).
pub fn issue_for<T: HasPublic>(
    spec: &CertSpec,
    key: &PKeyRef<T>,
    issuer: Option<&X509>,
    signer: &PKeyRef<Private>,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, &spec.organization)?;
    name.append_entry_by_nid(Nid::COMMONNAME, &spec.common_name)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&name, |c| c.subject_name()))?;
    b.set_pubkey(key)?;
    let (nb, na) = (time(spec.not_before_days)?, time(spec.not_after_days)?);
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    match spec.role {
        Role::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()?,
            )?;
        }
        Role::Signing | Role::Tsa => {
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .non_repudiation()
                    .build()?,
            )?;
            if spec.role == Role::Tsa {
                b.append_extension(ExtendedKeyUsage::new().critical().time_stamping().build()?)?;
            }
        }
        Role::TlsServer | Role::TlsClient => {
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_encipherment()
                    .build()?,
            )?;
            let mut eku = ExtendedKeyUsage::new();
            if spec.role == Role::TlsServer {
                eku.server_auth();
            } else {
                eku.client_auth();
            }
            b.append_extension(eku.build()?)?;
        }
        Role::EncryptionOnly => {
            b.append_extension(BasicConstraints::new().build()?)?;
            b.append_extension(KeyUsage::new().critical().key_encipherment().build()?)?;
        }
    }
    if !spec.san.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in &spec.san {
            if s.parse::<std::net::IpAddr>().is_ok() {
                san.ip(s);
            } else {
                san.dns(s);
            }
        }
        let ext = san.build(&b.x509v3_context(issuer.map(|c| &**c), None))?;
        b.append_extension(ext)?;
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    // The openssl crate has no builder for these two; its config-string
    // form is the documented way.
    #[allow(deprecated)]
    {
        use openssl::x509::X509Extension;
        if let Some(u) = &spec.ocsp_url {
            let ctx = b.x509v3_context(issuer.map(|c| &**c), None);
            b.append_extension(X509Extension::new_nid(
                None,
                Some(&ctx),
                Nid::INFO_ACCESS,
                &format!("OCSP;URI:{u}"),
            )?)?;
        }
        if let Some(u) = &spec.crl_url {
            let ctx = b.x509v3_context(issuer.map(|c| &**c), None);
            b.append_extension(X509Extension::new_nid(
                None,
                Some(&ctx),
                Nid::CRL_DISTRIBUTION_POINTS,
                &format!("URI:{u}"),
            )?)?;
        }
    }
    b.sign(signer, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A key with its certificate, as PEM.
pub struct Issued {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl Issued {
    pub fn new(
        spec: &CertSpec,
        kind: KeyKind,
        issuer: Option<&Issued>,
    ) -> Result<Issued, openssl::error::ErrorStack> {
        let key = new_key(kind)?;
        let cert = issue(spec, &key, issuer.map(|i| (&i.cert, &i.key)))?;
        Ok(Issued { key, cert })
    }

    pub fn key_pem(&self) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.key.private_key_to_pem_pkcs8()
    }

    pub fn cert_pem(&self) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.cert.to_pem()
    }
}

/// Where the development PKI's certificates say their OCSP responder and
/// CRL are: the registry simulator's control endpoint at its default
/// address (config/simulator.toml); `serve --demo` points the gateway at
/// the embedded simulator's instead.
pub const DEV_OCSP: &str = "http://127.0.0.1:9440/ocsp";
pub const DEV_CRL: &str = "http://127.0.0.1:9440/ca.crl";

use crate::config::REGISTRIES;

/// Errors of the development PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("{path} exists; use --force to overwrite")]
    Exists { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("openssl: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    Token(#[from] pkcs11::Pkcs11Error),
}

/// One file written by [`init_dev`], for the report.
pub struct Written {
    pub path: std::path::PathBuf,
    /// `notAfter` of the certificate, or None for keys and bundles.
    pub expires: Option<String>,
}

/// The file names of the development PKI, relative to its folder.
pub mod files {
    pub const CA: &str = "ca.pem";
    pub const CA_KEY: &str = "ca.key";
    pub const GATEWAY_TLS: &str = "gateway-tls";
    pub const GATEWAY_SIGN: &str = "gateway-sign";
    /// What the gateway trusts: registry TLS servers and registry signers.
    pub const GATEWAY_TRUST: &str = "gateway-trust.pem";
    /// What registries trust: the gateway's TLS client and its signer.
    pub const REGISTRY_TRUST: &str = "registry-trust.pem";

    pub fn tls(registry: &str) -> String {
        format!("{registry}-tls")
    }
    pub fn sign(registry: &str) -> String {
        format!("{registry}-sign")
    }
}

fn write_file(path: &std::path::Path, data: &[u8], secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(io)?;
    #[cfg(unix)]
    if secret {
        // `mode` applies only on creation; an overwritten key is tightened too.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io)
}

/// Generates the development PKI in `dir`: a CA, the gateway's TLS client
/// and signing certificates, each registry's TLS server (SAN localhost,
/// 127.0.0.1) and signing certificates, and the trust bundles. Refuses to
/// overwrite anything unless `force`.
pub fn init_dev(dir: &std::path::Path, force: bool) -> Result<Vec<Written>, PkiError> {
    init_dev_with(dir, force, KeyKind::Rsa2048)
}

/// [`init_dev`] with the signing keys (gateway and registries) of `sign`.
pub fn init_dev_with(
    dir: &std::path::Path,
    force: bool,
    sign: KeyKind,
) -> Result<Vec<Written>, PkiError> {
    init_dev_on(dir, force, sign, None)
}

/// The URI of the gateway's TLS client key beside its seal on a token:
/// the seal's label with `-tls`.
pub fn tls_key_uri(seal: &str) -> String {
    match seal.find("object=") {
        Some(at) => {
            let tail = &seal[at + "object=".len()..];
            let end = tail.find([';', '?']).unwrap_or(tail.len());
            let at = at + "object=".len() + end;
            format!("{}-tls{}", &seal[..at], &seal[at..])
        }
        None => seal.to_owned(),
    }
}

/// [`init_dev_with`], the gateway's seal and TLS client keys made on the
/// token `seal` names (its label, and that label with `-tls`) instead of
/// in files: only their certificates are written.
pub fn init_dev_on(
    dir: &std::path::Path,
    force: bool,
    sign: KeyKind,
    seal: Option<&str>,
) -> Result<Vec<Written>, PkiError> {
    let mut names: Vec<String> = vec![
        files::CA.into(),
        files::CA_KEY.into(),
        files::GATEWAY_TRUST.into(),
        files::REGISTRY_TRUST.into(),
    ];
    for base in [
        files::GATEWAY_TLS.to_string(),
        files::GATEWAY_SIGN.to_string(),
    ]
    .into_iter()
    .chain(
        REGISTRIES
            .iter()
            .flat_map(|r| [files::tls(r), files::sign(r)]),
    ) {
        names.push(format!("{base}.pem"));
        names.push(format!("{base}.key"));
    }
    if !force {
        if let Some(p) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
            return Err(PkiError::Exists {
                path: p.display().to_string(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.display().to_string(),
        source,
    })?;

    let mut written = Vec::new();
    let mut made = Vec::new();
    let mut put =
        |name: &str, data: &[u8], secret: bool, expires: Option<String>| -> Result<(), PkiError> {
            let path = dir.join(name);
            write_file(&path, data, secret)?;
            written.push(Written { path, expires });
            Ok(())
        };
    let expiry = |c: &X509| Some(c.not_after().to_string());

    let ca = Issued::new(
        &CertSpec::new("jum-gateway development CA", Role::Ca),
        KeyKind::EcP256,
        None,
    )?;
    put(files::CA, &ca.cert_pem()?, false, expiry(&ca.cert))?;
    put(files::CA_KEY, &ca.key_pem()?, true, None)?;

    if let Some(uri) = seal {
        for (base, uri, spec, kind) in [
            (
                files::GATEWAY_TLS,
                tls_key_uri(uri),
                CertSpec::new("jum-gateway", Role::TlsClient),
                sign,
            ),
            (
                files::GATEWAY_SIGN,
                uri.to_owned(),
                CertSpec::new("jum-gateway signer", Role::Signing),
                sign,
            ),
        ] {
            let mut spec = spec;
            spec.ocsp_url = Some(DEV_OCSP.into());
            spec.crl_url = Some(DEV_CRL.into());
            let public = pkcs11::generate(&uri, kind, force)?;
            let cert = issue_for(&spec, &public, Some(&ca.cert), &ca.key)?;
            put(
                &format!("{base}.pem"),
                &cert.to_pem()?,
                false,
                expiry(&cert),
            )?;
            made.push(Written {
                path: uri.into(),
                expires: None,
            });
        }
    }
    let mut leaf = |base: &str, mut spec: CertSpec, kind: KeyKind| -> Result<(), PkiError> {
        spec.ocsp_url = Some(DEV_OCSP.into());
        spec.crl_url = Some(DEV_CRL.into());
        if seal.is_some() && (base == files::GATEWAY_TLS || base == files::GATEWAY_SIGN) {
            return Ok(());
        }
        let i = Issued::new(&spec, kind, Some(&ca))?;
        put(
            &format!("{base}.pem"),
            &i.cert_pem()?,
            false,
            expiry(&i.cert),
        )?;
        put(&format!("{base}.key"), &i.key_pem()?, true, None)
    };
    leaf(
        files::GATEWAY_TLS,
        CertSpec::new("jum-gateway", Role::TlsClient),
        KeyKind::EcP256,
    )?;
    leaf(
        files::GATEWAY_SIGN,
        CertSpec::new("jum-gateway signer", Role::Signing),
        sign,
    )?;
    for r in REGISTRIES {
        let mut tls = CertSpec::new(&format!("{r} registry"), Role::TlsServer);
        tls.san = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        leaf(&files::tls(r), tls, KeyKind::EcP256)?;
        leaf(
            &files::sign(r),
            CertSpec::new(&format!("{r} signer"), Role::Signing),
            sign,
        )?;
    }
    // One development CA issues everything, so both bundles hold it; in
    // production they differ (each side trusts the other's CA).
    put(files::GATEWAY_TRUST, &ca.cert_pem()?, false, None)?;
    put(files::REGISTRY_TRUST, &ca.cert_pem()?, false, None)?;
    written.extend(made);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_dev_writes_everything_once_with_private_keys_0600() {
        let d = tempfile::tempdir().unwrap();
        let w = init_dev(d.path(), false).unwrap();
        assert_eq!(w.len(), 4 + 2 * 2 + 3 * 2 * 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join("civil-sign.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            init_dev(d.path(), false),
            Err(PkiError::Exists { .. })
        ));
        let before = std::fs::read(d.path().join("ca.pem")).unwrap();
        init_dev(d.path(), true).unwrap();
        assert_ne!(before, std::fs::read(d.path().join("ca.pem")).unwrap());
    }

    #[test]
    fn leaf_chains_to_its_ca() {
        let ca = Issued::new(&CertSpec::new("Test CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let leaf = Issued::new(
            &CertSpec::new("signer", Role::Signing),
            KeyKind::EcP256,
            Some(&ca),
        )
        .unwrap();
        assert!(leaf.cert.verify(&ca.key).unwrap());
        assert_eq!(
            leaf.cert.issuer_name().to_der().unwrap(),
            ca.cert.subject_name().to_der().unwrap()
        );
    }
}
