//! Keeping the superblock on the bases current (volumes created with a
//! superblock): after every change of membership (a base failed, removed or
//! added, a rebuild finished) the volume's superblock, with a new
//! `seq_number`, is written at block 0 of every configured base.
//!
//! One update runs at a time per volume, on a reactor; a change while one
//! runs makes another follow it. A base that fails the update is taken out
//! (which is one more change). The configuration version an update
//! described is recorded as persisted once an operational base has it.
//!
//! A write that a base failed is not answered before the superblock that
//! records the failure is persisted ([`io`]'s hold): were the host told the
//! write succeeded while every superblock still called the failed base in
//! sync, a restart could assemble the volume from that base and lose it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lull_reactor::{Context, Message, ReactorHandle, TrySendError};

use super::base::SlotState;
use super::superblock::{RaidLevel, SbBaseBdev, SbBaseState, Superblock};
use super::{Config, Inner, Raid1Error, io, lock, window};
use crate::bdev::{Bdev, BdevDone, BdevIo};

/// The volume's superblock writer.
pub(super) struct SbWriter {
    /// `seq_number` of the last superblock written or being written.
    pub(super) seq: u64,
    writing: bool,
    again: bool,
    /// Where updates asked for from off the reactors run.
    pub(super) home: Option<ReactorHandle>,
}

impl SbWriter {
    pub(super) fn new(seq: u64) -> Self {
        SbWriter {
            seq,
            writing: false,
            again: false,
            home: None,
        }
    }
}

/// The superblock that describes `c`, numbered `seq`: an operational base
/// is CONFIGURED; a base not in sync yet (being rebuilt) MISSING with its
/// uuid, so a restart rebuilds it again; an emptied slot FAILED (after an
/// error) or MISSING (removed), with the last occupant's uuid.
pub(super) fn describe(inner: &Inner, c: &Config, seq: u64) -> Superblock {
    Superblock {
        uuid: inner.info.uuid,
        name: inner.info.name.clone(),
        seq_number: seq,
        level: RaidLevel::Raid1,
        strip_size: 0,
        block_size: inner.info.block_size,
        raid_size: inner.info.num_blocks,
        base_bdevs: c
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| SbBaseBdev {
                uuid: s.uuid,
                data_offset: s.data_offset,
                data_size: s.data_size,
                state: match (s.state, &s.failed) {
                    (SlotState::Operational, _) => SbBaseState::Configured,
                    (SlotState::Empty, Some(_)) => SbBaseState::Failed,
                    (SlotState::Stale, _) | (SlotState::Empty, None) => SbBaseState::Missing,
                },
                slot: i as u8,
            })
            .collect(),
    }
}

/// Asks for an update, on this reactor. No-op without a superblock.
pub(super) fn request(cx: &mut Context, inner: &Arc<Inner>) {
    if !inner.superblock {
        return;
    }
    {
        let mut w = lock(&inner.sb);
        if w.writing {
            w.again = true;
            return;
        }
        w.writing = true;
    }
    round(cx, inner.clone());
}

/// Asks for an update from off the reactors: on the home reactor.
pub(super) fn request_off_reactor(inner: &Arc<Inner>) {
    if !inner.superblock {
        return;
    }
    let Some(home) = lock(&inner.sb).home.clone() else {
        tracing::warn!(raid = %inner.info.name, "no reactor to write the superblock on yet");
        return;
    };
    let inner2 = inner.clone();
    if let Err(e) = send_blocking(&home, Message::new(move |cx: &mut Context| request(cx, &inner2))) {
        tracing::warn!(raid = %inner.info.name, "superblock update not sent: {e}");
    }
}

/// Sends `msg` from off the reactors, waiting up to a second while the
/// inbox is full.
pub(super) fn send_blocking(to: &ReactorHandle, mut msg: Message) -> Result<(), String> {
    for _ in 0..1000 {
        match to.try_send_message(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(m)) => {
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TrySendError::Stopped(_)) => return Err(format!("reactor {} is stopped", to.index())),
        }
    }
    Err(format!("reactor {}'s inbox stayed full", to.index()))
}

/// What one update's writes came to.
struct Tally {
    left: usize,
    /// An operational base has it.
    persisted: bool,
    failed: Vec<(u8, String)>,
}

