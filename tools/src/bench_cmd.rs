//! `lull bench` with no subcommand: a short load sweep and its verdict,
//! then the comparison matrix; `lull bench load`: the full load sweep.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use lull_engine::initiator::{NvmeController, NvmeTrid};
use lull_perf::inproc::{INPROC_NQN, InprocTarget};
use lull_perf::load_sweep::{self, LoadRow, LoadSweep};
use lull_perf::matrix::{self, CONFIGS, MatrixRun, Side};
use lull_perf::nvme_perf::{self, Rw, TargetCpu};
use lull_reactor::supervisor::{self, Policy, SupervisorConfig};
use lull_reactor::{CoreList, Mode};

use crate::perf_cmd::{ConnArgs, default_split, parse_addr, progress_bar, start_reactors, stop_flag};

/// `lull bench` (the matrix) arguments.
#[derive(Args)]
pub struct MatrixArgs {
    /// Measured time per workload and round, s (1 to 3600).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    time: u64,
    /// Ramp before each workload, ms (0 to 60000); in the load sweep at
    /// least 3 s for a configuration with the budget policy.
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = crate::ranged(0, 60_000))]
    ramp_ms: u64,
    /// Rounds (1 to 100): each configuration runs each workload this many
    /// times, interleaved; the table shows the round with the median IOPS.
    /// The load sweep before the matrix runs this many rounds too.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = crate::ranged(1, 100))]
    rounds: u64,
    /// Idle window per configuration in the matrix, s (1 to 3600).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    idle_secs: u64,
    /// Configurations of the matrix, by name (comma-separated; default all six:
    /// poll, interrupt-ioq1000, interrupt-ioq100, event-driven, hybrid, adaptive).
    #[arg(long, value_delimiter = ',', value_parser = parse_config)]
    configs: Vec<usize>,
    /// Offered loads of the short load sweep run first (its verdict is
    /// printed first): 0 (idle), IOPS with optional k/m, or max.
    #[arg(long, value_delimiter = ',', default_value = "0,1k,10k,50k", value_parser = load_sweep::Load::parse)]
    loads: Vec<load_sweep::Load>,
    /// Skip the load sweep: the matrix only.
    #[arg(long)]
    no_load_sweep: bool,
    /// I/O queues to connect for the matrix (spread over the initiator's cores), 1 to 64.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 64))]
    queues: u64,
    #[command(flatten)]
    common: CommonArgs,
}

fn parse_config(s: &str) -> Result<usize, String> {
    let names = [
        "poll",
        "interrupt-ioq1000",
        "interrupt-ioq100",
        "event-driven",
        "hybrid",
        "adaptive",
    ];
    names
        .iter()
        .position(|n| *n == s)
        .ok_or_else(|| format!("`{s}`: configurations are {}", names.join(", ")))
}

/// The load sweep `lull bench` runs before the matrix: 4k random read,
/// one queue, QD cap 32, the load sweep's default configurations.
fn main_sweep(a: &MatrixArgs) -> Plan {
    Plan {
        loads: a.loads.clone(),
        workloads: vec![Rw::RandRead],
        queues: vec![1],
        qd: 32,
        time: Duration::from_secs(a.time),
        ramp: Duration::from_millis(a.ramp_ms),
        idle: Duration::from_secs(1),
        rounds: a.rounds as u32,
        configs: load_sweep::configs(&[0, 250, 1000], &[50], &[50]),
    }
}

