//! Read data sent from a lending source's memory ([`TargetQueue::send_with`],
//! [`crate::read_source::ReadSource::lend`]): the same stream as copied data,
//! each payload as it was at the one send that took its first byte, and a
//! copy wherever the bytes must be fixed sooner (a data digest, lending off).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::read_source::ReadSource;

/// Memory a test can overwrite between sends, lent under its mutex.
struct Shared {
    bytes: Mutex<Vec<u8>>,
    lends: AtomicUsize,
}

impl Shared {
    /// `size` bytes, byte `i` being `(i * 7 + seed) % 256`.
    fn new(size: usize, seed: u8) -> Arc<Shared> {
        Arc::new(Shared {
            bytes: Mutex::new((0..size).map(|i| (i * 7 + usize::from(seed)) as u8).collect()),
            lends: AtomicUsize::new(0),
        })
    }

    fn fill(&self, b: u8) {
        self.bytes.lock().unwrap().fill(b);
    }

    fn range(self: &Arc<Self>, at: u64, len: usize) -> SourceRange {
        let source: Arc<dyn ReadSource> = self.clone();
        SourceRange::new(source, at, len)
    }

    fn copy(&self, at: usize, len: usize) -> Vec<u8> {
        self.bytes.lock().unwrap()[at..at + len].to_vec()
    }
}

impl ReadSource for Shared {
    fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        let b = self.bytes.lock().unwrap();
        let at = at as usize;
        match b.get(at..at + dst.len()) {
            Some(s) => {
                dst.copy_from_slice(s);
                Ok(())
            }
            None => Err(SourceRangeError {
                at: at as u64,
                len: dst.len(),
                size: b.len() as u64,
            }),
        }
    }

    fn size(&self) -> u64 {
        self.bytes.lock().unwrap().len() as u64
    }

    fn lends(&self) -> bool {
        true
    }

    fn lend(&self, ranges: &[(u64, usize)], f: &mut dyn FnMut(&[&[u8]])) -> Result<(), SourceRangeError> {
        self.lends.fetch_add(1, Ordering::Relaxed);
        let b = self.bytes.lock().unwrap();
        let mut lent = Vec::new();
        for &(at, len) in ranges {
            let s = b.get(at as usize..at as usize + len).ok_or(SourceRangeError {
                at,
                len,
                size: b.len() as u64,
            })?;
            lent.push(s);
        }
        f(&lent);
        Ok(())
    }
}

/// A live I/O queue (no digests unless `dgst`, C2HData of at most `chunk`
/// bytes, CapsuleResps after reads) with reads of `(cid, len)` outstanding.
fn queue_with_reads(dgst: u8, chunk: u32, reads: &[(u16, u32)]) -> TargetQueue {
    let mut q = TargetQueue::new(TargetQueueConfig {
        c2h_chunk: chunk,
        c2h_success: false,
        ..TargetQueueConfig::default()
    });
    q.feed(&icreq(dgst));
    q.process().unwrap();
    let resp = q.pending_send().to_vec();
    q.sent(resp.len());
    connect(&mut q, 1, 128, false);
    let d = Digests::from_dgst(dgst);
    for &(cid, len) in reads {
        q.feed(&capsule(&read_sqe(cid, len), &[], d));
    }
    q.process().unwrap();
    assert_eq!(q.take_requests().len(), reads.len());
    q
}

fn ok(cid: u16) -> Cqe {
    Cqe { cid, ..Cqe::default() }
}

/// Sends everything with writes of at most `max` bytes each, calling
/// `between` after each; returns the stream and the number of writes.
fn drain(q: &mut TargetQueue, max: usize, mut between: impl FnMut(usize)) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut writes = 0;
    while q.wants_send() {
        let n = q
            .send_with(|slices| {
                let mut took = 0;
                for s in slices {
                    let k = s.len().min(max - took);
                    out.extend_from_slice(&s[..k]);
                    took += k;
                    if took == max {
                        break;
                    }
                }
                Ok(took)
            })
            .unwrap();
        assert!(n > 0, "a write took nothing");
        writes += 1;
        between(writes);
    }
    (out, writes)
}

/// The payload of each C2HData PDU in `stream`, in order.
fn payloads(stream: &[u8]) -> Vec<Vec<u8>> {
    pdus(stream)
        .into_iter()
        .filter(|p| p[0] == PduType::C2HData as u8)
        .map(|p| {
            let pdo = usize::from(CommonHeader::parse(&p).unwrap().pdo);
            p[pdo..pdo + DataHeader::parse(&p).datal as usize].to_vec()
        })
        .collect()
}

