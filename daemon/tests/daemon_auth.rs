//! DH-HMAC-CHAP configured in SPDK's words and used end to end in one
//! daemon: the file keyring RPCs (names and paths in every answer, never a
//! secret; key files that others may read refused), `nvmf_subsystem_add_host
//! --dhchap-key --dhchap-ctrlr-key`, `nvmf_subsystem_set_keys`, save_config,
//! and lull's initiator attaching to lull's target with uni- and
//! bidirectional authentication on the admin and every I/O queue, a wrong
//! key and a missing one refused with the controller and the reason named;
//! keys changed on both sides while verified I/O runs
//! (`nvmf_subsystem_set_keys`, `bdev_nvme_set_keys`), a mismatched change
//! failing only its controller.

mod rpc_client;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use lull_daemon::app::App;
use lull_engine::initiator::{CtrlrState, HostDhchapKeys, NvmeController, NvmeOptions, NvmeTrid};
use lull_engine::nvmf::subsystem::KeyNames;
use lull_proto::auth::{DhGroup, DhchapSecret};
use lull_proto::nvme::{Sqe, io_opc};
use rpc_client::{Client, Daemon, ENODEV, INVALID_PARAMS};
use serde_json::{Value, json};

const EEXIST: i64 = -17;
const EACCES: i64 = -13;
const ENOKEY: i64 = -126;
const NQN: &str = "nqn.2024-01.io.lull:auth0";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000c1";
/// A listed host without keys.
const PLAIN_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000c2";

/// The DHHC-1 form of `key` (no transformation), built here from the
/// format's definition: base64 of the key and its CRC-32, little-endian.
fn dhhc1(key: &[u8]) -> String {
    use base64::Engine;
    let mut b = key.to_vec();
    b.extend_from_slice(&crc32fast::hash(key).to_le_bytes());
    format!("DHHC-1:00:{}:", base64::engine::general_purpose::STANDARD.encode(&b))
}

/// The base64 part of the secret of `seed`: what must never be shown.
fn shown_part(seed: u8) -> String {
    dhhc1(&[seed; 32]).split(':').nth(2).unwrap().to_string()
}

