//! Per-reactor accounting, written only by the reactor's own thread and
//! readable from any thread without locks.
//!
//! Time is split three ways, all wall clock in ns: `busy` (loop iterations that
//! did useful work), `idle` (iterations that found nothing: poll-mode and
//! hybrid spinning), and `sleep` (inside a blocking `epoll_wait`). The
//! thread's own CPU clock (`CLOCK_THREAD_CPUTIME_ID`) is read on demand.
//!
//! For the `budget` supervisor policy the loop also keeps, at no system call:
//! a histogram of the gaps between the end of work and the next arrival of
//! work (`gap_hist`, log2 buckets of microseconds) and one of the gaps before
//! the core's own follow-up work (`follow_up_gap_hist`), and how late the reactor
//! ran after a sleep ended: for a timer, the time from its deadline to the
//! loop running again; for the doorbell, from the sender's ring (the sender
//! reads the clock only when it rings, already a system call) to running.
//! That histogram is kept per class of sleep length ([`sleep_class`]): a core
//! that slept longer wakes later (deeper idle states on bare metal, a vCPU the
//! hypervisor descheduled on a VM), so a long idle spell's wakeups say little
//! about the wakeups between requests 100 us apart.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::mode::Mode;

/// Thread CPU clock ids are negative numbers, so "none" needs its own value.
const NO_CLOCK: i64 = i64::MIN;

/// The shared counters. The owner stores with `Relaxed` (one writer, so no
/// read-modify-write); readers see each counter atomically.
pub(crate) struct Stats {
    counters: CachePadded<[AtomicU64; Counter::COUNT]>,
    gaps: CachePadded<[AtomicU64; GAP_BUCKETS]>,
    follow_gaps: CachePadded<[AtomicU64; GAP_BUCKETS]>,
    wake_late: CachePadded<[[AtomicU64; GAP_BUCKETS]; SLEEP_CLASSES]>,
    /// ns since `origin` of the last doorbell ring by a sender (0: none pending).
    rung_at: AtomicU64,
    mode: AtomicU8,
    cpu_clock: AtomicI64,
    final_cpu_ns: AtomicU64,
    exited: AtomicBool,
    /// Base of `asleep_since`.
    origin: Instant,
    /// ns since `origin` at which the reactor went to sleep (at least 1); 0 while awake.
    asleep_since: AtomicU64,
}

/// Counter slots.
#[derive(Clone, Copy)]
pub(crate) enum Counter {
    BusyNs,
    IdleNs,
    SleepNs,
    Loops,
    BusyLoops,
    Wakeups,
    EpollWaits,
    Messages,
    PollerRuns,
    TimerRuns,
    ModeSwitches,
    Panics,
    Arrivals,
    TimedWakeups,
    TimedWakeLateNs,
    RungWakeups,
    RungWakeLateNs,
    FollowUps,
}

impl Counter {
    const COUNT: usize = 18;
}

/// Buckets of the gap histogram: bucket 0 holds gaps under 1 us, bucket `b`
/// (1..=12) gaps of `2^(b-1)` to `2^b` us, the last one 4096 us and longer.
pub const GAP_BUCKETS: usize = 14;

/// The bucket of a gap of `ns` nanoseconds.
#[inline]
pub fn gap_bucket(ns: u64) -> usize {
    let us = ns / 1000;
    ((u64::BITS - us.leading_zeros()) as usize).min(GAP_BUCKETS - 1)
}

/// The upper bound of gap bucket `b` in microseconds (`None` for the last,
/// open-ended one).
pub fn gap_bucket_limit_us(b: usize) -> Option<u64> {
    (b < GAP_BUCKETS - 1).then(|| 1u64 << b)
}

/// Classes of sleep length in the wake-delay histogram: under 256 us, 256 us
/// to 4 ms, 4 to 64 ms, 64 ms and longer.
pub const SLEEP_CLASSES: usize = 4;

