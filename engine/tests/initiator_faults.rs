//! lull's initiator against a scripted FAKE target speaking raw NVMe/TCP on
//! loopback: the initiator fault cases B03 (a target that stops reading)
//! and B21-B25 (malformed PDUs from the target) over real sockets, plus a
//! target that drops a fresh association while it is being installed.
//!
//! The fake answers the admin bring-up the initiator performs (Connect,
//! Property Get/Set, Identify, Set Features, Keep Alive; AERs are held
//! forever) on a thread of its own, accepts the I/O queue, and then runs
//! the case's script on the I/O queue's socket.
//!
//! Then the integrity faults of a hostile or broken target: completions
//! that cannot be legitimate yet (a stale or duplicated CapsuleResp for a
//! reused CID, success before the data moved), short reads, data PDUs for
//! the wrong direction, a completion sharing a batch with a fatal PDU, a
//! controller that stops answering Keep Alive, a FIN on an idle queue
//! polled on a timer, and namespaces changed while the association was down.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{HOSTNQN, SUBNQN, pattern};
use fake::{Cfg, Conn};
use lull_engine::initiator::{CtrlrState, IoError, NvmeController, NvmeOptions, NvmeTrid};
use lull_proto::host_queue::Completion;
use lull_proto::nvme::{Sqe, io_opc, status};
use lull_proto::pdu::{PduType, flags};
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

type Res = Result<Completion, IoError>;

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(10);

mod fake;

/// A fake target doing the admin bring-up and accepting one I/O queue,
/// then running `script` on the I/O queue.
fn fake_target<T: Send + 'static>(
    cfg: Cfg,
    script: impl FnOnce(&mut Conn) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let (l, addr) = fake::listen();
    let h = std::thread::spawn(move || {
        let _admin = fake::admin(&l, cfg);
        let mut io = fake::io(&l, cfg);
        script(&mut io)
    });
    (addr, h)
}

fn initiator(mode: Mode) -> Reactors {
    let usable = CoreList::usable().unwrap();
    let core = *usable.cores().last().unwrap();
    Reactors::start(ReactorConfig::new(CoreList::try_from(vec![core]).unwrap()).mode(mode)).unwrap()
}

fn opts(ioq_us: u64) -> NvmeOptions {
    NvmeOptions {
        nvme_ioq_poll_period_us: ioq_us,
        nvme_adminq_poll_period_us: 1000,
        keep_alive_timeout_ms: 10_000,
        ..Default::default()
    }
    .no_reconnect()
}

fn attach(addr: SocketAddr, o: NvmeOptions, r: &Reactors) -> NvmeController {
    NvmeController::attach("Fake0", NvmeTrid::new(addr, SUBNQN, HOSTNQN), o, r.handles(), 1)
        .unwrap_or_else(|e| panic!("attach to the fake: {e}"))
}

fn rw_sqe(opc: u8, slba: u64, blocks: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.0[4..8].copy_from_slice(&1u32.to_le_bytes());
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(11, (slba >> 32) as u32);
    sqe.set_cdw(12, blocks - 1);
    sqe
}

/// Submits on local queue 0 of the controller's reactor; the result goes to `tx`.
fn submit(c: &NvmeController, sqe: Sqe, write: Vec<u8>, read_len: u32, tag: u64, tx: &mpsc::Sender<(u64, Res)>) {
    let c2 = c.clone();
    let tx = tx.clone();
    c.reactors()[0]
        .try_send(move |cx| {
            c2.submit(
                cx,
                0,
                sqe,
                write,
                read_len,
                Box::new(move |_cx, r| {
                    let _ = tx.send((tag, r));
                }),
            )
        })
        .expect("the initiator reactor takes the submission");
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- B03 ---------------------------------------------------------------

#[test]
fn b03_writes_progress_while_the_target_does_not_read() {
    for period in [0u64, 1000] {
        let cfg = Cfg {
            ioccsz: 4, // no in-capsule data: every write (and the I/O Connect) by R2T
            maxh2cdata: 32_768,
            io_rcvbuf: Some(4096),
            ..Cfg::default()
        };
        const N: usize = 64;
        const LEN: usize = 128 * 1024;
        let (addr, fake) = fake_target(cfg, |io| {
            // Not reading for 200 ms while the initiator submits.
            std::thread::sleep(Duration::from_millis(200));
            let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
            // cid -> (slba, len, ttag, bytes so far)
            let mut open: std::collections::HashMap<u16, (u64, usize, u16, Vec<u8>)> = Default::default();
            let mut next_ttag = 0x100u16;
            while got.len() < N {
                let p = io.recv().expect("fake: the initiator closed during B03");
                if p.is(PduType::CapsuleCmd) {
                    let sqe = Sqe::from_bytes(&p.b[8..72]).unwrap();
                    assert_eq!(sqe.opc(), io_opc::WRITE);
                    assert!(p.data().is_empty(), "no in-capsule data with IOCCSZ 4");
                    let len = sqe.sgl1().length as usize;
                    assert_eq!(len, LEN);
                    let slba = u64::from(sqe.cdw(10)) | u64::from(sqe.cdw(11)) << 32;
                    next_ttag += 1;
                    assert!(open.insert(sqe.cid(), (slba, len, next_ttag, Vec::new())).is_none());
                    io.r2t(sqe.cid(), next_ttag, 0, len as u32);
                } else {
                    assert!(p.is(PduType::H2CData), "fake: unexpected {:?}", p.ch);
                    let h = lull_proto::pdu::DataHeader::parse(&p.b);
                    let (_, len, ttag, buf) = open.get_mut(&h.cccid).expect("H2CData for an open write");
                    assert_eq!(h.ttag, *ttag, "TTAG echoed");
                    assert_eq!(h.datao as usize, buf.len(), "contiguous DATAO");
                    assert!(h.datal as usize <= 32_768, "DATAL within MAXH2CDATA");
                    buf.extend_from_slice(p.data());
                    let last = p.ch.flags & flags::LAST_PDU != 0;
                    assert_eq!(last, buf.len() == *len, "LAST_PDU on the last H2CData only");
                    if last {
                        let (slba, _, _, buf) = open.remove(&h.cccid).unwrap();
                        got.push((slba, buf));
                        io.respond(h.cccid, lull_proto::nvme::Status::SUCCESS, 0, 0);
                    }
                }
            }
            got
        });
        let r = initiator(Mode::Interrupt);
        let c = attach(addr, opts(period), &r);
        assert_eq!(c.info().in_capsule_bytes, 0);
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        for i in 0..N as u64 {
            submit(
                &c,
                rw_sqe(io_opc::WRITE, i * 256, 256),
                pattern(LEN, i as u8),
                0,
                i,
                &tx,
            );
        }
        let mut seen = [false; N];
        let mut worst = Duration::ZERO;
        for _ in 0..N {
            let (tag, res) = rx
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("period {period}: a write made no progress"));
            assert!(res.is_ok(), "period {period}: write {tag}: {:?}", res.err());
            assert!(!std::mem::replace(&mut seen[tag as usize], true), "write {tag} twice");
            worst = worst.max(t0.elapsed());
        }
        let got = fake.join().expect("the fake target");
        println!(
            "B03 nvme_ioq_poll_period_us {period}: {N} x 128 KiB writes done in {worst:?} (the fake slept 200 ms)"
        );
        assert!(worst < Duration::from_secs(5), "took {worst:?}");
        assert_eq!(got.len(), N);
        for (slba, data) in got {
            assert!(
                data == pattern(LEN, (slba / 256) as u8),
                "the fake received other bytes for LBA {slba}"
            );
        }
        c.detach();
        r.shutdown().unwrap();
    }
}

