//! fio/spdk_nvme_perf-style workloads over lull's initiator: one job per
//! I/O queue, each on the reactor that owns the queue, keeping `qd`
//! commands in flight; latency in an HDR histogram; CPU and wakeups of the
//! initiator's reactors (and of the target's, when it is in-process or a
//! process we can read).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lull_engine::initiator::{IoError, NvmeController};
use lull_proto::host_queue::Completion;
use lull_proto::nvme::cmd::{self, Flush};
use lull_proto::nvme::io_opc;
use lull_reactor::{Context, ReactorHandle, StatsSnapshot};
use serde::Serialize;

use crate::Latency;
use crate::arrival::{Rate, Schedule};
use crate::verify;

/// A command of a rate-limited run sent this long or more after its due
/// time counts as late (`late_cmds`): several wakeups' worth on a VM, so
/// ordinary timer jitter does not count.
pub const LATE_THRESHOLD: Duration = Duration::from_micros(100);

/// Longest wait between two open-loop ticks of a job: a stop (Ctrl-C) is
/// seen within it even in an hour-long OFF window; rates above 5 IOPS per
/// queue never wait this long, so it adds no wakeup to them.
const TICK_MAX: Duration = Duration::from_millis(200);

/// The lowest latency any NVMe/TCP command could plausibly have, even over
/// loopback: a rate above `queues x qd / this` cannot be sustained by the
/// QD cap (Little's law), see [`rate_warning`].
pub const MIN_PLAUSIBLE_LATENCY: Duration = Duration::from_micros(10);

/// The I/O pattern (fio's `--rw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rw {
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random mix, `rwmixread` % reads.
    RandRw,
}

impl std::str::FromStr for Rw {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "randread" => Rw::RandRead,
            "randwrite" => Rw::RandWrite,
            "read" => Rw::Read,
            "write" => Rw::Write,
            "randrw" => Rw::RandRw,
            _ => return Err(format!("{s:?} is not one of randread, randwrite, read, write, randrw")),
        })
    }
}

impl std::fmt::Display for Rw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rw::RandRead => "randread",
            Rw::RandWrite => "randwrite",
            Rw::Read => "read",
            Rw::Write => "write",
            Rw::RandRw => "randrw",
        })
    }
}

/// One workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Pattern.
    pub rw: Rw,
    /// Reads in a `randrw` mix, % (0 to 100).
    pub rwmixread: u8,
    /// I/O size, bytes (a multiple of the namespace's block size).
    pub bs: u32,
    /// Commands in flight per queue.
    pub qd: u32,
    /// Measured time.
    pub time: Duration,
    /// Time before measuring starts (I/O runs, nothing is counted).
    pub ramp: Duration,
    /// Namespace.
    pub nsid: u32,
    /// Bytes of the namespace used from LBA 0 (`None`: all of it).
    pub size: Option<u64>,
    /// Write LBA+generation into every block and check it on every read.
    pub verify: bool,
    /// With `verify`: a file of which blocks hold which generation, loaded
    /// at the start (when it exists) so reads of blocks an earlier run wrote
    /// are checked too, and saved at the end (fio's verify_state_load/save).
    pub verify_state: Option<std::path::PathBuf>,
    /// Send a Flush after every this many writes on each queue (0: never).
    pub flush_every: u32,
    /// Open loop at this rate (`None`: closed loop, `qd` always in flight).
    /// Each command then has a due time; its latency counts from that time
    /// even when the QD cap (`qd`) made it wait, so a stall shows.
    pub rate: Option<Rate>,
}

impl Workload {
    /// A short name: `randread 4k qd32`.
    pub fn label(&self) -> String {
        let bs = if self.bs.is_multiple_of(1024) {
            format!("{}k", self.bs / 1024)
        } else {
            format!("{}", self.bs)
        };
        let base = match self.rw {
            Rw::RandRw => format!("randrw{} {bs} qd{}", self.rwmixread, self.qd),
            rw => format!("{rw} {bs} qd{}", self.qd),
        };
        match &self.rate {
            Some(r) => format!("{base} @{:.0}/s {}", r.iops, r.arrival),
            None => base,
        }
    }
}

/// Whether a rate can possibly be sustained by `queues` x `qd` commands in
/// flight: a warning in words when the rate (its peak, for bursts) is above
/// `queues x qd / MIN_PLAUSIBLE_LATENCY` (Little's law).
pub fn rate_warning(rate: &Rate, queues: u32, qd: u32) -> Option<String> {
    let ceiling = f64::from(queues) * f64::from(qd) / MIN_PLAUSIBLE_LATENCY.as_secs_f64();
    (rate.peak_iops() > ceiling).then(|| {
        format!(
            "--rate-iops {:.0}{}: {queues} queue(s) x --qd {qd} cannot sustain more than {ceiling:.0} IOPS even at {} us per command; \
             commands will wait for the QD cap and their latency will show it (raise --qd or --queues)",
            rate.iops,
            if rate.peak_iops() > rate.iops {
                format!(" (peak {:.0} inside bursts)", rate.peak_iops())
            } else {
                String::new()
            },
            MIN_PLAUSIBLE_LATENCY.as_micros()
        )
    })
}

