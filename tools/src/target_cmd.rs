//! `lull target`: the daemon, in the foreground. Settings come from a TOML
//! file (`--config`), from flags with the same names, or both (flags win).
//! With no storage given it starts empty (like `spdk_tgt`) and is built over
//! JSON-RPC; SIGINT/SIGTERM stop it gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use lull_daemon::app::App;
use lull_daemon::config::{self, BdevConfig, Config, NamespaceConfig, SizeValue, SubsystemConfig};
use lull_daemon::metrics::MetricsServer;
use lull_daemon::rpc::RpcServer;
use lull_daemon::rpc::config_json;
use lull_daemon::settings::{self, Part, SettingValue};

use crate::live_flags::LiveFlags;

/// Arguments of `lull target`: every setting of the config file as a flag.
#[derive(Args, Debug, Default)]
pub struct TargetArgs {
    /// TOML config file (see deploy/lull.toml); flags given as well win. A
    /// file that starts with `{` is an SPDK JSON config (spdk_tgt's `-c`) and
    /// is loaded as --json-config.
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SPDK JSON config to build the state from at start (SPDK's --json): made by
    /// `lull config save`, `rpc.py save_config` or spdk_tgt. Applied after --config's
    /// objects and settings; settings given as flags win over the file's.
    #[arg(long = "json-config", visible_alias = "json", value_name = "FILE")]
    json_config: Option<PathBuf>,
    /// Go on past an entry of --json-config that fails (SPDK's
    /// --json-ignore-init-errors), logging it: an engine whose replica's node
    /// is down starts with its volume degraded instead of not at all.
    #[arg(long)]
    json_ignore_init_errors: bool,
    /// JSON-RPC Unix socket: the top-level `-r/--rpc-socket` (global, so
    /// `lull -r S target` and `lull target -r S` both work), filled in by `main`.
    #[arg(skip)]
    pub(crate) rpc_socket: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics), e.g. 127.0.0.1:9465.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
    /// Log filter: error, warn, info, debug, trace [default: info].
    #[arg(long)]
    log_level: Option<String>,
    /// CPUs to run reactors on, e.g. 0-3,6 [default: every usable CPU].
    #[arg(long)]
    cores: Option<String>,
    /// The live settings (reactor modes, the supervisor, the initiator):
    /// one flag per setting of the settings table, named as in the config
    /// file (`--idle-poll-us`), Longhorn's and SPDK's names as aliases.
    #[command(flatten)]
    live: LiveFlags,
    /// In-capsule data accepted on I/O queues, bytes (0 to 131072, multiple of 16) [default: 8192].
    #[arg(long, visible_alias = "in-capsule-data")]
    in_capsule_data_size: Option<u32>,
    /// MAXH2CDATA advertised, bytes (4096 to 1048576, multiple of 4) [default: 131072].
    #[arg(long)]
    max_h2c_data: Option<u32>,
    /// Refuse header digests (granted when a host asks, by default).
    #[arg(long)]
    no_header_digest: bool,
    /// Refuse data digests (granted when a host asks, by default).
    #[arg(long)]
    no_data_digest: bool,
    /// Send a CapsuleResp after a read's data unless the host disabled SQ
    /// flow control (the specification's rule), instead of SPDK's C2H
    /// success optimization for every host (`c2h_success`, on by default).
    #[arg(long)]
    no_c2h_success: bool,
    /// Smallest non-zero KATO a host gets, ms (100 to 3600000) [default: 1000].
    #[arg(long)]
    kato_min_ms: Option<u32>,
    /// Largest KATO a host may ask for, ms [default: 3600000].
    #[arg(long)]
    kato_max_ms: Option<u32>,
    /// Target-wide listener (repeatable): every subsystem and discovery, e.g. 0.0.0.0:4420.
    /// Default 127.0.0.1:4420 when storage is given by flags.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// A RAM bdev NAME:SIZE (SIZE like 256MiB, 1GiB, 4096; repeatable); each becomes a namespace of --subnqn.
    #[arg(long = "ram-bdev", value_name = "NAME:SIZE")]
    ram_bdev: Vec<String>,
    /// A null bdev NAME:SIZE (discards writes, reads zeroes; repeatable).
    #[arg(long = "null-bdev", value_name = "NAME:SIZE")]
    null_bdev: Vec<String>,
    /// A file or block-device bdev NAME:PATH on io_uring (repeatable; the file must exist,
    /// its size a multiple of the block size).
    #[arg(long = "file-bdev", value_name = "NAME:PATH")]
    file_bdev: Vec<String>,
    /// Block size of the flag bdevs, bytes: 512 or 4096 [default: 512].
    #[arg(long)]
    block_size: Option<u32>,
    /// The NQN of the subsystem the flag bdevs go into [default: nqn.2024-01.io.lull:vol0].
    #[arg(long)]
    subnqn: Option<String>,
    /// Its serial number (1-20 ASCII characters).
    #[arg(long)]
    serial: Option<String>,
    /// Its model number (1-40 ASCII characters).
    #[arg(long)]
    model: Option<String>,
    /// Let any host connect to it (otherwise only --allow-host NQNs may).
    #[arg(long, conflicts_with = "allow_host")]
    allow_any_host: bool,
    /// A host NQN allowed to connect to it (repeatable).
    #[arg(long = "allow-host", value_name = "HOSTNQN")]
    allow_host: Vec<String>,
}

