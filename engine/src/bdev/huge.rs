//! Memory for RAM bdevs: one anonymous mapping on 2 MiB pages where the
//! kernel gives them.
//!
//! A RAM bdev's reads land anywhere in it: on 4 KiB pages nearly every read
//! of a large bdev misses the TLB, and in a virtual machine a miss walks two
//! page tables. SPDK's malloc bdev lives in hugepage memory for the same
//! reason. Here transparent huge pages are asked for with `MADV_HUGEPAGE`
//! (granted when `/sys/kernel/mm/transparent_hugepage/enabled` is `always`
//! or `madvise`; otherwise the mapping is ordinary pages and works the
//! same), and the memory is faulted in when the bdev is made
//! (`MADV_POPULATE_WRITE`), so a size the machine cannot hold is an error
//! then rather than a process killed at its first write.

use std::ffi::c_void;
use std::ptr::NonNull;

use rustix::mm::{Advice, MapFlags, ProtFlags, madvise, mmap_anonymous, munmap};

/// Size and alignment of a huge page on x86-64 and arm64 (4 KiB granule), bytes.
pub(super) const HUGE_PAGE: usize = 2 << 20;

/// `len` bytes of zeroed memory, mapped privately, aligned to [`HUGE_PAGE`]
/// (when at least that long), owned exclusively, unmapped on drop.
///
/// It hands out a raw pointer only: whoever shares it between threads
/// synchronises the accesses (the RAM bdev: a mutex per stripe).
pub(super) struct HugeRegion {
    /// The whole mapping (what `munmap` is given).
    map: NonNull<c_void>,
    map_len: usize,
    /// The usable part: `len` bytes from `start`, inside the mapping.
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory owned by this value alone; it is
// reached only through `as_ptr`, whose users synchronise their accesses
// (documented on the type), so moving or sharing the owner between threads
// is sound.
unsafe impl Send for HugeRegion {}
// SAFETY: as for `Send`: no method reads or writes the memory itself.
unsafe impl Sync for HugeRegion {}

impl HugeRegion {
    /// Maps `len` (> 0) zeroed bytes and faults them in.
    ///
    /// # Errors
    /// A message when the address space or the memory is not there.
    pub(super) fn zeroed(len: usize) -> Result<Self, String> {
        let too_big = |e: rustix::io::Errno| format!("cannot allocate {len} bytes of memory: {e}");
        let huge = len >= HUGE_PAGE;
        // One huge page more than asked, so an aligned start fits inside.
        let map_len = if huge { len.checked_add(HUGE_PAGE) } else { Some(len) }
            .ok_or_else(|| format!("cannot allocate {len} bytes of memory: too large"))?;
        // SAFETY: a new private anonymous mapping at an address the kernel
        // picks overlaps nothing of ours.
        let map = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                map_len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .map_err(too_big)?;
        let mut region = HugeRegion {
            map: NonNull::new(map).ok_or_else(|| format!("cannot allocate {len} bytes of memory: null mapping"))?,
            map_len,
            start: NonNull::dangling(),
            len,
        };
        let offset = if huge {
            (map as usize).next_multiple_of(HUGE_PAGE) - map as usize
        } else {
            0
        };
        // SAFETY: `offset + len <= map_len` (offset < HUGE_PAGE), so this
        // stays inside the mapping just made.
        let start = unsafe { map.cast::<u8>().add(offset) };
        region.start = NonNull::new(start).ok_or_else(|| "null mapping".to_string())?;
        if huge {
            // SAFETY: advice on a range of our own mapping; it changes the
            // pages backing it, never its contents. Refused (THP off, an
            // old kernel): ordinary pages, which is fine.
            let _ = unsafe { madvise(start.cast(), len, Advice::LinuxHugepage) };
        }
        // SAFETY: as above; populating writes nothing but zero pages in.
        match unsafe { madvise(start.cast(), len, Advice::LinuxPopulateWrite) } {
            Ok(()) => {}
            // Before Linux 5.14: touch it instead (the memory is ours and
            // zero already; writing zeroes faults each page in).
            Err(rustix::io::Errno::INVAL) => {
                // SAFETY: `start..start+len` is inside our mapping, writable,
                // and nothing else refers to it yet.
                unsafe { std::ptr::write_bytes(start, 0, len) }
            }
            Err(e) => return Err(too_big(e)),
        }
        Ok(region)
    }

    /// The first byte; [`len`](Self::len) bytes follow, all initialised.
    pub(super) fn as_ptr(&self) -> *mut u8 {
        self.start.as_ptr()
    }

    /// Length, bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for HugeRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `zeroed`, with its length; nothing
        // refers to it once its owner is dropped.
        let _ = unsafe { munmap(self.map.as_ptr(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_zeroed_aligned_and_holds_what_is_written() {
        for len in [4096, 100_000, HUGE_PAGE, 3 * HUGE_PAGE + 4096] {
            let r = HugeRegion::zeroed(len).unwrap();
            assert_eq!(r.len(), len);
            if len >= HUGE_PAGE {
                assert_eq!(r.as_ptr() as usize % HUGE_PAGE, 0, "{len}");
            }
            // SAFETY: the region's bytes, this thread alone.
            let s = unsafe { std::slice::from_raw_parts_mut(r.as_ptr(), len) };
            assert!(s.iter().all(|&b| b == 0));
            s[len - 1] = 0xA5;
            s[0] = 0x5A;
            assert_eq!((s[0], s[len - 1]), (0x5A, 0xA5));
        }
    }

    #[test]
    fn a_size_the_address_space_cannot_hold_is_an_error() {
        let e = HugeRegion::zeroed(usize::MAX - 4096).err().unwrap();
        assert!(e.contains("cannot allocate"), "{e}");
    }
}
