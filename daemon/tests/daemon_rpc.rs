//! The daemon's JSON-RPC server over a real Unix socket: every method with a
//! success case and SPDK's result shape, the error codes SPDK clients act on,
//! JSON-RPC framing (parse errors, batches, notifications), the socket's
//! permissions and exclusivity, the initiator methods against the daemon's
//! own subsystem, lull's own methods, and the Prometheus rendering.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lull_daemon::app::App;
use lull_daemon::config::Config;
use lull_daemon::metrics::{self, MetricsServer};
use lull_daemon::rpc::{self, RpcServer};
use lull_reactor::CoreList;
use serde_json::{Value, json};

/// Every method the server has (rpc/mod.rs METHODS), SPDK's first.
const ALL_METHODS: &[&str] = &[
    "spdk_get_version",
    "rpc_get_methods",
    "framework_get_reactors",
    "keyring_file_add_key",
    "keyring_file_remove_key",
    "keyring_get_keys",
    "bdev_malloc_create",
    "bdev_malloc_delete",
    "bdev_null_create",
    "bdev_null_delete",
    "bdev_uring_create",
    "bdev_uring_delete",
    "bdev_get_bdevs",
    "bdev_raid_create",
    "bdev_raid_get_bdevs",
    "bdev_raid_delete",
    "bdev_raid_remove_base_bdev",
    "bdev_raid_add_base_bdev",
    "bdev_raid_set_options",
    "nvmf_create_transport",
    "nvmf_get_transports",
    "nvmf_create_subsystem",
    "nvmf_delete_subsystem",
    "nvmf_subsystem_add_ns",
    "nvmf_subsystem_remove_ns",
    "nvmf_subsystem_add_listener",
    "nvmf_subsystem_remove_listener",
    "nvmf_subsystem_add_host",
    "nvmf_subsystem_remove_host",
    "nvmf_subsystem_set_keys",
    "nvmf_subsystem_allow_any_host",
    "nvmf_get_subsystems",
    "bdev_nvme_set_options",
    "bdev_nvme_get_options",
    "bdev_nvme_attach_controller",
    "bdev_nvme_detach_controller",
    "bdev_nvme_set_keys",
    "bdev_nvme_get_controllers",
    "bdev_get_iostat",
    "nvmf_get_stats",
    "nvmf_subsystem_get_controllers",
    "nvmf_subsystem_get_qpairs",
    "nvmf_subsystem_get_listeners",
    "log_set_level",
    "log_get_level",
    "log_set_print_level",
    "log_get_print_level",
    "log_set_flag",
    "log_clear_flag",
    "log_get_flags",
    "framework_get_subsystems",
    "framework_get_config",
    "bdev_wait_for_examine",
    "save_config",
    "load_config",
    "iobuf_set_options",
    "sock_set_default_impl",
    "sock_impl_set_options",
    "accel_set_options",
    "accel_assign_opc",
    "bdev_set_options",
    "iscsi_set_options",
    "nvmf_set_max_subsystems",
    "keyring_linux_set_options",
    "bdev_nvme_set_hotplug",
    "framework_set_scheduler",
    "nvmf_set_crdt",
    "nvmf_set_config",
    "lull_get_status",
    "lull_reactor_set_mode",
    "lull_supervisor_get_config",
    "lull_supervisor_set_config",
    "lull_get_options",
    "lull_set_options",
    "lull_bdev_delete",
];

const INVALID_PARAMS: i64 = -32602;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_REQUEST: i64 = -32600;
const PARSE_ERROR: i64 = -32700;
const INTERNAL_ERROR: i64 = -32603;
const ENODEV: i64 = -19;
const EEXIST: i64 = -17;
const EPERM: i64 = -1;

const NQN: &str = "nqn.2024-01.io.lull:rpc0";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000a1";
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Up to two usable CPUs, as a core list string.
fn test_cores() -> (String, Vec<usize>) {
    let cores: Vec<usize> = CoreList::usable().unwrap().cores().iter().copied().take(2).collect();
    let text = cores.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    (text, cores)
}

/// A socket path of our own under the temp dir.
fn socket_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("lull-rpc-{}-{n}-{tag}.sock", std::process::id()))
}

/// A running daemon: App and RPC server; shut down on drop too (a failed test).
struct Daemon {
    app: Arc<App>,
    rpc: Option<RpcServer>,
    path: PathBuf,
    cores: Vec<usize>,
}

impl Daemon {
    /// From TOML through Config::resolve, as `lull target --config` does.
    fn start(tag: &str, extra_toml: &str) -> Daemon {
        let (cores_text, cores) = test_cores();
        let path = socket_path(tag);
        let text = format!(
            "cores = \"{cores_text}\"\nrpc_socket = \"{}\"\nlog_level = \"warn\"\n{extra_toml}",
            path.display()
        );
        let settings = Config::from_toml(&text).unwrap().resolve().unwrap();
        assert_eq!(settings.rpc_socket, path);
        let app = App::start(&settings).unwrap();
        let rpc = RpcServer::start(app.clone(), &settings.rpc_socket).unwrap();
        assert_eq!(rpc.path(), path.as_path());
        Daemon {
            app,
            rpc: Some(rpc),
            path,
            cores,
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.path)
    }

    fn stop(&mut self) {
        drop(self.rpc.take());
        self.app.shutdown();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal JSON-RPC client: request texts out, one JSON value read back at a time.
struct Client {
    s: UnixStream,
    next_id: u64,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client { s, next_id: 1 }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn send(&mut self, v: &Value) {
        self.send_raw(v.to_string().as_bytes());
    }

    /// One JSON value from the stream (the server answers with texts back to back).
    fn recv(&mut self) -> Value {
        let mut it = serde_json::Deserializer::from_reader(&self.s).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic!("reading a response: {e}"),
            None => panic!("the server closed the connection"),
        }
    }

    /// Whether the server closed the connection (within 5 s) without sending
    /// more than whitespace.
    fn closed_by_server(&mut self) -> bool {
        self.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Ok(n) if b[..n].iter().all(u8::is_ascii_whitespace) => {}
                Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&b[..n])),
                Err(_) => return false,
            }
        }
    }

    /// The whole response object to `method(params)` (params omitted when null).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            req["params"] = params;
        }
        self.send(&req);
        let resp = self.recv();
        assert_eq!(resp["jsonrpc"], "2.0", "{resp}");
        assert_eq!(resp["id"], json!(id), "{method}: {resp}");
        resp
    }

    /// The result; panics on an error response.
    fn ok(&mut self, method: &str, params: Value) -> Value {
        let resp = self.request(method, params.clone());
        assert!(
            resp.get("error").is_none(),
            "{method} {params} failed: {}",
            resp["error"]
        );
        resp.get("result").cloned().expect("a result")
    }

    /// The error (code, message); panics on success.
    fn err(&mut self, method: &str, params: Value) -> (i64, String) {
        let resp = self.request(method, params.clone());
        assert!(resp.get("result").is_none(), "{method} {params} succeeded: {resp}");
        let e = &resp["error"];
        (
            e["code"].as_i64().expect("an error code"),
            e["message"].as_str().expect("an error message").to_string(),
        )
    }

    /// Expects error `code`; returns the message.
    #[track_caller]
    fn expect(&mut self, code: i64, method: &str, params: Value) -> String {
        let (c, m) = self.err(method, params.clone());
        assert_eq!(c, code, "{method} {params}: {m}");
        m
    }
}

/// Waits (2 s at most) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn listen_params(nqn: &str, port: &str) -> Value {
    json!({
        "nqn": nqn,
        "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port}
    })
}

/// Malloc bdev, transport, subsystem (any host), namespace, listener on a free
/// port; returns the bound port as nvmf_get_subsystems shows it.
fn serve_malloc(c: &mut Client, bdev: &str, num_blocks: u64) -> u16 {
    assert_eq!(
        c.ok(
            "bdev_malloc_create",
            json!({"name": bdev, "num_blocks": num_blocks, "block_size": 512})
        ),
        json!(bdev)
    );
    c.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    c.ok("nvmf_create_subsystem", json!({"nqn": NQN, "allow_any_host": true}));
    assert_eq!(
        c.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": bdev}})
        ),
        json!(1)
    );
    c.ok("nvmf_subsystem_add_listener", listen_params(NQN, "0"));
    bound_port(c, NQN)
}

