//! `raid1`: a mirrored volume over N base bdevs of any kind (SPDK's
//! `bdev_raid` at level raid1).
//!
//! Every base holds the whole volume, from its `data_offset` (blocks kept
//! at the base's start for a superblock; 0 without one). The volume's size
//! is the smallest base's data size.
//!
//! - Writes, Write Zeroes, Unmap and Flush go to every configured base and
//!   complete when all have. A base that fails one is taken out of the
//!   volume (degraded); the operation still succeeds when an operational
//!   base completed it, and fails only when none did.
//! - Reads go to one operational base (fewest blocks outstanding on this
//!   reactor, of equals the lowest slot, as SPDK) and are retried on another when one fails (the
//!   failed base is taken out).
//! - [`Raid1Bdev::add_base`] puts a base in an empty slot and starts a
//!   rebuild onto it (module `rebuild`): window by window, writes into the window
//!   being copied wait, writes elsewhere go to the new base too; it is read
//!   only once every block has been copied.
//!
//! - With a superblock (SPDK's `-s`, [`superblock`]), every change of
//!   membership is written to the bases (module `persist`); a write a base
//!   failed is answered only once that is on the others; at startup
//!   [`read_superblock`] and [`Raid1Bdev::from_assembly`] build the volume
//!   again, stale members rebuilt before they are read.
//!
//! Each reactor keeps its own per-volume state (operations in flight, read
//! counters, writes waiting for the rebuild window) in a thread-local
//! (module `io`); the slots are shared under a lock that the I/O path does not
//! take: it loads an immutable snapshot (`base::Members`) instead.

mod base;
mod error;
mod io;
mod options;
mod persist;
mod rebuild;
mod startup;
mod status;
pub mod superblock;
mod window;

#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use lull_reactor::{Context, ReactorHandle};

pub use error::Raid1Error;
pub use options::{DEFAULT_PROCESS_WINDOW_SIZE_KB, MAX_PROCESS_WINDOW_SIZE_KB, Raid1Options};
pub use startup::read_superblock;
pub use status::{BaseStatus, ProcessStatus, Raid1Status, RaidState};

use self::base::{BaseSlot, Members, SlotState};
use self::options::OptionsCell;
use self::rebuild::Process;
use super::{Bdev, BdevDone, BdevInfo, BdevIo};

/// Fewest bases a raid1 is created with (SPDK's `base_bdevs_min`).
pub const MIN_BASE_BDEVS: usize = 2;

/// Most slots a volume has (a slot is a bit of a 64-bit mask on the I/O path).
pub const MAX_BASE_BDEVS: usize = 64;

/// Bytes reserved at the start of each base when the volume has a
/// superblock (SPDK's `RAID_BDEV_MIN_DATA_OFFSET_SIZE`, 1 MiB).
pub const SUPERBLOCK_RESERVED_BYTES: u64 = superblock::MIN_DATA_OFFSET_BYTES;

/// Longest name of a volume with a superblock (its 64-byte field holds a NUL).
pub const MAX_SUPERBLOCK_NAME_LEN: usize = 63;

/// The product name `bdev_get_bdevs` shows (SPDK's).
pub const PRODUCT_NAME: &str = "Raid Volume";

/// How a volume is created besides its name and bases.
#[derive(Clone, Debug, Default)]
pub struct Raid1Params {
    /// Its UUID; `None`: one derived from the name.
    pub uuid: Option<[u8; 16]>,
    /// Whether bases carry a superblock (SPDK's `-s`): each base then keeps
    /// [`SUPERBLOCK_RESERVED_BYTES`] at its start for it.
    pub superblock: bool,
    /// The rebuild's settings.
    pub options: Raid1Options,
}

/// Blocks kept at a base's start for the superblock (none without one).
pub fn data_offset_blocks(superblock: bool, block_size: u32) -> u64 {
    if superblock {
        superblock::data_offset_blocks(block_size)
    } else {
        0
    }
}

/// A raid1 volume (a [`Bdev`]). Dropping it stops its rebuild, if one runs.
pub struct Raid1Bdev {
    inner: Arc<Inner>,
}

