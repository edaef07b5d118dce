//! The target's I/O path allocates nothing per command in steady state: a
//! counting global allocator counts the allocations made on the target
//! reactor's thread only (a thread-local flag) while a host reads and
//! writes a RAM namespace over loopback at queue depth 8, after a warm-up
//! that lets every pool and table reach its size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use lull_engine::bdev::{Bdev, FileBdev, RamBdev};
use lull_engine::nvmf::subsystem::Subsystem;
use lull_engine::nvmf::target::Target;
use lull_proto::nvme::cmd::Rw;
use lull_proto::nvme::{Sqe, io_opc};
use lull_proto::pdu::Digests;
use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::{CoreList, Mode, ReactorConfig, ReactorHandle, Reactors};
use lull_transport::host_sync::SyncQueue;

/// Counts allocations (and reallocations) of the threads that ask for it.
struct Counting;

thread_local! {
    /// Whether this thread's allocations are counted (const-initialised and
    /// without a destructor, so reading it never allocates).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Allocations counted, and their bytes.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn count(layout: Layout) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counting touches only atomics and a const thread-local, never the heap.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation is an allocation as far as the hot path goes.
        count(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NQN: &str = "nqn.2024-01.test:alloc";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000a1";
/// 4 MiB of 512-byte blocks.
const BLOCKS: u64 = 8192;
/// Blocks per command: 4 KiB.
const NLB: u64 = 8;
const DEPTH: usize = 8;
const WARM_UP: usize = 2000;
const MEASURED: usize = 2000;

fn rw(opc: u8, cid: u16, slba: u64) -> Sqe {
    let mut sqe = Rw::new(1, slba, NLB as u32).encode(opc);
    sqe.set_cid(cid);
    sqe
}

/// The 4 KiB that write number `n` puts at its LBA (differs per write and
/// per byte, so a read of stale or misplaced data shows).
fn block_data(n: usize) -> Vec<u8> {
    (0..(NLB * 512) as usize)
        .map(|i| (i as u8).wrapping_mul(13) ^ (n as u8).wrapping_mul(7) ^ (n >> 8) as u8)
        .collect()
}

/// Runs `f` on the reactor and waits for it.
fn on_reactor(r: &ReactorHandle, f: impl FnOnce() -> u64 + Send + 'static) -> u64 {
    let (tx, rx) = mpsc::sync_channel(1);
    assert!(r.try_send(move |_| tx.send(f()).unwrap()).is_ok());
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// `n` commands at queue depth [`DEPTH`], alternating 4 KiB writes and
/// reads over [`BLOCKS`]: each read reads back a block written earlier and
/// checks it against the model the host keeps.
fn run(io: &mut SyncQueue, model: &mut [Option<usize>], first: usize, n: usize) {
    let slots = (BLOCKS / NLB) as usize;
    let mut writes_in_flight = std::collections::HashMap::new();
    let mut reads_in_flight = std::collections::HashMap::new();
    let mut next = first;
    let mut done = 0;
    let mut outstanding = 0;
    while done < n {
        while outstanding < DEPTH && next < first + n {
            let cid = (next % 4096) as u16;
            // Each command works on its own block set (stride 37 over the
            // slots), so nothing in flight overlaps.
            let slot = (next * 37) % slots;
            let lba = slot as u64 * NLB;
            if next.is_multiple_of(2) || model[slot].is_none() {
                io.submit(rw(io_opc::WRITE, cid, lba), &block_data(next), 0).unwrap();
                writes_in_flight.insert(cid, (slot, next));
            } else {
                io.submit(rw(io_opc::READ, cid, lba), &[], (NLB * 512) as u32).unwrap();
                reads_in_flight.insert(cid, model[slot]);
            }
            next += 1;
            outstanding += 1;
        }
        for c in io.wait().unwrap() {
            assert!(c.cqe.status.is_success(), "command {}: {}", c.cqe.cid, c.cqe.status);
            if let Some((slot, n)) = writes_in_flight.remove(&c.cqe.cid) {
                model[slot] = Some(n);
            } else if let Some(expected) = reads_in_flight.remove(&c.cqe.cid) {
                let expected = expected.map(block_data).unwrap();
                assert!(c.data == expected, "read {} returned other data", c.cqe.cid);
            } else {
                panic!("completion of unknown command {}", c.cqe.cid);
            }
            outstanding -= 1;
            done += 1;
        }
    }
}

/// What backs the namespace.
#[derive(Clone, Copy, Debug)]
enum Backing {
    /// RAM: completes inside `submit`.
    Ram,
    /// A file through io_uring: completes from the ring's poller.
    File,
}

fn bdev(backing: Backing, mode: Mode) -> Arc<dyn Bdev> {
    match backing {
        Backing::Ram => Arc::new(RamBdev::new("Ram0", BLOCKS * 512, 512).unwrap()),
        Backing::File => {
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("io-alloc-{mode}.img"));
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(BLOCKS * 512).unwrap();
            drop(f);
            Arc::new(FileBdev::open("File0", &path, 512).unwrap())
        }
    }
}

fn allocations_per_io(backing: Backing, mode: Mode) -> (u64, u64) {
    let usable = CoreList::usable().unwrap();
    let cores = CoreList::try_from(vec![usable.cores()[0]]).unwrap();
    let reactors = Reactors::start(ReactorConfig::new(cores).mode(mode)).unwrap();
    let target = Target::new(TargetQueueConfig::default());
    let s = Subsystem::new(NQN, "SNALLOC", "lull alloc").unwrap();
    s.add_host(HOST).unwrap();
    s.add_namespace(1, bdev(backing, mode)).unwrap();
    target.add_subsystem(s).unwrap();
    let addr = target.listen(&reactors, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (_admin, cntlid) = SyncQueue::admin(addr, NQN, HOST, Digests::default(), 0).unwrap();
    let mut io = SyncQueue::io(addr, NQN, HOST, cntlid, Digests::default(), 4096).unwrap();
    let mut model = vec![None; (BLOCKS / NLB) as usize];
    run(&mut io, &mut model, 0, WARM_UP);

    let reactor = &reactors.handles()[0];
    on_reactor(reactor, || {
        COUNTED.with(|c| c.set(true));
        0
    });
    run(&mut io, &mut model, WARM_UP, MEASURED);
    let (allocations, bytes) = {
        let a = on_reactor(reactor, || ALLOCATIONS.load(Ordering::Relaxed));
        (a, BYTES.load(Ordering::Relaxed))
    };
    // The counter sees an allocation made on that thread (so a 0 above is
    // not a counter that counts nothing).
    let control = on_reactor(reactor, || {
        drop(std::hint::black_box(Vec::<u8>::with_capacity(100)));
        COUNTED.with(|c| c.set(false));
        ALLOCATIONS.load(Ordering::Relaxed)
    });
    assert_eq!(
        control,
        allocations + 1,
        "{mode}: the counter counts the reactor's allocations"
    );
    ALLOCATIONS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    drop(io);
    reactors.shutdown().unwrap();
    (allocations, bytes)
}

fn assert_none(backing: Backing) {
    for mode in [Mode::Interrupt, Mode::Poll] {
        let (allocations, bytes) = allocations_per_io(backing, mode);
        eprintln!(
            "{backing:?}, {mode}: {allocations} allocations ({bytes} bytes) on the target reactor for {MEASURED} I/Os"
        );
        assert_eq!(
            allocations, 0,
            "{backing:?}, {mode}: {allocations} allocations ({bytes} bytes) on the target reactor for {MEASURED} commands"
        );
    }
}

#[test]
fn reads_and_writes_allocate_nothing_on_the_target_reactor_in_steady_state() {
    assert_none(Backing::Ram);
}

#[test]
fn file_bdev_reads_and_writes_allocate_nothing_on_the_target_reactor_in_steady_state() {
    assert_none(Backing::File);
}