fn bound_port(c: &mut Client, nqn: &str) -> u16 {
    let subs = c.ok("nvmf_get_subsystems", json!({"nqn": nqn}));
    let la = &subs[0]["listen_addresses"];
    assert_eq!(la.as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(la[0]["trtype"], "TCP");
    assert_eq!(la[0]["adrfam"], "IPv4");
    assert_eq!(la[0]["traddr"], "127.0.0.1");
    let port: u16 = la[0]["trsvcid"].as_str().unwrap().parse().unwrap();
    assert_ne!(port, 0, "the bound port is shown, not 0");
    port
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn framework_methods_and_method_list() {
    let mut d = Daemon::start("framework", "");
    let mut c = d.client();

    let v = c.ok("spdk_get_version", Value::Null);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(v["version"], format!("lull v{version}"));
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap());
    assert_eq!(v["fields"]["major"], parts.next().unwrap());
    assert_eq!(v["fields"]["minor"], parts.next().unwrap());
    assert_eq!(v["fields"]["patch"], parts.next().unwrap());
    assert_eq!(v["fields"]["suffix"], "");
    // {} is no params too; anything else is refused.
    assert_eq!(c.ok("spdk_get_version", json!({})), v);
    c.expect(INVALID_PARAMS, "spdk_get_version", json!({"verbose": true}));

    let m = c.ok("rpc_get_methods", Value::Null);
    let listed: Vec<&str> = m.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(listed, ALL_METHODS, "every method, in order");
    assert_eq!(
        c.ok("rpc_get_methods", json!({"current": true, "include_aliases": false})),
        m
    );
    c.expect(INVALID_PARAMS, "rpc_get_methods", json!({"all": true}));
    c.expect(INVALID_PARAMS, "rpc_get_methods", json!({"current": "yes"}));

    let r = c.ok("framework_get_reactors", Value::Null);
    assert_eq!(r["tick_rate"], 1_000_000_000u64);
    assert_eq!(r["pid"], std::process::id());
    let reactors = r["reactors"].as_array().unwrap();
    let lcores: Vec<usize> = reactors.iter().map(|x| x["lcore"].as_u64().unwrap() as usize).collect();
    assert_eq!(lcores, d.cores);
    for x in reactors {
        // The default policy is interrupt: every reactor sleeps when idle.
        assert_eq!(x["in_interrupt"], true, "{x}");
        assert_eq!(x["mode"], "interrupt");
        for k in ["busy", "idle", "irq", "sys", "usr"] {
            assert!(x[k].is_u64(), "{k} in {x}");
        }
        let lw = &x["lw_threads"][0];
        assert!(lw["name"].as_str().unwrap().starts_with("reactor_"));
        assert!(
            lw["id"].is_u64() && lw["cpumask"].is_string() && lw["elapsed"].is_u64(),
            "{lw}"
        );
    }
    c.expect(INVALID_PARAMS, "framework_get_reactors", json!({"x": 1}));
    drop(c);
    d.stop();
}

#[test]
fn bdev_methods() {
    let mut d = Daemon::start("bdev", "");
    let mut c = d.client();
    assert_eq!(c.ok("bdev_get_bdevs", Value::Null), json!([]));

    // Unnamed malloc bdevs are Malloc0, Malloc1, ... as in SPDK.
    assert_eq!(
        c.ok("bdev_malloc_create", json!({"num_blocks": 2048, "block_size": 512})),
        "Malloc0"
    );
    assert_eq!(
        c.ok(
            "bdev_malloc_create",
            json!({"num_blocks": 256, "block_size": 4096, "physical_block_size": 4096, "uuid": null, "md_size": 0, "numa_id": -1})
        ),
        "Malloc1"
    );
    assert_eq!(
        c.ok(
            "bdev_malloc_create",
            json!({"name": "M5", "num_blocks": 16, "block_size": 512})
        ),
        "M5"
    );
    c.expect(
        EEXIST,
        "bdev_malloc_create",
        json!({"name": "M5", "num_blocks": 16, "block_size": 512}),
    );
    for bad in [
        json!({"name": "X"}),
        json!({"name": "X", "num_blocks": 16}),
        json!({"name": "X", "block_size": 512}),
        json!({"name": "X", "num_blocks": 0, "block_size": 512}),
        json!({"name": "X", "num_blocks": 16, "block_size": 1000}),
        json!({"name": "X", "num_blocks": -1, "block_size": 512}),
        json!({"name": "X", "num_blocks": "16", "block_size": 512}),
        json!({"name": "X", "num_blocks": 16, "block_size": 512, "md_size": 8}),
        json!({"name": "X", "num_blocks": 16, "block_size": 512, "dif_type": 1}),
        json!({"name": "X", "num_blocks": 16, "block_size": 512, "physical_block_size": 4096}),
        json!({"name": "X", "num_blocks": 16, "block_size": 512, "colour": "red"}),
        json!({"name": "bad name", "num_blocks": 16, "block_size": 512}),
    ] {
        c.expect(INVALID_PARAMS, "bdev_malloc_create", bad);
    }
    let m = c.expect(INVALID_PARAMS, "bdev_malloc_create", json!({"block_size": 512}));
    assert!(m.contains("num_blocks"), "names the missing field: {m}");
    c.expect(INVALID_PARAMS, "bdev_malloc_create", Value::Null);
    c.expect(ENODEV, "bdev_get_bdevs", json!({"name": "X"}));

    // Null bdevs need a name.
    assert_eq!(
        c.ok(
            "bdev_null_create",
            json!({"name": "Null0", "num_blocks": 1 << 20, "block_size": 4096})
        ),
        "Null0"
    );
    let m = c.expect(
        INVALID_PARAMS,
        "bdev_null_create",
        json!({"num_blocks": 8, "block_size": 512}),
    );
    assert!(m.contains("name"), "{m}");
    c.expect(
        EEXIST,
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 8, "block_size": 512}),
    );
    // A name taken by a bdev of another kind is taken too.
    c.expect(
        EEXIST,
        "bdev_null_create",
        json!({"name": "Malloc0", "num_blocks": 8, "block_size": 512}),
    );

    // Uring bdevs on a file.
    let file = std::env::temp_dir().join(format!("lull-rpc-uring-{}.img", std::process::id()));
    std::fs::File::create(&file).unwrap().set_len(1 << 20).unwrap();
    assert_eq!(
        c.ok(
            "bdev_uring_create",
            json!({"name": "Uring0", "filename": file, "block_size": 4096})
        ),
        "Uring0"
    );
    c.expect(EEXIST, "bdev_uring_create", json!({"name": "Uring0", "filename": file}));
    let missing = std::env::temp_dir().join(format!("lull-rpc-no-such-{}.img", std::process::id()));
    let m = c.expect(
        INTERNAL_ERROR,
        "bdev_uring_create",
        json!({"name": "Uring1", "filename": missing}),
    );
    assert!(m.contains(&missing.display().to_string()), "{m}");
    c.expect(INVALID_PARAMS, "bdev_uring_create", json!({"name": "Uring1"}));
    c.expect(
        INVALID_PARAMS,
        "bdev_uring_create",
        json!({"name": "Uring1", "filename": file, "block_size": 1000}),
    );

    // bdev_get_bdevs: SPDK's fields.
    let all = c.ok("bdev_get_bdevs", Value::Null);
    assert_eq!(names(&all), ["M5", "Malloc0", "Malloc1", "Null0", "Uring0"]);
    let one = c.ok("bdev_get_bdevs", json!({"name": "Malloc0"}));
    assert_eq!(one.as_array().unwrap().len(), 1);
    let b = &one[0];
    assert_eq!(b["name"], "Malloc0");
    assert_eq!(b["product_name"], "Malloc disk");
    assert_eq!(b["block_size"], 512);
    assert_eq!(b["num_blocks"], 2048);
    assert_eq!(b["claimed"], false);
    assert_eq!(b["aliases"], json!([]));
    assert_eq!(b["zoned"], false);
    assert_eq!(b["supported_io_types"]["read"], true);
    assert_eq!(b["supported_io_types"]["write"], true);
    assert_eq!(b["driver_specific"], json!({}));
    let uuid = b["uuid"].as_str().unwrap();
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(uuid.matches('-').count(), 4, "{uuid}");
    let m1 = &c.ok("bdev_get_bdevs", json!({"name": "Malloc1", "timeout": 0}))[0];
    assert_eq!(
        (m1["block_size"].clone(), m1["num_blocks"].clone()),
        (json!(4096), json!(256))
    );
    let n = &c.ok("bdev_get_bdevs", json!({"name": "Null0"}))[0];
    assert_eq!(n["product_name"], "Null disk");
    assert_eq!(n["num_blocks"], 1 << 20);
    let u = &c.ok("bdev_get_bdevs", json!({"name": "Uring0"}))[0];
    assert_eq!(u["product_name"], "URING bdev");
    assert_eq!(u["block_size"], 4096);
    assert_eq!(u["num_blocks"], (1 << 20) / 4096);
    assert_eq!(u["driver_specific"]["uring"]["filename"], file.display().to_string());
    c.expect(ENODEV, "bdev_get_bdevs", json!({"name": "Nope"}));
    c.expect(INVALID_PARAMS, "bdev_get_bdevs", json!({"nam": "Malloc0"}));

    // A bdev in a subsystem is claimed.
    c.ok("nvmf_create_subsystem", json!({"nqn": NQN, "allow_any_host": true}));
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    );
    assert_eq!(c.ok("bdev_get_bdevs", json!({"name": "Malloc0"}))[0]["claimed"], true);

    // Deletes: only of their own kind; a claimed bdev leaves its subsystem (hot remove).
    c.expect(ENODEV, "bdev_null_delete", json!({"name": "Malloc0"}));
    c.expect(ENODEV, "bdev_uring_delete", json!({"name": "Malloc0"}));
    c.expect(ENODEV, "bdev_malloc_delete", json!({"name": "Null0"}));
    c.expect(ENODEV, "bdev_malloc_delete", json!({"name": "Nope"}));
    c.expect(INVALID_PARAMS, "bdev_malloc_delete", json!({}));
    assert_eq!(c.ok("bdev_malloc_delete", json!({"name": "Malloc0"})), true);
    let s = c.ok("nvmf_get_subsystems", json!({"nqn": NQN}));
    assert_eq!(s[0]["namespaces"], json!([]), "the namespace went with its bdev");
    assert_eq!(c.ok("bdev_null_delete", json!({"name": "Null0"})), true);
    assert_eq!(c.ok("bdev_uring_delete", json!({"name": "Uring0"})), true);
    c.expect(ENODEV, "bdev_uring_delete", json!({"name": "Uring0"}));
    assert_eq!(names(&c.ok("bdev_get_bdevs", Value::Null)), ["M5", "Malloc1"]);
    // The freed name is the next unnamed one.
    assert_eq!(
        c.ok("bdev_malloc_create", json!({"num_blocks": 8, "block_size": 512})),
        "Malloc0"
    );
    std::fs::remove_file(&file).unwrap();
    drop(c);
    d.stop();
}

