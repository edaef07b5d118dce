//! Statistics over JSON-RPC against I/O done through the target:
//! `bdev_get_iostat` (per bdev, per reactor, reset), `nvmf_get_stats`,
//! `nvmf_subsystem_get_controllers`/`_qpairs`/`_listeners`, the log levels,
//! and `lull_bdev_delete`'s list of the namespaces removed with a bdev.

mod rpc_client;

use std::net::SocketAddr;

use lull_proto::nvme::io_opc;
use lull_proto::pdu::Digests;
use lull_transport::host_sync::SyncQueue;
use rpc_client::{Daemon, ENODEV, HOSTNQN, INVALID_PARAMS, NQN, eventually, rw_sqe, serve};
use serde_json::{Value, json};

/// Dataset Management, deallocate, with `ranges` of (SLBA, blocks).
fn dsm(io: &mut SyncQueue, nsid: u32, ranges: &[(u64, u32)]) {
    let mut sqe = rw_sqe(io_opc::DATASET_MANAGEMENT, nsid, 0, 1);
    sqe.set_cdw(10, ranges.len() as u32 - 1);
    sqe.set_cdw(11, 1 << 2);
    sqe.set_cdw(12, 0);
    let mut data = Vec::new();
    for (lba, n) in ranges {
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&n.to_le_bytes());
        data.extend_from_slice(&lba.to_le_bytes());
    }
    io.call("dsm", sqe, &data, 0).unwrap();
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// The latency fields of one kind are consistent: sum >= max >= min, all 0 with no op.
fn check_latency(s: &Value, kind: &str, ops: u64) {
    let (sum, max, min) = (
        u(s, &format!("{kind}_latency_ticks")),
        u(s, &format!("max_{kind}_latency_ticks")),
        u(s, &format!("min_{kind}_latency_ticks")),
    );
    if ops == 0 {
        assert_eq!((sum, max, min), (0, 0, 0), "{kind}: {s}");
    } else {
        assert!(sum >= max && max >= min, "{kind}: sum {sum} max {max} min {min}");
    }
}

/// Expected (bytes_read, num_read_ops, bytes_written, num_write_ops, bytes_unmapped, num_unmap_ops).
fn check_counts(s: &Value, want: [u64; 6]) {
    let got = [
        u(s, "bytes_read"),
        u(s, "num_read_ops"),
        u(s, "bytes_written"),
        u(s, "num_write_ops"),
        u(s, "bytes_unmapped"),
        u(s, "num_unmap_ops"),
    ];
    assert_eq!(got, want, "{s}");
    check_latency(s, "read", want[1]);
    check_latency(s, "write", want[3]);
    check_latency(s, "unmap", want[5]);
    for k in ["bytes_copied", "num_copy_ops", "copy_latency_ticks"] {
        assert_eq!(u(s, k), 0, "{k}");
    }
}

fn bdev_stat<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {r}"))
}

