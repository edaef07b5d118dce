//! `ram`: a bdev in memory (SPDK's malloc bdev).

use std::sync::{Arc, Mutex};

use lull_proto::read_source::{ReadSource, SourceRangeError};
use lull_reactor::Context;

use super::huge::HugeRegion;
use super::stream_copy::copy_streaming;
use super::{Bdev, BdevDone, BdevError, BdevInfo, BdevIo, blocks_in, uuid_from_name};

/// Bytes per lock stripe. Cores write to different stripes without
/// contending; a stripe's mutex makes concurrent access to the same bytes
/// well defined (NVMe leaves the result of overlapping writes undefined, Rust
/// does not allow data races).
const STRIPE: usize = 64 * 1024;

/// A RAM-backed bdev.
pub struct RamBdev {
    info: BdevInfo,
    memory: Arc<Stripes>,
}

/// The bdev's bytes: one [`HugeRegion`], in stripes of [`STRIPE`] bytes each
/// behind its own mutex; shared with the NVMe/TCP target as a
/// [`ReadSource`].
struct Stripes {
    memory: HugeRegion,
    /// Lock `i` guards bytes `i x STRIPE .. (i + 1) x STRIPE`.
    locks: Box<[Mutex<()>]>,
    /// Bytes in all (the last stripe may be short).
    size: u64,
}

impl Stripes {
    /// Calls `f(stripe bytes, offset in the caller's buffer)` for each
    /// stripe piece of `[start, start+len)`, which the caller has checked
    /// lies within the bdev.
    fn each(&self, start: usize, len: usize, mut f: impl FnMut(&mut [u8], usize)) {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.memory.len()),
            "range checked by the caller"
        );
        let mut done = 0;
        while done < len {
            let at = start + done;
            let (i, off) = (at / STRIPE, at % STRIPE);
            let n = (STRIPE - off).min(len - done);
            let _held = self.locks[i].lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: `at + n` is within the region (asserted above), and
            // `at .. at + n` lies inside stripe `i` (n <= STRIPE - off), whose
            // bytes are only ever reached here, under lock `i`: no other
            // reference to them exists while this one does.
            let s = unsafe { std::slice::from_raw_parts_mut(self.memory.as_ptr().add(at), n) };
            f(s, done);
            done += n;
        }
    }
}

impl ReadSource for Stripes {
    fn copy_to(&self, at: u64, dst: &mut [u8]) -> Result<(), SourceRangeError> {
        match at.checked_add(dst.len() as u64) {
            // Within `size`, which is a usize (the bdev is in memory).
            Some(end) if end <= self.size => {
                self.each(at as usize, dst.len(), |s, to| dst[to..to + s.len()].copy_from_slice(s));
                Ok(())
            }
            _ => Err(SourceRangeError {
                at,
                len: dst.len(),
                size: self.size,
            }),
        }
    }
}

impl RamBdev {
    /// The same bdev with this UUID (and so the namespace's NGUID/UUID).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.info.uuid = uuid;
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
        let memory = HugeRegion::zeroed(size)?;
        let locks = (0..size.div_ceil(STRIPE)).map(|_| Mutex::new(())).collect();
        Ok(RamBdev {
            info: BdevInfo {
                name: name.to_string(),
                product_name: "Malloc disk",
                block_size,
                num_blocks: size_bytes / u64::from(block_size),
                uuid: uuid_from_name("ram", name),
            },
            memory: Arc::new(Stripes {
                memory,
                locks,
                size: size_bytes,
            }),
        })
    }

    fn each(&self, start: usize, len: usize, f: impl FnMut(&mut [u8], usize)) {
        self.memory.each(start, len, f);
    }

    fn span(&self, lba: u64, blocks: u64) -> Result<(usize, usize), BdevError> {
        let (start, len) = self.info.byte_range(lba, blocks)?;
        // The bdev is in memory, so its size in bytes fits a usize.
        Ok((start as usize, len))
    }

    /// Appends `blocks` blocks from `lba` to `buf` (after emptying it),
    /// without zeroing the space first.
    fn read_into(&self, lba: u64, blocks: u64, buf: &mut Vec<u8>) -> Result<(), BdevError> {
        buf.clear();
        let (start, len) = self.span(lba, blocks)?;
        buf.reserve(len);
        self.each(start, len, |s, _| buf.extend_from_slice(s));
        Ok(())
    }

    /// Reads `buf.len() / block_size` blocks from `lba` (blocking; for use
    /// off the reactors).
    ///
    /// # Errors
    /// [`BdevError::Misaligned`], [`BdevError::OutOfRange`].
    pub fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let (start, len) = self.span(lba, blocks_in(buf.len(), self.info.block_size)?)?;
        self.each(start, len, |s, at| buf[at..at + s.len()].copy_from_slice(s));
        Ok(())
    }

    /// Writes `data.len() / block_size` blocks at `lba` (blocking; for use
    /// off the reactors, e.g. to preload data).
    ///
    /// # Errors
    /// [`BdevError::Misaligned`], [`BdevError::OutOfRange`].
    pub fn write(&self, lba: u64, data: &[u8]) -> Result<(), BdevError> {
        let (start, len) = self.span(lba, blocks_in(data.len(), self.info.block_size)?)?;
        self.each(start, len, |s, at| copy_streaming(s, &data[at..at + s.len()]));
        Ok(())
    }

    /// Writes zeroes to `blocks` blocks at `lba` (what deallocation does
    /// too: the blocks then read as zeroes).
    ///
    /// # Errors
    /// [`BdevError::OutOfRange`].
    pub fn write_zeroes(&self, lba: u64, blocks: u64) -> Result<(), BdevError> {
        let (start, len) = self.span(lba, blocks)?;
        self.each(start, len, |s, _| s.fill(0));
        Ok(())
    }
}

