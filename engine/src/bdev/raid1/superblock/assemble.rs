//! Assembly: from the superblocks found on the base bdevs present at
//! startup, which superblock describes the raid, and for each slot whether
//! its base may be read, must be rebuilt first, or is absent.
//!
//! # The rules, and where they come from
//!
//! SPDK's examine path (`raid_bdev_examine_sb` in `bdev_raid.c`, v25.09)
//! meets the bases one at a time; [`assemble`] sees all the present ones at
//! once and reaches SPDK's membership decisions, without depending on the
//! order the bases appear in, except where rules 2 and 4 say otherwise:
//!
//! 1. **The highest `seq_number` wins.** SPDK increments it and writes the
//!    whole superblock to every active member on each change (creation, a
//!    member removed or failed, a rebuild finished, a resize). A base whose
//!    superblock is older was not written the last time(s): SPDK replaces
//!    the older superblock with the newer when it finds one while the raid
//!    is still being assembled, and describes a base with an older one by
//!    the raid's newer superblock, never by the base's own. Here too the
//!    older superblocks say nothing about membership; only their
//!    `seq_number` is used (rule 4).
//! 2. **A base not listed in the newest superblock is not a member**
//!    (SPDK: "does not contain this bdev's uuid", the base is left alone).
//!    Typically a member that was replaced: its slot now holds another
//!    uuid. Here that is an error naming the base
//!    ([`AssembleError::NotAMember`]), so a base the caller expected in the
//!    raid is not silently dropped; a caller that wants SPDK's behaviour
//!    leaves that base out and assembles again.
//! 3. **A base the newest superblock marks MISSING or FAILED (or SPARE) is
//!    not in sync.** It was taken out while the raid went on, so it lacks
//!    the writes since. SPDK never assembles it as an active member: while
//!    the raid is assembling it is ignored ("not an active member"), and
//!    once the raid is online it is re-added as a new member, which starts a
//!    rebuild onto it. Here it is [`SlotState::Stale`]: it must be rebuilt
//!    before it is ever read.
//! 4. **A base whose own superblock is older than the newest is not in sync
//!    either, even when the newest marks it CONFIGURED.** Here lull is
//!    stricter than SPDK, which trusts the newest record alone and would
//!    read such a base. SPDK's trust rests on a member's removal always
//!    being recorded in a persisted superblock before writes go on without
//!    it (it quiesces the raid while it writes that update), so a member
//!    still recorded CONFIGURED got every write. lull does not bet on that:
//!    a member that missed a superblock update failed at least one write
//!    (to block 0) and may have missed data writes around it. The cost of
//!    being strict is a needless rebuild after a crash in the middle of
//!    writing one update to the members; the gain is that a member that
//!    missed an update is never read.
//!
//!    Neither rule helps when the writer crashes after acknowledging a
//!    write that one member failed but before any superblock records the
//!    failure (SPDK completes that write before its superblock update):
//!    then every superblock still calls the member CONFIGURED with the same
//!    `seq_number`. Only the writer can close that window, by holding such
//!    a write's completion until the update is on the other members.
//! 5. **Two superblocks of the same raid with the same `seq_number` but
//!    different contents** cannot come from one writer (each update bumps
//!    the number): two writers updated the raid independently (split brain,
//!    or a copied base bdev). No choice is safe, so it is an error.
//!
//! A slot whose base is absent is [`SlotState::Missing`]; whether the raid
//! may start degraded without it is the caller's decision (SPDK keeps a raid
//! assembling until every member recorded CONFIGURED has appeared).

use super::{SbBaseBdev, SbBaseState, SbError, Superblock, UuidText};

use thiserror::Error;

/// A base bdev present at startup: its uuid and the superblock decoded from
/// it.
pub type Found = ([u8; 16], Superblock);

/// The bases of one raid: its uuid and its [`Found`] bases.
pub type RaidGroup = ([u8; 16], Vec<Found>);

/// What [`assemble`] decided for one raid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembly {
    /// The authoritative superblock: the highest `seq_number` found.
    pub superblock: Superblock,
    /// One entry per slot, indexed by slot (`0 .. superblock.base_bdevs.len()`).
    pub slots: Vec<SlotState>,
}