#[test]
fn lent_reads_go_out_as_the_same_stream_as_copied_ones_in_any_write_sizes() {
    let src = Shared::new(1 << 20, 3);
    // 20,000 bytes in 8 KiB chunks: three PDUs; 4096: one; 512, below LEND_MIN: copied.
    let reads = [(1u16, 20_000u32), (2, 4096), (3, 512)];
    let at = [12_288u64, 65_536 - 2048, 1000];
    let respond = |q: &mut TargetQueue| {
        for (&(cid, len), &at) in reads.iter().zip(&at) {
            assert!(q.respond(Response::with_source(ok(cid), src.range(at, len as usize))));
        }
    };
    let mut copied = queue_with_reads(0, 8192, &reads);
    copied.lend_sources(false);
    respond(&mut copied);
    let lends = src.lends.load(Ordering::Relaxed);
    let want = copied.pending_send().to_vec();
    assert_eq!(src.lends.load(Ordering::Relaxed), lends, "copied at respond");
    assert_eq!(pdus(&want).len(), 3 + 1 + 1 + 3, "five C2HData, three CapsuleResps");
    for max in [1, 7, 24, 4096, 8216, 1 << 20] {
        let mut lent = queue_with_reads(0, 8192, &reads);
        respond(&mut lent);
        assert_eq!(lent.pending_send().as_ref(), &want[..], "what tools read of it");
        let before = src.lends.load(Ordering::Relaxed);
        let (got, writes) = drain(&mut lent, max, |_| {});
        assert_eq!(got, want, "writes of at most {max} bytes");
        assert!(
            src.lends.load(Ordering::Relaxed) - before >= 1,
            "the data came from the source's lend"
        );
        if max >= want.len() {
            assert_eq!(writes, 1, "one source: everything in one write");
        }
        assert_eq!(lent.outstanding(), 0);
    }
}

#[test]
fn a_lent_payload_goes_out_as_it_was_when_its_first_byte_did() {
    // Two 8 KiB reads, one PDU each. The first write takes A's header and
    // 1000 bytes of its data; then a writer changes every byte. A's rest must
    // be what it was (copied out before the source stopped lending); B,
    // not yet started, goes out as it is now.
    let src = Shared::new(1 << 16, 9);
    let mut q = queue_with_reads(0, 131_072, &[(1, 8192), (2, 8192)]);
    assert!(q.respond(Response::with_source(ok(1), src.range(0, 8192))));
    assert!(q.respond(Response::with_source(ok(2), src.range(8192, 8192))));
    let a_before = src.copy(0, 8192);
    let mut out = Vec::new();
    let first = q
        .send_with(|slices| {
            let header = slices[0];
            out.extend_from_slice(header);
            out.extend_from_slice(&slices[1][..1000]);
            Ok(header.len() + 1000)
        })
        .unwrap();
    assert_eq!(first, 24 + 1000);
    src.fill(0xEE);
    let (rest, _) = drain(&mut q, 3000, |_| {});
    out.extend_from_slice(&rest);
    let p = payloads(&out);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0], a_before, "A as it was at its first byte");
    assert_eq!(p[1], vec![0xEE; 8192], "B as it is when sent");
    // B went out over three writes of at most 3000 bytes and the source
    // changed only between sends: each write's bytes were lent at once.
    assert_eq!(q.outstanding(), 0);
}

#[test]
fn with_a_data_digest_or_lending_off_the_data_is_fixed_when_answered() {
    for (dgst, lend) in [(2u8, true), (0, false), (3, true)] {
        let src = Shared::new(1 << 16, 1);
        let mut q = queue_with_reads(dgst, 131_072, &[(5, 8192)]);
        assert_eq!(
            q.sends_lent_reads(),
            dgst & 2 == 0,
            "lending on by default, but not with a data digest"
        );
        q.lend_sources(lend);
        assert_eq!(q.sends_lent_reads(), lend && dgst & 2 == 0, "dgst {dgst} lend {lend}");
        assert!(q.respond(Response::with_source(ok(5), src.range(4096, 8192))));
        let then = src.copy(4096, 8192);
        src.fill(0x11);
        let lends = src.lends.load(Ordering::Relaxed);
        let (out, _) = drain(&mut q, 5000, |_| {});
        assert_eq!(src.lends.load(Ordering::Relaxed), lends, "nothing lent");
        let p = pdus(&out);
        let pdo = usize::from(CommonHeader::parse(&p[0]).unwrap().pdo);
        assert_eq!(&p[0][pdo..pdo + 8192], &then[..], "dgst {dgst} lend {lend}");
        if dgst & 2 != 0 {
            let ddgst = &p[0][pdo + 8192..pdo + 8196];
            assert_eq!(ddgst, &crate::pdu::crc32c(&then).to_le_bytes());
        }
    }
}

