//! The discovery service's log page (70h; NVMe-oF 1.1 section 5.3): one
//! entry per subsystem the host may see and port that reaches it, the
//! discovery subsystem itself included. A port bound to a wildcard address
//! (0.0.0.0, ::) is listed with the address the host reached, as the Linux
//! target does, so a host can connect to what it reads.

use std::net::SocketAddr;

use crate::nvmf::subsystem::{Subsystem, SubsystemKind};
use crate::nvmf::target::{ListenerEntry, Target};

/// The discovery log page of `target` for `hostnqn`, as read by a host that
/// reached the local address `arrived_on`.
pub fn log_page(target: &Target, hostnqn: &str, arrived_on: SocketAddr) -> Vec<u8> {
    let (genctr, reach) = target.ports_by_subsystem();
    let entries: Vec<(&Subsystem, Vec<ListenerEntry>)> = reach
        .iter()
        .map(|(s, ports)| {
            let ports = ports
                .iter()
                .map(|l| {
                    let mut e = l.clone();
                    if e.addr.ip().is_unspecified() && e.addr.is_ipv4() == arrived_on.is_ipv4() {
                        e.addr.set_ip(arrived_on.ip());
                    }
                    e
                })
                .collect();
            (s.as_ref(), ports)
        })
        .collect();
    page(genctr, &entries, hostnqn)
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
pub fn page(genctr: u64, subsystems: &[(&Subsystem, Vec<ListenerEntry>)], hostnqn: &str) -> Vec<u8> {
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
            // TREQ bits 1:0, secure channel (NVMe-oF 1.1 figure 38): 01b
            // required (a secure_channel port, or a host with a PSK, which
            // must use TLS on every port), 10b not required; bit 2: SQ flow
            // control may be disabled.
            let tls = l.secure_channel || s.host_psk_name(hostnqn).is_some();
            e[3] = if tls { 0b101 } else { 0b110 };
            e[4..6].copy_from_slice(&l.portid.to_le_bytes());
            e[6..8].copy_from_slice(&0xFFFFu16.to_le_bytes()); // CNTLID: dynamic
            e[8..10].copy_from_slice(&32u16.to_le_bytes()); // ASQSZ
            put_padded(&mut e[32..64], &l.addr.port().to_string(), b' ');
            put_padded(&mut e[256..512], &s.nqn, 0);
            put_padded(&mut e[512..768], &l.addr.ip().to_string(), b' ');
            // TSAS for TCP (NVMe/TCP 1.0 figure 5, TP 8011): SECTYPE byte 0,
            // 02h TLS 1.3 where TLS is required, else 00h no security.
            e[768] = if tls { 2 } else { 0 };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvmf::admin::log_page::slice;

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
            secure_channel: false,
        }];
        let page = page(
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

    #[test]
    fn a_secure_channel_port_says_tls_1_3_is_required() {
        let nvm = Subsystem::new("nqn.2024-01.test:sub1", "SN", "M").unwrap();
        nvm.add_host("nqn.2024-01.test:h").unwrap();
        let l = [ListenerEntry {
            addr: "127.0.0.1:4421".parse().unwrap(),
            portid: 2,
            secure_channel: true,
        }];
        let page = page(1, &[(&nvm, l.to_vec())], "nqn.2024-01.test:h");
        let e = &page[1024..2048];
        // TREQ: 01b secure channel required, bit 2 SQ flow control disable.
        assert_eq!(e[3], 0b101);
        // TSAS SECTYPE 02h: TLS 1.3; the rest of TSAS reserved.
        assert_eq!(e[768], 2);
        assert!(e[769..].iter().all(|&c| c == 0));
    }

    #[test]
    fn a_host_with_a_psk_is_told_tls_is_required_on_every_port() {
        let nvm = Subsystem::new("nqn.2024-01.test:sub1", "SN", "M").unwrap();
        nvm.add_host("nqn.2024-01.test:h").unwrap();
        nvm.add_host("nqn.2024-01.test:plain").unwrap();
        let psk = lull_proto::tls_psk::ConfiguredPsk::from_key(None, &[7u8; 32]).unwrap();
        nvm.set_host_psk("nqn.2024-01.test:h", &psk, None).unwrap();
        let l = [ListenerEntry {
            addr: "127.0.0.1:4420".parse().unwrap(),
            portid: 1,
            secure_channel: false,
        }];
        // The port takes both; this host must use TLS (its Connect in
        // plaintext is refused), so it reads "required", TLS 1.3.
        let page_h = page(1, &[(&nvm, l.to_vec())], "nqn.2024-01.test:h");
        assert_eq!((page_h[1024 + 3], page_h[1024 + 768]), (0b101, 2));
        // A host without one: "not required", no security.
        let page_p = page(1, &[(&nvm, l.to_vec())], "nqn.2024-01.test:plain");
        assert_eq!((page_p[1024 + 3], page_p[1024 + 768]), (0b110, 0));
    }
}
