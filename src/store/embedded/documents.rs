//! The registries' sealed documents on sled (`documents`), stored on
//! their own; those that come with a change are written in its
//! transaction ([`change`](super::change)).

use super::*;

impl Core {
    pub(super) fn put_document_now(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_room()?;
        self.t.documents.insert(id.as_bytes(), bytes)?;
        Ok(())
    }

    pub(super) fn document_now(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t.documents.get(id.as_bytes())?.map(|v| v.to_vec()))
    }
}
