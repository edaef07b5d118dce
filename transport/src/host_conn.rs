//! The initiator's socket glue: one NVMe/TCP host queue pair driven by a
//! reactor, with completions delivered to callbacks on that reactor.
//!
//! Two ways to notice completions ([`QueuePolling`]):
//! - **Timed** (the `nvme_ioq_poll_period_us` design): a timed poller runs
//!   every period and reaps whatever arrived. Submissions do not wait for it:
//!   a submission made outside the queue's own poller wakes the poller for
//!   the next loop iteration, which sends it, so a command costs at most one
//!   period of waiting (SPDK's poller sends and reaps only on its period:
//!   two). The poller pauses itself when nothing is outstanding, so an idle
//!   queue never wakes its reactor.
//! - **Event**: the socket is in the reactor's epoll set (a polling reactor
//!   checks it on every iteration; a sleeping one wakes when bytes arrive).
//!   With nothing outstanding nothing wakes the reactor at all.
//!
//! The period is an interrupt-mode setting: while the reactor polls, a
//! timed queue is checked on every loop iteration like an event-driven one
//! (checked again after each run, so a mode change takes effect at the
//! queue's next event).
//!
//! Either way the socket stays in the epoll set for hang-ups and errors
//! ([`Interest::NONE`] while data is polled on a timer): a target that
//! closes an idle queue is noticed at once, not by the next I/O.
//!
//! CIDs carry a 4-bit generation above the 12-bit slot index, bumped each
//! time a slot is reused: a stale or duplicated PDU for an earlier command
//! on the same slot names a CID that is not in flight and is refused, never
//! taken for the command now in the slot.
//!
//! Either way, bytes that cannot be sent stay where the poller sees them:
//! the event poller arms EPOLLOUT while its send buffer is not empty, the
//! timed poller stays active and retries each period (fault case B03).
//! Commands submitted inside a completion callback are batched: they are
//! sent in one write after the whole batch of completions was handled.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_reactor::{Context, Interest, PollStatus, Poller, PollerId, Readiness, TimerId};

use lull_proto::host_queue::{Completion, HostError, HostQueue};
use lull_proto::nvme::Sqe;

use crate::tls::Wire;

/// Bytes read from the socket per poller run (fairness between queues).
const READ_BUDGET: usize = 1024 * 1024;
/// Read size per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// CID bits 11:0 index the slot; bits 15:12 count its reuses.
const CID_SLOT_MASK: u16 = 0x0FFF;
/// The most commands in flight on one queue (12 bits of slot index).
pub const MAX_DEPTH: u16 = 4096;

/// The CID the slot of `cid` uses next: the same slot, the next generation.
/// FFFFh is skipped (it means "no command" in the Error Information log).
fn next_cid(cid: u16) -> u16 {
    let n = cid.wrapping_add(CID_SLOT_MASK + 1);
    if n == 0xFFFF {
        n.wrapping_add(CID_SLOT_MASK + 1)
    } else {
        n
    }
}

/// How a queue notices completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuePolling {
    /// A timed poller every `period` (must not be zero; a period of zero
    /// means "every loop iteration", which is [`QueuePolling::Event`]: the
    /// socket in the epoll set that a polling reactor checks every time).
    Timed(Duration),
    /// The socket wakes the reactor.
    Event,
}

impl QueuePolling {
    /// The polling for `nvme_ioq_poll_period_us` = `period_us` (0 = every loop).
    pub fn from_period_us(period_us: u64) -> Self {
        match period_us {
            0 => QueuePolling::Event,
            us => QueuePolling::Timed(Duration::from_micros(us)),
        }
    }
}

