//! Byte buffers shared by the target and host queue state machines: what
//! has been received and not parsed, and what is waiting to be sent.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::read_source::{ReadSource, SourceRange};

/// Received bytes not yet parsed: `buf[pos..end]`. The storage past `end`
/// stays allocated and initialised between reads, so handing out room for
/// the next read costs no allocation and no zeroing (a read of 128 KiB of
/// room per `recv` would otherwise memset 128 KiB per call).
#[derive(Default)]
pub(crate) struct RecvBuf {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl RecvBuf {
    /// Room for `want` more bytes after the unparsed ones, moving them to the
    /// front first when the parsed prefix is empty or large.
    pub(crate) fn space(&mut self, want: usize) -> &mut [u8] {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() < self.end + want {
            self.buf.resize(self.end + want, 0);
        }
        &mut self.buf[self.end..self.end + want]
    }

    /// Keeps `n` of the `want` bytes last given by [`space`](Self::space); with
    /// `keep` false, drops them all (a terminated queue keeps nothing).
    pub(crate) fn commit(&mut self, want: usize, n: usize, keep: bool) {
        if keep {
            self.end += n.min(want);
        }
    }

    /// The unparsed bytes.
    pub(crate) fn avail(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Marks `n` bytes parsed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        self.pos = 0;
        self.end = 0;
    }

    /// Unparsed byte count.
    pub(crate) fn len(&self) -> usize {
        self.end - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_buf_keeps_order_across_compaction_and_reuse() {
        let mut r = RecvBuf::default();
        let mut expect = Vec::new();
        let mut next = 0u8;
        for round in 0..200usize {
            let want = 1 + (round * 7919) % 40_000;
            let n = want / 2 + 1;
            let room = r.space(want);
            for b in room[..n].iter_mut() {
                *b = next;
                expect.push(next);
                next = next.wrapping_add(1);
            }
            r.commit(want, n, true);
            // Parse most of it, leaving a tail that must survive compaction.
            let take = r.len() * 3 / 4;
            assert_eq!(&r.avail()[..take], &expect[..take]);
            r.consume(take);
            expect.drain(..take);
            assert_eq!(r.avail(), &expect[..]);
        }
        r.clear();
        assert_eq!(r.len(), 0);
        r.space(10);
        r.commit(10, 4, false);
        assert_eq!(r.len(), 0, "a dropped commit keeps nothing");
    }
}

/// Bytes waiting to be sent. PDUs are encoded straight onto `out`; a large
/// payload the caller owns (a read's data) is not copied there but attached
/// between two bytes of `out` ([`attach`](Self::attach)) and sent from where
/// it is with a vectored write, then handed back for reuse
/// ([`take_released`](Self::take_released)). A payload still in a
/// [`ReadSource`](crate::read_source::ReadSource) is attached as a range of
/// it ([`attach_lent`](Self::attach_lent)) and sent from the source's memory
/// while the source lends it ([`lent_ranges`](Self::lent_ranges)); the part
/// of one such range left unsent by a short send is copied out before the
/// source stops lending ([`keep_unsent_lent`](Self::keep_unsent_lent)), so
/// no block is sent half from one instant and half from another.
#[derive(Default)]
pub(crate) struct SendBuf {
    pub(crate) out: Vec<u8>,
    pos: usize,
    /// Owned payloads attached, oldest first; each leaves for `released`
    /// when its last attached byte is sent.
    held: VecDeque<Vec<u8>>,
    /// The attached ranges in send order.
    attached: VecDeque<Attached>,
    /// Bytes of the front attached range already sent.
    front_sent: usize,
    /// Attached bytes not yet sent.
    attached_pending: usize,
    /// Payloads whose bytes are all sent.
    released: Vec<Vec<u8>>,
    /// Bytes handed to the socket since the queue began: a position in the
    /// send stream, so the host can tell whether the target can have seen
    /// a given PDU yet.
    total: u64,
    /// `out[..init]` holds bytes written since the allocation was made (a
    /// `clear` keeps them): [`grow`](Self::grow) may expose them again
    /// without zeroing.
    init: usize,
    /// `out`'s capacity when `init` was recorded: a reallocation since then
    /// promises only `out[..len]`, so `init` falls back to the length.
    init_cap: usize,
}

impl SendBuf {
    /// Appends `n` bytes for the caller to overwrite completely (a bdev
    /// reading straight into the PDU being built), returning them. Bytes the
    /// allocation held before are reused as they are rather than zeroed
    /// first: zeroing a 4 KiB read's room costs about as much as the copy
    /// that writing in place saves. The caller must overwrite every byte or
    /// `truncate` back, so stale bytes are never sent.
    pub(crate) fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = self.out.len();
        let end = start + n;
        if self.out.capacity() != self.init_cap {
            // Reallocated (by an encoder's push) since `init` was recorded: a
            // `Vec` keeps only its length's worth of bytes across that.
            self.init = start;
            self.init_cap = self.out.capacity();
        }
        self.init = self.init.max(start);
        if end <= self.init {
            // SAFETY: `out[start..end]` lies inside `out[..init]`, bytes this
            // allocation has held since `init` was recorded with its current
            // capacity (the check above: no reallocation since): written by the
            // `resize` below or by the encoders, and `clear` and `truncate` only
            // shorten the length, so they are initialised u8 values; `init` never
            // exceeds the capacity.
            unsafe { self.out.set_len(end) };
        } else {
            self.out.resize(end, 0);
            self.init = end;
            self.init_cap = self.out.capacity();
        }
        &mut self.out[start..end]
    }