/// Whose CPU the target's column shows.
#[derive(Clone)]
pub enum TargetCpu {
    /// An in-process target's reactors.
    Reactors(Vec<ReactorHandle>),
    /// Another process on this machine (its threads' `/proc/PID/task/*/schedstat`).
    Pid(u32),
    /// A running lull daemon, sampled by the caller's function: its
    /// reactors' (thread CPU ns, wakeups), summed (`lull_get_status` over its
    /// socket); `None` when it cannot be read.
    Sampler(std::sync::Arc<dyn Fn() -> Option<(u64, u64)> + Send + Sync>),
    /// Not measured.
    None,
}

/// Results of one workload.
#[derive(Clone, Debug, Serialize)]
pub struct PerfReport {
    /// The workload's label.
    pub workload: String,
    /// Completed I/Os per second in the measured window.
    pub iops: f64,
    /// Read I/Os per second.
    pub read_iops: f64,
    /// Write I/Os per second.
    pub write_iops: f64,
    /// KiB/s.
    pub bw_kib_s: f64,
    /// MiB/s.
    pub bw_mib_s: f64,
    /// Mean latency, us.
    pub lat_mean_us: Option<f64>,
    /// Median, us.
    pub lat_p50_us: Option<f64>,
    /// 90th percentile, us.
    pub lat_p90_us: Option<f64>,
    /// 99th percentile, us.
    pub lat_p99_us: Option<f64>,
    /// 99.9th percentile, us.
    pub lat_p999_us: Option<f64>,
    /// Largest, us.
    pub lat_max_us: Option<f64>,
    /// I/Os that failed (any status or path error).
    pub errors: u64,
    /// The first error, in words.
    pub first_error: Option<String>,
    /// Whether `--verify` was on.
    pub verify: bool,
    /// Reads whose blocks were checked (reads of blocks not written in this run are not).
    pub verified_reads: u64,
    /// Verify mismatches (each also counted in `errors`).
    pub verify_failures: u64,
    /// Blocks of known contents in the verify state saved at the end (`None`: no state file).
    pub verify_state_blocks: Option<u64>,
    /// Flush commands completed in the measured window (`flush_every`).
    pub flushes: u64,
    /// Measured seconds.
    pub secs: f64,
    /// CPU of the initiator's reactors, % of one core (summed over reactors).
    pub initiator_cpu_pct: f64,
    /// Reactor wakeups per second on the initiator.
    pub initiator_wakeups_s: f64,
    /// CPU of the target, % of one core, when measured.
    pub target_cpu_pct: Option<f64>,
    /// Target reactor wakeups per second, when in-process.
    pub target_wakeups_s: Option<f64>,
    /// Rate-limited runs: the arrival process (`steady`, `poisson`, `bursty:ON/OFF`).
    pub arrival: Option<String>,
    /// Rate-limited runs: commands due per second in the measured window
    /// (compare with `iops`, the achieved rate).
    pub offered_iops: Option<f64>,
    /// Rate-limited runs: commands sent [`LATE_THRESHOLD`] or more after their due time.
    pub late_cmds: u64,
    /// Rate-limited runs: commands that found the QD cap full and waited for a slot.
    pub capped_cmds: u64,
    /// Rate-limited runs: commands due in the window but still waiting for
    /// a slot when it ended (never sent; their wait so far is in the latency).
    pub unsent_cmds: u64,
    /// Rate-limited runs: 99th percentile of (sent - due), us.
    pub send_lag_p99_us: Option<f64>,
    /// Rate-limited runs: largest (sent - due), us.
    pub send_lag_max_us: Option<f64>,
}

#[derive(Default)]
struct JobResult {
    reads: u64,
    writes: u64,
    bytes: u64,
    errors: u64,
    verify_failures: u64,
    verified_reads: u64,
    flushes: u64,
    first_error: Option<String>,
    lat: Latency,
    /// Rate-limited: commands due in the window, (sent - due) of each sent
    /// one, late ones, ones that waited for the cap, ones never sent.
    offered: u64,
    lag: Latency,
    late: u64,
    capped: u64,
    unsent: u64,
    /// The job's first block and its blocks' generations at the end (verify).
    first_block: u64,
    generations: Vec<u64>,
}

struct Job {
    ctrlr: NvmeController,
    queue: usize,
    w: Arc<Workload>,
    block_size: u32,
    blocks_per_io: u64,
    lo: u64,
    units: u64,
    rng: u64,
    cursor: u64,
    t_measure: Instant,
    t_end: Instant,
    stop: Arc<AtomicBool>,
    outstanding: u32,
    /// Generation of each block of the job's range (0: unknown), with verify.
    generations: Vec<u64>,
    busy: Vec<bool>,
    /// Writes issued since the last Flush (`flush_every`).
    writes_since_flush: u32,
    next_generation: u64,
    template: Vec<u8>,
    res: JobResult,
    progress: Arc<AtomicU64>,
    tx: Option<mpsc::Sender<JobResult>>,
    /// Open loop: the schedule and the commands due but not yet sent.
    open: Option<OpenLoop>,
}

