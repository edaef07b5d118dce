//! Hostile peers against a `secure_channel` port, each bounded in time:
//! a handshake and a whole association fed one byte per segment; a fatal
//! PDU inside TLS (its C2HTermReq comes back encrypted, then the close);
//! a forged record and a close_notify in the middle of a PDU after the
//! handshake; first bytes that are neither a PDU nor a TLS record; a
//! ClientHello on a plaintext port; KeyUpdates asking the target to update
//! its keys too, one after another; a host keyed for one subsystem naming
//! another; a host that stops reading 8 MiB of reads. Meanwhile stalled
//! handshakes leave the interrupt-mode reactors asleep, the other
//! connections keep working, and nothing is left open.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HOSTNQN, SUBNQN, Tgt, icreq_bytes, open_fds, target};
use lull_proto::fabrics::ConnectData;
use lull_proto::pdu::{Digests, IC_HLEN};
use lull_proto::tls_psk::{ConfiguredPsk, IdentityVersion, TlsPsk};
use lull_reactor::Mode;
use lull_transport::host_sync::SyncQueue;
use lull_transport::tls::{self, Handshake, Wire};

const KEY32: &str = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
/// PDU types (NVMe/TCP 1.0 section 3.6.1): ICResp, C2HTermReq.
const IC_RESP: u8 = 0x01;
const C2H_TERM_REQ: u8 = 0x03;

fn psk() -> TlsPsk {
    ConfiguredPsk::parse(KEY32)
        .unwrap()
        .tls_psk(HOSTNQN, SUBNQN, IdentityVersion::V1)
        .unwrap()
}

/// The fixture with HOSTNQN keyed by [`KEY32`] and a `secure_channel` port.
fn secure_target() -> (Tgt, SocketAddr) {
    let t = target(Mode::Interrupt);
    let s = t.target.subsystem(SUBNQN).unwrap();
    s.set_host_psk(HOSTNQN, &ConfiguredPsk::parse(KEY32).unwrap(), None)
        .unwrap();
    let secure = t
        .target
        .add_subsystem_listener_secure(t.reactors.handles(), SUBNQN, "127.0.0.1:0".parse().unwrap(), true)
        .unwrap();
    (t, secure)
}

/// A TLS client on a blocking socket with a read timeout, handshake done.
fn tls_client(addr: SocketAddr) -> Wire {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut w = tls::client(Arc::new(sock), psk()).unwrap();
    assert!(matches!(w.handshake().unwrap(), Handshake::Done(_)));
    w
}

fn write_all(w: &mut Wire, mut b: &[u8]) {
    while !b.is_empty() {
        let n = w.write(b).unwrap();
        b = &b[n..];
    }
}

/// Reads exactly `n` plaintext bytes, or what came before the end.
fn read_n(w: &mut Wire, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match w.read(&mut out[got..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    out.truncate(got);
    out
}

/// Whether the target closed the connection within `limit` (an end of
/// stream, a reset or a TLS failure; not a timeout, not more bytes).
fn closed_within(w: &mut Wire, limit: Duration) -> bool {
    let t0 = Instant::now();
    let mut b = [0u8; 64];
    loop {
        match w.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if t0.elapsed() > limit {
                    return false;
                }
            }
            Err(_) => return true,
        }
    }
}

fn raw_closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            // A C2HTermReq or a TLS alert may come first; then the close.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// Forwards `addr`'s traffic for one connection, the host's bytes one per
/// segment (TCP_NODELAY, a pause between), so every TLS record and PDU the
/// target reads arrives split. Returns the proxy's address.
fn byte_by_byte_proxy(addr: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut host, _)) = l.accept() else { return };
        let Ok(mut tgt) = TcpStream::connect(addr) else { return };
        tgt.set_nodelay(true).unwrap();
        let (mut back_from, mut back_to) = (tgt.try_clone().unwrap(), host.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut back_from, &mut back_to);
            let _ = back_to.shutdown(std::net::Shutdown::Both);
        });
        let mut b = [0u8; 65536];
        let mut sent = 0usize;
        while let Ok(n) = host.read(&mut b) {
            if n == 0 {
                break;
            }
            for &byte in &b[..n] {
                if tgt.write_all(&[byte]).is_err() {
                    return;
                }
                sent += 1;
                // A pause now and then, so the target sees the pieces apart
                // (not one per byte: a 4 KiB capsule would take too long).
                if sent.is_multiple_of(64) || sent < 600 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        let _ = tgt.shutdown(std::net::Shutdown::Write);
    });
    local
}

