//! `lull-perf`: measuring lull.
//!
//! [`reactor_bench`] compares the reactor's modes side by side in one process
//! (cross-core message round trip, fd wake latency, idle CPU), with raw
//! eventfd/spin baselines and glommio's executors as references.

mod affinity;
mod baseline;
#[cfg(feature = "glommio")]
mod glommio_ref;
mod latency;
pub mod reactor_bench;

pub use latency::Latency;