// ---- B21-B25: one malformed PDU on a live I/O queue ----------------------

/// What the case expects from the initiator on the wire.
#[derive(Clone, Copy, Debug)]
enum Wire {
    /// An H2CTermReq with (FES, FEI), then the socket closed.
    Term(u16, u32),
    /// As `Term`, after at most one H2CData for the command (an R2T the
    /// initiator accepted before the bad one).
    TermAfterData(u16, u32),
    /// Nothing at all (never answer a C2HTermReq), the socket closed at once.
    Silent,
}

/// The command the initiator has outstanding when the fault comes.
#[derive(Clone, Copy, Debug)]
enum Io {
    /// 128 KiB read.
    Read,
    /// 8 KiB write (by R2T: above the fake's 4096-byte in-capsule limit).
    Write,
}

struct Case {
    name: &'static str,
    hdgst: bool,
    io: Io,
    /// The bytes the fake sends after receiving the command (CID given).
    fault: fn(&Conn, u16) -> Vec<u8>,
    wire: Wire,
}

const READ_LEN: usize = 0x20000;
const WRITE_LEN: usize = 0x2000;
/// A CID the initiator cannot have in flight (its CIDs are below the queue depth).
const STRANGER: u16 = 0x0777;

fn r2t(c: &Conn, cid: u16, r2to: u32, r2tl: u32) -> Vec<u8> {
    let mut v = Vec::new();
    lull_proto::pdu::encode_r2t(&mut v, cid, 1, r2to, r2tl, c.d);
    v
}

