//! State built over JSON-RPC survives a restart: a daemon is built with every
//! kind of object and setting, saved with `save_config`, stopped; a fresh
//! daemon loads the document (as `lull target --json-config` does, and over
//! `load_config`) and every get method answers as the first daemon's did.
//! Also: the document's shape (SPDK's order, rpc.py's save_config path), and
//! the loader's answers to SPDK-only entries and to bad files.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lull_daemon::app::App;
use lull_daemon::config::Config;
use lull_daemon::rpc::{RpcServer, config_json};
use lull_reactor::CoreList;
use serde_json::{Value, json};

const S1: &str = "nqn.2024-01.io.lull:cfg1";
const S2: &str = "nqn.2024-01.io.lull:cfg2";
const REMOTE: &str = "nqn.2024-01.io.lull:remote";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";
const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000c1";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000c2";

fn cores() -> (String, Vec<usize>) {
    let c: Vec<usize> = CoreList::usable().unwrap().cores().iter().copied().take(2).collect();
    (c.iter().map(ToString::to_string).collect::<Vec<_>>().join(","), c)
}

fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("lull-cfgjson-{}-{n}-{tag}", std::process::id()))
}

struct Daemon {
    app: Arc<App>,
    rpc: Option<RpcServer>,
    path: PathBuf,
}

impl Daemon {
    /// An empty daemon, as `lull target` with no storage.
    fn start(tag: &str) -> Daemon {
        let (c, _) = cores();
        let path = temp_path(&format!("{tag}.sock"));
        let text = format!(
            "cores = \"{c}\"\nrpc_socket = \"{}\"\nlog_level = \"warn\"\n",
            path.display()
        );
        let settings = Config::from_toml(&text).unwrap().resolve().unwrap();
        let app = App::start(&settings).unwrap();
        let rpc = RpcServer::start(app.clone(), &path).unwrap();
        Daemon {
            app,
            rpc: Some(rpc),
            path,
        }
    }

    fn client(&self) -> Client {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client { s, id: 0 }
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

struct Client {
    s: UnixStream,
    id: u64,
}

impl Client {
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": self.id});
        if !params.is_null() {
            req["params"] = params;
        }
        self.s.write_all(req.to_string().as_bytes()).unwrap();
        let mut it = serde_json::Deserializer::from_reader(&self.s).into_iter::<Value>();
        it.next().expect("a response").expect("JSON")
    }

    #[track_caller]
    fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.request(method, params.clone());
        assert!(r.get("error").is_none(), "{method} {params}: {}", r["error"]);
        r["result"].clone()
    }

    #[track_caller]
    fn err(&mut self, method: &str, params: Value) -> String {
        let r = self.request(method, params.clone());
        assert!(r.get("result").is_none(), "{method} {params} succeeded: {r}");
        r["error"]["message"].as_str().unwrap().to_string()
    }
}

/// Everything the get methods show, less what a restart changes by nature
/// (uptime, counters, a controller's CNTLID and reset count).
fn snapshot(c: &mut Client) -> Value {
    let mut ctrlrs = c.ok("bdev_nvme_get_controllers", Value::Null);
    for x in ctrlrs.as_array_mut().unwrap() {
        for cc in x["ctrlrs"].as_array_mut().unwrap() {
            let o = cc.as_object_mut().unwrap();
            o.remove("cntlid");
            o.remove("resets");
        }
    }
    // The order a subsystem lists its ports in is the registry's, not state.
    let mut subsystems = c.ok("nvmf_get_subsystems", Value::Null);
    for s in subsystems.as_array_mut().unwrap() {
        let l = s["listen_addresses"].as_array_mut().unwrap();
        l.sort_by_key(|a| a["trsvcid"].as_str().unwrap().parse::<u16>().unwrap());
    }
    json!({
        "bdevs": c.ok("bdev_get_bdevs", Value::Null),
        "subsystems": subsystems,
        "transports": c.ok("nvmf_get_transports", Value::Null),
        "nvme_options": c.ok("bdev_nvme_get_options", Value::Null),
        "controllers": ctrlrs,
        "options": c.ok("lull_get_options", Value::Null),
        "supervisor": c.ok("lull_supervisor_get_config", Value::Null),
    })
}

fn port_of(c: &mut Client, nqn: &str) -> String {
    let s = c.ok("nvmf_get_subsystems", json!({"nqn": nqn}));
    s[0]["listen_addresses"][0]["trsvcid"].as_str().unwrap().to_string()
}

