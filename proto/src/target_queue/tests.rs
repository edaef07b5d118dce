//! Byte-level tests of the target queue, including the target fault cases
//! (B08, B09, B10, B12, B15, B16's transport part, B20, B30).

use super::*;
use crate::nvme::{Sgl, io_opc};
use crate::pdu::{CommonHeader, TermReq, encode_data_pdu};

const ICREQ0: [u8; 8] = [0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00];

fn icreq(dgst: u8) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[..8].copy_from_slice(&ICREQ0);
    b[11] = dgst;
    b
}

/// A CID no test leaves outstanding.
const NOT_OUTSTANDING: u16 = 0xFFFF;

/// What a successful Connect establishes, applied as the engine applies it
/// (a response for a CID not outstanding: nothing is queued).
fn connect(q: &mut TargetQueue, qid: u16, sq_entries: u32, sq_flow_control_disabled: bool) {
    let before = q.pending_send().len();
    let r = Response::ok(NOT_OUTSTANDING).with_connected(QueueParams {
        qid,
        sq_entries,
        sq_flow_control_disabled,
    });
    assert!(!q.respond(r), "no such command");
    assert_eq!(q.pending_send().len(), before, "nothing queued");
}

/// A live I/O queue of a host that keeps SQ flow control, on a target that
/// sets the C2HData SUCCESS flag only where the specification's rule allows
/// it (`c2h_success` off), so a read ends with a CapsuleResp carrying SQHD.
fn live(dgst: u8) -> TargetQueue {
    live_with(dgst, false)
}

fn live_with(dgst: u8, c2h_success: bool) -> TargetQueue {
    let mut q = TargetQueue::new(TargetQueueConfig {
        c2h_success,
        ..TargetQueueConfig::default()
    });
    q.feed(&icreq(dgst));
    q.process().unwrap();
    let resp = q.pending_send().to_vec();
    q.sent(resp.len());
    q.take_events();
    connect(&mut q, 1, 128, false);
    q
}

/// A CapsuleCmd PDU: SQE plus optional in-capsule data, with digests as negotiated.
fn capsule(sqe: &Sqe, data: &[u8], d: Digests) -> Vec<u8> {
    let hd = if d.header { 4 } else { 0 };
    let dd = if d.data && !data.is_empty() { 4 } else { 0 };
    let pdo = if data.is_empty() { 0 } else { 72 + hd };
    let plen = 72 + hd + data.len() + dd;
    let mut b = vec![0u8; 72];
    let mut f = 0;
    if hd > 0 {
        f |= flags::HDGSTF;
    }
    if dd > 0 {
        f |= flags::DDGSTF;
    }
    CommonHeader {
        pdu_type: 4,
        flags: f,
        hlen: 72,
        pdo: pdo as u8,
        plen: plen as u32,
    }
    .write(&mut b);
    b[8..72].copy_from_slice(&sqe.0);
    if hd > 0 {
        let c = crate::pdu::crc32c(&b[..72]);
        b.extend_from_slice(&c.to_le_bytes());
    }
    b.extend_from_slice(data);
    if dd > 0 {
        b.extend_from_slice(&crate::pdu::crc32c(data).to_le_bytes());
    }
    b
}

fn h2c(cccid: u16, ttag: u16, datao: u32, data: &[u8], last: bool, d: Digests) -> Vec<u8> {
    let mut v = Vec::new();
    let h = DataHeader {
        cccid,
        ttag,
        datao,
        datal: 0,
    };
    encode_data_pdu(
        &mut v,
        PduType::H2CData,
        h,
        data,
        if last { flags::LAST_PDU } else { 0 },
        d,
        0,
    );
    v
}

fn write_sqe(cid: u16, nlb0: u32, sgl: Sgl) -> Sqe {
    let mut s = Sqe([0; 64]);
    s.0[0] = io_opc::WRITE;
    s.set_cid(cid);
    s.0[4] = 1;
    s.set_cdw(12, nlb0);
    s.set_sgl1(sgl);
    s
}

fn read_sqe(cid: u16, len: u32) -> Sqe {
    let mut s = Sqe([0; 64]);
    s.0[0] = io_opc::READ;
    s.set_cid(cid);
    s.0[4] = 1;
    s.set_sgl1(Sgl {
        address: 0,
        length: len,
        id: sgl_id::TRANSPORT_DATA_BLOCK,
    });
    s
}

/// Feeds `bytes`, expects a fatal error, and checks the C2HTermReq on the wire.
fn expect_fatal(q: &mut TargetQueue, bytes: &[u8], fes: Fes, fei: u32) -> Vec<u8> {
    q.feed(bytes);
    let e = q.process().expect_err("fatal error expected");
    assert_eq!((e.fes, e.fei), (fes, fei), "got {e}");
    assert!(q.is_terminated());
    let out = q.pending_send().to_vec();
    // Exactly one TermReq is the last thing sent.
    let term = last_pdu(&out);
    let ch = CommonHeader::parse(term).unwrap();
    assert_eq!(ch.pdu_type, PduType::C2HTermReq as u8);
    assert!((24..=152).contains(&(ch.plen as usize)));
    assert_eq!(ch.plen as usize, term.len());
    let t = TermReq::parse(term);
    assert_eq!((t.fes, t.fei), (fes as u16, fei));
    // Nothing more is parsed, whatever follows.
    q.feed(&icreq(0));
    assert!(q.process().is_ok());
    assert!(q.take_requests().is_empty());
    term.to_vec()
}

/// Splits a byte stream into PDUs by PLEN and returns the last.
fn last_pdu(mut b: &[u8]) -> &[u8] {
    loop {
        let plen = CommonHeader::parse(b).unwrap().plen as usize;
        if plen >= b.len() {
            return b;
        }
        b = &b[plen..];
    }
}

fn pdus(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let plen = CommonHeader::parse(b).unwrap().plen as usize;
        v.push(b[..plen].to_vec());
        b = &b[plen..];
    }
    v
}

#[test]
fn icreq_gets_icresp_with_the_requested_digests() {
    // B30: every DGST combination is granted as asked.
    for dgst in 0..4u8 {
        let mut q = TargetQueue::new(TargetQueueConfig::default());
        q.feed(&icreq(dgst));
        q.process().unwrap();
        let r = q.pending_send();
        assert_eq!(r.len(), 128);
        assert_eq!(&r[..8], &[0x01, 0, 0x80, 0, 0x80, 0, 0, 0]);
        assert_eq!(&r[8..11], &[0, 0, 0], "PFV 0, CPDA 0");
        assert_eq!(r[11], dgst);
        assert_eq!(le32(&r, 12), 131072);
        assert!(r[16..].iter().all(|&b| b == 0));
        assert_eq!(
            q.take_events(),
            vec![QueueEvent::Initialized {
                digests: Digests::from_dgst(dgst)
            }]
        );
    }
    // A target that does not allow digests grants none.
    let cfg = TargetQueueConfig {
        allow_header_digest: false,
        allow_data_digest: false,
        ..Default::default()
    };
    let mut q = TargetQueue::new(cfg);
    q.feed(&icreq(3));
    q.process().unwrap();
    assert_eq!(q.pending_send()[11], 0);
}

