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