fn split_spec<'a>(flag: &str, s: &'a str, example: &str) -> Result<(&'a str, &'a str), String> {
    s.split_once(':')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("--{flag} `{s}`: expected {example}"))
}

impl TargetArgs {
    /// The flags as a [`Config`] (fields not given stay unset).
    fn to_config(&self) -> Result<Config, String> {
        let mut c = Config {
            cores: self.cores.clone(),
            live: self.live.given.clone(),
            in_capsule_data_size: self.in_capsule_data_size,
            max_h2c_data: self.max_h2c_data,
            header_digest: self.no_header_digest.then_some(false),
            data_digest: self.no_data_digest.then_some(false),
            c2h_success: self.no_c2h_success.then_some(false),
            kato_min_ms: self.kato_min_ms,
            kato_max_ms: self.kato_max_ms,
            log_level: self.log_level.clone(),
            rpc_socket: self.rpc_socket.clone(),
            metrics: self.metrics.clone(),
            listen: (!self.listen.is_empty()).then(|| self.listen.clone()),
            ..Config::default()
        };
        let block_size = self.block_size;
        for s in &self.ram_bdev {
            let (name, size) = split_spec("ram-bdev", s, "NAME:SIZE, e.g. Ram0:256MiB")?;
            c.bdev.push(BdevConfig {
                name: Some(name.into()),
                kind: Some("malloc".into()),
                size: Some(SizeValue::Text(size.into())),
                block_size,
                ..BdevConfig::default()
            });
        }
        for s in &self.null_bdev {
            let (name, size) = split_spec("null-bdev", s, "NAME:SIZE, e.g. Null0:1GiB")?;
            c.bdev.push(BdevConfig {
                name: Some(name.into()),
                kind: Some("null".into()),
                size: Some(SizeValue::Text(size.into())),
                block_size,
                ..BdevConfig::default()
            });
        }
        for s in &self.file_bdev {
            let (name, path) = split_spec("file-bdev", s, "NAME:PATH, e.g. File0:/dev/nvme1n1")?;
            c.bdev.push(BdevConfig {
                name: Some(name.into()),
                kind: Some("uring".into()),
                filename: Some(path.into()),
                block_size,
                ..BdevConfig::default()
            });
        }
        let storage_flags = !c.bdev.is_empty();
        if storage_flags {
            c.subsystem.push(SubsystemConfig {
                nqn: Some(
                    self.subnqn
                        .clone()
                        .unwrap_or_else(|| "nqn.2024-01.io.lull:vol0".to_string()),
                ),
                serial_number: Some(
                    self.serial
                        .clone()
                        .unwrap_or_else(|| "LULL0000000000000001".to_string()),
                ),
                model_number: self.model.clone(),
                allow_any_host: Some(self.allow_any_host),
                hosts: self.allow_host.clone(),
                namespaces: c
                    .bdev
                    .iter()
                    .map(|b| NamespaceConfig {
                        bdev: b.name.clone(),
                        nsid: None,
                    })
                    .collect(),
                ..SubsystemConfig::default()
            });
            if c.listen.is_none() {
                c.listen = Some(vec!["127.0.0.1:4420".to_string()]);
            }
        } else if self.subnqn.is_some() || self.allow_any_host || !self.allow_host.is_empty() {
            return Err(
                "--subnqn/--allow-any-host/--allow-host describe the subsystem of --ram-bdev/--null-bdev/--file-bdev; give one of those too".to_string(),
            );
        }
        Ok(c)
    }
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

/// Checks the settings of `a` (file and flags) without starting anything.
///
/// # Errors
/// The first bad setting, naming it.
pub fn settings(a: &TargetArgs) -> Result<config::Settings, String> {
    let file = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    let flags = a.to_config()?;
    let flag_subsystem = a.config.as_ref().map_or(0, |_| file.subsystem.len());
    let merged = file.overlay(flags);
    let source = a
        .config
        .as_ref()
        .map_or_else(|| "flags".to_string(), |p| format!("{} and flags", p.display()));
    merged.resolve().map_err(|e| {
        // The subsystem the storage flags make has its hosts from flags.
        if e.field == format!("subsystem[{flag_subsystem}].hosts")
            && (!a.ram_bdev.is_empty() || !a.null_bdev.is_empty() || !a.file_bdev.is_empty())
        {
            "no host may connect: give --allow-any-host or --allow-host HOSTNQN".to_string()
        } else {
            format!("invalid setting ({source}): {e}")
        }
    })
}

/// spdk_tgt's `-c` is its JSON config; lull's `-c` is the TOML file. A file
/// given to -c/--config whose first non-blank byte is `{` is an SPDK JSON
/// config (a TOML document cannot start with `{`), so it moves to
/// --json-config. Returns the line to log saying so.
///
/// # Errors
/// Both a JSON -c file and --json-config given.
fn route_json_config(a: &mut TargetArgs) -> Result<Option<String>, String> {
    let Some(p) = a.config.clone() else { return Ok(None) };
    // An unreadable file is reported by the TOML reader, naming it.
    let Ok(bytes) = std::fs::read(&p) else { return Ok(None) };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(None);
    }
    if let Some(j) = &a.json_config {
        return Err(format!(
            "--config {}: an SPDK JSON config (it starts with '{{'), and --json-config {} is given too; give one JSON config, with --json-config (a TOML file goes to --config)",
            p.display(),
            j.display()
        ));
    }
    a.config = None;
    a.json_config = Some(p.clone());
    Ok(Some(format!(
        "--config {}: an SPDK JSON config (it starts with '{{'), loaded as --json-config (lull's -c also takes its TOML config)",
        p.display()
    )))
}

