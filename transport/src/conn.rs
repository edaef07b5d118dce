//! The socket glue: a listener poller that accepts NVMe/TCP connections and
//! hands each to a reactor, and a connection poller that moves bytes between
//! a socket and a [`TargetQueue`].
//!
//! The connection hands each [`Request`] to its [`QueueHandler`] and takes
//! the [`Response`] back through a [`Responder`]; only the connection ever
//! advances the queue. Data buffers go round a per-connection pool
//! ([`Responder::buffer`], [`Responder::recycle`]; bounded by
//! [`POOL_MAX_BUFFERS`] and [`POOL_MAX_BYTES`]): the queue fills them with
//! host data and gives back each response's once encoded or, for a read's
//! data sent from its own buffer by `sendmsg`, once sent; so in steady state
//! a command allocates nothing and a read's data is copied once (bdev to
//! buffer), never into the send buffer.
//!
//! Nothing here blocks. A send that would block keeps its bytes in the
//! queue's send buffer and arms EPOLLOUT until they are gone, so no work is
//! ever left where epoll cannot see it. A connection that has not sent its
//! Connect within [`CONNECT_TIMEOUT`] is closed (an ICReq alone holds
//! nothing for long). A fatal PDU error is answered
//! with a C2HTermReq and the connection is closed at once.