/// Why a queue stopped; every command outstanding on it fails with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The target closed the TCP connection.
    #[error("the target closed the connection")]
    Closed,
    /// A socket call failed.
    #[error("socket error: {0}")]
    Io(String),
    /// The target broke the protocol or terminated the connection.
    #[error("{0}")]
    Protocol(HostError),
    /// A command was outstanding longer than the command timeout.
    #[error("command {cid} (opcode {opc:#04x}) got no completion within {after:?}")]
    Timeout {
        /// Its CID.
        cid: u16,
        /// Its opcode.
        opc: u8,
        /// The timeout.
        after: Duration,
    },
    /// The queue was closed by its owner.
    #[error("the queue was closed")]
    Shutdown,
}

/// A command the queue could not complete, handed back whole so the owner
/// can fail it or resubmit it elsewhere (after a reconnect).
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: QueueError,
    /// The command as submitted (its CID is this queue's).
    pub sqe: Sqe,
    /// Its write data.
    pub write: Vec<u8>,
    /// Its read length in bytes.
    pub read_len: u32,
}

/// Called once per command on the queue's reactor.
/// A completion carries any NVMe status and hands the write data back
/// ([`Completion::write`]), so the owner can resubmit the command.
pub type Callback = Box<dyn FnOnce(&mut Context, Result<Completion, Failed>)>;

/// A submission refused at once, handed back with its callback (not called).
pub struct Rejected {
    /// The command and why.
    pub failed: Failed,
    /// Its callback.
    pub cb: Callback,
}

impl std::fmt::Debug for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.failed.fmt(f)
    }
}

/// Called once when the queue stops, before the commands' callbacks.
pub type OnFail = Box<dyn FnOnce(&mut Context, &QueueError)>;

/// Settings of one queue.
#[derive(Clone, Copy, Debug)]
pub struct QueueOptions {
    /// How completions are noticed.
    pub polling: QueuePolling,
    /// Commands in flight at most (the queue size the Connect asked for,
    /// [`MAX_DEPTH`] at most); further submissions wait in the queue, in order.
    pub depth: u16,
    /// A command outstanding this long fails the whole queue with
    /// [`QueueError::Timeout`] (the owner resets the association); `None`: never.
    pub command_timeout: Option<Duration>,
    /// Whether the poll period the reactor's supervisor chose
    /// ([`Context::queue_period`]) replaces `polling` while the reactor may
    /// sleep: true for I/O queues; false for an admin queue, whose
    /// Asynchronous Event Request is always outstanding, so a timed poller
    /// would never park.
    pub supervised: bool,
}

struct Slot {
    cb: Callback,
    /// How long it may stay outstanding (`None` for an AER: it waits for an event).
    limit: Option<Duration>,
    sqe: Sqe,
    read_len: u32,
    submitted: Instant,
}

struct Waiting {
    limit: Option<Duration>,
    sqe: Sqe,
    write: Vec<u8>,
    read_len: u32,
    cb: Callback,
}

struct Inner {
    /// The connection: TCP, or TLS over it.
    wire: Wire,
    q: HostQueue,
    opts: QueueOptions,
    slots: Vec<Option<Slot>>,
    /// The CIDs free slots use next (slot index and generation).
    free: Vec<u16>,
    waiting: VecDeque<Waiting>,
    poller: Option<PollerId>,
    /// While data is polled on a timer: the same socket registered for
    /// hang-ups and errors only.
    watch: Option<PollerId>,
    /// How the registered poller works: `opts.polling`, except that a queue
    /// on a polling reactor is checked on every loop iteration (the period
    /// is an interrupt-mode setting, as Longhorn's
    /// `data-engine-nvme-ioq-poll-period-us` is).
    active: QueuePolling,
    /// Nearly full: the supervisor's period is set aside (see `reconcile`).
    saturated: bool,
    /// The timed poller is paused (nothing outstanding).
    parked: bool,
    writable_armed: bool,
    in_poll: bool,
    /// The command-timeout timer and when it fires.
    timeout_timer: Option<(TimerId, Instant)>,
    failed: Option<QueueError>,
    on_fail: Option<OnFail>,
    done: Vec<Completion>,
}

