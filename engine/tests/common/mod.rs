//! A raw NVMe/TCP host for driving a target byte by byte, and an
//! in-process target to drive.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_engine::bdev::{Bdev, NullBdev, RamBdev};
use lull_engine::nvmf::subsystem::Subsystem;
use lull_engine::nvmf::target::Target;
use lull_proto::fabrics::{ConnectCmd, ConnectData, DISCOVERY_NQN, PropertyCmd, fctype, property};
use lull_proto::nvme::{Cqe, Sgl, Sqe, sgl_id};
use lull_proto::pdu::{CommonHeader, DataHeader, Digests, PduType, crc32c, flags};
use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

pub const SUBNQN: &str = "nqn.2024-01.test:sub1";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";
pub const OTHER_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000002";
/// NS1: 64 MiB of 512-byte blocks. NS2: a null bdev.
pub const NS1_BLOCKS: u64 = 64 * 2048;

pub struct Tgt {
    pub reactors: Reactors,
    pub target: Arc<Target>,
    pub addr: SocketAddr,
}

/// The standard fixture: one subsystem, NS1 = 64 MiB RAM, NS2 = null; hosts
/// HOSTNQN and OTHER_HOST allowed; I/O in-capsule data 4096 (8 KiB writes use R2T).
pub fn target(mode: Mode) -> Tgt {
    target_on(mode, 2)
}

/// [`target`] on at most `reactors` reactors.
pub fn target_on(mode: Mode, reactors: usize) -> Tgt {
    let usable = CoreList::usable().unwrap();
    let cores: Vec<usize> = usable.cores().iter().copied().take(reactors).collect();
    let reactors = Reactors::start(ReactorConfig::new(CoreList::try_from(cores).unwrap()).mode(mode)).unwrap();
    let target = Target::new(TargetQueueConfig {
        io_in_capsule_data: 4096,
        ..Default::default()
    });
    let s = Subsystem::new(SUBNQN, "SN0001", "lull test").unwrap();
    s.add_host(HOSTNQN).unwrap();
    s.add_host(OTHER_HOST).unwrap();
    let ram: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", NS1_BLOCKS * 512, 512).unwrap());
    let null: Arc<dyn Bdev> = Arc::new(NullBdev::new("Null0", 1 << 20, 512).unwrap());
    s.add_namespace(1, ram).unwrap();
    s.add_namespace(2, null).unwrap();
    target.add_subsystem(s).unwrap();
    let addr = target.listen(&reactors, "127.0.0.1:0".parse().unwrap()).unwrap();
    Tgt { reactors, target, addr }
}

pub fn icreq_bytes(dgst: u8) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b[..8].copy_from_slice(&[0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00]);
    b[11] = dgst;
    b
}

pub struct Pdu {
    pub ch: CommonHeader,
    pub bytes: Vec<u8>,
}

impl Pdu {
    pub fn cqe(&self) -> Cqe {
        assert_eq!(
            self.ch.pdu_type,
            PduType::CapsuleResp as u8,
            "expected CapsuleResp, got {:?}",
            self.ch
        );
        Cqe::parse(&self.bytes[8..24]).unwrap()
    }
    pub fn data_header(&self) -> DataHeader {
        DataHeader::parse(&self.bytes)
    }
}

pub struct Host {
    pub s: TcpStream,
    pub d: Digests,
    pub cid: u16,
}

impl Host {
    pub fn connect(addr: SocketAddr) -> Host {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Host {
            s,
            d: Digests::default(),
            cid: 0,
        }
    }

