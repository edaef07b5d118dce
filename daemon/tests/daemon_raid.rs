//! raid1 volumes through the daemon's JSON-RPC methods, as SPDK's rpc.py
//! calls them: `bdev_raid_create` / `_get_bdevs` / `_delete` /
//! `_remove_base_bdev` / `_add_base_bdev` / `_set_options`, a volume in
//! `bdev_get_bdevs`, as a namespace, in `save_config` and `lull_get_status`;
//! each bad input answered with SPDK's error code, naming the field, with
//! nothing changed; a base removed and added back rebuilt to the same bytes.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_daemon::app::App;
use lull_daemon::config::Config;
use lull_engine::bdev::RamBdev;
use serde_json::{Value, json};

const NQN: &str = "nqn.2016-06.io.spdk:raid";

/// A daemon on (up to) two cores: volumes pick a reactor each by name.
fn app() -> Arc<App> {
    let usable = lull_reactor::CoreList::usable().unwrap();
    let cores: Vec<String> = usable.cores().iter().take(2).map(ToString::to_string).collect();
    let cfg = Config::from_toml(&format!(
        "cores = \"{}\"\nrpc_socket = \"/nonexistent/unused.sock\"",
        cores.join(",")
    ))
    .unwrap();
    App::start(&cfg.resolve().unwrap()).unwrap()
}

/// Calls `method`: Ok(result) or Err((code, message)).
fn call(app: &App, method: &str, params: Value) -> Result<Value, (i64, String)> {
    let r = lull_daemon::rpc::handle_request(
        app,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
    .unwrap();
    match r.get("error") {
        Some(e) => Err((
            e["code"].as_i64().unwrap(),
            e["message"].as_str().unwrap_or_default().to_string(),
        )),
        None => Ok(r["result"].clone()),
    }
}

fn ok(app: &App, method: &str, params: Value) -> Value {
    call(app, method, params.clone()).unwrap_or_else(|e| panic!("{method} {params}: {e:?}"))
}

/// The call fails with `code` and a message containing each of `words`.
fn refused(app: &App, method: &str, params: Value, code: i64, words: &[&str]) {
    let (c, m) = match call(app, method, params.clone()) {
        Ok(v) => panic!("{method} {params}: succeeded with {v}"),
        Err(e) => e,
    };
    assert_eq!(c, code, "{method} {params}: {m}");
    for w in words {
        assert!(m.contains(w), "{method} {params}: `{m}` lacks `{w}`");
    }
}

fn malloc(app: &App, name: &str, blocks: u64) {
    ok(
        app,
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": 512}),
    );
}

fn raids(app: &App) -> Value {
    ok(app, "bdev_raid_get_bdevs", json!({"category": "all"}))
}

/// Everything a refused call must leave as it was.
fn state(app: &App) -> (Value, Value, Value) {
    (
        raids(app),
        ok(app, "bdev_get_bdevs", json!({})),
        ok(app, "nvmf_get_subsystems", json!({})),
    )
}

fn ram(app: &App, name: &str) -> Arc<dyn lull_engine::bdev::Bdev> {
    app.bdev(name).unwrap().bdev
}

fn with_ram<T>(b: &Arc<dyn lull_engine::bdev::Bdev>, f: impl FnOnce(&RamBdev) -> T) -> T {
    let any: &dyn Any = b.as_ref();
    f(any.downcast_ref::<RamBdev>().expect("a RAM bdev"))
}

/// A pattern no two blocks share: block `lba` is filled with its number and a seed.
fn pattern(blocks: u64, seed: u8) -> Vec<u8> {
    let mut v = vec![0u8; (blocks * 512) as usize];
    for (i, c) in v.chunks_mut(512).enumerate() {
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        for (j, x) in c[8..].iter_mut().enumerate() {
            *x = seed.wrapping_add((i * 7 + j) as u8);
        }
    }
    v
}

#[test]
fn rpc_py_builds_inspects_and_tears_down_a_raid1() {
    let app = app();
    for n in ["A", "B", "C"] {
        malloc(&app, n, 4096);
    }
    // rpc.py bdev_raid_create -n R0 -r raid1 -b "A B" (the list form of
    // newer clients; 26.9 sends superblock false always).
    assert_eq!(
        ok(
            &app,
            "bdev_raid_create",
            json!({"name": "R0", "raid_level": "raid1", "base_bdevs": ["A", "B"], "superblock": false})
        ),
        json!(true)
    );
    let list = raids(&app);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = &list[0];
    assert_eq!(r["name"], "R0");
    assert_eq!(r["state"], "online");
    assert_eq!(r["raid_level"], "raid1");
    assert_eq!(r["strip_size_kb"], 0);
    assert_eq!(r["superblock"], false);
    assert_eq!(
        (
            r["num_base_bdevs"].clone(),
            r["num_base_bdevs_discovered"].clone(),
            r["num_base_bdevs_operational"].clone()
        ),
        (json!(2), json!(2), json!(2))
    );
    assert!(r.get("process").is_none(), "no process: {r}");
    let bases = r["base_bdevs_list"].as_array().unwrap();
    let names: Vec<&str> = bases.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["A", "B"]);
    let a_uuid = ok(&app, "bdev_get_bdevs", json!({"name": "A"}))[0]["uuid"].clone();
    assert_eq!(bases[0]["uuid"], a_uuid);
    for b in bases {
        assert_eq!(b["is_configured"], true);
        assert_eq!(b["data_offset"], 0, "no superblock: data from block 0");
        assert_eq!(b["data_size"], 4096);
    }
    // Categories.
    assert_eq!(
        ok(&app, "bdev_raid_get_bdevs", json!({"category": "online"}))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for c in ["configuring", "offline"] {
        assert_eq!(ok(&app, "bdev_raid_get_bdevs", json!({"category": c})), json!([]));
    }

    // bdev_get_bdevs: the volume as a bdev (SPDK's product name, the raid
    // object in driver_specific), its bases claimed.
    let b = &ok(&app, "bdev_get_bdevs", json!({"name": "R0"}))[0];
    assert_eq!(b["product_name"], "Raid Volume");
    assert_eq!(
        (b["block_size"].clone(), b["num_blocks"].clone()),
        (json!(512), json!(4096))
    );
    assert_eq!(b["uuid"], r["uuid"]);
    assert_eq!(b["claimed"], false);
    let mut from_get = r.clone();
    from_get.as_object_mut().unwrap().remove("name");
    assert_eq!(b["driver_specific"]["raid"], from_get);
    for base in ["A", "B"] {
        assert_eq!(
            ok(&app, "bdev_get_bdevs", json!({"name": base}))[0]["claimed"],
            true,
            "{base}"
        );
    }
    assert_eq!(ok(&app, "bdev_get_bdevs", json!({"name": "C"}))[0]["claimed"], false);

    // A namespace like any bdev.
    ok(
        &app,
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true}),
    );
    ok(
        &app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "R0"}}),
    );
    assert_eq!(ok(&app, "bdev_get_bdevs", json!({"name": "R0"}))[0]["claimed"], true);

    // Saved: options, then the volume after its bases.
    let saved = ok(&app, "save_config", json!(null));
    let bdev_cfg = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .unwrap()["config"]
        .as_array()
        .unwrap()
        .clone();
    let methods: Vec<&str> = bdev_cfg.iter().map(|e| e["method"].as_str().unwrap()).collect();
    let pos = |m: &str| {
        methods
            .iter()
            .position(|x| *x == m)
            .unwrap_or_else(|| panic!("{m} in {methods:?}"))
    };
    assert!(pos("bdev_raid_set_options") < pos("bdev_malloc_create"));
    assert!(pos("bdev_raid_create") > methods.iter().rposition(|x| *x == "bdev_malloc_create").unwrap());
    let create = &bdev_cfg[pos("bdev_raid_create")]["params"];
    assert_eq!(
        *create,
        json!({"name": "R0", "uuid": r["uuid"], "raid_level": "raid1", "base_bdevs": ["A", "B"], "superblock": false})
    );
    let opts = &bdev_cfg[pos("bdev_raid_set_options")]["params"];
    assert_eq!(
        *opts,
        json!({"process_window_size_kb": 1024, "process_max_bandwidth_mb_sec": 0})
    );

    // lull_get_status shows it.
    let st = ok(&app, "lull_get_status", json!(null));
    assert_eq!(st["raids"][0]["name"], "R0");
    assert_eq!(st["raids"][0]["state"], "online");
    assert_eq!(st["raids"][0]["num_base_bdevs_operational"], 2);
    assert_eq!(st["raids"][0]["process"], Value::Null);
    // And the metrics.
    let m = lull_daemon::metrics::render(&app).unwrap();
    assert!(m.contains("lull_raid_state{raid=\"R0\",state=\"online\"} 1"), "{m}");
    assert!(m.contains("lull_raid_base_bdevs_operational{raid=\"R0\"} 2"), "{m}");
    assert!(m.contains("lull_raid_rebuilding{raid=\"R0\"} 0"), "{m}");
    assert!(
        m.contains("lull_raid_rebuild_writes_waited_total{raid=\"R0\"} 0"),
        "{m}"
    );

    // Teardown in SPDK's order: namespace, volume, bases.
    ok(&app, "nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 1}));
    assert_eq!(ok(&app, "bdev_raid_delete", json!({"name": "R0"})), json!(true));
    assert_eq!(raids(&app), json!([]));
    for base in ["A", "B"] {
        assert_eq!(
            ok(&app, "bdev_get_bdevs", json!({"name": base}))[0]["claimed"],
            false,
            "{base} free again"
        );
        ok(&app, "bdev_malloc_delete", json!({"name": base}));
    }
    app.shutdown();
}

