//! `lull perf`: a fio/spdk_nvme_perf-style workload from lull's initiator
//! against a target (an external one with `--target`, else one started in
//! this process on a RAM bdev).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use lull_daemon::keyfile::{KeyMaterial, read_dhchap_key, read_key};
use lull_engine::initiator::{HostDhchapKeys, HostTls, NvmeController, NvmeOptions, NvmeTrid};
use lull_perf::arrival::{Arrival, Rate};
use lull_perf::inproc::{DEFAULT_HOSTNQN, INPROC_NQN, InprocTarget};
use lull_perf::nvme_perf::{self, PerfReport, Rw, TargetCpu, Workload};
use lull_proto::tls_psk::ConfiguredPsk;
use lull_reactor::supervisor::{self, Policy, SupervisorConfig, SupervisorHandle};
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

use lull_daemon::config::parse_size;

fn parse_policy(s: &str) -> Result<lull_reactor::supervisor::Policy, String> {
    s.parse::<lull_reactor::supervisor::Policy>()
        .map_err(|_| format!("`{s}` is not a mode; use poll, interrupt, hybrid, adaptive or budget"))
}

/// Initiator settings shared by `lull perf` and `lull bench`: the queue
/// count and the connection's settings.
#[derive(Args, Clone, Debug)]
pub struct InitiatorArgs {
    /// I/O queues to connect (spread over the initiator's cores), 1 to 64.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 64))]
    pub queues: u64,
    #[command(flatten)]
    pub conn: ConnArgs,
}

impl std::ops::Deref for InitiatorArgs {
    type Target = ConnArgs;
    fn deref(&self) -> &ConnArgs {
        &self.conn
    }
}

/// The connection's settings (SPDK `bdev_nvme_set_options` names, with `-`
/// for `_`), shared by every command that connects lull's initiator.
#[derive(Args, Clone, Debug)]
pub struct ConnArgs {
    /// Our host NQN.
    #[arg(long, default_value = DEFAULT_HOSTNQN)]
    pub hostnqn: String,
    /// Ask for the header digest (HDGST).
    #[arg(long)]
    pub hdgst: bool,
    /// Ask for the data digest (DDGST).
    #[arg(long)]
    pub ddgst: bool,
    /// Entries per I/O queue, 2 to 4096.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = crate::ranged(2, 4096))]
    pub io_queue_size: u64,
    /// KATO asked for, ms: 0 (none) or 1000 to 3600000; Keep Alive goes every KATO/2.
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true, value_parser = crate::ranged(0, 3_600_000))]
    pub keep_alive_timeout_ms: u64,
    /// Seconds between reconnect attempts, 0 to 3600.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = crate::ranged(0, 3600))]
    pub reconnect_delay_sec: u64,
    /// Seconds before a lost controller gives up, -1 (forever) to 86400; 0 = no reconnect.
    #[arg(long, default_value_t = 15, allow_negative_numbers = true, value_parser = ranged_i(-1, 86_400))]
    pub ctrlr_loss_timeout_sec: i64,
    /// Seconds after a loss from which I/O fails instead of waiting, 0 (never) to 86400.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = crate::ranged(0, 86_400))]
    pub fast_io_fail_timeout_sec: u64,
    /// Retries of a command that failed with a status without DNR, 0 to 100.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = crate::ranged(0, 100))]
    pub bdev_retry_count: u64,
    /// Command timeout, us, 0 (none) to 3600000000; a timeout resets the association.
    #[arg(long, default_value_t = 30_000_000, allow_negative_numbers = true, value_parser = crate::ranged(0, 3_600_000_000))]
    pub timeout_us: u64,
}

impl ConnArgs {
    /// The engine's options with these poll periods (us), validated.
    pub fn options(&self, ioq_us: u64, adminq_us: u64) -> Result<NvmeOptions, String> {
        let o = NvmeOptions {
            nvme_ioq_poll_period_us: ioq_us,
            nvme_adminq_poll_period_us: adminq_us,
            keep_alive_timeout_ms: self.keep_alive_timeout_ms as u32,
            reconnect_delay_sec: self.reconnect_delay_sec as u32,
            ctrlr_loss_timeout_sec: self.ctrlr_loss_timeout_sec as i32,
            fast_io_fail_timeout_sec: self.fast_io_fail_timeout_sec as u32,
            timeout_us: self.timeout_us,
            io_queue_size: self.io_queue_size as u16,
            bdev_retry_count: self.bdev_retry_count as u32,
            hdgst: self.hdgst,
            ddgst: self.ddgst,
        };
        o.validate().map_err(|e| format!("--{}", e.replacen('_', "-", 8)))?;
        Ok(o)
    }
}

