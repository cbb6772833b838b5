//! The store on a full disk, for real: the daemon's data folder on a small
//! tmpfs (the test runs as root, as CI does), filled to the last byte.
//! Accepts must fail with `507` (insufficient storage) and `/readyz` must
//! say so (503); requests whose answers come while the disk is full wait;
//! once space returns, the queue goes on and nothing accepted is lost or
//! corrupted: every document in its case folder is the one the store
//! serves, byte for byte, and verifies under xmlsec1; the audit chain is
//! whole.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

async fn ready(http: &reqwest::Client, port: u16) -> u16 {
    http.get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_accepts_with_507_is_not_ready_and_recovers_whole_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24M", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    let _mount = Mount(mnt.clone());
    let data = mnt.join("data");
    // The client's case folders on a small disk of their own.
    let cases = data.join("cases").join("demo-backoffice");
    std::fs::create_dir_all(&cases).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4M", "tmpfs"])
        .arg(&cases)
        .status()
        .unwrap();
    assert!(ok.success());
    let _cases_mount = Mount(cases.clone());
    let port = free_port();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // the log outside the full disk
    let daemon = start_daemon_logged(&data, port, &[], &dir.path().join("daemon.log"));

    let mut accepted = Vec::new();
    for i in 0..5 {
        accepted.push(submit(&http, port, i).await.unwrap());
    }
    wait_delivered(&http, port, &accepted).await;
    assert_eq!(ready(&http, port).await, 200);

    // Answers slowed down, so that some come while the disk is full.
    let r = http
        .put(format!("{}/faults", daemon.1))
        .body("*:latency=1500ms")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    for i in 60..65 {
        accepted.push(submit(&http, port, i).await.unwrap());
    }

    // fill the disk to the last byte
    let filler = mnt.join("filler");
    assert!(fill(&filler) > 0);
    let mut refused = 0;
    for i in 5..60 {
        let r = http
            .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
            .bearer_auth("demo-backoffice")
            .header("content-type", "application/json")
            .body(format!(r#"{{"case":{{"number":"9/2026","legal_basis":"ZUP","official":"o"}},"purpose":"ex officio data for the case","service":"{}","subject":{}}}"#, BODIES[i % 6].0, BODIES[i % 6].1))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}; daemon log:\n{}", daemon.log()));
        match r.status().as_u16() {
            202 => accepted.push(
                r.json::<serde_json::Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            // a full disk is its own answer, not "try again"
            507 => {
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["type"], "urn:jum-gateway:problem:insufficient-storage");
                assert!(!v["detail"].as_str().unwrap().contains("bytes free"), "{v}");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
        if refused >= 3 {
            break;
        }
    }
    assert!(refused >= 3, "a full disk must refuse accepts");
    assert_eq!(
        ready(&http, port).await,
        503,
        "readyz reports the store not writable"
    );

    // The slowed answers come while the disk is full: what they brought
    // cannot be written, and is to be fetched again.
    let end = Instant::now() + Duration::from_secs(60);
    while !daemon.log().contains("cannot record the attempt") {
        assert!(
            Instant::now() < end,
            "no answer came while the disk was full; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // space returns: the same process must become ready again by itself
    std::fs::remove_file(&filler).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while ready(&http, port).await != 200 {
        assert!(
            Instant::now() < end,
            "/readyz still not ready 20 s after space returned; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..5 {
        let (service, subject) = BODIES[i % BODIES.len()];
        let r = http
            .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
            .bearer_auth("demo-backoffice")
            .header("content-type", "application/json")
            .body(format!(r#"{{"case":{{"number":"10/2026","legal_basis":"ZUP","official":"o"}},"purpose":"ex officio data for the case","service":"{service}","subject":{subject}}}"#))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(
            status,
            202,
            "accept {i} after space returned: {v}; daemon log:\n{}",
            daemon.log()
        );
        accepted.push(v["id"].as_str().unwrap().to_owned());
    }
    wait_delivered(&http, port, &accepted).await;

    // The case folders' disk fills (the store's has room): deliveries fail
    // and are tried again, and none is taken as done with part of its
    // document; once space returns they are delivered.
    let filler = cases.join("filler");
    assert!(fill(&filler) > 0);
    let failed = || daemon.log().matches("delivery failed; will retry").count();
    let before = failed();
    let mut late = Vec::new();
    for i in 70..73 {
        late.push(submit(&http, port, i).await.unwrap());
    }
    // Until each has failed once, or (what must not be) was delivered.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let mut settled = 0;
        for id in &late {
            let v = get_json(
                &http,
                &format!("http://127.0.0.1:{port}/api/v1/requests/{id}"),
                Some("demo-backoffice"),
            )
            .await;
            let tried = daemon
                .log()
                .lines()
                .any(|l| l.contains("delivery failed") && l.contains(id.as_str()));
            settled += usize::from(tried || v["state"] == "delivered");
        }
        if settled == late.len() {
            break;
        }
        assert!(
            Instant::now() < end,
            "the deliveries were not tried in 60 s; daemon log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(&filler).unwrap();
    accepted.extend(late);
    wait_delivered(&http, port, &accepted).await;
    whole(&http, port, &data, &accepted).await;
    // The control: the full folders were met (after the check above, which
    // names a document delivered in part).
    assert!(
        failed() > before,
        "no delivery failed on the full case folders"
    );

    // and after a restart the store opens clean with everything in it
    drop(daemon);
    let _daemon = start_daemon_logged(&data, port, &[], &dir.path().join("daemon.log"));
    wait_delivered(&http, port, &accepted).await;
    whole(&http, port, &data, &accepted).await;
}

/// Nothing lost or corrupted: each request's document in its case folder
/// is byte for byte the one the store serves and verifies under xmlsec1
/// against the development CA; `audit verify` finds the chain intact, with
/// at least its three entries per request (accepted, sent, answered).
async fn whole(http: &reqwest::Client, port: u16, data: &Path, ids: &[String]) {
    let base = format!("http://127.0.0.1:{port}");
    let ca = data.join("certs/ca.pem");
    for id in ids {
        let v = get_json(
            http,
            &format!("{base}/api/v1/requests/{id}"),
            Some("demo-backoffice"),
        )
        .await;
        let r = RequestView::of(&v);
        let file = data.join("cases").join(r.folder()).join(r.file());
        assert_file_is_the_served_document(http, &base, id, &file, &ca).await;
    }
    let o = jumgw()
        .args(["audit", "verify", "--url", &base])
        .env("JUMGW_TOKEN", "demo-admin")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let entries: usize = out
        .strip_prefix("intact: ")
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(entries >= 3 * ids.len(), "{out}");
}
