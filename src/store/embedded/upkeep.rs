//! The disk under the store: the free-space reserve accepts and other
//! writes keep, readiness, size.

use std::path::Path;

use super::*;

impl Core {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Is there room for a write other than an accept? Those go on inside
    /// the reserve, down to an eighth of it: below that a write could meet
    /// ENOSPC inside sled, which latches an I/O error that only a restart
    /// clears, where a refused write is only tried again.
    pub(super) fn check_room(&self) -> Result<(), StoreError> {
        let available =
            fs4::available_space(&self.path).map_err(|e| StoreError::Io(e.to_string()))?;
        let minimum = self.min_free / 8;
        if available < minimum {
            return Err(StoreError::Full { available, minimum });
        }
        Ok(())
    }

    /// Is there enough free disk for new requests?
    pub fn check_space(&self) -> Result<(), StoreError> {
        let available =
            fs4::available_space(&self.path).map_err(|e| StoreError::Io(e.to_string()))?;
        if available < self.min_free {
            return Err(StoreError::Full {
                available,
                minimum: self.min_free,
            });
        }
        Ok(())
    }

    pub(super) fn size_on_disk_now(&self) -> Result<u64, StoreError> {
        Ok(self.t.db.size_on_disk()?)
    }

    pub(super) fn writable_now(&self) -> bool {
        // Free space is the signal, and accepts check the same. The probe
        // writes a file beside the store, never into sled: a write there
        // waits in sled's log for its flusher, and a disk that fills in
        // the meantime latches sled into an I/O error that only a restart
        // clears (a test filling the disk caught it, one run in a dozen).
        self.check_space().is_ok() && {
            let probe = self.path.with_extension("probe");
            std::fs::write(&probe, b"1")
                .and_then(|()| std::fs::remove_file(&probe))
                .is_ok()
        }
    }
}
