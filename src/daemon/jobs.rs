//! The daemon's periodic jobs on tokio-cron-scheduler. Each job is a plain
//! function over the store (tested on its own); the scheduler only calls
//! them. Jobs keep no state of their own: everything they act on is in the
//! store, and they are added again at every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::{GatewayConfig, JobsConfig};
use crate::store::{backup, Listing, Order, QueueStore, Selector, State};
use crate::time::now_ms;

/// Writes today's export into `dir` and keeps the newest `keep` of them.
pub async fn backup_now(
    store: &dyn QueueStore,
    dir: &Path,
    keep: usize,
) -> Result<PathBuf, backup::BackupError> {
    std::fs::create_dir_all(dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let path = dir.join(format!("export-{stamp}.jsonl"));
    let tmp = dir.join(format!(".export-{stamp}.jsonl.tmp"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        backup::export(store, &mut f).await?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    let mut old: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("export-") && n.ends_with(".jsonl"))
        })
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(keep.max(1));
    for p in old.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
    Ok(path)
}

/// Deletes finished requests older than `retention`; returns how many.
pub async fn purge(
    store: &dyn QueueStore,
    retention: Duration,
    now: u64,
) -> Result<usize, crate::store::StoreError> {
    let cutoff = now.saturating_sub(retention.as_millis() as u64);
    let mut n = 0;
    // Finished requests only, by the state index. No seek by filing time:
    // that relies on ids carrying it, and a request kept past its
    // retention is worse than a longer walk once a day.
    for state in [State::Delivered, State::Dead, State::Cancelled] {
        let mut after = None;
        loop {
            let page = store
                .list(&Listing {
                    selector: Selector::state(state),
                    order: Order::Oldest,
                    after: after.take(),
                    limit: 500,
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.to_string());
            for r in &page {
                let finished = r
                    .delivered_ms
                    .or(r.attempts.last().map(|a| a.at_ms))
                    .unwrap_or(r.created_ms);
                if finished < cutoff {
                    // Never while a dossier of its case is being exported:
                    // it is removed by a later purge.
                    let Some(_purging) = crate::evidence::dossier::Purging::start(&r.case) else {
                        continue;
                    };
                    store.remove(&r.id).await?;
                    n += 1;
                }
            }
        }
    }
    // The ids of events sent about requests that are gone.
    store.purge_event_ids(cutoff).await?;
    Ok(n)
}

/// Flags open requests within `warning` of their ZUP deadline (for a
/// number of days, that many working days in Serbia); returns how many
/// were newly flagged.
pub async fn deadline_watch(
    store: &dyn QueueStore,
    warning: Duration,
    now: u64,
) -> Result<usize, crate::store::StoreError> {
    let limit = crate::time::calendar::warning_until(now, warning);
    let mut n = 0;
    // Open requests by deadline: those already flagged stay in the index
    // until they finish, so the walk grows with them, not with the queue.
    for r in store.by_deadline(limit, usize::MAX).await? {
        if r.at_risk {
            continue;
        }
        let flagged = store
            .update(&r.id, &|x| {
                crate::lifecycle::apply(x, &crate::lifecycle::Event::AtRisk, now)
            })
            .await?;
        if flagged.is_some() {
            n += 1;
            tracing::warn!(request = %r.id, case = %r.case, service = %r.service, state = r.state.name(), deadline_ms = r.deadline_ms, "request near its ZUP deadline");
        }
    }
    Ok(n)
}

/// Certificates of the gateway that expire within `warning`, with their expiry.
pub fn expiring_certificates(cfg: &GatewayConfig, warning: Duration) -> Vec<(PathBuf, String)> {
    let limit =
        openssl::asn1::Asn1Time::from_unix((now_ms() / 1000) as i64 + warning.as_secs() as i64);
    let Ok(limit) = limit else { return Vec::new() };
    let mut out = Vec::new();
    for p in [&cfg.gateway.tls_cert, &cfg.gateway.sign_cert] {
        let Ok(pem) = std::fs::read(p) else { continue };
        let Ok(cert) = openssl::x509::X509::from_pem(&pem) else {
            continue;
        };
        if cert.not_after() < limit {
            out.push((p.clone(), cert.not_after().to_string()));
        }
    }
    out
}

fn job<F, Fut>(cron: &str, f: F) -> Result<Job, tokio_cron_scheduler::JobSchedulerError>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let f = Arc::new(f);
    Job::new_async(cron, move |_, _| {
        let f = f.clone();
        Box::pin(async move {
            // Jobs write files and walk the store for long: keep them off
            // the async workers that serve the API.
            let h = tokio::runtime::Handle::current();
            let _ = tokio::task::spawn_blocking(move || h.block_on(f())).await;
        })
    })
}

