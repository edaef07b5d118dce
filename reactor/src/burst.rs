//! How many wakeups a sleeping reactor takes for the arrivals it measured:
//! arrivals that come while it is still waking for an earlier one join that
//! wakeup's burst and need none of their own. Pure, for the `budget` model.
//!
//! The gaps the reactor measures run from the end of its last work to the
//! next arrival. When a reactor that slept is woken by an arrival, its work
//! ends later by the wake delay `J`. Arrivals that came `g` after the work
//! in the measured timing now come `J - g` before it ends: they find the
//! reactor awake (or already woken) and are handled in the same pass. The
//! delay still owed shrinks by each gap that passes, so an arrival joins
//! the burst while the gaps since the burst's first arrival sum to at most
//! `J`; the first one past that finds the reactor asleep again. Gaps taken
//! as independent, the number of arrivals a wakeup absorbs is the renewal
//! count of the gaps within `J`, computed here on a lattice.
//!
//! The core's own follow-up work (timers, periodic pollers) is part of the
//! chain like arrivals: a timer due while the reactor wakes runs in the
//! same pass (an open-loop load generator's sends at 50k a second are such
//! timers), and its gap is measured the same way
//! ([`StatsSnapshot::follow_up_gap_hist`](crate::StatsSnapshot::follow_up_gap_hist)).
//! What the independence of the gaps misses: a reply to what the reactor
//! itself sent comes late by as much as the send was, so it joins no
//! burst by the send's lateness; the model counts it as joining when its
//! gap is within the delay, and so undercounts wakeups for strict
//! request-reply traffic (by a fifth for one reply 16-32 us after each
//! timer: budget.rs's tests).

use crate::stats::{GAP_BUCKETS, gap_bucket_limit_us};

/// Most lattice points: the step grows (powers of two) with the longest wake
/// delay to cover, so one plan costs at most about half a million
/// multiplications (two convolutions of this many points).
const MAX_POINTS: usize = 512;
/// The finest lattice step, us: well under the narrowest gap bucket that
/// matters (1-2 us).
const MIN_STEP_US: f64 = 0.25;

/// The range of gap bucket `b`, us (the last one taken as twice its lower limit).
pub(crate) fn bucket_range_us(b: usize) -> (f64, f64) {
    let lo = if b == 0 { 0.0 } else { (1u64 << (b - 1)) as f64 };
    let hi = gap_bucket_limit_us(b).map_or(2.0 * lo, |l| l as f64);
    (lo, hi)
}

/// The gaps' renewal counts on a lattice of step `step_us`, up to the
/// longest wake delay the caller will ask about.
pub(crate) struct Bursts {
    step_us: f64,
    /// `per_bucket[b][i]`: expected events within `i` lattice steps of a
    /// burst's first whose own gap lies in bucket `b` (the first not
    /// counted).
    per_bucket: [Vec<f64>; GAP_BUCKETS],
}

