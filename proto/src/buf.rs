//! Byte buffers shared by the target and host queue state machines: what
//! has been received and not parsed, and what is waiting to be sent.

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

/// Bytes waiting to be sent; PDUs are encoded straight onto `out`.
#[derive(Default)]
pub(crate) struct SendBuf {
    pub(crate) out: Vec<u8>,
    pos: usize,
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
        self.out.truncate(len.max(self.pos));
    }

    /// What has not been sent yet.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.out[self.pos..]
    }

    /// Marks `n` bytes sent.
    pub(crate) fn sent(&mut self, n: usize) {
        let n = n.min(self.out.len() - self.pos);
        self.total += n as u64;
        self.pos += n;
        if self.pos == self.out.len() {
            self.out.clear();
            self.pos = 0;
        }
    }

    /// Stream position of the first byte not yet sent.
    pub(crate) fn sent_total(&self) -> u64 {
        self.total
    }

    /// Stream position just past the last byte queued.
    pub(crate) fn queued_end(&self) -> u64 {
        self.total + (self.out.len() - self.pos) as u64
    }

    /// Whether anything waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.out.len()
    }
}
