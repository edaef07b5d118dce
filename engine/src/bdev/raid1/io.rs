//! The I/O path, run on whichever reactor submits: each reactor keeps its
//! own state per volume ([`Local`], in a thread-local table keyed by the
//! volume), so nothing here takes a lock or touches another core's data
//! except the members snapshot, loaded lock-free.
//!
//! An operation becomes an entry of the reactor's slab; each base's part of
//! it completes to the same [`Local`] (the sink) with a tag that holds the
//! entry's index and the base's slot, so sending to a base allocates
//! nothing. Write data is copied for every base but one (each base takes a
//! `Vec` of its own) into buffers reused from a per-reactor pool.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak as RcWeak};
use std::sync::{Arc, Weak};

use lull_reactor::Context;

use super::{Inner, MAX_BASE_BDEVS, lock};
use crate::bdev::slab::Slab;
use crate::bdev::{BdevDone, BdevError, BdevIo, IoCompletion};

/// Bits of a tag that hold the base's slot (the rest: the entry's index).
const SLOT_BITS: u32 = 6;

/// Spare write-copy buffers a reactor keeps.
const KEEP_SPARE: usize = 256;

const _: () = assert!(MAX_BASE_BDEVS <= 1 << SLOT_BITS);

thread_local! {
    /// This reactor's state of each volume it has served.
    static LOCALS: RefCell<Vec<Rc<Local>>> = const { RefCell::new(Vec::new()) };
    /// Write-copy buffers back from their bases, for the next writes (shared
    /// by every volume on this reactor).
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A half-open block range `[start, end)`.
type Range = (u64, u64);

fn overlaps(a: Range, b: Range) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn tag(index: u32, slot: u8) -> u32 {
    (index << SLOT_BITS) | u32::from(slot)
}

fn untag(tag: u32) -> (u32, u8) {
    (tag >> SLOT_BITS, (tag & ((1 << SLOT_BITS) - 1)) as u8)
}

fn spare() -> Vec<u8> {
    let mut v = SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    v
}

fn recycle(buf: Vec<u8>) {
    if buf.capacity() > 0 {
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < KEEP_SPARE {
                s.push(buf);
            }
        });
    }
}

/// One reactor's state of one volume; the sink of its bases' completions.
pub(super) struct Local {
    id: u64,
    name: String,
    inner: Weak<Inner>,
    /// Itself, to hand out as a sink from `&self`.
    me: RcWeak<Local>,
    st: RefCell<State>,
}

struct State {
    ops: Slab<Op>,
    /// Read blocks in flight per slot, on this reactor (SPDK's
    /// `read_blocks_outstanding`).
    outstanding: [u64; MAX_BASE_BDEVS],
    /// The rebuild's window as this reactor knows it.
    window: Option<Range>,
    /// Writes into the window, in arrival order, until it moves.
    waiting: VecDeque<(Range, BdevIo, BdevDone)>,
    /// A window move waiting for writes in flight into the new window.
    drain: Option<Drain>,
    /// Completed operations that a base failed, waiting for the superblock
    /// recording the failure: (configuration version, completion, buffer).
    held: Vec<(u64, BdevDone, Vec<u8>)>,
}

struct Drain {
    left: usize,
    ack: Box<dyn FnOnce(&mut Context)>,
}

enum Op {
    Read(ReadOp),
    Fan(FanOp),
}

struct ReadOp {
    done: BdevDone,
    lba: u64,
    blocks: u64,
    /// Configuration version the base was chosen at.
    version: u64,
    /// Slots tried so far (bitmask).
    tried: u64,
}

/// A write, Write Zeroes, Unmap or Flush sent to every configured base.
struct FanOp {
    done: BdevDone,
    what: &'static str,
    range: Option<Range>,
    /// Bases not completed yet.
    left: usize,
    /// Operational bases (at submission) that completed it.
    ok: usize,
    /// Slots operational at submission (bitmask).
    readable: u64,
    /// The slot given the caller's own write buffer.
    owner: Option<u8>,
    /// The caller's buffer, once back, to hand back.
    buf: Vec<u8>,
    version: u64,
    error: Option<String>,
    /// Counted by the window move in progress.
    draining: bool,
    /// The configuration version that records a base this operation saw
    /// fail (0: none failed).
    hold_for: u64,
}

