//! One reactor: the loop that runs on a pinned core, and [`Context`], the
//! handle its pollers, timers and messages receive to act on it.
//!
//! The loop, every iteration:
//! 1. stop? apply a requested mode change (only here, never inside a poller);
//! 2. run a bounded batch of cross-core messages and channel items;
//! 3. run due timers and timed pollers;
//! 4. wait: `Poll` checks fds with `epoll_wait(0)` (skipped when no fd poller
//!    is armed); `Interrupt`, and `Hybrid` once `idle_poll_us` passed without
//!    work, announce sleep, re-check the queues and block in `epoll_wait` until
//!    an fd, the doorbell or the earliest deadline;
//! 5. run the fd pollers that are ready;
//! 6. account the iteration as busy or idle and publish the counters.
//!
//! Every fd stays registered, level-triggered, in every mode, so a mode
//! switch cannot lose an event: it only changes how step 4 waits.

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use rustix::event::epoll;

use crate::channel::{self, ChannelDrain, Sender};
use crate::error::ReactorError;
use crate::handle::ReactorHandle;
use crate::mode::Mode;
use crate::poller::{FdPoller, Interest, PollStatus, Poller, PollerId, Readiness};
use crate::stats::{Counter, LocalStats, Stats, gap_bucket, sleep_class};
use crate::sys::{Doorbell, Epoll};
use crate::timer::{self, Deadlines, Target, TimerId};
use crate::wake::WakeState;

/// Most messages taken from one queue per loop iteration, so that one busy
/// sender cannot starve fds and timers.
const MESSAGE_BATCH: usize = 64;
/// Most fd events taken per `epoll_wait`.
const EVENT_BATCH: usize = 128;
/// The doorbell's epoll token; poller tokens never reach it (index < u32::MAX).
const DOORBELL_TOKEN: u64 = u64::MAX;

/// A closure sent to a reactor; runs once on its thread with its [`Context`].
pub struct Message(pub(crate) Box<dyn FnOnce(&mut Context) + Send>);