#[test]
fn rpc_py_forms_of_the_parameters() {
    let app = app();
    for n in ["A", "B", "C", "D"] {
        malloc(&app, n, 4096);
    }
    // The Python API called as SPDK's documentation writes it: one string
    // of names; level "1"; strip_size_kb 0 and an explicit uuid.
    let uuid = "7c4d0f1e-1111-4222-8333-444455556666";
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "R1", "raid_level": "1", "base_bdevs": "A  B ", "strip_size_kb": 0, "uuid": uuid}),
    );
    let r = &raids(&app)[0];
    assert_eq!(r["uuid"], uuid);
    assert_eq!(r["base_bdevs_list"].as_array().unwrap().len(), 2);
    // Case as SPDK compares it; superblock reserves 1 MiB at each base's start.
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "R2", "raid_level": "RAID1", "base_bdevs": ["C", "D"], "superblock": true}),
    );
    let r2 = ok(&app, "bdev_get_bdevs", json!({"name": "R2"}))[0].clone();
    assert_eq!(r2["driver_specific"]["raid"]["superblock"], true);
    let base0 = &r2["driver_specific"]["raid"]["base_bdevs_list"][0];
    assert_eq!(
        (base0["data_offset"].clone(), base0["data_size"].clone()),
        (json!(2048), json!(2048))
    );
    assert_eq!(r2["num_blocks"], 2048);
    // 26.9's bdev_raid_delete sends clear_sb (false unless -c).
    ok(&app, "bdev_raid_delete", json!({"name": "R1", "clear_sb": false}));
    refused(
        &app,
        "bdev_raid_delete",
        json!({"name": "R2", "clear_sb": "yes"}),
        -32602,
        &["clear_sb"],
    );
    app.shutdown();
}

