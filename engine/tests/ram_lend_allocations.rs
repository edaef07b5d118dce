//! A RAM bdev lends its memory for a send without a heap allocation: the
//! stripe list and the lent slices live on the stack for one send's worth of
//! ranges (`lull_proto::target_queue::SEND_SLICES` of up to 128 KiB each).
//! Counted with a global allocator that counts this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use lull_engine::bdev::{Bdev, RamBdev};
use lull_proto::target_queue::SEND_SLICES;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting allocations and reallocations made by the
/// calling thread.
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; the count is a thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's `layout` is forwarded as `alloc` received it.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: `ptr` was allocated by `System` (through this allocator)
        // with `layout`, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn a_send_worth_of_ranges_is_lent_without_allocating() {
    let bdev = RamBdev::new("Ram0", 64 << 20, 4096).unwrap();
    let source = bdev.read_source().expect("a RAM bdev lends its memory");
    // One send's worth: 32 reads of 4 KiB and 32 of 128 KiB across stripes,
    // some sharing a stripe.
    let mut ranges = [(0u64, 0usize); SEND_SLICES];
    for (k, r) in ranges.iter_mut().enumerate() {
        let k = k as u64;
        *r = if k % 2 == 0 {
            ((k * 40_961) % (60 << 20) / 4096 * 4096, 4096)
        } else {
            ((k * 1_048_573) % (60 << 20) / 4096 * 4096 + 61_440, 131_072)
        };
    }
    let mut bytes = 0;
    let before = allocations();
    for _ in 0..100 {
        source
            .lend(&ranges, &mut |lent| {
                bytes += lent.iter().map(|s| s.len()).sum::<usize>()
            })
            .unwrap();
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations in 100 lends of {SEND_SLICES} ranges"
    );
    assert_eq!(bytes, 100 * 32 * (4096 + 131_072));
}