impl Message {
    /// Wraps a closure.
    pub fn new(f: impl FnOnce(&mut Context) + Send + 'static) -> Self {
        Message(Box::new(f))
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

/// The part of a reactor other threads may touch.
pub(crate) struct Shared {
    pub(crate) core: usize,
    pub(crate) index: usize,
    pub(crate) inbox: ArrayQueue<Message>,
    pub(crate) wake: WakeState,
    pub(crate) doorbell: Doorbell,
    pub(crate) stop: AtomicBool,
    /// 0: none; otherwise `Mode::to_u8` of the latest request.
    pub(crate) mode_request: AtomicU8,
    pub(crate) idle_poll_ns: AtomicU64,
    /// The supervisor's spin window for hybrid mode, ns, in force instead of
    /// `idle_poll_ns`; [`NO_SPIN_WINDOW`] when none.
    pub(crate) spin_window_ns: AtomicU64,
    pub(crate) stats: Stats,
}

/// `spin_window_ns` when the supervisor has set no window of its own.
pub(crate) const NO_SPIN_WINDOW: u64 = u64::MAX;

impl Shared {
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

struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}

/// `now + d`, or a deadline a century away when that overflows `Instant`
/// (a timer that long is one that never fires).
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn entry_of(pollers: &mut [PollerSlot], id: PollerId) -> Result<&mut PollerEntry, ReactorError> {
    match pollers.get_mut(id.index as usize) {
        Some(slot) if slot.generation == id.generation => slot.entry.as_mut().ok_or(ReactorError::UnknownPoller),
        _ => Err(ReactorError::UnknownPoller),
    }
}

pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

enum Boxed {
    Fd(Box<dyn FdPoller>),
    Timed(Box<dyn Poller>),
}

impl Boxed {
    fn poll(&mut self, cx: &mut Context, ready: Readiness) -> PollStatus {
        match self {
            Boxed::Fd(p) => p.poll(cx, ready),
            Boxed::Timed(p) => p.poll(cx, ready),
        }
    }
}

enum Source {
    /// `fd` is the reactor's own duplicate of the poller's fd: the epoll
    /// registration is made and removed through it, so it stays valid and
    /// unique whatever the poller does with its own fd.
    Fd { fd: OwnedFd, interest: Interest },
    /// `arm` changes on pause, resume and period change; stale deadlines are skipped.
    Period { period: Duration, arm: u32 },
}

struct PollerEntry {
    /// `None` while the poller is running.
    poller: Option<Boxed>,
    source: Source,
    paused: bool,
}

#[derive(Default)]
struct PollerSlot {
    generation: u32,
    entry: Option<PollerEntry>,
}

enum TimerFn {
    Once(Box<dyn FnOnce(&mut Context)>),
    Periodic(Box<dyn FnMut(&mut Context)>, Duration),
}

#[derive(Default)]
struct TimerSlot {
    generation: u32,
    live: bool,
    /// `None` while a periodic callback is running.
    f: Option<TimerFn>,
}

/// A reactor's state, lent to everything that runs on it. Only the reactor's
/// own thread ever has one, so nothing in it needs a lock.
pub struct Context {
    shared: Arc<Shared>,
    peers: Arc<[ReactorHandle]>,
    epoll: Epoll,
    pollers: Vec<PollerSlot>,
    free_pollers: Vec<u32>,
    armed_fd_pollers: usize,
    timers: Vec<TimerSlot>,
    free_timers: Vec<u32>,
    deadlines: Deadlines,
    channels: Vec<Option<Box<dyn ChannelDrain>>>,
    free_channels: Vec<usize>,
    mode: Mode,
    local_mode_request: Option<Mode>,
    current: Option<PollerId>,
    /// Pollers asked to run on the next iteration whatever their fd says.
    woken: Vec<PollerId>,
    now: Instant,
    stats: LocalStats,
}

impl Context {
    pub(crate) fn new(shared: Arc<Shared>, peers: Arc<[ReactorHandle]>) -> Result<Self, ReactorError> {
        let epoll = Epoll::new().map_err(|e| ReactorError::io("epoll_create1", e))?;
        epoll
            .add(shared.doorbell.as_fd(), DOORBELL_TOKEN, epoll::EventFlags::IN)
            .map_err(|e| ReactorError::io("epoll_ctl(doorbell)", e))?;
        let mode = shared.stats.mode();
        Ok(Context {
            shared,
            peers,
            epoll,
            pollers: Vec::new(),
            free_pollers: Vec::new(),
            armed_fd_pollers: 0,
            timers: Vec::new(),
            free_timers: Vec::new(),
            deadlines: Deadlines::default(),
            channels: Vec::new(),
            free_channels: Vec::new(),
            mode,
            local_mode_request: None,
            current: None,
            woken: Vec::new(),
            now: Instant::now(),
            stats: LocalStats::default(),
        })
    }

    /// The CPU this reactor is pinned to.
    pub fn core(&self) -> usize {
        self.shared.core
    }

    /// This reactor's position in its [`Reactors`](crate::Reactors) set (0-based).
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// The mode the loop is running in now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Asks for a mode change, applied at the top of the next loop iteration.
    pub fn set_mode(&mut self, mode: Mode) {
        self.local_mode_request = Some(mode);
    }

    /// Hybrid mode's spin window after the last useful work.
    pub fn idle_poll(&self) -> Duration {
        Duration::from_nanos(self.shared.idle_poll_ns.load(Ordering::Relaxed))
    }

    /// Time at the start of the current loop iteration (cheap; may lag the
    /// true time by the iteration's work so far).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// A handle to this reactor, to give to other threads.
    pub fn handle(&self) -> ReactorHandle {
        self.peers[self.shared.index].clone()
    }

    /// Handles to every reactor of the set, in core-list order.
    pub fn peers(&self) -> &[ReactorHandle] {
        &self.peers
    }

    /// Asks for `id` to run on the next loop iteration (with an empty
    /// [`Readiness`]) even if its fd has nothing to report: for work that
    /// became ready on this core without touching the kernel, such as an
    /// asynchronous completion for a connection. The reactor does not sleep
    /// while a poller is woken. A stale id is ignored when its turn comes.
    pub fn wake(&mut self, id: PollerId) {
        if !self.woken.contains(&id) {
            self.woken.push(id);
        }
    }

    /// The poller being run right now, if any (so a poller can change its own interest).
    pub fn current_poller(&self) -> Option<PollerId> {
        self.current
    }

    // ---- pollers -------------------------------------------------------

    /// Registers a poller woken by its own fd with `interest` (level-triggered).
    ///
    /// The reactor keeps a duplicate of the fd (one `fcntl(F_DUPFD_CLOEXEC)`)
    /// and registers that, so the registration is the reactor's alone: it is
    /// removed exactly when the poller is unregistered, and a poller that
    /// replaces or closes its own fd cannot disturb another poller. The
    /// connection the fd refers to therefore stays open until the poller is
    /// unregistered.
    ///
    /// # Errors
    /// [`ReactorError::Io`] when the fd cannot be duplicated or epoll refuses
    /// it (`EPERM` for a regular file).
    pub fn register_fd<P: FdPoller>(&mut self, poller: P, interest: Interest) -> Result<PollerId, ReactorError> {
        let fd = poller
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ReactorError::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        let id = self.alloc_poller();
        if let Err(e) = self.epoll.add(fd.as_fd(), id.token(), interest.epoll_flags()) {
            self.free_poller(id.index);
            return Err(ReactorError::io("epoll_ctl(ADD)", e));
        }
        self.armed_fd_pollers += 1;
        self.pollers[id.index as usize].entry = Some(PollerEntry {
            poller: Some(Boxed::Fd(Box::new(poller))),
            source: Source::Fd { fd, interest },
            paused: false,
        });
        Ok(id)
    }

    /// Registers a poller run every `period` (first run one period from now).
    ///
    /// # Errors
    /// [`ReactorError::ZeroPeriod`]: a poller that wants to run on every loop
    /// iteration could never let the reactor sleep, so it cannot exist.
    pub fn register_timed<P: Poller>(&mut self, period: Duration, poller: P) -> Result<PollerId, ReactorError> {
        if period.is_zero() {
            return Err(ReactorError::ZeroPeriod);
        }
        let id = self.alloc_poller();
        self.pollers[id.index as usize].entry = Some(PollerEntry {
            poller: Some(Boxed::Timed(Box::new(poller))),
            source: Source::Period { period, arm: 0 },
            paused: false,
        });
        self.arm_period(id, period, 0);
        Ok(id)
    }

    /// Changes an fd poller's interest, e.g. add WRITABLE while a send queue
    /// is non-empty. Takes effect for the next wait; a paused poller keeps the
    /// new interest for when it resumes.
    ///
    /// # Errors
    /// [`ReactorError::UnknownPoller`], [`ReactorError::NotFdPoller`], or epoll's error.
    pub fn set_interest(&mut self, id: PollerId, interest: Interest) -> Result<(), ReactorError> {
        let epoll = &self.epoll;
        let entry = entry_of(&mut self.pollers, id)?;
        let Source::Fd { fd, interest: current } = &mut entry.source else {
            return Err(ReactorError::NotFdPoller);
        };
        if *current == interest {
            return Ok(());
        }
        if !entry.paused {
            epoll
                .modify(fd.as_fd(), id.token(), interest.epoll_flags())
                .map_err(|e| ReactorError::io("epoll_ctl(MOD)", e))?;
        }
        *current = interest;
        Ok(())
    }

    /// Changes a timed poller's period; the next run is one new period from now.
    ///
    /// # Errors
    /// [`ReactorError::UnknownPoller`], [`ReactorError::NotTimedPoller`], [`ReactorError::ZeroPeriod`].
    pub fn set_period(&mut self, id: PollerId, period: Duration) -> Result<(), ReactorError> {
        if period.is_zero() {
            return Err(ReactorError::ZeroPeriod);
        }
        let entry = entry_of(&mut self.pollers, id)?;
        let Source::Period { arm, .. } = entry.source else {
            return Err(ReactorError::NotTimedPoller);
        };
        let arm = arm.wrapping_add(1);
        entry.source = Source::Period { period, arm };
        if !entry.paused {
            self.arm_period(id, period, arm);
        }
        Ok(())
    }

    /// Stops running a poller until [`resume`](Self::resume): its fd leaves the
    /// epoll set (so a hung-up fd cannot spin the reactor), its period stops.
    ///
    /// # Errors
    /// [`ReactorError::UnknownPoller`], or epoll's error (the poller then stays unpaused).
    pub fn pause(&mut self, id: PollerId) -> Result<(), ReactorError> {
        let epoll = &self.epoll;
        let entry = entry_of(&mut self.pollers, id)?;
        if entry.paused {
            return Ok(());
        }
        match &mut entry.source {
            Source::Fd { fd, .. } => {
                epoll
                    .delete(fd.as_fd())
                    .map_err(|e| ReactorError::io("epoll_ctl(DEL)", e))?;
                self.armed_fd_pollers -= 1;
            }
            Source::Period { arm, .. } => *arm = arm.wrapping_add(1),
        }
        entry.paused = true;
        Ok(())
    }

    /// Undoes [`pause`](Self::pause). A timed poller's next run is one period from now.
    ///
    /// # Errors
    /// [`ReactorError::UnknownPoller`], or epoll's error (the poller then stays paused).
    pub fn resume(&mut self, id: PollerId) -> Result<(), ReactorError> {
        let epoll = &self.epoll;
        let entry = entry_of(&mut self.pollers, id)?;
        if !entry.paused {
            return Ok(());
        }
        let deadline = match &entry.source {
            Source::Fd { fd, interest } => {
                epoll
                    .add(fd.as_fd(), id.token(), interest.epoll_flags())
                    .map_err(|e| ReactorError::io("epoll_ctl(ADD)", e))?;
                self.armed_fd_pollers += 1;
                None
            }
            Source::Period { period, arm } => Some((*period, *arm)),
        };
        entry.paused = false;
        if let Some((period, arm)) = deadline {
            self.arm_period(id, period, arm);
        }
        Ok(())
    }

    /// Removes a poller and drops it (after its current run, if it is the one
    /// running). Its fd leaves the epoll set, then the poller is dropped.
    ///
    /// # Errors
    /// [`ReactorError::UnknownPoller`] for a stale or foreign id.
    pub fn unregister(&mut self, id: PollerId) -> Result<(), ReactorError> {
        entry_of(&mut self.pollers, id)?;
        let slot = &mut self.pollers[id.index as usize];
        let Some(entry) = slot.entry.take() else {
            return Err(ReactorError::UnknownPoller);
        };
        slot.generation = slot.generation.wrapping_add(1);
        if let Source::Fd { fd, .. } = &entry.source
            && !entry.paused
        {
            self.armed_fd_pollers -= 1;
            // Our own duplicate is open, so this cannot hit another registration.
            let _ = self.epoll.delete(fd.as_fd());
        }
        self.free_pollers.push(id.index);
        drop(entry);
        Ok(())
    }

    fn entry_mut(&mut self, id: PollerId) -> Result<&mut PollerEntry, ReactorError> {
        entry_of(&mut self.pollers, id)
    }

    /// Schedules timed poller `id`'s next run one `period` from now, under arm `arm`.
    fn arm_period(&mut self, id: PollerId, period: Duration, arm: u32) {
        let target = Target::Poller {
            index: id.index,
            generation: id.generation,
            arm,
        };
        self.push_deadline(deadline_after(period), target);
    }

    /// Pushes a deadline, compacting the heap when cancelled entries
    /// outnumber the live sources four to one (so pause/resume or period
    /// churn cannot grow it without bound while nothing falls due).
    fn push_deadline(&mut self, at: Instant, target: Target) {
        self.deadlines.push(at, target);
        if self.deadlines.len() > 64 && self.deadlines.len() > 4 * (self.pollers.len() + self.timers.len()) {
            self.compact_deadlines();
        }
    }

    fn alloc_poller(&mut self) -> PollerId {
        let index = match self.free_pollers.pop() {
            Some(i) => i,
            None => {
                self.pollers.push(PollerSlot::default());
                (self.pollers.len() - 1) as u32
            }
        };
        PollerId {
            index,
            generation: self.pollers[index as usize].generation,
        }
    }

    fn free_poller(&mut self, index: u32) {
        let slot = &mut self.pollers[index as usize];
        slot.entry = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free_pollers.push(index);
    }

    /// Runs one poller; false if the id is stale, paused, or of another kind.
    /// A poller that panics is logged, counted and unregistered: a bug in one
    /// connection must not take down every other one on this core.
    fn run_poller(&mut self, id: PollerId, ready: Readiness) -> bool {
        let Some(slot) = self.pollers.get_mut(id.index as usize) else {
            return false;
        };
        if slot.generation != id.generation {
            return false;
        }
        let Some(entry) = slot.entry.as_mut() else { return false };
        if entry.paused {
            return false;
        }
        let Some(mut poller) = entry.poller.take() else {
            return false;
        };
        let outer = self.current.replace(id);
        let result = catch_unwind(AssertUnwindSafe(|| poller.poll(self, ready)));
        self.current = outer;
        self.stats.add(Counter::PollerRuns, 1);
        let status = match result {
            Ok(status) => status,
            Err(payload) => {
                self.note_panic("poller", &*payload);
                let _ = self.unregister(id);
                let _ = catch_unwind(AssertUnwindSafe(move || drop(poller)));
                return true;
            }
        };
        // Put it back unless it was unregistered while running.
        if let Some(slot) = self.pollers.get_mut(id.index as usize)
            && slot.generation == id.generation
            && let Some(entry) = slot.entry.as_mut()
        {
            entry.poller = Some(poller);
        }
        status == PollStatus::Busy
    }

    fn note_panic(&mut self, what: &str, payload: &(dyn std::any::Any + Send)) {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        tracing::error!(core = self.core(), "a {what} panicked and was removed: {msg}");
        self.stats.add(Counter::Panics, 1);
    }

    // ---- timers ---------------------------------------------------------

    /// Runs `f` once, `delay` from now (0 = on the next loop iteration).
    pub fn timer_once(&mut self, delay: Duration, f: impl FnOnce(&mut Context) + 'static) -> TimerId {
        let id = self.alloc_timer(TimerFn::Once(Box::new(f)));
        self.push_deadline(deadline_after(delay), id.into());
        id
    }

    /// Runs `f` every `period`, first one period from now, until cancelled.
    ///
    /// # Errors
    /// [`ReactorError::ZeroPeriod`].
    pub fn timer_periodic(
        &mut self,
        period: Duration,
        f: impl FnMut(&mut Context) + 'static,
    ) -> Result<TimerId, ReactorError> {
        if period.is_zero() {
            return Err(ReactorError::ZeroPeriod);
        }
        let id = self.alloc_timer(TimerFn::Periodic(Box::new(f), period));
        self.push_deadline(deadline_after(period), id.into());
        Ok(id)
    }

    /// Cancels a timer; true if it was live (a one-shot that already ran, or
    /// a stale id, gives false). A periodic timer may cancel itself.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        match self.timers.get_mut(id.index as usize) {
            Some(slot) if slot.generation == id.generation && slot.live => {
                slot.live = false;
                slot.f = None;
                slot.generation = slot.generation.wrapping_add(1);
                self.free_timers.push(id.index);
                true
            }
            _ => false,
        }
    }

