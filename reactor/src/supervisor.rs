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

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{ReactorError, TrySendError};
use crate::handle::ReactorHandle;
use crate::mode::Mode;
use crate::poller::PollStatus;
use crate::reactors::Reactors;
use crate::stats::StatsSnapshot;
use crate::{Context, Sender};

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
}

impl Policy {
    /// The name used in settings and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Poll => "poll",
            Policy::Interrupt => "interrupt",
            Policy::Hybrid => "hybrid",
            Policy::Adaptive => "adaptive",
        }
    }

    /// The single mode a static policy imposes.
    pub fn fixed_mode(self) -> Option<Mode> {
        match self {
            Policy::Poll => Some(Mode::Poll),
            Policy::Interrupt => Some(Mode::Interrupt),
            Policy::Hybrid => Some(Mode::Hybrid),
            Policy::Adaptive => None,
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
            other => Err(ReactorError::InvalidSetting {
                field: "mode_policy",
                value: other.to_string(),
                allowed: "one of poll, interrupt, hybrid, adaptive",
            }),
        }
    }
}

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
}

/// Wake cost assumed until a reactor has slept once: the ~20 us measured for
/// a sleeping thread's wakeup on this project's 2-vCPU VMs (docs/performance.md).
const INITIAL_WAKE_COST_NS: f64 = 20_000.0;

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
        Ok(())
    }
}

/// One mode change the supervisor decided, with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Index of the reactor in its set.
    pub index: usize,
    /// Its CPU.
    pub core: usize,
    /// Mode before.
    pub from: Mode,
    /// Mode after.
    pub to: Mode,
    /// Why, in words, with the numbers.
    pub reason: String,
}

#[derive(Default, Clone)]
struct Track {
    last: Option<StatsSnapshot>,
    high_run: u32,
    low_run: u32,
    wake_cost_ns: Option<f64>,
}

/// The decision logic: feed it one snapshot per reactor per interval.
pub struct Supervisor {
    config: SupervisorConfig,
    tracks: Vec<Track>,
}

fn step_up(m: Mode) -> Mode {
    match m {
        Mode::Interrupt => Mode::Hybrid,
        Mode::Hybrid | Mode::Poll => Mode::Poll,
    }
}

fn step_down(m: Mode) -> Mode {
    match m {
        Mode::Poll => Mode::Hybrid,
        Mode::Hybrid | Mode::Interrupt => Mode::Interrupt,
    }
}

