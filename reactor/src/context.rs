//! [`Context`]: what everything that runs on a reactor receives (pollers,
//! timers, messages, channel handlers) to act on it.
//!
//! `Context` is one struct; its methods are grouped by topic, each group in
//! its own file: here the struct, the slot types of its tables and the small
//! accessors; registering and running pollers in `pollers.rs`; timers and the
//! dispatch of due deadlines in `timer.rs`; channels in `channel.rs`; the loop
//! in `reactor.rs`. The slot types live here, beside the struct whose shape
//! they are, so that those files build on this one and this one needs none
//! of them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::deadline::{Deadlines, Target};
use crate::error::{ReactorError, TrySendError};
use crate::handle::Handle;
use crate::mode::Mode;
use crate::poller::{Interest, PollStatus, PollerId, Readiness};
use crate::shared::Shared;
use crate::stats::{Counter, LocalStats};
use crate::sys::Epoll;

/// A unit of work run by one reactor. Implemented for every
/// `FnMut(&mut Context, Readiness) -> PollStatus + 'static`.
///
/// ```
/// use lull_reactor::{PollStatus, Poller, Readiness, Context};
/// struct Counter(u64);
/// impl Poller for Counter {
///     fn poll(&mut self, _cx: &mut Context, _ready: Readiness) -> PollStatus {
///         self.0 += 1;
///         PollStatus::Busy
///     }
/// }
/// ```
pub trait Poller: 'static {
    /// Does a bounded amount of work. Runs on the owning reactor's thread only.
    fn poll(&mut self, cx: &mut Context, ready: Readiness) -> PollStatus;
}

impl<F> Poller for F
where
    F: FnMut(&mut Context, Readiness) -> PollStatus + 'static,
{
    fn poll(&mut self, cx: &mut Context, ready: Readiness) -> PollStatus {
        self(cx, ready)
    }
}

/// A poller that owns the file descriptor that wakes it. The reactor keeps the
/// fd in its epoll set for exactly as long as it owns the poller, so the fd
/// cannot be closed while registered. `as_fd` must return the same fd for the
/// poller's whole life.
pub trait FdPoller: Poller + AsFd {}

impl<T: Poller + AsFd> FdPoller for T {}

/// Glue for a source and a closure: `FdSource::new(socket, |cx, sock, ready| ...)`.
pub struct FdSource<S, F> {
    source: S,
    f: F,
}

impl<S, F> FdSource<S, F>
where
    S: AsFd + 'static,
    F: FnMut(&mut Context, &mut S, Readiness) -> PollStatus + 'static,
{
    /// Binds `f` to `source`; `f` gets `&mut source` on every run.
    pub fn new(source: S, f: F) -> Self {
        Self { source, f }
    }
}

impl<S: AsFd + 'static, F: FnMut(&mut Context, &mut S, Readiness) -> PollStatus + 'static> Poller for FdSource<S, F> {
    fn poll(&mut self, cx: &mut Context, ready: Readiness) -> PollStatus {
        (self.f)(cx, &mut self.source, ready)
    }
}

impl<S: AsFd, F> AsFd for FdSource<S, F> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.source.as_fd()
    }
}

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

/// The part of a reactor other threads may touch, with its inbox of [`Message`]s.
pub(crate) type ReactorShared = Shared<Message>;

/// A cheap, cloneable, `Send + Sync` reference to one reactor: its methods
/// are [`Handle`]'s, and `try_send` below.
pub type ReactorHandle = Handle<Message>;

impl Handle<Message> {
    /// Sends a closure to run once on the reactor's thread.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the inbox holds `inbox_capacity` messages:
    /// the message comes back (as a [`Message`]) and nothing is dropped;
    /// [`TrySendError::Stopped`] after shutdown.
    pub fn try_send(&self, f: impl FnOnce(&mut Context) + Send + 'static) -> Result<(), TrySendError<Message>> {
        self.try_send_message(Message::new(f))
    }
}

/// The doorbell's epoll token; poller tokens never reach it (index < u32::MAX).
pub(crate) const DOORBELL_TOKEN: u64 = u64::MAX;

/// A registered poller, boxed; `None` in its slot while it runs.
pub(crate) enum Boxed {
    Fd(Box<dyn FdPoller>),
    Timed(Box<dyn Poller>),
}

impl Boxed {
    pub(crate) fn poll(&mut self, cx: &mut Context, ready: Readiness) -> PollStatus {
        match self {
            Boxed::Fd(p) => p.poll(cx, ready),
            Boxed::Timed(p) => p.poll(cx, ready),
        }
    }
}

/// What wakes a poller.
pub(crate) enum Source {
    /// `fd` is the reactor's own duplicate of the poller's fd: the epoll
    /// registration is made and removed through it, so it stays valid and
    /// unique whatever the poller does with its own fd.
    Fd { fd: OwnedFd, interest: Interest },
    /// `arm` changes on pause, resume and period change; stale deadlines are skipped.
    Period { period: Duration, arm: u32 },
}

/// One registered poller.
pub(crate) struct PollerEntry {
    /// `None` while the poller is running.
    pub(crate) poller: Option<Boxed>,
    pub(crate) source: Source,
    pub(crate) paused: bool,
}