/// One host queue pair on a reactor. Cheap to clone (a shared handle); use
/// it only on the reactor that started it.
#[derive(Clone)]
pub struct HostConn {
    inner: Rc<RefCell<Inner>>,
}

/// The reactor owns the queue through its poller (as it owns a target
/// connection): a queue lives until it fails or is closed, even if every
/// handle to it was dropped, so its socket is never left in the epoll set
/// with nobody to read it.
struct ConnPoller {
    sock: Arc<TcpStream>,
    inner: Rc<RefCell<Inner>>,
}

impl AsFd for ConnPoller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Poller for ConnPoller {
    fn poll(&mut self, cx: &mut Context, _ready: Readiness) -> PollStatus {
        HostConn {
            inner: self.inner.clone(),
        }
        .pump(cx)
    }
}

impl HostConn {
    /// Takes over a connected socket whose queue is live (ICResp received,
    /// usually Connect done) and starts polling it on this reactor. CIDs
    /// `0..depth` become this queue's; the owner must not have commands in
    /// flight on `q`.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or the poller not registered.
    pub fn start(cx: &mut Context, wire: Wire, q: HostQueue, opts: QueueOptions) -> std::io::Result<HostConn> {
        wire.tcp().set_nonblocking(true)?;
        wire.tcp().set_nodelay(true)?;
        let depth = opts.depth.clamp(1, MAX_DEPTH);
        let inner = Rc::new(RefCell::new(Inner {
            wire,
            q,
            opts: QueueOptions { depth, ..opts },
            slots: (0..depth).map(|_| None).collect(),
            free: (0..depth).rev().collect(),
            waiting: VecDeque::new(),
            poller: None,
            watch: None,
            active: effective(opts.polling, cx.mode(), None),
            saturated: false,
            parked: false,
            writable_armed: false,
            in_poll: false,
            timeout_timer: None,
            failed: None,
            on_fail: None,
            done: Vec::new(),
        }));
        let conn = HostConn { inner };
        conn.register_poller(cx).map_err(std::io::Error::other)?;
        Ok(conn)
    }

    fn register_poller(&self, cx: &mut Context) -> Result<(), lull_reactor::ReactorError> {
        let mut g = self.inner.borrow_mut();
        let poller = ConnPoller {
            sock: g.wire.tcp_shared(),
            inner: self.inner.clone(),
        };
        let id = match g.active {
            QueuePolling::Event => {
                g.writable_armed = g.q.wants_send();
                let interest = if g.writable_armed {
                    Interest::BOTH
                } else {
                    Interest::READABLE
                };
                cx.register_fd(poller, interest)?
            }
            QueuePolling::Timed(period) => {
                // Hang-ups and errors wake the queue at once even while its
                // data waits for the period (or the poller is parked).
                let watch = ConnPoller {
                    sock: g.wire.tcp_shared(),
                    inner: self.inner.clone(),
                };
                let w = cx.register_fd(watch, Interest::NONE)?;
                let id = match cx.register_timed(period.max(Duration::from_micros(1)), poller) {
                    Ok(id) => id,
                    Err(e) => {
                        let _ = cx.unregister(w);
                        return Err(e);
                    }
                };
                g.watch = Some(w);
                if g.is_quiet() {
                    cx.pause(id)?;
                    g.parked = true;
                } else {
                    g.parked = false;
                }
                id
            }
        };
        g.poller = Some(id);
        Ok(())
    }

    /// Sets the hook called once when the queue fails (before the callbacks
    /// of its outstanding commands run with the same error).
    pub fn on_fail(&self, f: OnFail) {
        self.inner.borrow_mut().on_fail = Some(f);
    }

    /// Changes how completions are noticed, without reconnecting.
    ///
    /// # Errors
    /// When the new poller cannot be registered (the queue then fails).
    pub fn set_polling(&self, cx: &mut Context, polling: QueuePolling) -> Result<(), lull_reactor::ReactorError> {
        self.inner.borrow_mut().opts.polling = polling;
        self.reconcile(cx)
    }

