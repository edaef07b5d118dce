//! Pollers, timers, messages, back-pressure and shutdown, in every mode.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::wait_until;
use lull_reactor::{
    Context, FdSource, Interest, Message, Mode, PollStatus, PollerId, ReactorError, Readiness, TrySendError,
};
use rustix::event::{EventfdFlags, eventfd};

const MODES: [Mode; 3] = [Mode::Poll, Mode::Interrupt, Mode::Hybrid];
const SECOND: Duration = Duration::from_secs(1);

/// Runs `f` on the reactor and returns its result.
fn on<R: Send + 'static>(h: &lull_reactor::ReactorHandle, f: impl FnOnce(&mut Context) -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    h.try_send(move |cx| {
        let _ = tx.send(f(cx));
    })
    .expect("send");
    rx.recv_timeout(Duration::from_secs(5)).expect("reactor answered")
}

fn new_eventfd() -> OwnedFd {
    eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC).unwrap()
}

fn ring(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
}

fn drain(fd: &OwnedFd) -> bool {
    let mut b = [0u8; 8];
    rustix::io::read(fd, &mut b).is_ok()
}

#[test]
fn timers_fire_in_every_mode() {
    for mode in MODES {
        let reactors = common::start(1, mode);
        let h = &reactors.handles()[0];
        let (tx, rx) = mpsc::channel::<(&str, Instant)>();
        let ticks = Arc::new(AtomicU64::new(0));
        let armed = {
            let ticks = ticks.clone();
            on(h, move |cx| {
                let t0 = Instant::now();
                let tx1 = tx.clone();
                cx.timer_once(Duration::from_millis(5), move |_| tx1.send(("once", t0)).unwrap());
                let cancelled = cx.timer_once(Duration::from_millis(1), |_| panic!("a cancelled timer ran"));
                assert!(cx.cancel_timer(cancelled));
                assert!(!cx.cancel_timer(cancelled), "second cancel finds nothing");
                let mut n = 0;
                let tx2 = tx.clone();
                let id = std::rc::Rc::new(std::cell::Cell::new(None));
                let id2 = id.clone();
                let periodic = cx
                    .timer_periodic(Duration::from_millis(1), move |cx| {
                        n += 1;
                        ticks.fetch_add(1, Ordering::Relaxed);
                        if n == 20 {
                            // A periodic timer cancels itself on its 20th run.
                            assert!(cx.cancel_timer(id2.get().unwrap()));
                            tx2.send(("periodic", t0)).unwrap();
                        }
                    })
                    .unwrap();
                id.set(Some(periodic));
                t0
            })
        };
        let mut got = Vec::new();
        for _ in 0..2 {
            let (what, t0) = rx
                .recv_timeout(SECOND * 5)
                .unwrap_or_else(|_| panic!("{mode}: timer did not fire"));
            assert_eq!(t0, armed);
            let at = t0.elapsed();
            if what == "once" {
                assert!(
                    at >= Duration::from_millis(5),
                    "{mode}: one-shot fired early, after {at:?}"
                );
            } else {
                assert!(
                    at >= Duration::from_millis(20),
                    "{mode}: 20 periods of 1 ms took only {at:?}"
                );
            }
            got.push(what);
        }
        got.sort();
        assert_eq!(got, ["once", "periodic"]);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            ticks.load(Ordering::Relaxed),
            20,
            "{mode}: the periodic timer stopped when cancelled"
        );
        assert!(rx.try_recv().is_err(), "{mode}: the one-shot fired once");
        assert!(matches!(
            on(h, |cx| cx.timer_periodic(Duration::ZERO, |_| {}).map(|_| ())),
            Err(ReactorError::ZeroPeriod)
        ));
        reactors.shutdown().unwrap();
    }
}

