//! The supervisor's decisions, as a pure function: [`Supervisor::sample`]
//! takes one [`StatsSnapshot`] per reactor and returns the mode changes to
//! make, so every policy is tested here with made-up counters.

use std::time::Duration;

use super::period_trial::{Interval, PeriodTrial, weighted_wakeups};
use super::policy::{Policy, SupervisorConfig};
use crate::budget::{Inputs, MAX_WAKEUP_SCALE, MIN_WAKEUP_SCALE, Setting};
use crate::burst::Bursts;
use crate::error::ReactorError;
use crate::mode::Mode;
use crate::stats::{GAP_BUCKETS, SLEEP_CLASSES, StatsSnapshot};

/// Wake cost assumed until a reactor has slept once (and, by the budget
/// policy, where its measurements are few or old): the ~20 us measured for a
/// sleeping thread's wakeup on this project's 2-vCPU VMs (docs/performance.md).
const INITIAL_WAKE_COST_NS: f64 = 20_000.0;

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
    /// The spin window the supervisor sets for the reactor's hybrid mode
    /// (`None`: the reactor's own `idle_poll_us`).
    pub spin_window: Option<Duration>,
    /// The poll period the supervisor sets for the initiator's I/O queues
    /// on the reactor (`None`: their configured `nvme_ioq_poll_period_us`);
    /// only the budget policy sets one.
    pub queue_period: Option<Duration>,
    /// Why, in words, with the numbers.
    pub reason: String,
}

#[derive(Default, Clone)]
struct Track {
    last: Option<StatsSnapshot>,
    high_run: u32,
    low_run: u32,
    /// CPU per wakeup beyond the work (adaptive's wake cost).
    wake_cost_ns: Option<f64>,
    /// Arrivals per second by gap bucket, smoothed.
    gaps_per_s: Option<[f64; GAP_BUCKETS]>,
    /// Wake delays by sleep class and bucket (the budget policy's wake
    /// cost): sample counts, each sample's weight halving every
    /// [`WAKE_HALF_LIFE`].
    wake_hist: [[f64; GAP_BUCKETS]; SLEEP_CLASSES],
    /// Busy share, smoothed.
    busy: Option<f64>,
    /// Follow-up bursts (timers, periodic pollers) per second, smoothed.
    follow_ups_per_s: Option<f64>,
    /// Follow-ups per second by gap bucket, smoothed.
    follow_up_gaps_per_s: Option<[f64; GAP_BUCKETS]>,
    /// The budget or policy changed since the last budget decision: the next
    /// plan applies at once.
    replan: bool,
    /// Wakeups counted asleep over the burst model's for the same setting,
    /// smoothed ([`Inputs::wakeup_scale`]); fading back to 1 with a
    /// half-life of [`CALIBRATION_HALF_LIFE`] while it is not measured.
    wakeup_scale: Option<f64>,
    /// Whether the plan's I/O queue period saves this reactor wakeups.
    period_trial: PeriodTrial,
}

/// How fast the wakeup correction fades while the reactor polls (and so
/// counts no wakeups): slower than the wake delays' evidence, so a reactor
/// that found sleeping dearer than the model said does not retry it every
/// few seconds.
const CALIBRATION_HALF_LIFE: Duration = Duration::from_secs(10);

/// Fewest wakeups per second, counted and modelled, that calibrate the
/// model: fewer in one interval are too few to compare.
const MIN_CALIBRATION_WAKEUPS: f64 = 100.0;

/// Age at which a wake-delay measurement counts half: long enough to hold a
/// p99's worth of wakeups at a few hundred per second, short enough that an
/// idle spell's slow wakeups (or a polling reactor's lack of any) give way
/// within seconds.
const WAKE_HALF_LIFE: Duration = Duration::from_secs(2);

/// Weight of a new sample in the smoothed wake cost, gaps and busy share.
const NEW_WEIGHT: f64 = 0.5;

fn smooth(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| (1.0 - NEW_WEIGHT) * o + NEW_WEIGHT * new)
}

/// A reactor's current setting, as the budget policy names it.
fn current_setting(snap: &StatsSnapshot) -> Setting {
    match snap.mode {
        Mode::Poll => Setting::Poll,
        Mode::Interrupt => Setting::Interrupt,
        Mode::Hybrid => Setting::Spin(snap.spin_window.unwrap_or(Duration::ZERO)),
    }
}

