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
    /// Copy on from this block.
    Window(u64),
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
                    Next::Window(p.next)
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
        Next::Window(start) => pipeline(cx, run, start),
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

/// Most bytes one piece of a window's copy moves. A window is copied as
/// pieces that are all in flight at once, each written as soon as it is
/// read, so writing one piece overlaps reading the next instead of the
/// window being read whole and then written whole (which ran the rebuild at
/// the latency of a window's round trip: 372 MiB/s against a 1 GiB/s local
/// copy, docs/performance.md).
const PIECE_BYTES: u64 = 128 * 1024;

/// Windows copied at once when the rebuild runs unlimited. With one, the
/// copy stops at each window's end: the last piece's write, then moving the
/// lock on every reactor, then the next window's first read, with nothing
/// in flight meanwhile. With two, the next window is locked (the locked
/// range grows to cover both) and copied while the first one's last pieces
/// are still on their way. Under a rate limit one is enough (the rate, not
/// the latency, decides), and the pause between windows unlocks.
const WINDOWS_IN_FLIGHT: usize = 2;

/// One window's copy in flight.
struct WindowCopy {
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

/// The windows being copied, on the process's reactor.
struct Pipe {
    /// The process; taken out when the last window ends.
    run: Option<Run>,
    /// Windows in flight, oldest first; progress is recorded in this order.
    flight: std::collections::VecDeque<WindowCopy>,
    /// The end of the locked range: the next window starts here.
    locked_to: u64,
    /// A lock move is on its way to every reactor.
    moving: bool,
    /// Under a rate limit: when the next window may start.
    pause_until: Option<Instant>,
}

/// The pipe, shared by its pieces' completions. Only the process's reactor
/// touches it, but a window move's continuation must be `Send`: a mutex
/// that is never contended.
type Shared = Arc<std::sync::Mutex<Pipe>>;

/// Copies the volume from `start` on, window by window, then goes back to
/// [`step`] (which ends the process).
fn pipeline(cx: &mut Context, run: Run, start: u64) {
    let sh: Shared = Arc::new(std::sync::Mutex::new(Pipe {
        run: Some(run),
        flight: std::collections::VecDeque::new(),
        locked_to: start,
        moving: false,
        pause_until: None,
    }));
    advance(cx, &sh);
}

/// Records the windows done in order, then locks and starts the next window
/// while fewer than the allowed number are in flight; once nothing is left
/// to copy (or the process stops) and the last window ended, goes back to
/// [`step`].
fn advance(cx: &mut Context, sh: &Shared) {
    let Some(inner) = lock(sh).run.as_ref().map(|r| r.inner.clone()) else {
        return;
    };
    let total = inner.info.num_blocks;
    let options = inner.options.get();
    let limited = options.process_max_bandwidth_mb_sec != 0;
    let mut p = lock(sh);
    while p.flight.front().is_some_and(|f| f.pending == 0) {
        let Some(done) = p.flight.pop_front() else { break };
        // A stopping process records nothing more: a window before this one
        // may have failed.
        if let Some(pr) = lock(&inner.config).process.as_mut()
            && pr.abort.is_none()
        {
            pr.next = done.w.1;
        }
        if limited && let Some(run) = p.run.as_ref() {
            p.pause_until = copy_deadline(run, done.w.1 - done.w.0);
        }
    }
    if p.moving {
        return;
    }
    let stopping = lock(&inner.config).process.as_ref().is_none_or(|pr| pr.abort.is_some());
    if stopping || p.locked_to >= total {
        if p.flight.is_empty()
            && let Some(run) = p.run.take()
        {
            drop(p);
            step(cx, run);
        }
        return;
    }
    let depth = if limited { 1 } else { WINDOWS_IN_FLIGHT };
    if p.flight.len() >= depth {
        return;
    }
    if let Some(until) = p
        .pause_until
        .take()
        .filter(|t| limited && t.saturating_duration_since(Instant::now()) >= MIN_PAUSE)
    {
        // Writes need not wait out the pause: unlock, then sleep.
        p.moving = true;
        drop(p);
        let sh = sh.clone();
        window::apply_everywhere(
            cx,
            &inner,
            None,
            Box::new(move |cx| {
                cx.timer_once(until.saturating_duration_since(Instant::now()), move |cx| {
                    lock(&sh).moving = false;
                    advance(cx, &sh);
                });
            }),
        );
        return;
    }
    let start = p.locked_to;
    let end = (start + options.window_blocks(inner.info.block_size)).min(total);
    // The lock covers every window in flight and the new one.
    let low = p.flight.front().map_or(start, |f| f.w.0);
    p.locked_to = end;
    p.moving = true;
    drop(p);
    let sh = sh.clone();
    window::apply_everywhere(
        cx,
        &inner,
        Some((low, end)),
        Box::new(move |cx| {
            {
                let mut p = lock(&sh);
                p.moving = false;
                if let Some(run) = p.run.as_mut() {
                    run.started = Instant::now();
                }
            }
            // Refused (the process stops): advance ends it.
            let _ = start_window(cx, &sh, (start, end));
            advance(cx, &sh);
        }),
    );
}

/// Sets the process's abort reason (unless one is set).
fn set_abort(inner: &Inner, why: String) {
    if let Some(p) = lock(&inner.config).process.as_mut() {
        p.abort.get_or_insert(why);
    }
}

/// Starts copying locked window `w` from an operational base onto the
/// target (again, after a read failed, when it is in flight already).
/// Returns false, with the process stopping, when it cannot.
fn start_window(cx: &mut Context, sh: &Shared, w: (u64, u64)) -> bool {
    let Some(inner) = lock(sh).run.as_ref().map(|r| r.inner.clone()) else {
        return false;
    };
    let target = lock(&inner.config).process.as_ref().map(|p| p.target_slot);
    let stop = |why: &str| {
        set_abort(&inner, why.to_string());
        false
    };
    let Some(target_slot) = target else {
        return stop("the process ended");
    };
    let m: Arc<Members> = inner.members.load_full();
    if m.get(target_slot).is_none() {
        return stop("the target left the volume");
    }
    let sources: Vec<_> = m.bases.iter().filter(|b| b.readable).collect();
    if sources.is_empty() {
        return stop("no operational base bdev to copy from");
    }
    let per_piece = (PIECE_BYTES / u64::from(inner.info.block_size)).max(1);
    let pieces: Vec<(u64, u64)> = (w.0..w.1)
        .step_by(per_piece as usize)
        .map(|start| (start, (start + per_piece).min(w.1)))
        .collect();
    let (bdev, offset, mut bufs) = {
        let mut p = lock(sh);
        let Some(run) = p.run.as_mut() else { return false };
        let src = sources[run.turn % sources.len()];
        run.turn = run.turn.wrapping_add(1);
        let bufs: Vec<Vec<u8>> = (0..pieces.len()).map(|_| run.bufs.pop().unwrap_or_default()).collect();
        let copy = WindowCopy {
            w,
            m: m.clone(),
            source: src.slot,
            target_slot,
            // Every piece is counted before the first is submitted: a bdev
            // that completes inside `submit` must not see the copy end early.
            pending: pieces.len(),
            read_failed: None,
            write_failed: None,
        };
        match p.flight.iter_mut().find(|f| f.w == w) {
            Some(again) => *again = copy,
            None => p.flight.push_back(copy),
        }
        (src.bdev.clone(), src.data_offset, bufs)
    };
    for piece in pieces {
        let buf = bufs.pop().unwrap_or_default();
        let io = BdevIo::Read {
            lba: piece.0 + offset,
            blocks: piece.1 - piece.0,
            buf,
        };
        let sh = sh.clone();
        bdev.submit(
            cx,
            io,
            BdevDone::from_fn(move |cx, r, buf| piece_read(cx, &sh, w, piece, r, buf)),
        );
    }
    true
}

/// A piece of window `w` was read: written to the target unless the
/// window's copy already failed.
fn piece_read(cx: &mut Context, sh: &Shared, w: (u64, u64), piece: (u64, u64), r: Result<(), BdevError>, buf: Vec<u8>) {
    let target = {
        let mut p = lock(sh);
        let Some(c) = p.flight.iter_mut().find(|f| f.w == w) else {
            return;
        };
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
        return piece_ended(cx, sh, w, buf);
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
            if let Err(e) = r
                && let Some(c) = lock(&sh).flight.iter_mut().find(|f| f.w == w)
            {
                c.write_failed.get_or_insert(format!("rebuild write failed: {e}"));
            }
            piece_ended(cx, &sh, w, buf);
        }),
    );
}