impl State {
    fn new(window: Option<Range>) -> Self {
        State {
            ops: Slab::with_capacity(64),
            outstanding: [0; MAX_BASE_BDEVS],
            window,
            waiting: VecDeque::new(),
            drain: None,
            held: Vec::new(),
        }
    }

    /// The slot of `mask` with the fewest read blocks outstanding here; of
    /// equals, the lowest (SPDK's raid1 rule): the base listed first, a
    /// volume's local replica as `lull volume create` lists it, serves
    /// every read it keeps up with, and the others take what queues behind
    /// it. A read served locally costs no initiator round trip.
    fn pick(&mut self, mask: u64) -> Option<u8> {
        let mut best: Option<(u64, u32)> = None;
        let mut rest = mask;
        while rest != 0 {
            let slot = rest.trailing_zeros();
            rest &= rest - 1;
            let n = self.outstanding[slot as usize];
            if best.is_none_or(|(b, _)| n < b) {
                best = Some((n, slot));
            }
        }
        best.map(|(_, slot)| slot as u8)
    }
}

/// This reactor's state of `inner`, made on first use.
fn local(inner: &Arc<Inner>) -> Rc<Local> {
    LOCALS.with(|l| {
        let mut l = l.borrow_mut();
        if let Some(x) = l.iter().find(|x| x.id == inner.id) {
            return x.clone();
        }
        // Volumes deleted since: their state goes now.
        l.retain(|x| x.inner.strong_count() > 0);
        let window = *lock(&inner.window);
        let x = Rc::new_cyclic(|me| Local {
            id: inner.id,
            name: inner.info.name.clone(),
            inner: Arc::downgrade(inner),
            me: me.clone(),
            st: RefCell::new(State::new(window)),
        });
        l.push(x.clone());
        x
    })
}

fn offline_error(name: &str) -> BdevError {
    BdevError::Io(format!(
        "raid1 {name}: no operational base bdev left (the volume is offline)"
    ))
}

/// Starts `io` on the volume (see [`Raid1Bdev::submit`](super::Raid1Bdev)).
pub(super) fn submit(inner: &Arc<Inner>, cx: &mut Context, io: BdevIo, done: BdevDone) {
    let info = &inner.info;
    let range = match &io {
        BdevIo::Read { lba, blocks, .. } | BdevIo::WriteZeroes { lba, blocks } | BdevIo::Unmap { lba, blocks } => {
            info.byte_range(*lba, *blocks).map(|_| Some((*lba, *lba + *blocks)))
        }
        BdevIo::Write { lba, data } => info.data_blocks(*lba, data.len()).map(|b| Some((*lba, *lba + b))),
        BdevIo::Flush => Ok(None),
    };
    let range = match range {
        Ok(r) => r,
        Err(e) => return done.complete(cx, Err(e), io.into_buf()),
    };
    let local = local(inner);
    match io {
        BdevIo::Read { lba, blocks, buf } => local.read(inner, cx, lba, blocks, buf, done),
        io => {
            if let Some(r) = range {
                let mut st = local.st.borrow_mut();
                if st.window.is_some_and(|w| overlaps(w, r)) {
                    inner.waited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    st.waiting.push_back((r, io, done));
                    return;
                }
            }
            local.fan(inner, cx, io, range, done);
        }
    }
}

