//! LISTEN/NOTIFY: what other instances announce (work made due, pauses,
//! events) wakes this one; otherwise it sleeps until its next due time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{clock_offset, why, Shared};
use crate::store::Pause;
use crate::sync::read;

pub(super) const WORK: &str = "jumgw_work";
pub(super) const GATES: &str = "jumgw_gates";
pub(super) const EVENTS: &str = "jumgw_events";
pub(super) const NOTIFY_WORK: &str = "NOTIFY jumgw_work";
pub(super) const NOTIFY_GATES: &str = "NOTIFY jumgw_gates";
pub(super) const NOTIFY_EVENTS: &str = "NOTIFY jumgw_events";

pub(super) const PAUSES: &str = "SELECT registry, paused, paused_until FROM gates WHERE pause_set";

pub(super) fn pauses_of(rows: Vec<tokio_postgres::Row>) -> Vec<Pause> {
    rows.into_iter()
        .map(|r| Pause {
            registry: r.get(0),
            paused: r.get(1),
            until: r.get::<_, Option<i64>>(2).map(|u| u.max(0) as u64),
        })
        .collect()
}

/// The listener: wakes this instance's dispatcher and webhook sender on
/// other instances' `NOTIFY`, pushes pauses, and keeps the clock offset.
/// A task with a connection of its own (a pooled one would be handed to
/// others between its notifications).
pub(super) async fn listen(s: Arc<Shared>) {
    let s = &*s;
    use futures_util::StreamExt;
    let mut backoff = Duration::from_millis(200);
    while !s.stop.load(Ordering::Relaxed) {
        let mut config = s.config.clone();
        config.application_name("jumgw listener");
        let (client, mut conn) = match config.connect(tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %why(&e), url = %s.url, "PostgreSQL listener cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        // The connection's messages: notifications go to the loop below.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n.channel().to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %why(&e), "PostgreSQL listener lost its connection; reconnecting");
                        break;
                    }
                }
            }
        });
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {WORK}; LISTEN {GATES}; LISTEN {EVENTS}"))
            .await
        {
            tracing::warn!(error = %why(&e), "PostgreSQL listener cannot LISTEN; retrying");
            driver.abort();
            continue;
        }
        // Whatever was announced while this connection was down.
        wake(s, &client, &[WORK, GATES, EVENTS]).await;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut last_clock = std::time::Instant::now();
        loop {
            tokio::select! {
                ch = rx.recv() => {
                    let Some(ch) = ch else { break };
                    let mut got = vec![ch];
                    while let Ok(more) = rx.try_recv() {
                        got.push(more);
                    }
                    let got: Vec<&str> = got.iter().map(String::as_str).collect();
                    wake(s, &client, &got).await;
                }
                _ = tick.tick() => {
                    if s.stop.load(Ordering::Relaxed) {
                        driver.abort();
                        return;
                    }
                    if last_clock.elapsed() > Duration::from_secs(30) {
                        last_clock = std::time::Instant::now();
                        match clock_offset(&client).await {
                            Ok(o) => s.offset.store(o, Ordering::Relaxed),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        driver.abort();
    }
}

/// Passes on what the channels in `got` announced.
async fn wake(s: &Shared, client: &tokio_postgres::Client, got: &[&str]) {
    let watch = read(&s.watch).clone();
    if let Some(w) = watch {
        if got.contains(&GATES) {
            if let Ok(rows) = client.query(PAUSES, &[]).await {
                (w.pauses)(pauses_of(rows));
            }
            w.work.notify_one();
        }
        if got.contains(&WORK) {
            w.work.notify_one();
        }
    }
    if got.contains(&EVENTS) {
        if let Some(ev) = &*read(&s.events) {
            ev.notify.notify_one();
        }
    }
}
