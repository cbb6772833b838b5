//! Alerts for people: the operators are mailed when something needs
//! one of them — a request gone dead, a ZUP deadline at risk, a registry's
//! breaker open or a registry paused for long, a certificate near its
//! end, the audit trail broken, the store's disk nearly full, a key's
//! PKCS#11 token away for long.
//!
//! An alert is an event in the store's durable outbox (under the client
//! name [`OUTBOX_CLIENT`], which no configured client can have): those
//! about a request are written in the same transaction as the change that
//! raises them (see [`rule`]), the others by the [`watch`] when it sees
//! the condition. So an alert raised just before a crash is still sent
//! after it. [`Alerts::run`] sends what waits as one digest per
//! `alerts.interval`, so an outage sends one mail, not a thousand; a mail
//! that cannot be sent is tried again at the next interval.

pub mod mail;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::AlertsConfig;
use crate::lifecycle::{RequestRecord, State};
use crate::store::{OutEvent, QueueStore, StoreError};
use crate::time::{now_ms, rfc3339};

pub use crate::lang::Lang;
pub use mail::{MailError, Mailer};

/// The outbox's client name for alerts: not a valid client name in a
/// configuration (`@`), so never a back-office client's webhook.
pub const OUTBOX_CLIENT: &str = crate::store::outbox::ALERTS;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    RequestDead,
    DeadlineAtRisk,
    BreakerOpen,
    Paused,
    CertificateExpiring,
    AuditBroken,
    DiskLow,
    TokenAway,
    ServicesNotAllowed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::RequestDead => "request-dead",
            Kind::DeadlineAtRisk => "deadline-at-risk",
            Kind::BreakerOpen => "breaker-open",
            Kind::Paused => "paused",
            Kind::CertificateExpiring => "certificate-expiring",
            Kind::AuditBroken => "audit-broken",
            Kind::DiskLow => "disk-low",
            Kind::TokenAway => "token-away",
            Kind::ServicesNotAllowed => "services-not-allowed",
        }
    }

    /// What it is, in `lang` (English, Serbian Latin, Hungarian).
    fn says(self, lang: Lang) -> &'static str {
        lang.pick(match self {
            Kind::RequestDead => [
                "A request is dead: it will not be retried until an operator acts",
                "Zahtev je mrtav: neće biti ponovljen dok operater ne reaguje",
                "Egy kérés elhalt: nem próbálkozunk újra, amíg egy operátor nem lép",
            ],
            Kind::DeadlineAtRisk => [
                "A request is close to its ZUP deadline",
                "Zahtev je blizu roka po ZUP-u",
                "Egy kérés az ÁKE szerinti határidő közelében van",
            ],
            Kind::BreakerOpen => [
                "A registry keeps failing: its circuit breaker stays open",
                "Registar stalno ne odgovara: prekidač ostaje otvoren",
                "Egy nyilvántartás folyamatosan hibázik: a megszakító nyitva marad",
            ],
            Kind::Paused => [
                "A registry has been paused for long",
                "Registar je dugo pauziran",
                "Egy nyilvántartás régóta szüneteltetve van",
            ],
            Kind::CertificateExpiring => [
                "A certificate expires soon",
                "Sertifikat uskoro ističe",
                "Egy tanúsítvány hamarosan lejár",
            ],
            Kind::AuditBroken => [
                "The audit trail does not verify",
                "Revizorski trag nije ispravan",
                "A napló ellenőrzése sikertelen",
            ],
            Kind::DiskLow => [
                "The store's disk is nearly full",
                "Disk skladišta je skoro pun",
                "A tároló lemeze majdnem megtelt",
            ],
            Kind::TokenAway => [
                "A key's token (PKCS#11) has been away for long: nothing is signed with it",
                "Token ključa (PKCS#11) je dugo nedostupan: ništa se njime ne potpisuje",
                "Egy kulcs tokenje (PKCS#11) régóta nem elérhető: semmit nem írunk alá vele",
            ],
            Kind::ServicesNotAllowed => [
                "An X-Road security server does not allow services of our catalogue: their requests will be refused",
                "X-Road server bezbednosti ne dozvoljava servise iz našeg kataloga: njihovi zahtevi biće odbijeni",
                "Egy X-Road biztonsági szerver nem engedélyezi a katalógusunk szolgáltatásait: kéréseiket elutasítják",
            ],
        })
    }
}

/// One alert, as the outbox keeps it (`OutEvent::data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: Kind,
    /// What it is about: a request id, a registry, a certificate, a folder.
    pub about: String,
    /// Since when the condition holds (ms since the epoch).
    pub since_ms: u64,
    /// What else an operator needs; never personal data in clear.
    pub detail: String,
    /// Where in the dashboard to look, below its root (`/requests/ID`).
    pub link: String,
}