    /// Drops the bytes appended after the first `len` (a PDU whose data
    /// could not be produced). Bytes already handed to `sent` stay.
    pub(crate) fn truncate(&mut self, len: usize) {
        let floor = self.attached.back().map_or(self.pos, |a| a.at.max(self.pos));
        self.out.truncate(len.max(floor));
    }

    /// Keeps `buf` until its attached ranges are sent; follow with
    /// [`attach`](Self::attach) for each range of it, in order, the last one
    /// ending at `buf.len()`.
    pub(crate) fn hold(&mut self, buf: Vec<u8>) {
        self.held.push_back(buf);
    }

    /// The payload last given to [`hold`](Self::hold).
    pub(crate) fn last_held(&self) -> &[u8] {
        self.held.back().map_or(&[], Vec::as_slice)
    }

    /// Queues `start..end` of the payload last held to go out right after
    /// the bytes of `out` queued so far; `last` says it is the payload's last
    /// range (the payload is released once it is sent).
    pub(crate) fn attach(&mut self, start: usize, end: usize, last: bool) {
        self.attached_pending += end - start;
        self.attached.push_back(Attached {
            at: self.out.len(),
            start,
            end,
            last,
            lent: None,
        });
    }

    /// Queues `range`'s bytes, still in their source, to go out right after
    /// the bytes of `out` queued so far; they are read when sent, from what
    /// the source lends then.
    pub(crate) fn attach_lent(&mut self, range: SourceRange) {
        self.attached_pending += range.len();
        self.attached.push_back(Attached {
            at: self.out.len(),
            start: 0,
            end: range.len(),
            last: false,
            lent: Some(range),
        });
    }

    /// The source ranges among the first `entries` attached ranges that one
    /// lend can cover: `(at, len)` of each, in order, into `out` (emptied
    /// first), up to the first range of another source; returns their
    /// source, or `None` when the first `entries` hold no source range.
    pub(crate) fn lent_ranges(&self, entries: usize, out: &mut Vec<(u64, usize)>) -> Option<Arc<dyn ReadSource>> {
        out.clear();
        let mut source: Option<&Arc<dyn ReadSource>> = None;
        for r in self.attached.iter().take(entries).filter_map(|a| a.lent.as_ref()) {
            match source {
                None => source = Some(r.source()),
                // Addresses only: two `dyn` pointers to one value may carry different vtables.
                Some(s) if std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(r.source())) => {}
                Some(_) => break,
            }
            out.push((r.at(), r.len()));
        }
        source.cloned()
    }