/// A rate-limited job's state.
struct OpenLoop {
    schedule: Schedule,
    /// The schedule's time 0.
    start: Instant,
    /// Due time of the next command not yet in `backlog`.
    next: Instant,
    /// Due times of commands waiting for a slot under the QD cap, oldest first.
    backlog: VecDeque<Instant>,
}

type JobRc = Rc<RefCell<Job>>;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// What a command does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

/// What one command is.
struct Op {
    unit: u64,
    kind: Kind,
    generation: u64,
    t0: Instant,
}

impl Job {
    fn pick(&mut self) -> Option<(u64, bool)> {
        let write = match self.w.rw {
            Rw::RandRead | Rw::Read => false,
            Rw::RandWrite | Rw::Write => true,
            Rw::RandRw => xorshift(&mut self.rng) % 100 >= u64::from(self.w.rwmixread),
        };
        let start = match self.w.rw {
            Rw::Read | Rw::Write => {
                let u = self.cursor;
                self.cursor = (self.cursor + 1) % self.units;
                u
            }
            _ => xorshift(&mut self.rng) % self.units,
        };
        if !self.w.verify {
            return Some((start, write));
        }
        // Verify never has two commands on one unit: the last write is then
        // the one a read must find.
        (0..self.units)
            .map(|i| (start + i) % self.units)
            .find(|&u| !self.busy[u as usize])
            .map(|u| (u, write))
    }
}

/// Closed loop: sends the next command (a Flush when one is due) unless
/// the window is over.
fn issue(job: &JobRc, cx: &mut Context) {
    let flush = {
        let j = job.borrow();
        if j.stop.load(Ordering::Relaxed) || cx.now() >= j.t_end {
            return;
        }
        j.w.flush_every > 0 && j.writes_since_flush >= j.w.flush_every
    };
    if flush {
        send_flush(job, cx);
    } else {
        send_io(job, cx, None);
    }
}

/// Sends a Flush (NVM Command Set 1.0 section 3.2.1): what was written
/// before it is made durable; no data, no LBA range.
fn send_flush(job: &JobRc, cx: &mut Context) {
    let (ctrlr, queue, sqe, op) = {
        let mut j = job.borrow_mut();
        j.writes_since_flush = 0;
        j.outstanding += 1;
        let sqe = Flush { nsid: j.w.nsid }.encode();
        let op = Op {
            unit: 0,
            kind: Kind::Flush,
            generation: 0,
            t0: Instant::now(),
        };
        (j.ctrlr.clone(), j.queue, sqe, op)
    };
    let job2 = job.clone();
    ctrlr.submit(
        cx,
        queue,
        sqe,
        Vec::new(),
        0,
        Box::new(move |cx, r| on_done(&job2, cx, op, r)),
    );
}

/// Sends one read or write; its latency counts from `due` (open loop) or
/// from now. False when verify finds every unit of the job busy (nothing sent).
fn send_io(job: &JobRc, cx: &mut Context, due: Option<Instant>) -> bool {
    let (ctrlr, queue, sqe, data, read_len, op) = {
        let mut j = job.borrow_mut();
        let Some((unit, write)) = j.pick() else { return false };
        if write {
            j.writes_since_flush += 1;
        }
        let lba = (j.lo + unit) * j.blocks_per_io;
        let len = j.w.bs;
        let opc = if write { io_opc::WRITE } else { io_opc::READ };
        let sqe = cmd::Rw::new(j.w.nsid, lba, j.blocks_per_io as u32).encode(opc);
        let mut generation = 0;
        let data = if !write {
            Vec::new()
        } else if j.w.verify {
            generation = j.next_generation;
            j.next_generation += 1;
            let mut b = vec![0u8; len as usize];
            verify::fill(&mut b, j.block_size as usize, lba, generation);
            b
        } else {
            j.template.clone()
        };
        if j.w.verify {
            j.busy[unit as usize] = true;
        }
        j.outstanding += 1;
        let now = Instant::now();
        if let Some(due) = due
            && due >= j.t_measure
        {
            let lag = now.saturating_duration_since(due);
            j.res.lag.record_ns(lag.as_nanos() as u64);
            if lag >= LATE_THRESHOLD {
                j.res.late += 1;
            }
        }
        let op = Op {
            unit,
            kind: if write { Kind::Write } else { Kind::Read },
            generation,
            t0: due.unwrap_or(now),
        };
        (j.ctrlr.clone(), j.queue, sqe, data, if write { 0 } else { len }, op)
    };
    let job2 = job.clone();
    ctrlr.submit(
        cx,
        queue,
        sqe,
        data,
        read_len,
        Box::new(move |cx, r| on_done(&job2, cx, op, r)),
    );
    true
}

