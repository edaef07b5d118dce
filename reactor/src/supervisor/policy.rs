//! Settings of the mode supervisor: the [`Policy`] and the
//! [`SupervisorConfig`] with its limits and their checks.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ReactorError;
use crate::mode::Mode;

/// What the supervisor does with reactor modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Every reactor polls.
    Poll,
    /// Every reactor sleeps when idle.
    Interrupt,
    /// Every reactor spins `idle_poll_us`, then sleeps.
    Hybrid,
    /// Each reactor moves between interrupt, hybrid and poll with its load.
    Adaptive,
    /// Each reactor takes the cheapest of interrupt, a spin window and poll
    /// that keeps its added latency within `latency_budget_us`.
    Budget,
}

impl Policy {
    /// The name used in settings and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Poll => "poll",
            Policy::Interrupt => "interrupt",
            Policy::Hybrid => "hybrid",
            Policy::Adaptive => "adaptive",
            Policy::Budget => "budget",
        }
    }

    /// The single mode a static policy imposes.
    pub fn fixed_mode(self) -> Option<Mode> {
        match self {
            Policy::Poll => Some(Mode::Poll),
            Policy::Interrupt => Some(Mode::Interrupt),
            Policy::Hybrid => Some(Mode::Hybrid),
            Policy::Adaptive | Policy::Budget => None,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = ReactorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "poll" => Ok(Policy::Poll),
            "interrupt" => Ok(Policy::Interrupt),
            "hybrid" => Ok(Policy::Hybrid),
            "adaptive" => Ok(Policy::Adaptive),
            "budget" => Ok(Policy::Budget),
            other => Err(ReactorError::InvalidSetting {
                field: "mode_policy",
                value: other.to_string(),
                allowed: POLICY_NAMES,
            }),
        }
    }
}

/// The policy names, as error messages list them.
pub const POLICY_NAMES: &str = "one of poll, interrupt, hybrid, adaptive, budget";

/// Largest `latency_budget_us` (1 s): beyond it every setting keeps the budget.
pub const MAX_LATENCY_BUDGET: Duration = Duration::from_secs(1);

/// Default `latency_budget_us`: about one to two wakeups on a VM, so the
/// policy sleeps where wakeups are cheap and spins or polls where they are not.
pub const DEFAULT_LATENCY_BUDGET: Duration = Duration::from_micros(50);

/// Supervisor settings; defaults are argued in docs/architecture.md.
#[derive(Clone, Debug, PartialEq)]
pub struct SupervisorConfig {
    /// `mode_policy`.
    pub policy: Policy,
    /// `supervisor_interval_ms`: time between samples.
    pub interval: Duration,
    /// `adaptive_high_mark`: load (0..1) at or above which a reactor steps up.
    pub high_mark: f64,
    /// `adaptive_low_mark`: estimated interrupt-mode load at or below which it steps down.
    pub low_mark: f64,
    /// `adaptive_up_samples`: consecutive high samples before stepping up.
    pub up_samples: u32,
    /// `adaptive_down_samples`: consecutive low samples before stepping down.
    pub down_samples: u32,
    /// Per-CPU policies that override `policy` on those cores (`lull mode set --core`).
    pub core_policy: Vec<(usize, Policy)>,
    /// `latency_budget_us`: what the `budget` policy may add to a request's
    /// latency at the 99th percentile, per reactor (0 to 1 s).
    pub latency_budget: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            policy: Policy::Adaptive,
            interval: Duration::from_millis(250),
            high_mark: 0.50,
            low_mark: 0.15,
            up_samples: 2,
            down_samples: 8,
            core_policy: Vec::new(),
            latency_budget: DEFAULT_LATENCY_BUDGET,
        }
    }
}

impl SupervisorConfig {
    /// The policy in force on `core`.
    pub fn policy_for(&self, core: usize) -> Policy {
        self.core_policy
            .iter()
            .find(|(c, _)| *c == core)
            .map_or(self.policy, |(_, p)| *p)
    }

