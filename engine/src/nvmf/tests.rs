//! A controller driven with plain values: requests built as a host builds
//! them, answered by the same functions the queue calls, at instants the
//! test chooses. No socket and no reactor thread: code that takes a `Context` gets one that no loop runs (`Context::detached`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_proto::fabrics::{CONNECT_DATA_LEN, ConnectCmd, ConnectData, PropertyCmd, fctype, property};
use lull_proto::nvme::{Sgl, Sqe, Status, admin_opc, io_opc, sgl_id, status};
use lull_proto::target_queue::{QueueParams, Request, Response, TargetQueueConfig};

use crate::bdev::RamBdev;
use crate::nvmf::admin::{self, Outcome};
use crate::nvmf::connect::{self, Connected};
use crate::nvmf::ctrlr::Controller;
use crate::nvmf::request::QueueOrigin;
use crate::nvmf::subsystem::Subsystem;
use crate::nvmf::target::Target;

const SUBNQN: &str = "nqn.2024-01.io.lull:unit";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000aa";
/// The RAM namespace: 1 MiB of 4 KiB blocks.
const BLOCK: u32 = 4096;
const BLOCKS: u64 = 256;

fn origin() -> QueueOrigin {
    let listener: SocketAddr = "192.0.2.1:4420".parse().unwrap();
    QueueOrigin {
        peer: "192.0.2.9:50000".parse().unwrap(),
        listener,
        arrived_on: listener,
        io_in_capsule_data: 8192,
    }
}

/// A target with one subsystem (NSID 1: the RAM bdev) that `HOSTNQN` may
/// reach through `origin()`'s port, recorded as the subsystem's listener
/// without binding it.
fn target_with(ram: Arc<RamBdev>) -> Arc<Target> {
    let target = Target::new(TargetQueueConfig::default());
    let s = Subsystem::new(SUBNQN, "SN-UNIT", "lull unit").unwrap();
    s.add_host(HOSTNQN).unwrap();
    s.add_namespace(1, ram).unwrap();
    s.access().listeners.push(origin().listener);
    target.add_subsystem(s).unwrap();
    target
}

fn ram() -> Arc<RamBdev> {
    Arc::new(RamBdev::new("Ram0", BLOCKS * u64::from(BLOCK), BLOCK).unwrap())
}

fn request(sqe: Sqe, data: Vec<u8>, c2h_len: u32) -> Request {
    Request { sqe, data, c2h_len }
}

fn connect_request(cid: u16, qid: u16, sqsize: u16, kato_ms: u32, cntlid: u16) -> Request {
    let mut sqe = Sqe([0; 64]);
    ConnectCmd {
        recfmt: 0,
        qid,
        sqsize,
        cattr: 0,
        kato: kato_ms,
    }
    .write(&mut sqe);
    sqe.set_cid(cid);
    let data = ConnectData {
        hostid: [0xAA; 16],
        cntlid,
        subnqn: SUBNQN.to_string(),
        hostnqn: HOSTNQN.to_string(),
    }
    .encode();
    assert_eq!(data.len(), CONNECT_DATA_LEN);
    request(sqe, data.to_vec(), 0)
}

fn property_set_cc(cid: u16, cc: u32) -> Request {
    let mut sqe = Sqe([0; 64]);
    PropertyCmd {
        size: 4,
        offset: property::CC,
        value: u64::from(cc),
    }
    .write(&mut sqe, fctype::PROPERTY_SET);
    sqe.set_cid(cid);
    request(sqe, Vec::new(), 0)
}

fn admin_sqe(cid: u16, opc: u8, nsid: u32, cdw10: u32, cdw11: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.set_cid(cid);
    sqe.set_cdw(1, nsid);
    sqe.set_cdw(10, cdw10);
    sqe.set_cdw(11, cdw11);
    sqe
}