use std::cell::{Cell, RefCell};
use std::io::{ErrorKind, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lull_reactor::{Context, Interest, PollStatus, Poller, PollerId, Readiness};

use lull_proto::target_queue::{
    QueueEvent, Request, Response, SEND_SLICES, TargetQueue, TargetQueueConfig, take_spare,
};
use lull_proto::tls_psk::TlsPsk;

use crate::tls::{Handshake, TlsServer, Wire};

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

/// The TLS record type a ClientHello arrives in (RFC 8446 section 5.1).
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// Most data buffers a connection's pool keeps idle.
pub const POOL_MAX_BUFFERS: usize = 64;
/// Most bytes (capacity) a connection's pool keeps idle: 64 buffers of 4 KiB
/// or 8 of 128 KiB (the largest transfer). A buffer given back beyond either
/// bound is freed, so a burst of large or many commands costs allocations
/// for the part beyond, and idle connections hold at most this much.
pub const POOL_MAX_BYTES: usize = 1 << 20;

/// The free list of a connection's data buffers, within [`POOL_MAX_BUFFERS`]
/// and [`POOL_MAX_BYTES`].
#[derive(Default)]
struct BufferPool {
    free: Vec<Vec<u8>>,
    /// Sum of the capacities in `free`.
    bytes: usize,
}

impl BufferPool {
    /// A buffer for `len` bytes, by the queue's rule ([`take_spare`]).
    fn take(&mut self, len: usize) -> Vec<u8> {
        let (b, had) = take_spare(&mut self.free, len);
        self.bytes -= had;
        b
    }

    fn put(&mut self, b: Vec<u8>) {
        let cap = b.capacity();
        if cap == 0 || self.free.len() >= POOL_MAX_BUFFERS || self.bytes + cap > POOL_MAX_BYTES {
            return;
        }
        self.bytes += cap;
        self.free.push(b);
    }

    /// After the queue gave the free list back ([`TargetQueue::swap_spare_buffers`]):
    /// recount, and free what is over the bounds.
    fn settle(&mut self) {
        self.free.truncate(POOL_MAX_BUFFERS);
        self.bytes = 0;
        let mut keep = 0;
        for b in &self.free {
            if self.bytes + b.capacity() > POOL_MAX_BYTES {
                break;
            }
            self.bytes += b.capacity();
            keep += 1;
        }
        self.free.truncate(keep);
    }
}

#[derive(Default)]
struct Mailbox {
    done: RefCell<Vec<Response>>,
    poller: Cell<Option<PollerId>>,
    /// The connection applies responses right after its handler returns, so
    /// those given meanwhile need no wakeup.
    in_handler: Cell<bool>,
    pool: RefCell<BufferPool>,
    /// The queue sends Read data lent by a source from its memory
    /// ([`TargetQueue::sends_lent_reads`]), set after each parse.
    lends: Cell<bool>,
}

/// Answers the requests of one connection, during
/// [`QueueHandler::on_command`] or later, from anything running on the
/// connection's reactor (an io_uring completion poller, a timer, a channel).
/// Cheap to clone; responding after the connection closed does nothing.
#[derive(Clone)]
pub struct Responder {
    mailbox: Rc<Mailbox>,
}

impl Responder {
    /// A responder of no connection: the responses given are kept, in
    /// order, for [`take_responses`](Self::take_responses), and none wakes a
    /// poller. For driving a [`QueueHandler`] directly (tests, tools).
    pub fn detached() -> Self {
        Responder {
            mailbox: Rc::new(Mailbox::default()),
        }
    }

    /// The responses given and not yet sent, in order: what a
    /// [`detached`](Self::detached) responder collected (a connection's
    /// responder is drained by its connection).
    pub fn take_responses(&self) -> Vec<Response> {
        std::mem::take(&mut *self.mailbox.done.borrow_mut())
    }

    /// Answers a request. Responses are sent in the order given: those given
    /// while the handler runs right after it returns, later ones at the
    /// connection's next run (this wakes its poller).
    pub fn respond(&self, cx: &mut Context, r: Response) {
        self.mailbox.done.borrow_mut().push(r);
        if !self.mailbox.in_handler.get()
            && let Some(id) = self.mailbox.poller.get()
        {
            cx.wake(id);
        }
    }

    /// An empty buffer with room for at least `len` bytes, for a response's
    /// data: from the connection's pool (the one whose capacity fits, else
    /// one grown), allocated only when the pool is empty. It comes back to
    /// the pool after the response is sent.
    pub fn buffer(&self, len: usize) -> Vec<u8> {
        self.mailbox.pool.borrow_mut().take(len)
    }

    /// Gives a buffer back to the pool (a request's data once written, a
    /// buffer not sent after all); freed when the pool is full.
    pub fn recycle(&self, buf: Vec<u8>) {
        self.mailbox.pool.borrow_mut().put(buf);
    }

    /// Whether the connection sends a Read's data from a lending source's
    /// memory (no data digest, no TLS:
    /// [`TargetQueue::sends_lent_reads`]). When false, a source's bytes are
    /// copied into the send buffer, so a Read of
    /// [`ATTACH_MIN`](lull_proto::target_queue::ATTACH_MIN) or more is
    /// better answered with a buffer from [`buffer`](Self::buffer). False
    /// for a detached responder.
    pub fn sends_lent_reads(&self) -> bool {
        self.mailbox.lends.get()
    }
}

/// What executes the commands of one queue pair. Lives on the connection's
/// reactor; its `Drop` runs when the connection closes, whatever the reason.
pub trait QueueHandler: 'static {
    /// Executes a request: answers it through `resp` (one
    /// [`Response`] per request), before returning or later through a clone
    /// of `resp`. The handler never sees the queue.
    fn on_command(&mut self, cx: &mut Context, req: Request, resp: &Responder);

    /// Whether the handler wants the connection closed (for instance after a
    /// controller shutdown); checked after every batch of commands.
    fn wants_close(&self) -> bool {
        false
    }

    /// Whether the queue is bound to a controller (its Connect succeeded).
    /// A connection that is not within [`CONNECT_TIMEOUT`] is closed.
    fn is_connected(&self) -> bool;

    /// The connection's TLS handshake finished, keyed by `psk` (its
    /// identity names the only host and subsystem it may Connect as).
    /// Called once, before any command, on connections of a secure
    /// listener only.
    fn on_secure_channel(&mut self, psk: &TlsPsk) {
        let _ = psk;
    }
}

/// What a port does about TLS (NVMe/TCP's secure channel, the discovery
/// log's TREQ).
#[derive(Clone)]
pub enum PortTls {
    /// TLS 1.3 required (SPDK's `secure_channel`; TREQ "required"): a
    /// connection whose first byte does not start a TLS handshake record is
    /// closed.
    Required(Arc<TlsServer>),
    /// Either (TREQ "not required", as Linux's target's `addr_treq` "not
    /// required"): a connection whose first byte starts a TLS handshake
    /// record (16h) gets TLS, any other is plaintext (an ICReq starts with
    /// 00h). Which one is decided once, before the first PDU.
    Optional(Arc<TlsServer>),
}

/// Makes a handler for each new connection, on the reactor that will own it.
/// Arguments: the reactor, the peer's address, and the local address the
/// connection arrived on (the concrete one, also for a wildcard listener).
pub type HandlerFactory<H> = Arc<dyn Fn(&mut Context, SocketAddr, SocketAddr) -> H + Send + Sync>;

