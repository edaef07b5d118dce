//! DH-HMAC-CHAP in-band authentication on lull's target (NVMe Base 2.0
//! section 8.13), driven over TCP by a host queue running lull's host-side
//! state machine: Connect's ATR bit, commands refused until the queue
//! authenticates, uni- and bidirectional transactions on the admin and an
//! I/O queue, a wrong key, a replayed message after success, the
//! authentication timeout (a host that never finishes loses the queue).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{HOSTNQN, Healthy, Host, OTHER_HOST, SUBNQN, Tgt, target, target_on, wait};
use lull_proto::auth::host::HostAuth;
use lull_proto::auth::messages::{Framing, Message};
use lull_proto::auth::{AuthConfig, DhGroup, DhchapSecret, FailureReason, HashId, OsEntropy};
use lull_proto::auth::{SECP_DHCHAP, SPSP_DHCHAP};
use lull_proto::fabrics::{AuthCmd, CONNECT_AUTHREQ_ATR, ConnectData, fctype};
use lull_proto::nvme::{Sgl, Sqe, admin_opc, io_opc, sgl_id, status};
use lull_proto::pdu::Digests;
use lull_reactor::Mode;
use lull_transport::host_sync::{SyncError, SyncQueue};

fn key(seed: u8) -> DhchapSecret {
    DhchapSecret::from_key(Some(HashId::Sha256), &[seed; 32]).unwrap()
}

/// The host's side: the keys, hashes and groups it offers (ffdhe2048 and
/// null only, so a debug build's modular exponentiation stays quick).
fn host_cfg(hostnqn: &str, host_key: DhchapSecret, ctrl_key: Option<DhchapSecret>) -> Arc<AuthConfig> {
    let mut c = AuthConfig::new(host_key, ctrl_key, hostnqn, SUBNQN);
    c.dhgroups = vec![DhGroup::Ffdhe2048, DhGroup::Null];
    Arc::new(c)
}

fn connect(addr: std::net::SocketAddr, hostnqn: &str, qid: u16, cntlid: u16) -> (SyncQueue, u32) {
    let mut q = SyncQueue::connect(addr, Digests::default(), 8192, Duration::from_secs(10)).unwrap();
    let data = ConnectData {
        hostid: [0x11; 16],
        cntlid,
        subnqn: SUBNQN.into(),
        hostnqn: hostnqn.into(),
    };
    let sqsize = if qid == 0 { 31 } else { 127 };
    let cqe = q.fabric_connect(qid, sqsize, 0, &data).unwrap();
    (q, cqe.dw0)
}

fn keep_alive(q: &mut SyncQueue) -> Result<(), SyncError> {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = admin_opc::KEEP_ALIVE;
    q.call("Keep Alive", sqe, &[], 0).map(|_| ())
}

fn read_block(q: &mut SyncQueue) -> Result<(), SyncError> {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = io_opc::READ;
    sqe.0[4..8].copy_from_slice(&1u32.to_le_bytes());
    q.call("Read", sqe, &[], 512).map(|_| ())
}

fn is_auth_required(r: Result<(), SyncError>) -> bool {
    matches!(r, Err(SyncError::Status { status: s, .. }) if s.sct() == status::AUTH_REQUIRED.sct() && s.sc() == status::AUTH_REQUIRED.sc() && s.dnr())
}

