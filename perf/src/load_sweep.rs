//! `lull bench load`: CPU against latency at the loads storage nodes run.
//!
//! Open-loop workloads ([`crate::arrival`]) at fixed offered rates (and
//! idle, and closed-loop "max"), each configuration taking its turn within
//! a round (A B C A B C) so that a drift of the machine spreads over all of
//! them; policies, spin windows and poll periods change live between turns
//! (no reconnect). From the rows, [`verdict`] picks per load the cheapest
//! configuration whose p99 stays within a budget over poll's.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lull_engine::initiator::NvmeController;
use lull_reactor::supervisor::{Policy, SupervisorConfig};
use lull_reactor::{Mode, ReactorHandle};
use serde::Serialize;

use crate::arrival::{Arrival, Rate};
use crate::matrix::Side;
use crate::nvme_perf::{self, PerfReport, Rw, TargetCpu, Workload};

/// One configuration of the sweep: what each side runs. Adding one (a new
/// supervisor policy at some setting) is adding an entry to the list.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Its name in the tables, plots and verdict.
    pub name: String,
    /// The target's supervisor settings (its policy, and whatever that policy reads).
    pub target: SupervisorConfig,
    /// The initiator's supervisor settings.
    pub initiator: SupervisorConfig,
    /// The initiator's `nvme_ioq_poll_period_us` (0: every loop, i.e.
    /// polling in a polling reactor, event-driven in a sleeping one).
    pub ioq_us: u64,
    /// The initiator's `nvme_adminq_poll_period_us`.
    pub adminq_us: u64,
    /// Both sides' hybrid spin window (`idle_poll_us`), us; `None` leaves
    /// the reactors' own (as started).
    pub spin_us: Option<u64>,
}

impl LoadConfig {
    /// Both sides under one policy, default supervisor settings.
    pub fn both(name: impl Into<String>, policy: Policy, ioq_us: u64, adminq_us: u64, spin_us: Option<u64>) -> Self {
        LoadConfig {
            name: name.into(),
            target: SupervisorConfig::with_policy(policy),
            initiator: SupervisorConfig::with_policy(policy),
            ioq_us,
            adminq_us,
            spin_us,
        }
    }
}

/// The sweep's configurations: poll (admin queue at SPDK's 10 ms); interrupt
/// mode with the I/O queue polled every `periods` us (0: event-driven, named
/// `event-driven`); hybrid at each spin window of `spins` us; adaptive; the
/// latency-budget policy at each end-to-end budget of `budgets` us (named
/// `budget<us>`, each side given half: [`per_side_budget`]; I/O queue
/// event-driven). The admin queue is event-driven in every
/// configuration but poll.
pub fn configs(periods: &[u64], spins: &[u64], budgets: &[u64]) -> Vec<LoadConfig> {
    let mut c = vec![LoadConfig::both("poll", Policy::Poll, 0, 10_000, None)];
    for &p in periods {
        let name = if p == 0 {
            "event-driven".to_string()
        } else {
            format!("interrupt-ioq{p}")
        };
        c.push(LoadConfig::both(name, Policy::Interrupt, p, 0, None));
    }
    for &s in spins {
        c.push(LoadConfig::both(
            format!("hybrid-spin{s}"),
            Policy::Hybrid,
            0,
            0,
            Some(s),
        ));
    }
    c.push(LoadConfig::both("adaptive", Policy::Adaptive, 0, 0, None));
    for &b in budgets {
        let mut cfg = LoadConfig::both(format!("budget{b}"), Policy::Budget, 0, 0, None);
        let side = per_side_budget(b);
        cfg.target.latency_budget = side;
        cfg.initiator.latency_budget = side;
        c.push(cfg);
    }
    c
}

/// The `latency_budget_us` each side gets in configuration `budget<us>`:
/// half of `us`. The budget is end to end (the verdict holds a p99 against
/// poll's plus the budget), and both sides of an I/O add their delays to it:
/// given the whole budget each, the target and the initiator together added
/// up to twice it (docs/performance.md, "The budget split between the two
/// sides").
pub fn per_side_budget(us: u64) -> Duration {
    Duration::from_nanos(us.saturating_mul(500))
}

/// An offered load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Connections open, no I/O.
    Idle,
    /// Open loop at this many IOPS (total over the queues).
    Rate(u64),
    /// Closed loop: the QD cap always in flight.
    Max,
}

impl Load {
    /// `idle`, the rate (`100`, `1k`, `50k`), or `max`.
    pub fn label(self) -> String {
        match self {
            Load::Idle => "idle".into(),
            Load::Max => "max".into(),
            Load::Rate(n) if n >= 1000 && n.is_multiple_of(1000) => format!("{}k", n / 1000),
            Load::Rate(n) => n.to_string(),
        }
    }

