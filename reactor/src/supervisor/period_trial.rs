//! Whether the budget policy's I/O queue period saves a reactor wakeups,
//! found by trying the reactor with it and without it.
//!
//! Why: the model credits a period with taking the queues' completions off
//! their sockets, so the target's answers wake nobody; it cannot tell what
//! else wakes the reactor. Where something else does anyway (an open-loop
//! initiator at 50k IOPS sends every 20 us), a completion found by the
//! period's timer instead of its socket only waits longer: measured, the
//! period took as many wakeups as event-driven queues and added 100-300 us
//! at p99 (docs/performance.md, "The budget split between the two sides").
//! So a planned period is tried: [`TRIAL_SAMPLES`] steady samples with it,
//! as many without, and kept only when it took at least
//! [`MIN_PERIOD_SAVING`] fewer wakeups, a wakeup by a socket counted
//! [`SOCKET_WAKEUP_WEIGHT`] times: it costs the peer that sent too (on
//! loopback the target's send wakes the initiator from inside the target's
//! system call: at 1k IOPS a period that took as many initiator wakeups as
//! none saved the target 2 % of a core, about 20 us per wakeup, half of
//! what one costs the reactor itself). The verdict holds for
//! [`VERDICT_SAMPLES`] samples, or until the reactor's events per second
//! move by more than [`RATE_CHANGE`] times either way, then the period is
//! tried again.

/// Steady samples counted on each side of the trial (1 s at the default
/// 250 ms interval).
pub(super) const TRIAL_SAMPLES: u32 = 4;
/// Samples a verdict holds before the period is tried again (60 s at the
/// default interval): loads change, and without the period the reactor
/// cannot see what it would save.
pub(super) const VERDICT_SAMPLES: u32 = 240;
/// Share of the wakeups a period must save to be kept.
pub(super) const MIN_PERIOD_SAVING: f64 = 0.05;
/// What a wakeup by a socket (not a timer or the doorbell) counts for: its
/// own and half again for the peer whose send woke the reactor.
pub(super) const SOCKET_WAKEUP_WEIGHT: f64 = 1.5;
/// A verdict is for the load it was reached at: events per second this many
/// times higher or lower end it.
pub(super) const RATE_CHANGE: f64 = 2.0;

/// Where a reactor is in trying its planned I/O queue period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) enum PeriodTrial {
    /// No period planned, or the reactor polls.
    #[default]
    Untried,
    /// The planned period in force: `n` steady samples counted, `sum` of
    /// their wakeups per second.
    With { n: u32, sum: f64 },
    /// The queues event-driven for comparison, after `with` wakeups per
    /// second with the period.
    Without { n: u32, sum: f64, with: f64 },
    /// Tried: the period is kept or not for `left` more samples while the
    /// events per second stay near `rate`; wakeups per second measured with
    /// and without it.
    Decided {
        keep: bool,
        left: u32,
        rate: f64,
        with: f64,
        without: f64,
    },
}

/// What one supervisor sample tells the trial.
#[derive(Clone, Copy, Debug)]
pub(super) struct Interval {
    /// The plan gives the reactor's queues a period.
    pub planned: bool,
    /// The reactor sleeps when idle (it is not polling).
    pub sleeping: bool,
    /// Mode, spin window and queue period were the same at both ends of the
    /// interval (a change's first interval mixes both).
    pub steady: bool,
    /// A queue period was in force through the interval.
    pub with_period: bool,
    /// Wakeups counted, per second, those by a socket weighted
    /// [`SOCKET_WAKEUP_WEIGHT`] ([`weighted_wakeups`]).
    pub wakeups_per_s: f64,
    /// The reactor's events (arrivals and follow-ups) per second, smoothed.
    pub events_per_s: f64,
}

/// `wakeups`, of which `timed` ended by a timer and `rung` by the doorbell,
/// with the rest (ended by a socket) counted [`SOCKET_WAKEUP_WEIGHT`] times.
pub(super) fn weighted_wakeups(wakeups: u64, timed: u64, rung: u64) -> f64 {
    let socket = wakeups.saturating_sub(timed.saturating_add(rung));
    (wakeups - socket) as f64 + socket as f64 * SOCKET_WAKEUP_WEIGHT
}

impl PeriodTrial {
    /// Whether the planned period applies in this state: not while the
    /// queues are tried without it, nor after a verdict against it.
    pub(super) fn allows_period(&self) -> bool {
        match self {
            PeriodTrial::Without { .. } => false,
            PeriodTrial::Decided { keep, .. } => *keep,
            PeriodTrial::Untried | PeriodTrial::With { .. } => true,
        }
    }

    /// The state after one more sample, `i`.
    pub(super) fn next(self, i: &Interval) -> PeriodTrial {
        use PeriodTrial::*;
        let moved = |rate: f64| !(rate / RATE_CHANGE..=rate * RATE_CHANGE).contains(&i.events_per_s);
        match self {
            Decided { left: 0, .. } => Untried,
            Decided { rate, .. } if moved(rate) => Untried,
            Decided {
                keep,
                left,
                rate,
                with,
                without,
            } => Decided {
                keep,
                left: left - 1,
                rate,
                with,
                without,
            },
            _ if !i.planned || !i.sleeping => Untried,
            Untried => With { n: 0, sum: 0.0 },
            With { n, sum } if i.steady && i.with_period => {
                let (n, sum) = (n + 1, sum + i.wakeups_per_s);
                if n >= TRIAL_SAMPLES {
                    Without {
                        n: 0,
                        sum: 0.0,
                        with: sum / f64::from(n),
                    }
                } else {
                    With { n, sum }
                }
            }
            Without { n, sum, with } if i.steady && !i.with_period => {
                let (n, sum) = (n + 1, sum + i.wakeups_per_s);
                if n >= TRIAL_SAMPLES {
                    let without = sum / f64::from(n);
                    Decided {
                        keep: with <= without * (1.0 - MIN_PERIOD_SAVING),
                        left: VERDICT_SAMPLES,
                        rate: i.events_per_s,
                        with,
                        without,
                    }
                } else {
                    Without { n, sum, with }
                }
            }
            other => other,
        }
    }

