//! The volume on real reactors (interrupt mode, up to two): fan-out, read
//! balance, failures, removal and re-add, rebuild under writes, bases of
//! different kinds. Data is checked on each base directly, at the base's
//! `data_offset`, against what the test wrote.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use lull_reactor::{Context, CoreList, Mode, ReactorConfig, ReactorHandle, Reactors};

use super::*;
use crate::bdev::test_support::{FakeBdev, pattern};
use crate::bdev::{BdevError, FileBdev, RamBdev};

pub(super) const BS: u32 = 512;
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// One or two reactors (two where the machine has two usable cores).
pub(super) struct Rig {
    reactors: Option<Reactors>,
}

impl Rig {
    pub(super) fn start() -> Rig {
        let usable = CoreList::usable().unwrap();
        let cores: Vec<usize> = usable.cores().iter().take(2).copied().collect();
        let config = ReactorConfig::new(CoreList::try_from(cores).unwrap()).mode(Mode::Interrupt);
        Rig {
            reactors: Some(Reactors::start(config).unwrap()),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.reactors.as_ref().unwrap().handles().len()
    }

    pub(super) fn handle(&self, i: usize) -> ReactorHandle {
        let h = self.reactors.as_ref().unwrap().handles();
        h[i % h.len()].clone()
    }

    pub(super) fn run<R: Send + 'static>(&self, i: usize, f: impl FnOnce(&mut Context) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        assert!(self.handle(i).try_send(move |cx| tx.send(f(cx)).unwrap()).is_ok());
        rx.recv_timeout(WAIT).expect("the reactor ran the closure")
    }

    /// Submits `io` on reactor `i`, waits for its completion and checks it
    /// came exactly once.
    pub(super) fn io(&self, i: usize, b: &Arc<dyn Bdev>, io: BdevIo) -> (Result<(), BdevError>, Vec<u8>) {
        let (tx, rx) = mpsc::channel();
        let calls = Arc::new(AtomicUsize::new(0));
        let (b, c) = (b.clone(), calls.clone());
        self.run(i, move |cx| {
            let done = BdevDone::from_fn(move |_cx, r, buf| {
                c.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send((r, buf));
            });
            b.submit(cx, io, done);
        });
        let out = rx.recv_timeout(WAIT).expect("the volume completed the operation");
        std::thread::sleep(Duration::from_millis(5));
        self.run(i, |_| ());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "completed exactly once");
        out
    }

    pub(super) fn write(&self, i: usize, b: &Arc<dyn Bdev>, lba: u64, data: Vec<u8>) -> Result<(), BdevError> {
        self.io(i, b, BdevIo::Write { lba, data }).0
    }

    pub(super) fn read(&self, i: usize, b: &Arc<dyn Bdev>, lba: u64, blocks: u64) -> Result<Vec<u8>, BdevError> {
        let (r, buf) = self.io(
            i,
            b,
            BdevIo::Read {
                lba,
                blocks,
                buf: Vec::with_capacity((blocks * u64::from(BS)) as usize),
            },
        );
        r.map(|()| buf)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(r) = self.reactors.take() {
            let _ = r.shutdown();
        }
    }
}

pub(super) fn fakes(names: &[&str], blocks: u64) -> Vec<Arc<FakeBdev>> {
    names.iter().map(|n| FakeBdev::new(n, blocks, BS)).collect()
}

pub(super) fn dyns(f: &[Arc<FakeBdev>]) -> Vec<Arc<dyn Bdev>> {
    f.iter().map(|b| b.clone() as Arc<dyn Bdev>).collect()
}

fn volume(name: &str, bases: Vec<Arc<dyn Bdev>>, superblock: bool) -> (Arc<Raid1Bdev>, Arc<dyn Bdev>) {
    let params = Raid1Params {
        superblock,
        ..Raid1Params::default()
    };
    let r = Arc::new(Raid1Bdev::create(name, bases, params).unwrap());
    let b: Arc<dyn Bdev> = r.clone();
    (r, b)
}

/// `blocks` blocks of `base` from volume block `lba` (at its data offset).
pub(super) fn on_base(base: &RamBdev, offset: u64, lba: u64, blocks: u64) -> Vec<u8> {
    let mut v = vec![0xEE; (blocks * u64::from(BS)) as usize];
    base.read(offset + lba, &mut v).unwrap();
    v
}