fn cases() -> Vec<Case> {
    vec![
        // B21: a header length that does not match the PDU type.
        Case {
            name: "B21 CapsuleResp HLEN 0xFF with header digest",
            hdgst: true,
            io: Io::Read,
            fault: |_, cid| {
                let mut b = vec![0x05, 0x01, 0xFF, 0x00, 0x1C, 0x00, 0x00, 0x00];
                let mut cqe = [0u8; 16];
                cqe[12..14].copy_from_slice(&cid.to_le_bytes());
                b.extend_from_slice(&cqe);
                b.extend_from_slice(&[0u8; 4]);
                b
            },
            wire: Wire::Term(1, 2),
        },
        Case {
            name: "B21 C2HData HLEN 0x10",
            hdgst: false,
            io: Io::Read,
            fault: |_, _| [&[0x07u8, 0x00, 0x10, 0x10, 0x10, 0, 0, 0][..], &[0u8; 8]].concat(),
            wire: Wire::Term(1, 2),
        },
        Case {
            name: "B21 R2T HLEN 0x80",
            hdgst: false,
            io: Io::Write,
            fault: |_, _| [&[0x09u8, 0x00, 0x80, 0x00, 0x80, 0, 0, 0][..], &[0u8; 120]].concat(),
            wire: Wire::Term(1, 2),
        },
        Case {
            name: "B21 CapsuleResp PLEN 16 < HLEN 24",
            hdgst: false,
            io: Io::Read,
            fault: |_, _| [&[0x05u8, 0x00, 0x18, 0x00, 0x10, 0, 0, 0][..], &[0u8; 8]].concat(),
            wire: Wire::Term(1, 4),
        },
        // B22: C2HTermReq, malformed or not: torn down, never answered.
        Case {
            name: "B22(a) C2HTermReq PLEN 20",
            hdgst: false,
            io: Io::Read,
            fault: |_, _| [&[0x03u8, 0, 0x18, 0, 0x14, 0, 0, 0][..], &[0u8; 12]].concat(),
            wire: Wire::Silent,
        },
        Case {
            name: "B22(b) C2HTermReq PLEN 64 KiB, 24 bytes sent",
            hdgst: false,
            io: Io::Read,
            fault: |_, _| [&[0x03u8, 0, 0x18, 0, 0x00, 0, 0x01, 0][..], &[0u8; 16]].concat(),
            wire: Wire::Silent,
        },
        Case {
            name: "B22(c) valid C2HTermReq FES 1 FEI 2",
            hdgst: false,
            io: Io::Read,
            fault: |_, _| {
                let mut b = vec![0x03, 0, 0x18, 0, 0x30, 0, 0, 0, 0x01, 0, 0x02, 0, 0, 0];
                b.resize(0x30, 0);
                b
            },
            wire: Wire::Silent,
        },
        Case {
            name: "B22(d) C2HTermReq FES 7 (undefined)",
            hdgst: false,
            io: Io::Read,
            fault: |_, _| {
                let mut b = vec![0x03, 0, 0x18, 0, 0x30, 0, 0, 0, 0x07, 0, 0, 0, 0, 0];
                b.resize(0x30, 0);
                b
            },
            wire: Wire::Silent,
        },
        // B24: bad R2Ts for an 8 KiB write: no data goes out.
        Case {
            name: "B24(a) R2TL 0",
            hdgst: false,
            io: Io::Write,
            fault: |c, cid| r2t(c, cid, 0, 0),
            wire: Wire::Term(1, 16),
        },
        Case {
            name: "B24(b) R2TL beyond the command",
            hdgst: false,
            io: Io::Write,
            fault: |c, cid| r2t(c, cid, 0, 0x3000),
            wire: Wire::Term(4, 0),
        },
        Case {
            name: "B24(c) first R2TO not 0",
            hdgst: false,
            io: Io::Write,
            fault: |c, cid| r2t(c, cid, 0x1000, 0x1000),
            wire: Wire::Term(4, 0),
        },
        Case {
            name: "B24(d) R2T for a CCCID not in flight",
            hdgst: false,
            io: Io::Write,
            fault: |c, _| r2t(c, STRANGER, 0, 0x2000),
            wire: Wire::Term(1, 8),
        },
        Case {
            name: "B24(e) two R2Ts for the whole command",
            hdgst: false,
            io: Io::Write,
            fault: |c, cid| [r2t(c, cid, 0, 0x2000), r2t(c, cid, 0, 0x2000)].concat(),
            wire: Wire::TermAfterData(5, 0),
        },
        Case {
            name: "B24(f) R2T for a read",
            hdgst: false,
            io: Io::Read,
            fault: |c, cid| r2t(c, cid, 0, 0x2000),
            wire: Wire::Term(1, 8),
        },
        // B25: bad C2HData for a 128 KiB read: the read never succeeds.
        Case {
            name: "B25(a) the same DATAO twice",
            hdgst: false,
            io: Io::Read,
            fault: |c, cid| {
                let chunk = vec![0x42u8; 0x10000];
                [
                    c.c2h_bytes(cid, 0, &chunk, 0),
                    c.c2h_bytes(cid, 0, &chunk, flags::LAST_PDU | flags::SUCCESS),
                ]
                .concat()
            },
            wire: Wire::Term(4, 0),
        },
        Case {
            name: "B25(b) DATAO+DATAL past the end of the read",
            hdgst: false,
            io: Io::Read,
            fault: |c, cid| {
                [
                    c.c2h_bytes(cid, 0, &vec![0x42u8; 0x10000], 0),
                    c.c2h_bytes(cid, 0x10000, &vec![0u8; 0x10004], flags::LAST_PDU),
                ]
                .concat()
            },
            wire: Wire::Term(4, 0),
        },
        Case {
            name: "B25(c) C2HData for a CCCID not in flight",
            hdgst: false,
            io: Io::Read,
            fault: |c, _| c.c2h_bytes(STRANGER, 0, &vec![0x42u8; 0x10000], 0),
            wire: Wire::Term(1, 8),
        },
        Case {
            name: "B25(d) SUCCESS without LAST_PDU",
            hdgst: false,
            io: Io::Read,
            fault: |c, cid| c.c2h_bytes(cid, 0, &vec![0x42u8; READ_LEN], flags::SUCCESS),
            wire: Wire::Term(1, 1),
        },
        Case {
            name: "B25 DATAO skipping ahead",
            hdgst: false,
            io: Io::Read,
            fault: |c, cid| c.c2h_bytes(cid, 0x10000, &vec![0x42u8; 0x10000], flags::LAST_PDU | flags::SUCCESS),
            wire: Wire::Term(4, 0),
        },
    ]
}