    fn alloc_timer(&mut self, f: TimerFn) -> TimerId {
        let index = match self.free_timers.pop() {
            Some(i) => i,
            None => {
                self.timers.push(TimerSlot::default());
                (self.timers.len() - 1) as u32
            }
        };
        let slot = &mut self.timers[index as usize];
        slot.live = true;
        slot.f = Some(f);
        TimerId {
            index,
            generation: slot.generation,
        }
    }

    /// Runs everything due; returns whether anything ran.
    fn run_deadlines(&mut self) -> bool {
        let mut work = false;
        if self.deadlines.next().is_none_or(|d| d > self.now) {
            return false;
        }
        let now = Instant::now();
        while let Some((due, target)) = self.deadlines.pop_due(now) {
            match target {
                Target::Timer { index, generation } => work |= self.fire_timer(TimerId { index, generation }, due, now),
                Target::Poller { index, generation, arm } => {
                    let id = PollerId { index, generation };
                    let period = match self.entry_mut(id) {
                        Ok(PollerEntry {
                            source: Source::Period { period, arm: a },
                            paused: false,
                            ..
                        }) if *a == arm => *period,
                        _ => continue,
                    };
                    work |= self.run_poller(id, Readiness::TIMER);
                    // Re-arm unless it was paused, re-periodized or removed meanwhile.
                    if let Ok(PollerEntry {
                        source: Source::Period { arm: a, .. },
                        paused: false,
                        ..
                    }) = self.entry_mut(id)
                        && *a == arm
                    {
                        self.deadlines
                            .push(timer::next_period(due, period, Instant::now()), target);
                    }
                }
            }
        }
        work
    }