    /// Registers the poller the configured polling and the reactor's mode
    /// call for, if it is not the one registered. Runs after every poller
    /// run, so a mode change takes effect at the queue's next event.
    fn reconcile(&self, cx: &mut Context) -> Result<(), lull_reactor::ReactorError> {
        let old = {
            let mut g = self.inner.borrow_mut();
            // A queue nearly full (or with commands waiting for a CID) goes
            // back to its configured polling until half of it is free again:
            // a queue of N commands checked every P completes at most N per
            // P, which the supervisor's period must not turn into a limit.
            g.saturated = saturated(
                g.saturated,
                g.slots.len() - g.free.len(),
                g.slots.len(),
                !g.waiting.is_empty(),
            );
            let hint = cx.queue_period().filter(|_| g.opts.supervised && !g.saturated);
            let want = effective(g.opts.polling, cx.mode(), hint);
            if g.failed.is_some() || g.active == want {
                return Ok(());
            }
            if let (QueuePolling::Timed(_), QueuePolling::Timed(p), Some(id)) = (g.active, want, g.poller) {
                g.active = want;
                return cx.set_period(id, p);
            }
            g.active = want;
            (g.poller.take(), g.watch.take())
        };
        for id in [old.0, old.1].into_iter().flatten() {
            let _ = cx.unregister(id);
        }
        if let Err(e) = self.register_poller(cx) {
            self.fail(cx, QueueError::Io(format!("re-registering the queue's poller: {e}")));
            return Err(e);
        }
        self.kick(cx);
        Ok(())
    }

    /// How completions are noticed now.
    pub fn polling(&self) -> QueuePolling {
        self.inner.borrow().opts.polling
    }

    /// Commands submitted and not completed (in flight and waiting for a CID).
    pub fn outstanding(&self) -> usize {
        let g = self.inner.borrow();
        g.slots.len() - g.free.len() + g.waiting.len()
    }

    /// Why the queue stopped, once it has.
    pub fn error(&self) -> Option<QueueError> {
        self.inner.borrow().failed.clone()
    }

    /// The data digests and MAXH2CDATA in force, as (header digest, data digest, MAXH2CDATA bytes).
    pub fn negotiated(&self) -> (bool, bool, u32) {
        let g = self.inner.borrow();
        let d = g.q.digests();
        (d.header, d.data, g.q.maxh2cdata())
    }

    /// Queues a command: its CID is assigned here, its SGL filled in by the
    /// queue. `write` is host-to-controller data, `read_len` the bytes the
    /// command reads. `cb` runs on this reactor with the completion (any
    /// NVMe status) or, if the queue fails first, with the command handed back.
    ///
    /// # Errors
    /// The command and its callback back, the callback not called, when the
    /// queue has already failed or the command moves data both ways.
    #[allow(clippy::result_large_err)]
    pub fn submit(
        &self,
        cx: &mut Context,
        sqe: Sqe,
        write: Vec<u8>,
        read_len: u32,
        cb: Callback,
    ) -> Result<(), Rejected> {
        let limit = self.inner.borrow().opts.command_timeout;
        self.submit_inner(cx, sqe, write, read_len, cb, limit)
    }

    /// As [`submit`](Self::submit), for a command that may legitimately stay
    /// outstanding forever (an Asynchronous Event Request): the command
    /// timeout does not apply to it.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    #[allow(clippy::result_large_err)]
    pub fn submit_untimed(
        &self,
        cx: &mut Context,
        sqe: Sqe,
        write: Vec<u8>,
        read_len: u32,
        cb: Callback,
    ) -> Result<(), Rejected> {
        self.submit_inner(cx, sqe, write, read_len, cb, None)
    }

