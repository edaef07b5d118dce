//! What SPDK's Python clients (PyPI `spdk` 25.5 to 26.9) send: every option
//! with its default is accepted, a non-default value of an option lull does
//! not implement is refused naming it, and an unknown parameter stays refused.

mod rpc_client;

use rpc_client::{Daemon, INVALID_PARAMS, NQN};
use serde_json::json;

#[test]
fn defaults_clients_send_are_accepted_and_the_rest_refused() {
    let mut d = Daemon::start("compat");
    let mut c = d.client();

    // bdev_nvme_set_options as 26.9 sends it with no option given (25.5 also
    // sends rdma_umr_per_io), then with every default SPDK documents.
    let bare = json!({"allow_accel_sequence": false, "delay_cmd_submit": true, "disable_auto_failback": false,
        "enable_flush": false, "generate_uuids": false, "io_path_stat": false, "nvme_error_stat": false,
        "rdma_umr_per_io": false});
    assert_eq!(c.ok("bdev_nvme_set_options", bare.clone()), true);
    let full = json!({"timeout_admin_us": 0, "transport_retry_count": 4, "arbitration_burst": 0,
        "low_priority_weight": 0, "medium_priority_weight": 0, "high_priority_weight": 0,
        "transport_ack_timeout": 0, "transport_tos": 0, "rdma_srq_size": 0, "rdma_max_cq_size": 0,
        "rdma_cm_event_timeout_ms": 0, "tcp_connect_timeout_ms": 0,
        "dhchap_digests": ["sha384", "sha256", "sha512"],
        "dhchap_dhgroups": ["null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"],
        "multipath_opts": {"policy": "active_passive", "selector": "round_robin"},
        "keep_alive_timeout_ms": 10000, "action_on_timeout": "none"});
    assert_eq!(c.ok("bdev_nvme_set_options", full), true);
    assert_eq!(
        c.ok("bdev_nvme_get_options", json!(null))["keep_alive_timeout_ms"],
        10000
    );
    for (k, v) in [
        ("enable_flush", json!(true)),
        ("rdma_umr_per_io", json!(true)),
        ("transport_retry_count", json!(7)),
    ] {
        let mut p = bare.clone();
        p[k] = v;
        let m = c.expect(INVALID_PARAMS, "bdev_nvme_set_options", p);
        assert!(m.contains(k) && m.contains("does not implement"), "{k}: {m}");
    }
    let m = c.expect(INVALID_PARAMS, "bdev_nvme_set_options", json!({"bogus_option": 1}));
    assert!(m.contains("bogus_option"), "{m}");
    let m = c.expect(
        INVALID_PARAMS,
        "bdev_nvme_set_options",
        json!({"action_on_timeout": "abort"}),
    );
    assert!(m.contains("action_on_timeout"), "{m}");

    // The transport with every option nvmf_create_transport -t TCP sends,
    // and SPDK's documented buffer tuning (-u 16384 -m 8).
    assert_eq!(
        c.ok(
            "nvmf_create_transport",
            json!({"trtype": "TCP", "c2h_success": true, "dif_insert_or_strip": false,
                "disable_adaptive_irq": false, "disable_command_passthru": false, "disable_mappable_bar0": false,
                "disable_shadow_doorbells": false, "no_srq": false, "no_wr_batching": false, "zcopy": false,
                "io_unit_size": 16384, "max_io_qpairs_per_ctrlr": 8, "tgt_name": "nvmf_tgt"})
        ),
        true
    );
    // What nvmf_get_transports shows is in force: -m 8 is the controllers'
    // limit; io_unit_size is the unit lull moves data in (one command's
    // whole transfer, max_io_size), not the 16384 asked for; no buffer pool.
    let t = c.ok("nvmf_get_transports", serde_json::Value::Null);
    let t = &t[0];
    assert_eq!(t["max_io_qpairs_per_ctrlr"], 8, "{t}");
    assert_eq!(t["io_unit_size"], t["max_io_size"], "{t}");
    assert_eq!(
        (t["num_shared_buffers"].clone(), t["buf_cache_size"].clone()),
        (json!(0), json!(0)),
        "{t}"
    );
    assert_eq!(
        (t["ack_timeout"].clone(), t["data_wr_pool_size"].clone()),
        (json!(0), json!(0)),
        "{t}"
    );
    let saved = c.ok("save_config", serde_json::Value::Null);
    let nvmf = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "nvmf")
        .unwrap();
    let tr = nvmf["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "nvmf_create_transport")
        .unwrap();
    assert_eq!(tr["params"]["max_io_qpairs_per_ctrlr"], 8, "{tr}");
    assert!(tr["params"].get("io_unit_size").is_none(), "{tr}");
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_create_transport",
        json!({"trtype": "TCP", "zcopy": true}),
    );
    assert!(m.contains("zcopy"), "{m}");

    // Subsystem, namespace, listener and host with their clients' defaults.
    c.ok(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true, "ana_reporting": false, "enable_nssr": false,
            "passthrough": false, "min_cntlid": 1, "max_cntlid": 65519}),
    );
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2024-01.io.lull:x", "ana_reporting": true}),
    );
    assert!(m.contains("ana_reporting"), "{m}");
    c.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 2048, "block_size": 512,
        "dif_is_head_of_md": false, "md_interleave": false}),
    );
    let m = c.expect(
        INVALID_PARAMS,
        "bdev_malloc_create",
        json!({"name": "M1", "num_blocks": 64,
        "block_size": 512, "md_size": 8}),
    );
    assert!(m.contains("md_size"), "{m}");
    c.ok(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 64, "block_size": 512, "dif_is_head_of_md": false}),
    );
    assert_eq!(
        c.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "M0", "no_auto_visible": false, "hide_metadata": false}})
        ),
        1
    );
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "N0", "ptpl_file": "/tmp/p"}}),
    );
    assert!(m.contains("namespace.ptpl_file"), "{m}");
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "N0", "bogus": 1}}),
    );
    assert!(m.contains("bogus"), "{m}");
    c.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": rpc_client::HOSTNQN, "psk": null}),
    );
    // psk is implemented: it names a keyring key, and this one is not there.
    let m = c.expect(
        rpc_client::ENODEV,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": rpc_client::HOSTNQN, "psk": "key0"}),
    );
    assert!(m.contains("psk") && m.contains("key0"), "{m}");
    let port = serve_port(&mut c);
    // secure_channel is implemented (TLS); a plain socket implementation with it is refused.
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "secure_channel": true, "sock_impl": "uring",
            "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    );
    assert!(m.contains("secure_channel"), "{m}");

    // Attach as 26.9 sends it (disable_sq_flow_control and the other defaults).
    let attach = json!({"name": "Nvme0", "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string(),
        "subnqn": NQN, "hostnqn": rpc_client::HOSTNQN, "allow_unrecognized_csi": false, "ddgst": false,
        "hdgst": false, "prchk_guard": false, "prchk_reftag": false, "disable_sq_flow_control": false,
        "adrfam": "ipv4", "multipath": "disable"});
    assert_eq!(c.ok("bdev_nvme_attach_controller", attach.clone()), json!(["Nvme0n1"]));
    let mut bad = attach.clone();
    bad["name"] = json!("Nvme1");
    bad["disable_sq_flow_control"] = json!(true);
    let m = c.expect(INVALID_PARAMS, "bdev_nvme_attach_controller", bad);
    assert!(m.contains("disable_sq_flow_control"), "{m}");
    let mut bad = attach.clone();
    bad["name"] = json!("Nvme1");
    bad["adrfam"] = json!("ipv6");
    c.expect(INVALID_PARAMS, "bdev_nvme_attach_controller", bad);
    // Detach with a path that is not the controller's: no such path.
    c.expect(
        rpc_client::ENODEV,
        "bdev_nvme_detach_controller",
        json!({"name": "Nvme0", "traddr": "127.0.0.2"}),
    );
    assert_eq!(
        c.ok(
            "bdev_nvme_detach_controller",
            json!({"name": "Nvme0", "trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port.to_string(), "subnqn": NQN})
        ),
        true
    );
    // 26.5 and later send with_batches with save_config's framework_get_config.
    for wb in [false, true] {
        let v = c.ok("framework_get_config", json!({"name": "bdev", "with_batches": wb}));
        assert!(v.is_array(), "{v}");
    }
    drop(c);
    d.stop();
}

/// A listener for `NQN` (created already) on a free port.
fn serve_port(c: &mut rpc_client::Client) -> u16 {
    c.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "secure_channel": false, "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    );
    let subs = c.ok("nvmf_get_subsystems", json!({"nqn": NQN}));
    subs[0]["listen_addresses"][0]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// SPDK's tuning methods that spdk_tgt's save_config writes (memory pools,
/// sockets, accel, the scheduler, ...) are methods of lull's, so that
/// `rpc.py load_config` (which refuses a whole file naming a method
/// rpc_get_methods lacks) takes an SPDK-saved file: accepted when they
/// change nothing a host sees, refused naming the parameter otherwise.
#[test]
fn spdk_tuning_methods_exist_and_follow_the_loader() {
    let mut d = Daemon::start("tuning");
    let mut c = d.client();
    let listed = c.ok("rpc_get_methods", serde_json::Value::Null);
    let current = c.ok("rpc_get_methods", json!({"current": true}));
    for m in [
        "iobuf_set_options",
        "sock_set_default_impl",
        "sock_impl_set_options",
        "accel_set_options",
        "accel_assign_opc",
        "bdev_set_options",
        "bdev_raid_set_options",
        "iscsi_set_options",
        "nvmf_set_max_subsystems",
        "keyring_linux_set_options",
        "bdev_nvme_set_hotplug",
        "framework_set_scheduler",
        "nvmf_set_crdt",
        "nvmf_set_config",
    ] {
        for l in [&listed, &current] {
            assert!(l.as_array().unwrap().iter().any(|n| n == m), "{m} not in {l}");
        }
    }
    // As spdk_tgt v25.09's save_config writes them.
    for (m, p) in [
        (
            "iobuf_set_options",
            json!({"small_pool_count": 8192, "large_pool_count": 1024, "small_bufsize": 8192, "large_bufsize": 135168, "enable_numa": false}),
        ),
        (
            "sock_impl_set_options",
            json!({"impl_name": "posix", "recv_buf_size": 2097152, "send_buf_size": 2097152, "enable_recv_pipe": true, "enable_quickack": false, "enable_placement_id": 0, "enable_zerocopy_send_server": true, "enable_zerocopy_send_client": false, "zerocopy_threshold": 0, "tls_version": 0, "enable_ktls": false}),
        ),
        ("sock_set_default_impl", json!({"impl_name": "posix"})),
        (
            "accel_set_options",
            json!({"small_cache_size": 128, "large_cache_size": 16, "task_count": 2048, "sequence_count": 2048, "buf_count": 2048}),
        ),
        (
            "bdev_set_options",
            json!({"bdev_io_pool_size": 65535, "bdev_io_cache_size": 256, "bdev_auto_examine": true, "iobuf_small_cache_size": 128, "iobuf_large_cache_size": 16}),
        ),
        ("bdev_nvme_set_hotplug", json!({"period_us": 100000, "enable": false})),
        // Not tuning any more: lull's rebuild takes it (daemon_raid.rs).
        (
            "bdev_raid_set_options",
            json!({"process_window_size_kb": 1024, "process_max_bandwidth_mb_sec": 0}),
        ),
        ("nvmf_set_max_subsystems", json!({"max_subsystems": 1024})),
        ("nvmf_set_crdt", json!({"crdt1": 0, "crdt2": 0, "crdt3": 0})),
        (
            "nvmf_set_config",
            json!({"discovery_filter": "match_any", "admin_cmd_passthru": {"identify_ctrlr": false}, "dhchap_digests": ["sha256"], "dhchap_dhgroups": ["null"]}),
        ),
        ("framework_set_scheduler", json!({"name": "static", "period": 1000000})),
        ("iscsi_set_options", serde_json::Value::Null),
    ] {
        assert_eq!(c.ok(m, p.clone()), true, "{m} {p}");
    }
    // What a host would see is refused, naming the parameter.
    for (m, p, k) in [
        ("nvmf_set_crdt", json!({"crdt1": 0, "crdt2": 5}), "crdt2"),
        (
            "nvmf_set_config",
            json!({"discovery_filter": "transport"}),
            "discovery_filter",
        ),
        (
            "nvmf_set_config",
            json!({"admin_cmd_passthru": {"identify_ctrlr": true}}),
            "admin_cmd_passthru",
        ),
        (
            "nvmf_set_config",
            json!({"poll_groups_mask": "0x1"}),
            "poll_groups_mask",
        ),
    ] {
        let msg = c.expect(INVALID_PARAMS, m, p);
        assert!(msg.contains(k), "{m}: {msg}");
    }
    c.expect(INVALID_PARAMS, "iobuf_set_options", json!([1]));
    drop(c);
    d.stop();
}

/// spdk_tgt's save_config writes each namespace's UUID and NGUID (derived
/// from the bdev, as lull derives them): `rpc.py load_config` sends them,
/// so the derived values are accepted; other values are refused naming them.
#[test]
fn namespace_identities_as_spdk_saves_them() {
    let mut d = Daemon::start("nsid-uuid");
    let mut c = d.client();
    let uuid = "6f2c1d4e-1b2a-4c3d-8e4f-5a6b7c8d9e02";
    c.ok(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 64, "block_size": 512, "uuid": uuid}),
    );
    c.ok(
        "bdev_malloc_create",
        json!({"name": "M1", "num_blocks": 64, "block_size": 512}),
    );
    c.ok("nvmf_create_subsystem", json!({"nqn": NQN}));
    for (k, v) in [
        ("uuid", json!("6f2c1d4e-1b2a-4c3d-8e4f-5a6b7c8d9e03")),
        ("nguid", json!("00000000000000000000000000000001")),
    ] {
        let mut ns = json!({"bdev_name": "M0", "nsid": 1});
        ns[k] = v;
        let m = c.expect(
            INVALID_PARAMS,
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": ns}),
        );
        assert!(m.contains(&format!("namespace.{k}")) && m.contains("bdev M0"), "{m}");
    }
    assert_eq!(
        c.ok(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "M0", "nsid": 1, "uuid": uuid,
                "nguid": "6F2C1D4E1B2A4C3D8E4F5A6B7C8D9E02", "no_auto_visible": false}})
        ),
        1
    );
    let ns = &c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["namespaces"][0];
    assert_eq!(
        (ns["uuid"].clone(), ns["nguid"].clone()),
        (json!(uuid), json!("6F2C1D4E1B2A4C3D8E4F5A6B7C8D9E02"))
    );
    drop(c);
    d.stop();
}