/// Open loop, on a reactor timer at each due time: moves every command now
/// due into the backlog, sends what the QD cap allows, and sets the timer
/// for the next due time (or the window's end). The reactor may sleep in
/// between: the timer is what wakes it.
fn tick(job: &JobRc, cx: &mut Context) {
    let now = Instant::now();
    {
        let mut j = job.borrow_mut();
        let j = &mut *j;
        let stopped = j.stop.load(Ordering::Relaxed);
        let (qd, t_measure, t_end, outstanding) = (j.w.qd, j.t_measure, j.t_end, j.outstanding);
        if let Some(o) = j.open.as_mut() {
            while !stopped && o.next <= now && o.next < t_end {
                if o.next >= t_measure {
                    j.res.offered += 1;
                    // No slot left for it once the ones ahead of it are sent.
                    if outstanding as usize + o.backlog.len() >= qd as usize {
                        j.res.capped += 1;
                    }
                }
                o.backlog.push_back(o.next);
                o.next = o.start + Duration::from_nanos(o.schedule.next_ns());
            }
        }
    }
    pump(job, cx);
    let at = {
        let j = job.borrow();
        let over = j.stop.load(Ordering::Relaxed) || Instant::now() >= j.t_end;
        // At most TICK_MAX apart even in long gaps (a slow rate, a burst's
        // OFF window), so that a stop is seen soon.
        match &j.open {
            Some(o) if !over => Some(o.next.min(j.t_end).min(Instant::now() + TICK_MAX)),
            _ => None,
        }
    };
    if let Some(at) = at {
        let job2 = job.clone();
        cx.timer_once(at.saturating_duration_since(Instant::now()), move |cx| tick(&job2, cx));
    }
    finish_if_done(job);
}

/// Open loop: sends due commands (oldest first) while the QD cap allows;
/// a due Flush takes a slot first, as in the closed loop.
fn pump(job: &JobRc, cx: &mut Context) {
    loop {
        let (due, flush) = {
            let mut j = job.borrow_mut();
            if j.stop.load(Ordering::Relaxed) || Instant::now() >= j.t_end || j.outstanding >= j.w.qd {
                return;
            }
            let flush = j.w.flush_every > 0 && j.writes_since_flush >= j.w.flush_every;
            let Some(due) = j.open.as_mut().and_then(|o| o.backlog.pop_front()) else {
                return;
            };
            (due, flush)
        };
        if flush {
            if let Some(o) = job.borrow_mut().open.as_mut() {
                o.backlog.push_front(due);
            }
            send_flush(job, cx);
            continue;
        }
        if !send_io(job, cx, Some(due)) {
            // Verify: every unit busy; the command waits for a completion.
            if let Some(o) = job.borrow_mut().open.as_mut() {
                o.backlog.push_front(due);
            }
            return;
        }
    }
}

fn on_done(job: &JobRc, cx: &mut Context, op: Op, r: Result<Completion, IoError>) {
    let now = Instant::now();
    let failed = {
        let mut j = job.borrow_mut();
        j.outstanding -= 1;
        let mut err: Option<String> = None;
        let verified = j.w.verify && op.kind != Kind::Flush;
        let bpi = j.blocks_per_io as usize;
        let blocks = op.unit as usize * bpi..(op.unit as usize + 1) * bpi;
        match &r {
            Ok(c) if op.kind == Kind::Read && c.data.len() != j.w.bs as usize => {
                // A read is good only with every byte: never check (or
                // count) a short one as a success.
                err = Some(format!("a read returned {} of its {} bytes", c.data.len(), j.w.bs));
                if verified {
                    j.busy[op.unit as usize] = false;
                }
            }
            Ok(c) if verified => {
                let lba = (j.lo + op.unit) * j.blocks_per_io;
                if op.kind == Kind::Write {
                    j.generations[blocks].fill(op.generation);
                } else if j.generations[blocks.clone()].iter().any(|&g| g != 0) {
                    j.res.verified_reads += 1;
                    let checked = verify::check_known(&c.data, j.block_size as usize, lba, &j.generations[blocks]);
                    if let Err(m) = checked {
                        j.res.verify_failures += 1;
                        err = Some(m.to_string());
                        // A mismatch ends the run, as fio's verify does.
                        j.stop.store(true, Ordering::Relaxed);
                    }
                }
                j.busy[op.unit as usize] = false;
            }
            Ok(_) => {}
            Err(e) => {
                err = Some(e.to_string());
                if verified {
                    if op.kind == Kind::Write {
                        // A failed write may have changed some blocks or
                        // none: what they hold is no longer known.
                        j.generations[blocks].fill(0);
                    }
                    j.busy[op.unit as usize] = false;
                }
            }
        }
        if op.t0 >= j.t_measure && now <= j.t_end {
            if let Some(e) = err.take() {
                j.res.errors += 1;
                if j.res.first_error.is_none() {
                    j.res.first_error = Some(e);
                }
            } else if op.kind == Kind::Flush {
                // Counted apart: a Flush moves no data and its latency is
                // not a read's or a write's.
                j.res.flushes += 1;
            } else {
                j.res.lat.record_ns(now.duration_since(op.t0).as_nanos() as u64);
                if op.kind == Kind::Write {
                    j.res.writes += 1;
                } else {
                    j.res.reads += 1;
                }
                j.res.bytes += u64::from(j.w.bs);
            }
        } else if let Some(e) = err {
            // Errors count wherever they happen: a run with one is not clean.
            j.res.errors += 1;
            if j.res.first_error.is_none() {
                j.res.first_error = Some(e);
            }
        } else if j.open.is_some() && op.t0 >= j.t_measure && op.kind != Kind::Flush {
            // Open loop: a command due in the window that completes after
            // it is not counted in IOPS, but its latency is the stall the
            // run must show.
            j.res.lat.record_ns(now.duration_since(op.t0).as_nanos() as u64);
        }
        j.progress.fetch_add(1, Ordering::Relaxed);
        // Nothing more can succeed on a lost or detached controller: end the run.
        if matches!(r, Err(IoError::ControllerLost(_) | IoError::Detached)) {
            j.stop.store(true, Ordering::Relaxed);
        }
        r.is_err()
    };
    if job.borrow().open.is_some() {
        // Open loop: the schedule, not completions, decides when commands
        // go; a free slot only lets a waiting one out. After a failure the
        // next tick does that (no busy loop on a failing controller).
        if !failed {
            pump(job, cx);
        }
    } else if failed {
        // Not at once: a controller that fails every command synchronously
        // would otherwise turn this into a busy loop. The job stays
        // unfinished until the timer has run.
        let job2 = job.clone();
        job.borrow_mut().outstanding += 1;
        cx.timer_once(Duration::from_millis(1), move |cx| {
            job2.borrow_mut().outstanding -= 1;
            issue(&job2, cx);
            finish_if_done(&job2);
        });
    } else {
        issue(job, cx);
    }
    finish_if_done(job);
}

