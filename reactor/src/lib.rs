//! `lull-reactor`: one pinned, shared-nothing reactor per core.
//!
//! A reactor runs [`Poller`]s, timers and cross-core messages on one thread.
//! It waits in one of three [`Mode`]s, switchable at run time without losing
//! an event: `Poll` (spin), `Interrupt` (sleep in `epoll_wait`) and `Hybrid`
//! (spin for `idle_poll_us`, then sleep). The [`supervisor`] moves reactors
//! between modes under a [`Policy`].
//!
//! Words, each in its own module: [`Reactors`] (a started set),
//! [`ReactorHandle`] (any thread's reference to one), [`Context`] (what runs on
//! a reactor receives), [`Poller`] / [`PollerId`] / [`Interest`] /
//! [`Readiness`], [`TimerId`], [`Sender`] (typed channel), [`StatsSnapshot`],
//! [`CoreList`]. Linux system calls live in one private `sys` module.
//!
//! ```no_run
//! use std::time::Duration;
//! use lull_reactor::{CoreList, Mode, PollStatus, ReactorConfig, Reactors};
//!
//! let reactors = Reactors::start(ReactorConfig::new(CoreList::parse("0-1")?).mode(Mode::Interrupt))?;
//! reactors.handles()[1].try_send(|cx| {
//!     // Runs on core 1: a poller woken every 100 us, even while the reactor sleeps.
//!     cx.register_timed(Duration::from_micros(100), |_cx: &mut lull_reactor::Context, _| PollStatus::Idle).unwrap();
//! }).ok();
//! reactors.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Requires Linux 5.11 or later (`epoll_pwait2` gives timers nanosecond
//! resolution without a timerfd; see docs/architecture.md).

pub mod budget;
mod burst;
mod channel;
mod context;
mod cores;
mod deadline;
mod error;
mod handle;
mod mode;
mod poller;
mod pollers;
mod reactor;
mod reactors;
mod shared;
mod stats;
pub mod supervisor;
mod sys;
#[cfg(test)]
mod test_rng;
mod timer;
mod wake;

pub use channel::Sender;
pub use context::{Context, FdPoller, FdSource, Message, Poller, ReactorHandle};
pub use cores::{CoreList, CoreListError, MAX_CORE};
pub use error::{ReactorError, TrySendError};
pub use handle::Handle;
pub use mode::{MAX_IDLE_POLL, Mode, ParseModeError};
pub use poller::{Interest, PollStatus, PollerId, Readiness};
pub use reactors::{DEFAULT_IDLE_POLL, DEFAULT_INBOX_CAPACITY, ReactorConfig, Reactors};
pub use stats::{
    GAP_BUCKETS, SLEEP_CLASSES, StatsSnapshot, gap_bucket, gap_bucket_limit_us, sleep_class, sleep_class_of_gap_bucket,
};
pub use supervisor::{Policy, SupervisorConfig};
pub use timer::TimerId;