#[test]
fn timed_pollers_run_pause_resume_and_change_period_in_every_mode() {
    for mode in MODES {
        let reactors = common::start(1, mode);
        let h = &reactors.handles()[0];
        let runs = Arc::new(AtomicU64::new(0));
        let r2 = runs.clone();
        let id: PollerId = on(h, move |cx| {
            cx.register_timed(Duration::from_millis(2), move |_: &mut Context, ready: Readiness| {
                assert!(ready.timer && !ready.readable);
                r2.fetch_add(1, Ordering::Relaxed);
                PollStatus::Idle
            })
            .unwrap()
        });
        assert!(
            wait_until(SECOND * 5, || runs.load(Ordering::Relaxed) >= 5),
            "{mode}: timed poller runs"
        );
        on(h, move |cx| cx.pause(id).unwrap());
        let paused_at = runs.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            runs.load(Ordering::Relaxed),
            paused_at,
            "{mode}: a paused poller does not run"
        );
        on(h, move |cx| {
            cx.resume(id).unwrap();
            cx.set_period(id, Duration::from_millis(1)).unwrap();
        });
        assert!(
            wait_until(SECOND * 5, || runs.load(Ordering::Relaxed) >= paused_at + 10),
            "{mode}: resumed poller runs again"
        );
        on(h, move |cx| cx.unregister(id).unwrap());
        let stopped_at = runs.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            runs.load(Ordering::Relaxed),
            stopped_at,
            "{mode}: an unregistered poller does not run"
        );
        assert!(matches!(
            on(h, move |cx| cx.unregister(id)),
            Err(ReactorError::UnknownPoller)
        ));
        assert!(matches!(
            on(h, |cx| cx
                .register_timed(Duration::ZERO, |_: &mut Context, _| PollStatus::Idle)
                .map(|_| ())),
            Err(ReactorError::ZeroPeriod)
        ));
        reactors.shutdown().unwrap();
    }
}

#[test]
fn fd_poller_wakes_a_sleeping_reactor() {
    for mode in [Mode::Interrupt, Mode::Hybrid] {
        let reactors = common::start(1, mode);
        let h = &reactors.handles()[0];
        h.set_idle_poll(Duration::from_micros(50)).unwrap();
        let efd = Arc::new(new_eventfd());
        let (tx, rx) = mpsc::channel::<Instant>();
        let poller_fd = efd.try_clone().unwrap();
        on(h, move |cx| {
            let p = FdSource::new(poller_fd, move |_: &mut Context, fd: &mut OwnedFd, ready: Readiness| {
                assert!(ready.readable);
                let work = drain(fd);
                tx.send(Instant::now()).unwrap();
                PollStatus::from_work(work)
            });
            cx.register_fd(p, Interest::READABLE).unwrap();
        });
        for round in 0..20 {
            assert!(
                wait_until(SECOND * 5, || h.is_sleeping()),
                "{mode}: reactor goes to sleep"
            );
            let before = h.stats();
            let t = Instant::now();
            ring(&efd);
            let ran = rx
                .recv_timeout(SECOND * 5)
                .unwrap_or_else(|_| panic!("{mode} round {round}: poller not run"));
            assert!(ran >= t);
            // Counters are published at the end of the loop iteration that ran the poller.
            assert!(
                wait_until(SECOND, || {
                    let after = h.stats();
                    after.wakeups > before.wakeups && after.poller_runs > before.poller_runs
                }),
                "{mode}: it was woken from sleep"
            );
        }
        reactors.shutdown().unwrap();
    }
}

#[test]
fn paused_fd_poller_does_not_run_and_leaves_the_reactor_asleep() {
    for mode in MODES {
        let reactors = common::start(1, mode);
        let h = &reactors.handles()[0];
        let efd = new_eventfd();
        let runs = Arc::new(AtomicU64::new(0));
        let r2 = runs.clone();
        let pfd = efd.try_clone().unwrap();
        let id = on(h, move |cx| {
            let p = FdSource::new(pfd, move |_: &mut Context, fd: &mut OwnedFd, _| {
                r2.fetch_add(1, Ordering::Relaxed);
                PollStatus::from_work(drain(fd))
            });
            let id = cx.register_fd(p, Interest::READABLE).unwrap();
            cx.pause(id).unwrap();
            id
        });
        ring(&efd);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(runs.load(Ordering::Relaxed), 0, "{mode}: paused poller ran");
        if mode == Mode::Interrupt {
            // The ready fd left the epoll set: the reactor is not spinning on it.
            let a = h.stats();
            std::thread::sleep(Duration::from_millis(50));
            let b = h.stats();
            assert!(
                b.loops - a.loops < 20,
                "{mode}: reactor kept looping ({} loops)",
                b.loops - a.loops
            );
        }
        on(h, move |cx| cx.resume(id).unwrap());
        assert!(
            wait_until(SECOND * 5, || runs.load(Ordering::Relaxed) == 1),
            "{mode}: resumed poller ran"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            runs.load(Ordering::Relaxed),
            1,
            "{mode}: drained fd does not run the poller again"
        );
        reactors.shutdown().unwrap();
    }
}