/// Upper bounds of the sleep classes but the last, us.
const SLEEP_CLASS_LIMITS_US: [u64; SLEEP_CLASSES - 1] = [256, 4096, 65_536];

/// The class of a sleep of `ns` nanoseconds.
#[inline]
pub fn sleep_class(ns: u64) -> usize {
    let us = ns / 1000;
    SLEEP_CLASS_LIMITS_US.iter().take_while(|&&l| us >= l).count()
}

/// The sleep class that an arrival after a gap in gap bucket `b` finds a
/// sleeping reactor in (it slept about as long as the gap). The last gap
/// bucket (4096 us and longer) maps to 4-64 ms: arrivals that far apart are
/// a light load, not an idle spell.
pub fn sleep_class_of_gap_bucket(b: usize) -> usize {
    match gap_bucket_limit_us(b) {
        Some(limit) => sleep_class((limit - 1) * 1000),
        None => sleep_class(4096 * 1000),
    }
}

/// The owner's private copy; published to [`Stats`] once per loop iteration
/// (the gap histogram when a bucket changes).
#[derive(Default)]
pub(crate) struct LocalStats {
    pub(crate) v: [u64; Counter::COUNT],
    pub(crate) gaps: [u64; GAP_BUCKETS],
    pub(crate) follow_gaps: [u64; GAP_BUCKETS],
    pub(crate) wake_late: [[u64; GAP_BUCKETS]; SLEEP_CLASSES],
}

impl LocalStats {
    #[inline]
    pub(crate) fn add(&mut self, c: Counter, n: u64) {
        self.v[c as usize] += n;
    }
}