/// Runs one case: the command outstanding, the fault, the verdict.
fn run_case(case: &Case, r: &Reactors) {
    let (cmd_tx, cmd_rx) = mpsc::channel::<()>();
    let (io, fault, wire, name) = (case.io, case.fault, case.wire, case.name);
    let (addr, fake) = fake_target(Cfg::default(), move |c| {
        let (sqe, data) = c.recv_capsule().expect("fake: the command");
        let _ = cmd_tx.send(());
        let want_opc = match io {
            Io::Read => io_opc::READ,
            Io::Write => io_opc::WRITE,
        };
        assert_eq!(sqe.opc(), want_opc, "{name}: the command");
        assert!(data.is_empty(), "{name}: no in-capsule data");
        let bytes = fault(c, sqe.cid());
        c.send(&bytes);
        match wire {
            Wire::Term(fes, fei) => assert_eq!(c.expect_term(), (fes, fei), "{name}: H2CTermReq FES/FEI"),
            Wire::TermAfterData(fes, fei) => {
                // The first R2T was good: its data may go out before the verdict.
                let p = c.recv().expect("fake: H2CData or H2CTermReq");
                if p.is(PduType::H2CData) {
                    let h = lull_proto::pdu::DataHeader::parse(&p.b);
                    assert_eq!((h.cccid, h.datao, h.datal), (sqe.cid(), 0, WRITE_LEN as u32));
                    assert!(p.data() == pattern(WRITE_LEN, 7), "{name}: the write's data");
                    assert_eq!(c.expect_term(), (fes, fei), "{name}: H2CTermReq FES/FEI");
                } else {
                    assert!(p.is(PduType::H2CTermReq), "{name}: got {:?}", p.ch);
                    let got = (
                        u16::from_le_bytes([p.b[8], p.b[9]]),
                        u32::from_le_bytes(p.b[10..14].try_into().unwrap()),
                    );
                    assert_eq!(got, (fes, fei), "{name}: H2CTermReq FES/FEI");
                    c.expect_eof(Duration::from_secs(2));
                }
            }
            Wire::Silent => {
                let t = c.expect_eof(Duration::from_secs(2));
                assert!(t < Duration::from_secs(1), "{name}: closed only after {t:?}");
            }
        }
    });
    let o = NvmeOptions {
        hdgst: case.hdgst,
        ..opts(0)
    };
    let c = attach(addr, o, r);
    assert_eq!(c.info().digests.header, case.hdgst);
    let (tx, rx) = mpsc::channel();
    match case.io {
        Io::Read => submit(&c, rw_sqe(io_opc::READ, 0, 256), Vec::new(), READ_LEN as u32, 1, &tx),
        Io::Write => submit(&c, rw_sqe(io_opc::WRITE, 0, 16), pattern(WRITE_LEN, 7), 0, 1, &tx),
    }
    cmd_rx.recv_timeout(WAIT).expect("the fake received the command");
    let t0 = Instant::now();
    let (_, res) = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{name}: the command hung after the fault"));
    assert!(
        matches!(res, Err(IoError::ControllerLost(_))),
        "{name}: expected ControllerLost, got {res:?}"
    );
    let took = t0.elapsed();
    if let Err(p) = fake.join() {
        std::panic::resume_unwind(p);
    }
    wait_for(name, || matches!(c.state(), CtrlrState::Lost(_)));
    // Nothing completes twice; new commands fail at once.
    assert!(rx.try_recv().is_err(), "{name}: a second completion");
    submit(&c, rw_sqe(io_opc::READ, 0, 1), Vec::new(), 512, 2, &tx);
    let (_, res) = rx.recv_timeout(WAIT).expect("a completion");
    assert!(matches!(res, Err(IoError::ControllerLost(_))), "{name}: after: {res:?}");
    println!("{name}: failed with ControllerLost {took:?} after the fault");
    c.detach();
}

#[test]
fn b21_to_b25_malformed_pdus_fail_the_queue_and_the_command() {
    let r = initiator(Mode::Interrupt);
    for case in cases() {
        run_case(&case, &r);
    }
    r.shutdown().unwrap();
}

// ---- B21 during the bring-up ---------------------------------------------

/// The fake's admin connection runs `script` from the very start (before ICReq).
fn fake_admin_script<T: Send + 'static>(
    script: impl FnOnce(&mut Conn) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let (l, addr) = fake::listen();
    let h = std::thread::spawn(move || {
        let mut c = fake::accept(&l);
        script(&mut c)
    });
    (addr, h)
}