impl Bdev for RamBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    /// Completes `done` before returning: the copy is the whole operation.
    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        match io {
            BdevIo::Read { lba, blocks, mut buf } => {
                let r = self.read_into(lba, blocks, &mut buf);
                if r.is_err() {
                    buf.clear();
                }
                done.complete(cx, r, buf);
            }
            BdevIo::Write { lba, data } => {
                let r = self.write(lba, &data);
                done.complete(cx, r, data);
            }
            BdevIo::WriteZeroes { lba, blocks } | BdevIo::Unmap { lba, blocks } => {
                done.complete(cx, self.write_zeroes(lba, blocks), Vec::new());
            }
            BdevIo::Flush => done.complete(cx, Ok(()), Vec::new()),
        }
    }

    /// Its memory: a Read served by the target is copied from the stripes
    /// straight into the C2HData PDU.
    fn read_source(&self) -> Option<Arc<dyn ReadSource>> {
        Some(self.memory.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back_across_stripes() {
        let b = RamBdev::new("Ram0", 256 * 1024, 512).unwrap();
        assert_eq!(b.info().num_blocks, 512);
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

#[cfg(test)]
mod submit_tests {
    use std::sync::Arc;

    use super::*;
    use crate::bdev::test_support::{OnReactor, pattern, read};

    fn ram() -> Arc<dyn Bdev> {
        Arc::new(RamBdev::new("Ram0", 256 * 1024, 512).unwrap())
    }

    #[test]
    fn submit_round_trips_data_across_stripes_and_completes_before_returning() {
        let (r, b) = (OnReactor::start(), ram());
        // 200 blocks from LBA 100: bytes 51200..153600, across two 64 KiB stripes.
        let data = pattern(200 * 512, 3);
        let at = data.as_ptr() as usize;
        let w = r.submit(&b, BdevIo::Write { lba: 100, data });
        assert_eq!((w.result, w.inline, w.calls), (Ok(()), true, 1));
        assert_eq!(w.buf.as_ptr() as usize, at, "the write's own buffer comes back");

        let rd = r.submit(&b, read(100, 200, 200 * 512));
        assert_eq!((rd.result, rd.inline, rd.calls), (Ok(()), true, 1));
        assert_eq!(rd.buf, pattern(200 * 512, 3));
        assert_eq!(rd.buf.capacity(), 200 * 512, "filled in place, not reallocated");

        // A buffer with too little capacity is grown, not refused.
        let rd = r.submit(&b, read(150, 2, 0));
        assert_eq!(rd.buf, pattern(200 * 512, 3)[50 * 512..52 * 512]);

        let z = r.submit(&b, BdevIo::WriteZeroes { lba: 110, blocks: 10 });
        assert_eq!((z.result, z.inline, z.calls, z.buf.len()), (Ok(()), true, 1, 0));
        let u = r.submit(&b, BdevIo::Unmap { lba: 280, blocks: 20 });
        assert_eq!((u.result, u.calls), (Ok(()), 1));
        let rd = r.submit(&b, read(100, 200, 200 * 512));
        let mut expect = pattern(200 * 512, 3);
        expect[10 * 512..20 * 512].fill(0);
        expect[180 * 512..].fill(0);
        assert_eq!(rd.buf, expect);

        let f = r.submit(&b, BdevIo::Flush);
        assert_eq!((f.result, f.inline, f.calls), (Ok(()), true, 1));
    }

    #[test]
    fn submit_errors_hand_the_buffer_back_once() {
        let (r, b) = (OnReactor::start(), ram());
        let rd = r.submit(&b, read(511, 2, 4096));
        assert_eq!(
            rd.result,
            Err(BdevError::OutOfRange {
                lba: 511,
                end: 513,
                num_blocks: 512
            })
        );
        assert_eq!(
            (rd.inline, rd.calls, rd.buf.len(), rd.buf.capacity()),
            (true, 1, 0, 4096)
        );

        let w = r.submit(
            &b,
            BdevIo::Write {
                lba: 0,
                data: vec![7; 100],
            },
        );
        assert_eq!(
            w.result,
            Err(BdevError::Misaligned {
                len: 100,
                block_size: 512
            })
        );
        assert_eq!((w.calls, w.buf), (1, vec![7; 100]));

        let w = r.submit(
            &b,
            BdevIo::Write {
                lba: 511,
                data: vec![7; 1024],
            },
        );
        assert!(matches!(w.result, Err(BdevError::OutOfRange { end: 513, .. })));
        assert_eq!(w.buf.len(), 1024);

        let z = r.submit(
            &b,
            BdevIo::WriteZeroes {
                lba: u64::MAX,
                blocks: 2,
            },
        );
        assert!(matches!(z.result, Err(BdevError::OutOfRange { .. })));
        let u = r.submit(&b, BdevIo::Unmap { lba: 500, blocks: 13 });
        assert!(matches!(u.result, Err(BdevError::OutOfRange { end: 513, .. })));
        assert_eq!(u.calls, 1);
    }
}
