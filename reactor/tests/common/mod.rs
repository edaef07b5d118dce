//! Helpers shared by the reactor's integration tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

/// `n` reactors on distinct usable CPUs when the machine has them; otherwise
/// unpinned reactors (numbered 0..n) sharing what there is.
pub fn start(n: usize, mode: Mode) -> Reactors {
    let usable = CoreList::usable().expect("usable cpus");
    let config = if usable.len() >= n {
        let cores: Vec<usize> = usable.cores()[..n].to_vec();
        ReactorConfig::new(CoreList::try_from(cores).unwrap())
    } else {
        let mut c = ReactorConfig::new(CoreList::try_from((0..n).collect::<Vec<_>>()).unwrap());
        c.pin = false;
        c
    };
    Reactors::start(config.mode(mode)).expect("start reactors")
}

/// Polls `cond` every 200 us until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    cond()
}