pub fn run(a: MatrixArgs) -> Result<(), String> {
    let stop = stop_flag()?;
    let configs: Vec<_> = if a.configs.is_empty() {
        CONFIGS.to_vec()
    } else {
        a.configs.iter().map(|&i| CONFIGS[i].clone()).collect()
    };
    // Each configuration sets the periods itself (at run time).
    let opts = a.common.conn.options(0, 0)?;
    load_sweep::check_distinct(&a.loads)?;
    let plan = (!a.no_load_sweep && !a.loads.is_empty()).then(|| main_sweep(&a));
    let bed = Bed::start(&a.common)?;
    let time = Duration::from_secs(a.time);
    let ramp = Duration::from_millis(a.ramp_ms);
    let idle = Duration::from_secs(a.idle_secs);
    let per_config =
        (time + ramp + Duration::from_millis(40)) * 6 * a.rounds as u32 + idle + Duration::from_millis(400);
    let sweep_secs = plan.as_ref().map_or(0, Plan::estimate);
    eprintln!(
        "lull bench: {}; load sweep ({} configurations x loads {} x {} rounds, about {sweep_secs} s), then {} configurations x 6 workloads x {} rounds x {} s + {} s idle: about {} s in all",
        describe(&bed, a.common.target.is_some()),
        plan.as_ref().map_or(0, |p| p.configs.len()),
        plan.as_ref().map_or_else(
            || "none".into(),
            |p| p.loads.iter().map(|l| l.label()).collect::<Vec<_>>().join(",")
        ),
        a.rounds,
        configs.len(),
        a.rounds,
        a.time,
        a.idle_secs,
        (per_config * configs.len() as u32).as_secs() + sweep_secs
    );
    let load_rows = match plan {
        Some(p) => match sweep(&bed, &a.common, p, &stop, "lull bench: load sweep") {
            Ok(r) => Some(r),
            Err(e) => {
                bed.shutdown();
                return Err(e);
            }
        },
        None => None,
    };
    let ctrlr = if stop.load(Ordering::Relaxed) {
        None
    } else {
        let trid = NvmeTrid::new(bed.addr, &bed.subnqn, &a.common.conn.hostnqn);
        match NvmeController::attach("bench0", trid, opts, bed.reactors.handles(), a.queues as u16) {
            Ok(c) => Some(c),
            Err(e) => {
                bed.shutdown();
                return Err(e.to_string());
            }
        }
    };
    let rows = match &ctrlr {
        Some(ctrlr) => {
            let m = MatrixRun {
                ctrlr,
                initiator: bed.initiator.clone(),
                target: bed.target_side.clone(),
                target_policy: a.common.target_rpc.clone().map(|sock| {
                    Box::new(move |p| crate::ctl_cmd::set_target_policy(&sock, p)) as Box<dyn Fn(_) -> _ + Sync>
                }),
                target_cpu: bed.target_cpu.clone(),
                time,
                ramp,
                idle,
                rounds: a.rounds as u32,
                configs,
            };
            let pb = progress_bar(a.common.json, "lull bench");
            let rows = matrix::run(&m, &stop, |c, w, i, n| {
                pb.set_position((i * 1000 / n.max(1)) as u64);
                pb.set_message(format!("{c}: {w}"));
            });
            pb.finish_and_clear();
            ctrlr.detach();
            rows
        }
        None => Ok(Vec::new()),
    };
    bed.shutdown();
    let rows = rows?;
    let dir = out_dir(&a.common.out, "lull-bench");
    let mut files = matrix::write_outputs(&dir, &rows)?;
    if let Some(l) = &load_rows {
        files.extend(lull_perf::load_report::write_outputs(&dir, l)?);
    }
    if a.common.json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
    } else {
        // The verdict first: it answers "which mode, which period" on the
        // first screen; the matrix's tables and the sweep's rows follow.
        if let Some(l) = &load_rows {
            println!("{}", load_sweep::verdict_text(l));
        }
        print!("{}", matrix::tables(&rows));
        if let Some(l) = &load_rows {
            print!(
                "\nLoad sweep rows (4k randread, 1 queue, QD cap 32; open loop at each load)\n{}",
                load_sweep::table(l)
            );
        }
    }
    if stop.load(Ordering::Relaxed) {
        eprintln!("lull bench: interrupted: the rows above are what was measured");
    }
    eprintln!(
        "lull bench: wrote {}",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let errors: u64 =
        rows.iter().map(|r| r.errors).sum::<u64>() + load_rows.iter().flatten().map(|r| r.errors).sum::<u64>();
    if errors > 0 {
        return Err(format!("{errors} I/O error(s) during the run"));
    }
    Ok(())
}

