//! `null`: discards writes, reads zeroes (SPDK's null bdev), for measuring
//! everything but the storage.

use super::{Bdev, BdevError, blocks_in, check_range, uuid_from_name};

/// A bdev with no storage behind it.
pub struct NullBdev {
    name: String,
    block_size: u32,
    num_blocks: u64,
    uuid: [u8; 16],
}

impl NullBdev {
    /// The same bdev with this UUID (and so the namespace's NGUID/UUID).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = uuid;
        self
    }

    /// `num_blocks` blocks of `block_size` bytes.
    ///
    /// # Errors
    /// A message for a block size other than 512 or 4096, 0 blocks, or a
    /// size in bytes a u64 cannot count.
    pub fn new(name: &str, num_blocks: u64, block_size: u32) -> Result<Self, String> {
        super::check_block_size(block_size)?;
        if num_blocks == 0 {
            return Err("a null bdev needs at least one block".to_string());
        }
        // Sizes in bytes (bdev lists, statistics, the host's capacity) must not wrap.
        if num_blocks.checked_mul(u64::from(block_size)).is_none() {
            return Err(format!(
                "num_blocks {num_blocks} x block_size {block_size} overflows; allowed 1..={}",
                u64::MAX / u64::from(block_size)
            ));
        }
        Ok(NullBdev {
            name: name.to_string(),
            block_size,
            num_blocks,
            uuid: uuid_from_name("null", name),
        })
    }
}

impl Bdev for NullBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn product_name(&self) -> &'static str {
        "Null disk"
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        check_range(lba, blocks_in(buf.len(), self.block_size)?, self.num_blocks)?;
        buf.fill(0);
        Ok(())
    }
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BdevError> {
        check_range(lba, blocks_in(data.len(), self.block_size)?, self.num_blocks)
    }
    fn write_zeroes(&self, lba: u64, blocks: u64) -> Result<(), BdevError> {
        check_range(lba, blocks, self.num_blocks)
    }
    fn unmap(&self, lba: u64, blocks: u64) -> Result<(), BdevError> {
        check_range(lba, blocks, self.num_blocks)
    }
    fn flush(&self) -> Result<(), BdevError> {
        Ok(())
    }
}