#[test]
fn authenticated_admin_and_io_queues() {
    let t = target(Mode::Interrupt);
    let s = t.target.subsystem(SUBNQN).unwrap();
    s.set_host_dhchap(HOSTNQN, key(1), None).unwrap();
    s.set_host_dhchap(OTHER_HOST, key(3), Some(key(4))).unwrap();

    for (hostnqn, cfg) in [
        (HOSTNQN, host_cfg(HOSTNQN, key(1), None)),
        (OTHER_HOST, host_cfg(OTHER_HOST, key(3), Some(key(4)))),
    ] {
        // Admin queue: Connect says authentication is required.
        let (mut admin, dw0) = connect(t.addr, hostnqn, 0, 0xFFFF);
        assert_ne!(dw0 & CONNECT_AUTHREQ_ATR, 0, "ATR set for {hostnqn}");
        let cntlid = dw0 as u16;
        // Fabrics commands work before authentication; others do not.
        admin.property_get(lull_proto::fabrics::property::VS, 4).unwrap();
        assert!(is_auth_required(keep_alive(&mut admin)));
        admin.authenticate(cfg.clone(), 1).unwrap();
        admin.enable(Duration::from_secs(5)).unwrap();
        keep_alive(&mut admin).unwrap();

        // An I/O queue authenticates on its own.
        let (mut io, dw0) = connect(t.addr, hostnqn, 1, cntlid);
        assert_ne!(dw0 & CONNECT_AUTHREQ_ATR, 0);
        assert!(is_auth_required(read_block(&mut io)), "I/O before authentication");
        io.authenticate(cfg.clone(), 2).unwrap();
        read_block(&mut io).unwrap();

        // Re-authentication on a live queue.
        admin.authenticate(cfg, 3).unwrap();
        keep_alive(&mut admin).unwrap();
    }
}

#[test]
fn wrong_keys_are_refused() {
    let t = target(Mode::Interrupt);
    let s = t.target.subsystem(SUBNQN).unwrap();
    s.set_host_dhchap(HOSTNQN, key(1), Some(key(2))).unwrap();

    // A wrong host key: the controller answers AUTH_Failure1.
    let (mut q, _) = connect(t.addr, HOSTNQN, 0, 0xFFFF);
    let e = q.authenticate(host_cfg(HOSTNQN, key(9), None), 1).unwrap_err();
    assert!(
        e.to_string()
            .contains("controller refused authentication: authentication failed"),
        "{e}"
    );
    assert!(is_auth_required(keep_alive(&mut q)), "still not authenticated");

    // A wrong controller key: the host refuses the controller (AUTH_Failure2).
    let (mut q, _) = connect(t.addr, HOSTNQN, 0, 0xFFFF);
    let e = q.authenticate(host_cfg(HOSTNQN, key(1), Some(key(8))), 1).unwrap_err();
    assert!(e.to_string().contains("host refused"), "{e}");
    assert!(is_auth_required(keep_alive(&mut q)));

    // The right keys still work afterwards.
    let (mut q, _) = connect(t.addr, HOSTNQN, 0, 0xFFFF);
    q.authenticate(host_cfg(HOSTNQN, key(1), Some(key(2))), 1).unwrap();
    q.enable(Duration::from_secs(5)).unwrap();
    keep_alive(&mut q).unwrap();
}

#[test]
fn a_replayed_reply_after_success_is_refused() {
    let t = target(Mode::Interrupt);
    t.target
        .subsystem(SUBNQN)
        .unwrap()
        .set_host_dhchap(HOSTNQN, key(1), None)
        .unwrap();
    let (mut q, _) = connect(t.addr, HOSTNQN, 0, 0xFFFF);
    let mut host = HostAuth::new(host_cfg(HOSTNQN, key(1), None), 7);
    q.auth_send(&host.negotiate()).unwrap();
    let challenge = q.auth_receive(4096).unwrap();
    let reply = host.on_message(&challenge, &mut OsEntropy).unwrap().unwrap();
    q.auth_send(&reply).unwrap();
    let success1 = q.auth_receive(4096).unwrap();
    assert_eq!(success1.len(), 4096, "the whole buffer comes back");
    assert!(host.on_message(&success1, &mut OsEntropy).unwrap().is_none());
    q.enable(Duration::from_secs(5)).unwrap();
    keep_alive(&mut q).unwrap();

    // The same Reply again: the command completes, the next Receive is
    // AUTH_Failure1 (incorrect message), and the queue must authenticate anew.
    q.auth_send(&reply).unwrap();
    let f = Message::decode(&q.auth_receive(4096).unwrap(), Framing::Padded).unwrap();
    assert!(
        matches!(f, Message::Failure1(x) if x.reason == FailureReason::IncorrectMessage && x.t_id == 7),
        "{f:?}"
    );
    assert!(is_auth_required(keep_alive(&mut q)));
}

