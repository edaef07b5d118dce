//! The synchronous host against targets that hold its TLS handshake: the
//! handshake as a whole ends within the step's timeout and the caller's
//! deadline, however the target paces its bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lull_proto::tls_psk::{ConfiguredPsk, IdentityVersion};

use super::*;

const KEY32: &str = "NVMeTLSkey-1:01:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ:";

fn psk() -> TlsPsk {
    ConfiguredPsk::parse(KEY32)
        .expect("key")
        .tls_psk(
            "nqn.2016-06.io.spdk:host1",
            "nqn.2016-06.io.spdk:cnode1",
            IdentityVersion::V1,
        )
        .expect("derive")
}

/// A target that takes one connection and answers its ClientHello with a
/// handshake record announcing 16 KiB, sent one byte every `pace` (never,
/// with `None`), until the host goes.
fn slow_target(pace: Option<Duration>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut hello = [0u8; 512];
        let _ = s.read(&mut hello);
        let Some(pace) = pace else {
            // Hold the connection, answer nothing.
            let _ = s.read(&mut hello);
            return;
        };
        let record = [0x16u8, 0x03, 0x03, 0x40, 0x00].into_iter().chain(std::iter::repeat(0));
        for b in record {
            std::thread::sleep(pace);
            if s.write_all(&[b]).is_err() {
                return;
            }
        }
    });
    addr
}

/// Connects with `timeout` and `deadline` on a thread; the result and how
/// long it took, or `None` when it had not returned after `limit`.
fn connect_within(
    addr: SocketAddr,
    timeout: Duration,
    deadline: Option<Instant>,
    limit: Duration,
) -> Option<(Result<(), SyncError>, Duration)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = SyncQueue::connect_secure(addr, Digests::default(), 8192, timeout, deadline, Some(&psk()));
        let _ = tx.send((r.map(|_| ()), t0.elapsed()));
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_target_that_drips_its_handshake_cannot_hold_the_host_past_its_timeout() {
    // Each byte comes well within the 600 ms timeout; the handshake as a
    // whole must still end by it.
    let addr = slow_target(Some(Duration::from_millis(100)));
    let got = connect_within(addr, Duration::from_millis(600), None, Duration::from_secs(3));
    let (r, took) = got.expect("the handshake was still running 3 s into a 600 ms timeout");
    assert!(matches!(r, Err(SyncError::Timeout(_))), "{r:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[test]
fn a_target_that_never_answers_the_client_hello_is_left_at_the_deadline() {
    // A 5 s step timeout, but only 400 ms left to the caller's deadline.
    let addr = slow_target(None);
    let deadline = Instant::now() + Duration::from_millis(400);
    let got = connect_within(addr, Duration::from_secs(5), Some(deadline), Duration::from_secs(3));
    let (r, took) = got.expect("the handshake was still running 3 s into a 400 ms deadline");
    assert!(matches!(r, Err(SyncError::Timeout(_))), "{r:?}");
    assert!(took < Duration::from_millis(1300), "took {took:?}");
}

#[test]
fn a_timeout_too_long_for_an_instant_leaves_the_deadline_in_charge() {
    let addr = slow_target(None);
    let deadline = Instant::now() + Duration::from_millis(300);
    let got = connect_within(addr, Duration::MAX, Some(deadline), Duration::from_secs(3));
    let (r, took) = got.expect("the handshake was still running 3 s into a 300 ms deadline");
    assert!(matches!(r, Err(SyncError::Timeout(_))), "{r:?}");
    assert!(took < Duration::from_millis(1200), "took {took:?}");
}