    /// As [`submit`](Self::submit), with its own limit: if the command is
    /// still outstanding `limit` after it was sent, the whole queue fails
    /// with [`QueueError::Timeout`] (a Keep Alive must be answered within
    /// KATO, however long the command timeout is, or whether there is one).
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    #[allow(clippy::result_large_err)]
    pub fn submit_within(
        &self,
        cx: &mut Context,
        sqe: Sqe,
        write: Vec<u8>,
        read_len: u32,
        limit: Duration,
        cb: Callback,
    ) -> Result<(), Rejected> {
        self.submit_inner(cx, sqe, write, read_len, cb, Some(limit))
    }

    #[allow(clippy::result_large_err)]
    fn submit_inner(
        &self,
        cx: &mut Context,
        sqe: Sqe,
        write: Vec<u8>,
        read_len: u32,
        cb: Callback,
        limit: Option<Duration>,
    ) -> Result<(), Rejected> {
        {
            let mut g = self.inner.borrow_mut();
            let refused = match (&g.failed, !write.is_empty() && read_len > 0) {
                (Some(e), _) => Some(e.clone()),
                (None, true) => Some(QueueError::Protocol(HostError::Submit(
                    "a command moves data in one direction only",
                ))),
                (None, false) => None,
            };
            if let Some(error) = refused {
                return Err(Rejected {
                    failed: Failed {
                        error,
                        sqe,
                        write,
                        read_len,
                    },
                    cb,
                });
            }
            let w = Waiting {
                limit,
                sqe,
                write,
                read_len,
                cb,
            };
            if g.waiting.is_empty() && !g.free.is_empty() {
                g.issue(cx, w, &self.inner);
            } else {
                g.waiting.push_back(w);
            }
        }
        self.kick(cx);
        Ok(())
    }

    /// Makes sure the poller runs soon to send what was queued.
    fn kick(&self, cx: &mut Context) {
        let mut g = self.inner.borrow_mut();
        if g.in_poll || g.failed.is_some() {
            return;
        }
        let Some(id) = g.poller else { return };
        if g.parked {
            g.parked = false;
            if let Err(e) = cx.resume(id) {
                drop(g);
                self.fail(cx, QueueError::Io(format!("resuming the queue's poller: {e}")));
                return;
            }
        }
        cx.wake(id);
    }

    /// Closes the queue: the socket is shut down and every outstanding
    /// command fails with [`QueueError::Shutdown`].
    pub fn close(&self, cx: &mut Context) {
        self.fail(cx, QueueError::Shutdown);
    }

    /// Stops the queue with `error`: unregisters its poller, sends any
    /// H2CTermReq the state machine queued, shuts the socket, calls the
    /// failure hook, then every outstanding command's callback.
    fn fail(&self, cx: &mut Context, error: QueueError) {
        let (hook, failed) = {
            let mut g = self.inner.borrow_mut();
            if g.failed.is_some() {
                return;
            }
            tracing::debug!(%error, outstanding = g.slots.len() - g.free.len(), "host queue failed");
            g.failed = Some(error.clone());
            for id in [g.poller.take(), g.watch.take()].into_iter().flatten() {
                let _ = cx.unregister(id);
            }
            if let Some((t, _)) = g.timeout_timer.take() {
                cx.cancel_timer(t);
            }
            // Best effort: a queued H2CTermReq tells the target why.
            let pending = g.q.pending_send().to_vec();
            let _ = g.wire.write(&pending);
            g.wire.close_notify();
            let _ = g.wire.tcp().shutdown(Shutdown::Both);
            let mut failed = Vec::new();
            for i in 0..g.slots.len() {
                if let Some(s) = g.slots[i].take() {
                    // Every command in a slot is in flight in the state
                    // machine (completions are handed out before a queue
                    // fails), so its data is there to go with it.
                    let write = g.q.take_write(s.sqe.cid());
                    failed.push((s.cb, s.sqe, write, s.read_len));
                }
            }
            for w in g.waiting.drain(..) {
                failed.push((w.cb, w.sqe, w.write, w.read_len));
            }
            (g.on_fail.take(), failed)
        };
        if let Some(h) = hook {
            h(cx, &error);
        }
        for (cb, sqe, write, read_len) in failed {
            cb(
                cx,
                Err(Failed {
                    error: error.clone(),
                    sqe,
                    write,
                    read_len,
                }),
            );
        }
    }