#[test]
fn nvmf_methods() {
    let mut d = Daemon::start("nvmf", "");
    let mut c = d.client();
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 2048, "block_size": 512}),
    );
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc1", "num_blocks": 2048, "block_size": 512}),
    );

    // Subsystems.
    assert_eq!(
        c.ok(
            "nvmf_create_subsystem",
            json!({"nqn": NQN, "serial_number": "SPDK00000000000001", "model_number": "lull rpc test", "max_namespaces": 4})
        ),
        true
    );
    c.expect(EEXIST, "nvmf_create_subsystem", json!({"nqn": NQN}));
    c.expect(INVALID_PARAMS, "nvmf_create_subsystem", json!({"nqn": DISCOVERY_NQN}));
    c.expect(INVALID_PARAMS, "nvmf_create_subsystem", json!({"nqn": "vol0"}));
    c.expect(INVALID_PARAMS, "nvmf_create_subsystem", json!({}));
    c.expect(
        INVALID_PARAMS,
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2024-01.io.lull:x", "serial_number": "S".repeat(21)}),
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2024-01.io.lull:x", "ana_reporting": true}),
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2024-01.io.lull:x", "max_namespaces": 5000}),
    );
    // SPDK's defaults when not given.
    let other = "nqn.2024-01.io.lull:other";
    c.ok("nvmf_create_subsystem", json!({"nqn": other, "max_namespaces": 0}));

    // Namespaces: the NSID comes back.
    let add_ns = |bdev: &str, nsid: Option<u32>| {
        let mut ns = json!({"bdev_name": bdev});
        if let Some(n) = nsid {
            ns["nsid"] = json!(n);
        }
        json!({"nqn": NQN, "namespace": ns})
    };
    assert_eq!(c.ok("nvmf_subsystem_add_ns", add_ns("Malloc0", None)), 1);
    assert_eq!(c.ok("nvmf_subsystem_add_ns", add_ns("Malloc1", Some(3))), 3);
    c.expect(ENODEV, "nvmf_subsystem_add_ns", add_ns("Nope", None));
    c.expect(
        ENODEV,
        "nvmf_subsystem_add_ns",
        json!({"nqn": "nqn.2024-01.io.lull:nope", "namespace": {"bdev_name": "Malloc0"}}),
    );
    c.expect(INVALID_PARAMS, "nvmf_subsystem_add_ns", add_ns("Malloc0", Some(2)));
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc2", "num_blocks": 64, "block_size": 512}),
    );
    c.expect(INVALID_PARAMS, "nvmf_subsystem_add_ns", add_ns("Malloc2", Some(3)));
    c.expect(INVALID_PARAMS, "nvmf_subsystem_add_ns", json!({"nqn": NQN}));
    c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc2", "uuid": "00000000-0000-0000-0000-000000000000"}}),
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_ns",
        json!({"nqn": DISCOVERY_NQN, "namespace": {"bdev_name": "Malloc2"}}),
    );

    // Hosts.
    assert_eq!(
        c.ok("nvmf_subsystem_add_host", json!({"nqn": NQN, "host": HOSTNQN})),
        true
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOSTNQN}),
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": "not-an-nqn"}),
    );
    // A TLS PSK names a keyring key, like a DH-HMAC-CHAP key: one not there is refused.
    let e = c.expect(
        ENODEV,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOSTNQN, "psk": "key0"}),
    );
    assert!(e.contains("psk") && e.contains("key0"), "{e}");
    c.expect(
        ENODEV,
        "nvmf_subsystem_add_host",
        json!({"nqn": "nqn.2024-01.io.lull:nope", "host": HOSTNQN}),
    );
    let host2 = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000a2";
    c.ok("nvmf_subsystem_add_host", json!({"nqn": NQN, "host": host2}));
    assert_eq!(
        c.ok("nvmf_subsystem_remove_host", json!({"nqn": NQN, "host": host2})),
        true
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": host2}),
    );
    c.expect(
        ENODEV,
        "nvmf_subsystem_remove_host",
        json!({"nqn": "nqn.2024-01.io.lull:nope", "host": host2}),
    );

    // Transport: listeners need it first (SPDK: -EPERM-like refusal).
    assert_eq!(c.ok("nvmf_get_transports", Value::Null), json!([]));
    let m = c.expect(EPERM, "nvmf_subsystem_add_listener", listen_params(NQN, "0"));
    assert!(m.contains("nvmf_create_transport"), "{m}");
    c.expect(INVALID_PARAMS, "nvmf_create_transport", json!({"trtype": "RDMA"}));
    c.expect(INVALID_PARAMS, "nvmf_create_transport", json!({}));
    c.expect(
        INVALID_PARAMS,
        "nvmf_create_transport",
        json!({"trtype": "TCP", "in_capsule_data_size": 100}),
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_create_transport",
        json!({"trtype": "TCP", "max_io_size": 4096}),
    );
    c.expect(
        INVALID_PARAMS,
        "nvmf_create_transport",
        json!({"trtype": "TCP", "c2h_success": "no"}),
    );
    // Other transports' options, sent with their defaults by rpc.py, are ignored.
    assert_eq!(
        c.ok(
            "nvmf_create_transport",
            json!({"trtype": "tcp", "in_capsule_data_size": 4096, "max_queue_depth": 128, "no_srq": false, "c2h_success": false})
        ),
        true
    );
    c.expect(EEXIST, "nvmf_create_transport", json!({"trtype": "TCP"}));
    let t = c.ok("nvmf_get_transports", Value::Null);
    assert_eq!(t.as_array().unwrap().len(), 1);
    assert_eq!(t[0]["trtype"], "TCP");
    assert_eq!(t[0]["in_capsule_data_size"], 4096);
    assert_eq!(
        t[0]["c2h_success"], false,
        "SPDK's default is true; this one was made without it"
    );
    for k in [
        "max_queue_depth",
        "max_io_qpairs_per_ctrlr",
        "max_io_size",
        "io_unit_size",
        "max_aq_depth",
    ] {
        assert!(t[0][k].is_u64(), "{k} in {t}");
    }
    // The depth asked for is the one in force; the others at lull's defaults.
    assert_eq!(t[0]["max_queue_depth"], 128, "{t}");
    assert_eq!(t[0]["max_aq_depth"], 1024, "{t}");
    assert_eq!(t[0]["max_io_qpairs_per_ctrlr"], 127, "{t}");
    assert_eq!(c.ok("nvmf_get_transports", json!({"trtype": "tcp"})), t);
    c.expect(ENODEV, "nvmf_get_transports", json!({"trtype": "RDMA"}));

    // Listeners.
    assert_eq!(c.ok("nvmf_subsystem_add_listener", listen_params(NQN, "0")), true);
    let port = bound_port(&mut c, NQN);
    c.expect(
        ENODEV,
        "nvmf_subsystem_add_listener",
        listen_params("nqn.2024-01.io.lull:nope", "0"),
    );
    for bad in [
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "traddr": "localhost", "trsvcid": "4420"}}),
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1"}}),
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "99999"}}),
        json!({"nqn": NQN, "listen_address": {"trtype": "RDMA", "traddr": "127.0.0.1", "trsvcid": "4420"}}),
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv6", "traddr": "127.0.0.1", "trsvcid": "4420"}}),
        // A secure channel is TLS: not with a plain socket implementation.
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "4420"}, "secure_channel": true, "sock_impl": "posix"}),
        json!({"nqn": NQN}),
    ] {
        c.expect(INVALID_PARAMS, "nvmf_subsystem_add_listener", bad);
    }
    // The port is really open.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    // nvmf_get_subsystems: discovery first, then ours, SPDK's fields.
    let all = c.ok("nvmf_get_subsystems", Value::Null);
    let nqns: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["nqn"].as_str().unwrap())
        .collect();
    assert!(
        nqns.contains(&DISCOVERY_NQN) && nqns.contains(&NQN) && nqns.contains(&other),
        "{nqns:?}"
    );
    let disc = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == DISCOVERY_NQN)
        .unwrap();
    assert_eq!(disc["subtype"], "Discovery");
    assert!(disc.get("namespaces").is_none(), "{disc}");
    // SPDK lists a subsystem's own listeners only: NQN's port answers
    // discovery too, but is not the discovery subsystem's listener.
    assert_eq!(disc["listen_addresses"], json!([]), "{disc}");
    assert_eq!(
        c.ok("nvmf_subsystem_get_listeners", json!({"nqn": "discovery"})),
        json!([])
    );
    c.ok("nvmf_subsystem_add_listener", listen_params("discovery", "0"));
    let dport = bound_port(&mut c, "discovery");
    assert_ne!(dport, port);
    assert_eq!(
        c.ok("nvmf_subsystem_get_listeners", json!({"nqn": "discovery"}))[0]["address"]["trsvcid"],
        dport.to_string()
    );
    assert_eq!(bound_port(&mut c, NQN), port, "the discovery port is not NQN's");
    c.ok(
        "nvmf_subsystem_remove_listener",
        listen_params("discovery", &dport.to_string()),
    );
    assert_eq!(
        c.ok("nvmf_get_subsystems", json!({"nqn": "discovery"}))[0]["listen_addresses"],
        json!([])
    );
    let s = &c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0];
    assert_eq!(s["nqn"], NQN);
    assert_eq!(s["subtype"], "NVMe");
    assert_eq!(s["serial_number"], "SPDK00000000000001");
    assert_eq!(s["model_number"], "lull rpc test");
    assert_eq!(s["max_namespaces"], 4);
    assert_eq!(s["min_cntlid"], 1);
    assert_eq!(s["max_cntlid"], 0xFFEF);
    assert_eq!(s["allow_any_host"], false);
    assert_eq!(s["hosts"], json!([{"nqn": HOSTNQN}]));
    assert_eq!(
        s["listen_addresses"],
        json!([{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}])
    );
    let ns = s["namespaces"].as_array().unwrap();
    assert_eq!(ns.len(), 2);
    assert_eq!(
        (ns[0]["nsid"].clone(), ns[0]["bdev_name"].clone()),
        (json!(1), json!("Malloc0"))
    );
    assert_eq!(ns[0]["name"], "Malloc0");
    assert_eq!(
        (ns[1]["nsid"].clone(), ns[1]["bdev_name"].clone()),
        (json!(3), json!("Malloc1"))
    );
    assert_eq!(ns[0]["nguid"].as_str().unwrap().len(), 32);
    assert_eq!(ns[0]["uuid"].as_str().unwrap().len(), 36);
    let o = &c.ok("nvmf_get_subsystems", json!({"nqn": other}))[0];
    assert_eq!(o["serial_number"], "00000000000000000000");
    assert_eq!(o["max_namespaces"], 32);
    assert_eq!(o["listen_addresses"], json!([]));
    assert_eq!(o["hosts"], json!([]));
    // "discovery" is SPDK's shortcut.
    assert_eq!(
        c.ok("nvmf_get_subsystems", json!({"nqn": "discovery"}))[0]["nqn"],
        DISCOVERY_NQN
    );
    c.expect(
        ENODEV,
        "nvmf_get_subsystems",
        json!({"nqn": "nqn.2024-01.io.lull:nope"}),
    );
    c.expect(INVALID_PARAMS, "nvmf_get_subsystems", json!({"subnqn": NQN}));

    // allow_any_host.
    assert_eq!(
        c.ok(
            "nvmf_subsystem_allow_any_host",
            json!({"nqn": NQN, "allow_any_host": true})
        ),
        true
    );
    assert_eq!(
        c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["allow_any_host"],
        true
    );
    c.expect(
        ENODEV,
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": "nqn.2024-01.io.lull:nope", "allow_any_host": true}),
    );
    c.expect(INVALID_PARAMS, "nvmf_subsystem_allow_any_host", json!({"nqn": NQN}));

    // Removing: namespaces, listeners, subsystems.
    assert_eq!(c.ok("nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 3})), true);
    c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": NQN, "nsid": 3}),
    );
    c.expect(
        ENODEV,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": "nqn.2024-01.io.lull:nope", "nsid": 1}),
    );
    c.expect(INVALID_PARAMS, "nvmf_subsystem_remove_ns", json!({"nqn": NQN}));
    let ns = c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["namespaces"].clone();
    assert_eq!(ns.as_array().unwrap().len(), 1);
    assert_eq!(
        c.ok("nvmf_subsystem_remove_listener", listen_params(NQN, &port.to_string())),
        true
    );
    c.expect(
        ENODEV,
        "nvmf_subsystem_remove_listener",
        listen_params(NQN, &port.to_string()),
    );
    c.expect(
        ENODEV,
        "nvmf_subsystem_remove_listener",
        listen_params("nqn.2024-01.io.lull:nope", "4420"),
    );
    assert_eq!(
        c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["listen_addresses"],
        json!([])
    );
    assert_eq!(c.ok("nvmf_delete_subsystem", json!({"nqn": NQN})), true);
    c.expect(ENODEV, "nvmf_delete_subsystem", json!({"nqn": NQN}));
    c.expect(INVALID_PARAMS, "nvmf_delete_subsystem", json!({"nqn": "discovery"}));
    c.expect(INVALID_PARAMS, "nvmf_delete_subsystem", json!({}));
    c.expect(ENODEV, "nvmf_get_subsystems", json!({"nqn": NQN}));
    // Its bdevs are free again.
    assert_eq!(c.ok("bdev_get_bdevs", json!({"name": "Malloc0"}))[0]["claimed"], false);
    drop(c);
    d.stop();
}

