//! The target fault cases (B08, B09, B10, B12, B15, B30) sent over
//! loopback to a running target in poll and interrupt mode: the exact
//! C2HTermReq, the connection closed promptly, nothing leaked, and a healthy
//! connection beside it unaffected.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use lull_proto::nvme::{Sgl, sgl_id};
use lull_proto::pdu::{DataHeader, PduType, flags};
use lull_reactor::Mode;

const MODES: [Mode; 2] = [Mode::Poll, Mode::Interrupt];

/// Builds an H2CData PDU for a connection and TTAG.
type MakePdu = Box<dyn Fn(&Host, u16) -> Vec<u8>>;

fn r2t_write(h: &mut Host) -> u16 {
    let sqe = Host::rw_sqe(0x01, 1, 0, 16, 0x2000, sgl_id::TRANSPORT_DATA_BLOCK);
    let mut sqe = sqe;
    sqe.set_cid(0x10);
    let b = h.capsule_bytes(&sqe, &[]);
    h.send(&b);
    let p = h.recv().expect("R2T");
    assert_eq!(p.ch.pdu_type, PduType::R2T as u8);
    let d = p.data_header();
    assert_eq!((d.cccid, d.datao, d.datal), (0x10, 0, 0x2000));
    d.ttag
}

fn h2c(h: &Host, cccid: u16, ttag: u16, datao: u32, data: &[u8], last: bool) -> Vec<u8> {
    let mut v = Vec::new();
    lull_proto::pdu::encode_data_pdu(
        &mut v,
        PduType::H2CData,
        DataHeader {
            cccid,
            ttag,
            datao,
            datal: 0,
        },
        data,
        if last { flags::LAST_PDU } else { 0 },
        h.d,
        0,
    );
    v
}

/// A host past ICReq and admin Connect with an I/O queue Connect done too.
fn io_host(t: &Tgt, dgst: u8) -> Host {
    let (_a, cntlid) = Host::admin(t.addr, 0, SUBNQN, 0);
    // The admin queue may close: the I/O queue is what the case uses.
    std::mem::forget(_a);
    Host::io(t.addr, dgst, cntlid)
}