    /// Connects with SO_RCVBUF set before the handshake (so the window is small from the start).
    pub fn connect_small_rcvbuf(addr: SocketAddr, size: usize) -> Host {
        use rustix::net::{AddressFamily, SocketType, ipproto, socket, sockopt};
        let fd = socket(AddressFamily::INET, SocketType::STREAM, Some(ipproto::TCP)).unwrap();
        sockopt::set_socket_recv_buffer_size(&fd, size).unwrap();
        rustix::net::connect(&fd, &addr).unwrap();
        let s = TcpStream::from(fd);
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Host {
            s,
            d: Digests::default(),
            cid: 0,
        }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Reads one PDU; `None` on EOF or reset.
    pub fn recv(&mut self) -> Option<Pdu> {
        let mut ch = [0u8; 8];
        if let Err(e) = self.s.read_exact(&mut ch) {
            assert!(
                matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset),
                "read failed: {e}"
            );
            return None;
        }
        let h = CommonHeader::parse(&ch).unwrap();
        assert!(h.plen >= 8 && h.plen < 1 << 24, "absurd PLEN {}", h.plen);
        let mut rest = vec![0u8; h.plen as usize - 8];
        self.s.read_exact(&mut rest).ok()?;
        let mut bytes = ch.to_vec();
        bytes.extend(rest);
        Some(Pdu { ch: h, bytes })
    }