#[test]
fn b21_bad_hlen_during_the_bring_up_fails_attach_cleanly() {
    let r = initiator(Mode::Interrupt);
    // An ICResp with HLEN 0x18.
    let (addr, fake) = fake_admin_script(|c| {
        let p = c.recv().expect("ICReq");
        assert!(p.is(PduType::IcReq));
        let mut b = fake::icresp(0, 131_072);
        b[2] = 0x18;
        c.send(&b);
        c.expect_term()
    });
    let t0 = Instant::now();
    let e = NvmeController::attach("Fake0", NvmeTrid::new(addr, SUBNQN, HOSTNQN), opts(0), r.handles(), 1)
        .err()
        .expect("attach refuses an ICResp with HLEN 0x18");
    println!("ICResp HLEN 0x18: attach failed after {:?}: {e}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.join().unwrap(), (1, 2));

    // The admin Connect answered by a CapsuleResp with HLEN 0xFF (header digest on).
    let (addr, fake) = fake_admin_script(|c| {
        c.handshake(131_072);
        assert!(c.d.header, "the initiator asked for a header digest");
        let (sqe, _) = c.recv_capsule().expect("Connect");
        let mut b = vec![0x05, 0x01, 0xFF, 0x00, 0x1C, 0x00, 0x00, 0x00];
        let mut cqe = [0u8; 16];
        cqe[12..14].copy_from_slice(&sqe.cid().to_le_bytes());
        b.extend_from_slice(&cqe);
        b.extend_from_slice(&[0u8; 4]);
        c.send(&b);
        c.expect_term()
    });
    let o = NvmeOptions { hdgst: true, ..opts(0) };
    let t0 = Instant::now();
    let e = NvmeController::attach("Fake0", NvmeTrid::new(addr, SUBNQN, HOSTNQN), o, r.handles(), 1)
        .err()
        .expect("attach refuses a CapsuleResp with HLEN 0xFF");
    println!("Connect answer HLEN 0xFF: attach failed after {:?}: {e}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.join().unwrap(), (1, 2));
    r.shutdown().unwrap();
}

// ---- B25(e), (f): a bad data digest fails the command only; late data ------

#[test]
fn b25_data_digest_error_fails_only_the_command() {
    let r = initiator(Mode::Interrupt);
    let (addr, fake) = fake_target(Cfg::default(), |c| {
        assert!(c.d.data, "data digest negotiated");
        // First read: a wrong DDGST on the first of two C2HData PDUs.
        let (sqe, _) = c.recv_capsule().unwrap();
        let half = vec![0x42u8; READ_LEN / 2];
        let mut first = c.c2h_bytes(sqe.cid(), 0, &half, 0);
        let n = first.len();
        first[n - 1] ^= 1;
        let second = c.c2h_bytes(
            sqe.cid(),
            (READ_LEN / 2) as u32,
            &half,
            flags::LAST_PDU | flags::SUCCESS,
        );
        c.send(&[first, second].concat());
        // The queue lives on: a second read is served properly.
        c.serve_io();
    });
    let o = NvmeOptions {
        ddgst: true,
        bdev_retry_count: 0,
        ..opts(0)
    };
    let c = attach(addr, o, &r);
    let (tx, rx) = mpsc::channel();
    submit(&c, rw_sqe(io_opc::READ, 0, 256), Vec::new(), READ_LEN as u32, 1, &tx);
    let (_, res) = rx.recv_timeout(WAIT).expect("the first read completes");
    match &res {
        Err(IoError::Status { status: s, .. }) => assert_eq!(*s, status::TRANSIENT_TRANSPORT_ERROR),
        other => panic!("expected Transient Transport Error, got {other:?}"),
    }
    submit(&c, rw_sqe(io_opc::READ, 5, 256), Vec::new(), READ_LEN as u32, 2, &tx);
    let (_, res) = rx.recv_timeout(WAIT).expect("the second read completes");
    let done = res.expect("the queue still serves reads");
    assert!(done.data == pattern(READ_LEN, 5), "second read's data");
    assert_eq!(c.state(), CtrlrState::Live);
    assert!(rx.try_recv().is_err(), "nothing completes twice");
    c.detach();
    fake.join().unwrap();
    r.shutdown().unwrap();
}

#[test]
fn b25_a_data_digest_error_is_retried_when_retries_are_allowed() {
    let r = initiator(Mode::Interrupt);
    let (addr, fake) = fake_target(Cfg::default(), |c| {
        assert!(c.d.data, "data digest negotiated");
        // First read: a wrong DDGST on the first of two C2HData PDUs.
        let (sqe, _) = c.recv_capsule().unwrap();
        let half = vec![0x42u8; READ_LEN / 2];
        let mut first = c.c2h_bytes(sqe.cid(), 0, &half, 0);
        let n = first.len();
        first[n - 1] ^= 1;
        let second = c.c2h_bytes(
            sqe.cid(),
            (READ_LEN / 2) as u32,
            &half,
            flags::LAST_PDU | flags::SUCCESS,
        );
        c.send(&[first, second].concat());
        // The queue lives on: a second read is served properly.
        c.serve_io();
    });
    // Transient Transport Error has no DNR: with bdev_retry_count (3 by
    // default, as in SPDK) the read goes out again and gets good data.
    let o = NvmeOptions { ddgst: true, ..opts(0) };
    let c = attach(addr, o, &r);
    let (tx, rx) = mpsc::channel();
    submit(&c, rw_sqe(io_opc::READ, 0, 256), Vec::new(), READ_LEN as u32, 1, &tx);
    let (_, res) = rx.recv_timeout(WAIT).expect("the first read completes");
    let done = res.expect("the retried read succeeds");
    assert!(done.data == pattern(READ_LEN, 0), "the retried read's data");
    assert_eq!(c.state(), CtrlrState::Live);
    assert!(rx.try_recv().is_err(), "nothing completes twice");
    c.detach();
    fake.join().unwrap();
    r.shutdown().unwrap();
}

#[test]
fn b25_data_after_the_completion_fails_the_queue() {
    let r = initiator(Mode::Interrupt);
    let (addr, fake) = fake_target(Cfg::default(), |c| {
        let (sqe, _) = c.recv_capsule().unwrap();
        let data = pattern(READ_LEN, 3);
        c.read_reply(sqe.cid(), &data);
        // Give the completion time to be delivered, then data for the same CID.
        std::thread::sleep(Duration::from_millis(50));
        let late = c.c2h_bytes(sqe.cid(), 0, &vec![0x42u8; 0x10000], 0);
        c.send(&late);
        c.expect_term()
    });
    let c = attach(addr, opts(0), &r);
    let (tx, rx) = mpsc::channel();
    submit(&c, rw_sqe(io_opc::READ, 3, 256), Vec::new(), READ_LEN as u32, 1, &tx);
    let (_, res) = rx.recv_timeout(WAIT).expect("the read completes");
    let done = res.expect("the read itself was answered properly");
    assert!(done.data == pattern(READ_LEN, 3), "the read's data");
    assert_eq!(fake.join().unwrap(), (1, 8), "late C2HData: FES 1, FEI 8 (CCCID)");
    wait_for("the controller is lost", || matches!(c.state(), CtrlrState::Lost(_)));
    assert!(rx.try_recv().is_err(), "nothing completes twice");
    c.detach();
    r.shutdown().unwrap();
}

// ---- A fresh association that dies while it is being installed -----------

#[test]
fn an_association_lost_during_install_is_reset_again() {
    let (l, addr) = fake::listen();
    let cfg = Cfg::default();
    let fake = std::thread::spawn(move || {
        // Association 1: serves one read, then the I/O queue goes away.
        let a1 = fake::admin(&l, cfg);
        let mut io = fake::io(&l, cfg);
        let (sqe, _) = io.recv_capsule().unwrap();
        io.read_reply(sqe.cid(), &pattern(4096, sqe.cdw(10) as u8));
        drop(io);
        a1.join().unwrap();
        // Association 2: the I/O queue closes right after its Connect.
        let a2 = fake::admin(&l, cfg);
        let io = fake::io(&l, cfg);
        drop(io);
        a2.join().unwrap();
        // Association 3: serves until the initiator detaches.
        let a3 = fake::admin(&l, cfg);
        let mut io = fake::io(&l, cfg);
        io.serve_io();
        a3.join().unwrap();
    });
    let r = initiator(Mode::Interrupt);
    let o = NvmeOptions {
        reconnect_delay_sec: 1,
        ctrlr_loss_timeout_sec: 10,
        fast_io_fail_timeout_sec: 0,
        ..opts(0)
    };
    let c = attach(addr, o, &r);
    let (tx, rx) = mpsc::channel();
    submit(&c, rw_sqe(io_opc::READ, 1, 8), Vec::new(), 4096, 1, &tx);
    let (_, res) = rx.recv_timeout(WAIT).expect("the first read");
    assert!(res.expect("first read").data == pattern(4096, 1));
    wait_for("the reset starts", || matches!(c.state(), CtrlrState::Resetting { .. }));
    let t0 = Instant::now();
    submit(&c, rw_sqe(io_opc::READ, 2, 8), Vec::new(), 4096, 2, &tx);
    let (_, res) = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "the held read never completed: state {:?}, resets {}",
            c.state(),
            c.resets()
        )
    });
    let done = res.expect("the held read succeeds on association 3");
    assert!(done.data == pattern(4096, 2));
    println!("held read completed {:?} after the first loss", t0.elapsed());
    wait_for("two resets", || c.resets() == 2 && c.state() == CtrlrState::Live);
    c.detach();
    fake.join().unwrap();
    r.shutdown().unwrap();
}

