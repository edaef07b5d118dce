//! `lull perf --verify` against a scripted target that injects the
//! integrity faults of a broken target (a short read claimed whole, a
//! write "completed" before its data was asked for, C2HData completing a
//! write, a completion sharing a segment with a fatal PDU) and fails some
//! commands with a status: no wrong data passes as good, and exactly the
//! commands the target failed are counted as errors.

#[path = "../../engine/tests/fake/mod.rs"]
mod fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fake::{Cfg, Conn};
use lull_engine::initiator::{NvmeController, NvmeOptions, NvmeTrid};
use lull_perf::nvme_perf::{self, Rw, TargetCpu, Workload};
use lull_proto::nvme::{Cqe, Sqe, Status, io_opc, sct};
use lull_proto::pdu::{DataHeader, PduType, encode_capsule_resp, flags};
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};
use std::collections::VecDeque;

/// The subsystem the fake reports (used by the fake module).
pub const SUBNQN: &str = "nqn.2024-01.test:faults";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";

/// Data of the fake's pattern reads (used by the fake module; this test's
/// fake serves reads from its store instead).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Bytes of the namespace the workload uses.
const SIZE: usize = 1 << 20;
const BS: usize = 8192; // above the fake's 4096-byte in-capsule limit: writes by R2T
/// The command of each faulty association that gets the fault.
const FAULT_AT: u64 = 150;
/// Every this many commands, one fails with a DNR status (not executed).
const FAIL_EVERY: u64 = 37;
/// Commands the last (clean) association serves before the run is stopped.
const CLEAN: u64 = 400;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Half of a read's data, with LAST_PDU and SUCCESS.
    ShortRead,
    /// A successful CapsuleResp for a write before its R2T.
    EarlyWriteSuccess,
    /// An empty C2HData with SUCCESS for a write.
    C2hForWrite,
    /// A command served properly, its completion followed in the same
    /// segment by a C2HData for a CID not in flight.
    BatchedFatal,
}

impl Fault {
    /// Whether `opc` is a command this fault applies to.
    fn fits(self, opc: u8) -> bool {
        match self {
            Fault::ShortRead => opc == io_opc::READ,
            Fault::EarlyWriteSuccess | Fault::C2hForWrite => opc == io_opc::WRITE,
            Fault::BatchedFatal => true,
        }
    }

