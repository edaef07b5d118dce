//! NVMe/TCP TLS 1.3 with PSKs configured in SPDK's words and used end to
//! end in one daemon: `keyring_file_add_key` with an `NVMeTLSkey-1` file
//! (names and paths shown, never the key; open files refused),
//! `nvmf_subsystem_add_host --psk`, `nvmf_subsystem_add_listener
//! --secure-channel`, `bdev_nvme_attach_controller --psk` from lull's
//! initiator to lull's target (I/O on every queue), a wrong PSK refused,
//! save_config and the TOML file carrying all of it.

mod rpc_client;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use lull_daemon::app::App;
use lull_engine::initiator::NvmeController;
use lull_proto::nvme::{Sqe, io_opc};
use rpc_client::{Client, Daemon, INVALID_PARAMS};
use serde_json::{Value, json};

const NQN: &str = "nqn.2024-01.io.lull:tls0";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000d1";
/// libnvme's test/psk.c key (and SPDK's tcp_ut.c).
const PSK: &str = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
/// The same length and hash, another key.
const OTHER: &str = "NVMeTLSkey-1:01:MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmZwJEiQ:";

fn key_file(tag: &str, text: &str, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lull-daemon-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{tag}.key"));
    std::fs::write(&p, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn no_secret(v: &impl std::fmt::Display) {
    let text = v.to_string();
    assert!(
        !text.contains("NVMeTLSkey") && !text.contains("VRLbtn") && !text.contains("MDAxMTIy"),
        "a key is shown: {text}"
    );
}

/// Malloc bdev, transport, subsystem listing HOST with PSK `key0`, a
/// secure_channel listener on a free port; returns the port.
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
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": HOST, "psk": "key0"}),
    );
    c.ok(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "secure_channel": true,
               "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    );
    let subs = c.ok("nvmf_get_subsystems", json!({"nqn": NQN}));
    no_secret(&subs);
    assert_eq!(subs[0]["hosts"], json!([{"nqn": HOST, "psk": "key0"}]), "{subs}");
    subs[0]["listen_addresses"][0]["trsvcid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn read_sqe() -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = io_opc::READ;
    sqe.0[4..8].copy_from_slice(&1u32.to_le_bytes());
    sqe
}

/// Reads one block through every I/O queue of the controller (each a TLS
/// connection of its own).
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
                read_sqe(),
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

fn attach(c: &mut Client, name: &str, port: u16, psk: Option<&str>) -> Value {
    let mut p = json!({"name": name, "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
                       "trsvcid": port.to_string(), "subnqn": NQN, "hostnqn": HOST,
                       "ctrlr_loss_timeout_sec": 0, "reconnect_delay_sec": 0, "fast_io_fail_timeout_sec": 0});
    if let Some(k) = psk {
        p["psk"] = json!(k);
    }
    c.request("bdev_nvme_attach_controller", p)
}

fn controller(app: &App, name: &str) -> NvmeController {
    app.controllers()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, c, _)| c)
        .unwrap()
}

