//! The raid superblock: the on-disk record at the start of every base bdev
//! of a raid created with a superblock (`bdev_raid_create -s`), in SPDK's
//! format (`struct raid_bdev_superblock`, version 1.0), so a superblock SPDK
//! wrote is read here and one written here is read by SPDK.
//!
//! It names the raid (uuid, name, level, geometry) and lists its members:
//! one record per slot with the member's uuid, where its data starts on it,
//! and whether it is an active member (CONFIGURED) or was taken out
//! (MISSING, FAILED). Every update increments `seq_number`, so when bases
//! disagree the newest wins; [`assemble`] makes that decision at startup.
//!
//! Pure code: encoding, decoding and the assembly decision. Reading and
//! writing the blocks is the raid bdev's job.
//!
//! # Layout (all integers little-endian, as SPDK writes them on x86 and arm64)
//!
//! Header, 256 bytes:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! |   0 |   8 | signature, ASCII `SPDKRAID` |
//! |   8 |   2 | version major (1) |
//! |  10 |   2 | version minor (0) |
//! |  12 |   4 | length: bytes of header + records (256 + 64 x records) |
//! |  16 |   4 | crc: CRC-32C of the first `length` bytes with this field zero |
//! |  20 |   4 | flags (0) |
//! |  24 |  16 | raid uuid (bytes in the order of its text form) |
//! |  40 |  64 | name, NUL-terminated (at most 63 bytes) |
//! | 104 |   8 | raid_size, blocks |
//! | 112 |   4 | block_size, bytes |
//! | 116 |   4 | level (0 raid0, 1 raid1, 95 raid5f, 99 concat) |
//! | 120 |   4 | strip_size, blocks (0 for raid1) |
//! | 124 |   4 | state (0; SPDK leaves it unset) |
//! | 128 |   8 | seq_number |
//! | 136 |   1 | num_base_bdevs (slots) |
//! | 137 | 118 | reserved (0) |
//! | 255 |   1 | base_bdevs_size (records that follow) |
//!
//! Then `base_bdevs_size` records of 64 bytes:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! |  0 | 16 | base bdev uuid |
//! | 16 |  8 | data_offset, blocks |
//! | 24 |  8 | data_size, blocks |
//! | 32 |  4 | state (0 MISSING, 1 CONFIGURED, 2 FAILED, 3 SPARE) |
//! | 36 |  4 | flags (0) |
//! | 40 |  1 | slot |
//! | 41 | 23 | reserved (0) |
//!
//! The CRC is SPDK's `spdk_crc32c_update(sb, length, 0)`: the Castagnoli
//! polynomial, reflected, with an initial value of 0 and no final inversion
//! (not the usual CRC-32C, which starts from and ends with `!0`). The
//! superblock is written from block 0 and padded with zeroes to whole blocks.

mod assemble;
#[cfg(test)]
mod tests;

pub use assemble::{AssembleError, Assembly, Found, RaidGroup, SlotState, StaleReason, assemble, group_by_raid};

use std::fmt;

use thiserror::Error;

/// The signature at byte 0.
pub const SB_SIGNATURE: [u8; 8] = *b"SPDKRAID";
/// The major version written and the only one read: a different major is a
/// breaking change.
pub const SB_VERSION_MAJOR: u16 = 1;
/// The minor version written. A higher minor is read (minor changes keep the
/// layout compatible), as SPDK does.
pub const SB_VERSION_MINOR: u16 = 0;
/// Bytes of the name field, its terminating NUL included.
pub const SB_NAME_SIZE: usize = 64;
/// Bytes of the header, before the base bdev records.
pub const SB_HEADER_LEN: usize = 256;
/// Bytes of one base bdev record.
pub const SB_BASE_RECORD_LEN: usize = 64;
/// The most base bdev records (their count is one byte).
pub const SB_MAX_BASE_BDEVS: usize = 255;
/// The longest superblock, bytes: a header and 255 records (SPDK's
/// `RAID_BDEV_SB_MAX_LENGTH`). A longer `length` is corruption.
pub const SB_MAX_LENGTH: usize = SB_HEADER_LEN + SB_MAX_BASE_BDEVS * SB_BASE_RECORD_LEN;
/// Bytes reserved at the start of each base bdev of a raid with a superblock
/// before its data area (SPDK's `RAID_BDEV_MIN_DATA_OFFSET_SIZE`, 1 MiB).
pub const MIN_DATA_OFFSET_BYTES: u64 = 1024 * 1024;