/// What the volume's reactors and its control plane share.
pub(crate) struct Inner {
    /// Names this volume in each reactor's table of per-volume state.
    id: u64,
    info: BdevInfo,
    superblock: bool,
    config: Mutex<Config>,
    /// The snapshot of `config.slots` the I/O path reads.
    members: ArcSwap<Members>,
    options: OptionsCell,
    /// The range the rebuild has locked against writes, for a reactor that
    /// starts serving the volume between two window moves.
    window: Mutex<Option<(u64, u64)>>,
    /// Writes that waited for the rebuild's window to move (a metric).
    waited: AtomicU64,
    /// The superblock writer (volumes with a superblock).
    sb: Mutex<persist::SbWriter>,
    /// The newest configuration version a superblock on an operational
    /// base describes.
    sb_persisted: AtomicU64,
}

/// The slots and the process, changed under [`Inner::config`].
struct Config {
    slots: Vec<BaseSlot>,
    /// Bumped on every change of `slots`.
    version: u64,
    process: Option<Process>,
    /// A process's steps are live: from its start until its last window
    /// unlock has reached every reactor (after `process` is cleared), so
    /// two processes never move windows at once.
    running: bool,
    /// The volume is deleted: no process starts any more (its bases may
    /// already belong to someone else), and a base failing an I/O after
    /// the delete is not taken out (see `fail_base`).
    deleted: bool,
    /// Its superblocks are being or were zeroed (`bdev_raid_delete
    /// clear_sb`): no update writes one back. A superblock update asked for
    /// by an ordinary delete still goes out, so that the bases record who
    /// was in sync.
    wiped: bool,
}

