//! The socket glue: a listener poller that accepts NVMe/TCP connections and
//! hands each to a reactor, and a connection poller that moves bytes between
//! a socket and a [`TargetQueue`].
//!
//! Nothing here blocks. A send that would block keeps its bytes in the
//! queue's send buffer and arms EPOLLOUT until they are gone, so no work is
//! ever left where epoll cannot see it. A connection that has not sent its
//! Connect within [`CONNECT_TIMEOUT`] is closed (an ICReq alone holds
//! nothing for long). A fatal PDU error is answered
//! with a C2HTermReq and the connection is closed at once.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::cell::RefCell;

use lull_reactor::{Context, Interest, PollStatus, Poller, PollerId, Readiness};

use lull_proto::nvme::Cqe;

use lull_proto::target_queue::{Command, QueueEvent, TargetQueue, TargetQueueConfig};

/// How long a new connection may take to send its ICReq and have a Connect
/// accepted: until then it belongs to no controller and no keep-alive
/// timer watches it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the listener rests after `accept` fails for want of resources
/// (EMFILE, ENFILE, ENOMEM, ENOBUFS): level-triggered epoll would otherwise
/// report the pending connection on every iteration.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Bytes read from one socket per poller run, so one busy connection cannot
/// starve the others on its reactor.
const READ_BUDGET: usize = 512 * 1024;
/// Read size.
const READ_CHUNK: usize = 128 * 1024;

/// A command's completion decided after `on_command` returned (an
/// asynchronous bdev finished): the data to send, if any, and the CQE.
struct Deferred {
    cqe: Cqe,
    data: Option<Vec<u8>>,
}

#[derive(Default)]
struct Mailbox {
    done: RefCell<Vec<Deferred>>,
    poller: Cell<Option<PollerId>>,
    /// The connection drains the mailbox right after its handler returns, so
    /// completions posted meanwhile need no wakeup.
    in_handler: Cell<bool>,
}

/// Completes commands of one connection later, from anything running on
/// the connection's reactor (an io_uring completion poller, a timer).
/// Cheap to clone; completing after the connection closed does nothing.
#[derive(Clone)]
pub struct Completer {
    mailbox: Rc<Mailbox>,
}

impl Completer {
    fn post(&self, cx: &mut Context, d: Deferred) {
        self.mailbox.done.borrow_mut().push(d);
        if !self.mailbox.in_handler.get()
            && let Some(id) = self.mailbox.poller.get()
        {
            cx.wake(id);
        }
    }

    /// Completes a command with its CQE.
    pub fn complete(&self, cx: &mut Context, cqe: Cqe) {
        self.post(cx, Deferred { cqe, data: None });
    }

    /// Completes a controller-to-host command with its data and CQE.
    pub fn complete_with_data(&self, cx: &mut Context, cqe: Cqe, data: Vec<u8>) {
        self.post(cx, Deferred { cqe, data: Some(data) });
    }
}

/// What executes the commands of one queue pair. Lives on the connection's
/// reactor; its `Drop` runs when the connection closes, whatever the reason.
pub trait QueueHandler: 'static {
    /// Executes a command: completes it on `queue` before returning, or later
    /// through (a clone of) `later`.
    fn on_command(&mut self, cx: &mut Context, queue: &mut TargetQueue, cmd: Command, later: &Completer);

    /// Whether the handler wants the connection closed (for instance after a
    /// controller shutdown); checked after every batch of commands.
    fn wants_close(&self) -> bool {
        false
    }

    /// Whether the queue is bound to a controller (its Connect succeeded).
    /// A connection that is not within [`CONNECT_TIMEOUT`] is closed.
    fn is_connected(&self) -> bool;
}

/// Makes a handler for each new connection, on the reactor that will own it.
/// Arguments: the reactor, the peer's address, and the local address the
/// connection arrived on (the concrete one, also for a wildcard listener).
pub type HandlerFactory<H> = Arc<dyn Fn(&mut Context, SocketAddr, SocketAddr) -> H + Send + Sync>;