impl Stats {
    pub(crate) fn new(mode: Mode) -> Self {
        Stats {
            counters: CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))),
            gaps: CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))),
            follow_gaps: CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))),
            wake_late: CachePadded::new(std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))),
            rung_at: AtomicU64::new(0),
            mode: AtomicU8::new(mode.to_u8()),
            cpu_clock: AtomicI64::new(NO_CLOCK),
            final_cpu_ns: AtomicU64::new(0),
            exited: AtomicBool::new(false),
            origin: Instant::now(),
            asleep_since: AtomicU64::new(0),
        }
    }

    /// The reactor goes to sleep at `at`: until [`Stats::woke`], readers
    /// count the time since as sleep (a reactor with no timer may sleep for
    /// hours without publishing).
    pub(crate) fn sleeping_since(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.origin).as_nanos() as u64;
        self.asleep_since.store(ns.max(1), Ordering::Relaxed);
    }

    /// The reactor woke (its sleep is counted in its own counters again).
    pub(crate) fn woke(&self) {
        self.asleep_since.store(0, Ordering::Relaxed);
    }

    /// A sender is about to ring the doorbell: note when, so the reactor can
    /// tell how long it took to run.
    #[inline]
    pub(crate) fn ringing(&self) {
        let ns = Instant::now().saturating_duration_since(self.origin).as_nanos() as u64;
        self.rung_at.store(ns.max(1), Ordering::Relaxed);
    }

    /// Takes the time of the last ring, as an `Instant` (`None` if none is pending).
    pub(crate) fn take_ring(&self) -> Option<Instant> {
        match self.rung_at.swap(0, Ordering::Relaxed) {
            0 => None,
            ns => Some(self.origin + std::time::Duration::from_nanos(ns)),
        }
    }

    /// Publishes one gap-histogram bucket.
    #[inline]
    pub(crate) fn publish_gap(&self, local: &LocalStats, bucket: usize) {
        self.gaps[bucket].store(local.gaps[bucket], Ordering::Relaxed);
    }

    /// Publishes one follow-up-gap-histogram bucket.
    #[inline]
    pub(crate) fn publish_follow_gap(&self, local: &LocalStats, bucket: usize) {
        self.follow_gaps[bucket].store(local.follow_gaps[bucket], Ordering::Relaxed);
    }

    /// Publishes one wake-delay-histogram bucket of one sleep class.
    pub(crate) fn publish_wake_late(&self, local: &LocalStats, class: usize, bucket: usize) {
        self.wake_late[class][bucket].store(local.wake_late[class][bucket], Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn publish(&self, local: &LocalStats) {
        for (a, v) in self.counters.iter().zip(local.v.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        self.mode.store(mode.to_u8(), Ordering::Relaxed);
    }

    pub(crate) fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Relaxed)).unwrap_or(Mode::Poll)
    }

    /// Called on the reactor thread when it starts.
    pub(crate) fn attach_thread(&self) {
        if let Some(id) = crate::sys::current_thread_cpu_clock() {
            self.cpu_clock.store(i64::from(id), Ordering::Release);
        }
    }

    /// Called on the reactor thread as its last act.
    pub(crate) fn detach_thread(&self) {
        let id = self.cpu_clock.load(Ordering::Acquire);
        if id != NO_CLOCK
            && let Some(ns) = crate::sys::read_cpu_clock(id as libc::clockid_t)
        {
            self.final_cpu_ns.store(ns, Ordering::Relaxed);
        }
        self.exited.store(true, Ordering::Release);
    }

    fn thread_cpu_ns(&self) -> u64 {
        if self.exited.load(Ordering::Acquire) {
            return self.final_cpu_ns.load(Ordering::Relaxed);
        }
        let id = self.cpu_clock.load(Ordering::Acquire);
        if id == NO_CLOCK {
            return 0;
        }
        crate::sys::read_cpu_clock(id as libc::clockid_t).unwrap_or_else(|| self.final_cpu_ns.load(Ordering::Relaxed))
    }

    pub(crate) fn snapshot(&self, core: usize, sleeping: bool) -> StatsSnapshot {
        let g = |c: Counter| self.counters[c as usize].load(Ordering::Relaxed);
        let now = Instant::now();
        let asleep = match self.asleep_since.load(Ordering::Relaxed) {
            0 => 0,
            since => (now.saturating_duration_since(self.origin).as_nanos() as u64).saturating_sub(since),
        };
        StatsSnapshot {
            core,
            taken_at: now,
            mode: self.mode(),
            sleeping,
            busy_ns: g(Counter::BusyNs),
            idle_ns: g(Counter::IdleNs),
            sleep_ns: g(Counter::SleepNs) + asleep,
            thread_cpu_ns: self.thread_cpu_ns(),
            loops: g(Counter::Loops),
            busy_loops: g(Counter::BusyLoops),
            wakeups: g(Counter::Wakeups),
            epoll_waits: g(Counter::EpollWaits),
            messages: g(Counter::Messages),
            poller_runs: g(Counter::PollerRuns),
            timer_runs: g(Counter::TimerRuns),
            mode_switches: g(Counter::ModeSwitches),
            panics: g(Counter::Panics),
            arrivals: g(Counter::Arrivals),
            gap_hist: std::array::from_fn(|b| self.gaps[b].load(Ordering::Relaxed)),
            follow_up_gap_hist: std::array::from_fn(|b| self.follow_gaps[b].load(Ordering::Relaxed)),
            wake_late_hist: std::array::from_fn(|c| {
                std::array::from_fn(|b| self.wake_late[c][b].load(Ordering::Relaxed))
            }),
            timed_wakeups: g(Counter::TimedWakeups),
            timed_wake_late_ns: g(Counter::TimedWakeLateNs),
            rung_wakeups: g(Counter::RungWakeups),
            rung_wake_late_ns: g(Counter::RungWakeLateNs),
            follow_ups: g(Counter::FollowUps),
            spin_window: None,
            queue_period: None,
        }
    }
}