    /// The (FES, FEI) of the initiator's H2CTermReq.
    fn term(self) -> (u16, u32) {
        match self {
            Fault::ShortRead => (1, 1),
            Fault::EarlyWriteSuccess => (2, 0),
            Fault::C2hForWrite | Fault::BatchedFatal => (1, 8),
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    /// Commands failed with a status, counted here, independently of perf.
    failed: u64,
    /// Faults injected, with the initiator's answer.
    faults: Vec<(Fault, (u16, u32))>,
}

fn resp(c: &Conn, cid: u16, status: Status) -> Vec<u8> {
    let mut v = Vec::new();
    let cqe = Cqe {
        cid,
        status,
        ..Cqe::default()
    };
    encode_capsule_resp(&mut v, &cqe.encode(), c.d);
    v
}

/// The initiator's H2CTermReq (FES, FEI), after any commands and data it
/// sent before it read the fault; then the connection must close.
fn await_term(c: &mut Conn) -> (u16, u32) {
    loop {
        let p = c.recv().expect("fake: an H2CTermReq, got EOF");
        if p.is(PduType::CapsuleCmd) || p.is(PduType::H2CData) {
            continue;
        }
        assert!(p.is(PduType::H2CTermReq), "fake: expected H2CTermReq, got {:?}", p.ch);
        c.expect_eof(Duration::from_secs(2));
        return (
            u16::from_le_bytes([p.b[8], p.b[9]]),
            u32::from_le_bytes(p.b[10..14].try_into().unwrap()),
        );
    }
}

/// The next command: one that arrived while a write's data was awaited, or a new one.
fn next_capsule(c: &mut Conn, pending: &mut VecDeque<(Sqe, Vec<u8>)>) -> Option<(Sqe, Vec<u8>)> {
    pending.pop_front().or_else(|| c.recv_capsule())
}

/// A write's data, in-capsule or fetched with one R2T; capsules of other
/// commands arriving meanwhile (the initiator keeps several in flight) wait in `pending`.
fn write_data(c: &mut Conn, sqe: &Sqe, in_capsule: Vec<u8>, pending: &mut VecDeque<(Sqe, Vec<u8>)>) -> Vec<u8> {
    let len = sqe.sgl1().length as usize;
    if !in_capsule.is_empty() || len == 0 {
        return in_capsule;
    }
    let ttag = sqe.cid() ^ 0x5A5A;
    c.r2t(sqe.cid(), ttag, 0, len as u32);
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        let p = c.recv().expect("fake: H2CData");
        if p.is(PduType::CapsuleCmd) {
            pending.push_back((Sqe::from_bytes(&p.b[8..72]).unwrap(), p.data().to_vec()));
            continue;
        }
        assert!(p.is(PduType::H2CData), "fake: expected H2CData, got {:?}", p.ch);
        let h = DataHeader::parse(&p.b);
        assert_eq!((h.cccid, h.ttag, h.datao as usize), (sqe.cid(), ttag, got.len()));
        got.extend_from_slice(p.data());
    }
    got
}

/// Serves reads and writes from `store` until EOF, or until `fault` was
/// injected and answered; `stop` is set after `clean_limit` commands.
fn serve(c: &mut Conn, store: &mut [u8], tally: &mut Tally, fault: Option<Fault>, stop: &AtomicBool) {
    let mut n = 0u64;
    let mut pending = VecDeque::new();
    while let Some((sqe, data)) = next_capsule(c, &mut pending) {
        n += 1;
        let opc = sqe.opc();
        let lba = u64::from(sqe.cdw(10)) | u64::from(sqe.cdw(11)) << 32;
        let len = ((sqe.cdw(12) & 0xFFFF) as usize + 1) * 512;
        let at = lba as usize * 512;
        assert!(opc == io_opc::READ || opc == io_opc::WRITE, "fake: opcode {opc:#x}");
        assert_eq!(
            sqe.sgl1().length as usize,
            len,
            "fake: SGL length of a command of {len} bytes"
        );
        assert!(at + len <= store.len(), "fake: LBA {lba} outside the workload");
        if let Some(f) = fault
            && n >= FAULT_AT
            && f.fits(opc)
        {
            let bytes = match f {
                Fault::ShortRead => {
                    c.c2h_bytes(sqe.cid(), 0, &store[at..at + len / 2], flags::LAST_PDU | flags::SUCCESS)
                }
                Fault::EarlyWriteSuccess => resp(c, sqe.cid(), Status::SUCCESS),
                Fault::C2hForWrite => c.c2h_bytes(sqe.cid(), 0, &[], flags::LAST_PDU | flags::SUCCESS),
                Fault::BatchedFatal => {
                    let mut b = if opc == io_opc::READ {
                        c.c2h_bytes(sqe.cid(), 0, &store[at..at + len], flags::LAST_PDU | flags::SUCCESS)
                    } else {
                        let d = write_data(c, &sqe, data, &mut pending);
                        store[at..at + len].copy_from_slice(&d);
                        resp(c, sqe.cid(), Status::SUCCESS)
                    };
                    b.extend(c.c2h_bytes(0x0777, 0, &[0u8; 64], 0));
                    b
                }
            };
            c.send(&bytes);
            tally.faults.push((f, await_term(c)));
            return;
        }
        if n.is_multiple_of(FAIL_EVERY) {
            // Refused before anything is executed; DNR: not retried.
            let st = Status::new(sct::GENERIC, 0x06, true);
            let b = resp(c, sqe.cid(), st);
            c.send(&b);
            tally.failed += 1;
            continue;
        }
        if opc == io_opc::READ {
            let b = c.c2h_bytes(sqe.cid(), 0, &store[at..at + len], flags::LAST_PDU | flags::SUCCESS);
            c.send(&b);
        } else {
            let d = write_data(c, &sqe, data, &mut pending);
            assert_eq!(d.len(), len, "fake: a write carries all of its data");
            store[at..at + len].copy_from_slice(&d);
            c.respond(sqe.cid(), Status::SUCCESS, 0, 0);
        }
        if fault.is_none() && n == CLEAN {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

#[test]
fn verified_io_through_target_faults_reports_failures_and_never_wrong_data() {
    let stop = Arc::new(AtomicBool::new(false));
    let (l, addr) = fake::listen();
    let stop2 = stop.clone();
    let fake = std::thread::spawn(move || {
        let cfg = Cfg::default();
        let mut store = vec![0u8; SIZE];
        let mut tally = Tally::default();
        for fault in [
            Some(Fault::ShortRead),
            Some(Fault::EarlyWriteSuccess),
            Some(Fault::C2hForWrite),
            Some(Fault::BatchedFatal),
            None,
        ] {
            let admin = fake::admin(&l, cfg);
            let mut io = fake::io(&l, cfg);
            serve(&mut io, &mut store, &mut tally, fault, &stop2);
            drop(io);
            admin.join().unwrap();
        }
        tally
    });
    let c = CoreList::usable().unwrap();
    let core = *c.cores().last().unwrap();
    let reactors =
        Reactors::start(ReactorConfig::new(CoreList::try_from(vec![core]).unwrap()).mode(Mode::Interrupt)).unwrap();
    let opts = NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        reconnect_delay_sec: 1,
        ctrlr_loss_timeout_sec: 20,
        fast_io_fail_timeout_sec: 0,
        ..NvmeOptions::default()
    };
    let ctrlr = NvmeController::attach(
        "Fake0",
        NvmeTrid::new(addr, SUBNQN, HOSTNQN),
        opts,
        reactors.handles(),
        1,
    )
    .unwrap();
    let w = Workload {
        rw: Rw::RandRw,
        rwmixread: 50,
        bs: BS as u32,
        qd: 8,
        // Ended by the fake once its last association served CLEAN commands.
        time: Duration::from_secs(60),
        ramp: Duration::ZERO,
        nsid: 1,
        size: Some(SIZE as u64),
        verify: true,
        verify_state: None,
        flush_every: 0,
        rate: None,
    };
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    let resets = ctrlr.resets();
    ctrlr.detach();
    let tally = fake.join().expect("the fake target");
    println!("{r:?}\n{tally:?}");
    let faults: Vec<Fault> = tally.faults.iter().map(|f| f.0).collect();
    assert_eq!(faults.len(), 4, "every fault was injected: {tally:?}");
    for (f, term) in &tally.faults {
        assert_eq!(*term, f.term(), "{f:?}: the initiator's H2CTermReq (FES, FEI)");
    }
    assert_eq!(resets, 4, "one reconnect per fault");
    assert_eq!(r.verify_failures, 0, "wrong data: {:?}", r.first_error);
    assert!(r.verified_reads > 0, "{r:?}");
    assert!(tally.failed > 0);
    assert_eq!(
        r.errors, tally.failed,
        "exactly the commands the target failed are counted: {:?}",
        r.first_error
    );
    assert!(r.first_error.unwrap().contains("Internal Error"));
    reactors.shutdown().unwrap();
}