impl Alert {
    /// As an outbox event; `id` makes raising it twice harmless.
    pub fn event(&self, id: String) -> OutEvent {
        OutEvent {
            id,
            client: OUTBOX_CLIENT.into(),
            case: String::new(),
            kind: format!("alert.{}", self.kind.name()),
            created_ms: now_ms(),
            data: serde_json::to_value(self).unwrap_or(json!({})),
            attempts: 0,
            next_ms: 0,
            last_error: None,
        }
    }
}

/// The alerts a change of a request raises: dead, deadline at risk.
pub fn request_alerts(old: &RequestRecord, new: &RequestRecord) -> Vec<OutEvent> {
    use crate::lifecycle::effects::{effects, Tell};
    let mut out = Vec::new();
    for t in effects(Some(old), new).tell {
        match t {
            Tell::Failed if new.state == State::Dead => {
                let a = Alert {
                    kind: Kind::RequestDead,
                    about: new.id.to_string(),
                    since_ms: now_ms(),
                    detail: format!(
                        "{} · {} · {}",
                        new.service,
                        new.case,
                        crate::ids::redact_text(new.error.as_deref().unwrap_or(""))
                    ),
                    link: format!("/requests/{}", new.id),
                };
                out.push(a.event(format!("alert_{}_dead_{}", new.id, new.attempts.len())));
            }
            Tell::AtRisk => {
                let a = Alert {
                    kind: Kind::DeadlineAtRisk,
                    about: new.id.to_string(),
                    since_ms: now_ms(),
                    detail: format!(
                        "{} · {} · {} · {}",
                        new.service,
                        new.case,
                        new.state.name(),
                        rfc3339(new.deadline_ms)
                    ),
                    link: format!("/requests/{}", new.id),
                };
                out.push(a.event(format!("alert_{}_at_risk", new.id)));
            }
            _ => {}
        }
    }
    out
}

/// One digest: the subject line and the text, in `lang`.
pub fn digest(alerts: &[Alert], lang: Lang, dashboard: &str) -> (String, String) {
    let dashboard = dashboard.trim_end_matches('/');
    let mut kinds: Vec<Kind> = alerts.iter().map(|a| a.kind).collect();
    kinds.dedup();
    let subject = format!(
        "[jumgw] {} {}: {}",
        alerts.len(),
        lang.pick(["alert(s)", "upozorenje(a)", "riasztás"]),
        kinds
            .iter()
            .map(|k| k.says(lang))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut body = String::new();
    body.push_str(lang.pick([
        "The gateway needs an operator:",
        "Mrežnom prolazu je potreban operater:",
        "Az átjárónak operátorra van szüksége:",
    ]));
    body.push_str("\n\n");
    for a in alerts {
        body.push_str(&format!(
            "* {}\n  {}: {}\n  {}: {}\n  {}\n  {dashboard}{}\n\n",
            a.kind.says(lang),
            lang.pick(["About", "Odnosi se na", "Érintett"]),
            a.about,
            lang.pick(["Since", "Od", "Óta"]),
            rfc3339(a.since_ms),
            a.detail,
            a.link,
        ));
    }
    body.push_str(lang.pick([
        "One mail per interval gathers what happened in it (alerts.interval).",
        "Jedna poruka po intervalu sadrži sve što se u njemu desilo (alerts.interval).",
        "Egy levél intervallumonként mindent összegyűjt, ami benne történt (alerts.interval).",
    ]));
    body.push('\n');
    (subject, body)
}

/// Sends the outbox's alerts as digests.
pub struct Alerts {
    store: Arc<dyn QueueStore>,
    mailer: Mailer,
    cfg: AlertsConfig,
    lang: Lang,
}

impl Alerts {
    /// None when no operator is to be told (`alerts.to` empty).
    pub fn configured(
        cfg: &AlertsConfig,
        store: Arc<dyn QueueStore>,
    ) -> Result<Option<Alerts>, MailError> {
        let Some(mailer) = Mailer::configured(cfg)? else {
            return Ok(None);
        };
        Ok(Some(Alerts {
            store,
            mailer,
            lang: Lang::from_code(&cfg.language).unwrap_or(Lang::En),
            cfg: cfg.clone(),
        }))
    }

    /// Every `interval` until `stop`: one digest of what waits.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.round().await {
                tracing::error!(error = %e, "alerts: cannot read or record the outbox");
            }
        }
    }

    /// Sends the alerts that wait, if any, in one mail.
    pub async fn round(&self) -> Result<usize, StoreError> {
        // Instances sharing a store mail once.
        if !self.store.lead("alerts").await {
            return Ok(0);
        }
        let now = now_ms();
        let waiting: Vec<(u64, OutEvent)> = self
            .store
            .outbox(10_000)
            .await?
            .into_iter()
            .filter(|(_, e)| e.is_alert() && e.next_ms <= now)
            .collect();
        if waiting.is_empty() {
            return Ok(0);
        }
        let alerts: Vec<Alert> = waiting
            .iter()
            .filter_map(|(_, e)| serde_json::from_value(e.data.clone()).ok())
            .collect();
        let (subject, body) = digest(&alerts, self.lang, &self.cfg.dashboard_url);
        match self.mailer.send(&subject, &body).await {
            Ok(()) => {
                crate::metrics::alert_mail(true);
                tracing::info!(
                    alerts = alerts.len(),
                    to = self.cfg.to.len(),
                    "alerts mailed"
                );
                for (seq, _) in &waiting {
                    self.store.outbox_done(*seq).await?;
                }
                Ok(alerts.len())
            }
            Err(e) => {
                crate::metrics::alert_mail(false);
                tracing::warn!(error = %e, alerts = alerts.len(), "alerts could not be mailed; tried again at the next interval");
                for (seq, mut ev) in waiting {
                    ev.attempts += 1;
                    ev.next_ms = now + self.cfg.interval.as_millis() as u64 - 1;
                    ev.last_error = Some(e.to_string());
                    self.store.outbox_retry(seq, &ev).await?;
                }
                Ok(0)
            }
        }
    }
}

