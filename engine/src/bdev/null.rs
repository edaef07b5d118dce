//! `null`: discards writes, reads zeroes (SPDK's null bdev), for measuring
//! everything but the storage.

use std::sync::Arc;

use lull_proto::read_source::{ReadSource, SourceRangeError};
use lull_reactor::Context;

use super::{Bdev, BdevDone, BdevInfo, BdevIo, check_range, uuid_from_name};

/// A bdev with no storage behind it.
pub struct NullBdev {
    info: BdevInfo,
    zeroes: Arc<Zeroes>,
}

/// What a null bdev's blocks read as, for the NVMe/TCP target to write
/// straight into its C2HData PDUs.
struct Zeroes {
    /// Bytes in all.
    size: u64,
}

impl ReadSource for Zeroes {
    fn size(&self) -> u64 {
        self.size
    }

    fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        if at.checked_add(dst.len() as u64).is_none_or(|end| end > self.size) {
            return Err(SourceRangeError {
                at,
                len: dst.len(),
                size: self.size,
            });
        }
        dst.fill(0);
        Ok(())
    }
}

impl NullBdev {
    /// The same bdev with this UUID (and so the namespace's NGUID/UUID).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.info.uuid = uuid;
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
        let Some(size) = num_blocks.checked_mul(u64::from(block_size)) else {
            return Err(format!(
                "num_blocks {num_blocks} x block_size {block_size} overflows; allowed 1..={}",
                u64::MAX / u64::from(block_size)
            ));
        };
        Ok(NullBdev {
            zeroes: Arc::new(Zeroes { size }),
            info: BdevInfo {
                name: name.to_string(),
                product_name: "Null disk",
                block_size,
                num_blocks,
                uuid: uuid_from_name("null", name),
            },
        })
    }
}

impl Bdev for NullBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    /// Completes `done` before returning: a Read gets zeroes, everything
    /// else only has its range checked.
    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        match io {
            BdevIo::Read { lba, blocks, mut buf } => {
                buf.clear();
                let r = self.info.byte_range(lba, blocks).map(|(_, len)| buf.resize(len, 0));
                done.complete(cx, r, buf);
            }
            BdevIo::Write { lba, data } => {
                let r = self.info.data_blocks(lba, data.len()).map(|_| ());
                done.complete(cx, r, data);
            }
            BdevIo::WriteZeroes { lba, blocks } | BdevIo::Unmap { lba, blocks } => {
                done.complete(cx, check_range(lba, blocks, self.info.num_blocks), Vec::new());
            }
            BdevIo::Flush => done.complete(cx, Ok(()), Vec::new()),
        }
    }

    /// Zeroes: a Read served by the target writes them straight into the
    /// C2HData PDU.
    fn read_source(&self) -> Option<Arc<dyn ReadSource>> {
        Some(self.zeroes.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bdev::BdevError;
    use crate::bdev::test_support::{OnReactor, read};

    #[test]
    fn reads_are_zeroes_writes_vanish_and_everything_completes_before_submit_returns() {
        let r = OnReactor::start();
        let b: Arc<dyn Bdev> = Arc::new(NullBdev::new("Null0", 64, 4096).unwrap());
        assert_eq!(
            (b.info().product_name, b.info().block_size, b.info().num_blocks),
            ("Null disk", 4096, 64)
        );
        let w = r.submit(
            &b,
            BdevIo::Write {
                lba: 0,
                data: vec![0xAB; 8192],
            },
        );
        assert_eq!(
            (w.result, w.inline, w.calls, w.buf),
            (Ok(()), true, 1, vec![0xAB; 8192])
        );
        let mut stale = Vec::with_capacity(8192);
        stale.extend_from_slice(&[0xFF; 8192]);
        let rd = r.submit(
            &b,
            BdevIo::Read {
                lba: 0,
                blocks: 2,
                buf: stale,
            },
        );
        assert_eq!((rd.result, rd.inline, rd.calls), (Ok(()), true, 1));
        assert_eq!(rd.buf, vec![0u8; 8192]);
        for io in [
            BdevIo::WriteZeroes { lba: 60, blocks: 4 },
            BdevIo::Unmap { lba: 0, blocks: 64 },
            BdevIo::Flush,
        ] {
            let o = r.submit(&b, io);
            assert_eq!((o.result, o.inline, o.calls), (Ok(()), true, 1));
        }
    }

    #[test]
    fn out_of_range_and_misaligned_fail_with_the_buffer_handed_back() {
        let r = OnReactor::start();
        let b: Arc<dyn Bdev> = Arc::new(NullBdev::new("Null0", 64, 512).unwrap());
        let rd = r.submit(&b, read(63, 2, 1024));
        assert_eq!(
            rd.result,
            Err(BdevError::OutOfRange {
                lba: 63,
                end: 65,
                num_blocks: 64
            })
        );
        assert_eq!((rd.calls, rd.buf.len(), rd.buf.capacity()), (1, 0, 1024));
        let w = r.submit(
            &b,
            BdevIo::Write {
                lba: 0,
                data: vec![1; 513],
            },
        );
        assert_eq!(
            w.result,
            Err(BdevError::Misaligned {
                len: 513,
                block_size: 512
            })
        );
        assert_eq!((w.calls, w.buf.len()), (1, 513));
        let z = r.submit(&b, BdevIo::WriteZeroes { lba: 64, blocks: 1 });
        assert!(matches!(z.result, Err(BdevError::OutOfRange { .. })));
    }
}
