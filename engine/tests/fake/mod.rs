//! A scripted NVMe/TCP target for initiator tests, speaking raw PDUs on
//! loopback: it answers the admin bring-up an initiator performs (Connect,
//! Property Get/Set, Identify, Set Features, Keep Alive; AERs are held
//! forever) and hands the I/O queue's socket to the test's script.
//!
//! The including test crate provides `SUBNQN` (the subsystem NQN the fake
//! reports) and `pattern(len, seed)` (the data its reads return) at its root.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lull_proto::fabrics::fctype;
use lull_proto::nvme::{Cqe, Sqe, Status, admin_opc, sgl_id, status};
use lull_proto::pdu::{
    CommonHeader, DataHeader, Digests, PduType, encode_capsule_resp, encode_data_pdu, encode_r2t, flags,
};

/// The CNTLID the fake hands out.
pub const CNTLID: u16 = 1;
/// NS1's size in 512-byte blocks.
pub const NSZE: u64 = 1 << 21;

/// What the fake advertises.
#[derive(Clone, Copy, Debug)]
pub struct Cfg {
    /// IOCCSZ (16-byte units): 4 = no in-capsule data, 260 = 4096 bytes.
    pub ioccsz: u32,
    /// MAXH2CDATA in every ICResp.
    pub maxh2cdata: u32,
    /// SO_RCVBUF of the I/O queue's socket (set on the listener before
    /// the I/O queue is accepted, and again on the accepted socket).
    pub io_rcvbuf: Option<usize>,
    /// Active namespaces (each of NSZE 512-byte blocks).
    pub nsids: &'static [u32],
    /// Keep Alive commands are read and never answered (the socket stays open).
    pub ka_silent: bool,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            ioccsz: 260,
            maxh2cdata: 131_072,
            io_rcvbuf: None,
            nsids: &[1],
            ka_silent: false,
        }
    }
}

/// One received PDU, whole.
pub struct Pdu {
    pub ch: CommonHeader,
    pub b: Vec<u8>,
}

impl Pdu {
    pub fn is(&self, t: PduType) -> bool {
        self.ch.pdu_type == t as u8
    }
    /// The data of a data-carrying PDU (from PDO, without DDGST).
    pub fn data(&self) -> &[u8] {
        let dd = if self.ch.flags & flags::DDGSTF != 0 { 4 } else { 0 };
        let pdo = self.ch.pdo as usize;
        if pdo == 0 {
            return &[];
        }
        &self.b[pdo..self.b.len() - dd]
    }
}

/// One accepted connection.
pub struct Conn {
    pub s: TcpStream,
    /// Digests granted in the ICResp.
    pub d: Digests,
}

/// Accepts one connection within 10 s (the listener is non-blocking).
pub fn accept(l: &TcpListener) -> Conn {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return Conn {
                    s,
                    d: Digests::default(),
                };
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("fake: no connection from the initiator: {e}"),
        }
    }
}

pub fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