/// Field offsets in the header and in a base bdev record (see the module
/// doc's tables).
mod off {
    pub const SIGNATURE: usize = 0;
    pub const VERSION_MAJOR: usize = 8;
    pub const VERSION_MINOR: usize = 10;
    pub const LENGTH: usize = 12;
    pub const CRC: usize = 16;
    pub const UUID: usize = 24;
    pub const NAME: usize = 40;
    pub const RAID_SIZE: usize = 104;
    pub const BLOCK_SIZE: usize = 112;
    pub const LEVEL: usize = 116;
    pub const STRIP_SIZE: usize = 120;
    pub const SEQ_NUMBER: usize = 128;
    pub const NUM_BASE_BDEVS: usize = 136;
    pub const BASE_BDEVS_SIZE: usize = 255;

    pub const BASE_UUID: usize = 0;
    pub const BASE_DATA_OFFSET: usize = 16;
    pub const BASE_DATA_SIZE: usize = 24;
    pub const BASE_STATE: usize = 32;
    pub const BASE_SLOT: usize = 40;
}

/// Blocks reserved for the superblock at the start of a base bdev of
/// `block_size` bytes: its data area starts at this block (SPDK's default
/// `data_offset`: 1 MiB, whatever the block size, when the superblock
/// records none yet). For a block size that does not divide 1 MiB (SPDK
/// refuses those) it rounds up, so the superblock still fits. A
/// `block_size` of 0 is treated as 1.
pub fn data_offset_blocks(block_size: u32) -> u64 {
    MIN_DATA_OFFSET_BYTES.div_ceil(u64::from(block_size.max(1)))
}

/// [`data_offset_blocks`] rounded up to a multiple of the base bdev's
/// optimal I/O boundary in blocks (0: none), as SPDK places the data area
/// of a new member whose bdev reports one.
pub fn data_offset_blocks_aligned(block_size: u32, optimal_io_boundary: u32) -> u64 {
    let offset = data_offset_blocks(block_size);
    match u64::from(optimal_io_boundary) {
        0 => offset,
        b => offset.div_ceil(b).saturating_mul(b),
    }
}

/// Bytes of a superblock with `base_bdevs` records (its `length` field).
pub fn sb_len_bytes(base_bdevs: usize) -> usize {
    SB_HEADER_LEN + base_bdevs * SB_BASE_RECORD_LEN
}

/// Whole blocks of `block_size` bytes that a superblock with `base_bdevs`
/// records occupies (what [`Superblock::encode`] returns and a writer
/// writes at block 0). A `block_size` of 0 is treated as 1.
pub fn sb_len_blocks(base_bdevs: usize, block_size: u32) -> u64 {
    (sb_len_bytes(base_bdevs) as u64).div_ceil(u64::from(block_size.max(1)))
}

/// Whole blocks to read from block 0 to be sure to hold any superblock
/// ([`SB_MAX_LENGTH`] bytes). A reader may instead read
/// [`sb_len_blocks`]`(0, ..)` first and, when [`Superblock::decode`] answers
/// [`SbError::Truncated`], read `needed` bytes (rounded up to blocks).
pub fn sb_max_len_blocks(block_size: u32) -> u64 {
    (SB_MAX_LENGTH as u64).div_ceil(u64::from(block_size.max(1)))
}

