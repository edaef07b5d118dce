//! Log pages (NVMe Base 2.0 section 5.16; discovery log page 70h, NVMe-oF 1.1
//! section 5.3).

use std::net::SocketAddr;

use lull_proto::nvme::{admin_opc, io_opc};

use crate::subsystem::{Subsystem, SubsystemKind};

/// Log page identifiers.
pub mod lid {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Changed Namespace List.
    pub const CHANGED_NS: u8 = 0x04;
    /// Commands Supported and Effects.
    pub const COMMANDS_EFFECTS: u8 = 0x05;
    /// Discovery (on a discovery controller).
    pub const DISCOVERY: u8 = 0x70;
}

/// Error Information: one empty 64-byte entry (no error recorded).
pub fn error_log() -> Vec<u8> {
    vec![0u8; 64]
}

/// SMART / Health Information, 512 bytes, from the subsystem's counters.
pub fn smart(s: &Subsystem) -> Vec<u8> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut b = vec![0u8; 512];
    b[1..3].copy_from_slice(&293u16.to_le_bytes()); // composite temperature, K (20 C)
    b[3] = 100; // available spare, %
    b[4] = 10; // available spare threshold, %
    // Data units are thousands of 512-byte units, rounded up.
    let units = |bytes: u64| u128::from(bytes.div_ceil(512).div_ceil(1000));
    let c = &s.counters;
    b[32..48].copy_from_slice(&units(c.bytes_read.load(Relaxed)).to_le_bytes());
    b[48..64].copy_from_slice(&units(c.bytes_written.load(Relaxed)).to_le_bytes());
    b[64..80].copy_from_slice(&u128::from(c.reads.load(Relaxed)).to_le_bytes());
    b[80..96].copy_from_slice(&u128::from(c.writes.load(Relaxed)).to_le_bytes());
    b
}

/// Firmware Slot Information, 512 bytes: slot 1 active.
pub fn firmware_slot() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 1;
    let fr = env!("CARGO_PKG_VERSION").as_bytes();
    let n = fr.len().min(8);
    b[8..8 + n].copy_from_slice(&fr[..n]);
    b[8 + n..16].fill(b' ');
    b
}

/// Commands Supported and Effects, 4096 bytes: CSUPP for every command lull executes.
pub fn commands_effects() -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let admin = [
        admin_opc::GET_LOG_PAGE,
        admin_opc::IDENTIFY,
        admin_opc::ABORT,
        admin_opc::SET_FEATURES,
        admin_opc::GET_FEATURES,
        admin_opc::ASYNC_EVENT_REQUEST,
        admin_opc::KEEP_ALIVE,
    ];
    for opc in admin {
        b[usize::from(opc) * 4] = 1;
    }
    let io = [
        io_opc::FLUSH,
        io_opc::WRITE,
        io_opc::READ,
        io_opc::COMPARE,
        io_opc::WRITE_ZEROES,
        io_opc::DATASET_MANAGEMENT,
    ];
    for opc in io {
        // CSUPP, plus LBCC (logical block content change) for commands that write.
        let lbcc = matches!(opc, io_opc::WRITE | io_opc::WRITE_ZEROES | io_opc::DATASET_MANAGEMENT);
        b[1024 + usize::from(opc) * 4] = 1 | if lbcc { 2 } else { 0 };
    }
    b
}

/// A listener as the discovery log page describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerEntry {
    /// Address and port.
    pub addr: SocketAddr,
    /// PORTID (stable per listener).
    pub portid: u16,
}

fn put_padded(b: &mut [u8], s: &str, pad: u8) {
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b[n..].fill(pad);
}

