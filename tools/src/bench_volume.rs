//! `lull bench volume`: the proposal's comparison on the object it was
//! measured on. A replicated volume (raid1 over one local and two remote
//! replicas, as a Longhorn V2 engine serves it) beside a plain RAM namespace
//! of the same daemon, for each configuration of the engine, with the CPU of
//! every process.
//!
//! Three `lull target` daemons run as children of this process: replicas R1
//! and R2 (interrupt mode) each export a RAM bdev; the engine E (the
//! configuration under test) has a local RAM replica, attaches the two
//! remote ones through its initiator, and exports a raid1 over the three as
//! `nqn.2024-01.io.lull:vol0` and a plain RAM bdev as
//! `nqn.2024-01.io.lull:plain`. The host is lull's initiator in this process
//! (as `lull perf` runs it: interrupt mode, I/O queue poll period 100 us).
//! Each load runs against the volume and then the plain namespace; each
//! process's CPU is read from `/proc/PID/task/*/schedstat` at the start and
//! the end of the measured window. Then an idle window: the host connected to
//! the volume at 1 I/O per second.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use lull_engine::initiator::{NvmeController, NvmeOptions, NvmeTrid};
use lull_perf::arrival::{Arrival, Rate};
use lull_perf::nvme_perf::{self, PerfReport, Rw, TargetCpu, Workload};
use lull_reactor::CoreList;
use lull_reactor::supervisor::Policy;
use serde::Serialize;
use serde_json::json;

use crate::child_daemons::{Daemon, ScratchDir};
use crate::perf_cmd::{ConnArgs, parse_bs, start_reactors};

/// The NQN prefix of the subsystems made: `:r1`, `:r2` on the replicas,
/// `:vol0` and `:plain` on the engine.
const NQN: &str = "nqn.2024-01.io.lull";
/// The host's I/O queue poll period, us: `lull perf`'s default.
const HOST_IOQ_POLL_PERIOD_US: u64 = 100;
/// The host's hybrid spin window, us: `lull perf`'s default (unused in
/// interrupt mode, given for completeness).
const HOST_IDLE_POLL_US: u64 = 200;
/// Blocks of 512 bytes in each RAM bdev: 256 MiB.
const RAM_BLOCKS: u64 = 524_288;
/// The largest I/O queue poll period the daemon takes, us.
const MAX_PERIOD_US: u64 = 10_000_000;
/// The idle row's offered load, I/Os per second.
const IDLE_IOPS: f64 = 1.0;

/// `lull bench volume` arguments.
#[derive(Args)]
pub struct VolumeArgs {
    /// The engine's configurations, MODE[:PERIOD_US] separated by spaces or
    /// commas: MODE its --mode-policy (poll, interrupt, hybrid, adaptive,
    /// budget), PERIOD_US its --nvme-ioq-poll-period-us (0 to 10000000; 0
    /// when left out: event-driven in interrupt mode).
    #[arg(long, default_value = "poll interrupt:1000 interrupt:100 interrupt:0 hybrid", value_parser = parse_configs)]
    configs: Configs,
    /// The loads, RW:BS:QD separated by spaces or commas: RW one of
    /// randread, randwrite, read, write, randrw (50 % reads); BS 512 bytes
    /// to 16 MiB (4k, 128k); QD 1 to 4096 commands in flight.
    #[arg(long, default_value = "randread:4k:32 randwrite:4k:32 read:128k:16 randread:4k:1", value_parser = parse_loads)]
    loads: Loads,
    /// Measured time per load and namespace, s (1 to 3600).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    time: u64,
    /// Ramp before each measured window, ms (0 to 60000).
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true, value_parser = crate::ranged(0, 60_000))]
    ramp_ms: u64,
    /// Idle window per configuration, s (1 to 3600): the host connected to
    /// the volume at 1 I/O per second.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = crate::ranged(1, 3600))]
    idle_secs: u64,
    /// The engine daemon's CPU, a usable CPU of this machine [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = crate::ranged(0, 4095))]
    engine_core: Option<u64>,
    /// The replica daemons' CPU (both run on it), a usable CPU of this
    /// machine [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = crate::ranged(0, 4095))]
    replica_core: Option<u64>,
    /// The host's CPU (the initiator in this process), a usable CPU of this
    /// machine [default: 1].
    #[arg(long, allow_negative_numbers = true, value_parser = crate::ranged(0, 4095))]
    host_core: Option<u64>,
    /// TCP port of the engine on 127.0.0.1 (1 to 65533); the replicas take
    /// the next two.
    #[arg(long, default_value_t = 4650, allow_negative_numbers = true, value_parser = crate::ranged(1, 65_533))]
    port_base: u64,
    /// Print the rows as a JSON array instead of the tables.
    #[arg(long)]
    json: bool,
    /// Also write the rows as a JSON array to DIR/volume.json (DIR is
    /// created if missing), whether or not --json is given.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    conn: ConnArgs,
}