#[test]
fn nvme_initiator_methods_against_our_own_subsystem() {
    let mut d = Daemon::start("nvme", "");
    let mut c = d.client();
    let port = serve_malloc(&mut c, "Malloc0", 4096);

    let o = c.ok("bdev_nvme_get_options", Value::Null);
    assert_eq!(o["nvme_ioq_poll_period_us"], 100);
    // The admin queue is event-driven unless a period is set (SPDK's is 10000).
    assert_eq!(o["nvme_adminq_poll_period_us"], 0);
    for k in [
        "nvme_adminq_poll_period_us",
        "keep_alive_timeout_ms",
        "reconnect_delay_sec",
        "ctrlr_loss_timeout_sec",
        "fast_io_fail_timeout_sec",
        "timeout_us",
        "bdev_retry_count",
        "io_queue_requests",
    ] {
        assert!(o[k].is_number(), "{k} in {o}");
    }
    assert_eq!(o["action_on_timeout"], "reset");
    c.expect(INVALID_PARAMS, "bdev_nvme_get_options", json!({"x": 1}));

    let attach = |name: &str, port: u16| {
        json!({
            "name": name, "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
            "trsvcid": port.to_string(), "subnqn": NQN, "hostnqn": HOSTNQN
        })
    };
    assert_eq!(
        c.ok("bdev_nvme_attach_controller", attach("Nvme0", port)),
        json!(["Nvme0n1"])
    );
    c.expect(EEXIST, "bdev_nvme_attach_controller", attach("Nvme0", port));
    // The same path under another name: refused as SPDK does, naming the
    // controller that has it; nothing is made.
    let (code, msg) = c.err("bdev_nvme_attach_controller", attach("Nvme9", port));
    assert_eq!(code, EEXIST, "{msg}");
    assert!(msg.contains("already exists with name: Nvme0"), "{msg}");
    assert!(c.err("bdev_get_bdevs", json!({"name": "Nvme9n1"})).0 != 0);
    let mut no_subnqn = attach("Nvme1", port);
    no_subnqn.as_object_mut().unwrap().remove("subnqn");
    c.expect(INVALID_PARAMS, "bdev_nvme_attach_controller", no_subnqn);
    let mut rdma = attach("Nvme1", port);
    rdma["trtype"] = json!("RDMA");
    c.expect(INVALID_PARAMS, "bdev_nvme_attach_controller", rdma);
    let mut bad_host = attach("Nvme1", port);
    bad_host["hostnqn"] = json!("host");
    c.expect(INVALID_PARAMS, "bdev_nvme_attach_controller", bad_host);
    c.expect(INVALID_PARAMS, "bdev_nvme_attach_controller", json!({"name": "Nvme1"}));
    // Nobody listening there: it fails while being carried out.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    c.expect(
        INTERNAL_ERROR,
        "bdev_nvme_attach_controller",
        attach("Nvme1", closed_port),
    );
    // A subsystem that does not exist there.
    let mut wrong = attach("Nvme1", port);
    wrong["subnqn"] = json!("nqn.2024-01.io.lull:nope");
    c.expect(INTERNAL_ERROR, "bdev_nvme_attach_controller", wrong);

    // The namespace is a bdev.
    let b = &c.ok("bdev_get_bdevs", json!({"name": "Nvme0n1"}))[0];
    assert_eq!(b["product_name"], "NVMe disk");
    assert_eq!(
        (b["block_size"].clone(), b["num_blocks"].clone()),
        (json!(512), json!(4096))
    );
    assert_eq!(
        b["driver_specific"]["nvme"],
        json!([{"ctrlr_name": "Nvme0", "nsid": 1}])
    );

    let ctrls = c.ok("bdev_nvme_get_controllers", Value::Null);
    assert_eq!(ctrls.as_array().unwrap().len(), 1);
    assert_eq!(ctrls[0]["name"], "Nvme0");
    let cr = &ctrls[0]["ctrlrs"][0];
    assert_eq!(cr["state"], "enabled");
    assert_eq!(
        cr["trid"],
        json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string(), "subnqn": NQN})
    );
    assert_eq!(cr["host"]["nqn"], HOSTNQN);
    assert_eq!(cr["bdevs"], json!(["Nvme0n1"]));
    assert!(cr["cntlid"].as_u64().unwrap() >= 1);
    assert_eq!(cr["io_queues"], d.cores.len());
    assert_eq!(cr["nvme_ioq_poll_period_us"], 100);
    assert_eq!(cr["nvme_adminq_poll_period_us"], 0);
    assert_eq!(cr["resets"], 0);
    assert_eq!(c.ok("bdev_nvme_get_controllers", json!({"name": "Nvme0"})), ctrls);
    c.expect(ENODEV, "bdev_nvme_get_controllers", json!({"name": "Nvme9"}));

    // Status: the target serves one controller (the failed attaches' queues
    // close), the initiator has one: an admin and one I/O queue per reactor.
    let n = d.cores.len() as u64;
    eventually("one controller with 1 + n queues on the target", || {
        let st = c.ok("lull_get_status", Value::Null);
        let queues: u64 = st["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["queues"].as_u64().unwrap())
            .sum();
        st["controllers"] == 1 && queues == 1 + n
    });
    let st = c.ok("lull_get_status", Value::Null);
    assert_eq!(st["nvme_controllers"], 1);
    assert_eq!(st["subsystems"], 1);

    // bdev_nvme_set_options changes the poll periods of the attached controller live.
    for (ioq, adminq) in [(0u64, 1000u64), (250, 2000), (1000, 10_000)] {
        assert_eq!(
            c.ok(
                "bdev_nvme_set_options",
                json!({"nvme_ioq_poll_period_us": ioq, "nvme_adminq_poll_period_us": adminq})
            ),
            true
        );
        let cr = &c.ok("bdev_nvme_get_controllers", json!({"name": "Nvme0"}))[0]["ctrlrs"][0];
        assert_eq!(cr["nvme_ioq_poll_period_us"], ioq);
        assert_eq!(cr["nvme_adminq_poll_period_us"], adminq);
        assert_eq!(cr["state"], "enabled");
        assert_eq!(
            c.ok("bdev_nvme_get_options", Value::Null)["nvme_ioq_poll_period_us"],
            ioq
        );
    }
    let m = c.expect(
        INVALID_PARAMS,
        "bdev_nvme_set_options",
        json!({"nvme_ioq_poll_period_us": 20_000_000u64}),
    );
    assert!(m.contains("nvme_ioq_poll_period_us"), "{m}");
    c.expect(
        INVALID_PARAMS,
        "bdev_nvme_set_options",
        json!({"action_on_timeout": "abort"}),
    );
    c.expect(INVALID_PARAMS, "bdev_nvme_set_options", json!({"poll": 1}));
    // Refused settings change nothing.
    assert_eq!(
        c.ok("bdev_nvme_get_controllers", json!({"name": "Nvme0"}))[0]["ctrlrs"][0]["nvme_ioq_poll_period_us"],
        1000
    );
    // SPDK options lull accepts; -1 retries = lull's most.
    assert_eq!(
        c.ok(
            "bdev_nvme_set_options",
            json!({"bdev_retry_count": -1, "action_on_timeout": "none", "transport_retry_count": 4, "io_queue_requests": 64})
        ),
        true
    );
    let o = c.ok("bdev_nvme_get_options", Value::Null);
    assert_eq!(o["bdev_retry_count"], 100);
    assert_eq!(o["timeout_us"], 0);
    assert_eq!(o["action_on_timeout"], "none");
    assert_eq!(o["io_queue_requests"], 64);

    // A namespace bdev cannot be deleted as a malloc bdev; detach removes it.
    c.expect(ENODEV, "bdev_malloc_delete", json!({"name": "Nvme0n1"}));
    assert_eq!(c.ok("bdev_nvme_detach_controller", json!({"name": "Nvme0"})), true);
    c.expect(ENODEV, "bdev_nvme_detach_controller", json!({"name": "Nvme0"}));
    c.expect(INVALID_PARAMS, "bdev_nvme_detach_controller", json!({}));
    assert_eq!(c.ok("bdev_nvme_get_controllers", Value::Null), json!([]));
    c.expect(ENODEV, "bdev_get_bdevs", json!({"name": "Nvme0n1"}));
    eventually("the target side's controller to go", || {
        c.ok("lull_get_status", Value::Null)["controllers"] == 0
    });
    // Attach again under the same name after detaching.
    assert_eq!(
        c.ok("bdev_nvme_attach_controller", attach("Nvme0", port)),
        json!(["Nvme0n1"])
    );
    assert_eq!(
        c.ok("bdev_nvme_get_controllers", json!({"name": "Nvme0"}))[0]["ctrlrs"][0]["nvme_ioq_poll_period_us"],
        1000,
        "a new controller gets the options in force"
    );
    drop(c);
    // Shutdown detaches it.
    d.stop();
    assert!(d.app.controllers().is_empty());
}

