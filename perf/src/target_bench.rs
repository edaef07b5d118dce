//! `lull bench target`: lull's NVMe/TCP target in each reactor mode against
//! a load generator on another core, over loopback, in one process.
//!
//! 4 KiB random read at QD 1 (latency) and QD 32 (IOPS), 4 KiB random
//! write at QD 32, 128 KiB sequential read at QD 16 (bandwidth), each in
//! every mode with the target reactor's CPU; then idle with 4 connections
//! open, target CPU and wakeups. One target serves every mode: its reactor
//! is switched at run time between slices, in rounds (A B C A B C).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_engine::bdev::{Bdev, RamBdev};
use lull_engine::subsystem::Subsystem;
use lull_engine::target::Target;
use lull_proto::nvme::Sqe;
use lull_proto::pdu::Digests;
use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};
use serde::Serialize;

use crate::Latency;
use crate::affinity::PinGuard;
use lull_transport::host_sync::SyncQueue as Client;

const NQN: &str = "nqn.2024-01.io.lull:bench";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000bec4";
/// Blocks of the RAM bdev (256 MiB of 512-byte blocks).
const BLOCKS: u64 = 256 * 2048;

/// What to run.
#[derive(Clone, Debug)]
pub struct TargetBenchOptions {
    /// CPU of the target's reactor.
    pub target_core: usize,
    /// CPU of the load generator.
    pub client_core: usize,
    /// Pin (false on a 1-CPU machine).
    pub pinned: bool,
    /// Measuring time per workload and mode, split over `rounds`.
    pub time: Duration,
    /// Rounds alternating the modes (A B C A B C) within each workload.
    pub rounds: u32,
    /// Warm-up before each measurement.
    pub ramp: Duration,
    /// Idle window with connections open.
    pub idle: Duration,
    /// Modes to measure.
    pub modes: Vec<(Mode, u64)>,
}

impl TargetBenchOptions {
    /// Defaults: the first two usable CPUs, 3 s per workload, 5 s idle.
    ///
    /// # Errors
    /// When the usable CPUs cannot be read.
    pub fn for_this_machine() -> Result<Self, String> {
        let usable = CoreList::usable().map_err(|e| e.to_string())?;
        let c = usable.cores();
        let (a, b, pinned) = if c.len() >= 2 {
            (c[0], c[1], true)
        } else {
            (c[0], c[0], false)
        };
        Ok(TargetBenchOptions {
            target_core: a,
            client_core: b,
            pinned,
            time: Duration::from_secs(3),
            rounds: 3,
            ramp: Duration::from_millis(500),
            idle: Duration::from_secs(5),
            modes: vec![(Mode::Poll, 0), (Mode::Interrupt, 0), (Mode::Hybrid, 200)],
        })
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct TargetBenchRow {
    /// `poll`, `interrupt`, `hybrid-200us`.
    pub config: String,
    /// `randread-4k-qd1`, ..., or `idle-4conn`.
    pub workload: String,
    /// I/O per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Mean latency, us.
    pub lat_mean_us: Option<f64>,
    /// Median latency, us.
    pub lat_p50_us: Option<f64>,
    /// 99th percentile, us.
    pub lat_p99_us: Option<f64>,
    /// Target reactor CPU, % of one core.
    pub target_cpu_pct: f64,
    /// Load generator thread CPU, % of one core.
    pub client_cpu_pct: f64,
    /// Target reactor wakeups per second.
    pub target_wakeups_s: f64,
}

struct Workload {
    name: &'static str,
    write: bool,
    random: bool,
    blocks: u32,
    qd: usize,
}

const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "randread-4k-qd1",
        write: false,
        random: true,
        blocks: 8,
        qd: 1,
    },
    Workload {
        name: "randread-4k-qd32",
        write: false,
        random: true,
        blocks: 8,
        qd: 32,
    },
    Workload {
        name: "randwrite-4k-qd32",
        write: true,
        random: true,
        blocks: 8,
        qd: 32,
    },
    Workload {
        name: "read-128k-qd16",
        write: false,
        random: false,
        blocks: 256,
        qd: 16,
    },
];

fn es(e: lull_transport::host_sync::SyncError) -> String {
    e.to_string()
}

fn thread_cpu_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn io_sqe(write: bool, slba: u64, blocks: u32) -> Sqe {
    let mut s = Sqe([0; 64]);
    s.0[0] = if write { 0x01 } else { 0x02 };
    s.0[4..8].copy_from_slice(&1u32.to_le_bytes());
    s.set_cdw(10, slba as u32);
    s.set_cdw(11, (slba >> 32) as u32);
    s.set_cdw(12, blocks - 1);
    s
}