#[test]
fn hosts_without_keys_are_not_asked_and_cannot_send_auth() {
    let t = target(Mode::Interrupt);
    t.target
        .subsystem(SUBNQN)
        .unwrap()
        .set_host_dhchap(HOSTNQN, key(1), None)
        .unwrap();
    let (mut q, dw0) = connect(t.addr, OTHER_HOST, 0, 0xFFFF);
    assert_eq!(dw0 & CONNECT_AUTHREQ_ATR, 0);
    q.enable(Duration::from_secs(5)).unwrap();
    keep_alive(&mut q).unwrap();
    let e = q.auth_send(&[0; 72]).unwrap_err();
    assert!(
        matches!(e, SyncError::Status { status: s, .. } if s.sc() == status::INVALID_FIELD.sc()),
        "{e}"
    );
    // Bad SECP/SPSP or a TL of 0 are Invalid Field for a host with keys too.
    let (mut q, _) = connect(t.addr, HOSTNQN, 0, 0xFFFF);
    let mut sqe = Sqe([0; 64]);
    lull_proto::fabrics::AuthCmd {
        secp: 0xEA,
        spsp0: 1,
        spsp1: 1,
        len: 72,
    }
    .write(&mut sqe, lull_proto::fabrics::fctype::AUTH_SEND);
    let e = q.call("Authentication Send", sqe, &[0; 72], 0).unwrap_err();
    assert!(matches!(e, SyncError::Status { status: s, .. } if s.sc() == status::INVALID_FIELD.sc()));
    // A Receive too short for the Challenge is Invalid Field and keeps it.
    let mut host = HostAuth::new(host_cfg(HOSTNQN, key(1), None), 1);
    q.auth_send(&host.negotiate()).unwrap();
    assert!(q.auth_receive(64).is_err());
    let challenge = q.auth_receive(4096).unwrap();
    assert!(matches!(
        Message::decode(&challenge, Framing::Padded),
        Ok(Message::Challenge(_))
    ));
}

/// The KATO the timeout tests connect with: the target times authentication
/// out after the controller's KATO (SPDK's rule), so a short KATO makes a
/// short test.
const KATO_MS: u32 = 1000;
/// What the close may take beyond the timeout: the timer's own slack and
/// this test's scheduling on a loaded machine.
const MARGIN: Duration = Duration::from_millis(1500);

fn kato() -> Duration {
    Duration::from_millis(u64::from(KATO_MS))
}

/// Authentication Send or Receive for a raw host; `len` is TL or AL.
fn auth_sqe(fct: u8, len: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    AuthCmd {
        secp: SECP_DHCHAP,
        spsp0: SPSP_DHCHAP,
        spsp1: SPSP_DHCHAP,
        len,
    }
    .write(&mut sqe, fct);
    if fct == fctype::AUTH_RECV {
        sqe.set_sgl1(Sgl {
            address: 0,
            length: len,
            id: sgl_id::TRANSPORT_DATA_BLOCK,
        });
    }
    sqe
}

/// A raw admin queue of `hostnqn` connected with `kato_ms`, asked to authenticate.
fn raw_admin(addr: std::net::SocketAddr, hostnqn: &str, kato_ms: u32) -> Host {
    let mut h = Host::connect(addr);
    h.icreq(0);
    let c = h.fabric_connect(0, SUBNQN, hostnqn, 0xFFFF, kato_ms);
    assert!(c.status.is_success(), "admin Connect: {}", c.status);
    assert_ne!(c.dw0 & CONNECT_AUTHREQ_ATR, 0, "ATR");
    h
}

