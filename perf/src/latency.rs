//! Latency recording: an HDR histogram in nanoseconds, reported in microseconds.

use hdrhistogram::Histogram;

/// Latencies from 1 ns to 1 hour at 3 significant digits (a command held
/// through a reconnect can take minutes, and must not read as 10 s).
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty recorder.
    pub fn new() -> Self {
        Latency {
            hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid"),
        }
    }

    /// Records one latency in ns (clamped into the histogram's range).
    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The `q` quantile (0..=1) in microseconds; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    /// Mean in microseconds; `None` when empty.
    pub fn mean_us(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.hist.mean() / 1000.0)
    }

    /// Maximum in microseconds; `None` when empty.
    pub fn max_us(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.hist.max() as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_in_microseconds() {
        let mut l = Latency::new();
        assert_eq!(l.quantile_us(0.5), None);
        for ns in 1..=1000u64 {
            l.record_ns(ns * 1000);
        }
        let p50 = l.quantile_us(0.5).unwrap();
        assert!((p50 - 500.0).abs() <= 1.0, "{p50}");
        let p99 = l.quantile_us(0.99).unwrap();
        assert!((p99 - 990.0).abs() <= 1.0, "{p99}");
        let mut m = Latency::new();
        m.record_ns(2_000_000);
        l.merge(&m);
        assert_eq!(l.count(), 1001);
        assert!((l.max_us().unwrap() - 2000.0).abs() < 2.0);
    }
}