/// A key file holding the secret of 32 bytes of `seed`, with `mode`.
fn key_file(tag: &str, seed: u8, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lull-daemon-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{tag}.key"));
    std::fs::write(&p, format!("{}\n", dhhc1(&[seed; 32]))).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn no_secret(v: &impl std::fmt::Display, seeds: &[u8]) {
    let text = v.to_string();
    for s in seeds {
        assert!(!text.contains(&shown_part(*s)), "a secret is shown: {text}");
    }
    assert!(!text.contains("DHHC-1"), "a secret is shown: {text}");
}

/// Malloc bdev, transport, subsystem (listed hosts only), namespace,
/// listener on a free port; returns the port.
fn serve(c: &mut Client) -> u16 {
    c.ok(
        "bdev_malloc_create",
        json!({"name": "Malloc0", "num_blocks": 2048, "block_size": 512}),
    );
    c.ok("nvmf_create_transport", json!({"trtype": "TCP"}));
    c.ok("nvmf_create_subsystem", json!({"nqn": NQN}));
    c.ok(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}}),
    );
    c.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    );
    let subs = c.ok("nvmf_get_subsystems", json!({"nqn": NQN}));
    subs[0]["listen_addresses"][0]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn keyring_rpcs_show_names_and_paths_never_secrets() {
    let d = Daemon::start("keyring");
    let mut c = d.client();
    let k0 = key_file("k0", 0x11, 0o600);
    let k1 = key_file("k1", 0x22, 0o600);
    let same = key_file("same-as-k0", 0x11, 0o600);
    let open = key_file("open", 0x33, 0o644);
    let seeds = [0x11, 0x22, 0x33];

    assert_eq!(c.ok("keyring_get_keys", Value::Null), json!([]));
    assert_eq!(
        c.ok("keyring_file_add_key", json!({"name": "key0", "path": k0})),
        json!(true)
    );
    assert_eq!(
        c.ok("keyring_get_keys", Value::Null),
        json!([{"name": "key0", "removed": false, "probed": false, "refcnt": 1, "path": k0.display().to_string()}])
    );

    // Refused: a file others may read (the message says how to fix it),
    // a relative path, a taken name, an unknown parameter.
    let m = c.expect(
        INVALID_PARAMS,
        "keyring_file_add_key",
        json!({"name": "open0", "path": open}),
    );
    assert!(
        m.contains("mode 0644") && m.contains(&format!("chmod 0600 {}", open.display())),
        "{m}"
    );
    no_secret(&m, &seeds);
    let m = c.expect(
        INVALID_PARAMS,
        "keyring_file_add_key",
        json!({"name": "rel", "path": "k0.key"}),
    );
    assert!(m.contains("absolute"), "{m}");
    let m = c.expect(EEXIST, "keyring_file_add_key", json!({"name": "key0", "path": k1}));
    assert!(m.contains("key0"), "{m}");
    let m = c.expect(
        INVALID_PARAMS,
        "keyring_file_add_key",
        json!({"name": "x", "path": k1, "secret": "no"}),
    );
    assert!(m.contains("secret"), "{m}");
    c.expect(ENODEV, "keyring_file_remove_key", json!({"name": "nope"}));

    c.ok("keyring_file_add_key", json!({"name": "key1", "path": k1}));
    c.ok("keyring_file_add_key", json!({"name": "same", "path": same}));
    serve(&mut c);

    // A controller key equal to the host key is refused, and the host is not added.
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "key0", "dhchap_ctrlr_key": "same"}),
    );
    assert!(m.contains("reflection"), "{m}");
    let m = c.expect(
        ENODEV,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "nokey"}),
    );
    assert!(m.contains("dhchap_key") && m.contains("nokey"), "{m}");
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "dhchap_ctrlr_key": "key1"}),
    );
    assert!(m.contains("needs dhchap_key"), "{m}");
    assert_eq!(c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["hosts"], json!([]));

    c.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "key0", "dhchap_ctrlr_key": "key1"}),
    );
    assert_eq!(
        c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["hosts"],
        json!([{"nqn": HOST, "dhchap_key": "key0", "dhchap_ctrlr_key": "key1"}])
    );
    let keys = c.ok("keyring_get_keys", Value::Null);
    no_secret(&keys, &seeds);
    let refcnt: Vec<(String, u64)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["name"].as_str().unwrap().to_string(), k["refcnt"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        refcnt,
        vec![("key0".into(), 2), ("key1".into(), 2), ("same".into(), 1)],
        "the keyring's reference and the host's"
    );

    // save_config: the keyring first, keys by file, hosts by key name.
    let doc = c.ok("save_config", Value::Null);
    no_secret(&doc, &seeds);
    assert_eq!(doc["subsystems"][0]["subsystem"], "keyring");
    assert_eq!(
        doc["subsystems"][0]["config"][0],
        json!({"method": "keyring_file_add_key", "params": {"name": "key0", "path": k0.display().to_string()}})
    );
    let nvmf = doc["subsystems"][2]["config"].as_array().unwrap();
    assert!(
        nvmf.contains(&json!({"method": "nvmf_subsystem_add_host", "params": {"nqn": NQN, "host": HOST, "dhchap_key": "key0", "dhchap_ctrlr_key": "key1"}})),
        "{doc}"
    );

    // set_keys: unidirectional now; an unlisted host refused.
    c.ok(
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "key0"}),
    );
    assert_eq!(
        c.ok("nvmf_get_subsystems", json!({"nqn": NQN}))[0]["hosts"],
        json!([{"nqn": HOST, "dhchap_key": "key0"}])
    );
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": "nqn.2024-01.io.lull:other", "dhchap_key": "key0"}),
    );
    assert!(m.contains("not on the host list"), "{m}");

    // A key removed while in use stays listed as removed, without the
    // keyring's reference, until its user lets it go.
    c.ok("keyring_file_remove_key", json!({"name": "key0"}));
    let keys = c.ok("keyring_get_keys", Value::Null);
    assert_eq!(
        keys[0],
        json!({"name": "key0", "removed": true, "probed": false, "refcnt": 1, "path": k0.display().to_string()})
    );
    c.expect(ENODEV, "keyring_file_remove_key", json!({"name": "key0"}));
    let doc = c.ok("save_config", Value::Null);
    assert!(
        !doc["subsystems"][0]["config"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["params"]["name"] == "key0"),
        "a removed key is not saved"
    );
    c.ok("nvmf_subsystem_remove_host", json!({"nqn": NQN, "host": HOST}));
    let names: Vec<Value> = c
        .ok("keyring_get_keys", Value::Null)
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("key1"), json!("same")]);
}

