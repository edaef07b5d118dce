//! The commands that talk to a running `lull target` over its JSON-RPC
//! socket: `status`, `mode`, `set`/`get`, `bdev`, `subsystem`, `rpc`
//! (`raid` is in raid_cmd.rs).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use lull_daemon::settings;
use serde_json::{Value, json};

use crate::live_flags;

/// Where the daemon listens: the top-level `-r/--rpc-socket`, which is
/// global (accepted before or after the subcommand, as `rpc.py -s SOCK
/// method` users write it); `main` fills it in after parsing.
#[derive(Args, Debug, Clone)]
pub struct Socket {
    /// The daemon's JSON-RPC socket.
    #[arg(skip = PathBuf::from(lull_daemon::config::DEFAULT_RPC_SOCKET))]
    pub rpc_socket: PathBuf,
}

/// One JSON-RPC connection to the daemon.
pub struct Client {
    stream: UnixStream,
    next_id: u64,
    buf: Vec<u8>,
    /// Parse attempts made (an answer is parsed again only when it may have
    /// ended, or doubled, so a large one costs linear time).
    parses: usize,
}

impl Client {
    /// Connects.
    ///
    /// # Errors
    /// One line naming the socket and what to check.
    pub fn connect(path: &Path) -> Result<Client, String> {
        let stream = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot reach the daemon at {}: {e} (is `lull target` running? -r/--rpc-socket picks another socket)",
                path.display()
            )
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        Ok(Client {
            stream,
            next_id: 1,
            buf: Vec::new(),
            parses: 0,
        })
    }

    /// Calls `method` and returns its result.
    ///
    /// # Errors
    /// `RPC error CODE: MESSAGE` from the daemon, or the transport failure.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            req["params"] = params;
        }
        self.stream
            .write_all(req.to_string().as_bytes())
            .map_err(|e| format!("{method}: cannot send: {e}"))?;
        let resp = self.read_one().map_err(|e| format!("{method}: {e}"))?;
        if let Some(err) = resp.get("error") {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let msg = err.get("message").and_then(Value::as_str).unwrap_or("(no message)");
            return Err(format!("{method}: RPC error {code}: {msg}"));
        }
        resp.get("result")
            .cloned()
            .ok_or_else(|| format!("{method}: the answer has neither result nor error"))
    }

    fn read_one(&mut self) -> Result<Value, String> {
        let mut chunk = [0u8; 16 * 1024];
        // Parsing from the start after every chunk would cost time
        // quadratic in the answer's size (a bdev list of thousands takes
        // minutes): parse when the bytes so far may end a JSON text (an
        // object's `}`, an array's `]`, the daemon's newline) or doubled.
        let mut may_end = true;
        let mut retry_at = 0usize;
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if !self.buf.is_empty() && (may_end || self.buf.len() >= retry_at) {
                self.parses += 1;
                let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
                match it.next() {
                    Some(Ok(v)) => {
                        let used = it.byte_offset();
                        self.buf.drain(..used);
                        return Ok(v);
                    }
                    Some(Err(e)) if !e.is_eof() => return Err(format!("malformed answer: {e}")),
                    _ => retry_at = self.buf.len() * 2,
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the daemon closed the connection".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    may_end = matches!(chunk[n - 1], b'}' | b']' | b'\n' | b' ' | b'\r' | b'\t');
                }
                Err(e) => return Err(format!("no answer: {e}")),
            }
        }
    }
}

/// A sampler of a running daemon's reactors for `lull perf`/`lull bench`
/// (`--target-rpc`): (thread CPU ns, wakeups) summed over its reactors.
pub fn target_sampler(path: PathBuf) -> lull_perf::nvme_perf::TargetCpu {
    let client = std::sync::Mutex::new(None::<Client>);
    lull_perf::nvme_perf::TargetCpu::Sampler(std::sync::Arc::new(move || {
        let mut c = client.lock().ok()?;
        if c.is_none() {
            *c = Client::connect(&path).ok();
        }
        let status = match c.as_mut()?.call("lull_get_status", Value::Null) {
            Ok(v) => v,
            Err(_) => {
                *c = None;
                return None;
            }
        };
        let rs = status.get("reactors")?.as_array()?;
        Some(rs.iter().fold((0, 0), |(cpu, wk), r| {
            (cpu + field(r, "thread_cpu_ns"), wk + field(r, "wakeups"))
        }))
    }))
}

