//! `lull perf` end to end against an in-process target: a clean verify run
//! has no error, and a block changed behind the initiator's back is caught
//! and named by its LBA.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lull_engine::initiator::{NvmeController, NvmeOptions, NvmeTrid};
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
        verify_state: None,
        flush_every: 0,
        rate: None,
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
    // The RAM bdev's own blocking write, from off the reactors.
    let bdev = (bdev as Arc<dyn std::any::Any + Send + Sync>)
        .downcast::<lull_engine::bdev::RamBdev>()
        .unwrap();
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

fn state_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lull-verify-state-{}-{tag}", std::process::id()))
}

#[test]
fn a_later_run_verifies_what_an_earlier_run_wrote_through_the_state_file() {
    let (target, reactors, ctrlr) = setup(Mode::Interrupt);
    let path = state_path("carry");
    let _ = std::fs::remove_file(&path);
    let stop = Arc::new(AtomicBool::new(false));
    // Run 1: sequential writes over the whole 256 KiB, state saved.
    let mut w1 = workload(Duration::from_millis(500));
    w1.rw = Rw::Write;
    w1.verify_state = Some(path.clone());
    let r1 = nvme_perf::run(&ctrlr, &w1, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert_eq!((r1.errors, r1.verify_failures), (0, 0), "{:?}", r1.first_error);
    assert_eq!(
        r1.verify_state_blocks,
        Some(512),
        "every 512-byte block of 256 KiB was written"
    );
    assert!(path.exists());
    // Run 2: reads only, state loaded: every read is checked, none differs.
    let mut w2 = workload(Duration::from_millis(300));
    w2.rw = Rw::RandRead;
    w2.verify_state = Some(path.clone());
    let r2 = nvme_perf::run(&ctrlr, &w2, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert_eq!((r2.errors, r2.verify_failures), (0, 0), "{:?}", r2.first_error);
    assert!(r2.verified_reads > 0 && r2.read_iops > 0.0, "{r2:?}");
    // One block changed on the target between runs: the next read run names it.
    let bdev = target
        .target
        .subsystem(INPROC_NQN)
        .unwrap()
        .namespace(1)
        .unwrap()
        .bdev
        .clone();
    // The RAM bdev's own blocking write, from off the reactors.
    let bdev = (bdev as Arc<dyn std::any::Any + Send + Sync>)
        .downcast::<lull_engine::bdev::RamBdev>()
        .unwrap();
    bdev.write(13, &[0xEE; 512]).unwrap();
    let mut w3 = w2.clone();
    w3.rw = Rw::Read;
    let r3 = nvme_perf::run(&ctrlr, &w3, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert!(r3.verify_failures >= 1, "{r3:?}");
    let e = r3.first_error.unwrap();
    assert!(e.contains("verify failed at LBA 13"), "{e}");
    // Another --size is another geometry: refused, naming it.
    let mut w4 = w2.clone();
    w4.size = Some(128 * 1024);
    let e = nvme_perf::run(&ctrlr, &w4, &stop, &TargetCpu::None, |_, _, _| {}).unwrap_err();
    assert!(e.contains("--size"), "{e}");
    let _ = std::fs::remove_file(&path);
    ctrlr.detach();
    reactors.shutdown().unwrap();
    target.reactors.shutdown().unwrap();
}

#[test]
fn flush_every_n_writes_sends_flushes_and_counts_them() {
    let (target, reactors, ctrlr) = setup(Mode::Interrupt);
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = workload(Duration::from_millis(400));
    w.rw = Rw::RandWrite;
    w.flush_every = 4;
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    let writes = (r.write_iops * r.secs).round() as u64;
    assert!(r.flushes > 0, "{r:?}");
    // One Flush per 4 writes issued; the window's edges move either count by at most a queue's depth.
    let qd = u64::from(w.qd);
    assert!(
        r.flushes * 4 <= writes + 4 * qd && writes <= r.flushes * 4 + 4 * qd,
        "{} flushes for {writes} writes",
        r.flushes
    );
    w.flush_every = 0;
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert_eq!(r.flushes, 0);
    ctrlr.detach();
    reactors.shutdown().unwrap();
    target.reactors.shutdown().unwrap();
}

#[test]
fn verify_over_a_namespace_too_big_to_track_is_an_error_naming_size() {
    let cores = CoreList::usable().unwrap();
    let c = cores.cores();
    let (t, i) = (c[0], *c.last().unwrap());
    let target = InprocTarget::start(CoreList::try_from(vec![t]).unwrap(), true, Mode::Interrupt, 1 << 20).unwrap();
    // NSID 2: 2^42 blocks of 512 bytes (2 PiB, a null bdev): 32 TiB of
    // per-block state, more than any machine has.
    let big: Arc<dyn lull_engine::bdev::Bdev> =
        Arc::new(lull_engine::bdev::NullBdev::new("Big", 1 << 42, 512).unwrap());
    target
        .target
        .subsystem(INPROC_NQN)
        .unwrap()
        .add_namespace(2, big)
        .unwrap();
    let reactors = Reactors::start(ReactorConfig::new(CoreList::try_from(vec![i]).unwrap())).unwrap();
    let ctrlr = NvmeController::attach(
        "big",
        NvmeTrid::new(target.addr, INPROC_NQN, DEFAULT_HOSTNQN),
        NvmeOptions::default().no_reconnect(),
        reactors.handles(),
        1,
    )
    .unwrap();
    let w = Workload {
        nsid: 2,
        size: None,
        ..workload(Duration::from_secs(1))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let e = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap_err();
    assert!(e.contains("--size") && e.contains("per-block state"), "{e}");
    // With a range that fits, the same namespace runs (writes only: a null
    // bdev keeps nothing to read back).
    let w = Workload {
        size: Some(1 << 20),
        rw: Rw::RandWrite,
        ..w
    };
    let r = nvme_perf::run(&ctrlr, &w, &stop, &TargetCpu::None, |_, _, _| {}).unwrap();
    assert_eq!(r.errors, 0, "{:?}", r.first_error);
    ctrlr.detach();
    reactors.shutdown().unwrap();
}
