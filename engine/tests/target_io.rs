//! The target over real loopback sockets: admin and I/O commands, digests,
//! R2T, discovery, access control, keep-alive, in poll and interrupt mode.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lull_proto::fabrics::property;
use lull_proto::nvme::{Sqe, Status, sgl_id, status};
use lull_proto::pdu::{PduType, flags};
use lull_reactor::Mode;

const MODES: [Mode; 2] = [Mode::Poll, Mode::Interrupt];

fn admin_sqe(opc: u8, nsid: u32, cdw10: u32, len: u32) -> Sqe {
    let mut sqe = Host::rw_sqe(opc, nsid, 0, 1, len, sgl_id::TRANSPORT_DATA_BLOCK);
    sqe.set_cdw(10, cdw10);
    sqe.set_cdw(11, 0);
    sqe.set_cdw(12, 0);
    sqe
}

#[test]
fn admin_commands_answer_as_the_specification_says() {
    for mode in MODES {
        let t = target(mode);
        let (mut a, cntlid) = Host::admin(t.addr, 0, SUBNQN, 0);
        assert!((1..=0xFFEF).contains(&cntlid));
        let cap = a.prop_get(property::CAP, 8);
        let cap = u64::from(cap.dw0) | u64::from(cap.dw1) << 32;
        assert_eq!(cap & 0xFFFF, 1023, "MQES");
        assert_eq!((cap >> 37) & 1, 1, "NVM command set");
        assert_eq!(a.prop_get(property::VS, 4).dw0, 0x0002_0000);
        // Identify Controller.
        let (id, c) = a.command(admin_sqe(0x06, 0, 1, 4096), &[]);
        assert!(c.status.is_success());
        assert_eq!(id.len(), 4096);
        assert_eq!(&id[4..10], b"SN0001");
        assert_eq!(&id[24..33], b"lull test");
        assert_eq!(u16::from_le_bytes([id[78], id[79]]), cntlid);
        assert_eq!(&id[768..768 + SUBNQN.len()], SUBNQN.as_bytes());
        assert_eq!(
            u32::from_le_bytes(id[1792..1796].try_into().unwrap()),
            (64 + 4096) / 16,
            "IOCCSZ"
        );
        // Identify Namespace 1 and the active list.
        let (ns, _) = a.command(admin_sqe(0x06, 1, 0, 4096), &[]);
        assert_eq!(u64::from_le_bytes(ns[0..8].try_into().unwrap()), NS1_BLOCKS);
        let (list, _) = a.command(admin_sqe(0x06, 0, 2, 4096), &[]);
        assert_eq!(&list[..12], &[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let (desc, _) = a.command(admin_sqe(0x06, 1, 3, 4096), &[]);
        assert_eq!((desc[0], desc[1]), (2, 16));
        // An unknown CNS, an invalid namespace.
        assert_eq!(
            a.command(admin_sqe(0x06, 0, 0x44, 4096), &[]).1.status,
            status::INVALID_FIELD.with_dnr()
        );
        assert_eq!(
            a.command(admin_sqe(0x06, 0xFFFF_FFF0, 0, 4096), &[]).1.status,
            status::INVALID_NAMESPACE.with_dnr()
        );
        // Number of Queues: 8 asked, 8 granted (0's based 7).
        let c = a.command(admin_sqe(0x09, 0, 0x07, 0), &[]);
        let _ = c;
        let mut nq = admin_sqe(0x09, 0, 0x07, 0);
        nq.set_cdw(11, 7 << 16 | 7);
        assert_eq!(a.command(nq, &[]).1.dw0, 7 << 16 | 7);
        // Keep Alive Timer set and read back; a saveable Set is refused.
        let mut ka = admin_sqe(0x09, 0, 0x0F, 0);
        ka.set_cdw(11, 15_000);
        assert!(a.command(ka, &[]).1.status.is_success());
        assert_eq!(a.command(admin_sqe(0x0A, 0, 0x0F, 0), &[]).1.dw0, 15_000);
        assert_eq!(
            a.command(admin_sqe(0x09, 0, 1 << 31 | 0x0F, 0), &[]).1.status,
            status::FEATURE_NOT_SAVEABLE.with_dnr()
        );
        // Log pages: SMART (512 bytes), effects, an unknown one.
        let (smart, c) = a.command(admin_sqe(0x02, 0xFFFF_FFFF, (127 << 16) | 0x02, 512), &[]);
        assert!(c.status.is_success());
        assert_eq!((smart.len(), smart[3]), (512, 100));
        let (eff, _) = a.command(admin_sqe(0x02, 0, (1023 << 16) | 0x05, 4096), &[]);
        assert_eq!(eff[0x06 * 4] & 1, 1, "Identify supported");
        assert_eq!(eff[1024 + 0x02 * 4] & 1, 1, "Read supported");
        assert_eq!(
            a.command(admin_sqe(0x02, 0, (127 << 16) | 0x33, 512), &[]).1.status,
            status::INVALID_LOG_PAGE.with_dnr()
        );
        // Keep Alive, Abort, an unknown opcode.
        assert!(a.command(admin_sqe(0x18, 0, 0, 0), &[]).1.status.is_success());
        assert_eq!(a.command(admin_sqe(0x08, 0, 0, 0), &[]).1.dw0 & 1, 1, "not aborted");
        assert_eq!(
            a.command(admin_sqe(0x7E, 0, 0, 0), &[]).1.status,
            status::INVALID_OPCODE.with_dnr()
        );
        // Shutdown notification completes.
        assert!(
            a.prop_set(property::CC, 1 | (1 << 14) | (6 << 16) | (4 << 20))
                .status
                .is_success()
        );
        assert_eq!((a.prop_get(property::CSTS, 4).dw0 >> 2) & 3, 2, "SHST complete");
        drop(a);
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn io_commands_with_every_digest_setting() {
    for mode in MODES {
        let t = target(mode);
        for dgst in 0..4u8 {
            let (a, cntlid) = Host::admin(t.addr, dgst, SUBNQN, 0);
            let mut io = Host::io(t.addr, dgst, cntlid);
            assert_eq!(io.d.dgst(), dgst, "ICResp DGST equals the request");
            // In-capsule 4 KiB, R2T 8 KiB and 128 KiB, read back.
            let base = u64::from(dgst) * 1024;
            for (lba, len, seed) in [(base, 4096, 1u8), (base + 8, 8192, 2), (base + 64, 131072, 3)] {
                let data = pattern(len, seed + dgst);
                assert!(io.write(lba, &data).status.is_success(), "write {len} B dgst {dgst}");
                let (back, c) = io.read(lba, (len / 512) as u32);
                assert!(c.status.is_success());
                assert!(back == data, "read back {len} B, dgst {dgst}, {mode}");
            }
            // Compare: equal, then different.
            let data = pattern(4096, 1 + dgst);
            let cmp = Host::rw_sqe(0x05, 1, base, 8, 4096, sgl_id::DATA_BLOCK_OFFSET);
            assert!(io.command(cmp, &data).1.status.is_success());
            let cmp = Host::rw_sqe(0x05, 1, base, 8, 4096, sgl_id::DATA_BLOCK_OFFSET);
            assert_eq!(
                io.command(cmp, &vec![0u8; 4096]).1.status,
                status::COMPARE_FAILURE.with_dnr()
            );
            // Write Zeroes then read zeroes.
            let wz = Host::rw_sqe(0x08, 1, base, 8, 0, 0);
            assert!(io.command(wz, &[]).1.status.is_success());
            assert!(io.read(base, 8).0.iter().all(|&b| b == 0));
            // Dataset Management: deallocate 16 blocks at base+8.
            let mut dsm = Host::rw_sqe(0x09, 1, 0, 1, 16, sgl_id::DATA_BLOCK_OFFSET);
            dsm.set_cdw(10, 0);
            dsm.set_cdw(11, 1 << 2);
            dsm.set_cdw(12, 0);
            let mut range = vec![0u8; 16];
            range[4..8].copy_from_slice(&16u32.to_le_bytes());
            range[8..16].copy_from_slice(&(base + 8).to_le_bytes());
            assert!(io.command(dsm, &range).1.status.is_success());
            assert!(io.read(base + 8, 16).0.iter().all(|&b| b == 0));
            // Flush one namespace and all of them.
            assert!(io.command(Host::rw_sqe(0x00, 1, 0, 1, 0, 0), &[]).1.status.is_success());
            assert!(
                io.command(Host::rw_sqe(0x00, 0xFFFF_FFFF, 0, 1, 0, 0), &[])
                    .1
                    .status
                    .is_success()
            );
            // Errors: beyond the end, a bad namespace, a bad opcode, too large.
            assert_eq!(io.read(NS1_BLOCKS - 1, 2).1.status, status::LBA_OUT_OF_RANGE.with_dnr());
            let bad_ns = Host::rw_sqe(0x02, 9, 0, 1, 512, sgl_id::TRANSPORT_DATA_BLOCK);
            assert_eq!(io.command(bad_ns, &[]).1.status, status::INVALID_NAMESPACE.with_dnr());
            assert_eq!(
                io.command(Host::rw_sqe(0x7C, 1, 0, 1, 0, 0), &[]).1.status,
                status::INVALID_OPCODE.with_dnr()
            );
            let huge = Host::rw_sqe(0x02, 1, 0, 512, 512 * 512, sgl_id::TRANSPORT_DATA_BLOCK);
            assert_ne!(io.command(huge, &[]).1.status, Status::SUCCESS);
            // The null namespace reads zeroes and swallows writes.
            let w = Host::rw_sqe(0x01, 2, 0, 8, 4096, sgl_id::DATA_BLOCK_OFFSET);
            assert!(io.command(w, &pattern(4096, 9)).1.status.is_success());
            let r = Host::rw_sqe(0x02, 2, 0, 8, 4096, sgl_id::TRANSPORT_DATA_BLOCK);
            assert!(io.command(r, &[]).0.iter().all(|&b| b == 0));
            drop(io);
            drop(a);
        }
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn connect_refusals_and_access_control() {
    for mode in MODES {
        let t = target(mode);
        // A host that is not on the allow-list: Connect Invalid Host.
        let mut h = Host::connect(t.addr);
        h.icreq(0);
        let c = h.fabric_connect(
            0,
            SUBNQN,
            "nqn.2014-08.org.nvmexpress:uuid:ffffffff-0000-4000-8000-000000000000",
            0xFFFF,
            0,
        );
        assert_eq!(c.status, status::CONNECT_INVALID_HOST.with_dnr());
        // An empty HOSTNQN (spdk_nvme_perf's default) with an allow-list:
        // Connect Invalid Host (SCT 1h, SC 84h), not Invalid Parameters.
        let c = h.fabric_connect(0, SUBNQN, "", 0xFFFF, 0);
        assert_eq!((c.status.sct(), c.status.sc(), c.status.dnr()), (1, 0x84, true));
        // B16: SUBNQN without a NUL: Connect Invalid Parameters, IPO 256 in the data.
        let mut data = Host::connect_data(SUBNQN, HOSTNQN, 0xFFFF);
        data[256..512].fill(b'a');
        let sqe = Host::connect_sqe(0, 31, 0, 1024, sgl_id::DATA_BLOCK_OFFSET);
        let c = h.command(sqe, &data).1;
        assert_eq!((c.status.0, c.dw0), (0x8304, 0x0001_0100));
        let mut data = Host::connect_data(SUBNQN, HOSTNQN, 0xFFFF);
        data[512..768].fill(b'b');
        let sqe = Host::connect_sqe(0, 31, 0, 1024, sgl_id::DATA_BLOCK_OFFSET);
        let c = h.command(sqe, &data).1;
        assert_eq!((c.status.0, c.dw0), (0x8304, 0x0001_0200));
        // An unknown subsystem, a too-small admin queue.
        let c = h.fabric_connect(0, "nqn.2024-01.test:nope", HOSTNQN, 0xFFFF, 0);
        assert_eq!((c.status.0, c.dw0), (0x8304, 0x0001_0100));
        let sqe = Host::connect_sqe(0, 3, 0, 1024, sgl_id::DATA_BLOCK_OFFSET);
        let c = h.command(sqe, &Host::connect_data(SUBNQN, HOSTNQN, 0xFFFF)).1;
        assert_eq!((c.status.0, c.dw0), (0x8304, 44));
        // Anything but Connect first: Command Sequence Error.
        assert_eq!(
            h.prop_get(property::CAP, 8).status,
            status::COMMAND_SEQUENCE_ERROR.with_dnr()
        );
        // The connection is still good for a proper Connect (B16).
        let c = h.fabric_connect(0, SUBNQN, HOSTNQN, 0xFFFF, 0);
        assert!(c.status.is_success());
        // An I/O queue for a controller that does not exist.
        let mut io = Host::connect(t.addr);
        io.icreq(0);
        let c = io.fabric_connect(1, SUBNQN, HOSTNQN, 0x4321, 0);
        assert_eq!((c.status.0, c.dw0), (0x8304, 0x0001_0010));
        // B20: Connect data through R2T.
        let mut r = Host::connect(t.addr);
        r.icreq(0);
        let sqe = Host::connect_sqe(0, 31, 30_000, 1024, sgl_id::TRANSPORT_DATA_BLOCK);
        let (_, c) = r.command(sqe, &Host::connect_data(SUBNQN, HOSTNQN, 0xFFFF));
        assert!(c.status.is_success(), "Connect by R2T: {}", c.status);
        drop((h, io, r));
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn empty_hostnqn_connects_where_any_host_is_allowed() {
    for mode in MODES {
        let t = target(mode);
        t.target.subsystem(SUBNQN).unwrap().set_allow_any_host(true);
        // Admin queue, enable, then an I/O queue and a write and read on it,
        // all with an empty HOSTNQN as spdk_nvme_perf sends by default.
        let mut a = Host::connect(t.addr);
        a.icreq(0);
        let c = a.fabric_connect(0, SUBNQN, "", 0xFFFF, 0);
        assert!(
            c.status.is_success(),
            "admin Connect with an empty HOSTNQN: {}",
            c.status
        );
        let cntlid = c.dw0 as u16;
        assert!(a.prop_set(property::CC, 1 | (6 << 16) | (4 << 20)).status.is_success());
        let mut io = Host::connect(t.addr);
        io.icreq(0);
        let c = io.fabric_connect(1, SUBNQN, "", cntlid, 0);
        assert!(c.status.is_success(), "I/O Connect with an empty HOSTNQN: {}", c.status);
        let data = pattern(4096, 9);
        assert!(io.write(8, &data).status.is_success());
        let (back, c) = io.read(8, 8);
        assert!(c.status.is_success());
        assert_eq!(back, data);
        // The controller belongs to the empty host: another host may not add queues to it.
        let mut other = Host::connect(t.addr);
        other.icreq(0);
        let c = other.fabric_connect(1, SUBNQN, HOSTNQN, cntlid, 0);
        assert_eq!((c.status.0, c.dw0), (0x8304, 0x0001_0010));
        drop((a, io, other));
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn discovery_controller_serves_the_log_and_honours_keep_alive() {
    for mode in MODES {
        let t = target(mode);
        // B06: a non-zero KATO on the discovery controller, kept alive, then abandoned.
        let (mut d, _) = Host::admin(t.addr, 0, discovery_nqn(), 2000);
        let (hdr, c) = d.command(admin_sqe(0x02, 0, (255 << 16) | 0x70, 1024), &[]);
        assert!(c.status.is_success());
        let numrec = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
        assert_eq!(numrec, 2, "discovery + sub1 on one listener");
        let (page, _) = d.command(admin_sqe(0x02, 0, (((1024 * 3 / 4) - 1) << 16) | 0x70, 3072), &[]);
        assert_eq!(&page[2048 + 256..2048 + 256 + SUBNQN.len()], SUBNQN.as_bytes());
        assert_eq!(page[2048 + 2], 2);
        let port = t.addr.port().to_string();
        assert_eq!(&page[2048 + 32..2048 + 32 + port.len()], port.as_bytes());
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(600));
            assert!(d.command(admin_sqe(0x18, 0, 0, 0), &[]).1.status.is_success());
        }
        // No more Keep Alive: torn down after KATO, within the KATO/10 check period
        // (plus scheduling margin: tests of this binary run in parallel on 2 CPUs).
        let quiet = Instant::now();
        d.expect_closed(Duration::from_millis(5000));
        let after = quiet.elapsed();
        assert!(
            after >= Duration::from_millis(1900) && after < Duration::from_millis(4000),
            "{mode}: closed after {after:?}"
        );
        assert!(common::wait(|| t.target.controller_count() == 0), "controller freed");
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn keep_alive_timeout_tears_down_every_queue_of_a_controller() {
    for mode in MODES {
        let t = target(mode);
        let (mut a, cntlid) = Host::admin(t.addr, 0, SUBNQN, 1000);
        let mut io = Host::io(t.addr, 0, cntlid);
        assert!(io.write(0, &pattern(512, 1)).status.is_success());
        // Never send Keep Alive: both queues close.
        let t0 = Instant::now();
        a.expect_closed(Duration::from_secs(3));
        io.expect_closed(Duration::from_secs(1));
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{mode}: too early, {:?}",
            t0.elapsed()
        );
        assert!(common::wait(|| t.target.controller_count() == 0));
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn keep_alive_runs_from_enable_not_from_connect() {
    let t = target(Mode::Interrupt);
    // Connected with a 1 s KATO and not enabled (a host still authenticating):
    // past KATO it is still served.
    let mut h = Host::connect(t.addr);
    h.icreq(0);
    let c = h.fabric_connect(0, SUBNQN, HOSTNQN, 0xFFFF, 1000);
    assert!(c.status.is_success());
    std::thread::sleep(Duration::from_millis(1800));
    assert!(h.prop_get(property::CSTS, 4).status.is_success(), "alive before CC.EN");
    assert_eq!(t.target.controller_count(), 1);
    // Enabled: KATO from now on; no Keep Alive, so it is torn down after KATO.
    assert!(h.prop_set(property::CC, 1 | (6 << 16) | (4 << 20)).status.is_success());
    let t0 = Instant::now();
    h.expect_closed(Duration::from_secs(3));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "too early: {:?}",
        t0.elapsed()
    );
    assert!(common::wait(|| t.target.controller_count() == 0));
    t.reactors.shutdown().unwrap();
}

#[test]
fn reads_reach_a_host_that_reads_late() {
    for mode in MODES {
        let t = target(mode);
        let (_a, cntlid) = Host::admin(t.addr, 0, SUBNQN, 0);
        let mut io = Host::io_on(Host::connect_small_rcvbuf(t.addr, 4096), 0, cntlid);
        // B02: 8 reads of 128 KiB (1 MiB) outstanding; the host does not read for 500 ms.
        let mut all = Vec::new();
        for i in 0..8u16 {
            let mut sqe = Host::rw_sqe(0x02, 1, u64::from(i) * 256, 256, 131072, sgl_id::TRANSPORT_DATA_BLOCK);
            sqe.set_cid(100 + i);
            all.extend(io.capsule_bytes(&sqe, &[]));
        }
        io.send(&all);
        let cpu0 = thread_cpu_of_target(&t);
        std::thread::sleep(Duration::from_millis(500));
        let cpu_sleeping = thread_cpu_of_target(&t) - cpu0;
        let t0 = Instant::now();
        let mut done = 0;
        let mut bytes = 0usize;
        while done < 8 {
            let p = io.recv().expect("data");
            match PduType::from_u8(p.ch.pdu_type) {
                Some(PduType::C2HData) => {
                    bytes += p.data_header().datal as usize;
                    // c2h_success (the default): the last PDU's SUCCESS flag completes the read.
                    done += usize::from(p.ch.flags & flags::SUCCESS != 0);
                }
                Some(PduType::CapsuleResp) => {
                    assert!(p.cqe().status.is_success());
                    done += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(bytes, 8 * 131072);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{mode}: drained in {:?}",
            t0.elapsed()
        );
        if mode == Mode::Interrupt {
            // Waiting on EPOLLOUT, not spinning: well under 5 % of 500 ms.
            assert!(
                cpu_sleeping < 25_000_000,
                "reactors used {} ms while the host slept",
                cpu_sleeping / 1_000_000
            );
        }
        t.reactors.shutdown().unwrap();
    }
}

/// Reads of a RAM bdev go out from its memory, a send at a time: a payload
/// the socket takes only part of must keep the rest as it was (no 512-byte
/// block half old, half new), while payloads not yet started are read when
/// sent. A host that reads late (a 4 KiB receive buffer) has 31 reads of
/// 128 KiB outstanding (more than the target's socket buffer takes, 4 MiB at
/// most) while another queue overwrites the same blocks twice; every block
/// that arrives must hold one of the three patterns whole.
#[test]
fn reads_sent_in_pieces_never_tear_a_block_that_writes_change_meanwhile() {
    const LEN: usize = 131_072;
    const READS: u16 = 31;
    let t = target(Mode::Poll);
    let (_a, cntlid) = Host::admin(t.addr, 0, SUBNQN, 0);
    let mut writer = Host::io(t.addr, 0, cntlid);
    let blocks = (LEN / 512) as u64;
    for i in 0..u64::from(READS) {
        assert!(writer.write(i * blocks, &[0xA1; LEN]).status.is_success());
    }
    let mut late = Host::connect_small_rcvbuf(t.addr, 4096);
    late.icreq(0);
    let c = late.fabric_connect(2, SUBNQN, HOSTNQN, cntlid, 0);
    assert!(c.status.is_success(), "I/O Connect of QID 2: {}", c.status);
    let mut all = Vec::new();
    for i in 0..READS {
        let mut sqe = Host::rw_sqe(
            0x02,
            1,
            u64::from(i) * blocks,
            blocks as u32,
            LEN as u32,
            sgl_id::TRANSPORT_DATA_BLOCK,
        );
        sqe.set_cid(200 + i);
        all.extend(late.capsule_bytes(&sqe, &[]));
    }
    late.send(&all);
    // Let the target send what the sockets take, then change every block twice.
    std::thread::sleep(Duration::from_millis(100));
    for pattern in [0xB2u8, 0xC3] {
        for i in 0..u64::from(READS) {
            assert!(writer.write(i * blocks, &[pattern; LEN]).status.is_success());
        }
    }
    let mut data = vec![Vec::new(); usize::from(READS)];
    let mut done = 0;
    while done < READS {
        let p = late.recv().expect("data");
        match PduType::from_u8(p.ch.pdu_type) {
            Some(PduType::C2HData) => {
                let h = p.data_header();
                let slot = &mut data[usize::from(h.cccid - 200)];
                assert_eq!(h.datao as usize, slot.len(), "in order");
                let pdo = usize::from(p.ch.pdo);
                slot.extend_from_slice(&p.bytes[pdo..pdo + h.datal as usize]);
                done += u16::from(p.ch.flags & flags::SUCCESS != 0);
            }
            Some(PduType::CapsuleResp) => {
                assert!(p.cqe().status.is_success());
                done += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut seen = [0usize; 3];
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d.len(), LEN, "read {i}");
        for (b, block) in d.chunks(512).enumerate() {
            let k = [0xA1, 0xB2, 0xC3].iter().position(|&v| v == block[0]);
            assert!(
                k.is_some() && block.iter().all(|&x| x == block[0]),
                "read {i} block {b} is torn or foreign: starts {:02x?}",
                &block[..8]
            );
            seen[k.unwrap_or(0)] += 1;
        }
    }
    // What went out before the writes is the first pattern; the rest the last.
    eprintln!("blocks of each pattern: {seen:?}");
    assert!(seen[0] > 0, "something was sent before the writes: {seen:?}");
    assert!(seen[2] > 0, "something was sent after them: {seen:?}");
    t.reactors.shutdown().unwrap();
}

fn thread_cpu_of_target(t: &Tgt) -> u64 {
    t.reactors.handles().iter().map(|h| h.stats().thread_cpu_ns).sum()
}

/// `max_io_qpairs_per_ctrlr`, `max_queue_depth` and `max_aq_depth` are in
/// force: Number of Queues grants at most the limit, a Connect of a QID
/// beyond it is refused with Connect Invalid Parameters naming QID, CAP.MQES
/// and MAXCMD follow the depth, and a deeper queue is refused.
#[test]
fn transport_limits_on_queues_are_in_force() {
    use lull_proto::fabrics::{InvalidParameter, connect_offset};
    let t = target(Mode::Interrupt);
    t.target.set_max_io_queues(2);
    t.target.set_queue_depths(64, 32);
    let (mut a, cntlid) = Host::admin(t.addr, 0, SUBNQN, 0);
    let cap = a.prop_get(property::CAP, 8);
    assert_eq!(cap.dw0 & 0xFFFF, 63, "MQES");
    let (id, _) = a.command(admin_sqe(0x06, 0, 1, 4096), &[]);
    assert_eq!(u16::from_le_bytes([id[514], id[515]]), 64, "MAXCMD");
    // Before Set Features: the limit (0's based).
    assert_eq!(a.command(admin_sqe(0x0A, 0, 0x07, 0), &[]).1.dw0, 1 << 16 | 1);
    let mut nq = admin_sqe(0x09, 0, 0x07, 0);
    nq.set_cdw(11, 7 << 16 | 7);
    assert_eq!(a.command(nq, &[]).1.dw0, 1 << 16 | 1, "8 asked, 2 granted");
    let io = |qid: u16, sqsize: u16| {
        let mut h = Host::connect(t.addr);
        h.icreq(0);
        let sqe = Host::connect_sqe(qid, sqsize, 0, 1024, sgl_id::DATA_BLOCK_OFFSET);
        let c = h.command(sqe, &Host::connect_data(SUBNQN, HOSTNQN, cntlid)).1;
        (h, c)
    };
    let (_q1, c) = io(1, 63);
    assert!(c.status.is_success(), "QID 1: {}", c.status);
    let (_q2, c) = io(2, 31);
    assert!(c.status.is_success(), "QID 2: {}", c.status);
    // Beyond the granted queues: Invalid Queue Identifier, as SPDK and nvmet answer.
    let (_q3, c) = io(3, 31);
    assert_eq!(c.status, status::INVALID_QUEUE_IDENTIFIER.with_dnr());
    // A QID already connected: the same.
    let (_q1b, c) = io(1, 31);
    assert_eq!(c.status, status::INVALID_QUEUE_IDENTIFIER.with_dnr());
    // 65 entries on a queue of at most 64.
    let (_q, c) = io(2, 64);
    assert_eq!(c.status, status::CONNECT_INVALID_PARAMETERS.with_dnr());
    assert_eq!(c.dw0, InvalidParameter::sqe(connect_offset::SQSIZE).dw0());
    drop(a);
    t.reactors.shutdown().unwrap();
}