/// Sets a running daemon's mode policy on every core (`lull bench --target-rpc`).
///
/// # Errors
/// The daemon unreachable, or its error.
pub fn set_target_policy(path: &Path, policy: lull_reactor::supervisor::Policy) -> Result<(), String> {
    Client::connect(path)?.call("lull_reactor_set_mode", json!({ "mode": policy.as_str() }))?;
    Ok(())
}

/// Sets live options of a running daemon (`lull_set_options`), e.g.
/// `{"idle_poll_us": 50}` (`lull bench load --target-rpc`).
///
/// # Errors
/// The daemon unreachable, or its error.
pub fn set_target_options(path: &Path, options: Value) -> Result<(), String> {
    Client::connect(path)?.call("lull_set_options", options)?;
    Ok(())
}

/// A running daemon's live options (`lull_get_options`), as a JSON object.
///
/// # Errors
/// The daemon unreachable, or its error.
pub fn get_target_options(path: &Path) -> Result<Value, String> {
    Client::connect(path)?.call("lull_get_options", Value::Null)
}

pub(crate) fn call(sock: &Socket, method: &str, params: Value) -> Result<Value, String> {
    Client::connect(&sock.rpc_socket)?.call(method, params)
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

// ---- status ----

/// `lull status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Sampling window for the rates, ms (100 to 60000).
    #[arg(long, default_value_t = 1000, value_parser = crate::ranged(100, 60_000))]
    interval_ms: u64,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

fn field(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Per-core rates over two `lull_get_status` samples.
fn rates(a: &Value, b: &Value) -> Vec<Value> {
    let empty = vec![];
    let ra = a.get("reactors").and_then(Value::as_array).unwrap_or(&empty);
    let rb = b.get("reactors").and_then(Value::as_array).unwrap_or(&empty);
    ra.iter()
        .zip(rb)
        .map(|(x, y)| {
            let wall = (field(y, "taken_at_ns").saturating_sub(field(x, "taken_at_ns"))).max(1) as f64;
            let d = |k: &str| field(y, k).saturating_sub(field(x, k)) as f64;
            let secs = wall / 1e9;
            json!({
                "core": field(y, "lcore"),
                "mode": y.get("mode").cloned().unwrap_or(Value::Null),
                "policy": y.get("policy").cloned().unwrap_or(Value::Null),
                "spin_window_us": y.get("spin_window_us").cloned().unwrap_or(Value::Null),
                "interrupt_mode_enabled": y.get("interrupt_mode_enabled").cloned().unwrap_or(Value::Null),
                "busy_pct": 100.0 * d("busy_ns") / wall,
                "cpu_pct": 100.0 * d("thread_cpu_ns") / wall,
                "wakeups_per_sec": d("wakeups") / secs,
                "connections": field(y, "queues"),
                "iops": (d("reads") + d("writes")) / secs,
                "mib_per_sec": (d("bytes_read") + d("bytes_written")) / secs / 1048576.0,
            })
        })
        .collect()
}

/// Runs `lull status`.
///
/// # Errors
/// The daemon unreachable, or its error.
pub fn status(a: StatusArgs) -> Result<(), String> {
    let mut c = Client::connect(&a.socket.rpc_socket)?;
    let first = c.call("lull_get_status", Value::Null)?;
    std::thread::sleep(Duration::from_millis(a.interval_ms));
    let second = c.call("lull_get_status", Value::Null)?;
    let rows = rates(&first, &second);
    if a.json {
        let mut out = second.clone();
        out["rates"] = Value::Array(rows);
        out["interval_ms"] = json!(a.interval_ms);
        print_json(&out);
        return Ok(());
    }
    println!(
        "lull {} (pid {}), up {} s; mode policy {}, latency_budget_us {}, idle_poll_us {}; {} subsystem(s), {} controller(s), {} NVMe controller(s) attached; listening on {}",
        second["version"].as_str().unwrap_or("?"),
        field(&second, "pid"),
        field(&second, "uptime_ms") / 1000,
        second["mode_policy"].as_str().unwrap_or("?"),
        field(&second, "latency_budget_us"),
        field(&second, "idle_poll_us"),
        field(&second, "subsystems"),
        field(&second, "controllers"),
        field(&second, "nvme_controllers"),
        second["listeners"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "nothing".into()),
    );
    println!(
        "{:>5} {:>10} {:>10} {:>7} {:>7} {:>7} {:>10} {:>11} {:>10} {:>9}",
        "core", "mode", "policy", "spin_us", "busy%", "cpu%", "wakeups/s", "connections", "IOPS", "MiB/s"
    );
    let raids = second["raids"].as_array().cloned().unwrap_or_default();
    for r in rows {
        // The budget policy's own spin window, where it set one.
        let spin = r["spin_window_us"].as_u64().map_or("-".to_string(), |w| w.to_string());
        println!(
            "{:>5} {:>10} {:>10} {:>7} {:>7.1} {:>7.1} {:>10.0} {:>11} {:>10.0} {:>9.1}",
            r["core"].as_u64().unwrap_or(0),
            r["mode"].as_str().unwrap_or("?"),
            r["policy"].as_str().unwrap_or("?"),
            spin,
            r["busy_pct"].as_f64().unwrap_or(0.0),
            r["cpu_pct"].as_f64().unwrap_or(0.0),
            r["wakeups_per_sec"].as_f64().unwrap_or(0.0),
            r["connections"].as_u64().unwrap_or(0),
            r["iops"].as_f64().unwrap_or(0.0),
            r["mib_per_sec"].as_f64().unwrap_or(0.0),
        );
    }
    for r in &raids {
        println!("{}", raid_status_line(r));
    }
    Ok(())
}

/// A raid volume in `lull status`: state, bases, rebuild progress.
fn raid_status_line(r: &Value) -> String {
    let rebuild = match r.get("process") {
        Some(p) if p.is_object() => format!(
            "; {} of {}: {:.1}% ({} of {} blocks)",
            p["type"].as_str().unwrap_or("?"),
            p["target"].as_str().unwrap_or("?"),
            p["percent"].as_f64().unwrap_or(0.0),
            field(p, "blocks"),
            field(p, "total_blocks"),
        ),
        _ => String::new(),
    };
    format!(
        "raid {}: {}, {} of {} base bdevs operational{rebuild}",
        r["name"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        field(r, "num_base_bdevs_operational"),
        field(r, "num_base_bdevs"),
    )
}

// ---- mode ----

/// `lull mode`.
#[derive(Args, Debug)]
pub struct ModeArgs {
    #[command(subcommand)]
    what: ModeCmd,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

#[derive(Subcommand, Debug)]
enum ModeCmd {
    /// Set the mode policy of every core, or of one with --core.
    ///
    /// Example: lull mode set adaptive; lull mode set poll --core 2;
    /// lull mode set budget --latency-budget-us 100
    Set {
        /// The policy (the words of the setting mode_policy).
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(live_flags::words("mode_policy")))]
        mode: String,
        /// Only this CPU's reactor.
        #[arg(long)]
        core: Option<usize>,
        /// Sets latency_budget_us: what each reactor may add at the 99th
        /// percentile under the budget policy.
        #[arg(long, value_parser = live_flags::int_parser("latency_budget_us"))]
        latency_budget_us: Option<u64>,
    },
    /// Show the policy and thresholds.
    Get,
}

/// Runs `lull mode`.
///
/// # Errors
/// The daemon unreachable, or its error.
pub fn mode(a: ModeArgs) -> Result<(), String> {
    match a.what {
        ModeCmd::Set {
            mode,
            core,
            latency_budget_us,
        } => {
            let mut p = json!({ "mode": mode });
            if let Some(c) = core {
                p["core"] = json!(c);
            }
            if let Some(b) = latency_budget_us {
                p["latency_budget_us"] = json!(b);
            }
            call(&a.socket, "lull_reactor_set_mode", p)?;
            let budget = latency_budget_us.map_or(String::new(), |b| format!(", latency_budget_us {b}"));
            match core {
                Some(c) => eprintln!("core {c}: mode policy {mode}{budget}"),
                None => eprintln!("every core: mode policy {mode}{budget}"),
            }
        }
        ModeCmd::Get => print_json(&call(&a.socket, "lull_supervisor_get_config", Value::Null)?),
    }
    Ok(())
}

// ---- set / get ----

/// `lull set NAME VALUE`.
#[derive(Args, Debug)]
pub struct SetArgs {
    /// The setting: one of the settings table's names or aliases (`-` and
    /// `_` alike). Settings read at start (cores, listen, ...) need a
    /// restart: lull set says so.
    #[arg(long_help = set_name_help())]
    name: String,
    /// Its value (a number, true/false, or a word).
    #[arg(allow_negative_numbers = true)]
    value: String,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

/// `lull set --help`'s text for NAME: every live setting, from the table.
fn set_name_help() -> String {
    let lines: Vec<String> = settings::SETTINGS
        .iter()
        .map(|s| {
            let aliases: Vec<&str> = s.names(settings::EVERY_NAME).skip(1).collect();
            let aliases = if aliases.is_empty() {
                String::new()
            } else {
                format!(" (also {})", aliases.join(", "))
            };
            format!("  {}{aliases}: {}", s.name, live_flags::help(s))
        })
        .collect();
    format!(
        "The setting, by its name or an alias (- and _ alike). Settings read at start (cores, listen, ...) need a restart: lull set says so.\n\n{}",
        lines.join("\n")
    )
}

/// The setting `name` (as `lull set` and `lull get` take it) with the
/// spelling it matched.
fn live_setting(name: &str) -> Result<(&'static settings::Setting, &'static str), String> {
    settings::find_loose(name).ok_or_else(|| {
        format!(
            "no live setting `{name}`: one of {} (lull get shows them with their values)",
            settings::name_list()
        )
    })
}

/// Runs `lull set`.
///
/// # Errors
/// The name unknown, the value out of range (naming the setting and the
/// range), or the daemon's error.
pub fn set(a: SetArgs) -> Result<(), String> {
    if let Some(why) = lull_daemon::restart_only::restart_needed(&a.name) {
        return Err(why);
    }
    let (s, name) = live_setting(&a.name)?;
    let v = live_flags::parse(s, name, &a.value)?.to_json();
    let mut p = serde_json::Map::new();
    p.insert(name.to_string(), v.clone());
    call(&a.socket, "lull_set_options", Value::Object(p)).map_err(|e| format!("{name} = {}: {e}", a.value))?;
    eprintln!("{name} = {v}");
    Ok(())
}

/// `lull get [NAME]`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// One setting (default: all).
    name: Option<String>,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

/// Runs `lull get`.
///
/// # Errors
/// The daemon unreachable, or an unknown name.
pub fn get(a: GetArgs) -> Result<(), String> {
    let all = call(&a.socket, "lull_get_options", Value::Null)?;
    match a.name {
        None => print_json(&all),
        Some(n) => {
            // A setting of the table by any of its names; the other keys
            // lull_get_options shows (core_policy, action_on_timeout) as they are.
            let key = settings::find_loose(&n).map_or_else(|| n.replace('-', "_"), |(s, _)| s.name.to_string());
            let v = all
                .get(&key)
                .cloned()
                .ok_or_else(|| format!("no setting `{n}` (lull get lists them)"))?;
            println!("{v}");
        }
    }
    Ok(())
}

// ---- bdev ----

/// `lull bdev`.
#[derive(Args, Debug)]
pub struct BdevArgs {
    #[command(subcommand)]
    what: BdevCmd,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

#[derive(Subcommand, Debug)]
enum BdevCmd {
    /// List bdevs (SPDK's bdev_get_bdevs).
    List {
        /// Print the JSON.
        #[arg(long)]
        json: bool,
    },
    /// A RAM bdev. Example: lull bdev malloc Malloc0 256MiB
    Malloc {
        /// Name.
        name: String,
        /// Size (bytes, or with KiB/MiB/GiB/TiB).
        #[arg(value_parser = lull_daemon::config::parse_size)]
        size: u64,
        /// Block size, bytes (512 or 4096).
        #[arg(long, default_value_t = 512)]
        block_size: u32,
    },
    /// A null bdev (reads zeroes, discards writes). Example: lull bdev null Null0 1GiB
    Null {
        /// Name.
        name: String,
        /// Size.
        #[arg(value_parser = lull_daemon::config::parse_size)]
        size: u64,
        /// Block size, bytes (512 or 4096).
        #[arg(long, default_value_t = 512)]
        block_size: u32,
    },
    /// A file or block device on io_uring. Example: lull bdev uring Disk0 /dev/nvme1n1
    Uring {
        /// Name.
        name: String,
        /// The file or block device (it must exist).
        filename: PathBuf,
        /// Block size, bytes (512 or 4096).
        #[arg(long, default_value_t = 512)]
        block_size: u32,
    },
    /// Delete a malloc, null or uring bdev (its namespaces go with it).
    Delete {
        /// Name.
        name: String,
    },
}

fn blocks(size: u64, block_size: u32) -> Result<u64, String> {
    if block_size == 0 || !size.is_multiple_of(u64::from(block_size)) {
        return Err(format!("size {size} is not a multiple of the block size {block_size}"));
    }
    Ok(size / u64::from(block_size))
}

/// Runs `lull bdev`.
///
/// # Errors
/// The daemon's error.
pub fn bdev(a: BdevArgs) -> Result<(), String> {
    let s = &a.socket;
    match a.what {
        BdevCmd::List { json } => {
            let v = call(s, "bdev_get_bdevs", Value::Null)?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "{:<20} {:<14} {:>12} {:>6} {:>10} claimed",
                    "name", "product", "blocks", "bs", "MiB"
                );
                for b in v.as_array().into_iter().flatten() {
                    let (n, bs) = (field(b, "num_blocks"), field(b, "block_size"));
                    println!(
                        "{:<20} {:<14} {:>12} {:>6} {:>10} {}",
                        b["name"].as_str().unwrap_or("?"),
                        b["product_name"].as_str().unwrap_or("?"),
                        n,
                        bs,
                        n * bs / 1048576,
                        b["claimed"]
                    );
                }
            }
        }
        BdevCmd::Malloc { name, size, block_size } => {
            let r = call(
                s,
                "bdev_malloc_create",
                json!({"name": name, "num_blocks": blocks(size, block_size)?, "block_size": block_size}),
            )?;
            println!("{}", r.as_str().unwrap_or_default());
        }
        BdevCmd::Null { name, size, block_size } => {
            let r = call(
                s,
                "bdev_null_create",
                json!({"name": name, "num_blocks": blocks(size, block_size)?, "block_size": block_size}),
            )?;
            println!("{}", r.as_str().unwrap_or_default());
        }
        BdevCmd::Uring {
            name,
            filename,
            block_size,
        } => {
            let r = call(
                s,
                "bdev_uring_create",
                json!({"name": name, "filename": filename, "block_size": block_size}),
            )?;
            println!("{}", r.as_str().unwrap_or_default());
        }
        BdevCmd::Delete { name } => {
            let list = call(s, "bdev_get_bdevs", json!({ "name": name }))
                .map_err(|_| format!("bdev {name} does not exist (lull bdev list shows them)"))?;
            let product = list[0]["product_name"].as_str().unwrap_or("");
            if product == "Raid Volume" {
                return Err(format!(
                    "bdev {name} is a raid volume; delete it with `lull raid delete {name}`"
                ));
            }
            if !matches!(product, "Malloc disk" | "Null disk" | "URING bdev") {
                return Err(format!(
                    "bdev {name} is a {product}; detach its NVMe controller instead (bdev_nvme_detach_controller)"
                ));
            }
            // lull_bdev_delete answers with the namespaces removed with the bdev.
            let r = call(s, "lull_bdev_delete", json!({ "name": name }))?;
            let removed: Vec<String> = r["removed_namespaces"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .map(|n| format!("{} nsid {}", n["nqn"].as_str().unwrap_or("?"), n["nsid"]))
                        .collect()
                })
                .unwrap_or_default();
            if removed.is_empty() {
                println!("deleted bdev {name} (it was no namespace)");
            } else {
                println!(
                    "deleted bdev {name}; namespaces removed with it: {}",
                    removed.join(", ")
                );
            }
        }
    }
    Ok(())
}

// ---- subsystem ----

/// `lull subsystem`.
#[derive(Args, Debug)]
pub struct SubsystemArgs {
    #[command(subcommand)]
    what: SubsystemCmd,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

#[derive(Subcommand, Debug)]
enum SubsystemCmd {
    /// List subsystems (SPDK's nvmf_get_subsystems).
    List,
    /// Create one. Example: lull subsystem create nqn.2024-01.io.lull:vol1 --allow-any-host
    Create {
        /// NQN.
        nqn: String,
        /// Serial number (1-20 ASCII characters).
        #[arg(long)]
        serial: Option<String>,
        /// Model number (1-40 ASCII characters).
        #[arg(long)]
        model: Option<String>,
        /// Any host may connect.
        #[arg(long)]
        allow_any_host: bool,
        /// Most namespaces (1 to 1024).
        #[arg(long)]
        max_namespaces: Option<u32>,
    },
    /// Delete one (its controllers are disconnected).
    Delete {
        /// NQN.
        nqn: String,
    },
    /// Add a bdev as a namespace. Example: lull subsystem add-ns nqn.2024-01.io.lull:vol1 Malloc0
    AddNs {
        /// NQN.
        nqn: String,
        /// Bdev.
        bdev: String,
        /// NSID (default: the lowest free).
        #[arg(long)]
        nsid: Option<u32>,
    },
    /// Remove a namespace.
    RemoveNs {
        /// NQN.
        nqn: String,
        /// NSID.
        nsid: u32,
    },
    /// Listen for it on ADDR:PORT (creating the TCP transport if needed).
    /// Example: lull subsystem add-listener nqn.2024-01.io.lull:vol1 0.0.0.0:4420
    /// Example (TLS only): lull subsystem add-listener --secure-channel nqn.2024-01.io.lull:vol1 0.0.0.0:4421
    AddListener {
        /// NQN (or `discovery`).
        nqn: String,
        /// ADDR:PORT.
        addr: String,
        /// TLS 1.3 only on this port (SPDK's --secure-channel): hosts connect
        /// with the PSK given them by `add-host --psk`.
        #[arg(long)]
        secure_channel: bool,
    },
    /// Stop listening for it on ADDR:PORT.
    RemoveListener {
        /// NQN (or `discovery`).
        nqn: String,
        /// ADDR:PORT.
        addr: String,
    },
    /// Allow a host.
    /// Example (with a TLS PSK): lull rpc keyring_file_add_key '{"name":"psk0","path":"/etc/lull/keys/h1.psk"}'
    /// then lull subsystem add-host --psk psk0 nqn.2024-01.io.lull:vol1 HOSTNQN
    AddHost {
        /// NQN.
        nqn: String,
        /// Host NQN.
        host: String,
        /// The keyring name of the host's TLS PSK (an NVMeTLSkey-1 file added
        /// with keyring_file_add_key), for secure_channel listeners.
        #[arg(long, value_name = "KEYNAME")]
        psk: Option<String>,
    },
    /// Disallow a host (its controllers are disconnected).
    RemoveHost {
        /// NQN.
        nqn: String,
        /// Host NQN.
        host: String,
    },
    /// Let any host connect, or (with --no) only the listed ones.
    AllowAnyHost {
        /// NQN.
        nqn: String,
        /// Turn it off.
        #[arg(long)]
        no: bool,
    },
}

fn listen_address(addr: &str) -> Result<Value, String> {
    let a = lull_daemon::config::parse_addr(addr).map_err(|e| format!("`{addr}`: {e}"))?;
    Ok(json!({
        "trtype": "TCP",
        "adrfam": if a.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": a.ip().to_string(),
        "trsvcid": a.port().to_string(),
    }))
}

/// Runs `lull subsystem`.
///
/// # Errors
/// The daemon's error.
pub fn subsystem(a: SubsystemArgs) -> Result<(), String> {
    let s = &a.socket;
    match a.what {
        SubsystemCmd::List => print_json(&call(s, "nvmf_get_subsystems", Value::Null)?),
        SubsystemCmd::Create {
            nqn,
            serial,
            model,
            allow_any_host,
            max_namespaces,
        } => {
            let mut p = json!({"nqn": nqn, "allow_any_host": allow_any_host});
            if let Some(v) = serial {
                p["serial_number"] = json!(v);
            }
            if let Some(v) = model {
                p["model_number"] = json!(v);
            }
            if let Some(v) = max_namespaces {
                p["max_namespaces"] = json!(v);
            }
            call(s, "nvmf_create_subsystem", p)?;
        }
        SubsystemCmd::Delete { nqn } => {
            call(s, "nvmf_delete_subsystem", json!({ "nqn": nqn }))?;
        }
        SubsystemCmd::AddNs { nqn, bdev, nsid } => {
            let mut ns = json!({ "bdev_name": bdev });
            if let Some(n) = nsid {
                ns["nsid"] = json!(n);
            }
            let r = call(s, "nvmf_subsystem_add_ns", json!({"nqn": nqn, "namespace": ns}))?;
            println!("{r}");
        }
        SubsystemCmd::RemoveNs { nqn, nsid } => {
            call(s, "nvmf_subsystem_remove_ns", json!({"nqn": nqn, "nsid": nsid}))?;
        }
        SubsystemCmd::AddListener {
            nqn,
            addr,
            secure_channel,
        } => {
            let mut c = Client::connect(&s.rpc_socket)?;
            let transports = c.call("nvmf_get_transports", Value::Null)?;
            if transports.as_array().is_none_or(Vec::is_empty) {
                c.call("nvmf_create_transport", json!({"trtype": "TCP"}))?;
            }
            c.call(
                "nvmf_subsystem_add_listener",
                json!({"nqn": nqn, "listen_address": listen_address(&addr)?, "secure_channel": secure_channel}),
            )?;
        }
        SubsystemCmd::RemoveListener { nqn, addr } => {
            call(
                s,
                "nvmf_subsystem_remove_listener",
                json!({"nqn": nqn, "listen_address": listen_address(&addr)?}),
            )?;
        }
        SubsystemCmd::AddHost { nqn, host, psk } => {
            let mut p = json!({"nqn": nqn, "host": host});
            if let Some(k) = psk {
                p["psk"] = json!(k);
            }
            call(s, "nvmf_subsystem_add_host", p)?;
        }
        SubsystemCmd::RemoveHost { nqn, host } => {
            call(s, "nvmf_subsystem_remove_host", json!({"nqn": nqn, "host": host}))?;
        }
        SubsystemCmd::AllowAnyHost { nqn, no } => {
            call(
                s,
                "nvmf_subsystem_allow_any_host",
                json!({"nqn": nqn, "allow_any_host": !no}),
            )?;
        }
    }
    Ok(())
}

// ---- rpc ----

/// `lull rpc METHOD [PARAMS]`.
#[derive(Args, Debug)]
pub struct RpcArgs {
    /// Method, e.g. nvmf_get_subsystems (lull rpc rpc_get_methods lists them).
    method: String,
    /// Parameters as a JSON object, e.g. '{"name":"Malloc0"}'.
    params: Option<String>,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

/// Runs `lull rpc`.
///
/// # Errors
/// Bad JSON, or the daemon's error.
pub fn rpc(a: RpcArgs) -> Result<(), String> {
    let params = match &a.params {
        None => Value::Null,
        Some(p) => serde_json::from_str(p).map_err(|e| format!("params: not JSON: {e}"))?,
    };
    print_json(&call(&a.socket, &a.method, params)?);
    Ok(())
}

// ---- config ----

/// `lull config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    what: ConfigCmd,
    #[command(flatten)]
    pub(crate) socket: Socket,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Save the running daemon's state as an SPDK JSON config (`save_config`):
    /// to FILE (written to a temporary file and renamed over it), or stdout.
    Save {
        /// Where to write it; stdout when left out.
        file: Option<PathBuf>,
    },
    /// Apply an SPDK JSON config (`load_config`) to the running daemon; `-` reads stdin.
    Load {
        /// The config file.
        file: PathBuf,
    },
}

/// Writes `text` to `path` atomically: a temporary file in the same
/// directory, flushed to disk, then renamed over `path`. A `path` that is a
/// symbolic link is written where it points (the link stays), and the file's
/// permissions are kept. The temporary file is created exclusively: a link
/// or file planted at its name is never written through.
///
/// # Errors
/// A message naming the path.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let path = &resolve_links(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let mode = std::fs::metadata(path).ok().map(|m| m.permissions());
    let mut created = false;
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        created = true;
        if let Some(mode) = mode {
            f.set_permissions(mode)?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        // Only a temporary file this call made is removed, never one planted there.
        if created {
            let _ = std::fs::remove_file(&tmp);
        }
        format!("{}: {e}", path.display())
    })
}