#[test]
fn lull_methods() {
    let mut d = Daemon::start("lull", "");
    let mut c = d.client();

    let st = c.ok("lull_get_status", Value::Null);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["pid"], std::process::id());
    assert!(st["uptime_ms"].is_u64());
    assert_eq!(st["mode_policy"], "interrupt");
    assert_eq!(st["idle_poll_us"], 200);
    assert_eq!(st["subsystems"], 0);
    assert_eq!(st["controllers"], 0);
    assert_eq!(st["listeners"], json!([]));
    assert_eq!(st["nvme_controllers"], 0);
    let rs = st["reactors"].as_array().unwrap();
    assert_eq!(rs.len(), d.cores.len());
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["lcore"], d.cores[i]);
        assert_eq!(r["mode"], "interrupt");
        assert_eq!(r["policy"], "interrupt");
        assert_eq!(r["interrupt_mode_enabled"], true);
        assert!(r["sleeping"].is_boolean());
        for k in [
            "taken_at_ns",
            "busy_ns",
            "idle_ns",
            "sleep_ns",
            "thread_cpu_ns",
            "loops",
            "wakeups",
            "mode_switches",
            "queues",
            "reads",
            "writes",
            "bytes_read",
            "bytes_written",
        ] {
            assert!(r[k].is_u64(), "{k} in {r}");
        }
    }
    c.expect(INVALID_PARAMS, "lull_get_status", json!({"verbose": true}));

    let modes = |c: &mut Client| -> Vec<(String, String)> {
        c.ok("lull_get_status", Value::Null)["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["mode"].as_str().unwrap().into(), r["policy"].as_str().unwrap().into()))
            .collect()
    };
    let all = |m: &str, p: &str| vec![(m.to_string(), p.to_string()); d.cores.len()];

    // Every core.
    assert_eq!(c.ok("lull_reactor_set_mode", json!({"mode": "hybrid"})), true);
    eventually("hybrid everywhere", || modes(&mut c) == all("hybrid", "hybrid"));
    assert_eq!(c.ok("lull_get_status", Value::Null)["mode_policy"], "hybrid");
    let fr = c.ok("framework_get_reactors", Value::Null);
    assert!(
        fr["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["in_interrupt"] == false)
    );
    assert_eq!(c.ok("lull_reactor_set_mode", json!({"mode": "poll"})), true);
    eventually("poll everywhere", || modes(&mut c) == all("poll", "poll"));
    // One core.
    let c0 = d.cores[0];
    assert_eq!(
        c.ok("lull_reactor_set_mode", json!({"mode": "interrupt", "core": c0})),
        true
    );
    eventually("core 0 in interrupt", || {
        let m = modes(&mut c);
        m[0] == ("interrupt".into(), "interrupt".into()) && m[1..].iter().all(|x| *x == ("poll".into(), "poll".into()))
    });
    let sup = c.ok("lull_supervisor_get_config", Value::Null);
    assert_eq!(sup["mode_policy"], "poll");
    assert_eq!(sup["core_policy"], json!([{"core": c0, "mode_policy": "interrupt"}]));
    // A policy for every core clears the per-core ones.
    assert_eq!(c.ok("lull_reactor_set_mode", json!({"mode": "interrupt"})), true);
    eventually("interrupt everywhere", || {
        modes(&mut c) == all("interrupt", "interrupt")
    });
    assert_eq!(
        c.ok("lull_supervisor_get_config", Value::Null)["core_policy"],
        json!([])
    );
    // Adaptive: the supervisor decides; the policy shows at once.
    assert_eq!(c.ok("lull_reactor_set_mode", json!({"mode": "adaptive"})), true);
    assert!(modes(&mut c).iter().all(|(_, p)| p == "adaptive"));
    // Errors.
    let m = c.expect(
        INVALID_PARAMS,
        "lull_reactor_set_mode",
        json!({"mode": "poll", "core": 9999}),
    );
    assert!(m.contains("9999"), "{m}");
    let m = c.expect(INVALID_PARAMS, "lull_reactor_set_mode", json!({"mode": "turbo"}));
    assert!(m.contains("turbo"), "{m}");
    c.expect(INVALID_PARAMS, "lull_reactor_set_mode", json!({}));
    c.expect(
        INVALID_PARAMS,
        "lull_reactor_set_mode",
        json!({"mode": "poll", "core": -1}),
    );
    assert!(
        modes(&mut c).iter().all(|(_, p)| p == "adaptive"),
        "refusals change nothing"
    );
    c.ok("lull_reactor_set_mode", json!({"mode": "interrupt"}));

    // Supervisor settings.
    let sup = c.ok("lull_supervisor_get_config", Value::Null);
    assert_eq!(sup["mode_policy"], "interrupt");
    assert_eq!(sup["supervisor_interval_ms"], 250);
    assert_eq!(sup["adaptive_high_mark"], 0.5);
    assert_eq!(sup["adaptive_low_mark"], 0.15);
    assert_eq!(sup["adaptive_up_samples"], 2);
    assert_eq!(sup["adaptive_down_samples"], 8);
    assert_eq!(sup["latency_budget_us"], 50);
    c.expect(INVALID_PARAMS, "lull_supervisor_get_config", json!({"x": 1}));
    // The budget policy and its budget, in one call or apart.
    c.ok(
        "lull_reactor_set_mode",
        json!({"mode": "budget", "latency_budget_us": 75}),
    );
    let st = c.ok("lull_get_status", Value::Null);
    assert_eq!(
        (st["mode_policy"].clone(), st["latency_budget_us"].clone()),
        (json!("budget"), json!(75))
    );
    assert!(
        st["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["policy"] == "budget")
    );
    let m = c.expect(
        INVALID_PARAMS,
        "lull_reactor_set_mode",
        json!({"mode": "budget", "latency_budget_us": 1_000_001}),
    );
    assert!(m.contains("latency_budget_us") && m.contains("1000000"), "{m}");
    c.ok("lull_supervisor_set_config", json!({"latency_budget_us": 0}));
    assert_eq!(c.ok("lull_supervisor_get_config", Value::Null)["latency_budget_us"], 0);
    let m = c.expect(
        INVALID_PARAMS,
        "lull_supervisor_set_config",
        json!({"latency_budget_us": 5_000_000}),
    );
    assert!(m.contains("latency_budget_us = 5000000: 0 to 1000000"), "{m}");
    c.ok("lull_set_options", json!({"latency_budget_us": 50}));
    c.ok("lull_reactor_set_mode", json!({"mode": "interrupt"}));
    eventually("the budget's spin windows are gone", || {
        c.ok("lull_get_status", Value::Null)["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["spin_window_us"].is_null() && r["mode"] == "interrupt")
    });
    assert_eq!(
        c.ok(
            "lull_supervisor_set_config",
            json!({"adaptive_high_mark": 0.7, "adaptive_low_mark": 0.2, "supervisor_interval_ms": 100, "adaptive_up_samples": 3, "adaptive_down_samples": 4})
        ),
        true
    );
    let sup = c.ok("lull_supervisor_get_config", Value::Null);
    assert_eq!(sup["adaptive_high_mark"], 0.7);
    assert_eq!(sup["adaptive_low_mark"], 0.2);
    assert_eq!(sup["supervisor_interval_ms"], 100);
    assert_eq!(
        (sup["adaptive_up_samples"].clone(), sup["adaptive_down_samples"].clone()),
        (json!(3), json!(4))
    );
    let m = c.expect(
        INVALID_PARAMS,
        "lull_supervisor_set_config",
        json!({"adaptive_high_mark": 2.0}),
    );
    assert!(m.contains("adaptive_high_mark"), "{m}");
    let m = c.expect(
        INVALID_PARAMS,
        "lull_supervisor_set_config",
        json!({"supervisor_interval_ms": 1}),
    );
    assert!(m.contains("supervisor_interval_ms"), "{m}");
    c.expect(
        INVALID_PARAMS,
        "lull_supervisor_set_config",
        json!({"mode_policy": "fast"}),
    );
    c.expect(
        INVALID_PARAMS,
        "lull_supervisor_set_config",
        json!({"nvme_ioq_poll_period_us": 0}),
    );
    assert_eq!(
        c.ok("lull_supervisor_get_config", Value::Null),
        sup,
        "refusals change nothing"
    );

    // Every live setting by name.
    let o = c.ok("lull_get_options", Value::Null);
    for k in [
        "mode_policy",
        "supervisor_interval_ms",
        "adaptive_high_mark",
        "adaptive_low_mark",
        "adaptive_up_samples",
        "adaptive_down_samples",
        "latency_budget_us",
        "core_policy",
        "idle_poll_us",
        "nvme_ioq_poll_period_us",
        "nvme_adminq_poll_period_us",
        "keep_alive_timeout_ms",
        "reconnect_delay_sec",
        "ctrlr_loss_timeout_sec",
        "fast_io_fail_timeout_sec",
        "timeout_us",
        "bdev_retry_count",
        "io_queue_requests",
    ] {
        assert!(o.get(k).is_some(), "{k} in {o}");
    }
    assert_eq!(o["idle_poll_us"], 200);
    c.expect(INVALID_PARAMS, "lull_get_options", json!({"x": 1}));
    assert_eq!(
        c.ok(
            "lull_set_options",
            json!({"nvme_ioq_poll_period_us": 250, "idle_poll_us": 50, "keep_alive_timeout_ms": 0})
        ),
        true
    );
    let o = c.ok("lull_get_options", Value::Null);
    assert_eq!(o["nvme_ioq_poll_period_us"], 250);
    assert_eq!(o["idle_poll_us"], 50);
    assert_eq!(o["keep_alive_timeout_ms"], 0);
    assert_eq!(c.ok("lull_get_status", Value::Null)["idle_poll_us"], 50);
    assert_eq!(
        c.ok("bdev_nvme_get_options", Value::Null)["nvme_ioq_poll_period_us"],
        250
    );
    // Bad values are Invalid Params naming the field, and change nothing.
    for (params, field) in [
        (
            json!({"nvme_ioq_poll_period_us": 20_000_000u64}),
            "nvme_ioq_poll_period_us",
        ),
        (json!({"io_queue_size": 1}), "io_queue_size"),
        (json!({"keep_alive_timeout_ms": 5}), "keep_alive_timeout_ms"),
        (json!({"idle_poll_us": 2_000_000u64}), "idle_poll_us"),
        (json!({"adaptive_low_mark": 0.0}), "adaptive_low_mark"),
        (json!({"latency_budget_us": 1_000_001}), "latency_budget_us"),
        (json!({"mode_policy": "turbo"}), "turbo"),
        (json!({"nvme_ioq_poll_period_us": "fast"}), "fast"),
        (json!({"no_such_option": 1}), "no_such_option"),
        (json!({"ctrlr_loss_timeout_sec": -2}), "ctrlr_loss_timeout_sec"),
        (json!({"cores": "0-1"}), "`cores` cannot change while lull runs"),
        (
            json!({"listen": ["127.0.0.1:4420"]}),
            "`listen` cannot change while lull runs",
        ),
    ] {
        let m = c.expect(INVALID_PARAMS, "lull_set_options", params.clone());
        assert!(m.contains(field), "{params}: {m}");
    }
    assert_eq!(c.ok("lull_get_options", Value::Null), o, "refusals change nothing");
    // Longhorn's names.
    assert_eq!(
        c.ok(
            "lull_set_options",
            json!({"data-engine-nvme-ioq-poll-period-us": 1000, "data-engine-interrupt-mode-enabled": false})
        ),
        true
    );
    let o = c.ok("lull_get_options", Value::Null);
    assert_eq!(o["nvme_ioq_poll_period_us"], 1000);
    assert_eq!(o["mode_policy"], "poll");
    eventually("poll after interrupt-mode-enabled false", || {
        modes(&mut c) == all("poll", "poll")
    });
    c.ok("lull_set_options", json!({"data-engine-interrupt-mode-enabled": true}));
    eventually("interrupt again", || modes(&mut c) == all("interrupt", "interrupt"));
    // mode_policy wins over interrupt_mode in one call.
    c.ok(
        "lull_set_options",
        json!({"mode_policy": "hybrid", "interrupt_mode": false}),
    );
    assert_eq!(c.ok("lull_get_options", Value::Null)["mode_policy"], "hybrid");
    c.ok("lull_set_options", json!({"mode_policy": "interrupt"}));
    eventually("interrupt at the end", || {
        modes(&mut c) == all("interrupt", "interrupt")
    });
    drop(c);
    d.stop();
}

#[test]
fn supervisor_settings_read_back_at_once_and_compose() {
    // Settings changes answered one after the other must all hold: each
    // read-modify-write must see the previous one, even before the
    // supervisor's reactor has applied it.
    let mut d = Daemon::start("compose", "");
    let mut c = d.client();
    for round in 0..20 {
        let (policy, high) = if round % 2 == 0 { ("hybrid", 0.7) } else { ("poll", 0.6) };
        // Back to back in one batch: no time for the supervisor to catch up.
        c.send(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "lull_set_options", "params": {"mode_policy": policy}},
            {"jsonrpc": "2.0", "id": 2, "method": "lull_supervisor_set_config", "params": {"adaptive_high_mark": high}},
            {"jsonrpc": "2.0", "id": 3, "method": "lull_supervisor_get_config"}
        ]));
        let r = c.recv();
        assert_eq!(r[0]["result"], true, "{r}");
        assert_eq!(r[1]["result"], true, "{r}");
        // Read-your-writes: the config shown is the one just set.
        assert_eq!(r[2]["result"]["mode_policy"], policy, "round {round}: {r}");
        assert_eq!(r[2]["result"]["adaptive_high_mark"], high, "round {round}: {r}");
        // And it is what stays in force.
        std::thread::sleep(Duration::from_millis(5));
        let sup = c.ok("lull_supervisor_get_config", Value::Null);
        assert_eq!(
            (sup["mode_policy"].clone(), sup["adaptive_high_mark"].clone()),
            (json!(policy), json!(high)),
            "round {round}"
        );
        c.send_raw(
            format!(
                "{}{}",
                json!({"jsonrpc": "2.0", "id": 4, "method": "lull_reactor_set_mode", "params": {"mode": "interrupt"}}),
                json!({"jsonrpc": "2.0", "id": 5, "method": "lull_get_status"})
            )
            .as_bytes(),
        );
        assert_eq!(c.recv()["result"], true);
        assert_eq!(c.recv()["result"]["mode_policy"], "interrupt", "round {round}");
    }
    let all_interrupt = |c: &mut Client| {
        c.ok("lull_get_status", Value::Null)["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["mode"] == "interrupt")
    };
    eventually("interrupt at the end", || all_interrupt(&mut c));
    drop(c);
    d.stop();
}

#[test]
fn json_rpc_framing_and_protocol_errors() {
    let mut d = Daemon::start("proto", "");
    let mut c = d.client();

    // Unknown method.
    let (code, msg) = c.err("bdev_frobnicate", Value::Null);
    assert_eq!((code, msg.as_str()), (METHOD_NOT_FOUND, "Method not found"));
    // params that are not an object.
    c.expect(INVALID_PARAMS, "bdev_get_bdevs", json!(["Malloc0"]));
    c.expect(INVALID_PARAMS, "bdev_get_bdevs", json!("Malloc0"));

    // Not JSON-RPC 2.0: Invalid Request, with the id when there is one.
    for req in [
        json!({"jsonrpc": "1.0", "method": "spdk_get_version", "id": 7}),
        json!({"method": "spdk_get_version", "id": 7}),
        json!({"jsonrpc": 2.0, "method": "spdk_get_version", "id": 7}),
        json!({"jsonrpc": "2.0", "method": 5, "id": 7}),
        json!({"jsonrpc": "2.0", "id": 7}),
    ] {
        c.send(&req);
        let r = c.recv();
        assert_eq!(r["error"]["code"], INVALID_REQUEST, "{req}: {r}");
        assert_eq!(r["id"], 7, "{r}");
    }
    c.send(&json!({"jsonrpc": "2.0", "method": "spdk_get_version", "id": {"x": 1}}));
    assert_eq!(c.recv()["error"]["code"], INVALID_REQUEST);
    c.send(&json!("just a string"));
    let r = c.recv();
    assert_eq!(r["error"]["code"], INVALID_REQUEST);
    assert_eq!(r["id"], Value::Null);
    c.send(&json!([]));
    let r = c.recv();
    assert!(r.is_object(), "an empty batch is one error: {r}");
    assert_eq!(r["error"]["code"], INVALID_REQUEST);

    // A key named twice in one object (SPDK's decoder refuses it; a parsed
    // value would keep the last): Invalid params naming it inside params,
    // Invalid request elsewhere; nothing is created.
    c.send_raw(
        br#"{"jsonrpc":"2.0","method":"bdev_malloc_create","id":8,"params":{"name":"Dup0","num_blocks":8,"block_size":512,"name":"Dup1"}}"#,
    );
    let r = c.recv();
    assert_eq!(r["error"]["code"], INVALID_PARAMS, "{r}");
    assert_eq!(r["id"], 8, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`params.name`"),
        "{r}"
    );
    c.send_raw(br#"{"jsonrpc":"2.0","method":"bdev_get_bdevs","method":"spdk_get_version","id":9}"#);
    let r = c.recv();
    assert_eq!(
        (r["error"]["code"].clone(), r["id"].clone()),
        (json!(INVALID_REQUEST), json!(9)),
        "{r}"
    );
    let all = c.ok("bdev_get_bdevs", Value::Null);
    assert!(
        !names(&all).iter().any(|n| n.starts_with("Dup")),
        "no bdev from a refused request: {all}"
    );

    // String and null ids come back as given.
    c.send(&json!({"jsonrpc": "2.0", "method": "spdk_get_version", "id": "abc"}));
    assert_eq!(c.recv()["id"], "abc");

    // A notification (no id) is executed and gets no answer: the next
    // response read is the next request's.
    c.send(&json!({"jsonrpc": "2.0", "method": "bdev_malloc_create", "params": {"name": "Quiet0", "num_blocks": 8, "block_size": 512}}));
    c.send(&json!({"jsonrpc": "2.0", "method": "bdev_malloc_create", "params": {"name": "Quiet0", "num_blocks": 8, "block_size": 512}}));
    c.send(&json!({"jsonrpc": "2.0", "method": "no_such_method"}));
    let b = c.ok("bdev_get_bdevs", json!({"name": "Quiet0"}));
    assert_eq!(b[0]["name"], "Quiet0", "the notification ran");

    // Two requests in one write, and one split over several writes.
    let r1 = json!({"jsonrpc": "2.0", "method": "spdk_get_version", "id": 101});
    let r2 = json!({"jsonrpc": "2.0", "method": "bdev_get_bdevs", "id": 102});
    c.send_raw(format!("{r1}\n  {r2}").as_bytes());
    assert_eq!(c.recv()["id"], 101);
    assert_eq!(c.recv()["id"], 102);
    let text = json!({"jsonrpc": "2.0", "method": "spdk_get_version", "id": 103}).to_string();
    let (a, b) = text.split_at(text.len() / 2);
    c.send_raw(a.as_bytes());
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(b.as_bytes());
    let r = c.recv();
    assert_eq!(r["id"], 103);
    assert!(r["result"]["version"].is_string());

    // A batch gets an array of the answers, notifications left out.
    c.send(&json!([
        {"jsonrpc": "2.0", "method": "spdk_get_version", "id": 1},
        {"jsonrpc": "2.0", "method": "no_such_method", "id": 2},
        {"jsonrpc": "2.0", "method": "bdev_malloc_create", "params": {"name": "Batch0", "num_blocks": 8, "block_size": 512}},
        {"jsonrpc": "1.0", "method": "spdk_get_version", "id": 3},
        {"jsonrpc": "2.0", "method": "bdev_get_bdevs", "params": {"name": "Batch0"}, "id": 4}
    ]));
    let r = c.recv();
    let arr = r
        .as_array()
        .unwrap_or_else(|| panic!("a batch answer is an array: {r}"));
    assert_eq!(arr.len(), 4, "{r}");
    assert_eq!(arr[0]["id"], 1);
    assert!(arr[0]["result"]["version"].is_string());
    assert_eq!(
        (arr[1]["id"].clone(), arr[1]["error"]["code"].clone()),
        (json!(2), json!(METHOD_NOT_FOUND))
    );
    assert_eq!(
        (arr[2]["id"].clone(), arr[2]["error"]["code"].clone()),
        (json!(3), json!(INVALID_REQUEST))
    );
    assert_eq!(arr[3]["id"], 4);
    assert_eq!(arr[3]["result"][0]["name"], "Batch0");
    // A batch of notifications only: no answer at all.
    c.send(&json!([{"jsonrpc": "2.0", "method": "spdk_get_version"}]));
    assert_eq!(c.ok("bdev_get_bdevs", json!({"name": "Batch0"}))[0]["name"], "Batch0");

    // Other connections are served at the same time.
    let mut c2 = d.client();
    assert!(c2.ok("spdk_get_version", Value::Null)["version"].is_string());
    assert!(c.ok("spdk_get_version", Value::Null)["version"].is_string());

    // Malformed JSON: Parse Error (id null), then the server closes the connection.
    c.send_raw(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": nope}");
    let r = c.recv();
    assert_eq!(r["error"]["code"], PARSE_ERROR, "{r}");
    assert_eq!(r["id"], Value::Null);
    assert!(c.closed_by_server(), "the connection is closed after a parse error");
    // The server goes on; other connections are untouched.
    assert!(c2.ok("spdk_get_version", Value::Null)["version"].is_string());
    let mut c3 = d.client();
    c3.send_raw(b"]");
    assert_eq!(c3.recv()["error"]["code"], PARSE_ERROR);
    assert!(c3.closed_by_server());

    // handle_request directly: a notification has no response.
    assert!(rpc::handle_request(&d.app, &json!({"jsonrpc": "2.0", "method": "spdk_get_version"})).is_none());
    let r = rpc::handle_request(&d.app, &json!({"jsonrpc": "2.0", "method": "nope", "id": 9})).unwrap();
    assert_eq!(r["error"]["code"], METHOD_NOT_FOUND);
    drop((c, c2, c3));
    d.stop();
}

#[test]
fn socket_is_private_and_exclusive() {
    let mut d = Daemon::start("socket", "");
    let meta = std::fs::metadata(&d.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");

    // A second server on the live path is refused, and the first keeps serving.
    let e = match RpcServer::start(d.app.clone(), &d.path) {
        Ok(_) => panic!("a second server started on a live socket"),
        Err(e) => e,
    };
    assert!(
        e.contains(&d.path.display().to_string()) && e.contains("another daemon"),
        "{e}"
    );
    assert!(d.client().ok("spdk_get_version", Value::Null)["version"].is_string());

    // Dropping the server removes its socket.
    drop(d.rpc.take());
    assert!(!d.path.exists(), "socket removed on drop");

    // A stale socket (nobody listening) is replaced.
    let stale = socket_path("stale");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let rpc = RpcServer::start(d.app.clone(), &stale).unwrap();
    assert_eq!(std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777, 0o600);
    let mut c = Client::connect(&stale);
    assert!(c.ok("spdk_get_version", Value::Null)["version"].is_string());
    drop(c);
    drop(rpc);
    assert!(!stale.exists());

    // A path that cannot be bound names the path.
    let nodir = std::env::temp_dir().join(format!("lull-no-such-dir-{}/x.sock", std::process::id()));
    let e = match RpcServer::start(d.app.clone(), &nodir) {
        Ok(_) => panic!("bound in a missing directory"),
        Err(e) => e,
    };
    assert!(e.contains(&nodir.display().to_string()), "{e}");
    d.stop();
}

fn rw_sqe(opc: u8, slba: u64, nlb: u32) -> lull_proto::nvme::Sqe {
    let mut sqe = lull_proto::nvme::Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.0[4..8].copy_from_slice(&1u32.to_le_bytes());
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, nlb - 1);
    sqe
}

/// The value of the sample `name{labels}` in Prometheus text.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn metrics_render_every_core() {
    use lull_proto::nvme::io_opc;
    use lull_proto::pdu::Digests;
    use lull_transport::host_sync::SyncQueue;

    let mut d = Daemon::start("metrics", "");
    let mut c = d.client();
    let port = serve_malloc(&mut c, "Malloc0", 2048);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let before = metrics::render(&d.app).unwrap();
    for core in &d.cores {
        let l = format!("core=\"{core}\"");
        assert_eq!(
            sample(&before, &format!("lull_reactor_mode{{{l},mode=\"interrupt\"}}")),
            Some(1.0),
            "{before}"
        );
        assert_eq!(
            sample(&before, &format!("lull_reactor_mode{{{l},mode=\"poll\"}}")),
            Some(0.0)
        );
        assert_eq!(
            sample(&before, &format!("lull_reactor_mode{{{l},mode=\"hybrid\"}}")),
            Some(0.0)
        );
        assert_eq!(
            sample(&before, &format!("lull_reactor_interrupt_mode_enabled{{{l}}}")),
            Some(1.0)
        );
        for m in [
            "lull_reactor_busy_seconds_total",
            "lull_reactor_cpu_seconds_total",
            "lull_reactor_wakeups_total",
            "lull_reactor_mode_switches_total",
            "lull_target_queues",
        ] {
            assert!(
                sample(&before, &format!("{m}{{{l}}}")).is_some(),
                "{m} for core {core}:\n{before}"
            );
        }
        for dir in ["read", "write"] {
            let dl = format!("{l},direction=\"{dir}\"");
            assert_eq!(
                sample(&before, &format!("lull_target_io_commands_total{{{dl}}}")),
                Some(0.0)
            );
            assert_eq!(
                sample(&before, &format!("lull_target_io_bytes_total{{{dl}}}")),
                Some(0.0)
            );
        }
    }
    for (m, kind) in [
        ("lull_reactor_mode", "gauge"),
        ("lull_reactor_wakeups", "counter"),
        ("lull_target_io_commands", "counter"),
        ("lull_target_io_bytes", "counter"),
        ("lull_target_controllers", "gauge"),
    ] {
        assert!(before.contains(&format!("# TYPE {m} {kind}")), "{m} {kind}:\n{before}");
        assert!(before.contains(&format!("# HELP {m} ")), "{m}");
    }
    assert_eq!(sample(&before, "lull_target_subsystems"), Some(1.0));
    assert_eq!(sample(&before, "lull_target_controllers"), Some(0.0));
    assert_eq!(sample(&before, "lull_nvme_controllers"), Some(0.0));
    assert!(before.trim_end().ends_with("# EOF"), "OpenMetrics end marker");

    // I/O through a plain host: the counters move.
    let (_admin, cntlid) = SyncQueue::admin(addr, NQN, HOSTNQN, Digests::default(), 30_000).unwrap();
    let mut io = SyncQueue::io(addr, NQN, HOSTNQN, cntlid, Digests::default(), 8192).unwrap();
    let data = vec![0x5a; 4096];
    for i in 0..4 {
        io.call("write", rw_sqe(io_opc::WRITE, i * 8, 8), &data, 0).unwrap();
    }
    for i in 0..3 {
        let r = io.call("read", rw_sqe(io_opc::READ, i * 8, 8), &[], 4096).unwrap();
        assert!(r.data == data);
    }
    let after = metrics::render(&d.app).unwrap();
    let total = |text: &str, m: &str, dir: &str| -> f64 {
        d.cores
            .iter()
            .map(|core| sample(text, &format!("{m}{{core=\"{core}\",direction=\"{dir}\"}}")).unwrap())
            .sum()
    };
    assert_eq!(total(&after, "lull_target_io_commands_total", "write"), 4.0, "{after}");
    assert_eq!(total(&after, "lull_target_io_commands_total", "read"), 3.0);
    assert_eq!(total(&after, "lull_target_io_bytes_total", "write"), 4.0 * 4096.0);
    assert_eq!(total(&after, "lull_target_io_bytes_total", "read"), 3.0 * 4096.0);
    assert_eq!(sample(&after, "lull_target_controllers"), Some(1.0));
    let queues: f64 = d
        .cores
        .iter()
        .map(|core| sample(&after, &format!("lull_target_queues{{core=\"{core}\"}}")).unwrap())
        .sum();
    assert_eq!(queues, 2.0, "admin and I/O queue");
    // lull_get_status agrees.
    let st = c.ok("lull_get_status", Value::Null);
    let sum = |k: &str| -> u64 {
        st["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum("reads"), sum("writes")), (3, 4));
    assert_eq!((sum("bytes_read"), sum("bytes_written")), (3 * 4096, 4 * 4096));

    // A mode change shows.
    c.ok("lull_reactor_set_mode", json!({"mode": "hybrid"}));
    eventually("hybrid in the metrics", || {
        let t = metrics::render(&d.app).unwrap();
        d.cores.iter().all(|core| {
            sample(&t, &format!("lull_reactor_mode{{core=\"{core}\",mode=\"hybrid\"}}")) == Some(1.0)
                && sample(&t, &format!("lull_reactor_interrupt_mode_enabled{{core=\"{core}\"}}")) == Some(0.0)
        })
    });
    c.ok("lull_reactor_set_mode", json!({"mode": "interrupt"}));

    // Served over HTTP.
    let server = MetricsServer::start(d.app.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let r = get("/metrics");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("application/openmetrics-text; version=1.0.0"), "{r}");
    assert!(r.contains("lull_target_io_commands_total{"), "{r}");
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    drop(server);

    drop((io, _admin));
    drop(c);
    d.stop();
}

#[test]
fn daemon_starts_from_a_config_with_storage() {
    // Bdevs, a subsystem and its listener from the file; the RPC view matches.
    let file = std::env::temp_dir().join(format!("lull-rpc-cfg-{}.img", std::process::id()));
    std::fs::File::create(&file).unwrap().set_len(1 << 20).unwrap();
    let mut d = Daemon::start(
        "config",
        &format!(
            r#"
mode_policy = "hybrid"
nvme_ioq_poll_period_us = 0
[[bdev]]
name = "Malloc7"
type = "malloc"
size = "1MiB"
[[bdev]]
name = "File0"
type = "uring"
filename = "{}"
[[subsystem]]
nqn = "{NQN}"
hosts = ["{HOSTNQN}"]
listen = ["127.0.0.1:0"]
max_namespaces = 4
namespaces = [{{ bdev = "Malloc7", nsid = 2 }}, {{ bdev = "File0" }}]
"#,
            file.display()
        ),
    );
    let mut c = d.client();
    assert_eq!(names(&c.ok("bdev_get_bdevs", Value::Null)), ["File0", "Malloc7"]);
    let s = &c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0];
    assert_eq!(s["serial_number"], "LULL0000000000000001");
    assert_eq!(s["hosts"], json!([{"nqn": HOSTNQN}]));
    let ns: Vec<(u64, &str)> = s["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["nsid"].as_u64().unwrap(), n["bdev_name"].as_str().unwrap()))
        .collect();
    assert_eq!(ns, [(1, "File0"), (2, "Malloc7")]);
    bound_port(&mut c, NQN);
    // Storage in the file creates the transport.
    assert_eq!(c.ok("nvmf_get_transports", Value::Null)[0]["trtype"], "TCP");
    c.expect(EEXIST, "nvmf_create_transport", json!({"trtype": "TCP"}));
    assert_eq!(c.ok("lull_get_status", Value::Null)["mode_policy"], "hybrid");
    assert_eq!(c.ok("bdev_nvme_get_options", Value::Null)["nvme_ioq_poll_period_us"], 0);
    drop(c);
    d.stop();
    std::fs::remove_file(&file).unwrap();
}
