//! `lull target`: run an NVMe/TCP target in the foreground.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use lull_engine::bdev::{Bdev, FileBdev, NullBdev, RamBdev};
use lull_engine::subsystem::Subsystem;
use lull_engine::target::Target;
use lull_reactor::supervisor::{self, Policy, SupervisorConfig};
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};
use lull_transport::target::TargetQueueConfig;

/// Arguments of `lull target`.
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// Address to serve NVMe/TCP and discovery on (repeatable), e.g. 127.0.0.1:4420 or [::1]:4420.
    #[arg(long = "listen", value_name = "ADDR:PORT", default_value = "127.0.0.1:4420")]
    listen: Vec<SocketAddr>,
    /// A RAM bdev NAME:SIZE (SIZE like 256MiB, 1GiB, 4096; repeatable); each becomes a namespace.
    #[arg(long = "ram-bdev", value_name = "NAME:SIZE", value_parser = parse_bdev_spec)]
    ram_bdev: Vec<(String, u64)>,
    /// A null bdev NAME:SIZE (discards writes, reads zeroes; repeatable).
    #[arg(long = "null-bdev", value_name = "NAME:SIZE", value_parser = parse_bdev_spec)]
    null_bdev: Vec<(String, u64)>,
    /// A file or block-device bdev NAME:PATH, driven by io_uring (repeatable).
    /// The file must exist; its size must be a multiple of the block size.
    #[arg(long = "file-bdev", value_name = "NAME:PATH", value_parser = parse_file_spec)]
    file_bdev: Vec<(String, std::path::PathBuf)>,
    /// Block size of the bdevs, bytes: 512 or 4096.
    #[arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = parse_block_size)]
    block_size: u32,
    /// The subsystem NQN.
    #[arg(long, default_value = "nqn.2024-01.io.lull:vol0")]
    subnqn: String,
    /// Serial number reported in Identify Controller (1-20 ASCII characters).
    #[arg(long, default_value = "LULL0000000000000001")]
    serial: String,
    /// Model number reported in Identify Controller (1-40 ASCII characters).
    #[arg(long, default_value = "lull NVMe/TCP target")]
    model: String,
    /// Let any host connect (otherwise only --allow-host NQNs may).
    #[arg(long, conflicts_with = "allow_host")]
    allow_any_host: bool,
    /// A host NQN allowed to connect (repeatable).
    #[arg(long = "allow-host", value_name = "HOSTNQN")]
    allow_host: Vec<String>,
    /// Reactor mode policy: poll, interrupt, hybrid or adaptive.
    #[arg(long, default_value = "interrupt", value_parser = parse_policy)]
    mode: Policy,
    /// CPUs to run reactors on, e.g. 0-3,6 (default: every usable CPU).
    #[arg(long, value_parser = parse_cores)]
    cores: Option<CoreList>,
    /// Hybrid spin window after the last work, us (0 to 1000000).
    #[arg(long, default_value_t = 200, allow_negative_numbers = true, value_parser = crate::ranged(0, 1_000_000))]
    idle_poll_us: u64,
    /// In-capsule data accepted on I/O queues, bytes (0 to 131072, multiple of 16).
    #[arg(long, default_value_t = 8192, allow_negative_numbers = true, value_parser = parse_in_capsule)]
    in_capsule_data: u32,
    /// MAXH2CDATA advertised, bytes (4096 to 1048576, multiple of 4).
    #[arg(long, default_value_t = 131072, allow_negative_numbers = true, value_parser = parse_maxh2cdata)]
    max_h2c_data: u32,
    /// Refuse header digests (granted when a host asks, by default).
    #[arg(long)]
    no_header_digest: bool,
    /// Refuse data digests (granted when a host asks, by default).
    #[arg(long)]
    no_data_digest: bool,
}

fn parse_cores(s: &str) -> Result<CoreList, String> {
    CoreList::parse(s).map_err(|e| e.to_string())
}

pub fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse::<Policy>()
        .map_err(|_| format!("`{s}` is not a mode; use poll, interrupt, hybrid or adaptive"))
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v @ (512 | 4096)) => Ok(v),
        _ => Err(format!("`{s}` is not a supported block size; use 512 or 4096")),
    }
}

fn parse_in_capsule(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v <= 131072 && v.is_multiple_of(16) => Ok(v),
        _ => Err(format!(
            "`{s}`: in-capsule data must be 0 to 131072 bytes, a multiple of 16"
        )),
    }
}

fn parse_maxh2cdata(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if (4096..=1_048_576).contains(&v) && v.is_multiple_of(4) => Ok(v),
        _ => Err(format!(
            "`{s}`: MAXH2CDATA must be 4096 to 1048576 bytes, a multiple of 4"
        )),
    }
}

/// Parses a size: a number of bytes with an optional binary suffix
/// (K, KiB, M, MiB, G, GiB, T, TiB; case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64MiB, 1GiB)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(format!("`{s}`: unknown size unit `{unit}` (use KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{s}` is not a size above 0 that fits in 64 bits"))
}

fn parse_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("`{name}`: a bdev name is letters, digits, `_` and `-`"));
    }
    Ok(())
}

fn parse_file_spec(s: &str) -> Result<(String, std::path::PathBuf), String> {
    let (name, path) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected NAME:PATH, e.g. File0:/dev/nvme1n1"))?;
    parse_name(name)?;
    if path.is_empty() {
        return Err(format!("`{s}`: the path is empty"));
    }
    Ok((name.to_string(), path.into()))
}