#[test]
fn b08_pdu_sequence_errors() {
    let mut q = live(0);
    let term = expect_fatal(&mut q, &icreq(0), Fes::PduSequenceError, 0);
    // The offending header is copied: 24 + 128 bytes of the ICReq.
    assert_eq!(term.len(), 152);
    assert_eq!(&term[24..32], &ICREQ0);

    // CapsuleCmd before any ICReq.
    let mut q = TargetQueue::new(TargetQueueConfig::default());
    let sqe = read_sqe(1, 512);
    expect_fatal(
        &mut q,
        &capsule(&sqe, &[], Digests::default()),
        Fes::PduSequenceError,
        0,
    );
    assert!(q.pending_send().len() <= 152, "no ICResp was sent");
}

#[test]
fn b09_header_length_and_field_validation() {
    let mut b = icreq(0);
    b[2] = 0x18;
    expect_fatal(
        &mut TargetQueue::new(Default::default()),
        &b,
        Fes::InvalidHeaderField,
        2,
    );
    let mut b = icreq(0);
    b[4] = 0x7F;
    expect_fatal(
        &mut TargetQueue::new(Default::default()),
        &b[..127],
        Fes::InvalidHeaderField,
        4,
    );
    let mut b = icreq(0);
    b[8] = 1;
    expect_fatal(
        &mut TargetQueue::new(Default::default()),
        &b,
        Fes::UnsupportedParameter,
        8,
    );
    let mut b = icreq(0);
    b[10] = 0x20;
    expect_fatal(
        &mut TargetQueue::new(Default::default()),
        &b,
        Fes::InvalidHeaderField,
        10,
    );

    let d = Digests::default();
    let w = write_sqe(
        1,
        0,
        Sgl {
            address: 0,
            length: 512,
            id: sgl_id::DATA_BLOCK_OFFSET,
        },
    );
    let mut c = capsule(&w, &[0u8; 512], d);
    c[2] = 0x10;
    expect_fatal(&mut live(0), &c, Fes::InvalidHeaderField, 2);
    let mut c = capsule(&w, &[0u8; 512], d);
    c[3] = 0x10;
    expect_fatal(&mut live(0), &c, Fes::InvalidHeaderField, 3);
    let mut c = capsule(&w, &[0u8; 512], d);
    c[3] = 76;
    expect_fatal(&mut live(0), &c, Fes::InvalidHeaderField, 3);
    let mut c = capsule(&w, &[], d);
    c[4..8].copy_from_slice(&0x40u32.to_le_bytes());
    expect_fatal(&mut live(0), &c, Fes::InvalidHeaderField, 4);
    let mut c = capsule(&w, &[], d);
    c[0] = 0x08;
    expect_fatal(&mut live(0), &c, Fes::InvalidHeaderField, 0);
    // B01's bytes: unknown PDU-Type 0xFF.
    expect_fatal(&mut live(0), &[0xFF, 0, 8, 0, 8, 0, 0, 0], Fes::InvalidHeaderField, 0);
    // A controller-to-host type from the host.
    let mut c = capsule(&w, &[], d);
    c[0] = PduType::CapsuleResp as u8;
    c[2] = 24;
    expect_fatal(&mut live(0), &c, Fes::InvalidHeaderField, 0);
    // HDGSTF set without a negotiated header digest.
    let mut c = capsule(&w, &[], d);
    c[1] = flags::HDGSTF;
    expect_fatal(&mut live(0), &c, Fes::InvalidHeaderField, 1);
}

#[test]
fn in_capsule_write_and_r2t_write_deliver_the_data() {
    for dgst in 0..4u8 {
        let d = Digests::from_dgst(dgst);
        let mut q = live(dgst);
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let w = write_sqe(
            7,
            7,
            Sgl {
                address: 0,
                length: 4096,
                id: sgl_id::DATA_BLOCK_OFFSET,
            },
        );
        q.feed(&capsule(&w, &data, d));
        q.process().unwrap();
        let cmds = q.take_requests();
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].sqe.cid(), 7);
        assert_eq!(cmds[0].data, data);

        // 8 KiB by R2T, answered in two H2CData PDUs.
        let big: Vec<u8> = (0..8192u32).map(|i| (i ^ 0x5A) as u8).collect();
        let w = write_sqe(
            0x10,
            15,
            Sgl {
                address: 0,
                length: 0x2000,
                id: sgl_id::TRANSPORT_DATA_BLOCK,
            },
        );
        q.feed(&capsule(&w, &[], d));
        q.process().unwrap();
        assert!(q.take_requests().is_empty());
        let out = q.pending_send().to_vec();
        let r2t = &out[..];
        let ch = CommonHeader::parse(r2t).unwrap();
        assert_eq!(ch.pdu_type, PduType::R2T as u8);
        assert_eq!(ch.flags & flags::HDGSTF != 0, d.header);
        let h = DataHeader::parse(r2t);
        assert_eq!((h.cccid, h.datao, h.datal), (0x10, 0, 0x2000));
        q.sent(out.len());
        q.feed(&h2c(0x10, h.ttag, 0, &big[..4096], false, d));
        q.feed(&h2c(0x10, h.ttag, 4096, &big[4096..], true, d));
        q.process().unwrap();
        let cmds = q.take_requests();
        assert_eq!(cmds.len(), 1, "dgst {dgst}");
        assert_eq!(cmds[0].data, big);
        assert_eq!(q.outstanding(), 2);
        assert!(
            q.respond(
                Cqe {
                    cid: 7,
                    ..Default::default()
                }
                .into()
            )
        );
        assert!(
            q.respond(
                Cqe {
                    cid: 0x10,
                    ..Default::default()
                }
                .into()
            )
        );
        assert!(
            !q.respond(
                Cqe {
                    cid: 0x10,
                    ..Default::default()
                }
                .into()
            ),
            "completed once"
        );
        let resps = pdus(&q.pending_send());
        assert_eq!(resps.len(), 2);
        for r in &resps {
            let ch = CommonHeader::parse(r).unwrap();
            assert_eq!(ch.pdu_type, PduType::CapsuleResp as u8);
            assert_eq!(ch.plen as usize, 24 + if d.header { 4 } else { 0 });
            if d.header {
                assert_eq!(le32(r, 24), crate::pdu::crc32c(&r[..24]));
            }
        }
        let cqe = Cqe::parse(&resps[1][8..24]).unwrap();
        assert_eq!((cqe.cid, cqe.sqid, cqe.status), (0x10, 1, Status::SUCCESS));
    }
}

/// Starts an 8 KiB R2T write with CID 0x0010 and returns the queue and TTAG.
fn r2t_write() -> (TargetQueue, u16) {
    let mut q = live(0);
    let w = write_sqe(
        0x10,
        15,
        Sgl {
            address: 0,
            length: 0x2000,
            id: sgl_id::TRANSPORT_DATA_BLOCK,
        },
    );
    q.feed(&capsule(&w, &[], Digests::default()));
    q.process().unwrap();
    let ttag = DataHeader::parse(&q.pending_send()).ttag;
    let n = q.pending_send().len();
    q.sent(n);
    (q, ttag)
}