#[test]
fn b08_b09_framing_errors_over_the_wire() {
    for mode in MODES {
        let t = target(mode);
        let mut healthy = Healthy::new(&t);
        // B08: a second ICReq.
        let mut h = Host::connect(t.addr);
        h.icreq(0);
        h.send(&icreq_bytes(0));
        h.expect_fatal(2, 0);
        // B08: a CapsuleCmd first.
        let mut h = Host::connect(t.addr);
        let b = h.capsule_bytes(&Host::rw_sqe(0x02, 1, 0, 1, 512, sgl_id::TRANSPORT_DATA_BLOCK), &[]);
        h.send(&b);
        h.expect_fatal(2, 0);
        // B09 (1)-(4).
        for (at, v, fes, fei) in [(2usize, 0x18u8, 1u16, 2u32), (8, 1, 6, 8), (10, 0x20, 1, 10)] {
            let mut h = Host::connect(t.addr);
            let mut b = icreq_bytes(0);
            b[at] = v;
            h.send(&b);
            h.expect_fatal(fes, fei);
        }
        let mut h = Host::connect(t.addr);
        let mut b = icreq_bytes(0);
        b[4] = 0x7F;
        h.send(&b[..0x7F]);
        h.expect_fatal(1, 4);
        // B09 (5): reserved PDU type after a good handshake.
        let mut h = Host::connect(t.addr);
        h.icreq(0);
        h.send(&[0x08, 0, 8, 0, 8, 0, 0, 0]);
        h.expect_fatal(1, 0);
        healthy.check();
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn b10_bad_h2c_data_writes_nothing() {
    for mode in MODES {
        let t = target(mode);
        let mut healthy = Healthy::new(&t);
        // Known contents at LBA 0 first.
        healthy.io.write(0, &[0x5Au8; 8192]);
        let data = vec![0xAAu8; 0x2000];
        let cases: Vec<(MakePdu, u16, u32)> = vec![
            (
                Box::new(|h: &Host, _t| h2c(h, 0x10, 0xFFFF, 0, &[0xAA; 0x2000], true)),
                1,
                10,
            ),
            (Box::new(|h: &Host, t| h2c(h, 0x11, t, 0, &[0xAA; 0x2000], true)), 1, 8),
            (
                Box::new(|h: &Host, t| h2c(h, 0x10, t, 0x1000, &[0xAA; 0x1000], true)),
                4,
                0,
            ),
            (Box::new(|h: &Host, t| h2c(h, 0x10, t, 0, &[0xAA; 0x4000], true)), 4, 0),
            (
                Box::new(|h: &Host, t| {
                    let mut p = h2c(h, 0x10, t, 0, &[0xAA; 100], true);
                    p[16..20].copy_from_slice(&0x2000u32.to_le_bytes());
                    p
                }),
                1,
                4,
            ),
        ];
        for (make, fes, fei) in cases {
            let mut h = io_host(&t, 0);
            let ttag = r2t_write(&mut h);
            let b = make(&h, ttag);
            h.send(&b);
            h.expect_fatal(fes, fei);
        }
        // (f) the same range twice.
        let mut h = io_host(&t, 0);
        let ttag = r2t_write(&mut h);
        let b = h2c(&h, 0x10, ttag, 0, &data[..0x1000], false);
        h.send(&b);
        h.send(&b);
        h.expect_fatal(4, 0);
        // Nothing reached NS1.
        let (back, _) = healthy.io.read(0, 16);
        assert!(
            back.iter().all(|&b| b == 0x5A),
            "{mode}: a refused write reached the namespace"
        );
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn b12_oversized_datal_is_refused_at_once() {
    for mode in MODES {
        let t = target(mode);
        let mut h = io_host(&t, 0);
        let ttag = r2t_write(&mut h);
        let mut hdr = [0u8; 24];
        hdr[..8].copy_from_slice(&[0x06, 0x04, 0x18, 0x18, 0x08, 0x00, 0x00, 0x80]);
        hdr[8..10].copy_from_slice(&0x10u16.to_le_bytes());
        hdr[10..12].copy_from_slice(&ttag.to_le_bytes());
        hdr[16..20].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
        let t0 = Instant::now();
        h.send(&hdr);
        let p = h.recv().expect("C2HTermReq");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{mode}: TermReq after {:?}",
            t0.elapsed()
        );
        assert_eq!(p.ch.pdu_type, PduType::C2HTermReq as u8);
        assert_eq!(u16::from_le_bytes([p.bytes[8], p.bytes[9]]), 5);
        assert_eq!(&p.bytes[24..48], &hdr);
        // Keep sending zeroes: the target has closed and stops taking them.
        h.s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let zeros = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        let t1 = Instant::now();
        while t1.elapsed() < Duration::from_secs(2) {
            match h.s.write(&zeros) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(sent < 8 << 20, "{mode}: the target kept taking bytes ({sent})");
        t.reactors.shutdown().unwrap();
    }
}

#[test]
fn b15_b30_digest_and_length_errors() {
    for mode in MODES {
        let t = target(mode);
        let mut healthy = Healthy::new(&t);
        // B15 (a) / B30: a wrong header digest.
        let mut h = io_host(&t, 1);
        let mut b = h.capsule_bytes(&Host::rw_sqe(0x02, 1, 0, 1, 512, sgl_id::TRANSPORT_DATA_BLOCK), &[]);
        b[72] ^= 0xFF;
        h.send(&b);
        h.expect_fatal(3, 0);
        // B15 (c): the SGL promises more in-capsule data than is there; status, queue lives.
        let mut h = io_host(&t, 0);
        let mut sqe = Host::rw_sqe(0x01, 1, 0, 8, 0x1000, sgl_id::DATA_BLOCK_OFFSET);
        sqe.set_cid(9);
        sqe.set_sgl1(Sgl {
            address: 0,
            length: 0x1000,
            id: sgl_id::DATA_BLOCK_OFFSET,
        });
        let b = h.capsule_bytes(&sqe, &[0u8; 0x800]);
        h.send(&b);
        assert_eq!(h.recv().unwrap().cqe().status.0, 0x8004);
        assert!(h.read(0, 1).1.status.is_success(), "queue still works");
        // A data digest error: Transient Transport Error, queue lives.
        let mut h = io_host(&t, 2);
        let mut sqe = Host::rw_sqe(0x01, 1, 0, 1, 512, sgl_id::DATA_BLOCK_OFFSET);
        sqe.set_cid(3);
        let mut b = h.capsule_bytes(&sqe, &[1u8; 512]);
        let n = b.len();
        b[n - 1] ^= 1;
        h.send(&b);
        assert_eq!(h.recv().unwrap().cqe().status.0, 0x0044);
        assert!(h.read(0, 1).1.status.is_success());
        healthy.check();
        t.reactors.shutdown().unwrap();
    }
}