fn read_sqe(nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = io_opc::READ;
    sqe.0[4..8].copy_from_slice(&nsid.to_le_bytes());
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, nlb - 1);
    sqe
}

/// Reads one block through every I/O queue of the controller on every
/// reactor: each queue authenticated, or the target would have answered
/// Authentication Required.
fn read_on_every_queue(ctrl: &NvmeController) {
    let (tx, rx) = mpsc::channel();
    let mut sent = 0;
    for (i, r) in ctrl.reactors().iter().enumerate() {
        let c = ctrl.clone();
        let tx = tx.clone();
        r.try_send(move |cx| {
            c.submit(
                cx,
                0,
                read_sqe(1, 0, 1),
                Vec::new(),
                512,
                Box::new(move |_cx, res| {
                    let _ = tx.send((i, res.map(|c| c.data.len())));
                }),
            );
        })
        .expect("the reactor takes the submission");
        sent += 1;
    }
    for _ in 0..sent {
        let (i, res) = rx.recv_timeout(Duration::from_secs(20)).expect("a completion");
        assert_eq!(res, Ok(512), "read on the queue of reactor {i}");
    }
}

/// Host keys from the daemon's keyring, offering ffdhe2048 and the null
/// group only, so a debug build's modular exponentiation stays quick.
fn host_keys(app: &App, key: &str, ctrlr_key: Option<&str>) -> HostDhchapKeys {
    let k = app.key_secret("dhchap_key", key).unwrap();
    let c = ctrlr_key.map(|c| app.key_secret("dhchap_ctrlr_key", c).unwrap());
    let names = KeyNames {
        key: key.into(),
        ctrlr_key: ctrlr_key.map(str::to_string),
    };
    let mut keys = HostDhchapKeys::new(k, c, Some(names)).unwrap();
    keys.dhgroups = vec![DhGroup::Ffdhe2048, DhGroup::Null];
    keys
}

fn opts() -> NvmeOptions {
    NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        ..Default::default()
    }
    .no_reconnect()
}

fn attach(app: &App, name: &str, port: u16, keys: Option<HostDhchapKeys>) -> Result<Vec<String>, String> {
    let mut trid = NvmeTrid::new(format!("127.0.0.1:{port}").parse().unwrap(), NQN, HOST);
    if let Some(k) = keys {
        trid = trid.with_dhchap(k);
    }
    app.attach_controller(name, trid, opts()).map_err(|e| e.to_string())
}

fn controller(app: &App, name: &str) -> NvmeController {
    app.controllers()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, c, _)| c)
        .unwrap()
}

