//! A stopped store opened to be checked or salvaged (`jumgw store check`,
//! `store salvage`): no committer, no start-up check, no writes of ours;
//! when sled cannot open the store as it is, copies of it it can.

use std::path::{Path, PathBuf};

use super::open::{guarded, let_go, open_trees};
use super::*;

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()))?;
        } else {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// A stopped store opened to be checked or salvaged: no committer, no
/// start-up check, no writes of ours.
pub struct Repair {
    t: Option<Trees>,
    dir: PathBuf,
    /// The copy a salvage reads when sled cannot open the store itself.
    _copy: Option<tempfile::TempDir>,
}

impl Repair {
    pub fn open(dir: &Path) -> Result<Repair, StoreError> {
        if !dir.join("conf").exists() {
            return Err(StoreError::Io(format!(
                "{} holds no sled store",
                dir.display()
            )));
        }
        Ok(Repair {
            t: Some(open_trees(
                dir,
                64 << 20,
                crate::config::DEFAULT_SLED_FLUSH_MS,
            )?),
            dir: dir.to_owned(),
            _copy: None,
        })
    }

    /// Like [`Repair::open`]; when sled cannot open the store as it is,
    /// opens a copy (beside the data folder) without what sled can do
    /// without: its `conf`, written fresh with the settings this gateway
    /// uses, or its snapshot, which it rebuilds from the log, or both; of
    /// those that open, the one with the most requests. Returns what was
    /// done to the copy, if anything. The store itself is never changed.
    pub fn open_for_salvage(dir: &Path) -> Result<(Repair, Option<String>), StoreError> {
        let first = match Repair::open(dir) {
            Ok(r) => return Ok((r, None)),
            Err(e) => e,
        };
        let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", dir.display()));
        let base = dir.parent().unwrap_or(dir);
        let mut best: Option<(usize, Repair, &str)> = None;
        for (fresh_conf, no_snapshot, how) in [
            (true, false, "with a fresh conf"),
            (false, true, "without its snapshot"),
            (true, true, "without its snapshot and with a fresh conf"),
        ] {
            let copy = tempfile::Builder::new()
                .prefix(".salvage-")
                .tempdir_in(base)
                .map_err(io)?;
            let at = copy.path().join("store");
            copy_tree(dir, &at).map_err(io)?;
            if no_snapshot {
                for e in std::fs::read_dir(&at).map_err(io)? {
                    let p = e.map_err(io)?.path();
                    if p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
                    {
                        std::fs::remove_file(&p).map_err(io)?;
                    }
                }
            }
            if fresh_conf {
                let fresh = copy.path().join("fresh");
                let t = open_trees(&fresh, 1 << 20, 1000)?;
                t.db.flush()?;
                std::fs::copy(fresh.join("conf"), at.join("conf")).map_err(io)?;
                let_go(t);
            }
            let Ok(t) = open_trees(&at, 64 << 20, crate::config::DEFAULT_SLED_FLUSH_MS) else {
                continue;
            };
            let n = guarded(&at, || {
                Ok(t.requests.iter().take_while(|i| i.is_ok()).count())
            })
            .unwrap_or(0);
            let r = Repair {
                t: Some(t),
                dir: dir.to_owned(),
                _copy: Some(copy),
            };
            if best.as_ref().is_none_or(|(m, _, _)| n > *m) {
                best = Some((n, r, how));
            }
        }
        match best {
            Some((_, r, how)) => Ok((
                r,
                Some(format!(
                    "sled cannot open the store as it is ({first}); read a copy of it {how}"
                )),
            )),
            None => Err(StoreError::Io(format!(
                "sled cannot open the store ({first}), nor a copy of it with a fresh conf or without its snapshot; restore the latest backup"
            ))),
        }
    }

    fn trees(&self) -> &Trees {
        // Taken only by `drop`.
        self.t.as_ref().expect("open until dropped")
    }

    pub fn check(&self) -> check::Report {
        guarded(&self.dir, || Ok(check::check(self.trees()))).unwrap_or_else(|e| {
            let mut r = check::Report::default();
            r.found("(all)", String::new(), e.to_string());
            r
        })
    }

    pub fn salvage(
        &self,
        w: &mut (dyn std::io::Write + Send),
    ) -> Result<check::Salvaged, crate::store::backup::BackupError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check::salvage(self.trees(), w)
        }))
        .unwrap_or_else(|p| {
            Err(StoreError::Corrupt {
                id: "(salvage)".into(),
                detail: check::panic_text(&*p),
            }
            .into())
        })
    }
}

impl Drop for Repair {
    fn drop(&mut self) {
        if let Some(t) = self.t.take() {
            let_go(t);
        }
    }
}