/// `lull bench load` arguments.
#[derive(Args)]
pub struct LoadArgs {
    /// Offered loads, comma-separated: 0 (idle), IOPS with optional k/m
    /// (1 to 10m, open loop, steady arrivals), or max (closed loop at the QD cap).
    #[arg(long, value_delimiter = ',', default_value = "0,100,1k,10k,50k,max", value_parser = load_sweep::Load::parse)]
    loads: Vec<load_sweep::Load>,
    /// Workloads (4 KiB): randread, randrw (50 % reads), randwrite; comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "randread,randrw", value_parser = load_sweep::parse_workload)]
    workloads: Vec<Rw>,
    /// I/O queue counts, comma-separated (each 1 to 64); one association each.
    #[arg(long, value_delimiter = ',', default_value = "1,4", allow_negative_numbers = true, value_parser = crate::ranged(1, 64))]
    queues: Vec<u64>,
    /// The QD cap: commands in flight per queue at most (1 to 4096).
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = crate::ranged(1, 4096))]
    qd: u64,
    /// Interrupt-mode configurations: the initiator's I/O queue poll period
    /// for each, us (comma-separated, 0 to 1000000; 0 = event-driven).
    #[arg(long, value_delimiter = ',', default_value = "0,250,1000", allow_negative_numbers = true, value_parser = crate::ranged(0, 1_000_000))]
    periods: Vec<u64>,
    /// Hybrid configurations: the spin window of each, us (comma-separated,
    /// 0 to 1000000; both sides spin this long before sleeping).
    #[arg(long, value_delimiter = ',', default_value = "50", allow_negative_numbers = true, value_parser = crate::ranged(0, 1_000_000))]
    spin_us: Vec<u64>,
    /// Latency-budget configurations (`mode_policy = budget`): the
    /// end-to-end budget of each, us (comma-separated, 0 to 1000000); the
    /// target and the initiator each get half as their `latency_budget_us`,
    /// since both add their delays to every I/O.
    #[arg(long, value_delimiter = ',', default_value = "0,500", allow_negative_numbers = true, value_parser = crate::ranged(0, 1_000_000))]
    budgets: Vec<u64>,
    /// Leave out configurations by name (comma-separated), e.g. adaptive.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Measured time per run, s (1 to 3600).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    time: u64,
    /// Ramp before each run, ms (0 to 60000); at least 3 s for a
    /// configuration with the budget policy, which settles in that time.
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = crate::ranged(0, 60_000))]
    ramp_ms: u64,
    /// Rounds (1 to 100): the configurations take turns in each; every
    /// field of a row is the median over the rounds.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 100))]
    rounds: u64,
    /// Idle window per configuration and queue count, s (1 to 3600).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    idle_secs: u64,
    #[command(flatten)]
    common: CommonArgs,
}

/// What `lull bench` and `lull bench load` share: where the target is,
/// which CPUs, where the files go.
#[derive(Args)]
pub struct CommonArgs {
    /// Run against this external target ADDR[:PORT] instead of an in-process one
    /// (only the initiator's side changes between configurations, unless --target-rpc).
    #[arg(long, value_parser = parse_addr)]
    target: Option<SocketAddr>,
    /// Subsystem NQN on the external target.
    #[arg(long, default_value = "nqn.2024-01.io.lull:vol0")]
    subnqn: String,
    /// The external target's process, for its CPU column.
    #[arg(long, conflicts_with = "target_rpc")]
    target_pid: Option<u32>,
    /// The external target is a `lull target` daemon with this JSON-RPC socket:
    /// each configuration also sets the daemon's mode policy (lull_reactor_set_mode)
    /// and hybrid spin window (idle_poll_us), and its reactors' CPU and wakeups
    /// fill the target columns.
    #[arg(long, value_name = "SOCKET", requires = "target")]
    target_rpc: Option<std::path::PathBuf>,
    /// Two CPUs: the target's then the initiator's (default: first and last usable).
    #[arg(long, value_parser = crate::parse_cores)]
    cores: Option<CoreList>,
    /// Output directory (default: ./lull-bench-UNIXTIME or ./lull-bench-load-UNIXTIME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the rows as a JSON array instead of the table and verdict.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// The target (in-process or external) and the initiator's reactors of a sweep.
struct Bed {
    inproc: Option<InprocTarget>,
    addr: SocketAddr,
    subnqn: String,
    target_side: Option<Side>,
    target_cpu: TargetCpu,
    reactors: lull_reactor::Reactors,
    initiator: Side,
    tcore: usize,
    icore: usize,
    pin: bool,
}

impl Bed {
    fn start(c: &CommonArgs) -> Result<Bed, String> {
        let (mut tcore, mut icore, mut pin) = default_split()?;
        if let Some(cl) = &c.cores {
            cl.validate_online().map_err(|e| format!("--cores: {e}"))?;
            match cl.cores() {
                [t, i] => (tcore, icore, pin) = (*t, *i, true),
                _ => {
                    return Err(format!(
                        "--cores {cl}: give two CPUs, the target's then the initiator's"
                    ));
                }
            }
        }
        let core = |c| CoreList::try_from(vec![c]).map_err(|e| e.to_string());
        let mut inproc = None;
        let (addr, subnqn, target_side, target_cpu) = match c.target {
            Some(addr) => (
                addr,
                c.subnqn.clone(),
                None,
                match (&c.target_rpc, c.target_pid) {
                    (Some(sock), _) => crate::ctl_cmd::target_sampler(sock.clone()),
                    (None, Some(pid)) => TargetCpu::Pid(pid),
                    (None, None) => TargetCpu::None,
                },
            ),
            None => {
                let t = InprocTarget::start(core(tcore)?, pin, Mode::Interrupt, 256 << 20)?;
                let sup = supervisor::start(&t.reactors, SupervisorConfig::with_policy(Policy::Interrupt))
                    .map_err(|e| e.to_string())?;
                let side = Side {
                    reactors: t.reactors.handles().to_vec(),
                    supervisor: sup,
                };
                let (addr, cpu) = (t.addr, TargetCpu::Reactors(t.reactors.handles().to_vec()));
                inproc = Some(t);
                (addr, INPROC_NQN.to_string(), Some(side), cpu)
            }
        };
        let (reactors, sup) = start_reactors(core(icore)?, pin, Policy::Interrupt, Duration::from_micros(200))?;
        let initiator = Side {
            reactors: reactors.handles().to_vec(),
            supervisor: sup,
        };
        Ok(Bed {
            inproc,
            addr,
            subnqn,
            target_side,
            target_cpu,
            reactors,
            initiator,
            tcore,
            icore,
            pin,
        })
    }

