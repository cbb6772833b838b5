//! Evidence that lasts: RFC 3161 timestamps from a third party on every
//! received document's signature and on every audit checkpoint
//! (`tsp.rs`, the client; `tsa.rs`, the authority the simulator serves;
//! `stamper.rs`, the job that asks for them in batches), and the case
//! dossier (`dossier.rs`): one ASiC-E container per case with the
//! documents as the registries signed them, their evidence and our seal,
//! which `verify.rs` checks offline, reading the container strictly and
//! within memory caps (`container.rs`). For X-Road, the security
//! server's signed document of each message that brought a document
//! (`signed.rs`), kept beside it and put into the dossier.

pub mod container;
pub mod dossier;
pub mod signed;
pub mod stamper;
pub mod tsa;
pub mod tsp;
pub mod verify;

/// The due records of one of the two kinds the evidence index holds (a
/// timestamp, a signed document), at most `batch`, earliest first. The
/// index orders a record by its earlier kind; records due only for the
/// other kind, which no job may be taking (its TSA or X-Road registry
/// removed from the configuration), are read past instead of filling
/// every batch, up to a ceiling of records read per round.
pub(crate) async fn due_of(
    store: &dyn crate::store::QueueStore,
    now: u64,
    batch: usize,
    mine: impl Fn(&crate::lifecycle::RequestRecord) -> bool,
) -> Result<Vec<crate::lifecycle::RequestRecord>, crate::store::StoreError> {
    const MOST_READ: usize = 65_536;
    let batch = batch.max(1);
    let mut limit = batch;
    loop {
        let read = store.evidence_due(now, limit).await?;
        let short = read.len() < limit;
        let ours: Vec<_> = read.into_iter().filter(|r| mine(r)).take(batch).collect();
        if ours.len() >= batch || short || limit >= MOST_READ {
            return Ok(ours);
        }
        limit = (limit * 4).min(MOST_READ);
    }
}