#[test]
fn bad_input_names_the_field_with_spdks_code_and_changes_nothing() {
    let app = app();
    for n in ["A", "B", "C", "Used"] {
        malloc(&app, n, 4096);
    }
    malloc(&app, "Small", 1024);
    ok(
        &app,
        "bdev_null_create",
        json!({"name": "Big4k", "num_blocks": 4096, "block_size": 4096}),
    );
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A", "B"]}),
    );
    ok(
        &app,
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true}),
    );
    ok(
        &app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Used"}}),
    );
    let before = state(&app);
    let create = |name: &str, bases: Value| json!({"name": name, "raid_level": "raid1", "base_bdevs": bases});

    // A base already in use: by another raid, or exported (claimed: -EPERM).
    refused(
        &app,
        "bdev_raid_create",
        create("R2", json!(["A", "C"])),
        -1,
        &["base_bdevs[0]", "A", "claimed", "raid R"],
    );
    refused(
        &app,
        "bdev_raid_create",
        create("R2", json!(["C", "Used"])),
        -1,
        &["base_bdevs[1]", "Used", "namespace 1"],
    );
    // A missing base (-ENODEV).
    refused(
        &app,
        "bdev_raid_create",
        create("R2", json!(["C", "Nope"])),
        -19,
        &["base_bdevs[1]", "Nope"],
    );
    // A duplicate name: a raid's, or any bdev's (-EEXIST).
    refused(
        &app,
        "bdev_raid_create",
        create("R", json!(["C", "Small"])),
        -17,
        &["R", "exists"],
    );
    refused(
        &app,
        "bdev_raid_create",
        create("C", json!(["Small", "Big4k"])),
        -17,
        &["C", "exists"],
    );
    // A base named twice, too few bases, bases of two block sizes (-EINVAL).
    refused(
        &app,
        "bdev_raid_create",
        create("R2", json!(["C", "C"])),
        -22,
        &["base_bdevs[1]", "C"],
    );
    refused(
        &app,
        "bdev_raid_create",
        create("R2", json!(["C"])),
        -22,
        &["base_bdevs", "at least 2"],
    );
    refused(
        &app,
        "bdev_raid_create",
        create("R2", json!(["C", "Big4k"])),
        -22,
        &["Big4k", "4096"],
    );
    // A raid as a base.
    refused(
        &app,
        "bdev_raid_create",
        create("R2", json!(["C", "R"])),
        -22,
        &["base_bdevs[1]", "raid"],
    );
    // Levels lull does not have, a strip size, a long name, a bad category.
    refused(
        &app,
        "bdev_raid_create",
        json!({"name": "R2", "raid_level": "raid0", "base_bdevs": ["C", "Small"], "strip_size_kb": 64}),
        -22,
        &["raid_level", "raid0"],
    );
    refused(
        &app,
        "bdev_raid_create",
        json!({"name": "R2", "raid_level": "raid1", "base_bdevs": ["C", "Small"], "strip_size_kb": 64}),
        -22,
        &["strip_size_kb"],
    );
    refused(
        &app,
        "bdev_raid_create",
        create(&"x".repeat(32), json!(["C", "Small"])),
        -22,
        &["name", "31"],
    );
    refused(
        &app,
        "bdev_raid_create",
        create("a b", json!(["C", "Small"])),
        -32602,
        &["name", "a b"],
    );
    refused(
        &app,
        "bdev_raid_create",
        json!({"name": "R2", "base_bdevs": ["C", "Small"]}),
        -32602,
        &["raid_level"],
    );
    refused(
        &app,
        "bdev_raid_get_bdevs",
        json!({"category": "sleeping"}),
        -22,
        &["category"],
    );
    refused(&app, "bdev_raid_get_bdevs", json!({}), -32602, &["category"]);
    assert_eq!(state(&app), before, "nothing changed by a refused create");

    // Removing the last operational base (-EBUSY), a bdev no raid holds (-ENODEV).
    ok(&app, "bdev_raid_remove_base_bdev", json!({"name": "B"}));
    let after_remove = state(&app);
    refused(
        &app,
        "bdev_raid_remove_base_bdev",
        json!({"name": "A"}),
        -16,
        &["A", "last"],
    );
    refused(&app, "bdev_raid_remove_base_bdev", json!({"name": "C"}), -19, &["C"]);
    refused(
        &app,
        "bdev_raid_remove_base_bdev",
        json!({"name": "Nope"}),
        -19,
        &["Nope"],
    );
    // Adding a base smaller than the volume (-EINVAL), one in use (-EPERM),
    // a missing one or to a missing raid (-ENODEV), another block size.
    refused(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "Small"}),
        -22,
        &["base_bdev: Small", "4096"],
    );
    refused(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "Used"}),
        -1,
        &["base_bdev", "Used"],
    );
    refused(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "Nope"}),
        -19,
        &["base_bdev", "Nope"],
    );
    refused(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "Q", "base_bdev": "C"}),
        -19,
        &["raid_bdev", "Q"],
    );
    refused(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "Big4k"}),
        -22,
        &["Big4k"],
    );
    assert_eq!(state(&app), after_remove, "nothing changed by a refused remove or add");

    // Deleting a raid exported as a namespace (-EBUSY), a base a raid holds
    // (-EBUSY), a raid that is not there (-ENODEV); a raid base as a namespace.
    ok(
        &app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "R"}}),
    );
    let exported = state(&app);
    refused(
        &app,
        "bdev_raid_delete",
        json!({"name": "R"}),
        -16,
        &["R", "namespace 2", NQN],
    );
    refused(&app, "bdev_malloc_delete", json!({"name": "A"}), -16, &["A", "raid R"]);
    refused(&app, "lull_bdev_delete", json!({"name": "A"}), -16, &["A", "raid R"]);
    refused(&app, "bdev_raid_delete", json!({"name": "Nope"}), -19, &["Nope"]);
    refused(
        &app,
        "bdev_malloc_delete",
        json!({"name": "R"}),
        -19,
        &["bdev_raid_delete"],
    );
    refused(
        &app,
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "A"}}),
        -32602,
        &["A", "raid R"],
    );
    assert_eq!(state(&app), exported, "nothing changed by a refused delete");

    // A removed base is free: deleting it is allowed.
    ok(&app, "bdev_malloc_delete", json!({"name": "B"}));
    app.shutdown();
}

