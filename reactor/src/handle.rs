//! [`Handle`] ([`ReactorHandle`](crate::ReactorHandle)): what any thread holds to talk to one reactor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{ReactorError, TrySendError};
use crate::mode::{MAX_IDLE_POLL, Mode};
use crate::shared::{NO_SPIN_WINDOW, Shared, duration_ns};
use crate::stats::StatsSnapshot;

/// A cheap, cloneable, `Send + Sync` reference to one reactor.
///
/// ```no_run
/// use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};
/// let reactors = Reactors::start(ReactorConfig::new(CoreList::parse("0")?))?;
/// let r = &reactors.handles()[0];
/// r.try_send(|cx| println!("hello from core {}", cx.core())).ok();
/// r.set_mode(Mode::Interrupt);
/// println!("{:?}", r.stats());
/// reactors.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`ReactorHandle`](crate::ReactorHandle) is `Handle<Message>`: the
/// message type is a parameter only so that this file does not need the
/// [`Context`](crate::Context) a message runs with (`context.rs` adds
/// `try_send`, which takes a closure over it). Nothing else is ever used for
/// `M`.
pub struct Handle<M> {
    pub(crate) shared: Arc<Shared<M>>,
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            shared: self.shared.clone(),
        }
    }
}

impl<M> Handle<M> {
    /// The CPU the reactor is pinned to.
    pub fn core(&self) -> usize {
        self.shared.core
    }

    /// Position in the reactor set (0-based).
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// Sends a message already made (a [`Message`](crate::Message): a retry
    /// of one that came back, or one built ahead); `try_send` does the same
    /// for a closure.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the inbox holds `inbox_capacity` messages:
    /// the message comes back and nothing is dropped;
    /// [`TrySendError::Stopped`] after shutdown.
    pub fn try_send_message(&self, msg: M) -> Result<(), TrySendError<M>> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(TrySendError::Stopped(msg));
        }
        self.shared.inbox.push(msg).map_err(TrySendError::Full)?;
        self.shared.notify();
        Ok(())
    }

    /// Asks the reactor to switch mode at the top of its next loop iteration.
    /// Mode requests travel in their own one-slot mailbox (the latest request
    /// wins), so a full inbox can neither refuse nor delay them.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode_request.store(mode.to_u8(), Ordering::Release);
        self.shared.notify();
    }

    /// The mode the reactor runs in now (a request not yet applied is not shown).
    pub fn mode(&self) -> Mode {
        self.shared.stats.mode()
    }

    /// Sets hybrid mode's spin window (`idle_poll_us`); read by the reactor on
    /// every iteration, so it takes effect at once.
    ///
    /// # Errors
    /// [`ReactorError::InvalidSetting`] above [`MAX_IDLE_POLL`] (1 s): a longer
    /// spin is poll mode, and should be asked for as such.
    pub fn set_idle_poll(&self, idle_poll: Duration) -> Result<(), ReactorError> {
        if idle_poll > MAX_IDLE_POLL {
            return Err(ReactorError::InvalidSetting {
                field: "idle_poll_us",
                value: idle_poll.as_micros().to_string(),
                allowed: "0 to 1000000 microseconds",
            });
        }
        self.shared
            .idle_poll_ns
            .store(duration_ns(idle_poll), Ordering::Relaxed);
        Ok(())
    }

    /// Hybrid mode's spin window.
    pub fn idle_poll(&self) -> Duration {
        Duration::from_nanos(self.shared.idle_poll_ns.load(Ordering::Relaxed))
    }

    /// Sets a spin window for hybrid mode that the supervisor chose for this
    /// reactor, in force instead of `idle_poll_us` until set back to `None`
    /// (the user's `idle_poll_us` stays as set). Windows above
    /// [`MAX_IDLE_POLL`] are taken as that.
    pub fn set_spin_window(&self, window: Option<Duration>) {
        let ns = window.map_or(NO_SPIN_WINDOW, |w| duration_ns(w.min(MAX_IDLE_POLL)));
        self.shared.spin_window_ns.store(ns, Ordering::Relaxed);
    }

    /// The supervisor's spin window in force, if any.
    pub fn spin_window(&self) -> Option<Duration> {
        match self.shared.spin_window_ns.load(Ordering::Relaxed) {
            NO_SPIN_WINDOW => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Sets the poll period for the I/O queues of an NVMe/TCP initiator on
    /// this reactor, in force instead of each queue's configured
    /// `nvme_ioq_poll_period_us` until set back to `None` (the supervisor's
    /// budget policy sets it; a polling reactor checks its queues every loop
    /// whatever it is). A zero period is taken as `None`.
    pub fn set_queue_period(&self, period: Option<Duration>) {
        let ns = period.map_or(0, duration_ns);
        self.shared.queue_period_ns.store(ns, Ordering::Relaxed);
    }

    /// The I/O queue poll period the supervisor set, if any.
    pub fn queue_period(&self) -> Option<Duration> {
        match self.shared.queue_period_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Whether the reactor has announced it is sleeping (or about to).
    pub fn is_sleeping(&self) -> bool {
        self.shared.wake.is_sleeping()
    }

    /// The reactor's counters now; lock-free.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self
            .shared
            .stats
            .snapshot(self.shared.core, self.shared.wake.is_sleeping());
        s.spin_window = self.spin_window();
        s.queue_period = self.queue_period();
        s
    }

    pub(crate) fn request_stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        // Unconditional: the reactor may be between its re-check and epoll_wait.
        self.shared.doorbell.ring();
    }
}

impl<M> std::fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("core", &self.core())
            .field("mode", &self.mode())
            .finish()
    }
}
