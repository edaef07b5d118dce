//! Read data copied from where it lives while its C2HData PDUs are built.
//!
//! A bdev whose blocks are memory (a RAM or null bdev) needs no buffer for a
//! Read: the target queue copies the blocks straight into the PDU it is
//! encoding, once. Filling a buffer first and copying that into the send
//! buffer costs a second copy of every byte, which at 4 KiB and queue depth
//! 32 was most of what separated lull's target from SPDK's
//! (docs/performance.md, "Profiled again"). It plays the part of SPDK's
//! zero-copy bdev I/O (`spdk_bdev_zcopy_start`), where the bdev lends the
//! transport its own memory.
//!
//! The copy happens when the response is applied to the queue
//! ([`TargetQueue::respond`](crate::target_queue::TargetQueue::respond)),
//! after the controller has answered and before any later command's
//! response: a write answered before the Read arrived is always seen, and a
//! command the host has not seen completed cannot tell the difference (NVMe
//! Base 2.0 section 3.4.1: commands in flight together are not ordered).

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