#[test]
fn lull_initiator_reaches_lull_target_over_tls_configured_by_rpc() {
    let d = Daemon::start("tls");
    let mut c = d.client();
    // A PSK file others may read is refused, saying how to fix it.
    let open = key_file("open", PSK, 0o644);
    let e = c.expect(
        INVALID_PARAMS,
        "keyring_file_add_key",
        json!({"name": "key0", "path": open}),
    );
    assert!(e.contains("chmod 0600"), "{e}");
    let (good, other) = (key_file("key0", PSK, 0o600), key_file("key1", OTHER, 0o600));
    c.ok("keyring_file_add_key", json!({"name": "key0", "path": good}));
    c.ok("keyring_file_add_key", json!({"name": "key1", "path": other}));
    let keys = c.ok("keyring_get_keys", Value::Null);
    no_secret(&keys);
    let port = serve(&mut c);
    // secure_channel is refused where any host may connect (as SPDK does).
    c.ok(
        "nvmf_create_subsystem",
        json!({"nqn": "nqn.2024-01.io.lull:any", "allow_any_host": true}),
    );
    c.request(
        "nvmf_subsystem_add_listener",
        json!({"nqn": "nqn.2024-01.io.lull:any", "secure_channel": true,
               "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "0"}}),
    )
    .get("error")
    .expect("refused");

    // lull's initiator over TLS: the admin queue and one I/O queue per reactor.
    let r = attach(&mut c, "Tls0", port, Some("key0"));
    assert_eq!(r["result"], json!(["Tls0n1"]), "{r}");
    let ctrl = controller(&d.app, "Tls0");
    assert_eq!(usize::from(ctrl.info().io_queues), d.reactors);
    read_on_every_queue(&ctrl);
    let qpairs = c.ok("nvmf_subsystem_get_qpairs", json!({"nqn": NQN}));
    assert_eq!(qpairs.as_array().unwrap().len(), 1 + d.reactors, "{qpairs}");
    // key0: the keyring, the host entry, the controller.
    let keys = c.ok("keyring_get_keys", Value::Null);
    let k0 = keys.as_array().unwrap().iter().find(|k| k["name"] == "key0").unwrap();
    assert_eq!(k0["refcnt"], json!(3), "{keys}");

    // save_config names the key and the secure channel, never the key.
    let doc = lull_daemon::rpc::config_json::save(&d.app);
    no_secret(&doc);
    let text = doc.to_string();
    assert!(
        text.contains(r#""psk":"key0""#) && text.contains(r#""secure_channel":true"#),
        "{doc}"
    );
    d.app.detach_controller("Tls0").unwrap();

    // Another key under the same identity, no key, a DH-HMAC-CHAP key as psk.
    let r = attach(&mut c, "Bad0", port, Some("key1"));
    assert!(r.get("error").is_some(), "a wrong PSK is refused: {r}");
    let r = attach(&mut c, "Bad1", port, None);
    assert!(
        r.get("error").is_some(),
        "plain TCP on a secure_channel port is refused: {r}"
    );
    let r = attach(&mut c, "Bad2", port, Some("nokey"));
    assert!(r.get("error").is_some(), "{r}");
    assert!(d.app.controllers().is_empty());

    // The other way round: a TLS PSK given as a DH-HMAC-CHAP key, on both
    // sides. Refused naming the field and the kind, never the key.
    let e = c.expect(
        INVALID_PARAMS,
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000d2", "dhchap_key": "key0"}),
    );
    // (The message names the format, NVMeTLSkey-1, not the key.)
    assert!(
        e.contains("dhchap_key") && e.contains("not a DH-HMAC-CHAP secret"),
        "{e}"
    );
    assert!(!e.contains("VRLbtn"), "{e}");
    let e = c.expect(
        INVALID_PARAMS,
        "bdev_nvme_attach_controller",
        json!({"name": "Bad3", "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
               "trsvcid": port.to_string(), "subnqn": NQN, "hostnqn": HOST, "dhchap_key": "key0"}),
    );
    // (The message names the format, NVMeTLSkey-1, not the key.)
    assert!(
        e.contains("dhchap_key") && e.contains("not a DH-HMAC-CHAP secret"),
        "{e}"
    );
    assert!(!e.contains("VRLbtn"), "{e}");
    assert!(d.app.controllers().is_empty());
}

#[test]
fn toml_psk_files_and_secure_channel_listeners() {
    let k = key_file("toml", PSK, 0o600);
    let cores: Vec<usize> = lull_reactor::CoreList::usable()
        .unwrap()
        .cores()
        .iter()
        .copied()
        .take(1)
        .collect();
    let toml = format!(
        "cores = \"{}\"\nlog_level = \"warn\"\n[[subsystem]]\nnqn = \"{NQN}\"\nhosts = [\"{HOST}\"]\n\
         listen_secure_channel = [\"127.0.0.1:0\"]\n\
         [[subsystem.host_psk]]\nhost = \"{HOST}\"\npsk = \"{}\"\n",
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
    assert_eq!((keys.len(), keys[0].0.as_str(), keys[0].2), (1, name.as_str(), 1));
    let doc = lull_daemon::rpc::config_json::save(&app);
    no_secret(&doc);
    let nvmf = doc["subsystems"][2]["config"].as_array().unwrap();
    assert!(
        nvmf.contains(&json!({"method": "nvmf_subsystem_add_host", "params": {"nqn": NQN, "host": HOST, "psk": name}})),
        "{doc}"
    );
    let listener = nvmf
        .iter()
        .find(|e| e["method"] == "nvmf_subsystem_add_listener" && e["params"]["nqn"] == NQN)
        .expect("the listener is saved");
    assert_eq!(listener["params"]["secure_channel"], json!(true), "{listener}");
    app.shutdown();

    // A secure channel where any host may connect is refused with the field named.
    let bad =
        format!("[[subsystem]]\nnqn = \"{NQN}\"\nallow_any_host = true\nlisten_secure_channel = [\"127.0.0.1:0\"]\n");
    let e = lull_daemon::config::Config::from_toml(&bad)
        .unwrap()
        .resolve()
        .unwrap_err();
    assert!(e.to_string().contains("listen_secure_channel"), "{e}");
}