// ---- Integrity faults: the command is retried on a new association -------

/// Reconnect once a second, for ten seconds.
fn reconnecting(ioq_us: u64) -> NvmeOptions {
    NvmeOptions {
        reconnect_delay_sec: 1,
        ctrlr_loss_timeout_sec: 10,
        fast_io_fail_timeout_sec: 0,
        ..opts(ioq_us)
    }
}

/// Commands a fake association served, with the data each carried.
type Served = Vec<(Sqe, Vec<u8>)>;

/// A fake whose first association runs `script` on its I/O queue (which
/// ends it), and whose second one serves I/O properly until the initiator
/// detaches, logging what it served.
fn fake_then_good<T: Send + 'static>(
    cfg: Cfg,
    script: impl FnOnce(&mut Conn) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<(T, Served)>) {
    let (l, addr) = fake::listen();
    let h = std::thread::spawn(move || {
        let a1 = fake::admin(&l, cfg);
        let mut io = fake::io(&l, cfg);
        let t = script(&mut io);
        drop(io);
        let _ = a1.join();
        let a2 = fake::admin(&l, cfg);
        let mut io = fake::io(&l, cfg);
        let log = io.serve_io_logged();
        let _ = a2.join();
        (t, log)
    });
    (addr, h)
}

/// What the initiator has outstanding when the fault comes.
#[derive(Clone, Copy, Debug)]
enum Cmd {
    /// 128 KiB read of LBA 9.
    Read,
    /// 8 KiB write by R2T (above the 4096-byte in-capsule limit).
    R2tWrite,
    /// 4 KiB write in-capsule.
    CapsuleWrite,
    /// Flush.
    Flush,
    /// Write Zeroes of 8 blocks.
    WriteZeroes,
}

impl Cmd {
    /// (SQE, write data, read length).
    fn build(self) -> (Sqe, Vec<u8>, u32) {
        match self {
            Cmd::Read => (rw_sqe(io_opc::READ, 9, 256), Vec::new(), READ_LEN as u32),
            Cmd::R2tWrite => (rw_sqe(io_opc::WRITE, 16, 16), pattern(WRITE_LEN, 0x16), 0),
            Cmd::CapsuleWrite => (rw_sqe(io_opc::WRITE, 32, 8), pattern(4096, 0x32), 0),
            Cmd::Flush => {
                let mut s = Sqe([0; 64]);
                s.0[4..8].copy_from_slice(&1u32.to_le_bytes());
                (s, Vec::new(), 0)
            }
            Cmd::WriteZeroes => (rw_sqe(0x08, 48, 8), Vec::new(), 0),
        }
    }
}

type Fault = fn(&Conn, u16) -> Vec<u8>;

struct Retried {
    name: &'static str,
    cmd: Cmd,
    /// Bytes the fake sends once it has the command (its CID given).
    fault: Fault,
    /// The H2CTermReq's (FES, FEI).
    term: (u16, u32),
}

fn c2h_empty_success(c: &Conn, cid: u16) -> Vec<u8> {
    c.c2h_bytes(cid, 0, &[], flags::LAST_PDU | flags::SUCCESS)
}

fn c2h_512_success(c: &Conn, cid: u16) -> Vec<u8> {
    c.c2h_bytes(cid, 0, &[0u8; 512], flags::LAST_PDU | flags::SUCCESS)
}

fn resp_ok(c: &Conn, cid: u16) -> Vec<u8> {
    let mut v = Vec::new();
    let cqe = lull_proto::nvme::Cqe {
        cid,
        ..Default::default()
    };
    lull_proto::pdu::encode_capsule_resp(&mut v, &cqe.encode(), c.d);
    v
}

fn half(c: &Conn, cid: u16, f: u8) -> Vec<u8> {
    c.c2h_bytes(cid, 0, &pattern(READ_LEN / 2, 9), f)
}

fn retried_cases() -> Vec<Retried> {
    vec![
        // Fault 1: a completion in a state where the command cannot have ended.
        Retried {
            name: "success for an R2T write before any R2T",
            cmd: Cmd::R2tWrite,
            fault: resp_ok,
            term: (2, 0),
        },
        Retried {
            name: "success for a read before its data",
            cmd: Cmd::Read,
            fault: resp_ok,
            term: (2, 0),
        },
        // Fault 2: part of a read, claimed whole.
        Retried {
            name: "half a read with LAST_PDU and SUCCESS",
            cmd: Cmd::Read,
            fault: |c, cid| half(c, cid, flags::LAST_PDU | flags::SUCCESS),
            term: (1, 1),
        },
        Retried {
            name: "half a read with LAST_PDU, then a CapsuleResp",
            cmd: Cmd::Read,
            fault: |c, cid| [half(c, cid, flags::LAST_PDU), resp_ok(c, cid)].concat(),
            term: (1, 1),
        },
        Retried {
            name: "half a read, then a CapsuleResp",
            cmd: Cmd::Read,
            fault: |c, cid| [half(c, cid, 0), resp_ok(c, cid)].concat(),
            term: (2, 0),
        },
        // Fault 6: data PDUs for a command that moves none that way.
        Retried {
            name: "empty C2HData with SUCCESS for an in-capsule write",
            cmd: Cmd::CapsuleWrite,
            fault: c2h_empty_success,
            term: (1, 8),
        },
        Retried {
            name: "C2HData with SUCCESS for an R2T write",
            cmd: Cmd::R2tWrite,
            fault: c2h_512_success,
            term: (1, 8),
        },
        Retried {
            name: "empty C2HData with SUCCESS for a Flush",
            cmd: Cmd::Flush,
            fault: c2h_empty_success,
            term: (1, 8),
        },
        Retried {
            name: "C2HData with SUCCESS for a Write Zeroes",
            cmd: Cmd::WriteZeroes,
            fault: c2h_512_success,
            term: (1, 8),
        },
        Retried {
            name: "R2T for a Flush",
            cmd: Cmd::Flush,
            fault: |c, cid| r2t(c, cid, 0, 0x1000),
            term: (1, 8),
        },
    ]
}