#[test]
fn b10_bad_h2c_data_headers() {
    let d = Digests::default();
    let data = vec![0xAAu8; 0x2000];
    // (a) unknown TTAG.
    let (mut q, _) = r2t_write();
    expect_fatal(
        &mut q,
        &h2c(0x10, 0xFFFF, 0, &data, true, d),
        Fes::InvalidHeaderField,
        10,
    );
    // (b) right TTAG, wrong CCCID.
    let (mut q, t) = r2t_write();
    expect_fatal(&mut q, &h2c(0x11, t, 0, &data, true, d), Fes::InvalidHeaderField, 8);
    // (c) DATAO 0x1000 where 0 is expected.
    let (mut q, t) = r2t_write();
    expect_fatal(
        &mut q,
        &h2c(0x10, t, 0x1000, &data[..0x1000], true, d),
        Fes::DataTransferOutOfRange,
        0,
    );
    // (d) DATAL 0x4000, beyond R2TL.
    let (mut q, t) = r2t_write();
    expect_fatal(
        &mut q,
        &h2c(0x10, t, 0, &[0u8; 0x4000], true, d),
        Fes::DataTransferOutOfRange,
        0,
    );
    // (e) DATAL 0x2000 but PLEN 24 + 100.
    let (mut q, t) = r2t_write();
    let mut p = h2c(0x10, t, 0, &data[..100], true, d);
    p[16..20].copy_from_slice(&0x2000u32.to_le_bytes());
    expect_fatal(&mut q, &p, Fes::InvalidHeaderField, 4);
    // (f) the same range twice.
    let (mut q, t) = r2t_write();
    q.feed(&h2c(0x10, t, 0, &data[..0x1000], false, d));
    q.process().unwrap();
    expect_fatal(
        &mut q,
        &h2c(0x10, t, 0, &data[..0x1000], false, d),
        Fes::DataTransferOutOfRange,
        0,
    );
    // After the last PDU the TTAG is gone: a duplicate names TTAG.
    let (mut q, t) = r2t_write();
    q.feed(&h2c(0x10, t, 0, &data, true, d));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    expect_fatal(&mut q, &h2c(0x10, t, 0, &data, true, d), Fes::InvalidHeaderField, 10);
    // LAST_PDU on a PDU that does not end the transfer.
    let (mut q, t) = r2t_write();
    expect_fatal(
        &mut q,
        &h2c(0x10, t, 0, &data[..0x1000], true, d),
        Fes::InvalidHeaderField,
        1,
    );
}

#[test]
fn b12_oversized_datal_is_refused_from_the_header_alone() {
    let (mut q, t) = r2t_write();
    let mut hdr = [0u8; 24];
    hdr[..8].copy_from_slice(&[0x06, 0x04, 0x18, 0x18, 0x08, 0x00, 0x00, 0x80]);
    hdr[8..10].copy_from_slice(&0x10u16.to_le_bytes());
    hdr[10..12].copy_from_slice(&t.to_le_bytes());
    hdr[16..20].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    // Only the 24-byte header has arrived: the decision needs nothing more.
    let term = expect_fatal(&mut q, &hdr, Fes::DataTransferLimitExceeded, 0);
    assert_eq!(&term[24..48], &hdr);
    assert_eq!(q.buffered(), 0, "nothing buffered by PLEN");
}

#[test]
fn b15_errors_in_every_receive_state_end_the_queue() {
    // (a) wrong header digest.
    let mut q = live(1);
    let mut c = capsule(
        &read_sqe(1, 512),
        &[],
        Digests {
            header: true,
            data: false,
        },
    );
    c[72] ^= 0xFF;
    expect_fatal(&mut q, &c, Fes::HeaderDigestError, 0);
    // (b) more commands than the queue has entries.
    let mut q = live(0);
    connect(&mut q, 1, 4, false);
    let mut bytes = Vec::new();
    for cid in 0..5 {
        bytes.extend(capsule(&read_sqe(cid, 512), &[], Digests::default()));
    }
    q.feed(&bytes);
    assert_eq!(q.process().unwrap_err().fes, Fes::PduSequenceError);
    assert_eq!(q.take_requests().len(), 4);
    // (c) the SGL promises 0x1000 in-capsule bytes, the capsule carries 0x800:
    // a status, with exactly PLEN consumed and the queue still working.
    let mut q = live(0);
    let w = write_sqe(
        9,
        7,
        Sgl {
            address: 0,
            length: 0x1000,
            id: sgl_id::DATA_BLOCK_OFFSET,
        },
    );
    q.feed(&capsule(&w, &[0u8; 0x800], Digests::default()));
    q.feed(&capsule(&read_sqe(10, 512), &[], Digests::default()));
    q.process().unwrap();
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    assert_eq!((cqe.cid, cqe.status.0), (9, 0x8004));
    assert_eq!(q.take_requests().len(), 1, "the next command still parses");
    // In-capsule data above the queue's limit.
    let mut q = live(0);
    let w = write_sqe(
        9,
        0,
        Sgl {
            address: 0,
            length: 0x4000,
            id: sgl_id::DATA_BLOCK_OFFSET,
        },
    );
    expect_fatal(
        &mut q,
        &capsule(&w, &[0u8; 0x4000], Digests::default()),
        Fes::DataTransferLimitExceeded,
        0,
    );
}