#[test]
fn lull_initiator_authenticates_to_lull_target() {
    let d = Daemon::start("loop");
    let mut c = d.client();
    let port = serve(&mut c);
    let (h, k) = (key_file("host", 0x44, 0o600), key_file("ctrl", 0x55, 0o600));
    let other = key_file("other", 0x66, 0o600);
    c.ok("keyring_file_add_key", json!({"name": "hkey", "path": h}));
    c.ok("keyring_file_add_key", json!({"name": "ckey", "path": k}));
    c.ok("keyring_file_add_key", json!({"name": "other", "path": other}));
    c.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "hkey", "dhchap_ctrlr_key": "ckey"}),
    );
    let app = &d.app;

    // Bidirectional: the host proves hkey, the controller ckey, on the admin
    // queue and every I/O queue (one per reactor).
    assert_eq!(
        attach(app, "Bi0", port, Some(host_keys(app, "hkey", Some("ckey")))),
        Ok(vec!["Bi0n1".to_string()])
    );
    let ctrl = controller(app, "Bi0");
    assert_eq!(usize::from(ctrl.info().io_queues), d.reactors);
    read_on_every_queue(&ctrl);
    let qpairs = c.ok("nvmf_subsystem_get_qpairs", json!({"nqn": NQN}));
    assert_eq!(qpairs.as_array().unwrap().len(), 1 + d.reactors, "{qpairs}");
    // The controller's keys count as users of the keyring's.
    let refcnt = c.ok("keyring_get_keys", Value::Null)[0]["refcnt"].clone();
    assert_eq!(refcnt, json!(3), "ckey: the keyring, the host entry, the controller");
    app.detach_controller("Bi0").unwrap();

    // The controller proves the wrong key: the host refuses it.
    let e = attach(app, "Bad0", port, Some(host_keys(app, "hkey", Some("other")))).unwrap_err();
    assert!(
        e.contains("NVMe controller Bad0") && e.contains("queue 0") && e.contains("the host refused"),
        "{e}"
    );
    // The host proves the wrong key: the controller refuses it.
    let e = attach(app, "Bad1", port, Some(host_keys(app, "other", None))).unwrap_err();
    assert!(
        e.contains("NVMe controller Bad1") && e.contains("the controller refused authentication"),
        "{e}"
    );
    // No key at all, where the controller asks for one.
    let e = attach(app, "Bad2", port, None).unwrap_err();
    assert!(
        e.contains("NVMe controller Bad2") && e.contains("no dhchap_key was given"),
        "{e}"
    );
    no_secret(&e, &[0x44, 0x55, 0x66]);
    assert!(app.controllers().is_empty(), "no controller left from a failed attach");

    // A listed host the controller does not ask to authenticate: with a
    // host key only, nothing to do; with a controller key, the host still
    // demands the controller's proof, and a controller without keys for
    // it cannot give one.
    c.ok("nvmf_subsystem_add_host", json!({"nqn": NQN, "host": PLAIN_HOST}));
    let plain = |name: &str, keys| {
        let mut trid = NvmeTrid::new(format!("127.0.0.1:{port}").parse().unwrap(), NQN, PLAIN_HOST);
        if let Some(k) = keys {
            trid = trid.with_dhchap(k);
        }
        app.attach_controller(name, trid, opts()).map_err(|e| e.to_string())
    };
    assert_eq!(
        plain("Plain0", Some(host_keys(app, "hkey", None))),
        Ok(vec!["Plain0n1".to_string()])
    );
    app.detach_controller("Plain0").unwrap();
    let e = plain("Plain1", Some(host_keys(app, "hkey", Some("ckey")))).unwrap_err();
    assert!(
        e.contains("NVMe controller Plain1") && e.contains("queue 0: DH-HMAC-CHAP authentication failed"),
        "{e}"
    );

    // The target's lists (nvmf_set_config): a host offering only a group
    // the target no longer allows is refused; saved as SPDK saves it.
    c.ok(
        "nvmf_set_config",
        json!({"dhchap_dhgroups": ["ffdhe2048"], "discovery_filter": "match_any"}),
    );
    let mut null_only = host_keys(app, "hkey", Some("ckey"));
    null_only.dhgroups = vec![DhGroup::Null];
    let e = attach(app, "Grp0", port, Some(null_only)).unwrap_err();
    assert!(
        e.contains("NVMe controller Grp0") && e.contains("the controller refused authentication"),
        "{e}"
    );
    let saved = c.ok("save_config", Value::Null);
    assert_eq!(
        saved["subsystems"][2]["config"][0],
        json!({"method": "nvmf_set_config", "params": {"dhchap_digests": ["sha512", "sha384", "sha256"], "dhchap_dhgroups": ["ffdhe2048"]}})
    );
    let m = c.expect(INVALID_PARAMS, "nvmf_set_config", json!({"dhchap_digests": ["md5"]}));
    assert!(m.contains("dhchap_digests") && m.contains("md5"), "{m}");
    let m = c.expect(
        INVALID_PARAMS,
        "nvmf_set_config",
        json!({"dhchap_digests": ["sha256"], "discovery_filter": "transport"}),
    );
    assert!(m.contains("discovery_filter"), "{m}");
    assert_eq!(
        app.target().dhchap_allowed().digest_names(),
        vec!["sha512", "sha384", "sha256"],
        "a refused call changes nothing"
    );
    assert_eq!(
        attach(app, "Grp1", port, Some(host_keys(app, "hkey", Some("ckey")))),
        Ok(vec!["Grp1n1".to_string()]),
        "ffdhe2048, offered and allowed"
    );
    app.detach_controller("Grp1").unwrap();
    c.ok(
        "nvmf_set_config",
        json!({"dhchap_dhgroups": ["null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"]}),
    );
    assert!(app.target().dhchap_allowed().is_all());

    // Unidirectional after nvmf_subsystem_set_keys.
    c.ok(
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "hkey"}),
    );
    assert_eq!(
        attach(app, "Uni0", port, Some(host_keys(app, "hkey", None))),
        Ok(vec!["Uni0n1".to_string()])
    );
    read_on_every_queue(&controller(app, "Uni0"));
    app.detach_controller("Uni0").unwrap();

    // What the initiator offers: bdev_nvme_set_options' lists, shown and
    // saved; unknown names and empty lists refused naming the parameter.
    assert_eq!(
        c.ok("bdev_nvme_get_options", Value::Null)["dhchap_dhgroups"],
        json!(["ffdhe8192", "ffdhe6144", "ffdhe4096", "ffdhe3072", "ffdhe2048", "null"])
    );
    let m = c.expect(
        INVALID_PARAMS,
        "bdev_nvme_set_options",
        json!({"dhchap_dhgroups": ["ffdhe1024"]}),
    );
    assert!(m.contains("dhchap_dhgroups") && m.contains("ffdhe1024"), "{m}");
    let m = c.expect(INVALID_PARAMS, "bdev_nvme_set_options", json!({"dhchap_digests": []}));
    assert!(m.contains("dhchap_digests"), "{m}");
    c.ok(
        "bdev_nvme_set_options",
        json!({"dhchap_digests": ["sha384", "sha256"], "dhchap_dhgroups": ["null", "ffdhe3072"]}),
    );
    let o = c.ok("bdev_nvme_get_options", Value::Null);
    assert_eq!(
        (&o["dhchap_digests"], &o["dhchap_dhgroups"]),
        (&json!(["sha384", "sha256"]), &json!(["ffdhe3072", "null"]))
    );
    let saved = c.ok("save_config", Value::Null);
    assert_eq!(
        saved["subsystems"][1]["config"][0]["params"]["dhchap_dhgroups"],
        json!(["ffdhe3072", "null"])
    );

    // Through the RPC, by key names, offering those lists.
    assert_eq!(
        c.ok(
            "bdev_nvme_attach_controller",
            json!({"name": "R1", "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string(),
                   "subnqn": NQN, "hostnqn": HOST, "dhchap_key": "hkey"})
        ),
        json!(["R1n1"])
    );
    read_on_every_queue(&controller(app, "R1"));
    let saved = c.ok("save_config", Value::Null);
    let attach = saved["subsystems"][1]["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "bdev_nvme_attach_controller")
        .cloned()
        .unwrap();
    assert_eq!(attach["params"]["dhchap_key"], "hkey", "{attach}");
    assert!(attach["params"].get("dhchap_ctrlr_key").is_none(), "{attach}");
    c.ok("bdev_nvme_detach_controller", json!({"name": "R1"}));

    // An unknown key name is refused before anything is sent.
    let m = c.expect(
        ENODEV,
        "bdev_nvme_attach_controller",
        json!({"name": "R0", "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string(),
               "subnqn": NQN, "hostnqn": HOST, "dhchap_key": "nokey"}),
    );
    assert!(m.contains("dhchap_key") && m.contains("nokey"), "{m}");
    let m = c.expect(
        INVALID_PARAMS,
        "bdev_nvme_attach_controller",
        json!({"name": "R0", "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string(),
               "subnqn": NQN, "hostnqn": HOST, "dhchap_ctrlr_key": "ckey"}),
    );
    assert!(m.contains("needs dhchap_key"), "{m}");
}

