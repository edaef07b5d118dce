//! The TLS wire layer between two non-blocking loopback sockets driven by
//! hand in one thread: both suites, both identity versions, the refusals.

use std::io::{ErrorKind, IoSlice, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_proto::tls_psk::{ConfiguredPsk, IdentityVersion, TlsPsk};

use super::*;

const HOST: &str = "nqn.2016-06.io.spdk:host1";
const SUB: &str = "nqn.2016-06.io.spdk:cnode1";
const KEY32: &str = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";
const KEY48: &str = "NVMeTLSkey-1:02:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vcSEgBQ==:";

fn psk(key: &str, v: IdentityVersion) -> TlsPsk {
    ConfiguredPsk::parse(key)
        .expect("key")
        .tls_psk(HOST, SUB, v)
        .expect("derive")
}

/// A target that knows a fixed list of PSKs.
struct Table(Vec<TlsPsk>);

impl PskLookup for Table {
    fn find(&self, identity: &[u8]) -> Option<TlsPsk> {
        self.0.iter().find(|p| p.identity().as_bytes() == identity).cloned()
    }
}

fn pair() -> (Arc<TcpStream>, Arc<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (Arc::new(a), Arc::new(b))
}

/// Runs both handshakes until both are done or one fails.
fn handshake(client: &mut Wire, server: &mut Wire) -> Result<(TlsPsk, TlsPsk), TlsError> {
    let until = Instant::now() + Duration::from_secs(5);
    let (mut c, mut s) = (None, None);
    while c.is_none() || s.is_none() {
        assert!(Instant::now() < until, "handshake stalled");
        if c.is_none()
            && let Handshake::Done(p) = client.handshake()?
        {
            c = Some(*p);
        }
        if s.is_none()
            && let Handshake::Done(p) = server.handshake()?
        {
            s = Some(*p);
        }
    }
    Ok((c.expect("client"), s.expect("server")))
}

fn read_exact(w: &mut Wire, n: usize) -> Vec<u8> {
    let until = Instant::now() + Duration::from_secs(5);
    let mut got = vec![0u8; n];
    let mut have = 0;
    while have < n {
        assert!(Instant::now() < until, "read stalled at {have} of {n}");
        match w.read(&mut got[have..]) {
            Ok(0) => panic!("closed at {have} of {n}"),
            Ok(k) => have += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

#[test]
fn both_suites_and_both_identity_versions_carry_data_both_ways() {
    for (key, suite) in [(KEY32, "TLS_AES_128_GCM_SHA256"), (KEY48, "TLS_AES_256_GCM_SHA384")] {
        for v in [IdentityVersion::V0, IdentityVersion::V1] {
            let (a, b) = pair();
            let server = TlsServer::new(Arc::new(Table(vec![psk(key, v)]))).expect("server");
            let mut s = server.accept(b).expect("accept");
            let mut c = client(a, psk(key, v)).expect("client");
            assert!(c.handshaking() && s.handshaking());
            let (cp, sp) = handshake(&mut c, &mut s).expect("handshake");
            assert_eq!(cp.identity(), sp.identity());
            assert_eq!(sp.hostnqn(), HOST);
            assert_eq!((c.cipher(), s.cipher()), (Some(suite), Some(suite)));
            assert!(!c.handshaking() && !s.handshaking());
            // Several slices gathered into records, and one large write.
            let head = [7u8; 24];
            let body: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
            let iov = [IoSlice::new(&head), IoSlice::new(&body[..4096]), IoSlice::new(&head)];
            let mut sent = 0;
            while sent < 24 + 4096 + 24 {
                let left = skip(&iov, sent);
                match c.send_slices(&left) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            let got = read_exact(&mut s, 24 + 4096 + 24);
            assert_eq!(&got[..24], &head);
            assert_eq!(&got[24..24 + 4096], &body[..4096]);
            let mut off = 0;
            let mut got = Vec::new();
            while off < body.len() || got.len() < body.len() {
                if off < body.len() {
                    match s.write(&body[off..]) {
                        Ok(n) => {
                            assert!(n <= RECORD_PLAINTEXT, "partial writes: one record at a time");
                            off += n;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("write: {e}"),
                    }
                }
                let mut buf = [0u8; 65536];
                match c.read(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
            assert_eq!(got, body);
            // A clean close reads as the end.
            c.close_notify();
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let mut buf = [0u8; 16];
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => panic!("no data after close_notify"),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => assert!(Instant::now() < until),
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
}

/// The slices after the first `n` bytes.
pub(super) fn skip<'a>(iov: &'a [IoSlice<'a>], mut n: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::new();
    for s in iov {
        if n >= s.len() {
            n -= s.len();
            continue;
        }
        out.push(IoSlice::new(&s[n..]));
        n = 0;
    }
    out
}

#[test]
fn an_unknown_identity_or_a_wrong_key_fails_the_handshake() {
    // Unknown identity: the target knows another host only.
    let other = ConfiguredPsk::parse(KEY32)
        .expect("key")
        .tls_psk("nqn.2016-06.io.spdk:host2", SUB, IdentityVersion::V0)
        .expect("derive");
    let (a, b) = pair();
    let server = TlsServer::new(Arc::new(Table(vec![other]))).expect("server");
    let mut s = server.accept(b).expect("accept");
    let mut c = client(a, psk(KEY32, IdentityVersion::V0)).expect("client");
    assert!(handshake(&mut c, &mut s).is_err(), "unknown identity refused");

    // Same identity, another key: the binder does not verify.
    let mut wrong_key = [0x42u8; 32];
    wrong_key[0] = 1;
    let wrong = ConfiguredPsk::from_key(None, &wrong_key)
        .expect("key")
        .tls_psk(HOST, SUB, IdentityVersion::V0)
        .expect("derive");
    assert_eq!(wrong.identity(), psk(KEY32, IdentityVersion::V0).identity());
    let (a, b) = pair();
    let server = TlsServer::new(Arc::new(Table(vec![psk(KEY32, IdentityVersion::V0)]))).expect("server");
    let mut s = server.accept(b).expect("accept");
    let mut c = client(a, wrong).expect("client");
    assert!(handshake(&mut c, &mut s).is_err(), "wrong key refused");
}

#[test]
fn plaintext_nvme_tcp_on_a_tls_connection_fails_the_handshake() {
    let (a, b) = pair();
    let server = TlsServer::new(Arc::new(Table(vec![psk(KEY32, IdentityVersion::V0)]))).expect("server");
    let mut s = server.accept(b).expect("accept");
    // An ICReq: PDU type 00h, HLEN 128, PLEN 128.
    let mut icreq = [0u8; 128];
    icreq[1] = 0;
    icreq[2] = 128;
    icreq[4] = 128;
    (&*a).write_all(&icreq).expect("send ICReq");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match s.handshake() {
            Err(e) => {
                assert!(e.0.contains("handshake failed"), "{e}");
                break;
            }
            Ok(Handshake::WantRead | Handshake::WantWrite) => assert!(Instant::now() < until),
            Ok(Handshake::Done(_)) => panic!("a plaintext ICReq completed a TLS handshake"),
        }
    }
}

#[test]
fn a_plain_wire_is_the_socket_itself() {
    let (a, b) = pair();
    let mut w = Wire::plain(Arc::try_unwrap(a).expect("one owner"));
    let mut r = Wire::plain(Arc::try_unwrap(b).expect("one owner"));
    assert!(!w.is_tls() && !w.handshaking() && !w.buffered() && w.cipher().is_none());
    assert!(w.handshake().is_err());
    assert_eq!(
        w.send_slices(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
            .expect("send"),
        4
    );
    assert_eq!(read_exact(&mut r, 4), b"abcd");
}

/// The queue's way of sending: whatever is pending, cut into PDU-like
/// slices, presented again from the first unsent byte after a
/// `WouldBlock` (with more queued behind it meanwhile), as OpenSSL's retry
/// rule asks. The socket is filled to `WouldBlock` again and again while
/// the reader lags; the stream that arrives must be the stream sent.
#[test]
fn sends_that_would_block_resume_with_the_same_bytes_and_lose_nothing() {
    let (a, b) = pair();
    let server = TlsServer::new(Arc::new(Table(vec![psk(KEY48, IdentityVersion::V0)]))).expect("server");
    let mut s = server.accept(b).expect("accept");
    let mut c = client(a, psk(KEY48, IdentityVersion::V0)).expect("client");
    handshake(&mut c, &mut s).expect("handshake");
    let total = 6 << 20;
    let stream: Vec<u8> = (0..total)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sizes = [24usize, 4096, 24, 100, 20_000, 8, 70_000];
    let (mut sent, mut queued, mut blocked) = (0usize, 0usize, 0usize);
    let mut got = Vec::with_capacity(total);
    let mut buf = vec![0u8; 1 << 16];
    let until = Instant::now() + Duration::from_secs(30);
    while got.len() < total {
        assert!(Instant::now() < until, "stalled: sent {sent}, received {}", got.len());
        // The queue grows by a few PDUs at a time.
        queued = (queued + 50_000).min(total);
        if sent < queued {
            let mut slices = Vec::new();
            let mut at = sent;
            let mut k = sent;
            while at < queued && slices.len() < 64 {
                let n = sizes[k % sizes.len()].min(queued - at);
                slices.push(IoSlice::new(&stream[at..at + n]));
                at += n;
                k += 1;
            }
            match c.send_slices(&slices) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => blocked += 1,
                Err(e) => panic!("send: {e}"),
            }
        }
        // The reader lags: it reads only now and then, so the socket fills.
        if sent == total || blocked % 4 == 3 || got.len() + (4 << 20) < sent {
            match s.read(&mut buf) {
                Ok(0) => panic!("closed"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }
    assert!(
        blocked > 0,
        "the socket never filled: the test did not test a blocked send"
    );
    assert_eq!(got.len(), total);
    assert!(got == stream, "the stream arrived altered");
}

/// A TLS 1.3 ClientHello offering `ids` PSK identities (`id_len` bytes
/// each, none known) and one binder, in as many handshake records as it
/// takes: RFC 8446 sections 4.1.2 and 4.2.11.
fn client_hello_with_identities(ids: usize, id_len: usize) -> Vec<u8> {
    fn u16b(n: usize) -> [u8; 2] {
        (n as u16).to_be_bytes()
    }
    let mut ext = Vec::new();
    // supported_versions: TLS 1.3.
    ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    // supported_groups: x25519; key_share: an x25519 share.
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);
    ext.extend_from_slice(&[0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    ext.extend_from_slice(&[0x42; 32]);
    // psk_key_exchange_modes: psk_dhe_ke.
    ext.extend_from_slice(&[0x00, 0x2d, 0x00, 0x02, 0x01, 0x01]);
    // pre_shared_key, last.
    let mut identities = Vec::new();
    for i in 0..ids {
        identities.extend_from_slice(&u16b(id_len));
        identities.extend((0..id_len).map(|k| b'a' + ((i + k) % 26) as u8));
        identities.extend_from_slice(&[0, 0, 0, 0]);
    }
    let binders = [&[32u8][..], &[0x5a; 32]].concat();
    let mut psk = Vec::new();
    psk.extend_from_slice(&u16b(identities.len()));
    psk.extend_from_slice(&identities);
    psk.extend_from_slice(&u16b(binders.len()));
    psk.extend_from_slice(&binders);
    ext.extend_from_slice(&[0x00, 0x29]);
    ext.extend_from_slice(&u16b(psk.len()));
    ext.extend_from_slice(&psk);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x17; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&u16b(ext.len()));
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in hs.chunks(16384) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&u16b(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

/// A target that counts the identities it is asked about (and knows none).
struct Counting(std::sync::atomic::AtomicUsize);

impl PskLookup for Counting {
    fn find(&self, _identity: &[u8]) -> Option<TlsPsk> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    }
}

#[test]
fn a_client_hello_with_thousands_of_identities_costs_a_few_lookups() {
    // 9,000 one-byte identities fill a 63 KB ClientHello; OpenSSL asks the
    // lookup about each in turn until one is found, and the target's
    // lookup walks every subsystem's hosts: bounded per handshake.
    for ids in [1, MAX_PSK_IDENTITIES, MAX_PSK_IDENTITIES + 1, 9000] {
        let (a, b) = pair();
        let counting = Arc::new(Counting(std::sync::atomic::AtomicUsize::new(0)));
        let server = TlsServer::new(counting.clone()).expect("server");
        let mut s = server.accept(b).expect("accept");
        let hello = client_hello_with_identities(ids, 1);
        let until = Instant::now() + Duration::from_secs(5);
        let mut sent = 0;
        let failed = loop {
            if sent < hello.len() {
                match (&*a).write(&hello[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            match s.handshake() {
                Err(e) => break e,
                Ok(Handshake::Done(_)) => panic!("no identity is known"),
                Ok(_) => assert!(Instant::now() < until, "handshake stalled"),
            }
        };
        let asked = counting.0.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(asked, ids.min(MAX_PSK_IDENTITIES), "{ids} identities offered: {failed}");
    }
}
