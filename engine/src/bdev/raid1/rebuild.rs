//! The rebuild process: copies the volume onto a base that is not in sync,
//! window by window, from an operational base, on one reactor.
//!
//! Each window is `process_window_size_kb` of the volume. Before it is
//! copied it is locked against writes on every reactor ([`window`]): writes
//! into it wait, writes already in flight into it complete first. Writes
//! behind and ahead of it go to the new base as to every other (the part
//! behind is copied already; the part ahead will be copied over with the
//! same data). When the last window is copied the base becomes operational
//! and is read from.
//!
//! Nothing polls: each step runs from a completion, a message, or a timer
//! (the rate limit's pause), so a reactor with a rebuild running sleeps
//! between steps in interrupt mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_reactor::{Context, ReactorHandle};

use super::base::{Members, SlotState};
use super::{Config, Inner, lock, window};
use crate::bdev::{BdevDone, BdevError, BdevIo};

/// Below this, a rate-limit pause is not worth unlocking the window for.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// A rebuild, as the volume's configuration holds it.
pub(super) struct Process {
    pub(super) target_slot: u8,
    /// The configuration version the target was placed at (its identity).
    pub(super) target_since: u64,
    pub(super) target_name: String,
    /// Blocks copied so far: everything below `next` is on the target.
    pub(super) next: u64,
    /// Set to stop the process at its next step (target removed or failed,
    /// volume deleted).
    pub(super) abort: Option<String>,
}

/// What the process carries from step to step, on its reactor.
struct Run {
    inner: Arc<Inner>,
    /// The pieces' copy buffers, reused for every window.
    bufs: Vec<Vec<u8>>,
    /// When the current window's copy started (for the rate limit).
    started: Instant,
    /// Turns the source around the operational bases, window by window.
    turn: usize,
}

/// Makes the first stale slot, if any, the target of a new process in `c`.
/// Returns whether one was made.
fn begin(c: &mut Config) -> bool {
    if c.deleted || c.running || !c.slots.iter().any(|s| s.state == SlotState::Operational) {
        return false;
    }
    let Some(slot) = c.slots.iter().position(|s| s.state == SlotState::Stale) else {
        return false;
    };
    let s = &c.slots[slot];
    c.process = Some(Process {
        target_slot: slot as u8,
        target_since: s.since,
        target_name: s.name().unwrap_or_default().to_string(),
        next: 0,
        abort: None,
    });
    c.running = true;
    true
}

