//! `lull-perf`: measuring lull.
//!
//! [`reactor_bench`] compares the reactor's modes side by side in one process
//! (cross-core message round trip, fd wake latency, idle CPU), with raw
//! eventfd/spin baselines and glommio's executors as references;
//! [`target_bench`] drives the NVMe/TCP target in each mode from a load
//! generator (a blocking host queue) on another core.

mod affinity;
pub mod arrival;
mod baseline;
#[cfg(feature = "glommio")]
mod glommio_ref;
pub mod inproc;
mod latency;
pub mod load_plot;
pub mod load_report;
pub mod load_sweep;
pub mod matrix;
pub mod nvme_perf;
pub mod reactor_bench;
pub mod target_bench;
pub mod verify;

pub use latency::Latency;