fn parse_bdev_spec(s: &str) -> Result<(String, u64), String> {
    let (name, size) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected NAME:SIZE, e.g. Ram0:256MiB"))?;
    parse_name(name)?;
    Ok((name.to_string(), parse_size(size)?))
}

/// Raises the soft open-file limit to the hard one: every connection costs
/// two fds (its socket and the reactor's registration of it).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: l.maximum,
                maximum: l.maximum,
            },
        );
    }
}

/// Runs the target until SIGINT or SIGTERM.
pub fn run(a: TargetArgs) -> Result<(), String> {
    // Block the signals before any thread starts, so every thread inherits
    // the mask and only the main thread takes them.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    lull_engine::subsystem::validate_nqn(&a.subnqn).map_err(|e| format!("--subnqn: {e}"))?;
    raise_fd_limit();
    let mut subsystem = Subsystem::new(&a.subnqn, &a.serial, &a.model).map_err(|e| {
        let field = if e.starts_with("serial") {
            "--serial"
        } else if e.starts_with("model") {
            "--model"
        } else {
            "--subnqn"
        };
        format!("{field}: {e}")
    })?;
    subsystem.allow_any_host = a.allow_any_host;
    subsystem.hosts = a.allow_host.clone();
    if !a.allow_any_host && a.allow_host.is_empty() {
        return Err("no host may connect: give --allow-any-host or --allow-host HOSTNQN".to_string());
    }
    let mut names = std::collections::HashSet::new();
    let mut bdevs: Vec<Arc<dyn Bdev>> = Vec::new();
    for (name, size) in &a.ram_bdev {
        let b = RamBdev::new(name, *size, a.block_size).map_err(|e| format!("--ram-bdev {name}: {e}"))?;
        bdevs.push(Arc::new(b));
    }
    for (name, path) in &a.file_bdev {
        let b = FileBdev::open(name, path, a.block_size).map_err(|e| format!("--file-bdev {name}: {e}"))?;
        if !b.is_direct() {
            tracing::warn!(bdev = %name, path = %path.display(), "O_DIRECT not supported here: using the page cache");
        }
        bdevs.push(Arc::new(b));
    }
    for (name, size) in &a.null_bdev {
        if !size.is_multiple_of(u64::from(a.block_size)) {
            return Err(format!(
                "--null-bdev {name}: size {size} is not a multiple of the {}-byte block size",
                a.block_size
            ));
        }
        let b = NullBdev::new(name, size / u64::from(a.block_size), a.block_size)
            .map_err(|e| format!("--null-bdev {name}: {e}"))?;
        bdevs.push(Arc::new(b));
    }
    for b in bdevs {
        if !names.insert(b.name().to_string()) {
            return Err(format!("bdev name {} is used twice", b.name()));
        }
        subsystem.add_namespace(0, b)?;
    }
    let namespaces: Vec<String> = subsystem
        .namespaces
        .iter()
        .map(|n| {
            format!(
                "{} = {} ({} x {} B)",
                n.nsid,
                n.bdev.name(),
                n.bdev.num_blocks(),
                n.bdev.block_size()
            )
        })
        .collect();

    let cores = match a.cores {
        Some(c) => c,
        None => CoreList::usable().map_err(|e| e.to_string())?,
    };
    let start_mode = a.mode.fixed_mode().unwrap_or(Mode::Interrupt);
    let config = ReactorConfig::new(cores.clone())
        .mode(start_mode)
        .idle_poll(Duration::from_micros(a.idle_poll_us));
    let reactors = Reactors::start(config).map_err(|e| format!("--cores: {e}"))?;
    let _supervisor = supervisor::start(&reactors, SupervisorConfig::with_policy(a.mode)).map_err(|e| e.to_string())?;

    let queue_config = TargetQueueConfig {
        maxh2cdata: a.max_h2c_data,
        io_in_capsule_data: a.in_capsule_data,
        allow_header_digest: !a.no_header_digest,
        allow_data_digest: !a.no_data_digest,
        ..TargetQueueConfig::default()
    };
    let target = Target::new(queue_config);
    target.add_subsystem(subsystem)?;
    let mut bound = Vec::new();
    for addr in &a.listen {
        bound.push(target.listen(&reactors, *addr).map_err(|e| format!("--listen: {e}"))?);
    }
    eprintln!(
        "lull target: subsystem {} on {}",
        a.subnqn,
        bound.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    );
    for n in &namespaces {
        eprintln!("  namespace {n}");
    }
    eprintln!("  reactors on CPUs {cores}, mode policy {}", a.mode);
    if let Some(first) = bound.first() {
        eprintln!(
            "  connect: nvme connect -t tcp -a {} -s {} -n {}",
            first.ip(),
            first.port(),
            a.subnqn
        );
    }

    let sig = signals.forever().next();
    eprintln!("lull target: signal {}, stopping", sig.unwrap_or(0));
    signals.handle().close();
    reactors.shutdown().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(
            parse_size("64mb").unwrap_err(),
            "`64mb`: unknown size unit `mb` (use KiB, MiB, GiB or TiB)"
        );
        assert!(parse_size("0").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(parse_bdev_spec("Ram0:1MiB"), Ok(("Ram0".into(), 1 << 20)));
        assert!(parse_bdev_spec("Ram0").is_err());
        assert!(parse_bdev_spec("a b:1MiB").is_err());
        assert_eq!(parse_block_size("4096"), Ok(4096));
        assert!(parse_block_size("1024").is_err());
        assert!(parse_in_capsule("8193").is_err());
        assert!(parse_maxh2cdata("4095").is_err());
    }
}
