//! When the commands of a rate-limited (open-loop) workload are due: fio's
//! `rate_iops` with `rate_process=linear|poisson`, plus ON/OFF bursts.
//!
//! [`Schedule`] is a pure, seeded generator of send times so that its
//! statistics are tested alone; the workload (`nvme_perf`) turns each time
//! into a reactor timer and measures every command's latency from it.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Largest `--rate-iops` (a 10 M IOPS schedule still has 100 ns between commands).
pub const MAX_RATE_IOPS: u64 = 10_000_000;
/// Longest ON or OFF window of `bursty`, ms (one hour).
pub const MAX_BURST_MS: u32 = 3_600_000;

/// How commands arrive (`--arrival`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// One command every 1/rate: fio's `rate_process=linear`.
    Steady,
    /// Exponential gaps of mean 1/rate (a Poisson process): fio's
    /// `rate_process=poisson`, many independent clients.
    Poisson,
    /// Steady inside ON windows of `on_ms`, nothing in the OFF windows of
    /// `off_ms` between them; the rate is the mean over a whole ON+OFF
    /// period, so inside ON the commands go at rate x (ON+OFF)/ON.
    Bursty {
        /// ON window, ms (1 to [`MAX_BURST_MS`]).
        on_ms: u32,
        /// OFF window, ms (1 to [`MAX_BURST_MS`]).
        off_ms: u32,
    },
}

impl FromStr for Arrival {
    type Err = String;

    /// `steady`, `poisson` or `bursty:ON_MS/OFF_MS`; the error names
    /// `--arrival` and what it accepts.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "steady" => return Ok(Arrival::Steady),
            "poisson" => return Ok(Arrival::Poisson),
            _ => {}
        }
        let Some(rest) = s.strip_prefix("bursty:") else {
            return Err(format!(
                "--arrival {s:?}: use steady, poisson or bursty:ON_MS/OFF_MS (e.g. bursty:100/900)"
            ));
        };
        let window = |v: &str, what: &str| -> Result<u32, String> {
            match v.trim().parse::<u64>() {
                Ok(n) if (1..=u64::from(MAX_BURST_MS)).contains(&n) => Ok(n as u32),
                _ => Err(format!(
                    "--arrival {s:?}: the {what} window must be an integer from 1 to {MAX_BURST_MS} ms"
                )),
            }
        };
        let Some((on, off)) = rest.split_once('/') else {
            return Err(format!(
                "--arrival {s:?}: write bursty:ON_MS/OFF_MS, e.g. bursty:100/900"
            ));
        };
        Ok(Arrival::Bursty {
            on_ms: window(on, "ON")?,
            off_ms: window(off, "OFF")?,
        })
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arrival::Steady => f.write_str("steady"),
            Arrival::Poisson => f.write_str("poisson"),
            Arrival::Bursty { on_ms, off_ms } => write!(f, "bursty:{on_ms}/{off_ms}"),
        }
    }
}

/// A rate-limited workload's rate: `iops` in total (spread evenly over the
/// I/O queues), arriving as `arrival` says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Offered I/Os per second over all queues (> 0).
    pub iops: f64,
    /// The arrival process.
    pub arrival: Arrival,
}

