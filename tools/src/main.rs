//! `lull`: the command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lull_perf::reactor_bench::{self, BenchOptions};
use lull_reactor::CoreList;

/// `println!` through [`stdout::print`]: a closed output pipe ends the
/// process quietly (status 141) instead of panicking.
macro_rules! println {
    () => { $crate::stdout::print(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::stdout::print(format_args!($($arg)*), true) };
}

/// `print!` through [`stdout::print`], as [`println!`].
macro_rules! print {
    ($($arg:tt)*) => { $crate::stdout::print(format_args!($($arg)*), false) };
}

mod bench_cmd;
mod bench_volume;
mod child_daemons;
mod ctl_cmd;
mod live_flags;
mod perf_cmd;
mod raid_cmd;
mod stdout;
mod target_cmd;
mod volume_cmd;

/// `lull --version`: the package version and the git commit it was built
/// from ("unknown" when built outside git), e.g. `0.1.0 (9040c7b)`.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LULL_GIT_COMMIT"), ")");

/// lull: a thread-per-core NVMe/TCP block storage engine that sleeps when idle.
#[derive(Parser)]
#[command(name = "lull", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The daemon's JSON-RPC socket, for `target` and the commands that talk
    /// to it; accepted before or after the subcommand [default: /var/tmp/lull.sock].
    #[arg(short = 'r', long = "rpc-socket", value_name = "PATH", global = true)]
    rpc_socket: Option<std::path::PathBuf>,
}

impl Command {
    /// The socket setting of a command that talks to a running daemon.
    fn socket_mut(&mut self) -> Option<&mut ctl_cmd::Socket> {
        Some(match self {
            Command::Status(a) => &mut a.socket,
            Command::Mode(a) => &mut a.socket,
            Command::Set(a) => &mut a.socket,
            Command::Get(a) => &mut a.socket,
            Command::Bdev(a) => &mut a.socket,
            Command::Raid(a) => &mut a.socket,
            Command::Subsystem(a) => &mut a.socket,
            Command::Rpc(a) => &mut a.socket,
            Command::Config(a) => &mut a.socket,
            Command::Volume(a) => &mut a.socket,
            _ => return None,
        })
    }
}