#[test]
fn set_options_is_a_live_setting_everywhere() {
    let app = app();
    ok(&app, "bdev_raid_set_options", json!({"process_window_size_kb": 256}));
    ok(
        &app,
        "bdev_raid_set_options",
        json!({"process_max_bandwidth_mb_sec": 100}),
    );
    let o = ok(&app, "lull_get_options", json!(null));
    assert_eq!(
        (
            o["process_window_size_kb"].clone(),
            o["process_max_bandwidth_mb_sec"].clone()
        ),
        (json!(256), json!(100))
    );
    ok(&app, "lull_set_options", json!({"process_max_bandwidth_mb_sec": 0}));
    assert_eq!(app.raid_options().process_max_bandwidth_mb_sec, 0);
    assert_eq!(app.raid_options().process_window_size_kb, 256);
    // SPDK refuses a zero window with -EINVAL; out of range, unknown and
    // wrongly typed are -32602 naming the field; nothing changes.
    refused(
        &app,
        "bdev_raid_set_options",
        json!({"process_window_size_kb": 0}),
        -22,
        &["process_window_size_kb"],
    );
    refused(
        &app,
        "bdev_raid_set_options",
        json!({"process_window_size_kb": 2_000_000}),
        -32602,
        &["process_window_size_kb", "1048576"],
    );
    refused(
        &app,
        "bdev_raid_set_options",
        json!({"process_window_kb": 8}),
        -32602,
        &["process_window_kb"],
    );
    refused(
        &app,
        "bdev_raid_set_options",
        json!({"process_max_bandwidth_mb_sec": "fast"}),
        -32602,
        &["process_max_bandwidth_mb_sec"],
    );
    assert_eq!(app.raid_options().process_window_size_kb, 256);
    // A volume created now takes them; a change reaches volumes at once.
    for n in ["A", "B"] {
        malloc(&app, n, 1024);
    }
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A", "B"]}),
    );
    ok(&app, "bdev_raid_set_options", json!({"process_window_size_kb": 64}));
    let saved = ok(&app, "framework_get_config", json!({"name": "bdev"}));
    assert!(
        saved
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["method"] == "bdev_raid_set_options"
                && e["params"] == json!({"process_window_size_kb": 64, "process_max_bandwidth_mb_sec": 0})),
        "{saved}"
    );
    app.shutdown();
}