/// One slot of an [`Assembly`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// The base present for this slot holds the raid's data: it may be read.
    InSync {
        /// The base bdev's uuid.
        base_uuid: [u8; 16],
    },
    /// The base present for this slot missed writes: it must be rebuilt
    /// before it is ever read (writes may go to it during the rebuild).
    Stale {
        /// The base bdev's uuid.
        base_uuid: [u8; 16],
        /// Why it is not in sync.
        reason: StaleReason,
    },
    /// No base is present for this slot.
    Missing {
        /// What the authoritative superblock records for the slot: its
        /// state says whether the raid lost an active member
        /// ([`SbBaseState::Configured`]) or the slot was already empty.
        record: SbBaseBdev,
    },
}

/// Why a present base is [`SlotState::Stale`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleReason {
    /// The authoritative superblock records it in this state (MISSING,
    /// FAILED or SPARE): it was taken out of the raid.
    Recorded(SbBaseState),
    /// It is recorded CONFIGURED but its own superblock is older: it missed
    /// at least one update.
    OlderSuperblock {
        /// Its own superblock's `seq_number`.
        seq_number: u64,
        /// The authoritative `seq_number`.
        newest: u64,
    },
}

/// Why the bases cannot be assembled.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AssembleError {
    /// No superblock was given.
    #[error("no superblock to assemble a raid from")]
    Empty,
    /// The superblocks belong to different raids (group them first with
    /// [`group_by_raid`]).
    #[error("base {base} belongs to raid {found}, not raid {expected}")]
    MixedRaids {
        /// The raid uuid of the first superblock.
        expected: UuidText,
        /// The other raid uuid.
        found: UuidText,
        /// The base bdev carrying it.
        base: UuidText,
    },
    /// The same base bdev was given twice.
    #[error("base {base} is given twice")]
    DuplicateBase {
        /// The base bdev's uuid.
        base: UuidText,
    },
    /// A base bdev uuid is all zero: it cannot be told apart.
    #[error("a base bdev has an all-zero uuid")]
    NullBaseUuid,
    /// A superblock breaks the format's rules (one built by hand; decoded
    /// ones never do).
    #[error("superblock of base {base}: {error}")]
    InvalidSuperblock {
        /// The base bdev's uuid.
        base: UuidText,
        /// The rule broken.
        error: SbError,
    },
    /// Two superblocks with the same `seq_number` differ (rule 5 of the
    /// module doc).
    #[error("bases {first} and {second} hold different superblocks with the same seq_number {seq_number}")]
    ConflictingSuperblocks {
        /// The `seq_number`.
        seq_number: u64,
        /// One base.
        first: UuidText,
        /// The other.
        second: UuidText,
    },
    /// A base is not listed in the newest superblock (rule 2).
    #[error("base {base} is not a member of raid {raid} (superblock seq_number {seq_number})")]
    NotAMember {
        /// The base bdev's uuid.
        base: UuidText,
        /// The raid uuid.
        raid: UuidText,
        /// The authoritative `seq_number`.
        seq_number: u64,
    },
}

impl Assembly {
    /// The slots whose base may be read, with the base's uuid.
    pub fn in_sync(&self) -> impl Iterator<Item = (u8, [u8; 16])> + '_ {
        self.slots.iter().enumerate().filter_map(|(slot, s)| match s {
            SlotState::InSync { base_uuid } => Some((slot as u8, *base_uuid)),
            _ => None,
        })
    }

    /// The slots whose base must be rebuilt, with the base's uuid.
    pub fn stale(&self) -> impl Iterator<Item = (u8, [u8; 16])> + '_ {
        self.slots.iter().enumerate().filter_map(|(slot, s)| match s {
            SlotState::Stale { base_uuid, .. } => Some((slot as u8, *base_uuid)),
            _ => None,
        })
    }

    /// The slots with no base present.
    pub fn missing(&self) -> impl Iterator<Item = u8> + '_ {
        self.slots.iter().enumerate().filter_map(|(slot, s)| match s {
            SlotState::Missing { .. } => Some(slot as u8),
            _ => None,
        })
    }
}