fn connect_data(hostnqn: &str, cntlid: u16) -> ConnectData {
    ConnectData {
        hostid: [0x11; 16],
        cntlid,
        subnqn: SUBNQN.into(),
        hostnqn: hostnqn.into(),
    }
}

/// The CPU time the target's reactors have used.
fn reactor_cpu(t: &Tgt) -> Duration {
    Duration::from_nanos(t.reactors.handles().iter().map(|h| h.stats().thread_cpu_ns).sum())
}

#[test]
fn hostile_tls_peers_are_answered_and_closed_while_the_others_go_on() {
    let (t, secure) = secure_target();
    let fds = open_fds();

    // Stalled handshakes (a record header, nothing more) held open while
    // everything else runs: the reactors sleep, nobody waits on them.
    let mut stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(secure).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x50]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = reactor_cpu(&t);
    std::thread::sleep(Duration::from_secs(1));
    let spent = reactor_cpu(&t) - cpu0;
    assert!(
        spent < Duration::from_millis(50),
        "50 stalled handshakes cost {spent:?} of CPU in 1 s: a reactor spins"
    );

    // A whole association with every byte of the host's in its own segment.
    let via = byte_by_byte_proxy(secure);
    let mut q = SyncQueue::connect_secure(
        via,
        Digests::default(),
        8192,
        Duration::from_secs(5),
        None,
        Some(&psk()),
    )
    .expect("a handshake fed one byte at a time completes");
    q.fabric_connect(0, 31, 0, &connect_data(HOSTNQN, 0xFFFF))
        .expect("Connect through the splitting proxy");
    drop(q);

    // A fatal PDU inside TLS: the C2HTermReq comes back encrypted (a
    // reserved PDU type: FES 01h, FEI 0), then the connection closes.
    let mut w = tls_client(secure);
    write_all(&mut w, &icreq_bytes(0));
    let icresp = read_n(&mut w, IC_HLEN);
    assert_eq!((icresp.len(), icresp[0]), (IC_HLEN, IC_RESP), "ICResp through TLS");
    write_all(&mut w, &[0x7F, 0, 8, 0, 8, 0, 0, 0]);
    let term = read_n(&mut w, 24);
    assert_eq!(term.len(), 24, "a C2HTermReq header through TLS: {term:?}");
    assert_eq!(term[0], C2H_TERM_REQ, "{term:?}");
    assert_eq!(
        u16::from_le_bytes([term[8], term[9]]),
        1,
        "FES 01h (Invalid Header Field)"
    );
    assert_eq!(
        u32::from_le_bytes([term[10], term[11], term[12], term[13]]),
        0,
        "FEI 0 (PDU type)"
    );
    // The rest of it: the offending header, copied back.
    let plen = u32::from_le_bytes([term[4], term[5], term[6], term[7]]) as usize;
    assert_eq!(read_n(&mut w, plen - 24), [0x7F, 0, 8, 0, 8, 0, 0, 0]);
    assert!(
        closed_within(&mut w, Duration::from_secs(2)),
        "closed after the C2HTermReq"
    );

    // A forged application-data record after the handshake (not sealed
    // with the session's key): the record fails to open, the connection
    // closes, nothing is answered in plaintext.
    let w = tls_client(secure);
    let mut raw = w.tcp().try_clone().unwrap();
    raw.write_all(&[0x17, 0x03, 0x03, 0x00, 0x20]).unwrap();
    raw.write_all(&[0xA5; 0x20]).unwrap();
    assert!(
        raw_closed_within(&mut raw, Duration::from_secs(2)),
        "a forged record closes"
    );
    drop((w, raw));

    // A close_notify in the middle of a PDU (half an ICReq): closed.
    let mut w = tls_client(secure);
    write_all(&mut w, &icreq_bytes(0)[..60]);
    w.close_notify();
    assert!(
        closed_within(&mut w, Duration::from_secs(2)),
        "close_notify mid-PDU closes"
    );

    // A handshake done, then garbage on the socket that is no TLS record
    // at all (a plaintext ICReq): closed.
    let w = tls_client(secure);
    let mut raw = w.tcp().try_clone().unwrap();
    raw.write_all(&icreq_bytes(0)).unwrap();
    assert!(
        raw_closed_within(&mut raw, Duration::from_secs(2)),
        "plaintext after the handshake closes"
    );
    drop((w, raw));

    // First bytes that are neither an ICReq nor a TLS handshake record
    // (an HTTP request; an application-data record before any handshake).
    for first in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]] {
        let mut s = TcpStream::connect(secure).unwrap();
        s.write_all(first).unwrap();
        assert!(raw_closed_within(&mut s, Duration::from_secs(2)), "{first:?} closes");
    }

    // The port without secure_channel takes TLS too: a ClientHello with a
    // known identity completes the handshake; a record that starts like
    // one but is garbage fails it and the connection closes (no plaintext
    // C2HTermReq: from its first byte on, the connection is TLS).
    let sock = TcpStream::connect(t.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut hello = tls::client(Arc::new(sock), psk()).unwrap();
    let mut done = false;
    for _ in 0..100 {
        match hello.handshake() {
            Ok(tls::Handshake::Done(_)) => {
                done = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("TLS on the port without secure_channel: {e}"),
        }
    }
    assert!(done, "the handshake on the port without secure_channel did not finish");
    drop(hello);
    let mut s = TcpStream::connect(t.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x50]).unwrap();
    s.write_all(&[0u8; 0x50]).unwrap();
    let mut b = [0u8; 8];
    let n = s.read(&mut b).unwrap_or(0);
    assert!(
        n == 0 || b[0] == 0x15,
        "a bad ClientHello gets a TLS alert or nothing: {:?}",
        &b[..n]
    );
    assert!(raw_closed_within(&mut s, Duration::from_secs(2)));
    drop(s);

    // The port still serves a well-behaved host, at once.
    let t0 = Instant::now();
    let mut q = SyncQueue::connect_secure(
        secure,
        Digests::default(),
        8192,
        Duration::from_secs(5),
        None,
        Some(&psk()),
    )
    .unwrap();
    q.fabric_connect(0, 31, 0, &connect_data(HOSTNQN, 0xFFFF)).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "a good host waited {:?}",
        t0.elapsed()
    );
    drop(q);

    // The stalled ones go; nothing is left open.
    for s in stalled.drain(..) {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    assert!(
        common::wait(|| open_fds() <= fds + 2),
        "{fds} fds before, {} after: {:?}",
        open_fds(),
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .collect::<Vec<_>>()
    );
}

