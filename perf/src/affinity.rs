//! Pinning the measuring thread for the duration of one measurement.

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// Pins the calling thread to one CPU until dropped, then restores the mask
/// it had (later reactor starts validate against the caller's mask).
pub(crate) struct PinGuard {
    saved: Option<CpuSet>,
}

impl PinGuard {
    /// Pins to `core`; `None` leaves the thread as it is.
    pub(crate) fn pin(core: Option<usize>) -> Self {
        let Some(core) = core else {
            return PinGuard { saved: None };
        };
        let saved = sched_getaffinity(None).ok();
        let mut set = CpuSet::new();
        set.set(core);
        let _ = sched_setaffinity(None, &set);
        PinGuard { saved }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(set) = &self.saved {
            let _ = sched_setaffinity(None, set);
        }
    }
}

/// Pins a thread for its whole life (for threads the benchmark spawns).
pub(crate) fn pin_forever(core: usize) {
    std::mem::forget(PinGuard::pin(Some(core)));
}