/// Sends AUTH_Negotiate and takes the Challenge, then stops: a host gone
/// silent mid-transaction.
fn negotiate_only(h: &mut Host, cfg: Arc<AuthConfig>) -> Vec<u8> {
    let mut host = HostAuth::new(cfg, 1);
    let n = host.negotiate();
    assert!(
        h.command(auth_sqe(fctype::AUTH_SEND, n.len() as u32), &n)
            .1
            .status
            .is_success()
    );
    let (challenge, c) = h.command(auth_sqe(fctype::AUTH_RECV, 4096), &[]);
    assert!(c.status.is_success());
    assert!(matches!(
        Message::decode(&challenge, Framing::Padded),
        Ok(Message::Challenge(_))
    ));
    challenge
}

/// The CPU time all reactors have used, ns.
fn reactor_cpu(t: &Tgt) -> u64 {
    t.reactors.handles().iter().map(|h| h.stats().thread_cpu_ns).sum()
}

/// Keeps an admin queue alive from another thread until `stop`.
fn keep_alive_meanwhile(mut q: SyncQueue, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<SyncQueue> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            keep_alive(&mut q).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        q
    })
}

#[test]
fn a_host_that_never_authenticates_loses_its_queue_after_kato() {
    let t = target(Mode::Interrupt);
    let s = t.target.subsystem(SUBNQN).unwrap();
    s.set_host_dhchap(OTHER_HOST, key(1), None).unwrap();
    // HOSTNQN has no key: its healthy queues must not notice.
    let mut healthy = Healthy::new(&t);
    let controllers = t.target.controller_count();

    // One host silent after its Connect, one after the Challenge.
    let start = Instant::now();
    let mut silent = raw_admin(t.addr, OTHER_HOST, KATO_MS);
    let mut midway = raw_admin(t.addr, OTHER_HOST, KATO_MS);
    negotiate_only(&mut midway, host_cfg(OTHER_HOST, key(1), None));
    let challenged = Instant::now();
    assert_eq!(t.target.controller_count(), controllers + 2);
    let cpu = reactor_cpu(&t);

    silent.expect_closed(kato() + MARGIN);
    let took = start.elapsed();
    assert!(took >= kato(), "closed after {took:?}, before KATO");
    midway.expect_closed(kato() + MARGIN);
    let took = challenged.elapsed();
    assert!(took >= kato(), "closed {took:?} after the Challenge, before KATO");
    // The reactors slept meanwhile (a timer, not a polling loop): well
    // under 2 % of a core each over the second and more waited.
    let used = reactor_cpu(&t) - cpu;
    assert!(used < 40_000_000, "reactors used {} ms while waiting", used / 1_000_000);

    // Their controllers are gone (the target closed the sockets: the reads
    // above saw EOF); the other host's queues work.
    assert!(wait(|| t.target.controller_count() == controllers));
    healthy.check();
}

#[test]
fn an_io_queue_that_never_authenticates_is_closed_alone() {
    let t = target(Mode::Interrupt);
    let s = t.target.subsystem(SUBNQN).unwrap();
    s.set_host_dhchap(OTHER_HOST, key(1), None).unwrap();
    let cfg = host_cfg(OTHER_HOST, key(1), None);
    let mut admin = SyncQueue::connect(t.addr, Digests::default(), 8192, Duration::from_secs(10)).unwrap();
    let data = ConnectData {
        hostid: [0x11; 16],
        cntlid: 0xFFFF,
        subnqn: SUBNQN.into(),
        hostnqn: OTHER_HOST.into(),
    };
    let cntlid = admin.fabric_connect(0, 31, KATO_MS, &data).unwrap().dw0 as u16;
    admin.authenticate(cfg.clone(), 1).unwrap();
    admin.enable(Duration::from_secs(5)).unwrap();
    // KATO runs from CC.EN: keep-alives from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let alive = keep_alive_meanwhile(admin, stop.clone());
    let (mut io1, _) = connect(t.addr, OTHER_HOST, 1, cntlid);
    io1.authenticate(cfg.clone(), 2).unwrap();

    // QID 2 connects and says nothing.
    let start = Instant::now();
    let mut io2 = Host::connect(t.addr);
    io2.icreq(0);
    let c = io2.fabric_connect(2, SUBNQN, OTHER_HOST, cntlid, 0);
    assert!(c.status.is_success() && c.dw0 & CONNECT_AUTHREQ_ATR != 0);
    io2.expect_closed(kato() + MARGIN);
    assert!(start.elapsed() >= kato());

    // The controller and its other queues are untouched.
    let ctrl = t.target.controller(cntlid).expect("the controller stays");
    assert!(wait(|| ctrl.queue_list().iter().all(|q| q.qid != 2)));
    assert_eq!(ctrl.queue_list().len(), 2, "admin and QID 1 remain");
    read_block(&mut io1).unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut admin = alive.join().unwrap();
    keep_alive(&mut admin).unwrap();
}