#[test]
fn a_base_removed_and_added_back_is_rebuilt_to_the_same_bytes() {
    let app = app();
    const BLOCKS: u64 = 8192; // 4 MiB
    for n in ["A", "B", "C"] {
        malloc(&app, n, BLOCKS);
    }
    // The bases in sync before the volume is made (bdev_raid_create copies nothing).
    let data = pattern(BLOCKS, 0x5a);
    for n in ["A", "B"] {
        with_ram(&ram(&app, n), |r| r.write(0, &data)).unwrap();
    }
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A", "B"]}),
    );
    ok(&app, "bdev_raid_set_options", json!({"process_window_size_kb": 128}));
    ok(&app, "bdev_raid_remove_base_bdev", json!({"name": "B"}));
    let r = &raids(&app)[0];
    assert_eq!(r["num_base_bdevs"], 2, "the slot stays");
    assert_eq!(r["num_base_bdevs_operational"], 1);
    assert_eq!(r["base_bdevs_list"][1]["name"], Value::Null, "{r}");
    assert_eq!(r["base_bdevs_list"][1]["is_configured"], false);
    ok(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "C"}),
    );
    // Rebuilt in the background: progress while it runs, C in sync after.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_progress = false;
    loop {
        let r = raids(&app)[0].clone();
        match r.get("process") {
            Some(p) => {
                assert_eq!(p["type"], "rebuild");
                assert_eq!(p["target"], "C");
                let blocks = p["progress"]["blocks"].as_u64().unwrap();
                assert!(blocks <= BLOCKS);
                assert_eq!(p["progress"]["percent"].as_u64().unwrap(), blocks * 100 / BLOCKS);
                seen_progress = true;
            }
            None if r["num_base_bdevs_operational"] == 2 => break,
            None => {}
        }
        assert!(Instant::now() < deadline, "no rebuild end within 60 s: {r}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = seen_progress; // a fast rebuild may end before the first look
    let r = &raids(&app)[0];
    assert_eq!(r["base_bdevs_list"][1]["name"], "C", "{r}");
    assert_eq!(r["base_bdevs_list"][1]["is_configured"], true);
    let mut got = vec![0u8; data.len()];
    with_ram(&ram(&app, "C"), |r| r.read(0, &mut got)).unwrap();
    assert!(got == data, "C differs from the volume's data after the rebuild");
    app.shutdown();
}

#[test]
fn the_toml_file_makes_a_raid1_after_its_bases() {
    let core = lull_reactor::CoreList::usable().unwrap().cores()[0];
    let cfg = Config::from_toml(&format!(
        r#"cores = "{core}"
rpc_socket = "/nonexistent/unused.sock"
process_max_bandwidth_mb_sec = 50
[[bdev]]
name = "M0"
type = "malloc"
size = "1MiB"
[[bdev]]
name = "M1"
type = "malloc"
size = "1MiB"
[[bdev]]
name = "Vol0"
type = "raid1"
base_bdevs = ["M0", "M1"]
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = [{{ bdev = "Vol0" }}]
"#
    ))
    .unwrap();
    let app = App::start(&cfg.resolve().unwrap()).unwrap();
    let r = &raids(&app)[0];
    assert_eq!(r["name"], "Vol0");
    assert_eq!(r["num_base_bdevs_operational"], 2);
    assert_eq!(app.raid_options().process_max_bandwidth_mb_sec, 50);
    assert_eq!(app.claims("Vol0"), vec![(NQN.to_string(), 1)]);
    app.shutdown();
}

/// A daemon on one core exporting a 16 MiB RAM bdev `Replica0` as namespace
/// 1 of `NQN` on a loopback port of its own: a replica to attach to.
fn replica_daemon() -> Arc<App> {
    let core = lull_reactor::CoreList::usable().unwrap().cores()[0];
    let cfg = Config::from_toml(&format!(
        r#"cores = "{core}"
rpc_socket = "/nonexistent/unused.sock"
listen = ["127.0.0.1:0"]
[[bdev]]
name = "Replica0"
type = "malloc"
size = "16MiB"
[[subsystem]]
nqn = "{NQN}"
allow_any_host = true
namespaces = [{{ bdev = "Replica0" }}]
"#
    ))
    .unwrap();
    App::start(&cfg.resolve().unwrap()).unwrap()
}

/// A base on a remote controller (here the daemon's own target, through
/// the initiator): the controller is not detached under the volume, and a
/// stop during a rebuild from it ends the rebuild and detaches it.
#[test]
fn a_remote_base_keeps_its_controller_and_a_stop_ends_a_rebuild() {
    let app = replica_daemon();
    let port = app.target().listeners()[0].port();
    let names = ok(
        &app,
        "bdev_nvme_attach_controller",
        json!({"name": "N", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
               "trsvcid": port.to_string(), "subnqn": NQN}),
    );
    assert_eq!(names, json!(["Nn1"]));
    for n in ["L0", "L1"] {
        malloc(&app, n, 32768);
    }
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["L0", "Nn1"]}),
    );
    let before = state(&app);
    refused(
        &app,
        "bdev_nvme_detach_controller",
        json!({"name": "N"}),
        -16,
        &["Nn1", "raid R"],
    );
    assert_eq!(state(&app), before);
    // The remote base alone in sync, a local one rebuilt from it at 1 MiB/s
    // (16 s for the volume): still running when the daemon stops.
    ok(
        &app,
        "bdev_raid_set_options",
        json!({"process_max_bandwidth_mb_sec": 1}),
    );
    ok(&app, "bdev_raid_remove_base_bdev", json!({"name": "L0"}));
    ok(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "L1"}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let r = &raids(&app)[0];
    assert_eq!(r["process"]["target"], "L1", "{r}");
    let m = lull_daemon::metrics::render(&app).unwrap();
    assert!(m.contains("lull_raid_rebuilding{raid=\"R\"} 1"), "{m}");
    let st = ok(&app, "lull_get_status", json!(null));
    assert_eq!(st["raids"][0]["process"]["target"], "L1");
    assert_eq!(st["raids"][0]["process"]["total_blocks"], 32768);
    let t = Instant::now();
    app.shutdown();
    assert!(t.elapsed() < Duration::from_secs(15), "the stop took {:?}", t.elapsed());
    assert!(app.controllers().is_empty(), "controller N detached at the stop");
    assert!(app.raids().is_empty());
}

/// Waits until volume `name` has no process and `n` operational bases.
fn wait_in_sync(app: &App, name: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = raids(app)
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing"));
        if r.get("process").is_none() && r["num_base_bdevs_operational"] == n {
            return r;
        }
        assert!(Instant::now() < deadline, "{name} not in sync within 60 s: {r}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// With `-s`: the superblock is written at creation; a base holding
/// another raid's is refused (-EEXIST), one without any beside members is
/// refused (-EINVAL); created again over its bases the volume is assembled
/// from them, and a member that missed writes is rebuilt before it is read.
#[test]
fn a_superblock_raid_is_assembled_again_and_its_stale_member_rebuilt() {
    let app = app();
    const BLOCKS: u64 = 8192;
    for n in ["A", "B", "C"] {
        malloc(&app, n, BLOCKS);
    }
    let create = |name: &str, bases: Value| json!({"name": name, "raid_level": "raid1", "base_bdevs": bases, "superblock": true});
    ok(&app, "bdev_raid_create", create("R", json!(["A", "B"])));
    let r = &raids(&app)[0];
    assert_eq!(r["superblock"], true);
    let offset = r["base_bdevs_list"][0]["data_offset"].as_u64().unwrap();
    assert_eq!(offset, 2048, "1 MiB of 512-byte blocks");
    let uuid = r["uuid"].clone();
    // Saved with its members and identity.
    let saved = ok(&app, "framework_get_config", json!({"name": "bdev"}));
    let entry = saved
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "bdev_raid_create")
        .unwrap()["params"]
        .clone();
    assert_eq!(
        entry,
        json!({"name": "R", "uuid": uuid, "raid_level": "raid1", "base_bdevs": ["A", "B"], "superblock": true})
    );
    // B misses writes: taken out, then the volume's data changes on A.
    ok(&app, "bdev_raid_remove_base_bdev", json!({"name": "B"}));
    ok(&app, "bdev_raid_delete", json!({"name": "R"}));
    let data = pattern(BLOCKS - offset, 0x33);
    with_ram(&ram(&app, "A"), |r| r.write(offset, &data)).unwrap();
    let before = state(&app);
    refused(
        &app,
        "bdev_raid_create",
        create("Other", json!(["A", "B"])),
        -17,
        &["base_bdevs[0]", "raid R"],
    );
    refused(
        &app,
        "bdev_raid_create",
        create("R", json!(["A", "C"])),
        -22,
        &["base_bdevs[1]", "C", "no superblock"],
    );
    assert_eq!(state(&app), before, "nothing changed");
    // Assembled: A in sync, B stale and rebuilt from A.
    ok(&app, "bdev_raid_create", create("R", json!(["A", "B"])));
    let r = wait_in_sync(&app, "R", 2);
    assert_eq!(r["uuid"], uuid, "the superblock's identity");
    let names: Vec<&str> = r["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B"]);
    let mut got = vec![0u8; data.len()];
    with_ram(&ram(&app, "B"), |r| r.read(offset, &mut got)).unwrap();
    assert!(got == data, "B rebuilt from A after the assembly");
    app.shutdown();
}

