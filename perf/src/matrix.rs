//! `lull bench`: the comparison matrix. One target and one initiator (in
//! this process, each on its own core, or the initiator against an external
//! target), one association; for each configuration the reactors' policies
//! and the initiator's poll periods are changed at run time (no reconnect),
//! then every workload runs, then an idle window.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use lull_engine::initiator::NvmeController;
use lull_reactor::supervisor::{Policy, SupervisorConfig, SupervisorHandle};
use lull_reactor::{Mode, ReactorHandle};
use serde::Serialize;

use crate::nvme_perf::{self, PerfReport, Rw, TargetCpu, Workload};

/// One configuration of the matrix.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Its name in the tables.
    pub name: &'static str,
    /// Reactor policy of both sides.
    pub policy: Policy,
    /// `nvme_ioq_poll_period_us`.
    pub ioq_us: u64,
    /// `nvme_adminq_poll_period_us`.
    pub adminq_us: u64,
}

/// The six configurations: SPDK-like polling, the proposal's timed I/O
/// queue poller at two periods (admin queue at SPDK's 10 ms), the
/// event-driven initiator, and lull's hybrid and adaptive modes (both
/// event-driven on the initiator).
pub const CONFIGS: [BenchConfig; 6] = [
    BenchConfig {
        name: "poll",
        policy: Policy::Poll,
        ioq_us: 0,
        adminq_us: 10_000,
    },
    BenchConfig {
        name: "interrupt-ioq1000",
        policy: Policy::Interrupt,
        ioq_us: 1000,
        adminq_us: 10_000,
    },
    BenchConfig {
        name: "interrupt-ioq100",
        policy: Policy::Interrupt,
        ioq_us: 100,
        adminq_us: 10_000,
    },
    BenchConfig {
        name: "event-driven",
        policy: Policy::Interrupt,
        ioq_us: 0,
        adminq_us: 0,
    },
    BenchConfig {
        name: "hybrid",
        policy: Policy::Hybrid,
        ioq_us: 0,
        adminq_us: 0,
    },
    BenchConfig {
        name: "adaptive",
        policy: Policy::Adaptive,
        ioq_us: 0,
        adminq_us: 0,
    },
];

/// The workloads of each configuration (the idle row follows them).
pub fn workloads(time: Duration, ramp: Duration) -> Vec<Workload> {
    let w = |rw, bs, qd| Workload {
        rw,
        rwmixread: 50,
        bs,
        qd,
        time,
        ramp,
        nsid: 1,
        size: None,
        verify: false,
        verify_state: None,
        flush_every: 0,
        rate: None,
    };
    vec![
        w(Rw::RandRead, 4096, 32),
        w(Rw::RandWrite, 4096, 32),
        w(Rw::Read, 131_072, 16),
        w(Rw::Write, 131_072, 16),
        w(Rw::RandRead, 4096, 1),
        w(Rw::RandWrite, 4096, 1),
    ]
}

/// One side's reactors and supervisor, when we control them.
#[derive(Clone)]
pub struct Side {
    /// Its reactors.
    pub reactors: Vec<ReactorHandle>,
    /// Its supervisor.
    pub supervisor: SupervisorHandle,
}