/// A piece of window `w` ended; after its last one the window is done (and
/// [`advance`] records it), copied again from another base (a read
/// failed), or dropped with the process stopping (the target failed).
fn piece_ended(cx: &mut Context, sh: &Shared, w: (u64, u64), buf: Vec<u8>) {
    let failed = {
        let mut p = lock(sh);
        let p = &mut *p;
        if let Some(run) = p.run.as_mut() {
            run.bufs.push(buf);
        }
        let Some(i) = p.flight.iter().position(|f| f.w == w) else {
            return;
        };
        let c = &mut p.flight[i];
        c.pending -= 1;
        if c.pending > 0 {
            return;
        }
        let (version, source, target_slot) = (c.m.version, c.source, c.target_slot);
        let (read_failed, write_failed) = (c.read_failed.take(), c.write_failed.take());
        if write_failed.is_some() {
            // Never recorded as copied: the process stops.
            p.flight.remove(i);
        }
        p.run
            .as_ref()
            .map(|r| (r.inner.clone(), version, source, target_slot, read_failed, write_failed))
    };
    let Some((inner, version, source, target_slot, read_failed, write_failed)) = failed else {
        return;
    };
    if let Some(why) = write_failed {
        // Taking the target out sets the abort reason.
        inner.fail_base(cx, target_slot, version, &why);
        set_abort(&inner, why);
    } else if let Some(why) = read_failed {
        inner.fail_base(cx, source, version, &why);
        // Another operational base, if one is left; else the process stops
        // and the window, never copied, is dropped.
        if !start_window(cx, sh, w) {
            let mut p = lock(sh);
            if let Some(i) = p.flight.iter().position(|f| f.w == w) {
                p.flight.remove(i);
            }
        }
    }
    advance(cx, sh);
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
