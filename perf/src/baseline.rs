//! The floors our modes are compared to: two pinned threads bouncing a token
//! with nothing but a spinning atomic (poll floor) or an eventfd and a
//! blocking `epoll_wait` each (interrupt floor).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, epoll, eventfd};

use crate::Latency;

use crate::affinity::{PinGuard, pin_forever};

/// Round trips of a counter between two spinning threads on `cores`.
pub(crate) fn spin_rtt(cores: (usize, usize), run: Duration) -> Latency {
    let flag = Arc::new(AtomicU64::new(0));
    let f2 = flag.clone();
    let echo = std::thread::spawn(move || {
        pin_forever(cores.1);
        let mut seen = 0;
        loop {
            let v = f2.load(Ordering::Acquire);
            if v == u64::MAX {
                return;
            }
            if v != seen && v % 2 == 1 {
                seen = v + 1;
                f2.store(seen, Ordering::Release);
            }
            std::hint::spin_loop();
        }
    });
    let _pin = PinGuard::pin(Some(cores.0));
    let mut lat = Latency::new();
    let end = Instant::now() + run;
    let mut v = 0u64;
    while Instant::now() < end {
        let t = Instant::now();
        v += 1;
        flag.store(v, Ordering::Release);
        while flag.load(Ordering::Acquire) != v + 1 {
            std::hint::spin_loop();
        }
        v += 1;
        lat.record_ns(t.elapsed().as_nanos() as u64);
    }
    flag.store(u64::MAX, Ordering::Release);
    let _ = echo.join();
    lat
}

struct Waiter {
    epoll: OwnedFd,
    efd: OwnedFd,
}

impl Waiter {
    fn new() -> std::io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let efd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &efd, epoll::EventData::new_u64(0), epoll::EventFlags::IN)?;
        Ok(Waiter { epoll, efd })
    }

    /// Blocks until the eventfd rings; returns its value.
    fn wait(&self) -> u64 {
        let mut events = Vec::with_capacity(1);
        loop {
            events.clear();
            let _ = epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), None);
            let mut b = [0u8; 8];
            if rustix::io::read(&self.efd, &mut b).is_ok() {
                return u64::from_ne_bytes(b);
            }
        }
    }

    fn ring(&self, v: u64) {
        let _ = rustix::io::write(&self.efd, &v.to_ne_bytes());
    }
}

/// Round trips between two threads that each sleep in `epoll_wait` on an eventfd.
pub(crate) fn epoll_rtt(cores: (usize, usize), run: Duration) -> std::io::Result<Latency> {
    let a = Arc::new(Waiter::new()?);
    let b = Arc::new(Waiter::new()?);
    let (a2, b2) = (a.clone(), b.clone());
    let echo = std::thread::spawn(move || {
        pin_forever(cores.1);
        loop {
            // A value of 2 means stop.
            let v = b2.wait();
            a2.ring(1);
            if v >= 2 {
                return;
            }
        }
    });
    let _pin = PinGuard::pin(Some(cores.0));
    let mut lat = Latency::new();
    let end = Instant::now() + run;
    while Instant::now() < end {
        let t = Instant::now();
        b.ring(1);
        a.wait();
        lat.record_ns(t.elapsed().as_nanos() as u64);
    }
    b.ring(2);
    a.wait();
    let _ = echo.join();
    Ok(lat)
}