/// Runs the target until SIGINT or SIGTERM.
pub fn run(mut a: TargetArgs, init_logging: impl FnOnce(&str)) -> Result<(), String> {
    // Install the handlers before any thread starts; the iterator below
    // takes the signals on this thread whichever thread the kernel picks.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let routed = route_json_config(&mut a)?;
    if a.json_ignore_init_errors && a.json_config.is_none() {
        return Err("--json-ignore-init-errors: applies to a JSON config; give one with --json-config FILE".into());
    }
    let s = settings(&a)?;
    let json = a.json_config.as_deref().map(read_json_config).transpose()?;
    init_logging(&s.log_level);
    if let Some(line) = routed {
        tracing::info!("{line}");
    }
    RpcServer::check_path(&s.rpc_socket)?;
    raise_fd_limit();
    let app = App::start(&s)?;
    if let (Some(doc), Some(path)) = (&json, &a.json_config)
        && let Err(e) = apply_json_config(&app, doc, &a)
    {
        app.shutdown();
        return Err(format!(
            "--json-config {}: {e}; nothing was left running",
            path.display()
        ));
    }
    let rpc = match RpcServer::start(app.clone(), &s.rpc_socket) {
        Ok(r) => r,
        Err(e) => {
            app.shutdown();
            return Err(e);
        }
    };
    let metrics = match s
        .metrics
        .map(|addr| MetricsServer::start(app.clone(), addr))
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            drop(rpc);
            app.shutdown();
            return Err(e);
        }
    };
    print_summary(&app, &s, rpc.path(), metrics.as_ref().map(MetricsServer::addr));

    let sig = signals.forever().next();
    eprintln!(
        "lull target: {}, stopping: no new connections, running I/O finishes, then connections close",
        match sig {
            Some(signal_hook::consts::SIGINT) => "SIGINT",
            Some(signal_hook::consts::SIGTERM) => "SIGTERM",
            _ => "signal",
        }
    );
    // A second signal while draining means "now": exit without waiting.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("lull target: second signal, exiting without waiting for the shutdown to finish");
            std::process::exit(1);
        }
    });
    drop(metrics);
    drop(rpc);
    app.shutdown();
    eprintln!("lull target: stopped");
    Ok(())
}