#[test]
fn a_reflected_key_pair_is_refused_on_the_host_side() {
    let k = DhchapSecret::from_key(None, &[7; 32]).unwrap();
    let e = HostDhchapKeys::new(k.clone(), Some(k), None).unwrap_err();
    assert!(e.contains("reflection"), "{e}");
}

#[test]
fn toml_key_files_become_keyring_keys_named_by_their_paths() {
    let k = key_file("toml-host", 0x77, 0o600);
    let cores: Vec<usize> = lull_reactor::CoreList::usable()
        .unwrap()
        .cores()
        .iter()
        .copied()
        .take(1)
        .collect();
    let toml = format!(
        "cores = \"{}\"\nlog_level = \"warn\"\n[[subsystem]]\nnqn = \"{NQN}\"\nhosts = [\"{HOST}\"]\n\
         [[subsystem.host_dhchap]]\nhost = \"{HOST}\"\ndhchap_key = \"{}\"\n",
        cores[0],
        k.display()
    );
    let settings = lull_daemon::config::Config::from_toml(&toml)
        .unwrap()
        .resolve()
        .unwrap();
    let app = App::start(&settings).unwrap();
    let name = k.display().to_string();
    let keys = app.keyring_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].0.as_str(), keys[0].1.path.as_path(), keys[0].2),
        (name.as_str(), k.as_path(), 1)
    );
    let doc = lull_daemon::rpc::config_json::save(&app);
    no_secret(&doc, &[0x77]);
    let nvmf = doc["subsystems"][2]["config"].as_array().unwrap();
    assert!(
        nvmf.contains(
            &json!({"method": "nvmf_subsystem_add_host", "params": {"nqn": NQN, "host": HOST, "dhchap_key": name}})
        ),
        "a reloaded configuration still asks the host to authenticate: {doc}"
    );
    app.shutdown();
}

