//! Why a raid1 operation (create, add or remove a base, set options) was
//! refused. Each variant names the field or the bdev at fault and maps to
//! the errno SPDK's `bdev_raid_*` RPCs answer with ([`Raid1Error::errno`]).

use thiserror::Error;

/// A refused raid1 control operation. Nothing changed when one is returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Raid1Error {
    /// raid1 needs at least two base bdevs at creation (SPDK's `base_bdevs_min`).
    #[error("base_bdevs: raid1 needs at least {min} base bdevs, got {given}")]
    TooFewBases {
        /// Bases given.
        given: usize,
        /// The minimum.
        min: usize,
    },
    /// More base bdevs than a volume can have.
    #[error("base_bdevs: at most {max} base bdevs, got {given}")]
    TooManyBases {
        /// Bases given.
        given: usize,
        /// The maximum.
        max: usize,
    },
    /// The same bdev named twice, or a bdev that is already a base of this volume.
    #[error("base_bdevs: {base} is already a base bdev of raid {raid}")]
    DuplicateBase {
        /// The volume.
        raid: String,
        /// The base.
        base: String,
    },
    /// A base whose block size differs from the others'.
    #[error("{field}: {base} has {block_size}-byte blocks, raid {raid} has {expected}-byte blocks")]
    BlockSizeMismatch {
        /// The parameter that named the base: `base_bdevs` (creating the
        /// volume) or `base_bdev` (adding to it).
        field: &'static str,
        /// The volume.
        raid: String,
        /// The base.
        base: String,
        /// Its block size, bytes.
        block_size: u32,
        /// The volume's block size, bytes.
        expected: u32,
    },
    /// A base with no room for data after its reserved superblock area, or
    /// (adding to a volume) with less room than the volume's size.
    #[error("{field}: {base} holds {data_blocks} data blocks, raid {raid} needs {needed}")]
    BaseTooSmall {
        /// The parameter that named the base, as for `BlockSizeMismatch`.
        field: &'static str,
        /// The volume.
        raid: String,
        /// The base.
        base: String,
        /// Blocks it has for data (after `data_offset`).
        data_blocks: u64,
        /// Blocks it needs.
        needed: u64,
    },
    /// No base of that name in the volume.
    #[error("base_bdev: raid {raid} has no base bdev {base}")]
    NoSuchBase {
        /// The volume.
        raid: String,
        /// The name asked for.
        base: String,
    },
    /// Removing the last operational base would leave nothing to read from.
    #[error("base_bdev: {base} is the last operational base bdev of raid {raid}; it cannot be removed")]
    LastBase {
        /// The volume.
        raid: String,
        /// The base.
        base: String,
    },
    /// Every slot holds a base (remove or lose one first).
    #[error("base_bdev: raid {raid} has no empty slot for {base} (all {slots} slots hold a base bdev)")]
    NoEmptySlot {
        /// The volume.
        raid: String,
        /// The base offered.
        base: String,
        /// Slots.
        slots: usize,
    },
    /// The volume has no operational base to rebuild a new one from.
    #[error("raid {raid} is offline: no operational base bdev to rebuild {base} from")]
    Offline {
        /// The volume.
        raid: String,
        /// The base offered.
        base: String,
    },
    /// An option outside its range.
    #[error("{field}: {value} is not allowed; use {allowed}")]
    InvalidOption {
        /// The option's name (SPDK's parameter name).
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The superblock could not be written.
    #[error("raid {raid}: superblock: {why}")]
    Superblock {
        /// The volume.
        raid: String,
        /// Why.
        why: String,
    },
    /// The reactor asked to run the rebuild did not take it (stopped).
    #[error("raid {raid}: cannot start the rebuild of {base}: {why}")]
    Reactor {
        /// The volume.
        raid: String,
        /// The base.
        base: String,
        /// Why.
        why: String,
    },
}

impl Raid1Error {
    /// The (negative) errno SPDK answers the same refusal with: `-EEXIST`
    /// for a duplicate base, `-ENODEV` for a missing one, `-EBUSY` for the
    /// last base or a full volume, `-EINVAL` otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            Raid1Error::DuplicateBase { .. } => -libc::EEXIST,
            Raid1Error::NoSuchBase { .. } => -libc::ENODEV,
            Raid1Error::LastBase { .. } | Raid1Error::NoEmptySlot { .. } => -libc::EBUSY,
            Raid1Error::Reactor { .. } | Raid1Error::Superblock { .. } => -libc::EIO,
            Raid1Error::TooFewBases { .. }
            | Raid1Error::TooManyBases { .. }
            | Raid1Error::BlockSizeMismatch { .. }
            | Raid1Error::BaseTooSmall { .. }
            | Raid1Error::Offline { .. }
            | Raid1Error::InvalidOption { .. } => -libc::EINVAL,
        }
    }
}
