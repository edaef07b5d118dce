//! The poller table of a [`Context`]: registering, changing, pausing,
//! resuming and unregistering pollers, and running one (a poller that panics
//! is unregistered, not allowed to take the reactor down).
//!
//! Each slot carries a generation, so a [`PollerId`] kept after its poller is
//! gone names nothing rather than a later poller in the same slot.

use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::context::{Boxed, Context, PollerEntry, PollerSlot, Source};
use crate::context::{FdPoller, Poller};
use crate::deadline::{Target, deadline_after};
use crate::error::ReactorError;
use crate::poller::{Interest, PollStatus, PollerId, Readiness};
use crate::stats::Counter;

/// The entry of `id`, or [`ReactorError::UnknownPoller`] for a stale or foreign id.
fn entry_of(pollers: &mut [PollerSlot], id: PollerId) -> Result<&mut PollerEntry, ReactorError> {
    match pollers.get_mut(id.index as usize) {
        Some(slot) if slot.generation == id.generation => slot.entry.as_mut().ok_or(ReactorError::UnknownPoller),
        _ => Err(ReactorError::UnknownPoller),
    }
}

impl Context {
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
        if let Err(e) = self.epoll.add(fd.as_fd(), id.token(), interest.watch()) {
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
                .modify(fd.as_fd(), id.token(), interest.watch())
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
                    .add(fd.as_fd(), id.token(), interest.watch())
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

    pub(crate) fn entry_mut(&mut self, id: PollerId) -> Result<&mut PollerEntry, ReactorError> {
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
    pub(crate) fn run_poller(&mut self, id: PollerId, ready: Readiness) -> bool {
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
}