/// Reads and checks a JSON config before anything starts.
fn read_json_config(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--json-config {}: {e}", path.display()))?;
    let doc = serde_json::from_str(&text).map_err(|e| format!("--json-config {}: not JSON: {e}", path.display()))?;
    if let Some(key) = lull_daemon::rpc::duplicates::first_duplicate_key(text.as_bytes()) {
        return Err(format!(
            "--json-config {}: key `{key}` appears twice in one object",
            path.display()
        ));
    }
    config_json::check(&doc).map_err(|e| format!("--json-config {}: {e}", path.display()))?;
    Ok(doc)
}

/// The live settings given as flags, by their `lull_set_options` names.
fn flag_settings(a: &TargetArgs) -> serde_json::Map<String, serde_json::Value> {
    let mut given = a.live.given.clone();
    // interrupt_mode as the policy it means, so a file's mode_policy cannot outrank it.
    if let Some(SettingValue::Bool(i)) = given.remove("interrupt_mode") {
        let policy = if i { "interrupt" } else { "poll" };
        given
            .entry("mode_policy")
            .or_insert_with(|| SettingValue::Word(policy.to_string()));
    }
    given.into_iter().map(|(k, v)| (k.to_string(), v.to_json())).collect()
}

/// Applies the JSON config after the TOML file's objects; flags win: their
/// values replace the file's in the entries that set them (so a controller
/// attached by the file gets the flags' initiator options), and are set again
/// after the file.
fn apply_json_config(app: &App, doc: &serde_json::Value, a: &TargetArgs) -> Result<(), String> {
    use serde_json::{Map, Value, json};
    let live = flag_settings(a);
    let mut overrides: config_json::Overrides = Vec::new();
    let mut transport = Map::new();
    if let Some(v) = a.in_capsule_data_size {
        transport.insert("in_capsule_data_size".into(), json!(v));
    }
    if let Some(v) = a.max_h2c_data {
        transport.insert("max_h2c_data".into(), json!(v));
    }
    if a.no_c2h_success {
        transport.insert("c2h_success".into(), json!(false));
    }
    overrides.push(("nvmf_create_transport", transport));
    // Each setting goes to the entry of its part: the initiator's to
    // bdev_nvme_set_options under SPDK's names, the rest to lull_set_options.
    let mut nvme = Map::new();
    let mut own = Map::new();
    let mut raid = Map::new();
    for (k, v) in &live {
        let Some(s) = settings::find(k, &[]) else { continue };
        match s.part {
            Part::Initiator => {
                nvme.insert(s.spdk_name().into(), v.clone());
                if s.name == "timeout_us" {
                    let none = v.as_u64() == Some(0);
                    nvme.insert("action_on_timeout".into(), json!(if none { "none" } else { "reset" }));
                }
            }
            Part::Supervisor | Part::Reactors => {
                own.insert(k.clone(), v.clone());
            }
            Part::Raid => {
                raid.insert(k.clone(), v.clone());
            }
            Part::Shorthand => {}
        }
    }
    overrides.push(("bdev_nvme_set_options", nvme));
    overrides.push(("lull_set_options", own));
    overrides.push(("bdev_raid_set_options", raid));
    // Each skipped entry is logged as a warning by the loader.
    let on_error = if a.json_ignore_init_errors {
        config_json::OnError::KeepGoing
    } else {
        config_json::OnError::Stop
    };
    let report = config_json::load_with(app, doc, &overrides, on_error).map_err(|e| e.message)?;
    for f in &report.failed {
        eprintln!("lull target: --json-config: {f} (passed over: --json-ignore-init-errors)");
    }
    if !live.is_empty() {
        config_json::call(app, "lull_set_options", Value::Object(live))
            .map_err(|e| format!("the flags' settings after the file: {}", e.message))?;
    }
    tracing::info!(
        entries = report.applied,
        failed = report.failed.len(),
        "JSON config applied"
    );
    Ok(())
}