impl Supervisor {
    /// # Errors
    /// As [`SupervisorConfig::validate`].
    pub fn new(config: SupervisorConfig) -> Result<Self, ReactorError> {
        config.validate()?;
        Ok(Supervisor {
            config,
            tracks: Vec::new(),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// Replaces the settings; the counts of consecutive samples restart.
    ///
    /// # Errors
    /// As [`SupervisorConfig::validate`]; the old settings stay on error.
    pub fn set_config(&mut self, config: SupervisorConfig) -> Result<(), ReactorError> {
        config.validate()?;
        self.config = config;
        for t in &mut self.tracks {
            t.high_run = 0;
            t.low_run = 0;
        }
        Ok(())
    }

    /// Takes one snapshot per reactor (in set order) and returns the mode
    /// changes to make now.
    pub fn sample(&mut self, snaps: &[StatsSnapshot]) -> Vec<Decision> {
        if self.tracks.len() != snaps.len() {
            self.tracks.resize(snaps.len(), Track::default());
        }
        let mut out = Vec::new();
        for (index, (snap, track)) in snaps.iter().zip(self.tracks.iter_mut()).enumerate() {
            let last = track.last.replace(snap.clone());
            let policy = self.config.policy_for(snap.core);
            if let Some(mode) = policy.fixed_mode() {
                if snap.mode != mode {
                    out.push(Decision {
                        index,
                        core: snap.core,
                        from: snap.mode,
                        to: mode,
                        reason: format!("mode_policy is {policy}"),
                    });
                }
                continue;
            }
            let Some(last) = last else { continue };
            let wall = snap.wall_ns_since(&last);
            if wall == 0 {
                continue;
            }
            let d = snap.delta(&last);
            let wall_f = wall as f64;
            let load = (d.thread_cpu_ns.saturating_sub(d.idle_ns) as f64 / wall_f).clamp(0.0, 1.0);
            if d.wakeups > 0 {
                let overhead = d.thread_cpu_ns.saturating_sub(d.busy_ns + d.idle_ns) as f64 / d.wakeups as f64;
                track.wake_cost_ns = Some(match track.wake_cost_ns {
                    Some(old) => 0.7 * old + 0.3 * overhead,
                    None => overhead,
                });
            }
            let wake_cost = track.wake_cost_ns.unwrap_or(INITIAL_WAKE_COST_NS);
            let estimate = if snap.mode == Mode::Interrupt {
                load
            } else {
                (d.busy_ns as f64 / wall_f + d.busy_loops as f64 * wake_cost / wall_f).clamp(0.0, 1.0)
            };
            let c = &self.config;
            if load >= c.high_mark && snap.mode != Mode::Poll {
                track.high_run += 1;
                track.low_run = 0;
                if track.high_run >= c.up_samples {
                    track.high_run = 0;
                    out.push(Decision {
                        index,
                        core: snap.core,
                        from: snap.mode,
                        to: step_up(snap.mode),
                        reason: format!(
                            "load {:.0}% >= adaptive_high_mark {:.0}% for {} samples",
                            load * 100.0,
                            c.high_mark * 100.0,
                            c.up_samples
                        ),
                    });
                }
            } else if estimate <= c.low_mark && snap.mode != Mode::Interrupt {
                track.low_run += 1;
                track.high_run = 0;
                if track.low_run >= c.down_samples {
                    track.low_run = 0;
                    out.push(Decision {
                        index,
                        core: snap.core,
                        from: snap.mode,
                        to: step_down(snap.mode),
                        reason: format!(
                            "estimated interrupt-mode load {:.1}% <= adaptive_low_mark {:.0}% for {} samples",
                            estimate * 100.0,
                            c.low_mark * 100.0,
                            c.down_samples
                        ),
                    });
                }
            } else {
                track.high_run = 0;
                track.low_run = 0;
            }
        }
        out
    }
}

/// Commands to a running supervisor.
enum Command {
    SetConfig(SupervisorConfig),
}

/// Control of a running supervisor, from any thread.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: Sender<Command>,
    switches: Arc<AtomicU64>,
    config: Arc<Mutex<SupervisorConfig>>,
}

impl SupervisorHandle {
    /// Replaces the settings (policy, thresholds) at run time; applied at the
    /// supervisor's next sample.
    ///
    /// # Errors
    /// [`ReactorError::InvalidSetting`] before anything changes;
    /// [`ReactorError::Io`]: `NotConnected` once the reactors have stopped,
    /// `TimedOut` if the supervisor's reactor has not taken a request in 5 s.
    pub fn set_config(&self, config: SupervisorConfig) -> Result<(), ReactorError> {
        config.validate()?;
        let mut pending = Command::SetConfig(config);
        // A full queue means a burst of setting changes; wait a while for room
        // (a control-plane thread, never a reactor, calls this).
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.tx.try_send(pending) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(c)) if std::time::Instant::now() < give_up => {
                    pending = c;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(_)) => {
                    return Err(ReactorError::io(
                        "supervisor",
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
                Err(TrySendError::Stopped(_)) => {
                    return Err(ReactorError::io(
                        "supervisor",
                        std::io::Error::from(std::io::ErrorKind::NotConnected),
                    ));
                }
            }
        }
    }

    /// The settings in force.
    pub fn config(&self) -> SupervisorConfig {
        self.config.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Mode changes made so far.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }
}

/// Starts the supervisor on the first reactor of `reactors`. Static policies
/// take effect at its first sample (within one interval).
///
/// # Errors
/// [`ReactorError::InvalidSetting`] for a bad config; an I/O error if the
/// first reactor does not answer.
pub fn start(reactors: &Reactors, config: SupervisorConfig) -> Result<SupervisorHandle, ReactorError> {
    let sup = Supervisor::new(config.clone())?;
    let switches = Arc::new(AtomicU64::new(0));
    let shown = Arc::new(Mutex::new(config.clone()));
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    let first = reactors.handles().first().ok_or(ReactorError::UnknownPoller)?;
    let (sw, sh) = (switches.clone(), shown.clone());
    first
        .try_send(move |cx| {
            let sup = Rc::new(RefCell::new(sup));
            let s2 = sup.clone();
            let tx = cx.channel(16, move |_cx: &mut Context, cmd: Command| {
                let Command::SetConfig(c) = cmd;
                if let Ok(mut shown) = sh.lock() {
                    *shown = c.clone();
                }
                let _ = s2.borrow_mut().set_config(c);
            });
            let registered = cx.register_timed(config.interval, move |cx: &mut Context, _| {
                let peers: Vec<ReactorHandle> = cx.peers().to_vec();
                let snaps: Vec<StatsSnapshot> = peers.iter().map(ReactorHandle::stats).collect();
                let decisions = sup.borrow_mut().sample(&snaps);
                let interval = sup.borrow().config().interval;
                if let Some(id) = cx.current_poller() {
                    let _ = cx.set_period(id, interval);
                }
                for d in &decisions {
                    tracing::info!(core = d.core, from = %d.from, to = %d.to, reason = %d.reason, "supervisor: reactor mode change");
                    peers[d.index].set_mode(d.to);
                    sw.fetch_add(1, Ordering::Relaxed);
                }
                PollStatus::from_work(!decisions.is_empty())
            });
            let _ = reply_tx.send(registered.map(|_| tx));
        })
        .map_err(|_| ReactorError::io("supervisor start", std::io::Error::from(std::io::ErrorKind::WouldBlock)))?;
    let tx = reply_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| ReactorError::io("supervisor start", std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    Ok(SupervisorHandle {
        tx,
        switches,
        config: shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const WALL: u64 = 250_000_000;

    /// Cumulative counters for one reactor, advanced one interval at a time.
    struct Fake {
        snap: StatsSnapshot,
    }

    impl Fake {
        fn new(mode: Mode) -> Self {
            Fake {
                snap: StatsSnapshot {
                    core: 3,
                    taken_at: Instant::now(),
                    mode,
                    sleeping: false,
                    busy_ns: 0,
                    idle_ns: 0,
                    sleep_ns: 0,
                    thread_cpu_ns: 0,
                    loops: 0,
                    busy_loops: 0,
                    wakeups: 0,
                    epoll_waits: 0,
                    messages: 0,
                    poller_runs: 0,
                    timer_runs: 0,
                    mode_switches: 0,
                    panics: 0,
                },
            }
        }

        /// One interval in which the reactor was busy `busy` of the wall time,
        /// had `busy_loops` busy iterations and `wakeups` wakeups each costing
        /// `wake_ns` of CPU beyond the work.
        fn tick(&mut self, busy: f64, busy_loops: u64, wakeups: u64, wake_ns: u64) -> StatsSnapshot {
            let s = &mut self.snap;
            s.taken_at += Duration::from_nanos(WALL);
            let busy_ns = (busy * WALL as f64) as u64;
            s.busy_ns += busy_ns;
            s.busy_loops += busy_loops;
            match s.mode {
                Mode::Poll => {
                    s.idle_ns += WALL - busy_ns;
                    s.thread_cpu_ns += WALL;
                }
                _ => {
                    s.wakeups += wakeups;
                    s.thread_cpu_ns += busy_ns + wakeups * wake_ns;
                    s.sleep_ns += WALL - busy_ns;
                }
            }
            s.clone()
        }
    }

    fn adaptive() -> Supervisor {
        Supervisor::new(SupervisorConfig {
            up_samples: 2,
            down_samples: 3,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn static_policies_set_every_reactor_and_say_why() {
        let mut s = Supervisor::new(SupervisorConfig::with_policy(Policy::Interrupt)).unwrap();
        let snaps = [Fake::new(Mode::Poll).snap, Fake::new(Mode::Interrupt).snap];
        let d = s.sample(&snaps);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].index, d[0].from, d[0].to), (0, Mode::Poll, Mode::Interrupt));
        assert_eq!(d[0].reason, "mode_policy is interrupt");
    }

    #[test]
    fn steps_up_only_after_consecutive_high_samples() {
        let mut s = adaptive();
        let mut r = Fake::new(Mode::Interrupt);
        assert!(
            s.sample(&[r.tick(0.0, 0, 0, 0)]).is_empty(),
            "first sample is the baseline"
        );
        // 40 % work + 5000 wakeups x 20 us = 80 % load: high, but once is not enough.
        assert!(s.sample(&[r.tick(0.4, 5000, 5000, 20_000)]).is_empty());
        assert!(
            s.sample(&[r.tick(0.05, 100, 100, 20_000)]).is_empty(),
            "a low sample resets the run"
        );
        assert!(s.sample(&[r.tick(0.4, 5000, 5000, 20_000)]).is_empty());
        let d = s.sample(&[r.tick(0.4, 5000, 5000, 20_000)]);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].from, d[0].to), (Mode::Interrupt, Mode::Hybrid));
        assert_eq!(d[0].reason, "load 80% >= adaptive_high_mark 50% for 2 samples");
    }

    #[test]
    fn does_not_flap_when_poll_mode_hides_the_wake_cost() {
        let mut s = adaptive();
        let mut r = Fake::new(Mode::Hybrid);
        s.sample(&[r.tick(0.0, 0, 0, 0)]);
        // In hybrid, sleeping between requests: 10 % work, 10,000 wakeups of 40 us.
        for _ in 0..2 {
            r.tick(0.0, 0, 0, 0);
        }
        let mut decisions = Vec::new();
        for _ in 0..2 {
            decisions.extend(s.sample(&[r.tick(0.1, 10_000, 10_000, 40_000)]));
        }
        assert_eq!(decisions.last().map(|d| d.to), Some(Mode::Poll));
        r.snap.mode = Mode::Poll;
        // In poll mode the same load is 10 % busy, no wakeups: it must stay,
        // because 10,000 busy iterations/s would cost 1.6 cores of wakeups.
        for _ in 0..20 {
            assert!(s.sample(&[r.tick(0.1, 10_000, 0, 0)]).is_empty(), "flapped back down");
        }
    }

    #[test]
    fn steps_down_after_consecutive_low_estimates() {
        let mut s = adaptive();
        let mut r = Fake::new(Mode::Poll);
        s.sample(&[r.tick(0.0, 0, 0, 0)]);
        // 1 % busy, 50 busy iterations per interval: estimate 1 % + 200/s x 20 us = 1.4 %.
        assert!(s.sample(&[r.tick(0.01, 50, 0, 0)]).is_empty());
        assert!(s.sample(&[r.tick(0.01, 50, 0, 0)]).is_empty());
        let d = s.sample(&[r.tick(0.01, 50, 0, 0)]);
        assert_eq!((d[0].from, d[0].to), (Mode::Poll, Mode::Hybrid));
        assert_eq!(
            d[0].reason,
            "estimated interrupt-mode load 1.4% <= adaptive_low_mark 15% for 3 samples"
        );
        r.snap.mode = Mode::Hybrid;
        let mut last = Vec::new();
        for _ in 0..3 {
            last = s.sample(&[r.tick(0.01, 50, 50, 20_000)]);
        }
        assert_eq!((last[0].from, last[0].to), (Mode::Hybrid, Mode::Interrupt));
        r.snap.mode = Mode::Interrupt;
        for _ in 0..10 {
            assert!(s.sample(&[r.tick(0.0, 0, 0, 0)]).is_empty(), "interrupt is the floor");
        }
    }

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
            "mode_policy = fast: one of poll, interrupt, hybrid, adaptive"
        );
        for p in [Policy::Poll, Policy::Interrupt, Policy::Hybrid, Policy::Adaptive] {
            assert_eq!(p.as_str().parse::<Policy>().unwrap(), p);
        }
    }
}