/// Splits superblocks by raid uuid, in the order each raid first appears,
/// keeping each raid's bases in the order given: one call to [`assemble`]
/// per group.
pub fn group_by_raid(found: Vec<Found>) -> Vec<RaidGroup> {
    let mut groups: Vec<RaidGroup> = Vec::new();
    for (base, sb) in found {
        match groups.iter_mut().find(|(raid, _)| *raid == sb.uuid) {
            Some((_, members)) => members.push((base, sb)),
            None => groups.push((sb.uuid, vec![(base, sb)])),
        }
    }
    groups
}

/// Decides one raid from the superblocks read from the bases present:
/// `found` holds, per present base, its uuid and the superblock decoded
/// from it, all of one raid. The rules are in the module doc.
///
/// # Errors
/// [`AssembleError::Empty`], [`AssembleError::MixedRaids`],
/// [`AssembleError::DuplicateBase`], [`AssembleError::NullBaseUuid`],
/// [`AssembleError::InvalidSuperblock`],
/// [`AssembleError::ConflictingSuperblocks`], [`AssembleError::NotAMember`].
pub fn assemble(found: &[Found]) -> Result<Assembly, AssembleError> {
    let Some((_, first)) = found.first() else {
        return Err(AssembleError::Empty);
    };
    for (i, (base, sb)) in found.iter().enumerate() {
        if sb.uuid != first.uuid {
            return Err(AssembleError::MixedRaids {
                expected: UuidText(first.uuid),
                found: UuidText(sb.uuid),
                base: UuidText(*base),
            });
        }
        if *base == [0; 16] {
            return Err(AssembleError::NullBaseUuid);
        }
        if found[..i].iter().any(|(other, _)| other == base) {
            return Err(AssembleError::DuplicateBase { base: UuidText(*base) });
        }
        sb.validate().map_err(|error| AssembleError::InvalidSuperblock {
            base: UuidText(*base),
            error,
        })?;
        let conflict = found[..i]
            .iter()
            .find(|(_, other)| other.seq_number == sb.seq_number && other != sb);
        if let Some((other_base, _)) = conflict {
            return Err(AssembleError::ConflictingSuperblocks {
                seq_number: sb.seq_number,
                first: UuidText(*other_base),
                second: UuidText(*base),
            });
        }
    }
    // Equal seq_numbers hold equal superblocks (checked above), so any
    // maximum will do.
    let newest = found
        .iter()
        .map(|(_, sb)| sb)
        .max_by_key(|sb| sb.seq_number)
        .unwrap_or(first);

    // Validated records name each slot `0 .. len` exactly once, so sorted by
    // slot their index is their slot.
    let mut records = newest.base_bdevs.clone();
    records.sort_by_key(|r| r.slot);
    let mut slots: Vec<SlotState> = records
        .into_iter()
        .map(|record| SlotState::Missing { record })
        .collect();
    for (base, sb) in found {
        let record = member_record(newest, base).ok_or(AssembleError::NotAMember {
            base: UuidText(*base),
            raid: UuidText(newest.uuid),
            seq_number: newest.seq_number,
        })?;
        let state = if record.state != SbBaseState::Configured {
            SlotState::Stale {
                base_uuid: *base,
                reason: StaleReason::Recorded(record.state),
            }
        } else if sb.seq_number < newest.seq_number {
            SlotState::Stale {
                base_uuid: *base,
                reason: StaleReason::OlderSuperblock {
                    seq_number: sb.seq_number,
                    newest: newest.seq_number,
                },
            }
        } else {
            SlotState::InSync { base_uuid: *base }
        };
        // Distinct bases match distinct records, and validated records
        // have distinct slots below the slot count: no slot is set twice.
        if let Some(slot) = slots.get_mut(usize::from(record.slot)) {
            *slot = state;
        }
    }
    Ok(Assembly {
        superblock: newest.clone(),
        slots,
    })
}

/// The record of `base` in `sb`: its CONFIGURED record if it has one (a
/// uuid is active in one slot at most), else its first record (a member
/// taken out keeps its uuid in its slot's record).
fn member_record<'a>(sb: &'a Superblock, base: &[u8; 16]) -> Option<&'a SbBaseBdev> {
    let mut mine = sb.base_bdevs.iter().filter(|r| r.uuid == *base);
    let first = mine.next()?;
    if first.state == SbBaseState::Configured {
        return Some(first);
    }
    Some(mine.find(|r| r.state == SbBaseState::Configured).unwrap_or(first))
}
