//! Once warm, a target queue answers reads and in-capsule writes without a
//! heap allocation per command, when its glue moves the data buffers round
//! as the connection does (`lull-transport`'s `conn.rs`): the free list lent to the queue while
//! it parses, requests taken into a reused list, each read answered with a
//! buffer from the free list, each write's buffer and each response's spent
//! buffer given back to it. Counted with a global allocator that counts this
//! thread's allocations.

use std::sync::{Arc, Mutex};

use lull_proto::host_queue::HostQueue;
use lull_proto::nvme::{Cqe, Sqe, io_opc};
use lull_proto::pdu::Digests;
use lull_proto::read_source::{ReadSource, SourceRange, SourceRangeError};
use lull_proto::target_queue::{QueueParams, Request, Response, SEND_SLICES, TargetQueue, TargetQueueConfig};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

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

/// Memory lent under a mutex without allocating (as a RAM bdev lends its
/// stripes), for reads answered with a source.
struct Lender(Mutex<Vec<u8>>);

impl ReadSource for Lender {
    fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        let m = self.0.lock().unwrap();
        dst.copy_from_slice(&m[at as usize..at as usize + dst.len()]);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }

    fn lends(&self) -> bool {
        true
    }

    fn lend(&self, ranges: &[(u64, usize)], f: &mut dyn FnMut(&[&[u8]])) -> Result<(), SourceRangeError> {
        let m = self.0.lock().unwrap();
        let mut lent: [&[u8]; SEND_SLICES] = [&[]; SEND_SLICES];
        for (l, &(at, len)) in lent.iter_mut().zip(ranges) {
            *l = &m[at as usize..at as usize + len];
        }
        f(&lent[..ranges.len()]);
        Ok(())
    }
}

/// One batch through the queue, with the glue's buffer round; reads are
/// answered from `source` when given, else with a buffer of the free list.
fn run_batch(
    t: &mut TargetQueue,
    batch: &[u8],
    free: &mut Vec<Vec<u8>>,
    requests: &mut Vec<Request>,
    source: Option<&Arc<dyn ReadSource>>,
) {
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
        if let (Some(source), true) = (source, req.c2h_len > 0) {
            let range = SourceRange::new(source.clone(), u64::from(cqe.cid) * 8192, req.c2h_len as usize);
            assert!(t.respond(Response::with_source(cqe, range)));
        } else if req.c2h_len > 0 {
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
        n += t
            .send_with(|slices| Ok(slices.iter().map(|s| s.len()).sum()))
            .expect("nothing lent, nothing to fail");
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
        run_batch(&mut t, &batch, &mut free, &mut requests, None);
    }
    let before = allocations();
    for _ in 0..100 {
        run_batch(&mut t, &batch, &mut free, &mut requests, None);
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations in 100 warm batches of 16 commands"
    );
    assert_eq!(t.outstanding(), 0);
}

#[test]
fn a_warm_queue_sends_reads_lent_by_their_source_without_allocating() {
    let (mut t, batch) = queue_and_batch();
    let source: Arc<dyn ReadSource> = Arc::new(Lender(Mutex::new(vec![0x3C; 1 << 20])));
    let mut free: Vec<Vec<u8>> = Vec::with_capacity(64);
    let mut requests: Vec<Request> = Vec::with_capacity(64);
    for _ in 0..8 {
        run_batch(&mut t, &batch, &mut free, &mut requests, Some(&source));
    }
    let before = allocations();
    for _ in 0..100 {
        run_batch(&mut t, &batch, &mut free, &mut requests, Some(&source));
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations in 100 warm batches of 8 lent reads and 8 writes"
    );
    assert_eq!(t.outstanding(), 0);
}