/// Applies a window move on this reactor (see [`window`](super::window)):
/// releases waiting writes clear of `window`, and calls `ack` once no write
/// admitted before is in flight into it.
pub(super) fn apply_window(
    cx: &mut Context,
    inner: &Arc<Inner>,
    window: Option<Range>,
    ack: Box<dyn FnOnce(&mut Context)>,
) {
    let Some(local) = LOCALS.with(|l| l.borrow().iter().find(|x| x.id == inner.id).cloned()) else {
        // Never served here: nothing in flight, and a later first use
        // reads the window already set.
        return ack(cx);
    };
    let (released, ack) = {
        let mut st = local.st.borrow_mut();
        let st = &mut *st;
        debug_assert!(st.drain.is_none(), "one window move at a time");
        st.window = window;
        let mut released = Vec::new();
        for _ in 0..st.waiting.len() {
            if let Some((r, io, done)) = st.waiting.pop_front() {
                if window.is_some_and(|w| overlaps(w, r)) {
                    st.waiting.push_back((r, io, done));
                } else {
                    released.push((io, done));
                }
            }
        }
        let mut left = 0;
        if let Some(w) = window {
            for op in st.ops.values_mut() {
                if let Op::Fan(f) = op
                    && f.range.is_some_and(|r| overlaps(w, r))
                {
                    f.draining = true;
                    left += 1;
                }
            }
        }
        if left == 0 {
            (released, Some(ack))
        } else {
            st.drain = Some(Drain { left, ack });
            (released, None)
        }
    };
    if let Some(ack) = ack {
        ack(cx);
    }
    for (io, done) in released {
        submit(inner, cx, io, done);
    }
}

impl Local {
    fn sink(&self, index: u32, slot: u8) -> BdevDone {
        // `me` is alive: `self` is borrowed from it.
        let me: Rc<dyn IoCompletion> = self.me.upgrade().expect("a Local is reached through its Rc");
        BdevDone::new(me, tag(index, slot))
    }

    fn read(&self, inner: &Inner, cx: &mut Context, lba: u64, blocks: u64, buf: Vec<u8>, done: BdevDone) {
        let m = inner.members.load();
        let op = ReadOp {
            done,
            lba,
            blocks,
            version: m.version,
            tried: 0,
        };
        self.send_read(cx, &m, op, buf);
    }

    /// Sends `op` to the least busy operational base it has not tried, or
    /// fails it when none is left.
    fn send_read(&self, cx: &mut Context, m: &super::Members, mut op: ReadOp, mut buf: Vec<u8>) {
        let picked = {
            let mut st = self.st.borrow_mut();
            match st.pick(m.readable & !op.tried) {
                Some(slot) => {
                    op.version = m.version;
                    st.outstanding[usize::from(slot)] += op.blocks;
                    let (lba, blocks) = (op.lba, op.blocks);
                    Ok((slot, st.ops.insert(Op::Read(op)), lba, blocks))
                }
                None => Err(op),
            }
        };
        match picked {
            Ok((slot, index, lba, blocks)) => {
                // Present: `readable` is built from the same members.
                let Some(base) = m.get(slot) else { return };
                let io = BdevIo::Read {
                    lba: lba + base.data_offset,
                    blocks,
                    buf,
                };
                base.bdev.submit(cx, io, self.sink(index, slot));
            }
            Err(op) => {
                buf.clear();
                let e = if op.tried == 0 {
                    offline_error(&self.name)
                } else {
                    BdevError::Io(format!(
                        "raid1 {}: read of blocks {}..{} failed on every operational base bdev",
                        self.name,
                        op.lba,
                        op.lba + op.blocks
                    ))
                };
                op.done.complete(cx, Err(e), buf);
            }
        }
    }

    fn read_done(&self, cx: &mut Context, index: u32, slot: u8, result: Result<(), BdevError>, buf: Vec<u8>) {
        let op = {
            let mut st = self.st.borrow_mut();
            let Some(Op::Read(op)) = st.ops.remove(index) else {
                return;
            };
            let n = &mut st.outstanding[usize::from(slot)];
            *n = n.saturating_sub(op.blocks);
            op
        };
        let e = match result {
            Ok(()) => return op.done.complete(cx, Ok(()), buf),
            Err(e) => e,
        };
        let Some(inner) = self.inner.upgrade() else {
            return op.done.complete(cx, Err(e), buf);
        };
        inner.fail_base(cx, slot, op.version, &format!("read failed: {e}"));
        let mut op = op;
        op.tried |= 1 << slot;
        let m = inner.members.load();
        self.send_read(cx, &m, op, buf);
    }

