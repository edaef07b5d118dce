//! Fault cases that check the process's open fds (B01, B18). One test
//! function, so no other test of this binary opens fds meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use lull_reactor::Mode;

fn b01(mode: Mode) {
    let t = target(mode);
    let mut healthy = Healthy::new(&t);
    let fds = open_fds();
    for i in 0..300 {
        let mut s = TcpStream::connect(t.addr).unwrap();
        s.write_all(&[0xFF, 0x00, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00]).unwrap();
        // RST without reading.
        rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
        drop(s);
        if i % 100 == 0 {
            healthy.check();
        }
    }
    // Variant 2: the client stays connected and never reads: closed within 1 s of the TermReq.
    let mut h = Host::connect(t.addr);
    h.send(&[0xFF, 0x00, 0x08, 0x00, 0x08, 0x00, 0x00, 0x00]);
    std::thread::sleep(Duration::from_millis(300));
    h.expect_fatal(1, 0);
    drop(h);
    assert!(
        wait(|| open_fds() <= fds),
        "{mode}: fds {} > baseline {fds}",
        open_fds()
    );
    if mode == Mode::Interrupt {
        // Every reactor back asleep: under 1 % of a core each over the next second.
        let cpu = |t: &Tgt| -> u64 { t.reactors.handles().iter().map(|h| h.stats().thread_cpu_ns).sum() };
        let c0 = cpu(&t);
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu(&t) - c0;
        assert!(
            used < 2 * 10_000_000,
            "{mode}: reactors used {} ms in 1 s after the storm",
            used / 1_000_000
        );
    }
    healthy.check();
    t.reactors.shutdown().unwrap();
}

fn b18(mode: Mode) {
    let t = target(mode);
    let mut healthy = Healthy::new(&t);
    let fds = open_fds();
    let addr = t.addr;
    let workers: Vec<_> = (0..16)
        .map(|w| {
            std::thread::spawn(move || {
                for i in 0..40 {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.write_all(&icreq_bytes(3)).unwrap();
                    if (i + w) % 10 != 0 {
                        let mut r = [0u8; 128];
                        let _ = s.read_exact(&mut r);
                        let mut bad = vec![0x04, 0x03, 0x10, 0x00, 0x48, 0x00, 0x00, 0x00];
                        bad.extend([0u8; 64]);
                        let _ = s.write_all(&bad);
                    }
                    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    healthy.check();
    assert!(
        wait(|| open_fds() <= fds),
        "{mode}: fds {} > baseline {fds}",
        open_fds()
    );
    t.reactors.shutdown().unwrap();
}

/// One test: the checks share the process's fd table and limit.
#[test]
fn faults_leave_no_fd_and_no_spinning_reactor() {
    for mode in [Mode::Poll, Mode::Interrupt] {
        b01(mode);
        b18(mode);
    }
    accept_backoff_when_out_of_fds();
    unconnected_connections_are_closed();
}

/// Out of fds: the listener rests instead of spinning on its ready socket.
fn accept_backoff_when_out_of_fds() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let t = target(Mode::Interrupt);
    let saved = getrlimit(Resource::Nofile);
    let limit = open_fds() as u64 + 8;
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: saved.maximum,
        },
    )
    .unwrap();
    let clients: Vec<TcpStream> = (0..30).filter_map(|_| TcpStream::connect(t.addr).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let cpu = |t: &Tgt| -> u64 { t.reactors.handles().iter().map(|h| h.stats().thread_cpu_ns).sum() };
    let c0 = cpu(&t);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu(&t) - c0;
    drop(clients);
    setrlimit(Resource::Nofile, saved).unwrap();
    assert!(
        used < 100_000_000,
        "reactors used {} ms in 1 s while out of fds",
        used / 1_000_000
    );
    // Once fds are back, new hosts are served again.
    let mut healthy = Healthy::new(&t);
    healthy.check();
    t.reactors.shutdown().unwrap();
}

/// An ICReq alone, or a stalled capsule, holds the connection only until the Connect timeout.
fn unconnected_connections_are_closed() {
    let t = target(Mode::Interrupt);
    let mut only_icreq = Host::connect(t.addr);
    only_icreq.icreq(0);
    let mut stalled = Host::connect(t.addr);
    stalled.icreq(0);
    let b = stalled.capsule_bytes(
        &Host::connect_sqe(0, 31, 0, 1024, lull_proto::nvme::sgl_id::DATA_BLOCK_OFFSET),
        &[0u8; 1024],
    );
    stalled.send(&b[..40]);
    let (_admin, _) = Host::admin(t.addr, 0, SUBNQN, 0);
    let t0 = std::time::Instant::now();
    only_icreq.expect_closed(Duration::from_secs(12));
    stalled.expect_closed(Duration::from_secs(2));
    assert!(
        t0.elapsed() >= Duration::from_secs(9),
        "closed too early: {:?}",
        t0.elapsed()
    );
    t.reactors.shutdown().unwrap();
}