/// A verified I/O loop on every reactor of a controller: each slot writes
/// a block pattern of its own, reads it back and compares, again and again
/// until `stop`. Counts what completed and records every failure.
struct IoLoad {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
}

/// Slots per reactor (commands in flight on each queue, each on its own blocks).
const SLOTS: u64 = 4;
/// Blocks per command: 4 KiB.
const NLB: u32 = 8;

impl IoLoad {
    /// From block `base` on (each controller its own blocks: they share the namespace).
    fn start(ctrl: &NvmeController, base: u64) -> IoLoad {
        let load = IoLoad {
            stop: Arc::new(AtomicBool::new(false)),
            done: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
        };
        for (r, handle) in ctrl.reactors().iter().enumerate() {
            for s in 0..SLOTS {
                let slot = Slot {
                    ctrl: ctrl.clone(),
                    lba: base + (r as u64 * SLOTS + s) * u64::from(NLB),
                    seq: 0,
                    stop: load.stop.clone(),
                    done: load.done.clone(),
                    errors: load.errors.clone(),
                };
                handle
                    .try_send(move |cx| slot.write(cx))
                    .expect("the reactor takes the load");
            }
        }
        load
    }

    fn completed(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Stops the loops and waits until they are idle.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
    }
}

struct Slot {
    ctrl: NvmeController,
    lba: u64,
    seq: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Slot {
    fn pattern(&self) -> Vec<u8> {
        (0..NLB as usize * 512)
            .map(|i| (i as u64 ^ self.seq.wrapping_mul(131) ^ self.lba) as u8)
            .collect()
    }

    fn fail(&self, what: String) {
        self.errors.lock().unwrap().push(what);
    }

    fn write(mut self, cx: &mut lull_reactor::Context) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        self.seq += 1;
        let data = self.pattern();
        let ctrl = self.ctrl.clone();
        let sqe = rw_sqe(io_opc::WRITE, self.lba, NLB);
        ctrl.submit(
            cx,
            0,
            sqe,
            data,
            0,
            Box::new(move |cx, r| match r {
                Ok(_) => self.read(cx),
                Err(e) => self.fail(format!("write at LBA {}: {e}", self.lba)),
            }),
        );
    }