impl Rate {
    /// The highest instantaneous rate: inside a burst's ON window it is
    /// above the mean.
    pub fn peak_iops(&self) -> f64 {
        match self.arrival {
            Arrival::Bursty { on_ms, off_ms } => self.iops * f64::from(on_ms + off_ms) / f64::from(on_ms),
            _ => self.iops,
        }
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Send times of one queue, in ns after its start, strictly from the
/// arrival process and the seed (no clock): the n-th call of
/// [`Schedule::next_ns`] gives the n-th command's due time.
#[derive(Clone, Debug)]
pub struct Schedule {
    arrival: Arrival,
    /// Mean gap between this queue's commands, ns.
    mean_gap_ns: f64,
    rng: u64,
    /// Time on the "ON axis" (bursty: the ON windows laid end to end;
    /// otherwise real time), ns.
    v: f64,
    first: bool,
    phase: f64,
}

impl Schedule {
    /// A schedule of `iops` (this queue's share, > 0) arriving as
    /// `arrival`, seeded with `seed`; `phase` (0 to 1) shifts a steady
    /// schedule by that fraction of a gap so that queues do not all send at
    /// the same instant.
    pub fn new(arrival: Arrival, iops: f64, seed: u64, phase: f64) -> Self {
        Schedule {
            arrival,
            mean_gap_ns: 1e9 / iops.max(1e-9),
            // Scrambled so that nearby seeds start far apart; a zero state
            // would stay zero forever.
            rng: (seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xBF58_476D_1CE4_E5B9).max(1),
            v: 0.0,
            first: true,
            phase: phase.clamp(0.0, 1.0),
        }
    }

    /// A uniform number in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((xorshift(&mut self.rng) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// The next command's due time, ns after the start (never decreasing).
    pub fn next_ns(&mut self) -> u64 {
        match self.arrival {
            Arrival::Steady => {
                let t = self.v + self.phase * self.mean_gap_ns;
                self.v += self.mean_gap_ns;
                t as u64
            }
            Arrival::Poisson => {
                // Inverse transform: -ln(U) of a uniform U is exponential
                // with mean 1.
                self.v += -self.uniform().ln() * self.mean_gap_ns;
                self.v as u64
            }
            Arrival::Bursty { on_ms, off_ms } => {
                let on = f64::from(on_ms) * 1e6;
                let period = f64::from(on_ms + off_ms) * 1e6;
                // Inside ON the gap is shorter by ON/(ON+OFF), so the mean
                // over a period is the asked rate.
                let gap = self.mean_gap_ns * on / period;
                if self.first {
                    self.v = self.phase * gap;
                    self.first = false;
                } else {
                    self.v += gap;
                }
                let k = (self.v / on).floor();
                (k * period + (self.v - k * on)) as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_parses_and_names_the_option_and_range() {
        assert_eq!("steady".parse::<Arrival>(), Ok(Arrival::Steady));
        assert_eq!("poisson".parse::<Arrival>(), Ok(Arrival::Poisson));
        assert_eq!(
            "bursty:100/900".parse::<Arrival>(),
            Ok(Arrival::Bursty {
                on_ms: 100,
                off_ms: 900
            })
        );
        assert_eq!(Arrival::Bursty { on_ms: 5, off_ms: 7 }.to_string(), "bursty:5/7");
        for bad in ["linear", "bursty", "bursty:", "bursty:10", "bursty:a/5", "bursty:-1/5"] {
            let e = bad.parse::<Arrival>().unwrap_err();
            assert!(e.starts_with("--arrival"), "{bad}: {e}");
        }
        for bad in ["bursty:0/10", "bursty:10/0", "bursty:3600001/1"] {
            let e = bad.parse::<Arrival>().unwrap_err();
            assert!(e.contains("from 1 to 3600000 ms"), "{bad}: {e}");
        }
    }

    #[test]
    fn steady_is_evenly_spaced_and_phased() {
        let mut s = Schedule::new(Arrival::Steady, 1000.0, 1, 0.5);
        let t: Vec<u64> = (0..4).map(|_| s.next_ns()).collect();
        assert_eq!(t, vec![500_000, 1_500_000, 2_500_000, 3_500_000]);
    }

    #[test]
    fn poisson_mean_gap_is_one_over_the_rate() {
        let n = 200_000u64;
        let mut s = Schedule::new(Arrival::Poisson, 2000.0, 42, 0.0);
        let mut last = 0u64;
        let mut gaps = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = s.next_ns();
            assert!(t >= last);
            gaps.push((t - last) as f64);
            last = t;
        }
        let mean = gaps.iter().sum::<f64>() / n as f64;
        // 1/2000 s = 500 us; with 200k samples the mean's standard error is
        // 500/sqrt(200k) ~ 1.1 us: 2 % is far outside chance.
        assert!((mean - 500_000.0).abs() < 10_000.0, "mean gap {mean} ns");
        // Exponential: the standard deviation equals the mean (steady's is 0).
        let var = gaps.iter().map(|g| (g - mean) * (g - mean)).sum::<f64>() / n as f64;
        assert!((var.sqrt() / mean - 1.0).abs() < 0.05, "sd/mean {}", var.sqrt() / mean);
        // Another seed gives other times.
        let mut o = Schedule::new(Arrival::Poisson, 2000.0, 43, 0.0);
        let mut s2 = Schedule::new(Arrival::Poisson, 2000.0, 42, 0.0);
        assert_ne!(o.next_ns(), s2.next_ns());
    }

    #[test]
    fn bursty_sends_nothing_in_off_windows_and_keeps_the_mean_rate() {
        let (on, off) = (10u64, 30u64);
        let mut s = Schedule::new(
            Arrival::Bursty {
                on_ms: on as u32,
                off_ms: off as u32,
            },
            1000.0,
            7,
            0.0,
        );
        let period = (on + off) * 1_000_000;
        let mut count = 0;
        loop {
            let t = s.next_ns();
            if t >= 10 * period {
                break;
            }
            assert!(t % period < on * 1_000_000, "{t} ns falls in an OFF window");
            count += 1;
        }
        // 10 periods of 40 ms at a mean 1000 IOPS: 400 commands.
        assert!((399..=401).contains(&count), "{count}");
        let r = Rate {
            iops: 1000.0,
            arrival: Arrival::Bursty { on_ms: 10, off_ms: 30 },
        };
        assert_eq!(r.peak_iops(), 4000.0);
    }
}