/// A reactor's counters at one instant. Counters are cumulative since the
/// reactor started; subtract two snapshots ([`StatsSnapshot::delta`]) for rates.
#[derive(Clone, Debug)]
pub struct StatsSnapshot {
    /// The CPU the reactor is pinned to.
    pub core: usize,
    /// When the snapshot was read.
    pub taken_at: Instant,
    /// Current mode.
    pub mode: Mode,
    /// Whether the reactor announced it is sleeping (or about to).
    pub sleeping: bool,
    /// Wall time in loop iterations that did useful work, ns.
    pub busy_ns: u64,
    /// Wall time in iterations that found nothing to do (spinning), ns.
    pub idle_ns: u64,
    /// Wall time inside blocking `epoll_wait`, ns.
    pub sleep_ns: u64,
    /// CPU time of the reactor thread (`CLOCK_THREAD_CPUTIME_ID`), ns.
    pub thread_cpu_ns: u64,
    /// Loop iterations.
    pub loops: u64,
    /// Loop iterations that did useful work.
    pub busy_loops: u64,
    /// Returns from a blocking `epoll_wait` (the reactor had gone to sleep).
    pub wakeups: u64,
    /// `epoll_wait` calls, blocking or not.
    pub epoll_waits: u64,
    /// Cross-core messages and channel items handled.
    pub messages: u64,
    /// Poller runs (fd readiness and periods).
    pub poller_runs: u64,
    /// Timer callbacks run.
    pub timer_runs: u64,
    /// Mode changes applied.
    pub mode_switches: u64,
    /// Pollers, messages, timers and channel handlers that panicked (each was
    /// logged and removed; the reactor carried on).
    pub panics: u64,
    /// Loop iterations that did work other than timers: messages, channel
    /// items, fd events, woken pollers (arrivals of work from outside).
    pub arrivals: u64,
    /// Arrivals by the gap before them (from the end of the last work of any
    /// kind to the start of this arrival), in the buckets of [`gap_bucket`].
    pub gap_hist: [u64; GAP_BUCKETS],
    /// Sleeps ended by a timer's deadline.
    pub timed_wakeups: u64,
    /// Sum over those of (time the loop ran again - the deadline), ns.
    pub timed_wake_late_ns: u64,
    /// Sleeps ended by the doorbell (a message or channel item from another thread).
    pub rung_wakeups: u64,
    /// Sum over those of (time the loop ran again - the ring), ns.
    pub rung_wake_late_ns: u64,
    /// Busy loop iterations whose work was only this core's own follow-ups
    /// (timers, periodic pollers): each ends a gap that no arrival ended,
    /// which a spinning reactor spins through to its window's end.
    pub follow_ups: u64,
    /// Follow-ups by the gap before them (from the end of the last work of
    /// any kind), in the buckets of [`gap_bucket`]: with
    /// [`StatsSnapshot::gap_hist`], every burst of work's gap, which is how
    /// far a sleeping reactor's burst can run on (`budget` policy).
    pub follow_up_gap_hist: [u64; GAP_BUCKETS],
    /// Both kinds of wake delay, by the [`sleep_class`] of the sleep before
    /// and in the buckets of [`gap_bucket`] (the tail matters: the budget is
    /// a 99th-percentile one): `[class][bucket]`.
    pub wake_late_hist: [[u64; GAP_BUCKETS]; SLEEP_CLASSES],
    /// The supervisor's spin window in force instead of `idle_poll_us`, if any.
    pub spin_window: Option<std::time::Duration>,
    /// The supervisor's I/O queue poll period for an initiator's queues on
    /// this reactor, in force instead of `nvme_ioq_poll_period_us`, if any.
    pub queue_period: Option<std::time::Duration>,
}