/// A parser for a signed integer in `min..=max` whose error states the range.
pub fn ranged_i(min: i64, max: i64) -> impl Fn(&str) -> Result<i64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("must be an integer from {min} to {max}")),
    }
}

fn parse_arrival(s: &str) -> Result<Arrival, String> {
    s.parse()
}

fn parse_rw(s: &str) -> Result<Rw, String> {
    s.parse()
}

pub(crate) fn parse_bs(s: &str) -> Result<u64, String> {
    match parse_size(s) {
        Ok(v) if (512..=(16 << 20)).contains(&v) && v.is_multiple_of(512) => Ok(v),
        _ => Err(format!(
            "`{s}`: the I/O size must be 512 bytes to 16 MiB, a multiple of 512 (examples: 4k, 128k, 1m)"
        )),
    }
}

/// ADDR[:PORT] with port 4420 when none is given; names are resolved.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::{IpAddr, ToSocketAddrs};
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 4420));
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:4420")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("`{s}`: not an address (ADDR[:PORT], port 4420 by default): {e}"))?
        .next()
        .ok_or_else(|| format!("`{s}`: resolves to no address"))
}

/// `lull perf` arguments.
#[derive(Args)]
pub struct PerfArgs {
    /// Target ADDR[:PORT] (port 4420 by default). Without it, a target is
    /// started in this process with a RAM bdev (see --ram-size).
    #[arg(long, value_parser = parse_addr)]
    target: Option<SocketAddr>,
    /// Subsystem NQN (default: the in-process target's, or nqn.2024-01.io.lull:vol0 with --target).
    #[arg(long)]
    subnqn: Option<String>,
    /// Namespace ID.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(1, 0xFFFF_FFFE))]
    nsid: u64,
    /// Pattern: randread, randwrite, read, write, randrw.
    #[arg(long, default_value = "randread", value_parser = parse_rw)]
    rw: Rw,
    /// Reads in a randrw mix, % (0 to 100).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = crate::ranged(0, 100))]
    rwmixread: u64,
    /// I/O size: bytes or with a suffix (4k, 128k, 1m).
    #[arg(long, default_value = "4k", value_parser = parse_bs)]
    bs: u64,
    /// Commands in flight per queue, 1 to 4096.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = crate::ranged(1, 4096))]
    qd: u64,
    /// Measured time, s (1 to 86400).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = crate::ranged(1, 86_400))]
    time: u64,
    /// Ramp time before measuring, s (0 to 3600).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = crate::ranged(0, 3600))]
    ramp: u64,
    /// Bytes of the namespace to use from LBA 0 (default: all).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Write each block's LBA and a generation; check them on every read; a
    /// mismatch fails the run naming the LBA.
    #[arg(long)]
    verify: bool,
    /// Keep what --verify knows between runs (fio's verify_state_save/load):
    /// load FILE when it exists and check reads of the blocks an earlier run
    /// wrote, then save which blocks hold which generation at the end. The
    /// namespace, its block size and --size must be the same. Implies --verify.
    #[arg(long, value_name = "FILE")]
    verify_state: Option<std::path::PathBuf>,
    /// Send an NVMe Flush after every N writes on each queue (0: never), 0 to 1000000.
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, value_parser = crate::ranged(0, 1_000_000))]
    flush_every: u64,
    /// Open loop at N I/Os per second in total (1 to 10000000), spread evenly
    /// over the queues (fio's rate_iops): each command has a due time and its
    /// latency counts from it, so a stall or a full QD cap (--qd) shows as
    /// latency instead of a lower rate. Without it: closed loop, --qd always in flight.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::ranged(1, lull_perf::arrival::MAX_RATE_IOPS))]
    rate_iops: Option<u64>,
    /// With --rate-iops: how commands arrive: steady (evenly spaced), poisson
    /// (random, exponential gaps of mean 1/rate) or bursty:ON_MS/OFF_MS (steady
    /// in ON windows, nothing in OFF ones; the rate is the mean over both).
    #[arg(long, default_value = "steady", requires = "rate_iops", value_parser = parse_arrival)]
    arrival: Arrival,
    /// The initiator's CPUs (default: the last usable one).
    #[arg(long, value_parser = crate::parse_cores)]
    cores: Option<CoreList>,
    /// The initiator reactors' mode: poll, interrupt, hybrid, adaptive or budget.
    #[arg(long, default_value = "interrupt", value_parser = parse_policy)]
    mode: Policy,
    /// The budget mode's latency budget, us (0 to 1000000), on both sides
    /// (in-process target): what each reactor may add at the 99th percentile.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = crate::ranged(0, 1_000_000))]
    latency_budget_us: u64,
    /// Hybrid spin window before sleeping, us (0 to 1000000).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = crate::ranged(0, 1_000_000))]
    idle_poll_us: u64,
    /// I/O queue poll period, us, 0 to 10000000 (0 = every loop: polling in a
    /// poll-mode reactor, event-driven in an interrupt-mode one).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = crate::ranged(0, 10_000_000))]
    nvme_ioq_poll_period_us: u64,
    /// Admin queue poll period, us, 0 to 10000000 (completions and AERs; keep-alive has its own timer; 0 = event-driven).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = crate::ranged(0, 10_000_000))]
    nvme_adminq_poll_period_us: u64,
    #[command(flatten)]
    init: InitiatorArgs,
    /// Another process whose CPU to report as the target's.
    #[arg(long, conflicts_with = "target_rpc")]
    target_pid: Option<u32>,
    /// A `lull target` daemon's JSON-RPC socket: its reactors' CPU and wakeups
    /// are reported as the target's (e.g. /var/tmp/lull.sock).
    #[arg(long, value_name = "SOCKET")]
    target_rpc: Option<std::path::PathBuf>,
    /// In-process target: its CPUs (default: the first usable one).
    #[arg(long, value_parser = crate::parse_cores)]
    target_cores: Option<CoreList>,
    /// In-process target: its reactors' mode.
    #[arg(long, default_value = "interrupt", value_parser = parse_policy)]
    target_mode: Policy,
    /// In-process target: RAM bdev size.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    ram_size: u64,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// DH-HMAC-CHAP: a file holding the host's secret (`DHHC-1:NN:...:`, as
    /// `nvme gen-dhchap-key` writes it; mode 0600, owned by this user),
    /// used when the controller asks for authentication.
    #[arg(long, value_name = "FILE")]
    dhchap_key: Option<std::path::PathBuf>,
    /// DH-HMAC-CHAP: a file holding the controller's secret, for
    /// bidirectional authentication (the controller proves its key too).
    #[arg(long, value_name = "FILE", requires = "dhchap_key")]
    dhchap_ctrlr_key: Option<std::path::PathBuf>,
    /// NVMe/TCP TLS 1.3: a file holding the PSK (`NVMeTLSkey-1:HH:...:`, as
    /// `nvme gen-tls-key` writes it; mode 0600, owned by this user). Every
    /// queue runs TLS keyed by it (identity version 0); the target must
    /// listen with secure_channel and know this host's PSK.
    #[arg(long, value_name = "FILE")]
    psk: Option<std::path::PathBuf>,
}

