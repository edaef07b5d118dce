//! The target's I/O counters: per reactor ([`CoreIo`], for status, metrics
//! and SPDK's `nvmf_get_stats`) and per subsystem ([`IoCounters`], for the
//! SMART log page). A leaf: it imports nothing of the target, so the
//! registry, the I/O path and the log pages can all count without importing
//! each other.

use std::sync::atomic::{AtomicU64, Ordering};

/// Reactor slots with their own counters; reactors beyond share slots modulo.
pub const CORE_IO_SLOTS: usize = 256;

/// Per-reactor I/O counters of a target, for status and metrics. Each slot
/// is written only by its own reactor (no contended line); the control plane
/// reads them. Reads and writes are counted when they complete successfully.
#[derive(Debug, Default)]
pub struct CoreIo {
    /// Read commands.
    pub reads: AtomicU64,
    /// Write commands.
    pub writes: AtomicU64,
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Queues connected (admin and I/O) on this reactor now.
    pub queues: AtomicU64,
    /// Admin queues connected on this reactor since start (SPDK's `admin_qpairs`).
    pub admin_qpairs: AtomicU64,
    /// I/O queues connected on this reactor since start (SPDK's `io_qpairs`).
    pub io_qpairs: AtomicU64,
    /// Admin queues connected on this reactor now.
    pub current_admin_qpairs: AtomicU64,
    /// I/O queues connected on this reactor now.
    pub current_io_qpairs: AtomicU64,
    /// I/O commands answered on this reactor's I/O queues, whatever their
    /// status; SPDK's `completed_nvme_io`.
    pub io_commands: AtomicU64,
}

/// Adds `n` to a counter that only the calling thread writes: a load and a
/// store instead of a locked read-modify-write (a reader on another thread
/// sees the old or the new value, never a torn one).
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl CoreIo {
    // The I/O counters are bumped by the owning reactor only (one writer).

    pub(crate) fn command(&self) {
        bump(&self.io_commands, 1);
    }

    pub(crate) fn read(&self, bytes: usize) {
        bump(&self.reads, 1);
        bump(&self.bytes_read, bytes as u64);
    }

    pub(crate) fn wrote(&self, bytes: usize) {
        bump(&self.writes, 1);
        bump(&self.bytes_written, bytes as u64);
    }

    /// A queue connected on this reactor (`admin`: queue 0).
    pub(crate) fn queue_connected(&self, admin: bool) {
        self.queues.fetch_add(1, Ordering::Relaxed);
        let (total, now) = if admin {
            (&self.admin_qpairs, &self.current_admin_qpairs)
        } else {
            (&self.io_qpairs, &self.current_io_qpairs)
        };
        total.fetch_add(1, Ordering::Relaxed);
        now.fetch_add(1, Ordering::Relaxed);
    }

    /// A queue counted by [`CoreIo::queue_connected`] closed.
    pub(crate) fn queue_closed(&self, admin: bool) {
        self.queues.fetch_sub(1, Ordering::Relaxed);
        let now = if admin {
            &self.current_admin_qpairs
        } else {
            &self.current_io_qpairs
        };
        now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Health counters of a subsystem, for the SMART log page (in bytes and commands).
#[derive(Default)]
pub struct IoCounters {
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Read commands.
    pub reads: AtomicU64,
    /// Write commands.
    pub writes: AtomicU64,
}

impl IoCounters {
    pub(crate) fn read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wrote(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}
