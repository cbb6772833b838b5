//! The back-offices' idempotency keys on sled (`idempotency`: client ‖
//! 0x00 ‖ key → the requests it made); written by the group committer
//! with the accept they came with, read and purged here.

use super::*;

pub(super) fn idem_key(client: &str, key: &str) -> Vec<u8> {
    let mut k = client.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

impl Core {
    pub(super) fn idempotency_now(
        &self,
        client: &str,
        key: &str,
    ) -> Result<Option<IdemEntry>, StoreError> {
        self.t
            .idempotency
            .get(idem_key(client, key))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    id: key.to_owned(),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    pub(super) fn purge_idempotency_now(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.check_room()?;
        let mut n = 0;
        for item in self.t.idempotency.iter() {
            let (k, v) = item?;
            let old = serde_json::from_slice::<IdemEntry>(&v)
                .map(|e| e.created_ms < before_ms)
                .unwrap_or(true);
            if old {
                self.t.idempotency.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
