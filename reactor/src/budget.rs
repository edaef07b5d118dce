//! The `budget` policy's model: for one reactor, from what it measured, the
//! cheapest way to wait whose added latency stays within `latency_budget_us`.
//!
//! Pure functions of their inputs (no clock, no reactor), so they are tested
//! with made-up numbers; the supervisor feeds them and applies the result.
//!
//! The model, per reactor (docs/architecture.md, "Supervisor"):
//! - a request that arrives while the reactor sleeps waits one *wake cost*
//!   `w` (measured: how late the loop runs after a timer's deadline or a
//!   sender's doorbell, as a histogram, since its tail is what a p99 budget
//!   meets); one that arrives while it polls or spins waits nothing;
//! - spinning `W` after each piece of work catches the arrivals whose gap
//!   since the last work is under `W` and costs `min(gap, W)` of CPU per
//!   gap; every longer gap is slept through, at the CPU cost of a wakeup;
//! - the latency added at the 99th percentile is nothing when at most 1 % of
//!   arrivals find the reactor asleep; when a share `a` above that does, it
//!   is the `1 - 0.01 / a` quantile of `w` (the p99 of `w` when every
//!   arrival finds it asleep).
//!
//! So: with `w <= budget` every setting keeps the budget and the cheapest
//! wins (interrupt, or a short spin where gaps are shorter than a wakeup's CPU
//! cost); with `w > budget` only a window that catches 99 % of the gaps, or
//! polling, keeps it; a budget of 0 adds nothing, which only polling does.

use std::fmt;
use std::time::Duration;

use crate::stats::{GAP_BUCKETS, gap_bucket_limit_us};

/// Share of arrivals allowed to find the reactor asleep: the budget is a
/// 99th-percentile one.
pub const TAIL: f64 = 0.01;
/// Below this many arrivals per second a reactor counts as idle: it sleeps,
/// whatever the budget (there is no load for latency to be added to).
pub const IDLE_ARRIVALS_PER_S: f64 = 20.0;
/// A sleeping or spinning setting must save at least this share of a core
/// over polling to be chosen: polling has the best latency of all.
pub const MIN_SAVING: f64 = 0.05;

/// How a reactor waits, as the budget policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Sleeps whenever idle.
    Interrupt,
    /// Spins this long after the last work, then sleeps (hybrid mode).
    Spin(Duration),
    /// Never sleeps.
    Poll,
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Interrupt => f.write_str("interrupt"),
            Setting::Spin(w) => write!(f, "hybrid with a {} us spin", w.as_micros()),
            Setting::Poll => f.write_str("poll"),
        }
    }
}

/// What one reactor measured, smoothed over recent samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// `latency_budget_us`, ns.
    pub budget_ns: f64,
    /// Wake cost: mean time from a sleep's end (deadline, doorbell) to
    /// running, ns; used where `wake_hist` is empty.
    pub wake_late_ns: f64,
    /// The distribution of that time: weights per bucket of
    /// [`gap_bucket`](crate::stats::gap_bucket) (any scale).
    pub wake_hist: [f64; GAP_BUCKETS],
    /// CPU a wakeup costs beyond the work (system call, context switch), ns.
    pub wake_cpu_ns: f64,
    /// Share of the wall time spent on work, 0..1.
    pub busy: f64,
    /// Arrivals per second by the gap before them, in the buckets of
    /// [`gap_bucket`](crate::stats::gap_bucket).
    pub gaps_per_s: [f64; GAP_BUCKETS],
}

/// The model's verdict on one setting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The setting.
    pub setting: Setting,
    /// CPU it would cost, share of a core.
    pub cpu: f64,
    /// Share of arrivals that would find the reactor asleep.
    pub asleep: f64,
    /// Latency it would add at the 99th percentile, ns.
    pub added_p99_ns: f64,
    /// Whether that is within the budget.
    pub within_budget: bool,
}

/// The cheapest setting within the budget, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The chosen setting's estimate.
    pub best: Estimate,
    /// Why, with the numbers.
    pub reason: String,
}

/// Typical gap in bucket `b`, us: the middle of its range.
fn mid_us(b: usize) -> f64 {
    match b {
        0 => 0.5,
        b => 0.75 * (1u64 << b) as f64,
    }
}

