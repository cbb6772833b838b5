//! Webhook delivery per Standard Webhooks (standardwebhooks.com): each
//! event is POSTed as `{"type", "timestamp", "data"}` with `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">` under the client's secret.
//!
//! The queue is the store's outbox ([`crate::store::outbox`]): events are
//! written in the same transaction as the change they report, and removed
//! only after the client answered 2xx. A client that is down gets every
//! event when it is back; events of one client and case go one at a time in
//! the order they were written (head of line), other cases do not wait.
//! Retries back off exponentially with full jitter up to `webhooks.cap`,
//! without end: an event is dropped only if its client is no longer a
//! webhook client.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use rand::Rng;
use serde_json::json;
use tokio::sync::{watch, Notify, Semaphore};

use crate::config::{DeliveryMode, GatewayConfig, WebhookConfig};
use crate::store::{EventRule, OutEvent, QueueStore, RequestRecord, State};
use crate::time::{now_ms, Backoff, Jitter};

pub const REQUEST_DELIVERED: &str = "request.delivered";
pub const REQUEST_FAILED: &str = "request.failed";
pub const BUNDLE_COMPLETED: &str = "bundle.completed";
pub const DEADLINE_AT_RISK: &str = "request.deadline_at_risk";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook client: {0}")]
    Client(String),
    #[error("clients.{client}.webhook_secret: {reason}")]
    Secret { client: String, reason: String },
}

/// The signature header value for one message (Standard Webhooks v1).
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> Result<String, WebhookError> {
    let pkey = openssl::pkey::PKey::hmac(key).map_err(|e| WebhookError::Client(e.to_string()))?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)
        .map_err(|e| WebhookError::Client(e.to_string()))?;
    let mut input = Vec::with_capacity(id.len() + body.len() + 24);
    input.extend_from_slice(id.as_bytes());
    input.push(b'.');
    input.extend_from_slice(timestamp.to_string().as_bytes());
    input.push(b'.');
    input.extend_from_slice(body);
    let mac = signer
        .sign_oneshot_to_vec(&input)
        .map_err(|e| WebhookError::Client(e.to_string()))?;
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    ))
}

/// Where one client's events go.
struct Target {
    url: String,
    key: Vec<u8>,
}

/// Which clients get webhooks: the rule that raises their events.
pub fn event_rule(cfg: &GatewayConfig, notify: Arc<Notify>) -> EventRule {
    let hooked: HashSet<String> = cfg
        .clients
        .iter()
        .filter(|(_, c)| c.delivery == DeliveryMode::Webhook)
        .map(|(n, _)| n.clone())
        .collect();
    EventRule {
        rule: Arc::new(move |old, new| {
            if hooked.contains(new.client.as_str()) {
                request_events(old, new)
            } else {
                Vec::new()
            }
        }),
        notify,
    }
}

fn event(kind: &str, id: String, r: &RequestRecord, data: serde_json::Value) -> OutEvent {
    OutEvent {
        id,
        client: r.client.to_string(),
        case: r.case.to_string(),
        kind: kind.to_owned(),
        created_ms: now_ms(),
        data,
        attempts: 0,
        next_ms: 0,
        last_error: None,
    }
}

/// The events one record change raises: one for each [`Tell`] of it.
/// Pure.
///
/// [`Tell`]: crate::lifecycle::effects::Tell
pub fn request_events(old: &RequestRecord, new: &RequestRecord) -> Vec<OutEvent> {
    use crate::lifecycle::effects::{effects, Tell};
    effects(Some(old), new)
        .tell
        .into_iter()
        .map(|t| match t {
            Tell::AtRisk => event(
                DEADLINE_AT_RISK,
                format!("msg_{}_at_risk", new.id),
                new,
                json!({
                    "request_id": new.id, "case": new.case, "service": new.service,
                    "state": new.state.name(), "deadline_ms": new.deadline_ms,
                }),
            ),
            Tell::Delivered => event(REQUEST_DELIVERED, format!("msg_{}_delivered", new.id), new, {
                let mut data = json!({
                    "request_id": new.id, "case": new.case, "service": new.service,
                    "registry": new.registry, "document_id": new.document_id,
                    "document_url": new.document_id.as_ref().map(|d| format!("/api/v1/documents/{d}/content")),
                    "delivered_ms": new.delivered_ms,
                });
                // X-Road: the message that brought the document and what
                // came with it, each to fetch from the API (a signed-XML
                // document's event is as it was).
                if let (Some(m), Some(d)) = (new.attempts.last().and_then(|a| a.message_id.as_deref()), &new.document_id) {
                    data["message_id"] = json!(m);
                    data["attachments"] = json!(new.attachments.iter().enumerate().map(|(i, a)| json!({
                        "n": i + 1, "content_id": a.content_id, "content_type": a.content_type,
                        "name": a.name, "size": a.size, "sha256": a.sha256,
                        "url": format!("/api/v1/documents/{d}/attachments/{}", i + 1),
                    })).collect::<Vec<_>>());
                }
                data
            }),
            Tell::Failed => event(
                REQUEST_FAILED,
                // An administrator may retry a dead request, and it may
                // fail again: that is another event.
                format!("msg_{}_failed_{}", new.id, new.attempts.len()),
                new,
                json!({
                    "request_id": new.id, "case": new.case, "service": new.service,
                    "state": new.state.name(),
                    "error": new.error.as_deref().map(crate::ids::redact_text),
                }),
            ),
        })
        .collect()
}