/// Runs `w` on `io` for `time` after `ramp`; returns (ops, latency, client CPU ns, wall).
fn run_workload(
    io: &mut Client,
    w: &Workload,
    ramp: Duration,
    time: Duration,
) -> Result<(u64, Latency, u64, Duration), String> {
    let data = vec![0x5Au8; w.blocks as usize * 512];
    let span = BLOCKS / u64::from(w.blocks);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut seq = 0u64;
    let mut next_lba = |rng: &mut u64| {
        if w.random {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            (*rng % span) * u64::from(w.blocks)
        } else {
            seq = (seq + 1) % span;
            seq * u64::from(w.blocks)
        }
    };
    let mut started = std::collections::HashMap::new();
    let mut submit = |io: &mut Client, rng: &mut u64, started: &mut std::collections::HashMap<u16, Instant>| {
        let cid = io.cid();
        let mut sqe = io_sqe(w.write, next_lba(rng), w.blocks);
        sqe.set_cid(cid);
        started.insert(cid, Instant::now());
        if w.write {
            io.submit(sqe, &data, 0)
        } else {
            io.submit(sqe, &[], w.blocks * 512)
        }
    };
    for _ in 0..w.qd {
        submit(io, &mut rng, &mut started).map_err(es)?;
    }
    let t0 = Instant::now();
    let mut lat = Latency::new();
    let mut ops = 0u64;
    let mut measuring = false;
    let mut m0 = (t0, 0u64);
    loop {
        let mut stop = false;
        for c in io.wait().map_err(es)? {
            if !c.cqe.status.is_success() {
                return Err(format!("{}: I/O failed: {}", w.name, c.cqe.status));
            }
            let now = Instant::now();
            if let Some(s) = started.remove(&c.cqe.cid)
                && measuring
            {
                lat.record_ns(now.duration_since(s).as_nanos() as u64);
                ops += 1;
            }
            if !measuring && now.duration_since(t0) >= ramp {
                measuring = true;
                m0 = (now, thread_cpu_ns());
            }
            if measuring && now.duration_since(m0.0) >= time {
                stop = true;
            } else {
                submit(io, &mut rng, &mut started).map_err(es)?;
            }
        }
        if stop {
            let (wall, cpu) = (m0.0.elapsed(), thread_cpu_ns() - m0.1);
            // Drain what is still in flight, then stop.
            while !started.is_empty() {
                for c in io.wait().map_err(es)? {
                    started.remove(&c.cqe.cid);
                }
            }
            return Ok((ops, lat, cpu, wall));
        }
    }
}

