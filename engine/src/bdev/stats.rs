//! Per-bdev I/O statistics, as SPDK's `bdev_get_iostat` reports them.
//!
//! Each reactor writes only its own cache-line-padded slot (an uncontended
//! atomic add on a line no other core writes); a reader sums the slots.
//! Counted as SPDK counts: successful reads, writes and unmaps (one per
//! deallocated range), with their latency from submission to completion in
//! ticks of 1 ns ([`TICK_RATE`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// Ticks per second of every latency and of `ticks` in the RPC results.
pub const TICK_RATE: u64 = 1_000_000_000;

/// Reactor slots with their own counters; reactors beyond share slots modulo
/// (still correct: every update is an atomic read-modify-write).
pub const STAT_SLOTS: usize = 64;

/// The kind of I/O counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// A read.
    Read,
    /// A write.
    Write,
    /// An unmap (deallocate) of one range.
    Unmap,
}

#[derive(Debug)]
struct Op {
    bytes: AtomicU64,
    ops: AtomicU64,
    latency: AtomicU64,
    max: AtomicU64,
    min: AtomicU64,
}

impl Default for Op {
    fn default() -> Self {
        Op {
            bytes: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            latency: AtomicU64::new(0),
            max: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    read: Op,
    write: Op,
    unmap: Op,
}

impl Slot {
    fn op(&self, kind: IoKind) -> &Op {
        match kind {
            IoKind::Read => &self.read,
            IoKind::Write => &self.write,
            IoKind::Unmap => &self.unmap,
        }
    }
}

/// Why an I/O failed, by SPDK's bdev I/O status names (`io_error` of
/// `bdev_get_iostat`). lull's bdevs fail an I/O only as a whole ("failed");
/// a Compare that finds other data is a "miscompare".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoErrorKind {
    /// The bdev failed the I/O (SPDK_BDEV_IO_STATUS_FAILED).
    Failed,
    /// A Compare found different data (SPDK_BDEV_IO_STATUS_MISCOMPARE).
    Miscompare,
}

impl IoErrorKind {
    const ALL: [IoErrorKind; 2] = [IoErrorKind::Miscompare, IoErrorKind::Failed];

    /// SPDK's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            IoErrorKind::Failed => "failed",
            IoErrorKind::Miscompare => "miscompare",
        }
    }

    fn index(self) -> usize {
        match self {
            IoErrorKind::Failed => 0,
            IoErrorKind::Miscompare => 1,
        }
    }
}

/// Totals of one kind of I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpStat {
    /// Bytes moved (or unmapped).
    pub bytes: u64,
    /// Operations.
    pub ops: u64,
    /// Sum of their latencies, ticks.
    pub latency_ticks: u64,
    /// Longest latency, ticks (0 when none).
    pub max_latency_ticks: u64,
    /// Shortest latency, ticks (0 when none, as SPDK writes it).
    pub min_latency_ticks: u64,
}

/// A snapshot of a bdev's statistics (summed over reactors, or one reactor's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStat {
    /// Reads.
    pub read: OpStat,
    /// Writes.
    pub write: OpStat,
    /// Unmaps.
    pub unmap: OpStat,
}

/// What [`BdevStats::reset`] clears (SPDK's `reset_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetMode {
    /// Every counter.
    All,
    /// Only the longest and shortest latencies.
    MaxMin,
}

/// The statistics of one bdev.
#[derive(Debug)]
pub struct BdevStats {
    slots: Box<[CachePadded<Slot>]>,
    /// Failed I/O by [`IoErrorKind`] (rare: shared by every reactor).
    errors: [AtomicU64; 2],
}

impl Default for BdevStats {
    fn default() -> Self {
        BdevStats {
            slots: (0..STAT_SLOTS).map(|_| CachePadded::new(Slot::default())).collect(),
            errors: Default::default(),
        }
    }
}

impl BdevStats {
    /// Counts one failed I/O.
    pub fn record_error(&self, kind: IoErrorKind) {
        self.errors[kind.index()].fetch_add(1, Relaxed);
    }