#[test]
fn a_lent_range_outside_its_source_fails_with_internal_error_and_sends_none_of_it() {
    let src = Shared::new(8192, 0);
    let mut q = queue_with_reads(0, 131_072, &[(7, 8192)]);
    assert!(q.respond(Response::with_source(ok(7), src.range(4096, 8192))));
    let (out, _) = drain(&mut q, 1 << 20, |_| {});
    let p = pdus(&out);
    assert_eq!(p.len(), 1, "only the completion");
    let cqe = Cqe::parse(&p[0][8..24]).unwrap();
    assert_eq!((cqe.cid, cqe.status), (7, status::INTERNAL_ERROR));
    assert_eq!(src.lends.load(Ordering::Relaxed), 0);
}

#[test]
fn reads_of_two_sources_are_sent_a_lend_at_a_time_in_order() {
    let x = Shared::new(1 << 16, 1);
    let y = Shared::new(1 << 16, 2);
    let mut q = queue_with_reads(0, 131_072, &[(1, 4096), (2, 4096), (3, 4096), (4, 4096)]);
    assert!(q.respond(Response::with_source(ok(1), x.range(0, 4096))));
    assert!(q.respond(Response::with_source(ok(2), x.range(8192, 4096))));
    assert!(q.respond(Response::with_source(ok(3), y.range(4096, 4096))));
    assert!(q.respond(Response::with_source(ok(4), x.range(4096, 4096))));
    // What each write was offered: X's two reads, then up to X again.
    let mut offered = Vec::new();
    let mut out = Vec::new();
    while q.wants_send() {
        q.send_with(|slices| {
            let n: usize = slices.iter().map(|s| s.len()).sum();
            offered.push(n);
            slices.iter().for_each(|s| out.extend_from_slice(s));
            Ok(n)
        })
        .unwrap();
    }
    let pdu = 24 + 4096 + 24; // C2HData (no digest) and its CapsuleResp
    assert_eq!(
        offered,
        vec![2 * pdu + 24, pdu, pdu - 24],
        "a write stops before another source's data"
    );
    assert_eq!(
        (x.lends.load(Ordering::Relaxed), y.lends.load(Ordering::Relaxed)),
        (2, 1)
    );
    let want = [
        x.copy(0, 4096),
        x.copy(8192, 4096),
        y.copy(4096, 4096),
        x.copy(4096, 4096),
    ];
    assert_eq!(payloads(&out), want);
}

#[test]
fn a_failed_write_marks_nothing_sent_and_keeps_every_lent_payload() {
    let src = Shared::new(1 << 16, 4);
    let mut q = queue_with_reads(0, 131_072, &[(1, 4096)]);
    assert!(q.respond(Response::with_source(ok(1), src.range(0, 4096))));
    let e = q.send_with(|_| Err(std::io::ErrorKind::WouldBlock.into())).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    src.fill(0x5A);
    let (out, _) = drain(&mut q, 1 << 20, |_| {});
    assert_eq!(payloads(&out), vec![vec![0x5A; 4096]], "read when it was sent");
}

/// A source that lends one byte short of every range.
struct Short;

impl ReadSource for Short {
    fn copy_to(&self, _at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        dst.fill(1);
        Ok(())
    }

    fn size(&self) -> u64 {
        1 << 20
    }

    fn lends(&self) -> bool {
        true
    }

    fn lend(&self, ranges: &[(u64, usize)], f: &mut dyn FnMut(&[&[u8]])) -> Result<(), SourceRangeError> {
        let bytes = vec![1u8; 1 << 20];
        let lent: Vec<&[u8]> = ranges.iter().map(|&(_, len)| &bytes[..len - 1]).collect();
        f(&lent);
        Ok(())
    }
}

#[test]
fn a_source_that_lends_the_wrong_length_ends_the_send_with_nothing_sent() {
    let mut q = queue_with_reads(0, 131_072, &[(1, 4096)]);
    let source: Arc<dyn ReadSource> = Arc::new(Short);
    assert!(q.respond(Response::with_source(ok(1), SourceRange::new(source, 0, 4096))));
    let mut called = false;
    let e = q
        .send_with(|_| {
            called = true;
            Ok(0)
        })
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(!called, "no bytes offered to the socket");
    assert!(q.wants_send(), "nothing marked sent");
}