/// Reports the job's results once nothing is outstanding and it will
/// issue nothing more (its window ended or the run was stopped); a job
/// whose commands all failed at once is still running: it retries.
fn finish_if_done(job: &JobRc) {
    let mut j = job.borrow_mut();
    let over = j.stop.load(Ordering::Relaxed) || Instant::now() >= j.t_end;
    if j.outstanding == 0
        && over
        && let Some(tx) = j.tx.take()
    {
        // Open loop: commands still waiting for a slot were due and never
        // sent; their wait so far is latency too (a lower bound).
        let end = Instant::now().min(j.t_end);
        let t_measure = j.t_measure;
        if let Some(o) = j.open.as_mut() {
            let waiting: Vec<Instant> = o.backlog.drain(..).filter(|&d| d >= t_measure).collect();
            for due in waiting {
                j.res.unsent += 1;
                j.res
                    .lat
                    .record_ns(end.saturating_duration_since(due).as_nanos() as u64);
            }
        }
        let mut res = std::mem::take(&mut j.res);
        res.first_block = j.lo * j.blocks_per_io;
        res.generations = std::mem::take(&mut j.generations);
        let _ = tx.send(res);
    }
}

/// CPU time of every thread of process `pid`, ns: the sum of
/// `/proc/PID/task/*/schedstat` (the scheduler's own ns count, so a 1 s slice
/// at a few % of a core reads true), or `/proc/PID/stat`'s utime + stime
/// (10 ms ticks) where schedstat is missing. `None` when the process is gone.
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    proc_schedstat_ns(pid).or_else(|| proc_stat_ns(pid))
}

fn proc_schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread that exited between the listing and the read took its time
        // with it; the rest still count.
        let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    (total > 0).then_some(total)
}

fn proc_stat_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: utime is field 14, stime 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    Some(ticks * 1_000_000_000 / hz.max(1))
}

struct CpuMark {
    at: Instant,
    init: Vec<StatsSnapshot>,
    target: Vec<StatsSnapshot>,
    pid_ns: Option<u64>,
    sampled: Option<(u64, u64)>,
}

fn mark(init: &[ReactorHandle], target: &TargetCpu) -> CpuMark {
    CpuMark {
        at: Instant::now(),
        init: init.iter().map(ReactorHandle::stats).collect(),
        target: match target {
            TargetCpu::Reactors(h) => h.iter().map(ReactorHandle::stats).collect(),
            _ => Vec::new(),
        },
        pid_ns: match target {
            TargetCpu::Pid(p) => proc_cpu_ns(*p),
            _ => None,
        },
        sampled: match target {
            TargetCpu::Sampler(f) => f(),
            _ => None,
        },
    }
}

