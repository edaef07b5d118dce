//! What `bdev_raid_get_bdevs` reports about a volume: its state, its base
//! bdev slots and the running process, as plain data (the daemon turns it
//! into SPDK's JSON shape).

/// A volume's state, SPDK's `state` (`online`, `configuring`, `offline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaidState {
    /// At least one operational base: I/O is served.
    Online,
    /// Assembled from superblocks, still waiting for bases to appear: no I/O yet.
    Configuring,
    /// No operational base is left: every I/O fails.
    Offline,
}

impl RaidState {
    /// SPDK's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RaidState::Online => "online",
            RaidState::Configuring => "configuring",
            RaidState::Offline => "offline",
        }
    }
}

/// One slot of a volume (SPDK's `base_bdevs_list` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseStatus {
    /// The slot's position (0-based), as in the superblock.
    pub slot: u8,
    /// The base bdev's name; `None` for an empty slot (removed or failed).
    pub name: Option<String>,
    /// The base bdev's UUID (all zeroes for an empty slot).
    pub uuid: [u8; 16],
    /// Whether a bdev is in the slot (SPDK's `is_configured`).
    pub is_configured: bool,
    /// Whether it is in sync and read from (false while it is rebuilt or
    /// waits for a rebuild).
    pub is_operational: bool,
    /// Blocks reserved at the start of the base (the superblock's area).
    pub data_offset: u64,
    /// Blocks of the base the volume uses (from `data_offset`).
    pub data_size: u64,
    /// Why the slot is empty, when a base failed an I/O there.
    pub failed: Option<String>,
}

/// A background process running on the volume (only rebuild exists).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessStatus {
    /// SPDK's process `type`: `"rebuild"`.
    pub kind: &'static str,
    /// The base being rebuilt (SPDK's `target`).
    pub target: String,
    /// Its slot.
    pub target_slot: u8,
    /// Blocks copied so far (SPDK's `progress.blocks`).
    pub blocks: u64,
    /// Blocks to copy in all (the volume's size).
    pub total_blocks: u64,
    /// `blocks / total_blocks` in percent (SPDK's `progress.percent`).
    pub percent: f64,
}

/// A volume, as `bdev_raid_get_bdevs` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Raid1Status {
    /// The volume's name.
    pub name: String,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// online / configuring / offline.
    pub state: RaidState,
    /// Whether bases carry a superblock.
    pub superblock: bool,
    /// Slots (SPDK's `num_base_bdevs`).
    pub num_base_bdevs: usize,
    /// Slots holding a bdev (SPDK's `num_base_bdevs_discovered`).
    pub num_base_bdevs_discovered: usize,
    /// Bases in use: in sync, or being (or waiting to be) rebuilt, as
    /// SPDK counts `num_base_bdevs_operational`.
    pub num_base_bdevs_operational: usize,
    /// Each slot, in order.
    pub base_bdevs: Vec<BaseStatus>,
    /// The running rebuild, if any.
    pub process: Option<ProcessStatus>,
    /// Block size, bytes.
    pub block_size: u32,
    /// The volume's size in blocks (the smallest base's data size).
    pub num_blocks: u64,
}