/// Waits until no process runs; returns the status then.
pub(super) fn wait_rebuilt(r: &Raid1Bdev) -> Raid1Status {
    let t0 = Instant::now();
    loop {
        let s = r.status();
        if s.process.is_none() {
            return s;
        }
        assert!(t0.elapsed() < WAIT, "rebuild did not finish: {:?}", s.process);
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn writes_reach_every_base_at_its_data_offset_and_status_shows_the_layout() {
    let rig = Rig::start();
    // The volume takes the smallest base's data size.
    let f = vec![
        FakeBdev::new("A", 4096 + 512, BS),
        FakeBdev::new("B", 4096, BS),
        FakeBdev::new("C", 8192, BS),
    ];
    let (r, b) = volume("Raid0", dyns(&f), true);
    let off = 2048; // 1 MiB of 512-byte blocks
    assert_eq!(b.info().num_blocks, 4096 - off);
    assert_eq!((b.info().product_name, b.info().block_size), ("Raid Volume", BS));

    let data = pattern(16 * 512, 9);
    rig.write(0, &b, 100, data.clone()).unwrap();
    for base in &f {
        assert_eq!(on_base(base.ram(), off, 100, 16), data, "{}", base.info().name);
    }
    assert_eq!(rig.read(1, &b, 100, 16).unwrap(), data);

    let z = rig.io(0, &b, BdevIo::WriteZeroes { lba: 102, blocks: 2 });
    assert_eq!(z.0, Ok(()));
    let u = rig.io(1, &b, BdevIo::Unmap { lba: 110, blocks: 6 });
    assert_eq!(u.0, Ok(()));
    assert_eq!(rig.io(0, &b, BdevIo::Flush).0, Ok(()));
    let mut expect = data.clone();
    expect[2 * 512..4 * 512].fill(0);
    expect[10 * 512..].fill(0);
    for base in &f {
        assert_eq!(on_base(base.ram(), off, 100, 16), expect);
    }
    // Nothing was written in the superblock area.
    for base in &f {
        assert!(on_base(base.ram(), 0, 0, off).iter().all(|&x| x == 0));
    }

    let s = r.status();
    assert_eq!(s.state, RaidState::Online);
    assert!(s.superblock);
    assert_eq!(
        (
            s.num_base_bdevs,
            s.num_base_bdevs_discovered,
            s.num_base_bdevs_operational
        ),
        (3, 3, 3)
    );
    assert_eq!(s.num_blocks, 4096 - off);
    for (i, base) in s.base_bdevs.iter().enumerate() {
        assert_eq!(base.slot as usize, i);
        assert_eq!(base.name.as_deref(), Some(f[i].info().name.as_str()));
        assert_eq!(base.uuid, f[i].info().uuid);
        assert!(base.is_configured && base.is_operational);
        assert_eq!((base.data_offset, base.data_size), (off, 4096 - off));
    }
    assert!(s.process.is_none());
    assert_eq!(r.base_names(), vec!["A", "B", "C"]);

    // Out of range and misaligned, as any bdev.
    let e = rig.read(0, &b, 4096 - off - 1, 2).unwrap_err();
    assert!(matches!(e, BdevError::OutOfRange { .. }), "{e:?}");
    let (e, buf) = rig.io(
        0,
        &b,
        BdevIo::Write {
            lba: 0,
            data: vec![1; 100],
        },
    );
    assert!(matches!(e, Err(BdevError::Misaligned { .. })));
    assert_eq!(buf, vec![1; 100], "the caller's data comes back");
}

#[test]
fn reads_spread_over_the_bases_and_prefer_the_least_busy() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 1024);
    let (_r, b) = volume("Raid0", dyns(&f), false);
    rig.write(0, &b, 0, pattern(8 * 512, 1)).unwrap();
    let before: Vec<u64> = f.iter().map(|x| x.reads()).collect();
    assert_eq!(before, vec![0, 0, 0], "a write reads nothing");
    for _ in 0..30 {
        assert_eq!(rig.read(0, &b, 0, 8).unwrap(), pattern(8 * 512, 1));
    }
    let reads: Vec<u64> = f.iter().map(|x| x.reads()).collect();
    assert_eq!(
        reads,
        vec![30, 0, 0],
        "one after another: the lowest slot (SPDK's rule)"
    );

    // 30 at once, all slow: each goes to a base with the fewest blocks outstanding.
    f[0].set_delay(Duration::from_millis(20));
    f[1].set_delay(Duration::from_millis(20));
    f[2].set_delay(Duration::from_millis(20));
    let (tx, rx) = mpsc::channel();
    let bb = b.clone();
    rig.run(0, move |cx| {
        for _ in 0..30 {
            let tx = tx.clone();
            let io = BdevIo::Read {
                lba: 0,
                blocks: 8,
                buf: Vec::new(),
            };
            bb.submit(cx, io, BdevDone::from_fn(move |_, r, buf| tx.send((r, buf)).unwrap()));
        }
    });
    for _ in 0..30 {
        let (r, buf) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!((r, buf), (Ok(()), pattern(8 * 512, 1)));
    }
    let reads: Vec<u64> = f.iter().zip([30, 0, 0]).map(|(x, before)| x.reads() - before).collect();
    assert_eq!(reads, vec![10, 10, 10], "equal outstanding counts: spread evenly");
}

