//! The part of a reactor other threads may touch ([`Shared`]: its inbox,
//! doorbell, sleep handshake, mode mailbox and counters), and `duration_ns`.
//! The inbox's item type is a parameter (the reactor's is
//! [`Message`](crate::Message), a closure over `Context`, defined in
//! `context.rs`), so this file needs nothing above it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::mode::Mode;
use crate::stats::Stats;
use crate::sys::Doorbell;
use crate::wake::WakeState;

/// The part of a reactor other threads may touch.
pub(crate) struct Shared<M> {
    pub(crate) core: usize,
    pub(crate) index: usize,
    pub(crate) inbox: ArrayQueue<M>,
    pub(crate) wake: WakeState,
    pub(crate) doorbell: Doorbell,
    pub(crate) stop: AtomicBool,
    /// 0: none; otherwise `Mode::to_u8` of the latest request.
    pub(crate) mode_request: AtomicU8,
    pub(crate) idle_poll_ns: AtomicU64,
    /// The supervisor's spin window for hybrid mode, ns, in force instead of
    /// `idle_poll_ns`; [`NO_SPIN_WINDOW`] when none.
    pub(crate) spin_window_ns: AtomicU64,
    /// The poll period the supervisor chose for the NVMe/TCP I/O queues an
    /// initiator runs on this reactor, ns, in force instead of each queue's
    /// configured one; 0 when none (the budget policy's, see
    /// [`crate::budget::Plan::queue_period`]).
    pub(crate) queue_period_ns: AtomicU64,
    pub(crate) stats: Stats,
}

/// `spin_window_ns` when the supervisor has set no window of its own.
pub(crate) const NO_SPIN_WINDOW: u64 = u64::MAX;

impl<M> Shared<M> {
    pub(crate) fn new(
        core: usize,
        index: usize,
        mode: Mode,
        idle_poll: Duration,
        inbox: usize,
    ) -> std::io::Result<Self> {
        Ok(Shared {
            core,
            index,
            inbox: ArrayQueue::new(inbox.max(1)),
            wake: WakeState::new(),
            doorbell: Doorbell::new()?,
            stop: AtomicBool::new(false),
            mode_request: AtomicU8::new(0),
            idle_poll_ns: AtomicU64::new(duration_ns(idle_poll)),
            spin_window_ns: AtomicU64::new(NO_SPIN_WINDOW),
            queue_period_ns: AtomicU64::new(0),
            stats: Stats::new(mode),
        })
    }

    /// After publishing work for this reactor: wakes it if it may be asleep.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.wake.should_ring() {
            self.stats.ringing();
            self.doorbell.ring();
        }
    }

    /// Hybrid mode's spin window in force, ns: the supervisor's, else `idle_poll_us`.
    #[inline]
    pub(crate) fn spin_window_ns(&self) -> u64 {
        match self.spin_window_ns.load(Ordering::Relaxed) {
            NO_SPIN_WINDOW => self.idle_poll_ns.load(Ordering::Relaxed),
            w => w,
        }
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (585 years).
pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
