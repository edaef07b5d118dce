//! Namespace changes made through the control plane reach connected hosts:
//! a Namespace Attribute Changed notice completes an outstanding AER (NVMe
//! Base 2.0 section 5.2), log page 04h lists the changed NSIDs, and further
//! changes are not notified until the host has read it.

use std::time::Duration;

use lull_daemon::app::App;
use lull_daemon::config::Config;
use lull_proto::nvme::{Sqe, admin_opc, psdt};
use lull_proto::pdu::Digests;
use lull_transport::host_sync::SyncQueue;

const NQN: &str = "nqn.2024-01.io.lull:aen";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000ae";

fn admin_sqe(opc: u8) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.set_psdt(psdt::SGL_MPTR_CONTIGUOUS);
    sqe
}

fn set_aec(q: &mut SyncQueue, aec: u32) {
    let mut sqe = admin_sqe(admin_opc::SET_FEATURES);
    sqe.set_cdw(10, 0x0B);
    sqe.set_cdw(11, aec);
    q.call("Set Features AEC", sqe, &[], 0).unwrap();
}

fn changed_ns_log(q: &mut SyncQueue, retain: bool) -> Vec<u32> {
    let mut sqe = admin_sqe(admin_opc::GET_LOG_PAGE);
    // LID 04h, NUMDL = 1024 dwords - 1, RAE bit 15.
    sqe.set_cdw(10, 0x04 | (1023 << 16) | if retain { 1 << 15 } else { 0 });
    let c = q.call("Get Log Page 04h", sqe, &[], 4096).unwrap();
    c.data
        .chunks(4)
        .map(|d| u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
        .take_while(|&n| n != 0)
        .collect()
}

/// Waits (bounded) for one completion with `cid`.
fn wait_cid(q: &mut SyncQueue, cid: u16) -> u32 {
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < give_up, "AER {cid} not completed in 10 s");
        for c in q.wait().unwrap() {
            if c.cqe.cid == cid {
                assert!(c.cqe.status.is_success(), "AER failed: {:?}", c.cqe.status);
                return c.cqe.dw0;
            }
        }
    }
}

#[test]
fn namespace_changes_raise_one_notice_until_the_log_is_read() {
    let cores = lull_reactor::CoreList::usable().unwrap();
    let first = cores.cores()[0];
    let cfg = Config::from_toml(&format!(
        r#"
cores = "{first}"
rpc_socket = "/nonexistent/unused.sock"
listen = ["127.0.0.1:0"]
[[bdev]]
name = "A"
type = "malloc"
size = "1MiB"
[[bdev]]
name = "B"
type = "malloc"
size = "1MiB"
[[bdev]]
name = "C"
type = "null"
size = "1MiB"
[[subsystem]]
nqn = "{NQN}"
hosts = ["{HOSTNQN}"]
namespaces = [{{ bdev = "A" }}]
"#
    ))
    .unwrap();
    let app = App::start(&cfg.resolve().unwrap()).unwrap();
    let addr = app.target().listeners()[0];
    let (mut q, _cntlid) = SyncQueue::admin(addr, NQN, HOSTNQN, Digests::default(), 0).unwrap();

    // Without AEC bit 8 a change is neither notified nor recorded.
    app.add_namespace(NQN, "B", 0).unwrap();
    assert!(changed_ns_log(&mut q, false).is_empty());

    set_aec(&mut q, 1 << 8);
    let aer = q.cid();
    let mut sqe = admin_sqe(admin_opc::ASYNC_EVENT_REQUEST);
    sqe.set_cid(aer);
    q.submit(sqe, &[], 0).unwrap();
    // Let the AER reach the target before the change.
    std::thread::sleep(Duration::from_millis(100));
    app.remove_namespace(NQN, 2).unwrap();
    assert_eq!(
        wait_cid(&mut q, aer),
        0x0004_0002,
        "notice, NS attribute changed, log page 04h"
    );

    // Masked until the log is read: a second change is recorded, not notified.
    let aer2 = q.cid();
    let mut sqe = admin_sqe(admin_opc::ASYNC_EVENT_REQUEST);
    sqe.set_cid(aer2);
    q.submit(sqe, &[], 0).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    app.add_namespace(NQN, "C", 7).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        q.inflight(),
        1,
        "the second AER stays outstanding while the notice is masked"
    );
    // RAE keeps the mask and the list.
    assert_eq!(changed_ns_log(&mut q, true), vec![2, 7]);
    assert_eq!(changed_ns_log(&mut q, false), vec![2, 7]);
    assert!(
        changed_ns_log(&mut q, false).is_empty(),
        "reading without RAE clears the list"
    );

    // Unmasked: the next change completes the waiting AER.
    app.remove_namespace(NQN, 7).unwrap();
    assert_eq!(wait_cid(&mut q, aer2), 0x0004_0002);
    assert_eq!(changed_ns_log(&mut q, false), vec![7]);

    // A notice raised with no AER outstanding is delivered by the next AER at once.
    app.add_namespace(NQN, "B", 0).unwrap();
    let aer3 = q.cid();
    let mut sqe = admin_sqe(admin_opc::ASYNC_EVENT_REQUEST);
    sqe.set_cid(aer3);
    q.submit(sqe, &[], 0).unwrap();
    assert_eq!(wait_cid(&mut q, aer3), 0x0004_0002);
    assert_eq!(changed_ns_log(&mut q, false), vec![2]);
    drop(q);
    app.shutdown();
}

