//! Block devices (bdevs, SPDK's word): what namespaces are backed by.
//!
//! A bdev is data ([`BdevInfo`]: name, geometry, identity) and one
//! asynchronous entry point, [`Bdev::submit`], as SPDK's `submit_request`.
//! A bdev is shared by every core that serves its namespace, so it is
//! `Send + Sync` and takes `&self`; a submission and its completion happen on
//! the same reactor. Addresses and lengths are in blocks of
//! [`BdevInfo::block_size`] bytes; buffers are whole blocks.
//!
//! Buffers belong to the caller: a Read fills the `Vec` it is given, a Write
//! takes its data as a `Vec`, and the completion hands the `Vec` back (also
//! on error) so the caller can reuse it. A completion is a [`BdevDone`]: a
//! shared sink and a tag, so submitting allocates nothing.

mod aligned;
mod done;
mod file;
mod huge;
mod info;
mod null;
pub mod raid1;
mod ram;
mod ring;
pub(crate) mod slab;
pub mod stats;
mod stream_copy;
#[cfg(test)]
pub(crate) mod test_support;

pub use aligned::AlignedBuf;
pub use done::{BdevDone, IoCompletion};
pub use file::FileBdev;
pub use info::BdevInfo;
pub use null::NullBdev;
pub use raid1::Raid1Bdev;
pub use ram::RamBdev;
pub use stats::BdevStats;

use std::any::Any;
use std::sync::Arc;

use lull_proto::read_source::ReadSource;
use lull_reactor::Context;
use thiserror::Error;

/// One operation for [`Bdev::submit`].
#[derive(Debug)]
pub enum BdevIo {
    /// Read `blocks` blocks from `lba` into `buf`.
    Read {
        /// First block.
        lba: u64,
        /// Block count.
        blocks: u64,
        /// Where the data goes. The bdev empties it and appends
        /// `blocks x block_size` bytes (it does not zero them first). Give it
        /// at least that capacity and nothing is allocated; a smaller one is
        /// grown. Handed back through the completion: filled on success,
        /// empty on error.
        buf: Vec<u8>,
    },
    /// Write `data` (whole blocks) at `lba`. `data` is handed back through
    /// the completion for reuse (its contents then are unspecified; an NVMe
    /// bdev hands back an empty `Vec` when the remote write failed).
    Write {
        /// First block.
        lba: u64,
        /// The data.
        data: Vec<u8>,
    },
    /// Zero `blocks` blocks at `lba`.
    WriteZeroes {
        /// First block.
        lba: u64,
        /// Block count.
        blocks: u64,
    },
    /// Deallocate `blocks` blocks at `lba` (they then read as zeroes).
    Unmap {
        /// First block.
        lba: u64,
        /// Block count.
        blocks: u64,
    },
    /// Make completed writes durable.
    Flush,
}

impl BdevIo {
    /// The buffer this operation carries (a Read's `buf`, a Write's `data`;
    /// empty for the others): what a bdev hands back when it fails the
    /// operation before starting it.
    pub fn into_buf(self) -> Vec<u8> {
        match self {
            BdevIo::Read { mut buf, .. } => {
                buf.clear();
                buf
            }
            BdevIo::Write { data, .. } => data,
            BdevIo::WriteZeroes { .. } | BdevIo::Unmap { .. } | BdevIo::Flush => Vec::new(),
        }
    }
}

/// Why a bdev operation failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BdevError {
    /// The range reaches past the last block.
    #[error("blocks {lba}..{end} are beyond the bdev's {num_blocks} blocks")]
    OutOfRange {
        /// First block.
        lba: u64,
        /// One past the last block asked for.
        end: u64,
        /// Blocks the bdev has.
        num_blocks: u64,
    },
    /// A buffer is not a whole number of blocks.
    #[error("buffer of {len} bytes is not a multiple of the {block_size}-byte block size")]
    Misaligned {
        /// Buffer length, bytes.
        len: usize,
        /// Block size, bytes.
        block_size: u32,
    },
    /// The backing store failed.
    #[error("I/O error: {0}")]
    Io(String),
}

/// A block device: what it is ([`info`](Bdev::info)) and one way to do I/O
/// on it ([`submit`](Bdev::submit)).
///
/// `Any` lets off-reactor code reach a kind's own blocking methods (see
/// [`flush_blocking`]).
pub trait Bdev: Any + Send + Sync {
    /// Its name, product name, geometry and identity.
    fn info(&self) -> &BdevInfo;