    /// The failed I/O by SPDK's status name, only those that happened (SPDK
    /// writes a status in `io_error` only when its count is not zero).
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        IoErrorKind::ALL
            .iter()
            .map(|k| (k.as_str(), self.errors[k.index()].load(Relaxed)))
            .filter(|(_, n)| *n != 0)
            .collect()
    }

    /// Counts one successful I/O of `bytes` that took `latency_ns`, on the
    /// reactor with index `reactor`.
    #[inline]
    pub fn record(&self, reactor: usize, kind: IoKind, bytes: u64, latency_ns: u64) {
        let op = self.slots[reactor % STAT_SLOTS].op(kind);
        op.bytes.fetch_add(bytes, Relaxed);
        op.ops.fetch_add(1, Relaxed);
        op.latency.fetch_add(latency_ns, Relaxed);
        // Extremes rarely move: a load decides, and only a new extreme pays
        // for the compare-and-swap loop.
        if latency_ns > op.max.load(Relaxed) {
            op.max.fetch_max(latency_ns, Relaxed);
        }
        if latency_ns < op.min.load(Relaxed) {
            op.min.fetch_min(latency_ns, Relaxed);
        }
    }

    fn op_stat(ops: impl Iterator<Item = OpStat>) -> OpStat {
        let mut t = OpStat {
            min_latency_ticks: u64::MAX,
            ..OpStat::default()
        };
        for o in ops {
            t.bytes += o.bytes;
            t.ops += o.ops;
            t.latency_ticks += o.latency_ticks;
            t.max_latency_ticks = t.max_latency_ticks.max(o.max_latency_ticks);
            t.min_latency_ticks = t.min_latency_ticks.min(o.min_latency_ticks);
        }
        t
    }

    fn load(op: &Op) -> OpStat {
        OpStat {
            bytes: op.bytes.load(Relaxed),
            ops: op.ops.load(Relaxed),
            latency_ticks: op.latency.load(Relaxed),
            max_latency_ticks: op.max.load(Relaxed),
            min_latency_ticks: op.min.load(Relaxed),
        }
    }

    fn finish(mut o: OpStat) -> OpStat {
        if o.min_latency_ticks == u64::MAX {
            o.min_latency_ticks = 0;
        }
        o
    }

    /// The statistics of reactor slot `reactor`.
    pub fn slot(&self, reactor: usize) -> IoStat {
        let s = &self.slots[reactor % STAT_SLOTS];
        IoStat {
            read: Self::finish(Self::load(&s.read)),
            write: Self::finish(Self::load(&s.write)),
            unmap: Self::finish(Self::load(&s.unmap)),
        }
    }

    /// The statistics summed over every reactor.
    pub fn total(&self) -> IoStat {
        let sum = |k: IoKind| Self::finish(Self::op_stat(self.slots.iter().map(|s| Self::load(s.op(k)))));
        IoStat {
            read: sum(IoKind::Read),
            write: sum(IoKind::Write),
            unmap: sum(IoKind::Unmap),
        }
    }

    /// Clears counters (an I/O completing meanwhile is counted or cleared whole
    /// in each counter, never lost half-way: every update is atomic).
    pub fn reset(&self, mode: ResetMode) {
        if mode == ResetMode::All {
            for e in &self.errors {
                e.store(0, Relaxed);
            }
        }
        for s in self.slots.iter() {
            for k in [IoKind::Read, IoKind::Write, IoKind::Unmap] {
                let op = s.op(k);
                if mode == ResetMode::All {
                    op.bytes.store(0, Relaxed);
                    op.ops.store(0, Relaxed);
                    op.latency.store(0, Relaxed);
                }
                op.max.store(0, Relaxed);
                op.min.store(u64::MAX, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_slots_with_max_and_min() {
        let s = BdevStats::default();
        s.record(0, IoKind::Read, 4096, 10);
        s.record(1, IoKind::Read, 512, 30);
        s.record(STAT_SLOTS + 1, IoKind::Write, 1024, 5);
        let t = s.total();
        assert_eq!(
            t.read,
            OpStat {
                bytes: 4608,
                ops: 2,
                latency_ticks: 40,
                max_latency_ticks: 30,
                min_latency_ticks: 10
            }
        );
        assert_eq!((t.write.bytes, t.write.ops), (1024, 1));
        assert_eq!(t.unmap, OpStat::default());
        assert_eq!(s.slot(1).write.ops, 1);
        assert_eq!(s.slot(0).read.ops, 1);
        s.reset(ResetMode::MaxMin);
        let t = s.total();
        assert_eq!(
            (t.read.ops, t.read.max_latency_ticks, t.read.min_latency_ticks),
            (2, 0, 0)
        );
        s.reset(ResetMode::All);
        assert_eq!(s.total(), IoStat::default());
    }

    #[test]
    fn errors_by_status_only_those_that_happened() {
        let s = BdevStats::default();
        assert!(s.errors().is_empty());
        s.record_error(IoErrorKind::Failed);
        s.record_error(IoErrorKind::Failed);
        assert_eq!(s.errors(), [("failed", 2)]);
        s.record_error(IoErrorKind::Miscompare);
        assert_eq!(s.errors(), [("miscompare", 1), ("failed", 2)]);
        s.reset(ResetMode::MaxMin);
        assert_eq!(s.errors().len(), 2);
        s.reset(ResetMode::All);
        assert!(s.errors().is_empty());
    }
}