/// CPU % and wakeups/s between two marks: (initiator cpu, initiator wakeups, target cpu, target wakeups).
fn cpu_between(a: &CpuMark, b: &CpuMark) -> (f64, f64, Option<f64>, Option<f64>) {
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    let sum = |x: &[StatsSnapshot], y: &[StatsSnapshot]| {
        x.iter().zip(y).fold((0u64, 0u64), |acc, (s0, s1)| {
            let d = s1.delta(s0);
            (acc.0 + d.thread_cpu_ns, acc.1 + d.wakeups)
        })
    };
    let (icpu, iwake) = sum(&a.init, &b.init);
    let (tcpu, twake) = sum(&a.target, &b.target);
    let (target_cpu, target_wake) = if !a.target.is_empty() {
        (Some(tcpu as f64 / wall * 100.0), Some(twake as f64 / wall * 1e9))
    } else if let (Some(p0), Some(p1)) = (a.pid_ns, b.pid_ns) {
        (Some(p1.saturating_sub(p0) as f64 / wall * 100.0), None)
    } else if let (Some((c0, w0)), Some((c1, w1))) = (a.sampled, b.sampled) {
        (
            Some(c1.saturating_sub(c0) as f64 / wall * 100.0),
            Some(w1.saturating_sub(w0) as f64 / wall * 1e9),
        )
    } else {
        (None, None)
    };
    (
        icpu as f64 / wall * 100.0,
        iwake as f64 / wall * 1e9,
        target_cpu,
        target_wake,
    )
}