/// Starts a process for the first stale slot on `reactor` (from off the
/// reactors). Ok when there is nothing to rebuild or a process runs.
///
/// # Errors
/// The reactor does not take the message (stopped, or its inbox stayed full
/// for a second); no process is left behind then.
pub(super) fn start(inner: &Arc<Inner>, c: &mut Config, reactor: ReactorHandle) -> Result<(), String> {
    if !begin(c) {
        return Ok(());
    }
    let mut msg = lull_reactor::Message::new({
        let inner = inner.clone();
        move |cx: &mut Context| run(cx, inner)
    });
    for _ in 0..1000 {
        match reactor.try_send_message(msg) {
            Ok(()) => return Ok(()),
            Err(lull_reactor::TrySendError::Full(m)) => {
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(lull_reactor::TrySendError::Stopped(_)) => {
                (c.process, c.running) = (None, false);
                return Err(format!("reactor {} is stopped", reactor.index()));
            }
        }
    }
    (c.process, c.running) = (None, false);
    Err(format!("reactor {}'s inbox stayed full", reactor.index()))
}

fn run(cx: &mut Context, inner: Arc<Inner>) {
    if let Some(p) = lock(&inner.config).process.as_ref() {
        tracing::info!(raid = %inner.info.name, target = %p.target_name, "rebuild started");
    }
    step(
        cx,
        Run {
            inner,
            bufs: Vec::new(),
            started: Instant::now(),
            turn: 0,
        },
    );
}

/// What the next step is, decided under the lock.
enum Next {
    Window(u64, u64),
    Finished,
}

/// Locks the next window, or ends the process (done or aborted).
fn step(cx: &mut Context, run: Run) {
    let inner = run.inner.clone();
    let total = inner.info.num_blocks;
    let next = {
        let mut c = lock(&inner.config);
        let c = &mut *c;
        match c.process.as_mut() {
            None => Next::Finished,
            Some(p) => {
                if let Some(why) = p.abort.take() {
                    tracing::warn!(raid = %inner.info.name, target = %p.target_name, "rebuild stopped: {why}");
                    c.process = None;
                    Next::Finished
                } else if p.next >= total {
                    let slot = usize::from(p.target_slot);
                    tracing::info!(raid = %inner.info.name, target = %p.target_name, "rebuild complete");
                    if c.slots[slot].since == p.target_since && c.slots[slot].bdev.is_some() {
                        c.slots[slot].state = SlotState::Operational;
                        c.version += 1;
                    }
                    c.process = None;
                    inner.publish(c);
                    Next::Finished
                } else {
                    let blocks = inner.options.get().window_blocks(inner.info.block_size);
                    Next::Window(p.next, (p.next + blocks).min(total))
                }
            }
        }
    };
    match next {
        Next::Finished => {
            // The target's new state (or its failure) goes in the superblock.
            super::persist::request(cx, &inner);
            finish(cx, run)
        }
        Next::Window(start, end) => {
            window::apply_everywhere(
                cx,
                &inner,
                Some((start, end)),
                Box::new(move |cx| {
                    let mut run = run;
                    run.started = Instant::now();
                    copy(cx, run, (start, end));
                }),
            );
        }
    }
}

/// Unlocks the window everywhere (releasing the writes that waited), then
/// starts the next process if another base waits for one.
fn finish(cx: &mut Context, done: Run) {
    let inner = done.inner;
    window::apply_everywhere(
        cx,
        &inner.clone(),
        None,
        Box::new(move |cx| {
            let again = {
                let mut c = lock(&inner.config);
                c.running = false;
                begin(&mut c)
            };
            if again {
                run(cx, inner);
            }
        }),
    );
}

/// Sets the process's abort reason (unless one is set) and goes on to the
/// step that ends it.
fn abort(cx: &mut Context, run: Run, why: String) {
    if let Some(p) = lock(&run.inner.config).process.as_mut() {
        p.abort.get_or_insert(why);
    }
    step(cx, run);
}

/// Most bytes one piece of a window's copy moves. A window is copied as
/// pieces that are all in flight at once, each written as soon as it is
/// read, so writing one piece overlaps reading the next instead of the
/// window being read whole and then written whole (which ran the rebuild at
/// the latency of a window's round trip: 372 MiB/s against a 1 GiB/s local
/// copy, docs/performance.md).
const PIECE_BYTES: u64 = 128 * 1024;

/// One window's copy in flight: its pieces share this.
struct WindowCopy {
    /// The process, back when the last piece ends.
    run: Option<Run>,
    w: (u64, u64),
    m: Arc<Members>,
    source: u8,
    target_slot: u8,
    /// Pieces not ended yet (read failed, or written, or failed).
    pending: usize,
    /// A read failed: the source goes out and the window is copied again
    /// from another base.
    read_failed: Option<String>,
    /// A write failed: the target goes out, which ends the process.
    write_failed: Option<String>,
}

type Shared = std::rc::Rc<std::cell::RefCell<WindowCopy>>;

/// Copies locked window `w` from an operational base onto the target.
fn copy(cx: &mut Context, mut run: Run, w: (u64, u64)) {
    let state = lock(&run.inner.config)
        .process
        .as_ref()
        .map(|p| (p.target_slot, p.abort.is_some()));
    let Some((target_slot, aborted)) = state else {
        return finish(cx, run);
    };
    if aborted {
        return step(cx, run);
    }
    let m: Arc<Members> = run.inner.members.load_full();
    if m.get(target_slot).is_none() {
        return abort(cx, run, "the target left the volume".to_string());
    }
    let sources: Vec<_> = m.bases.iter().filter(|b| b.readable).collect();
    if sources.is_empty() {
        return abort(cx, run, "no operational base bdev to copy from".to_string());
    }
    let src = sources[run.turn % sources.len()];
    run.turn = run.turn.wrapping_add(1);
    let (bdev, source, offset) = (src.bdev.clone(), src.slot, src.data_offset);
    let per_piece = (PIECE_BYTES / u64::from(run.inner.info.block_size)).max(1);
    let pieces: Vec<(u64, u64)> = (w.0..w.1)
        .step_by(per_piece as usize)
        .map(|start| (start, (start + per_piece).min(w.1)))
        .collect();
    let mut bufs: Vec<Vec<u8>> = (0..pieces.len()).map(|_| run.bufs.pop().unwrap_or_default()).collect();
    // Every piece is counted before the first is submitted: a bdev that
    // completes inside `submit` must not see the copy end early.
    let shared: Shared = std::rc::Rc::new(std::cell::RefCell::new(WindowCopy {
        run: Some(run),
        w,
        m,
        source,
        target_slot,
        pending: pieces.len(),
        read_failed: None,
        write_failed: None,
    }));
    for piece in pieces {
        let buf = bufs.pop().unwrap_or_default();
        let io = BdevIo::Read {
            lba: piece.0 + offset,
            blocks: piece.1 - piece.0,
            buf,
        };
        let sh = shared.clone();
        bdev.submit(
            cx,
            io,
            BdevDone::from_fn(move |cx, r, buf| piece_read(cx, &sh, piece, r, buf)),
        );
    }
}

/// A piece was read: written to the target unless the copy already failed.
fn piece_read(cx: &mut Context, sh: &Shared, piece: (u64, u64), r: Result<(), BdevError>, buf: Vec<u8>) {
    let target = {
        let mut c = sh.borrow_mut();
        if let Err(e) = r {
            c.read_failed.get_or_insert(format!("rebuild read failed: {e}"));
        }
        if c.read_failed.is_some() || c.write_failed.is_some() {
            None
        } else {
            match c.m.get(c.target_slot) {
                Some(t) => Some((t.bdev.clone(), t.data_offset)),
                None => {
                    c.write_failed.get_or_insert("the target left the volume".to_string());
                    None
                }
            }
        }
    };
    let Some((bdev, offset)) = target else {
        return piece_ended(cx, sh, buf);
    };
    let io = BdevIo::Write {
        lba: piece.0 + offset,
        data: buf,
    };
    let sh = sh.clone();
    bdev.submit(
        cx,
        io,
        BdevDone::from_fn(move |cx, r, buf| {
            if let Err(e) = r {
                sh.borrow_mut()
                    .write_failed
                    .get_or_insert(format!("rebuild write failed: {e}"));
            }
            piece_ended(cx, &sh, buf);
        }),
    );
}

/// A piece ended; after the last one the process goes on: to the next
/// window, to this one again from another base (a read failed), or to its
/// end (the target failed).
fn piece_ended(cx: &mut Context, sh: &Shared, buf: Vec<u8>) {
    let ended = {
        let mut c = sh.borrow_mut();
        if let Some(run) = c.run.as_mut() {
            run.bufs.push(buf);
        }
        c.pending -= 1;
        if c.pending > 0 {
            return;
        }
        let run = c.run.take();
        run.map(|run| {
            (
                run,
                c.w,
                c.m.version,
                c.source,
                c.target_slot,
                c.read_failed.take(),
                c.write_failed.take(),
            )
        })
    };
    let Some((run, w, version, source, target_slot, read_failed, write_failed)) = ended else {
        return;
    };
    if let Some(why) = write_failed {
        // Taking the target out sets the abort reason.
        run.inner.fail_base(cx, target_slot, version, &why);
        return step(cx, run);
    }
    if let Some(why) = read_failed {
        run.inner.fail_base(cx, source, version, &why);
        // Another operational base, if one is left.
        return copy(cx, run, w);
    }
    copied(cx, run, w);
}

/// Window `w` is on the target: record it, then the next window, after
/// the rate limit's pause if there is one.
fn copied(cx: &mut Context, run: Run, w: (u64, u64)) {
    if let Some(p) = lock(&run.inner.config).process.as_mut() {
        p.next = w.1;
    }
    let Some(until) =
        copy_deadline(&run, w.1 - w.0).filter(|t| t.saturating_duration_since(Instant::now()) >= MIN_PAUSE)
    else {
        return step(cx, run);
    };
    // Writes need not wait out the pause: unlock, then sleep.
    let inner = run.inner.clone();
    window::apply_everywhere(
        cx,
        &inner,
        None,
        Box::new(move |cx| {
            cx.timer_once(until.saturating_duration_since(Instant::now()), move |cx| step(cx, run));
        }),
    );
}

/// When the next window may start under the rate limit
/// (`process_max_bandwidth_mb_sec`, MiB/s), after this one's `blocks`;
/// `None` when unlimited.
fn copy_deadline(run: &Run, blocks: u64) -> Option<Instant> {
    let limit = run.inner.options.get().process_max_bandwidth_mb_sec;
    if limit == 0 {
        return None;
    }
    let bytes = blocks as f64 * f64::from(run.inner.info.block_size);
    Some(run.started + Duration::from_secs_f64(bytes / (f64::from(limit) * 1024.0 * 1024.0)))
}