// SSL_key_update (OpenSSL 1.1.1 and later, ssl.h), which openssl-sys does
// not declare.
unsafe extern "C" {
    fn SSL_key_update(ssl: *mut openssl_sys::SSL, updatetype: std::ffi::c_int) -> std::ffi::c_int;
}
/// SSL_KEY_UPDATE_REQUESTED: the peer must update its sending keys too.
const KEY_UPDATE_REQUESTED: std::ffi::c_int = 1;

/// A TLS 1.3 client of OpenSSL's own on a blocking socket, keyed by the
/// derived PSK of [`psk`] (TLS_AES_128_GCM_SHA256, its suite).
fn openssl_client(addr: SocketAddr) -> openssl::ssl::SslStream<TcpStream> {
    use openssl::ssl::{Ssl, SslContext, SslMethod, SslVersion};
    let mut b = SslContext::builder(SslMethod::tls_client()).unwrap();
    b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    b.set_max_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    b.set_ciphersuites("TLS_AES_128_GCM_SHA256").unwrap();
    let p = psk();
    let (id, key) = (p.identity().as_bytes().to_vec(), p.key().to_vec());
    b.set_psk_client_callback(move |_ssl, _hint, identity, out| {
        // NUL-terminated identity, then the key.
        identity[..id.len()].copy_from_slice(&id);
        identity[id.len()] = 0;
        out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    let ctx = b.build();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    Ssl::new(&ctx).unwrap().connect(sock).unwrap()
}

#[test]
fn key_updates_the_host_asks_for_are_answered_and_the_queue_goes_on() {
    use foreign_types::ForeignTypeRef;
    let (_t, secure) = secure_target();
    let mut s = openssl_client(secure);
    let update = |s: &openssl::ssl::SslStream<TcpStream>| {
        // SAFETY: the stream's live SSL; the call only queues a message.
        assert_eq!(unsafe { SSL_key_update(s.ssl().as_ptr(), KEY_UPDATE_REQUESTED) }, 1);
    };
    // A KeyUpdate (sent with the next record), then the ICReq under the
    // new keys: the target updates its own keys and answers under them.
    update(&s);
    s.write_all(&icreq_bytes(0)).unwrap();
    let mut icresp = [0u8; IC_HLEN];
    s.read_exact(&mut icresp).unwrap();
    assert_eq!(icresp[0], IC_RESP);
    // Five more, each with one byte of a fatal PDU (so the PDU spans five
    // key generations), then the rest: its C2HTermReq comes back readable,
    // so both sides kept to the same keys.
    let fatal = [0x7Fu8, 0, 8, 0, 8, 0, 0, 0];
    for b in &fatal[..5] {
        update(&s);
        s.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    s.write_all(&fatal[5..]).unwrap();
    let mut term = [0u8; 24];
    s.read_exact(&mut term).unwrap();
    assert_eq!(term[0], C2H_TERM_REQ, "{term:?}");
}

#[test]
fn a_psk_for_one_subsystem_does_not_open_another_on_the_same_port() {
    use lull_engine::nvmf::subsystem::Subsystem;
    use lull_proto::nvme::status;
    use lull_transport::host_sync::SyncError;
    const SUB2: &str = "nqn.2024-01.test:sub2";
    let (t, secure) = secure_target();
    // A second subsystem on the same secure port, allowing the same host.
    let s2 = Subsystem::new(SUB2, "SN0002", "lull test").unwrap();
    s2.add_host(HOSTNQN).unwrap();
    t.target.add_subsystem(s2).unwrap();
    t.target
        .add_subsystem_listener_secure(t.reactors.handles(), SUB2, secure, true)
        .unwrap();
    // Keyed for SUBNQN, naming SUB2 in Connect: Connect Invalid Host.
    let mut q = SyncQueue::connect_secure(
        secure,
        Digests::default(),
        8192,
        Duration::from_secs(5),
        None,
        Some(&psk()),
    )
    .unwrap();
    let data = ConnectData {
        subnqn: SUB2.into(),
        ..connect_data(HOSTNQN, 0xFFFF)
    };
    let r = q.fabric_connect(0, 31, 0, &data);
    assert!(
        matches!(&r, Err(SyncError::Status { status: st, .. }) if (st.sct(), st.sc()) == (status::CONNECT_INVALID_HOST.sct(), status::CONNECT_INVALID_HOST.sc())),
        "{r:?}"
    );
    // SUB2 has no PSK for the host: its identity for SUB2 is unknown.
    let for_sub2 = ConfiguredPsk::parse(KEY32)
        .unwrap()
        .tls_psk(HOSTNQN, SUB2, IdentityVersion::V1)
        .unwrap();
    assert!(
        SyncQueue::connect_secure(
            secure,
            Digests::default(),
            8192,
            Duration::from_secs(5),
            None,
            Some(&for_sub2)
        )
        .is_err()
    );
    // The PSK's own subsystem still takes it.
    let mut q = SyncQueue::connect_secure(
        secure,
        Digests::default(),
        8192,
        Duration::from_secs(5),
        None,
        Some(&psk()),
    )
    .unwrap();
    q.fabric_connect(0, 31, 0, &connect_data(HOSTNQN, 0xFFFF)).unwrap();
}

fn rw(opc: u8, slba: u64, blocks: u32, cid: u16) -> lull_proto::nvme::Sqe {
    let mut sqe = lull_proto::nvme::Sqe([0; 64]);
    sqe.0[0] = opc;
    sqe.0[4..8].copy_from_slice(&1u32.to_le_bytes());
    sqe.set_cid(cid);
    sqe.set_cdw(10, slba as u32);
    sqe.set_cdw(12, blocks - 1);
    sqe
}

#[test]
fn a_host_that_stops_reading_its_tls_queue_costs_no_cpu_and_loses_nothing() {
    use lull_proto::nvme::io_opc;
    const READS: u16 = 64;
    const BLOCKS: u32 = 256;
    let (t, secure) = secure_target();
    let connect = || {
        SyncQueue::connect_secure(
            secure,
            Digests::default(),
            8192,
            Duration::from_secs(5),
            None,
            Some(&psk()),
        )
        .unwrap()
    };
    let mut admin = connect();
    let cntlid = admin
        .fabric_connect(0, 31, 0, &connect_data(HOSTNQN, 0xFFFF))
        .unwrap()
        .dw0 as u16;
    admin.enable(Duration::from_secs(5)).unwrap();
    let mut io = connect();
    io.fabric_connect(1, 127, 0, &connect_data(HOSTNQN, cntlid)).unwrap();
    let pattern: Vec<u8> = (0..BLOCKS as usize * 512).map(|i| (i * 31 / 7) as u8).collect();
    io.call("write", rw(io_opc::WRITE, 0, BLOCKS, 1), &pattern, 0).unwrap();

    // 64 reads of 128 KiB (8 MiB, far beyond the sockets' buffers), then
    // nothing read: the target's TLS sends stop on a full socket.
    let (mut wire, mut q) = io.into_parts();
    // 64 KiB: the window stops growing. (Much smaller after the connect
    // and Linux drops what the window it already offered lets in: the
    // transfer then crawls on retransmissions, TLS or not.)
    rustix::net::sockopt::set_socket_recv_buffer_size(wire.tcp(), 64 * 1024).unwrap();
    for cid in 0..READS {
        q.submit(rw(io_opc::READ, 0, BLOCKS, 100 + cid), &[], BLOCKS * 512)
            .unwrap();
    }
    while q.wants_send() {
        let n = wire.write(q.pending_send()).unwrap();
        q.sent(n);
    }
    std::thread::sleep(Duration::from_millis(300));
    let cpu0 = reactor_cpu(&t);
    std::thread::sleep(Duration::from_secs(1));
    let spent = reactor_cpu(&t) - cpu0;
    assert!(
        spent < Duration::from_millis(50),
        "a blocked TLS send cost the reactors {spent:?} in 1 s"
    );
    // The target holds most of it: the host's socket has a fraction.
    let waiting = rustix::io::ioctl_fionread(wire.tcp()).unwrap();
    assert!(
        waiting < u64::from(READS) * u64::from(BLOCKS) * 512 / 4,
        "{waiting} bytes wait at the host: the target's sends never blocked"
    );

    // Reading again: every read arrives, whole and right.
    let until = Instant::now() + Duration::from_secs(10);
    let mut done = Vec::new();
    while done.len() < usize::from(READS) {
        assert!(Instant::now() < until, "{} of {READS} reads arrived", done.len());
        let buf = q.recv_buffer(256 * 1024);
        let n = wire.read(buf).unwrap();
        assert!(n > 0, "the target closed the queue");
        q.received(256 * 1024, n);
        q.process().unwrap();
        done.extend(q.take_completions());
    }
    for c in &done {
        assert!(c.cqe.status.is_success(), "{:?}", c.cqe.status);
        assert!(c.data == pattern, "read {} differs", c.cqe.cid);
    }
}