#[test]
fn iostat_and_nvmf_stats_count_the_io_done() {
    let mut d = Daemon::start("iostat");
    let mut c = d.client();
    let dir = std::env::temp_dir().join(format!("lull-iostat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("disk");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();

    c.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 2048, "block_size": 512}),
    );
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Idle0", "num_blocks": 64, "block_size": 512}),
    );
    c.ok(
        "bdev_uring_create",
        json!({"name": "File0", "filename": file.display().to_string(), "block_size": 512}),
    );
    let port = serve(&mut c, NQN);
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "File0"}}),
    );

    // Nothing yet.
    let r = c.ok("bdev_get_iostat", Value::Null);
    assert_eq!(r["tick_rate"], 1_000_000_000u64);
    assert!(r["ticks"].is_u64());
    for b in ["Malloc0", "Idle0", "File0"] {
        check_counts(bdev_stat(&r, b), [0; 6]);
    }
    let s = c.ok("nvmf_get_stats", Value::Null);
    let groups = s["poll_groups"].as_array().unwrap();
    assert_eq!(groups.len(), d.reactors);
    let total = |s: &Value, k: &str| -> u64 { s["poll_groups"].as_array().unwrap().iter().map(|g| u(g, k)).sum() };
    for k in [
        "admin_qpairs",
        "io_qpairs",
        "current_admin_qpairs",
        "current_io_qpairs",
        "completed_nvme_io",
    ] {
        assert_eq!(total(&s, k), 0, "{k}");
    }

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (admin, cntlid) = SyncQueue::admin(addr, NQN, HOSTNQN, Digests::default(), 30_000).unwrap();
    let mut io = SyncQueue::io(addr, NQN, HOSTNQN, cntlid, Digests::default(), 8192).unwrap();
    let block = vec![0x5a; 4096];
    // Malloc0 (synchronous): 5 writes and 3 reads of 4 KiB, 2 unmapped
    // ranges (16 and 8 blocks); compare, write zeroes and flush are not counted.
    for i in 0..5 {
        io.call("write", rw_sqe(io_opc::WRITE, 1, i * 8, 8), &block, 0).unwrap();
    }
    for i in 0..3 {
        io.call("read", rw_sqe(io_opc::READ, 1, i * 8, 8), &[], 4096).unwrap();
    }
    io.call("compare", rw_sqe(io_opc::COMPARE, 1, 0, 8), &block, 0).unwrap();
    io.call("write zeroes", rw_sqe(io_opc::WRITE_ZEROES, 1, 100, 8), &[], 0)
        .unwrap();
    io.call("flush", rw_sqe(io_opc::FLUSH, 1, 0, 1), &[], 0).unwrap();
    dsm(&mut io, 1, &[(200, 16), (300, 8)]);
    // File0 (asynchronous): 2 writes of 4 KiB, 1 read of 2 KiB.
    for i in 0..2 {
        io.call("write", rw_sqe(io_opc::WRITE, 2, i * 8, 8), &block, 0).unwrap();
    }
    io.call("read", rw_sqe(io_opc::READ, 2, 0, 4), &[], 2048).unwrap();
    let commands = 5 + 3 + 4 + 2 + 1;

    let r = c.ok("bdev_get_iostat", Value::Null);
    check_counts(bdev_stat(&r, "Malloc0"), [3 * 4096, 3, 5 * 4096, 5, 24 * 512, 2]);
    check_counts(bdev_stat(&r, "File0"), [2048, 1, 2 * 4096, 2, 0, 0]);
    check_counts(bdev_stat(&r, "Idle0"), [0; 6]);
    let one = c.ok("bdev_get_iostat", json!({"name": "File0"}));
    assert_eq!(one["bdevs"].as_array().unwrap().len(), 1);
    check_counts(bdev_stat(&one, "File0"), [2048, 1, 2 * 4096, 2, 0, 0]);
    // Newer clients' `names`.
    let two = c.ok("bdev_get_iostat", json!({"names": ["Malloc0", "Idle0"]}));
    assert_eq!(two["bdevs"].as_array().unwrap().len(), 2);

    // Per reactor: one channel each, summing to the total.
    let pc = c.ok("bdev_get_iostat", json!({"name": "Malloc0", "per_channel": true}));
    assert_eq!(pc["name"], "Malloc0");
    let ch = pc["channels"].as_array().unwrap();
    assert_eq!(ch.len(), d.reactors);
    for k in [
        "bytes_read",
        "num_read_ops",
        "bytes_written",
        "num_write_ops",
        "bytes_unmapped",
        "num_unmap_ops",
    ] {
        let sum: u64 = ch.iter().map(|x| u(x, k)).sum();
        assert_eq!(sum, u(bdev_stat(&r, "Malloc0"), k), "{k}");
    }
    let busy: Vec<&Value> = ch.iter().filter(|x| u(x, "num_write_ops") > 0).collect();
    assert_eq!(busy.len(), 1, "one I/O queue, one reactor: {pc}");
    assert!(busy[0]["thread_id"].as_u64().unwrap() >= 1);

    c.expect(ENODEV, "bdev_get_iostat", json!({"name": "nope"}));
    c.expect(-22, "bdev_get_iostat", json!({"per_channel": true}));
    c.expect(INVALID_PARAMS, "bdev_get_iostat", json!({"reset_mode": "some"}));
    c.expect(INVALID_PARAMS, "bdev_get_iostat", json!({"bogus": 1}));

    // The target's poll groups: one admin and one I/O queue, every I/O command.
    let s = c.ok("nvmf_get_stats", Value::Null);
    for (k, want) in [
        ("admin_qpairs", 1),
        ("io_qpairs", 1),
        ("current_admin_qpairs", 1),
        ("current_io_qpairs", 1),
        ("completed_nvme_io", commands),
        ("pending_bdev_io", 0),
    ] {
        assert_eq!(total(&s, k), want, "{k}: {s}");
    }
    for g in s["poll_groups"].as_array().unwrap() {
        assert!(g["name"].as_str().unwrap().starts_with("nvmf_tgt_poll_group_"), "{g}");
        assert_eq!(g["transports"], json!([{"trtype": "TCP"}]));
    }

    // Controllers, queue pairs, listeners.
    let ctrls = c.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN}));
    assert_eq!(ctrls.as_array().unwrap().len(), 1, "{ctrls}");
    assert_eq!(ctrls[0]["cntlid"], cntlid);
    assert_eq!(ctrls[0]["hostnqn"], HOSTNQN);
    assert_eq!(ctrls[0]["cntrltype"], "io");
    // SPDK's count: every queue pair of the controller, the admin queue
    // included (spdk_tgt shows 2 for one host with one I/O queue).
    assert_eq!(ctrls[0]["num_io_qpairs"], 2);
    assert_eq!(ctrls[0]["hostid"].as_str().unwrap().len(), 36);
    let qp = c.ok("nvmf_subsystem_get_qpairs", json!({"nqn": NQN}));
    let qids: Vec<u64> = qp.as_array().unwrap().iter().map(|q| u(q, "qid")).collect();
    assert_eq!(qids, [0, 1], "{qp}");
    // Each queue's own connection, as SPDK's peer_address shows it.
    let peers = [admin.local_addr().unwrap(), io.local_addr().unwrap()];
    for (q, peer) in qp.as_array().unwrap().iter().zip(peers) {
        assert_eq!(
            q["peer_address"],
            json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": peer.ip().to_string(), "trsvcid": peer.port().to_string()}),
            "{qp}"
        );
    }
    for q in qp.as_array().unwrap() {
        assert_eq!(q["cntlid"], cntlid);
        assert_eq!(q["state"], "enabled");
        assert_eq!(q["hostnqn"], HOSTNQN);
        assert_eq!(
            q["listen_address"],
            json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()})
        );
    }
    assert_eq!(
        c.ok("nvmf_subsystem_get_listeners", json!({"nqn": NQN})),
        json!([{"address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}])
    );
    for m in [
        "nvmf_subsystem_get_controllers",
        "nvmf_subsystem_get_qpairs",
        "nvmf_subsystem_get_listeners",
    ] {
        c.expect(INVALID_PARAMS, m, json!({"nqn": "nqn.2024-01.io.lull:none"}));
        c.expect(INVALID_PARAMS, m, json!({}));
        // SPDK's default target name is accepted, another refused.
        c.ok(m, json!({"nqn": NQN, "tgt_name": "nvmf_tgt"}));
        c.expect(INVALID_PARAMS, m, json!({"nqn": NQN, "tgt_name": "other"}));
    }
    assert_eq!(
        c.ok("nvmf_subsystem_get_controllers", json!({"nqn": "discovery"})),
        json!([])
    );

    // io_error, SPDK's failed I/O by status: {} while none failed; a
    // Compare that finds other data is a miscompare, on the bdev (sync and
    // async bdevs alike), and a failed command is not counted as done.
    let r = c.ok("bdev_get_iostat", Value::Null);
    for b in ["Malloc0", "File0", "Idle0"] {
        assert_eq!(bdev_stat(&r, b)["io_error"], json!({}), "{b}: {r}");
    }
    let other = vec![0xa5; 4096];
    for (nsid, lba) in [(1, 0), (2, 0), (1, 8)] {
        let e = io.call("compare", rw_sqe(io_opc::COMPARE, nsid, lba, 8), &other, 0);
        assert!(e.is_err(), "compare of other data on NSID {nsid} succeeded");
    }
    let r = c.ok("bdev_get_iostat", Value::Null);
    assert_eq!(bdev_stat(&r, "Malloc0")["io_error"], json!({"miscompare": 2}), "{r}");
    assert_eq!(bdev_stat(&r, "File0")["io_error"], json!({"miscompare": 1}), "{r}");
    assert_eq!(bdev_stat(&r, "Idle0")["io_error"], json!({}), "{r}");
    check_counts(bdev_stat(&r, "Malloc0"), [3 * 4096, 3, 5 * 4096, 5, 24 * 512, 2]);

    // The I/O queue closes: current counts drop, totals stay.
    drop(io);
    eventually("the I/O queue to close", || {
        total(&c.ok("nvmf_get_stats", Value::Null), "current_io_qpairs") == 0
    });
    let s = c.ok("nvmf_get_stats", Value::Null);
    assert_eq!((total(&s, "io_qpairs"), total(&s, "current_admin_qpairs")), (1, 1));
    drop(admin);
    eventually("the controller to go", || {
        c.ok("nvmf_subsystem_get_controllers", json!({"nqn": NQN})) == json!([])
    });

    // reset_mode: the answer has the counts before the reset.
    let r = c.ok("bdev_get_iostat", json!({"name": "Malloc0", "reset_mode": "maxmin"}));
    check_counts(bdev_stat(&r, "Malloc0"), [3 * 4096, 3, 5 * 4096, 5, 24 * 512, 2]);
    let r = c.ok("bdev_get_iostat", json!({"name": "Malloc0", "reset_mode": "all"}));
    let m = bdev_stat(&r, "Malloc0");
    assert_eq!(
        (u(m, "num_write_ops"), u(m, "max_write_latency_ticks")),
        (5, 0),
        "maxmin cleared only max/min"
    );
    let r = c.ok("bdev_get_iostat", json!({"name": "Malloc0"}));
    check_counts(bdev_stat(&r, "Malloc0"), [0; 6]);
    let r = c.ok("bdev_get_iostat", json!({"name": "File0"}));
    check_counts(bdev_stat(&r, "File0"), [2048, 1, 2 * 4096, 2, 0, 0]);

    drop(c);
    d.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn log_levels_replace_the_filter() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    lull_engine::log_level::install("info", move |d| {
        s2.lock().unwrap().push(d.to_string());
        Ok(())
    });
    let mut d = Daemon::start("log");
    let mut c = d.client();
    assert_eq!(c.ok("log_get_level", Value::Null), "NOTICE");
    assert_eq!(c.ok("log_get_print_level", Value::Null), "NOTICE");
    assert_eq!(c.ok("log_set_print_level", json!({"level": "DEBUG"})), true);
    assert_eq!(c.ok("log_get_print_level", Value::Null), "DEBUG");
    assert_eq!(c.ok("log_get_level", Value::Null), "NOTICE");
    // Case is ignored, as SPDK does; the more verbose level wins.
    c.ok("log_set_level", json!({"level": "error"}));
    assert_eq!(c.ok("log_get_level", Value::Null), "ERROR");
    c.ok("log_set_print_level", json!({"level": "WARNING"}));
    c.ok("log_set_level", json!({"level": "INFO"}));
    assert_eq!(*seen.lock().unwrap(), ["debug", "debug", "warn", "info"]);
    let m = c.expect(INVALID_PARAMS, "log_set_level", json!({"level": "LOUD"}));
    assert!(m.contains("LOUD") && m.contains("NOTICE"), "{m}");
    c.expect(INVALID_PARAMS, "log_set_level", json!({}));
    c.expect(INVALID_PARAMS, "log_get_level", json!({"level": "INFO"}));
    assert_eq!(seen.lock().unwrap().len(), 4, "a refused level changes nothing");

    // Log flags: SPDK's names, every one off at start.
    let flags = c.ok("log_get_flags", Value::Null);
    let names: Vec<&String> = flags.as_object().unwrap().keys().collect();
    for n in ["bdev", "nvme", "nvmf", "nvmf_tcp", "rpc"] {
        assert_eq!(flags[n], false, "{n} in {flags}");
    }
    assert_eq!(names.len(), lull_engine::log_level::FLAGS.len());
    assert_eq!(c.ok("log_set_flag", json!({"flag": "nvmf_tcp"})), true);
    assert_eq!(c.ok("log_get_flags", Value::Null)["nvmf_tcp"], true);
    assert_eq!(seen.lock().unwrap().last().unwrap(), "info,lull_transport::conn=debug");
    // A pattern, as SPDK's fnmatch; then clear them all.
    c.ok("log_set_flag", json!({"flag": "NVMF*"}));
    let f = c.ok("log_get_flags", Value::Null);
    assert!(f["nvmf"] == true && f["nvmf_tcp"] == true && f["bdev"] == false, "{f}");
    assert!(
        seen.lock()
            .unwrap()
            .last()
            .unwrap()
            .contains("lull_engine::controller=debug")
    );
    c.ok("log_clear_flag", json!({"flag": "all"}));
    assert!(
        c.ok("log_get_flags", Value::Null)
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == false)
    );
    assert_eq!(seen.lock().unwrap().last().unwrap(), "info");
    let n = seen.lock().unwrap().len();
    let m = c.expect(INVALID_PARAMS, "log_set_flag", json!({"flag": "iscsi"}));
    assert!(m.contains("invalid log flag") && m.contains("nvmf_tcp"), "{m}");
    c.expect(INVALID_PARAMS, "log_clear_flag", json!({}));
    c.expect(INVALID_PARAMS, "log_get_flags", json!({"flag": "x"}));
    assert_eq!(seen.lock().unwrap().len(), n, "a refused flag changes nothing");
    drop(c);
    d.stop();
}

#[test]
fn bdev_delete_says_which_namespaces_went() {
    let mut d = Daemon::start("delete");
    let mut c = d.client();
    let other = "nqn.2024-01.io.lull:stats1";
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Shared0", "num_blocks": 64, "block_size": 512}),
    );
    c.ok(
        "bdev_null_create",
        json!({"name": "Alone0", "num_blocks": 64, "block_size": 512}),
    );
    c.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    for nqn in [NQN, other] {
        c.ok("nvmf_create_subsystem", json!({"nqn": nqn}));
    }
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Shared0", "nsid": 3}}),
    );
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": other, "namespace": {"bdev_name": "Shared0"}}),
    );
    let r = c.ok("lull_bdev_delete", json!({"name": "Shared0"}));
    assert_eq!(r["name"], "Shared0");
    let mut removed = r["removed_namespaces"].as_array().unwrap().clone();
    removed.sort_by_key(|n| n["nqn"].as_str().unwrap().to_string());
    assert_eq!(
        removed,
        [json!({"nqn": NQN, "nsid": 3}), json!({"nqn": other, "nsid": 1})]
    );
    let subs = c.ok("nvmf_get_subsystems", Value::Null);
    for s in subs.as_array().unwrap() {
        assert!(s["namespaces"].as_array().is_none_or(|n| n.is_empty()), "{s}");
    }
    assert_eq!(
        c.ok("lull_bdev_delete", json!({"name": "Alone0"})),
        json!({"name": "Alone0", "removed_namespaces": []})
    );
    c.expect(ENODEV, "lull_bdev_delete", json!({"name": "Shared0"}));
    // SPDK's own methods keep answering true.
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Again0", "num_blocks": 64, "block_size": 512}),
    );
    assert_eq!(c.ok("bdev_malloc_delete", json!({"name": "Again0"})), true);
    drop(c);
    d.stop();
}