/// The discovery log page (70h): a 1024-byte header, then one 1024-byte
/// entry per (subsystem, listener) the host may see, the discovery
/// subsystem itself included (SUBTYPE 3).
/// `subsystems` pairs each subsystem with the ports that reach it.
pub fn discovery(genctr: u64, subsystems: &[(&Subsystem, Vec<ListenerEntry>)], hostnqn: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    for (s, listeners) in subsystems.iter().filter(|(s, _)| s.allows(hostnqn)) {
        for l in listeners {
            let mut e = vec![0u8; 1024];
            e[0] = 3; // TRTYPE: TCP
            e[1] = if l.addr.is_ipv4() { 1 } else { 2 }; // ADRFAM
            e[2] = match s.kind {
                SubsystemKind::Nvm => 2,
                SubsystemKind::Discovery => 3,
            }; // SUBTYPE
            // TREQ: secure channel not required (10b); SQ flow control may be disabled (bit 2).
            e[3] = 0b110;
            e[4..6].copy_from_slice(&l.portid.to_le_bytes());
            e[6..8].copy_from_slice(&0xFFFFu16.to_le_bytes()); // CNTLID: dynamic
            e[8..10].copy_from_slice(&32u16.to_le_bytes()); // ASQSZ
            put_padded(&mut e[32..64], &l.addr.port().to_string(), b' ');
            put_padded(&mut e[256..512], &s.nqn, 0);
            put_padded(&mut e[512..768], &l.addr.ip().to_string(), b' ');
            // TSAS for TCP: SECTYPE 0 (no security), the rest reserved.
            entries.push(e);
        }
    }
    let mut b = vec![0u8; 1024];
    b[0..8].copy_from_slice(&genctr.to_le_bytes());
    b[8..16].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        b.extend(e);
    }
    b
}

/// The part of a log page a Get Log Page asks for: `len` bytes from
/// `offset`, zero-filled past the end of the page.
pub fn slice(page: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if let Ok(off) = usize::try_from(offset)
        && off < page.len()
    {
        let n = (page.len() - off).min(len);
        out[..n].copy_from_slice(&page[off..off + n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b29_discovery_entry_formats() {
        let nvm = Subsystem::new("nqn.2024-01.test:sub1", "SN", "M").unwrap();
        nvm.set_allow_any_host(true);
        let disc = Subsystem::discovery();
        let hidden = Subsystem::new("nqn.2024-01.test:hidden", "SN", "M").unwrap();
        hidden.add_host("nqn.2024-01.test:other").unwrap();
        let l = [ListenerEntry {
            addr: "127.0.0.1:4420".parse().unwrap(),
            portid: 1,
        }];
        let page = discovery(
            7,
            &[(&disc, l.to_vec()), (&nvm, l.to_vec()), (&hidden, l.to_vec())],
            "nqn.2024-01.test:h",
        );
        assert_eq!(u64::from_le_bytes(page[0..8].try_into().unwrap()), 7);
        assert_eq!(
            u64::from_le_bytes(page[8..16].try_into().unwrap()),
            2,
            "hidden subsystem not listed"
        );
        assert_eq!(page.len(), 3 * 1024);
        let d = &page[1024..2048];
        let e = &page[2048..3072];
        assert_eq!((d[0], d[1], d[2], d[3]), (3, 1, 3, 6));
        assert_eq!((e[0], e[1], e[2], e[3]), (3, 1, 2, 6));
        assert_eq!(&e[4..10], &[1, 0, 0xFF, 0xFF, 32, 0]);
        assert_eq!(&e[32..36], b"4420");
        assert!(e[36..64].iter().all(|&c| c == b' '));
        assert_eq!(&e[512..521], b"127.0.0.1");
        assert!(e[521..768].iter().all(|&c| c == b' '));
        assert_eq!(&e[256..277], b"nqn.2024-01.test:sub1");
        assert!(e[277..512].iter().all(|&c| c == 0));
        assert!(e[768..].iter().all(|&c| c == 0), "TSAS SECTYPE 0, reserved 0");
        assert!(e[10..32].iter().all(|&c| c == 0), "reserved bytes are zero");
        let s = slice(&page, 1024 + 1020, 8);
        assert_eq!(&s[..4], &d[1020..1024]);
        assert_eq!(&s[4..], &e[..4]);
        assert_eq!(slice(&page, 1 << 40, 4), vec![0; 4]);
    }
}
