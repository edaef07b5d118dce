//! `stream_copy`: copying a write's data into bdev memory with non-temporal
//! (streaming) stores.
//!
//! Why: a write into the RAM bdev lands on lines that are not in the cache
//! (the bdev is far larger than it, and a write goes where the host says).
//! An ordinary copy first reads every destination line in (read for
//! ownership) only to overwrite all of it, and leaves the cache full of
//! lines nobody is about to read, evicting the receive buffers that are.
//! Streaming stores write whole lines without reading them. Measured on the
//! development machine (`perf/scripts/copy-bench.c`: random destinations in
//! a 256 MiB region on huge pages, warm source): 4 KiB 427 -> 365 ns,
//! 16 KiB 1.66 -> 0.90 us, 128 KiB 13.0 -> 6.6 us (docs/performance.md,
//! "Streaming stores for RAM writes").
//!
//! Below [`STREAM_MIN`] bytes, or where the CPU is not x86-64, it is a plain
//! copy.

/// Shortest copy done with streaming stores, bytes: one page. Shorter
/// writes are a few lines, where the fence costs more than the reads saved.
pub(crate) const STREAM_MIN: usize = 4096;

/// Copies `src` into `dst` (same length), with streaming stores when the
/// copy is at least [`STREAM_MIN`] bytes. Every store is globally visible
/// when it returns (it ends with a store fence), so a lock released after it
/// publishes the data as an ordinary copy would.
///
/// # Panics
/// If the lengths differ (a caller's bug, as for `copy_from_slice`).
pub(crate) fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_streaming: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if dst.len() >= STREAM_MIN {
        x86::copy(dst, src);
        return;
    }
    dst.copy_from_slice(src);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

    /// Bytes one streaming store writes.
    const LANE: usize = 16;

    /// Copies `src` into `dst` (equal lengths): an ordinary copy up to the
    /// first 16-byte-aligned destination byte, streaming stores of 16 bytes
    /// after it, an ordinary copy of the tail; then a store fence.
    pub(super) fn copy(dst: &mut [u8], src: &[u8]) {
        debug_assert_eq!(dst.len(), src.len());
        let head = dst.as_ptr().align_offset(LANE).min(dst.len());
        let (dst_head, dst_rest) = dst.split_at_mut(head);
        let (src_head, src_rest) = src.split_at(head);
        dst_head.copy_from_slice(src_head);
        let body = dst_rest.len() / LANE * LANE;
        let (dst_body, dst_tail) = dst_rest.split_at_mut(body);
        let (src_body, src_tail) = src_rest.split_at(body);
        for (d, s) in dst_body.chunks_exact_mut(LANE).zip(src_body.chunks_exact(LANE)) {
            // SAFETY: SSE2 is part of x86-64, so the intrinsics exist on
            // every CPU this runs on. `s` is 16 readable bytes (an unaligned
            // load is allowed); `d` is 16 writable bytes starting on a
            // 16-byte boundary (the body begins at the first aligned byte of
            // `dst` and advances in steps of 16), as `_mm_stream_si128`
            // requires; `d` and `s` are distinct slices, so they do not
            // overlap.
            unsafe {
                let v = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
                _mm_stream_si128(d.as_mut_ptr().cast::<__m128i>(), v);
            }
        }
        dst_tail.copy_from_slice(src_tail);
        // SAFETY: SSE is part of x86-64. The fence orders the streaming
        // stores before every later store, including the release of the lock
        // that guards these bytes: a reader that takes the lock sees them.
        unsafe { _mm_sfence() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alignment of source and destination, lengths around the
    /// threshold and the 16-byte lane, against `copy_from_slice`; bytes
    /// outside the destination range untouched.
    #[test]
    fn copies_every_alignment_and_length() {
        let src: Vec<u8> = (0..9000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in [0, 1, 15, 16, 17, 4095, 4096, 4097, 4111, 8192 + 5] {
            for d_off in 0..17 {
                for s_off in [0, 1, 7, 16] {
                    let mut dst = vec![0xA5u8; len + 40];
                    copy_streaming(&mut dst[d_off..d_off + len], &src[s_off..s_off + len]);
                    let mut want = vec![0xA5u8; len + 40];
                    want[d_off..d_off + len].copy_from_slice(&src[s_off..s_off + len]);
                    assert!(dst == want, "len {len} dst offset {d_off} src offset {s_off}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn unequal_lengths_panic_like_copy_from_slice() {
        copy_streaming(&mut [0u8; 4], &[0u8; 5]);
    }
}
