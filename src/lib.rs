//! jum-gateway: connects a municipal one-stop shop (JUM) to the state
//! registries. ARCHITECTURE.md says how the parts fit and which may use
//! which; each module's doc says what it owns.

pub mod alerts;
pub mod api;
pub mod audit;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod dispatch;
pub mod evidence;
pub mod exchange;
pub mod ids;
pub mod lang;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod protocol;
#[cfg(feature = "simulator")]
pub mod sim;
pub mod store;
pub mod sync;
pub mod time;
pub mod xml;