    /// Parses `0` (idle), `max`, or a rate with an optional `k`/`m` (1 to 10m).
    ///
    /// # Errors
    /// Names `--loads` and the range.
    pub fn parse(s: &str) -> Result<Load, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "max" {
            return Ok(Load::Max);
        }
        if t == "0" || t == "idle" {
            return Ok(Load::Idle);
        }
        let (num, mul) = match t
            .strip_suffix('k')
            .map(|n| (n, 1000))
            .or_else(|| t.strip_suffix('m').map(|n| (n, 1_000_000)))
        {
            Some(x) => x,
            None => (t.as_str(), 1),
        };
        match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mul)) {
            Some(n) if (1..=crate::arrival::MAX_RATE_IOPS).contains(&n) => Ok(Load::Rate(n)),
            _ => Err(format!(
                "--loads {s:?}: each load is 0 (idle), max, or IOPS from 1 to {} (suffixes k, m)",
                crate::arrival::MAX_RATE_IOPS
            )),
        }
    }
}

/// Refuses a load named twice (`0,idle`, `1k,1000`): each load is one row
/// group of the table and one line of the verdict.
///
/// # Errors
/// Names `--loads` and the repeated load.
pub fn check_distinct(loads: &[Load]) -> Result<(), String> {
    for (i, l) in loads.iter().enumerate() {
        if loads[..i].contains(l) {
            return Err(format!(
                "--loads: {} is given twice; each load may appear once",
                l.label()
            ));
        }
    }
    Ok(())
}

/// The sweep's workloads (4 KiB; randrw is 50 % reads).
pub fn parse_workload(s: &str) -> Result<Rw, String> {
    match s {
        "randread" => Ok(Rw::RandRead),
        "randrw" => Ok(Rw::RandRw),
        "randwrite" => Ok(Rw::RandWrite),
        _ => Err(format!("--workloads {s:?}: use randread, randrw or randwrite")),
    }
}

/// Sets an external target's supervisor settings and spin window; returns
/// once they are in force.
pub type SetTarget<'a> = Box<dyn Fn(&SupervisorConfig, Option<u64>) -> Result<(), String> + Sync + 'a>;

/// Connects the initiator with this many I/O queues.
pub type Connect<'a> = Box<dyn Fn(u16) -> Result<NvmeController, String> + 'a>;

/// What to run.
pub struct LoadSweep<'a> {
    /// Connects the initiator (once per queue count).
    pub connect: Connect<'a>,
    /// The initiator's reactors and supervisor.
    pub initiator: Side,
    /// The target's, when in-process.
    pub target: Option<Side>,
    /// An external target's settings, when it can be driven (a lull daemon over its socket).
    pub set_target: Option<SetTarget<'a>>,
    /// Whose CPU the target columns show.
    pub target_cpu: TargetCpu,
    /// Offered loads.
    pub loads: Vec<Load>,
    /// Workloads.
    pub workloads: Vec<Rw>,
    /// I/O queue counts.
    pub queues: Vec<u16>,
    /// Commands in flight per queue at most (the QD cap).
    pub qd: u32,
    /// Measured time per run.
    pub time: Duration,
    /// Ramp before each run.
    pub ramp: Duration,
    /// Measured time of each idle row.
    pub idle: Duration,
    /// Rounds; each row holds the medians over them.
    pub rounds: u32,
    /// The configurations, in order.
    pub configs: Vec<LoadConfig>,
}

/// One row: a configuration at a load.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoadRow {
    /// Configuration name.
    pub config: String,
    /// `randread`, `randrw` or `randwrite` (4 KiB).
    pub workload: String,
    /// I/O queues.
    pub queues: u16,
    /// `idle`, the offered rate (`1k`), or `max`.
    pub load: String,
    /// Offered IOPS (0 idle, `None` for max: as many as the QD cap allows).
    pub offered_iops: Option<f64>,
    /// Completed IOPS.
    pub achieved_iops: f64,
    /// Median latency, us, from each command's due time.
    pub lat_p50_us: Option<f64>,
    /// 99th percentile, us.
    pub lat_p99_us: Option<f64>,
    /// 99.9th percentile, us.
    pub lat_p999_us: Option<f64>,
    /// Target CPU, % of one core.
    pub target_cpu_pct: Option<f64>,
    /// Initiator CPU, % of one core.
    pub initiator_cpu_pct: f64,
    /// CPU of both sides (the target's when measured) per completed I/O, us.
    pub cpu_us_per_io: Option<f64>,
    /// Target reactor wakeups/s.
    pub target_wakeups_s: Option<f64>,
    /// Initiator reactor wakeups/s.
    pub initiator_wakeups_s: f64,
    /// Commands sent late, summed over the rounds.
    pub late_cmds: u64,
    /// I/O errors, summed over the rounds.
    pub errors: u64,
    /// Rounds this row holds the medians of.
    pub rounds: u32,
}