impl PerfArgs {
    /// The TLS PSK of `--psk`.
    fn psk(&self) -> Result<Option<ConfiguredPsk>, String> {
        let Some(p) = &self.psk else { return Ok(None) };
        match read_key(p).map_err(|e| format!("--psk: {e}"))? {
            KeyMaterial::TlsPsk(k) => Ok(Some(k)),
            KeyMaterial::Dhchap(_) => Err(format!(
                "--psk: {} holds a DH-HMAC-CHAP secret (DHHC-1), not a TLS PSK (NVMeTLSkey-1)",
                p.display()
            )),
        }
    }

    /// The DH-HMAC-CHAP keys of `--dhchap-key` and `--dhchap-ctrlr-key`.
    fn dhchap(&self) -> Result<Option<HostDhchapKeys>, String> {
        let Some(k) = &self.dhchap_key else {
            return Ok(None);
        };
        let key = read_dhchap_key(k).map_err(|e| format!("--dhchap-key: {e}"))?;
        let ctrlr_key = self
            .dhchap_ctrlr_key
            .as_deref()
            .map(|c| read_dhchap_key(c).map_err(|e| format!("--dhchap-ctrlr-key: {e}")))
            .transpose()?;
        HostDhchapKeys::new(key, ctrlr_key, None).map(Some)
    }
}