/// Starts the scheduler with every job. Where several instances share a
/// store, the jobs that act on the whole store (backups, retention, the
/// deadline watch, audit checkpoints) run on one of them at a time.
pub async fn start(
    store: Arc<dyn QueueStore>,
    cfg: &GatewayConfig,
    data_dir: &Path,
) -> Result<JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
    let j: JobsConfig = cfg.jobs.clone();
    let sched = JobScheduler::new().await?;
    let (s, dir, keep) = (store.clone(), data_dir.join("backups"), j.backup_keep);
    sched
        .add(job(&j.backup_cron, move || {
            let (s, dir) = (s.clone(), dir.clone());
            async move {
                if !s.lead("jobs").await {
                    return;
                }
                match backup_now(&*s, &dir, keep).await {
                    Ok(p) => tracing::info!(path = %p.display(), "backup written"),
                    Err(e) => tracing::error!(error = %e, "backup failed"),
                }
            }
        })?)
        .await?;
    let (s, retention) = (store.clone(), j.retention);
    sched
        .add(job(&j.retention_cron, move || {
            let s = s.clone();
            async move {
                if !s.lead("jobs").await {
                    return;
                }
                match purge(&*s, retention, now_ms()).await {
                    Ok(n) => tracing::info!(removed = n, "retention purge"),
                    Err(e) => tracing::error!(error = %e, "retention purge failed"),
                }
            }
        })?)
        .await?;
    let (s, warning) = (store.clone(), j.deadline_warning);
    let cfg2 = cfg.clone();
    let cert_warning = j.cert_warning;
    let idem_ttl = j.idempotency_ttl;
    sched
        .add(job(&j.watch_cron, move || {
            let (s, cfg2) = (s.clone(), cfg2.clone());
            async move {
                for (p, when) in expiring_certificates(&cfg2, cert_warning) {
                    tracing::warn!(certificate = %p.display(), expires = %when, "certificate expires soon");
                }
                if !s.lead("jobs").await {
                    return;
                }
                if let Err(e) = deadline_watch(&*s, warning, now_ms()).await {
                    tracing::error!(error = %e, "deadline watch failed");
                }
                let before = now_ms().saturating_sub(idem_ttl.as_millis() as u64);
                if let Err(e) = s.purge_idempotency(before).await {
                    tracing::error!(error = %e, "idempotency expiry failed");
                }
            }
        })?)
        .await?;
    let (s, file) = (
        store.clone(),
        crate::audit::Checkpoints {
            path: data_dir.join("audit").join("checkpoints.log"),
        },
    );
    sched
        .add(Job::new_async(
            j.audit_checkpoint_cron.as_str(),
            move |_, _| {
                let (s, file) = (s.clone(), file.clone());
                Box::pin(async move {
                    // Instances sharing a store share one chain: one of
                    // them checkpoints it.
                    if !s.lead("jobs").await {
                        return;
                    }
                    if let Err(e) = crate::audit::checkpoint(&*s, &file).await {
                        tracing::error!(error = %e, "audit checkpoint failed");
                    }
                })
            },
        )?)
        .await?;
    sched.start().await?;
    Ok(sched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prelude::*;
    use crate::store::{RequestRecord, SledStore, State};

    fn rec(id: &str, state: State, created: u64, deadline: u64) -> RequestRecord {
        crate::lifecycle::record::testing::record()
            .id(id)
            .case("k")
            .state(state)
            .filed(created, deadline)
            .due((!state.is_terminal()).then_some(created))
            .build()
    }

    /// A warning of 3 days is 3 working days in Serbia: on Thursday
    /// 9 April 2026 at 20:00 there (before Orthodox Easter: Friday to
    /// Monday off), a deadline at the end of Wednesday the 15th is near
    /// (Tuesday, Wednesday: two working days), though 72 hours of plain
    /// time would not reach it; one at the end of Friday the 17th (the
    /// fourth working day) is not.
    #[tokio::test]
    async fn a_warning_in_days_counts_working_days_in_serbia() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("store"), 1 << 20).unwrap();
        let ms = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis() as u64
        };
        let now = ms("2026-04-09T20:00:00+02:00");
        let filed = now - 10 * 86_400_000;
        s.enqueue(vec![
            rec(
                "01W",
                State::Queued,
                filed,
                ms("2026-04-15T23:59:59.999+02:00"),
            ),
            rec(
                "01F",
                State::Queued,
                filed,
                ms("2026-04-17T23:59:59.999+02:00"),
            ),
        ])
        .await
        .unwrap();
        assert!(ms("2026-04-15T23:59:59.999+02:00") > now + 3 * 86_400_000);
        assert_eq!(
            deadline_watch(&*s, Duration::from_secs(3 * 86_400), now)
                .await
                .unwrap(),
            1
        );
        assert!(s.get("01W").await.unwrap().unwrap().at_risk);
        assert!(!s.get("01F").await.unwrap().unwrap().at_risk);
    }

    #[tokio::test]
    async fn retention_waits_for_a_dossier_export_of_the_case() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let now = 200 * day;
        let s = SledStore::open(&dir.path().join("store"), 1 << 20).unwrap();
        // Cases of their own: the export guard is the process's.
        let mut exported = rec("01A", State::Delivered, now - 100 * day, now);
        exported.case = "retention-test/exported".into();
        let mut other = rec("01B", State::Delivered, now - 100 * day, now);
        other.case = "retention-test/other".into();
        s.enqueue(vec![exported, other]).await.unwrap();
        let keep = Duration::from_secs(90 * 86_400);
        let export = crate::evidence::dossier::Exporting::start("retention-test/exported").await;
        assert_eq!(
            purge(&*s, keep, now).await.unwrap(),
            1,
            "only the other case"
        );
        assert!(
            s.get("01A").await.unwrap().is_some(),
            "kept while its dossier is exported"
        );
        drop(export);
        assert_eq!(purge(&*s, keep, now).await.unwrap(), 1);
        assert!(s.get("01A").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn purge_watch_backup_and_restore() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let now = 200 * day;
        let s = SledStore::open(&dir.path().join("store"), 1 << 20).unwrap();
        s.enqueue(vec![
            rec("01A", State::Delivered, now - 100 * day, now),
            rec("01B", State::Delivered, now - 10 * day, now),
            rec("01C", State::Queued, now - 13 * day, now + 2 * day),
            rec("01D", State::Queued, now, now + 15 * day),
        ])
        .await
        .unwrap();
        s.put_document("01B", b"<signed/>").await.unwrap();
        s.update("01B", &|r| {
            r.document_id = Some("01B".into());
            true
        })
        .await
        .unwrap();
        assert_eq!(
            purge(&*s, Duration::from_secs(90 * 86_400), now)
                .await
                .unwrap(),
            1
        );
        assert!(s.get("01A").await.unwrap().is_none());
        assert_eq!(
            deadline_watch(&*s, Duration::from_secs(3 * 86_400), now)
                .await
                .unwrap(),
            1
        );
        assert!(s.get("01C").await.unwrap().unwrap().at_risk);
        assert_eq!(
            deadline_watch(&*s, Duration::from_secs(3 * 86_400), now)
                .await
                .unwrap(),
            0,
            "flagged once"
        );

        let backups = dir.path().join("backups");
        let p = backup_now(&*s, &backups, 2).await.unwrap();
        let fresh = SledStore::open(&dir.path().join("restored"), 1 << 20).unwrap();
        let counts = backup::import(
            &*fresh,
            &mut std::io::BufReader::new(std::fs::File::open(&p).unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(
            counts,
            backup::Counts {
                requests: 3,
                documents: 1,
                audit: 0,
                lost: 0,
            }
        );
        for id in ["01B", "01C", "01D"] {
            assert_eq!(fresh.get(id).await.unwrap(), s.get(id).await.unwrap());
        }
        assert_eq!(
            fresh.document("01B").await.unwrap().as_deref(),
            Some(&b"<signed/>"[..])
        );
        assert_eq!(
            fresh.due(u64::MAX - 1, 10).await.unwrap(),
            s.due(u64::MAX - 1, 10).await.unwrap()
        );
        let again = backup::import(
            &*fresh,
            &mut std::io::BufReader::new(std::fs::File::open(&p).unwrap()),
        )
        .await;
        assert!(matches!(again, Err(backup::BackupError::NotEmpty)));
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(1100));
            backup_now(&*s, &backups, 2).await.unwrap();
        }
        assert_eq!(
            std::fs::read_dir(&backups).unwrap().count(),
            2,
            "only the newest two are kept"
        );
    }
}
