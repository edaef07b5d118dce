//! 1,000 failed DH-HMAC-CHAP attempts in a row against lull's target
//! (issue 14's list): each is answered with AUTH_Failure1, the queue stays
//! unauthenticated until the host leaves, and afterwards the process has
//! no more fds, no more controllers and no more memory than before, and
//! the reactors are idle. One test function, so no other test of this
//! binary opens fds or allocates meanwhile.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Healthy, OTHER_HOST, SUBNQN, Tgt, open_fds, target, wait};
use lull_proto::auth::{AuthConfig, DhGroup, DhchapSecret, HashId};
use lull_proto::fabrics::ConnectData;
use lull_proto::nvme::{Sqe, admin_opc, status};
use lull_proto::pdu::Digests;
use lull_reactor::Mode;
use lull_transport::host_sync::{SyncError, SyncQueue};

/// Failed attempts in a row: issue 14 asks for 1,000. With the null DH
/// group an attempt is a TCP connection, a Connect and one transaction,
/// about a millisecond even in a debug build, so all of them fit.
const ATTEMPTS: usize = 1000;
/// Attempts before the memory baseline, so the allocator's pools and the
/// reactors' tables have reached their steady size.
const WARM_UP: usize = 100;
/// Resident memory the attempts may add beyond the warm-up's: allocator
/// slack. A leak of 4 KiB an attempt would be 4 MB.
const RSS_SLACK: u64 = 2 << 20;

fn key(seed: u8) -> DhchapSecret {
    DhchapSecret::from_key(Some(HashId::Sha256), &[seed; 32]).unwrap()
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn reactor_cpu(t: &Tgt) -> u64 {
    t.reactors.handles().iter().map(|h| h.stats().thread_cpu_ns).sum()
}

/// One attempt with a wrong key: Connect, a transaction the controller
/// refuses, a check on every hundredth that the queue is still refused
/// commands, then the host leaves.
fn attempt(t: &Tgt, wrong: &Arc<AuthConfig>, i: usize) {
    let mut q = SyncQueue::connect(t.addr, Digests::default(), 8192, Duration::from_secs(10)).unwrap();
    let data = ConnectData {
        hostid: [0x22; 16],
        cntlid: 0xFFFF,
        subnqn: SUBNQN.into(),
        hostnqn: OTHER_HOST.into(),
    };
    q.fabric_connect(0, 31, 0, &data).unwrap();
    let e = q.authenticate(wrong.clone(), i as u16).unwrap_err();
    assert!(
        e.to_string()
            .contains("controller refused authentication: authentication failed"),
        "attempt {i}: {e}"
    );
    if i.is_multiple_of(100) {
        let mut sqe = Sqe([0; 64]);
        sqe.0[0] = admin_opc::KEEP_ALIVE;
        let r = q.call("Keep Alive", sqe, &[], 0);
        assert!(
            matches!(r, Err(SyncError::Status { status: s, .. }) if s.sc() == status::AUTH_REQUIRED.sc()),
            "attempt {i}: the queue stays unauthenticated"
        );
    }
}

#[test]
fn a_thousand_failed_attempts_leave_nothing_behind() {
    let t = target(Mode::Interrupt);
    t.target
        .subsystem(SUBNQN)
        .unwrap()
        .set_host_dhchap(OTHER_HOST, key(1), None)
        .unwrap();
    let mut wrong = AuthConfig::new(key(9), None, OTHER_HOST, SUBNQN);
    wrong.dhgroups = vec![DhGroup::Null];
    let wrong = Arc::new(wrong);
    // The other host has no key: its queues must not notice the storm.
    let mut healthy = Healthy::new(&t);
    let controllers = t.target.controller_count();
    let fds = open_fds();

    for i in 0..WARM_UP {
        attempt(&t, &wrong, i);
    }
    assert!(wait(|| t.target.controller_count() == controllers));
    let rss0 = rss();
    let start = Instant::now();
    for i in WARM_UP..WARM_UP + ATTEMPTS {
        attempt(&t, &wrong, i);
        if i % 250 == 0 {
            healthy.check();
        }
    }
    let took = start.elapsed();
    eprintln!("{ATTEMPTS} failed attempts in {took:?}");

    // Every controller of the storm is gone, every fd closed.
    assert!(
        wait(|| t.target.controller_count() == controllers),
        "{} controllers left over",
        t.target.controller_count() - controllers
    );
    assert!(wait(|| open_fds() <= fds), "fds {} > {fds}", open_fds());
    let grown = rss().saturating_sub(rss0);
    eprintln!("resident memory: {rss0} bytes after the warm-up, {grown} more after the attempts");
    assert!(
        grown < RSS_SLACK,
        "resident memory grew {grown} bytes over {ATTEMPTS} attempts"
    );
    // The reactors are idle again: under 1 % of a core each over a second.
    let cpu = reactor_cpu(&t);
    std::thread::sleep(Duration::from_secs(1));
    let used = reactor_cpu(&t) - cpu;
    assert!(
        used < 20_000_000,
        "reactors used {} ms in 1 s after the storm",
        used / 1_000_000
    );
    healthy.check();
    // The right key still works.
    let mut right = AuthConfig::new(key(1), None, OTHER_HOST, SUBNQN);
    right.dhgroups = vec![DhGroup::Null];
    let mut q = SyncQueue::connect(t.addr, Digests::default(), 8192, Duration::from_secs(10)).unwrap();
    let data = ConnectData {
        hostid: [0x22; 16],
        cntlid: 0xFFFF,
        subnqn: SUBNQN.into(),
        hostnqn: OTHER_HOST.into(),
    };
    q.fabric_connect(0, 31, 0, &data).unwrap();
    q.authenticate(Arc::new(right), 1).unwrap();
    t.reactors.shutdown().unwrap();
}
