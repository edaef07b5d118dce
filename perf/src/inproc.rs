//! An NVMe/TCP target in this process (a RAM bdev behind one subsystem on
//! loopback) for `lull perf` without `--target` and for `lull bench`.

use std::net::SocketAddr;
use std::sync::Arc;

use lull_engine::bdev::{Bdev, RamBdev};
use lull_engine::subsystem::Subsystem;
use lull_engine::target::Target;
use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

/// SUBNQN of the in-process target.
pub const INPROC_NQN: &str = "nqn.2024-01.io.lull:inproc";
/// Default HOSTNQN of lull's initiator.
pub const DEFAULT_HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6c756c6c-0000-4000-8000-000000000001";

/// A running in-process target.
pub struct InprocTarget {
    /// Its reactors.
    pub reactors: Reactors,
    /// The target.
    pub target: Arc<Target>,
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
}

impl InprocTarget {
    /// Starts a target on `cores` (unpinned when `pin` is false) in `mode`
    /// serving one namespace: a RAM bdev of `bytes` in 512-byte blocks.
    ///
    /// # Errors
    /// Reactor start, bdev size or listen failures, in words.
    pub fn start(cores: CoreList, pin: bool, mode: Mode, bytes: u64) -> Result<Self, String> {
        let mut rc = ReactorConfig::new(cores).mode(mode);
        rc.pin = pin;
        let reactors = Reactors::start(rc).map_err(|e| e.to_string())?;
        let target = Target::new(TargetQueueConfig::default());
        let s = Subsystem::new(INPROC_NQN, "LULLINPROC0001", "lull in-process").map_err(|e| e.to_string())?;
        s.set_allow_any_host(true);
        let bdev: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", bytes, 512)?);
        s.add_namespace(1, bdev)?;
        target.add_subsystem(s)?;
        let addr = target.listen(&reactors, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        Ok(InprocTarget { reactors, target, addr })
    }
}
