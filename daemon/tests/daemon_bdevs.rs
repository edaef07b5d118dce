//! Bdev identities and memory limits of the daemon: RAM and null bdevs get a
//! random UUID unless one is given (two nodes from one config must not show
//! hosts the same namespace), a given UUID is kept, and a RAM bdev larger
//! than the memory available is refused (-ENOMEM) instead of killing the daemon.

use lull_daemon::app::{App, AppError};
use lull_daemon::config::{BdevKind, BdevSpec, Config, parse_uuid};
use serde_json::json;

fn app() -> std::sync::Arc<App> {
    let core = lull_reactor::CoreList::usable().unwrap().cores()[0];
    let cfg = Config::from_toml(&format!(
        "cores = \"{core}\"\nrpc_socket = \"/nonexistent/unused.sock\""
    ))
    .unwrap();
    App::start(&cfg.resolve().unwrap()).unwrap()
}

fn malloc(name: &str, num_blocks: u64, uuid: Option<[u8; 16]>) -> BdevSpec {
    BdevSpec {
        name: name.into(),
        block_size: 512,
        kind: BdevKind::Malloc { num_blocks },
        uuid,
    }
}

#[test]
fn uuids_are_random_unless_given() {
    let app = app();
    app.create_bdev(&malloc("M0", 8, None)).unwrap();
    app.create_bdev(&malloc("M1", 8, None)).unwrap();
    let given = parse_uuid("4a1b2c3d-0000-4000-8000-00000000a1b2").unwrap();
    app.create_bdev(&malloc("M2", 8, Some(given))).unwrap();
    let u = |n: &str| app.bdev(n).unwrap().bdev.info().uuid;
    assert_ne!(u("M0"), u("M1"));
    assert_ne!(
        u("M0"),
        lull_engine::bdev::uuid_from_name("ram", "M0"),
        "not derived from the name"
    );
    assert_eq!(u("M0")[6] >> 4, 4, "version 4");
    assert_eq!(u("M0")[8] >> 6, 0b10, "RFC 4122 variant");
    assert_eq!(u("M2"), given);
    // Over JSON-RPC: SPDK's `uuid` parameter.
    let r = lull_daemon::rpc::handle_request(
        &app,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_malloc_create",
                "params": {"name": "M3", "num_blocks": 8, "block_size": 512,
                           "uuid": "11111111-2222-4333-8444-555555555555"}}),
    )
    .unwrap();
    assert_eq!(r["result"], "M3");
    assert_eq!(u("M3"), parse_uuid("11111111222243338444555555555555").unwrap());
    let r = lull_daemon::rpc::handle_request(
        &app,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "bdev_null_create",
                "params": {"name": "N", "num_blocks": 8, "block_size": 512, "uuid": "not-a-uuid"}}),
    )
    .unwrap();
    assert_eq!(r["error"]["code"], -32602);
    assert!(parse_uuid("4a1b2c3d-0000-4000-8000-00000000a1b").is_err());
    assert!(
        parse_uuid("4a1b2c3d00-00-4000-8000-00000000a1b2").is_err(),
        "dashes in the wrong places"
    );
    app.shutdown();
}

#[test]
fn a_ram_bdev_beyond_available_memory_is_refused() {
    let app = app();
    // 1 PiB of 512-byte blocks.
    let e = app.create_bdev(&malloc("Huge", 1 << 41, None)).unwrap_err();
    assert!(matches!(e, AppError::NoMemory(_)), "{e:?}");
    assert!(app.bdev("Huge").is_none());
    let r = lull_daemon::rpc::handle_request(
        &app,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "bdev_malloc_create",
                "params": {"name": "Huge", "num_blocks": 1u64 << 41, "block_size": 512}}),
    )
    .unwrap();
    assert_eq!(r["error"]["code"], -12, "{r}");
    // The daemon goes on serving.
    app.create_bdev(&malloc("Small", 8, None)).unwrap();
    app.shutdown();
}