    fn shutdown(self) {
        let _ = self.reactors.shutdown();
        if let Some(t) = self.inproc {
            let _ = t.reactors.shutdown();
        }
    }
}

/// A load sweep's plan, from its flags.
struct Plan {
    loads: Vec<load_sweep::Load>,
    workloads: Vec<Rw>,
    queues: Vec<u16>,
    qd: u32,
    time: Duration,
    ramp: Duration,
    idle: Duration,
    rounds: u32,
    configs: Vec<load_sweep::LoadConfig>,
}

impl Plan {
    /// Seconds the sweep takes, about.
    fn estimate(&self) -> u64 {
        let busy = self.loads.iter().filter(|l| **l != load_sweep::Load::Idle).count();
        let idle = self.loads.len() - busy;
        let per_round: f64 = self
            .configs
            .iter()
            .map(|c| {
                let ramp = load_sweep::ramp_for(c, self.ramp);
                self.queues.len() as f64
                    * (busy as f64
                        * self.workloads.len() as f64
                        * (self.time + ramp + Duration::from_millis(60)).as_secs_f64()
                        + idle as f64 * (self.idle + Duration::from_millis(350)).as_secs_f64())
            })
            .sum();
        (per_round * f64::from(self.rounds)).ceil() as u64
    }
}

/// Runs a load sweep on `bed` with a progress bar (hidden with `quiet`).
fn sweep(bed: &Bed, c: &CommonArgs, plan: Plan, stop: &Arc<AtomicBool>, label: &str) -> Result<Vec<LoadRow>, String> {
    let opts = c.conn.options(0, 0)?;
    let (addr, subnqn, hostnqn) = (bed.addr, bed.subnqn.clone(), c.conn.hostnqn.clone());
    let handles = bed.reactors.handles().to_vec();
    let s = LoadSweep {
        connect: Box::new(move |q| {
            NvmeController::attach(
                "load0",
                NvmeTrid::new(addr, &subnqn, &hostnqn),
                opts.clone(),
                &handles,
                q,
            )
            .map_err(|e| e.to_string())
        }),
        initiator: bed.initiator.clone(),
        target: bed.target_side.clone(),
        set_target: match c.target_rpc.clone() {
            None => None,
            Some(sock) => {
                // Each configuration sets the daemon's spin window (its own
                // where the configuration names none, as in-process) and
                // latency budget, then its policy.
                let own_spin = crate::ctl_cmd::get_target_options(&sock)?
                    .get("idle_poll_us")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| format!("--target-rpc {}: lull_get_options has no idle_poll_us", sock.display()))?;
                Some(Box::new(move |cfg: &SupervisorConfig, spin: Option<u64>| {
                    crate::ctl_cmd::set_target_options(
                        &sock,
                        serde_json::json!({
                            "idle_poll_us": spin.unwrap_or(own_spin),
                            "latency_budget_us": cfg.latency_budget.as_micros() as u64,
                        }),
                    )?;
                    crate::ctl_cmd::set_target_policy(&sock, cfg.policy)
                }) as load_sweep::SetTarget<'_>)
            }
        },
        target_cpu: bed.target_cpu.clone(),
        loads: plan.loads,
        workloads: plan.workloads,
        queues: plan.queues,
        qd: plan.qd,
        time: plan.time,
        ramp: plan.ramp,
        idle: plan.idle,
        rounds: plan.rounds,
        configs: plan.configs,
    };
    let pb = progress_bar(c.json, label);
    let rows = load_sweep::run(&s, stop, |what, i, n| {
        pb.set_position((i * 1000 / n.max(1)) as u64);
        pb.set_message(what.to_string());
    });
    pb.finish_and_clear();
    rows
}

fn out_dir(out: &Option<PathBuf>, prefix: &str) -> PathBuf {
    out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("{prefix}-{secs}"))
    })
}