#[test]
fn data_digest_error_completes_with_transient_transport_error() {
    let d = Digests {
        header: false,
        data: true,
    };
    let mut q = live(2);
    let w = write_sqe(
        3,
        0,
        Sgl {
            address: 0,
            length: 512,
            id: sgl_id::DATA_BLOCK_OFFSET,
        },
    );
    let mut c = capsule(&w, &[1u8; 512], d);
    let n = c.len();
    c[n - 1] ^= 1;
    q.feed(&c);
    q.process().unwrap();
    assert!(q.take_requests().is_empty());
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    assert_eq!((cqe.cid, cqe.status.0), (3, 0x0044));
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn b20_connect_data_by_r2t_is_gathered() {
    let mut q = TargetQueue::new(TargetQueueConfig::default());
    q.feed(&icreq(0));
    q.process().unwrap();
    q.sent(128);
    let mut sqe = Sqe([0; 64]);
    crate::fabrics::ConnectCmd {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato: 30000,
    }
    .write(&mut sqe);
    sqe.set_sgl1(Sgl {
        address: 0,
        length: 0x400,
        id: sgl_id::TRANSPORT_DATA_BLOCK,
    });
    q.feed(&capsule(&sqe, &[], Digests::default()));
    q.process().unwrap();
    let h = DataHeader::parse(&q.pending_send());
    assert_eq!((h.datao, h.datal), (0, 0x400));
    q.feed(&h2c(0, h.ttag, 0, &[0x11; 0x400], true, Digests::default()));
    q.process().unwrap();
    let c = q.take_requests();
    assert_eq!(c.len(), 1);
    assert!(TargetQueue::is_fabrics_connect(&c[0].sqe));
    assert_eq!(c[0].data.len(), 0x400);
}

#[test]
fn reads_are_sent_as_c2h_data_then_capsule_resp_or_success() {
    let mut q = live(3);
    q.feed(&capsule(
        &read_sqe(5, 8192),
        &[],
        Digests {
            header: true,
            data: true,
        },
    ));
    q.process().unwrap();
    let c = q.take_requests();
    assert_eq!(c[0].c2h_len, 8192);
    let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
    assert!(q.respond(Response::with_data(
        Cqe {
            cid: 5,
            ..Default::default()
        },
        data.clone()
    )));
    let p = pdus(&q.pending_send());
    assert_eq!(p.len(), 2);
    let ch = CommonHeader::parse(&p[0]).unwrap();
    assert_eq!(ch.pdu_type, PduType::C2HData as u8);
    assert_eq!(ch.flags, flags::HDGSTF | flags::DDGSTF | flags::LAST_PDU);
    assert_eq!(ch.pdo, 28);
    assert_eq!(&p[0][28..28 + 8192], &data[..]);
    assert_eq!(le32(&p[0], 28 + 8192), crate::pdu::crc32c(&data));
    assert_eq!(CommonHeader::parse(&p[1]).unwrap().pdu_type, PduType::CapsuleResp as u8);

    // SQ flow control disabled: SUCCESS on the last C2HData and no CapsuleResp.
    let mut q = live(0);
    connect(&mut q, 1, 128, true);
    q.feed(&capsule(&read_sqe(6, 300_000), &[], Digests::default()));
    q.process().unwrap();
    let c = q.take_requests();
    assert_eq!(c[0].c2h_len, 131072, "capped at the largest transfer");
    let data = vec![9u8; 131072];
    q.respond(Response::with_data(
        Cqe {
            cid: 6,
            ..Default::default()
        },
        data,
    ));
    let p = pdus(&q.pending_send());
    assert_eq!(p.len(), 1);
    assert_eq!(
        CommonHeader::parse(&p[0]).unwrap().flags,
        flags::LAST_PDU | flags::SUCCESS
    );
    assert_eq!(q.outstanding(), 0);
}

/// A queue with small C2HData chunks and both digests, and a read of `len`
/// bytes outstanding as CID `cid`.
fn read_outstanding(cid: u16, len: u32) -> TargetQueue {
    let mut q = TargetQueue::new(TargetQueueConfig {
        c2h_chunk: 8192,
        c2h_success: false,
        ..TargetQueueConfig::default()
    });
    q.feed(&icreq(3));
    q.process().unwrap();
    let resp = q.pending_send().to_vec();
    q.sent(resp.len());
    q.take_events();
    connect(&mut q, 1, 128, false);
    let d = Digests {
        header: true,
        data: true,
    };
    q.feed(&capsule(&read_sqe(cid, len), &[], d));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    q
}

#[test]
fn data_written_in_place_goes_out_as_the_same_pdus_as_copied_data() {
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    let mut copied = read_outstanding(4, 20_000);
    assert!(copied.respond(Response::with_data(
        Cqe {
            cid: 4,
            ..Cqe::default()
        },
        data.clone()
    )));
    let mut filled = read_outstanding(4, 20_000);
    let mut offsets = Vec::new();
    let r = filled.complete_with_data_from(
        Cqe {
            cid: 4,
            ..Cqe::default()
        },
        data.len(),
        |off, dst| {
            offsets.push((off, dst.len()));
            dst.copy_from_slice(&data[off..off + dst.len()]);
            Ok::<(), ()>(())
        },
    );
    assert_eq!(r, Ok(true));
    assert_eq!(
        offsets,
        [(0, 8192), (8192, 8192), (16384, 3616)],
        "one call per PDU, in order"
    );
    assert_eq!(
        filled.pending_send(),
        copied.pending_send(),
        "headers, data and digests identical"
    );
    assert_eq!(
        pdus(&filled.pending_send()).len(),
        4,
        "three C2HData and the CapsuleResp"
    );
}

#[test]
fn read_data_sent_from_its_own_buffer_is_the_same_stream_in_any_write_sizes_and_comes_back_once_sent() {
    // Three reads (one below ATTACH_MIN, copied; two attached, one of them
    // chunked into three PDUs) and a plain completion between them. The
    // bytes a socket would take, in slices of any size, must equal what the
    // copying path produces; each attached buffer returns only after its
    // last byte is sent.
    let small: Vec<u8> = (0..1000u32).map(|i| (i * 3) as u8).collect();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 1) as u8).collect();
    let mid: Vec<u8> = (0..16384u32).map(|i| (i * 11 + 5) as u8).collect();
    let expected = {
        let mut q = read_outstanding(4, 20_000);
        q.complete_with_data(
            Cqe {
                cid: 4,
                ..Cqe::default()
            },
            &big,
        );
        q.pending_send().to_vec()
    };
    for step in [1usize, 7, 100, 4096, 8219, 1 << 20] {
        let mut q = read_outstanding(4, 20_000);
        let cap = big.capacity();
        assert!(q.respond(Response::with_data(
            Cqe {
                cid: 4,
                ..Cqe::default()
            },
            big.clone()
        )));
        assert_eq!(&q.pending_send()[..], &expected[..], "attached = copied");
        let mut got = Vec::new();
        let mut returned = Vec::new();
        while q.wants_send() {
            q.send_with(|slices| {
                assert!(!slices.is_empty());
                let mut take = step;
                let mut took = 0;
                for s in slices {
                    let k = take.min(s.len());
                    got.extend_from_slice(&s[..k]);
                    took += k;
                    take -= k;
                    if take == 0 {
                        break;
                    }
                }
                Ok(took)
            })
            .unwrap();
            returned.extend(q.take_spent_buffers().map(|b| b.capacity()));
            // The stream ends with the last data digest (4 bytes) and the
            // CapsuleResp with its header digest (28): the buffer's last byte
            // is the 33rd from the end.
            let data_end = expected.len() - 32;
            assert_eq!(
                returned.is_empty(),
                got.len() < data_end,
                "returned when its last byte is sent, not before"
            );
        }
        assert_eq!(got, expected, "step {step}");
        assert_eq!(returned, vec![cap], "the buffer comes back once, after the send");
    }
    // Mixed: a small copied read, an attached one, then another completion:
    // the order on the wire is the order of the responses.
    let mut q = read_outstanding(1, 1000);
    q.feed(&capsule(
        &read_sqe(2, 16384),
        &[],
        Digests {
            header: true,
            data: true,
        },
    ));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    q.respond(Response::with_data(
        Cqe {
            cid: 1,
            ..Cqe::default()
        },
        small.clone(),
    ));
    q.respond(Response::with_data(
        Cqe {
            cid: 2,
            ..Cqe::default()
        },
        mid.clone(),
    ));
    let p = pdus(&q.pending_send());
    assert_eq!(
        p.len(),
        5,
        "C2HData, CapsuleResp, C2HData x2 (8 KiB chunks), CapsuleResp"
    );
    let pdo = CommonHeader::parse(&p[0]).unwrap().pdo as usize;
    assert_eq!(&p[0][pdo..pdo + 1000], &small[..]);
    assert_eq!(&p[2][pdo..pdo + 8192], &mid[..8192]);
    assert_eq!(&p[3][pdo..pdo + 8192], &mid[8192..]);
    assert_eq!(
        le32(&p[3], pdo + 8192),
        crate::pdu::crc32c(&mid[8192..]),
        "digest over the attached bytes"
    );
    assert_eq!(Cqe::parse(&p[4][8..24]).unwrap().cid, 2);
}

#[test]
fn data_that_cannot_be_produced_leaves_nothing_queued_and_reuse_sends_no_stale_bytes() {
    let mut q = read_outstanding(4, 16384);
    // Something else is queued already (a completion of another command).
    q.send_cqe(Cqe {
        cid: 99,
        ..Cqe::default()
    });
    let before = q.pending_send().to_vec();
    // The second chunk fails: the first chunk's PDU must go too.
    let r = q.complete_with_data_from(
        Cqe {
            cid: 4,
            ..Cqe::default()
        },
        16384,
        |off, dst| {
            if off == 0 {
                dst.fill(0xAA);
                Ok(())
            } else {
                Err("media error")
            }
        },
    );
    assert_eq!(r, Err("media error"));
    assert_eq!(q.pending_send(), &before[..], "nothing of the failed read stays queued");
    assert_eq!(q.outstanding(), 1, "the caller completes it with a status");
    // Everything sent: the buffer's old bytes are reused, and a fill that
    // writes every byte is all that goes out.
    let n = q.pending_send().len();
    q.sent(n);
    let r = q.complete_with_data_from(
        Cqe {
            cid: 4,
            ..Cqe::default()
        },
        16384,
        |_, dst| {
            dst.fill(0x5C);
            Ok::<(), ()>(())
        },
    );
    assert_eq!(r, Ok(true));
    let p = pdus(&q.pending_send());
    for pdu in &p[..2] {
        let ch = CommonHeader::parse(pdu).unwrap();
        let data = &pdu[usize::from(ch.pdo)..usize::from(ch.pdo) + 8192];
        assert!(data.iter().all(|&b| b == 0x5C));
        assert_eq!(le32(pdu, usize::from(ch.pdo) + 8192), crate::pdu::crc32c(data));
    }
}