/// A raid level as the superblock numbers it (SPDK's `enum raid_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaidLevel {
    /// Striping, no redundancy (0).
    Raid0,
    /// Mirroring (1).
    Raid1,
    /// Striping with parity, full-stripe writes only (95, `0x5f`).
    Raid5f,
    /// Concatenation (99).
    Concat,
}

impl RaidLevel {
    /// The number stored in the superblock.
    pub fn to_u32(self) -> u32 {
        match self {
            RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => 1,
            RaidLevel::Raid5f => 95,
            RaidLevel::Concat => 99,
        }
    }

    /// The level numbered `n`, if there is one.
    pub fn from_u32(n: u32) -> Option<Self> {
        match n {
            0 => Some(RaidLevel::Raid0),
            1 => Some(RaidLevel::Raid1),
            95 => Some(RaidLevel::Raid5f),
            99 => Some(RaidLevel::Concat),
            _ => None,
        }
    }

    /// SPDK's name for it (`raid_level` in `bdev_raid_get_bdevs`).
    pub fn as_str(self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "raid0",
            RaidLevel::Raid1 => "raid1",
            RaidLevel::Raid5f => "raid5f",
            RaidLevel::Concat => "concat",
        }
    }
}

/// What the superblock says of the member in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SbBaseState {
    /// Not a member now: removed on request, or never added (0).
    Missing,
    /// An active member: it holds the raid's data (1).
    Configured,
    /// Taken out after an I/O error (2).
    Failed,
    /// A spare (3): defined by the format, never written by SPDK v25.09;
    /// not an active member.
    Spare,
}

impl SbBaseState {
    /// The number stored in the record.
    pub fn to_u32(self) -> u32 {
        match self {
            SbBaseState::Missing => 0,
            SbBaseState::Configured => 1,
            SbBaseState::Failed => 2,
            SbBaseState::Spare => 3,
        }
    }

    /// The state numbered `n`, if there is one.
    pub fn from_u32(n: u32) -> Option<Self> {
        match n {
            0 => Some(SbBaseState::Missing),
            1 => Some(SbBaseState::Configured),
            2 => Some(SbBaseState::Failed),
            3 => Some(SbBaseState::Spare),
            _ => None,
        }
    }
}

/// One base bdev record: the member of one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbBaseBdev {
    /// The base bdev's uuid (its `BdevInfo::uuid`). All zero for a slot that
    /// never had a member.
    pub uuid: [u8; 16],
    /// First block of the raid's data on the base bdev (blocks before it
    /// hold the superblock; see [`data_offset_blocks`]).
    pub data_offset: u64,
    /// Blocks of the raid's data area on the base bdev.
    pub data_size: u64,
    /// Whether it is an active member.
    pub state: SbBaseState,
    /// Its slot, `0 .. base_bdevs.len()`: the raid's base bdev index.
    pub slot: u8,
}

/// A raid superblock, decoded. The reserved fields, the flags and the raid
/// state (all zero as SPDK v25.09 writes them) are not kept; they are
/// written as zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The raid bdev's uuid (never all zero).
    pub uuid: [u8; 16],
    /// The raid bdev's name (at most 63 bytes of UTF-8, no NUL).
    pub name: String,
    /// Incremented on every update: the newest superblock wins.
    pub seq_number: u64,
    /// The raid level.
    pub level: RaidLevel,
    /// Strip size, blocks (0 for raid1).
    pub strip_size: u32,
    /// The raid's block size, bytes (never 0).
    pub block_size: u32,
    /// The raid bdev's size, blocks.
    pub raid_size: u64,
    /// One record per slot (so `len()` is the raid's number of base bdevs,
    /// at most 255), each slot exactly once, in any order (SPDK writes them
    /// in slot order).
    pub base_bdevs: Vec<SbBaseBdev>,
}