/// The command is never completed by the fault: the association ends with
/// the expected H2CTermReq, the command goes out again on the next one and
/// completes there with the right data (a write carrying all of its data).
fn check_retried(case: &Retried, mode: Mode) {
    let name = case.name;
    let (fault, cmd) = (case.fault, case.cmd);
    let (addr, fake) = fake_then_good(Cfg::default(), move |c| {
        let (sqe, _) = c.recv_capsule().expect("fake: the command");
        let b = fault(c, sqe.cid());
        c.send(&b);
        c.expect_term()
    });
    let r = initiator(mode);
    let c = attach(addr, reconnecting(0), &r);
    let (tx, rx) = mpsc::channel();
    let (sqe, write, read_len) = cmd.build();
    submit(&c, sqe, write.clone(), read_len, 1, &tx);
    let (_, res) = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{name} ({mode:?}): the command never completed"));
    let done = res.unwrap_or_else(|e| panic!("{name} ({mode:?}): the retried command failed: {e}"));
    if read_len > 0 {
        assert!(
            done.data == pattern(READ_LEN, 9),
            "{name} ({mode:?}): the read's data is the second association's"
        );
    }
    wait_for(name, || c.resets() == 1);
    c.detach();
    let (term, log) = fake.join().expect("the fake target");
    assert_eq!(term, case.term, "{name} ({mode:?}): H2CTermReq (FES, FEI)");
    assert_eq!(log.len(), 1, "{name} ({mode:?}): the command went out again, once");
    assert_eq!(log[0].0.opc(), sqe.opc(), "{name} ({mode:?}): the retried command");
    if !write.is_empty() {
        assert_eq!(
            log[0].0.sgl1().length as usize,
            write.len(),
            "{name} ({mode:?}): SGL length"
        );
        assert!(log[0].1 == write, "{name} ({mode:?}): the retried write's data");
    }
    assert!(rx.try_recv().is_err(), "{name} ({mode:?}): a second completion");
    r.shutdown().unwrap();
}

#[test]
fn completions_before_every_byte_moved_and_data_pdus_for_the_wrong_direction_are_fatal() {
    for case in retried_cases() {
        check_retried(&case, Mode::Interrupt);
    }
}

#[test]
fn a_stale_completion_for_a_reused_slot_never_completes_the_new_command() {
    for mode in [Mode::Interrupt, Mode::Poll] {
        let (addr, fake) = fake_then_good(Cfg::default(), |c| {
            // Command A, answered properly.
            let (a, _) = c.recv_capsule().expect("fake: command A");
            c.respond(a.cid(), lull_proto::nvme::Status::SUCCESS, 0, 0);
            // Command B (sent after A completed), then A's completion again.
            let (b, _) = c.recv_capsule().expect("fake: command B");
            let dup = resp_ok(c, a.cid());
            c.send(&dup);
            (a.cid(), b.cid(), c.expect_term())
        });
        let r = initiator(mode);
        let c = attach(addr, reconnecting(0), &r);
        let (tx, rx) = mpsc::channel();
        let (sqe, write, _) = Cmd::CapsuleWrite.build();
        submit(&c, sqe, write.clone(), 0, 1, &tx);
        let (_, res) = rx.recv_timeout(WAIT).expect("A completes");
        res.expect("A succeeds");
        let b = pattern(4096, 0xB0);
        submit(&c, rw_sqe(io_opc::WRITE, 64, 8), b.clone(), 0, 2, &tx);
        let (_, res) = rx.recv_timeout(WAIT).expect("B completes");
        res.expect("B succeeds on the next association");
        wait_for("one reset", || c.resets() == 1);
        c.detach();
        let ((a_cid, b_cid, term), log) = fake.join().unwrap();
        assert_ne!(a_cid, b_cid, "{mode:?}: a reused slot carries a new CID");
        assert_eq!(term, (1, 20), "{mode:?}: the CapsuleResp's CID is not in flight");
        assert_eq!(log.len(), 1, "{mode:?}: only B goes out again");
        assert!(log[0].1 == b, "{mode:?}: B's data reached the target");
        r.shutdown().unwrap();
    }
}

// ---- Fault 7: a completion in the same batch as a fatal PDU --------------