/// The range of bucket `b`, us (the last one taken as twice its lower limit).
fn bucket_range_us(b: usize) -> (f64, f64) {
    let lo = if b == 0 { 0.0 } else { (1u64 << (b - 1)) as f64 };
    let hi = gap_bucket_limit_us(b).map_or(2.0 * lo, |l| l as f64);
    (lo, hi)
}

impl Inputs {
    /// The `q` quantile (0..1) of the wake cost, ns: from the histogram,
    /// spread evenly inside each bucket; the mean when the histogram is empty.
    pub fn wake_quantile_ns(&self, q: f64) -> f64 {
        let total: f64 = self.wake_hist.iter().sum();
        if total <= 0.0 {
            return self.wake_late_ns;
        }
        let want = q.clamp(0.0, 1.0) * total;
        let mut below = 0.0;
        for (b, &n) in self.wake_hist.iter().enumerate() {
            if n > 0.0 && below + n >= want {
                let (lo, hi) = bucket_range_us(b);
                return (lo + (hi - lo) * ((want - below) / n)) * 1000.0;
            }
            below += n;
        }
        bucket_range_us(GAP_BUCKETS - 1).1 * 1000.0
    }

    /// Arrivals per second.
    pub fn rate(&self) -> f64 {
        self.gaps_per_s.iter().sum()
    }

    fn estimate_from(&self, setting: Setting, cpu: f64, asleep: f64) -> Estimate {
        let added = if asleep > TAIL {
            self.wake_quantile_ns(1.0 - TAIL / asleep)
        } else {
            0.0
        };
        let within = if self.budget_ns <= 0.0 {
            setting == Setting::Poll
        } else {
            added <= self.budget_ns
        };
        Estimate {
            setting,
            cpu: cpu.clamp(0.0, 1.0),
            asleep,
            added_p99_ns: added,
            within_budget: within,
        }
    }

    /// What `setting` would cost and add under these inputs.
    pub fn estimate(&self, setting: Setting) -> Estimate {
        let rate = self.rate();
        let wake_cpu = self.wake_cpu_ns / 1e9;
        match setting {
            Setting::Poll => self.estimate_from(setting, 1.0, 0.0),
            Setting::Interrupt => {
                self.estimate_from(setting, self.busy + rate * wake_cpu, if rate > 0.0 { 1.0 } else { 0.0 })
            }
            Setting::Spin(w) => {
                let w_us = w.as_secs_f64() * 1e6;
                let (mut spin_us, mut slept) = (0.0, 0.0);
                for (b, &n) in self.gaps_per_s.iter().enumerate() {
                    // A bucket is caught whole when the window reaches its limit.
                    match gap_bucket_limit_us(b) {
                        Some(limit) if limit as f64 <= w_us => spin_us += n * mid_us(b),
                        _ => {
                            spin_us += n * w_us.min(mid_us(b));
                            slept += n;
                        }
                    }
                }
                let asleep = if rate > 0.0 { slept / rate } else { 0.0 };
                self.estimate_from(setting, self.busy + spin_us / 1e6 + slept * wake_cpu, asleep)
            }
        }
    }

    /// Every setting the policy considers: interrupt, a spin of each gap
    /// bucket's limit (1 us to 4096 us), poll.
    pub fn candidates() -> impl Iterator<Item = Setting> {
        std::iter::once(Setting::Interrupt)
            .chain(
                (0..GAP_BUCKETS)
                    .filter_map(|b| gap_bucket_limit_us(b).map(|us| Setting::Spin(Duration::from_micros(us)))),
            )
            .chain(std::iter::once(Setting::Poll))
    }