/// Why a superblock cannot be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SbError {
    /// The bytes do not start with `SPDKRAID`: the bdev holds no raid
    /// superblock (a new or foreign device).
    #[error("no raid superblock: the signature is {found:02x?}, not \"SPDKRAID\"")]
    BadSignature {
        /// The first 8 bytes (fewer when the buffer is shorter).
        found: Vec<u8>,
    },
    /// The buffer ends before the superblock does: read `needed` bytes (from
    /// block 0) and decode again.
    #[error("superblock truncated: it needs {needed} bytes, the buffer has {have}")]
    Truncated {
        /// Bytes the superblock occupies (its header, or its `length`).
        needed: usize,
        /// Bytes given.
        have: usize,
    },
    /// The `length` field is shorter than the 256-byte header.
    #[error("superblock length {length} is shorter than its {SB_HEADER_LEN}-byte header")]
    LengthTooSmall {
        /// The `length` field.
        length: u32,
    },
    /// The `length` field is longer than any superblock can be.
    #[error("superblock length {length} is longer than the maximum {SB_MAX_LENGTH}")]
    LengthTooLarge {
        /// The `length` field.
        length: u32,
    },
    /// The CRC does not match: the superblock is corrupt (or torn).
    #[error("superblock crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// The `crc` field.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A major version other than 1: a layout this code does not know.
    #[error("unsupported superblock version {major}.{minor} (major {SB_VERSION_MAJOR} is supported)")]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// `base_bdevs_size` records do not fit in `length` bytes.
    #[error("{records} base bdev records need {needed} bytes, past the superblock length {length}")]
    RecordsPastLength {
        /// The `base_bdevs_size` field.
        records: u8,
        /// Bytes they need with the header.
        needed: usize,
        /// The `length` field.
        length: u32,
    },
    /// More base bdev records than the raid has slots.
    #[error("too many base bdev records: {records} for {num_base_bdevs} slots")]
    TooManyBaseRecords {
        /// The `base_bdevs_size` field.
        records: u8,
        /// The `num_base_bdevs` field.
        num_base_bdevs: u8,
    },
    /// Fewer base bdev records than the raid has slots (SPDK always writes
    /// one per slot).
    #[error("too few base bdev records: {records} for {num_base_bdevs} slots")]
    TooFewBaseRecords {
        /// The `base_bdevs_size` field.
        records: u8,
        /// The `num_base_bdevs` field.
        num_base_bdevs: u8,
    },
    /// The name field has no NUL in its 64 bytes.
    #[error("raid name is not NUL-terminated within {SB_NAME_SIZE} bytes")]
    NameNotTerminated,
    /// The name is not UTF-8.
    #[error("raid name is not UTF-8: {bytes:02x?}")]
    NameNotUtf8 {
        /// The name's bytes, before the NUL.
        bytes: Vec<u8>,
    },
    /// The name (to encode) does not fit the 63 bytes the field holds.
    #[error("raid name is {len} bytes, more than {max}", max = SB_NAME_SIZE - 1)]
    NameTooLong {
        /// The name's length, bytes.
        len: usize,
    },
    /// The name (to encode) contains a NUL, which would end it early.
    #[error("raid name contains a NUL byte")]
    NameHasNul,
    /// An unknown raid level number.
    #[error("unknown raid level {level}")]
    UnknownLevel {
        /// The `level` field.
        level: u32,
    },
    /// A block size of 0.
    #[error("block size is 0")]
    ZeroBlockSize,
    /// The raid uuid is all zero (SPDK refuses such a superblock).
    #[error("raid uuid is all zero")]
    NullUuid,
    /// No base bdev (for a new raid).
    #[error("a raid needs at least one base bdev")]
    NoBaseBdevs,
    /// A base bdev (for a new raid) has no block after the superblock's
    /// reserved area.
    #[error("base bdev {index} has {num_blocks} blocks, none after the {data_offset} reserved for the superblock")]
    BaseTooSmall {
        /// Its index in the list.
        index: usize,
        /// Its size, blocks.
        num_blocks: u64,
        /// The data offset, blocks.
        data_offset: u64,
    },
    /// More than 255 base bdevs (to encode).
    #[error("{count} base bdevs, more than {SB_MAX_BASE_BDEVS}")]
    TooManyBaseBdevs {
        /// How many were given.
        count: usize,
    },
    /// A record's state is not one of the four known.
    #[error("base bdev record {index}: unknown state {state}")]
    UnknownBaseState {
        /// The record's index.
        index: usize,
        /// The `state` field.
        state: u32,
    },
    /// A record's slot is not below the number of slots.
    #[error("base bdev record {index}: slot {slot} out of range (the raid has {num_base_bdevs} slots)")]
    SlotOutOfRange {
        /// The record's index.
        index: usize,
        /// The `slot` field.
        slot: u8,
        /// Number of slots.
        num_base_bdevs: usize,
    },
    /// Two records name the same slot.
    #[error("base bdev record {index}: slot {slot} is already described by another record")]
    DuplicateSlot {
        /// The second record's index.
        index: usize,
        /// The slot.
        slot: u8,
    },
    /// Two CONFIGURED records name the same base bdev: one bdev cannot be an
    /// active member in two slots.
    #[error("base bdev record {index}: {uuid} is already an active member in another slot")]
    DuplicateBaseUuid {
        /// The second record's index.
        index: usize,
        /// The base bdev's uuid.
        uuid: UuidText,
    },
}

