//! Open-loop (`--rate-iops`) workloads end to end against an in-process
//! target: an idle target meets the rate, and a target that stalls shows the
//! stall as latency although the QD cap keeps only a few commands in flight
//! (no coordinated omission). Margins are wide: these check behaviour, not
//! speed.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lull_engine::initiator::{NvmeController, NvmeOptions, NvmeTrid};
use lull_perf::arrival::{Arrival, Rate};
use lull_perf::inproc::{DEFAULT_HOSTNQN, INPROC_NQN, InprocTarget};
use lull_perf::nvme_perf::{self, Rw, TargetCpu, Workload};
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

fn setup(queues: u16) -> (InprocTarget, Reactors, NvmeController) {
    let cores = CoreList::usable().unwrap();
    let c = cores.cores();
    let (t, i) = (c[0], *c.last().unwrap());
    let target = InprocTarget::start(CoreList::try_from(vec![t]).unwrap(), true, Mode::Interrupt, 16 << 20).unwrap();
    let reactors =
        Reactors::start(ReactorConfig::new(CoreList::try_from(vec![i]).unwrap()).mode(Mode::Interrupt)).unwrap();
    let opts = NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        ..NvmeOptions::default().no_reconnect()
    };
    let ctrlr = NvmeController::attach(
        "rate0",
        NvmeTrid::new(target.addr, INPROC_NQN, DEFAULT_HOSTNQN),
        opts,
        reactors.handles(),
        queues,
    )
    .unwrap();
    (target, reactors, ctrlr)
}

fn workload(rate: f64, arrival: Arrival, qd: u32, time: Duration) -> Workload {
    Workload {
        rw: Rw::RandRead,
        rwmixread: 50,
        bs: 4096,
        qd,
        time,
        ramp: Duration::from_millis(100),
        nsid: 1,
        size: None,
        verify: false,
        verify_state: None,
        flush_every: 0,
        rate: Some(Rate { iops: rate, arrival }),
    }
}

#[test]
fn an_idle_target_meets_the_offered_rate() {
    for (queues, arrival) in [(1, Arrival::Steady), (2, Arrival::Poisson)] {
        let (target, reactors, ctrlr) = setup(queues);
        let stop = Arc::new(AtomicBool::new(false));
        let w = workload(2000.0, arrival, 32, Duration::from_secs(2));
        let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.first_error);
        let offered = r.offered_iops.unwrap();
        assert!((1600.0..=2400.0).contains(&offered), "{arrival}: offered {offered}");
        assert!(
            (1600.0..=2400.0).contains(&r.iops),
            "{arrival} on {queues} queue(s): achieved {} of 2000 IOPS",
            r.iops
        );
        assert_eq!(r.arrival.as_deref(), Some(arrival.to_string().as_str()));
        assert!(r.send_lag_max_us.is_some() && r.lat_p99_us.is_some());
        ctrlr.detach();
        reactors.shutdown().unwrap();
        target.reactors.shutdown().unwrap();
    }
}

#[test]
fn a_target_stall_shows_as_latency_not_as_a_lower_rate() {
    let (target, reactors, ctrlr) = setup(1);
    let stop = Arc::new(AtomicBool::new(false));
    // QD cap 4: at most four commands in flight, so in a closed loop only
    // four samples could show the stall; open loop, every command due
    // during it waits and counts from its due time.
    let w = workload(1000.0, Arrival::Steady, 4, Duration::from_millis(1500));
    let stall = Duration::from_millis(200);
    let h = target.reactors.handles()[0].clone();
    let staller = std::thread::spawn(move || {
        // After the ramp, in the middle of the measured window.
        std::thread::sleep(Duration::from_millis(700));
        h.try_send(move |_| std::thread::sleep(stall)).unwrap();
    });
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    staller.join().unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    let max = r.lat_max_us.unwrap();
    let p999 = r.lat_p999_us.unwrap();
    let p99 = r.lat_p99_us.unwrap();
    // ~200 commands were due during the stall, the first of them waiting
    // all of it: max ~200 ms, and the top 1 % (15 commands) all above
    // ~185 ms.
    assert!(max >= 180_000.0, "max {max} us");
    assert!(p999 >= 150_000.0, "p99.9 {p999} us");
    assert!(p99 >= 100_000.0, "p99 {p99} us");
    assert!(r.capped_cmds > 4, "commands waited for the QD cap: {}", r.capped_cmds);
    // The rate was still offered in full: what the target did not do in
    // time it did late, within the window.
    assert!(r.offered_iops.unwrap() >= 800.0);
    ctrlr.detach();
    reactors.shutdown().unwrap();
    target.reactors.shutdown().unwrap();
}

#[test]
fn bursty_sends_nothing_in_off_windows_end_to_end() {
    let (target, reactors, ctrlr) = setup(1);
    let stop = Arc::new(AtomicBool::new(false));
    // 50 ms ON, 450 ms OFF at a mean 400 IOPS: 4000 IOPS inside bursts.
    let w = workload(
        400.0,
        Arrival::Bursty { on_ms: 50, off_ms: 450 },
        32,
        Duration::from_secs(1),
    );
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    let offered = r.offered_iops.unwrap();
    assert!((300.0..=500.0).contains(&offered), "offered {offered}");
    assert!(
        r.iops <= offered * 1.2 && r.iops >= offered * 0.8,
        "{} of {offered}",
        r.iops
    );
    ctrlr.detach();
    reactors.shutdown().unwrap();
    target.reactors.shutdown().unwrap();
}

#[test]
fn a_bad_rate_is_an_error_naming_the_option() {
    let (target, reactors, ctrlr) = setup(1);
    let stop = Arc::new(AtomicBool::new(false));
    for bad in [0.0, -5.0, f64::NAN, 1e12] {
        let w = workload(bad, Arrival::Steady, 4, Duration::from_secs(1));
        let e = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap_err();
        assert!(e.starts_with("--rate-iops") && e.contains("from 1 to 10000000"), "{e}");
    }
    let warn = nvme_perf::rate_warning(
        &Rate {
            iops: 5_000_000.0,
            arrival: Arrival::Steady,
        },
        1,
        32,
    )
    .unwrap();
    assert!(
        warn.contains("--rate-iops 5000000") && warn.contains("3200000"),
        "{warn}"
    );
    assert_eq!(
        nvme_perf::rate_warning(
            &Rate {
                iops: 50_000.0,
                arrival: Arrival::Steady
            },
            1,
            32
        ),
        None
    );
    ctrlr.detach();
    reactors.shutdown().unwrap();
    target.reactors.shutdown().unwrap();
}

#[test]
fn open_loop_works_with_verify_flushes_and_several_queues() {
    let (target, reactors, ctrlr) = setup(2);
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = workload(2000.0, Arrival::Poisson, 8, Duration::from_secs(1));
    w.rw = Rw::RandRw;
    w.verify = true;
    w.size = Some(1 << 20);
    w.flush_every = 16;
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert_eq!((r.errors, r.verify_failures), (0, 0), "{:?}", r.first_error);
    assert!(r.verified_reads > 0 && r.write_iops > 0.0, "{r:?}");
    assert!(r.flushes > 0, "a Flush every 16 writes: {r:?}");
    // Flushes take slots, not arrivals: the offered rate is reads + writes.
    let offered = r.offered_iops.unwrap();
    assert!(
        r.iops <= offered * 1.2 && r.iops >= offered * 0.8,
        "{} of {offered}",
        r.iops
    );
    ctrlr.detach();
    reactors.shutdown().unwrap();
    target.reactors.shutdown().unwrap();
}