impl Bursts {
    /// From the events (arrivals and follow-ups) per second by gap bucket
    /// (`gaps_per_s`) and the longest wake delay to cover, us.
    pub(crate) fn new(gaps_per_s: &[f64; GAP_BUCKETS], max_window_us: f64) -> Self {
        let rate: f64 = gaps_per_s.iter().map(|n| n.max(0.0)).sum();
        let mut step_us = MIN_STEP_US;
        while max_window_us / step_us > (MAX_POINTS - 1) as f64 {
            step_us *= 2.0;
        }
        let points = ((max_window_us.max(0.0) / step_us).ceil() as usize + 1).min(MAX_POINTS);
        // Each bucket's gaps, uniform over its range, as masses on the
        // nearest lattice point (so the lattice keeps the mean gap): the
        // first point the bucket reaches and the masses from there on.
        let masses: [(usize, Vec<f64>); GAP_BUCKETS] = std::array::from_fn(|b| {
            let n = gaps_per_s[b].max(0.0);
            let (lo, hi) = bucket_range_us(b);
            if rate <= 0.0 || n <= 0.0 || hi <= lo {
                return (0, Vec::new());
            }
            let p = n / rate;
            let first = ((lo / step_us + 0.5).floor() as usize).min(points);
            let end = ((hi / step_us + 0.5).ceil() as usize + 1).min(points);
            let m = (first..end.max(first))
                .map(|j| {
                    let (a, z) = ((j as f64 - 0.5) * step_us, (j as f64 + 0.5) * step_us);
                    let overlap = (z.min(hi) - a.max(lo)).max(0.0);
                    p * overlap / (hi - lo)
                })
                .collect();
            (first, m)
        });
        let mut f = vec![0.0; points];
        for (first, m) in &masses {
            for (j, x) in m.iter().enumerate() {
                f[first + j] += x;
            }
        }
        // u[i] = sum over k >= 0 of P(S_k <= i steps): the first event and
        // each later one within reach. A chance of gaps under half a step
        // is kept below 1, or a burst would never end.
        let stay = (1.0 - f.first().copied().unwrap_or(0.0)).max(1e-6);
        let mut u = vec![0.0; points];
        for i in 0..points {
            let later: f64 = (1..=i).map(|j| f[j] * u[i - j]).sum();
            u[i] = (1.0 + later) / stay;
        }
        // Joins whose own gap lies in bucket b: (mass of b) convolved
        // with u (the buckets' ranges part the lattice, so all of them
        // together cost one convolution).
        let per_bucket = std::array::from_fn(|b| {
            let (first, m) = &masses[b];
            if m.is_empty() {
                return Vec::new();
            }
            (0..points)
                .map(|i| {
                    let taken = (i + 1).saturating_sub(*first).min(m.len());
                    m[..taken]
                        .iter()
                        .enumerate()
                        .map(|(j, x)| x * u[i - first - j])
                        .sum::<f64>()
                })
                .collect()
        });
        Bursts { step_us, per_bucket }
    }