impl Side {
    fn apply(&self, policy: Policy) -> Result<(), String> {
        self.supervisor
            .set_config(SupervisorConfig::with_policy(policy))
            .map_err(|e| e.to_string())?;
        if let Some(mode) = policy.fixed_mode() {
            for h in &self.reactors {
                h.set_mode(mode);
            }
            let until = Instant::now() + Duration::from_secs(5);
            while self.reactors.iter().any(|h| h.mode() != mode) {
                if Instant::now() > until {
                    return Err(format!("the reactors did not switch to {mode}"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Adaptive: the supervisor moves each reactor from wherever it is.
        Ok(())
    }
}

/// Sets an external target's mode policy; returns once it is in force.
pub type SetPolicy<'a> = Box<dyn Fn(Policy) -> Result<(), String> + Sync + 'a>;

/// What to run.
pub struct MatrixRun<'a> {
    /// The initiator's controller.
    pub ctrlr: &'a NvmeController,
    /// The initiator's reactors.
    pub initiator: Side,
    /// The target's reactors, when in-process.
    pub target: Option<Side>,
    /// Sets an external target's mode policy (a lull daemon over its
    /// socket) when `target` is None; it must return once the mode is in force.
    pub target_policy: Option<SetPolicy<'a>>,
    /// Whose CPU the target column shows.
    pub target_cpu: TargetCpu,
    /// Measured time per workload.
    pub time: Duration,
    /// Ramp per workload.
    pub ramp: Duration,
    /// Idle window.
    pub idle: Duration,
    /// Rounds: every (configuration, workload) slice runs this many times,
    /// the rounds interleaved; its row is the round with the median IOPS.
    pub rounds: u32,
    /// Configurations to run (default: all of [`CONFIGS`]).
    pub configs: Vec<BenchConfig>,
}

/// One row of the results: a configuration and a workload.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Configuration name.
    pub config: String,
    /// Workload label, or `idle`.
    pub workload: String,
    /// IOPS.
    pub iops: f64,
    /// KiB/s.
    pub bw_kib_s: f64,
    /// MiB/s.
    pub bw_mib_s: f64,
    /// Mean latency, us.
    pub lat_mean_us: Option<f64>,
    /// Median latency, us.
    pub lat_p50_us: Option<f64>,
    /// 99th percentile, us.
    pub lat_p99_us: Option<f64>,
    /// 99.9th percentile, us.
    pub lat_p999_us: Option<f64>,
    /// Target CPU, % of one core.
    pub target_cpu_pct: Option<f64>,
    /// Initiator CPU, % of one core.
    pub initiator_cpu_pct: f64,
    /// Target wakeups/s.
    pub target_wakeups_s: Option<f64>,
    /// Initiator wakeups/s.
    pub initiator_wakeups_s: f64,
    /// I/O errors (summed over the rounds).
    pub errors: u64,
    /// Rounds this row is the median of.
    pub rounds: u32,
}

impl BenchRow {
    fn from_report(config: &str, r: &PerfReport) -> Self {
        BenchRow {
            config: config.to_string(),
            workload: r.workload.clone(),
            iops: r.iops,
            bw_kib_s: r.bw_kib_s,
            bw_mib_s: r.bw_mib_s,
            lat_mean_us: r.lat_mean_us,
            lat_p50_us: r.lat_p50_us,
            lat_p99_us: r.lat_p99_us,
            lat_p999_us: r.lat_p999_us,
            target_cpu_pct: r.target_cpu_pct,
            initiator_cpu_pct: r.initiator_cpu_pct,
            target_wakeups_s: r.target_wakeups_s,
            initiator_wakeups_s: r.initiator_wakeups_s,
            errors: r.errors,
            rounds: 1,
        }
    }
}

/// Runs the matrix. `progress(config, workload, index, total)` before each step.
///
/// # Errors
/// A workload or a mode switch that fails.
pub fn run(
    m: &MatrixRun<'_>,
    stop: &Arc<AtomicBool>,
    mut progress: impl FnMut(&str, &str, usize, usize),
) -> Result<Vec<BenchRow>, String> {
    let ws = workloads(m.time, m.ramp);
    let rounds = m.rounds.max(1) as usize;
    let total = m.configs.len() * (ws.len() * rounds + 1);
    let mut rows = Vec::new();
    let mut step = 0;
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    let apply = |c: &BenchConfig| -> Result<(), String> {
        m.initiator.apply(c.policy)?;
        if let Some(t) = &m.target {
            t.apply(c.policy)?;
        } else if let Some(set) = &m.target_policy {
            set(c.policy)?;
        }
        m.ctrlr.set_poll_periods(Some(c.ioq_us), Some(c.adminq_us))
    };
    // Configurations take turns within each workload, so a drift of the
    // machine over the run (this VM's neighbours) spreads over all of them
    // instead of landing on whichever ran last.
    // The VM this is developed on is bimodal from one second to the next
    // (a neighbour takes a host core): a median over short rounds resists
    // that better than one long run.
    let mut slices: Vec<Vec<PerfReport>> = vec![Vec::new(); ws.len() * m.configs.len()];
    'rounds: for round in 0..rounds {
        for (wi, w) in ws.iter().enumerate() {
            for (ci, c) in m.configs.iter().enumerate() {
                if stopped() {
                    break 'rounds;
                }
                apply(c)?;
                progress(
                    c.name,
                    &format!("{} (round {}/{rounds})", w.label(), round + 1),
                    step,
                    total,
                );
                step += 1;
                let r = nvme_perf::run(m.ctrlr, w, stop, &m.target_cpu, |_, _, _| {})?;
                slices[wi * m.configs.len() + ci].push(r);
            }
        }
    }
    for (i, mut reports) in slices.into_iter().enumerate() {
        if reports.is_empty() {
            continue;
        }
        let errors = reports.iter().map(|r| r.errors).sum();
        let n = reports.len() as u32;
        reports.sort_by(|a, b| a.iops.total_cmp(&b.iops));
        let mut row = BenchRow::from_report(m.configs[i % m.configs.len()].name, &reports[reports.len() / 2]);
        row.errors = errors;
        row.rounds = n;
        rows.push(row);
    }
    for c in &m.configs {
        if stopped() {
            break;
        }
        apply(c)?;
        progress(c.name, "idle", step, total);
        step += 1;
        // Let the last completions settle; an adaptive supervisor needs a few
        // samples of idleness before it steps down: idle is measured after
        // that (the steady state an idle node lives in), up to 10 s later.
        std::thread::sleep(Duration::from_millis(300));
        if c.policy == Policy::Adaptive {
            let all: Vec<&ReactorHandle> = m
                .initiator
                .reactors
                .iter()
                .chain(m.target.iter().flat_map(|t| t.reactors.iter()))
                .collect();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && all.iter().any(|h| h.mode() != Mode::Interrupt) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let r = nvme_perf::idle(m.ctrlr, m.idle, &m.target_cpu, stop);
        rows.push(BenchRow::from_report(c.name, &r));
    }
    // Rows grouped by configuration, in the matrix's order.
    let order = |name: &str| m.configs.iter().position(|c| c.name == name).unwrap_or(usize::MAX);
    rows.sort_by_key(|r| order(&r.config));
    Ok(rows)
}

fn find<'a>(rows: &'a [BenchRow], config: &str, workload: &str) -> Option<&'a BenchRow> {
    rows.iter().find(|r| r.config == config && r.workload == workload)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

/// The summary per configuration: (config, randread IOPS, randwrite IOPS,
/// read MiB/s, write MiB/s, randread qd1 mean us, randwrite qd1 mean us,
/// target CPU % and initiator CPU % averaged over the loaded workloads,
/// idle CPU % of target + initiator).
fn summary(rows: &[BenchRow]) -> Vec<[String; 10]> {
    let mut configs: Vec<&str> = Vec::new();
    for r in rows {
        if !configs.contains(&r.config.as_str()) {
            configs.push(&r.config);
        }
    }
    configs
        .into_iter()
        .map(|c| {
            let get = |w: &str| find(rows, c, w);
            let loaded: Vec<&BenchRow> = rows.iter().filter(|r| r.config == c && r.workload != "idle").collect();
            let n = loaded.len().max(1) as f64;
            let tcpu: Option<f64> = loaded
                .iter()
                .map(|r| r.target_cpu_pct)
                .sum::<Option<f64>>()
                .map(|s| s / n);
            let icpu = loaded.iter().map(|r| r.initiator_cpu_pct).sum::<f64>() / n;
            let idle = get("idle").map(|r| (r.target_cpu_pct, r.initiator_cpu_pct));
            let idle_s = match idle {
                Some((Some(t), i)) => format!("{:.2} + {:.2}", t, i),
                Some((None, i)) => format!("- + {i:.2}"),
                None => "-".into(),
            };
            [
                c.to_string(),
                opt(get("randread 4k qd32").map(|r| r.iops / 1000.0), 1),
                opt(get("randwrite 4k qd32").map(|r| r.iops / 1000.0), 1),
                opt(get("read 128k qd16").map(|r| r.bw_mib_s), 0),
                opt(get("write 128k qd16").map(|r| r.bw_mib_s), 0),
                opt(get("randread 4k qd1").and_then(|r| r.lat_mean_us), 1),
                opt(get("randwrite 4k qd1").and_then(|r| r.lat_mean_us), 1),
                opt(tcpu, 1),
                format!("{icpu:.1}"),
                idle_s,
            ]
        })
        .collect()
}

/// The comparison table (one line per configuration) and the full table.
pub fn tables(rows: &[BenchRow]) -> String {
    let mut s = String::new();
    let head = [
        "configuration",
        "randread kIOPS",
        "randwrite kIOPS",
        "read MiB/s",
        "write MiB/s",
        "rr lat us",
        "rw lat us",
        "tgt CPU%",
        "init CPU%",
        "idle CPU% (tgt + init)",
    ];
    let widths = [22, 14, 15, 10, 11, 9, 9, 8, 9, 22];
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(l, "{c:<w$}");
            } else {
                let _ = write!(l, " {c:>w$}");
            }
        }
        l.push('\n');
        l
    };
    s += "Performance comparison (IOPS: 4k qd32; bandwidth: 128k qd16; latency: 4k qd1 mean; each the median round; CPU: % of one core, mean over the loaded workloads; idle: connections open, no I/O)\n";
    s += &line(&head.map(String::from));
    for r in summary(rows) {
        s += &line(&r);
    }
    s += "\nAll rows\n";
    let _ = writeln!(
        s,
        "{:<22} {:<18} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "configuration",
        "workload",
        "IOPS",
        "MiB/s",
        "mean us",
        "p50 us",
        "p99 us",
        "tgt CPU%",
        "init CPU%",
        "tgt wk/s",
        "init wk/s"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<22} {:<18} {:>10.0} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>9.1} {:>9} {:>9.0}",
            r.config,
            r.workload,
            r.iops,
            r.bw_mib_s,
            opt(r.lat_mean_us, 1),
            opt(r.lat_p50_us, 1),
            opt(r.lat_p99_us, 1),
            opt(r.target_cpu_pct, 1),
            r.initiator_cpu_pct,
            opt(r.target_wakeups_s, 0),
            r.initiator_wakeups_s
        );
    }
    s
}