/// Locks `m`, recovering the data if a holder panicked (every change under
/// these locks leaves the data consistent before anything can panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Raid1Bdev {
    /// A volume named `name` over `bases`, all in sync (as SPDK's
    /// `bdev_raid_create`: no initial copy). Whether a base is already used
    /// elsewhere is the caller's to check (see [`base_names`](Self::base_names)).
    ///
    /// # Errors
    /// [`Raid1Error::TooFewBases`] (under 2), [`Raid1Error::TooManyBases`],
    /// [`Raid1Error::DuplicateBase`], [`Raid1Error::BlockSizeMismatch`],
    /// [`Raid1Error::BaseTooSmall`] (no room after the superblock area),
    /// [`Raid1Error::InvalidOption`].
    pub fn create(name: &str, bases: Vec<Arc<dyn Bdev>>, params: Raid1Params) -> Result<Self, Raid1Error> {
        params.options.check()?;
        if params.superblock && name.len() > MAX_SUPERBLOCK_NAME_LEN {
            return Err(Raid1Error::InvalidOption {
                field: "name",
                value: name.to_string(),
                allowed: "at most 63 bytes for a volume with a superblock",
            });
        }
        if bases.len() < MIN_BASE_BDEVS {
            return Err(Raid1Error::TooFewBases {
                given: bases.len(),
                min: MIN_BASE_BDEVS,
            });
        }
        if bases.len() > MAX_BASE_BDEVS {
            return Err(Raid1Error::TooManyBases {
                given: bases.len(),
                max: MAX_BASE_BDEVS,
            });
        }
        let block_size = bases[0].info().block_size;
        let offset = data_offset_blocks(params.superblock, block_size);
        let mut num_blocks = u64::MAX;
        for (i, b) in bases.iter().enumerate() {
            let bi = b.info();
            if bases[..i].iter().any(|o| o.info().name == bi.name) {
                return Err(Raid1Error::DuplicateBase {
                    raid: name.to_string(),
                    base: bi.name.clone(),
                });
            }
            if bi.block_size != block_size {
                return Err(Raid1Error::BlockSizeMismatch {
                    field: "base_bdevs",
                    raid: name.to_string(),
                    base: bi.name.clone(),
                    block_size: bi.block_size,
                    expected: block_size,
                });
            }
            let data = bi.num_blocks.saturating_sub(offset);
            if data == 0 {
                return Err(Raid1Error::BaseTooSmall {
                    field: "base_bdevs",
                    raid: name.to_string(),
                    base: bi.name.clone(),
                    data_blocks: 0,
                    needed: 1,
                });
            }
            num_blocks = num_blocks.min(data);
        }
        let slots: Vec<BaseSlot> = bases
            .into_iter()
            .map(|b| BaseSlot {
                uuid: b.info().uuid,
                bdev: Some(b),
                state: SlotState::Operational,
                data_offset: offset,
                data_size: num_blocks,
                since: 1,
                failed: None,
            })
            .collect();
        let members = Members::of(&slots, 1);
        Ok(Raid1Bdev {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                info: BdevInfo {
                    name: name.to_string(),
                    product_name: PRODUCT_NAME,
                    block_size,
                    num_blocks,
                    uuid: params.uuid.unwrap_or_else(|| super::uuid_from_name("raid1", name)),
                },
                superblock: params.superblock,
                config: Mutex::new(Config {
                    slots,
                    version: 1,
                    process: None,
                    running: false,
                    deleted: false,
                    wiped: false,
                }),
                members: ArcSwap::from_pointee(members),
                options: OptionsCell::new(params.options),
                window: Mutex::new(None),
                waited: AtomicU64::new(0),
                sb: Mutex::new(persist::SbWriter::new(0)),
                sb_persisted: AtomicU64::new(0),
            }),
        })
    }

    /// The volume as `bdev_raid_get_bdevs` shows it.
    pub fn status(&self) -> Raid1Status {
        self.inner.status()
    }

    /// The names of the bases in the volume now (what the caller claims for
    /// it; a base that failed or was removed is no longer listed).
    pub fn base_names(&self) -> Vec<String> {
        let c = lock(&self.inner.config);
        c.slots.iter().filter_map(|s| s.name().map(str::to_string)).collect()
    }

    /// Takes base `name` out of the volume (SPDK's
    /// `bdev_raid_remove_base_bdev`); its slot stays, empty. A rebuild onto
    /// it stops. I/O already sent to it completes; nothing new goes there.
    ///
    /// # Errors
    /// [`Raid1Error::NoSuchBase`]; [`Raid1Error::LastBase`] when it is the
    /// only operational base.
    pub fn remove_base(&self, name: &str) -> Result<(), Raid1Error> {
        let inner = &self.inner;
        let mut c = lock(&inner.config);
        let Some(slot) = c.slots.iter().position(|s| s.name() == Some(name)) else {
            return Err(Raid1Error::NoSuchBase {
                raid: inner.info.name.clone(),
                base: name.to_string(),
            });
        };
        let operational = c.slots.iter().filter(|s| s.state == SlotState::Operational).count();
        if c.slots[slot].state == SlotState::Operational && operational == 1 {
            return Err(Raid1Error::LastBase {
                raid: inner.info.name.clone(),
                base: name.to_string(),
            });
        }
        tracing::info!(raid = %inner.info.name, base = name, slot, "base bdev removed");
        inner.empty_slot(&mut c, slot, None);
        drop(c);
        persist::request_off_reactor(inner);
        Ok(())
    }

    /// Puts `base` in the first empty slot and rebuilds it from the
    /// operational bases, on `reactor` (a reactor of the set that serves the
    /// volume; the rebuild sleeps between its steps). When a rebuild is
    /// already running, this one starts after it. Returns the slot.
    ///
    /// # Errors
    /// [`Raid1Error::DuplicateBase`], [`Raid1Error::BlockSizeMismatch`],
    /// [`Raid1Error::BaseTooSmall`] (less room than the volume's size after
    /// `data_offset`), [`Raid1Error::NoEmptySlot`], [`Raid1Error::Offline`]
    /// (nothing to copy from), [`Raid1Error::Reactor`] (the reactor is
    /// stopped; the base is taken out again).
    pub fn add_base(&self, base: Arc<dyn Bdev>, reactor: &ReactorHandle) -> Result<u8, Raid1Error> {
        let inner = &self.inner;
        let bi = base.info().clone();
        let raid = || inner.info.name.clone();
        let mut c = lock(&inner.config);
        if c.slots.iter().any(|s| {
            s.bdev
                .as_ref()
                .is_some_and(|b| b.info().name == bi.name || same(b, &base))
        }) {
            return Err(Raid1Error::DuplicateBase {
                raid: raid(),
                base: bi.name,
            });
        }
        if bi.block_size != inner.info.block_size {
            return Err(Raid1Error::BlockSizeMismatch {
                field: "base_bdev",
                raid: raid(),
                base: bi.name,
                block_size: bi.block_size,
                expected: inner.info.block_size,
            });
        }
        let offset = data_offset_blocks(inner.superblock, bi.block_size);
        let data_blocks = bi.num_blocks.saturating_sub(offset);
        if data_blocks < inner.info.num_blocks {
            return Err(Raid1Error::BaseTooSmall {
                field: "base_bdev",
                raid: raid(),
                base: bi.name,
                data_blocks,
                needed: inner.info.num_blocks,
            });
        }
        if !c.slots.iter().any(|s| s.state == SlotState::Operational) {
            return Err(Raid1Error::Offline {
                raid: raid(),
                base: bi.name,
            });
        }
        let Some(slot) = c.slots.iter().position(|s| s.bdev.is_none()) else {
            return Err(Raid1Error::NoEmptySlot {
                raid: raid(),
                base: bi.name,
                slots: c.slots.len(),
            });
        };
        c.version += 1;
        let version = c.version;
        c.slots[slot] = BaseSlot {
            uuid: bi.uuid,
            bdev: Some(base),
            state: SlotState::Stale,
            data_offset: offset,
            data_size: inner.info.num_blocks,
            since: version,
            failed: None,
        };
        inner.publish(&c);
        tracing::info!(raid = %inner.info.name, base = %bi.name, slot, "base bdev added; rebuild queued");
        if let Err(why) = rebuild::start(&self.inner, &mut c, reactor.clone()) {
            inner.empty_slot(&mut c, slot, None);
            return Err(Raid1Error::Reactor {
                raid: raid(),
                base: bi.name,
                why,
            });
        }
        Ok(slot as u8)
    }

    /// Writes the volume's superblock to every base now, from `reactor`,
    /// and waits (up to `timeout`) until an operational base has it. A
    /// volume created with a superblock needs this once before it is used:
    /// it also makes `reactor` the one later updates (after a base fails,
    /// is removed or added, or a rebuild ends) run on. Blocks: call it from
    /// off the reactors. Nothing to do without a superblock.
    ///
    /// # Errors
    /// [`Raid1Error::Superblock`] when no operational base took it in time
    /// (those that failed it are taken out), or the reactor is stopped.
    pub fn write_superblock(&self, reactor: &ReactorHandle, timeout: std::time::Duration) -> Result<(), Raid1Error> {
        persist::write_now(&self.inner, reactor, timeout)
    }

    /// Zeroes the superblock on every base in the volume now, from
    /// `reactor`, and waits (up to `timeout`): for deleting the volume, so
    /// a later startup does not assemble it again. Blocks: call it from off
    /// the reactors, after I/O to the volume has stopped. Nothing to do
    /// without a superblock.
    ///
    /// # Errors
    /// [`Raid1Error::Superblock`] naming the bases that failed it.
    pub fn wipe_superblock(&self, reactor: &ReactorHandle, timeout: std::time::Duration) -> Result<(), Raid1Error> {
        persist::wipe_now(&self.inner, reactor, timeout)
    }

    /// Writes so far that waited for a rebuild's window to move on.
    pub fn writes_waited(&self) -> u64 {
        self.inner.waited.load(Ordering::Relaxed)
    }

    /// The rebuild's settings now.
    pub fn options(&self) -> Raid1Options {
        self.inner.options.get()
    }

    /// Changes the rebuild's settings (SPDK's `bdev_raid_set_options`); a
    /// running rebuild uses them from its next window.
    ///
    /// # Errors
    /// [`Raid1Error::InvalidOption`]; nothing changes then.
    pub fn set_options(&self, options: Raid1Options) -> Result<(), Raid1Error> {
        options.check()?;
        self.inner.options.set(options);
        Ok(())
    }
}

