//! Block devices (bdevs, SPDK's word): what namespaces are backed by.
//!
//! A bdev is shared by every core that serves its namespace, so its methods
//! take `&self` and are `Send + Sync`. Addresses and lengths are in blocks of
//! [`Bdev::block_size`] bytes; buffers are whole blocks.

mod aligned;
mod file;
mod null;
mod ram;
pub mod stats;

pub use aligned::AlignedBuf;
pub use file::FileBdev;
pub use null::NullBdev;
pub use ram::RamBdev;
pub use stats::BdevStats;

use lull_reactor::Context;
use thiserror::Error;

/// One operation for [`Bdev::submit`].
#[derive(Debug)]
pub enum BdevIo {
    /// Read `blocks` blocks from `lba`.
    Read {
        /// First block.
        lba: u64,
        /// Block count.
        blocks: u64,
    },
    /// Write `data` (whole blocks) at `lba`.
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
    /// Deallocate `blocks` blocks at `lba`.
    Unmap {
        /// First block.
        lba: u64,
        /// Block count.
        blocks: u64,
    },
    /// Make completed writes durable.
    Flush,
}

/// Called once when a submitted operation ends, on the submitting reactor:
/// the data read (empty for other operations), or the error.
pub type BdevDone = Box<dyn for<'a> FnOnce(&mut Context, Result<&'a [u8], BdevError>)>;

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

/// A block device.
pub trait Bdev: Send + Sync {
    /// Its name (unique in a target, e.g. `Ram0`).
    fn name(&self) -> &str;
    /// Its product name, as SPDK's `bdev_get_bdevs` reports it (`Malloc disk`, `Null disk`).
    fn product_name(&self) -> &'static str;
    /// Block size, bytes (512 or 4096).
    fn block_size(&self) -> u32;
    /// Number of blocks.
    fn num_blocks(&self) -> u64;
    /// A stable 16-byte identity (used for NGUID/UUID).
    fn uuid(&self) -> [u8; 16];
    /// Reads `buf.len() / block_size` blocks from `lba`.
    ///
    /// # Errors
    /// [`BdevError`].
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError>;
    /// Writes `data.len() / block_size` blocks at `lba`.
    ///
    /// # Errors
    /// [`BdevError`].
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BdevError>;
    /// Writes zeroes to `blocks` blocks at `lba`.
    ///
    /// # Errors
    /// [`BdevError`].
    fn write_zeroes(&self, lba: u64, blocks: u64) -> Result<(), BdevError>;
    /// Deallocates `blocks` blocks at `lba` (they then read as zeroes).
    ///
    /// # Errors
    /// [`BdevError`].
    fn unmap(&self, lba: u64, blocks: u64) -> Result<(), BdevError>;
    /// Makes completed writes durable.
    ///
    /// # Errors
    /// [`BdevError`].
    fn flush(&self) -> Result<(), BdevError>;

    /// Whether operations complete later, through [`submit`](Bdev::submit),
    /// rather than within the blocking calls above (which such a bdev still
    /// offers, for use off the reactors).
    fn is_async(&self) -> bool {
        false
    }

    /// Starts `io` from a reactor and calls `done` on this reactor when it
    /// ends. The default runs the blocking call and calls `done` at once.
    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        match io {
            BdevIo::Read { lba, blocks } => {
                let mut buf = vec![0u8; (blocks * u64::from(self.block_size())) as usize];
                match self.read(lba, &mut buf) {
                    Ok(()) => done(cx, Ok(&buf)),
                    Err(e) => done(cx, Err(e)),
                }
            }
            BdevIo::Write { lba, data } => done(cx, self.write(lba, &data).map(|()| &[][..])),
            BdevIo::WriteZeroes { lba, blocks } => done(cx, self.write_zeroes(lba, blocks).map(|()| &[][..])),
            BdevIo::Unmap { lba, blocks } => done(cx, self.unmap(lba, blocks).map(|()| &[][..])),
            BdevIo::Flush => done(cx, self.flush().map(|()| &[][..])),
        }
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