    /// One poller run: send, receive, complete, send what the callbacks queued.
    fn pump(&self, cx: &mut Context) -> PollStatus {
        let mut work = false;
        let mut done = {
            let mut g = self.inner.borrow_mut();
            g.in_poll = true;
            std::mem::take(&mut g.done)
        };
        let step = (|| {
            let mut g = self.inner.borrow_mut();
            work |= g.flush()?;
            work |= g.receive(&mut done)?;
            Ok::<(), QueueError>(())
        })();
        let delivered = self.deliver(cx, &mut done);
        if let Err(e) = step {
            // Completions parsed before the fatal PDU were delivered above:
            // they are good, and their commands must not be sent again.
            self.inner.borrow_mut().in_poll = false;
            self.fail(cx, e);
            return PollStatus::Busy;
        }
        if !delivered {
            return PollStatus::Busy;
        }
        let mut g = self.inner.borrow_mut();
        g.done = done;
        if g.failed.is_some() {
            return PollStatus::Busy;
        }
        while !g.free.is_empty()
            && let Some(w) = g.waiting.pop_front()
        {
            g.issue(cx, w, &self.inner);
        }
        let flushed = g.flush();
        g.in_poll = false;
        let result = flushed.and_then(|w| {
            work |= w;
            g.settle(cx)
        });
        drop(g);
        if let Err(e) = result {
            self.fail(cx, e);
        } else {
            // Failure is handled inside.
            let _ = self.reconcile(cx);
        }
        PollStatus::from_work(work)
    }
}

impl HostConn {
    /// Runs the callbacks of `done`, in order; false once the queue failed
    /// (a callback closed it), the rest then dropped with their slots
    /// already handed back by the failure.
    fn deliver(&self, cx: &mut Context, done: &mut Vec<Completion>) -> bool {
        for c in done.drain(..) {
            let slot = {
                let mut g = self.inner.borrow_mut();
                let cid = c.cqe.cid;
                let i = usize::from(cid & CID_SLOT_MASK);
                let s = g.slots.get_mut(i).and_then(|s| s.take_if(|s| s.sqe.cid() == cid));
                if s.is_some() {
                    g.free.push(next_cid(cid));
                }
                s
            };
            // The state machine only completes CIDs it has in flight, which are ours.
            if let Some(s) = slot {
                (s.cb)(cx, Ok(c));
            }
            if self.inner.borrow().failed.is_some() {
                return false;
            }
        }
        true
    }
}

/// Whether a queue of `depth` slots with `in_use` taken (and commands
/// `waiting` for a slot, or not) counts as nearly full, given whether it did
/// (`was`): from three quarters in use, until half is free again.
fn saturated(was: bool, in_use: usize, depth: usize, waiting: bool) -> bool {
    if in_use * 4 >= depth * 3 || waiting {
        true
    } else if in_use * 2 <= depth {
        false
    } else {
        was
    }
}

/// The polling a queue uses on a reactor in `mode`: every loop iteration
/// while the reactor polls; while it may sleep, the supervisor's period
/// (`supervised`) when one is set, else the configured one.
fn effective(configured: QueuePolling, mode: lull_reactor::Mode, supervised: Option<Duration>) -> QueuePolling {
    match (mode, supervised) {
        (lull_reactor::Mode::Poll, _) => QueuePolling::Event,
        (_, Some(p)) if !p.is_zero() => QueuePolling::Timed(p),
        _ => configured,
    }
}

impl Inner {
    fn is_quiet(&self) -> bool {
        self.free.len() == self.slots.len() && self.waiting.is_empty() && !self.q.wants_send()
    }