/// Runs every mode and workload.
///
/// # Errors
/// When a target cannot start or a connection fails.
pub fn run(o: &TargetBenchOptions, mut progress: impl FnMut(&str)) -> Result<Vec<TargetBenchRow>, String> {
    let name = |mode: Mode, idle_poll: u64| {
        if mode == Mode::Hybrid {
            format!("hybrid-{idle_poll}us")
        } else {
            mode.to_string()
        }
    };
    // One target, one set of connections: the reactor's mode is switched at
    // run time between slices, so the modes alternate (A B C A B C) and share
    // the machine's drift.
    let cores = CoreList::try_from(vec![if o.pinned { o.target_core } else { 0 }]).map_err(|e| e.to_string())?;
    let mut rc = ReactorConfig::new(cores);
    rc.pin = o.pinned;
    let reactors = Reactors::start(rc).map_err(|e| e.to_string())?;
    let target = Target::new(TargetQueueConfig::default());
    let s = Subsystem::new(NQN, "LULLBENCH0001", "lull bench").map_err(|e| e.to_string())?;
    s.set_allow_any_host(true);
    let bdev: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", BLOCKS * 512, 512)?);
    s.add_namespace(1, bdev)?;
    target.add_subsystem(s)?;
    let addr: SocketAddr = target.listen(&reactors, "127.0.0.1:0".parse().map_err(|_| "addr")?)?;
    let h = reactors.handles()[0].clone();
    let set_mode = |mode: Mode, idle_poll: u64| -> Result<(), String> {
        h.set_idle_poll(Duration::from_micros(idle_poll))
            .map_err(|e| e.to_string())?;
        h.set_mode(mode);
        let until = Instant::now() + Duration::from_secs(5);
        while h.mode() != mode {
            if Instant::now() > until {
                return Err(format!("the reactor did not switch to {mode}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    let _pin = PinGuard::pin(o.pinned.then_some(o.client_core));
    // The admin queue's KATO is 30 s: Keep Alive goes out before every slice.
    let (mut admin, cntlid) = Client::admin(addr, NQN, HOSTNQN, Digests::default(), 30_000).map_err(es)?;
    let mut io = Client::io(addr, NQN, HOSTNQN, cntlid, Digests::default(), 8192).map_err(es)?;
    // Fill the namespace once so reads return written data.
    for lba in (0..BLOCKS).step_by(256) {
        io.call("fill write", io_sqe(true, lba, 256), &vec![0xA5; 256 * 512], 0)
            .map_err(es)?;
    }
    let rounds = o.rounds.max(1);
    let slice = o.time / rounds;
    let mut rows = Vec::new();
    for w in &WORKLOADS {
        // Per mode: ops, latency, client CPU ns, wall, target CPU ns, target wakeups, stats span ns.
        let mut acc: Vec<(u64, Latency, u64, Duration, u64, u64, u64)> = o
            .modes
            .iter()
            .map(|_| (0, Latency::new(), 0, Duration::ZERO, 0, 0, 0))
            .collect();
        for round in 0..rounds {
            for (i, &(mode, idle_poll)) in o.modes.iter().enumerate() {
                progress(&format!(
                    "{}, round {}/{rounds}: {}",
                    w.name,
                    round + 1,
                    name(mode, idle_poll)
                ));
                set_mode(mode, idle_poll)?;
                admin.keep_alive().map_err(es)?;
                let s0 = h.stats();
                let (ops, lat, cpu, wall) = run_workload(&mut io, w, o.ramp / rounds, slice)?;
                let s1 = h.stats();
                let d = s1.delta(&s0);
                let a = &mut acc[i];
                a.0 += ops;
                a.1.merge(&lat);
                a.2 += cpu;
                a.3 += wall;
                a.4 += d.thread_cpu_ns;
                a.5 += d.wakeups;
                a.6 += s1.wall_ns_since(&s0);
            }
        }
        for (&(mode, idle_poll), a) in o.modes.iter().zip(acc) {
            let secs = a.3.as_secs_f64().max(1e-9);
            let span = (a.6 as f64).max(1.0);
            rows.push(TargetBenchRow {
                config: name(mode, idle_poll),
                workload: w.name.to_string(),
                iops: a.0 as f64 / secs,
                mib_s: a.0 as f64 * f64::from(w.blocks) * 512.0 / secs / (1 << 20) as f64,
                lat_mean_us: a.1.mean_us(),
                lat_p50_us: a.1.quantile_us(0.5),
                lat_p99_us: a.1.quantile_us(0.99),
                target_cpu_pct: a.4 as f64 / span * 100.0,
                client_cpu_pct: a.2 as f64 / a.3.as_nanos().max(1) as f64 * 100.0,
                target_wakeups_s: a.5 as f64 / (span / 1e9),
            });
        }
    }
    // Idle with 4 connections open: two controllers' admin and I/O queues,
    // keep-alive timers running, nothing sent.
    let (mut a2, c2) = Client::admin(addr, NQN, HOSTNQN, Digests::default(), 30_000).map_err(es)?;
    let _io2 = Client::io(addr, NQN, HOSTNQN, c2, Digests::default(), 8192).map_err(es)?;
    for &(mode, idle_poll) in &o.modes {
        progress(&format!("idle, 4 connections: {}", name(mode, idle_poll)));
        set_mode(mode, idle_poll)?;
        admin.keep_alive().map_err(es)?;
        a2.keep_alive().map_err(es)?;
        std::thread::sleep(Duration::from_millis(300));
        let s0 = h.stats();
        std::thread::sleep(o.idle);
        let s1 = h.stats();
        let d = s1.delta(&s0);
        let span = s1.wall_ns_since(&s0) as f64;
        rows.push(TargetBenchRow {
            config: name(mode, idle_poll),
            workload: "idle-4conn".into(),
            iops: 0.0,
            mib_s: 0.0,
            lat_mean_us: None,
            lat_p50_us: None,
            lat_p99_us: None,
            target_cpu_pct: d.thread_cpu_ns as f64 / span * 100.0,
            client_cpu_pct: 0.0,
            target_wakeups_s: d.wakeups as f64 / (span / 1e9),
        });
    }
    drop(io);
    reactors.shutdown().map_err(|e| e.to_string())?;
    Ok(rows)
}

/// The results as an aligned table.
pub fn table(rows: &[TargetBenchRow]) -> String {
    let mut out = format!(
        "{:<14} {:<18} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}\n",
        "config", "workload", "IOPS", "MiB/s", "mean us", "p50 us", "p99 us", "tgt cpu%", "cli cpu%", "wakeups/s"
    );
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}"));
    for r in rows {
        out.push_str(&format!(
            "{:<14} {:<18} {:>10.0} {:>9.1} {:>9} {:>9} {:>9} {:>9.2} {:>9.1} {:>10.0}\n",
            r.config,
            r.workload,
            r.iops,
            r.mib_s,
            f(r.lat_mean_us),
            f(r.lat_p50_us),
            f(r.lat_p99_us),
            r.target_cpu_pct,
            r.client_cpu_pct,
            r.target_wakeups_s
        ));
    }
    out
}