/// Hands the global `-r/--rpc-socket` to the command that uses it; refused
/// for a command that has no daemon socket.
fn apply_socket(cli: &mut Cli) -> Result<(), String> {
    let Some(path) = cli.rpc_socket.clone() else {
        return Ok(());
    };
    if let Command::Target(a) = &mut cli.command {
        a.rpc_socket = Some(path);
    } else if let Some(s) = cli.command.socket_mut() {
        s.rpc_socket = path;
    } else {
        return Err(
            "-r/--rpc-socket: this command does not talk to a daemon's JSON-RPC socket (perf and bench take --target-rpc)"
                .into(),
        );
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Run the target daemon in the foreground until SIGINT/SIGTERM: from a
    /// config file, from flags, or empty (then built over JSON-RPC).
    ///
    /// Examples:
    ///   lull target --config /etc/lull/lull.toml
    ///   lull target --listen 127.0.0.1:4420 --ram-bdev Ram0:256MiB --allow-any-host --mode-policy adaptive
    ///   lull target            (empty; then `lull bdev malloc ...`, `lull subsystem ...` or SPDK's rpc.py)
    #[command(verbatim_doc_comment)]
    Target(Box<target_cmd::TargetArgs>),
    /// Per-core status of the running daemon: mode, policy, busy %, wakeups/s,
    /// connections, IOPS, MiB/s.
    ///
    /// Example: lull status; lull status --json --interval-ms 2000
    Status(ctl_cmd::StatusArgs),
    /// Reactor mode policy of the running daemon, for every core or one.
    ///
    /// Example: lull mode set adaptive; lull mode set poll --core 1; lull mode get
    Mode(ctl_cmd::ModeArgs),
    /// Change a live setting of the running daemon.
    ///
    /// Example: lull set nvme_ioq_poll_period_us 250; lull set idle_poll_us 50
    Set(ctl_cmd::SetArgs),
    /// Show the live settings of the running daemon (one, or all).
    ///
    /// Example: lull get; lull get nvme_ioq_poll_period_us
    Get(ctl_cmd::GetArgs),
    /// Bdevs of the running daemon: list, create, delete.
    ///
    /// Example: lull bdev malloc Malloc0 256MiB; lull bdev list
    Bdev(ctl_cmd::BdevArgs),
    /// Raid1 volumes of the running daemon: create, list (state and
    /// rebuild progress), delete, remove-base, add-base, set-options.
    ///
    /// Example: lull raid create Vol0 Malloc0 Nvme0n1 Nvme1n1; lull raid list
    Raid(raid_cmd::RaidArgs),
    /// NVMe-oF subsystems of the running daemon: namespaces, listeners, hosts.
    ///
    /// Example: lull subsystem create nqn.2024-01.io.lull:vol1 --allow-any-host
    Subsystem(ctl_cmd::SubsystemArgs),
    /// Call any JSON-RPC method of the running daemon (SPDK's names).
    ///
    /// Example: lull rpc nvmf_get_subsystems; lull rpc bdev_get_bdevs '{"name":"Malloc0"}'
    Rpc(ctl_cmd::RpcArgs),
    /// Save the running daemon's state as an SPDK JSON config, or apply one
    /// (for `lull target --json-config`, `spdk_tgt --json`, `rpc.py load_config`).
    ///
    /// Example: lull config save /etc/lull/state.json; lull config load state.json
    Config(ctl_cmd::ConfigArgs),
    /// Replicated volumes: a raid1 over a local bdev and remote replicas,
    /// attached and exported in one command (SPDK's bdev_nvme and bdev_raid RPCs).
    ///
    /// Example: lull volume create Vol0 --local File0 --replica 10.0.0.2:4420/nqn.2024-01.io.lull:vol0-r1 --replica 10.0.0.3:4420/nqn.2024-01.io.lull:vol0-r2 --export nqn.2024-01.io.lull:vol0 --listen 0.0.0.0:4420
    Volume(volume_cmd::VolumeArgs),
    /// Print shell completions.
    ///
    /// Example: lull completions bash > /etc/bash_completion.d/lull
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run a fio-style workload from lull's NVMe/TCP initiator.
    ///
    /// Example: lull perf --target 127.0.0.1:4420 --subnqn nqn.2024-01.io.lull:vol0 --rw randrw --bs 4k --qd 32 --time 20 --verify
    Perf(Box<perf_cmd::PerfArgs>),
    /// Benchmarks. With no subcommand: the comparison matrix (six
    /// configurations x random/sequential read/write, QD 1 latency and idle),
    /// in-process target and initiator on two cores; tables on stdout, CSV,
    /// JSON and an SVG plot in an output directory.
    ///
    /// Example: lull bench --time 5 --out results/
    Bench(Box<BenchArgs>),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    which: Option<Bench>,
    #[command(flatten)]
    matrix: bench_cmd::MatrixArgs,
}

#[derive(Subcommand)]
enum Bench {
    /// Reactor modes side by side: message round trip, fd wake latency, idle CPU.
    ///
    /// Example: lull bench reactor --cores 0,1 --json
    Reactor(ReactorBenchArgs),
    /// The NVMe/TCP target in each reactor mode against a load generator on
    /// another core: IOPS, latency and target CPU, then idle CPU.
    ///
    /// Example: lull bench target --time 5 --json
    Target(TargetBenchArgs),
    /// CPU against latency at the loads storage nodes run: offered loads from
    /// idle to max (open loop), each configuration (poll, interrupt at each
    /// I/O queue poll period, hybrid at each spin window, adaptive) in turn;
    /// prints a verdict (the cheapest configuration within +10 %, +50 us and
    /// +500 us of poll's p99 at each load) and the table, writes CSV, JSON and
    /// two plots.
    ///
    /// Example: lull bench load --loads 0,1k,10k,max --periods 0,100,250,500,1000 --spin-us 20,50 --rounds 3
    Load(Box<bench_cmd::LoadArgs>),
    /// The proposal's comparison on a replicated volume: three `lull target`
    /// daemons started here (an engine with a raid1 over a local and two
    /// remote RAM replicas, beside a plain RAM namespace), each engine
    /// configuration in turn, each load on the volume then the plain
    /// namespace: IOPS, latency and the CPU of every process (daemons and
    /// host), the volume/plain ratios, then idle CPU at 1 IOPS.
    ///
    /// Example: lull bench volume --configs "poll interrupt:100 interrupt:0" --loads "randread:4k:32 randread:4k:1" --time 5
    Volume(Box<bench_volume::VolumeArgs>),
}

#[derive(Args)]
struct TargetBenchArgs {
    /// Two CPUs: the target's reactor, then the load generator, e.g. `0,1`.
    #[arg(long, value_parser = parse_cores)]
    cores: Option<CoreList>,
    /// Measuring time per workload and mode, s (1 to 3600; split over --rounds).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = ranged(1, 3600))]
    time: u64,
    /// Rounds alternating the modes within each workload (1 to 100).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = ranged(1, 100))]
    rounds: u64,
    /// Idle window with connections open, s (1 to 3600).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = ranged(1, 3600))]
    idle_secs: u64,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReactorBenchArgs {
    /// Two CPUs to run on, e.g. `0,1` (default: the first two usable CPUs).
    #[arg(long, value_parser = parse_cores)]
    cores: Option<CoreList>,
    /// Round-trip measuring time per configuration, ms (10 to 600000; split over --rounds).
    #[arg(long, default_value_t = 1500, allow_negative_numbers = true, value_parser = ranged(10, 600_000))]
    rtt_ms: u64,
    /// Rounds alternating the configurations (A B A B), 1 to 100.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = ranged(1, 100))]
    rounds: u64,
    /// Idle-CPU window, s (1 to 3600).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = ranged(1, 3600))]
    idle_secs: u64,
    /// fd wake samples per configuration (1 to 1000000).
    #[arg(long, default_value_t = 400, allow_negative_numbers = true, value_parser = ranged(1, 1_000_000))]
    wake_samples: u64,
    /// Hybrid spin windows to measure, us (comma-separated, each 0 to 10000).
    #[arg(long, value_delimiter = ',', default_values_t = [10u64, 50, 200, 1000], allow_negative_numbers = true, value_parser = ranged(0, 10_000))]
    idle_poll_us: Vec<u64>,
    /// Skip the glommio reference.
    #[arg(long)]
    no_glommio: bool,
    /// Print a JSON array (one object per configuration) instead of the table.
    #[arg(long)]
    json: bool,
}

/// A parser for an integer in `min..=max` whose error states the range.
pub(crate) fn ranged(min: u64, max: u64) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s: &str| match s.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("must be an integer from {min} to {max}")),
    }
}