impl StatsSnapshot {
    /// `self - earlier`, counter by counter (saturating), keeping `self`'s
    /// core, mode and time. Use [`StatsSnapshot::wall_ns_since`] for the span.
    pub fn delta(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        StatsSnapshot {
            core: self.core,
            taken_at: self.taken_at,
            mode: self.mode,
            sleeping: self.sleeping,
            busy_ns: d(self.busy_ns, earlier.busy_ns),
            idle_ns: d(self.idle_ns, earlier.idle_ns),
            sleep_ns: d(self.sleep_ns, earlier.sleep_ns),
            thread_cpu_ns: d(self.thread_cpu_ns, earlier.thread_cpu_ns),
            loops: d(self.loops, earlier.loops),
            busy_loops: d(self.busy_loops, earlier.busy_loops),
            wakeups: d(self.wakeups, earlier.wakeups),
            epoll_waits: d(self.epoll_waits, earlier.epoll_waits),
            messages: d(self.messages, earlier.messages),
            poller_runs: d(self.poller_runs, earlier.poller_runs),
            timer_runs: d(self.timer_runs, earlier.timer_runs),
            mode_switches: d(self.mode_switches, earlier.mode_switches),
            panics: d(self.panics, earlier.panics),
            arrivals: d(self.arrivals, earlier.arrivals),
            gap_hist: std::array::from_fn(|b| d(self.gap_hist[b], earlier.gap_hist[b])),
            wake_late_hist: std::array::from_fn(|c| {
                std::array::from_fn(|b| d(self.wake_late_hist[c][b], earlier.wake_late_hist[c][b]))
            }),
            timed_wakeups: d(self.timed_wakeups, earlier.timed_wakeups),
            timed_wake_late_ns: d(self.timed_wake_late_ns, earlier.timed_wake_late_ns),
            rung_wakeups: d(self.rung_wakeups, earlier.rung_wakeups),
            rung_wake_late_ns: d(self.rung_wake_late_ns, earlier.rung_wake_late_ns),
            follow_ups: d(self.follow_ups, earlier.follow_ups),
            follow_up_gap_hist: std::array::from_fn(|b| d(self.follow_up_gap_hist[b], earlier.follow_up_gap_hist[b])),
            spin_window: self.spin_window,
            queue_period: self.queue_period,
        }
    }

    /// Mean time from the end of a sleep (deadline or doorbell) to the loop
    /// running, ns, over the wakeups counted; `None` without any.
    pub fn mean_wake_late_ns(&self) -> Option<f64> {
        let n = self.timed_wakeups + self.rung_wakeups;
        (n > 0).then(|| (self.timed_wake_late_ns + self.rung_wake_late_ns) as f64 / n as f64)
    }

    /// Wakeups in [`StatsSnapshot::wake_late_hist`], every class.
    pub fn wake_late_samples(&self) -> u64 {
        self.wake_late_hist.iter().flatten().sum()
    }

    /// Wall time between two snapshots, ns.
    pub fn wall_ns_since(&self, earlier: &StatsSnapshot) -> u64 {
        self.taken_at.saturating_duration_since(earlier.taken_at).as_nanos() as u64
    }

    /// Busy share of the accounted time in `[0, 1]` (0 when nothing was accounted).
    pub fn busy_ratio(&self) -> f64 {
        let total = self.busy_ns + self.idle_ns + self.sleep_ns;
        if total == 0 {
            0.0
        } else {
            self.busy_ns as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_buckets_are_log2_microseconds() {
        assert_eq!(gap_bucket(0), 0);
        assert_eq!(gap_bucket(999), 0);
        assert_eq!(gap_bucket(1_000), 1);
        assert_eq!(gap_bucket(1_999), 1);
        assert_eq!(gap_bucket(2_000), 2);
        assert_eq!(gap_bucket(15_999), 4);
        assert_eq!(gap_bucket(16_000), 5);
        assert_eq!(gap_bucket(4_095_999), 12);
        assert_eq!(gap_bucket(4_096_000), 13);
        assert_eq!(gap_bucket(u64::MAX), 13);
        // Every gap is below its bucket's limit and at least the previous one's.
        for ns in [0u64, 500, 1_000, 3_000, 64_000, 100_000, 4_000_000] {
            let b = gap_bucket(ns);
            assert!(gap_bucket_limit_us(b).is_none_or(|l| ns / 1000 < l), "{ns}");
            assert!(b == 0 || ns / 1000 >= gap_bucket_limit_us(b - 1).unwrap(), "{ns}");
        }
        assert_eq!(gap_bucket_limit_us(GAP_BUCKETS - 1), None);
    }
}