    /// Gives `w` a CID and encodes it; the caller checked a CID is free.
    fn issue(&mut self, cx: &mut Context, w: Waiting, me: &Rc<RefCell<Inner>>) {
        let Some(cid) = self.free.pop() else {
            self.waiting.push_front(w);
            return;
        };
        let mut sqe = w.sqe;
        sqe.set_cid(cid);
        let Waiting {
            limit,
            write,
            read_len,
            cb,
            ..
        } = w;
        if let Err((e, write)) = self.q.submit_owned(sqe, write, read_len) {
            // Only a queue that is not live refuses; the next receive fails it.
            self.free.push(cid);
            self.waiting.push_front(Waiting {
                limit,
                sqe,
                write,
                read_len,
                cb,
            });
            tracing::debug!(error = %e, "host queue refused a submission");
            return;
        }
        let now = cx.now();
        self.slots[usize::from(cid & CID_SLOT_MASK)] = Some(Slot {
            cb,
            limit,
            sqe,
            read_len,
            submitted: now,
        });
        // One timer per queue, for the earliest deadline: commands with the
        // same limit never move it, a shorter one (Keep Alive) re-arms it.
        if let Some(limit) = limit {
            let due = now + limit;
            match self.timeout_timer {
                Some((_, at)) if at <= due => {}
                old => {
                    if let Some((t, _)) = old {
                        cx.cancel_timer(t);
                    }
                    self.timeout_timer = Some((arm_timeout(cx, Rc::downgrade(me), limit), due));
                }
            }
        }
    }