    fn read(self, cx: &mut lull_reactor::Context) {
        let ctrl = self.ctrl.clone();
        let sqe = rw_sqe(io_opc::READ, self.lba, NLB);
        ctrl.submit(
            cx,
            0,
            sqe,
            Vec::new(),
            NLB * 512,
            Box::new(move |cx, r| match r {
                Ok(c) if c.data == self.pattern() => {
                    self.done.fetch_add(1, Ordering::Relaxed);
                    self.write(cx);
                }
                Ok(_) => self.fail(format!("read at LBA {}: the data differs", self.lba)),
                Err(e) => self.fail(format!("read at LBA {}: {e}", self.lba)),
            }),
        );
    }
}

fn rw_sqe(opc: u8, slba: u64, nlb: u32) -> Sqe {
    let mut sqe = read_sqe(1, slba, nlb);
    sqe.0[0] = opc;
    sqe
}

/// Waits until `load` completed `n` more verified commands (20 s at most).
fn progress(load: &IoLoad, n: u64, what: &str) {
    let from = load.completed();
    let give_up = Instant::now() + Duration::from_secs(20);
    while load.completed() < from + n {
        assert!(load.errors().is_empty(), "{what}: {:?}", load.errors());
        assert!(Instant::now() < give_up, "{what}: I/O stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn attach_rpc(c: &mut Client, name: &str, port: u16, host: &str, key: &str, ckey: &str) {
    c.ok(
        "bdev_nvme_attach_controller",
        json!({"name": name, "trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": port.to_string(),
               "subnqn": NQN, "hostnqn": host, "dhchap_key": key, "dhchap_ctrlr_key": ckey,
               "ctrlr_loss_timeout_sec": 2, "reconnect_delay_sec": 1, "fast_io_fail_timeout_sec": 1}),
    );
}

#[test]
fn keys_change_while_io_runs() {
    let d = Daemon::start("rekey");
    let mut c = d.client();
    let port = serve(&mut c);
    let app = &d.app;
    for (name, seed) in [
        ("k1", 0x31),
        ("c1", 0x32),
        ("k2", 0x33),
        ("c2", 0x34),
        ("k3", 0x35),
        ("c3", 0x36),
    ] {
        let f = key_file(&format!("rekey-{name}"), seed, 0o600);
        c.ok("keyring_file_add_key", json!({"name": name, "path": f}));
    }
    // The null group and ffdhe2048 only, so a debug build stays quick.
    c.ok(
        "bdev_nvme_set_options",
        json!({"dhchap_dhgroups": ["null", "ffdhe2048"]}),
    );
    c.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "k1", "dhchap_ctrlr_key": "c1"}),
    );
    c.ok(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": PLAIN_HOST, "dhchap_key": "k3", "dhchap_ctrlr_key": "c3"}),
    );
    attach_rpc(&mut c, "Live0", port, HOST, "k1", "c1");
    attach_rpc(&mut c, "Live1", port, PLAIN_HOST, "k3", "c3");
    let (live0, live1) = (controller(app, "Live0"), controller(app, "Live1"));
    let qpairs = |c: &mut Client| {
        c.ok("nvmf_subsystem_get_qpairs", json!({"nqn": NQN}))
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(qpairs(&mut c), 2 * (1 + d.reactors));
    let load0 = IoLoad::start(&live0, 0);
    let load1 = IoLoad::start(&live1, 1024);
    progress(&load0, 200, "Live0 before the key change");
    progress(&load1, 200, "Live1 before the key change");

    // The target's keys change: queues already authenticated keep working.
    c.ok(
        "nvmf_subsystem_set_keys",
        json!({"nqn": NQN, "host": HOST, "dhchap_key": "k2", "dhchap_ctrlr_key": "c2"}),
    );
    progress(&load0, 100, "Live0 after nvmf_subsystem_set_keys");
    // Transactions passed on the target by HOST's controller: one per queue so far.
    let passed = || {
        app.target()
            .controllers()
            .iter()
            .filter(|c| c.hostnqn == HOST)
            .map(|c| c.authentications())
            .sum::<u64>()
    };
    assert_eq!(passed(), 1 + d.reactors as u64);
    // The host follows: every queue re-authenticates while I/O runs.
    assert_eq!(
        c.ok(
            "bdev_nvme_set_keys",
            json!({"name": "Live0", "dhchap_key": "k2", "dhchap_ctrlr_key": "c2"})
        ),
        json!(true)
    );
    progress(&load0, 200, "Live0 after bdev_nvme_set_keys");
    assert_eq!(
        passed(),
        2 * (1 + d.reactors as u64),
        "the admin queue and every I/O queue again"
    );
    assert_eq!(live0.resets(), 0, "no queue reconnected");
    assert_eq!(live0.state(), CtrlrState::Live);
    assert_eq!(qpairs(&mut c), 2 * (1 + d.reactors), "the same queues");
    // The new names are what the controller uses now.
    let keys = c.ok("keyring_get_keys", Value::Null);
    let refcnt = |n: &str| keys.as_array().unwrap().iter().find(|k| k["name"] == n).unwrap()["refcnt"].clone();
    assert_eq!((refcnt("k1"), refcnt("k2")), (json!(1), json!(3)), "{keys}");
    // The old keys no longer pass on a live queue either (the target checks
    // each transaction with its keys of the time): Live0 would fail them.

    // A mismatched set: Live1 re-authenticates with keys the target does
    // not hold for its host. It fails with -EACCES, Live1 resets and, its
    // reconnects failing the same way, is deleted; Live0 never notices.
    let m = c.expect(
        EACCES,
        "bdev_nvme_set_keys",
        json!({"name": "Live1", "dhchap_key": "k1", "dhchap_ctrlr_key": "c1"}),
    );
    assert!(
        m.contains("NVMe controller Live1") && m.contains("admin queue") && m.contains("refused"),
        "{m}"
    );
    no_secret(&m, &[0x31, 0x32, 0x33, 0x34, 0x35, 0x36]);
    progress(&load0, 200, "Live0 while Live1 fails");
    let give_up = Instant::now() + Duration::from_secs(20);
    while app.controllers().iter().any(|(n, _, _)| n == "Live1") {
        assert!(Instant::now() < give_up, "Live1 was not deleted");
        progress(&load0, 10, "Live0 while Live1 is deleted");
    }
    assert!(!load1.errors().is_empty(), "Live1's I/O failed");
    load1.stop();
    progress(&load0, 100, "Live0 after Live1 is gone");
    assert_eq!(live0.resets(), 0);
    assert_eq!(qpairs(&mut c), 1 + d.reactors, "only Live0's queues are left");

    // SPDK's refusals: an unknown controller, an unknown key, a controller
    // key alone; none touches Live0.
    c.expect(
        ENODEV,
        "bdev_nvme_set_keys",
        json!({"name": "Nope", "dhchap_key": "k2"}),
    );
    let m = c.expect(
        ENOKEY,
        "bdev_nvme_set_keys",
        json!({"name": "Live0", "dhchap_key": "nokey"}),
    );
    assert!(m.contains("nokey"), "{m}");
    c.expect(
        INVALID_PARAMS,
        "bdev_nvme_set_keys",
        json!({"name": "Live0", "dhchap_ctrlr_key": "c2"}),
    );
    progress(&load0, 100, "Live0 at the end");
    load0.stop();
    assert!(load0.errors().is_empty(), "{:?}", load0.errors());
    // The keys saved are the new ones.
    let saved = c.ok("save_config", Value::Null);
    let attach = saved["subsystems"][1]["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "bdev_nvme_attach_controller")
        .cloned()
        .unwrap();
    assert_eq!(
        (&attach["params"]["dhchap_key"], &attach["params"]["dhchap_ctrlr_key"]),
        (&json!("k2"), &json!("c2"))
    );
}
