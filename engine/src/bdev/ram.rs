//! `ram`: a bdev in memory (SPDK's malloc bdev).

use std::sync::{Arc, Mutex};

use lull_proto::read_source::{ReadSource, SourceRangeError};
use lull_proto::target_queue::SEND_SLICES;
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

/// Stripes and ranges one lend handles without allocating: 64 ranges (one
/// send's slices) of up to 128 KiB touch at most 64 x 3.
const LEND_INLINE: usize = 192;

/// The stripes bytes `at .. at + len` touch (none when `len` is 0).
fn stripes_of(at: usize, len: usize) -> std::ops::Range<usize> {
    if len == 0 {
        return 0..0;
    }
    at / STRIPE..(at + len - 1) / STRIPE + 1
}

/// Moves the distinct values of sorted `v` to its front; returns how many.
fn dedup_sorted(v: &mut [usize]) -> usize {
    let mut n = 0;
    for i in 0..v.len() {
        if n == 0 || v[i] != v[n - 1] {
            v[n] = v[i];
            n += 1;
        }
    }
    n
}

impl Stripes {
    /// Holds the lock of `stripes[0]`, then the rest's (one stack frame
    /// each, so nothing is allocated for the guards), then calls `f` with
    /// `ranges`' bytes; the checked ranges lie within the region and every
    /// stripe they touch is in `stripes`.
    fn lend_locked(&self, stripes: &[usize], ranges: &[(u64, usize)], f: &mut dyn FnMut(&[&[u8]])) {
        if let Some((&first, rest)) = stripes.split_first() {
            let _held = self.locks[first].lock().unwrap_or_else(|p| p.into_inner());
            return self.lend_locked(rest, ranges, f);
        }
        let slice = |&(at, len): &(u64, usize)| -> &[u8] {
            // SAFETY: `at + len` is within the region (checked by `lend`), and
            // every stripe the range touches is locked by a caller frame until
            // `f` returns and the slices are dropped: writers reach these
            // bytes only under those locks, so nothing changes them while the
            // shared slices exist.
            unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(at as usize), len) }
        };
        if ranges.len() <= SEND_SLICES {
            let mut lent: [&[u8]; SEND_SLICES] = [&[]; SEND_SLICES];
            for (l, r) in lent.iter_mut().zip(ranges) {
                *l = slice(r);
            }
            f(&lent[..ranges.len()]);
        } else {
            let lent: Vec<&[u8]> = ranges.iter().map(slice).collect();
            f(&lent);
        }
    }

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
    fn size(&self) -> u64 {
        self.size
    }

    fn lends(&self) -> bool {
        true
    }

    /// Locks every stripe the ranges touch, each once and in ascending
    /// order (so two lenders cannot deadlock, and a writer, which holds one
    /// stripe at a time, cannot either), then lends the memory itself.
    /// Allocates nothing for up to [`LEND_INLINE`] stripes and ranges.
    fn lend(&self, ranges: &[(u64, usize)], f: &mut dyn FnMut(&[&[u8]])) -> Result<(), SourceRangeError> {
        let mut touched = 0;
        for &(at, len) in ranges {
            match at.checked_add(len as u64) {
                // Within `size`, which is a usize (the bdev is in memory).
                Some(end) if end <= self.size => touched += stripes_of(at as usize, len).len(),
                _ => {
                    return Err(SourceRangeError {
                        at,
                        len,
                        size: self.size,
                    });
                }
            }
        }
        let mut inline = [0usize; LEND_INLINE];
        let mut spilled = Vec::new();
        let list: &mut [usize] = if touched <= LEND_INLINE {
            &mut inline[..touched]
        } else {
            spilled.resize(touched, 0);
            &mut spilled
        };
        let mut n = 0;
        for &(at, len) in ranges {
            for i in stripes_of(at as usize, len) {
                list[n] = i;
                n += 1;
            }
        }
        list.sort_unstable();
        let distinct = dedup_sorted(list);
        self.lend_locked(&list[..distinct], ranges, f);
        Ok(())
    }

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
    use std::sync::Arc;

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

    #[test]
    fn lent_ranges_are_the_bytes_and_stripes_shared_by_several_are_locked_once() {
        let b = RamBdev::new("Ram0", 4 * STRIPE as u64, 512).unwrap();
        let data: Vec<u8> = (0..4 * STRIPE).map(|i| (i % 253) as u8).collect();
        b.write(0, &data).unwrap();
        let source = b.read_source().unwrap();
        assert!(source.lends());
        assert_eq!(source.size(), 4 * STRIPE as u64);
        // Two ranges in stripe 0 (a second lock of it would never return),
        // one across stripes 1 and 2, one at the very end, one empty.
        let s = STRIPE as u64;
        let ranges = [(0, 4096), (8192, 512), (2 * s - 100, 300), (4 * s - 4096, 4096), (s, 0)];
        let mut calls = 0;
        source
            .lend(&ranges, &mut |lent| {
                calls += 1;
                assert_eq!(lent.len(), ranges.len());
                for (&(at, len), got) in ranges.iter().zip(lent) {
                    assert_eq!(*got, &data[at as usize..at as usize + len], "at {at}");
                }
            })
            .unwrap();
        assert_eq!(calls, 1);
        // Past the end: an error, and `f` is not called.
        let past = source.lend(&[(0, 512), (4 * s - 512, 1024)], &mut |_| calls += 1);
        assert_eq!(
            past,
            Err(SourceRangeError {
                at: 4 * s - 512,
                len: 1024,
                size: 4 * s
            })
        );
        assert_eq!(calls, 1);
        // The locks were all released: a write to every stripe completes.
        b.write(0, &vec![0u8; 4 * STRIPE]).unwrap();
    }

    #[test]
    fn a_lend_of_more_stripes_and_ranges_than_fit_inline_is_the_same_bytes() {
        let stripes = LEND_INLINE + 8;
        let b = RamBdev::new("Ram0", (stripes * STRIPE) as u64, 512).unwrap();
        let data: Vec<u8> = (0..stripes * STRIPE).map(|i| (i % 241) as u8).collect();
        b.write(0, &data).unwrap();
        let source = b.read_source().unwrap();
        // One range over every stripe, and 100 of 512 bytes (more than one
        // send's slices), in no order.
        let mut ranges = vec![(0u64, stripes * STRIPE)];
        ranges.extend((0..100u64).map(|k| ((k * 7919 % 100) * 65_000, 512)));
        let mut checked = 0;
        source
            .lend(&ranges, &mut |lent| {
                for (&(at, len), got) in ranges.iter().zip(lent) {
                    assert_eq!(*got, &data[at as usize..at as usize + len]);
                    checked += 1;
                }
            })
            .unwrap();
        assert_eq!(checked, 101);
        b.write(0, &data).unwrap();
    }

    #[test]
    fn a_writer_waits_while_its_stripe_is_lent() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let b = Arc::new(RamBdev::new("Ram0", 2 * STRIPE as u64, 512).unwrap());
        let source = b.read_source().unwrap();
        let wrote = Arc::new(AtomicBool::new(false));
        let mut writer = None;
        source
            .lend(&[(STRIPE as u64 + 4096, 4096)], &mut |lent| {
                let (b, done) = (b.clone(), wrote.clone());
                writer = Some(std::thread::spawn(move || {
                    b.write((STRIPE as u64 + 4096) / 512, &[7u8; 4096]).unwrap();
                    done.store(true, Ordering::SeqCst);
                }));
                // Had the lend not held the stripe, the writer would have
                // finished in this time on any machine.
                std::thread::sleep(std::time::Duration::from_millis(100));
                assert!(!wrote.load(Ordering::SeqCst), "a write went through a lent stripe");
                assert_eq!(lent[0], &[0u8; 4096][..]);
            })
            .unwrap();
        writer.expect("spawned").join().unwrap();
        assert!(wrote.load(Ordering::SeqCst), "the write completes once the lend ends");
        let mut back = vec![0u8; 4096];
        b.read((STRIPE as u64 + 4096) / 512, &mut back).unwrap();
        assert_eq!(back, vec![7u8; 4096]);
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