/// `bundle.completed` for a client's requests in a case, if all of them
/// have finished. Its id names the requests, so that the same set is
/// reported once however many tasks notice it.
pub fn bundle_event(client: &str, case: &str, recs: &[RequestRecord]) -> Option<OutEvent> {
    let mine: Vec<&RequestRecord> = recs.iter().filter(|r| r.client == client).collect();
    if mine.is_empty() || !mine.iter().all(|r| r.state.is_terminal()) {
        return None;
    }
    // The states are in it too: a case that completes again after an
    // administrator retried a dead request is reported again.
    let mut ids: Vec<String> = mine
        .iter()
        .map(|r| format!("{}={}", r.id, r.state.name()))
        .collect();
    ids.sort_unstable();
    let digest = openssl::sha::sha256(format!("{client}\0{case}\0{}", ids.join(",")).as_bytes());
    let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let delivered = mine.iter().filter(|r| r.state == State::Delivered).count();
    Some(OutEvent {
        id: format!("msg_bundle_{tag}"),
        client: client.to_owned(),
        case: case.to_owned(),
        kind: BUNDLE_COMPLETED.to_owned(),
        created_ms: now_ms(),
        data: json!({
            "case": case,
            "delivered": delivered,
            "failed": mine.len() - delivered,
            "requests": mine.iter().map(|r| json!({
                "id": r.id, "service": r.service, "state": r.state.name(),
                "document_id": r.document_id,
            })).collect::<Vec<_>>(),
        }),
        attempts: 0,
        next_ms: 0,
        last_error: None,
    })
}

/// The sender: one task, a bounded number of POSTs in flight.
pub struct Webhooks {
    store: Arc<dyn QueueStore>,
    targets: BTreeMap<String, Target>,
    http: reqwest::Client,
    cfg: WebhookConfig,
    notify: Arc<Notify>,
    in_flight: Arc<Semaphore>,
    /// Events being sent now (by sequence number).
    busy: Mutex<HashSet<u64>>,
}

use crate::sync::lock;