/// `path` with symbolic links at its last component followed (a dangling
/// link gives where it would point), at most 40 deep as the kernel allows.
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
                p = base.join(to);
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// Runs `lull config`.
///
/// # Errors
/// The daemon unreachable, a file not readable/writable or not JSON, or the daemon's error.
pub fn config(a: ConfigArgs) -> Result<(), String> {
    match a.what {
        ConfigCmd::Save { file } => {
            let v = call(&a.socket, "save_config", Value::Null)?;
            let mut text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
            text.push('\n');
            match file {
                Some(p) => write_atomically(&p, &text),
                None => std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| format!("stdout: {e}")),
            }
        }
        ConfigCmd::Load { file } => {
            let text = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| format!("stdin: {e}"))?;
                s
            } else {
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?
            };
            let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))?;
            if let Some(key) = lull_daemon::rpc::duplicates::first_duplicate_key(text.as_bytes()) {
                return Err(format!("{}: key `{key}` appears twice in one object", file.display()));
            }
            let r = call(&a.socket, "load_config", doc)?;
            for w in r["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
            eprintln!(
                "{}: {} entries applied",
                file.display(),
                r["applied"].as_u64().unwrap_or(0)
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_of_a_startup_setting_says_a_restart_is_needed() {
        // No daemon is asked: the answer does not depend on one running.
        let socket = Socket {
            rpc_socket: PathBuf::from("/nonexistent/lull-test.sock"),
        };
        let e = set(SetArgs {
            name: "cores".into(),
            value: "0-3".into(),
            socket,
        })
        .unwrap_err();
        assert!(e.contains("`cores` cannot change while lull runs"), "{e}");
        assert!(e.contains("restart"), "{e}");
    }

    #[test]
    fn set_checks_every_setting_by_the_table_before_asking_the_daemon() {
        let set_at_no_daemon = |name: &str, value: &str| {
            set(SetArgs {
                name: name.into(),
                value: value.into(),
                socket: Socket {
                    rpc_socket: PathBuf::from("/nonexistent/lull-test.sock"),
                },
            })
            .unwrap_err()
        };
        for s in settings::SETTINGS {
            let example = s.example().to_json().to_string();
            for name in s.names(settings::EVERY_NAME) {
                for spelled in [name.to_string(), name.replace('_', "-"), name.replace('-', "_")] {
                    // Name and value pass: only then is the daemon asked.
                    let e = set_at_no_daemon(&spelled, &example);
                    assert!(e.contains("cannot reach the daemon"), "{spelled} {example}: {e}");
                }
            }
            // Out of range: refused here, naming the setting and the range.
            let bad = match s.kind {
                settings::Kind::Int { min, .. } => (min - 1).to_string(),
                settings::Kind::Fraction { max, .. } => (max + 0.5).to_string(),
                settings::Kind::Bool { .. } => "maybe".to_string(),
                settings::Kind::Word { .. } => "turbo".to_string(),
            };
            let e = set_at_no_daemon(s.name, &bad);
            assert!(e.starts_with(s.name) && !e.contains("cannot reach"), "{}: {e}", s.name);
            if !matches!(s.kind, settings::Kind::Bool { .. }) {
                assert!(e.contains(&s.allowed()), "{}: {e}", s.name);
            }
            assert!(set_name_help().contains(&format!("  {}", s.name)), "{}", s.name);
        }
        let e = set_at_no_daemon("no_such_setting", "1");
        assert!(
            e.contains("no live setting `no_such_setting`: one of interrupt_mode, mode_policy"),
            "{e}"
        );
    }

    #[test]
    fn a_large_answer_is_parsed_a_few_times_not_once_per_chunk() {
        use std::os::unix::net::UnixListener;
        let path = std::env::temp_dir().join(format!("lull-client-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        // 8 MiB of result in 4 KiB writes: 2048 pieces or more for the client to read.
        let big = "a".repeat(8 << 20);
        let answer = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"{big}\"}}\n");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 256];
            let _ = s.read(&mut req).unwrap();
            for piece in answer.as_bytes().chunks(4096) {
                s.write_all(piece).unwrap();
                s.flush().unwrap();
            }
        });
        let mut c = Client::connect(&path).unwrap();
        let v = c.call("spdk_get_version", Value::Null).unwrap();
        assert_eq!(v.as_str().map(str::len), Some(8 << 20));
        // Doubling from 16 KiB to 8 MiB is 10 attempts; a few more where a
        // piece happens to end the text's candidates.
        assert!(c.parses <= 24, "{} parse attempts for one answer", c.parses);
        server.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn atomic_write_follows_a_link_and_never_writes_through_a_planted_temporary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lull-atomic-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The saved path is a link to the real file: the file gets the text, the link stays.
        let real = dir.join("real.json");
        std::fs::write(&real, "old").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write_atomically(&link, "new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the file keeps its permissions");
        // A link planted at the temporary name is neither written through nor renamed into place.
        let victim = dir.join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let tmp = dir.join(format!(".x.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_atomically(&dir.join("x.json"), "config").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        assert!(!dir.join("x.json").exists());
        assert!(std::fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("lull-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("state.json");
        std::fs::write(&f, "old").unwrap();
        write_atomically(&f, "{\"subsystems\": []}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"subsystems\": []}\n");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let e = write_atomically(&dir.join("no/such/dir/x.json"), "x").unwrap_err();
        assert!(e.contains("no/such/dir/x.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
