//! Identify (NVMe Base 2.0 section 5.17; NVM Command Set 1.0 section
//! 4.1.5; NVMe-oF 1.1 figure 31 for the fabrics fields): the command's
//! dispatch on CNS, and the data structures it returns.

use lull_proto::nvme::cmd::{Identify, cns};
use lull_proto::nvme::status;
use lull_proto::target_queue::{Request, Response};

use crate::nvmf::subsystem::{MAX_NAMESPACES, Namespace, Subsystem, SubsystemKind};

/// Size of every Identify data structure, bytes.
pub const IDENTIFY_LEN: usize = 4096;
/// NVMe version reported in VS and Identify (2.0).
pub const NVME_VERSION: u32 = 0x0002_0000;
/// MDTS: largest transfer = 2^MDTS x 4 KiB = 128 KiB.
pub const MDTS: u8 = 5;
/// Largest transfer of one command, bytes (from MDTS).
pub const MAX_TRANSFER: u32 = 4096 << MDTS;
/// Asynchronous Event Request Limit, 0's based (4 outstanding).
pub const AERL: u8 = 3;
/// Keep Alive Support granularity, 100 ms units (1 s, as the Linux target).
pub const KAS: u16 = 10;

/// Executes Identify (admin opcode 06h): the structure CNS (CDW10 bits 7:0)
/// names, cut to the host's buffer. An inactive but valid NSID reads as
/// zeroes; a discovery controller has only the controller structure.
/// Invalid Namespace when CNS 00h/03h names no structure, Invalid Field in
/// Command for any other CNS or NSID refused.
pub(crate) fn execute(req: &Request, id: &ControllerIdentity<'_>) -> Response {
    let sqe = &req.sqe;
    let (cid, nsid, cns) = (sqe.cid(), sqe.nsid(), Identify::parse(sqe).cns);
    let s = id.subsystem;
    let nvm = s.kind == SubsystemKind::Nvm;
    let data = match cns {
        cns::CONTROLLER => Some(controller(id)),
        cns::NAMESPACE if nvm => match s.namespace(nsid) {
            Some(ns) => Some(namespace(&ns)),
            None if nsid != 0 && nsid <= MAX_NAMESPACES => Some(vec![0u8; IDENTIFY_LEN]),
            None => None,
        },
        cns::ACTIVE_NAMESPACES if nvm && nsid < 0xFFFF_FFFE => Some(active_namespaces(s, nsid)),
        cns::NAMESPACE_DESCRIPTORS if nvm => s.namespace(nsid).as_ref().map(namespace_descriptors),
        _ => None,
    };
    match data {
        Some(mut d) => {
            d.truncate(req.c2h_len as usize);
            Response::ok_with_data(cid, d)
        }
        None if cns == cns::NAMESPACE || cns == cns::NAMESPACE_DESCRIPTORS => {
            Response::dnr(cid, status::INVALID_NAMESPACE)
        }
        None => Response::dnr(cid, status::INVALID_FIELD),
    }
}

fn put_str(b: &mut [u8], s: &str) {
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b[n..].fill(b' ');
}

/// Fields of Identify Controller that depend on the queue pair's transport settings.
pub struct ControllerIdentity<'a> {
    /// The subsystem.
    pub subsystem: &'a Subsystem,
    /// CNTLID.
    pub cntlid: u16,
    /// In-capsule data on I/O queues, bytes (IOCCSZ = (64 + this) / 16).
    pub io_in_capsule_data: u32,
    /// MAXCMD: most commands outstanding on a queue (`max_queue_depth`).
    pub maxcmd: u16,
}

/// Identify Controller (CNS 01h).
pub fn controller(id: &ControllerIdentity<'_>) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let s = id.subsystem;
    put_str(&mut b[4..24], &s.serial);
    put_str(&mut b[24..64], &s.model);
    put_str(&mut b[64..72], env!("CARGO_PKG_VERSION"));
    b[72] = 6; // RAB
    b[76] = 1 << 1; // CMIC: may have more than one controller
    b[77] = MDTS;
    b[78..80].copy_from_slice(&id.cntlid.to_le_bytes());
    b[80..84].copy_from_slice(&NVME_VERSION.to_le_bytes());
    b[96..100].copy_from_slice(&1u32.to_le_bytes()); // CTRATT: 128-bit Host Identifier
    b[111] = match s.kind {
        SubsystemKind::Nvm => 1,
        SubsystemKind::Discovery => 2,
    }; // CNTRLTYPE
    b[258] = 3; // ACL, 0's based
    b[259] = AERL;
    b[260] = 1 << 1 | 1; // FRMW: slot 1 read-only, 1 slot
    b[261] = 1 << 1 | 1 << 2; // LPA: commands supported and effects log, extended data
    b[320..322].copy_from_slice(&KAS.to_le_bytes());
    if s.kind == SubsystemKind::Nvm {
        b[92..96].copy_from_slice(&(1u32 << 8).to_le_bytes()); // OAES: Namespace Attribute Notices
    }
    b[512] = 0x66; // SQES: 64-byte entries
    b[513] = 0x44; // CQES: 16-byte entries
    b[514..516].copy_from_slice(&id.maxcmd.to_le_bytes()); // MAXCMD
    if s.kind == SubsystemKind::Nvm {
        b[516..520].copy_from_slice(&MAX_NAMESPACES.to_le_bytes()); // NN
        b[520..522].copy_from_slice(&(1u16 | 1 << 2 | 1 << 3).to_le_bytes()); // ONCS: Compare, DSM, Write Zeroes
        b[525] = 1; // VWC: volatile write cache present, so hosts send Flush
    }
    // SGLS: SGLs supported (no alignment rule), SGL Address is an Offset (in-capsule data).
    b[536..540].copy_from_slice(&(1u32 | 1 << 20).to_le_bytes());
    let nqn = s.nqn.as_bytes();
    b[768..768 + nqn.len()].copy_from_slice(nqn);
    // NVMe over Fabrics attributes.
    let ioccsz = (64 + id.io_in_capsule_data) / 16;
    b[1792..1796].copy_from_slice(&ioccsz.to_le_bytes());
    b[1796..1800].copy_from_slice(&1u32.to_le_bytes()); // IORCSZ
    b[1803] = 1; // MSDBD
    b[1804..1806].copy_from_slice(&1u16.to_le_bytes()); // OFCS: Disconnect supported
    b
}