/// The initiator side: a controller attached with `attach_controller` turns
/// the target's notice into bdevs added and removed (as SPDK's bdev_nvme).
#[test]
fn remote_namespace_changes_become_bdevs() {
    let cores = lull_reactor::CoreList::usable().unwrap();
    let first = cores.cores()[0];
    let cfg = Config::from_toml(&format!(
        r#"
cores = "{first}"
rpc_socket = "/nonexistent/unused.sock"
listen = ["127.0.0.1:0"]
[[bdev]]
name = "A"
type = "malloc"
size = "1MiB"
[[bdev]]
name = "B"
type = "malloc"
size = "2MiB"
block_size = 4096
[[subsystem]]
nqn = "{NQN}"
hosts = ["{HOSTNQN}"]
namespaces = [{{ bdev = "A" }}]
"#
    ))
    .unwrap();
    let app = App::start(&cfg.resolve().unwrap()).unwrap();
    let addr = app.target().listeners()[0];
    let trid = lull_engine::initiator::NvmeTrid::new(addr, NQN, HOSTNQN);
    let names = app
        .attach_controller("R", trid, lull_engine::initiator::NvmeOptions::default())
        .unwrap();
    assert_eq!(names, vec!["Rn1".to_string()]);
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < give_up, "{what} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    app.add_namespace(NQN, "B", 5).unwrap();
    wait_for("bdev Rn5 appears", &|| app.bdev("Rn5").is_some());
    let b = app.bdev("Rn5").unwrap().bdev;
    assert_eq!(
        (b.info().block_size, b.info().num_blocks),
        (4096, 512),
        "sizes from Identify Namespace"
    );
    assert_eq!(
        b.info().uuid,
        app.bdev("B").unwrap().bdev.info().uuid,
        "a namespace added later keeps its bdev's UUID too (descriptor list read on rescan)"
    );
    let (_, _, bdevs) = app.controllers().into_iter().find(|(n, _, _)| n == "R").unwrap();
    assert_eq!(bdevs, vec!["Rn1".to_string(), "Rn5".to_string()]);
    app.remove_namespace(NQN, 1).unwrap();
    wait_for("bdev Rn1 goes", &|| app.bdev("Rn1").is_none());
    assert!(app.bdev("Rn5").is_some());
    app.shutdown();
}