fn respond(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Respond(r) => r,
        other => panic!("expected a response now, got {other:?}"),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Connects an admin queue at `t0` and enables the controller (CC.EN 1,
/// IOSQES 6, IOCQES 4).
fn enabled_controller(target: &Target, t0: Instant, kato_ms: u32) -> Arc<Controller> {
    let Connected {
        ctrl,
        qid,
        auth,
        response,
    } = connect::connect(target, &origin(), &connect_request(1, 0, 31, kato_ms, 0xFFFF), t0).unwrap();
    assert_eq!(qid, 0);
    assert!(auth.is_none(), "the host has no DH-HMAC-CHAP key");
    assert_eq!(response.cqe.status, Status::SUCCESS);
    let cc = 1 | 6 << 16 | 4 << 20;
    let r = connect::fabrics(target, &ctrl, 0, &property_set_cc(2, cc), t0);
    assert_eq!((r.cqe.cid, r.cqe.status), (2, Status::SUCCESS));
    ctrl
}

#[test]
fn a_controller_connects_identifies_and_takes_features_from_plain_values() {
    let target = target_with(ram());
    let t0 = Instant::now();

    // Connect (admin queue, SQSIZE 31, KATO 10 s): a new controller, whose
    // CNTLID the completion's DW0 carries (NVMe-oF 1.1 figure 22), and the
    // queue's parameters for the transport.
    let c = connect::connect(&target, &origin(), &connect_request(1, 0, 31, 10_000, 0xFFFF), t0).unwrap();
    let ctrl = c.ctrl;
    assert_eq!(c.response.cqe.dw0 & 0xFFFF, u32::from(ctrl.cntlid));
    assert_eq!(
        c.response.connected,
        Some(QueueParams {
            qid: 0,
            sq_entries: 32,
            sq_flow_control_disabled: false,
        })
    );
    assert_eq!(target.controller(ctrl.cntlid).map(|x| x.cntlid), Some(ctrl.cntlid));

    // Before CC.EN, admin commands are a Command Sequence Error.
    let identify_ctrl = request(admin_sqe(3, admin_opc::IDENTIFY, 0, 0x01, 0), Vec::new(), 4096);
    let r = respond(admin::execute(&target, &origin(), &ctrl, &identify_ctrl, t0));
    assert_eq!(r.cqe.status, status::COMMAND_SEQUENCE_ERROR.with_dnr());

    // Property Set CC.EN = 1 (IOSQES 6, IOCQES 4): CSTS.RDY follows.
    let r = connect::fabrics(&target, &ctrl, 0, &property_set_cc(4, 1 | 6 << 16 | 4 << 20), t0);
    assert_eq!(r.cqe.status, Status::SUCCESS);
    assert!(ctrl.is_ready());
    assert_eq!(ctrl.csts() & 1, 1, "CSTS.RDY");

    // Identify Controller (CNS 01h; NVMe Base 2.0 figure 275).
    let r = respond(admin::execute(&target, &origin(), &ctrl, &identify_ctrl, t0));
    assert_eq!((r.cqe.cid, r.cqe.status), (3, Status::SUCCESS));
    let id = &r.data;
    assert_eq!(id.len(), 4096);
    assert_eq!(le16(id, 78), ctrl.cntlid, "CNTLID, bytes 79:78");
    // MDTS, byte 77: 2^MDTS units of CAP.MPSMIN (4 KiB); lull's largest
    // transfer is 128 KiB = 32 x 4 KiB = 2^5.
    assert_eq!(id[77], 5, "MDTS");
    assert_eq!(le32(id, 516), 1024, "NN, bytes 519:516");
    assert_eq!(le32(id, 80), 0x0002_0000, "VER 2.0, bytes 83:80");
    assert_eq!((id[512], id[513]), (0x66, 0x44), "SQES, CQES");
    // IOCCSZ, bytes 1795:1792: 16-byte units of the SQE plus in-capsule data.
    assert_eq!(le32(id, 1792), (64 + 8192) / 16, "IOCCSZ");
    assert_eq!(
        &id[768..768 + SUBNQN.len()],
        SUBNQN.as_bytes(),
        "SUBNQN, bytes 1023:768"
    );
    assert_eq!(id[111], 1, "CNTRLTYPE: I/O controller");

    // Identify Namespace (CNS 00h, NSID 1; NVM Command Set 1.0 figure 97).
    let identify_ns = request(admin_sqe(5, admin_opc::IDENTIFY, 1, 0x00, 0), Vec::new(), 4096);
    let r = respond(admin::execute(&target, &origin(), &ctrl, &identify_ns, t0));
    assert_eq!(r.cqe.status, Status::SUCCESS);
    let ns = &r.data;
    assert_eq!(le64(ns, 0), 1 << 20 >> 12, "NSZE: 1 MiB of 4 KiB blocks");
    assert_eq!(le64(ns, 8), 256, "NCAP");
    assert_eq!(ns[26] & 0xF, 0, "FLBAS: format 0");
    assert_eq!(le32(ns, 128) >> 16 & 0xFF, 12, "LBAF0 LBADS: 2^12 bytes");
    // An NSID beyond NN is Invalid Namespace; a valid inactive one reads as zeroes.
    let r = respond(admin::execute(
        &target,
        &origin(),
        &ctrl,
        &request(admin_sqe(6, admin_opc::IDENTIFY, 2000, 0x00, 0), Vec::new(), 4096),
        t0,
    ));
    assert_eq!(r.cqe.status, status::INVALID_NAMESPACE.with_dnr());
    let r = respond(admin::execute(
        &target,
        &origin(),
        &ctrl,
        &request(admin_sqe(7, admin_opc::IDENTIFY, 9, 0x00, 0), Vec::new(), 4096),
        t0,
    ));
    assert!(r.cqe.status.is_success() && r.data.iter().all(|&b| b == 0));

    // Set Features Number of Queues (FID 07h): NSQR 3, NCQR 7 (0's based)
    // are granted as the larger, 7, in both halves of DW0; Get reads it back.
    let set_nq = request(
        admin_sqe(8, admin_opc::SET_FEATURES, 0, 0x07, 7 << 16 | 3),
        Vec::new(),
        0,
    );
    let r = respond(admin::execute(&target, &origin(), &ctrl, &set_nq, t0));
    assert_eq!((r.cqe.status, r.cqe.dw0), (Status::SUCCESS, 7 << 16 | 7));
    let get_nq = request(admin_sqe(9, admin_opc::GET_FEATURES, 0, 0x07, 0), Vec::new(), 0);
    let r = respond(admin::execute(&target, &origin(), &ctrl, &get_nq, t0));
    assert_eq!(r.cqe.dw0, 7 << 16 | 7);
    // More than max_io_qpairs_per_ctrlr (127 by default) asked: 127 granted (126 0's based).
    let set_nq = request(
        admin_sqe(10, admin_opc::SET_FEATURES, 0, 0x07, 500 << 16 | 500),
        Vec::new(),
        0,
    );
    let r = respond(admin::execute(&target, &origin(), &ctrl, &set_nq, t0));
    assert_eq!(r.cqe.dw0, 126 << 16 | 126);
    // FFFFh is not a count.
    let set_nq = request(admin_sqe(11, admin_opc::SET_FEATURES, 0, 0x07, 0xFFFF), Vec::new(), 0);
    let r = respond(admin::execute(&target, &origin(), &ctrl, &set_nq, t0));
    assert_eq!(r.cqe.status, status::INVALID_FIELD.with_dnr());

    // Set Features Keep Alive Timer (FID 0Fh) to 5 s at t1: the queue is
    // asked to restart its timer, and the deadline counts from t1.
    let t1 = t0 + Duration::from_secs(3);
    let set_kato = request(admin_sqe(12, admin_opc::SET_FEATURES, 0, 0x0F, 5000), Vec::new(), 0);
    match admin::execute(&target, &origin(), &ctrl, &set_kato, t1) {
        Outcome::RespondAndRearm(r, kato) => {
            assert_eq!((r.cqe.cid, r.cqe.status), (12, Status::SUCCESS));
            assert_eq!(kato, Duration::from_secs(5));
        }
        other => panic!("expected the timer to be restarted, got {other:?}"),
    }
    let get_kato = request(admin_sqe(13, admin_opc::GET_FEATURES, 0, 0x0F, 0), Vec::new(), 0);
    assert_eq!(
        respond(admin::execute(&target, &origin(), &ctrl, &get_kato, t1))
            .cqe
            .dw0,
        5000
    );
    assert_eq!(
        ctrl.keep_alive_expired(t1 + Duration::from_secs(5)),
        None,
        "KATO itself is not past it"
    );
    assert_eq!(
        ctrl.keep_alive_expired(t1 + Duration::from_millis(5001)),
        Some(Duration::from_secs(5))
    );
    // A Keep Alive at t2 moves the deadline.
    let t2 = t1 + Duration::from_secs(4);
    let keep_alive = request(admin_sqe(14, admin_opc::KEEP_ALIVE, 0, 0, 0), Vec::new(), 0);
    assert_eq!(
        respond(admin::execute(&target, &origin(), &ctrl, &keep_alive, t2))
            .cqe
            .status,
        Status::SUCCESS
    );
    assert_eq!(ctrl.keep_alive_expired(t1 + Duration::from_millis(5001)), None);
    assert!(ctrl.keep_alive_expired(t2 + Duration::from_millis(5001)).is_some());
    // A KATO above kato_max_ms (1 hour) is refused.
    let too_long = request(
        admin_sqe(15, admin_opc::SET_FEATURES, 0, 0x0F, 3_600_001),
        Vec::new(),
        0,
    );
    let r = respond(admin::execute(&target, &origin(), &ctrl, &too_long, t2));
    assert_eq!(r.cqe.status, status::INVALID_FIELD.with_dnr());

    // An I/O queue joins the controller within the queues granted (127
    // after the last Set Features): QID 1 does, QID 200 is beyond them.
    let io = connect::connect(&target, &origin(), &connect_request(1, 1, 127, 0, ctrl.cntlid), t2).unwrap();
    assert_eq!(io.response.connected.map(|p| (p.qid, p.sq_entries)), Some((1, 128)));
    assert!(Arc::ptr_eq(&io.ctrl, &ctrl));
    let refused = connect::connect(&target, &origin(), &connect_request(1, 200, 127, 0, ctrl.cntlid), t2);
    assert_eq!(
        refused.err().map(|r| r.cqe.status),
        Some(status::INVALID_QUEUE_IDENTIFIER.with_dnr())
    );
}

#[test]
fn a_controller_never_enabled_gets_the_grace_period_before_kato() {
    let target = target_with(ram());
    let t0 = Instant::now();
    let c = connect::connect(&target, &origin(), &connect_request(1, 0, 31, 5000, 0xFFFF), t0).unwrap();
    // CC.EN 0: only NOT_ENABLED_GRACE (60 s) without a Keep Alive tears it down.
    assert_eq!(c.ctrl.keep_alive_expired(t0 + Duration::from_secs(6)), None);
    assert_eq!(
        c.ctrl.keep_alive_expired(t0 + Duration::from_secs(61)),
        Some(Duration::from_secs(5))
    );
    // Enabled: KATO proper, from CC.EN.
    let t1 = t0 + Duration::from_secs(10);
    let r = connect::fabrics(&target, &c.ctrl, 0, &property_set_cc(2, 1 | 6 << 16 | 4 << 20), t1);
    assert!(r.cqe.status.is_success());
    assert_eq!(c.ctrl.keep_alive_expired(t1 + Duration::from_secs(5)), None);
    assert!(c.ctrl.keep_alive_expired(t1 + Duration::from_secs(6)).is_some());
}

#[test]
fn asynchronous_events_wait_for_an_aer_and_an_aer_for_an_event() {
    let target = target_with(ram());
    let t0 = Instant::now();
    let ctrl = enabled_controller(&target, t0, 0);
    let delivered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = delivered.clone();
    ctrl.set_event_sink(Arc::new(move |dw0| {
        sink.lock().unwrap().push(dw0);
        true
    }));
    // Namespace Attribute Notices enabled (AEC bit 8).
    let aec = request(admin_sqe(3, admin_opc::SET_FEATURES, 0, 0x0B, 1 << 8), Vec::new(), 0);
    assert!(
        respond(admin::execute(&target, &origin(), &ctrl, &aec, t0))
            .cqe
            .status
            .is_success()
    );
    // An AER is held until an event.
    let aer = request(admin_sqe(4, admin_opc::ASYNC_EVENT_REQUEST, 0, 0, 0), Vec::new(), 0);
    assert!(matches!(
        admin::execute(&target, &origin(), &ctrl, &aer, t0),
        Outcome::Held
    ));
    // A namespace change is one notice (type 2h, log page 04h: DW0 0004_0002h)...
    ctrl.namespace_changed(1);
    ctrl.namespace_changed(2);
    assert_eq!(
        *delivered.lock().unwrap(),
        [0x0004_0002],
        "masked until the log page is read"
    );
    // ...which completes the held AER once it reaches the admin queue.
    assert_eq!(ctrl.take_aer_for(0x0004_0002), Some(4));
    // Log page 04h lists both NSIDs, and reading it ends the mask.
    let log = request(
        admin_sqe(5, admin_opc::GET_LOG_PAGE, 0, 0x04 | 1023 << 16, 0),
        Vec::new(),
        4096,
    );
    let r = respond(admin::execute(&target, &origin(), &ctrl, &log, t0));
    assert_eq!((le32(&r.data, 0), le32(&r.data, 4), le32(&r.data, 8)), (1, 2, 0));
    ctrl.namespace_changed(3);
    assert_eq!(delivered.lock().unwrap().len(), 2);
    // No AER outstanding: the event waits, and the next AER takes it at once.
    assert_eq!(ctrl.take_aer_for(0x0004_0002), None);
    let aer = request(admin_sqe(6, admin_opc::ASYNC_EVENT_REQUEST, 0, 0, 0), Vec::new(), 0);
    let r = respond(admin::execute(&target, &origin(), &ctrl, &aer, t0));
    assert_eq!((r.cqe.cid, r.cqe.dw0), (6, 0x0004_0002));
    // AERL 3 (0's based): a fifth outstanding one exceeds the limit.
    for cid in 10..14 {
        let aer = request(admin_sqe(cid, admin_opc::ASYNC_EVENT_REQUEST, 0, 0, 0), Vec::new(), 0);
        assert!(matches!(
            admin::execute(&target, &origin(), &ctrl, &aer, t0),
            Outcome::Held
        ));
    }
    let aer = request(admin_sqe(14, admin_opc::ASYNC_EVENT_REQUEST, 0, 0, 0), Vec::new(), 0);
    let r = respond(admin::execute(&target, &origin(), &ctrl, &aer, t0));
    assert_eq!(r.cqe.status, status::AER_LIMIT_EXCEEDED);
}

/// A Read of `blocks` blocks at `slba` with a transport SGL of `len` bytes.
fn read_request(cid: u16, slba: u64, blocks: u32, len: u32) -> Request {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = io_opc::READ;
    sqe.set_cid(cid);
    sqe.set_cdw(1, 1);
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, blocks - 1);
    sqe.set_sgl1(Sgl {
        address: 0,
        length: len,
        id: sgl_id::TRANSPORT_DATA_BLOCK,
    });
    request(sqe, Vec::new(), len)
}

/// The Read goes through the queue's own dispatch (`ControllerQueue`) and
/// its `IoQueue`, with plain values: a `Context` that no reactor runs
/// (`Context::detached`), a detached `Responder` that keeps the answers, no
/// socket and no thread. Nothing waits on a loop: the RAM bdev completes
/// inside `submit`, so every answer is there when `on_command` returns.
#[test]
fn a_read_through_the_queue_returns_what_the_bdev_holds() {
    use lull_reactor::Context;
    use lull_transport::conn::{QueueHandler, Responder};

    use crate::nvmf::queue::ControllerQueue;

    let ram = ram();
    // Blocks 2 and 3 written through the RAM bdev's blocking write (not the
    // I/O path under test); the rest stays zero.
    let pattern = |i: u32| (i * 7 + 3) as u8;
    let written: Vec<u8> = (0..2 * BLOCK).map(pattern).collect();
    ram.write(2, &written).unwrap();
    let target = target_with(ram);
    // A Context no reactor runs: nothing here needs the loop, since the RAM
    // bdev completes inside `submit` and the detached Responder keeps the answers.
    let cx = &mut Context::detached().unwrap();
    let resp = Responder::detached();
    let mut admin_q = ControllerQueue::new(target.clone(), origin());
    admin_q.on_command(cx, connect_request(1, 0, 31, 0, 0xFFFF), &resp);
    admin_q.on_command(cx, property_set_cc(2, 1 | 6 << 16 | 4 << 20), &resp);
    let cntlid = resp.take_responses()[0].cqe.dw0 as u16;
    let mut io_q = ControllerQueue::new(target.clone(), origin());
    io_q.on_command(cx, connect_request(1, 1, 127, 0, cntlid), &resp);
    io_q.on_command(cx, read_request(7, 2, 2, 2 * BLOCK), &resp);
    // Beyond the namespace's last block: LBA Out of Range.
    io_q.on_command(cx, read_request(8, BLOCKS - 1, 2, 2 * BLOCK), &resp);
    // 16 KiB from block 0: at ATTACH_MIN, on a connection that would copy a
    // source into its send buffer (a detached responder says so), the data
    // comes in a buffer of its own, sent from where it is.
    io_q.on_command(cx, read_request(9, 0, 4, 4 * BLOCK), &resp);
    let got = resp.take_responses();
    drop((admin_q, io_q));
    let codes: Vec<(u16, Status)> = got.iter().map(|r| (r.cqe.cid, r.cqe.status)).collect();
    assert_eq!(
        codes,
        [
            (1, Status::SUCCESS),
            (7, Status::SUCCESS),
            (8, status::LBA_OUT_OF_RANGE.with_dnr()),
            (9, Status::SUCCESS)
        ]
    );
    assert_eq!(got[0].connected.map(|p| p.qid), Some(1), "the I/O queue's Connect");
    // The RAM bdev's Read is answered with its memory as the source, read
    // when the PDU is sent (here: when the test reads it).
    assert!(got[1].source.is_some(), "a small read of RAM is not buffered");
    let data = got[1].data_bytes().unwrap();
    assert_eq!(data.len(), 2 * BLOCK as usize);
    for (i, b) in data.iter().enumerate() {
        assert_eq!(*b, pattern(i as u32), "byte {i} of the blocks written");
    }
    assert!(got[2].data.is_empty() && got[2].source.is_none());
    assert!(!resp.sends_lent_reads());
    assert_eq!(4 * BLOCK as usize, lull_proto::target_queue::ATTACH_MIN);
    assert!(got[3].source.is_none(), "16 KiB on a copying connection: a buffer");
    let mut want = vec![0u8; 4 * BLOCK as usize];
    want[2 * BLOCK as usize..].copy_from_slice(&written);
    assert!(got[3].data == want, "blocks 0-1 zero, 2-3 as written");
    assert_eq!(
        target.controller_count(),
        0,
        "the admin queue's end took the controller"
    );
}