#[test]
fn a_stalled_reauthentication_is_dropped_and_the_queue_stays_authenticated() {
    let t = target(Mode::Interrupt);
    let s = t.target.subsystem(SUBNQN).unwrap();
    s.set_host_dhchap(OTHER_HOST, key(1), None).unwrap();
    let cfg = host_cfg(OTHER_HOST, key(1), None);
    let mut admin = raw_admin(t.addr, OTHER_HOST, KATO_MS);
    // Authenticate, enable, then start a re-authentication and stall it.
    let mut host = HostAuth::new(cfg.clone(), 1);
    let n = host.negotiate();
    admin.command(auth_sqe(fctype::AUTH_SEND, n.len() as u32), &n);
    let (challenge, _) = admin.command(auth_sqe(fctype::AUTH_RECV, 4096), &[]);
    let reply = host.on_message(&challenge, &mut OsEntropy).unwrap().unwrap();
    admin.command(auth_sqe(fctype::AUTH_SEND, reply.len() as u32), &reply);
    let (success1, _) = admin.command(auth_sqe(fctype::AUTH_RECV, 4096), &[]);
    assert!(host.on_message(&success1, &mut OsEntropy).unwrap().is_none());
    assert!(
        admin
            .prop_set(lull_proto::fabrics::property::CC, 1 | (6 << 16) | (4 << 20))
            .status
            .is_success()
    );
    let challenge = negotiate_only(&mut admin, cfg.clone());
    let stalled = Instant::now();
    // Keep-alives meanwhile: the queue is authenticated, so they work.
    let keep = |h: &mut Host| {
        let mut sqe = Sqe([0; 64]);
        sqe.0[0] = admin_opc::KEEP_ALIVE;
        h.command(sqe, &[]).1
    };
    while stalled.elapsed() < kato() + MARGIN {
        assert!(
            keep(&mut admin).status.is_success(),
            "authenticated during the re-authentication"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The transaction was dropped: its Reply now comes out of turn.
    let mut late = HostAuth::new(cfg, 1);
    late.negotiate();
    let reply = late.on_message(&challenge, &mut OsEntropy).unwrap().unwrap();
    admin.command(auth_sqe(fctype::AUTH_SEND, reply.len() as u32), &reply);
    let (f, _) = admin.command(auth_sqe(fctype::AUTH_RECV, 4096), &[]);
    assert!(
        matches!(Message::decode(&f, Framing::Padded), Ok(Message::Failure1(x)) if x.reason == FailureReason::IncorrectMessage),
        "a late Reply is out of turn"
    );
}

#[test]
fn a_key_change_reaches_live_queues_at_their_next_transaction() {
    let t = target(Mode::Interrupt);
    let s = t.target.subsystem(SUBNQN).unwrap();
    s.set_host_dhchap(OTHER_HOST, key(1), Some(key(2))).unwrap();
    let (old, new) = (
        host_cfg(OTHER_HOST, key(1), Some(key(2))),
        host_cfg(OTHER_HOST, key(5), Some(key(6))),
    );
    let (mut admin, dw0) = connect(t.addr, OTHER_HOST, 0, 0xFFFF);
    admin.authenticate(old.clone(), 1).unwrap();
    admin.enable(Duration::from_secs(5)).unwrap();
    let cntlid = dw0 as u16;
    let (mut io, _) = connect(t.addr, OTHER_HOST, 1, cntlid);
    io.authenticate(old.clone(), 2).unwrap();

    // nvmf_subsystem_set_keys: queues authenticated stay so...
    s.set_host_dhchap(OTHER_HOST, key(5), Some(key(6))).unwrap();
    keep_alive(&mut admin).unwrap();
    read_block(&mut io).unwrap();
    // ...and their next transaction checks the new keys.
    io.authenticate(new.clone(), 3).unwrap();
    read_block(&mut io).unwrap();
    let e = admin.authenticate(old, 4).unwrap_err();
    assert!(e.to_string().contains("controller refused authentication"), "{e}");
    assert!(
        is_auth_required(keep_alive(&mut admin)),
        "the old keys failed: not authenticated"
    );
    read_block(&mut io).unwrap();
    admin.authenticate(new, 5).unwrap();
    keep_alive(&mut admin).unwrap();
    let ctrl = t.target.controller(cntlid).unwrap();
    assert_eq!(ctrl.authentications(), 4, "admin and I/O queue, each twice");

    // Keys removed: a live queue's next transaction fails.
    s.clear_host_dhchap(OTHER_HOST);
    let e = io
        .authenticate(host_cfg(OTHER_HOST, key(5), Some(key(6))), 6)
        .unwrap_err();
    assert!(e.to_string().contains("controller refused authentication"), "{e}");
}

#[test]
fn dh_work_leaves_the_reactor_serving_other_queues() {
    // One reactor: the authenticating queue and the busy one share it.
    let t = target_on(Mode::Interrupt, 1);
    t.target
        .subsystem(SUBNQN)
        .unwrap()
        .set_host_dhchap(OTHER_HOST, key(1), None)
        .unwrap();
    let mut healthy = Healthy::new(&t);
    // ffdhe6144 only: two exponentiations of a 6144-bit modulus, 30 ms in
    // a release build, far more in a debug one.
    let mut cfg = AuthConfig::new(key(1), None, OTHER_HOST, SUBNQN);
    cfg.dhgroups = vec![DhGroup::Ffdhe6144];
    let cfg = Arc::new(cfg);
    let addr = t.addr;
    let authenticating = std::thread::spawn(move || {
        let (mut q, _) = connect(addr, OTHER_HOST, 0, 0xFFFF);
        let start = Instant::now();
        for t_id in 1..=2 {
            q.authenticate(cfg.clone(), t_id).unwrap();
        }
        start.elapsed()
    });
    // Reads on the other queue meanwhile: none waits for the DH work.
    let mut slowest = Duration::ZERO;
    let mut reads = 0;
    while !authenticating.is_finished() {
        let t0 = Instant::now();
        let (_, c) = healthy.io.read(0, 8);
        assert!(c.status.is_success());
        slowest = slowest.max(t0.elapsed());
        reads += 1;
    }
    let dh = authenticating.join().unwrap();
    eprintln!("2 ffdhe6144 transactions took {dh:?}; {reads} reads meanwhile, the slowest {slowest:?}");
    // Two transactions are four exponentiations on the target (and four on
    // this host): a read that waited for one would take an eighth of it.
    assert!(reads > 10, "reads went on ({reads})");
    assert!(
        slowest < dh / 24,
        "a read took {slowest:?} while DH work took {dh:?}: the reactor was busy with it"
    );
}

#[test]
fn a_receive_sent_before_the_send_completes_waits_for_it() {
    // A host that does not wait for Authentication Send's completion before
    // its Receive: the Send's DH work is on the helper thread, and the
    // Receive must still see the Challenge it prepares.
    let t = target(Mode::Interrupt);
    t.target
        .subsystem(SUBNQN)
        .unwrap()
        .set_host_dhchap(OTHER_HOST, key(1), None)
        .unwrap();
    let mut h = raw_admin(t.addr, OTHER_HOST, 0);
    let mut host = HostAuth::new(host_cfg(OTHER_HOST, key(1), None), 1);
    let n = host.negotiate();
    let mut send = auth_sqe(fctype::AUTH_SEND, n.len() as u32);
    send.set_cid(100);
    send.set_sgl1(Sgl {
        address: 0,
        length: n.len() as u32,
        id: sgl_id::DATA_BLOCK_OFFSET,
    });
    let mut recv = auth_sqe(fctype::AUTH_RECV, 4096);
    recv.set_cid(101);
    let mut both = h.capsule_bytes(&send, &n);
    both.extend(h.capsule_bytes(&recv, &[]));
    h.send(&both);
    // In order: the Send's completion, then the Receive's data and completion.
    let mut order = Vec::new();
    let mut data = Vec::new();
    while order.len() < 2 {
        let p = h.recv().expect("a PDU");
        match lull_proto::pdu::PduType::from_u8(p.ch.pdu_type) {
            Some(lull_proto::pdu::PduType::C2HData) => {
                let d = p.data_header();
                let pdo = p.ch.pdo as usize;
                data.extend_from_slice(&p.bytes[pdo..pdo + d.datal as usize]);
                if p.ch.flags & lull_proto::pdu::flags::SUCCESS != 0 {
                    order.push(d.cccid);
                }
            }
            Some(lull_proto::pdu::PduType::CapsuleResp) => {
                let c = p.cqe();
                assert!(c.status.is_success(), "{}", c.status);
                order.push(c.cid);
            }
            other => panic!("unexpected PDU {other:?}"),
        }
    }
    assert_eq!(order, vec![100, 101]);
    assert!(
        matches!(Message::decode(&data, Framing::Padded), Ok(Message::Challenge(_))),
        "the Receive got the Challenge"
    );
}

#[test]
fn queues_closed_while_their_dh_work_is_away_leave_no_trace() {
    // Hosts that send an ffdhe8192 Negotiate and leave at once, several in
    // a row, so the helper thread holds the state machines of queues that
    // are gone (and a queue of them waits behind each other): the answers
    // are dropped, nothing panics, the controllers go, and a host that
    // authenticates afterwards is served.
    let t = target_on(Mode::Interrupt, 1);
    t.target
        .subsystem(SUBNQN)
        .unwrap()
        .set_host_dhchap(OTHER_HOST, key(1), None)
        .unwrap();
    let controllers = t.target.controller_count();
    let mut cfg = AuthConfig::new(key(1), None, OTHER_HOST, SUBNQN);
    cfg.dhgroups = vec![DhGroup::Ffdhe8192];
    let cfg = Arc::new(cfg);
    for i in 0..4u16 {
        let mut h = raw_admin(t.addr, OTHER_HOST, 0);
        let n = HostAuth::new(cfg.clone(), i + 1).negotiate();
        let mut send = auth_sqe(fctype::AUTH_SEND, n.len() as u32);
        send.set_sgl1(Sgl {
            address: 0,
            length: n.len() as u32,
            id: sgl_id::DATA_BLOCK_OFFSET,
        });
        // The Send and a Receive held behind it, then gone.
        let mut bytes = h.capsule_bytes(&send, &n);
        let mut recv = auth_sqe(fctype::AUTH_RECV, 4096);
        recv.set_cid(77);
        bytes.extend(h.capsule_bytes(&recv, &[]));
        h.send(&bytes);
        drop(h);
    }
    // A host with the null group authenticates meanwhile (its Send waits
    // behind the orphaned DH work on the one helper thread).
    let (mut q, _) = connect(t.addr, OTHER_HOST, 0, 0xFFFF);
    let mut null = AuthConfig::new(key(1), None, OTHER_HOST, SUBNQN);
    null.dhgroups = vec![DhGroup::Null];
    q.authenticate(Arc::new(null), 9).unwrap();
    drop(q);
    assert!(
        wait(|| t.target.controller_count() == controllers),
        "{} controllers left, {controllers} before",
        t.target.controller_count()
    );
    let panics: u64 = t.reactors.handles().iter().map(|h| h.stats().panics).sum();
    assert_eq!(panics, 0);
}
