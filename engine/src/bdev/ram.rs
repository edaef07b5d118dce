//! `ram`: a bdev in memory (SPDK's malloc bdev).

use std::sync::Mutex;

use super::{Bdev, BdevError, blocks_in, check_range, uuid_from_name};

/// Bytes per lock stripe. Cores write to different stripes without
/// contending; a stripe's mutex makes concurrent access to the same bytes
/// well defined (NVMe leaves the result of overlapping writes undefined, Rust
/// does not allow data races).
const STRIPE: usize = 64 * 1024;

/// A RAM-backed bdev.
pub struct RamBdev {
    name: String,
    block_size: u32,
    num_blocks: u64,
    stripes: Vec<Mutex<Box<[u8]>>>,
    uuid: [u8; 16],
}

impl RamBdev {
    /// The same bdev with this UUID (and so the namespace's NGUID/UUID).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = uuid;
        self
    }

    /// `size_bytes` of zeroed memory in `block_size` blocks.
    ///
    /// # Errors
    /// A message when the size is 0, not a multiple of the block size, or the
    /// block size is not 512 or 4096.
    pub fn new(name: &str, size_bytes: u64, block_size: u32) -> Result<Self, String> {
        super::check_block_size(block_size)?;
        if size_bytes == 0 || !size_bytes.is_multiple_of(u64::from(block_size)) {
            return Err(format!(
                "size {size_bytes} bytes is not a positive multiple of the {block_size}-byte block size"
            ));
        }
        let size = usize::try_from(size_bytes).map_err(|_| format!("size {size_bytes} bytes is too large"))?;
        let too_big = || format!("cannot allocate {size_bytes} bytes of memory");
        let mut stripes = Vec::new();
        stripes
            .try_reserve_exact(size.div_ceil(STRIPE))
            .map_err(|_| too_big())?;
        for i in 0..size.div_ceil(STRIPE) {
            // Fallible, so a size the allocator refuses is an error, not an abort.
            let n = STRIPE.min(size - i * STRIPE);
            let mut v: Vec<u8> = Vec::new();
            v.try_reserve_exact(n).map_err(|_| too_big())?;
            v.resize(n, 0);
            stripes.push(Mutex::new(v.into_boxed_slice()));
        }
        Ok(RamBdev {
            name: name.to_string(),
            block_size,
            num_blocks: size_bytes / u64::from(block_size),
            stripes,
            uuid: uuid_from_name("ram", name),
        })
    }

    /// Calls `f(stripe bytes, offset in the caller's buffer)` for each stripe piece of `[start, start+len)`.
    fn each(&self, start: usize, len: usize, mut f: impl FnMut(&mut [u8], usize)) {
        let mut done = 0;
        while done < len {
            let at = start + done;
            let (i, off) = (at / STRIPE, at % STRIPE);
            let n = (STRIPE - off).min(len - done);
            let mut s = self.stripes[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&mut s[off..off + n], done);
            done += n;
        }
    }

    fn span(&self, lba: u64, blocks: u64) -> Result<(usize, usize), BdevError> {
        check_range(lba, blocks, self.num_blocks)?;
        let bs = u64::from(self.block_size);
        Ok(((lba * bs) as usize, (blocks * bs) as usize))
    }
}

impl Bdev for RamBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn product_name(&self) -> &'static str {
        "Malloc disk"
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
        let (start, len) = self.span(lba, blocks_in(buf.len(), self.block_size)?)?;
        self.each(start, len, |s, at| buf[at..at + s.len()].copy_from_slice(s));
        Ok(())
    }
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BdevError> {
        let (start, len) = self.span(lba, blocks_in(data.len(), self.block_size)?)?;
        self.each(start, len, |s, at| s.copy_from_slice(&data[at..at + s.len()]));
        Ok(())
    }
    fn write_zeroes(&self, lba: u64, blocks: u64) -> Result<(), BdevError> {
        let (start, len) = self.span(lba, blocks)?;
        self.each(start, len, |s, _| s.fill(0));
        Ok(())
    }
    fn unmap(&self, lba: u64, blocks: u64) -> Result<(), BdevError> {
        self.write_zeroes(lba, blocks)
    }
    fn flush(&self) -> Result<(), BdevError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back_across_stripes() {
        let b = RamBdev::new("Ram0", 256 * 1024, 512).unwrap();
        assert_eq!(b.num_blocks(), 512);
        let data: Vec<u8> = (0..200 * 512).map(|i| (i % 251) as u8).collect();
        b.write(100, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        b.read(100, &mut back).unwrap();
        assert_eq!(back, data);
        b.write_zeroes(150, 10).unwrap();
        b.read(100, &mut back).unwrap();
        assert!(back[50 * 512..60 * 512].iter().all(|&x| x == 0));
        assert_eq!(&back[..50 * 512], &data[..50 * 512]);
        assert!(matches!(b.write(511, &[0u8; 1024]), Err(BdevError::OutOfRange { .. })));
        assert!(matches!(b.read(0, &mut [0u8; 100]), Err(BdevError::Misaligned { .. })));
        assert!(RamBdev::new("x", 1000, 512).is_err());
        assert!(RamBdev::new("x", 4096, 1024).is_err());
    }
}