    /// What has not been sent yet, in order, as up to `slices.len()` slices
    /// (runs of `out` and attached payload ranges). `lent` holds the bytes
    /// of the first `lent.len()` source ranges still attached (from
    /// [`lent_ranges`](Self::lent_ranges)); the slices stop before a source
    /// range past those. Returns how many were filled; fewer than all when
    /// `slices` is short.
    pub(crate) fn pending_slices<'a>(&'a self, slices: &mut [&'a [u8]], lent: &[&'a [u8]]) -> usize {
        let mut n = 0;
        let mut cur = self.pos;
        let mut held = 0;
        let mut lent_used = 0;
        for (i, a) in self.attached.iter().enumerate() {
            if a.at > cur {
                if n == slices.len() {
                    return n;
                }
                slices[n] = &self.out[cur..a.at];
                n += 1;
                cur = a.at;
            }
            if n == slices.len() {
                return n;
            }
            let start = if i == 0 { a.start + self.front_sent } else { a.start };
            if a.lent.is_some() {
                let Some(bytes) = lent.get(lent_used) else { return n };
                lent_used += 1;
                slices[n] = bytes.get(start..a.end).unwrap_or_default();
                n += 1;
                continue;
            }
            slices[n] = &self.held[held][start..a.end];
            n += 1;
            if a.last {
                held += 1;
            }
        }
        if self.out.len() > cur && n < slices.len() {
            slices[n] = &self.out[cur..];
            n += 1;
        }
        n
    }

    /// The first run of what has not been sent yet (all of it when nothing
    /// is attached).
    pub(crate) fn pending(&self) -> &[u8] {
        let mut first: [&[u8]; 1] = [&[]];
        self.pending_slices(&mut first, &[]);
        first[0]
    }

    /// The source ranges attached and not yet all sent, in order.
    pub(crate) fn lent(&self) -> impl Iterator<Item = &SourceRange> {
        self.attached.iter().filter_map(|a| a.lent.as_ref())
    }

    /// Attached payload ranges not yet all sent.
    pub(crate) fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// Whether payload ranges are attached and unsent.
    pub(crate) fn has_attached(&self) -> bool {
        !self.attached.is_empty()
    }

    /// Marks `n` bytes sent (in the order [`pending_slices`](Self::pending_slices) gives them).
    /// Returns how many source ranges that sent in full.
    pub(crate) fn sent(&mut self, n: usize) -> usize {
        let mut lent_done = 0;
        let mut n = n.min(self.out.len() - self.pos + self.attached_pending);
        self.total += n as u64;
        while n > 0 {
            let next_at = self.attached.front().map_or(self.out.len(), |a| a.at);
            if next_at > self.pos {
                let k = n.min(next_at - self.pos);
                self.pos += k;
                n -= k;
                continue;
            }
            let Some(a) = self.attached.front() else { break };
            let k = n.min(a.end - a.start - self.front_sent);
            self.front_sent += k;
            self.attached_pending -= k;
            n -= k;
            if self.front_sent == a.end - a.start {
                let (last, lent) = (a.last, a.lent.is_some());
                self.attached.pop_front();
                self.front_sent = 0;
                if lent {
                    lent_done += 1;
                } else if last && let Some(buf) = self.held.pop_front() {
                    self.released.push(buf);
                }
            }
        }
        if self.pos == self.out.len() && self.attached.is_empty() {
            self.out.clear();
            self.pos = 0;
        }
        lent_done
    }

    /// After a short send from lent bytes: when the front range is a source
    /// range partly sent, copies its unsent rest out of `lent` (the bytes
    /// lent for the send, of which [`sent`](Self::sent) said `lent_done`
    /// went out in full) into a payload of its own, to be sent from there.
    /// Call while the source still lends them.
    pub(crate) fn keep_unsent_lent(&mut self, lent: &[&[u8]], lent_done: usize) {
        let Some(a) = self.attached.front_mut() else { return };
        if a.lent.is_none() || self.front_sent == 0 {
            return;
        }
        let Some(rest) = lent.get(lent_done).and_then(|b| b.get(self.front_sent..a.end)) else {
            return;
        };
        self.held.push_front(rest.to_vec());
        *a = Attached {
            at: a.at,
            start: 0,
            end: rest.len(),
            last: true,
            lent: None,
        };
        self.front_sent = 0;
    }

    /// Payloads whose bytes have all been sent, for the owner to reuse.
    pub(crate) fn take_released(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.released.drain(..)
    }

    /// Stream position of the first byte not yet sent.
    pub(crate) fn sent_total(&self) -> u64 {
        self.total
    }

    /// Stream position just past the last byte queued.
    pub(crate) fn queued_end(&self) -> u64 {
        self.total + (self.out.len() - self.pos + self.attached_pending) as u64
    }

    /// Whether anything waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.out.len() && self.attached.is_empty()
    }
}

/// A range of a held payload, or of a source, that goes out just before
/// `out[at]`.
struct Attached {
    at: usize,
    start: usize,
    end: usize,
    /// The payload's last range: sending it releases the payload.
    last: bool,
    /// The bytes are this range of a source (`start..end` is `0..len`),
    /// not of a held payload.
    lent: Option<SourceRange>,
}