/// The rows as CSV (header line first).
pub fn csv(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "config,workload,iops,bw_kib_s,lat_mean_us,lat_p50_us,lat_p99_us,lat_p999_us,target_cpu_pct,initiator_cpu_pct,target_wakeups_s,initiator_wakeups_s,errors,rounds\n",
    );
    let o = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
    for r in rows {
        let _ = writeln!(
            s,
            "\"{}\",\"{}\",{:.1},{:.1},{},{},{},{},{},{:.3},{},{:.1},{},{}",
            r.config,
            r.workload,
            r.iops,
            r.bw_kib_s,
            o(r.lat_mean_us),
            o(r.lat_p50_us),
            o(r.lat_p99_us),
            o(r.lat_p999_us),
            o(r.target_cpu_pct),
            r.initiator_cpu_pct,
            o(r.target_wakeups_s),
            r.initiator_wakeups_s,
            r.errors,
            r.rounds
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An SVG scatter plot: 4k qd1 random-read mean latency (us, y) against
/// the CPU both sides spent during it (% of one core, x), one labelled
/// point per configuration; a second series for the idle CPU on the x axis
/// at the bottom edge.
pub fn svg(rows: &[BenchRow]) -> String {
    let pts: Vec<(String, f64, f64)> = rows
        .iter()
        .filter(|r| r.workload == "randread 4k qd1")
        .filter_map(|r| {
            Some((
                r.config.clone(),
                r.target_cpu_pct.unwrap_or(0.0) + r.initiator_cpu_pct,
                r.lat_mean_us?,
            ))
        })
        .collect();
    // Latency spans four decades between the configurations: log scale.
    let (w, h, ml, mb, mt, mr) = (960.0, 480.0, 70.0, 60.0, 40.0, 300.0);
    let xmax = (pts.iter().map(|p| p.1).fold(10.0f64, f64::max) / 50.0).ceil() * 50.0;
    let decades = pts.iter().map(|p| p.2.max(1.0).log10().ceil()).fold(2.0f64, f64::max);
    let x = |v: f64| ml + v / xmax * (w - ml - mr);
    let y = |v: f64| h - mb - v.max(1.0).log10() / decades * (h - mb - mt);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">4k random read, QD 1: mean latency against CPU (target + initiator)</text>\n",
        (ml + w - mr) / 2.0
    );
    let _ = writeln!(
        s,
        "<line x1=\"{ml}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{ml}\" y1=\"{mt}\" x2=\"{ml}\" y2=\"{}\" stroke=\"black\"/>",
        h - mb,
        w - mr,
        h - mb,
        h - mb
    );
    for i in 0..=5 {
        let xv = xmax * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{xv:.0}</text>",
            x(xv),
            h - mb + 18.0
        );
    }
    for d in 0..=decades as i32 {
        let yv = 10f64.powi(d);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{yv:.0}</text><line x1=\"{ml}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            ml - 6.0,
            y(yv) + 4.0,
            y(yv),
            w - mr,
            y(yv)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">CPU, % of one core (target + initiator)</text><text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">mean latency, us (log scale)</text>",
        (ml + w - mr) / 2.0,
        h - 18.0,
        (mt + h - mb) / 2.0,
        (mt + h - mb) / 2.0
    );
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    ];
    for (i, (name, cx, cy)) in pts.iter().enumerate() {
        let c = colors[i % colors.len()];
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\" fill=\"{c}\" fill-opacity=\"0.7\"/><rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{} ({cx:.0} %, {cy:.0} us)</text>",
            x(*cx),
            y(*cy),
            // Configurations that land on one spot stay visible as rings.
            9 - (i % 4),
            w - mr + 10.0,
            mt + 20.0 * i as f64,
            w - mr + 24.0,
            mt + 9.0 + 20.0 * i as f64,
            esc(name)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#555\">Circle sizes differ only so that configurations on one spot stay visible.</text>",
        w - mr + 10.0,
        mt + 20.0 * pts.len() as f64 + 10.0
    );
    s += "</svg>\n";
    s
}

