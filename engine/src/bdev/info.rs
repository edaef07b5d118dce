//! What a bdev is, as data: its name, product name, geometry and identity
//! (SPDK keeps the same in `struct spdk_bdev`). One struct, so each bdev kind
//! stores it once instead of implementing five accessors.

use super::{BdevError, blocks_in, check_range};

/// A bdev's name, product name, geometry and identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BdevInfo {
    /// Its name (unique in a target, e.g. `Ram0`).
    pub name: String,
    /// Its product name, as SPDK's `bdev_get_bdevs` reports it (`Malloc disk`, `Null disk`).
    pub product_name: &'static str,
    /// Block size, bytes (512 or 4096).
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
    /// A stable 16-byte identity (used for NGUID/UUID).
    pub uuid: [u8; 16],
}

impl BdevInfo {
    /// Checks `lba .. lba + blocks` against the bdev's size and returns the
    /// range in bytes: (byte offset, byte length).
    ///
    /// # Errors
    /// [`BdevError::OutOfRange`].
    pub fn byte_range(&self, lba: u64, blocks: u64) -> Result<(u64, usize), BdevError> {
        check_range(lba, blocks, self.num_blocks)?;
        let bs = u64::from(self.block_size);
        // Cannot overflow: lba + blocks <= num_blocks, and the bdevs refuse a
        // num_blocks x block_size a u64 cannot hold.
        Ok((lba * bs, (blocks * bs) as usize))
    }

    /// Checks that `len` bytes at `lba` are whole blocks inside the bdev and
    /// returns the block count.
    ///
    /// # Errors
    /// [`BdevError::Misaligned`] or [`BdevError::OutOfRange`].
    pub fn data_blocks(&self, lba: u64, len: usize) -> Result<u64, BdevError> {
        let blocks = blocks_in(len, self.block_size)?;
        check_range(lba, blocks, self.num_blocks)?;
        Ok(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> BdevInfo {
        BdevInfo {
            name: "x".into(),
            product_name: "p",
            block_size: 512,
            num_blocks: 8,
            uuid: [0; 16],
        }
    }

    #[test]
    fn byte_ranges_are_blocks_times_the_block_size() {
        assert_eq!(info().byte_range(2, 3), Ok((1024, 1536)));
        assert_eq!(info().byte_range(8, 0), Ok((4096, 0)));
        assert!(matches!(
            info().byte_range(7, 2),
            Err(BdevError::OutOfRange { end: 9, .. })
        ));
    }

    #[test]
    fn data_must_be_whole_blocks_inside_the_bdev() {
        assert_eq!(info().data_blocks(6, 1024), Ok(2));
        assert!(matches!(
            info().data_blocks(0, 100),
            Err(BdevError::Misaligned { len: 100, .. })
        ));
        assert!(matches!(info().data_blocks(7, 1024), Err(BdevError::OutOfRange { .. })));
    }
}