/// Writes the superblock of the configuration now to every configured base.
fn round(cx: &mut Context, inner: Arc<Inner>) {
    let (version, bytes, targets) = {
        let c = lock(&inner.config);
        let mut w = lock(&inner.sb);
        w.seq += 1;
        let bytes = describe(&inner, &c, w.seq).encode(inner.info.block_size);
        // Zeroed for good: an update now would put the superblock back.
        let targets: Vec<(u8, Arc<dyn Bdev>, bool)> = if c.wiped {
            Vec::new()
        } else {
            c.slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i as u8, s.bdev.clone()?, s.state == SlotState::Operational)))
                .collect()
        };
        (c.version, bytes, targets)
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            // Only a volume the format cannot describe gets here (a name
            // over 63 bytes): creating one with a superblock is refused.
            tracing::error!(raid = %inner.info.name, "superblock cannot be encoded: {e}");
            return finish(cx, inner, version, false, Vec::new());
        }
    };
    if targets.is_empty() {
        return finish(cx, inner, version, false, Vec::new());
    }
    let tally = Rc::new(RefCell::new(Tally {
        left: targets.len(),
        persisted: false,
        failed: Vec::new(),
    }));
    for (slot, bdev, operational) in targets {
        let (inner, tally) = (inner.clone(), tally.clone());
        let io = BdevIo::Write {
            lba: 0,
            data: bytes.clone(),
        };
        bdev.submit(
            cx,
            io,
            BdevDone::from_fn(move |cx, r, _| {
                let last = {
                    let mut t = tally.borrow_mut();
                    match r {
                        Ok(()) => t.persisted |= operational,
                        Err(e) => t.failed.push((slot, e.to_string())),
                    }
                    t.left -= 1;
                    (t.left == 0).then(|| (t.persisted, std::mem::take(&mut t.failed)))
                };
                if let Some((persisted, failed)) = last {
                    finish(cx, inner, version, persisted, failed);
                }
            }),
        );
    }
}

/// Ends an update: takes out the bases that failed it, records `version`
/// as persisted, runs the next update if one was asked for, and lets every
/// reactor answer the writes that waited for it.
fn finish(cx: &mut Context, inner: Arc<Inner>, version: u64, persisted: bool, failed: Vec<(u8, String)>) {
    for (slot, why) in failed {
        inner.fail_base(cx, slot, version, &format!("superblock write failed: {why}"));
    }
    if persisted {
        inner.sb_persisted.fetch_max(version, Ordering::AcqRel);
    }
    let again = {
        let mut w = lock(&inner.sb);
        if w.again {
            w.again = false;
        } else {
            w.writing = false;
        }
        w.writing
    };
    for peer in cx.peers().to_vec() {
        let inner = inner.clone();
        window::send(
            cx,
            peer,
            Message::new(move |cx: &mut Context| io::release_held(cx, &inner)),
        );
    }
    if again {
        round(cx, inner);
    }
}

/// Writes the superblock now on `reactor` (made the volume's home for later
/// updates) and waits until an operational base has it.
pub(super) fn write_now(inner: &Arc<Inner>, reactor: &ReactorHandle, timeout: Duration) -> Result<(), Raid1Error> {
    let fail = |why: String| Raid1Error::Superblock {
        raid: inner.info.name.clone(),
        why,
    };
    if !inner.superblock {
        return Ok(());
    }
    lock(&inner.sb).home = Some(reactor.clone());
    let target = lock(&inner.config).version;
    let inner2 = inner.clone();
    send_blocking(reactor, Message::new(move |cx: &mut Context| request(cx, &inner2))).map_err(fail)?;
    let t0 = Instant::now();
    while inner.sb_persisted.load(Ordering::Acquire) < target {
        if inner.members.load().readable == 0 {
            return Err(fail("no operational base bdev took it".into()));
        }
        if t0.elapsed() > timeout {
            return Err(fail(format!("not written within {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Zeroes the superblock area's first blocks (as many as the volume's
/// superblock takes) on every configured base, from `reactor`, and waits:
/// for deleting a volume so that no later startup assembles it again.
pub(super) fn wipe_now(inner: &Arc<Inner>, reactor: &ReactorHandle, timeout: Duration) -> Result<(), Raid1Error> {
    let fail = |why: String| Raid1Error::Superblock {
        raid: inner.info.name.clone(),
        why,
    };
    if !inner.superblock {
        return Ok(());
    }
    let (bases, len) = {
        let mut c = lock(&inner.config);
        c.wiped = true;
        let bases: Vec<Arc<dyn Bdev>> = c.slots.iter().filter_map(|s| s.bdev.clone()).collect();
        let blocks = super::superblock::sb_len_blocks(c.slots.len(), inner.info.block_size);
        (bases, (blocks * u64::from(inner.info.block_size)) as usize)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let n = bases.len();
    send_blocking(
        reactor,
        Message::new(move |cx: &mut Context| {
            for b in bases {
                let (tx, name) = (tx.clone(), b.info().name.clone());
                let io = BdevIo::Write {
                    lba: 0,
                    data: vec![0; len],
                };
                b.submit(
                    cx,
                    io,
                    BdevDone::from_fn(move |_, r, _| {
                        let _ = tx.send(r.map_err(|e| format!("{name}: {e}")));
                    }),
                );
            }
        }),
    )
    .map_err(|e| {
        lock(&inner.config).wiped = false;
        fail(e)
    })?;
    let deadline = Instant::now() + timeout;
    let mut errors = Vec::new();
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => {
                lock(&inner.config).wiped = false;
                return Err(fail(format!("not wiped within {timeout:?}")));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        // The volume stays: its later updates are written again.
        lock(&inner.config).wiped = false;
        Err(fail(format!("wiping failed on {}", errors.join("; "))))
    }
}