/// How long a condition must hold before it is told, by kind.
pub fn threshold(cfg: &AlertsConfig, kind: Kind) -> Duration {
    match kind {
        Kind::BreakerOpen => cfg.breaker_open,
        Kind::Paused => cfg.paused,
        Kind::TokenAway => cfg.token_away,
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: Kind) -> Alert {
        Alert {
            kind,
            about: "cadastre".into(),
            since_ms: 1_790_000_000_000,
            detail: "HTTP 503".into(),
            link: "/registries".into(),
        }
    }

    #[test]
    fn a_digest_says_what_since_when_and_where_to_look_in_each_language() {
        let alerts = [alert(Kind::BreakerOpen), alert(Kind::CertificateExpiring)];
        let (subject, body) = digest(&alerts, Lang::En, "https://gw.opstina.rs/ui/");
        assert!(
            subject.starts_with("[jumgw] 2 alert(s): A registry keeps failing"),
            "{subject}"
        );
        assert!(body.contains("Since: 2026-09-21T14:13:20.000Z"), "{body}");
        assert!(
            body.contains("https://gw.opstina.rs/ui/registries"),
            "{body}"
        );
        let (sr, _) = digest(&alerts, Lang::Sr, "x");
        assert!(sr.contains("Sertifikat uskoro ističe"), "{sr}");
        let (_, hu) = digest(&alerts, Lang::Hu, "x");
        assert!(hu.contains("Óta: 2026-09-21"), "{hu}");
    }

    #[test]
    fn an_alert_goes_through_the_outbox_and_back_unchanged() {
        let a = alert(Kind::DiskLow);
        let ev = a.event("alert_disk".into());
        assert_eq!(ev.client, OUTBOX_CLIENT);
        assert_eq!(ev.kind, "alert.disk-low");
        let back: Alert = serde_json::from_value(ev.data).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, a);
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;
    use crate::lifecycle::{apply, Event};

    #[test]
    fn a_request_going_dead_or_near_its_deadline_raises_one_alert_each_without_personal_data() {
        let open = crate::lifecycle::record::testing::record()
            .client("pisarnica")
            .case("351-12/2026")
            .legal("ZUP čl. 103", "marija", "p")
            .now(std::time::Duration::from_secs(86_400))
            .id("01JTEST")
            .build();
        let mut risky = open.clone();
        apply(&mut risky, &Event::AtRisk, 2_000);
        let raised = request_alerts(&open, &risky);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].kind, "alert.deadline-at-risk");
        assert_eq!(raised[0].id, "alert_01JTEST_at_risk");
        assert!(
            request_alerts(&risky, &risky).is_empty(),
            "raised again without a change"
        );
        let mut dead = risky.clone();
        dead.state = State::Dead;
        dead.error = Some("no entry for 0512981717776".into());
        let raised = request_alerts(&risky, &dead);
        assert_eq!(raised.len(), 1);
        let a: Alert =
            serde_json::from_value(raised[0].data.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.kind, Kind::RequestDead);
        assert_eq!(a.link, "/requests/01JTEST");
        assert!(
            !raised[0].data.to_string().contains("0512981717776"),
            "{a:?}"
        );
    }
}