fn listener(nqn: &str, port: &str) -> Value {
    json!({"nqn": nqn, "listen_address": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": port}})
}

/// The remote target a controller is attached to: one 8 MiB RAM namespace.
fn remote() -> (Daemon, String) {
    let d = Daemon::start("remote");
    let mut c = d.client();
    c.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    c.ok(
        "bdev_malloc_create",
        json!({"name": "R0", "num_blocks": 16384, "block_size": 512}),
    );
    c.ok("nvmf_create_subsystem", json!({"nqn": REMOTE, "allow_any_host": true}));
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": REMOTE, "namespace": {"bdev_name": "R0"}}),
    );
    c.ok("nvmf_subsystem_add_listener", listener(REMOTE, "0"));
    let port = port_of(&mut c, REMOTE);
    (d, port)
}

/// Builds every kind of object and setting over RPC.
fn build(c: &mut Client, core: usize, remote_port: &str, file: &Path) {
    c.ok(
        "bdev_nvme_set_options",
        json!({
            "nvme_ioq_poll_period_us": 250, "nvme_adminq_poll_period_us": 20000,
            "keep_alive_timeout_ms": 5000, "timeout_us": 20000000, "action_on_timeout": "reset",
            "bdev_retry_count": 5, "io_queue_requests": 64,
            "ctrlr_loss_timeout_sec": 20, "reconnect_delay_sec": 3, "fast_io_fail_timeout_sec": 12
        }),
    );
    c.ok(
        "lull_set_options",
        json!({
            "mode_policy": "hybrid", "idle_poll_us": 77, "supervisor_interval_ms": 300,
            "adaptive_high_mark": 0.6, "adaptive_low_mark": 0.1, "adaptive_up_samples": 3,
            "adaptive_down_samples": 9, "latency_budget_us": 120
        }),
    );
    c.ok("lull_reactor_set_mode", json!({"mode": "poll", "core": core}));
    c.ok(
        "nvmf_create_transport",
        json!({"trtype": "TCP", "in_capsule_data_size": 4096, "max_h2c_data": 65536}),
    );
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 2048, "block_size": 4096, "uuid": "4a1b2c3d-0000-4000-8000-00000000a1b2"}),
    );
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc1", "num_blocks": 4096, "block_size": 512}),
    );
    c.ok(
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 1 << 20, "block_size": 512}),
    );
    c.ok(
        "bdev_uring_create",
        json!({"name": "File0", "filename": file.display().to_string(), "block_size": 4096}),
    );
    let names = c.ok(
        "bdev_nvme_attach_controller",
        json!({
            "name": "Nvme0", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1", "trsvcid": remote_port,
            "subnqn": REMOTE, "hostnqn": HOST_A, "hdgst": true,
            "ctrlr_loss_timeout_sec": 30, "reconnect_delay_sec": 5, "fast_io_fail_timeout_sec": 6
        }),
    );
    assert_eq!(names, json!(["Nvme0n1"]));
    c.ok(
        "nvmf_create_subsystem",
        json!({"nqn": S1, "serial_number": "CFG0001", "model_number": "cfg model", "max_namespaces": 8}),
    );
    c.ok("nvmf_subsystem_add_host", json!({"nqn": S1, "host": HOST_A}));
    c.ok("nvmf_subsystem_add_host", json!({"nqn": S1, "host": HOST_B}));
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": S1, "namespace": {"bdev_name": "Malloc0", "nsid": 5}}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": S1, "namespace": {"bdev_name": "Null0", "nsid": 1}}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": S1, "namespace": {"bdev_name": "Nvme0n1"}}),
    );
    c.ok("nvmf_subsystem_add_listener", listener(S1, "0"));
    c.ok("nvmf_create_subsystem", json!({"nqn": S2, "allow_any_host": true}));
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": S2, "namespace": {"bdev_name": "Malloc1"}}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": S2, "namespace": {"bdev_name": "File0"}}),
    );
    let p1 = port_of(c, S1);
    c.ok("nvmf_subsystem_add_listener", listener(S2, &p1));
    c.ok("nvmf_subsystem_add_listener", listener(S2, "0"));
    c.ok("nvmf_subsystem_add_listener", listener(DISCOVERY, "0"));
}

