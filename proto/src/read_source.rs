//! Read data sent from where it lives, or copied from there while its
//! C2HData PDUs are built.
//!
//! A bdev whose blocks are memory (a RAM or null bdev) needs no buffer for a
//! Read. A source that can lend its memory ([`ReadSource::lend`], a RAM
//! bdev) has the Read's data attached to the send queue as a range of it,
//! and the vectored write that sends it is made while the source holds that
//! memory unchanged: the kernel's copy into the socket is the only copy.
//! Copying into the send buffer first cost about a sixth of the sender's
//! CPU per 4 KiB read at queue depth 32 (docs/performance.md, "Read data
//! sent from the RAM bdev's memory"). It plays the part of SPDK's zero-copy
//! bdev I/O (`spdk_bdev_zcopy_start`), where the bdev lends the transport its
//! own memory, which SPDK's TCP transport leaves off by default.
//!
//! Otherwise (a source that cannot lend, a data digest, which must be
//! computed over bytes that no longer change, TLS, whose sealed record may
//! be sent by a later call, or a transfer below
//! [`LEND_MIN`](crate::target_queue::LEND_MIN)) the target queue copies the
//! blocks straight into the PDU it is encoding, once, when the response is
//! applied to the queue
//! ([`TargetQueue::respond`](crate::target_queue::TargetQueue::respond)).
//!
//! Either way the data is read after the controller answered: a write
//! answered before the Read arrived is always seen, and a command the host
//! has not seen completed cannot tell the difference (NVMe Base 2.0 section
//! 3.4.1: commands in flight together are not ordered). A lent payload goes
//! out as it was at the one send that took its first byte: the rest of a
//! payload a send took only part of is copied out before the lend ends, so
//! no block is torn (NVMe 1.4 section 6.4, Atomic Operations: with AWUN 0
//! a write of one block is atomic to reads).

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// Memory a Read's data can be copied from while its PDUs are built.
///
/// Shared by every core serving the bdev, so `Send + Sync`; `copy_to` takes
/// whatever lock the memory needs.
pub trait ReadSource: Send + Sync {
    /// Copies bytes `at .. at + dst.len()` of the source into `dst`, all of
    /// them.
    ///
    /// # Errors
    /// [`SourceRangeError`] when the range reaches past the source's end (the
    /// caller checked it against the bdev's size; this keeps a mistake from
    /// becoming a panic or a short copy).
    fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError>;

    /// Bytes in all: a range is inside the source when `at + len <= size()`.
    fn size(&self) -> u64;

    /// Whether [`lend`](Self::lend) hands out the source's own memory
    /// (worth a slice of its own in a vectored send, saving the copy into
    /// the send buffer) rather than copies of it. Default: false.
    fn lends(&self) -> bool {
        false
    }

    /// Calls `f` once with the bytes of each of `ranges` (`(at, len)`, in
    /// order), none of which changes until `f` returns: a writer to them
    /// waits (a RAM bdev holds the locks of every stripe they touch, each
    /// once however many ranges share it). The NVMe/TCP target sends a
    /// Read's data with the system call made inside `f`, so the data is
    /// copied once, by the kernel, and every block goes out as it was at one
    /// instant (NVMe 1.4 section 6.4, Atomic Operations: a write of one
    /// block is atomic to reads). `f` must not call back into this source.
    ///
    /// The default copies each range into a buffer of its own first (for
    /// sources that cannot lend their memory).
    ///
    /// # Errors
    /// [`SourceRangeError`] for the first range not inside the source; `f`
    /// is then not called.
    fn lend(&self, ranges: &[(u64, usize)], f: &mut dyn FnMut(&[&[u8]])) -> Result<(), SourceRangeError> {
        let mut copies = Vec::with_capacity(ranges.len());
        for &(at, len) in ranges {
            let mut v = vec![0; len];
            self.copy_to(at, &mut v)?;
            copies.push(v);
        }
        let slices: Vec<&[u8]> = copies.iter().map(Vec::as_slice).collect();
        f(&slices);
        Ok(())
    }
}

/// A range that is not all inside a [`ReadSource`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("bytes {at}..{at}+{len} are beyond the source's {size} bytes")]
pub struct SourceRangeError {
    /// First byte asked for.
    pub at: u64,
    /// Bytes asked for.
    pub len: usize,
    /// One past the last byte that may be read: the source's size (or,
    /// from [`SourceRange::copy_to`], the range's end).
    pub size: u64,
}

/// `len` bytes of a [`ReadSource`] from byte `at`: a Read's data, not yet
/// copied (a [`Response`](crate::target_queue::Response)'s `source`).
#[derive(Clone)]
pub struct SourceRange {
    source: Arc<dyn ReadSource>,
    at: u64,
    len: usize,
}

