//! The store on a full disk, for real: the daemon's data folder on a small
//! tmpfs (the test runs as root, as CI does), filled to the last byte.
//! Accepts must fail with `507` (insufficient storage) and `/readyz` must
//! say so (503); once space returns, the queue goes on and nothing
//! accepted is lost or corrupted.

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
async fn a_full_disk_refuses_accepts_with_503_and_recovers_when_space_returns() {
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
    // and after a restart the store opens clean with everything in it
    drop(daemon);
    let _daemon = start_daemon_logged(&data, port, &[], &dir.path().join("daemon.log"));
    wait_delivered(&http, port, &accepted).await;
}
