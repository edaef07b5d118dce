//! The daemon's bdevs of a remote controller follow the namespaces a
//! reconnect finds, against the scripted fake target of the engine's
//! initiator tests (`engine/tests/fake`): the application's half of the
//! initiator's fault 5 (namespaces changed while the association was down).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use fake::Cfg;
use lull_engine::initiator::{NvmeOptions, NvmeTrid};
use lull_reactor::CoreList;

/// The fake target, shared with the engine's initiator tests.
#[path = "../../engine/tests/fake/mod.rs"]
mod fake;

/// The subsystem the fake reports (the fake reads it from here).
const SUBNQN: &str = "nqn.2024-01.test:sub1";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(10);

/// The data the fake's reads return (the fake reads it from here).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reconnecting every second, for up to 10 s; event-driven queues.
fn reconnecting() -> NvmeOptions {
    NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        nvme_adminq_poll_period_us: 1000,
        keep_alive_timeout_ms: 10_000,
        reconnect_delay_sec: 1,
        ctrlr_loss_timeout_sec: 10,
        fast_io_fail_timeout_sec: 0,
        ..Default::default()
    }
}

/// The same through the application: the namespaces a reconnect finds
/// become bdevs added and removed, as after a change notice.
#[test]
fn bdevs_follow_namespaces_changed_during_a_reset() {
    let (l, addr) = fake::listen();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let fake = std::thread::spawn(move || {
        for nsids in [&[1u32][..], &[1, 2], &[2]] {
            let cfg = Cfg {
                nsids: Box::leak(nsids.to_vec().into_boxed_slice()),
                ..Cfg::default()
            };
            let a = fake::admin(&l, cfg);
            let mut io = fake::io(&l, cfg);
            if nsids == [2] {
                io.serve_io();
            } else {
                // Gone (FIN) when the test says so; no notice of the change is sent.
                go_rx.recv_timeout(WAIT).expect("the test's go");
            }
            drop(io);
            a.join().unwrap();
        }
    });
    let core = *CoreList::usable().unwrap().cores().last().unwrap();
    let cfg = lull_daemon::config::Config::from_toml(&format!(
        "cores = \"{core}\"\nrpc_socket = \"/nonexistent/unused.sock\"\nlisten = [\"127.0.0.1:0\"]\n"
    ))
    .unwrap();
    let app = lull_daemon::app::App::start(&cfg.resolve().unwrap()).unwrap();
    let names = app
        .attach_controller("F", NvmeTrid::new(addr, SUBNQN, HOSTNQN), reconnecting())
        .unwrap();
    assert_eq!(names, ["Fn1"]);
    go_tx.send(()).unwrap();
    wait_for("bdev Fn2 appears after the reconnect", || app.bdev("Fn2").is_some());
    assert!(app.bdev("Fn1").is_some());
    go_tx.send(()).unwrap();
    wait_for("bdev Fn1 goes after the next reconnect", || app.bdev("Fn1").is_none());
    assert!(app.bdev("Fn2").is_some());
    app.shutdown();
    fake.join().unwrap();
}