impl Conn {
    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("fake: write");
    }

    /// Reads one PDU; `None` on EOF or reset. Panics on a timeout.
    pub fn recv(&mut self) -> Option<Pdu> {
        let mut ch = [0u8; 8];
        match self.s.read_exact(&mut ch) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => return None,
            Err(e) => panic!("fake: read: {e}"),
        }
        let h = CommonHeader::parse(&ch).unwrap();
        assert!(h.plen >= 8 && h.plen < 1 << 24, "fake: absurd PLEN {}", h.plen);
        let mut b = vec![0u8; h.plen as usize];
        b[..8].copy_from_slice(&ch);
        self.s.read_exact(&mut b[8..]).ok()?;
        Some(Pdu { ch: h, b })
    }

    /// Reads the ICReq and grants what it asks for.
    pub fn handshake(&mut self, maxh2cdata: u32) {
        let p = self.recv().expect("fake: ICReq");
        assert!(
            p.is(PduType::IcReq) && p.b.len() == 128,
            "fake: expected ICReq, got {:?}",
            p.ch
        );
        self.d = Digests::from_dgst(p.b[11]);
        self.send(&icresp(p.b[11], maxh2cdata));
    }

    /// Reads a CapsuleCmd: its SQE and in-capsule data. `None` on EOF.
    pub fn recv_capsule(&mut self) -> Option<(Sqe, Vec<u8>)> {
        let p = self.recv()?;
        assert!(
            p.is(PduType::CapsuleCmd),
            "fake: expected a CapsuleCmd, got {:?} {:02x?}",
            p.ch,
            &p.b[..p.b.len().min(32)]
        );
        let sqe = Sqe::from_bytes(&p.b[8..72]).unwrap();
        Some((sqe, p.data().to_vec()))
    }

    /// The command's write data: in-capsule, or fetched with one R2T.
    pub fn write_data(&mut self, sqe: &Sqe, in_capsule: Vec<u8>) -> Vec<u8> {
        let sgl = sqe.sgl1();
        if sgl.id != sgl_id::TRANSPORT_DATA_BLOCK || sgl.length == 0 || !in_capsule.is_empty() {
            return in_capsule;
        }
        let ttag = sqe.cid() ^ 0x5A5A;
        self.r2t(sqe.cid(), ttag, 0, sgl.length);
        self.collect_h2c(sqe.cid(), ttag, 0, sgl.length as usize)
    }

    /// Reads H2CData PDUs for `cccid`/`ttag` from `datao` until `len` bytes came.
    pub fn collect_h2c(&mut self, cccid: u16, ttag: u16, datao: u32, len: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(len);
        while got.len() < len {
            let p = self.recv().expect("fake: H2CData");
            assert!(p.is(PduType::H2CData), "fake: expected H2CData, got {:?}", p.ch);
            let h = DataHeader::parse(&p.b);
            assert_eq!((h.cccid, h.ttag), (cccid, ttag), "fake: H2CData CCCID/TTAG");
            assert_eq!(h.datao as usize, datao as usize + got.len(), "fake: contiguous DATAO");
            got.extend_from_slice(p.data());
            assert_eq!(
                p.ch.flags & flags::LAST_PDU != 0,
                got.len() == len,
                "fake: LAST_PDU on the last H2CData only"
            );
        }
        got
    }

    pub fn r2t(&mut self, cccid: u16, ttag: u16, r2to: u32, r2tl: u32) {
        let mut v = Vec::new();
        encode_r2t(&mut v, cccid, ttag, r2to, r2tl, self.d);
        self.send(&v);
    }

    pub fn respond(&mut self, cid: u16, st: Status, dw0: u32, dw1: u32) {
        let mut v = Vec::new();
        let cqe = Cqe {
            dw0,
            dw1,
            sqhd: 0,
            sqid: 0,
            cid,
            status: st,
        };
        encode_capsule_resp(&mut v, &cqe.encode(), self.d);
        self.send(&v);
    }

    /// A C2HData PDU as bytes (DDGST as negotiated).
    pub fn c2h_bytes(&self, cccid: u16, datao: u32, data: &[u8], f: u8) -> Vec<u8> {
        let mut v = Vec::new();
        encode_data_pdu(
            &mut v,
            PduType::C2HData,
            DataHeader {
                cccid,
                ttag: 0,
                datao,
                datal: 0,
            },
            data,
            f,
            self.d,
            0,
        );
        v
    }

    /// Reads with the whole data in one C2HData carrying SUCCESS.
    pub fn read_reply(&mut self, cid: u16, data: &[u8]) {
        let v = self.c2h_bytes(cid, 0, data, flags::LAST_PDU | flags::SUCCESS);
        self.send(&v);
    }

    /// Reads the fabrics Connect (data in-capsule or by R2T) and accepts it.
    pub fn accept_connect(&mut self, want_qid: u16) {
        let (sqe, data) = self.recv_capsule().expect("fake: Connect");
        assert_eq!((sqe.opc(), sqe.fctype()), (admin_opc::FABRICS, fctype::CONNECT));
        let qid = u16::from_le_bytes([sqe.0[42], sqe.0[43]]);
        assert_eq!(qid, want_qid, "fake: Connect QID");
        let data = self.write_data(&sqe, data);
        assert_eq!(data.len(), 1024, "fake: Connect data");
        self.respond(sqe.cid(), Status::SUCCESS, u32::from(CNTLID), 0);
    }

    /// Expects the initiator's H2CTermReq next, then the connection closed
    /// with nothing more; returns (FES, FEI).
    pub fn expect_term(&mut self) -> (u16, u32) {
        let p = self.recv().expect("fake: an H2CTermReq, got EOF");
        assert!(
            p.is(PduType::H2CTermReq),
            "fake: expected H2CTermReq, got {:?} {:02x?}",
            p.ch,
            &p.b[..p.b.len().min(32)]
        );
        assert!((24..=152).contains(&p.b.len()), "TermReq PLEN {}", p.b.len());
        let fes = u16::from_le_bytes([p.b[8], p.b[9]]);
        let fei = u32::from_le_bytes(p.b[10..14].try_into().unwrap());
        self.expect_eof(Duration::from_secs(2));
        (fes, fei)
    }

    /// Expects the connection to close within `within` without a byte more.
    pub fn expect_eof(&mut self, within: Duration) -> Duration {
        let t = Instant::now();
        self.s.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 256];
        match self.s.read(&mut b) {
            Ok(0) => t.elapsed(),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => t.elapsed(),
            Ok(n) => panic!("fake: the initiator sent {n} more bytes: {:02x?}", &b[..n.min(32)]),
            Err(e) => panic!("fake: the initiator did not close within {within:?}: {e}"),
        }
    }

    /// As [`serve_io`](Self::serve_io), returning every command served
    /// with the data it carried.
    pub fn serve_io_logged(&mut self) -> Vec<(Sqe, Vec<u8>)> {
        let mut log = Vec::new();
        while let Some((sqe, data)) = self.recv_capsule() {
            let data = match sqe.opc() {
                0x02 => {
                    let len = sqe.sgl1().length as usize;
                    let d = super::pattern(len, sqe.cdw(10) as u8);
                    self.read_reply(sqe.cid(), &d);
                    Vec::new()
                }
                0x01 => {
                    let d = self.write_data(&sqe, data);
                    self.respond(sqe.cid(), Status::SUCCESS, 0, 0);
                    d
                }
                _ => {
                    self.respond(sqe.cid(), Status::SUCCESS, 0, 0);
                    data
                }
            };
            log.push((sqe, data));
        }
        log
    }

    /// Serves I/O until EOF: reads return `pattern(len, slba)`, writes are
    /// taken (by R2T when not in-capsule) and acknowledged.
    pub fn serve_io(&mut self) {
        while let Some((sqe, data)) = self.recv_capsule() {
            match sqe.opc() {
                0x02 => {
                    let len = sqe.sgl1().length as usize;
                    let d = super::pattern(len, sqe.cdw(10) as u8);
                    self.read_reply(sqe.cid(), &d);
                }
                0x01 => {
                    let _ = self.write_data(&sqe, data);
                    self.respond(sqe.cid(), Status::SUCCESS, 0, 0);
                }
                _ => self.respond(sqe.cid(), Status::SUCCESS, 0, 0),
            }
        }
    }
}

