//! Resource properties, with wide margins: an idle reactor in interrupt (and
//! hybrid) mode costs under 5 % of a core; in poll mode over 50 %.
//!
//! One test function, so nothing else in this binary competes for the CPUs
//! while it measures.

mod common;

use std::time::Duration;

use lull_reactor::{Context, Mode, PollStatus};

fn cpu_share(h: &lull_reactor::ReactorHandle, over: Duration) -> f64 {
    let a = h.stats();
    std::thread::sleep(over);
    let b = h.stats();
    (b.thread_cpu_ns - a.thread_cpu_ns) as f64 / b.wall_ns_since(&a) as f64
}

#[test]
fn idle_cpu_by_mode() {
    let window = Duration::from_secs(2);
    for mode in [Mode::Interrupt, Mode::Hybrid, Mode::Poll] {
        let reactors = common::start(1, mode);
        let h = &reactors.handles()[0];
        // A realistic idle reactor: a keep-alive-like 10 ms timed poller.
        h.try_send(|cx| {
            cx.register_timed(Duration::from_millis(10), |_: &mut Context, _| PollStatus::Idle)
                .unwrap();
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let share = cpu_share(h, window);
        println!(
            "{mode}: idle reactor used {:.3} % of a core over {window:?}",
            share * 100.0
        );
        match mode {
            Mode::Poll => assert!(share > 0.50, "poll mode must spin: {:.1} %", share * 100.0),
            _ => assert!(share < 0.05, "{mode} mode must sleep: {:.1} %", share * 100.0),
        }
        let s = h.stats();
        if mode != Mode::Poll {
            assert!(
                s.wakeups >= 100 && s.wakeups < 1000,
                "{mode}: ~100 timer wakeups/s, got {}",
                s.wakeups
            );
        } else {
            assert_eq!(s.wakeups, 0, "poll mode never sleeps");
        }
        reactors.shutdown().unwrap();
    }
}
