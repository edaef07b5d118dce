//! Unit-test harness: one reactor to submit bdev operations on, and a sink
//! that records every completion it gets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use lull_reactor::{Context, CoreList, Mode, ReactorConfig, Reactors};

use super::{Bdev, BdevDone, BdevError, BdevIo, IoCompletion};

/// How long a test waits for a completion.
const WAIT: Duration = Duration::from_secs(10);

/// The tag the harness puts on every submission (checked on the way back).
const TAG: u32 = 0xB0D;

/// What one submission led to.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The result the bdev reported.
    pub result: Result<(), BdevError>,
    /// The buffer it handed back.
    pub buf: Vec<u8>,
    /// Whether the completion came before `submit` returned.
    pub inline: bool,
    /// Completions the sink got (after a pause for any late second one).
    pub calls: usize,
}

/// A reactor (interrupt mode, so an idle test costs no CPU).
pub(crate) struct OnReactor {
    reactors: Option<Reactors>,
}

impl OnReactor {
    pub(crate) fn start() -> Self {
        let usable = CoreList::usable().unwrap();
        let cores = CoreList::try_from(vec![usable.cores()[0]]).unwrap();
        let reactors = Reactors::start(ReactorConfig::new(cores).mode(Mode::Interrupt)).unwrap();
        OnReactor {
            reactors: Some(reactors),
        }
    }

    /// The reactor set (one reactor).
    pub(crate) fn reactors(&self) -> &Reactors {
        self.reactors.as_ref().unwrap()
    }

    /// Runs `f` on the reactor and returns what it returned.
    pub(crate) fn run<R: Send + 'static>(&self, f: impl FnOnce(&mut Context) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let handle = &self.reactors.as_ref().unwrap().handles()[0];
        assert!(handle.try_send(move |cx| tx.send(f(cx)).unwrap()).is_ok());
        rx.recv_timeout(WAIT).expect("the reactor ran the closure")
    }

    /// Submits `io` to `bdev` on the reactor and waits for its completion.
    pub(crate) fn submit(&self, bdev: &Arc<dyn Bdev>, io: BdevIo) -> Outcome {
        let (tx, rx) = mpsc::channel();
        let calls = Arc::new(AtomicUsize::new(0));
        let (bdev, counted) = (bdev.clone(), calls.clone());
        let inline = self.run(move |cx| {
            let sink = std::rc::Rc::new(Recorder {
                calls: counted.clone(),
                tx,
            });
            bdev.submit(cx, io, BdevDone::new(sink, TAG));
            counted.load(Ordering::SeqCst) > 0
        });
        let (result, buf) = rx.recv_timeout(WAIT).expect("the bdev completed the operation");
        // A second completion, if there were one, would come soon after.
        std::thread::sleep(Duration::from_millis(30));
        self.run(|_| ());
        Outcome {
            result,
            buf,
            inline,
            calls: calls.load(Ordering::SeqCst),
        }
    }
}

impl Drop for OnReactor {
    fn drop(&mut self) {
        if let Some(r) = self.reactors.take() {
            let _ = r.shutdown();
        }
    }
}

struct Recorder {
    calls: Arc<AtomicUsize>,
    tx: mpsc::Sender<(Result<(), BdevError>, Vec<u8>)>,
}

impl IoCompletion for Recorder {
    fn complete(&self, _cx: &mut Context, tag: u32, result: Result<(), BdevError>, buf: Vec<u8>) {
        assert_eq!(tag, TAG, "the tag comes back unchanged");
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.tx.send((result, buf));
    }
}

/// `len` bytes of a pattern that differs per byte position and per `seed`
/// (so a block read from the wrong place shows).
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A Read of `blocks` blocks with a buffer of `cap` bytes of capacity,
/// holding stale bytes the bdev must drop.
pub(crate) fn read(lba: u64, blocks: u64, cap: usize) -> BdevIo {
    let mut buf = Vec::with_capacity(cap);
    buf.extend_from_slice(b"stale");
    BdevIo::Read { lba, blocks, buf }
}

/// A RAM bdev that fails on command and can complete late, for testing what
/// sits on top of bdevs (a raid1 volume): counts the reads and writes it
/// gets; fails reads or writes (with [`BdevError::Io`], data untouched)
/// while told to; completes after a delay (from a reactor timer) when one is
/// set, else before `submit` returns. Whether to fail is decided when the
/// operation completes, so a failure can be set while one is in flight.
pub(crate) struct FakeBdev {
    ram: Arc<super::RamBdev>,
    flags: Arc<FakeFlags>,
}

/// What a [`FakeBdev`] is told and what it counted.
#[derive(Default)]
struct FakeFlags {
    fail_reads: std::sync::atomic::AtomicBool,
    fail_writes: std::sync::atomic::AtomicBool,
    delay_us: std::sync::atomic::AtomicU64,
    write_delay_us: std::sync::atomic::AtomicU64,
    reads: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

impl FakeBdev {
    pub(crate) fn new(name: &str, blocks: u64, block_size: u32) -> Arc<Self> {
        Arc::new(FakeBdev {
            ram: Arc::new(super::RamBdev::new(name, blocks * u64::from(block_size), block_size).unwrap()),
            flags: Arc::default(),
        })
    }

    /// The memory behind it, to check or preload off the reactors.
    pub(crate) fn ram(&self) -> &super::RamBdev {
        &self.ram
    }

    /// Completes every later operation `delay` after it is submitted.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.flags.delay_us.store(delay.as_micros() as u64, Ordering::SeqCst);
        self.flags
            .write_delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Completes every later write (and other non-read) `delay` after it is
    /// submitted, reads as before.
    pub(crate) fn set_write_delay(&self, delay: Duration) {
        self.flags
            .write_delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Fails reads and/or writes (checked as each operation completes).
    pub(crate) fn set_fail(&self, reads: bool, writes: bool) {
        self.flags.fail_reads.store(reads, Ordering::SeqCst);
        self.flags.fail_writes.store(writes, Ordering::SeqCst);
    }

    /// Reads counted so far.
    pub(crate) fn reads(&self) -> u64 {
        self.flags.reads.load(Ordering::SeqCst)
    }

    /// Writes (and other non-reads) counted so far.
    pub(crate) fn writes(&self) -> u64 {
        self.flags.writes.load(Ordering::SeqCst)
    }
}

fn fake_finish(ram: &super::RamBdev, flags: &FakeFlags, cx: &mut Context, io: BdevIo, done: BdevDone) {
    let fail = match io {
        BdevIo::Read { .. } => &flags.fail_reads,
        _ => &flags.fail_writes,
    };
    if fail.load(Ordering::SeqCst) {
        let e = BdevError::Io(format!("{}: injected failure", ram.info().name));
        done.complete(cx, Err(e), io.into_buf());
    } else {
        ram.submit(cx, io, done);
    }
}

impl Bdev for FakeBdev {
    fn info(&self) -> &super::BdevInfo {
        self.ram.info()
    }

    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        let (counter, delay) = match io {
            BdevIo::Read { .. } => (&self.flags.reads, &self.flags.delay_us),
            _ => (&self.flags.writes, &self.flags.write_delay_us),
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let delay = Duration::from_micros(delay.load(Ordering::SeqCst));
        if delay.is_zero() {
            return fake_finish(&self.ram, &self.flags, cx, io, done);
        }
        let (ram, flags) = (self.ram.clone(), self.flags.clone());
        cx.timer_once(delay, move |cx| fake_finish(&ram, &flags, cx, io, done));
    }
}
