//! Regressions from the adversarial session against the daemon: a metrics
//! request with a huge Content-Length, bdev deletion racing namespace
//! creation, an RPC socket path that is a regular file, oversized batches.

use std::io::{Read, Write};
use std::sync::Arc;

use lull_daemon::app::App;
use lull_daemon::config::{BdevKind, BdevSpec, Config};
use lull_daemon::metrics::MetricsServer;
use lull_daemon::rpc::RpcServer;
use serde_json::json;

fn app() -> Arc<App> {
    let core = lull_reactor::CoreList::usable().unwrap().cores()[0];
    let cfg = Config::from_toml(&format!(
        "cores = \"{core}\"\nrpc_socket = \"/nonexistent/unused.sock\""
    ))
    .unwrap();
    App::start(&cfg.resolve().unwrap()).unwrap()
}

fn get(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_huge_content_length_does_not_take_the_daemon_down() {
    let app = app();
    let m = MetricsServer::start(app.clone(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let r = get(m.addr(), "GET /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    let r = get(
        m.addr(),
        "POST /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let r = get(m.addr(), "\x00\x01garbage\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let r = get(m.addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.contains("lull_reactor_mode"), "still serving: {r}");
    drop(m);
    app.shutdown();
}

#[test]
fn deleting_a_bdev_while_namespaces_are_added_leaves_no_orphan() {
    let app = app();
    app.create_subsystem("nqn.2024-01.io.lull:race", "SN", "M", true, 1024)
        .unwrap();
    for round in 0..200 {
        let name = format!("B{round}");
        app.create_bdev(&BdevSpec {
            name: name.clone(),
            block_size: 512,
            kind: BdevKind::Null { num_blocks: 8 },
            uuid: None,
        })
        .unwrap();
        let (a, n) = (app.clone(), name.clone());
        let adder = std::thread::spawn(move || {
            let _ = a.add_namespace("nqn.2024-01.io.lull:race", &n, 0);
        });
        let _ = app.delete_bdev(&name, "null");
        adder.join().unwrap();
        // Whichever came first, no namespace may serve a bdev the map no longer has.
        let s = app.target().subsystem("nqn.2024-01.io.lull:race").unwrap();
        for ns in s.namespaces().iter() {
            assert!(
                app.bdev(&ns.bdev.info().name).is_some(),
                "round {round}: namespace {} serves deleted bdev {}",
                ns.nsid,
                ns.bdev.info().name
            );
            let _ = app.delete_bdev(&ns.bdev.info().name, "null");
        }
    }
    app.shutdown();
}

#[test]
fn an_rpc_socket_path_that_is_a_file_is_refused_not_deleted() {
    let app = app();
    let path = std::env::temp_dir().join(format!("lull-breaker-{}.toml", std::process::id()));
    std::fs::write(&path, "cores = \"0\"\n").unwrap();
    let e = RpcServer::check_path(&path).unwrap_err();
    assert!(e.contains("is not a socket"), "{e}");
    let e = RpcServer::start(app.clone(), &path).err().unwrap();
    assert!(e.contains("is not a socket"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "cores = \"0\"\n",
        "the file is untouched"
    );
    std::fs::remove_file(&path).unwrap();
    app.shutdown();
}

#[test]
fn a_batch_over_the_limit_is_one_error() {
    let app = app();
    let batch: Vec<_> = (0..1025)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "spdk_get_version"}))
        .collect();
    let path = std::env::temp_dir().join(format!("lull-breaker-{}.sock", std::process::id()));
    let server = RpcServer::start(app.clone(), &path).unwrap();
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    c.write_all(serde_json::Value::Array(batch).to_string().as_bytes())
        .unwrap();
    let mut it = serde_json::Deserializer::from_reader(&mut c).into_iter::<serde_json::Value>();
    let v = it.next().unwrap().unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    drop(server);
    app.shutdown();
}

fn call(app: &App, method: &str, params: serde_json::Value) -> serde_json::Value {
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    lull_daemon::rpc::handle_request(app, &req).unwrap()
}

#[test]
fn a_null_bdev_whose_size_overflows_is_refused_like_a_malloc_one() {
    let app = app();
    // u64::MAX blocks of 512 bytes is more bytes than a u64 counts: every
    // size in bytes derived from it (bdev list, iostat, the host's capacity)
    // would wrap.
    for method in ["bdev_null_create", "bdev_malloc_create"] {
        let v = call(
            &app,
            method,
            json!({"name": "Huge", "num_blocks": u64::MAX, "block_size": 512}),
        );
        assert_eq!(v["error"]["code"], -32602, "{method}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("num_blocks"), "{method}: names the field: {m}");
    }
    // The largest size that fits is still accepted.
    let most = u64::MAX / 4096;
    let v = call(
        &app,
        "bdev_null_create",
        json!({"name": "Big", "num_blocks": most, "block_size": 4096}),
    );
    assert_eq!(v["result"], "Big", "{v}");
    app.shutdown();
}

#[test]
fn a_value_of_the_wrong_type_or_range_is_refused_naming_its_field() {
    let app = app();
    let cases = [
        (
            "bdev_null_create",
            json!({"name": "W", "num_blocks": "8", "block_size": 512}),
            "num_blocks",
        ),
        (
            "bdev_malloc_create",
            json!({"name": "W", "num_blocks": 8, "block_size": -512}),
            "block_size",
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": "nqn.2024-01.io.lull:t", "allow_any_host": "yes"}),
            "allow_any_host",
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": "nqn.2024-01.io.lull:t", "namespace": {"bdev_name": "W", "nsid": 4294967296u64}}),
            "namespace.nsid",
        ),
        ("lull_set_options", json!({"idle_poll_us": 1.5}), "idle_poll_us"),
    ];
    for (method, params, field) in cases {
        let v = call(&app, method, params);
        assert_eq!(v["error"]["code"], -32602, "{method}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(field), "{method}: the message names {field}: {m}");
    }
    // A load_config entry says it too, after the entry's place.
    let doc = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_null_create", "params": {"name": "W", "num_blocks": 8, "block_size": "512"}}
    ]}]});
    let v = call(&app, "load_config", doc);
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("subsystems[0].config[0]") && m.contains("block_size"), "{m}");
    app.shutdown();
}

#[test]
fn two_bdevs_never_share_a_uuid() {
    let app = app();
    let u = "11111111-2222-4333-8444-555555555555";
    let v = call(
        &app,
        "bdev_malloc_create",
        json!({"name": "U1", "num_blocks": 64, "block_size": 512, "uuid": u}),
    );
    assert_eq!(v["result"], "U1", "{v}");
    // Another bdev with that UUID would give hosts a second namespace with
    // the same NGUID/UUID over different data.
    for method in ["bdev_malloc_create", "bdev_null_create"] {
        let v = call(
            &app,
            method,
            json!({"name": "U2", "num_blocks": 64, "block_size": 512, "uuid": u}),
        );
        assert_eq!(v["error"]["code"], -17, "{method}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(u) && m.contains("U1"), "{method}: {m}");
    }
    assert!(app.bdev("U2").is_none());
    // Once U1 is gone its UUID is free again.
    assert_eq!(call(&app, "bdev_malloc_delete", json!({"name": "U1"}))["result"], true);
    let v = call(
        &app,
        "bdev_null_create",
        json!({"name": "U2", "num_blocks": 64, "block_size": 512, "uuid": u}),
    );
    assert_eq!(v["result"], "U2", "{v}");
    app.shutdown();
}