/// Starts reactors on `cores` under `policy`, with a supervisor when adaptive.
pub fn start_reactors(
    cores: CoreList,
    pin: bool,
    policy: Policy,
    idle_poll: Duration,
) -> Result<(Reactors, SupervisorHandle), String> {
    let mut rc = ReactorConfig::new(cores)
        .mode(policy.fixed_mode().unwrap_or(Mode::Interrupt))
        .idle_poll(idle_poll);
    rc.pin = pin;
    let reactors = Reactors::start(rc).map_err(|e| e.to_string())?;
    let sup = supervisor::start(&reactors, SupervisorConfig::with_policy(policy)).map_err(|e| e.to_string())?;
    Ok((reactors, sup))
}

/// The supervisor settings for `policy` with `latency_budget_us`.
fn supervisor_config(policy: Policy, latency_budget_us: u64) -> SupervisorConfig {
    SupervisorConfig {
        latency_budget: Duration::from_micros(latency_budget_us),
        ..SupervisorConfig::with_policy(policy)
    }
}

/// The first and last usable CPUs: (target, initiator); one CPU gives both
/// the same one, unpinned.
pub fn default_split() -> Result<(usize, usize, bool), String> {
    let usable = CoreList::usable().map_err(|e| e.to_string())?;
    let c = usable.cores();
    match (c.first(), c.last()) {
        (Some(&a), Some(&b)) if a != b => Ok((a, b, true)),
        (Some(&a), _) => Ok((a, a, false)),
        _ => Err("no usable CPU".into()),
    }
}

/// A Ctrl-C flag: set on SIGINT/SIGTERM.
pub fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    Ok(stop)
}

/// A progress bar on stderr (hidden when stderr is not a terminal or `quiet`).
pub fn progress_bar(quiet: bool, label: &str) -> indicatif::ProgressBar {
    let pb = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(Some(1000), indicatif::ProgressDrawTarget::stderr())
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix:>24} [{bar:30}] {elapsed:>4} {msg}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(label.to_string());
    pb
}

