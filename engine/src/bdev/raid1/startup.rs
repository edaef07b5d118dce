//! Bringing a volume with a superblock back at startup: reading the
//! superblock from a base bdev, and building the volume that
//! [`assemble`](super::superblock::assemble) decided from the superblocks
//! found (members in sync are read at once; stale ones are rebuilt first;
//! missing ones leave their slot empty).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use arc_swap::ArcSwap;
use lull_reactor::{Context, Message, ReactorHandle};

use super::base::{BaseSlot, Members, SlotState};
use super::superblock::{self, Assembly, SbBaseState, SbError, Superblock};
use super::{
    Config, Inner, NEXT_ID, OptionsCell, PRODUCT_NAME, Raid1Bdev, Raid1Error, Raid1Options, lock, persist, rebuild,
};
use crate::bdev::{Bdev, BdevDone, BdevInfo, BdevIo};

/// Reads block 0 onward of `base` (from `reactor`, blocking) and decodes
/// the raid superblock there. `Ok(None)`: the base holds none (no
/// `SPDKRAID` signature: a new or foreign bdev).
///
/// # Errors
/// [`Raid1Error::Superblock`] when the read fails or times out, or the
/// superblock is damaged (bad CRC, unknown major version...).
pub fn read_superblock(
    base: &Arc<dyn Bdev>,
    reactor: &ReactorHandle,
    timeout: Duration,
) -> Result<Option<Superblock>, Raid1Error> {
    let info = base.info();
    let fail = |why: String| Raid1Error::Superblock {
        raid: String::new(),
        why: format!("{}: {why}", info.name),
    };
    let mut blocks = superblock::sb_len_blocks(0, info.block_size).min(info.num_blocks);
    loop {
        let (tx, rx) = mpsc::channel();
        let b = base.clone();
        let msg = Message::new(move |cx: &mut Context| {
            let io = BdevIo::Read {
                lba: 0,
                blocks,
                buf: Vec::new(),
            };
            b.submit(
                cx,
                io,
                BdevDone::from_fn(move |_, r, buf| {
                    let _ = tx.send(r.map(|()| buf));
                }),
            );
        });
        persist::send_blocking(reactor, msg).map_err(fail)?;
        let bytes = rx
            .recv_timeout(timeout)
            .map_err(|_| fail(format!("block 0 not read within {timeout:?}")))?
            .map_err(|e| fail(format!("reading block 0: {e}")))?;
        match Superblock::decode(&bytes) {
            Ok(sb) => return Ok(Some(sb)),
            Err(SbError::BadSignature { .. }) => return Ok(None),
            Err(SbError::Truncated { needed, .. }) if (needed as u64) > blocks * u64::from(info.block_size) => {
                let more = (needed as u64).div_ceil(u64::from(info.block_size));
                if more > info.num_blocks {
                    return Err(fail(format!("superblock of {needed} bytes is longer than the bdev")));
                }
                blocks = more;
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    }
}

impl Raid1Bdev {
    /// The volume `assembly` describes, over `bases` (the present bases; each
    /// slot's base is found by its uuid): in-sync members are operational,
    /// stale ones are rebuilt on `reactor` before they are read, missing
    /// ones leave their slot empty. A new superblock (the next `seq_number`)
    /// is written from `reactor`, which becomes the volume's home.
    ///
    /// # Errors
    /// [`Raid1Error::Superblock`] when the superblock is not a raid1's, a
    /// base the assembly names is not in `bases`, or no member is in sync;
    /// [`Raid1Error::BlockSizeMismatch`], [`Raid1Error::BaseTooSmall`] for a
    /// base that does not match its record; [`Raid1Error::InvalidOption`].
    pub fn from_assembly(
        assembly: &Assembly,
        bases: Vec<Arc<dyn Bdev>>,
        options: Raid1Options,
        reactor: &ReactorHandle,
    ) -> Result<Raid1Bdev, Raid1Error> {
        options.check()?;
        let sb = &assembly.superblock;
        let raid = || sb.name.clone();
        let fail = |why: String| Raid1Error::Superblock { raid: raid(), why };
        if sb.level != superblock::RaidLevel::Raid1 {
            return Err(fail(format!("level {} is not raid1", sb.level.as_str())));
        }
        if assembly.slots.len() > super::MAX_BASE_BDEVS {
            return Err(Raid1Error::TooManyBases {
                given: assembly.slots.len(),
                max: super::MAX_BASE_BDEVS,
            });
        }
        let mut slots = Vec::with_capacity(assembly.slots.len());
        for (i, state) in assembly.slots.iter().enumerate() {
            let record = sb
                .base_in_slot(i as u8)
                .ok_or_else(|| fail(format!("no record for slot {i}")))?;
            let (uuid, slot_state) = match state {
                superblock::SlotState::InSync { base_uuid } => (*base_uuid, SlotState::Operational),
                superblock::SlotState::Stale { base_uuid, .. } => (*base_uuid, SlotState::Stale),
                superblock::SlotState::Missing { record } => {
                    let mut s = BaseSlot::empty();
                    s.uuid = record.uuid;
                    s.data_offset = record.data_offset;
                    s.data_size = record.data_size;
                    if record.state == SbBaseState::Failed {
                        s.failed = Some("failed before the restart".to_string());
                    } else if record.state == SbBaseState::Configured {
                        s.failed = Some("not present at startup".to_string());
                    }
                    slots.push(s);
                    continue;
                }
            };
            let base = bases
                .iter()
                .find(|b| b.info().uuid == uuid)
                .cloned()
                .ok_or_else(|| fail(format!("the base of slot {i} was not given")))?;
            let bi = base.info();
            if bi.block_size != sb.block_size {
                return Err(Raid1Error::BlockSizeMismatch {
                    field: "base_bdevs",
                    raid: raid(),
                    base: bi.name.clone(),
                    block_size: bi.block_size,
                    expected: sb.block_size,
                });
            }
            if record.data_offset == 0 {
                return Err(fail(format!(
                    "slot {i}: data_offset 0 leaves no room for the superblock"
                )));
            }
            let room = bi.num_blocks.saturating_sub(record.data_offset);
            if room < sb.raid_size {
                return Err(Raid1Error::BaseTooSmall {
                    field: "base_bdevs",
                    raid: raid(),
                    base: bi.name.clone(),
                    data_blocks: room,
                    needed: sb.raid_size,
                });
            }
            slots.push(BaseSlot {
                bdev: Some(base),
                state: slot_state,
                data_offset: record.data_offset,
                data_size: sb.raid_size,
                since: 1,
                failed: None,
                uuid,
            });
        }
        if !slots.iter().any(|s| s.state == SlotState::Operational) {
            return Err(fail("no member in sync is present".to_string()));
        }
        let members = Members::of(&slots, 1);
        let mut writer = persist::SbWriter::new(sb.seq_number);
        writer.home = Some(reactor.clone());
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            info: BdevInfo {
                name: sb.name.clone(),
                product_name: PRODUCT_NAME,
                block_size: sb.block_size,
                num_blocks: sb.raid_size,
                uuid: sb.uuid,
            },
            superblock: true,
            config: Mutex::new(Config {
                slots,
                version: 1,
                process: None,
                running: false,
                deleted: false,
                wiped: false,
            }),
            members: ArcSwap::from_pointee(members),
            options: OptionsCell::new(options),
            window: Mutex::new(None),
            waited: AtomicU64::new(0),
            sb: Mutex::new(writer),
            sb_persisted: AtomicU64::new(0),
        });
        {
            let mut c = lock(&inner.config);
            rebuild::start(&inner, &mut c, reactor.clone()).map_err(fail)?;
        }
        persist::request_off_reactor(&inner);
        tracing::info!(raid = %sb.name, seq = sb.seq_number, "raid1 assembled from its superblock");
        Ok(Raid1Bdev { inner })
    }
}