/// Runs `w` on every I/O queue of `ctrlr`. `progress(elapsed, total, ios)`
/// is called about every 200 ms; setting `stop` ends the run early (what
/// was measured so far is reported).
///
/// # Errors
/// A workload that does not fit the namespace (size, block size, MDTS), or
/// a reactor that is gone.
pub fn run(
    ctrlr: &NvmeController,
    w: &Workload,
    stop: &Arc<AtomicBool>,
    target: &TargetCpu,
    mut progress: impl FnMut(Duration, Duration, u64),
) -> Result<PerfReport, String> {
    let info = ctrlr.info();
    let ns = info
        .namespaces
        .iter()
        .find(|n| n.nsid == w.nsid)
        .ok_or_else(|| {
            let have: Vec<String> = info.namespaces.iter().map(|n| n.nsid.to_string()).collect();
            format!("--nsid {}: the controller has namespaces [{}]", w.nsid, have.join(", "))
        })?
        .clone();
    if w.bs == 0 || !w.bs.is_multiple_of(ns.block_size) {
        return Err(format!(
            "--bs {}: must be a positive multiple of the namespace's {}-byte block size",
            w.bs, ns.block_size
        ));
    }
    if let Some(m) = info.max_transfer_bytes
        && w.bs > m
    {
        return Err(format!(
            "--bs {}: the controller's largest transfer (MDTS) is {m} bytes",
            w.bs
        ));
    }
    if w.qd == 0 {
        return Err("--qd: must be at least 1".into());
    }
    if let Some(r) = &w.rate
        && !(r.iops.is_finite() && r.iops > 0.0 && r.iops <= crate::arrival::MAX_RATE_IOPS as f64)
    {
        return Err(format!(
            "--rate-iops {}: must be from 1 to {}",
            r.iops,
            crate::arrival::MAX_RATE_IOPS
        ));
    }
    let blocks_per_io = u64::from(w.bs / ns.block_size);
    let blocks = match w.size {
        Some(bytes) => (bytes / u64::from(ns.block_size)).min(ns.num_blocks),
        None => ns.num_blocks,
    };
    let units = blocks / blocks_per_io;
    if w.verify_state.is_some() && !w.verify {
        return Err("--verify-state needs --verify".into());
    }
    // --verify keeps a generation (8 bytes) per block of the range, twice with
    // a state file: refuse what would not fit instead of aborting on it.
    let state_bytes = blocks
        .saturating_mul(8)
        .saturating_mul(if w.verify_state.is_some() { 2 } else { 1 });
    if w.verify
        && let Some(avail) = lull_engine::meminfo::mem_available()
        && state_bytes > avail / 2
    {
        return Err(format!(
            "--verify over {blocks} blocks needs {} MiB for its per-block state, more than half of the {} MiB \
             available: give --size a smaller range",
            state_bytes >> 20,
            avail >> 20
        ));
    }
    let mut state = match &w.verify_state {
        Some(path) => {
            let loaded = verify::VerifyState::load(path)?;
            if let Some(s) = &loaded {
                s.check_geometry(w.nsid, ns.block_size, ns.num_blocks, blocks)
                    .map_err(|e| format!("--verify-state {}: {e}", path.display()))?;
            }
            Some(loaded.unwrap_or_else(|| verify::VerifyState::new(w.nsid, ns.block_size, ns.num_blocks, blocks)))
        }
        None => None,
    };
    let mut jobs = Vec::new();
    for (r, h) in ctrlr.reactors().iter().enumerate() {
        for q in ctrlr.queues_on(r) {
            jobs.push((h.clone(), q));
        }
    }
    if jobs.is_empty() {
        return Err("the controller has no I/O queue".into());
    }
    let per_job = units / jobs.len() as u64;
    if per_job == 0 {
        return Err(format!(
            "the namespace's {units} I/O units of {} bytes cannot be shared by {} queues",
            w.bs,
            jobs.len()
        ));
    }
    let w = Arc::new(w.clone());
    let njobs = jobs.len();
    let start = Instant::now() + Duration::from_millis(20);
    let t_measure = start + w.ramp;
    let t_end = t_measure + w.time;
    let (tx, rx) = mpsc::channel();
    let progress_count = Arc::new(AtomicU64::new(0));
    // Above every generation of the loaded state, so no block written now
    // can pass for one written by an earlier run.
    let loaded_max = state
        .as_ref()
        .and_then(|s| s.generations.iter().max().copied())
        .unwrap_or(0);
    let base_generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() << 20)
        .unwrap_or(1 << 40)
        .max(loaded_max);
    for (i, (h, queue)) in jobs.iter().enumerate() {
        let (ctrlr, w, stop, tx, pc) = (
            ctrlr.clone(),
            w.clone(),
            stop.clone(),
            tx.clone(),
            progress_count.clone(),
        );
        let (queue, block_size) = (*queue, ns.block_size);
        let lo = i as u64 * per_job;
        let n = per_job as usize;
        let job_blocks = (lo * blocks_per_io) as usize..((lo + per_job) * blocks_per_io) as usize;
        let (generations, busy) = match (&state, w.verify) {
            (Some(s), _) => (s.generations[job_blocks].to_vec(), vec![false; n]),
            (None, true) => (vec![0u64; job_blocks.len()], vec![false; n]),
            (None, false) => (Vec::new(), Vec::new()),
        };
        h.try_send(move |cx| {
            let template = if w.rw == Rw::RandRead || w.rw == Rw::Read {
                Vec::new()
            } else {
                vec![0x5A; w.bs as usize]
            };
            let job = Rc::new(RefCell::new(Job {
                ctrlr,
                queue,
                blocks_per_io,
                block_size,
                lo,
                units: per_job,
                rng: 0x9E37_79B9_7F4A_7C15 ^ ((i as u64 + 1) << 32),
                cursor: 0,
                t_measure,
                t_end,
                stop,
                outstanding: 0,
                generations,
                busy,
                writes_since_flush: 0,
                next_generation: base_generation + 1,
                template,
                res: JobResult::default(),
                progress: pc,
                tx: Some(tx),
                w: w.clone(),
                open: w.rate.map(|r| {
                    // The rate is shared evenly; each queue has its own seed
                    // and a phase of i/n of a gap so that steady queues do
                    // not all send at once.
                    let mut schedule = Schedule::new(
                        r.arrival,
                        r.iops / njobs as f64,
                        0xD1B5_4A32_D192_ED03 ^ ((i as u64 + 1) << 17),
                        i as f64 / njobs as f64,
                    );
                    let next = start + Duration::from_nanos(schedule.next_ns());
                    OpenLoop {
                        schedule,
                        start,
                        next,
                        backlog: VecDeque::new(),
                    }
                }),
            }));
            let delay = start.saturating_duration_since(Instant::now());
            cx.timer_once(delay, move |cx| {
                if w.rate.is_some() {
                    tick(&job, cx);
                    return;
                }
                for _ in 0..w.qd {
                    issue(&job, cx);
                }
                finish_if_done(&job);
            });
        })
        .map_err(|_| format!("reactor on core {} is not accepting work", h.core()))?;
    }
    drop(tx);
    let init = ctrlr.reactors().to_vec();
    let total = t_end.duration_since(start);
    while Instant::now() < t_measure && !stop.load(Ordering::Relaxed) {
        progress(start.elapsed(), total, progress_count.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(50).min(t_measure.saturating_duration_since(Instant::now())));
    }
    let m0 = mark(&init, target);
    while Instant::now() < t_end && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200).min(t_end.saturating_duration_since(Instant::now())));
        progress(
            Instant::now().saturating_duration_since(start),
            total,
            progress_count.load(Ordering::Relaxed),
        );
    }
    let m1 = mark(&init, target);
    let stopped_at = Instant::now().min(t_end);
    // Jobs stop issuing at t_end (or on stop) and report once their queue
    // drains; a reset may hold commands up to the controller-loss timeout.
    let mut all = JobResult::default();
    // Held commands (a controller reconnecting) would keep a job from
    // finishing for up to ctrlr_loss_timeout_sec: after a grace period they
    // are failed, and commands stuck on a live queue end at the command
    // timeout (which resets the queue, so they too become held and fail).
    let grace = Duration::from_secs(2);
    let limit = ctrlr.options().command_timeout().unwrap_or(Duration::from_secs(30)) + Duration::from_secs(10);
    let waiting_since = Instant::now();
    let mut results = Vec::new();
    while results.len() < jobs.len() {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => results.push(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("an I/O queue's job was lost".into()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let waited = waiting_since.elapsed();
                if waited > limit {
                    return Err(format!(
                        "{} I/O queue(s) did not drain within {limit:?} after the run (the target does not answer)",
                        jobs.len() - results.len()
                    ));
                }
                if waited > grace {
                    ctrlr.abort_held();
                }
            }
        }
    }
    for r in results {
        if let Some(s) = &mut state {
            let at = r.first_block as usize;
            s.generations[at..at + r.generations.len()].copy_from_slice(&r.generations);
        }
        all.flushes += r.flushes;
        all.reads += r.reads;
        all.writes += r.writes;
        all.bytes += r.bytes;
        all.errors += r.errors;
        all.verify_failures += r.verify_failures;
        all.verified_reads += r.verified_reads;
        all.offered += r.offered;
        all.late += r.late;
        all.capped += r.capped;
        all.unsent += r.unsent;
        all.lag.merge(&r.lag);
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        all.lat.merge(&r.lat);
    }
    let verify_state_blocks = match (&state, &w.verify_state) {
        (Some(s), Some(path)) => {
            s.save(path)?;
            Some(s.known_blocks())
        }
        _ => None,
    };
    let secs = stopped_at.saturating_duration_since(t_measure).as_secs_f64().max(1e-9);
    let (icpu, iwake, tcpu, twake) = cpu_between(&m0, &m1);
    let ios = all.reads + all.writes;
    Ok(PerfReport {
        workload: w.label(),
        iops: ios as f64 / secs,
        read_iops: all.reads as f64 / secs,
        write_iops: all.writes as f64 / secs,
        bw_kib_s: all.bytes as f64 / 1024.0 / secs,
        bw_mib_s: all.bytes as f64 / 1_048_576.0 / secs,
        lat_mean_us: all.lat.mean_us(),
        lat_p50_us: all.lat.quantile_us(0.5),
        lat_p90_us: all.lat.quantile_us(0.9),
        lat_p99_us: all.lat.quantile_us(0.99),
        lat_p999_us: all.lat.quantile_us(0.999),
        lat_max_us: all.lat.max_us(),
        errors: all.errors,
        first_error: all.first_error,
        verify: w.verify,
        verified_reads: all.verified_reads,
        verify_failures: all.verify_failures,
        verify_state_blocks,
        flushes: all.flushes,
        secs,
        initiator_cpu_pct: icpu,
        initiator_wakeups_s: iwake,
        target_cpu_pct: tcpu,
        target_wakeups_s: twake,
        arrival: w.rate.map(|r| r.arrival.to_string()),
        offered_iops: w.rate.map(|_| all.offered as f64 / secs),
        late_cmds: all.late,
        capped_cmds: all.capped,
        unsent_cmds: all.unsent,
        send_lag_p99_us: all.lag.quantile_us(0.99),
        send_lag_max_us: all.lag.max_us(),
    })
}