#[test]
fn completions_the_host_has_not_been_sent_keep_their_sq_slots() {
    // SQ of 4 entries; four reads completed, their data still queued here
    // (the host reads nothing): a fifth command overruns the queue, as the
    // host cannot have seen a slot free. Before, every further read's data
    // was queued without bound.
    let data = vec![7u8; 4096];
    let fill = |q: &mut TargetQueue| {
        for cid in 1..=4u16 {
            q.feed(&capsule(&read_sqe(cid, 4096), &[], Digests::default()));
            q.process().unwrap();
            assert_eq!(q.take_requests().len(), 1);
            assert!(q.respond(Response::with_data(
                Cqe {
                    cid,
                    ..Default::default()
                },
                data.clone()
            )));
        }
        assert_eq!(q.outstanding(), 0);
    };
    let mut q = live(0);
    connect(&mut q, 1, 4, false);
    fill(&mut q);
    expect_fatal(
        &mut q,
        &capsule(&read_sqe(1, 4096), &[], Digests::default()),
        Fes::PduSequenceError,
        0,
    );
    // A conflicting CID's answer holds its slot the same way.
    let mut q = live(0);
    connect(&mut q, 1, 4, false);
    q.feed(&capsule(&read_sqe(9, 4096), &[], Digests::default()));
    for _ in 0..3 {
        q.feed(&capsule(&read_sqe(9, 4096), &[], Digests::default()));
    }
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    expect_fatal(
        &mut q,
        &capsule(&read_sqe(10, 4096), &[], Digests::default()),
        Fes::PduSequenceError,
        0,
    );
    // Once the completions went out (in pieces), their slots are free again.
    let mut q = live(0);
    connect(&mut q, 1, 4, false);
    fill(&mut q);
    let n = q.pending_send().len();
    q.sent(n - 1);
    for cid in 1..=3u16 {
        q.feed(&capsule(&read_sqe(cid, 4096), &[], Digests::default()));
    }
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 3, "three slots free");
    q.feed(&capsule(&read_sqe(4, 4096), &[], Digests::default()));
    assert!(
        q.process().is_err(),
        "the fourth completion's last byte is not sent yet"
    );
    let mut q = live(0);
    connect(&mut q, 1, 4, false);
    fill(&mut q);
    let n = q.pending_send().len();
    q.sent(n);
    for cid in 1..=4u16 {
        q.feed(&capsule(&read_sqe(cid, 4096), &[], Digests::default()));
    }
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 4);
}

#[test]
fn cid_conflict_is_answered_without_disturbing_the_first() {
    let mut q = live(0);
    q.feed(&capsule(&read_sqe(1, 512), &[], Digests::default()));
    q.feed(&capsule(&read_sqe(1, 512), &[], Digests::default()));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    assert_eq!(cqe.status, status::COMMAND_ID_CONFLICT.with_dnr());
    assert_eq!(q.outstanding(), 1);
}

#[test]
fn an_admin_command_may_take_over_an_abandoned_aer_cid() {
    let mut q = live(0);
    connect(&mut q, 0, 32, false);
    let mut aer = Sqe([0; 64]);
    aer.0[0] = admin_opc::ASYNC_EVENT_REQUEST;
    aer.set_cid(3);
    q.feed(&capsule(&aer, &[], Digests::default()));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    // The host forgot the AER and reuses CID 3 (SPDK's shutdown Property Get):
    // the command is delivered, not refused.
    let mut get = Sqe([0; 64]);
    get.0[0] = admin_opc::FABRICS;
    get.0[4] = crate::fabrics::fctype::PROPERTY_GET;
    get.set_cid(3);
    q.feed(&capsule(&get, &[], Digests::default()));
    q.process().unwrap();
    let cmds = q.take_requests();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].sqe.opc(), admin_opc::FABRICS);
    assert!(!q.wants_send(), "no Command ID Conflict was sent");
    assert_eq!(q.take_events(), vec![QueueEvent::AerCidTakenOver { cid: 3 }]);
    assert_eq!(q.outstanding(), 1);
    // But a CID held by any other admin command still conflicts.
    q.feed(&capsule(&get, &[], Digests::default()));
    q.process().unwrap();
    assert!(q.take_requests().is_empty());
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    assert_eq!(cqe.status, status::COMMAND_ID_CONFLICT.with_dnr());
}

#[test]
fn an_io_command_never_takes_over_a_cid() {
    let mut q = live(0);
    let mut aer = Sqe([0; 64]);
    aer.0[0] = admin_opc::ASYNC_EVENT_REQUEST;
    aer.set_cid(9);
    q.feed(&capsule(&aer, &[], Digests::default()));
    q.feed(&capsule(&read_sqe(9, 512), &[], Digests::default()));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    assert_eq!(cqe.status, status::COMMAND_ID_CONFLICT.with_dnr());
}

#[test]
fn host_term_req_ends_the_queue() {
    let mut q = live(0);
    let mut v = Vec::new();
    crate::pdu::encode_term_req(&mut v, PduType::H2CTermReq, FatalError::field(4), &[0; 24]);
    q.feed(&v);
    q.process().unwrap();
    assert_eq!(
        q.take_events(),
        vec![QueueEvent::HostTerminated(TermReq { fes: 1, fei: 4 })]
    );
    assert!(q.is_terminated());
}

mod framing {
    use super::*;
    use proptest::prelude::*;

    /// A session: handshake, in-capsule writes, an R2T write, reads.
    fn session(dgst: u8) -> (Vec<u8>, Vec<u8>) {
        let d = Digests::from_dgst(dgst);
        let mut host = icreq(dgst);
        for cid in 0..4u16 {
            let w = write_sqe(
                cid,
                0,
                Sgl {
                    address: 0,
                    length: 512,
                    id: sgl_id::DATA_BLOCK_OFFSET,
                },
            );
            host.extend(capsule(&w, &[cid as u8; 512], d));
        }
        host.extend(capsule(&read_sqe(9, 4096), &[], d));
        let w = write_sqe(
            0x20,
            15,
            Sgl {
                address: 0,
                length: 0x2000,
                id: sgl_id::TRANSPORT_DATA_BLOCK,
            },
        );
        host.extend(capsule(&w, &[], d));
        // TTAG 0: the first transfer slot.
        host.extend(h2c(0x20, 0, 0, &[0x77; 0x1000], false, d));
        host.extend(h2c(0x20, 0, 0x1000, &[0x78; 0x1000], true, d));
        let mut whole = TargetQueue::new(TargetQueueConfig::default());
        whole.feed(&host);
        whole.process().unwrap();
        let cmds: Vec<u8> = whole.take_requests().iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(cmds.len(), 4 * 512 + 0x2000);
        (host, cmds)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// B09 (6): the parser never depends on segment boundaries.
        #[test]
        fn any_segmentation_gives_the_same_commands(dgst in 0u8..4, cuts in proptest::collection::vec(1usize..300, 1..64)) {
            let (host, expected) = session(dgst);
            let mut q = TargetQueue::new(TargetQueueConfig::default());
            let mut at = 0;
            let mut got = Vec::new();
            let mut i = 0;
            while at < host.len() {
                let n = cuts[i % cuts.len()].min(host.len() - at);
                q.feed(&host[at..at + n]);
                q.process().unwrap();
                got.extend(q.take_requests().iter().flat_map(|c| c.data.clone()));
                at += n;
                i += 1;
            }
            prop_assert_eq!(got, expected);
        }

        /// Arbitrary bytes after a good handshake never panic, and an error
        /// always leaves exactly one well-formed C2HTermReq at the end.
        #[test]
        fn garbage_never_panics(dgst in 0u8..4, junk in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut q = live(dgst);
            q.feed(&junk);
            if let Err(e) = q.process() {
                let out = q.pending_send().to_vec();
                let t = last_pdu(&out);
                prop_assert_eq!(t[0], PduType::C2HTermReq as u8);
                prop_assert_eq!(TermReq::parse(t).fes, e.fes as u16);
            }
            prop_assert!(q.buffered() <= junk.len());
        }
    }
}

