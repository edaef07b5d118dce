//! Byte buffers shared by the target and host queue state machines: what
//! has been received and not parsed, and what is waiting to be sent.

/// Received bytes not yet parsed.
#[derive(Default)]
pub(crate) struct RecvBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl RecvBuf {
    /// Room for `want` more bytes at the end, compacting parsed bytes away.
    pub(crate) fn space(&mut self, want: usize) -> &mut [u8] {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos > 64 * 1024) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + want, 0);
        &mut self.buf[len..]
    }

    /// Keeps `n` of the `want` bytes last given by [`space`](Self::space); with
    /// `keep` false, drops them all (a terminated queue keeps nothing).
    pub(crate) fn commit(&mut self, want: usize, n: usize, keep: bool) {
        let len = self.buf.len();
        let kept = if keep { n.min(want) } else { 0 };
        self.buf.truncate(len - want + kept);
    }

    /// The unparsed bytes.
    pub(crate) fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` bytes parsed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// Unparsed byte count.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Bytes waiting to be sent; PDUs are encoded straight onto `out`.
#[derive(Default)]
pub(crate) struct SendBuf {
    pub(crate) out: Vec<u8>,
    pos: usize,
}

impl SendBuf {
    /// What has not been sent yet.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.out[self.pos..]
    }

    /// Marks `n` bytes sent.
    pub(crate) fn sent(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.out.len());
        if self.pos == self.out.len() {
            self.out.clear();
            self.pos = 0;
        }
    }

    /// Whether anything waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.out.len()
    }
}