    /// The cheapest setting within the budget.
    pub fn plan(&self) -> Plan {
        let rate = self.rate();
        let budget_us = self.budget_ns / 1000.0;
        let wake_us = self.wake_quantile_ns(1.0 - TAIL) / 1000.0;
        if rate < IDLE_ARRIVALS_PER_S {
            return Plan {
                best: self.estimate(Setting::Interrupt),
                reason: format!("idle ({rate:.0} arrivals/s): nothing to add latency to"),
            };
        }
        let poll = self.estimate(Setting::Poll);
        let best = Self::candidates()
            .map(|s| self.estimate(s))
            .filter(|e| e.within_budget && e.cpu <= poll.cpu - MIN_SAVING)
            .min_by(|a, b| a.cpu.total_cmp(&b.cpu))
            .unwrap_or(poll);
        let reason = match best.setting {
            Setting::Poll if self.budget_ns <= 0.0 => format!("latency_budget_us 0 and {rate:.0} arrivals/s: poll"),
            Setting::Poll => format!(
                "p99 wake cost {wake_us:.0} us > latency_budget_us {budget_us:.0} and no spin window catches 99% of {rate:.0} arrivals/s for less than {:.0}% of a core: poll",
                (1.0 - MIN_SAVING) * 100.0
            ),
            Setting::Interrupt => format!(
                "p99 wake cost {wake_us:.0} us <= latency_budget_us {budget_us:.0} at {rate:.0} arrivals/s: interrupt (est. {:.1}% of a core)",
                best.cpu * 100.0
            ),
            Setting::Spin(w) => format!(
                "p99 wake cost {wake_us:.0} us vs latency_budget_us {budget_us:.0}; {:.1}% of {rate:.0} arrivals/s come within {} us: spin {} us (est. {:.1}% of a core)",
                (1.0 - best.asleep) * 100.0,
                w.as_micros(),
                w.as_micros(),
                best.cpu * 100.0
            ),
        };
        Plan { best, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(budget_us: f64, wake_us: f64, gaps: &[(usize, f64)]) -> Inputs {
        let mut g = [0.0; GAP_BUCKETS];
        for &(b, n) in gaps {
            g[b] = n;
        }
        Inputs {
            budget_ns: budget_us * 1000.0,
            wake_late_ns: wake_us * 1000.0,
            wake_hist: [0.0; GAP_BUCKETS],
            wake_cpu_ns: 5_000.0,
            busy: 0.05,
            gaps_per_s: g,
        }
    }

    #[test]
    fn spin_cost_counts_caught_gaps_whole_and_the_rest_up_to_the_window() {
        // 10,000/s gaps in bucket 4 (8-16 us, mid 12), 100/s in bucket 11 (1-2 ms).
        let i = inputs(10.0, 30.0, &[(4, 10_000.0), (11, 100.0)]);
        let e = i.estimate(Setting::Spin(Duration::from_micros(16)));
        // 5 % busy + 10,000 x 12 us + 100 x 16 us of spin + 100 wakeups x 5 us.
        let want = 0.05 + (10_000.0 * 12.0 + 100.0 * 16.0) / 1e6 + 100.0 * 5e-6;
        assert!((e.cpu - want).abs() < 1e-9, "{} vs {want}", e.cpu);
        assert!((e.asleep - 100.0 / 10_100.0).abs() < 1e-12);
        // 0.99 % asleep: within the 1 % tail, nothing added at p99.
        assert_eq!(e.added_p99_ns, 0.0);
        assert!(e.within_budget);
        let e = i.estimate(Setting::Spin(Duration::from_micros(8)));
        assert_eq!(e.added_p99_ns, 30_000.0, "everything sleeps past 8 us");
        assert!(!e.within_budget);
    }

    #[test]
    fn the_tail_of_the_wake_cost_is_what_counts() {
        let mut i = inputs(50.0, 20.0, &[(10, 1_000.0)]);
        assert_eq!(i.wake_quantile_ns(0.99), 20_000.0, "no histogram: the mean");
        // 95 % of wakeups take 16-32 us, 5 % take 128-256 us.
        i.wake_hist[5] = 95.0;
        i.wake_hist[8] = 5.0;
        assert_eq!(i.wake_quantile_ns(0.5), (16.0 + 16.0 * (50.0 / 95.0)) * 1000.0);
        // The p99 lies 4/5 into the 128-256 us bucket.
        assert!((i.wake_quantile_ns(0.99) - (128.0 + 128.0 * 0.8) * 1000.0).abs() < 1e-6);
        // Sleeping through every gap adds the p99 (230 us): over a 50 us budget,
        // though the mean (20 us) is within it.
        let e = i.estimate(Setting::Interrupt);
        assert!((e.added_p99_ns - 230_400.0).abs() < 1e-6, "{}", e.added_p99_ns);
        assert!(!e.within_budget);
        // Only 2 % asleep: the request at p99 is at the 50 % quantile of those.
        i.gaps_per_s = [0.0; GAP_BUCKETS];
        i.gaps_per_s[4] = 980.0;
        i.gaps_per_s[10] = 20.0;
        let e = i.estimate(Setting::Spin(Duration::from_micros(16)));
        assert!((e.asleep - 0.02).abs() < 1e-12);
        assert!((e.added_p99_ns - i.wake_quantile_ns(0.5)).abs() < 1e-6);
        assert!(e.within_budget, "{e:?}");
    }
}