impl SourceRange {
    /// Bytes `at .. at + len` of `source`.
    pub fn new(source: Arc<dyn ReadSource>, at: u64, len: usize) -> Self {
        SourceRange { source, at, len }
    }

    /// The source the range is of.
    pub fn source(&self) -> &Arc<dyn ReadSource> {
        &self.source
    }

    /// Byte of the source where the range starts.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// Whether the whole range lies inside its source (a range built from a
    /// namespace's geometry always does; this keeps a mismatch from reaching
    /// a send).
    pub fn is_inside(&self) -> bool {
        self.at
            .checked_add(self.len as u64)
            .is_some_and(|end| end <= self.source.size())
    }

    /// Bytes `offset .. offset + len` of this range as a range of its own,
    /// or `None` when they are not all inside this one.
    pub fn part(&self, offset: usize, len: usize) -> Option<SourceRange> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| SourceRange {
            source: self.source.clone(),
            at: self.at + offset as u64,
            len,
        })
    }

    /// Length, bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the range's bytes `offset .. offset + dst.len()` into `dst`.
    ///
    /// # Errors
    /// [`SourceRangeError`] when that is beyond the range or the source.
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len => self.source.copy_to(self.at + offset as u64, dst),
            _ => Err(SourceRangeError {
                at: self.at.saturating_add(offset as u64),
                len: dst.len(),
                size: self.at.saturating_add(self.len as u64),
            }),
        }
    }

    /// The whole range as a new buffer (tests and tools; the queue copies
    /// into its PDUs instead).
    ///
    /// # Errors
    /// [`SourceRangeError`] when the source does not hold the range.
    pub fn to_vec(&self) -> Result<Vec<u8>, SourceRangeError> {
        let mut v = vec![0; self.len];
        self.copy_to(0, &mut v)?;
        Ok(v)
    }
}

impl fmt::Debug for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceRange")
            .field("at", &self.at)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose byte `i` is `i % 251`.
    struct Counting(u64);

    impl ReadSource for Counting {
        fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
            if at.checked_add(dst.len() as u64).is_none_or(|end| end > self.0) {
                return Err(SourceRangeError {
                    at,
                    len: dst.len(),
                    size: self.0,
                });
            }
            for (i, b) in dst.iter_mut().enumerate() {
                *b = ((at + i as u64) % 251) as u8;
            }
            Ok(())
        }

        fn size(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_range_copies_its_own_bytes_and_nothing_past_its_end() {
        let r = SourceRange::new(Arc::new(Counting(10_000)), 1000, 600);
        assert_eq!(r.len(), 600);
        let want: Vec<u8> = (1000..1600u64).map(|i| (i % 251) as u8).collect();
        assert_eq!(r.to_vec().unwrap(), want);
        let mut part = [0u8; 100];
        r.copy_to(500, &mut part).unwrap();
        assert_eq!(&part[..], &want[500..]);
        // One byte past the range's end, though the source holds it.
        let mut over = [0u8; 101];
        assert!(r.copy_to(500, &mut over).is_err());
        assert!(r.copy_to(usize::MAX, &mut [0u8; 2]).is_err());
    }

    #[test]
    fn a_source_that_cannot_lend_lends_copies_and_checks_every_range_first() {
        let c = Counting(10_000);
        assert!(!c.lends());
        let mut got = Vec::new();
        c.lend(&[(0, 3), (9_000, 1000)], &mut |lent| {
            got = lent.iter().map(|s| s.to_vec()).collect();
        })
        .unwrap();
        let want: Vec<u8> = (9_000..10_000u64).map(|i| (i % 251) as u8).collect();
        assert_eq!(got, vec![vec![0, 1, 2], want]);
        let mut called = false;
        let e = c.lend(&[(0, 3), (9_999, 2)], &mut |_| called = true);
        assert_eq!(
            e,
            Err(SourceRangeError {
                at: 9_999,
                len: 2,
                size: 10_000
            })
        );
        assert!(!called);
    }

    #[test]
    fn parts_of_a_range_stay_inside_it() {
        let r = SourceRange::new(Arc::new(Counting(10_000)), 1000, 600);
        assert!(r.is_inside());
        let p = r.part(100, 500).unwrap();
        assert_eq!((p.at(), p.len()), (1100, 500));
        assert!(r.part(100, 501).is_none());
        assert!(r.part(usize::MAX, 2).is_none());
        assert!(!SourceRange::new(Arc::new(Counting(1000)), 900, 101).is_inside());
        assert!(!SourceRange::new(Arc::new(Counting(1000)), u64::MAX, 1).is_inside());
    }

    #[test]
    fn a_range_past_the_source_is_an_error_not_a_panic() {
        let r = SourceRange::new(Arc::new(Counting(4096)), 4000, 200);
        assert_eq!(
            r.to_vec(),
            Err(SourceRangeError {
                at: 4000,
                len: 200,
                size: 4096
            })
        );
    }
}