fn describe(bed: &Bed, external: bool) -> String {
    format!(
        "target {} on CPU {}, initiator on CPU {}{}",
        if external {
            format!("{} (external)", bed.addr)
        } else {
            "in-process, RAM bdev".into()
        },
        bed.tcore,
        bed.icore,
        if bed.pin {
            ""
        } else {
            " (one CPU: both share it, unpinned)"
        }
    )
}

/// Runs `lull bench load`.
pub fn run_load(a: LoadArgs) -> Result<(), String> {
    let stop = stop_flag()?;
    let mut configs = load_sweep::configs(&a.periods, &a.spin_us, &a.budgets);
    for name in &a.skip {
        if !configs.iter().any(|c| &c.name == name) {
            let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
            return Err(format!("--skip {name}: the configurations are {}", names.join(", ")));
        }
    }
    configs.retain(|c| !a.skip.contains(&c.name));
    load_sweep::check_distinct(&a.loads)?;
    if !configs.iter().any(|c| c.name == "poll") {
        eprintln!("lull bench load: warning: without poll there is no verdict (it compares with poll's p99)");
    }
    if a.loads.is_empty() || a.workloads.is_empty() || a.queues.is_empty() || configs.is_empty() {
        return Err("--loads, --workloads, --queues and the configurations must each name at least one".into());
    }
    let plan = Plan {
        loads: a.loads.clone(),
        workloads: a.workloads.clone(),
        queues: a.queues.iter().map(|&q| q as u16).collect(),
        qd: a.qd as u32,
        time: Duration::from_secs(a.time),
        ramp: Duration::from_millis(a.ramp_ms),
        idle: Duration::from_secs(a.idle_secs),
        rounds: a.rounds as u32,
        configs,
    };
    for load in &plan.loads {
        if let load_sweep::Load::Rate(n) = load {
            let rate = lull_perf::arrival::Rate {
                iops: *n as f64,
                arrival: lull_perf::arrival::Arrival::Steady,
            };
            for &q in &plan.queues {
                if let Some(w) = nvme_perf::rate_warning(&rate, u32::from(q), plan.qd) {
                    eprintln!("lull bench load: warning: {w}");
                }
            }
        }
    }
    let bed = Bed::start(&a.common)?;
    eprintln!(
        "lull bench load: {}; {} configurations ({}), loads {}, {} workload(s), queues {:?}, {} round(s) of {} s: about {} s",
        describe(&bed, a.common.target.is_some()),
        plan.configs.len(),
        plan.configs
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        plan.loads.iter().map(|l| l.label()).collect::<Vec<_>>().join(","),
        plan.workloads.len(),
        plan.queues,
        plan.rounds,
        a.time,
        plan.estimate()
    );
    if a.common.target.is_some() && a.common.target_rpc.is_none() {
        eprintln!(
            "lull bench load: the external target's own mode stays as it is; configurations change the initiator only"
        );
    }
    let rows = sweep(&bed, &a.common, plan, &stop, "lull bench load");
    bed.shutdown();
    let rows = rows?;
    report_load(&rows, &a.common, &stop, "lull bench load")
}

/// Prints a sweep's rows (or JSON) and verdict, and writes its files.
fn report_load(rows: &[LoadRow], c: &CommonArgs, stop: &Arc<AtomicBool>, label: &str) -> Result<(), String> {
    let dir = out_dir(&c.out, "lull-bench-load");
    let files = lull_perf::load_report::write_outputs(&dir, rows)?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?);
    } else {
        print!("{}\n{}", load_sweep::verdict_text(rows), load_sweep::table(rows));
    }
    if stop.load(Ordering::Relaxed) {
        eprintln!("{label}: interrupted: the rows above are what was measured");
    }
    eprintln!(
        "{label}: wrote {}",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let errors: u64 = rows.iter().map(|r| r.errors).sum();
    if errors > 0 {
        return Err(format!("{errors} I/O error(s) during the run"));
    }
    Ok(())
}
