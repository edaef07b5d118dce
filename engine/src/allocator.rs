//! Process-wide allocator settings for the data path.
//!
//! Every H2CData transfer and every bdev buffer is a heap allocation of up
//! to MDTS (128 KiB by default) that lives for one command. glibc's
//! defaults serve allocations from 128 KiB up with `mmap`, and hand the top
//! of a reactor thread's arena back to the kernel (`madvise(MADV_DONTNEED)`)
//! once 128 KiB of it is free, so the next command's buffer page-faults its
//! 32 pages in again: at QD 16 of 128 KiB writes that was about 500
//! `madvise` calls per second and a sixth of the write throughput
//! (docs/performance.md). SPDK avoids this with buffer pools allocated at
//! start; until lull's queues have pools of their own, the allocator keeps
//! what it freed.

/// Allocations below this come from the heap, not `mmap` (4 MiB: above any
/// MDTS lull grants).
const MMAP_THRESHOLD: i32 = 4 << 20;
/// Free memory an arena keeps at its top before returning it to the kernel
/// (32 MiB: QD 128 of 128 KiB buffers and some).
const TRIM_THRESHOLD: i32 = 32 << 20;

/// Makes freed data buffers stay with the allocator for reuse (glibc's
/// `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD`). Call once, first thing in
/// `main`, before any thread starts; elsewhere than glibc it does nothing.
/// An environment that sets `MALLOC_MMAP_THRESHOLD_` or
/// `MALLOC_TRIM_THRESHOLD_` keeps its own values.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: mallopt changes a threshold of the allocator's own state
            // under its lock; no memory is touched and no pointer is passed.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
        }
    }
}
