//! Deadlines on one reactor: one-shot and periodic timers and the periods of
//! timed pollers, in one min-heap. The earliest deadline bounds the reactor's
//! `epoll_wait` timeout, so timers need no fd of their own.
//!
//! Cancellation is lazy: a cancelled entry stays in the heap until it reaches
//! the top and is then skipped (its generation no longer matches).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a heap entry fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    Timer { index: u32, generation: u32 },
    Poller { index: u32, generation: u32, arm: u32 },
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deadline: Instant,
    seq: u64,
    target: Target,
}

/// Min-heap of deadlines, FIFO among equal deadlines.
#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Deadlines {
    pub(crate) fn push(&mut self, deadline: Instant, target: Target) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            deadline,
            seq: self.seq,
            target,
        }));
    }

    /// Earliest deadline, possibly of a cancelled entry (which only makes the
    /// reactor wake early and find nothing).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Pops one entry due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Target)> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.deadline <= now => self.heap.pop().map(|Reverse(e)| (e.deadline, e.target)),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry; for rebuilding after many cancellations.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Target) -> bool) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries.into_iter().filter(|Reverse(e)| keep(&e.target)).collect();
    }
}

/// `now + d`, or a deadline a century away when that overflows `Instant`
/// (a timer that long is one that never fires).
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// The next deadline of a periodic source that was due at `due` and ran at
/// `now`: one period later, or one period after `now` when the reactor fell
/// more than a period behind (missed periods are skipped, not replayed).
pub(crate) fn next_period(due: Instant, period: Duration, now: Instant) -> Instant {
    match due.checked_add(period) {
        Some(next) if next > now => next,
        _ => now
            .checked_add(period)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_then_fifo_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let t = |i: u32| Target::Timer {
            index: i,
            generation: 1,
        };
        d.push(t0 + Duration::from_millis(5), t(1));
        d.push(t0 + Duration::from_millis(1), t(2));
        d.push(t0 + Duration::from_millis(1), t(3));
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(d.pop_due(t0), None);
        let now = t0 + Duration::from_millis(2);
        assert_eq!(d.pop_due(now).map(|x| x.1), Some(t(2)));
        assert_eq!(d.pop_due(now).map(|x| x.1), Some(t(3)));
        assert_eq!(d.pop_due(now), None);
        assert_eq!(d.len(), 1);
        d.retain(|_| false);
        assert_eq!(d.next(), None);
    }

    #[test]
    fn periods_skip_missed_ticks() {
        let t0 = Instant::now();
        let p = Duration::from_micros(100);
        assert_eq!(next_period(t0, p, t0 + Duration::from_micros(10)), t0 + p);
        let late = t0 + Duration::from_micros(350);
        assert_eq!(next_period(t0, p, late), late + p);
    }
}