/// Writes `results.csv`, `results.json`, `table.txt` and `latency_vs_cpu.svg` into `dir`.
///
/// # Errors
/// File system errors, naming the file.
pub fn write_outputs(dir: &Path, rows: &[BenchRow]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?;
    let files = [
        ("results.csv", csv(rows)),
        ("results.json", json + "\n"),
        ("table.txt", tables(rows)),
        ("latency_vs_cpu.svg", svg(rows)),
    ];
    let mut out = Vec::new();
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, workload: &str, iops: f64, lat: Option<f64>, t: f64, i: f64) -> BenchRow {
        BenchRow {
            config: config.into(),
            workload: workload.into(),
            iops,
            bw_kib_s: iops * 4.0,
            bw_mib_s: iops * 4.0 / 1024.0,
            lat_mean_us: lat,
            lat_p50_us: lat,
            lat_p99_us: lat,
            lat_p999_us: lat,
            target_cpu_pct: Some(t),
            initiator_cpu_pct: i,
            target_wakeups_s: Some(1.0),
            initiator_wakeups_s: 1.0,
            errors: 0,
            rounds: 1,
        }
    }

    #[test]
    fn summary_averages_cpu_over_loaded_rows_and_adds_idle_of_both_sides() {
        let rows = vec![
            row("a", "randread 4k qd32", 100_000.0, Some(300.0), 40.0, 60.0),
            row("a", "randread 4k qd1", 10_000.0, Some(90.0), 20.0, 10.0),
            row("a", "idle", 0.0, None, 0.01, 0.02),
        ];
        let s = summary(&rows);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0][1], "100.0");
        assert_eq!(s[0][5], "90.0");
        assert_eq!(s[0][7], "30.0", "(40 + 20) / 2");
        assert_eq!(s[0][8], "35.0", "(60 + 10) / 2");
        assert_eq!(s[0][9], "0.01 + 0.02");
        let c = csv(&rows);
        assert_eq!(c.lines().count(), 4);
        assert!(
            c.lines()
                .nth(1)
                .unwrap()
                .starts_with("\"a\",\"randread 4k qd32\",100000.0,400000.0,300.000")
        );
        let g = svg(&rows);
        assert!(g.starts_with("<svg") && g.contains("a (30 %, 90 us)"), "{g}");
    }
}