pub fn icresp(dgst: u8, maxh2cdata: u32) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[..8].copy_from_slice(&[0x01, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00]);
    b[11] = dgst;
    b[12..16].copy_from_slice(&maxh2cdata.to_le_bytes());
    b
}

fn identify_controller(cfg: &Cfg) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[4..24].copy_from_slice(b"FAKE0001            ");
    b[24..64].fill(b' ');
    b[24..28].copy_from_slice(b"fake");
    b[64..72].copy_from_slice(b"1.0     ");
    b[77] = 0; // MDTS: no limit
    b[78..80].copy_from_slice(&CNTLID.to_le_bytes());
    let nqn = super::SUBNQN.as_bytes();
    b[768..768 + nqn.len()].copy_from_slice(nqn);
    b[1792..1796].copy_from_slice(&cfg.ioccsz.to_le_bytes());
    b[1796..1800].copy_from_slice(&1u32.to_le_bytes()); // IORCSZ
    b
}

fn identify_namespace() -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    for at in [0, 8, 16] {
        b[at..at + 8].copy_from_slice(&NSZE.to_le_bytes());
    }
    b[26] = 0; // FLBAS: format 0
    b[130] = 9; // LBAF0: 512-byte blocks
    b
}

/// Answers one admin command; `false` for an AER (held, never answered).
fn admin_command(c: &mut Conn, cfg: &Cfg, sqe: &Sqe) -> bool {
    let cid = sqe.cid();
    match (sqe.opc(), sqe.fctype()) {
        (admin_opc::FABRICS, fctype::PROPERTY_GET) => {
            let value: u64 = match u32::from_le_bytes(sqe.0[44..48].try_into().unwrap()) {
                // CAP: MQES 127, CQR, TO 1 (500 ms), CSS NVM, MPSMIN 4 KiB.
                0x00 => 127 | 1 << 16 | 1 << 24 | 1 << 37,
                0x08 => 0x0002_0000,
                0x1C => 1, // CSTS.RDY
                _ => 0,
            };
            c.respond(cid, Status::SUCCESS, value as u32, (value >> 32) as u32);
        }
        (admin_opc::FABRICS, fctype::PROPERTY_SET) => c.respond(cid, Status::SUCCESS, 0, 0),
        (admin_opc::IDENTIFY, _) => {
            let d = match sqe.cdw(10) & 0xFF {
                0x01 => identify_controller(cfg),
                0x02 => {
                    let mut l = vec![0u8; 4096];
                    for (i, n) in cfg.nsids.iter().enumerate() {
                        l[4 * i..4 * i + 4].copy_from_slice(&n.to_le_bytes());
                    }
                    l
                }
                0x00 if cfg.nsids.contains(&sqe.nsid()) => identify_namespace(),
                _ => vec![0u8; 4096],
            };
            c.read_reply(cid, &d);
        }
        // Number of Queues: one of each (0's based); Async Event Configuration.
        (admin_opc::SET_FEATURES, _) => c.respond(cid, Status::SUCCESS, 0, 0),
        (admin_opc::KEEP_ALIVE, _) if cfg.ka_silent => {}
        (admin_opc::KEEP_ALIVE, _) => c.respond(cid, Status::SUCCESS, 0, 0),
        (admin_opc::ASYNC_EVENT_REQUEST, _) => return false,
        _ => c.respond(cid, status::INVALID_OPCODE, 0, 0),
    }
    true
}

/// Accepts the admin queue and serves it on a thread of its own until
/// the initiator closes it.
pub fn admin(l: &TcpListener, cfg: Cfg) -> JoinHandle<()> {
    let mut c = accept(l);
    std::thread::spawn(move || {
        c.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.handshake(cfg.maxh2cdata);
        c.accept_connect(0);
        loop {
            let p = match c.recv() {
                Some(p) => p,
                None => return,
            };
            if !p.is(PduType::CapsuleCmd) {
                return;
            }
            let sqe = Sqe::from_bytes(&p.b[8..72]).unwrap();
            admin_command(&mut c, &cfg, &sqe);
        }
    })
}

/// Accepts an I/O queue (SO_RCVBUF as configured), ICReq and Connect.
pub fn io(l: &TcpListener, cfg: Cfg) -> Conn {
    if let Some(size) = cfg.io_rcvbuf {
        rustix::net::sockopt::set_socket_recv_buffer_size(l, size).unwrap();
    }
    let mut c = accept(l);
    if let Some(size) = cfg.io_rcvbuf {
        rustix::net::sockopt::set_socket_recv_buffer_size(&c.s, size).unwrap();
    }
    c.handshake(cfg.maxh2cdata);
    c.accept_connect(1);
    c
}