/// One accepted connection: socket, queue state machine and handler.
pub struct Connection<H: QueueHandler> {
    wire: Wire,
    peer: SocketAddr,
    queue: TargetQueue,
    handler: H,
    writable_armed: bool,
    /// The first byte of a secure connection was checked to start a TLS record.
    peeked: bool,
    /// TLS offered, not required: decided by the first byte
    /// ([`PortTls::Optional`]); `None` once decided.
    offer: Option<Arc<TlsServer>>,
    live: Rc<Cell<bool>>,
    responder: Responder,
    /// Requests of the batch being executed (kept for its capacity).
    requests: Vec<Request>,
    /// Responses being applied (swapped with the mailbox's; kept for its capacity).
    applying: Vec<Response>,
}

impl<H: QueueHandler> AsFd for Connection<H> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wire.tcp().as_fd()
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
        Self::register_secure(cx, stream, peer, config, handler, None)
    }

    /// As [`register`](Self::register); with `tls` required, the connection
    /// must complete a TLS handshake (within the same [`CONNECT_TIMEOUT`])
    /// before any PDU, and every byte after it is TLS records; with `tls`
    /// optional, it does so if its first byte starts a TLS record, else it is
    /// plaintext.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered, or TLS
    /// cannot be set up for it.
    pub fn register_secure(
        cx: &mut Context,
        stream: TcpStream,
        peer: SocketAddr,
        config: TargetQueueConfig,
        handler: H,
        tls: Option<&PortTls>,
    ) -> std::io::Result<()> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let (wire, offer) = match tls {
            None => (Wire::plain(stream), None),
            Some(PortTls::Required(server)) => (server.accept(Arc::new(stream)).map_err(std::io::Error::other)?, None),
            Some(PortTls::Optional(server)) => (Wire::plain(stream), Some(server.clone())),
        };
        let live = Rc::new(Cell::new(false));
        let responder = Responder {
            mailbox: Rc::new(Mailbox::default()),
        };
        let mailbox = responder.mailbox.clone();
        let conn = Connection {
            wire,
            peer,
            queue: TargetQueue::new(config),
            handler,
            writable_armed: false,
            peeked: false,
            offer,
            live,
            responder,
            requests: Vec::new(),
            applying: Vec::new(),
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
        let tls = self.wire.is_tls();
        // TLS: bytes OpenSSL already decrypted are taken even past the
        // budget (at most one record), as epoll cannot report them.
        while (total < READ_BUDGET || self.wire.buffered()) && !self.queue.is_terminated() {
            // A large H2CData payload goes straight into its command's buffer
            // (plain TCP; TLS decrypts into the receive buffer).
            if !tls && let Some(room) = self.queue.direct_buffer() {
                // Into memory not zeroed first: `read` hands back what it filled.
                match room.read_with(|spare| rustix::io::read(self.wire.tcp(), spare).map(|(filled, _)| filled)) {
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
            match self.wire.read(buf) {
                Ok(0) => {
                    self.queue.received(want, 0);
                    return Ok((total, true));
                }
                Ok(n) => {
                    self.queue.received(want, n);
                    total += n;
                    // A TLS read returns one record at most: a short one
                    // says nothing about what the socket holds.
                    if n < want && !tls {
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
        let result = self.write_pending();
        // Read data sent from its own buffer is done with once sent: back to the pool.
        let mut pool = self.responder.mailbox.pool.borrow_mut();
        for b in self.queue.take_spent_buffers() {
            pool.put(b);
        }
        result
    }

    /// One `sendmsg` per round (crate::send), of the encoded PDUs and the read data
    /// attached between them or lent by a RAM bdev ([`TargetQueue::send_with`]).
    fn write_pending(&mut self) -> std::io::Result<bool> {
        while self.queue.wants_send() {
            let wire = &mut self.wire;
            let sent = self.queue.send_with(|slices| {
                let mut iov: [IoSlice<'_>; SEND_SLICES] = [IoSlice::new(&[]); SEND_SLICES];
                for (v, s) in iov.iter_mut().zip(slices) {
                    *v = IoSlice::new(s);
                }
                // `send_with` offers at most SEND_SLICES.
                wire.send_slices(&iov[..slices.len().min(SEND_SLICES)])
            });
            match sent {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Applies the responses given through the [`Responder`], in order, and
    /// returns their data buffers to the pool.
    fn apply_responses(&mut self) -> bool {
        std::mem::swap(&mut self.applying, &mut *self.responder.mailbox.done.borrow_mut());
        if self.applying.is_empty() {
            return false;
        }
        for r in self.applying.drain(..) {
            self.queue.respond(r);
        }
        let mut pool = self.responder.mailbox.pool.borrow_mut();
        for b in self.queue.take_spent_buffers() {
            pool.put(b);
        }
        true
    }

    /// Parses what was read, with the pool's buffers lent to the queue for
    /// host-to-controller data.
    fn process(&mut self) -> Result<(), lull_proto::pdu::FatalError> {
        let mut pool = self.responder.mailbox.pool.borrow_mut();
        let before = pool.free.len();
        self.queue.swap_spare_buffers(&mut pool.free);
        // A TLS record sealed from lent bytes may be sent by a later call:
        // its bytes must not be read from the source twice.
        self.queue.lend_sources(!self.wire.is_tls());
        let result = self.queue.process();
        // Known before the handler sees any command the parse produced.
        self.responder.mailbox.lends.set(self.queue.sends_lent_reads());
        self.queue.swap_spare_buffers(&mut pool.free);
        if pool.free.len() != before {
            pool.settle();
        }
        result
    }

    /// Sets the poller's interest: EPOLLOUT too while `out`.
    fn arm_writable(&mut self, cx: &mut Context, out: bool) -> Result<(), String> {
        if out != self.writable_armed
            && let Some(id) = cx.current_poller()
        {
            let interest = if out { Interest::BOTH } else { Interest::READABLE };
            cx.set_interest(id, interest).map_err(|e| e.to_string())?;
            self.writable_armed = out;
        }
        Ok(())
    }

    /// Drives the TLS handshake. Returns whether it finished (then the
    /// handler knows the PSK); until then the poller waits on the fd for
    /// what OpenSSL waits for, never spinning.
    fn secure(&mut self, cx: &mut Context) -> Result<bool, String> {
        if !self.peeked {
            // A first byte that cannot start a TLS record (22, handshake):
            // most likely a plaintext ICReq (PDU type 00h), refused as such.
            let mut first = [0u8; 1];
            match rustix::net::recv(self.wire.tcp(), &mut first, rustix::net::RecvFlags::PEEK) {
                Ok((1, _)) => {
                    self.peeked = true;
                    if first[0] != TLS_HANDSHAKE_RECORD {
                        return Err(format!(
                            "first byte {:#04x} is not a TLS handshake record ({}) on a listener with secure_channel: refused",
                            first[0],
                            if first[0] == 0 { "a plaintext ICReq" } else { "not TLS" }
                        ));
                    }
                }
                Ok(_) => return Err("peer closed the connection before its TLS ClientHello".to_string()),
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(false),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        match self.wire.handshake().map_err(|e| e.to_string())? {
            Handshake::Done(psk) => {
                tracing::debug!(peer = %self.peer, identity = psk.identity(), cipher = self.wire.cipher(), "TLS secure channel established");
                self.handler.on_secure_channel(&psk);
                self.arm_writable(cx, false)?;
                Ok(true)
            }
            Handshake::WantRead => self.arm_writable(cx, false).map(|()| false),
            Handshake::WantWrite => self.arm_writable(cx, true).map(|()| false),
        }
    }

    /// On a port where TLS is optional: the connection's first byte decides.
    /// Returns false while no byte has arrived.
    fn choose(&mut self) -> Result<bool, String> {
        let Some(server) = self.offer.as_ref() else {
            return Ok(true);
        };
        let mut first = [0u8; 1];
        match rustix::net::recv(self.wire.tcp(), &mut first, rustix::net::RecvFlags::PEEK) {
            Ok((1, _)) if first[0] == TLS_HANDSHAKE_RECORD => {
                self.wire = server.accept(self.wire.tcp_shared()).map_err(|e| e.to_string())?;
                self.peeked = true;
                self.offer = None;
                Ok(true)
            }
            // Plaintext (or a peer that closed at once, which the read sees).
            Ok(_) => {
                self.offer = None;
                Ok(true)
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    fn run(&mut self, cx: &mut Context, mut ready: Readiness) -> Result<bool, String> {
        if self.offer.is_some() && !self.choose()? {
            return Ok(false);
        }
        if self.wire.handshaking() {
            if !self.secure(cx)? {
                return Ok(false);
            }
            // The ICReq may follow in the same segment.
            ready.readable = true;
        }
        let mut work = self.apply_responses();
        if ready.readable
            || ready.hangup
            || ready.error
            || self.wire.buffered()
            || (ready.writable && self.wire.wants_write())
        {
            let (n, eof) = self.read().map_err(|e| format!("read: {e}"))?;
            work |= n > 0;
            let result = self.process();
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
            self.queue.take_requests_into(&mut self.requests);
            let mut requests = std::mem::take(&mut self.requests);
            self.responder.mailbox.in_handler.set(true);
            for req in requests.drain(..) {
                self.handler.on_command(cx, req, &self.responder);
                // Right away, so a synchronous read's buffer is back in the
                // pool for the next command.
                self.apply_responses();
                work = true;
            }
            self.responder.mailbox.in_handler.set(false);
            self.requests = requests;
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
        work |= self.apply_responses();
        if self.handler.wants_close() {
            let _ = self.flush();
            return Err("controller closed the queue".to_string());
        }
        let all_sent = self.flush().map_err(|e| format!("write: {e}"))?;
        // TLS: a read may need a write first (a KeyUpdate's answer).
        self.arm_writable(cx, !all_sent || self.wire.wants_write())?;
        Ok(work)
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
    /// TLS on this port, if any.
    tls: Option<PortTls>,
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
        Self::register_secure(cx, listener, config, factory, None)
    }

    /// As [`register`](Self::register), with TLS on the port as `tls` says
    /// ([`PortTls`]): required (SPDK's `secure_channel`: a connection whose
    /// first bytes are not a TLS ClientHello with a known PSK identity is
    /// closed) or optional.
    ///
    /// # Errors
    /// As [`register`](Self::register).
    pub fn register_secure(
        cx: &mut Context,
        listener: TcpListener,
        config: TargetQueueConfig,
        factory: HandlerFactory<H>,
        tls: Option<PortTls>,
    ) -> std::io::Result<lull_reactor::PollerId> {
        listener.set_nonblocking(true)?;
        let l = Listener {
            listener,
            config,
            factory,
            next: Arc::new(AtomicUsize::new(0)),
            tls,
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
            let (config, factory, tls) = (self.config.clone(), self.factory.clone(), self.tls.clone());
            let sent = target.try_send(move |cx| {
                let handler = factory(cx, peer, local);
                if let Err(e) = Connection::register_secure(cx, stream, peer, config, handler, tls.as_ref()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_reuses_a_buffer_that_fits_and_stays_within_its_bounds() {
        let mut pool = BufferPool::default();
        let fresh = pool.take(4096);
        assert!(fresh.is_empty() && fresh.capacity() >= 4096, "empty pool: a new buffer");
        let mut big = Vec::with_capacity(131072);
        big.extend_from_slice(&[1; 100]);
        let (small_ptr, big_ptr) = (fresh.as_ptr(), big.as_ptr());
        pool.put(big);
        pool.put(fresh);
        assert_eq!(pool.bytes, 131072 + 4096);
        // The last buffer large enough: the small one for 4 KiB, the big one for 64 KiB.
        let b = pool.take(4096);
        assert_eq!(b.as_ptr(), small_ptr);
        let c = pool.take(65536);
        assert_eq!((c.as_ptr(), c.len()), (big_ptr, 0), "handed out empty");
        assert_eq!((pool.free.len(), pool.bytes), (0, 0));
        // A buffer of no capacity is not kept.
        pool.put(Vec::new());
        assert!(pool.free.is_empty());
        // Bytes: buffers beyond POOL_MAX_BYTES are freed.
        for _ in 0..POOL_MAX_BYTES / 131072 + 2 {
            pool.put(Vec::with_capacity(131072));
        }
        assert_eq!(pool.free.len(), POOL_MAX_BYTES / 131072);
        assert!(pool.bytes <= POOL_MAX_BYTES);
        // Count: beyond POOL_MAX_BUFFERS, freed.
        let mut pool = BufferPool::default();
        for _ in 0..POOL_MAX_BUFFERS + 5 {
            pool.put(Vec::with_capacity(16));
        }
        assert_eq!(pool.free.len(), POOL_MAX_BUFFERS);
    }

    #[test]
    fn settling_after_the_queue_used_the_free_list_recounts_and_trims() {
        let mut pool = BufferPool {
            free: (0..POOL_MAX_BUFFERS + 3).map(|_| Vec::with_capacity(64)).collect(),
            bytes: 0,
        };
        pool.settle();
        assert_eq!(pool.free.len(), POOL_MAX_BUFFERS);
        assert_eq!(pool.bytes, pool.free.iter().map(Vec::capacity).sum::<usize>());
        pool.free = vec![Vec::with_capacity(POOL_MAX_BYTES), Vec::with_capacity(4096)];
        pool.settle();
        assert_eq!((pool.free.len(), pool.bytes), (1, POOL_MAX_BYTES));
    }
}