#[test]
fn a_base_failing_writes_is_taken_out_and_the_volume_goes_on() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 1024);
    f[1].set_delay(Duration::from_millis(5));
    let (r, b) = volume("Raid0", dyns(&f), false);
    rig.write(0, &b, 0, pattern(64 * 512, 1)).unwrap();

    // B fails the next write while it is in flight.
    let (tx, rx) = mpsc::channel();
    let bb = b.clone();
    rig.run(0, move |cx| {
        let io = BdevIo::Write {
            lba: 8,
            data: pattern(8 * 512, 2),
        };
        bb.submit(cx, io, BdevDone::from_fn(move |_, r, _| tx.send(r).unwrap()));
    });
    f[1].set_fail(true, true);
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), Ok(()), "A and C completed it");
    let s = r.status();
    assert_eq!(s.state, RaidState::Online);
    assert_eq!(
        (
            s.num_base_bdevs,
            s.num_base_bdevs_discovered,
            s.num_base_bdevs_operational
        ),
        (3, 2, 2)
    );
    let slot = &s.base_bdevs[1];
    assert!(!slot.is_configured && slot.name.is_none());
    assert!(slot.failed.as_deref().unwrap().contains("injected failure"), "{slot:?}");
    assert_eq!(r.base_names(), vec!["A", "C"]);

    // Nothing more goes to B.
    let (reads, writes) = (f[1].reads(), f[1].writes());
    for i in 0..10 {
        assert_eq!(rig.read(i, &b, 8, 8).unwrap(), pattern(8 * 512, 2));
        rig.write(i, &b, 16, pattern(8 * 512, 3)).unwrap();
    }
    assert_eq!((f[1].reads(), f[1].writes()), (reads, writes));
    assert_eq!(on_base(f[0].ram(), 0, 16, 8), pattern(8 * 512, 3));
    assert_eq!(on_base(f[2].ram(), 0, 16, 8), pattern(8 * 512, 3));
}

#[test]
fn a_failed_read_is_retried_on_another_base() {
    let rig = Rig::start();
    let f = fakes(&["A", "B"], 1024);
    let (r, b) = volume("Raid0", dyns(&f), false);
    rig.write(0, &b, 0, pattern(8 * 512, 4)).unwrap();
    f[0].set_fail(true, false);
    // In turn, the first read goes to A, fails, and is answered from B.
    for _ in 0..4 {
        assert_eq!(rig.read(0, &b, 0, 8).unwrap(), pattern(8 * 512, 4));
    }
    assert_eq!(f[0].reads(), 1, "A was tried once, then taken out");
    assert_eq!(f[1].reads(), 4);
    assert_eq!(r.status().num_base_bdevs_operational, 1);
}

#[test]
fn losing_the_last_base_fails_io_with_a_clear_error_and_nothing_hangs() {
    let rig = Rig::start();
    let f = fakes(&["A", "B"], 1024);
    f[0].set_delay(Duration::from_millis(2));
    let (r, b) = volume("Raid0", dyns(&f), false);
    f[0].set_fail(true, true);
    f[1].set_fail(true, true);
    let (e, buf) = rig.io(
        0,
        &b,
        BdevIo::Write {
            lba: 0,
            data: pattern(4 * 512, 5),
        },
    );
    let msg = e.unwrap_err().to_string();
    assert!(
        msg.contains("raid1 Raid0: write failed on every operational base bdev"),
        "{msg}"
    );
    assert_eq!(buf.len(), 4 * 512, "the caller's buffer comes back");
    let s = r.status();
    assert_eq!((s.state, s.num_base_bdevs_discovered), (RaidState::Offline, 0));

    // Offline: everything fails at once, once.
    for io in [
        BdevIo::Read {
            lba: 0,
            blocks: 1,
            buf: Vec::new(),
        },
        BdevIo::Write {
            lba: 0,
            data: vec![0; 512],
        },
        BdevIo::WriteZeroes { lba: 0, blocks: 1 },
        BdevIo::Unmap { lba: 0, blocks: 1 },
        BdevIo::Flush,
    ] {
        let (e, _) = rig.io(1, &b, io);
        let msg = e.unwrap_err().to_string();
        assert!(msg.contains("no operational base bdev left"), "{msg}");
    }

    // A read whose every base fails.
    let g = fakes(&["C", "D"], 1024);
    let (_r2, b2) = volume("Raid1", dyns(&g), false);
    g[0].set_fail(true, false);
    g[1].set_fail(true, false);
    let e = rig.read(0, &b2, 0, 1).unwrap_err().to_string();
    assert!(
        e.contains("raid1 Raid1: read of blocks 0..1 failed on every operational base bdev"),
        "{e}"
    );
}