    /// Expects the target to close the connection within `limit` without sending more.
    pub fn expect_closed(&mut self, limit: Duration) {
        self.s.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1];
        let t = Instant::now();
        match self.s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(_) => panic!("target sent more bytes after the TermReq"),
            Err(e) => panic!("target did not close within {limit:?} ({e}, after {:?})", t.elapsed()),
        }
    }

    /// Expects exactly one C2HTermReq with FES/FEI, then the connection closed within 1 s.
    pub fn expect_fatal(&mut self, fes: u16, fei: u32) {
        let p = self.recv().expect("a C2HTermReq");
        assert_eq!(
            p.ch.pdu_type,
            PduType::C2HTermReq as u8,
            "expected C2HTermReq, got {:?}",
            p.ch
        );
        assert!((24..=152).contains(&p.bytes.len()));
        let got = (
            u16::from_le_bytes([p.bytes[8], p.bytes[9]]),
            u32::from_le_bytes(p.bytes[10..14].try_into().unwrap()),
        );
        assert_eq!(got, (fes, fei), "FES/FEI");
        self.expect_closed(Duration::from_secs(1));
    }

    pub fn icreq(&mut self, dgst: u8) -> Pdu {
        self.send(&icreq_bytes(dgst));
        let r = self.recv().expect("ICResp");
        assert_eq!(r.ch.pdu_type, PduType::IcResp as u8);
        self.d = Digests::from_dgst(r.bytes[11]);
        r
    }

    /// A CapsuleCmd PDU as bytes, with this connection's digests.
    pub fn capsule_bytes(&self, sqe: &Sqe, data: &[u8]) -> Vec<u8> {
        let hd = if self.d.header { 4 } else { 0 };
        let dd = if self.d.data && !data.is_empty() { 4 } else { 0 };
        let pdo = if data.is_empty() { 0 } else { 72 + hd };
        let mut b = vec![0u8; 72];
        let f = if hd > 0 { flags::HDGSTF } else { 0 } | if dd > 0 { flags::DDGSTF } else { 0 };
        CommonHeader {
            pdu_type: 4,
            flags: f,
            hlen: 72,
            pdo: pdo as u8,
            plen: (72 + hd + data.len() + dd) as u32,
        }
        .write(&mut b);
        b[8..72].copy_from_slice(&sqe.0);
        if hd > 0 {
            let c = crc32c(&b[..72]);
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.extend_from_slice(data);
        if dd > 0 {
            b.extend_from_slice(&crc32c(data).to_le_bytes());
        }
        b
    }

    pub fn next_cid(&mut self) -> u16 {
        self.cid = self.cid.wrapping_add(1);
        self.cid
    }

    /// Sends a command and returns the PDUs up to and including its CapsuleResp.
    pub fn command(&mut self, mut sqe: Sqe, data: &[u8]) -> (Vec<u8>, Cqe) {
        let cid = self.next_cid();
        sqe.set_cid(cid);
        if !data.is_empty() && sqe.sgl1().id == 0 {
            sqe.set_sgl1(Sgl {
                address: 0,
                length: data.len() as u32,
                id: sgl_id::DATA_BLOCK_OFFSET,
            });
        }
        let in_capsule = if sqe.sgl1().id == sgl_id::DATA_BLOCK_OFFSET {
            data
        } else {
            &[][..]
        };
        let b = self.capsule_bytes(&sqe, in_capsule);
        self.send(&b);
        let mut read = Vec::new();
        loop {
            let p = self.recv().expect("response");
            match PduType::from_u8(p.ch.pdu_type) {
                Some(PduType::C2HData) => {
                    let h = p.data_header();
                    assert_eq!(h.cccid, cid);
                    assert_eq!(h.datao as usize, read.len(), "contiguous DATAO");
                    let pdo = p.ch.pdo as usize;
                    read.extend_from_slice(&p.bytes[pdo..pdo + h.datal as usize]);
                    if p.ch.flags & flags::SUCCESS != 0 {
                        return (read, Cqe { cid, ..Cqe::default() });
                    }
                }
                Some(PduType::R2T) => {
                    let h = p.data_header();
                    assert_eq!(h.cccid, cid);
                    let mut v = Vec::new();
                    let part = &data[h.datao as usize..(h.datao + h.datal) as usize];
                    lull_proto::pdu::encode_data_pdu(
                        &mut v,
                        PduType::H2CData,
                        DataHeader {
                            cccid: cid,
                            ttag: h.ttag,
                            datao: h.datao,
                            datal: 0,
                        },
                        part,
                        flags::LAST_PDU,
                        self.d,
                        0,
                    );
                    self.send(&v);
                }
                Some(PduType::CapsuleResp) => {
                    let c = p.cqe();
                    assert_eq!(c.cid, cid);
                    return (read, c);
                }
                _ => panic!("unexpected PDU {:?}", p.ch),
            }
        }
    }

    pub fn connect_sqe(qid: u16, sqsize: u16, kato: u32, len: u32, id: u8) -> Sqe {
        let mut sqe = Sqe([0; 64]);
        ConnectCmd {
            recfmt: 0,
            qid,
            sqsize,
            cattr: 0,
            kato,
        }
        .write(&mut sqe);
        sqe.set_sgl1(Sgl {
            address: 0,
            length: len,
            id,
        });
        sqe
    }

    pub fn connect_data(subnqn: &str, hostnqn: &str, cntlid: u16) -> Vec<u8> {
        ConnectData {
            hostid: [7; 16],
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: hostnqn.into(),
        }
        .encode()
        .to_vec()
    }

    /// Fabrics Connect; returns the CQE.
    pub fn fabric_connect(&mut self, qid: u16, subnqn: &str, hostnqn: &str, cntlid: u16, kato: u32) -> Cqe {
        let data = Self::connect_data(subnqn, hostnqn, cntlid);
        let sqe = Self::connect_sqe(qid, 31, kato, 1024, sgl_id::DATA_BLOCK_OFFSET);
        self.command(sqe, &data).1
    }

    pub fn prop_get(&mut self, offset: u32, size: u8) -> Cqe {
        let mut sqe = Sqe([0; 64]);
        PropertyCmd { size, offset, value: 0 }.write(&mut sqe, fctype::PROPERTY_GET);
        self.command(sqe, &[]).1
    }

    pub fn prop_set(&mut self, offset: u32, value: u64) -> Cqe {
        let mut sqe = Sqe([0; 64]);
        PropertyCmd { size: 4, offset, value }.write(&mut sqe, fctype::PROPERTY_SET);
        self.command(sqe, &[]).1
    }

    /// ICReq, admin Connect, CC.EN = 1. Returns the CNTLID.
    pub fn admin(addr: SocketAddr, dgst: u8, subnqn: &str, kato: u32) -> (Host, u16) {
        let mut h = Host::connect(addr);
        h.icreq(dgst);
        let c = h.fabric_connect(0, subnqn, HOSTNQN, 0xFFFF, kato);
        assert!(c.status.is_success(), "admin Connect: {}", c.status);
        let cntlid = c.dw0 as u16;
        assert!(h.prop_set(property::CC, 1 | (6 << 16) | (4 << 20)).status.is_success());
        let csts = h.prop_get(property::CSTS, 4);
        assert_eq!(csts.dw0 & 1, 1, "CSTS.RDY");
        (h, cntlid)
    }

    /// An I/O queue of controller `cntlid`.
    pub fn io(addr: SocketAddr, dgst: u8, cntlid: u16) -> Host {
        Self::io_on(Host::connect(addr), dgst, cntlid)
    }

    /// An I/O queue of controller `cntlid` on an already connected socket.
    pub fn io_on(mut h: Host, dgst: u8, cntlid: u16) -> Host {
        h.icreq(dgst);
        let c = h.fabric_connect(1, SUBNQN, HOSTNQN, cntlid, 0);
        assert!(c.status.is_success(), "I/O Connect: {}", c.status);
        h
    }

    pub fn rw_sqe(opc: u8, nsid: u32, slba: u64, nlb: u32, len: u32, id: u8) -> Sqe {
        let mut sqe = Sqe([0; 64]);
        sqe.0[0] = opc;
        sqe.0[4..8].copy_from_slice(&nsid.to_le_bytes());
        sqe.set_cdw(10, slba as u32);
        sqe.set_cdw(11, (slba >> 32) as u32);
        sqe.set_cdw(12, nlb - 1);
        sqe.set_sgl1(Sgl {
            address: 0,
            length: len,
            id,
        });
        sqe
    }

    pub fn write(&mut self, slba: u64, data: &[u8]) -> Cqe {
        let id = if data.len() <= 4096 {
            sgl_id::DATA_BLOCK_OFFSET
        } else {
            sgl_id::TRANSPORT_DATA_BLOCK
        };
        let sqe = Self::rw_sqe(0x01, 1, slba, (data.len() / 512) as u32, data.len() as u32, id);
        self.command(sqe, data).1
    }

    pub fn read(&mut self, slba: u64, blocks: u32) -> (Vec<u8>, Cqe) {
        let sqe = Self::rw_sqe(0x02, 1, slba, blocks, blocks * 512, sgl_id::TRANSPORT_DATA_BLOCK);
        self.command(sqe, &[])
    }
}