#[test]
fn in_capsule_sgl_offset_near_u64_max_is_a_status_not_a_panic() {
    // Found by the fuzzer: SGL address + length overflowed.
    let mut q = live(0);
    let w = write_sqe(
        4,
        0,
        Sgl {
            address: u64::MAX - 10,
            length: 512,
            id: sgl_id::DATA_BLOCK_OFFSET,
        },
    );
    q.feed(&capsule(&w, &[0u8; 512], Digests::default()));
    q.process().unwrap();
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    assert_eq!((cqe.cid, cqe.status), (4, status::INVALID_FIELD.with_dnr()));
}

#[test]
fn term_req_copies_the_offending_header_for_every_kind_of_error() {
    // An error found while handling the PDU (PFV) copies that PDU's header,
    // not what follows it.
    let mut b = icreq(0);
    b[8] = 1;
    let mut q = TargetQueue::new(TargetQueueConfig::default());
    let mut stream = b.clone();
    stream.extend([0xFFu8; 64]);
    let term = expect_fatal(&mut q, &stream, Fes::UnsupportedParameter, 8);
    assert_eq!(&term[24..24 + 128], &b[..]);
}

#[test]
fn in_capsule_data_must_match_the_sgl() {
    // 1024 bytes carried, 512 described: refused, the queue goes on.
    let mut q = live(0);
    let w = write_sqe(
        6,
        0,
        Sgl {
            address: 0,
            length: 512,
            id: sgl_id::DATA_BLOCK_OFFSET,
        },
    );
    q.feed(&capsule(&w, &[0u8; 1024], Digests::default()));
    q.process().unwrap();
    assert!(q.take_requests().is_empty());
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    assert_eq!((cqe.cid, cqe.status), (6, status::INVALID_FIELD.with_dnr()));
}

/// Feeds `bytes` as a connection reads them from a socket that hands over
/// at most `chunk` bytes per read: straight into a transfer's buffer while
/// the queue offers one, otherwise as much as it asks for into the receive
/// buffer, parsing after each read. Returns the bytes that went straight in.
fn socket_feed(q: &mut TargetQueue, bytes: &[u8], chunk: usize) -> usize {
    let (mut at, mut direct) = (0, 0);
    while at < bytes.len() {
        if let Some(room) = q.direct_buffer() {
            let n = room.fill_from(&bytes[at..(at + chunk).min(bytes.len())]);
            q.direct_received(n);
            at += n;
            direct += n;
            continue;
        }
        let n = q.recv_want(chunk).min(bytes.len() - at);
        q.feed(&bytes[at..at + n]);
        at += n;
        q.process().unwrap();
    }
    q.process().unwrap();
    direct
}

/// A 64 KiB R2T write (CID 0x30, TTAG 0) whose data comes in two 32 KiB
/// H2CData PDUs: the capsule, and the data PDUs with `data` as payload.
fn large_r2t_write(d: Digests, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let w = write_sqe(
        0x30,
        127,
        Sgl {
            address: 0,
            length: data.len() as u32,
            id: sgl_id::TRANSPORT_DATA_BLOCK,
        },
    );
    let half = data.len() / 2;
    let mut h2c_pdus = h2c(0x30, 0, 0, &data[..half], false, d);
    h2c_pdus.extend(h2c(0x30, 0, half as u32, &data[half..], true, d));
    (capsule(&w, &[], d), h2c_pdus)
}