pub(crate) fn parse_cores(s: &str) -> Result<CoreList, String> {
    CoreList::parse(s).map_err(|e| e.to_string())
}

fn bench_reactor(a: ReactorBenchArgs) -> Result<(), String> {
    let mut o = BenchOptions::for_this_machine().map_err(|e| e.to_string())?;
    if let Some(c) = &a.cores {
        o = o.with_cores(c).map_err(|e| format!("--cores: {e}"))?;
    }
    o.rtt = Duration::from_millis(a.rtt_ms);
    o.rounds = a.rounds as u32;
    o.idle = Duration::from_secs(a.idle_secs);
    o.wake_samples = a.wake_samples as u32;
    o.idle_poll_us = a.idle_poll_us;
    o.glommio &= !a.no_glommio;
    let est = o.rtt.as_secs_f64() * 10.0
        + o.idle.as_secs_f64()
        + f64::from(o.wake_samples) * 0.0025 * (2 + o.idle_poll_us.len()) as f64;
    eprintln!(
        "lull bench reactor: CPUs {} and {}{}; about {:.0} s",
        o.cores.0,
        o.cores.1,
        if o.pinned { "" } else { " (one CPU: unpinned)" },
        est
    );
    let rows = reactor_bench::run(&o, |step| eprintln!("  {step}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
    } else {
        print!("{}", reactor_bench::table(&rows));
    }
    Ok(())
}

fn bench_target(a: TargetBenchArgs) -> Result<(), String> {
    let mut o = lull_perf::target_bench::TargetBenchOptions::for_this_machine()?;
    if let Some(c) = &a.cores {
        c.validate_online().map_err(|e| format!("--cores: {e}"))?;
        match c.cores() {
            [t, l] => {
                o.target_core = *t;
                o.client_core = *l;
                o.pinned = true;
            }
            _ => {
                return Err(format!(
                    "--cores {c}: give exactly two CPUs, the target's then the load generator's"
                ));
            }
        }
    }
    o.time = Duration::from_secs(a.time);
    o.rounds = a.rounds as u32;
    o.idle = Duration::from_secs(a.idle_secs);
    eprintln!(
        "lull bench target: target on CPU {}, load generator on CPU {}{}",
        o.target_core,
        o.client_core,
        if o.pinned { "" } else { " (one CPU: unpinned)" }
    );
    let rows = lull_perf::target_bench::run(&o, |s| eprintln!("  {s}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
    } else {
        print!("{}", lull_perf::target_bench::table(&rows));
    }
    Ok(())
}

/// Logs to stderr at `default` unless LULL_LOG gives a filter.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LULL_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default))
        .unwrap_or_else(|_| "warn".into());
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The daemon's logging: as [`init_logging`], behind a filter that SPDK's
/// `log_set_level` and `log_set_print_level` replace at run time.
fn init_target_logging(default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let (initial, filter) = match std::env::var("LULL_LOG")
        .ok()
        .and_then(|d| EnvFilter::try_new(&d).ok().map(|f| (d, f)))
    {
        Some(ok) => ok,
        None => (
            default.to_string(),
            EnvFilter::try_new(default).unwrap_or_else(|_| "warn".into()),
        ),
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if tracing_subscriber::registry().with(filter).with(fmt).try_init().is_ok() {
        lull_daemon::log_level::install(&initial, move |d| {
            let f = EnvFilter::try_new(d).map_err(|e| e.to_string())?;
            handle.reload(f).map_err(|e| e.to_string())
        });
    }
}

fn main() -> ExitCode {
    lull_engine::allocator::keep_freed_buffers();
    let mut cli = Cli::parse();
    if let Err(e) = apply_socket(&mut cli) {
        eprintln!("lull: {e}");
        return ExitCode::FAILURE;
    }
    if !matches!(cli.command, Command::Target(_)) {
        // Warnings, and the line saying a controller reconnected (lull perf
        // runs through resets: the reconnect and its resubmitted commands show).
        init_logging("warn,lull_engine::initiator::reconnect=info");
    }
    let result = match cli.command {
        Command::Bench(b) => match *b {
            BenchArgs {
                which: Some(Bench::Reactor(a)),
                ..
            } => bench_reactor(a),
            BenchArgs {
                which: Some(Bench::Target(a)),
                ..
            } => bench_target(a),
            BenchArgs {
                which: Some(Bench::Load(a)),
                ..
            } => bench_cmd::run_load(*a),
            BenchArgs {
                which: Some(Bench::Volume(a)),
                ..
            } => bench_volume::run(*a),
            BenchArgs { which: None, matrix } => bench_cmd::run(matrix),
        },
        Command::Target(a) => target_cmd::run(*a, init_target_logging),
        Command::Perf(a) => perf_cmd::run(*a),
        Command::Status(a) => ctl_cmd::status(a),
        Command::Mode(a) => ctl_cmd::mode(a),
        Command::Set(a) => ctl_cmd::set(a),
        Command::Get(a) => ctl_cmd::get(a),
        Command::Bdev(a) => ctl_cmd::bdev(a),
        Command::Raid(a) => raid_cmd::raid(a),
        Command::Subsystem(a) => ctl_cmd::subsystem(a),
        Command::Rpc(a) => ctl_cmd::rpc(a),
        Command::Config(a) => ctl_cmd::config(a),
        Command::Volume(a) => volume_cmd::volume(a),
        Command::Completions { shell } => {
            use std::io::Write;
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "lull", &mut out);
            // A closed pipe (`| head`) is not an error worth a message.
            match std::io::stdout().write_all(&out) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
                _ => Ok(()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lull: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    fn socket_of(args: &[&str]) -> Result<std::path::PathBuf, String> {
        let mut cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        apply_socket(&mut cli)?;
        match &mut cli.command {
            Command::Target(a) => Ok(a.rpc_socket.clone().unwrap_or_default()),
            c => Ok(c.socket_mut().map(|s| s.rpc_socket.clone()).unwrap_or_default()),
        }
    }

    #[test]
    fn rpc_socket_before_or_after_the_subcommand() {
        let want = std::path::PathBuf::from("/tmp/S.sock");
        for args in [
            &["lull", "-r", "/tmp/S.sock", "set", "idle_poll_us", "5"][..],
            &["lull", "set", "-r", "/tmp/S.sock", "idle_poll_us", "5"],
            &["lull", "set", "idle_poll_us", "5", "--rpc-socket", "/tmp/S.sock"],
            &["lull", "--rpc-socket=/tmp/S.sock", "bdev", "list"],
            &["lull", "raid", "list", "-r", "/tmp/S.sock"],
            &["lull", "-r", "/tmp/S.sock", "rpc", "spdk_get_version"],
            &["lull", "-r", "/tmp/S.sock", "target"],
            &["lull", "target", "-r", "/tmp/S.sock"],
        ] {
            assert_eq!(socket_of(args).unwrap(), want, "{args:?}");
        }
        assert_eq!(
            socket_of(&["lull", "status"]).unwrap(),
            std::path::PathBuf::from(lull_daemon::config::DEFAULT_RPC_SOCKET)
        );
        assert_eq!(socket_of(&["lull", "target"]).unwrap(), std::path::PathBuf::new());
        let e = socket_of(&["lull", "-r", "/tmp/S.sock", "perf", "--target", "127.0.0.1:4420"]).unwrap_err();
        assert!(e.contains("--target-rpc"), "{e}");
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn version_names_the_git_commit() {
        let e = match Cli::try_parse_from(["lull", "--version"]) {
            Err(e) => e,
            Ok(_) => panic!("--version parsed as a command"),
        };
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        let shown = e.render().to_string();
        let head = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let commit = std::env::var("LULL_GIT_COMMIT")
            .ok()
            .or(head)
            .unwrap_or_else(|| "unknown".into());
        assert_eq!(shown.trim(), format!("lull {} ({commit})", env!("CARGO_PKG_VERSION")));
    }
}