/// One accepted connection: socket, queue state machine and handler.
pub struct Connection<H: QueueHandler> {
    stream: TcpStream,
    peer: SocketAddr,
    queue: TargetQueue,
    handler: H,
    writable_armed: bool,
    live: Rc<Cell<bool>>,
    later: Completer,
}

impl<H: QueueHandler> AsFd for Connection<H> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl<H: QueueHandler> Connection<H> {
    /// Registers a connection on this reactor, with its ICReq timeout.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn register(
        cx: &mut Context,
        stream: TcpStream,
        peer: SocketAddr,
        config: TargetQueueConfig,
        handler: H,
    ) -> std::io::Result<()> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let live = Rc::new(Cell::new(false));
        let later = Completer {
            mailbox: Rc::new(Mailbox::default()),
        };
        let mailbox = later.mailbox.clone();
        let conn = Connection {
            stream,
            peer,
            queue: TargetQueue::new(config),
            handler,
            writable_armed: false,
            live,
            later,
        };
        let live = conn.live.clone();
        let id = cx
            .register_fd(conn, Interest::READABLE)
            .map_err(std::io::Error::other)?;
        mailbox.poller.set(Some(id));
        cx.timer_once(CONNECT_TIMEOUT, move |cx| {
            if !live.get() && cx.unregister(id).is_ok() {
                tracing::warn!(%peer, "no ICReq and Connect within {CONNECT_TIMEOUT:?}: connection closed");
            }
        });
        Ok(())
    }

    /// Reads what the socket has (bounded). Returns (bytes read, peer closed).
    fn read(&mut self) -> std::io::Result<(usize, bool)> {
        let mut total = 0;
        while total < READ_BUDGET && !self.queue.is_terminated() {
            // A large H2CData payload goes straight into its command's buffer.
            if let Some(room) = self.queue.direct_buffer() {
                // Into memory not zeroed first: `read` hands back what it filled.
                match room.read_with(|spare| rustix::io::read(&self.stream, spare).map(|(filled, _)| filled)) {
                    Ok(0) => return Ok((total, true)),
                    Ok(n) => {
                        self.queue.direct_received(n);
                        total += n;
                        continue;
                    }
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let want = self.queue.recv_want(READ_CHUNK);
            let buf = self.queue.recv_buffer(want);
            match self.stream.read(buf) {
                Ok(0) => {
                    self.queue.received(want, 0);
                    return Ok((total, true));
                }
                Ok(n) => {
                    self.queue.received(want, n);
                    total += n;
                    if n < want {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.queue.received(want, 0);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => self.queue.received(want, 0),
                Err(e) => {
                    self.queue.received(want, 0);
                    return Err(e);
                }
            }
        }
        Ok((total, false))
    }

    /// Writes what is pending. Returns whether everything went out.
    fn flush(&mut self) -> std::io::Result<bool> {
        while self.queue.wants_send() {
            match self.stream.write(self.queue.pending_send()) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.queue.sent(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Applies completions posted through the [`Completer`].
    fn apply_deferred(&mut self) -> bool {
        let done = std::mem::take(&mut *self.later.mailbox.done.borrow_mut());
        let any = !done.is_empty();
        for d in done {
            match d.data {
                Some(data) => self.queue.complete_with_data(d.cqe, &data),
                None => self.queue.complete(d.cqe),
            };
        }
        any
    }

    fn run(&mut self, cx: &mut Context, ready: Readiness) -> Result<bool, String> {
        let mut work = self.apply_deferred();
        if ready.readable || ready.hangup || ready.error {
            let (n, eof) = self.read().map_err(|e| format!("read: {e}"))?;
            work |= n > 0;
            let result = self.queue.process();
            for ev in self.queue.take_events() {
                match ev {
                    QueueEvent::Initialized { digests } => {
                        tracing::debug!(peer = %self.peer, ?digests, "ICReq accepted");
                    }
                    QueueEvent::HostTerminated(t) => return Err(format!("host sent H2CTermReq: {t}")),
                    QueueEvent::AerCidTakenOver { cid } => {
                        tracing::debug!(cid, "admin command reuses an outstanding AER's CID: the AER is dropped");
                    }
                }
            }
            self.later.mailbox.in_handler.set(true);
            for cmd in self.queue.take_commands() {
                self.handler.on_command(cx, &mut self.queue, cmd, &self.later);
                work = true;
            }
            self.later.mailbox.in_handler.set(false);
            if !self.live.get() && self.handler.is_connected() {
                self.live.set(true);
            }
            if let Err(e) = result {
                // Best effort: the TermReq is queued; send what the socket takes and close.
                let _ = self.flush();
                return Err(format!("fatal PDU error, C2HTermReq sent: {e}"));
            }
            if eof {
                let _ = self.flush();
                return Err("peer closed the connection".to_string());
            }
        }
        work |= self.apply_deferred();
        if self.handler.wants_close() {
            let _ = self.flush();
            return Err("controller closed the queue".to_string());
        }
        let all_sent = self.flush().map_err(|e| format!("write: {e}"))?;
        if all_sent == self.writable_armed
            && let Some(id) = cx.current_poller()
        {
            let interest = if all_sent { Interest::READABLE } else { Interest::BOTH };
            cx.set_interest(id, interest).map_err(|e| e.to_string())?;
            self.writable_armed = !all_sent;
        }
        Ok(work)
    }

    /// The queue, for handlers that complete commands later.
    pub fn queue(&mut self) -> &mut TargetQueue {
        &mut self.queue
    }
}

impl<H: QueueHandler> Poller for Connection<H> {
    fn poll(&mut self, cx: &mut Context, ready: Readiness) -> PollStatus {
        match self.run(cx, ready) {
            Ok(work) => PollStatus::from_work(work),
            Err(why) => {
                tracing::debug!(peer = %self.peer, "closing connection: {why}");
                if let Some(id) = cx.current_poller() {
                    let _ = cx.unregister(id);
                }
                PollStatus::Busy
            }
        }
    }
}

/// Accepts connections and hands each to a reactor, round robin.
pub struct Listener<H: QueueHandler> {
    listener: TcpListener,
    config: TargetQueueConfig,
    factory: HandlerFactory<H>,
    next: Arc<AtomicUsize>,
}

impl<H: QueueHandler> AsFd for Listener<H> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

impl<H: QueueHandler> Listener<H> {
    /// Registers a listening socket on this reactor.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn register(
        cx: &mut Context,
        listener: TcpListener,
        config: TargetQueueConfig,
        factory: HandlerFactory<H>,
    ) -> std::io::Result<lull_reactor::PollerId> {
        listener.set_nonblocking(true)?;
        let l = Listener {
            listener,
            config,
            factory,
            next: Arc::new(AtomicUsize::new(0)),
        };
        cx.register_fd(l, Interest::READABLE).map_err(std::io::Error::other)
    }
}

impl<H: QueueHandler> Poller for Listener<H> {
    fn poll(&mut self, cx: &mut Context, _ready: Readiness) -> PollStatus {
        let mut accepted = 0;
        while accepted < 64 {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have,
                    // and stop looking at the listener for a while.
                    tracing::warn!(error = %e, "accept failed; not accepting for {ACCEPT_BACKOFF:?}");
                    if let Some(id) = cx.current_poller()
                        && cx.pause(id).is_ok()
                    {
                        cx.timer_once(ACCEPT_BACKOFF, move |cx| {
                            let _ = cx.resume(id);
                        });
                    }
                    break;
                }
            };
            accepted += 1;
            let local = match stream.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "accepted connection has no local address: closed");
                    continue;
                }
            };
            let peers = cx.peers();
            let target = peers[self.next.fetch_add(1, Ordering::Relaxed) % peers.len()].clone();
            let (config, factory) = (self.config.clone(), self.factory.clone());
            let sent = target.try_send(move |cx| {
                let handler = factory(cx, peer, local);
                if let Err(e) = Connection::register(cx, stream, peer, config, handler) {
                    tracing::warn!(%peer, error = %e, "cannot register connection");
                }
            });
            if sent.is_err() {
                tracing::warn!(%peer, core = target.core(), "reactor inbox full or stopped: connection refused");
            }
        }
        PollStatus::from_work(accepted > 0)
    }
}