    fn fan(&self, inner: &Inner, cx: &mut Context, io: BdevIo, range: Option<Range>, done: BdevDone) {
        let m = inner.members.load();
        let Some(last) = m.bases.last().filter(|_| m.readable != 0) else {
            return done.complete(cx, Err(offline_error(&self.name)), io.into_buf());
        };
        let what = match io {
            BdevIo::Read { lba, blocks, buf } => return self.read(inner, cx, lba, blocks, buf, done),
            BdevIo::Write { .. } => "write",
            BdevIo::WriteZeroes { .. } => "write zeroes",
            BdevIo::Unmap { .. } => "unmap",
            BdevIo::Flush => "flush",
        };
        let owner = matches!(io, BdevIo::Write { .. }).then_some(last.slot);
        let index = self.st.borrow_mut().ops.insert(Op::Fan(FanOp {
            done,
            what,
            range,
            left: m.bases.len(),
            ok: 0,
            readable: m.readable,
            owner,
            buf: Vec::new(),
            version: m.version,
            error: None,
            draining: false,
            hold_for: 0,
        }));
        // Every base's part counts in `left` before the first is sent, so a
        // base that completes at once cannot end the operation early.
        match io {
            BdevIo::Write { lba, data } => {
                for b in &m.bases[..m.bases.len() - 1] {
                    let mut copy = spare();
                    copy.extend_from_slice(&data);
                    let io = BdevIo::Write {
                        lba: lba + b.data_offset,
                        data: copy,
                    };
                    b.bdev.submit(cx, io, self.sink(index, b.slot));
                }
                let io = BdevIo::Write {
                    lba: lba + last.data_offset,
                    data,
                };
                last.bdev.submit(cx, io, self.sink(index, last.slot));
            }
            BdevIo::WriteZeroes { lba, blocks } => {
                for b in &m.bases {
                    let io = BdevIo::WriteZeroes {
                        lba: lba + b.data_offset,
                        blocks,
                    };
                    b.bdev.submit(cx, io, self.sink(index, b.slot));
                }
            }
            BdevIo::Unmap { lba, blocks } => {
                for b in &m.bases {
                    let io = BdevIo::Unmap {
                        lba: lba + b.data_offset,
                        blocks,
                    };
                    b.bdev.submit(cx, io, self.sink(index, b.slot));
                }
            }
            BdevIo::Flush => {
                for b in &m.bases {
                    b.bdev.submit(cx, BdevIo::Flush, self.sink(index, b.slot));
                }
            }
            BdevIo::Read { .. } => {}
        }
    }

