//! A RAM bdev lends its memory for a send without a heap allocation: the
//! stripe list and the lent slices live on the stack for one send's worth of
//! ranges (`lull_proto::target_queue::SEND_SLICES` of up to 128 KiB each).
//! Counted with a global allocator that counts this thread's allocations
//! (shared with lull-proto's steady-state test).

use lull_engine::bdev::{Bdev, RamBdev};
use lull_proto::target_queue::SEND_SLICES;

#[path = "../../proto/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations;

#[test]
fn a_send_worth_of_ranges_is_lent_without_allocating() {
    let bdev = RamBdev::new("Ram0", 64 << 20, 4096).unwrap();
    let source = bdev.read_source().expect("a RAM bdev lends its memory");
    // One send's worth: 32 reads of 4 KiB and 32 of 128 KiB across stripes,
    // some sharing a stripe.
    let mut ranges = [(0u64, 0usize); SEND_SLICES];
    for (k, r) in ranges.iter_mut().enumerate() {
        let k = k as u64;
        *r = if k.is_multiple_of(2) {
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
