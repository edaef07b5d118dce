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