/// A uuid shown as text (`8-4-4-4-12` lowercase hex), for messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UuidText(pub [u8; 16]);

impl fmt::Display for UuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for UuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// SPDK's superblock CRC continued over `data` from `crc`: reflected
/// CRC-32C with no inversion on entry or exit (what `spdk_crc32c_update`
/// and the SSE4.2 `crc32` instruction compute). The crate's function
/// inverts on entry and exit, so invert around it to cancel both.
fn crc_update(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// The superblock CRC of `sb` (its first `length` bytes): computed with
/// the `crc` field taken as zero.
fn sb_crc(sb: &[u8]) -> u32 {
    let (head, rest) = sb.split_at(off::CRC.min(sb.len()));
    let tail = rest.get(4..).unwrap_or(&[]);
    let crc = crc_update(0, head);
    let crc = crc_update(crc, &[0; 4]);
    crc_update(crc, tail)
}

/// Little-endian readers over a buffer whose length the caller checked;
/// they still answer `Truncated` instead of panicking if it did not.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], SbError> {
        self.0
            .get(at..at + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(SbError::Truncated {
                needed: at + N,
                have: self.0.len(),
            })
    }
    fn u8(&self, at: usize) -> Result<u8, SbError> {
        Ok(self.bytes::<1>(at)?[0])
    }
    fn u16(&self, at: usize) -> Result<u16, SbError> {
        Ok(u16::from_le_bytes(self.bytes(at)?))
    }
    fn u32(&self, at: usize) -> Result<u32, SbError> {
        Ok(u32::from_le_bytes(self.bytes(at)?))
    }
    fn u64(&self, at: usize) -> Result<u64, SbError> {
        Ok(u64::from_le_bytes(self.bytes(at)?))
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

impl Superblock {
    /// Checks what [`Superblock::encode`] and [`Superblock::decode`] both
    /// require: a non-zero uuid and block size, a name of at most 63 bytes
    /// without NUL, at most 255 records, each slot below the record count
    /// and used once, no uuid active in two slots.
    ///
    /// # Errors
    /// The first rule broken, as [`SbError::NullUuid`],
    /// [`SbError::ZeroBlockSize`], [`SbError::NameTooLong`],
    /// [`SbError::NameHasNul`], [`SbError::TooManyBaseBdevs`],
    /// [`SbError::SlotOutOfRange`], [`SbError::DuplicateSlot`] or
    /// [`SbError::DuplicateBaseUuid`].
    pub fn validate(&self) -> Result<(), SbError> {
        if self.uuid == [0; 16] {
            return Err(SbError::NullUuid);
        }
        if self.block_size == 0 {
            return Err(SbError::ZeroBlockSize);
        }
        if self.name.len() >= SB_NAME_SIZE {
            return Err(SbError::NameTooLong { len: self.name.len() });
        }
        if self.name.as_bytes().contains(&0) {
            return Err(SbError::NameHasNul);
        }
        validate_records(&self.base_bdevs)
    }

    /// The superblock of a new raid1 over `bases` (each its uuid and its
    /// size in blocks of `block_size` bytes, in slot order), laid out as
    /// SPDK lays out one created with `bdev_raid_create -r raid1 -s`: every
    /// base's data starts at [`data_offset_blocks`]`(block_size)`, every
    /// data area and the raid are as long as the smallest base's room after
    /// that offset, all members CONFIGURED. `seq_number` is 0: as SPDK does,
    /// increment it before each write, so the first superblock written
    /// carries 1.
    ///
    /// # Errors
    /// [`SbError::NoBaseBdevs`], [`SbError::BaseTooSmall`] (no block left
    /// after the offset), or what [`Superblock::validate`] finds.
    pub fn new_raid1(
        uuid: [u8; 16],
        name: &str,
        block_size: u32,
        bases: &[([u8; 16], u64)],
    ) -> Result<Superblock, SbError> {
        let data_offset = data_offset_blocks(block_size);
        let mut data_size = u64::MAX;
        for (index, &(_, num_blocks)) in bases.iter().enumerate() {
            if num_blocks <= data_offset {
                return Err(SbError::BaseTooSmall {
                    index,
                    num_blocks,
                    data_offset,
                });
            }
            data_size = data_size.min(num_blocks - data_offset);
        }
        if bases.is_empty() {
            return Err(SbError::NoBaseBdevs);
        }
        let sb = Superblock {
            uuid,
            name: name.to_owned(),
            seq_number: 0,
            level: RaidLevel::Raid1,
            strip_size: 0,
            block_size,
            raid_size: data_size,
            base_bdevs: bases
                .iter()
                .enumerate()
                .map(|(slot, &(uuid, _))| SbBaseBdev {
                    uuid,
                    data_offset,
                    data_size,
                    state: SbBaseState::Configured,
                    // validate() below refuses more than 255 bases.
                    slot: slot as u8,
                })
                .collect(),
        };
        sb.validate()?;
        Ok(sb)
    }

    /// The record of `slot`, if any.
    pub fn base_in_slot(&self, slot: u8) -> Option<&SbBaseBdev> {
        self.base_bdevs.iter().find(|b| b.slot == slot)
    }

    /// Bytes of the encoded superblock before padding (its `length` field).
    pub fn length(&self) -> usize {
        sb_len_bytes(self.base_bdevs.len())
    }

    /// The superblock as written at block 0 of each base bdev: version 1.0,
    /// `num_base_bdevs` and `base_bdevs_size` both `base_bdevs.len()`, the
    /// CRC set, zero padding to whole blocks of `block_size` bytes (the base
    /// bdev's block size).
    ///
    /// # Errors
    /// [`SbError::ZeroBlockSize`] for a `block_size` of 0, or what
    /// [`Superblock::validate`] finds.
    pub fn encode(&self, block_size: u32) -> Result<Vec<u8>, SbError> {
        self.validate()?;
        if block_size == 0 {
            return Err(SbError::ZeroBlockSize);
        }
        let length = self.length();
        let blocks = sb_len_blocks(self.base_bdevs.len(), block_size);
        // At most 16576 bytes rounded up to one u32 block: fits a usize.
        let mut buf = vec![0u8; (blocks * u64::from(block_size)) as usize];
        put(&mut buf, off::SIGNATURE, &SB_SIGNATURE);
        put(&mut buf, off::VERSION_MAJOR, &SB_VERSION_MAJOR.to_le_bytes());
        put(&mut buf, off::VERSION_MINOR, &SB_VERSION_MINOR.to_le_bytes());
        put(&mut buf, off::LENGTH, &(length as u32).to_le_bytes());
        put(&mut buf, off::UUID, &self.uuid);
        put(&mut buf, off::NAME, self.name.as_bytes());
        put(&mut buf, off::RAID_SIZE, &self.raid_size.to_le_bytes());
        put(&mut buf, off::BLOCK_SIZE, &self.block_size.to_le_bytes());
        put(&mut buf, off::LEVEL, &self.level.to_u32().to_le_bytes());
        put(&mut buf, off::STRIP_SIZE, &self.strip_size.to_le_bytes());
        put(&mut buf, off::SEQ_NUMBER, &self.seq_number.to_le_bytes());
        // validate() bounds the count by 255.
        let count = self.base_bdevs.len() as u8;
        put(&mut buf, off::NUM_BASE_BDEVS, &[count]);
        put(&mut buf, off::BASE_BDEVS_SIZE, &[count]);
        for (i, base) in self.base_bdevs.iter().enumerate() {
            let at = SB_HEADER_LEN + i * SB_BASE_RECORD_LEN;
            put(&mut buf, at + off::BASE_UUID, &base.uuid);
            put(&mut buf, at + off::BASE_DATA_OFFSET, &base.data_offset.to_le_bytes());
            put(&mut buf, at + off::BASE_DATA_SIZE, &base.data_size.to_le_bytes());
            put(&mut buf, at + off::BASE_STATE, &base.state.to_u32().to_le_bytes());
            put(&mut buf, at + off::BASE_SLOT, &[base.slot]);
        }
        let crc = sb_crc(&buf[..length]);
        put(&mut buf, off::CRC, &crc.to_le_bytes());
        Ok(buf)
    }

    /// Decodes the superblock at the start of `bytes` (what was read from
    /// block 0 of a base bdev; bytes past its `length` are ignored). Checks
    /// in SPDK's order (signature, length, CRC, version, records) and then
    /// everything [`Superblock::validate`] requires. A minor version above
    /// 0 is accepted. Never panics, whatever the bytes.
    ///
    /// # Errors
    /// [`SbError::BadSignature`] (no superblock here), [`SbError::Truncated`]
    /// (read more and retry), [`SbError::LengthTooSmall`],
    /// [`SbError::LengthTooLarge`], [`SbError::BadCrc`],
    /// [`SbError::UnsupportedVersion`], [`SbError::RecordsPastLength`],
    /// [`SbError::TooManyBaseRecords`], [`SbError::TooFewBaseRecords`],
    /// [`SbError::NameNotTerminated`], [`SbError::NameNotUtf8`],
    /// [`SbError::UnknownLevel`], [`SbError::ZeroBlockSize`],
    /// [`SbError::NullUuid`], [`SbError::UnknownBaseState`],
    /// [`SbError::SlotOutOfRange`], [`SbError::DuplicateSlot`],
    /// [`SbError::DuplicateBaseUuid`].
    pub fn decode(bytes: &[u8]) -> Result<Superblock, SbError> {
        // A buffer shorter than the signature that starts like it is short,
        // not foreign.
        let sig = bytes.get(..SB_SIGNATURE.len()).unwrap_or(bytes);
        if !SB_SIGNATURE.starts_with(sig) {
            return Err(SbError::BadSignature { found: sig.to_vec() });
        }
        if bytes.len() < SB_HEADER_LEN {
            return Err(SbError::Truncated {
                needed: SB_HEADER_LEN,
                have: bytes.len(),
            });
        }
        let f = Fields(bytes);
        let length = f.u32(off::LENGTH)?;
        let len = length as usize;
        if len < SB_HEADER_LEN {
            return Err(SbError::LengthTooSmall { length });
        }
        if len > SB_MAX_LENGTH {
            return Err(SbError::LengthTooLarge { length });
        }
        let Some(sb) = bytes.get(..len) else {
            return Err(SbError::Truncated {
                needed: len,
                have: bytes.len(),
            });
        };
        let stored = f.u32(off::CRC)?;
        let computed = sb_crc(sb);
        if stored != computed {
            return Err(SbError::BadCrc { stored, computed });
        }
        let f = Fields(sb);
        let major = f.u16(off::VERSION_MAJOR)?;
        let minor = f.u16(off::VERSION_MINOR)?;
        if major != SB_VERSION_MAJOR {
            return Err(SbError::UnsupportedVersion { major, minor });
        }
        let records = f.u8(off::BASE_BDEVS_SIZE)?;
        let needed = sb_len_bytes(usize::from(records));
        if needed > len {
            return Err(SbError::RecordsPastLength {
                records,
                needed,
                length,
            });
        }
        let num_base_bdevs = f.u8(off::NUM_BASE_BDEVS)?;
        if records > num_base_bdevs {
            return Err(SbError::TooManyBaseRecords {
                records,
                num_base_bdevs,
            });
        }
        if records < num_base_bdevs {
            return Err(SbError::TooFewBaseRecords {
                records,
                num_base_bdevs,
            });
        }
        let name = decode_name(&f.bytes::<SB_NAME_SIZE>(off::NAME)?)?;
        let level = f.u32(off::LEVEL)?;
        let level = RaidLevel::from_u32(level).ok_or(SbError::UnknownLevel { level })?;
        let mut base_bdevs = Vec::with_capacity(usize::from(records));
        for index in 0..usize::from(records) {
            let at = SB_HEADER_LEN + index * SB_BASE_RECORD_LEN;
            let state = f.u32(at + off::BASE_STATE)?;
            base_bdevs.push(SbBaseBdev {
                uuid: f.bytes(at + off::BASE_UUID)?,
                data_offset: f.u64(at + off::BASE_DATA_OFFSET)?,
                data_size: f.u64(at + off::BASE_DATA_SIZE)?,
                state: SbBaseState::from_u32(state).ok_or(SbError::UnknownBaseState { index, state })?,
                slot: f.u8(at + off::BASE_SLOT)?,
            });
        }
        let sb = Superblock {
            uuid: f.bytes(off::UUID)?,
            name,
            seq_number: f.u64(off::SEQ_NUMBER)?,
            level,
            strip_size: f.u32(off::STRIP_SIZE)?,
            block_size: f.u32(off::BLOCK_SIZE)?,
            raid_size: f.u64(off::RAID_SIZE)?,
            base_bdevs,
        };
        // The name was checked above; this checks the rest.
        sb.validate()?;
        Ok(sb)
    }
}

/// The name in its 64-byte field: the bytes before the first NUL, as UTF-8.
fn decode_name(field: &[u8; SB_NAME_SIZE]) -> Result<String, SbError> {
    let end = field.iter().position(|&b| b == 0).ok_or(SbError::NameNotTerminated)?;
    let bytes = &field[..end];
    String::from_utf8(bytes.to_vec()).map_err(|_| SbError::NameNotUtf8 { bytes: bytes.to_vec() })
}

/// The record rules shared by encode and decode: at most 255, slots below
/// the count and each used once, no uuid CONFIGURED twice.
fn validate_records(records: &[SbBaseBdev]) -> Result<(), SbError> {
    if records.len() > SB_MAX_BASE_BDEVS {
        return Err(SbError::TooManyBaseBdevs { count: records.len() });
    }
    let mut slot_used = [false; SB_MAX_BASE_BDEVS];
    for (index, base) in records.iter().enumerate() {
        let slot = usize::from(base.slot);
        if slot >= records.len() {
            return Err(SbError::SlotOutOfRange {
                index,
                slot: base.slot,
                num_base_bdevs: records.len(),
            });
        }
        if std::mem::replace(&mut slot_used[slot], true) {
            return Err(SbError::DuplicateSlot { index, slot: base.slot });
        }
        let active_twice = base.state == SbBaseState::Configured
            && records[..index]
                .iter()
                .any(|o| o.state == SbBaseState::Configured && o.uuid == base.uuid);
        if active_twice {
            return Err(SbError::DuplicateBaseUuid {
                index,
                uuid: UuidText(base.uuid),
            });
        }
    }
    Ok(())
}
