//! A volume's base bdev slots and their states, and the snapshot of them
//! the I/O path reads ([`Members`]).
//!
//! Slots change under the volume's lock, off the I/O path (create, add,
//! remove, a base failing, a rebuild ending); each change publishes a new
//! immutable [`Members`] that submissions load without a lock.

use std::sync::Arc;

use crate::bdev::Bdev;

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Nothing: never filled, removed by the operator, or failed.
    Empty,
    /// In sync: written and read.
    Operational,
    /// Configured but not in sync (added, or a stale member): written (so
    /// what a rebuild has copied stays current), never read, until a
    /// rebuild has copied every block onto it.
    Stale,
}

/// One slot.
pub(super) struct BaseSlot {
    pub(super) bdev: Option<Arc<dyn Bdev>>,
    pub(super) state: SlotState,
    /// Blocks reserved at the base's start (superblock area).
    pub(super) data_offset: u64,
    /// Blocks of the base used for data (the volume's size once in use).
    pub(super) data_size: u64,
    /// The configuration version the bdev was placed at: an error from an
    /// I/O submitted before that names an earlier occupant, not this one.
    pub(super) since: u64,
    /// Why the slot is empty, when its base failed.
    pub(super) failed: Option<String>,
    /// The UUID of the last occupant (kept for the superblock's sake).
    pub(super) uuid: [u8; 16],
}

impl BaseSlot {
    /// A slot that never held a base.
    pub(super) fn empty() -> Self {
        BaseSlot {
            bdev: None,
            state: SlotState::Empty,
            data_offset: 0,
            data_size: 0,
            since: 0,
            failed: None,
            uuid: [0; 16],
        }
    }

    /// The base's name, if one is in the slot.
    pub(super) fn name(&self) -> Option<&str> {
        self.bdev.as_ref().map(|b| b.info().name.as_str())
    }
}

/// One base as the I/O path sees it.
pub(super) struct Member {
    pub(super) slot: u8,
    pub(super) bdev: Arc<dyn Bdev>,
    pub(super) data_offset: u64,
    /// Operational: reads may go here.
    pub(super) readable: bool,
}

/// The configured bases at one configuration version: writes go to all of
/// them, reads to the readable ones.
pub(super) struct Members {
    pub(super) version: u64,
    pub(super) bases: Vec<Member>,
    /// Bitmask of readable slots.
    pub(super) readable: u64,
}

impl Members {
    pub(super) fn of(slots: &[BaseSlot], version: u64) -> Members {
        let mut readable = 0u64;
        let bases = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let bdev = s.bdev.clone()?;
                let ok = s.state == SlotState::Operational;
                if ok {
                    readable |= 1 << i;
                }
                Some(Member {
                    slot: i as u8,
                    bdev,
                    data_offset: s.data_offset,
                    readable: ok,
                })
            })
            .collect();
        Members {
            version,
            bases,
            readable,
        }
    }

    /// The member in `slot`.
    pub(super) fn get(&self, slot: u8) -> Option<&Member> {
        self.bases.iter().find(|m| m.slot == slot)
    }
}