#[test]
fn a_large_h2c_payload_is_read_straight_into_its_transfer() {
    let data: Vec<u8> = (0..0x10000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for dgst in 0..4u8 {
        let d = Digests::from_dgst(dgst);
        let mut q = live(dgst);
        let (cmd, pdus) = large_r2t_write(d, &data);
        q.feed(&cmd);
        q.process().unwrap();
        let n = q.pending_send().len();
        q.sent(n);
        // Reads of up to 64 KiB: only the headers (and digests) are read into
        // the receive buffer; every payload byte goes straight in.
        let direct = socket_feed(&mut q, &pdus, 0x10000);
        assert_eq!(direct, data.len(), "dgst {dgst}");
        let cmds = q.take_requests();
        assert_eq!(cmds.len(), 1, "dgst {dgst}");
        assert_eq!(cmds[0].sqe.cid(), 0x30);
        assert!(cmds[0].data == data, "dgst {dgst}: the data, in order");
        assert!(q.pending_send().is_empty(), "no error completion");
    }
}

#[test]
fn a_data_digest_error_on_a_payload_read_straight_in_fails_the_command() {
    let d = Digests {
        header: false,
        data: true,
    };
    let data = vec![0x5Au8; 0x10000];
    let mut q = live(2);
    let (cmd, mut pdus) = large_r2t_write(d, &data);
    q.feed(&cmd);
    q.process().unwrap();
    let n = q.pending_send().len();
    q.sent(n);
    // The last byte is the second PDU's data digest.
    let end = pdus.len();
    pdus[end - 1] ^= 0x80;
    assert_eq!(socket_feed(&mut q, &pdus, 0x10000), data.len());
    assert!(q.take_requests().is_empty());
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    // Transient Transport Error, as for a payload taken from the receive buffer.
    assert_eq!((cqe.cid, cqe.status.0), (0x30, 0x0044));
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn a_bad_h2c_header_is_still_answered_with_a_term_req_when_reads_go_straight_in() {
    let data = vec![1u8; 0x10000];
    let mut q = live(0);
    let (cmd, mut pdus) = large_r2t_write(Digests::default(), &data);
    q.feed(&cmd);
    q.process().unwrap();
    let n = q.pending_send().len();
    q.sent(n);
    // LAST_PDU on the first of the two PDUs: byte 1 is FLAGS.
    pdus[1] |= flags::LAST_PDU;
    let got = q.recv_want(0x10000);
    assert_eq!(got, 24, "a header's worth while a transfer waits for data");
    q.feed(&pdus[..got]);
    assert!(
        q.direct_buffer().is_none(),
        "a header that fails the checks is not started"
    );
    // The flag is checked with the whole PDU in, as when nothing goes straight in.
    q.feed(&pdus[got..24 + 0x8000]);
    let e = q.process().expect_err("fatal");
    assert_eq!((e.fes, e.fei), (Fes::InvalidHeaderField, crate::pdu::offset::FLAGS));
    assert!(q.is_terminated());
    assert!(q.direct_buffer().is_none());
}

#[test]
fn a_connect_response_sets_the_queue_up_before_its_own_completion() {
    let mut q = TargetQueue::new(TargetQueueConfig::default());
    q.feed(&icreq(0));
    q.process().unwrap();
    let n = q.pending_send().len();
    q.sent(n);
    // Any command stands in for the Connect: only its response matters here.
    q.feed(&capsule(&read_sqe(0x21, 0), &[], Digests::default()));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    let r = Response::ok(0x21).with_dw0(5).with_connected(QueueParams {
        qid: 3,
        sq_entries: 64,
        sq_flow_control_disabled: true,
    });
    assert!(q.respond(r));
    let cqe = Cqe::parse(&q.pending_send()[8..24]).unwrap();
    // SQID is the new QID and SQHD is 0 (flow control off): both applied
    // before the completion was encoded.
    assert_eq!((cqe.cid, cqe.sqid, cqe.sqhd, cqe.dw0), (0x21, 3, 0, 5));
    assert!(cqe.status.is_success());
}

#[test]
fn response_helpers_fill_the_cqe() {
    let r = Response::dnr(9, status::INVALID_FIELD);
    assert_eq!((r.cqe.cid, r.cqe.status.0), (9, 0x8004), "SC 02h, DNR (bit 15)");
    assert!(r.data.is_empty() && r.connected.is_none());
    let r = Response::status(9, status::INVALID_FIELD);
    assert_eq!(r.cqe.status.0, 0x0004, "no DNR unless asked");
    let r = Response::ok_with_data(4, vec![1, 2, 3]);
    assert_eq!(
        (r.cqe.cid, r.cqe.status, &r.data[..]),
        (4, Status::SUCCESS, &[1u8, 2, 3][..])
    );
}

#[test]
fn a_response_gives_its_data_buffer_back_once_sent() {
    let mut q = read_outstanding(4, 16384);
    let mut data = Vec::with_capacity(32768);
    data.extend((0..16384u32).map(|i| i as u8));
    let ptr = data.as_ptr();
    assert!(q.respond(Response::ok_with_data(4, data)));
    assert_eq!(
        q.take_spent_buffers().count(),
        0,
        "sent from the buffer: kept until sent"
    );
    let n = q.pending_send().len();
    q.sent(n);
    let spent: Vec<Vec<u8>> = q.take_spent_buffers().collect();
    assert_eq!(spent.len(), 1);
    assert_eq!(
        (spent[0].as_ptr(), spent[0].capacity()),
        (ptr, 32768),
        "the same allocation"
    );
    assert_eq!(q.take_spent_buffers().count(), 0, "taken once");
    // A response refused (not outstanding) gives its buffer back too.
    assert!(!q.respond(Response::ok_with_data(4, vec![0; 10])));
    assert_eq!(q.take_spent_buffers().count(), 1);
}

#[test]
fn host_data_is_received_into_the_spare_buffers_lent() {
    let mut q = live(0);
    let mut spares = vec![Vec::with_capacity(0x2000), Vec::with_capacity(512)];
    let (big, small) = (spares[0].as_ptr(), spares[1].as_ptr());
    q.swap_spare_buffers(&mut spares);
    assert!(spares.is_empty());
    // In-capsule: 512 bytes fit the small spare, the last that is large enough.
    let w = write_sqe(
        1,
        0,
        Sgl {
            address: 0,
            length: 512,
            id: sgl_id::DATA_BLOCK_OFFSET,
        },
    );
    q.feed(&capsule(&w, &[0x3C; 512], Digests::default()));
    q.process().unwrap();
    // R2T: 8 KiB go into the other one.
    let w = write_sqe(
        2,
        15,
        Sgl {
            address: 0,
            length: 0x2000,
            id: sgl_id::TRANSPORT_DATA_BLOCK,
        },
    );
    q.feed(&capsule(&w, &[], Digests::default()));
    q.process().unwrap();
    let ttag = DataHeader::parse(&q.pending_send()).ttag;
    q.feed(&h2c(2, ttag, 0, &[0x5A; 0x2000], true, Digests::default()));
    q.process().unwrap();
    let reqs = q.take_requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!((reqs[0].data.as_ptr(), &reqs[0].data[..]), (small, &[0x3C; 512][..]));
    assert_eq!((reqs[1].data.as_ptr(), &reqs[1].data[..]), (big, &[0x5A; 0x2000][..]));
    q.swap_spare_buffers(&mut spares);
    assert!(spares.is_empty(), "both used");
}

mod direct_framing {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Reads of any size, straight into transfers or not, give the same
        /// commands as the whole stream fed at once.
        #[test]
        fn any_read_sizes_give_the_same_commands(dgst in 0u8..4, chunk in 1usize..70_000, pattern in any::<u8>()) {
            let d = Digests::from_dgst(dgst);
            let data: Vec<u8> = (0..0x10000u32).map(|i| (i as u8).wrapping_mul(pattern | 1)).collect();
            let (cmd, pdus) = large_r2t_write(d, &data);
            let small = write_sqe(
                0x31,
                0,
                Sgl {
                    address: 0,
                    length: 512,
                    id: sgl_id::DATA_BLOCK_OFFSET,
                },
            );
            let mut host = icreq(dgst);
            host.extend(cmd);
            host.extend(pdus);
            host.extend(capsule(&small, &[pattern; 512], d));
            let mut q = TargetQueue::new(TargetQueueConfig::default());
            socket_feed(&mut q, &host, chunk);
            let got: Vec<(u16, Vec<u8>)> = q.take_requests().into_iter().map(|c| (c.sqe.cid(), c.data)).collect();
            prop_assert_eq!(got.len(), 2);
            prop_assert_eq!(got[0].0, 0x30);
            prop_assert!(got[0].1 == data);
            prop_assert_eq!(&got[1], &(0x31u16, vec![pattern; 512]));
        }

        /// A good start (a large R2T write and the head of its first H2CData
        /// PDU, so the payload may go straight in), then arbitrary bytes in
        /// reads of any size: no panic, the receive buffer never holds more
        /// than arrived, and a fatal error ends the queue.
        #[test]
        fn garbage_after_a_direct_start_never_panics(dgst in 0u8..4, cut in 1usize..2_000, chunk in 1usize..40_000, junk in proptest::collection::vec(any::<u8>(), 0..60_000)) {
            let d = Digests::from_dgst(dgst);
            let (cmd, pdus) = large_r2t_write(d, &vec![7u8; 0x10000]);
            let mut host = icreq(dgst);
            host.extend(cmd);
            host.extend_from_slice(&pdus[..cut.min(pdus.len())]);
            host.extend(junk);
            let mut q = TargetQueue::new(TargetQueueConfig::default());
            let (mut at, mut fed) = (0, 0);
            while at < host.len() && !q.is_terminated() {
                let n = match q.direct_buffer() {
                    Some(room) => {
                        let n = room.fill_from(&host[at..(at + chunk).min(host.len())]);
                        q.direct_received(n);
                        n
                    }
                    None => {
                        let n = q.recv_want(chunk).clamp(1, host.len() - at);
                        q.feed(&host[at..at + n]);
                        n
                    }
                };
                at += n;
                fed += n;
                prop_assert!(q.buffered() <= fed);
                if q.process().is_err() {
                    prop_assert!(q.is_terminated());
                    let out = q.pending_send();
                    prop_assert!(!out.is_empty());
                }
                let _ = q.take_requests();
            }
        }
    }
}

#[test]
fn take_spare_picks_the_last_buffer_large_enough_else_grows_the_last_else_allocates() {
    let mut spares = vec![
        Vec::with_capacity(8192),
        Vec::with_capacity(512),
        Vec::with_capacity(4096),
    ];
    let caps: Vec<usize> = spares.iter().map(Vec::capacity).collect();
    // 1000 bytes: the 4 KiB buffer (the last that fits), not the 8 KiB one.
    let (b, had) = take_spare(&mut spares, 1000);
    assert_eq!((had, b.capacity()), (caps[2], caps[2]));
    assert!(b.is_empty());
    // Nothing left holds 100000 bytes: the last one (now the 512-byte buffer) is grown.
    let (b, had) = take_spare(&mut spares, 100_000);
    assert_eq!(had, caps[1]);
    assert!(b.capacity() >= 100_000);
    assert_eq!(spares.len(), 1);
    spares.clear();
    let (b, had) = take_spare(&mut spares, 64);
    assert_eq!(had, 0, "a new buffer");
    assert!(b.capacity() >= 64);
}

/// A source whose byte `i` is `(i * 13 + 5) % 256`, or, when `broken`, one
/// that holds nothing (every copy fails).
struct Pattern {
    size: u64,
    broken: bool,
}

impl crate::read_source::ReadSource for Pattern {
    fn size(&self) -> u64 {
        self.size
    }

    fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        let err = SourceRangeError {
            at,
            len: dst.len(),
            size: self.size,
        };
        if self.broken || at + dst.len() as u64 > self.size {
            return Err(err);
        }
        for (i, b) in dst.iter_mut().enumerate() {
            *b = ((at + i as u64) * 13 + 5) as u8;
        }
        Ok(())
    }
}