    fn fan_done(&self, cx: &mut Context, index: u32, slot: u8, result: Result<(), BdevError>, buf: Vec<u8>) {
        let Some((version, what)) = (match self.st.borrow().ops.get(index) {
            Some(Op::Fan(op)) => Some((op.version, op.what)),
            _ => None,
        }) else {
            recycle(buf);
            return;
        };
        // The base leaves the volume before the operation is answered, so
        // nothing submitted after the answer reads it.
        let inner = self.inner.upgrade();
        let failed = match (&result, &inner) {
            (Err(e), Some(inner)) => {
                let why = format!("{what} failed: {e}");
                let recorded = inner.fail_base(cx, slot, version, &why);
                Some((recorded, why))
            }
            (Err(e), None) => Some((0, format!("{what} failed: {e}"))),
            (Ok(()), _) => None,
        };
        let (finished, ack) = {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let Some(Op::Fan(op)) = st.ops.get_mut(index) else {
                recycle(buf);
                return;
            };
            if op.owner == Some(slot) {
                op.buf = buf;
            } else {
                recycle(buf);
            }
            match failed {
                None if op.readable >> slot & 1 == 1 => op.ok += 1,
                None => {}
                Some((recorded, why)) => {
                    op.hold_for = op.hold_for.max(recorded);
                    op.error.get_or_insert(why);
                }
            }
            op.left -= 1;
            if op.left > 0 {
                (None, None)
            } else {
                let Some(Op::Fan(op)) = st.ops.remove(index) else {
                    return;
                };
                let mut ack = None;
                if op.draining
                    && let Some(d) = st.drain.as_mut()
                {
                    d.left -= 1;
                    if d.left == 0 {
                        ack = st.drain.take().map(|d| d.ack);
                    }
                }
                (Some(op), ack)
            }
        };
        if let Some(op) = finished {
            if op.ok == 0 {
                let e = BdevError::Io(format!(
                    "raid1 {}: {} failed on every operational base bdev ({})",
                    self.name,
                    op.what,
                    op.error.as_deref().unwrap_or("no base completed it")
                ));
                op.done.complete(cx, Err(e), op.buf);
            } else if let Some(inner) = inner.filter(|i| i.superblock && op.hold_for > i.persisted()) {
                // Answered once the superblock says the failed base is out.
                self.st.borrow_mut().held.push((op.hold_for, op.done, op.buf));
                drop(inner);
            } else {
                op.done.complete(cx, Ok(()), op.buf);
            }
        }
        if let Some(ack) = ack {
            ack(cx);
        }
    }
}

/// Answers this reactor's held operations whose failure the superblock now
/// records; fails them all when the volume went offline meanwhile.
pub(super) fn release_held(cx: &mut Context, inner: &Arc<Inner>) {
    let Some(local) = LOCALS.with(|l| l.borrow().iter().find(|x| x.id == inner.id).cloned()) else {
        return;
    };
    let persisted = inner.persisted();
    let offline = inner.members.load().readable == 0;
    let ready: Vec<_> = {
        let mut st = local.st.borrow_mut();
        let (ready, keep) = std::mem::take(&mut st.held)
            .into_iter()
            .partition(|(need, _, _)| offline || *need <= persisted);
        st.held = keep;
        ready
    };
    for (_, done, buf) in ready {
        let r = if offline {
            Err(offline_error(&local.name))
        } else {
            Ok(())
        };
        done.complete(cx, r, buf);
    }
}

impl IoCompletion for Local {
    fn complete(&self, cx: &mut Context, tag: u32, result: Result<(), BdevError>, buf: Vec<u8>) {
        let (index, slot) = untag(tag);
        let is_read = matches!(self.st.borrow().ops.get(index), Some(Op::Read(_)));
        if is_read {
            self.read_done(cx, index, slot, result, buf);
        } else {
            self.fan_done(cx, index, slot, result, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_least_busy_slot_and_of_equals_the_lowest() {
        let mut st = State::new(None);
        let mask = 0b1010; // slots 1, 3
        let turns: Vec<_> = (0..3).map(|_| st.pick(mask).unwrap()).collect();
        assert_eq!(turns, vec![1, 1, 1], "nothing outstanding: the lowest slot");
        let mask = 0b1011; // slots 0, 1, 3
        st.outstanding[0] = 8;
        st.outstanding[3] = 8;
        assert_eq!(st.pick(mask), Some(1));
        assert_eq!(st.pick(mask), Some(1), "still the least busy");
        assert_eq!(st.pick(0), None);
        assert_eq!(st.pick(1 << 63), Some(63));
    }

    #[test]
    fn tags_carry_index_and_slot() {
        assert_eq!(untag(tag(12345, 63)), (12345, 63));
        assert_eq!(untag(tag(0, 0)), (0, 0));
        assert!(overlaps((0, 10), (9, 11)));
        assert!(!overlaps((0, 10), (10, 11)));
    }
}