/// Where a subsystem is reachable, for the start-up banner.
fn reach_line(reach: &[SocketAddr]) -> String {
    if reach.is_empty() {
        "not reachable yet: no listener (nvmf_subsystem_add_listener, or lull subsystem add-listener)".to_string()
    } else {
        format!(
            "on {}",
            reach.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        )
    }
}

fn print_summary(app: &App, s: &config::Settings, rpc: &std::path::Path, metrics: Option<SocketAddr>) {
    let t = app.target();
    let ports = t.listeners();
    eprintln!(
        "lull target: reactors on CPUs {}, mode policy {}; JSON-RPC on {}{}",
        app.cores(),
        s.supervisor.policy,
        rpc.display(),
        metrics
            .map(|m| format!("; metrics on http://{m}/metrics"))
            .unwrap_or_default()
    );
    // What a replica's allow-list needs when this daemon attaches to it.
    eprintln!(
        "  initiator host NQN (bdev_nvme_attach_controller without hostnqn): {}",
        lull_daemon::rpc::default_hostnqn()
    );
    let subs: Vec<_> = t
        .subsystems()
        .into_iter()
        .filter(|x| x.kind == lull_engine::nvmf::subsystem::SubsystemKind::Nvm)
        .collect();
    if subs.is_empty() {
        eprintln!(
            "  no subsystem yet: build one over JSON-RPC (lull subsystem --help, or SPDK's rpc.py -s {})",
            rpc.display()
        );
    }
    for sub in subs {
        let reach: Vec<SocketAddr> = ports.iter().copied().filter(|p| t.reachable(&sub, *p)).collect();
        eprintln!("  subsystem {} {}", sub.nqn, reach_line(&reach));
        for n in sub.namespaces().iter() {
            eprintln!(
                "    namespace {} = {} ({} x {} B)",
                n.nsid,
                n.bdev.info().name,
                n.bdev.info().num_blocks,
                n.bdev.info().block_size
            );
        }
        if let Some(p) = reach.first() {
            // A wildcard port: which of the node's addresses a host uses is not known here.
            let addr = if p.ip().is_unspecified() {
                "<an address of this node>".to_string()
            } else {
                p.ip().to_string()
            };
            eprintln!(
                "    connect: nvme connect -t tcp -a {addr} -s {} -n {}",
                p.port(),
                sub.nqn
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: TargetArgs,
    }

    fn settings_of(args: &[&str]) -> Result<config::Settings, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        settings(&t.a)
    }

    #[test]
    fn flags_make_one_subsystem_on_the_default_port() {
        let s = settings_of(&["--ram-bdev", "Ram0:1MiB", "--null-bdev", "N:4096", "--allow-any-host"]).unwrap();
        assert_eq!(s.bdevs.len(), 2);
        assert_eq!(s.subsystems.len(), 1);
        assert_eq!(s.subsystems[0].nqn, "nqn.2024-01.io.lull:vol0");
        assert_eq!(
            s.subsystems[0].namespaces,
            vec![("Ram0".to_string(), 0), ("N".to_string(), 0)]
        );
        assert_eq!(s.listen, vec!["127.0.0.1:4420".parse::<SocketAddr>().unwrap()]);
        assert_eq!(s.supervisor.policy, lull_reactor::supervisor::Policy::Interrupt);
    }

    #[test]
    fn no_storage_is_an_empty_target() {
        let s = settings_of(&[]).unwrap();
        assert!(s.bdevs.is_empty() && s.subsystems.is_empty() && s.listen.is_empty());
        assert_eq!(s.rpc_socket, PathBuf::from("/var/tmp/lull.sock"));
    }

    #[test]
    fn longhorn_flag_aliases() {
        let s = settings_of(&[
            "--data-engine-interrupt-mode-enabled",
            "false",
            "--data-engine-nvme-ioq-poll-period-us",
            "250",
        ])
        .unwrap();
        assert_eq!(s.supervisor.policy, lull_reactor::supervisor::Policy::Poll);
        assert_eq!(s.nvme.nvme_ioq_poll_period_us, 250);
    }

    fn args_of(args: &[&str]) -> TargetArgs {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn json_config_flag_and_the_settings_flags_that_win_over_it() {
        let a = args_of(&[
            "--json",
            "/tmp/x.json",
            "--interrupt-mode",
            "false",
            "--idle-poll-us",
            "9",
        ]);
        assert_eq!(a.json_config, Some(PathBuf::from("/tmp/x.json")));
        let m = flag_settings(&a);
        assert_eq!(m.get("mode_policy"), Some(&serde_json::json!("poll")));
        assert_eq!(m.get("idle_poll_us"), Some(&serde_json::json!(9)));
        assert_eq!(m.len(), 2, "{m:?}");
        let a = args_of(&[
            "--json-config",
            "f",
            "--interrupt-mode",
            "false",
            "--mode-policy",
            "adaptive",
        ]);
        assert_eq!(
            flag_settings(&a).get("mode_policy"),
            Some(&serde_json::json!("adaptive"))
        );
        assert!(flag_settings(&args_of(&[])).is_empty());
    }

    #[test]
    fn banner_of_a_subsystem_without_a_listener_says_so() {
        assert!(
            reach_line(&[]).starts_with("not reachable yet: no listener"),
            "{}",
            reach_line(&[])
        );
        let a: SocketAddr = "127.0.0.1:4420".parse().unwrap();
        let b: SocketAddr = "[::1]:4421".parse().unwrap();
        assert_eq!(reach_line(&[a, b]), "on 127.0.0.1:4420, [::1]:4421");
    }

    #[test]
    fn a_json_file_given_to_config_is_the_json_config() {
        let dir = std::env::temp_dir().join(format!("lull-route-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("state.json");
        std::fs::write(&json, "\n  {\"subsystems\": []}\n").unwrap();
        let toml = dir.join("lull.toml");
        std::fs::write(&toml, "# a comment\nlisten = [\"127.0.0.1:4420\"]\n").unwrap();
        let j = json.to_str().unwrap();
        let mut a = args_of(&["-c", j]);
        let line = route_json_config(&mut a).unwrap().unwrap();
        assert!(line.contains("--json-config") && line.contains(j), "{line}");
        assert_eq!((a.config, a.json_config), (None, Some(json.clone())));
        let mut a = args_of(&["--config", toml.to_str().unwrap()]);
        assert_eq!(route_json_config(&mut a).unwrap(), None);
        assert_eq!((a.config, a.json_config), (Some(toml.clone()), None));
        let mut a = args_of(&["-c", j, "--json-config", j]);
        let e = route_json_config(&mut a).unwrap_err();
        assert!(e.contains("--json-config"), "{e}");
        // Settings from a JSON -c read no TOML: no parse error.
        let mut a = args_of(&["-c", j]);
        route_json_config(&mut a).unwrap();
        settings(&a).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_json_config_is_refused_before_anything_starts() {
        let dir = std::env::temp_dir().join(format!("lull-jsoncfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.json");
        std::fs::write(
            &f,
            r#"{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_aio_create","params":{}}]}]}"#,
        )
        .unwrap();
        let e = read_json_config(&f).unwrap_err();
        assert!(
            e.contains("subsystems[0].config[0] (bdev_aio_create): method not implemented by lull"),
            "{e}"
        );
        std::fs::write(&f, "{\"subsystems\": [").unwrap();
        let e = read_json_config(&f).unwrap_err();
        assert!(e.contains("not JSON") && e.contains("line 1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let e = settings_of(&["--ram-bdev", "Ram0"]).unwrap_err();
        assert!(e.contains("--ram-bdev `Ram0`: expected NAME:SIZE"), "{e}");
        let e = settings_of(&["--ram-bdev", "Ram0:1MiB"]).unwrap_err();
        assert!(e.contains("--allow-any-host"), "{e}");
        let e = settings_of(&["--mode-policy", "pol"]).unwrap_err();
        assert!(
            e.contains("mode_policy = \"pol\": one of poll, interrupt, hybrid, adaptive"),
            "{e}"
        );
        let e = settings_of(&["--ram-bdev", "Ram0:1MiB", "--allow-any-host", "--block-size", "1024"]).unwrap_err();
        assert!(e.contains("bdev[0].block_size = 1024: 512 or 4096 bytes"), "{e}");
    }
}