fn pattern_range(at: u64, len: usize, broken: bool) -> SourceRange {
    SourceRange::new(std::sync::Arc::new(Pattern { size: 1 << 20, broken }), at, len)
}

#[test]
fn a_read_from_a_source_goes_out_as_the_same_pdus_as_its_data_in_a_buffer() {
    // 20,000 bytes in 8 KiB chunks with both digests: three C2HData PDUs.
    let range = pattern_range(12_288, 20_000, false);
    let data: Vec<u8> = (12_288..32_288u64).map(|i| (i * 13 + 5) as u8).collect();
    let cqe = Cqe {
        cid: 4,
        ..Cqe::default()
    };
    let mut buffered = read_outstanding(4, 20_000);
    assert!(buffered.respond(Response::with_data(cqe, data.clone())));
    let mut sourced = read_outstanding(4, 20_000);
    assert!(sourced.respond(Response::with_source(cqe, range.clone())));
    assert_eq!(
        sourced.pending_send(),
        buffered.pending_send(),
        "headers, data and digests"
    );
    assert_eq!(
        pdus(&sourced.pending_send()).len(),
        4,
        "three C2HData and the CapsuleResp"
    );
    assert_eq!(sourced.outstanding(), 0);
    let r = Response::with_source(cqe, range);
    assert_eq!(r.data_bytes().unwrap().as_ref(), &data[..], "what tests read of it");
}

#[test]
fn a_read_from_a_source_ends_with_the_success_flag_when_flow_control_is_off() {
    let mut q = live(0);
    connect(&mut q, 1, 32, true);
    q.feed(&capsule(&read_sqe(6, 4096), &[], Digests::default()));
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), 1);
    let cqe = Cqe {
        cid: 6,
        ..Cqe::default()
    };
    assert!(q.respond(Response::with_source(cqe, pattern_range(4096, 4096, false))));
    let p = pdus(&q.pending_send());
    assert_eq!(p.len(), 1, "no CapsuleResp");
    let ch = CommonHeader::parse(&p[0]).unwrap();
    assert_eq!(ch.flags, flags::LAST_PDU | flags::SUCCESS);
    let pdo = usize::from(ch.pdo);
    let want: Vec<u8> = (4096..8192u64).map(|i| (i * 13 + 5) as u8).collect();
    assert_eq!(&p[0][pdo..pdo + 4096], &want[..]);
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn a_source_that_fails_sends_internal_error_and_none_of_its_data() {
    let mut q = read_outstanding(9, 16_384);
    let cqe = Cqe {
        cid: 9,
        ..Cqe::default()
    };
    assert!(q.respond(Response::with_source(cqe, pattern_range(0, 16_384, true))));
    let p = pdus(&q.pending_send());
    assert_eq!(p.len(), 1, "only the completion: {p:?}");
    assert_eq!(CommonHeader::parse(&p[0]).unwrap().pdu_type, PduType::CapsuleResp as u8);
    let cqe = Cqe::parse(&p[0][8..24]).unwrap();
    assert_eq!((cqe.cid, cqe.status), (9, status::INTERNAL_ERROR));
    assert_eq!(q.outstanding(), 0);
    // A range past the source's end fails the same way, without a panic.
    let mut q = read_outstanding(9, 8192);
    assert!(q.respond(Response::with_source(
        Cqe {
            cid: 9,
            ..Cqe::default()
        },
        pattern_range((1 << 20) - 4096, 8192, false)
    )));
    assert_eq!(pdus(&q.pending_send()).len(), 1);
}

#[test]
fn with_c2h_success_a_plain_successful_read_ends_with_the_success_flag_whatever_the_flow_control() {
    let read = |q: &mut TargetQueue, cid: u16, cqe: Cqe| {
        q.feed(&capsule(&read_sqe(cid, 4096), &[], Digests::default()));
        q.process().unwrap();
        assert_eq!(q.take_requests().len(), 1);
        let before = q.pending_send().len();
        assert!(q.respond(Response::with_data(cqe, vec![3u8; 4096])));
        pdus(&q.pending_send()[before..])
    };
    // The default, as SPDK's: SQ flow control kept (connect(.., false)), and
    // still no CapsuleResp.
    assert!(TargetQueueConfig::default().c2h_success);
    let mut q = live_with(0, true);
    let p = read(
        &mut q,
        5,
        Cqe {
            cid: 5,
            ..Cqe::default()
        },
    );
    assert_eq!(p.len(), 1, "the C2HData alone");
    assert_eq!(
        CommonHeader::parse(&p[0]).unwrap().flags,
        flags::LAST_PDU | flags::SUCCESS
    );
    assert_eq!(q.outstanding(), 0);
    // DW0 not zero, or a failure: the CapsuleResp carries it.
    let p = read(
        &mut q,
        6,
        Cqe {
            cid: 6,
            dw0: 1,
            ..Cqe::default()
        },
    );
    assert_eq!(p.len(), 2);
    assert_eq!(CommonHeader::parse(&p[0]).unwrap().flags, flags::LAST_PDU);
    assert_eq!(CommonHeader::parse(&p[1]).unwrap().pdu_type, PduType::CapsuleResp as u8);
    // Off: the specification's rule, a CapsuleResp for a host keeping SQ flow control.
    let mut q = live_with(0, false);
    let p = read(
        &mut q,
        7,
        Cqe {
            cid: 7,
            ..Cqe::default()
        },
    );
    assert_eq!(p.len(), 2);
    assert_eq!(CommonHeader::parse(&p[1]).unwrap().pdu_type, PduType::CapsuleResp as u8);
}

mod lend;