#[test]
fn interest_changes_take_effect() {
    for mode in MODES {
        let reactors = common::start(1, mode);
        let h = &reactors.handles()[0];
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let writable_runs = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let w2 = writable_runs.clone();
        let id = on(h, move |cx| {
            let p = FdSource::new(a, move |cx: &mut Context, s: &mut UnixStream, ready: Readiness| {
                if ready.writable {
                    w2.fetch_add(1, Ordering::Relaxed);
                    // Like a connection whose send queue just emptied: back to reads only.
                    cx.set_interest(cx.current_poller().unwrap(), Interest::READABLE)
                        .unwrap();
                }
                if ready.readable {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = s.read(&mut buf) {
                        tx.send(buf[..n].to_vec()).unwrap();
                    }
                }
                PollStatus::Busy
            });
            cx.register_fd(p, Interest::READABLE).unwrap()
        });
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            writable_runs.load(Ordering::Relaxed),
            0,
            "{mode}: READABLE alone does not report writes"
        );
        on(h, move |cx| {
            cx.set_interest(id, Interest::READABLE | Interest::WRITABLE).unwrap()
        });
        assert!(
            wait_until(SECOND * 5, || writable_runs.load(Ordering::Relaxed) == 1),
            "{mode}: WRITABLE runs it"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            writable_runs.load(Ordering::Relaxed),
            1,
            "{mode}: dropping WRITABLE stops it"
        );
        b.write_all(b"ping").unwrap();
        assert_eq!(rx.recv_timeout(SECOND * 5).unwrap(), b"ping");
        assert!(matches!(
            on(h, move |cx| cx.set_period(id, SECOND)),
            Err(ReactorError::NotTimedPoller)
        ));
        reactors.shutdown().unwrap();
    }
}

#[test]
fn hangup_is_reported_and_unregister_from_inside_stops_it() {
    let reactors = common::start(1, Mode::Interrupt);
    let h = &reactors.handles()[0];
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let r2 = runs.clone();
    let raw = a.as_fd().try_clone_to_owned().unwrap();
    on(h, move |cx| {
        let p = FdSource::new(a, move |cx: &mut Context, _: &mut UnixStream, ready: Readiness| {
            r2.fetch_add(1, Ordering::Relaxed);
            if ready.hangup {
                cx.unregister(cx.current_poller().unwrap()).unwrap();
            }
            PollStatus::Busy
        });
        cx.register_fd(p, Interest::READABLE).unwrap();
    });
    drop(b);
    assert!(wait_until(SECOND * 5, || runs.load(Ordering::Relaxed) >= 1));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        runs.load(Ordering::Relaxed),
        1,
        "unregistered on hangup, never run again"
    );
    // The poller owned `a`; dropping it closed it, while our dup stays open.
    drop(raw);
    reactors.shutdown().unwrap();
}

#[test]
fn an_fd_with_no_interest_wakes_only_on_hangup_in_every_mode() {
    for mode in MODES {
        let reactors = common::start(1, mode);
        let h = &reactors.handles()[0];
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        let hangups = Arc::new(AtomicU64::new(0));
        let (r2, h2) = (runs.clone(), hangups.clone());
        on(h, move |cx| {
            let p = FdSource::new(a, move |cx: &mut Context, _: &mut UnixStream, ready: Readiness| {
                r2.fetch_add(1, Ordering::Relaxed);
                if ready.hangup {
                    h2.fetch_add(1, Ordering::Relaxed);
                    cx.unregister(cx.current_poller().unwrap()).unwrap();
                }
                PollStatus::Busy
            });
            cx.register_fd(p, Interest::NONE).unwrap();
        });
        // Data waiting unread does not run it (and cannot spin the reactor).
        b.write_all(b"data nobody reads").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            runs.load(Ordering::Relaxed),
            0,
            "{mode:?}: data woke a poller with no interest"
        );
        drop(b);
        assert!(
            wait_until(SECOND * 5, || hangups.load(Ordering::Relaxed) == 1),
            "{mode:?}: the hang-up was not reported"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(runs.load(Ordering::Relaxed), 1, "{mode:?}: run once, on the hang-up");
        reactors.shutdown().unwrap();
    }
}