pub fn run(a: PerfArgs) -> Result<(), String> {
    let opts = a
        .init
        .options(a.nvme_ioq_poll_period_us, a.nvme_adminq_poll_period_us)?;
    // Key files are checked before anything starts.
    let dhchap = a.dhchap()?;
    let psk = a.psk()?;
    let stop = stop_flag()?;
    let (tcore, icore, pin) = default_split()?;
    let init_cores = match &a.cores {
        Some(c) => {
            c.validate_online().map_err(|e| format!("--cores: {e}"))?;
            c.clone()
        }
        None => CoreList::try_from(vec![icore]).map_err(|e| e.to_string())?,
    };
    let mut inproc = None;
    let (addr, subnqn, target_cpu) = match a.target {
        Some(addr) => (
            addr,
            a.subnqn.clone().unwrap_or_else(|| "nqn.2024-01.io.lull:vol0".into()),
            match (&a.target_rpc, a.target_pid) {
                (Some(sock), _) => crate::ctl_cmd::target_sampler(sock.clone()),
                (None, Some(pid)) => TargetCpu::Pid(pid),
                (None, None) => TargetCpu::None,
            },
        ),
        None => {
            let cores = match &a.target_cores {
                Some(c) => c.clone(),
                None => CoreList::try_from(vec![tcore]).map_err(|e| e.to_string())?,
            };
            let t = InprocTarget::start(
                cores,
                pin || a.target_cores.is_some(),
                a.target_mode.fixed_mode().unwrap_or(Mode::Interrupt),
                a.ram_size,
            )
            .map_err(|e| format!("in-process target: {e}"))?;
            let sup = supervisor::start(&t.reactors, supervisor_config(a.target_mode, a.latency_budget_us))
                .map_err(|e| e.to_string())?;
            let h = t.reactors.handles().to_vec();
            let addr = t.addr;
            inproc = Some((t, sup));
            (
                addr,
                a.subnqn.clone().unwrap_or_else(|| INPROC_NQN.into()),
                TargetCpu::Reactors(h),
            )
        }
    };
    let (reactors, sup) = start_reactors(
        init_cores,
        pin || a.cores.is_some(),
        a.mode,
        Duration::from_micros(a.idle_poll_us),
    )?;
    if a.mode == Policy::Budget {
        sup.set_config(supervisor_config(a.mode, a.latency_budget_us))
            .map_err(|e| e.to_string())?;
    }
    let mut trid = NvmeTrid::new(addr, &subnqn, &a.init.hostnqn);
    if let Some(keys) = dhchap {
        trid = trid.with_dhchap(keys);
    }
    if let Some(p) = &psk {
        trid = trid.with_tls(HostTls::new(p, &a.init.hostnqn, &subnqn, None).map_err(|e| format!("--psk: {e}"))?);
    }
    let ctrlr = NvmeController::attach("perf0", trid, opts, reactors.handles(), a.init.queues as u16)
        .map_err(|e| e.to_string())?;
    let w = Workload {
        rw: a.rw,
        rwmixread: a.rwmixread as u8,
        bs: a.bs as u32,
        qd: a.qd as u32,
        time: Duration::from_secs(a.time),
        ramp: Duration::from_secs(a.ramp),
        nsid: a.nsid as u32,
        size: a.size,
        verify: a.verify || a.verify_state.is_some(),
        verify_state: a.verify_state.clone(),
        flush_every: a.flush_every as u32,
        rate: a.rate_iops.map(|n| Rate {
            iops: n as f64,
            arrival: a.arrival,
        }),
    };
    if let Some(warning) = verify_warning(&w) {
        eprintln!("lull perf: warning: {warning}");
    }
    if let Some(r) = &w.rate
        && let Some(warning) = nvme_perf::rate_warning(r, a.init.queues as u32, w.qd)
    {
        eprintln!("lull perf: warning: {warning}");
    }
    if let Some(path) = &a.verify_state
        && a.target.is_none()
        && path.exists()
    {
        eprintln!(
            "lull perf: warning: the in-process target's RAM bdev starts empty in every run, so blocks recorded in {} by an earlier run read back as zeroes; use --target to check a target that keeps its data",
            path.display()
        );
    }
    let info = ctrlr.info();
    eprintln!(
        "lull perf: {} on {addr} {subnqn} (cntlid {}, {} I/O queue(s) of {}, MAXH2CDATA {}, in-capsule {} bytes), initiator {} on CPU(s) {}",
        w.label(),
        info.cntlid,
        info.io_queues,
        info.io_queue_size,
        info.maxh2cdata,
        info.in_capsule_bytes,
        a.mode.as_str(),
        reactors
            .handles()
            .iter()
            .map(|h| h.core().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let pb = progress_bar(a.no_progress || a.json, &w.label());
    let report = nvme_perf::run(&ctrlr, &w, &stop, &target_cpu, |el, total, ios| {
        pb.set_position((el.as_secs_f64() / total.as_secs_f64().max(1e-9) * 1000.0) as u64);
        pb.set_message(format!("{ios} I/Os"));
    });
    pb.finish_and_clear();
    ctrlr.detach();
    let _ = reactors.shutdown();
    if let Some((t, _sup)) = inproc {
        let _ = t.reactors.shutdown();
    }
    let report = report?;
    print_reports(std::slice::from_ref(&report), a.json)?;
    if report.iops == 0.0 && report.errors == 0 {
        eprintln!(
            "lull perf: warning: no command completed inside the measured {:.1} s (a poll period of {} us is longer than the run?)",
            report.secs, a.nvme_ioq_poll_period_us
        );
    }
    if let Some(offered) = report.offered_iops
        && !a.json
    {
        eprintln!("{}", rate_summary(&report, offered, a.qd));
    }
    if report.verify && !a.json {
        eprintln!(
            "lull perf: verify: {} reads checked block by block, {} mismatches",
            report.verified_reads, report.verify_failures
        );
        if let (Some(path), Some(n)) = (&a.verify_state, report.verify_state_blocks) {
            eprintln!(
                "lull perf: verify state: {n} blocks of known contents saved to {}",
                path.display()
            );
        }
    }
    if a.flush_every > 0 && !a.json {
        eprintln!(
            "lull perf: {} Flush commands completed in the measured window (one per {} writes per queue)",
            report.flushes, a.flush_every
        );
    }
    if stop.load(Ordering::Relaxed) && report.verify_failures == 0 && report.errors == 0 {
        eprintln!("lull perf: stopped early; the numbers cover {:.1} s", report.secs);
    }
    if report.errors > 0 {
        return Err(format!(
            "{} I/O error(s); first: {}",
            report.errors,
            report.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

/// The open-loop outcome in words: offered against achieved, and the
/// commands that went late, waited for the QD cap or were never sent.
fn rate_summary(r: &PerfReport, offered: f64, qd: u64) -> String {
    let us = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
    let mut s = format!(
        "lull perf: rate: offered {offered:.0} IOPS ({}), achieved {:.0} IOPS; {} command(s) sent {} us or more late (lag p99 {} us, max {} us), {} waited for the QD cap of {qd}, {} never sent",
        r.arrival.as_deref().unwrap_or("-"),
        r.iops,
        r.late_cmds,
        nvme_perf::LATE_THRESHOLD.as_micros(),
        us(r.send_lag_p99_us),
        us(r.send_lag_max_us),
        r.capped_cmds,
        r.unsent_cmds
    );
    if r.iops < offered * 0.9 {
        s += &format!(
            "\nlull perf: warning: the target did not keep up: it completed {:.0} % of the offered rate",
            r.iops / offered.max(1e-9) * 100.0
        );
    }
    s
}

/// What `--verify` cannot check in this workload, in words; `None` when it
/// checks something. Reads check blocks written earlier in the run, or by
/// an earlier run through `--verify-state`; writes alone check nothing.
fn verify_warning(w: &Workload) -> Option<String> {
    if !w.verify {
        return None;
    }
    let reads = match w.rw {
        Rw::RandRead | Rw::Read => true,
        Rw::RandWrite | Rw::Write => false,
        Rw::RandRw => w.rwmixread > 0,
    };
    let writes = match w.rw {
        Rw::RandRead | Rw::Read => false,
        Rw::RandWrite | Rw::Write => true,
        Rw::RandRw => w.rwmixread < 100,
    };
    let rw = match w.rw {
        Rw::RandRw => format!("--rw randrw --rwmixread {}", w.rwmixread),
        rw => format!("--rw {rw}"),
    };
    match (reads, writes, w.verify_state.is_some()) {
        // Writes recorded for a later run, or reads checked against an earlier one.
        (true, true, _) | (true, false, true) | (false, true, true) => None,
        (false, true, false) => Some(format!(
            "--verify with {rw} reads nothing back, so nothing is checked; use --rw randrw to read back \
             in the same run, or --verify-state FILE here and a read run with the same FILE after it"
        )),
        (true, false, false) => Some(format!(
            "--verify with {rw} writes nothing, so nothing it reads is known; use --rw randrw, or give \
             --verify-state FILE saved by an earlier write run"
        )),
        (false, false, _) => None,
    }
}

fn print_reports(rows: &[PerfReport], json: bool) -> Result<(), String> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?);
    } else {
        print!("{}", nvme_perf::table(rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(rw: Rw, rwmixread: u8, state: bool) -> Workload {
        Workload {
            rw,
            rwmixread,
            bs: 4096,
            qd: 1,
            time: Duration::from_secs(1),
            ramp: Duration::ZERO,
            nsid: 1,
            size: None,
            verify: true,
            verify_state: state.then(|| "s".into()),
            flush_every: 0,
            rate: None,
        }
    }

    #[test]
    fn the_verify_warning_fits_each_rw() {
        for rw in [Rw::Write, Rw::RandWrite] {
            let m = verify_warning(&w(rw, 50, false)).unwrap();
            assert!(m.contains(&format!("--rw {rw} reads nothing back")), "{m}");
            assert!(!m.contains("or write"), "never suggests a write-only workload: {m}");
            assert_eq!(
                verify_warning(&w(rw, 50, true)),
                None,
                "writes recorded for a later run"
            );
        }
        for rw in [Rw::Read, Rw::RandRead] {
            let m = verify_warning(&w(rw, 50, false)).unwrap();
            assert!(m.contains("writes nothing") && m.contains("--verify-state"), "{m}");
            assert_eq!(verify_warning(&w(rw, 50, true)), None, "reads check the loaded state");
        }
        assert_eq!(verify_warning(&w(Rw::RandRw, 50, false)), None);
        assert!(
            verify_warning(&w(Rw::RandRw, 0, false))
                .unwrap()
                .contains("reads nothing back")
        );
        assert!(
            verify_warning(&w(Rw::RandRw, 100, false))
                .unwrap()
                .contains("writes nothing")
        );
        let mut off = w(Rw::Write, 50, false);
        off.verify = false;
        assert_eq!(verify_warning(&off), None);
    }
}
