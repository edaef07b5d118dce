//! Once warm, a target queue answers reads and in-capsule writes without a
//! heap allocation per command, when its glue moves the data buffers round
//! as the connection does (`lull-transport`'s `conn.rs`): the free list lent to the queue while
//! it parses, requests taken into a reused list, each read answered with a
//! buffer from the free list, each write's buffer and each response's spent
//! buffer given back to it. Counted with a global allocator that counts this
//! thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use lull_proto::host_queue::HostQueue;
use lull_proto::nvme::{Cqe, Sqe, io_opc};
use lull_proto::pdu::Digests;
use lull_proto::target_queue::{QueueParams, Request, Response, TargetQueue, TargetQueueConfig};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations and reallocations made by the
/// calling thread (other test threads do not disturb the count).
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; the count is a thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's `layout` is forwarded as `alloc` received it.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: `ptr` was allocated by `System` (through this allocator)
        // with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const READS: u16 = 8;
const WRITES: u16 = 8;
const LEN: usize = 4096;

/// A live target queue with QID 1, and the host's bytes for one batch: 8
/// reads and 8 in-capsule writes of 4 KiB (CIDs reused batch after batch).
fn queue_and_batch() -> (TargetQueue, Vec<u8>) {
    let mut t = TargetQueue::new(TargetQueueConfig::default());
    let mut h = HostQueue::new(Digests::default(), LEN as u32);
    let icreq = h.pending_send().to_vec();
    h.sent(icreq.len());
    t.feed(&icreq);
    t.process().unwrap();
    h.feed(&t.pending_send());
    let n = t.pending_send().len();
    t.sent(n);
    h.process().unwrap();
    assert!(h.is_live() && t.is_live());
    t.respond(Response::ok(0xFFFF).with_connected(QueueParams {
        qid: 1,
        sq_entries: 128,
        sq_flow_control_disabled: false,
    }));
    for cid in 0..READS + WRITES {
        let mut sqe = Sqe([0; 64]);
        sqe.set_cid(cid);
        sqe.set_cdw(12, (LEN / 512 - 1) as u32);
        if cid < READS {
            sqe.0[0] = io_opc::READ;
            h.submit(sqe, &[], LEN as u32).unwrap();
        } else {
            sqe.0[0] = io_opc::WRITE;
            h.submit(sqe, &[0x5A; LEN], 0).unwrap();
        }
    }
    (t, h.pending_send().to_vec())
}

/// One batch through the queue, with the glue's buffer round.
fn run_batch(t: &mut TargetQueue, batch: &[u8], free: &mut Vec<Vec<u8>>, requests: &mut Vec<Request>) {
    t.feed(batch);
    t.swap_spare_buffers(free);
    t.process().unwrap();
    t.swap_spare_buffers(free);
    t.take_requests_into(requests);
    assert_eq!(requests.len(), usize::from(READS + WRITES));
    for req in requests.drain(..) {
        let cqe = Cqe {
            cid: req.sqe.cid(),
            ..Cqe::default()
        };
        if req.c2h_len > 0 {
            let mut data = free.pop().unwrap_or_default();
            data.clear();
            data.resize(req.c2h_len as usize, 0xA5);
            assert!(t.respond(Response::with_data(cqe, data)));
        } else {
            assert_eq!(req.data.len(), LEN);
            free.push(req.data);
            assert!(t.respond(cqe.into()));
        }
    }
    // Sent as the connection sends: vectored, from the encoded PDUs and the
    // reads' own buffers, which come back once sent.
    let mut n = 0;
    while t.wants_send() {
        let mut slices: [&[u8]; 64] = [&[]; 64];
        let k = t.pending_send_slices(&mut slices);
        let len: usize = slices[..k].iter().map(|s| s.len()).sum();
        t.sent(len);
        n += len;
    }
    assert!(n > usize::from(READS) * LEN, "the reads' data went out");
    free.extend(t.take_spent_buffers());
}

#[test]
fn a_warm_queue_answers_reads_and_writes_without_allocating() {
    let (mut t, batch) = queue_and_batch();
    let mut free: Vec<Vec<u8>> = Vec::with_capacity(64);
    let mut requests: Vec<Request> = Vec::with_capacity(64);
    for _ in 0..8 {
        run_batch(&mut t, &batch, &mut free, &mut requests);
    }
    let before = allocations();
    for _ in 0..100 {
        run_batch(&mut t, &batch, &mut free, &mut requests);
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations in 100 warm batches of 16 commands"
    );
    assert_eq!(t.outstanding(), 0);
}