#[test]
fn a_completion_sharing_a_batch_with_a_fatal_pdu_is_delivered_and_data_stays() {
    for (mode, ioq_us) in [(Mode::Interrupt, 0u64), (Mode::Interrupt, 1000), (Mode::Poll, 0)] {
        let (addr, fake) = fake_then_good(Cfg::default(), |c| {
            let (a, _) = c.recv_capsule().expect("fake: write A");
            let (b, _) = c.recv_capsule().expect("fake: write B");
            // A's completion and a C2HData for no command, in one segment.
            let bytes = [resp_ok(c, a.cid()), c.c2h_bytes(STRANGER, 0, &[0u8; 64], 0)].concat();
            c.send(&bytes);
            let _ = b;
            c.expect_term()
        });
        let r = initiator(mode);
        let c = attach(addr, reconnecting(ioq_us), &r);
        let (tx, rx) = mpsc::channel();
        let a = pattern(4096, 0xA1); // in-capsule
        let b = pattern(WRITE_LEN, 0xB2); // by R2T
        submit(&c, rw_sqe(io_opc::WRITE, 8, 8), a.clone(), 0, 1, &tx);
        submit(&c, rw_sqe(io_opc::WRITE, 24, 16), b.clone(), 0, 2, &tx);
        let mut got = std::collections::HashMap::new();
        for _ in 0..2 {
            let (tag, res) = rx.recv_timeout(WAIT).expect("both writes complete");
            assert!(got.insert(tag, res).is_none(), "{mode:?}: write {tag} completed twice");
        }
        assert!(got.values().all(Result::is_ok), "{mode:?}: {got:?}");
        wait_for("one reset", || c.resets() == 1);
        c.detach();
        let (term, log) = fake.join().unwrap();
        assert_eq!(term, (1, 8), "{mode:?}: C2HData for a CCCID not in flight");
        assert_eq!(
            log.len(),
            1,
            "{mode:?}: A completed on the first association; only B goes again"
        );
        assert_eq!(log[0].0.sgl1().length as usize, WRITE_LEN, "{mode:?}: B's SGL length");
        assert!(log[0].1 == b, "{mode:?}: B's data");
        assert!(rx.try_recv().is_err());
        r.shutdown().unwrap();
    }
}

// ---- Fault 3: Keep Alive unanswered --------------------------------------

#[test]
fn a_controller_that_stops_answering_keep_alive_is_reset_in_every_mode() {
    for (mode, adminq_us) in [
        (Mode::Interrupt, 1000u64),
        (Mode::Interrupt, 0),
        (Mode::Poll, 1000),
        (Mode::Hybrid, 1000),
    ] {
        let cfg = Cfg {
            ka_silent: true,
            ..Cfg::default()
        };
        // The I/O queue stays open and silent too: nothing but the missing
        // Keep Alive completions can tell the controller is gone.
        let (addr, fake) = fake_target(cfg, |c| c.expect_eof(Duration::from_secs(20)));
        let r = initiator(mode);
        let o = NvmeOptions {
            keep_alive_timeout_ms: 1000,
            timeout_us: 0, // no command timeout: only Keep Alive can notice
            nvme_adminq_poll_period_us: adminq_us,
            ..opts(0)
        };
        let c = attach(addr, o, &r);
        wait_for("the controller is declared lost", || {
            matches!(c.state(), CtrlrState::Lost(_))
        });
        let CtrlrState::Lost(why) = c.state() else {
            unreachable!()
        };
        assert!(why.contains("Keep Alive"), "{mode:?}: {why}");
        fake.join().unwrap();
        c.detach();
        r.shutdown().unwrap();
    }
}

// ---- Fault 4: FIN on an idle I/O queue polled on a timer -----------------

#[test]
fn a_fin_on_an_idle_queue_is_noticed_without_io_in_every_mode() {
    for (mode, ioq_us) in [
        (Mode::Interrupt, 100_000u64),
        (Mode::Hybrid, 100_000),
        (Mode::Interrupt, 0),
        (Mode::Poll, 100_000),
    ] {
        let (addr, fake) = fake_target(Cfg::default(), |c| {
            let (sqe, _) = c.recv_capsule().expect("fake: the read");
            c.read_reply(sqe.cid(), &pattern(4096, 1));
            // Then the queue closes (FIN) while the initiator is idle.
        });
        let r = initiator(mode);
        let c = attach(addr, opts(ioq_us), &r);
        let (tx, rx) = mpsc::channel();
        submit(&c, rw_sqe(io_opc::READ, 1, 8), Vec::new(), 4096, 1, &tx);
        let (_, res) = rx.recv_timeout(WAIT).expect("the read");
        assert!(res.expect("the read").data == pattern(4096, 1));
        fake.join().unwrap();
        // No I/O from here on: the hang-up alone must end the association.
        wait_for("the FIN is noticed", || matches!(c.state(), CtrlrState::Lost(_)));
        let CtrlrState::Lost(why) = c.state() else {
            unreachable!()
        };
        assert!(why.contains("closed the connection"), "{mode:?} {ioq_us} us: {why}");
        c.detach();
        r.shutdown().unwrap();
    }
}

// ---- Fault 5: namespaces changed while the association was down -----------

#[test]
fn namespaces_changed_during_a_reset_are_read_again_after_the_reconnect() {
    let (l, addr) = fake::listen();
    let fake = std::thread::spawn(move || {
        // Association 1 has NS1; each association serves one read and then
        // its I/O queue goes away (no notice of the change is ever sent).
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
                let (sqe, _) = io.recv_capsule().expect("fake: a read");
                io.read_reply(sqe.cid(), &pattern(4096, 0));
            }
            drop(io);
            a.join().unwrap();
        }
    });
    let r = initiator(Mode::Interrupt);
    let c = attach(addr, reconnecting(0), &r);
    let nsids = |c: &NvmeController| c.info().namespaces.iter().map(|n| n.nsid).collect::<Vec<_>>();
    assert_eq!(nsids(&c), [1]);
    let (ltx, lrx) = mpsc::channel::<Vec<u32>>();
    let ltx = std::sync::Mutex::new(ltx);
    c.on_namespaces_changed(std::sync::Arc::new(move |list| {
        let _ = ltx.lock().unwrap().send(list.iter().map(|n| n.nsid).collect());
    }));
    let (tx, rx) = mpsc::channel();
    for (i, want) in [[1u32, 2].to_vec(), [2].to_vec()].into_iter().enumerate() {
        submit(&c, rw_sqe(io_opc::READ, 0, 8), Vec::new(), 4096, i as u64, &tx);
        rx.recv_timeout(WAIT).expect("a read").1.expect("the read");
        let got = lrx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("reconnect {}: the listener was not told the namespaces", i + 1));
        assert_eq!(got, want, "reconnect {}", i + 1);
        assert_eq!(nsids(&c), want);
    }
    c.detach();
    fake.join().unwrap();
    r.shutdown().unwrap();
}
