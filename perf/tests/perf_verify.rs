//! `lull perf` end to end against an in-process target: a clean verify run
//! has no error, and a block changed behind the initiator's back is caught
//! and named by its LBA.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lull_engine::nvme::{NvmeController, NvmeOptions, NvmeTrid};
use lull_perf::inproc::{DEFAULT_HOSTNQN, INPROC_NQN, InprocTarget};
use lull_perf::nvme_perf::{self, Rw, TargetCpu, Workload};
use lull_reactor::{CoreList, Mode, ReactorConfig, Reactors};

fn setup(mode: Mode) -> (InprocTarget, Reactors, NvmeController) {
    let cores = CoreList::usable().unwrap();
    let c = cores.cores();
    let (t, i) = (c[0], *c.last().unwrap());
    let target = InprocTarget::start(CoreList::try_from(vec![t]).unwrap(), true, mode, 16 << 20).unwrap();
    let reactors = Reactors::start(ReactorConfig::new(CoreList::try_from(vec![i]).unwrap()).mode(mode)).unwrap();
    let opts = NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        ..NvmeOptions::default().no_reconnect()
    };
    let ctrlr = NvmeController::attach(
        "t0",
        NvmeTrid::new(target.addr, INPROC_NQN, DEFAULT_HOSTNQN),
        opts,
        reactors.handles(),
        1,
    )
    .unwrap();
    (target, reactors, ctrlr)
}

fn workload(time: Duration) -> Workload {
    Workload {
        rw: Rw::RandRw,
        rwmixread: 50,
        bs: 4096,
        qd: 16,
        time,
        ramp: Duration::ZERO,
        nsid: 1,
        size: Some(256 * 1024),
        verify: true,
    }
}

#[test]
fn a_clean_verify_run_counts_ios_and_no_error() {
    for mode in [Mode::Interrupt, Mode::Poll] {
        let (target, reactors, ctrlr) = setup(mode);
        let stop = Arc::new(AtomicBool::new(false));
        let r = nvme_perf::run(
            &ctrlr,
            &workload(Duration::from_millis(800)),
            &stop,
            &TargetCpu::Reactors(target.reactors.handles().to_vec()),
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!((r.errors, r.verify_failures), (0, 0), "{mode}: {:?}", r.first_error);
        assert!(r.read_iops > 0.0 && r.write_iops > 0.0, "{mode}: {r:?}");
        assert!(r.target_cpu_pct.is_some() && r.initiator_cpu_pct > 0.0);
        ctrlr.detach();
        reactors.shutdown().unwrap();
        target.reactors.shutdown().unwrap();
    }
}

#[test]
fn a_block_changed_behind_the_initiator_fails_verify_naming_its_lba() {
    let (target, reactors, ctrlr) = setup(Mode::Interrupt);
    let bdev = target
        .target
        .subsystem(INPROC_NQN)
        .unwrap()
        .namespace(1)
        .unwrap()
        .bdev
        .clone();
    let stop = Arc::new(AtomicBool::new(false));
    // Scribble on LBA 8 (the second 4 KiB unit) while the workload runs.
    let scribbling = Arc::new(AtomicBool::new(true));
    let s2 = scribbling.clone();
    let scribbler = std::thread::spawn(move || {
        while s2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = bdev.write(8, &[0xEE; 512]);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let r = nvme_perf::run(
        &ctrlr,
        &workload(Duration::from_secs(3)),
        &stop,
        &TargetCpu::None,
        |_, _, _| {},
    )
    .unwrap();
    scribbling.store(false, std::sync::atomic::Ordering::Relaxed);
    scribbler.join().unwrap();
    assert!(r.verify_failures >= 1, "{r:?}");
    let e = r.first_error.unwrap();
    assert!(e.contains("verify failed at LBA 8"), "{e}");
    ctrlr.detach();
    reactors.shutdown().unwrap();
    target.reactors.shutdown().unwrap();
}

fn attach_with(target: &InprocTarget, reactors: &Reactors, opts: NvmeOptions) -> NvmeController {
    NvmeController::attach(
        "t1",
        NvmeTrid::new(target.addr, INPROC_NQN, DEFAULT_HOSTNQN),
        opts,
        reactors.handles(),
        1,
    )
    .unwrap()
}

fn initiator_reactors() -> Reactors {
    let c = CoreList::usable().unwrap();
    let i = *c.cores().last().unwrap();
    Reactors::start(ReactorConfig::new(CoreList::try_from(vec![i]).unwrap()).mode(Mode::Interrupt)).unwrap()
}

#[test]
fn a_lost_controller_ends_the_run_at_once_with_its_errors_counted() {
    let c = CoreList::usable().unwrap();
    let target = InprocTarget::start(
        CoreList::try_from(vec![c.cores()[0]]).unwrap(),
        true,
        Mode::Interrupt,
        16 << 20,
    )
    .unwrap();
    let reactors = initiator_reactors();
    let opts = NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        ..NvmeOptions::default().no_reconnect()
    };
    let ctrlr = attach_with(&target, &reactors, opts);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = std::time::Instant::now();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        target.reactors.shutdown().unwrap();
    });
    let mut w = workload(Duration::from_secs(20));
    w.verify = false;
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    killer.join().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the run ended early: {:?}",
        t0.elapsed()
    );
    assert!(r.errors >= 1, "{r:?}");
    assert!(r.first_error.as_deref().unwrap_or("").contains("lost"), "{r:?}");
    assert!(r.iops > 0.0, "I/O before the loss was counted");
    ctrlr.detach();
    reactors.shutdown().unwrap();
}

#[test]
fn commands_held_for_a_reconnect_do_not_keep_the_run_from_ending() {
    let c = CoreList::usable().unwrap();
    let target = InprocTarget::start(
        CoreList::try_from(vec![c.cores()[0]]).unwrap(),
        true,
        Mode::Interrupt,
        16 << 20,
    )
    .unwrap();
    let reactors = initiator_reactors();
    // Reconnect for up to a minute, never fail fast: held commands would
    // keep the jobs open that long if nothing aborted them.
    let opts = NvmeOptions {
        nvme_ioq_poll_period_us: 0,
        reconnect_delay_sec: 1,
        ctrlr_loss_timeout_sec: 60,
        fast_io_fail_timeout_sec: 0,
        ..NvmeOptions::default()
    };
    let ctrlr = attach_with(&target, &reactors, opts);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        target.reactors.shutdown().unwrap();
    });
    let mut w = workload(Duration::from_secs(1));
    w.verify = false;
    let t0 = std::time::Instant::now();
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    killer.join().unwrap();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "held commands were aborted after the run: {took:?}"
    );
    assert!(r.errors >= 1, "{r:?}");
    ctrlr.detach();
    reactors.shutdown().unwrap();
}