    /// Writes what is queued until the socket would block.
    fn flush(&mut self) -> Result<bool, QueueError> {
        let mut work = false;
        while self.q.wants_send() {
            match self.wire.write(self.q.pending_send()) {
                Ok(0) => return Err(QueueError::Closed),
                Ok(n) => {
                    self.q.sent(n);
                    work = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(QueueError::Io(format!("write: {e}"))),
            }
        }
        Ok(work)
    }

    /// Reads and parses up to the budget; completions go to `done`.
    fn receive(&mut self, done: &mut Vec<Completion>) -> Result<bool, QueueError> {
        let mut total = 0;
        let mut work = false;
        let tls = self.wire.is_tls();
        // TLS: bytes OpenSSL already decrypted are taken even past the
        // budget (one record at most), as epoll cannot report them.
        while total < READ_BUDGET || self.wire.buffered() {
            let buf = self.q.recv_buffer(READ_CHUNK);
            let r = self.wire.read(buf);
            let n = match r {
                Ok(0) => {
                    self.q.received(READ_CHUNK, 0);
                    return Err(QueueError::Closed);
                }
                Ok(n) => n,
                Err(e) => {
                    self.q.received(READ_CHUNK, 0);
                    match e.kind() {
                        ErrorKind::WouldBlock => break,
                        ErrorKind::Interrupted => continue,
                        _ => return Err(QueueError::Io(format!("read: {e}"))),
                    }
                }
            };
            self.q.received(READ_CHUNK, n);
            total += n;
            work = true;
            let r = self.q.process();
            // Completions parsed before a fatal PDU are good: keep them.
            self.q.drain_completions(done);
            if let Err(e) = r {
                return Err(QueueError::Protocol(e));
            }
            // A TLS read returns one record at most: a short one says
            // nothing about what the socket holds.
            if n < READ_CHUNK && !tls {
                break;
            }
        }
        Ok(work)
    }

    /// After a run: EPOLLOUT only while bytes wait; a timed poller parks when quiet.
    fn settle(&mut self, cx: &mut Context) -> Result<(), QueueError> {
        let Some(id) = self.poller else { return Ok(()) };
        match self.active {
            QueuePolling::Event => {
                // TLS: a read may need a write first (a KeyUpdate's answer).
                let want = self.q.wants_send() || self.wire.wants_write();
                if want != self.writable_armed {
                    self.writable_armed = want;
                    let interest = if want { Interest::BOTH } else { Interest::READABLE };
                    cx.set_interest(id, interest)
                        .map_err(|e| QueueError::Io(format!("epoll_ctl: {e}")))?;
                }
            }
            QueuePolling::Timed(_) => {
                if !self.parked && self.is_quiet() {
                    self.parked = true;
                    cx.pause(id)
                        .map_err(|e| QueueError::Io(format!("pausing the poller: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

/// A one-shot timer, `delay` from now, that fails the queue if a command
/// outlived its limit, else re-arms itself for the earliest deadline; it
/// lapses when nothing with a limit is outstanding, so an idle queue has no timer.
fn arm_timeout(cx: &mut Context, me: Weak<RefCell<Inner>>, delay: Duration) -> TimerId {
    cx.timer_once(delay, move |cx| {
        if let Some(inner) = me.upgrade() {
            inner.borrow_mut().timeout_timer = None;
            check_timeout(cx, inner);
        }
    })
}

fn check_timeout(cx: &mut Context, inner: Rc<RefCell<Inner>>) {
    let now = cx.now();
    let verdict = {
        let g = inner.borrow();
        if g.failed.is_some() {
            return;
        }
        g.slots
            .iter()
            .flatten()
            .filter_map(|s| s.limit.map(|l| (s.submitted + l, l, s)))
            .min_by_key(|(due, _, _)| *due)
            .map(|(due, limit, s)| {
                if due <= now {
                    Err(QueueError::Timeout {
                        cid: s.sqe.cid(),
                        opc: s.sqe.opc(),
                        after: limit,
                    })
                } else {
                    Ok(due)
                }
            })
    };
    match verdict {
        None => {}
        Some(Ok(due)) => {
            let id = arm_timeout(cx, Rc::downgrade(&inner), due - now);
            inner.borrow_mut().timeout_timer = Some((id, due));
        }
        Some(Err(e)) => HostConn { inner }.fail(cx, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lull_reactor::Mode;

    #[test]
    fn a_polling_reactor_checks_every_queue_on_every_iteration() {
        let timed = QueuePolling::Timed(Duration::from_millis(1));
        assert_eq!(effective(timed, Mode::Poll, None), QueuePolling::Event);
        assert_eq!(effective(timed, Mode::Interrupt, None), timed);
        assert_eq!(effective(timed, Mode::Hybrid, None), timed);
        assert_eq!(
            effective(QueuePolling::Event, Mode::Interrupt, None),
            QueuePolling::Event
        );
        // The supervisor's period replaces the configured one while the
        // reactor may sleep, never while it polls.
        let p = Duration::from_micros(400);
        assert_eq!(
            effective(QueuePolling::Event, Mode::Interrupt, Some(p)),
            QueuePolling::Timed(p)
        );
        assert_eq!(effective(timed, Mode::Hybrid, Some(p)), QueuePolling::Timed(p));
        assert_eq!(effective(timed, Mode::Poll, Some(p)), QueuePolling::Event);
        assert_eq!(effective(timed, Mode::Interrupt, Some(Duration::ZERO)), timed);
        assert_eq!(QueuePolling::from_period_us(0), QueuePolling::Event);
    }

    #[test]
    fn a_nearly_full_queue_sets_the_supervisors_period_aside_until_half_is_free() {
        // Depth 32: from 24 in use, or anything waiting; back below 17.
        assert!(!saturated(false, 23, 32, false));
        assert!(saturated(false, 24, 32, false));
        assert!(saturated(false, 0, 32, true));
        assert!(saturated(true, 17, 32, false), "between the marks it stays");
        assert!(!saturated(false, 17, 32, false), "between the marks it stays");
        assert!(!saturated(true, 16, 32, false));
        assert!(saturated(true, 1, 1, false));
        assert!(!saturated(true, 0, 1, false));
        assert_eq!(
            QueuePolling::from_period_us(100),
            QueuePolling::Timed(Duration::from_micros(100))
        );
    }
}
