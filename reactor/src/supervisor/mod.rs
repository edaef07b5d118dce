//! The mode supervisor: samples every reactor's load at a fixed interval and
//! sets its mode under a [`Policy`].
//!
//! [`Supervisor`] is the decision logic alone, fed snapshots and returning
//! decisions, so it is tested with made-up numbers. [`start`] runs it as a
//! timed poller on the first reactor of a set (SPDK's scheduler also runs on
//! its main core), so it costs one wakeup per interval and no thread.
//!
//! `adaptive` measures, per reactor and interval:
//! - `load` = (thread CPU time - idle spin time) / wall time: the share of a
//!   core spent on work *and* on going to sleep and waking up, which is what
//!   interrupt mode costs and poll mode removes;
//! - `estimate` = what `load` would be in interrupt mode: in interrupt mode,
//!   `load` itself; in poll and hybrid mode, busy time / wall time plus
//!   (busy loop iterations per second) x (the wake cost learnt while the
//!   reactor last slept, per wakeup).
//!
//! It steps a reactor up (interrupt -> hybrid -> poll) after `up_samples`
//! intervals in a row with `load >= high_mark`, and down after `down_samples`
//! in a row with `estimate <= low_mark`. Comparing the *estimate* on the way
//! down is what keeps it from flapping: in poll mode the wake cost vanishes
//! from `load`, and a reactor that only looks idle because it stopped paying
//! for wakeups would otherwise be sent straight back.
//!
//! `budget` reasons in latency instead of load: per reactor it learns its
//! wake cost (how late it runs after a timer's deadline or a doorbell), the
//! gaps between arrivals of work and its busy share, and picks poll, a spin
//! window (hybrid with a window of its own) or interrupt, whichever costs
//! the least CPU while the latency it adds at the 99th percentile stays
//! within `latency_budget_us` (the model is in [`crate::budget`]). Its inputs
//! do not depend on the mode (gaps are gaps whether the reactor spun or
//! slept through them), so it does not chase its own tail as a load figure
//! would; it still changes a setting only after `adaptive_up_samples`
//! samples in a row (to keep the budget) or `adaptive_down_samples` (to save
//! CPU, and only when that saves a tenth of the current cost or 2 % of a core).
//!
//! Three files: `policy.rs` (the settings), `decide.rs` (the decisions, pure)
//! and `driver.rs` (the supervisor running on a reactor).

mod decide;
mod driver;
mod period_trial;
mod policy;

pub use decide::{Decision, Supervisor};
pub use driver::{SupervisorHandle, start};
pub use policy::{DEFAULT_LATENCY_BUDGET, MAX_LATENCY_BUDGET, POLICY_NAMES, Policy, SupervisorConfig};