impl Webhooks {
    pub fn new(
        cfg: &GatewayConfig,
        store: Arc<dyn QueueStore>,
        notify: Arc<Notify>,
    ) -> Result<Arc<Webhooks>, WebhookError> {
        let mut targets = BTreeMap::new();
        for (name, c) in &cfg.clients {
            if c.delivery != DeliveryMode::Webhook {
                continue;
            }
            let key = crate::config::webhook_key(c.webhook_secret.as_deref().unwrap_or(""))
                .map_err(|reason| WebhookError::Secret {
                    client: name.clone(),
                    reason,
                })?;
            targets.insert(
                name.clone(),
                Target {
                    url: c.webhook_url.clone().unwrap_or_default(),
                    key,
                },
            );
        }
        let mut b = reqwest::Client::builder()
            .timeout(cfg.webhooks.timeout)
            .connect_timeout(cfg.webhooks.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.webhooks.tls_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| WebhookError::Client(format!("{}: {e}", ca.display())))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| WebhookError::Client(format!("{}: {e}", ca.display())))?
            {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Arc::new(Webhooks {
            store,
            targets,
            http,
            cfg: cfg.webhooks.clone(),
            notify,
            in_flight: Arc::new(Semaphore::new(16)),
            busy: Mutex::new(HashSet::new()),
        }))
    }

    /// Runs until `stop`; POSTs in flight are finished first.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let me = self.clone();
        crate::sync::rounds("webhooks", &self.notify, stop, |tasks| {
            Box::pin(me.clone().round(tasks))
        })
        .await
    }

    async fn round(
        self: Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Result<Duration, crate::store::StoreError> {
        // Instances sharing a store send webhooks one at a time, so that
        // each case's events go out once and in order; the others stand by.
        if !self.store.lead("webhooks").await {
            return Ok(Duration::from_secs(2));
        }
        let now = now_ms();
        let mut heads: HashSet<(String, String)> = HashSet::new();
        let mut earliest: Option<u64> = None;
        let waiting = self.store.outbox(10_000).await?;
        if !waiting.is_empty() {
            // An event is sent only once the change that raised it is
            // durable: else a crash loses the change (sled writes it out
            // within `sled_flush_ms`), it is made again with another time,
            // and the client gets one webhook id with two bodies.
            self.store.flush().await?;
        }
        for (seq, ev) in waiting {
            // The operators' alerts are mailed, not posted.
            if ev.is_alert() {
                continue;
            }
            // Only the oldest event of a client's case may go.
            if !heads.insert((ev.client.clone(), ev.case.clone())) {
                continue;
            }
            if lock(&self.busy).contains(&seq) {
                continue;
            }
            if ev.next_ms > now {
                earliest = Some(earliest.map_or(ev.next_ms, |e| e.min(ev.next_ms)));
                continue;
            }
            if !self.targets.contains_key(&ev.client) {
                tracing::warn!(event = %ev.id, client = %ev.client, "dropping an event: the client no longer takes webhooks");
                self.store.outbox_done(seq).await?;
                continue;
            }
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                // Woken when a send finishes.
                break;
            };
            if !lock(&self.busy).insert(seq) {
                continue;
            }
            // The list may be stale: a send that finished since it was
            // read has removed or rescheduled the event (before leaving
            // `busy`), so read it again now that it is ours.
            let ev = match self.store.event(seq).await {
                Ok(Some(ev)) if ev.next_ms <= now => ev,
                other => {
                    lock(&self.busy).remove(&seq);
                    other?;
                    continue;
                }
            };
            let me = self.clone();
            tasks.spawn(async move {
                me.send(seq, ev).await;
                drop(permit);
            });
        }
        Ok(Duration::from_millis(earliest.map_or(5_000, |e| {
            e.saturating_sub(now_ms()).clamp(1, 5_000)
        })))
    }

    async fn send(self: Arc<Self>, seq: u64, mut ev: OutEvent) {
        let result = self.post(&ev).await;
        crate::metrics::webhook(result.is_ok());
        let recorded = match result {
            Ok(()) => {
                tracing::info!(event = %ev.id, kind = %ev.kind, client = %ev.client, "webhook delivered");
                match self.after_sent(&ev).await {
                    Ok(()) => self.store.outbox_done(seq).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                ev.attempts += 1;
                // Full jitter, but never sooner than a tenth of the base.
                let backoff = Backoff {
                    base: self.cfg.base,
                    factor: 2.0,
                    max_steps: 29,
                    cap: self.cfg.cap,
                    jitter: Jitter::Full,
                    floor: self.cfg.base / 10,
                };
                let delay = backoff.delay(ev.attempts, rand::rng().random());
                ev.next_ms = now_ms() + delay.as_millis() as u64;
                tracing::warn!(event = %ev.id, client = %ev.client, attempts = ev.attempts, error = %e, "webhook failed; will retry");
                ev.last_error = Some(e);
                self.store.outbox_retry(seq, &ev).await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(event = %ev.id, error = %e, "cannot record a webhook's outcome; it will be sent again");
        }
        lock(&self.busy).remove(&seq);
        self.notify.notify_one();
    }

    /// After a request's last event went out, its case may be complete:
    /// raise `bundle.completed` (queued behind it, so it arrives after).
    async fn after_sent(&self, ev: &OutEvent) -> Result<(), crate::store::StoreError> {
        if ev.kind != REQUEST_DELIVERED && ev.kind != REQUEST_FAILED {
            return Ok(());
        }
        let recs = self.store.by_case(&ev.case).await?;
        if let Some(b) = bundle_event(&ev.client, &ev.case, &recs) {
            self.store.emit(vec![b]).await?;
        }
        Ok(())
    }

    async fn post(&self, ev: &OutEvent) -> Result<(), String> {
        let target = self
            .targets
            .get(&ev.client)
            .ok_or_else(|| "the client no longer takes webhooks".to_owned())?;
        let timestamp =
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ev.created_ms as i64)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = serde_json::to_vec(&json!({
            "type": ev.kind,
            "timestamp": timestamp,
            "data": ev.data,
        }))
        .map_err(|e| e.to_string())?;
        // The signed timestamp is the send time: receivers reject old ones
        // to stop replays, and a retried event must still be accepted.
        let ts = now_ms() / 1000;
        let sig = sign(&target.key, &ev.id, ts, &body).map_err(|e| e.to_string())?;
        let resp = self
            .http
            .post(&target.url)
            .header("webhook-id", &ev.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                msg
            })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the receiver answered {}", resp.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference libraries.
        let key = crate::config::webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    fn rec(id: &str, state: State) -> RequestRecord {
        let mut r = crate::lifecycle::record::testing::record()
            .client("hook")
            .now(Duration::from_secs(86_400))
            .build();
        r.id = crate::ids::RequestId::named(id);
        r.state = state;
        r
    }

    #[test]
    fn changes_raise_the_right_events() {
        let q = rec("A", State::Queued);
        let mut d = q.clone();
        d.state = State::Delivered;
        d.document_id = Some("A".into());
        let e = request_events(&q, &d);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, REQUEST_DELIVERED);
        assert_eq!(e[0].data["document_url"], "/api/v1/documents/A/content");
        assert!(request_events(&d, &d).is_empty(), "no change, no event");
        let mut dead = q.clone();
        dead.state = State::Dead;
        dead.error = Some("NotFound for 0512981717776".into());
        let e = request_events(&q, &dead);
        assert_eq!(e[0].kind, REQUEST_FAILED);
        assert!(!e[0].data.to_string().contains("0512981717776"));
        let mut risk = q.clone();
        risk.at_risk = true;
        assert_eq!(request_events(&q, &risk)[0].kind, DEADLINE_AT_RISK);
        assert!(e
            .iter()
            .chain(&request_events(&q, &d))
            .all(|e| e.data.get("attachments").is_none()));
    }

    /// A document that came by X-Road: its event names the message and
    /// lists each attachment with the URL to fetch it.
    #[test]
    fn an_x_road_delivery_lists_its_attachments_and_message() {
        let q = rec("B", State::Queued);
        let mut d = q.clone();
        d.state = State::Delivered;
        d.document_id = Some("B".into());
        d.attempts.push(crate::lifecycle::AttemptRecord {
            at_ms: 1,
            duration_ms: 1,
            http_status: Some(200),
            outcome: crate::lifecycle::OutcomeKind::Document,
            detail: String::new(),
            message_id: Some("5f1c-uuid".into()),
        });
        d.attachments.push(crate::lifecycle::AttachmentRecord {
            document_id: "B.attachment-1".into(),
            content_id: "plan@registry".into(),
            content_type: "application/pdf".into(),
            name: Some("plan.pdf".into()),
            size: 5,
            sha256: "ab".repeat(32),
        });
        let e = request_events(&q, &d);
        assert_eq!(e[0].data["message_id"], "5f1c-uuid");
        assert_eq!(
            e[0].data["attachments"],
            serde_json::json!([{
                "n": 1, "content_id": "plan@registry", "content_type": "application/pdf",
                "name": "plan.pdf", "size": 5, "sha256": "ab".repeat(32),
                "url": "/api/v1/documents/B/attachments/1",
            }])
        );
    }

    #[test]
    fn a_bundle_completes_once_every_request_of_the_client_finished() {
        let mut a = rec("A", State::Delivered);
        let b = rec("B", State::Retrying);
        let mut other = rec("C", State::Queued);
        other.client = "someone-else".into();
        assert!(bundle_event("hook", "1/2026", &[a.clone(), b.clone(), other.clone()]).is_none());
        let mut b2 = b.clone();
        b2.state = State::Dead;
        let e1 = bundle_event("hook", "1/2026", &[a.clone(), b2.clone(), other.clone()]).unwrap();
        let e2 = bundle_event("hook", "1/2026", &[b2.clone(), a.clone()]).unwrap();
        assert_eq!(e1.id, e2.id, "the same set has one id, in any order");
        let mut b3 = b2.clone();
        b3.state = State::Delivered;
        let again = bundle_event("hook", "1/2026", &[a.clone(), b3]).unwrap();
        assert_ne!(
            e1.id, again.id,
            "completed again after a retry: reported again"
        );
        assert_eq!(e1.data["delivered"], 1);
        assert_eq!(e1.data["failed"], 1);
        a.id = crate::ids::RequestId::named("A2");
        let e3 = bundle_event("hook", "1/2026", &[a, b2]).unwrap();
        assert_ne!(e1.id, e3.id);
    }
}
