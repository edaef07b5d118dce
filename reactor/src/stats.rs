//! Per-reactor accounting, written only by the reactor's own thread and
//! readable from any thread without locks.
//!
//! Time is split three ways, all wall clock in ns: `busy` (loop iterations that
//! did useful work), `idle` (iterations that found nothing: poll-mode and
//! hybrid spinning), and `sleep` (inside a blocking `epoll_wait`). The
//! thread's own CPU clock (`CLOCK_THREAD_CPUTIME_ID`) is read on demand.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::Mode;

/// Thread CPU clock ids are negative numbers, so "none" needs its own value.
const NO_CLOCK: i64 = i64::MIN;

/// The shared counters. The owner stores with `Relaxed` (one writer, so no
/// read-modify-write); readers see each counter atomically.
pub(crate) struct Stats {
    counters: CachePadded<[AtomicU64; Counter::COUNT]>,
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
}

impl Counter {
    const COUNT: usize = 12;
}

/// The owner's private copy; published to [`Stats`] once per loop iteration.
#[derive(Default)]
pub(crate) struct LocalStats {
    pub(crate) v: [u64; Counter::COUNT],
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
        }
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