    /// Sets the policy of one core (replacing an earlier one for it).
    pub fn set_core_policy(&mut self, core: usize, policy: Policy) {
        self.core_policy.retain(|(c, _)| *c != core);
        self.core_policy.push((core, policy));
        self.core_policy.sort_unstable_by_key(|(c, _)| *c);
    }

    /// The defaults with another policy.
    pub fn with_policy(policy: Policy) -> Self {
        SupervisorConfig {
            policy,
            ..Default::default()
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`ReactorError::InvalidSetting`] naming the field and its range.
    pub fn validate(&self) -> Result<(), ReactorError> {
        let bad = |field, value: String, allowed| Err(ReactorError::InvalidSetting { field, value, allowed });
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(60) {
            return bad(
                "supervisor_interval_ms",
                self.interval.as_millis().to_string(),
                "10 to 60000 milliseconds",
            );
        }
        if !(self.low_mark > 0.0 && self.low_mark < 1.0) {
            return bad(
                "adaptive_low_mark",
                self.low_mark.to_string(),
                "above 0 and below 1, and below adaptive_high_mark",
            );
        }
        if !(self.high_mark > self.low_mark && self.high_mark <= 1.0) {
            return bad(
                "adaptive_high_mark",
                self.high_mark.to_string(),
                "above adaptive_low_mark, at most 1",
            );
        }
        if self.up_samples == 0 || self.up_samples > 1000 {
            return bad("adaptive_up_samples", self.up_samples.to_string(), "1 to 1000 samples");
        }
        if self.down_samples == 0 || self.down_samples > 1000 {
            return bad(
                "adaptive_down_samples",
                self.down_samples.to_string(),
                "1 to 1000 samples",
            );
        }
        if self.latency_budget > MAX_LATENCY_BUDGET {
            return bad(
                "latency_budget_us",
                self.latency_budget.as_micros().to_string(),
                "0 to 1000000 microseconds",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field_and_range() {
        let e = |c: SupervisorConfig| c.validate().unwrap_err().to_string();
        let d = SupervisorConfig::default();
        assert_eq!(
            e(SupervisorConfig {
                interval: Duration::from_millis(5),
                ..d.clone()
            }),
            "supervisor_interval_ms = 5: 10 to 60000 milliseconds"
        );
        assert_eq!(
            e(SupervisorConfig {
                low_mark: 0.0,
                ..d.clone()
            }),
            "adaptive_low_mark = 0: above 0 and below 1, and below adaptive_high_mark"
        );
        assert_eq!(
            e(SupervisorConfig {
                high_mark: 0.1,
                ..d.clone()
            }),
            "adaptive_high_mark = 0.1: above adaptive_low_mark, at most 1"
        );
        assert_eq!(
            e(SupervisorConfig {
                up_samples: 0,
                ..d.clone()
            }),
            "adaptive_up_samples = 0: 1 to 1000 samples"
        );
        assert_eq!(
            e(SupervisorConfig {
                down_samples: 5000,
                ..d.clone()
            }),
            "adaptive_down_samples = 5000: 1 to 1000 samples"
        );
        assert_eq!(
            "fast".parse::<Policy>().unwrap_err().to_string(),
            "mode_policy = fast: one of poll, interrupt, hybrid, adaptive, budget"
        );
        assert_eq!(
            e(SupervisorConfig {
                latency_budget: Duration::from_micros(1_000_001),
                ..d.clone()
            }),
            "latency_budget_us = 1000001: 0 to 1000000 microseconds"
        );
        for p in [
            Policy::Poll,
            Policy::Interrupt,
            Policy::Hybrid,
            Policy::Adaptive,
            Policy::Budget,
        ] {
            assert_eq!(p.as_str().parse::<Policy>().unwrap(), p);
        }
    }
}