    /// What the trial adds to a decision's reason, if anything.
    pub(super) fn note(&self) -> Option<String> {
        match self {
            PeriodTrial::Without { with, .. } => Some(format!(
                "I/O queues event-driven for a second to compare with the period's {with:.0} wakeups/s"
            )),
            PeriodTrial::Decided {
                keep: false,
                with,
                without,
                ..
            } => Some(format!(
                "no I/O queue period: it took {with:.0} wakeups/s, event-driven queues {without:.0} (socket wakeups x {SOCKET_WAKEUP_WEIGHT}; saves under {:.0} %)",
                MIN_PERIOD_SAVING * 100.0
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(planned: bool, with_period: bool, wakeups_per_s: f64) -> Interval {
        Interval {
            planned,
            sleeping: true,
            steady: true,
            with_period,
            wakeups_per_s,
            events_per_s: 50_000.0,
        }
    }

    /// Runs the trial with `with` wakeups/s while the period is in force and
    /// `without` otherwise; returns the state once decided and the samples
    /// it took.
    fn try_period(with: f64, without: f64) -> (PeriodTrial, usize) {
        let mut t = PeriodTrial::Untried;
        for k in 1..100 {
            let in_force = t.allows_period();
            t = t.next(&interval(true, in_force, if in_force { with } else { without }));
            if matches!(t, PeriodTrial::Decided { .. }) {
                return (t, k);
            }
        }
        panic!("never decided: {t:?}");
    }

    #[test]
    fn a_period_that_saves_wakeups_is_kept_and_one_that_does_not_is_dropped() {
        // 1 to start, then TRIAL_SAMPLES with, TRIAL_SAMPLES without.
        let (t, k) = try_period(9_900.0, 13_600.0);
        assert_eq!(k, 1 + 2 * TRIAL_SAMPLES as usize);
        assert!(t.allows_period() && t.note().is_none(), "{t:?}");
        // 50k IOPS: the period took more wakeups than none (21.0k against 17.8k).
        let (t, _) = try_period(21_000.0, 17_800.0);
        assert!(!t.allows_period(), "{t:?}");
        assert!(
            t.note().is_some_and(|n| n.contains("21000") && n.contains("17800")),
            "{t:?}"
        );
        // Within 5 %: not worth the added latency.
        assert!(!try_period(9_600.0, 10_000.0).0.allows_period());
        assert!(try_period(9_400.0, 10_000.0).0.allows_period());
    }

    #[test]
    fn a_socket_wakeup_counts_half_again() {
        // 1k IOPS event-driven: 1,000 timed sends and 1,000 completions by
        // the socket; with a period, 2,000 timed wakeups: kept.
        let without = weighted_wakeups(2_000, 1_000, 0);
        let with = weighted_wakeups(2_000, 2_000, 0);
        assert_eq!((without, with), (2_500.0, 2_000.0));
        assert!(with <= without * (1.0 - MIN_PERIOD_SAVING));
        // Doorbell wakeups count once; counters that overlap never go below
        // the plain count.
        assert_eq!(weighted_wakeups(100, 20, 30), 125.0);
        assert_eq!(weighted_wakeups(100, 80, 80), 100.0);
    }

    #[test]
    fn only_steady_samples_count_and_the_verdict_expires() {
        let mut t = PeriodTrial::Untried.next(&interval(true, false, 0.0));
        assert_eq!(t, PeriodTrial::With { n: 0, sum: 0.0 });
        // The interval in which the period came in (not steady), and one
        // without it in force, count for nothing.
        let unsteady = Interval {
            steady: false,
            ..interval(true, true, 1e6)
        };
        t = t.next(&unsteady).next(&interval(true, false, 1e6));
        assert_eq!(t, PeriodTrial::With { n: 0, sum: 0.0 });
        // A plan without a period, or a polling reactor, ends a trial.
        assert_eq!(t.next(&interval(false, true, 5.0)), PeriodTrial::Untried);
        let polling = Interval {
            sleeping: false,
            ..interval(true, true, 5.0)
        };
        assert_eq!(t.next(&polling), PeriodTrial::Untried);
        // A verdict holds through anything at that load for
        // VERDICT_SAMPLES, then expires.
        let (mut t, _) = try_period(21_000.0, 17_800.0);
        for _ in 0..VERDICT_SAMPLES {
            t = t.next(&polling);
            assert!(!t.allows_period());
        }
        assert_eq!(t.next(&polling), PeriodTrial::Untried);
        // A load twice as high or low is another load: tried again.
        let (t, _) = try_period(21_000.0, 17_800.0);
        let at = |events_per_s| Interval {
            events_per_s,
            ..interval(true, false, 5.0)
        };
        assert!(matches!(t.next(&at(99_000.0)), PeriodTrial::Decided { .. }));
        assert!(matches!(t.next(&at(25_500.0)), PeriodTrial::Decided { .. }));
        assert_eq!(t.next(&at(101_000.0)), PeriodTrial::Untried);
        assert_eq!(t.next(&at(24_000.0)), PeriodTrial::Untried);
    }
}
