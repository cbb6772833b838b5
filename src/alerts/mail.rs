//! The mail server: SMTP with STARTTLS (or implicit TLS) and
//! authentication, by `lettre` on our rustls, trusting the system's roots
//! and `alerts.tls_ca`. Plain SMTP only to a loopback address, where no
//! one is between us and the server.

use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{AlertsConfig, SmtpSecurity};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    #[error("alerts.{key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("the mail could not be made: {0}")]
    Message(String),
    #[error("the mail server: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// Sends to the configured operators.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Mailer {
    /// None when `alerts.to` is empty; an error names the key at fault.
    pub fn configured(cfg: &AlertsConfig) -> Result<Option<Mailer>, MailError> {
        let bad = |key, message: String| MailError::Config { key, message };
        if cfg.to.is_empty() {
            return Ok(None);
        }
        let to = cfg
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| bad("to", format!("{t:?} is not an address: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| bad("from", format!("{:?} is not an address: {e}", cfg.from)))?;
        let smtp = cfg.smtp.as_deref().ok_or_else(|| {
            bad(
                "smtp",
                "operators are named in alerts.to: name the mail server, host:port".into(),
            )
        })?;
        let (host, port) = smtp
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_matches(['[', ']']).to_owned(),
                    p.parse::<u16>().ok()?,
                ))
            })
            .ok_or_else(|| {
                bad(
                    "smtp",
                    format!("{smtp:?}: write host:port, e.g. mail.opstina.rs:587"),
                )
            })?;
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        let tls = || -> Result<TlsParameters, MailError> {
            let mut b = TlsParameters::builder(host.clone());
            if let Some(ca) = &cfg.tls_ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| bad("tls_ca", format!("{}: {e}", ca.display())))?;
                // A bundle: every certificate in it.
                b = b.add_root_certificate(
                    Certificate::from_pem(&pem)
                        .map_err(|e| bad("tls_ca", format!("{}: {e}", ca.display())))?,
                );
            }
            b.build_rustls().map_err(|e| bad("tls_ca", e.to_string()))
        };
        let tls = match cfg.security {
            SmtpSecurity::Starttls => Tls::Required(tls()?),
            SmtpSecurity::Tls => Tls::Wrapper(tls()?),
            SmtpSecurity::None if loopback => Tls::None,
            SmtpSecurity::None => {
                return Err(bad(
                    "security",
                    format!(
                        "\"none\" (plain SMTP) is allowed only to a loopback address, not {host:?}"
                    ),
                ))
            }
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        match (&cfg.user, &cfg.password) {
            (Some(u), Some(p)) => b = b.credentials(Credentials::new(u.clone(), p.clone())),
            (None, None) => {}
            _ => return Err(bad("user", "user and password go together".into())),
        }
        Ok(Some(Mailer {
            transport: b.build(),
            from,
            to,
        }))
    }

    /// One mail to every operator.
    pub async fn send(&self, subject: &str, body: &str) -> Result<(), MailError> {
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            m = m.to(t.clone());
        }
        let m = m
            .body(body.to_owned())
            .map_err(|e| MailError::Message(e.to_string()))?;
        self.transport.send(m).await?;
        Ok(())
    }
}