/// Measures CPU and wakeups of both sides for `time` with connections open
/// and no I/O (the `idle` row).
pub fn idle(ctrlr: &NvmeController, time: Duration, target: &TargetCpu, stop: &Arc<AtomicBool>) -> PerfReport {
    let init = ctrlr.reactors().to_vec();
    let m0 = mark(&init, target);
    let until = Instant::now() + time;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    let m1 = mark(&init, target);
    let (icpu, iwake, tcpu, twake) = cpu_between(&m0, &m1);
    PerfReport {
        workload: "idle".into(),
        iops: 0.0,
        read_iops: 0.0,
        write_iops: 0.0,
        bw_kib_s: 0.0,
        bw_mib_s: 0.0,
        lat_mean_us: None,
        lat_p50_us: None,
        lat_p90_us: None,
        lat_p99_us: None,
        lat_p999_us: None,
        lat_max_us: None,
        errors: 0,
        first_error: None,
        verify: false,
        verified_reads: 0,
        verify_failures: 0,
        verify_state_blocks: None,
        flushes: 0,
        secs: m1.at.duration_since(m0.at).as_secs_f64(),
        initiator_cpu_pct: icpu,
        initiator_wakeups_s: iwake,
        target_cpu_pct: tcpu,
        target_wakeups_s: twake,
        arrival: None,
        offered_iops: Some(0.0),
        late_cmds: 0,
        capped_cmds: 0,
        unsent_cmds: 0,
        send_lag_p99_us: None,
        send_lag_max_us: None,
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// A human table of reports.
pub fn table(rows: &[PerfReport]) -> String {
    let mut s = format!(
        "{:<22} {:>10} {:>11} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>9} {:>9} {:>10} {:>10}\n",
        "workload",
        "IOPS",
        "KiB/s",
        "MiB/s",
        "mean us",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "init CPU%",
        "tgt CPU%",
        "init wk/s",
        "tgt wk/s"
    );
    for r in rows {
        s += &format!(
            "{:<22} {:>10.0} {:>11.0} {:>9.1} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>9.1} {:>9} {:>10.0} {:>10}\n",
            r.workload,
            r.iops,
            r.bw_kib_s,
            r.bw_mib_s,
            us(r.lat_mean_us),
            us(r.lat_p50_us),
            us(r.lat_p90_us),
            us(r.lat_p99_us),
            us(r.lat_p999_us),
            us(r.lat_max_us),
            r.errors,
            r.initiator_cpu_pct,
            r.target_cpu_pct.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            r.initiator_wakeups_s,
            r.target_wakeups_s.map_or_else(|| "-".into(), |v| format!("{v:.0}")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_cpu_is_read_and_grows() {
        let me = std::process::id();
        let a = proc_cpu_ns(me).unwrap();
        let until = Instant::now() + Duration::from_millis(30);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let b = proc_cpu_ns(me).unwrap();
        assert!(b > a, "{a} then {b}");
        assert_eq!(proc_cpu_ns(u32::MAX), None);
    }
}