fn mode_of(setting: Setting) -> (Mode, Option<Duration>) {
    match setting {
        Setting::Poll => (Mode::Poll, None),
        Setting::Interrupt => (Mode::Interrupt, None),
        Setting::Spin(w) => (Mode::Hybrid, Some(w)),
    }
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
        // A new budget or policy makes the current settings no longer ones the
        // budget policy chose for it: its next plan applies without the
        // hysteresis that guards its own choices.
        let replan = config.latency_budget != self.config.latency_budget || config.policy != self.config.policy;
        self.config = config;
        for t in &mut self.tracks {
            t.high_run = 0;
            t.low_run = 0;
            t.replan |= replan;
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
            // Learnt under every policy, so a switch to `budget` or `adaptive`
            // starts from what the reactor does now.
            let learnt = last.as_ref().and_then(|last| learn(track, snap, last));
            if let Some(mode) = policy.fixed_mode() {
                if snap.mode != mode || snap.spin_window.is_some() || snap.queue_period.is_some() {
                    out.push(Decision {
                        index,
                        core: snap.core,
                        from: snap.mode,
                        to: mode,
                        spin_window: None,
                        queue_period: None,
                        reason: format!("mode_policy is {policy}"),
                    });
                }
                continue;
            }
            let Some(Learnt { d, wall_f, load, gaps }) = learnt else {
                continue;
            };
            let wake_cost = track.wake_cost_ns.unwrap_or(INITIAL_WAKE_COST_NS);
            if policy == Policy::Budget {
                let mut inputs = Inputs {
                    budget_ns: self.config.latency_budget.as_secs_f64() * 1e9,
                    wake_prior_ns: INITIAL_WAKE_COST_NS,
                    wake_hist: track.wake_hist,
                    wake_cpu_ns: wake_cost,
                    busy: track.busy.unwrap_or(0.0),
                    gaps_per_s: gaps,
                    follow_ups_per_s: track.follow_ups_per_s.unwrap_or(0.0),
                    follow_up_gaps_per_s: track.follow_up_gaps_per_s.unwrap_or([0.0; GAP_BUCKETS]),
                    wakeup_scale: 1.0,
                };
                // Made once: the scale calibration, the plan and the
                // current setting's estimate all use it (the scale does
                // not change it).
                let bursts = inputs.bursts();
                calibrate_wakeups(track, &mut inputs, &bursts, snap, last.as_ref(), &d, wall_f);
                let steady = last.as_ref().is_some_and(|l| {
                    l.mode == snap.mode && l.spin_window == snap.spin_window && l.queue_period == snap.queue_period
                });
                let interval = |planned| Interval {
                    planned,
                    sleeping: snap.mode != Mode::Poll,
                    steady,
                    with_period: snap.queue_period.is_some(),
                    wakeups_per_s: weighted_wakeups(d.wakeups, d.timed_wakeups, d.rung_wakeups) / (wall_f / 1e9),
                    events_per_s: inputs.rate() + inputs.follow_ups_per_s,
                };
                if let Some(dec) = budget_step(&self.config, track, &inputs, &bursts, interval, index, snap) {
                    out.push(dec);
                }
                continue;
            }
            if snap.spin_window.is_some() || snap.queue_period.is_some() {
                // Coming from the budget policy: give the reactor its own
                // window and its queues their own period back.
                out.push(Decision {
                    index,
                    core: snap.core,
                    from: snap.mode,
                    to: snap.mode,
                    spin_window: None,
                    queue_period: None,
                    reason: format!("mode_policy is {policy}: idle_poll_us and nvme_ioq_poll_period_us again"),
                });
            }
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
                        spin_window: None,
                        queue_period: None,
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
                        spin_window: None,
                        queue_period: None,
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

/// One interval's measurements of one reactor.
struct Learnt {
    /// The counters' change over the interval.
    d: StatsSnapshot,
    /// The interval, ns.
    wall_f: f64,
    /// Share of the interval not spent idle-spinning or asleep, 0..1.
    load: f64,
    /// Arrivals per second by gap bucket, smoothed.
    gaps: [f64; GAP_BUCKETS],
}

/// Updates `track` with the interval from `last` to `snap`: the adaptive
/// policy's wake CPU cost, the budget policy's wake delays, gaps and busy
/// share. `None` for an empty interval.
fn learn(track: &mut Track, snap: &StatsSnapshot, last: &StatsSnapshot) -> Option<Learnt> {
    let wall = snap.wall_ns_since(last);
    if wall == 0 {
        return None;
    }
    let d = snap.delta(last);
    let wall_f = wall as f64;
    let load = (d.thread_cpu_ns.saturating_sub(d.idle_ns) as f64 / wall_f).clamp(0.0, 1.0);
    if d.wakeups > 0 {
        let overhead = d.thread_cpu_ns.saturating_sub(d.busy_ns + d.idle_ns) as f64 / d.wakeups as f64;
        // The adaptive policy's own weights (0.7 old, 0.3 new), as before
        // the budget policy's inputs shared `smooth`.
        track.wake_cost_ns = Some(track.wake_cost_ns.map_or(overhead, |old| 0.7 * old + 0.3 * overhead));
    }
    let keep = 0.5f64.powf(wall_f / WAKE_HALF_LIFE.as_nanos() as f64);
    for (old, new) in track
        .wake_hist
        .iter_mut()
        .flatten()
        .zip(d.wake_late_hist.iter().flatten())
    {
        *old = *old * keep + *new as f64;
    }
    let secs = wall_f / 1e9;
    let gaps: [f64; GAP_BUCKETS] = std::array::from_fn(|b| {
        let new = d.gap_hist[b] as f64 / secs;
        smooth(track.gaps_per_s.map(|g| g[b]), new)
    });
    track.gaps_per_s = Some(gaps);
    track.busy = Some(smooth(track.busy, (d.busy_ns as f64 / wall_f).clamp(0.0, 1.0)));
    track.follow_ups_per_s = Some(smooth(track.follow_ups_per_s, d.follow_ups as f64 / secs));
    let follow: [f64; GAP_BUCKETS] = std::array::from_fn(|b| {
        let new = d.follow_up_gap_hist[b] as f64 / secs;
        smooth(track.follow_up_gaps_per_s.map(|g| g[b]), new)
    });
    track.follow_up_gaps_per_s = Some(follow);
    Some(Learnt { d, wall_f, load, gaps })
}

/// Sets `inputs.wakeup_scale` from `track`, first updating it: when the
/// reactor slept on one setting through the interval from `last` to `snap`
/// (counters `d`, `wall_f` ns), with the wakeups it counted over those the
/// burst model gives that setting from the same inputs; otherwise the old
/// correction fades toward 1.
fn calibrate_wakeups(
    track: &mut Track,
    inputs: &mut Inputs,
    bursts: &Bursts,
    snap: &StatsSnapshot,
    last: Option<&StatsSnapshot>,
    d: &StatsSnapshot,
    wall_f: f64,
) {
    let steady = last.is_some_and(|l| l.mode == snap.mode && l.spin_window == snap.spin_window);
    if snap.mode != Mode::Poll && steady {
        let counted = d.wakeups as f64 / (wall_f / 1e9);
        let raw = Inputs {
            wakeup_scale: 1.0,
            ..inputs.clone()
        };
        let modelled = raw.estimate_with(current_setting(snap), bursts).wakeups_per_s;
        if counted >= MIN_CALIBRATION_WAKEUPS && modelled >= MIN_CALIBRATION_WAKEUPS {
            let k = (counted / modelled).clamp(MIN_WAKEUP_SCALE, MAX_WAKEUP_SCALE);
            track.wakeup_scale = Some(smooth(track.wakeup_scale, k));
        }
    } else if let Some(k) = track.wakeup_scale {
        let keep = 0.5f64.powf(wall_f / CALIBRATION_HALF_LIFE.as_nanos() as f64);
        track.wakeup_scale = Some(1.0 + (k - 1.0) * keep);
    }
    inputs.wakeup_scale = track.wakeup_scale.unwrap_or(1.0);
}

/// One sample of the budget policy for one reactor: the change to make, if
/// the plan has differed from the current setting for long enough.
///
/// `bursts` are `inputs`' burst counts ([`Inputs::bursts`]). `interval`
/// describes the sample for the I/O queue period's trial (given
/// whether the plan has a period): a planned period applies only while the
/// trial allows it ([`PeriodTrial`]).
fn budget_step(
    c: &SupervisorConfig,
    track: &mut Track,
    inputs: &Inputs,
    bursts: &Bursts,
    interval: impl Fn(bool) -> Interval,
    index: usize,
    snap: &StatsSnapshot,
) -> Option<Decision> {
    let mut plan = inputs.plan_with(bursts, true);
    track.period_trial = track.period_trial.next(&interval(plan.queue_period.is_some()));
    if plan.queue_period.is_some() && !track.period_trial.allows_period() {
        plan = inputs.plan_with(bursts, false);
    }
    if let Some(note) = track.period_trial.note() {
        plan.reason = format!("{}; {note}", plan.reason);
    }
    let current = current_setting(snap);
    // A hybrid reactor without a window of ours is not on a setting we chose.
    let foreign = snap.mode == Mode::Hybrid && snap.spin_window.is_none();
    if plan.best.setting == current && !foreign {
        track.high_run = 0;
        track.low_run = 0;
        track.replan = false;
        // The same setting; the queues' period follows the estimates (it
        // costs nothing to change) when it moves by more than a quarter.
        if period_moved(snap.queue_period, plan.queue_period) {
            return Some(Decision {
                index,
                core: snap.core,
                from: snap.mode,
                to: snap.mode,
                spin_window: snap.spin_window,
                queue_period: plan.queue_period,
                reason: plan.reason,
            });
        }
        return None;
    }
    let now = inputs.estimate_with(current, bursts);
    if std::mem::take(&mut track.replan) {
        let (to, spin_window) = mode_of(plan.best.setting);
        return Some(Decision {
            index,
            core: snap.core,
            from: snap.mode,
            to,
            spin_window,
            queue_period: plan.queue_period,
            reason: format!("latency_budget_us or mode_policy changed; {}", plan.reason),
        });
    }
    let (run, needed, why) = if foreign || !now.within_budget {
        track.low_run = 0;
        track.high_run += 1;
        (track.high_run, c.up_samples, "budget")
    } else if now.cpu - plan.best.cpu >= (0.1 * now.cpu).max(0.02) {
        track.high_run = 0;
        track.low_run += 1;
        (track.low_run, c.down_samples, "saving")
    } else {
        // Within budget and not worth a change.
        track.high_run = 0;
        track.low_run = 0;
        return None;
    };
    if run < needed {
        return None;
    }
    track.high_run = 0;
    track.low_run = 0;
    let (to, spin_window) = mode_of(plan.best.setting);
    let reason = if why == "budget" && !foreign {
        format!(
            "{current} adds {:.0} us at p99 (latency_budget_us {:.0}) for {needed} samples; {}",
            now.added_p99_ns / 1000.0,
            inputs.budget_ns / 1000.0,
            plan.reason
        )
    } else if why == "budget" {
        format!("mode_policy is budget; {}", plan.reason)
    } else {
        format!(
            "{} for {needed} samples (now est. {:.1}% of a core)",
            plan.reason,
            now.cpu * 100.0
        )
    };
    Some(Decision {
        index,
        core: snap.core,
        from: snap.mode,
        to,
        spin_window,
        queue_period: plan.queue_period,
        reason,
    })
}

/// Whether the queues' poll period should change from `now` to `next`: set
/// or cleared, or moved by more than a quarter.
fn period_moved(now: Option<Duration>, next: Option<Duration>) -> bool {
    match (now, next) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
            (a - b).abs() > 0.25 * a.max(b)
        }
        _ => true,
    }
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
                    arrivals: 0,
                    gap_hist: [0; GAP_BUCKETS],
                    wake_late_hist: [[0; GAP_BUCKETS]; SLEEP_CLASSES],
                    timed_wakeups: 0,
                    timed_wake_late_ns: 0,
                    rung_wakeups: 0,
                    rung_wake_late_ns: 0,
                    follow_ups: 0,
                    follow_up_gap_hist: [0; GAP_BUCKETS],
                    spin_window: None,
                    queue_period: None,
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

    impl Fake {
        /// One interval under the budget policy's eyes: `busy` share of work,
        /// arrivals per gap bucket (`(bucket, count)`), and `wakeups` sleeps
        /// each ended `late_ns` after its deadline. The sleeps are as long as
        /// the gaps, in proportion (rounding leftovers to the first); without
        /// arrivals they are an idle spell's.
        fn tick_gaps(&mut self, busy: f64, gaps: &[(usize, u64)], wakeups: u64, late_ns: u64) -> StatsSnapshot {
            let arrivals: u64 = gaps.iter().map(|g| g.1).sum();
            let s = &mut self.snap;
            for &(b, n) in gaps {
                s.gap_hist[b] += n;
            }
            s.arrivals += arrivals;
            s.timed_wakeups += wakeups;
            s.timed_wake_late_ns += wakeups * late_ns;
            let late = crate::stats::gap_bucket(late_ns);
            let mut left = wakeups;
            for &(b, n) in gaps {
                let share = wakeups * n / arrivals;
                s.wake_late_hist[crate::stats::sleep_class_of_gap_bucket(b)][late] += share;
                left -= share;
            }
            let class = gaps
                .first()
                .map_or(SLEEP_CLASSES - 1, |g| crate::stats::sleep_class_of_gap_bucket(g.0));
            s.wake_late_hist[class][late] += left;
            self.tick(busy, arrivals, wakeups, 5_000)
        }

        /// Applies a decision as the driver would.
        fn apply(&mut self, d: &Decision) {
            self.snap.mode = d.to;
            self.snap.spin_window = d.spin_window;
            self.snap.queue_period = d.queue_period;
        }
    }

    fn budget(budget_us: u64) -> Supervisor {
        Supervisor::new(SupervisorConfig {
            up_samples: 2,
            down_samples: 3,
            latency_budget: Duration::from_micros(budget_us),
            ..SupervisorConfig::with_policy(Policy::Budget)
        })
        .unwrap()
    }

    /// A budget supervisor of `budget_us` and a reactor in interrupt mode,
    /// past the first sample (which only records the counters).
    fn asleep_under_budget(budget_us: u64) -> (Supervisor, Fake) {
        let mut s = budget(budget_us);
        let mut r = Fake::new(Mode::Interrupt);
        s.sample(&[r.tick(0.0, 0, 0, 0)]);
        (s, r)
    }

    /// Feeds `n` identical intervals; returns every decision, applied.
    fn run(
        s: &mut Supervisor,
        r: &mut Fake,
        n: usize,
        busy: f64,
        gaps: &[(usize, u64)],
        late_ns: u64,
    ) -> Vec<Decision> {
        run_waking(s, r, n, busy, gaps, late_ns, 100)
    }

    /// [`run`], the reactor counting `asleep` wakeups per interval while it
    /// does not poll.
    fn run_waking(
        s: &mut Supervisor,
        r: &mut Fake,
        n: usize,
        busy: f64,
        gaps: &[(usize, u64)],
        late_ns: u64,
        asleep: u64,
    ) -> Vec<Decision> {
        let mut all = Vec::new();
        for _ in 0..n {
            // A queue period saves a quarter of them (kept by its trial).
            let wakeups = match (r.snap.mode, r.snap.queue_period) {
                (Mode::Poll, _) => 0,
                (_, Some(_)) => asleep * 3 / 4,
                (_, None) => asleep,
            };
            let d = s.sample(&[r.tick_gaps(busy, gaps, wakeups, late_ns)]);
            for x in &d {
                r.apply(x);
            }
            all.extend(d);
        }
        all
    }

    #[test]
    fn budget_zero_polls_whenever_there_is_load() {
        let (mut s, mut r) = asleep_under_budget(0);
        // 250 arrivals per 250 ms interval (1000/s), 2 ms apart: light load, cheap wakeups (5 us).
        let d = run(&mut s, &mut r, 1, 0.01, &[(11, 250)], 5_000);
        assert!(d.is_empty(), "one sample is not enough");
        let d = run(&mut s, &mut r, 1, 0.01, &[(11, 250)], 5_000);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].from, d[0].to, d[0].spin_window),
            (Mode::Interrupt, Mode::Poll, None)
        );
        assert!(d[0].reason.contains("latency_budget_us 0"), "{}", d[0].reason);
        // It stays while the load lasts...
        assert!(run(&mut s, &mut r, 20, 0.01, &[(11, 250)], 5_000).is_empty());
        // ...and sleeps once the load is gone (fewer than 20 arrivals/s once
        // the smoothed rate has decayed, then down_samples more).
        let d = run(&mut s, &mut r, 12, 0.0, &[(13, 1)], 5_000);
        assert_eq!(d.last().map(|d| d.to), Some(Mode::Interrupt));
    }

    #[test]
    fn large_budget_and_sparse_arrivals_sleep() {
        let mut s = budget(500);
        let mut r = Fake::new(Mode::Poll);
        s.sample(&[r.tick(0.0, 0, 0, 0)]);
        // 1000 arrivals/s, 1 ms apart; the wake cost learnt is 30 us < 500 us.
        r.snap.mode = Mode::Interrupt;
        run(&mut s, &mut r, 1, 0.01, &[(10, 250)], 30_000);
        r.snap.mode = Mode::Poll;
        let d = run(&mut s, &mut r, 3, 0.01, &[(10, 250)], 30_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].from, d[0].to), (Mode::Poll, Mode::Interrupt));
        assert!(
            // The p99 of 30 us wakeups, read from the 16-32 us bucket: 32 us.
            d[0].reason.starts_with("p99 wake cost 32 us <= latency_budget_us 500"),
            "{}",
            d[0].reason
        );
        // The initiator's queues on it get the longest period (10 us steps)
        // whose sum of the arrival's wakeup, the wait for the poll and the
        // timer's wakeup stays within 500 us at p99: 450 us (worked out by
        // hand in budget.rs's tests for these 16-32 us wakeups).
        assert_eq!(d[0].queue_period, Some(Duration::from_micros(450)), "{}", d[0].reason);
        // The period is tried against event-driven queues (it saves a
        // quarter of the wakeups here, so it stays), then nothing moves.
        assert_eq!(
            trial(&run(&mut s, &mut r, 20, 0.01, &[(10, 250)], 30_000)),
            [None, Some(450)]
        );
        assert!(
            run(&mut s, &mut r, 20, 0.01, &[(10, 250)], 30_000).is_empty(),
            "stays asleep"
        );
    }

    /// The queue periods, us, of decisions that change nothing else
    /// (Interrupt to Interrupt): an I/O queue period's trial.
    fn trial(d: &[Decision]) -> Vec<Option<u128>> {
        assert!(
            d.iter().all(|d| (d.from, d.to) == (Mode::Interrupt, Mode::Interrupt)),
            "{d:?}"
        );
        d.iter().map(|d| d.queue_period.map(|p| p.as_micros())).collect()
    }

    #[test]
    fn short_gaps_and_a_budget_below_the_wake_cost_spin_over_those_gaps() {
        let (mut s, mut r) = asleep_under_budget(10);
        // 40,000 arrivals/s: 99.6 % come 8-16 us after the last work, the
        // rest 1-2 ms; waking costs 40 us, more than the 10 us budget.
        let gaps = [(4, 9_960), (11, 40)];
        let d = run(&mut s, &mut r, 2, 0.3, &gaps, 40_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].to, Mode::Hybrid);
        let w = d[0].spin_window.expect("a window of its own");
        assert_eq!(
            w,
            Duration::from_micros(16),
            "the smallest window covering the 8-16 us gaps"
        );
        assert!(d[0].reason.contains("spin 16 us"), "{}", d[0].reason);
        // The same load keeps it there (no flapping).
        assert!(run(&mut s, &mut r, 30, 0.3, &gaps, 40_000).is_empty());
        // Gaps that spread out past the window: more than 1 % now sleep, so
        // it must catch them (or poll) after up_samples.
        let wider = [(4, 9_000), (6, 1_000)];
        let d = run(&mut s, &mut r, 4, 0.3, &wider, 40_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].to, d[0].spin_window),
            (Mode::Hybrid, Some(Duration::from_micros(64)))
        );
    }

    #[test]
    fn hysteresis_holds_a_setting_through_alternating_samples() {
        let (mut s, mut r) = asleep_under_budget(10);
        // Load and no load in turn: neither ever lasts up_samples (2) samples
        // in a row, so nothing changes.
        let mut changes = 0;
        for i in 0..20 {
            let d = if i % 2 == 0 {
                run(&mut s, &mut r, 1, 0.3, &[(4, 10_000)], 40_000)
            } else {
                run(&mut s, &mut r, 1, 0.0, &[], 40_000)
            };
            changes += d.len();
        }
        // The smoothed gaps stay loaded, so it moves once to protect the
        // budget and then holds: at most one change, never back and forth.
        assert!(changes <= 1, "{changes} changes");
        // A saving smaller than a tenth of the cost is not worth a switch.
        let mut s = budget(10);
        let mut r = Fake::new(Mode::Hybrid);
        r.snap.spin_window = Some(Duration::from_micros(32));
        s.sample(&[r.tick(0.0, 0, 0, 0)]);
        // All gaps 8-16 us: 16 us is the cheapest window, 32 us barely dearer.
        assert!(run(&mut s, &mut r, 10, 0.3, &[(4, 1_000)], 40_000).is_empty());
    }

    #[test]
    fn wake_cost_estimate_follows_its_inputs() {
        let (mut s, mut r) = asleep_under_budget(25);
        // 4000 arrivals/s, 250 us apart: with cheap wakeups (10 us) interrupt keeps a 25 us budget.
        let gaps = [(9, 1_000)];
        assert!(run(&mut s, &mut r, 10, 0.05, &gaps, 10_000).is_empty());
        // Wakeups slow down to 60 us: the estimate climbs past the budget
        // within a few samples and the policy polls (no window catches 99 %
        // of 250 us gaps more cheaply).
        let d = run(&mut s, &mut r, 10, 0.05, &gaps, 60_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].to, Mode::Poll);
        assert!(d[0].reason.contains("adds"), "{}", d[0].reason);
        // Back to cheap wakeups, measured by a reactor that sleeps (a polling
        // one measures none): the tail follows once the slow wakeups have aged
        // under 1 % of the weight (half-life 2 s: some 12 s here).
        r.snap.mode = Mode::Interrupt;
        let tail = |s: &Supervisor| {
            Inputs {
                budget_ns: 25_000.0,
                wake_prior_ns: INITIAL_WAKE_COST_NS,
                wake_hist: s.tracks[0].wake_hist,
                wake_cpu_ns: 0.0,
                busy: 0.0,
                gaps_per_s: [0.0; GAP_BUCKETS],
                follow_ups_per_s: 0.0,
                follow_up_gaps_per_s: [0.0; GAP_BUCKETS],
                wakeup_scale: 1.0,
            }
            .wake_quantile_ns(crate::stats::sleep_class_of_gap_bucket(9), 0.99)
        };
        for _ in 0..10 {
            s.sample(&[r.tick_gaps(0.05, &gaps, 100, 10_000)]);
        }
        assert!(tail(&s) > 32_000.0, "slow wakeups still above 1 %: {}", tail(&s));
        for _ in 0..40 {
            s.sample(&[r.tick_gaps(0.05, &gaps, 100, 10_000)]);
        }
        assert!(tail(&s) < 16_000.0, "{}", tail(&s));
    }

    #[test]
    fn a_new_budget_applies_at_the_next_sample() {
        let (mut s, mut r) = asleep_under_budget(0);
        let gaps = [(10, 250)];
        let d = run(&mut s, &mut r, 3, 0.02, &gaps, 20_000);
        assert_eq!(d.last().map(|d| d.to), Some(Mode::Poll));
        // A 500 us budget: sleeping keeps it, and the switch comes with the
        // next sample, not after down_samples.
        s.set_config(SupervisorConfig {
            latency_budget: Duration::from_micros(500),
            ..s.config.clone()
        })
        .unwrap();
        let d = run(&mut s, &mut r, 1, 0.02, &gaps, 20_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].to, Mode::Interrupt);
        assert!(
            d[0].reason.starts_with("latency_budget_us or mode_policy changed"),
            "{}",
            d[0].reason
        );
        // Then its own hysteresis again: the same load changes nothing but
        // the trial of its queue period.
        assert_eq!(trial(&run(&mut s, &mut r, 20, 0.02, &gaps, 20_000)).len(), 2);
        assert!(run(&mut s, &mut r, 10, 0.02, &gaps, 20_000).is_empty());
    }

    #[test]
    fn a_busy_polling_reactor_sleeps_when_its_arrivals_come_in_bursts() {
        let (mut s, mut r) = asleep_under_budget(500);
        // 50k arrivals/s 2-4 us after the last work, 81 % busy: a wakeup
        // 16-32 us late collects 8.5 arrivals (budget.rs's tests work it
        // out by hand), so sleeping takes 5,870 wakeups/s, 84 % of a core
        // at the 5 us of CPU a wakeup was measured to cost while it slept;
        // then (as after a budget of 0) it polls.
        let gaps = [(2, 12_500)];
        // Asleep, it counts what the model says (5,869 a second).
        run_waking(&mut s, &mut r, 1, 0.81, &gaps, 20_000, 1_467);
        r.snap.mode = Mode::Poll;
        r.snap.queue_period = None;
        // down_samples (3) in a row move it.
        let d = run(&mut s, &mut r, 3, 0.81, &gaps, 20_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].from, d[0].to), (Mode::Poll, Mode::Interrupt));
        assert!(d[0].reason.contains("for 3 samples"), "{}", d[0].reason);
        // The number before `words` in the reason.
        let before = |words: &str| -> f64 {
            d[0].reason
                .split(words)
                .next()
                .and_then(|h| h.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .expect("the reason gives it")
        };
        let (arrivals, wakeups) = (before(" arrivals/s"), before(" wakeups/s"));
        assert_eq!(arrivals, 50_000.0, "{}", d[0].reason);
        assert!((wakeups - 5_869.0).abs() < 30.0, "{}", d[0].reason);
        // Asleep under the same load, it stays (no flapping back to poll):
        // only its queue period is tried.
        assert_eq!(
            trial(&run_waking(&mut s, &mut r, 20, 0.81, &gaps, 20_000, 1_467)).len(),
            2
        );
        assert!(run_waking(&mut s, &mut r, 20, 0.81, &gaps, 20_000, 1_467).is_empty());
    }

    #[test]
    fn a_queue_period_that_saves_no_wakeups_is_dropped_until_tried_again() {
        let (mut s, mut r) = asleep_under_budget(500);
        // The 50k load above, asleep, counting the model's wakeups with the
        // period or without it: what wakes the reactor is not its queues'
        // completions (an open-loop sender's timer).
        let gaps = [(2, 12_500)];
        let mut all = Vec::new();
        for k in 1..=300 {
            for d in s.sample(&[r.tick_gaps(0.81, &gaps, 1_467, 20_000)]) {
                r.apply(&d);
                all.push((k, d));
            }
        }
        let at: Vec<(usize, Option<u128>)> = all
            .iter()
            .map(|(k, d)| (*k, d.queue_period.map(|p| p.as_micros())))
            .collect();
        // Planned at once (450 us); after the interval it came in, 4 steady
        // samples with it; the queues event-driven for the comparison at the
        // 6th; after the next unsteady one, 4 without it: dropped at the
        // 11th, which changes nothing in force. The verdict holds 240
        // samples (to the 251st); at the 252nd the period is back for a new
        // trial, which drops it again the same way.
        assert_eq!(
            at,
            [(1, Some(450)), (6, None), (252, Some(450)), (257, None)],
            "{all:?}"
        );
        assert!(
            all[1].1.reason.contains("event-driven for a second"),
            "{}",
            all[1].1.reason
        );
        assert!(
            all.iter()
                .all(|(_, d)| (d.from, d.to) == (Mode::Interrupt, Mode::Interrupt))
        );
    }

    #[test]
    fn wakeups_counted_asleep_correct_the_model() {
        let (mut s, mut r) = asleep_under_budget(500);
        // The load of the test above, but asleep the reactor counts six
        // times the 5,869 wakeups a second the model gives (35.2k, the
        // replies of request-reply traffic joining no burst): at 5 us each,
        // 81 % + 17.6 % = 98.6 % of a core, no saving over polling.
        let gaps = [(2, 12_500)];
        run_waking(&mut s, &mut r, 2, 0.81, &gaps, 20_000, 6 * 1_467);
        r.snap.mode = Mode::Poll;
        r.snap.queue_period = None;
        // Polling, it does not go back to sleep on the model's word (84 %,
        // which the test above moves on after 3 samples)...
        let d = run(&mut s, &mut r, 12, 0.81, &gaps, 20_000);
        assert!(d.is_empty(), "{d:?}");
        // ...until the correction has faded (half-life 10 s) to where
        // sleeping saves the 10 % a change needs (81 % + x * 2.93 % <= 90 %,
        // x <= 3.07): 1 + 5 x 0.5^(n / 40) <= 3.07 from the 51st sample,
        // then the 3 of a saving.
        let mut after = None;
        for i in 0..100 {
            if let Some(d) = run(&mut s, &mut r, 1, 0.81, &gaps, 20_000).first() {
                assert_eq!(d.to, Mode::Interrupt, "{d:?}");
                assert!(d.reason.contains("as counted asleep"), "{}", d.reason);
                after = Some(12 + i + 1);
                break;
            }
        }
        assert_eq!(after, Some(53), "samples until it sleeps again");
    }

    #[test]
    fn a_polling_reactor_tries_sleeping_again_once_its_evidence_has_aged() {
        let (mut s, mut r) = asleep_under_budget(500);
        // 1000 arrivals/s, 1-2 ms apart, and wakeups 600 us late: over the
        // 500 us budget, so it polls (no window catches 99 % more cheaply).
        let gaps = [(11, 250)];
        let d = run(&mut s, &mut r, 2, 0.02, &gaps, 600_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].to, Mode::Poll);
        // Polling measures no wakeups: the slow ones age, the assumed 20 us
        // takes their place, and it sleeps again to measure (after the
        // down_samples of a saving), neither at once nor never.
        let mut after = None;
        for i in 0..200 {
            let d = run(&mut s, &mut r, 1, 0.02, &gaps, 600_000);
            if let Some(d) = d.first() {
                assert_eq!(d.to, Mode::Interrupt, "{d:?}");
                after = Some(i + 1);
                break;
            }
        }
        let after = after.expect("tries sleeping again within 50 s");
        assert!((10..=100).contains(&after), "after {after} samples");
        // Still slow: back to polling within up_samples.
        let d = run(&mut s, &mut r, 2, 0.02, &gaps, 600_000);
        assert_eq!(d.last().map(|d| d.to), Some(Mode::Poll), "{d:?}");
    }

    #[test]
    fn the_queue_period_follows_the_wake_cost_without_a_mode_change() {
        let (mut s, mut r) = asleep_under_budget(500);
        // Interrupt already, with wakeups 16-32 us late: a period, no mode change.
        let d = run(&mut s, &mut r, 3, 0.01, &[(10, 250)], 30_000);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].from, d[0].to), (Mode::Interrupt, Mode::Interrupt));
        assert_eq!(d[0].queue_period, Some(Duration::from_micros(450)));
        // It is tried against event-driven queues and kept; small wobbles
        // move nothing.
        assert_eq!(
            trial(&run(&mut s, &mut r, 12, 0.01, &[(10, 250)], 30_000)),
            [None, Some(450)]
        );
        assert!(run(&mut s, &mut r, 10, 0.01, &[(10, 250)], 30_000).is_empty());
        // Wakeups grow to 128-256 us late, after short sleeps too (a fifth of
        // the arrivals now 64-128 us apart, so the timer's class is measured):
        // two of them (256-512 us, p99 494 us) and even the shortest
        // period's wait break 500 us at p99, so the queues go back to their
        // own.
        let d = run(&mut s, &mut r, 40, 0.01, &[(10, 200), (7, 50)], 200_000);
        let last = d.iter().rev().find(|d| d.to == Mode::Interrupt).map(|d| d.queue_period);
        assert_eq!(last, Some(None), "{d:?}");
    }

    #[test]
    fn leaving_the_budget_policy_gives_the_reactor_its_window_back() {
        let mut s = budget(10);
        let mut r = Fake::new(Mode::Hybrid);
        r.snap.spin_window = Some(Duration::from_micros(16));
        r.snap.queue_period = Some(Duration::from_micros(400));
        s.sample(&[r.tick(0.0, 0, 0, 0)]);
        s.set_config(SupervisorConfig::with_policy(Policy::Hybrid)).unwrap();
        let d = s.sample(&[r.tick(0.0, 0, 0, 0)]);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].from, d[0].to, d[0].spin_window, d[0].queue_period),
            (Mode::Hybrid, Mode::Hybrid, None, None)
        );
        // Under adaptive too, and under a fixed mode.
        for policy in [Policy::Adaptive, Policy::Interrupt] {
            let mut s = budget(500);
            let mut r = Fake::new(Mode::Interrupt);
            r.snap.queue_period = Some(Duration::from_micros(400));
            s.sample(&[r.tick(0.0, 0, 0, 0)]);
            s.set_config(SupervisorConfig::with_policy(policy)).unwrap();
            let d = s.sample(&[r.tick(0.0, 0, 0, 0)]);
            assert_eq!(d.len(), 1, "{policy}: {d:?}");
            assert_eq!(d[0].queue_period, None, "{policy}");
        }
    }
}