fn methods(config: &Value) -> Vec<String> {
    config
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["method"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn state_survives_a_restart() {
    let (c_text, core_list) = cores();
    let _ = c_text;
    let (_remote, rport) = remote();
    let file = temp_path("file0.img");
    std::fs::File::create(&file).unwrap().set_len(4 << 20).unwrap();

    let mut first = Daemon::start("first");
    let mut c = first.client();
    build(&mut c, core_list[0], &rport, &file);
    let before = snapshot(&mut c);
    // What was built shows: the checks below compare something.
    assert_eq!(before["bdevs"].as_array().unwrap().len(), 5, "{}", before["bdevs"]);
    assert_eq!(before["subsystems"].as_array().unwrap().len(), 3);
    assert_eq!(before["supervisor"]["core_policy"].as_array().unwrap().len(), 1);
    assert_eq!(before["controllers"].as_array().unwrap().len(), 1);

    let doc = c.ok("save_config", Value::Null);
    // rpc.py save_config's path: framework_get_subsystems, then framework_get_config of each.
    let subs = c.ok("framework_get_subsystems", Value::Null);
    let via_rpc_py: Vec<Value> = subs
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["subsystem"].as_str().unwrap();
            json!({"subsystem": name, "config": c.ok("framework_get_config", json!({"name": name}))})
        })
        .collect();
    assert_eq!(Value::Array(via_rpc_py), doc["subsystems"]);
    assert_eq!(
        c.ok("framework_get_config", json!({"name": "lull"})),
        doc["lull_subsystems"][0]["config"]
    );
    assert!(
        c.err("framework_get_config", json!({"name": "iscsi"}))
            .contains("Subsystem 'iscsi' not found")
    );
    // SPDK's order: options before the objects, bdevs before nvmf, examine last.
    assert_eq!(doc["subsystems"][0]["subsystem"], "keyring");
    let bdev = methods(&doc["subsystems"][1]["config"]);
    assert_eq!(doc["subsystems"][1]["subsystem"], "bdev");
    assert_eq!(bdev.first().map(String::as_str), Some("bdev_nvme_set_options"));
    assert_eq!(bdev[1], "bdev_nvme_attach_controller");
    assert_eq!(bdev.last().map(String::as_str), Some("bdev_wait_for_examine"));
    let nvmf = methods(&doc["subsystems"][2]["config"]);
    assert_eq!(doc["subsystems"][2]["subsystem"], "nvmf");
    assert_eq!(nvmf[0], "nvmf_create_transport");
    drop(c);
    first.stop();

    // As `lull target --json-config`: a fresh daemon, then the document.
    let second = Daemon::start("second");
    let report = config_json::load(&second.app, &doc, &Vec::new()).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let n_entries: usize = ["subsystems", "lull_subsystems"]
        .iter()
        .flat_map(|k| doc[k].as_array().unwrap())
        .map(|s| s["config"].as_array().unwrap().len())
        .sum();
    assert_eq!(report.applied, n_entries);
    let mut c2 = second.client();
    assert_eq!(snapshot(&mut c2), before);
    // Saving again gives the same document.
    assert_eq!(c2.ok("save_config", Value::Null), doc);
    drop(c2);
    drop(second);

    // Over the load_config method.
    let third = Daemon::start("third");
    let mut c3 = third.client();
    let r = c3.ok("load_config", doc.clone());
    assert_eq!(r["applied"], json!(n_entries));
    assert_eq!(snapshot(&mut c3), before);
    drop(c3);
    drop(third);
    let _ = std::fs::remove_file(&file);
}

