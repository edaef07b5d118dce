//! One reactor's loop, run on its pinned core by [`Context::run`], and its
//! teardown. What the loop drives lives in its own files: the [`Context`]
//! (`context.rs`), its pollers (`pollers.rs`), timers (`timer.rs`) and
//! channels (`channel.rs`).
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

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::context::{Context, DOORBELL_TOKEN};
use crate::context::{Message, ReactorShared};
use crate::mode::Mode;
use crate::poller::{PollerId, Readiness};
use crate::shared::duration_ns;
use crate::stats::{Counter, gap_bucket, sleep_class};
use crate::sys::Events;

/// Most messages taken from one queue per loop iteration, so that one busy
/// sender cannot starve fds and timers.
const MESSAGE_BATCH: usize = 64;
/// Most fd events taken per `epoll_wait`.
const EVENT_BATCH: usize = 128;

/// Sets the stop flag when the loop ends, even by unwinding.
struct StopOnExit(Arc<ReactorShared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}

impl Context {
    /// Runs up to [`MESSAGE_BATCH`] messages from the inbox; returns whether any ran.
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

    /// Applies the latest mode request, another thread's first, then this reactor's own.
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

    /// The loop (module docs); returns once the reactor is asked to stop,
    /// after tearing down what is registered on it.
    pub(crate) fn run(mut self) {
        let shared = self.shared.clone();
        shared.stats.attach_thread();
        // If the loop itself unwinds (a reactor bug, not a handler's), senders
        // must learn the reactor is gone instead of filling its queues.
        let _guard = StopOnExit(shared.clone());
        let mut events = Events::with_capacity(EVENT_BATCH);
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
            arrived_before |= self.drain_channels(MESSAGE_BATCH);
            let mut work = arrived_before;
            work |= self.run_deadlines();
            // Run from a swapped-in list, and kept: neither list loses its
            // capacity, so waking a poller allocates nothing.
            let mut woken = std::mem::replace(&mut self.woken, std::mem::take(&mut self.woken_spare));
            for &id in &woken {
                work |= self.run_poller(id, Readiness::default());
            }
            woken.clear();
            self.woken_spare = woken;
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
                for ready in events.drain() {
                    if ready.token == DOORBELL_TOKEN {
                        shared.doorbell.drain();
                        rung = true;
                    } else {
                        arrived_after |=
                            self.run_poller(PollerId::from_token(ready.token), Readiness::from_ready(ready));
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
                    // A timer's wakeup ran it in the iteration after the sleep:
                    // the gap includes the sleep, as an arrival's does.
                    let b = gap_bucket(duration_ns(t_prev.saturating_duration_since(last_work)));
                    self.stats.follow_gaps[b] += 1;
                    shared.stats.publish_follow_gap(&self.stats, b);
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

    /// Closes the channels, unregisters every poller (so each fd leaves epoll
    /// before its owner is dropped), drops the timers and the queued messages.
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