    fn fire_timer(&mut self, id: TimerId, due: Instant, now: Instant) -> bool {
        let Some(slot) = self.timers.get_mut(id.index as usize) else {
            return false;
        };
        if slot.generation != id.generation || !slot.live {
            return false;
        }
        self.stats.add(Counter::TimerRuns, 1);
        match slot.f.take() {
            Some(TimerFn::Once(f)) => {
                slot.live = false;
                slot.generation = slot.generation.wrapping_add(1);
                self.free_timers.push(id.index);
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                    self.note_panic("timer", &*p);
                }
            }
            Some(TimerFn::Periodic(mut f, period)) => {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                    self.note_panic("periodic timer", &*p);
                    self.cancel_timer(id);
                    return true;
                }
                if let Some(slot) = self.timers.get_mut(id.index as usize)
                    && slot.generation == id.generation
                    && slot.live
                {
                    slot.f = Some(TimerFn::Periodic(f, period));
                    self.deadlines
                        .push(timer::next_period(due, period, now.max(Instant::now())), id.into());
                }
            }
            None => return false,
        }
        true
    }

    fn compact_deadlines(&mut self) {
        let pollers = &self.pollers;
        let timers = &self.timers;
        self.deadlines.retain(|t| match *t {
            Target::Timer { index, generation } => {
                timers.get(index as usize).is_some_and(|s| s.generation == generation && s.live)
            }
            Target::Poller { index, generation, arm } => pollers.get(index as usize).is_some_and(|s| {
                s.generation == generation
                    && matches!(s.entry, Some(PollerEntry { source: Source::Period { arm: a, .. }, paused: false, .. }) if a == arm)
            }),
        });
    }

    // ---- channels -------------------------------------------------------

    /// Creates a typed channel into this reactor: items sent on the returned
    /// [`Sender`] (from any thread) are handed to `handler` on this reactor,
    /// in order, with no allocation per item. `capacity` bounds the queue;
    /// a full queue makes `try_send` return the item (back-pressure);
    /// a capacity of 0 is taken as 1.
    /// The channel closes when every `Sender` is dropped and it is empty.
    pub fn channel<T: Send + 'static>(
        &mut self,
        capacity: usize,
        handler: impl FnMut(&mut Context, T) + 'static,
    ) -> Sender<T> {
        let (tx, rx) = channel::new(capacity, self.shared.clone(), handler);
        // Only slots freed by closed channels are reused: an empty slot may
        // also be a channel being drained right now (this call can come from
        // its handler).
        match self.free_channels.pop() {
            Some(i) => self.channels[i] = Some(rx),
            None => self.channels.push(Some(rx)),
        }
        tx
    }

    fn drain_channels(&mut self) -> bool {
        let mut handled = 0;
        for i in 0..self.channels.len() {
            let Some(mut ch) = self.channels[i].take() else {
                continue;
            };
            match catch_unwind(AssertUnwindSafe(|| ch.drain(self, MESSAGE_BATCH))) {
                Ok(n) => handled += n,
                Err(p) => {
                    // Its handler may be half-updated: close the channel; senders get Stopped.
                    self.note_panic("channel handler", &*p);
                    ch.close();
                    self.free_channels.push(i);
                    continue;
                }
            }
            if ch.orphaned() {
                ch.close();
                self.free_channels.push(i);
            } else {
                self.channels[i] = Some(ch);
            }
        }
        self.stats.add(Counter::Messages, handled as u64);
        handled > 0
    }

    fn drain_inbox(&mut self) -> bool {
        // `pop` on an empty queue ends in a SeqCst fence; `is_empty` is two
        // plain loads. A polling reactor looks on every iteration, and the
        // queue is nearly always empty. (An item pushed just after the look is
        // seen next iteration, or by the re-check before any sleep.)
        if self.shared.inbox.is_empty() {
            return false;
        }
        let mut handled = 0;
        while handled < MESSAGE_BATCH {
            let Some(Message(f)) = self.shared.inbox.pop() else {
                break;
            };
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                self.note_panic("message", &*p);
            }
            handled += 1;
        }
        self.stats.add(Counter::Messages, handled as u64);
        handled > 0
    }

    /// Work another thread published (or that we owe ourselves) since the last look.
    fn has_pending(&self) -> bool {
        !self.shared.inbox.is_empty()
            || self.channels.iter().flatten().any(|c| c.has_items())
            || self.shared.stop.load(Ordering::Relaxed)
            || self.shared.mode_request.load(Ordering::Relaxed) != 0
            || self.local_mode_request.is_some()
            || !self.woken.is_empty()
    }

    // ---- the loop -------------------------------------------------------

    fn apply_mode_requests(&mut self, now: Instant, last_work: &mut Instant) {
        // Load before swapping: a locked write on every iteration would pull the
        // cache line senders read away from them on every message.
        let remote = match self.shared.mode_request.load(Ordering::Relaxed) {
            0 => None,
            _ => Mode::from_u8(self.shared.mode_request.swap(0, Ordering::Acquire)),
        };
        for requested in [remote, self.local_mode_request.take()].into_iter().flatten() {
            if requested != self.mode {
                tracing::debug!(core = self.core(), from = %self.mode, to = %requested, "reactor mode switch");
                self.mode = requested;
                self.shared.stats.set_mode(requested);
                self.stats.add(Counter::ModeSwitches, 1);
                self.shared.stats.publish(&self.stats);
                // A hybrid reactor starts with a full spin window.
                *last_work = now;
            }
        }
    }

    pub(crate) fn run(mut self) {
        let shared = self.shared.clone();
        shared.stats.attach_thread();
        // If the loop itself unwinds (a reactor bug, not a handler's), senders
        // must learn the reactor is gone instead of filling its queues.
        let _guard = StopOnExit(shared.clone());
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENT_BATCH);
        let mut t_prev = Instant::now();
        let mut last_work = t_prev;
        loop {
            self.now = t_prev;
            if shared.stop.load(Ordering::Acquire) {
                break;
            }
            self.apply_mode_requests(t_prev, &mut last_work);

            // Work from outside (messages, channel items, fds) is an arrival;
            // timers and woken pollers are this core's own follow-ups.
            let mut arrived_before = self.drain_inbox();
            arrived_before |= self.drain_channels();
            let mut work = arrived_before;
            work |= self.run_deadlines();
            for id in std::mem::take(&mut self.woken) {
                work |= self.run_poller(id, Readiness::default());
            }
            let mut arrived_after = false;
            let work_before_wait = work;

            let want_sleep = match self.mode {
                Mode::Poll => false,
                Mode::Interrupt => true,
                Mode::Hybrid => {
                    !work && t_prev.saturating_duration_since(last_work).as_nanos() as u64 >= shared.spin_window_ns()
                }
            };
            let mut slept = Duration::ZERO;
            let mut sleeping = false;
            let mut timeout = Some(Duration::ZERO);
            let mut t_sleep = t_prev;
            let mut t_wake = None;
            if want_sleep {
                shared.wake.prepare_sleep();
                t_sleep = Instant::now();
                let next = self.deadlines.next();
                if self.has_pending() || next.is_some_and(|d| d <= t_sleep) {
                    shared.wake.finish_sleep();
                } else {
                    sleeping = true;
                    timeout = next.map(|d| d - t_sleep);
                    // Readers must not see counters that lag by a whole sleep.
                    shared.stats.publish(&self.stats);
                    shared.stats.sleeping_since(t_sleep);
                }
            }
            if sleeping || self.armed_fd_pollers > 0 {
                let waited = self.epoll.wait(&mut events, timeout);
                self.stats.add(Counter::EpollWaits, 1);
                if sleeping {
                    shared.wake.finish_sleep();
                    shared.stats.woke();
                    let now = Instant::now();
                    slept = now.saturating_duration_since(t_sleep);
                    t_wake = Some(now);
                    self.stats.add(Counter::Wakeups, 1);
                    self.stats.add(Counter::SleepNs, duration_ns(slept));
                }
                let n_events = match waited {
                    Ok(n) => n,
                    Err(e) => {
                        // Only EBADF/EFAULT/EINVAL are possible here: a bug, not a peer.
                        tracing::error!(core = self.core(), error = %e, "epoll_wait failed; reactor stops");
                        break;
                    }
                };
                let mut rung = false;
                for ev in events.drain(..) {
                    let token = ev.data.u64();
                    if token == DOORBELL_TOKEN {
                        shared.doorbell.drain();
                        rung = true;
                    } else {
                        arrived_after |= self.run_poller(PollerId::from_token(token), Readiness::from_epoll(ev.flags));
                    }
                }
                work |= arrived_after;
                if let Some(t_wake) = t_wake {
                    self.note_wake_delay(t_sleep, t_wake, timeout, n_events, rung);
                }
            }

            let t_end = Instant::now();
            let active = duration_ns(t_end.saturating_duration_since(t_prev).saturating_sub(slept));
            self.stats.add(Counter::Loops, 1);
            if arrived_before {
                self.note_arrival(t_prev.saturating_duration_since(last_work));
            }
            if arrived_after && let Some(t_wake) = t_wake {
                // After a sleep: the gap runs from the end of the work before it
                // (this iteration's, if any) to the wakeup.
                let from = if work_before_wait { t_sleep } else { last_work };
                self.note_arrival(t_wake.saturating_duration_since(from));
            } else if arrived_after && !arrived_before {
                self.note_arrival(t_prev.saturating_duration_since(last_work));
            }
            if work {
                self.stats.add(Counter::BusyNs, active);
                self.stats.add(Counter::BusyLoops, 1);
                if !arrived_before && !arrived_after {
                    self.stats.add(Counter::FollowUps, 1);
                }
                // Work done before a sleep ended when the sleep began: the
                // time asleep is a gap, not work (the next arrival's gap runs from here).
                last_work = if t_wake.is_some() && !arrived_after {
                    t_sleep
                } else {
                    t_end
                };
            } else {
                self.stats.add(Counter::IdleNs, active);
            }
            shared.stats.publish(&self.stats);
            t_prev = t_end;
        }
        self.teardown();
        shared.stats.publish(&self.stats);
        shared.stats.detach_thread();
    }

    /// Counts one arrival of work after a gap of `gap` since the last work.
    #[inline]
    fn note_arrival(&mut self, gap: Duration) {
        let b = gap_bucket(duration_ns(gap));
        self.stats.gaps[b] += 1;
        self.shared.stats.publish_gap(&self.stats, b);
        self.stats.add(Counter::Arrivals, 1);
    }

    /// Counts one wake delay, after a sleep of `slept`, in the histogram.
    fn note_wake_late(&mut self, late: Duration, slept: Duration) {
        let (c, b) = (sleep_class(duration_ns(slept)), gap_bucket(duration_ns(late)));
        self.stats.wake_late[c][b] += 1;
        self.shared.stats.publish_wake_late(&self.stats, c, b);
    }

    /// After a sleep from `t_sleep` to `t_wake`: how late the loop runs
    /// after what ended it (a timer's deadline, or a sender's ring).
    fn note_wake_delay(
        &mut self,
        t_sleep: Instant,
        t_wake: Instant,
        timeout: Option<Duration>,
        n_events: usize,
        rung: bool,
    ) {
        if rung {
            // A ring from before this sleep (the re-check saw its work) says nothing.
            if let Some(at) = self.shared.stats.take_ring()
                && at >= t_sleep
            {
                let late = t_wake.saturating_duration_since(at);
                self.stats.add(Counter::RungWakeups, 1);
                self.stats.add(Counter::RungWakeLateNs, duration_ns(late));
                self.note_wake_late(late, t_wake.saturating_duration_since(t_sleep));
            }
        } else if n_events == 0
            && let Some(timeout) = timeout
        {
            let deadline = t_sleep + timeout;
            let late = t_wake.saturating_duration_since(deadline);
            self.stats.add(Counter::TimedWakeups, 1);
            self.stats.add(Counter::TimedWakeLateNs, duration_ns(late));
            self.note_wake_late(late, t_wake.saturating_duration_since(t_sleep));
        }
    }

    fn teardown(&mut self) {
        for ch in self.channels.iter_mut().filter_map(Option::take) {
            ch.close();
        }
        // Unregister fd pollers so each fd leaves epoll before its owner drops.
        let ids: Vec<PollerId> = self
            .pollers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.is_some())
            .map(|(i, s)| PollerId {
                index: i as u32,
                generation: s.generation,
            })
            .collect();
        for id in ids {
            let _ = self.unregister(id);
        }
        self.timers.clear();
        // Messages still queued are dropped unrun: the set is stopping.
        while self.shared.inbox.pop().is_some() {}
    }
}