/// What spdk_tgt's save_config writes around the objects (v25.09), trimmed.
fn spdk_style_doc(extra_nvmf: Vec<Value>) -> Value {
    let mut nvmf = vec![
        json!({"method": "nvmf_set_config", "params": {"discovery_filter": "match_any", "admin_cmd_passthru": {"identify_ctrlr": false, "vendor_specific": false}, "dhchap_digests": ["sha256"], "dhchap_dhgroups": ["null"]}}),
        json!({"method": "nvmf_set_max_subsystems", "params": {"max_subsystems": 1024}}),
        json!({"method": "nvmf_set_crdt", "params": {"crdt1": 0, "crdt2": 0, "crdt3": 0}}),
        json!({"method": "nvmf_create_transport", "params": {"trtype": "TCP", "max_queue_depth": 128, "max_io_qpairs_per_ctrlr": 127, "in_capsule_data_size": 4096, "max_io_size": 131072, "io_unit_size": 131072, "max_aq_depth": 128, "num_shared_buffers": 511, "buf_cache_size": 4294967295u64, "dif_insert_or_strip": false, "zcopy": false, "c2h_success": true, "sock_priority": 0, "abort_timeout_sec": 1, "ack_timeout": 0, "data_wr_pool_size": 0}}),
        json!({"method": "nvmf_create_subsystem", "params": {"nqn": S1, "allow_any_host": true, "serial_number": "SPDK00000000000001", "model_number": "SPDK bdev Controller", "max_namespaces": 32, "min_cntlid": 1, "max_cntlid": 65519, "ana_reporting": false}}),
        json!({"method": "nvmf_subsystem_add_ns", "params": {"nqn": S1, "namespace": {"nsid": 1, "bdev_name": "Malloc0", "nguid": "4A1B2C3D00004000800000000000A1B2", "uuid": "4a1b2c3d-0000-4000-8000-00000000a1b2", "no_auto_visible": false}}}),
    ];
    nvmf.extend(extra_nvmf);
    let nvme_opts = json!({"method": "bdev_nvme_set_options", "params": {"action_on_timeout": "none", "timeout_us": 0, "timeout_admin_us": 0, "keep_alive_timeout_ms": 10000, "arbitration_burst": 0, "low_priority_weight": 0, "medium_priority_weight": 0, "high_priority_weight": 0, "nvme_adminq_poll_period_us": 10000, "nvme_ioq_poll_period_us": 0, "io_queue_requests": 0, "delay_cmd_submit": true, "transport_retry_count": 4, "bdev_retry_count": 3, "transport_ack_timeout": 0, "ctrlr_loss_timeout_sec": 0, "reconnect_delay_sec": 0, "fast_io_fail_timeout_sec": 0, "disable_auto_failback": false, "generate_uuids": false, "transport_tos": 0, "nvme_error_stat": false, "rdma_srq_size": 0, "io_path_stat": false, "allow_accel_sequence": false, "rdma_max_cq_size": 0, "rdma_cm_event_timeout_ms": 0, "dhchap_digests": ["sha256", "sha384", "sha512"], "dhchap_dhgroups": ["null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"], "rdma_umr_per_io": false, "tcp_connect_timeout_ms": 0, "enable_flush": false}});
    json!({"subsystems": [
        {"subsystem": "keyring", "config": []},
        {"subsystem": "iobuf", "config": [{"method": "iobuf_set_options", "params": {"small_pool_count": 8192, "large_pool_count": 1024, "small_bufsize": 8192, "large_bufsize": 135168, "enable_numa": false}}]},
        {"subsystem": "sock", "config": [{"method": "sock_set_default_impl", "params": {"impl_name": "posix"}}]},
        {"subsystem": "accel", "config": [{"method": "accel_set_options", "params": {"small_cache_size": 128, "large_cache_size": 16, "task_count": 2048, "sequence_count": 2048, "buf_count": 2048}}]},
        {"subsystem": "bdev", "config": [
            {"method": "bdev_set_options", "params": {"bdev_io_pool_size": 65535, "bdev_io_cache_size": 256, "bdev_auto_examine": true, "iobuf_small_cache_size": 128, "iobuf_large_cache_size": 16}},
            nvme_opts,
            {"method": "bdev_nvme_set_hotplug", "params": {"period_us": 100000, "enable": false}},
            {"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 2048, "block_size": 512, "physical_block_size": 512, "uuid": "4a1b2c3d-0000-4000-8000-00000000a1b2", "optimal_io_boundary": 0, "md_size": 0, "dif_type": 0, "dif_is_head_of_md": false, "dif_pi_format": 0}},
            {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": 4096, "block_size": 512, "physical_block_size": 512, "md_size": 0, "dif_type": 0, "dif_is_head_of_md": false, "dif_pi_format": 0, "uuid": "4a1b2c3d-0000-4000-8000-00000000a1b3", "preferred_write_granularity": 0, "preferred_write_alignment": 0, "optimal_write_size": 0, "preferred_unmap_granularity": 0, "preferred_unmap_alignment": 0}},
            {"method": "bdev_wait_for_examine"}
        ]},
        {"subsystem": "scheduler", "config": [{"method": "framework_set_scheduler", "params": {"name": "static"}}]},
        {"subsystem": "scsi", "config": null},
        {"subsystem": "nvmf", "config": nvmf}
    ]})
}

#[test]
fn an_spdk_config_loads_with_warnings_for_what_lull_lacks() {
    let d = Daemon::start("spdk");
    let r = config_json::load(&d.app, &spdk_style_doc(vec![]), &Vec::new()).unwrap();
    let skipped = [
        "iobuf_set_options",
        "sock_set_default_impl",
        "accel_set_options",
        "bdev_set_options",
        "bdev_nvme_set_hotplug",
        "framework_set_scheduler",
        "nvmf_set_max_subsystems",
        "nvmf_set_crdt",
    ];
    // nvmf_set_config runs: its DH-HMAC-CHAP lists are the target's now.
    let allowed = d.app.target().dhchap_allowed();
    assert_eq!(
        (allowed.digest_names(), allowed.dhgroup_names()),
        (vec!["sha256"], vec!["null"])
    );
    for m in skipped {
        assert!(
            r.warnings.iter().any(|w| w.contains(&format!("({m}) skipped"))),
            "{m}: {:?}",
            r.warnings
        );
    }
    // SPDK's NGUID is lull's derivation too: nothing to say about it.
    assert_eq!(r.warnings.len(), skipped.len(), "{:?}", r.warnings);
    let mut c = d.client();
    let o = c.ok("bdev_nvme_get_options", Value::Null);
    // SPDK's values, except io_queue_requests 0 (SPDK: size it for me) which keeps lull's.
    assert_eq!(o["nvme_ioq_poll_period_us"], 0);
    assert_eq!(o["ctrlr_loss_timeout_sec"], 0);
    assert_eq!(o["timeout_us"], 0);
    assert_eq!(
        o["io_queue_requests"],
        lull_engine::initiator::NvmeOptions::default().io_queue_size
    );
    let b = c.ok("bdev_get_bdevs", json!({"name": "Malloc0"}));
    assert_eq!(b[0]["uuid"], "4a1b2c3d-0000-4000-8000-00000000a1b2");
    assert_eq!(b[0]["num_blocks"], 2048);
    let s = c.ok("nvmf_get_subsystems", json!({"nqn": S1}));
    assert_eq!(s[0]["serial_number"], "SPDK00000000000001");
    assert_eq!(s[0]["namespaces"][0]["uuid"], "4a1b2c3d-0000-4000-8000-00000000a1b2");
    assert_eq!(
        c.ok("nvmf_get_transports", Value::Null)[0]["in_capsule_data_size"],
        4096
    );
}

#[test]
fn a_bad_config_names_the_entry_and_applies_nothing() {
    let d = Daemon::start("bad");
    let mut c = d.client();
    // An unknown method anywhere: nothing at all is applied.
    let doc = spdk_style_doc(vec![json!({"method": "nvmf_discovery_add_referral", "params": {}})]);
    let e = config_json::load(&d.app, &doc, &Vec::new()).unwrap_err().to_string();
    assert!(e.contains("nothing was applied"), "{e}");
    assert!(
        e.contains("subsystems[7].config[6] (nvmf_discovery_add_referral): method not implemented by lull"),
        "{e}"
    );
    assert_eq!(c.ok("bdev_get_bdevs", Value::Null), json!([]));
    // Over RPC the same, as Invalid Params.
    let m = c.err("load_config", doc);
    assert!(m.contains("nvmf_discovery_add_referral"), "{m}");
    // An SPDK-only setting that asks for something: named.
    let crdt =
        json!({"subsystems": [{"subsystem": "nvmf", "config": [{"method": "nvmf_set_crdt", "params": {"crdt1": 5}}]}]});
    let e = config_json::load(&d.app, &crdt, &Vec::new()).unwrap_err().to_string();
    assert!(
        e.contains("subsystems[0].config[0] (nvmf_set_crdt): asks for crdt1 = 5: a non-zero"),
        "{e}"
    );
    // A bad parameter: the entry and the parameter.
    let bad = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 16, "block_size": 512}},
        {"method": "bdev_malloc_create", "params": {"name": "M1", "num_blocks": 16, "block_size": 1000}}
    ]}]});
    let e = config_json::load(&d.app, &bad, &Vec::new()).unwrap_err();
    assert_eq!(e.applied, 1);
    assert!(
        e.message.contains("subsystems[0].config[1] (bdev_malloc_create)"),
        "{e}"
    );
    assert!(e.message.contains("block size 1000"), "{e}");
    c.ok("bdev_malloc_delete", json!({"name": "M0"}));
    let m = c.err("load_config", bad);
    assert!(
        m.contains("block size 1000") && m.contains("the 1 entries before it stay applied"),
        "{m}"
    );
    // Malformed documents.
    for (doc, want) in [
        (json!([]), "not a JSON object"),
        (json!({"subsystems": {}}), "subsystems: expected an array"),
        (json!({"subsystems": [{"config": []}]}), "subsystems[0].subsystem"),
        (
            json!({"subsystems": [{"subsystem": "bdev", "config": [{"params": {}}]}]}),
            "subsystems[0].config[0].method",
        ),
        (
            json!({"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_wait_for_examine", "params": 3}]}]}),
            "subsystems[0].config[0].params (bdev_wait_for_examine): expected an object",
        ),
        (
            json!({"subsystems": [{"subsystem": "bdev", "config": [{"method": "load_config"}]}]}),
            "not allowed inside a config",
        ),
    ] {
        let e = config_json::check(&doc).unwrap_err();
        assert!(e.contains(want), "{doc}: {e}");
    }
}

