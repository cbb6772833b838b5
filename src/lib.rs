//! jum-gateway: connects a municipal one-stop shop (JUM) to the state
//! registries. See DESIGN.md in the steering repository for the
//! architecture; each module's doc says what it owns.

pub mod api;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod dispatch;
pub mod exchange;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod pki;
pub mod protocol;
pub mod schedule;
pub mod sim;
pub mod store;
pub mod xml;