impl LoadRow {
    /// Total CPU, % of one core: target (when measured) + initiator.
    pub fn total_cpu_pct(&self) -> f64 {
        self.target_cpu_pct.unwrap_or(0.0) + self.initiator_cpu_pct
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The row of `reports` (rounds of one configuration at one load): each
/// field the median over the rounds, counts summed.
fn row_of(config: &str, workload: Rw, queues: u16, load: Load, reports: &[PerfReport]) -> LoadRow {
    let m = |f: &dyn Fn(&PerfReport) -> Option<f64>| median(reports.iter().filter_map(f).collect());
    let achieved = m(&|r| Some(r.iops)).unwrap_or(0.0);
    let tcpu = m(&|r| r.target_cpu_pct);
    let icpu = m(&|r| Some(r.initiator_cpu_pct)).unwrap_or(0.0);
    LoadRow {
        config: config.to_string(),
        workload: workload.to_string(),
        queues,
        load: load.label(),
        offered_iops: match load {
            Load::Idle => Some(0.0),
            Load::Max => None,
            Load::Rate(_) => m(&|r| r.offered_iops),
        },
        achieved_iops: achieved,
        lat_p50_us: m(&|r| r.lat_p50_us),
        lat_p99_us: m(&|r| r.lat_p99_us),
        lat_p999_us: m(&|r| r.lat_p999_us),
        target_cpu_pct: tcpu,
        initiator_cpu_pct: icpu,
        // % of a core = 10^4 us of CPU per s.
        cpu_us_per_io: (achieved > 0.0).then(|| (tcpu.unwrap_or(0.0) + icpu) * 1e4 / achieved),
        target_wakeups_s: m(&|r| r.target_wakeups_s),
        initiator_wakeups_s: m(&|r| Some(r.initiator_wakeups_s)).unwrap_or(0.0),
        late_cmds: reports.iter().map(|r| r.late_cmds).sum(),
        errors: reports.iter().map(|r| r.errors).sum(),
        rounds: reports.len() as u32,
    }
}

/// Applies `c` to one side we control: supervisor settings, spin window
/// (or the reactors' own, `own_spin`), and for a fixed mode waits until
/// every reactor is in it.
fn apply_side(side: &Side, cfg: &SupervisorConfig, spin: Option<u64>, own_spin: &[Duration]) -> Result<(), String> {
    for (h, own) in side.reactors.iter().zip(own_spin) {
        let d = spin.map_or(*own, Duration::from_micros);
        h.set_idle_poll(d).map_err(|e| e.to_string())?;
    }
    side.supervisor.set_config(cfg.clone()).map_err(|e| e.to_string())?;
    if let Some(mode) = cfg.policy.fixed_mode() {
        for h in &side.reactors {
            h.set_mode(mode);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while side.reactors.iter().any(|h| h.mode() != mode) {
            if Instant::now() > until {
                return Err(format!("the reactors did not switch to {mode}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Runs the sweep. `progress(what, index, total)` before each run. Setting
/// `stop` (Ctrl-C) ends it early with the rows measured so far.
///
/// # Errors
/// A connection, a workload or a mode switch that fails.
pub fn run(
    s: &LoadSweep<'_>,
    stop: &Arc<AtomicBool>,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Vec<LoadRow>, String> {
    let rounds = s.rounds.max(1) as usize;
    let idle_loads = usize::from(s.loads.contains(&Load::Idle));
    let busy_loads = s.loads.len() - idle_loads;
    let total = s.queues.len() * s.configs.len() * rounds * (idle_loads + busy_loads * s.workloads.len());
    let own_init: Vec<Duration> = s.initiator.reactors.iter().map(ReactorHandle::idle_poll).collect();
    let own_target: Vec<Duration> = s
        .target
        .iter()
        .flat_map(|t| t.reactors.iter().map(ReactorHandle::idle_poll))
        .collect();
    let stopped = || stop.load(Ordering::Relaxed);
    let mut rows = Vec::new();
    let mut step = 0;
    for &q in &s.queues {
        if stopped() {
            break;
        }
        let ctrlr = (s.connect)(q)?;
        let apply = |c: &LoadConfig| -> Result<(), String> {
            apply_side(&s.initiator, &c.initiator, c.spin_us, &own_init)?;
            if let Some(t) = &s.target {
                apply_side(t, &c.target, c.spin_us, &own_target)?;
            } else if let Some(set) = &s.set_target {
                set(&c.target, c.spin_us)?;
            }
            ctrlr.set_poll_periods(Some(c.ioq_us), Some(c.adminq_us))
        };
        let result = (|| -> Result<(), String> {
            // (workload, load) steps; idle once per queue count.
            let mut steps: Vec<(Rw, Load)> = Vec::new();
            for &l in &s.loads {
                if l == Load::Idle {
                    steps.push((s.workloads.first().copied().unwrap_or(Rw::RandRead), l));
                }
            }
            for &w in &s.workloads {
                for &l in &s.loads {
                    if l != Load::Idle {
                        steps.push((w, l));
                    }
                }
            }
            for (rw, load) in steps {
                let mut reports: Vec<Vec<PerfReport>> = vec![Vec::new(); s.configs.len()];
                'rounds: for round in 0..rounds {
                    for (ci, c) in s.configs.iter().enumerate() {
                        if stopped() {
                            break 'rounds;
                        }
                        apply(c)?;
                        let what = if load == Load::Idle {
                            format!("{} queue(s), idle, {} (round {}/{rounds})", q, c.name, round + 1)
                        } else {
                            format!(
                                "{rw} {} queue(s) at {}, {} (round {}/{rounds})",
                                q,
                                load.label(),
                                c.name,
                                round + 1
                            )
                        };
                        progress(&what, step, total);
                        step += 1;
                        let r = if load == Load::Idle {
                            settle(s, c);
                            nvme_perf::idle(&ctrlr, s.idle, &s.target_cpu, stop)
                        } else {
                            let mut w = workload(s, rw, load);
                            w.ramp = ramp_for(c, w.ramp);
                            nvme_perf::run(&ctrlr, &w, stop, &s.target_cpu, |_, _, _| {})?
                        };
                        reports[ci].push(r);
                    }
                }
                for (c, r) in s.configs.iter().zip(&reports) {
                    if !r.is_empty() {
                        rows.push(row_of(&c.name, rw, q, load, r));
                    }
                }
                if stopped() {
                    break;
                }
            }
            Ok(())
        })();
        ctrlr.detach();
        result?;
    }
    Ok(rows)
}

/// Before an idle row: lets the last completions settle and, for an
/// adaptive side, waits (up to 10 s) for it to step down to interrupt
/// mode: idle is the steady state an idle node lives in.
fn settle(s: &LoadSweep<'_>, c: &LoadConfig) {
    std::thread::sleep(Duration::from_millis(300));
    let mut watched: Vec<&ReactorHandle> = Vec::new();
    if c.initiator.policy == Policy::Adaptive {
        watched.extend(&s.initiator.reactors);
    }
    if c.target.policy == Policy::Adaptive
        && let Some(t) = &s.target
    {
        watched.extend(&t.reactors);
    }
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && watched.iter().any(|h| h.mode() != Mode::Interrupt) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Least ramp before a run of a configuration with the budget policy on
/// either side: it plans only after `adaptive_up_samples`/`down_samples`
/// agreeing samples, and tries its I/O queue period with and without for 10
/// samples of 250 ms before keeping it (`reactor/src/supervisor/period_trial.rs`);
/// measured before that, a run shows the policy settling, not the policy.
pub const BUDGET_RAMP: Duration = Duration::from_secs(3);

/// The ramp of a run of `c`: `ramp`, at least [`BUDGET_RAMP`] where either
/// side runs the budget policy.
pub fn ramp_for(c: &LoadConfig, ramp: Duration) -> Duration {
    if c.target.policy == Policy::Budget || c.initiator.policy == Policy::Budget {
        ramp.max(BUDGET_RAMP)
    } else {
        ramp
    }
}

fn workload(s: &LoadSweep<'_>, rw: Rw, load: Load) -> Workload {
    Workload {
        rw,
        rwmixread: 50,
        bs: 4096,
        qd: s.qd,
        time: s.time,
        ramp: s.ramp,
        nsid: 1,
        size: None,
        verify: false,
        verify_state: None,
        flush_every: 0,
        rate: match load {
            Load::Rate(n) => Some(Rate {
                iops: n as f64,
                arrival: Arrival::Steady,
            }),
            _ => None,
        },
    }
}

/// A p99 budget over poll's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Poll's p99 times (1 + this/100).
    Percent(f64),
    /// Poll's p99 plus this many us.
    Micros(f64),
}

/// The three budgets of the verdict: +10 %, +50 us, +500 us.
pub const BUDGETS: [Budget; 3] = [Budget::Percent(10.0), Budget::Micros(50.0), Budget::Micros(500.0)];

impl Budget {
    /// The largest p99 allowed against poll's.
    pub fn limit(self, poll_p99: f64) -> f64 {
        match self {
            Budget::Percent(p) => poll_p99 * (1.0 + p / 100.0),
            Budget::Micros(us) => poll_p99 + us,
        }
    }

    /// `+10 %`, `+50 us`.
    pub fn label(self) -> String {
        match self {
            Budget::Percent(p) => format!("+{p:.0} %"),
            Budget::Micros(us) => format!("+{us:.0} us"),
        }
    }
}

/// A configuration is held to the load when it completed at least this
/// share of the offered rate (or, at max, of poll's rate).
pub const MEETS_LOAD: f64 = 0.9;

/// The verdict at one load for one budget.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Pick {
    /// Workload.
    pub workload: String,
    /// Queues.
    pub queues: u16,
    /// Load label.
    pub load: String,
    /// The budget, in words.
    pub budget: String,
    /// The largest p99 it allowed, us (`None` at idle: no latency).
    pub p99_limit_us: Option<f64>,
    /// The cheapest configuration within it.
    pub config: String,
    /// Its CPU (target + initiator), % of one core; at max, CPU-us per I/O.
    pub cost: f64,
    /// Its p99, us.
    pub p99_us: Option<f64>,
    /// Poll's cost in the same unit.
    pub poll_cost: f64,
    /// Poll's p99, us.
    pub poll_p99_us: Option<f64>,
    /// Whether poll itself met the load ([`MEETS_LOAD`]).
    pub poll_met_load: bool,
}

/// For each (workload, queues, load) with a poll row: per budget, the
/// cheapest configuration whose p99 is within the budget over poll's and
/// that met the load ([`MEETS_LOAD`]); at idle (no latency) the cheapest
/// overall, once. Cost is total CPU; at max load, where every configuration
/// runs flat out, CPU per I/O. Ties go to the earlier configuration.
pub fn verdict(rows: &[LoadRow]) -> Vec<Pick> {
    let mut groups: Vec<(&str, u16, &str)> = Vec::new();
    for r in rows {
        let k = (r.workload.as_str(), r.queues, r.load.as_str());
        if !groups.contains(&k) {
            groups.push(k);
        }
    }
    let mut picks = Vec::new();
    for (w, q, l) in groups {
        let g: Vec<&LoadRow> = rows
            .iter()
            .filter(|r| r.workload == w && r.queues == q && r.load == l)
            .collect();
        let Some(poll) = g.iter().find(|r| r.config == "poll") else {
            continue;
        };
        let max = l == "max";
        let cost = |r: &LoadRow| {
            if max {
                r.cpu_us_per_io.unwrap_or(f64::INFINITY)
            } else {
                r.total_cpu_pct()
            }
        };
        let meets = |r: &LoadRow| match (max, r.offered_iops) {
            (true, _) => r.achieved_iops >= poll.achieved_iops * MEETS_LOAD,
            (false, Some(o)) => r.achieved_iops >= o * MEETS_LOAD,
            (false, None) => true,
        };
        let cheapest = |ok: &dyn Fn(&LoadRow) -> bool| {
            g.iter()
                .filter(|r| r.errors == 0 && ok(r))
                .min_by(|a, b| cost(a).total_cmp(&cost(b)))
                .copied()
        };
        let pick = |budget: String, limit: Option<f64>, r: &LoadRow| Pick {
            workload: w.to_string(),
            queues: q,
            load: l.to_string(),
            budget,
            p99_limit_us: limit,
            config: r.config.clone(),
            cost: cost(r),
            p99_us: r.lat_p99_us,
            poll_cost: cost(poll),
            poll_p99_us: poll.lat_p99_us,
            poll_met_load: meets(poll),
        };
        if l == "idle" {
            if let Some(r) = cheapest(&|_| true) {
                picks.push(pick("idle".into(), None, r));
            }
            continue;
        }
        let Some(poll_p99) = poll.lat_p99_us else { continue };
        for b in BUDGETS {
            let limit = b.limit(poll_p99);
            let ok = |r: &LoadRow| meets(r) && r.lat_p99_us.is_some_and(|p| p <= limit);
            if let Some(r) = cheapest(&ok) {
                picks.push(pick(b.label(), Some(limit), r));
            }
        }
    }
    picks
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn queues_label(q: u16) -> String {
    if q == 1 {
        "1 queue".into()
    } else {
        format!("{q} queues")
    }
}

/// The verdict in words: per workload and queue count, a table of the
/// pick at each load and budget, then one line per budget saying which
/// configuration to run at which loads and what it saves, and a warning
/// when poll itself did not hold its latency (then every budget over it is
/// loose).
pub fn verdict_text(rows: &[LoadRow]) -> String {
    let picks = verdict(rows);
    let mut s = String::new();
    let mut groups: Vec<(&str, u16)> = Vec::new();
    for p in &picks {
        if !groups.contains(&(p.workload.as_str(), p.queues)) {
            groups.push((&p.workload, p.queues));
        }
    }
    if groups.is_empty() {
        return "Verdict: no load has a poll row with a latency to compare against.\n".into();
    }
    for (w, q) in groups {
        let g: Vec<&Pick> = picks.iter().filter(|p| p.workload == w && p.queues == q).collect();
        let _ = writeln!(
            s,
            "Verdict, 4k {w}, {}: at each load, the cheapest configuration whose p99 stays within a budget over poll's",
            queues_label(q)
        );
        let _ = writeln!(
            s,
            "(cost: CPU of target + initiator, % of one core; at max load, CPU-us per I/O; p99 in us from each command's due time)"
        );
        let _ = writeln!(
            s,
            "{:<6} {:>10} {:>9} | {:<31} | {:<31} | {:<31}",
            "load", "poll cost", "poll p99", "p99 <= poll +10 %", "p99 <= poll +50 us", "p99 <= poll +500 us"
        );
        let mut loads: Vec<&str> = Vec::new();
        for p in &g {
            if !loads.contains(&p.load.as_str()) {
                loads.push(&p.load);
            }
        }
        let cost = |load: &str, v: f64| {
            if load == "max" {
                format!("{v:.1} us/IO")
            } else if v < 1.0 {
                format!("{v:.2} %")
            } else {
                format!("{v:.1} %")
            }
        };
        for l in &loads {
            let at: Vec<&&Pick> = g.iter().filter(|p| p.load == *l).collect();
            let Some(first) = at.first() else { continue };
            if *l == "idle" {
                let _ = writeln!(
                    s,
                    "{:<6} {:>10} {:>9} | cheapest idle: {} {}",
                    l,
                    cost(l, first.poll_cost),
                    "-",
                    first.config,
                    cost(l, first.cost)
                );
                continue;
            }
            let cells: Vec<String> = BUDGETS
                .iter()
                .map(|b| {
                    at.iter().find(|p| p.budget == b.label()).map_or_else(
                        || "none met the load".into(),
                        |p| format!("{} {}, {}", p.config, cost(l, p.cost), opt(p.p99_us, 0)),
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "{:<6} {:>10} {:>9} | {:<31} | {:<31} | {:<31}",
                l,
                cost(l, first.poll_cost),
                opt(first.poll_p99_us, 0),
                cells[0],
                cells[1],
                cells[2]
            );
        }
        s += &answer(&g);
        let noisy = poll_lost_latency(rows, w, q);
        if !noisy.is_empty() {
            let _ = writeln!(
                s,
                "Warning: at {} poll's p99 is more than twice the best configuration's: its threads did not keep their cores \
                 (a shared or CPU-limited machine: other load, a cgroup cpu.max quota); the budgets over poll are loose there.",
                noisy.join(", ")
            );
        }
        s.push('\n');
    }
    s
}

/// Loads (labels) of one group where poll's p99 is more than twice the
/// best that met the load, and more than 100 us above it.
fn poll_lost_latency(rows: &[LoadRow], workload: &str, queues: u16) -> Vec<String> {
    let mut out = Vec::new();
    let g: Vec<&LoadRow> = rows
        .iter()
        .filter(|r| r.workload == workload && r.queues == queues && r.load != "idle" && r.load != "max")
        .collect();
    let mut loads: Vec<&str> = Vec::new();
    for r in &g {
        if !loads.contains(&r.load.as_str()) {
            loads.push(&r.load);
        }
    }
    for l in loads {
        let at: Vec<&&LoadRow> = g.iter().filter(|r| r.load == l).collect();
        let Some(poll) = at.iter().find(|r| r.config == "poll").and_then(|r| r.lat_p99_us) else {
            continue;
        };
        let best = at
            .iter()
            .filter(|r| r.offered_iops.is_none_or(|o| r.achieved_iops >= o * MEETS_LOAD))
            .filter_map(|r| r.lat_p99_us)
            .fold(f64::INFINITY, f64::min);
        if poll > 2.0 * best && poll - best > 100.0 {
            out.push(l.to_string());
        }
    }
    out
}

/// One line per budget: the configuration picked at each load, runs of
/// one configuration merged ("event-driven up to 1k, poll from 10k"), and
/// what it saves at the busiest load where it is not poll.
fn answer(g: &[&Pick]) -> String {
    let mut s = String::new();
    if let Some(idle) = g.iter().find(|p| p.load == "idle") {
        let _ = writeln!(
            s,
            "Idle: {} costs {:.2} % of a core against poll's {:.2} %.",
            idle.config, idle.cost, idle.poll_cost
        );
    }
    if g.iter().any(|p| p.load != "idle") {
        let _ = writeln!(
            s,
            "Should I turn interrupt mode on, and at what period? By the p99 I can give up over poll:"
        );
    }
    for b in BUDGETS {
        let label = b.label();
        let at: Vec<&&Pick> = g.iter().filter(|p| p.budget == label).collect();
        if at.is_empty() {
            continue;
        }
        let mut runs: Vec<(String, Vec<String>)> = Vec::new();
        for p in &at {
            match runs.last_mut() {
                Some((c, loads)) if *c == p.config => loads.push(p.load.clone()),
                _ => runs.push((p.config.clone(), vec![p.load.clone()])),
            }
        }
        let parts: Vec<String> = runs
            .iter()
            .map(|(c, loads)| match (loads.first(), loads.last()) {
                (Some(a), Some(z)) if a != z => format!("{c} at {a}-{z}"),
                (Some(a), _) => format!("{c} at {a}"),
                _ => c.clone(),
            })
            .collect();
        let saving = at
            .iter()
            .rev()
            .find(|p| p.config != "poll" && p.load != "max")
            .map(|p| {
                format!(
                    "; at {} it costs {:.1} % of a core against poll's {:.1} % (p99 {} against {} us{})",
                    p.load,
                    p.cost,
                    p.poll_cost,
                    opt(p.p99_us, 0),
                    opt(p.poll_p99_us, 0),
                    if p.poll_met_load {
                        ""
                    } else {
                        "; poll did not sustain this load"
                    }
                )
            })
            .unwrap_or_default();
        let _ = writeln!(s, "  p99 within {label} of poll: {}{saving}.", parts.join(", "));
    }
    s
}

/// The rows as a table.
pub fn table(rows: &[LoadRow]) -> String {
    let mut s = format!(
        "{:<18} {:<9} {:>3} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9} {:>5}\n",
        "config",
        "workload",
        "q",
        "load",
        "offered",
        "achieved",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "tgt CPU%",
        "init CPU%",
        "CPU us/IO",
        "tgt wk/s",
        "init wk/s",
        "late"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<18} {:<9} {:>3} {:>6} {:>9} {:>9.0} {:>8} {:>8} {:>9} {:>8} {:>9.2} {:>8} {:>9} {:>9.0} {:>5}",
            r.config,
            r.workload,
            r.queues,
            r.load,
            opt(r.offered_iops, 0),
            r.achieved_iops,
            opt(r.lat_p50_us, 1),
            opt(r.lat_p99_us, 1),
            opt(r.lat_p999_us, 1),
            opt(r.target_cpu_pct, 2),
            r.initiator_cpu_pct,
            opt(r.cpu_us_per_io, 1),
            opt(r.target_wakeups_s, 0),
            r.initiator_wakeups_s,
            r.late_cmds
        );
    }
    s
}

/// The rows as CSV (header first).
pub fn csv(rows: &[LoadRow]) -> String {
    let mut s = String::from(
        "config,workload,queues,load,offered_iops,achieved_iops,lat_p50_us,lat_p99_us,lat_p999_us,target_cpu_pct,initiator_cpu_pct,cpu_us_per_io,target_wakeups_s,initiator_wakeups_s,late_cmds,errors,rounds\n",
    );
    let o = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
    for r in rows {
        let _ = writeln!(
            s,
            "\"{}\",\"{}\",{},\"{}\",{},{:.1},{},{},{},{},{:.3},{},{},{:.1},{},{},{}",
            r.config,
            r.workload,
            r.queues,
            r.load,
            o(r.offered_iops),
            r.achieved_iops,
            o(r.lat_p50_us),
            o(r.lat_p99_us),
            o(r.lat_p999_us),
            o(r.target_cpu_pct),
            r.initiator_cpu_pct,
            o(r.cpu_us_per_io),
            o(r.target_wakeups_s),
            r.initiator_wakeups_s,
            r.late_cmds,
            r.errors,
            r.rounds
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_named_twice_is_refused() {
        let l = |t: &str| Load::parse(t).unwrap();
        assert!(check_distinct(&[l("0"), l("1k"), l("max")]).is_ok());
        let e = check_distinct(&[l("0"), l("idle")]).unwrap_err();
        assert!(e.contains("--loads") && e.contains("idle"), "{e}");
        assert!(check_distinct(&[l("1k"), l("1000")]).unwrap_err().contains("1k"));
    }

    pub(crate) fn row(
        config: &str,
        load: &str,
        offered: Option<f64>,
        achieved: f64,
        p99: Option<f64>,
        t: f64,
        i: f64,
    ) -> LoadRow {
        LoadRow {
            config: config.into(),
            workload: "randread".into(),
            queues: 1,
            load: load.into(),
            offered_iops: offered,
            achieved_iops: achieved,
            lat_p50_us: p99.map(|p| p / 2.0),
            lat_p99_us: p99,
            lat_p999_us: p99.map(|p| p * 2.0),
            target_cpu_pct: Some(t),
            initiator_cpu_pct: i,
            cpu_us_per_io: (achieved > 0.0).then(|| (t + i) * 1e4 / achieved),
            target_wakeups_s: Some(0.0),
            initiator_wakeups_s: 0.0,
            late_cmds: 0,
            errors: 0,
            rounds: 1,
        }
    }

    #[test]
    fn loads_parse_and_bad_ones_name_the_option() {
        assert_eq!(Load::parse("0"), Ok(Load::Idle));
        assert_eq!(Load::parse("max"), Ok(Load::Max));
        assert_eq!(Load::parse("100"), Ok(Load::Rate(100)));
        assert_eq!(Load::parse("10k"), Ok(Load::Rate(10_000)));
        assert_eq!(Load::parse("1m"), Ok(Load::Rate(1_000_000)));
        assert_eq!(Load::Rate(50_000).label(), "50k");
        assert_eq!(Load::Rate(1500).label(), "1500");
        for bad in ["-1", "abc", "11m", "1.5k", ""] {
            let e = Load::parse(bad).unwrap_err();
            assert!(
                e.starts_with("--loads") && e.contains("from 1 to 10000000"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn configs_are_data_named_by_their_settings() {
        let c = configs(&[0, 250], &[20, 50], &[]);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "poll",
                "event-driven",
                "interrupt-ioq250",
                "hybrid-spin20",
                "hybrid-spin50",
                "adaptive"
            ]
        );
        assert_eq!(c[2].ioq_us, 250);
        assert_eq!(c[2].target.policy, Policy::Interrupt);
        assert_eq!(c[4].spin_us, Some(50));
        assert_eq!(c[0].adminq_us, 10_000);
    }

    #[test]
    fn budget_configs_ramp_long_enough_to_settle() {
        let c = configs(&[250], &[], &[500]);
        let ms = |d: Duration| d.as_millis();
        let ramps: Vec<(&str, u128, u128)> = c
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    ms(ramp_for(c, Duration::from_millis(200))),
                    ms(ramp_for(c, Duration::from_secs(5))),
                )
            })
            .collect();
        assert_eq!(
            ramps,
            [
                ("poll", 200, 5000),
                ("interrupt-ioq250", 200, 5000),
                ("adaptive", 200, 5000),
                ("budget500", 3000, 5000),
            ]
        );
    }

    #[test]
    fn a_budget_config_splits_its_budget_between_the_sides() {
        let c = configs(&[], &[], &[0, 500, 51]);
        let b: Vec<(&str, Duration, Duration)> = c
            .iter()
            .filter(|c| c.target.policy == Policy::Budget)
            .map(|c| (c.name.as_str(), c.target.latency_budget, c.initiator.latency_budget))
            .collect();
        let us = |n: u64| Duration::from_nanos(n);
        assert_eq!(
            b,
            [
                ("budget0", us(0), us(0)),
                ("budget500", us(250_000), us(250_000)),
                ("budget51", us(25_500), us(25_500)),
            ]
        );
    }

    #[test]
    fn the_verdict_picks_the_cheapest_within_each_budget() {
        // At 1k: poll p99 100 us at 200 % CPU. Budgets: 110, 150, 600 us.
        let rows = vec![
            row("poll", "idle", Some(0.0), 0.0, None, 100.0, 100.0),
            row("event-driven", "idle", Some(0.0), 0.0, None, 0.05, 0.04),
            row("hybrid", "idle", Some(0.0), 0.0, None, 0.2, 0.2),
            row("poll", "1k", Some(1000.0), 1000.0, Some(100.0), 100.0, 100.0),
            // Within +10 %: 105 us, 60 % CPU.
            row("hybrid", "1k", Some(1000.0), 995.0, Some(105.0), 30.0, 30.0),
            // Within +50 us only: 140 us, 8 %.
            row("event-driven", "1k", Some(1000.0), 1000.0, Some(140.0), 4.0, 4.0),
            // Within +500 us only and cheapest overall, but it missed the load.
            row("interrupt-ioq1000", "1k", Some(1000.0), 700.0, Some(500.0), 1.0, 1.0),
            // Within +500 us and met the load: 3 %.
            row("interrupt-ioq250", "1k", Some(1000.0), 990.0, Some(550.0), 1.5, 1.5),
            // At max the cost is CPU per I/O: poll 200 % at 100k = 20 us/IO;
            // event-driven 150 % at 95k = 15.8 us/IO and p99 within +10 %.
            row("poll", "max", None, 100_000.0, Some(300.0), 100.0, 100.0),
            row("event-driven", "max", None, 95_000.0, Some(320.0), 75.0, 75.0),
            // Cheaper per I/O but under 90 % of poll's rate.
            row("interrupt-ioq1000", "max", None, 50_000.0, Some(320.0), 20.0, 20.0),
        ];
        let v = verdict(&rows);
        let get = |load: &str, budget: &str| {
            v.iter()
                .find(|p| p.load == load && p.budget == budget)
                .map(|p| p.config.as_str())
        };
        assert_eq!(get("idle", "idle"), Some("event-driven"));
        assert_eq!(get("1k", "+10 %"), Some("hybrid"));
        assert_eq!(get("1k", "+50 us"), Some("event-driven"));
        assert_eq!(get("1k", "+500 us"), Some("interrupt-ioq250"));
        assert_eq!(get("max", "+10 %"), Some("event-driven"));
        let p = v.iter().find(|p| p.load == "1k" && p.budget == "+500 us").unwrap();
        assert_eq!((p.cost, p.poll_cost, p.p99_limit_us), (3.0, 200.0, Some(600.0)));
        let m = v.iter().find(|p| p.load == "max" && p.budget == "+10 %").unwrap();
        assert!((m.cost - 150.0 * 1e4 / 95_000.0).abs() < 1e-9 && (m.poll_cost - 20.0).abs() < 1e-9);
        let t = verdict_text(&rows);
        assert!(!t.contains("Warning"), "poll held its latency: {t}");
        assert!(
            t.contains("p99 within +10 % of poll: hybrid at 1k, event-driven at max; at 1k it costs 60.0 % of a core against poll's 200.0 % (p99 105 against 100 us)"),
            "{t}"
        );
        assert!(
            t.contains("p99 within +500 us of poll: interrupt-ioq250 at 1k, event-driven at max"),
            "{t}"
        );
        assert!(
            t.contains("Idle: event-driven costs 0.09 % of a core against poll's 200.00 %"),
            "{t}"
        );
        // Poll that could not sustain the load is said to have failed it.
        let starved = vec![
            row("poll", "10k", Some(10_000.0), 5000.0, Some(900.0), 50.0, 50.0),
            row("event-driven", "10k", Some(10_000.0), 9990.0, Some(300.0), 60.0, 60.0),
        ];
        let v = verdict(&starved);
        assert!(
            v.iter().all(|p| p.config == "event-driven" && !p.poll_met_load),
            "{v:?}"
        );
        assert!(verdict_text(&starved).contains("(p99 300 against 900 us; poll did not sustain this load)"));
        // Poll at 3x the best p99 (and > 100 us above it) is flagged.
        let mut slow = rows.clone();
        slow[3].lat_p99_us = Some(450.0);
        assert!(
            verdict_text(&slow).contains("Warning: at 1k poll's p99"),
            "{}",
            verdict_text(&slow)
        );
        // Without a poll row there is nothing to compare against.
        let no_poll: Vec<LoadRow> = rows.into_iter().filter(|r| r.config != "poll").collect();
        assert!(verdict(&no_poll).is_empty());
    }

    #[test]
    fn a_row_holds_medians_over_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