/// One configuration of the engine daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Its name as given (`interrupt:1000`), the rows' `config`.
    pub name: String,
    /// `--mode-policy`.
    pub policy: Policy,
    /// `--nvme-ioq-poll-period-us`, us.
    pub period_us: u64,
}

/// The `--configs` list.
#[derive(Clone, Debug)]
pub struct Configs(Vec<EngineConfig>);

/// One load: a closed-loop workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    /// Its name as given (`randread:4k:32`), the rows' `load`.
    pub name: String,
    /// The pattern.
    pub rw: Rw,
    /// I/O size, bytes.
    pub bs: u32,
    /// Commands in flight.
    pub qd: u32,
}

/// The `--loads` list.
#[derive(Clone, Debug)]
pub struct Loads(Vec<Load>);

/// The items of a list flag: separated by whitespace or commas.
fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
}

fn parse_configs(s: &str) -> Result<Configs, String> {
    let mut out: Vec<EngineConfig> = Vec::new();
    for item in items(s) {
        let c = parse_config(item)?;
        if out.iter().any(|o| o.name == c.name) {
            return Err(format!("`{item}` is named twice"));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err("name at least one configuration, e.g. `poll interrupt:100`".into());
    }
    Ok(Configs(out))
}

fn parse_config(item: &str) -> Result<EngineConfig, String> {
    let (mode, period) = match item.split_once(':') {
        Some((m, p)) => (m, Some(p)),
        None => (item, None),
    };
    let policy = mode.parse::<Policy>().map_err(|_| {
        format!("`{item}`: the mode must be one of poll, interrupt, hybrid, adaptive, budget (MODE[:PERIOD_US])")
    })?;
    let period_us = match period {
        None => 0,
        Some(p) => match p.parse::<u64>() {
            Ok(v) if v <= MAX_PERIOD_US => v,
            _ => {
                return Err(format!(
                    "`{item}`: the I/O queue poll period must be an integer from 0 to {MAX_PERIOD_US} us (MODE[:PERIOD_US])"
                ));
            }
        },
    };
    Ok(EngineConfig {
        name: item.to_string(),
        policy,
        period_us,
    })
}

fn parse_loads(s: &str) -> Result<Loads, String> {
    let mut out: Vec<Load> = Vec::new();
    for item in items(s) {
        let l = parse_load(item)?;
        if out.iter().any(|o| o.name == l.name) {
            return Err(format!("`{item}` is named twice"));
        }
        out.push(l);
    }
    if out.is_empty() {
        return Err("name at least one load, e.g. `randread:4k:32`".into());
    }
    Ok(Loads(out))
}

fn parse_load(item: &str) -> Result<Load, String> {
    let shape = "RW:BS:QD, e.g. randread:4k:32";
    let mut parts = item.split(':');
    let (Some(rw), Some(bs), Some(qd), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{item}`: a load is {shape}"));
    };
    let rw = rw
        .parse::<Rw>()
        .map_err(|_| format!("`{item}`: RW must be one of randread, randwrite, read, write, randrw ({shape})"))?;
    let bs = parse_bs(bs).map_err(|e| format!("`{item}`: {e}"))? as u32;
    let qd = match qd.parse::<u32>() {
        Ok(v) if (1..=4096).contains(&v) => v,
        _ => return Err(format!("`{item}`: QD must be an integer from 1 to 4096 ({shape})")),
    };
    Ok(Load {
        name: item.to_string(),
        rw,
        bs,
        qd,
    })
}

/// One row: a load on one namespace under one configuration (or the idle
/// window). CPU is in % of one core over the measured window; per-I/O CPU
/// is in us.
#[derive(Clone, Debug, Serialize)]
pub struct VolumeRow {
    /// The engine's configuration (`interrupt:100`).
    pub config: String,
    /// The load (`randread:4k:32`), or `idle` (the host at 1 I/O per second).
    pub load: String,
    /// `vol0` (the raid1 volume) or `plain` (the RAM namespace).
    pub ns: String,
    /// Completed I/Os per second.
    pub iops: f64,
    /// MiB/s.
    pub bw_mib_s: f64,
    /// Mean latency, us.
    pub mean_us: Option<f64>,
    /// 99th percentile latency, us.
    pub p99_us: Option<f64>,
    /// The engine daemon's CPU, %.
    pub engine_cpu_pct: f64,
    /// Replica R1's CPU, %.
    pub r1_cpu_pct: f64,
    /// Replica R2's CPU, %.
    pub r2_cpu_pct: f64,
    /// The three daemons' CPU together, % (`all%`).
    pub daemons_cpu_pct: f64,
    /// The daemons' CPU per I/O, us (`cpu_us/io`); none for the idle row.
    pub daemons_us_per_io: Option<f64>,
    /// The host process's CPU (every thread of this process), %.
    pub host_cpu_pct: f64,
    /// The host's initiator reactors' CPU alone, % (`lull perf`'s
    /// `initiator_cpu_pct`).
    pub host_reactor_cpu_pct: f64,
    /// Every process's CPU per I/O, daemons and host, us (`+host_us/io`).
    pub all_us_per_io: Option<f64>,
    /// On a `vol0` row: its IOPS over the plain namespace's (same
    /// configuration and load).
    pub iops_vs_plain: Option<f64>,
    /// On a `vol0` row: its daemons' CPU per I/O over the plain namespace's.
    pub daemons_us_per_io_vs_plain: Option<f64>,
    /// On a `vol0` row: every process's CPU per I/O over the plain namespace's.
    pub all_us_per_io_vs_plain: Option<f64>,
    /// I/O errors.
    pub errors: u64,
    /// The measured window, s.
    pub secs: f64,
}

/// The processes whose CPU is measured, in the rows' order.
const PROCESSES: [&str; 4] = ["E", "R1", "R2", "host"];

/// Each process's CPU so far at one instant.
#[derive(Clone, Debug)]
struct CpuMark {
    at: Instant,
    ns: [Option<u64>; 4],
}

impl CpuMark {
    fn take(pids: &[u32; 4]) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            ns: pids.map(nvme_perf::proc_cpu_ns),
        }
    }
}

/// Each process's CPU between two marks, % of one core.
fn cpu_between(a: &CpuMark, b: &CpuMark, pids: &[u32; 4]) -> Result<[f64; 4], String> {
    let wall = b.at.saturating_duration_since(a.at).as_nanos().max(1) as f64;
    let mut out = [0.0; 4];
    for i in 0..4 {
        match (a.ns[i], b.ns[i]) {
            (Some(x), Some(y)) => out[i] = y.saturating_sub(x) as f64 / wall * 100.0,
            _ => {
                return Err(format!(
                    "process {} (pid {}) exited during the measured window",
                    PROCESSES[i], pids[i]
                ));
            }
        }
    }
    Ok(out)
}

/// CPU per I/O, us, from CPU in % of one core and IOPS.
fn us_per_io(cpu_pct: f64, iops: f64) -> Option<f64> {
    (iops > 0.0).then(|| cpu_pct * 1e4 / iops)
}

fn make_row(config: &str, load: &str, ns: &str, r: &PerfReport, cpu: [f64; 4], per_io: bool) -> VolumeRow {
    let [e, r1, r2, host] = cpu;
    let daemons = e + r1 + r2;
    VolumeRow {
        config: config.to_string(),
        load: load.to_string(),
        ns: ns.to_string(),
        iops: r.iops,
        bw_mib_s: r.bw_mib_s,
        mean_us: r.lat_mean_us,
        p99_us: r.lat_p99_us,
        engine_cpu_pct: e,
        r1_cpu_pct: r1,
        r2_cpu_pct: r2,
        daemons_cpu_pct: daemons,
        daemons_us_per_io: per_io.then(|| us_per_io(daemons, r.iops)).flatten(),
        host_cpu_pct: host,
        host_reactor_cpu_pct: r.initiator_cpu_pct,
        all_us_per_io: per_io.then(|| us_per_io(daemons + host, r.iops)).flatten(),
        iops_vs_plain: None,
        daemons_us_per_io_vs_plain: None,
        all_us_per_io_vs_plain: None,
        errors: r.errors,
        secs: r.secs,
    }
}

/// Fills the `*_vs_plain` ratios of every `vol0` row that has a `plain`
/// row of the same configuration and load.
fn fill_ratios(rows: &mut [VolumeRow]) {
    let plain: Vec<VolumeRow> = rows.iter().filter(|r| r.ns == "plain").cloned().collect();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    for r in rows.iter_mut().filter(|r| r.ns == "vol0") {
        let Some(p) = plain.iter().find(|p| p.config == r.config && p.load == r.load) else {
            continue;
        };
        r.iops_vs_plain = ratio(Some(r.iops), Some(p.iops));
        r.daemons_us_per_io_vs_plain = ratio(r.daemons_us_per_io, p.daemons_us_per_io);
        r.all_us_per_io_vs_plain = ratio(r.all_us_per_io, p.all_us_per_io);
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "-".into(), |x| format!("{x:.decimals$}"))
}

/// The rows table's header (the columns of perf/scripts/volume-bench.sh).
pub fn header() -> String {
    format!(
        "{:<14} {:<16} {:<6} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7} {:>11}\n",
        "config",
        "load",
        "ns",
        "iops",
        "mean_us",
        "p99_us",
        "E%",
        "R1%",
        "R2%",
        "all%",
        "cpu_us/io",
        "host%",
        "+host_us/io"
    )
}

/// One row of the rows table.
pub fn row_line(r: &VolumeRow) -> String {
    let load = if r.load == "idle" {
        "idle(1 IOPS)"
    } else {
        r.load.as_str()
    };
    format!(
        "{:<14} {:<16} {:<6} {:>9.0} {:>8} {:>8} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>9} {:>7.2} {:>11}\n",
        r.config,
        load,
        r.ns,
        r.iops,
        opt(r.mean_us, 1),
        opt(r.p99_us, 1),
        r.engine_cpu_pct,
        r.r1_cpu_pct,
        r.r2_cpu_pct,
        r.daemons_cpu_pct,
        opt(r.daemons_us_per_io, 2),
        r.host_cpu_pct,
        opt(r.all_us_per_io, 2)
    )
}

/// The ratios table: per configuration and load, the volume's IOPS and CPU
/// per I/O (the daemons', and every process's) over the plain namespace's.
pub fn ratio_table(rows: &[VolumeRow]) -> String {
    let mut s = format!(
        "volume / plain: IOPS, and CPU per I/O of the daemons (cpu_us/io) and of every process (+host_us/io)\n{:<14} {:<16} {:>7} {:>10} {:>12}\n",
        "config", "load", "iops", "cpu_us/io", "+host_us/io"
    );
    for r in rows.iter().filter(|r| r.ns == "vol0" && r.iops_vs_plain.is_some()) {
        s += &format!(
            "{:<14} {:<16} {:>7} {:>10} {:>12}\n",
            r.config,
            r.load,
            opt(r.iops_vs_plain, 2),
            opt(r.daemons_us_per_io_vs_plain, 2),
            opt(r.all_us_per_io_vs_plain, 2)
        );
    }
    s
}

/// The CPUs of the engine, the replicas and the host, checked against the
/// usable CPUs. A default that is not usable (a machine or cgroup without
/// CPU 0 or 1) falls back to the first usable CPU; a CPU given that is not
/// usable is refused.
struct Cpus {
    engine: usize,
    replica: usize,
    host: usize,
}

impl Cpus {
    fn pick(a: &VolumeArgs) -> Result<Cpus, String> {
        let usable = CoreList::usable().map_err(|e| e.to_string())?;
        let u = usable.cores();
        let first = *u.first().ok_or("no usable CPU")?;
        let check = |flag: &str, given: Option<u64>, default: usize| -> Result<usize, String> {
            match given {
                Some(v) if u.contains(&(v as usize)) => Ok(v as usize),
                Some(v) => Err(format!(
                    "--{flag} {v}: not a usable CPU of this machine; usable CPUs are {usable}"
                )),
                None if u.contains(&default) => Ok(default),
                None => {
                    eprintln!(
                        "lull bench volume: CPU {default} (the default --{flag}) is not usable here; using CPU {first}"
                    );
                    Ok(first)
                }
            }
        };
        Ok(Cpus {
            engine: check("engine-core", a.engine_core, 0)?,
            replica: check("replica-core", a.replica_core, 1)?,
            host: check("host-core", a.host_core, 1)?,
        })
    }
}

/// The three daemons of one configuration, ready: E first, so that it is
/// stopped first (its initiator would otherwise see its replicas vanish).
struct Fleet {
    daemons: [Daemon; 3],
}

impl Fleet {
    /// Starts R1, R2 and E (in `cfg`) at once, waits for the three, and
    /// builds E's volume and plain namespace over JSON-RPC.
    fn start(cfg: &EngineConfig, cpus: &Cpus, port_base: u16, dir: &Path) -> Result<Fleet, String> {
        let replica = |i: u16| -> Result<Daemon, String> {
            Daemon::spawn(
                &format!("R{i}"),
                dir,
                &[
                    "--cores".into(),
                    cpus.replica.to_string(),
                    "--mode-policy".into(),
                    "interrupt".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", port_base + i),
                    "--ram-bdev".into(),
                    format!("Rep{i}:256MiB"),
                    "--subnqn".into(),
                    format!("{NQN}:r{i}"),
                    "--allow-any-host".into(),
                ],
            )
        };
        let r1 = replica(1)?;
        let r2 = replica(2)?;
        // E's --listen is target-wide: every subsystem made below is
        // reachable on it.
        let e = Daemon::spawn(
            "E",
            dir,
            &[
                "--cores".into(),
                cpus.engine.to_string(),
                "--mode-policy".into(),
                cfg.policy.as_str().into(),
                "--listen".into(),
                format!("127.0.0.1:{port_base}"),
                "--nvme-ioq-poll-period-us".into(),
                cfg.period_us.to_string(),
            ],
        )?;
        let mut fleet = Fleet { daemons: [e, r1, r2] };
        for d in &mut fleet.daemons {
            d.wait_ready()?;
        }
        fleet
            .build(port_base)
            .map_err(|err| format!("{err}\n(daemon E's log ends:\n{})", fleet.daemons[0].log_tail(8)))?;
        Ok(fleet)
    }

    /// E's RAM bdevs, the plain namespace, the replicas attached, the raid1
    /// over the three and its subsystem (SPDK's RPC names and parameters).
    fn build(&self, port_base: u16) -> Result<(), String> {
        let e = &self.daemons[0];
        for b in ["Local", "Plain"] {
            e.rpc(
                "bdev_malloc_create",
                json!({"name": b, "num_blocks": RAM_BLOCKS, "block_size": 512}),
            )?;
        }
        export(e, "plain", "Plain")?;
        for i in 1..=2u16 {
            e.rpc(
                "bdev_nvme_attach_controller",
                json!({
                    "name": format!("R{i}"),
                    "trtype": "tcp",
                    "adrfam": "ipv4",
                    "traddr": "127.0.0.1",
                    "trsvcid": (port_base + i).to_string(),
                    "subnqn": format!("{NQN}:r{i}"),
                }),
            )?;
        }
        e.rpc(
            "bdev_raid_create",
            json!({"name": "Vol0", "raid_level": "raid1", "base_bdevs": ["Local", "R1n1", "R2n1"]}),
        )?;
        export(e, "vol0", "Vol0")
    }

    fn pids(&self) -> [u32; 4] {
        [
            self.daemons[0].pid(),
            self.daemons[1].pid(),
            self.daemons[2].pid(),
            std::process::id(),
        ]
    }

    /// An error for a failed run, naming any daemon that has exited (and
    /// how its log ends).
    fn explain(&mut self, err: String) -> String {
        let mut s = err;
        for d in &mut self.daemons {
            if !d.running() {
                s += &format!("\n(daemon {} exited; its log ends:\n{})", d.name(), d.log_tail(8));
            }
        }
        s
    }
}

/// A subsystem `NQN:suffix` open to any host with `bdev` as its namespace.
fn export(e: &Daemon, suffix: &str, bdev: &str) -> Result<(), String> {
    let nqn = format!("{NQN}:{suffix}");
    e.rpc("nvmf_create_subsystem", json!({"nqn": nqn, "allow_any_host": true}))?;
    e.rpc(
        "nvmf_subsystem_add_ns",
        json!({"nqn": nqn, "namespace": {"bdev_name": bdev}}),
    )?;
    Ok(())
}

/// The host: lull's initiator reactors in this process.
struct Host {
    reactors: lull_reactor::Reactors,
    opts: NvmeOptions,
    hostnqn: String,
    addr: SocketAddr,
}

impl Host {
    /// Connects to `E`'s subsystem `NQN:ns`, runs `w` and reads every
    /// process's CPU at the start and the end of the measured window.
    fn measure(
        &self,
        ns: &str,
        w: &Workload,
        pids: [u32; 4],
        stop: &Arc<AtomicBool>,
    ) -> Result<(PerfReport, [f64; 4]), String> {
        let subnqn = format!("{NQN}:{ns}");
        let trid = NvmeTrid::new(self.addr, &subnqn, &self.hostnqn);
        let ctrlr = NvmeController::attach("vbench0", trid, self.opts.clone(), self.reactors.handles(), 1)
            .map_err(|e| format!("connecting to {subnqn}: {e}"))?;
        // nvme_perf takes the target's CPU when the measured window opens
        // and when it closes: the sampler notes every process's then.
        let marks: Arc<Mutex<Vec<CpuMark>>> = Arc::default();
        let sampler = {
            let marks = marks.clone();
            TargetCpu::Sampler(Arc::new(move || {
                let m = CpuMark::take(&pids);
                let daemons = m.ns[..3].iter().copied().sum::<Option<u64>>();
                if let Ok(mut v) = marks.lock() {
                    v.push(m);
                }
                daemons.map(|d| (d, 0))
            }))
        };
        let report = nvme_perf::run(&ctrlr, w, stop, &sampler, |_, _, _| {});
        ctrlr.detach();
        let report = report?;
        let marks = marks
            .lock()
            .map_err(|_| "the CPU marks' lock was poisoned".to_string())?;
        let [first, .., last] = marks.as_slice() else {
            return Err("the processes' CPU was not read at both ends of the measured window".into());
        };
        Ok((report, cpu_between(first, last, &pids)?))
    }
}

/// The second SIGINT/SIGTERM exits at once (status 130); the first sets
/// the returned flag, which ends the run after the current load (its rows
/// are printed and the daemons stopped). Exiting at once still stops the
/// daemons: they get SIGTERM when this process dies.
fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    Ok(stop)
}

/// The rows table on stdout, a line at a time as rows are measured. A
/// reader that has gone (`| head`) stops the run instead of ending the
/// process on the spot (as `print!` would), so that the daemons are stopped
/// and the scratch directory removed before it ends with status 141.
struct Lines<'a> {
    on: bool,
    stop: &'a AtomicBool,
    closed: AtomicBool,
}

impl Lines<'_> {
    fn put(&self, text: &str) {
        use std::io::Write;
        if !self.on || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed.store(true, Ordering::Relaxed);
                self.stop.store(true, Ordering::Relaxed);
            }
            Err(e) => eprintln!("lull: cannot write to standard output: {e}"),
        }
    }
}

/// What the sweep leaves: the rows measured, and the error that ended it early.
struct Sweep {
    rows: Vec<VolumeRow>,
    error: Option<String>,
}

/// Runs `lull bench volume`.
///
/// # Errors
/// A flag out of range, a daemon that does not start or build, a connection
/// or run that fails, or I/O errors in a row.
pub fn run(a: VolumeArgs) -> Result<(), String> {
    let stop = stop_flag()?;
    let cpus = Cpus::pick(&a)?;
    let opts = a.conn.options(HOST_IOQ_POLL_PERIOD_US, 0)?;
    if let Some(dir) = &a.out {
        // Made now: a directory that cannot be is refused before the run.
        std::fs::create_dir_all(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
    }
    let port_base = a.port_base as u16;
    let (configs, loads) = (&a.configs.0, &a.loads.0);
    let (time, ramp, idle) = (
        Duration::from_secs(a.time),
        Duration::from_millis(a.ramp_ms),
        Duration::from_secs(a.idle_secs),
    );
    let per_config = 2 * loads.len() as u64 * (a.time * 1000 + a.ramp_ms + 300) + a.idle_secs * 1000 + a.ramp_ms + 1500;
    eprintln!(
        "lull bench volume: engine E on CPU {}, replicas R1 and R2 on CPU {}, host on CPU {}, ports {}-{}; {} configuration(s) x {} load(s) x 2 namespaces x {} s + {} s idle: about {} s",
        cpus.engine,
        cpus.replica,
        cpus.host,
        port_base,
        port_base + 2,
        configs.len(),
        loads.len(),
        a.time,
        a.idle_secs,
        per_config * configs.len() as u64 / 1000
    );
    let scratch = ScratchDir::new("lull-volbench")?;
    let core = CoreList::try_from(vec![cpus.host]).map_err(|e| e.to_string())?;
    let (reactors, sup) = start_reactors(core, true, Policy::Interrupt, Duration::from_micros(HOST_IDLE_POLL_US))?;
    let host = Host {
        reactors,
        opts,
        hostnqn: a.conn.hostnqn.clone(),
        addr: SocketAddr::from(([127, 0, 0, 1], port_base)),
    };
    let lines = Lines {
        on: !a.json,
        stop: &stop,
        closed: AtomicBool::new(false),
    };
    lines.put(&header());
    let plan = Plan {
        configs,
        loads,
        time,
        ramp,
        idle,
        cpus: &cpus,
        port_base,
        dir: scratch.path(),
        lines: &lines,
    };
    let mut sweep = plan.run(&host, &stop);
    let _ = host.reactors.shutdown();
    drop(sup);
    drop(scratch);
    fill_ratios(&mut sweep.rows);
    let text = serde_json::to_string_pretty(&sweep.rows).map_err(|e| e.to_string())?;
    if let Some(dir) = &a.out {
        let file = dir.join("volume.json");
        std::fs::write(&file, text.clone() + "\n").map_err(|e| format!("--out: writing {}: {e}", file.display()))?;
        eprintln!("lull bench volume: wrote {}", file.display());
    }
    if lines.closed.load(Ordering::Relaxed) {
        std::process::exit(crate::stdout::BROKEN_PIPE_STATUS);
    }
    if a.json {
        println!("{text}");
    } else if sweep.rows.iter().any(|r| r.iops_vs_plain.is_some()) {
        print!("\n{}", ratio_table(&sweep.rows));
    }
    if let Some(e) = sweep.error {
        return Err(e);
    }
    if stop.load(Ordering::Relaxed) {
        eprintln!("lull bench volume: interrupted: the rows above are what was measured");
    }
    let errors: u64 = sweep.rows.iter().map(|r| r.errors).sum();
    if errors > 0 {
        return Err(format!("{errors} I/O error(s) during the run"));
    }
    Ok(())
}

/// What to run, from the flags.
struct Plan<'a> {
    configs: &'a [EngineConfig],
    loads: &'a [Load],
    time: Duration,
    ramp: Duration,
    idle: Duration,
    cpus: &'a Cpus,
    port_base: u16,
    dir: &'a Path,
    lines: &'a Lines<'a>,
}

impl Plan<'_> {
    /// Each configuration in turn: its daemons started, each load on the
    /// volume then the plain namespace, the idle window, the daemons stopped.
    fn run(&self, host: &Host, stop: &Arc<AtomicBool>) -> Sweep {
        let mut rows = Vec::new();
        for cfg in self.configs {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Err(e) = self.one_config(cfg, host, stop, &mut rows) {
                return Sweep {
                    rows,
                    error: Some(format!("configuration {}: {e}", cfg.name)),
                };
            }
        }
        Sweep { rows, error: None }
    }

    fn one_config(
        &self,
        cfg: &EngineConfig,
        host: &Host,
        stop: &Arc<AtomicBool>,
        rows: &mut Vec<VolumeRow>,
    ) -> Result<(), String> {
        let mut fleet = Fleet::start(cfg, self.cpus, self.port_base, self.dir)?;
        let pids = fleet.pids();
        eprintln!(
            "lull bench volume: {}: daemons E (pid {}), R1 (pid {}), R2 (pid {}) up in {}",
            cfg.name,
            pids[0],
            pids[1],
            pids[2],
            self.dir.display()
        );
        let mut push = |row: VolumeRow| {
            self.lines.put(&row_line(&row));
            rows.push(row);
        };
        for load in self.loads {
            for ns in ["vol0", "plain"] {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let w = Workload {
                    rw: load.rw,
                    rwmixread: 50,
                    bs: load.bs,
                    qd: load.qd,
                    time: self.time,
                    ramp: self.ramp,
                    nsid: 1,
                    size: None,
                    verify: false,
                    verify_state: None,
                    flush_every: 0,
                    rate: None,
                };
                let (report, cpu) = host
                    .measure(ns, &w, pids, stop)
                    .map_err(|e| fleet.explain(format!("{} on {ns}: {e}", load.name)))?;
                push(make_row(&cfg.name, &load.name, ns, &report, cpu, true));
            }
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let w = Workload {
            rw: Rw::RandRead,
            rwmixread: 50,
            bs: 4096,
            qd: 1,
            time: self.idle,
            ramp: self.ramp,
            nsid: 1,
            size: None,
            verify: false,
            verify_state: None,
            flush_every: 0,
            rate: Some(Rate {
                iops: IDLE_IOPS,
                arrival: Arrival::Steady,
            }),
        };
        let (report, cpu) = host
            .measure("vol0", &w, pids, stop)
            .map_err(|e| fleet.explain(format!("idle: {e}")))?;
        push(make_row(&cfg.name, "idle", "vol0", &report, cpu, false));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_with_spaces_or_commas_and_name_what_is_wrong() {
        let c = parse_configs("poll interrupt:1000,interrupt:0  hybrid").unwrap().0;
        let got: Vec<(&str, Policy, u64)> = c.iter().map(|c| (c.name.as_str(), c.policy, c.period_us)).collect();
        assert_eq!(
            got,
            [
                ("poll", Policy::Poll, 0),
                ("interrupt:1000", Policy::Interrupt, 1000),
                ("interrupt:0", Policy::Interrupt, 0),
                ("hybrid", Policy::Hybrid, 0)
            ]
        );
        let e = parse_configs("poll nap:100").unwrap_err();
        assert!(
            e.contains("`nap:100`") && e.contains("poll, interrupt, hybrid, adaptive, budget"),
            "{e}"
        );
        let e = parse_configs("interrupt:-1").unwrap_err();
        assert!(e.contains("0 to 10000000"), "{e}");
        let e = parse_configs("interrupt:10000001").unwrap_err();
        assert!(e.contains("0 to 10000000"), "{e}");
        assert!(parse_configs("poll poll").unwrap_err().contains("twice"));
        assert!(parse_configs(" , ").unwrap_err().contains("at least one"));
    }

    #[test]
    fn loads_parse_and_name_what_is_wrong() {
        let l = parse_loads("randread:4k:32, read:128k:16").unwrap().0;
        assert_eq!(
            l,
            [
                Load {
                    name: "randread:4k:32".into(),
                    rw: Rw::RandRead,
                    bs: 4096,
                    qd: 32
                },
                Load {
                    name: "read:128k:16".into(),
                    rw: Rw::Read,
                    bs: 131_072,
                    qd: 16
                }
            ]
        );
        for (bad, says) in [
            ("randread:4k", "RW:BS:QD"),
            ("randread:4k:1:2", "RW:BS:QD"),
            ("seqread:4k:1", "randread, randwrite, read, write, randrw"),
            ("read:1000:1", "multiple of 512"),
            ("read:4k:0", "1 to 4096"),
            ("read:4k:4097", "1 to 4096"),
        ] {
            let e = parse_loads(bad).unwrap_err();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    fn report(iops: f64) -> PerfReport {
        PerfReport {
            workload: "w".into(),
            iops,
            read_iops: iops,
            write_iops: 0.0,
            bw_kib_s: iops * 4.0,
            bw_mib_s: iops / 256.0,
            lat_mean_us: Some(100.0),
            lat_p50_us: Some(90.0),
            lat_p90_us: Some(150.0),
            lat_p99_us: Some(300.0),
            lat_p999_us: Some(500.0),
            lat_max_us: Some(900.0),
            errors: 0,
            first_error: None,
            verify: false,
            verified_reads: 0,
            verify_failures: 0,
            verify_state_blocks: None,
            flushes: 0,
            secs: 1.0,
            initiator_cpu_pct: 12.0,
            initiator_wakeups_s: 0.0,
            target_cpu_pct: None,
            target_wakeups_s: None,
            arrival: None,
            offered_iops: None,
            late_cmds: 0,
            capped_cmds: 0,
            unsent_cmds: 0,
            send_lag_p99_us: None,
            send_lag_max_us: None,
        }
    }

    #[test]
    fn rows_compute_cpu_per_io_and_the_ratios_to_plain() {
        // 40 % of a core over 100k IOPS is 4 us per I/O.
        let vol = make_row(
            "poll",
            "randread:4k:32",
            "vol0",
            &report(100_000.0),
            [20.0, 10.0, 10.0, 20.0],
            true,
        );
        assert_eq!(vol.daemons_cpu_pct, 40.0);
        assert!((vol.daemons_us_per_io.unwrap() - 4.0).abs() < 1e-9);
        assert!((vol.all_us_per_io.unwrap() - 6.0).abs() < 1e-9);
        let plain = make_row(
            "poll",
            "randread:4k:32",
            "plain",
            &report(200_000.0),
            [20.0, 0.0, 0.0, 20.0],
            true,
        );
        assert!((plain.daemons_us_per_io.unwrap() - 1.0).abs() < 1e-9);
        let idle = make_row("poll", "idle", "vol0", &report(1.0), [1.0, 0.5, 0.5, 0.2], false);
        let mut rows = vec![vol, plain, idle];
        fill_ratios(&mut rows);
        let v = &rows[0];
        assert!((v.iops_vs_plain.unwrap() - 0.5).abs() < 1e-9);
        assert!((v.daemons_us_per_io_vs_plain.unwrap() - 4.0).abs() < 1e-9);
        assert!((v.all_us_per_io_vs_plain.unwrap() - 3.0).abs() < 1e-9);
        assert!(rows[1].iops_vs_plain.is_none(), "plain rows carry no ratio");
        assert!(rows[2].iops_vs_plain.is_none() && rows[2].daemons_us_per_io.is_none());
        let t = ratio_table(&rows);
        assert!(
            t.contains("poll           randread:4k:32      0.50       4.00         3.00"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 3, "{t}");
        let line = row_line(&rows[2]);
        assert!(line.contains("idle(1 IOPS)"), "{line}");
        assert_eq!(
            header().split_whitespace().count(),
            row_line(&rows[0]).split_whitespace().count()
        );
    }

    #[test]
    fn cpu_between_marks_is_percent_of_one_core_and_names_a_gone_process() {
        let t0 = Instant::now();
        let a = CpuMark {
            at: t0,
            ns: [Some(0), Some(1_000), Some(0), Some(5)],
        };
        let b = CpuMark {
            at: t0 + Duration::from_secs(2),
            ns: [Some(1_000_000_000), Some(1_000), Some(2_000_000_000), Some(5)],
        };
        let pids = [10, 11, 12, 13];
        let pct = cpu_between(&a, &b, &pids).unwrap();
        assert_eq!(pct, [50.0, 0.0, 100.0, 0.0]);
        let gone = CpuMark {
            ns: [Some(1), None, Some(1), Some(1)],
            ..b
        };
        let e = cpu_between(&a, &gone, &pids).unwrap_err();
        assert!(e.contains("R1") && e.contains("pid 11"), "{e}");
    }
}
