//! Timers on a [`Context`]: one-shot and periodic callbacks and their table,
//! and the dispatch of what the deadline heap says is due (timers and timed
//! pollers alike).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::context::{Context, PollerEntry, Source, TimerFn, TimerSlot};
use crate::deadline::{self, Target, deadline_after};
use crate::error::ReactorError;
use crate::poller::{PollerId, Readiness};
use crate::stats::Counter;

/// Names one timer on one reactor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// A timer's entry in the deadline heap.
impl From<TimerId> for Target {
    fn from(t: TimerId) -> Self {
        Target::Timer {
            index: t.index,
            generation: t.generation,
        }
    }
}

impl Context {
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
    pub(crate) fn run_deadlines(&mut self) -> bool {
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
                            .push(deadline::next_period(due, period, Instant::now()), target);
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
                        .push(deadline::next_period(due, period, now.max(Instant::now())), id.into());
                }
            }
            None => return false,
        }
        true
    }
}