/// Identify Namespace (CNS 00h).
pub fn namespace(ns: &Namespace) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let blocks = ns.bdev.info().num_blocks;
    for at in [0, 8, 16] {
        b[at..at + 8].copy_from_slice(&blocks.to_le_bytes()); // NSZE, NCAP, NUSE
    }
    b[26] = 0; // FLBAS: format 0
    b[30] = 1; // NMIC: may be attached to several controllers
    b[33] = 1; // DLFEAT: deallocated blocks read as zeroes
    b[104..120].copy_from_slice(&ns.nguid);
    b[120..128].copy_from_slice(&ns.eui64);
    let lbads = ns.bdev.info().block_size.trailing_zeros();
    b[128..132].copy_from_slice(&(lbads << 16).to_le_bytes()); // LBAF0
    b
}

/// Active Namespace ID list (CNS 02h): NSIDs above `after`, ascending.
pub fn active_namespaces(s: &Subsystem, after: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    for (i, ns) in s
        .namespaces()
        .iter()
        .filter(|n| n.nsid > after)
        .take(IDENTIFY_LEN / 4)
        .enumerate()
    {
        b[i * 4..i * 4 + 4].copy_from_slice(&ns.nsid.to_le_bytes());
    }
    b
}

/// Namespace Identifier Type values (NVMe Base 2.0 figure 276).
pub mod nidt {
    /// IEEE Extended Unique Identifier, 8 bytes.
    pub const EUI64: u8 = 1;
    /// Namespace Globally Unique Identifier, 16 bytes.
    pub const NGUID: u8 = 2;
    /// Namespace UUID, 16 bytes.
    pub const UUID: u8 = 3;
    /// Command Set Identifier, 1 byte.
    pub const CSI: u8 = 4;
}

/// Namespace Identification Descriptor list (CNS 03h; NVMe Base 2.0 figure
/// 275): EUI64, NGUID, UUID in that order, each only when not all zeroes,
/// as SPDK's target lists them. The CSI descriptor is left out as SPDK
/// leaves it out for the NVM command set (CSI 0); the list ends with a
/// zeroed header.
pub fn namespace_descriptors(ns: &Namespace) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let mut at = 0;
    for (id, value) in [
        (nidt::EUI64, &ns.eui64[..]),
        (nidt::NGUID, &ns.nguid[..]),
        (nidt::UUID, &ns.uuid[..]),
    ] {
        if value.iter().all(|&x| x == 0) {
            continue;
        }
        b[at] = id;
        b[at + 1] = value.len() as u8;
        b[at + 4..at + 4 + value.len()].copy_from_slice(value);
        at += 4 + value.len();
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::{Bdev, RamBdev};
    use std::sync::Arc;

    #[test]
    fn identify_fields_at_their_offsets() {
        let s = Subsystem::new("nqn.2024-01.io.lull:t", "SN123", "lull model").unwrap();
        let bdev: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", 1 << 20, 4096).unwrap());
        s.add_namespace(1, bdev).unwrap();
        let c = controller(&ControllerIdentity {
            subsystem: &s,
            cntlid: 7,
            io_in_capsule_data: 8192,
            maxcmd: 128,
        });
        assert_eq!(u16::from_le_bytes([c[514], c[515]]), 128, "MAXCMD");
        assert_eq!(&c[4..24], b"SN123               ");
        assert_eq!(&c[24..34], b"lull model");
        assert_eq!(c[34], b' ');
        assert_eq!(&c[78..80], &[7, 0]);
        assert_eq!(c[111], 1);
        assert_eq!(&c[768..768 + 21], b"nqn.2024-01.io.lull:t");
        assert_eq!(c[768 + 21], 0);
        assert_eq!(u32::from_le_bytes(c[1792..1796].try_into().unwrap()), (64 + 8192) / 16);
        let n = namespace(&s.namespaces()[0]);
        assert_eq!(u64::from_le_bytes(n[0..8].try_into().unwrap()), 256);
        assert_eq!(u32::from_le_bytes(n[128..132].try_into().unwrap()) >> 16, 12);
        let l = active_namespaces(&s, 0);
        assert_eq!(&l[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(active_namespaces(&s, 1).iter().all(|&x| x == 0));
        let d = namespace_descriptors(&s.namespaces()[0]);
        assert_eq!(&d[..4], &[2, 16, 0, 0]);
        assert_eq!(&d[20..24], &[3, 16, 0, 0]);
        assert_eq!(&d[24..40], &s.namespaces()[0].uuid);
    }
}