#[test]
fn bad_input_is_refused_with_the_field_named_and_nothing_changed() {
    let rig = Rig::start();
    let f = fakes(&["A", "B"], 1024);
    let p = Raid1Params::default;
    let one = Raid1Bdev::create("R", dyns(&f[..1]), p()).err().unwrap();
    assert_eq!(one, Raid1Error::TooFewBases { given: 1, min: 2 });
    assert_eq!(one.errno(), -libc::EINVAL);
    let dup = Raid1Bdev::create("R", vec![f[0].clone(), f[0].clone()], p())
        .err()
        .unwrap();
    assert!(matches!(dup, Raid1Error::DuplicateBase { ref base, .. } if base == "A"));
    assert_eq!(dup.errno(), -libc::EEXIST);
    let big = FakeBdev::new("Big", 64, 4096);
    let bs = Raid1Bdev::create("R", vec![f[0].clone(), big.clone()], p())
        .err()
        .unwrap();
    assert!(matches!(
        bs,
        Raid1Error::BlockSizeMismatch {
            field: "base_bdevs",
            block_size: 4096,
            expected: 512,
            ..
        }
    ));
    // No room after the superblock area.
    let tiny = FakeBdev::new("Tiny", 2048, BS);
    let sb = Raid1Params {
        superblock: true,
        ..p()
    };
    let small = Raid1Bdev::create("R", vec![f[0].clone(), tiny], sb).err().unwrap();
    assert!(
        matches!(small, Raid1Error::BaseTooSmall { data_blocks: 0, .. }),
        "{small:?}"
    );
    let bad = Raid1Params {
        options: Raid1Options {
            process_window_size_kb: 0,
            process_max_bandwidth_mb_sec: 0,
        },
        ..p()
    };
    assert!(matches!(
        Raid1Bdev::create("R", dyns(&f), bad).err().unwrap(),
        Raid1Error::InvalidOption {
            field: "process_window_size_kb",
            ..
        }
    ));

    let (r, _b) = volume("R", dyns(&f), false);
    let h = rig.handle(0);
    let e = r.add_base(f[1].clone(), &h).unwrap_err();
    assert!(matches!(e, Raid1Error::DuplicateBase { .. }));
    let e = r.add_base(FakeBdev::new("X", 1024, BS), &h).unwrap_err();
    assert!(matches!(e, Raid1Error::NoEmptySlot { slots: 2, .. }), "{e}");
    assert_eq!(e.errno(), -libc::EBUSY);
    let e = r.remove_base("nope").unwrap_err();
    assert_eq!(e.errno(), -libc::ENODEV);
    r.remove_base("B").unwrap();
    let e = r.add_base(FakeBdev::new("S", 1023, BS), &h).unwrap_err();
    assert!(
        matches!(
            e,
            Raid1Error::BaseTooSmall {
                data_blocks: 1023,
                needed: 1024,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("base_bdev: S holds 1023 data blocks, raid R needs 1024"),
        "{e}"
    );
    let e = r.add_base(big, &h).unwrap_err();
    assert!(
        matches!(e, Raid1Error::BlockSizeMismatch { field: "base_bdev", .. }),
        "{e}"
    );
    let e = r.remove_base("A").unwrap_err();
    assert_eq!(
        e,
        Raid1Error::LastBase {
            raid: "R".into(),
            base: "A".into()
        }
    );
    assert_eq!(
        r.set_options(Raid1Options {
            process_window_size_kb: 0,
            process_max_bandwidth_mb_sec: 5
        }),
        Err(Raid1Error::InvalidOption {
            field: "process_window_size_kb",
            value: "0".into(),
            allowed: "1 to 1048576 KiB"
        })
    );
    assert_eq!(r.options(), Raid1Options::default(), "unchanged");
    let s = r.status();
    assert_eq!((s.num_base_bdevs, s.num_base_bdevs_discovered), (2, 1));
}

#[test]
fn a_removed_base_re_added_is_rebuilt_and_then_read() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 4096);
    let (r, b) = volume("Raid0", dyns(&f), true);
    let (off, n) = (2048, 2048);
    for lba in (0..n).step_by(64) {
        rig.write(0, &b, lba, pattern(64 * 512, lba as u8)).unwrap();
    }
    r.remove_base("B").unwrap();
    let s = r.status();
    assert_eq!((s.num_base_bdevs_discovered, s.base_bdevs[1].name.clone()), (2, None));
    assert!(s.base_bdevs[1].failed.is_none(), "removed, not failed");
    // Written while B is out: B misses it.
    rig.write(1, &b, 64, pattern(64 * 512, 99)).unwrap();
    assert_ne!(on_base(f[1].ram(), off, 64, 64), pattern(64 * 512, 99));

    // A fresh base in B's slot: rebuilt, never read until then.
    let fresh = FakeBdev::new("D", 4096, BS);
    let slot = r.add_base(fresh.clone(), &rig.handle(0)).unwrap();
    assert_eq!(slot, 1);
    let s = wait_rebuilt(&r);
    assert_eq!(fresh.reads(), 0, "the rebuild reads from the others");
    assert!(s.base_bdevs[1].is_operational);
    assert_eq!(s.base_bdevs[1].name.as_deref(), Some("D"));
    assert_eq!((s.num_base_bdevs_discovered, s.num_base_bdevs_operational), (3, 3));
    let a = on_base(f[0].ram(), off, 0, n);
    assert_eq!(on_base(fresh.ram(), off, 0, n), a, "every block copied");
    assert_eq!(on_base(fresh.ram(), off, 64, 64), pattern(64 * 512, 99));
    // Reads go to the lowest slot that is free: with A out, that is D now.
    r.remove_base("A").unwrap();
    for _ in 0..6 {
        assert_eq!(rig.read(0, &b, 64, 64).unwrap(), pattern(64 * 512, 99));
    }
    assert_eq!(fresh.reads(), 6, "the rebuilt base serves reads");
}

/// Writers on every reactor keep writing while a base is rebuilt with a
/// small window, so writes land behind, in and ahead of it; afterwards every
/// block of every base is what was last written there.
#[test]
fn a_rebuild_under_concurrent_writes_leaves_every_base_identical_to_what_was_written() {
    rebuild_under_writes(
        8,
        Duration::from_micros(200),
        Duration::from_micros(200),
        Duration::from_micros(300),
    );
}