#[test]
fn a_full_inbox_hands_the_message_back_and_loses_nothing() {
    for mode in MODES {
        let usable = lull_reactor::CoreList::usable().unwrap();
        let cores = lull_reactor::CoreList::try_from(vec![usable.cores()[0]]).unwrap();
        let reactors =
            lull_reactor::Reactors::start(lull_reactor::ReactorConfig::new(cores).mode(mode).inbox_capacity(4))
                .unwrap();
        let h = &reactors.handles()[0];
        let gate = Arc::new(Barrier::new(2));
        let g2 = gate.clone();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        // Hold the reactor inside a message so the inbox fills up.
        h.try_send(move |_| {
            g2.wait();
        })
        .unwrap();
        assert!(wait_until(SECOND * 5, || h.stats().messages == 0 && !h.is_sleeping()));
        std::thread::sleep(Duration::from_millis(5));
        let push = |i: u32| {
            let o = order.clone();
            Message::new(move |_| o.lock().unwrap().push(i))
        };
        for i in 0..4 {
            h.try_send_message(push(i)).unwrap();
        }
        let back = match h.try_send_message(push(4)) {
            Err(TrySendError::Full(m)) => m,
            other => panic!("{mode}: expected Full, got {other:?}"),
        };
        gate.wait();
        let mut msg = back;
        loop {
            match h.try_send_message(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(wait_until(SECOND * 5, || order.lock().unwrap().len() == 5));
        assert_eq!(
            *order.lock().unwrap(),
            vec![0, 1, 2, 3, 4],
            "{mode}: every message ran once, in order"
        );
        reactors.shutdown().unwrap();
    }
}

#[test]
fn typed_channels_deliver_in_order_and_report_full() {
    let reactors = common::start(2, Mode::Interrupt);
    let (h0, h1) = (&reactors.handles()[0], &reactors.handles()[1]);
    let sum = Arc::new(AtomicU64::new(0));
    let s2 = sum.clone();
    let tx = on(h1, move |cx| {
        let mut next = 0u64;
        cx.channel(8, move |_: &mut Context, v: u64| {
            assert_eq!(v, next, "in order");
            next += 1;
            s2.fetch_add(v, Ordering::Relaxed);
        })
    });
    assert_eq!(tx.core(), h1.core());
    // From another reactor, 10,000 items, retrying on Full.
    let tx2 = tx.clone();
    on(h0, move |_| {
        let mut v = 0u64;
        while v < 10_000 {
            match tx2.try_send(v) {
                Ok(()) => v += 1,
                Err(TrySendError::Full(back)) => assert_eq!(back, v),
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert!(wait_until(SECOND * 5, || sum.load(Ordering::Relaxed) == 9_999 * 10_000 / 2));
    reactors.shutdown().unwrap();
    assert!(
        matches!(tx.try_send(1), Err(TrySendError::Stopped(1))),
        "stopped reactor refuses items"
    );
}

#[test]
fn shutdown_stops_sleeping_reactors_and_reports_panics() {
    let reactors = common::start(2, Mode::Interrupt);
    assert!(wait_until(SECOND * 5, || reactors
        .handles()
        .iter()
        .all(|h| h.is_sleeping())));
    let h = reactors.handles()[0].clone();
    let t = Instant::now();
    reactors.shutdown().unwrap();
    assert!(t.elapsed() < SECOND * 5);
    assert!(matches!(h.try_send(|_| {}), Err(TrySendError::Stopped(_))));
}

#[test]
fn panics_in_handlers_are_contained_and_counted() {
    let reactors = common::start(1, Mode::Interrupt);
    let h = &reactors.handles()[0];
    h.try_send(|_| panic!("message bug")).unwrap();
    assert!(
        wait_until(SECOND * 5, || h.stats().panics == 1),
        "message panic counted"
    );
    // A panicking fd poller is unregistered; its fd leaves the epoll set.
    let efd = Arc::new(new_eventfd());
    let fd2 = efd.try_clone().unwrap();
    on(h, move |cx| {
        let p = FdSource::new(fd2, |_: &mut Context, _: &mut OwnedFd, _| -> PollStatus {
            panic!("poller bug")
        });
        cx.register_fd(p, Interest::READABLE).unwrap();
        cx.timer_once(Duration::ZERO, |_| panic!("timer bug"));
    });
    ring(&efd);
    assert!(
        wait_until(SECOND * 5, || h.stats().panics == 3),
        "poller and timer panics counted: {}",
        h.stats().panics
    );
    // A channel whose handler panics is closed.
    let tx = on(h, |cx| {
        cx.channel(4, |_: &mut Context, v: u32| assert!(v < 5, "channel bug"))
    });
    tx.try_send(9).unwrap();
    assert!(
        wait_until(SECOND * 5, || h.stats().panics == 4),
        "panics counted: {}",
        h.stats().panics
    );
    assert!(wait_until(SECOND, || matches!(
        tx.try_send(1),
        Err(TrySendError::Stopped(1))
    )));
    // The reactor carries on, and sleeps: the ready eventfd no longer wakes it.
    assert_eq!(on(h, |cx| cx.core()), h.core());
    let a = h.stats();
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.stats().loops - a.loops < 20, "reactor spins on a removed poller's fd");
    reactors.shutdown().unwrap();
}

#[test]
fn huge_durations_do_not_overflow() {
    let reactors = common::start(1, Mode::Interrupt);
    let h = &reactors.handles()[0];
    on(h, |cx| {
        cx.timer_once(Duration::MAX, |_| panic!("fired"));
        cx.timer_periodic(Duration::MAX, |_| panic!("fired")).unwrap();
        let id = cx
            .register_timed(Duration::MAX, |_: &mut Context, _| PollStatus::Idle)
            .unwrap();
        cx.set_period(id, Duration::MAX).unwrap();
    });
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(h.stats().panics, 0);
    assert!(h.set_idle_poll(Duration::MAX).is_err());
    assert!(h.set_idle_poll(Duration::from_secs(1)).is_ok());
    reactors.shutdown().unwrap();
}

#[test]
fn a_channel_made_inside_a_channel_handler_works() {
    let reactors = common::start(1, Mode::Interrupt);
    let h = &reactors.handles()[0];
    let (back_tx, back_rx) = mpsc::channel();
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let outer = on(h, move |cx| {
        cx.channel(4, move |cx: &mut Context, ()| {
            let g = g.clone();
            let inner = cx.channel(4, move |_: &mut Context, v: u64| {
                g.fetch_add(v, Ordering::Relaxed);
            });
            back_tx.send(inner).unwrap();
        })
    });
    outer.try_send(()).unwrap();
    let inner = back_rx.recv_timeout(SECOND * 5).unwrap();
    inner.try_send(5).unwrap();
    outer.try_send(()).unwrap();
    let inner2 = back_rx.recv_timeout(SECOND * 5).unwrap();
    inner2.try_send(7).unwrap();
    assert!(
        wait_until(SECOND * 5, || got.load(Ordering::Relaxed) == 12),
        "got {}",
        got.load(Ordering::Relaxed)
    );
    reactors.shutdown().unwrap();
}

#[test]
fn pollers_sharing_a_file_or_swapping_their_fd_stay_independent() {
    let reactors = common::start(1, Mode::Interrupt);
    let h = &reactors.handles()[0];
    let efd = Arc::new(new_eventfd());
    let (a_runs, b_runs) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (a2, b2, fa, fb) = (a_runs.clone(), b_runs.clone(), efd.clone(), efd.clone());
    let (a, b) = on(h, move |cx| {
        // Two pollers on the same eventfd; the second drains it.
        let a = cx
            .register_fd(
                FdSource::new(fa, move |_: &mut Context, _: &mut Arc<OwnedFd>, _| {
                    a2.fetch_add(1, Ordering::Relaxed);
                    PollStatus::Idle
                }),
                Interest::READABLE,
            )
            .unwrap();
        cx.pause(a).unwrap();
        let b = cx
            .register_fd(
                FdSource::new(fb, move |_: &mut Context, fd: &mut Arc<OwnedFd>, _| {
                    b2.fetch_add(1, Ordering::Relaxed);
                    PollStatus::from_work(drain(fd))
                }),
                Interest::READABLE,
            )
            .unwrap();
        cx.resume(a).unwrap();
        (a, b)
    });
    ring(&efd);
    assert!(wait_until(SECOND * 5, || b_runs.load(Ordering::Relaxed) == 1));
    on(h, move |cx| cx.unregister(a).unwrap());
    ring(&efd);
    assert!(
        wait_until(SECOND * 5, || b_runs.load(Ordering::Relaxed) == 2),
        "unregistering A left B registered"
    );
    on(h, move |cx| cx.unregister(b).unwrap());

    // A poller that swaps its own fd (closing the one it registered) cannot
    // disturb a later poller that is handed the same fd number.
    let e1 = new_eventfd();
    let e1_ring = e1.try_clone().unwrap();
    let swapped = Arc::new(AtomicU64::new(0));
    let s2 = swapped.clone();
    let x = on(h, move |cx| {
        cx.register_fd(
            FdSource::new(e1, move |_: &mut Context, fd: &mut OwnedFd, _| {
                drain(fd);
                *fd = new_eventfd(); // closes the registered fd
                s2.fetch_add(1, Ordering::Relaxed);
                PollStatus::Busy
            }),
            Interest::READABLE,
        )
        .unwrap()
    });
    ring(&e1_ring);
    assert!(wait_until(SECOND * 5, || swapped.load(Ordering::Relaxed) == 1));
    let f = Arc::new(new_eventfd());
    let (y_runs, y2, ff) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), f.clone());
    let y2c = y2.clone();
    let y = on(h, move |cx| {
        cx.register_fd(
            FdSource::new(ff, move |_: &mut Context, fd: &mut Arc<OwnedFd>, _| {
                y2c.fetch_add(1, Ordering::Relaxed);
                PollStatus::from_work(drain(fd))
            }),
            Interest::READABLE,
        )
        .unwrap()
    });
    let _ = y_runs;
    on(h, move |cx| cx.unregister(x).unwrap());
    ring(&f);
    assert!(
        wait_until(SECOND * 5, || y2.load(Ordering::Relaxed) == 1),
        "Y lost its registration"
    );
    // X's old file stays quiet after X is gone: ringing it wakes nobody.
    ring(&e1_ring);
    let a = h.stats();
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.stats().loops - a.loops < 20, "a stale registration spins the reactor");
    on(h, move |cx| cx.unregister(y).unwrap());
    reactors.shutdown().unwrap();
}

#[test]
fn dropping_the_set_on_its_own_reactor_does_not_deadlock() {
    let reactors = common::start(1, Mode::Interrupt);
    let h = reactors.handles()[0].clone();
    let (tx, rx) = mpsc::channel();
    h.try_send(move |_| {
        drop(reactors);
        tx.send(()).unwrap();
    })
    .unwrap();
    rx.recv_timeout(SECOND * 5).expect("drop returned");
    assert!(wait_until(SECOND * 5, || matches!(
        h.try_send(|_| {}),
        Err(TrySendError::Stopped(_))
    )));
}

#[test]
fn mode_requests_apply_and_are_counted() {
    let reactors = common::start(1, Mode::Poll);
    let h = &reactors.handles()[0];
    for (i, mode) in [Mode::Interrupt, Mode::Hybrid, Mode::Poll, Mode::Interrupt]
        .into_iter()
        .enumerate()
    {
        h.set_mode(mode);
        assert!(wait_until(SECOND * 5, || h.mode() == mode), "switch to {mode}");
        assert_eq!(h.stats().mode_switches, i as u64 + 1);
    }
    h.set_mode(Mode::Interrupt);
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(
        h.stats().mode_switches,
        4,
        "a request for the current mode is no switch"
    );
    assert_eq!(on(h, |cx| cx.mode()), Mode::Interrupt);
    reactors.shutdown().unwrap();
}

#[test]
fn a_reactor_asleep_with_nothing_to_wake_it_reports_its_sleep_so_far() {
    let reactors = common::start(1, Mode::Interrupt);
    let h = &reactors.handles()[0];
    // No timer, no fd: once asleep it publishes nothing until woken.
    std::thread::sleep(Duration::from_millis(50));
    let a = h.stats();
    std::thread::sleep(Duration::from_millis(300));
    let b = h.stats();
    assert!(b.sleeping, "an interrupt-mode reactor with nothing to do sleeps");
    let slept = b.sleep_ns - a.sleep_ns;
    let wall = b.wall_ns_since(&a);
    assert!(
        slept * 10 >= wall * 9,
        "sleep seen by readers {slept} ns over {wall} ns of wall time"
    );
    reactors.shutdown().unwrap();
}
