//! The supervisor driving live reactors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::wait_until;
use lull_reactor::supervisor::{self, Policy, SupervisorConfig};
use lull_reactor::{Context, Mode, PollStatus};

#[test]
fn static_policy_sets_every_reactor() {
    let reactors = common::start(2, Mode::Poll);
    let cfg = SupervisorConfig {
        interval: Duration::from_millis(10),
        ..SupervisorConfig::with_policy(Policy::Interrupt)
    };
    let sup = supervisor::start(&reactors, cfg.clone()).unwrap();
    assert!(wait_until(Duration::from_secs(5), || reactors
        .handles()
        .iter()
        .all(|h| h.mode() == Mode::Interrupt)));
    assert_eq!(sup.switches(), 2);
    sup.set_config(SupervisorConfig {
        policy: Policy::Hybrid,
        ..cfg
    })
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || reactors
        .handles()
        .iter()
        .all(|h| h.mode() == Mode::Hybrid)));
    assert_eq!(sup.config().policy, Policy::Hybrid);
    assert!(
        sup.set_config(SupervisorConfig {
            up_samples: 0,
            ..SupervisorConfig::default()
        })
        .is_err()
    );
    reactors.shutdown().unwrap();
}

#[test]
fn adaptive_follows_load_up_and_back_down() {
    let reactors = common::start(2, Mode::Interrupt);
    let cfg = SupervisorConfig {
        interval: Duration::from_millis(20),
        up_samples: 2,
        down_samples: 3,
        ..SupervisorConfig::default()
    };
    let sup = supervisor::start(&reactors, cfg).unwrap();
    let worker = &reactors.handles()[1];
    let loaded = Arc::new(AtomicBool::new(true));
    let l2 = loaded.clone();
    // 800 us of work every 1 ms: 80 % load whatever the mode.
    worker
        .try_send(move |cx| {
            cx.register_timed(Duration::from_millis(1), move |_: &mut Context, _| {
                if !l2.load(Ordering::Relaxed) {
                    return PollStatus::Idle;
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(800) {
                    std::hint::spin_loop();
                }
                PollStatus::Busy
            })
            .unwrap();
        })
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || worker.mode() == Mode::Poll),
        "loaded reactor reaches poll"
    );
    // It stays there while loaded (no flapping)...
    let switches = sup.switches();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(worker.mode(), Mode::Poll);
    assert_eq!(sup.switches(), switches, "no switch while the load holds");
    // ...and the idle one never moved.
    assert_eq!(reactors.handles()[0].mode(), Mode::Interrupt);
    loaded.store(false, Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), || worker.mode() == Mode::Interrupt),
        "unloaded reactor goes back to interrupt"
    );
    assert!(
        worker.stats().mode_switches >= 4,
        "interrupt -> hybrid -> poll -> hybrid -> interrupt"
    );
    reactors.shutdown().unwrap();
}

#[test]
fn budget_policy_measures_live_reactors_and_follows_their_load() {
    let reactors = common::start(2, Mode::Interrupt);
    let worker = reactors.handles()[1].clone();
    // A timer that sleeps the reactor to a deadline: timed wakeups get measured.
    worker
        .try_send(|cx| {
            cx.register_timed(Duration::from_millis(5), |_: &mut Context, _| PollStatus::Idle)
                .unwrap();
        })
        .unwrap();
    // Messages from another thread every ~200 us: arrivals, and doorbell wakeups
    // while the reactor sleeps.
    let loaded = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let (l2, s2, w2) = (loaded.clone(), stop.clone(), worker.clone());
    let sender = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            if l2.load(Ordering::Relaxed) {
                let _ = w2.try_send(|_| {});
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let before = worker.stats();
    assert!(wait_until(Duration::from_secs(10), || {
        let d = worker.stats().delta(&before);
        d.arrivals >= 100 && d.rung_wakeups >= 10 && d.timed_wakeups >= 10
    }));
    let d = worker.stats().delta(&before);
    // (A snapshot of a live reactor may catch an arrival half published; see
    // the wakeups below.)
    assert!(
        wait_until(Duration::from_secs(5), || {
            let d = worker.stats().delta(&before);
            d.gap_hist.iter().sum::<u64>() == d.arrivals
        }),
        "every arrival has its gap: {:?}",
        worker.stats().delta(&before)
    );
    // The gaps are about 200 us (longer when the sender's sleep overshoots):
    // most fall in the buckets from 128 us up.
    let from_128us: u64 = d.gap_hist[8..].iter().sum();
    assert!(from_128us * 2 > d.arrivals, "{:?}", d.gap_hist);
    assert!(d.mean_wake_late_ns().is_some());
    // A live reactor publishes a wakeup's histogram bucket and its counters
    // in two steps, so one snapshot may catch a wakeup half published: the
    // two must agree in a snapshot taken between wakeups, which comes soon.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let d = worker.stats().delta(&before);
            d.wake_late_samples() == d.timed_wakeups + d.rung_wakeups
        }),
        "every measured wakeup has its delay: {:?}",
        worker.stats().delta(&before)
    );

    // Budget 0 under that load: poll; once the load stops: interrupt again.
    let sup = supervisor::start(
        &reactors,
        SupervisorConfig {
            interval: Duration::from_millis(20),
            up_samples: 2,
            down_samples: 3,
            latency_budget: Duration::ZERO,
            ..SupervisorConfig::with_policy(Policy::Budget)
        },
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || worker.mode() == Mode::Poll),
        "budget 0 polls a loaded reactor"
    );
    assert_eq!(reactors.handles()[0].mode(), Mode::Interrupt, "the idle one sleeps on");
    loaded.store(false, Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(10), || worker.mode() == Mode::Interrupt),
        "and sleeps once the load is gone"
    );
    // A large budget with the load back: a wakeup is within it, so it sleeps.
    sup.set_config(SupervisorConfig {
        latency_budget: Duration::from_millis(100),
        ..sup.config()
    })
    .unwrap();
    loaded.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(worker.mode(), Mode::Poll, "a 100 ms budget never needs polling here");
    // And it leaves room for the longest I/O queue period, which the
    // supervisor hands to the reactor (the queues on it read it there).
    assert!(
        wait_until(Duration::from_secs(10), || worker.queue_period()
            == Some(lull_reactor::budget::MAX_QUEUE_PERIOD)),
        "the plan's queue period reaches the reactor: {:?}",
        worker.queue_period()
    );
    // Another policy takes it back.
    sup.set_config(SupervisorConfig::with_policy(Policy::Interrupt))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || worker.queue_period().is_none()),
        "interrupt mode gives the queues their own period back"
    );
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    reactors.shutdown().unwrap();
}