pub fn discovery_nqn() -> &'static str {
    DISCOVERY_NQN
}

/// Open fds of this process (for leak checks).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Polls `cond` for up to 5 s.
pub fn wait(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// A healthy queue pair doing 4 KiB verified writes and reads, for checking
/// that faults on other connections leave it alone.
pub struct Healthy {
    _admin: Host,
    pub io: Host,
    n: u64,
}

impl Healthy {
    pub fn new(t: &Tgt) -> Self {
        let (admin, cntlid) = Host::admin(t.addr, 0, SUBNQN, 0);
        let io = Host::io(t.addr, 0, cntlid);
        Healthy {
            _admin: admin,
            io,
            n: 0,
        }
    }

    pub fn check(&mut self) {
        self.n += 1;
        let data: Vec<u8> = (0..4096u32).map(|i| (i as u64 ^ self.n) as u8).collect();
        let t = Instant::now();
        assert!(self.io.write(self.n % 1000 * 8, &data).status.is_success());
        let (back, c) = self.io.read(self.n % 1000 * 8, 8);
        assert!(c.status.is_success() && back == data, "healthy connection corrupted");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "healthy connection stalled {:?}",
            t.elapsed()
        );
    }
}

/// A recognisable byte pattern: distinct for each `seed` and position.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