/// The TOML file declares a volume with a superblock over files: the
/// second start assembles it from the files instead of making it anew,
/// and the member taken out during the first run is rebuilt.
#[test]
fn a_toml_superblock_raid_over_files_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("lull-raid-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["f0", "f1"] {
        let file = std::fs::File::create(dir.join(f)).unwrap();
        file.set_len(8 << 20).unwrap();
    }
    let core = lull_reactor::CoreList::usable().unwrap().cores()[0];
    let text = format!(
        r#"cores = "{core}"
rpc_socket = "/nonexistent/unused.sock"
[[bdev]]
name = "F0"
type = "uring"
filename = "{}"
[[bdev]]
name = "F1"
type = "uring"
filename = "{}"
[[bdev]]
name = "Vol0"
type = "raid1"
base_bdevs = ["F0", "F1"]
superblock = true
"#,
        dir.join("f0").display(),
        dir.join("f1").display()
    );
    let settings = Config::from_toml(&text).unwrap().resolve().unwrap();
    let app = App::start(&settings).unwrap();
    let first = wait_in_sync(&app, "Vol0", 2);
    ok(&app, "bdev_raid_remove_base_bdev", json!({"name": "F1"}));
    app.shutdown();
    drop(app);
    let app = App::start(&settings).unwrap();
    let r = wait_in_sync(&app, "Vol0", 2);
    assert_eq!(r["uuid"], first["uuid"], "assembled, not made anew");
    assert_eq!(r["base_bdevs_list"][1]["name"], "F1");
    app.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-s` writes the superblock on every base at creation (SPDK's
/// signature `SPDKRAID` at block 0), before the call answers.
#[test]
fn the_superblock_is_on_every_base_when_create_answers() {
    let app = app();
    for n in ["A", "B"] {
        malloc(&app, n, 4096);
    }
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "Vol1", "raid_level": "raid1", "base_bdevs": ["A", "B"], "superblock": true}),
    );
    for n in ["A", "B"] {
        let mut block = vec![0u8; 512];
        with_ram(&ram(&app, n), |r| r.read(0, &mut block)).unwrap();
        assert_eq!(&block[..8], b"SPDKRAID", "{n}: {:?}", &block[..16]);
    }
    ok(&app, "bdev_raid_delete", json!({"name": "Vol1"}));
    let other = json!({"name": "Other1", "raid_level": "raid1", "base_bdevs": ["A", "B"], "superblock": true});
    refused(&app, "bdev_raid_create", other.clone(), -17, &["raid Vol1"]);
    // Assembled again, then deleted with clear_sb (rpc.py -c): the bases
    // are free for another volume with a superblock.
    ok(
        &app,
        "bdev_raid_create",
        json!({"name": "Vol1", "raid_level": "raid1", "base_bdevs": ["A", "B"], "superblock": true}),
    );
    ok(&app, "bdev_raid_delete", json!({"name": "Vol1", "clear_sb": true}));
    for n in ["A", "B"] {
        let mut block = vec![0u8; 512];
        with_ram(&ram(&app, n), |r| r.read(0, &mut block)).unwrap();
        assert!(block.iter().all(|b| *b == 0), "{n}: superblock left");
    }
    ok(&app, "bdev_raid_create", other);
    app.shutdown();
}

/// A replica's controller that stays lost past `ctrlr_loss_timeout_sec` is
/// deleted with its bdev, as SPDK's bdev_nvme deletes it: the bdev leaves
/// the volume, which goes on degraded over its local base, and the name is
/// free to attach the replica again when it returns.
#[test]
fn a_lost_replica_controller_is_deleted_and_leaves_its_volume() {
    let replica = replica_daemon();
    let port = replica.target().listeners()[0].port();
    let engine = app();
    let attach = json!({"name": "N", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                        "trsvcid": port.to_string(), "subnqn": NQN,
                        "ctrlr_loss_timeout_sec": 1, "reconnect_delay_sec": 1, "fast_io_fail_timeout_sec": 0});
    assert_eq!(
        ok(&engine, "bdev_nvme_attach_controller", attach.clone()),
        json!(["Nn1"])
    );
    malloc(&engine, "L0", 32768);
    ok(
        &engine,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["L0", "Nn1"]}),
    );
    assert_eq!(raids(&engine)[0]["num_base_bdevs_operational"], 2);
    // The replica's node goes away: its connections close, nothing listens.
    replica.shutdown();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine.controllers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the lost controller was not deleted within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    refused(&engine, "bdev_get_bdevs", json!({"name": "Nn1"}), -19, &["Nn1"]);
    let r = &raids(&engine)[0];
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 1, "{r}");
    let names: Vec<&Value> = r["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["name"])
        .collect();
    assert!(names.contains(&&json!("L0")) && !names.contains(&&json!("Nn1")), "{r}");
    engine.shutdown();
}

/// The nil UUID given to `bdev_raid_create` is taken as none given (SPDK
/// generates one): a volume with a superblock over it is made at once
/// (its superblock cannot carry a nil UUID), and two such volumes do not
/// clash.
#[test]
fn a_nil_uuid_means_none_given() {
    let app = app();
    for n in ["A", "B", "C", "D"] {
        malloc(&app, n, 8192);
    }
    let nil = "00000000-0000-0000-0000-000000000000";
    let t0 = Instant::now();
    for (name, bases) in [("V0", ["A", "B"]), ("V1", ["C", "D"])] {
        ok(
            &app,
            "bdev_raid_create",
            json!({"name": name, "raid_level": "raid1", "base_bdevs": bases, "superblock": true, "uuid": nil}),
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let list = raids(&app);
    let uuids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids.len(), 2);
    assert!(uuids.iter().all(|u| *u != nil) && uuids[0] != uuids[1], "{uuids:?}");
}

/// `bdev_raid_add_base_bdev` of a bdev holding another raid's superblock
/// into a raid with one: -EEXIST (SPDK: "Superblock of a different raid
/// bdev found"), nothing changed and the other raid's member untouched; a
/// member of this raid's own coming back is taken and rebuilt.
#[test]
fn add_base_refuses_a_bdev_holding_another_raids_superblock() {
    let app = app();
    for n in ["A", "B", "C", "D", "E"] {
        malloc(&app, n, 8192);
    }
    let create = |name: &str, bases: &[&str]| {
        ok(
            &app,
            "bdev_raid_create",
            json!({"name": name, "raid_level": "raid1", "base_bdevs": bases, "superblock": true}),
        );
    };
    create("Other", &["D", "E"]);
    ok(&app, "bdev_raid_remove_base_bdev", json!({"name": "E"}));
    create("Mine", &["A", "B", "C"]);
    ok(&app, "bdev_raid_remove_base_bdev", json!({"name": "C"}));
    let e_before = with_ram(&ram(&app, "E"), |r| {
        let mut v = vec![0u8; 4096];
        r.read(0, &mut v).unwrap();
        v
    });
    let before = state(&app);
    refused(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "Mine", "base_bdev": "E"}),
        -17,
        &["base_bdev", "E", "Other"],
    );
    assert_eq!(state(&app), before, "nothing changed");
    let e_after = with_ram(&ram(&app, "E"), |r| {
        let mut v = vec![0u8; 4096];
        r.read(0, &mut v).unwrap();
        v
    });
    assert!(e_after == e_before, "Other's superblock on E untouched");
    // C holds Mine's own superblock: it comes back and is rebuilt.
    ok(
        &app,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "Mine", "base_bdev": "C"}),
    );
    wait_in_sync(&app, "Mine", 3);
}

/// At a restart a member may be absent (its node down) or back without its
/// data (a blank bdev with the member's uuid): a volume with a superblock
/// is assembled degraded without the first and rebuilds the second into
/// its slot; a blank bdev the superblock does not record is refused.
#[test]
fn a_superblock_raid_assembles_with_a_member_missing_or_blank() {
    let app = app();
    const BLOCKS: u64 = 8192;
    for n in ["A", "B", "C"] {
        malloc(&app, n, BLOCKS);
    }
    let c_uuid = ok(&app, "bdev_get_bdevs", json!({"name": "C"}))[0]["uuid"].clone();
    let create = json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A", "B", "C"], "superblock": true});
    ok(&app, "bdev_raid_create", create.clone());
    let offset = raids(&app)[0]["base_bdevs_list"][0]["data_offset"].as_u64().unwrap();
    // The volume's data, on both members that will stay.
    let data = pattern(BLOCKS - offset, 0x5a);
    ok(&app, "bdev_raid_delete", json!({"name": "R"}));
    for n in ["A", "B"] {
        with_ram(&ram(&app, n), |r| r.write(offset, &data)).unwrap();
    }
    // C's node is down: the volume comes up without it.
    ok(&app, "bdev_malloc_delete", json!({"name": "C"}));
    ok(&app, "bdev_raid_create", create.clone());
    let r = &raids(&app)[0];
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs"], 3, "{r}");
    assert_eq!(r["num_base_bdevs_discovered"], 2, "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 2, "{r}");
    assert!(r.get("process").is_none(), "nothing to rebuild: {r}");
    ok(&app, "bdev_raid_delete", json!({"name": "R"}));
    // C comes back blank (same uuid, no superblock); D is some other blank bdev.
    ok(
        &app,
        "bdev_malloc_create",
        json!({"name": "C", "num_blocks": BLOCKS, "block_size": 512, "uuid": c_uuid}),
    );
    malloc(&app, "D", BLOCKS);
    let before = state(&app);
    refused(
        &app,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A", "B", "D"], "superblock": true}),
        -22,
        &["base_bdevs[2]", "D", "no superblock"],
    );
    assert_eq!(state(&app), before, "nothing changed");
    ok(&app, "bdev_raid_create", create);
    let r = wait_in_sync(&app, "R", 3);
    assert_eq!(r["num_base_bdevs_discovered"], 3, "{r}");
    let mut got = vec![0u8; data.len()];
    with_ram(&ram(&app, "C"), |r| r.read(offset, &mut got)).unwrap();
    assert!(got == data, "C rebuilt from the members in sync");
    app.shutdown();
}

/// A new volume still needs every base: with none holding a superblock,
/// a missing one is refused as before (-ENODEV), nothing made.
#[test]
fn a_new_superblock_raid_needs_every_base() {
    let app = app();
    malloc(&app, "A", 4096);
    let before = state(&app);
    refused(
        &app,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["A", "Gone"], "superblock": true}),
        -19,
        &["base_bdevs[1]", "Gone"],
    );
    assert_eq!(state(&app), before);
    let mut block = vec![0u8; 512];
    with_ram(&ram(&app, "A"), |r| r.read(0, &mut block)).unwrap();
    assert!(block.iter().all(|b| *b == 0), "no superblock written on A");
    app.shutdown();
}

/// The engine of a three-node volume restarts from its saved config while
/// a replica's node is down: with `--json-ignore-init-errors` (here
/// `OnError::KeepGoing`) the failed attach is passed over and the volume
/// comes up degraded over its local files; the replica, back blank on
/// another port, is attached and added again and rebuilt.
#[test]
fn a_saved_volume_restarts_degraded_with_a_replica_down() {
    let dir = std::env::temp_dir().join(format!("lull-raid-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["f0", "f1"] {
        let file = std::fs::File::create(dir.join(f)).unwrap();
        file.set_len(16 << 20).unwrap();
    }
    let replica = replica_daemon();
    let attach = |port: u16| {
        json!({"name": "N", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
               "trsvcid": port.to_string(), "subnqn": NQN})
    };
    let engine = app();
    ok(
        &engine,
        "bdev_nvme_attach_controller",
        attach(replica.target().listeners()[0].port()),
    );
    for (n, f) in [("F0", "f0"), ("F1", "f1")] {
        ok(
            &engine,
            "bdev_uring_create",
            json!({"name": n, "filename": dir.join(f).display().to_string(), "block_size": 512}),
        );
    }
    ok(
        &engine,
        "bdev_raid_create",
        json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["F0", "F1", "Nn1"], "superblock": true}),
    );
    let first = wait_in_sync(&engine, "R", 3);
    let doc = lull_daemon::rpc::config_json::save(&engine);
    engine.shutdown();
    drop(engine);
    replica.shutdown();
    drop(replica);

    let engine = app();
    // As `lull target` does without the flag: the first failure stops the load.
    let strict = lull_daemon::rpc::config_json::load(&engine, &doc, &Vec::new()).unwrap_err();
    assert!(strict.message.contains("bdev_nvme_attach_controller"), "{strict}");
    engine.shutdown();
    drop(engine);
    let engine = app();
    let report = lull_daemon::rpc::config_json::load_with(
        &engine,
        &doc,
        &Vec::new(),
        lull_daemon::rpc::config_json::OnError::KeepGoing,
    )
    .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(
        report.failed[0].contains("bdev_nvme_attach_controller"),
        "{:?}",
        report.failed
    );
    let r = &raids(&engine)[0];
    assert_eq!(r["uuid"], first["uuid"], "assembled, not made anew: {r}");
    assert_eq!(r["state"], "online", "{r}");
    assert_eq!(r["num_base_bdevs"], 3, "{r}");
    assert_eq!(r["num_base_bdevs_operational"], 2, "{r}");

    let replica = replica_daemon();
    ok(
        &engine,
        "bdev_nvme_attach_controller",
        attach(replica.target().listeners()[0].port()),
    );
    ok(
        &engine,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "R", "base_bdev": "Nn1"}),
    );
    let r = wait_in_sync(&engine, "R", 3);
    assert_eq!(r["num_base_bdevs_discovered"], 3, "{r}");
    engine.shutdown();
    replica.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A loopback TCP relay to `to` whose forwarding can be paused: a replica
/// that stops answering without closing its connections.
struct Relay {
    port: u16,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(to: std::net::SocketAddr) -> Relay {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let p = paused.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(to) else {
                    return;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let p = p.clone();
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 1 << 16];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            while p.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            if into.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Relay { port, paused }
    }

    fn pause(&self, on: bool) {
        self.paused.store(on, std::sync::atomic::Ordering::Release);
    }
}

/// A volume with a superblock is created over a remote base that stops
/// answering: its superblock read waits without the registry's lock, so
/// other calls answer at once, and while it waits its name and bases are
/// held (a base cannot be deleted or exported, the name not taken); once
/// the replica answers again the volume is made.
#[test]
fn a_base_that_stops_answering_does_not_stall_other_calls() {
    let replica = replica_daemon();
    let relay = Relay::start(replica.target().listeners()[0]);
    let engine = app();
    ok(
        &engine,
        "bdev_nvme_attach_controller",
        json!({"name": "N", "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
               "trsvcid": relay.port.to_string(), "subnqn": NQN}),
    );
    malloc(&engine, "M", 32768);
    ok(
        &engine,
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2016-06.io.spdk:x", "allow_any_host": true}),
    );
    relay.pause(true);
    let e2 = engine.clone();
    let create = std::thread::spawn(move || {
        call(
            &e2,
            "bdev_raid_create",
            json!({"name": "R", "raid_level": "raid1", "base_bdevs": ["M", "Nn1"], "superblock": true}),
        )
    });
    // The create is waiting for Nn1's block 0.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!create.is_finished(), "the create did not wait for the paused replica");
    let t = Instant::now();
    ok(&engine, "bdev_get_bdevs", json!({}));
    malloc(&engine, "Other", 4096);
    assert!(t.elapsed() < Duration::from_secs(1), "calls waited {:?}", t.elapsed());
    refused(&engine, "bdev_malloc_delete", json!({"name": "M"}), -16, &["raid R"]);
    refused(
        &engine,
        "bdev_malloc_create",
        json!({"name": "R", "num_blocks": 4096, "block_size": 512}),
        -17,
        &["R"],
    );
    refused(
        &engine,
        "nvmf_subsystem_add_ns",
        json!({"nqn": "nqn.2016-06.io.spdk:x", "namespace": {"bdev_name": "M"}}),
        -32602,
        &["raid R"],
    );
    refused(
        &engine,
        "bdev_raid_create",
        json!({"name": "R2", "raid_level": "raid1", "base_bdevs": ["Other", "M"]}),
        -1,
        &["base_bdevs[1]", "raid R"],
    );
    relay.pause(false);
    let r = create.join().unwrap();
    assert!(r.is_ok(), "{r:?}");
    let st = wait_in_sync(&engine, "R", 2);
    assert_eq!(st["superblock"], true);
    engine.shutdown();
    replica.shutdown();
}