/// As above with the source's writes slow and the target fast: a write in
/// flight when its window is locked has reached the target but not yet the
/// source, so copying before it completes would undo it on the target.
#[test]
fn a_window_is_copied_only_after_the_writes_in_flight_into_it_completed() {
    rebuild_under_writes(64, Duration::ZERO, Duration::from_millis(2), Duration::from_micros(100));
}

/// Windows of `window_kb`; source reads take `src_read`, source writes
/// `src_write`, the target's operations `target`.
fn rebuild_under_writes(window_kb: u32, src_read: Duration, src_write: Duration, target: Duration) {
    let rig = Rig::start();
    let f = fakes(&["A", "B"], 4096);
    let params = Raid1Params {
        superblock: true,
        options: Raid1Options {
            process_window_size_kb: window_kb,
            process_max_bandwidth_mb_sec: 0,
        },
        ..Raid1Params::default()
    };
    let r = Arc::new(Raid1Bdev::create("Raid0", dyns(&f), params).unwrap());
    let b: Arc<dyn Bdev> = r.clone();
    let (off, n) = (2048u64, 2048u64);
    const CHUNK: u64 = 8;
    let chunks = n / CHUNK;
    for c in 0..chunks {
        rig.write(0, &b, c * CHUNK, pattern((CHUNK * 512) as usize, 0)).unwrap();
    }
    // B leaves; C comes in its place.
    r.remove_base("B").unwrap();
    f[0].set_delay(src_read);
    f[0].set_write_delay(src_write);
    let c_base = FakeBdev::new("C", 4096, BS);
    c_base.set_delay(target);

    let model: Arc<Mutex<HashMap<u64, u8>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let writers = rig.count().max(2);
    for w in 0..writers {
        let mine: Vec<u64> = (0..chunks).filter(|c| c % writers as u64 == w as u64).collect();
        let (b, model, stop, done_tx) = (b.clone(), model.clone(), stop.clone(), done_tx.clone());
        rig.run(w, move |cx| {
            let state = Rc::new(Writer {
                b,
                mine,
                next: Cell::new(0),
                busy: RefCell::new(HashSet::new()),
                seed: Cell::new(0),
                in_flight: Cell::new(0),
                finished: Cell::new(false),
                model,
                stop,
                done: done_tx,
            });
            for _ in 0..4 {
                Writer::issue(&state, cx);
            }
        });
    }
    let t0 = Instant::now();
    while (model.lock().unwrap().len() as u64) < chunks / 2 {
        assert!(t0.elapsed() < WAIT, "the writers are writing");
        std::thread::sleep(Duration::from_millis(1));
    }
    let slot = r.add_base(c_base.clone(), &rig.handle(0)).unwrap();
    assert_eq!(slot, 1);
    // Progress is readable while it runs.
    let t0 = Instant::now();
    let mut seen_mid = false;
    while r.status().process.is_some() && t0.elapsed() < WAIT {
        if let Some(p) = r.status().process {
            assert_eq!((p.kind, p.target.as_str(), p.total_blocks), ("rebuild", "C", n));
            assert!(p.blocks <= n && p.percent <= 100.0);
            seen_mid |= p.blocks > 0 && p.blocks < n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = wait_rebuilt(&r);
    assert!(seen_mid, "progress seen between 0 and the end");
    assert_eq!(c_base.reads(), 0, "never read while rebuilt");
    assert!(s.base_bdevs[1].is_operational);
    stop.store(true, Ordering::SeqCst);
    for _ in 0..writers {
        done_rx.recv_timeout(WAIT).expect("every writer stopped");
    }
    assert!(r.writes_waited() > 0, "some writes met the window");

    let model = model.lock().unwrap();
    let mut expect = Vec::new();
    for c in 0..chunks {
        expect.extend(pattern((CHUNK * 512) as usize, model.get(&c).copied().unwrap_or(0)));
    }
    assert!(
        model.len() as u64 > chunks / 2,
        "the writers covered most of the volume"
    );
    for (name, base) in [("A", f[0].ram()), ("C", c_base.ram())] {
        let got = on_base(base, off, 0, n);
        for c in 0..chunks {
            let at = (c * CHUNK * 512) as usize..((c + 1) * CHUNK * 512) as usize;
            assert!(got[at.clone()] == expect[at], "{name}: chunk {c} differs");
        }
    }
}

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

/// One reactor's writer: four writes in flight over its own chunks, in a
/// sweep that skips chunks with a write in flight (so the last write to
/// complete on a chunk is the last one applied), each with a new seed.
struct Writer {
    b: Arc<dyn Bdev>,
    mine: Vec<u64>,
    next: Cell<usize>,
    busy: RefCell<HashSet<u64>>,
    seed: Cell<u8>,
    in_flight: Cell<usize>,
    finished: Cell<bool>,
    model: Arc<Mutex<HashMap<u64, u8>>>,
    stop: Arc<AtomicBool>,
    done: mpsc::Sender<()>,
}

impl Writer {
    fn issue(me: &Rc<Writer>, cx: &mut Context) {
        if me.stop.load(Ordering::SeqCst) {
            // Every completion comes here once more: report the end once.
            if me.in_flight.get() == 0 && !me.finished.replace(true) {
                let _ = me.done.send(());
            }
            return;
        }
        let mut chunk = me.mine[me.next.get() % me.mine.len()];
        while me.busy.borrow().contains(&chunk) {
            me.next.set(me.next.get() + 1);
            chunk = me.mine[me.next.get() % me.mine.len()];
        }
        me.next.set(me.next.get() + 1);
        me.busy.borrow_mut().insert(chunk);
        let seed = me.seed.get().wrapping_add(1).max(1);
        me.seed.set(seed);
        me.in_flight.set(me.in_flight.get() + 1);
        let again = me.clone();
        let io = BdevIo::Write {
            lba: chunk * 8,
            data: pattern(8 * 512, seed),
        };
        me.b.submit(
            cx,
            io,
            BdevDone::from_fn(move |cx, r, _| {
                assert_eq!(r, Ok(()));
                again.model.lock().unwrap().insert(chunk, seed);
                again.busy.borrow_mut().remove(&chunk);
                again.in_flight.set(again.in_flight.get() - 1);
                // Off the completion's stack: the next write may complete at once.
                let next = again.clone();
                cx.timer_once(Duration::ZERO, move |cx| Writer::issue(&next, cx));
            }),
        );
    }
}

#[test]
fn bases_of_different_kinds_mirror_each_other() {
    let rig = Rig::start();
    let path = std::env::temp_dir().join(format!("lull-raid1-{}.img", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(4096 * 512).unwrap();
    drop(file);
    let fb = Arc::new(FileBdev::open("File0", &path, BS).unwrap());
    let ram = Arc::new(RamBdev::new("Ram0", 4096 * 512, BS).unwrap());
    let (r, b) = volume(
        "Raid0",
        vec![ram.clone() as Arc<dyn Bdev>, fb.clone() as Arc<dyn Bdev>],
        true,
    );
    rig.write(0, &b, 10, pattern(32 * 512, 7)).unwrap();
    assert_eq!(on_base(&ram, 2048, 10, 32), pattern(32 * 512, 7));
    for i in 0..4 {
        assert_eq!(rig.read(i, &b, 10, 32).unwrap(), pattern(32 * 512, 7));
    }
    assert_eq!(rig.io(1, &b, BdevIo::Flush).0, Ok(()));
    // The file is rebuilt from RAM after it left and came back.
    r.remove_base("File0").unwrap();
    rig.write(1, &b, 50, pattern(8 * 512, 8)).unwrap();
    r.add_base(fb.clone(), &rig.handle(1)).unwrap();
    assert!(wait_rebuilt(&r).base_bdevs[1].is_operational);
    let mut on_file = vec![0u8; 2048 * 512];
    let bytes = std::fs::read(&path).unwrap();
    on_file.copy_from_slice(&bytes[2048 * 512..]);
    assert_eq!(on_file, on_base(&ram, 2048, 0, 2048));
    drop((r, b, fb));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_rate_limited_rebuild_paces_itself_and_takes_a_live_change() {
    let rig = Rig::start();
    let f = fakes(&["A", "B"], 4096);
    let (r, b) = volume("Raid0", dyns(&f), false);
    rig.write(0, &b, 0, pattern(4096 * 512, 3)).unwrap();
    r.remove_base("B").unwrap();
    // 2 MiB at 4 MiB/s: about half a second, in 64 KiB windows.
    r.set_options(Raid1Options {
        process_window_size_kb: 64,
        process_max_bandwidth_mb_sec: 4,
    })
    .unwrap();
    let t0 = Instant::now();
    let fresh = FakeBdev::new("C", 4096, BS);
    r.add_base(fresh.clone(), &rig.handle(0)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let p = r.status().process.expect("still running");
    assert!(p.percent > 5.0 && p.percent < 60.0, "{p:?}");
    // Between windows nothing polls: the reactors sleep most of the time.
    let mut asleep = vec![0; rig.count()];
    for _ in 0..100 {
        for (i, n) in asleep.iter_mut().enumerate() {
            *n += usize::from(rig.handle(i).is_sleeping());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(
        asleep.iter().all(|&n| n >= 80),
        "samples asleep per reactor: {asleep:?}"
    );
    // Writes are served while the rebuild pauses.
    let t = Instant::now();
    rig.write(1, &b, 4000, pattern(8 * 512, 4)).unwrap();
    assert!(t.elapsed() < Duration::from_millis(100));
    // Unlimited from now: done soon.
    r.set_options(Raid1Options::default()).unwrap();
    wait_rebuilt(&r);
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
    assert_eq!(on_base(fresh.ram(), 0, 0, 4096), on_base(f[0].ram(), 0, 0, 4096));
}

/// A remote replica: a RAM namespace exported over NVMe/TCP on loopback
/// and reached through the initiator. Losing its controller fails its I/O,
/// which takes it out of the volume; a new controller to the same
/// namespace, added back, is rebuilt over the network.
#[test]
fn a_remote_replica_through_the_initiator_is_mirrored_lost_and_rebuilt() {
    use lull_proto::target_queue::TargetQueueConfig;

    use crate::initiator::{NvmeBdev, NvmeController, NvmeOptions, NvmeTrid};
    use crate::nvmf::subsystem::Subsystem;
    use crate::nvmf::target::Target;

    const NQN: &str = "nqn.2024-01.test:replica";
    const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000000c";
    let rig = Rig::start();
    let handles = rig.reactors.as_ref().unwrap().handles().to_vec();
    let remote = Arc::new(RamBdev::new("Remote0", 4096 * 512, BS).unwrap());
    let target = Target::new(TargetQueueConfig::default());
    let s = Subsystem::new(NQN, "SNREPLICA", "lull replica").unwrap();
    s.set_allow_any_host(true);
    s.add_namespace(1, remote.clone() as Arc<dyn Bdev>).unwrap();
    target.add_subsystem(s).unwrap();
    let addr = target
        .listen(rig.reactors.as_ref().unwrap(), "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let attach = |name: &str| {
        let opts = NvmeOptions {
            nvme_ioq_poll_period_us: 0,
            ..NvmeOptions::default().no_reconnect()
        };
        let c = NvmeController::attach(
            name,
            NvmeTrid::new(addr, NQN, HOST),
            opts,
            &handles,
            handles.len() as u16,
        )
        .unwrap();
        let b = Arc::new(NvmeBdev::new(&format!("{name}n1"), c.clone(), 1).unwrap());
        (c, b)
    };
    let (ctrlr, nvme) = attach("Nvme0");
    let local = Arc::new(RamBdev::new("Local0", 4096 * 512, BS).unwrap());
    let (r, b) = volume(
        "Vol0",
        vec![local.clone() as Arc<dyn Bdev>, nvme.clone() as Arc<dyn Bdev>],
        true,
    );
    for i in 0..4 {
        rig.write(i, &b, i as u64 * 64, pattern(64 * 512, i as u8 + 1)).unwrap();
    }
    assert_eq!(r.status().num_base_bdevs_operational, 2, "{:?}", r.status());
    assert!(on_base(&remote, 2048, 0, 256) == on_base(&local, 2048, 0, 256));
    for i in 0..8 {
        assert_eq!(rig.read(i, &b, 64, 64).unwrap(), pattern(64 * 512, 2));
    }

    ctrlr.detach();
    rig.write(0, &b, 300, pattern(16 * 512, 9)).unwrap();
    let st = r.status();
    assert_eq!((st.state, st.num_base_bdevs_operational), (RaidState::Online, 1));
    assert!(st.base_bdevs[1].failed.is_some(), "{:?}", st.base_bdevs[1]);
    assert_ne!(
        on_base(&remote, 2048, 300, 16),
        pattern(16 * 512, 9),
        "missed while out"
    );
    drop(nvme);

    let (_ctrlr1, nvme1) = attach("Nvme1");
    r.add_base(nvme1, &rig.handle(1)).unwrap();
    let st = wait_rebuilt(&r);
    assert!(st.base_bdevs[1].is_operational, "{st:?}");
    assert_eq!(st.base_bdevs[1].name.as_deref(), Some("Nvme1n1"));
    assert!(on_base(&remote, 2048, 0, 2048) == on_base(&local, 2048, 0, 2048));
}

/// A rebuild whose target is removed, or fails, stops; the volume goes on
/// with the others, and writes that waited for its window are released.
#[test]
fn a_rebuild_stops_when_its_target_is_removed_or_fails() {
    let rig = Rig::start();
    let f = fakes(&["A", "B"], 4096);
    let (r, b) = volume("Raid0", dyns(&f), false);
    rig.write(0, &b, 0, pattern(4096 * 512, 6)).unwrap();
    r.remove_base("B").unwrap();
    // Slow enough to catch it in the middle.
    r.set_options(Raid1Options {
        process_window_size_kb: 64,
        process_max_bandwidth_mb_sec: 2,
    })
    .unwrap();
    let c = FakeBdev::new("C", 4096, BS);
    r.add_base(c.clone(), &rig.handle(0)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(r.status().process.is_some());
    r.remove_base("C").unwrap();
    let s = wait_rebuilt(&r);
    assert_eq!((s.num_base_bdevs_discovered, s.state), (1, RaidState::Online));
    rig.write(1, &b, 0, pattern(8 * 512, 7)).unwrap();
    assert_eq!(rig.read(1, &b, 0, 8).unwrap(), pattern(8 * 512, 7));

    // The target fails a write of the copy: it is taken out.
    let d = FakeBdev::new("D", 4096, BS);
    r.add_base(d.clone(), &rig.handle(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    d.set_fail(false, true);
    let s = wait_rebuilt(&r);
    assert_eq!(s.num_base_bdevs_discovered, 1);
    assert!(
        s.base_bdevs[1].failed.as_deref().unwrap().contains("injected failure"),
        "{s:?}"
    );
    for i in 0..4 {
        rig.write(i, &b, 100, pattern(8 * 512, 8)).unwrap();
    }
}

/// A source that fails a read of the copy is taken out and the window is
/// copied again from another base: the rebuild ends with the target
/// holding every block, from the base that was left.
#[test]
fn a_rebuild_whose_source_fails_a_read_copies_from_another_base() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 4096);
    let (r, b) = volume("Raid0", dyns(&f), false);
    for lba in (0..4096).step_by(256) {
        rig.write(0, &b, lba, pattern(256 * 512, (lba / 256) as u8)).unwrap();
    }
    r.remove_base("C").unwrap();
    r.set_options(Raid1Options {
        process_window_size_kb: 512,
        process_max_bandwidth_mb_sec: 0,
    })
    .unwrap();
    // A fails every read from now on; B is left to copy from.
    f[0].set_fail(true, false);
    let d = FakeBdev::new("D", 4096, BS);
    r.add_base(d.clone(), &rig.handle(0)).unwrap();
    let s = wait_rebuilt(&r);
    assert!(
        s.base_bdevs[0]
            .failed
            .as_deref()
            .unwrap_or_default()
            .contains("rebuild read failed"),
        "{s:?}"
    );
    assert!(s.base_bdevs[2].is_operational, "{s:?}");
    assert_eq!(s.base_bdevs[2].name.as_deref(), Some("D"));
    let expect = on_base(f[1].ram(), 0, 0, 4096);
    assert_eq!(on_base(d.ram(), 0, 0, 4096), expect, "every block copied from B");
    for lba in (0..4096).step_by(256) {
        assert_eq!(
            rig.read(1, &b, lba, 8).unwrap(),
            pattern(256 * 512, (lba / 256) as u8)[..8 * 512]
        );
    }
}

/// Reads and writes in flight on every reactor while bases fail one after
/// another: each operation is answered exactly once; successes while a
/// base is left, then the volume's error once none is.
#[test]
fn under_load_bases_failing_one_by_one_answer_every_operation_exactly_once() {
    let rig = Rig::start();
    let f = fakes(&["A", "B", "C"], 4096);
    for (i, x) in f.iter().enumerate() {
        x.set_delay(Duration::from_millis(i as u64 + 2));
    }
    let (r, b) = volume("Raid0", dyns(&f), false);
    const PER: usize = 3000;
    let answers: Arc<Vec<AtomicUsize>> = Arc::new((0..PER * rig.count()).map(|_| AtomicUsize::new(0)).collect());
    let errors = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    for w in 0..rig.count() {
        let (b, answers, errors, done_tx) = (b.clone(), answers.clone(), errors.clone(), done_tx.clone());
        rig.run(w, move |cx| {
            let next = Rc::new(Cell::new(0usize));
            fn issue(
                cx: &mut Context,
                w: usize,
                next: &Rc<Cell<usize>>,
                b: &Arc<dyn Bdev>,
                answers: &Arc<Vec<AtomicUsize>>,
                errors: &Arc<AtomicUsize>,
                done_tx: &mpsc::Sender<()>,
            ) {
                let k = next.get();
                if k >= PER {
                    return;
                }
                next.set(k + 1);
                let id = w * PER + k;
                let lba = (k as u64 * 37) % 2000;
                let io = if k.is_multiple_of(3) {
                    BdevIo::Read {
                        lba,
                        blocks: 8,
                        buf: Vec::new(),
                    }
                } else {
                    BdevIo::Write {
                        lba,
                        data: pattern(8 * 512, k as u8),
                    }
                };
                let (n, bb, a, e, d) = (
                    next.clone(),
                    b.clone(),
                    answers.clone(),
                    errors.clone(),
                    done_tx.clone(),
                );
                b.submit(
                    cx,
                    io,
                    BdevDone::from_fn(move |cx, r, _| {
                        if a[id].fetch_add(1, Ordering::SeqCst) == 0 && r.is_err() {
                            e.fetch_add(1, Ordering::SeqCst);
                        }
                        if id % PER == PER - 1 || n.get() >= PER {
                            let _ = d.send(());
                        }
                        // Off the completion's stack: an offline volume answers at once.
                        cx.timer_once(Duration::ZERO, move |cx| issue(cx, w, &n, &bb, &a, &e, &d));
                    }),
                );
            }
            for _ in 0..16 {
                issue(cx, w, &next, &b, &answers, &errors, &done_tx);
            }
        });
    }
    std::thread::sleep(Duration::from_millis(30));
    f[1].set_fail(true, true);
    std::thread::sleep(Duration::from_millis(30));
    f[2].set_fail(true, true);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(errors.load(Ordering::SeqCst), 0, "one base left: nothing failed");
    assert_eq!(r.status().num_base_bdevs_operational, 1);
    f[0].set_fail(true, true);
    // Wait until every operation is answered.
    let t0 = Instant::now();
    while answers.iter().any(|a| a.load(Ordering::SeqCst) == 0) {
        assert!(t0.elapsed() < WAIT, "an operation was never answered");
        let _ = done_rx.recv_timeout(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(20));
    for w in 0..rig.count() {
        rig.run(w, |_| ());
    }
    assert!(
        answers.iter().all(|a| a.load(Ordering::SeqCst) == 1),
        "answered exactly once"
    );
    assert!(
        errors.load(Ordering::SeqCst) > 0,
        "the last base's loss failed the rest"
    );
    assert!(answers.len() - errors.load(Ordering::SeqCst) > 0);
    assert_eq!(r.status().state, RaidState::Offline);
}