impl Drop for Raid1Bdev {
    fn drop(&mut self) {
        let mut c = lock(&self.inner.config);
        c.deleted = true;
        if let Some(p) = c.process.as_mut() {
            p.abort = Some("the volume is deleted".to_string());
        }
    }
}

impl Bdev for Raid1Bdev {
    fn info(&self) -> &BdevInfo {
        &self.inner.info
    }

    /// Fans writes (and Write Zeroes, Unmap, Flush) out to every configured
    /// base, sends reads to one operational base; see the module's doc.
    /// A write into the window a rebuild is copying waits until the window
    /// moves on. Fails with [`BdevError::Io`](super::BdevError::Io) when no
    /// operational base is left.
    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        io::submit(&self.inner, cx, io, done);
    }
}

/// Whether `a` and `b` are the same bdev object.
fn same(a: &Arc<dyn Bdev>, b: &Arc<dyn Bdev>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl Inner {
    /// Publishes `c.slots` to the I/O path.
    fn publish(&self, c: &Config) {
        self.members.store(Arc::new(Members::of(&c.slots, c.version)));
    }

    /// Empties `slot` (removed, or failed with `why`), stops a rebuild onto
    /// it, and publishes the change.
    fn empty_slot(&self, c: &mut Config, slot: usize, why: Option<String>) {
        let s = &mut c.slots[slot];
        let name = s.name().unwrap_or_default().to_string();
        s.bdev = None;
        s.state = SlotState::Empty;
        s.failed = why.clone();
        if !self.superblock {
            s.uuid = [0; 16];
        }
        c.version += 1;
        if let Some(p) = c.process.as_mut()
            && usize::from(p.target_slot) == slot
            && p.abort.is_none()
        {
            p.abort = Some(match why {
                Some(w) => format!("target {name} failed: {w}"),
                None => format!("target {name} was removed"),
            });
        }
        self.publish(c);
    }

    /// Takes the base in `slot` out of the volume after an I/O error, unless
    /// the slot got another base after configuration version `version` (the
    /// I/O was sent to an earlier occupant), and asks for a superblock
    /// update. Returns the configuration version that records the failure
    /// (what a write that saw it waits to see persisted).
    fn fail_base(self: &Arc<Self>, cx: &mut Context, slot: u8, version: u64, why: &str) -> u64 {
        let mut c = lock(&self.config);
        let Some(s) = c.slots.get(usize::from(slot)) else {
            return c.version;
        };
        // After the delete a failure changes nothing: the bases' controllers
        // are often detached right after it (a failed `lull volume create`
        // undoing itself), and recording those failures in the superblock
        // would make the next `bdev_raid_create -s` over them rebuild members
        // that were in sync. Updates asked for before the delete still go out.
        if s.bdev.is_none() || s.since > version || c.deleted {
            return c.version;
        }
        tracing::warn!(
            raid = %self.info.name,
            base = s.name().unwrap_or_default(),
            slot,
            "base bdev failed an I/O and is taken out of the volume: {why}"
        );
        self.empty_slot(&mut c, usize::from(slot), Some(why.to_string()));
        if !c.slots.iter().any(|s| s.state == SlotState::Operational) {
            tracing::error!(raid = %self.info.name, "no operational base bdev left: the volume is offline");
        }
        let recorded = c.version;
        drop(c);
        persist::request(cx, self);
        recorded
    }

    /// The newest configuration version a superblock on an operational base describes.
    fn persisted(&self) -> u64 {
        self.sb_persisted.load(Ordering::Acquire)
    }

    fn status(&self) -> Raid1Status {
        let c = lock(&self.config);
        let operational = c.slots.iter().filter(|s| s.state == SlotState::Operational).count();
        let base_bdevs = c
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| BaseStatus {
                slot: i as u8,
                name: s.name().map(str::to_string),
                uuid: s.uuid,
                is_configured: s.bdev.is_some(),
                is_operational: s.state == SlotState::Operational,
                data_offset: if s.bdev.is_some() { s.data_offset } else { 0 },
                data_size: if s.bdev.is_some() { s.data_size } else { 0 },
                failed: s.failed.clone(),
            })
            .collect();
        let total = self.info.num_blocks;
        let process = c.process.as_ref().map(|p| ProcessStatus {
            kind: "rebuild",
            target: p.target_name.clone(),
            target_slot: p.target_slot,
            blocks: p.next,
            total_blocks: total,
            percent: if total == 0 {
                100.0
            } else {
                p.next as f64 * 100.0 / total as f64
            },
        });
        Raid1Status {
            name: self.info.name.clone(),
            uuid: self.info.uuid,
            state: if operational > 0 {
                RaidState::Online
            } else {
                RaidState::Offline
            },
            superblock: self.superblock,
            num_base_bdevs: c.slots.len(),
            num_base_bdevs_discovered: c.slots.iter().filter(|s| s.bdev.is_some()).count(),
            num_base_bdevs_operational: c.slots.iter().filter(|s| s.state != SlotState::Empty).count(),
            base_bdevs,
            process,
            block_size: self.info.block_size,
            num_blocks: self.info.num_blocks,
        }
    }
}