/// A slot of the poller table; `generation` changes each time the slot is
/// freed, so a stale [`PollerId`] names nothing.
#[derive(Default)]
pub(crate) struct PollerSlot {
    pub(crate) generation: u32,
    pub(crate) entry: Option<PollerEntry>,
}

/// A timer's callback.
pub(crate) enum TimerFn {
    Once(Box<dyn FnOnce(&mut Context)>),
    Periodic(Box<dyn FnMut(&mut Context)>, Duration),
}

/// A slot of the timer table (generations as for pollers).
#[derive(Default)]
pub(crate) struct TimerSlot {
    pub(crate) generation: u32,
    pub(crate) live: bool,
    /// `None` while a periodic callback is running.
    pub(crate) f: Option<TimerFn>,
}

/// The receiving side of a channel, as the reactor holds it (the sending
/// side and the one implementation are in `channel.rs`).
pub(crate) trait ChannelDrain {
    /// Hands up to `budget` items to the handler; returns how many.
    fn drain(&mut self, cx: &mut Context, budget: usize) -> usize;
    fn has_items(&self) -> bool;
    /// No sender is left and nothing is queued.
    fn orphaned(&self) -> bool;
    fn close(&self);
}

/// A reactor's state, lent to everything that runs on it. Only the reactor's
/// own thread ever has one, so nothing in it needs a lock.
///
/// The fields are the crate's (the files that add methods to `Context` use
/// them); nothing outside the crate sees them.
pub struct Context {
    pub(crate) shared: Arc<ReactorShared>,
    pub(crate) peers: Arc<[ReactorHandle]>,
    pub(crate) epoll: Epoll,
    pub(crate) pollers: Vec<PollerSlot>,
    pub(crate) free_pollers: Vec<u32>,
    pub(crate) armed_fd_pollers: usize,
    pub(crate) timers: Vec<TimerSlot>,
    pub(crate) free_timers: Vec<u32>,
    pub(crate) deadlines: Deadlines,
    pub(crate) channels: Vec<Option<Box<dyn ChannelDrain>>>,
    pub(crate) free_channels: Vec<usize>,
    pub(crate) mode: Mode,
    pub(crate) local_mode_request: Option<Mode>,
    pub(crate) current: Option<PollerId>,
    /// Pollers asked to run on the next iteration whatever their fd says.
    pub(crate) woken: Vec<PollerId>,
    /// The woken list last run, empty, kept for its capacity.
    pub(crate) woken_spare: Vec<PollerId>,
    pub(crate) now: Instant,
    pub(crate) stats: LocalStats,
}

impl Context {
    pub(crate) fn new(shared: Arc<ReactorShared>, peers: Arc<[ReactorHandle]>) -> Result<Self, ReactorError> {
        let epoll = Epoll::new().map_err(|e| ReactorError::io("epoll_create1", e))?;
        epoll
            .add_doorbell(&shared.doorbell, DOORBELL_TOKEN)
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
            woken_spare: Vec::new(),
            now: Instant::now(),
            stats: LocalStats::default(),
        })
    }

    /// A `Context` that no reactor loop runs (index 0, CPU 0, no thread, no
    /// peers but itself), so code that takes a `Context` can be driven from a
    /// plain test: a RAM bdev's `submit`, a controller's command dispatch.
    /// Pollers, timers, channels and messages registered on it never run, and
    /// its clock stays at its creation time unless the caller runs a loop.
    ///
    /// # Errors
    /// When the eventfd or the epoll instance cannot be created.
    pub fn detached() -> Result<Self, ReactorError> {
        let shared = Shared::new(0, 0, Mode::Interrupt, Duration::ZERO, 1)
            .map(Arc::new)
            .map_err(|e| ReactorError::io("eventfd", e))?;
        let peers: Arc<[ReactorHandle]> = Arc::from([ReactorHandle { shared: shared.clone() }]);
        Context::new(shared, peers)
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

    /// The poll period the supervisor chose for an initiator's I/O queues on
    /// this reactor, in force instead of their configured one, if any
    /// ([`ReactorHandle::set_queue_period`](crate::ReactorHandle::set_queue_period)).
    pub fn queue_period(&self) -> Option<Duration> {
        match self.shared.queue_period_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
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

    /// Pushes a deadline, compacting the heap when cancelled entries
    /// outnumber the live sources four to one (so pause/resume or period
    /// churn cannot grow it without bound while nothing falls due).
    pub(crate) fn push_deadline(&mut self, at: Instant, target: Target) {
        self.deadlines.push(at, target);
        if self.deadlines.len() > 64 && self.deadlines.len() > 4 * (self.pollers.len() + self.timers.len()) {
            self.compact_deadlines();
        }
    }

    /// Drops the heap's entries whose timer or poller period is gone.
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

    pub(crate) fn note_panic(&mut self, what: &str, payload: &(dyn std::any::Any + Send)) {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        tracing::error!(core = self.core(), "a {what} panicked and was removed: {msg}");
        self.stats.add(Counter::Panics, 1);
    }
}
