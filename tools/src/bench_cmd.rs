//! `lull bench` with no subcommand: the comparison matrix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lull_engine::nvme::{NvmeController, NvmeTrid};
use lull_perf::inproc::{INPROC_NQN, InprocTarget};
use lull_perf::matrix::{self, CONFIGS, MatrixRun, Side};
use lull_perf::nvme_perf::TargetCpu;
use lull_reactor::supervisor::{self, Policy, SupervisorConfig};
use lull_reactor::{CoreList, Mode};

use crate::perf_cmd::{InitiatorArgs, default_split, parse_addr, progress_bar, start_reactors, stop_flag};

/// `lull bench` (the matrix) arguments.
#[derive(Args)]
pub struct MatrixArgs {
    /// Measured time per workload and round, s (1 to 3600).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    time: u64,
    /// Ramp before each workload, ms (0 to 60000).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = crate::ranged(0, 60_000))]
    ramp_ms: u64,
    /// Rounds (1 to 100): each configuration runs each workload this many
    /// times, interleaved; the table shows the round with the median IOPS.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = crate::ranged(1, 100))]
    rounds: u64,
    /// Idle window per configuration, s (1 to 3600).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    idle_secs: u64,
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
    /// each configuration also sets the daemon's mode policy (lull_reactor_set_mode),
    /// and its reactors' CPU and wakeups fill the target columns.
    #[arg(long, value_name = "SOCKET", requires = "target")]
    target_rpc: Option<std::path::PathBuf>,
    /// Two CPUs: the target's then the initiator's (default: first and last usable).
    #[arg(long, value_parser = crate::parse_cores)]
    cores: Option<CoreList>,
    /// Configurations to run, by name (comma-separated; default all six:
    /// poll, interrupt-ioq1000, interrupt-ioq100, event-driven, hybrid, adaptive).
    #[arg(long, value_delimiter = ',', value_parser = parse_config)]
    configs: Vec<usize>,
    /// Output directory (default: ./lull-bench-UNIXTIME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON array instead of the tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    init: InitiatorArgs,
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

pub fn run(a: MatrixArgs) -> Result<(), String> {
    let stop = stop_flag()?;
    let (mut tcore, mut icore, mut pin) = default_split()?;
    if let Some(c) = &a.cores {
        c.validate_online().map_err(|e| format!("--cores: {e}"))?;
        match c.cores() {
            [t, i] => (tcore, icore, pin) = (*t, *i, true),
            _ => return Err(format!("--cores {c}: give two CPUs, the target's then the initiator's")),
        }
    }
    let configs: Vec<_> = if a.configs.is_empty() {
        CONFIGS.to_vec()
    } else {
        a.configs.iter().map(|&i| CONFIGS[i].clone()).collect()
    };
    // Each configuration sets the periods itself (at run time).
    let opts = a.init.options(0, 0)?;
    let core = |c| CoreList::try_from(vec![c]).map_err(|e| e.to_string());
    let mut inproc = None;
    let (addr, subnqn, target_side, target_cpu) = match a.target {
        Some(addr) => (
            addr,
            a.subnqn.clone(),
            None,
            match (&a.target_rpc, a.target_pid) {
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
    let trid = NvmeTrid::new(addr, &subnqn, &a.init.hostnqn);
    let ctrlr = NvmeController::attach("bench0", trid, opts, reactors.handles(), a.init.queues as u16)
        .map_err(|e| e.to_string())?;
    let time = Duration::from_secs(a.time);
    let ramp = Duration::from_millis(a.ramp_ms);
    let idle = Duration::from_secs(a.idle_secs);
    let per_config =
        (time + ramp + Duration::from_millis(40)) * 6 * a.rounds as u32 + idle + Duration::from_millis(400);
    eprintln!(
        "lull bench: target {} on CPU {tcore}, initiator on CPU {icore}{}; {} configurations x 6 workloads x {} rounds x {} s + {} s idle: about {} s",
        if a.target.is_some() {
            format!("{addr} (external)")
        } else {
            "in-process, RAM bdev".into()
        },
        if pin { "" } else { " (one CPU: both share it, unpinned)" },
        configs.len(),
        a.rounds,
        a.time,
        a.idle_secs,
        (per_config * configs.len() as u32).as_secs()
    );
    let m = MatrixRun {
        ctrlr: &ctrlr,
        initiator: Side {
            reactors: reactors.handles().to_vec(),
            supervisor: sup,
        },
        target: target_side,
        target_policy: a
            .target_rpc
            .clone()
            .map(|sock| Box::new(move |p| crate::ctl_cmd::set_target_policy(&sock, p)) as Box<dyn Fn(_) -> _ + Sync>),
        target_cpu,
        time,
        ramp,
        idle,
        rounds: a.rounds as u32,
        configs,
    };
    let pb = progress_bar(a.json, "lull bench");
    let rows = matrix::run(&m, &stop, |c, w, i, n| {
        pb.set_position((i * 1000 / n.max(1)) as u64);
        pb.set_message(format!("{c}: {w}"));
    });
    pb.finish_and_clear();
    ctrlr.detach();
    let _ = reactors.shutdown();
    if let Some(t) = inproc {
        let _ = t.reactors.shutdown();
    }
    let rows = rows?;
    let dir = a.out.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("lull-bench-{secs}"))
    });
    let files = matrix::write_outputs(&dir, &rows)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
    } else {
        print!("{}", matrix::tables(&rows));
    }
    eprintln!(
        "lull bench: wrote {}",
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
