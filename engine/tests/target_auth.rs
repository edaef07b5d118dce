//! DH-HMAC-CHAP in-band authentication on lull's target (NVMe Base 2.0
//! section 8.13), driven over TCP by a host queue running lull's host-side
//! state machine: Connect's ATR bit, commands refused until the queue
//! authenticates, uni- and bidirectional transactions on the admin and an
//! I/O queue, a wrong key, a replayed message after success.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{HOSTNQN, OTHER_HOST, SUBNQN, target};
use lull_proto::auth::host::HostAuth;
use lull_proto::auth::messages::{Framing, Message};
use lull_proto::auth::{AuthConfig, DhGroup, DhchapSecret, FailureReason, HashId, OsEntropy};
use lull_proto::fabrics::{CONNECT_AUTHREQ_ATR, ConnectData};
use lull_proto::nvme::{Sqe, admin_opc, io_opc, status};
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