#[test]
fn a_file_and_a_call_get_the_same_answer_for_an_option_lull_lacks() {
    let d = Daemon::start("same");
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_nvme_set_options", "params": {"enable_flush": true}}
    ]}]});
    let e = config_json::load(&d.app, &doc, &Vec::new()).unwrap_err();
    assert!(
        e.message.contains("enable_flush") && e.message.contains("-32602"),
        "{e}"
    );
    let mut c = d.client();
    let m = c.err("bdev_nvme_set_options", json!({"enable_flush": true}));
    assert!(m.contains("enable_flush"), "{m}");
}

#[test]
fn overrides_win_over_the_file() {
    let d = Daemon::start("over");
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_nvme_set_options", "params": {"nvme_ioq_poll_period_us": 500, "keep_alive_timeout_ms": 7000}}
    ]}]});
    let mut over = serde_json::Map::new();
    over.insert("nvme_ioq_poll_period_us".into(), json!(42));
    config_json::load(&d.app, &doc, &vec![("bdev_nvme_set_options", over)]).unwrap();
    let o = d.app.nvme_options();
    assert_eq!(o.nvme_ioq_poll_period_us, 42);
    assert_eq!(o.keep_alive_timeout_ms, 7000);
}

#[test]
fn a_transport_made_by_the_toml_config_satisfies_the_same_settings() {
    // Storage in the TOML config creates the transport implicitly.
    let (c, _) = cores();
    let path = temp_path("toml.sock");
    let text = format!(
        "cores = \"{c}\"\nrpc_socket = \"{}\"\nlog_level = \"warn\"\nlisten = [\"127.0.0.1:0\"]\n\
         [[bdev]]\nname = \"T0\"\ntype = \"null\"\nsize = \"1MiB\"\n\
         [[subsystem]]\nnqn = \"{S1}\"\nallow_any_host = true\nnamespaces = [{{ bdev = \"T0\" }}]\n",
        path.display()
    );
    let settings = Config::from_toml(&text).unwrap().resolve().unwrap();
    let app = App::start(&settings).unwrap();
    let have = app.transport().config.io_in_capsule_data;
    let doc = |icd: u32| {
        json!({"subsystems": [{"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP", "in_capsule_data_size": icd}}
        ]}]})
    };
    let r = config_json::load(&app, &doc(have), &Vec::new()).unwrap();
    assert_eq!(r.applied, 0);
    assert!(
        r.warnings[0].contains("transport TCP exists already with these settings"),
        "{:?}",
        r.warnings
    );
    let e = config_json::load(&app, &doc(have + 16), &Vec::new()).unwrap_err();
    assert!(e.message.contains(&format!("in_capsule_data_size = {have}")), "{e}");
    // Queue depths in force are compared too, not kept silently.
    let (io_depth, _) = app.target().queue_depths();
    let deeper = json!({"subsystems": [{"subsystem": "nvmf", "config": [
        {"method": "nvmf_create_transport", "params": {"trtype": "TCP", "max_queue_depth": io_depth / 2}}
    ]}]});
    let e = config_json::load(&app, &deeper, &Vec::new()).unwrap_err();
    assert!(e.message.contains(&format!("max_queue_depth = {io_depth}")), "{e}");
    // An object the TOML config made already: the entry is named.
    let dup = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_null_create", "params": {"name": "T0", "num_blocks": 8, "block_size": 512}}
    ]}]});
    let e = config_json::load(&app, &dup, &Vec::new()).unwrap_err();
    assert!(
        e.message
            .contains("subsystems[0].config[0] (bdev_null_create): bdev T0 already exists"),
        "{e}"
    );
    app.shutdown();
}