    /// Expected events a wakeup absorbs, each counted with the weight of
    /// its gap's bucket (`weights[b]`, 0..1: the share of that bucket's
    /// events that would have needed a wakeup of their own), for a wake
    /// delay uniform over `lo_us..hi_us` (the joins are counted exactly for
    /// the lattice's gaps; the delay is continuous).
    pub(crate) fn joins_within(&self, weights: &[f64; GAP_BUCKETS], lo_us: f64, hi_us: f64) -> f64 {
        let width = hi_us - lo_us;
        if width <= 0.0 {
            return 0.0;
        }
        let mut sum = 0.0;
        for (b, v) in self.per_bucket.iter().enumerate() {
            let w = weights[b].clamp(0.0, 1.0);
            if w <= 0.0 || v.is_empty() {
                continue;
            }
            // A delay in [i, i+1) steps reaches the lattice sums of at most i steps.
            let first = ((lo_us / self.step_us).floor().max(0.0) as usize).min(v.len());
            let last = ((hi_us / self.step_us).ceil().max(0.0) as usize).min(v.len());
            for (i, &x) in v.iter().enumerate().take(last).skip(first) {
                let (a, z) = (i as f64 * self.step_us, (i + 1) as f64 * self.step_us);
                let overlap = (z.min(hi_us) - a.max(lo_us)).max(0.0);
                if overlap > 0.0 {
                    sum += w * x * overlap / width;
                }
            }
            // Past the lattice (it covers the longest delay asked for): the last value.
            let end = v.len() as f64 * self.step_us;
            if hi_us > end {
                sum += w * v[v.len() - 1] * (hi_us - end.max(lo_us)) / width;
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(list: &[(usize, f64)]) -> [f64; GAP_BUCKETS] {
        let mut g = [0.0; GAP_BUCKETS];
        for &(b, n) in list {
            g[b] = n;
        }
        g
    }

    #[test]
    fn gaps_longer_than_the_delay_join_nothing() {
        // Gaps of 512-1024 us, wake delays of 16-32 us: no second arrival
        // comes before the reactor runs.
        let b = Bursts::new(&gaps(&[(10, 1_000.0)]), 32.0);
        assert_eq!(b.joins_within(&[1.0; GAP_BUCKETS], 16.0, 32.0), 0.0);
    }

    #[test]
    fn one_gap_against_one_delay_of_the_same_range_joins_half_the_time() {
        // Gap and delay both uniform on 16..32 us: P(gap <= delay) = 1/2,
        // and two gaps (at least 32 us) never fit.
        let b = Bursts::new(&gaps(&[(5, 1_000.0)]), 32.0);
        let j = b.joins_within(&[1.0; GAP_BUCKETS], 16.0, 32.0);
        assert!((j - 0.5).abs() < 1e-9, "{j}");
        // The same on a coarse lattice (4 us steps: a delay of 2 ms to cover).
        let b = Bursts::new(&gaps(&[(5, 1_000.0)]), 2_000.0);
        assert!(b.step_us >= 4.0, "{}", b.step_us);
        let j = b.joins_within(&[1.0; GAP_BUCKETS], 16.0, 32.0);
        assert!((j - 0.5).abs() < 0.02, "{j}");
        // Half of them counted (say half the bucket's events are caught by
        // a spin): half the joins.
        let half = b.joins_within(&[0.5; GAP_BUCKETS], 16.0, 32.0);
        assert!((half - 0.5 * j).abs() < 1e-12, "{half} {j}");
    }

    #[test]
    fn many_short_gaps_follow_the_renewal_theorem() {
        // Gaps uniform on 1..2 us (mean 1.5, E[g^2] = 7/3), delays uniform on
        // 16..32 us: the renewal count U(t) = t/mu + E[g^2]/(2 mu^2) (Smith's
        // theorem; exact to well under 1 % from 10 gaps on for uniform
        // gaps), so joins = E[U(J)] - 1 = 24/1.5 + (7/3)/4.5 - 1 = 15.519.
        let b = Bursts::new(&gaps(&[(1, 50_000.0)]), 32.0);
        let j = b.joins_within(&[1.0; GAP_BUCKETS], 16.0, 32.0);
        let want = 24.0 / 1.5 + (7.0 / 3.0) / 4.5 - 1.0;
        assert!((j - want).abs() < 0.05, "{j} vs {want}");
        // Counting only the joins of gaps in another bucket: none.
        let mut only = [0.0; GAP_BUCKETS];
        only[2] = 1.0;
        assert_eq!(b.joins_within(&only, 16.0, 32.0), 0.0);
    }

    use crate::test_rng::Rng;

    #[test]
    fn a_reactor_simulated_in_wall_time_takes_the_wakeups_counted() {
        // Poisson arrivals at 50k/s, 8 us of work each, wake delays uniform on
        // 16..32 us. Simulated twice on one arrival stream: polling (each
        // arrival handled at once, its gap measured from the end of the work
        // before, as the reactor does) and sleeping (a wakeup when an arrival
        // finds nothing to do; every arrival until the work catches up is
        // handled in that burst). The model, fed the polling run's gap
        // histogram, must predict the sleeping run's wakeups.
        let mut rng = Rng(7);
        let (n, work, mean_gap) = (200_000, 8.0, 20.0);
        let mut t = 0.0;
        let arrivals: Vec<f64> = (0..n)
            .map(|_| {
                t += -mean_gap * (1.0 - rng.next()).ln();
                t
            })
            .collect();
        let span_s = t / 1e6;
        // Polling: gaps from the end of the last work; arrivals that came
        // during it start at once, gap 0.
        let mut hist = [0.0; GAP_BUCKETS];
        let mut free = 0.0f64;
        for &a in &arrivals {
            let gap = (a - free).max(0.0);
            hist[crate::stats::gap_bucket((gap * 1000.0) as u64)] += 1.0 / span_s;
            free = a.max(free) + work;
        }
        // Sleeping: the reactor is asleep from the end of its work until an
        // arrival; it runs a delay later and works through the queue.
        let mut wakeups = 0u64;
        let mut free = 0.0f64;
        for &a in &arrivals {
            let start = if a > free {
                wakeups += 1;
                a + 16.0 + 16.0 * rng.next()
            } else {
                free
            };
            free = start + work;
        }
        let measured = wakeups as f64 / span_s;
        let rate: f64 = hist.iter().sum();
        let b = Bursts::new(&hist, 32.0);
        let predicted = rate / (1.0 + b.joins_within(&[1.0; GAP_BUCKETS], 16.0, 32.0));
        // Most arrivals batch (about 3.6 per wakeup here), and the model is
        // within a tenth of the simulated count (4 % above it when written).
        assert!(measured < 0.5 * rate, "{measured} of {rate}");
        assert!(
            (predicted - measured).abs() < 0.1 * measured,
            "predicted {predicted:.0}/s, simulated {measured:.0}/s"
        );
    }
}