    /// Starts `io` from a reactor; `done` is completed exactly once, on this
    /// reactor, with the result and the operation's buffer (see [`BdevIo`]).
    ///
    /// A bdev that does its work in memory (RAM, null) completes `done`
    /// before `submit` returns, so the caller answers in the same loop
    /// iteration; others (file, NVMe) complete it from a later poll.
    /// Errors are reported through `done`, never by panicking: a range past
    /// the end is [`BdevError::OutOfRange`], write data that is not whole
    /// blocks [`BdevError::Misaligned`].
    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone);

    /// The bdev's blocks as memory an NVMe/TCP target may copy a Read's data
    /// from while it builds the C2HData PDUs (byte `lba x block_size` is
    /// byte `lba x block_size` of the source), instead of submitting the Read
    /// with a buffer: one copy where a buffer would take two
    /// (`lull_proto::read_source`). For bdevs whose reads are nothing but a
    /// copy of memory (RAM, null); `None` (the default): every Read goes
    /// through [`submit`](Bdev::submit).
    fn read_source(&self) -> Option<Arc<dyn ReadSource>> {
        None
    }
}

/// Makes `bdev`'s completed writes durable from off the reactors (deleting
/// a bdev, shutting down): a file bdev's `fdatasync`. RAM and null bdevs
/// have nothing a flush would keep, and an NVMe bdev is flushed only through
/// [`Bdev::submit`] (its queues live on the reactors): for those this is Ok.
///
/// # Errors
/// [`BdevError::Io`] when `fdatasync` fails.
pub fn flush_blocking(bdev: &dyn Bdev) -> Result<(), BdevError> {
    let any: &dyn Any = bdev;
    match any.downcast_ref::<FileBdev>() {
        Some(file) => file.flush(),
        None => Ok(()),
    }
}

/// Checks `lba .. lba + blocks` against `num_blocks`.
///
/// # Errors
/// [`BdevError::OutOfRange`].
pub fn check_range(lba: u64, blocks: u64, num_blocks: u64) -> Result<(), BdevError> {
    match lba.checked_add(blocks) {
        Some(end) if end <= num_blocks => Ok(()),
        end => Err(BdevError::OutOfRange {
            lba,
            end: end.unwrap_or(u64::MAX),
            num_blocks,
        }),
    }
}

/// Blocks in a buffer, or an error if it is not whole blocks.
///
/// # Errors
/// [`BdevError::Misaligned`].
pub fn blocks_in(len: usize, block_size: u32) -> Result<u64, BdevError> {
    if !len.is_multiple_of(block_size as usize) {
        return Err(BdevError::Misaligned { len, block_size });
    }
    Ok((len / block_size as usize) as u64)
}

/// A name-derived identity: stable across restarts for the same name and
/// kind, different between names (FNV-1a, two halves, with the RFC 4122
/// version-4/variant bits set so hosts parse it as a UUID).
pub fn uuid_from_name(kind: &str, name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (half, seed) in [(0usize, 0xcbf2_9ce4_8422_2325u64), (8, 0x8422_2325_cbf2_9ce4)] {
        let mut h = seed;
        for b in kind.bytes().chain([0u8]).chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        out[half..half + 8].copy_from_slice(&h.to_be_bytes());
    }
    out[6] = (out[6] & 0x0F) | 0x40;
    out[8] = (out[8] & 0x3F) | 0x80;
    out
}

/// Checks a block size.
///
/// # Errors
/// A message naming the allowed values.
pub fn check_block_size(block_size: u32) -> Result<(), String> {
    match block_size {
        512 | 4096 => Ok(()),
        other => Err(format!("block size {other} is not supported; use 512 or 4096")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_identities() {
        assert!(check_range(0, 8, 8).is_ok());
        assert_eq!(
            check_range(7, 2, 8),
            Err(BdevError::OutOfRange {
                lba: 7,
                end: 9,
                num_blocks: 8
            })
        );
        assert_eq!(
            check_range(u64::MAX, 2, 8).unwrap_err(),
            BdevError::OutOfRange {
                lba: u64::MAX,
                end: u64::MAX,
                num_blocks: 8
            }
        );
        assert_eq!(blocks_in(1024, 512), Ok(2));
        assert!(blocks_in(1000, 512).is_err());
        let a = uuid_from_name("ram", "Ram0");
        assert_eq!(a, uuid_from_name("ram", "Ram0"), "stable");
        assert_ne!(a, uuid_from_name("ram", "Ram1"));
        assert_ne!(a, uuid_from_name("null", "Ram0"));
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 2);
    }
}
