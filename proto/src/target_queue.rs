//! The controller side of one NVMe/TCP queue pair, as a state machine
//! (NVMe/TCP 1.0 sections 3.3 and 3.6).
//!
//! The glue feeds received bytes in ([`TargetQueue::recv_buffer`] then
//! [`TargetQueue::received`]), calls [`TargetQueue::process`] to parse every
//! complete PDU, and gets back requests ready to execute ([`Request`]: the
//! SQE and, for host-to-controller transfers, all of the data, gathered from
//! in-capsule data or R2T/H2CData). Each is answered with one [`Response`]
//! (CQE, data for a controller-to-host transfer, and what a successful
//! Connect establishes), applied by [`TargetQueue::respond`]; the bytes to
//! send accumulate in [`TargetQueue::pending_send`]. Whoever executes the
//! requests never sees the queue: the glue hands requests out and responses
//! in.
//!
//! Data buffers circulate instead of being allocated per command: the glue
//! lends the queue its free list while it parses
//! ([`TargetQueue::swap_spare_buffers`]), whose buffers the queue fills with
//! host-to-controller data, and takes back each response's data buffer once
//! its bytes are encoded, or, for data of [`ATTACH_MIN`] bytes or more
//! (sent from the buffer itself by a vectored write, with no copy into the
//! send buffer), once they are sent ([`TargetQueue::take_spent_buffers`]).
//!
//! A peer's bad PDU ends the queue: `process` returns the [`FatalError`],
//! a C2HTermReq carrying its FES/FEI and the offending header is queued, and
//! nothing more is parsed. Every length is checked against a negotiated
//! bound from the header alone, before any byte of payload is buffered, so no
//! allocation is ever sized by a peer's PLEN or DATAL. The common-header
//! checks and the TermReq are shared with the host queue (`framing`).

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use crate::cid_set::{CidSet, Held};

use crate::buf::{RecvBuf, SendBuf};
use crate::fabrics::fctype;
use crate::framing::{self, Receiver};
use crate::nvme::{Cqe, SQE_LEN, Sqe, Status, admin_opc, sgl_id, status};
use crate::pdu::{
    CH_LEN, CommonHeader, DIGEST_LEN, DataHeader, Digests, FatalError, Fes, IC_HLEN, IcReq, IcResp, PduType, TermReq,
    data_offset_for, flags, le32, offset,
};
use crate::read_source::{SourceRange, SourceRangeError};

/// In-capsule data the admin queue accepts, bytes: the Linux host sizes admin
/// capsules to 8 KiB of data regardless of IOCCSZ (`NVME_TCP_ADMIN_CCSZ`).
pub const ADMIN_IN_CAPSULE_DATA: u32 = 8192;

/// What a target queue negotiates and enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetQueueConfig {
    /// MAXH2CDATA advertised in ICResp, bytes: a multiple of 4, at least 4096.
    pub maxh2cdata: u32,
    /// In-capsule data accepted on I/O queues, bytes (IOCCSZ x 16 - 64).
    pub io_in_capsule_data: u32,
    /// Largest data transfer of one command, bytes (MDTS).
    pub max_transfer: u32,
    /// Grant a header digest when the host asks for one.
    pub allow_header_digest: bool,
    /// Grant a data digest when the host asks for one.
    pub allow_data_digest: bool,
    /// Largest C2HData PDU we send, bytes.
    pub c2h_chunk: u32,
    /// SPDK's `c2h_success` (on by default there and here): a successful
    /// read whose DW0 and DW1 are zero ends with the SUCCESS flag on its last
    /// C2HData and no CapsuleResp, whether or not the host disabled SQ flow
    /// control; the Linux host, SPDK's and lull's accept it. Off: only for a
    /// host that disabled SQ flow control (NVMe/TCP 1.0 section 3.6.2.8, the
    /// Linux target's rule), since a CapsuleResp is what carries SQHD to a
    /// host that counts free SQ slots by it. The saved PDU is measurable:
    /// 4 KiB reads at queue depth 32 +7 %, 128 KiB reads +14 % against
    /// `spdk_nvme_perf` (docs/performance.md).
    pub c2h_success: bool,
}

impl Default for TargetQueueConfig {
    fn default() -> Self {
        TargetQueueConfig {
            maxh2cdata: 131072,
            io_in_capsule_data: 8192,
            max_transfer: 131072,
            allow_header_digest: true,
            allow_data_digest: true,
            c2h_chunk: 131072,
            c2h_success: true,
        }
    }
}

/// A command ready to execute: what the queue hands to the controller.
#[derive(Debug)]
pub struct Request {
    /// The submission queue entry.
    pub sqe: Sqe,
    /// Host-to-controller data (in-capsule or gathered from H2CData), empty
    /// otherwise. The buffer came from the queue's spares; an executor that
    /// is done with it may give it back (the glue's `Responder::recycle`).
    pub data: Vec<u8>,
    /// For controller-to-host transfers: the most bytes the host's SGL accepts.
    pub c2h_len: u32,
}

/// What a successful Connect establishes on its queue (NVMe-oF 1.1 section
/// 3.3: the queue's QID, its size and whether SQ flow control is off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueParams {
    /// Queue ID (0: the admin queue).
    pub qid: u16,
    /// Submission queue size in entries (Connect's SQSIZE + 1; clamped to
    /// 1..=[`MAX_SQ_ENTRIES`] when applied).
    pub sq_entries: u32,
    /// The host disabled SQ flow control (Connect CATTR bit 2): completions
    /// carry SQHD 0, and a successful read may end with the C2HData SUCCESS
    /// flag instead of a CapsuleResp.
    pub sq_flow_control_disabled: bool,
}

/// The answer to one [`Request`]: what the controller hands back to the queue.
///
/// The controller-to-host data, sent as C2HData PDUs before the completion,
/// is `data`, or, for a Read served from memory, `source` (copied straight
/// into the PDUs: [`crate::read_source`]); neither: the command moves none.
/// `connected` is set only by a successful Connect. The queue fills in SQHD
/// and SQID.
#[derive(Debug, Default)]
pub struct Response {
    /// The completion queue entry (CID, status, DW0/DW1).
    pub cqe: Cqe,
    /// Controller-to-host data; empty when the command moves none or
    /// `source` holds it.
    pub data: Vec<u8>,
    /// Controller-to-host data still where it lives, copied when the PDUs
    /// are built (used instead of `data`).
    pub source: Option<SourceRange>,
    /// What a successful Connect established, applied before the completion is queued.
    pub connected: Option<QueueParams>,
}

impl Response {
    /// A completion of `cid` with `status` as given (add
    /// [`Status::with_dnr`] yourself when a retry cannot succeed), no data.
    pub fn status(cid: u16, status: Status) -> Self {
        Cqe {
            cid,
            status,
            ..Cqe::default()
        }
        .into()
    }

    /// A completion of `cid` with `status` and Do Not Retry set: the same
    /// command would fail again (NVMe Base 2.0 figure 92, DNR).
    pub fn dnr(cid: u16, status: Status) -> Self {
        Self::status(cid, status.with_dnr())
    }

    /// A successful completion of `cid`, DW0 and DW1 zero, no data.
    pub fn ok(cid: u16) -> Self {
        Self::status(cid, Status::SUCCESS)
    }

    /// A successful completion of `cid` with controller-to-host `data`.
    pub fn ok_with_data(cid: u16, data: Vec<u8>) -> Self {
        Self::with_data(Cqe { cid, ..Cqe::default() }, data)
    }

    /// A completion with controller-to-host `data`.
    pub fn with_data(cqe: Cqe, data: Vec<u8>) -> Self {
        Response {
            cqe,
            data,
            source: None,
            connected: None,
        }
    }

    /// A completion whose controller-to-host data stays in `source` (a Read
    /// of a memory bdev): sent from the source's memory when it lends it
    /// (see [`crate::read_source`]), else copied into the C2HData PDUs as
    /// they are built.
    pub fn with_source(cqe: Cqe, source: SourceRange) -> Self {
        Response {
            cqe,
            data: Vec::new(),
            source: Some(source),
            connected: None,
        }
    }

    /// The controller-to-host data, wherever it is (tests and tools).
    ///
    /// # Errors
    /// When `source` no longer holds its range.
    pub fn data_bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, SourceRangeError> {
        match &self.source {
            Some(s) => s.to_vec().map(std::borrow::Cow::Owned),
            None => Ok(std::borrow::Cow::Borrowed(&self.data)),
        }
    }

    /// This response with DW0 (command specific) set to `dw0`.
    #[must_use]
    pub fn with_dw0(mut self, dw0: u32) -> Self {
        self.cqe.dw0 = dw0;
        self
    }

    /// This response establishing `params` on its queue (a successful Connect).
    #[must_use]
    pub fn with_connected(mut self, params: QueueParams) -> Self {
        self.connected = Some(params);
        self
    }
}

impl From<Cqe> for Response {
    fn from(cqe: Cqe) -> Self {
        Response {
            cqe,
            data: Vec::new(),
            source: None,
            connected: None,
        }
    }
}

/// What `process` produced besides commands.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// ICReq accepted and ICResp queued.
    Initialized {
        /// Digests granted.
        digests: Digests,
    },
    /// The host sent H2CTermReq; the queue is over (close it).
    HostTerminated(TermReq),
    /// An admin command took over the CID of an outstanding Asynchronous
    /// Event Request (a host that forgot its AERs); the AER is dropped.
    AerCidTakenOver {
        /// The CID.
        cid: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitIcReq,
    Live,
    Terminated,
}

/// Data transfer direction of a command (NVMe Base 2.0 figure 88: opcode
/// bits 1:0; for Fabrics commands, FCTYPE bits 1:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// No data.
    None,
    /// Host to controller (write-like).
    HostToController,
    /// Controller to host (read-like).
    ControllerToHost,
    /// Both (not used by NVMe/TCP commands lull supports).
    Bidirectional,
}

impl Direction {
    /// The direction of an SQE.
    pub fn of(sqe: &Sqe) -> Direction {
        let bits = if sqe.opc() == admin_opc::FABRICS {
            sqe.fctype()
        } else {
            sqe.opc()
        } & 3;
        match bits {
            0 => Direction::None,
            1 => Direction::HostToController,
            2 => Direction::ControllerToHost,
            _ => Direction::Bidirectional,
        }
    }
}

/// A command waiting for H2CData after our R2T.
struct Transfer {
    cid: u16,
    sqe: Sqe,
    /// The data so far. H2CData arrives in order (DATAO must be `next`), so
    /// it is appended: the buffer is never zeroed first.
    buf: Vec<u8>,
    /// Bytes the R2T asked for.
    len: u32,
    /// Next DATAO we expect.
    next: u32,
    digest_error: bool,
}

/// An H2CData PDU whose payload is read from the socket straight into its
/// transfer's buffer (the header checked, the payload not yet all in).
struct DirectH2c {
    ttag: usize,
    h: DataHeader,
    last: bool,
    /// Payload bytes still to come.
    remaining: usize,
}

/// Room at the end of a transfer's buffer for the next bytes of an H2CData
/// payload ([`TargetQueue::direct_buffer`]).
pub struct DirectRoom<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

impl DirectRoom<'_> {
    /// Bytes the room takes.
    pub fn len(&self) -> usize {
        self.limit
    }

    /// Whether the room takes nothing (never, as handed out).
    pub fn is_empty(&self) -> bool {
        self.limit == 0
    }

    /// Fills the room with `read`, which gets [`len`](Self::len) bytes of
    /// memory not zeroed first and hands back the start of it that it
    /// initialised (as `rustix::io::read` into spare capacity does). Returns
    /// the count (0 at end of stream). A `read` that hands back anything
    /// but a start of the room it was given counts as reading nothing.
    ///
    /// # Errors
    /// `read`'s.
    pub fn read_with<E>(self, read: impl FnOnce(&mut [MaybeUninit<u8>]) -> Result<&mut [u8], E>) -> Result<usize, E> {
        let start = self.buf.len();
        let spare = &mut self.buf.spare_capacity_mut()[..self.limit];
        let room = spare.as_ptr().cast::<u8>();
        let init = read(spare)?;
        let n = init.len();
        if init.as_ptr() != room || n > self.limit {
            return Ok(0);
        }
        // SAFETY: `init` is a `&mut [u8]` (so initialised bytes) that starts
        // where the spare capacity starts and is at most `limit <= capacity -
        // len` long: the first `n` bytes of the spare capacity are initialised.
        unsafe { self.buf.set_len(start + n) };
        Ok(n)
    }

    /// Copies the start of `bytes` into the room (tests, fuzzing): as many as
    /// it takes. Returns the count.
    pub fn fill_from(self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.limit);
        self.buf.extend_from_slice(&bytes[..n]);
        n
    }
}

/// Takes an empty buffer of at least `len` bytes' capacity from a free list
/// of data buffers: the last one large enough, else the last one grown, else
/// a new one (the rule the queue and the glue's pool share). Returns it and
/// the capacity it had in the list (0 for a new one), for a pool that counts
/// the bytes it holds.
pub fn take_spare(spares: &mut Vec<Vec<u8>>, len: usize) -> (Vec<u8>, usize) {
    let at = spares
        .iter()
        .rposition(|b| b.capacity() >= len)
        .or(spares.len().checked_sub(1));
    match at {
        Some(i) => {
            let mut b = spares.swap_remove(i);
            let had = b.capacity();
            b.clear();
            b.reserve(len);
            (b, had)
        }
        None => (Vec::with_capacity(len), 0),
    }
}

/// Smallest response payload sent from its own buffer rather than copied
/// into the send buffer. Below it the copy costs less than another slice in
/// the vectored write: with 4 KiB reads at QD 32, sending each read's data as
/// its own slice cost the kernel more (gathering 64 slices per `writev`)
/// than the copy of data still hot in the cache saved (about 5 % of IOPS
/// against SPDK's `spdk_nvme_perf`; docs/performance.md). Above it, the copy
/// of 16 KiB to 128 KiB would be the larger cost.
pub const ATTACH_MIN: usize = 16 * 1024;

/// Smallest Read transfer sent from a lending source's memory
/// ([`ReadSource::lend`](crate::read_source::ReadSource::lend)) rather than
/// copied into the send buffer: from one block of 4 KiB, where skipping the
/// copy saves about a sixth of the sender's CPU per read at queue depth 32
/// (docs/performance.md); below it the copy is cheap beside another slice.
pub const LEND_MIN: usize = 4096;

/// Most slices in one vectored write ([`TargetQueue::send_with`]).
pub const SEND_SLICES: usize = 64;

/// Smallest H2CData payload received straight into its transfer's buffer:
/// below it, one copy out of the receive buffer costs less than the extra
/// `recv` for the header alone.
const DIRECT_MIN: usize = 16 * 1024;

/// The controller side of one queue pair.
pub struct TargetQueue {
    config: TargetQueueConfig,
    state: State,
    digests: Digests,
    hpda: u8,
    qid: u16,
    /// Submission queue size (entries), set when Connect succeeds.
    sq_entries: u32,
    sqhd: u16,
    sq_flow_control_disabled: bool,
    /// CIDs of commands received and not yet completed, with their opcodes.
    outstanding: CidSet,
    /// Send-stream positions (see [`SendBuf::queued_end`]) where the
    /// completions queued and not yet handed to the socket end: their SQ
    /// slots stay taken until then, since a host frees a slot only when it
    /// sees the completion. Without this a host that never reads would have
    /// every read's data queued here, without bound.
    unsent: VecDeque<u64>,
    /// TTAG = index; `None` when free.
    transfers: Vec<Option<Transfer>>,
    /// Transfers waiting for H2CData (the `Some`s in `transfers`).
    awaiting_data: usize,
    /// The H2CData payload being read straight into its transfer, if any.
    direct: Option<DirectH2c>,
    recv: RecvBuf,
    send: SendBuf,
    requests: Vec<Request>,
    events: Vec<QueueEvent>,
    /// Buffers lent by the glue, filled with host-to-controller data.
    spare: Vec<Vec<u8>>,
    /// Responses' data buffers whose bytes are encoded: the glue takes them back.
    spent: Vec<Vec<u8>>,
    /// Send Read data from lending sources' memory ([`lend_sources`](Self::lend_sources)).
    lend_sources: bool,
    /// The lent ranges of one send, kept to reuse the allocation.
    lend_scratch: Vec<(u64, usize)>,
}

/// Outstanding commands allowed before Connect sets the queue size (the
/// Connect itself, plus slack for a host that pipelines).
const INITIAL_SQ_ENTRIES: u32 = 32;
/// Largest SQ the target accepts (entries); MQES in CAP is one less.
pub const MAX_SQ_ENTRIES: u32 = 1024;

impl TargetQueue {
    /// A queue awaiting its ICReq.
    pub fn new(config: TargetQueueConfig) -> Self {
        TargetQueue {
            config,
            state: State::AwaitIcReq,
            digests: Digests::default(),
            hpda: 0,
            qid: 0,
            sq_entries: INITIAL_SQ_ENTRIES,
            sqhd: 0,
            sq_flow_control_disabled: false,
            outstanding: CidSet::default(),
            unsent: VecDeque::new(),
            transfers: Vec::new(),
            awaiting_data: 0,
            direct: None,
            recv: RecvBuf::default(),
            send: SendBuf::default(),
            requests: Vec::new(),
            events: Vec::new(),
            spare: Vec::new(),
            spent: Vec::new(),
            lend_sources: true,
            lend_scratch: Vec::new(),
        }
    }

    /// Whether the ICReq/ICResp exchange is done.
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// Whether the queue ended (fatal error sent, or the host terminated).
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// Digests negotiated.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Commands received and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Applies what a successful Connect established: queue id, SQ size in
    /// entries (SQSIZE + 1) and whether SQ flow control is disabled.
    fn set_connected(&mut self, p: QueueParams) {
        self.qid = p.qid;
        self.sq_entries = p.sq_entries.clamp(1, MAX_SQ_ENTRIES);
        self.sq_flow_control_disabled = p.sq_flow_control_disabled;
    }

    /// Answers a request: applies `connected` first (whether or not the CID
    /// is outstanding, so a queue can be set up without a Connect capsule in
    /// tests and fuzzing), then queues the completion: a CapsuleResp (SQHD
    /// and SQID filled in), after the data as C2HData PDUs of at most
    /// `c2h_chunk` bytes when `data` is not empty. When the host disabled SQ
    /// flow control and a completion with data is a plain success, the
    /// SUCCESS flag on the last C2HData replaces the CapsuleResp (NVMe/TCP
    /// 1.0 section 3.6.2.8). The data buffer goes to
    /// [`take_spent_buffers`](Self::take_spent_buffers) once encoded (below
    /// [`ATTACH_MIN`] bytes: copied into the send buffer) or once sent (from
    /// the buffer itself). A `source` is copied into the PDUs as they are
    /// built; one that no longer holds its range fails the command with
    /// Internal Error instead, with nothing of its data queued.
    /// Returns false, queueing nothing, when the CID is not outstanding or
    /// the queue has ended.
    pub fn respond(&mut self, r: Response) -> bool {
        if let Some(p) = r.connected {
            self.set_connected(p);
        }
        if let Some(source) = r.source {
            if r.data.capacity() > 0 {
                self.spent.push(r.data);
            }
            if self.lends(&source) {
                return self.complete_with_lent(r.cqe, source);
            }
            let copied = self.complete_with_data_from(r.cqe, source.len(), |offset, dst| source.copy_to(offset, dst));
            return copied.unwrap_or_else(|_| {
                self.complete(Cqe {
                    status: status::INTERNAL_ERROR,
                    ..r.cqe
                })
            });
        }
        if r.data.len() >= ATTACH_MIN {
            return self.complete_with_owned(r.cqe, r.data);
        }
        let done = if r.data.is_empty() {
            self.complete(r.cqe)
        } else {
            self.complete_with_data(r.cqe, &r.data)
        };
        if r.data.capacity() > 0 {
            self.spent.push(r.data);
        }
        done
    }

    /// Response data buffers done with (copied into the send buffer, or
    /// sent from where they were), for the glue to reuse (a [`Response`]'s `data` comes back here from
    /// [`respond`](Self::respond)).
    pub fn take_spent_buffers(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.spent.extend(self.send.take_released());
        self.spent.drain(..)
    }

    /// Exchanges the queue's spare buffers with `spares` (O(1)): the glue
    /// lends its free list for [`process`](Self::process), then swaps it back.
    /// The queue fills spares with host-to-controller data (in-capsule or
    /// H2CData), so a write allocates nothing while spares are there; a spare
    /// used leaves in its command's [`Request::data`], and the queue may add
    /// one it no longer needs (a transfer dropped for a data digest error).
    /// Without spares the queue allocates.
    pub fn swap_spare_buffers(&mut self, spares: &mut Vec<Vec<u8>>) {
        std::mem::swap(&mut self.spare, spares);
    }

    /// An empty buffer of at least `len` bytes' capacity ([`take_spare`]).
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        take_spare(&mut self.spare, len).0
    }

    fn in_capsule_limit(&self) -> u32 {
        if self.qid == 0 {
            ADMIN_IN_CAPSULE_DATA.max(self.config.io_in_capsule_data)
        } else {
            self.config.io_in_capsule_data
        }
    }

    // ---- receive side -------------------------------------------------

    /// A buffer of at least `want` bytes to read socket data into; follow
    /// with [`received`](Self::received) and the count read.
    pub fn recv_buffer(&mut self, want: usize) -> &mut [u8] {
        self.recv.space(want)
    }

    /// How many bytes the next read into [`recv_buffer`](Self::recv_buffer)
    /// should ask for, at most `max`: while transfers wait for H2CData and
    /// no PDU header is buffered, only a header's worth, so that a large
    /// payload after it can be read straight into its transfer
    /// ([`direct_buffer`](Self::direct_buffer)) instead of into the receive
    /// buffer and copied from there (NVMe/TCP 1.0 section 3.6.2.6: the data
    /// of an H2CData PDU is the command's data, at DATAO).
    pub fn recv_want(&self, max: usize) -> usize {
        let header = PduType::H2CData.hlen() + self.digests.hdgst_len(PduType::H2CData);
        match &self.direct {
            // A direct payload is in: just its data digest.
            Some(d) if d.remaining == 0 => DIGEST_LEN.saturating_sub(self.recv.len()).clamp(1, max.max(1)),
            None if self.awaiting_data > 0 && self.recv.len() < header => (header - self.recv.len()).min(max),
            _ => max,
        }
    }

    /// While an H2CData payload of at least 16 KiB is being received: room
    /// at the end of its transfer's buffer for exactly the payload bytes
    /// still to come. Read into it ([`DirectRoom::read_with`]), then call
    /// [`direct_received`](Self::direct_received) with the count. `None` when the next bytes
    /// go to [`recv_buffer`](Self::recv_buffer). A buffered H2CData header
    /// whose payload has not all arrived starts this, after the same header
    /// checks as [`process`](Self::process) (a header that fails them is left
    /// for `process` to answer with a C2HTermReq); a payload that has all
    /// arrived ends it, once its data digest is in.
    pub fn direct_buffer(&mut self) -> Option<DirectRoom<'_>> {
        if self.state != State::Live {
            return None;
        }
        self.finish_direct();
        if self.direct.is_none() {
            self.start_direct();
        }
        let d = self.direct.as_ref()?;
        if d.remaining == 0 {
            return None;
        }
        let limit = d.remaining;
        let buf = &mut self.transfers.get_mut(d.ttag)?.as_mut()?.buf;
        (buf.capacity() - buf.len() >= limit).then_some(DirectRoom { buf, limit })
    }

    /// After a read into [`direct_buffer`](Self::direct_buffer): `n` bytes arrived.
    pub fn direct_received(&mut self, n: usize) {
        if let Some(d) = self.direct.as_mut() {
            d.remaining = d.remaining.saturating_sub(n);
        }
    }

    /// Starts a direct payload when the receive buffer holds a checked
    /// H2CData header (and padding) with only part of its payload.
    fn start_direct(&mut self) {
        let avail = self.recv.avail();
        let Some(ch) = CommonHeader::parse(avail) else { return };
        if ch.pdu_type != PduType::H2CData as u8 || ch.plen as usize <= avail.len() {
            return;
        }
        let Ok(t) = self.check_common_header(&ch) else { return };
        let hd = self.digests.hdgst_len(t);
        let pdo = ch.pdo as usize;
        if avail.len() < t.hlen() + hd || avail.len() < pdo {
            return;
        }
        if hd > 0 && !framing::header_digest_ok(avail, t.hlen()) {
            return;
        }
        let Ok(data_len) = self.check_data_layout(t, &ch, hd) else {
            return;
        };
        let h = DataHeader::parse(avail);
        if data_len < DIRECT_MIN || self.check_h2c_header(&h, data_len).is_err() {
            return;
        }
        let last = ch.flags & flags::LAST_PDU != 0;
        let ttag = h.ttag as usize;
        let Some(Some(tr)) = self.transfers.get_mut(ttag) else {
            return;
        };
        let have = avail.len() - pdo;
        // LAST_PDU must be set on, and only on, the PDU that ends the transfer
        // (else `process` answers the PDU with a C2HTermReq).
        let ends = tr.next as usize + data_len == tr.len as usize;
        if have >= data_len || last != ends || tr.buf.capacity() < tr.buf.len() + data_len {
            return;
        }
        tr.buf.extend_from_slice(&avail[pdo..]);
        let n = avail.len();
        self.recv.consume(n);
        self.direct = Some(DirectH2c {
            ttag,
            h,
            last,
            remaining: data_len - have,
        });
    }

    /// Moves payload bytes that reached the receive buffer anyway (fed
    /// rather than read into the transfer) into the transfer, then ends a
    /// direct payload that has all arrived, once its data digest (if
    /// negotiated) is buffered: the transfer takes the PDU's data.
    fn finish_direct(&mut self) {
        let Some(d) = self.direct.as_mut() else { return };
        if d.remaining > 0 && self.recv.len() > 0 {
            let n = d.remaining.min(self.recv.len());
            if let Some(Some(tr)) = self.transfers.get_mut(d.ttag) {
                tr.buf.extend_from_slice(&self.recv.avail()[..n]);
            }
            self.recv.consume(n);
            d.remaining -= n;
        }
        let dd = if self.digests.data { DIGEST_LEN } else { 0 };
        if d.remaining > 0 || self.recv.len() < dd {
            return;
        }
        let Some(d) = self.direct.take() else { return };
        let ddgst_ok = dd == 0
            || self.transfers.get(d.ttag).and_then(Option::as_ref).is_some_and(|tr| {
                let at = d.h.datao as usize;
                crate::pdu::crc32c(&tr.buf[at..at + d.h.datal as usize]) == le32(self.recv.avail(), 0)
            });
        self.recv.consume(dd);
        // The header was checked when the payload started, LAST_PDU included.
        let _ = self.h2c_received(d.h, ddgst_ok, d.last);
    }

    /// Commits `n` bytes read into the last [`recv_buffer`](Self::recv_buffer).
    pub fn received(&mut self, want: usize, n: usize) {
        // A terminated queue parses nothing more, so it keeps nothing more.
        let keep = self.state != State::Terminated;
        self.recv.commit(want, n, keep);
    }

    /// Feeds bytes directly (tests, fuzzing).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.recv_buffer(bytes.len()).copy_from_slice(bytes);
        self.received(bytes.len(), bytes.len());
    }

    /// Bytes received and not yet parsed.
    pub fn buffered(&self) -> usize {
        self.recv.len()
    }

    /// Parses every complete PDU received so far. Requests ready to run are
    /// taken with [`take_requests`](Self::take_requests), other happenings
    /// with [`take_events`](Self::take_events).
    ///
    /// # Errors
    /// The first fatal PDU error. A C2HTermReq for it is queued to send and
    /// the queue is terminated: flush [`pending_send`](Self::pending_send),
    /// then close the connection.
    pub fn process(&mut self) -> Result<(), FatalError> {
        while self.state != State::Terminated {
            match self.next_pdu() {
                Ok(true) => {}
                Ok(false) => break,
                Err((err, header_len)) => {
                    framing::terminate(&mut self.recv, &mut self.send, Receiver::Controller, err, header_len);
                    self.state = State::Terminated;
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Requests parsed by `process`, in arrival order.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    /// Moves the requests parsed by `process`, in arrival order, to the end
    /// of `into` (the glue's reused list: no allocation per batch).
    pub fn take_requests_into(&mut self, into: &mut Vec<Request>) {
        into.append(&mut self.requests);
    }

    /// Events parsed by `process`.
    pub fn take_events(&mut self) -> Vec<QueueEvent> {
        std::mem::take(&mut self.events)
    }

    /// Tries to parse one PDU. `Ok(false)`: not enough bytes yet.
    /// `Err((error, bytes of header to copy into the TermReq))`.
    fn next_pdu(&mut self) -> Result<bool, (FatalError, usize)> {
        if self.direct.is_some() {
            self.finish_direct();
            if self.direct.is_some() {
                return Ok(false);
            }
        }
        let avail = self.recv.avail();
        let Some(ch) = CommonHeader::parse(avail) else {
            return Ok(false);
        };
        let fail = |e: FatalError| (e, ch.hlen.max(CH_LEN as u8) as usize);
        let t = self.check_common_header(&ch).map_err(fail)?;
        let hlen = t.hlen();
        let hd = self.digests.hdgst_len(t);
        if avail.len() < hlen + hd {
            return Ok(false);
        }
        if hd > 0 {
            framing::check_header_digest(avail, hlen).map_err(fail)?;
        }
        // Payload bounds from the header alone.
        let plen = ch.plen as usize;
        let data_len = self.check_data_layout(t, &ch, hd).map_err(fail)?;
        if t == PduType::H2CData {
            self.check_h2c_header(&DataHeader::parse(avail), data_len)
                .map_err(fail)?;
        }
        if avail.len() < plen {
            return Ok(false);
        }
        // Handled in place (no copy): the buffer is lent out for the call. It is
        // consumed only on success, so a TermReq copies this PDU's header.
        let recv = std::mem::take(&mut self.recv);
        let r = self.handle_pdu(t, &ch, &recv.avail()[..plen], data_len);
        self.recv = recv;
        r.map_err(|e| (e, hlen))?;
        self.recv.consume(plen);
        Ok(true)
    }

    fn check_common_header(&self, ch: &CommonHeader) -> Result<PduType, FatalError> {
        let t = framing::pdu_type(ch, Receiver::Controller)?;
        match (self.state, t) {
            (State::AwaitIcReq, PduType::IcReq) | (State::Live, PduType::H2CTermReq) => {}
            (_, PduType::H2CTermReq) => {}
            (State::AwaitIcReq, _) | (State::Live, PduType::IcReq) => {
                return Err(FatalError::status(Fes::PduSequenceError));
            }
            _ => {}
        }
        framing::check_hlen(ch, t)?;
        // HDGSTF must match what was negotiated; DDGSTF only on PDUs with data.
        let want_hd = self.digests.hdgst_len(t) > 0;
        if (ch.flags & flags::HDGSTF != 0) != want_hd {
            return Err(FatalError::field(offset::FLAGS));
        }
        if ch.flags & flags::DDGSTF != 0 && !(self.digests.data && t.may_have_data()) {
            return Err(FatalError::field(offset::FLAGS));
        }
        // Data beyond the limits is answered later, with its own FES.
        framing::check_plen(ch, t, self.digests.hdgst_len(t), usize::MAX)?;
        Ok(t)
    }

    /// Checks PDO and the data digest flag; returns the data length.
    fn check_data_layout(&self, t: PduType, ch: &CommonHeader, hd: usize) -> Result<usize, FatalError> {
        let plen = ch.plen as usize;
        let header_end = t.hlen() + hd;
        if !t.may_have_data() || plen == header_end {
            if t.may_have_data() && ch.flags & flags::DDGSTF != 0 {
                return Err(FatalError::field(offset::FLAGS));
            }
            if t == PduType::H2CData {
                // An H2CData PDU without data is invalid (DATAL must be > 0).
                return Err(FatalError::field(offset::PLEN));
            }
            return Ok(0);
        }
        let dd = if self.digests.data { DIGEST_LEN } else { 0 };
        if (ch.flags & flags::DDGSTF != 0) != (dd > 0) {
            return Err(FatalError::field(offset::FLAGS));
        }
        let pdo = ch.pdo as usize;
        // CPDA is 0: data starts at a dword boundary after the header and HDGST.
        if pdo < header_end || !pdo.is_multiple_of(4) || pdo > data_offset_for_max(header_end) {
            return Err(FatalError::field(offset::PDO));
        }
        if plen < pdo + dd {
            return Err(FatalError::field(offset::PLEN));
        }
        let data_len = plen - pdo - dd;
        let limit = match t {
            PduType::CapsuleCmd => self.in_capsule_limit(),
            _ => self.config.maxh2cdata,
        } as usize;
        if data_len > limit {
            return Err(FatalError::status(Fes::DataTransferLimitExceeded));
        }
        Ok(data_len)
    }

    fn check_h2c_header(&self, h: &DataHeader, data_len: usize) -> Result<(), FatalError> {
        use crate::pdu::data_offset as off;
        let tr = self
            .transfers
            .get(h.ttag as usize)
            .and_then(Option::as_ref)
            .ok_or(FatalError::field(off::TTAG))?;
        if tr.cid != h.cccid {
            return Err(FatalError::field(off::CCCID));
        }
        if h.datal > self.config.maxh2cdata {
            return Err(FatalError::status(Fes::DataTransferLimitExceeded));
        }
        if h.datao != tr.next || u64::from(h.datao) + u64::from(h.datal) > u64::from(tr.len) {
            return Err(FatalError::status(Fes::DataTransferOutOfRange));
        }
        if h.datal as usize != data_len {
            return Err(FatalError::field(offset::PLEN));
        }
        Ok(())
    }

    fn handle_pdu(&mut self, t: PduType, ch: &CommonHeader, pdu: &[u8], data_len: usize) -> Result<(), FatalError> {
        let data = &pdu[pdu.len()
            - data_len
            - if data_len > 0 && self.digests.data {
                DIGEST_LEN
            } else {
                0
            }..];
        let (data, ddgst_ok) = if data_len > 0 && self.digests.data {
            let (d, dg) = data.split_at(data_len);
            (d, crate::pdu::crc32c(d) == le32(dg, 0))
        } else {
            (&data[..data_len], true)
        };
        match t {
            PduType::IcReq => {
                let mut b = [0u8; IC_HLEN];
                b.copy_from_slice(&pdu[..IC_HLEN]);
                let req = IcReq::parse(&b)?;
                let granted = Digests {
                    header: req.digests.header && self.config.allow_header_digest,
                    data: req.digests.data && self.config.allow_data_digest,
                };
                self.send.out.extend_from_slice(
                    &IcResp {
                        pfv: 0,
                        cpda: 0,
                        digests: granted,
                        maxh2cdata: self.config.maxh2cdata,
                    }
                    .encode(),
                );
                self.digests = granted;
                self.hpda = req.hpda;
                self.state = State::Live;
                self.events.push(QueueEvent::Initialized { digests: granted });
            }
            PduType::H2CTermReq => {
                self.events.push(QueueEvent::HostTerminated(TermReq::parse(pdu)));
                self.state = State::Terminated;
            }
            PduType::CapsuleCmd => {
                let Some(sqe) = Sqe::from_bytes(&pdu[CH_LEN..CH_LEN + SQE_LEN]) else {
                    return Err(FatalError::field(offset::PLEN));
                };
                let _ = ch;
                self.on_capsule(sqe, data, ddgst_ok)?;
            }
            PduType::H2CData => {
                let h = DataHeader::parse(pdu);
                let last = ch.flags & flags::LAST_PDU != 0;
                self.on_h2c_data(h, data, ddgst_ok, last)?;
            }
            _ => return Err(FatalError::field(offset::PDU_TYPE)),
        }
        Ok(())
    }

    fn on_capsule(&mut self, sqe: Sqe, data: &[u8], ddgst_ok: bool) -> Result<(), FatalError> {
        let cid = sqe.cid();
        if (self.outstanding.len() + self.unsent.len()) as u32 >= self.sq_entries {
            // The host overran the submission queue it negotiated: more
            // commands than entries, counting those whose completion it
            // cannot have seen yet.
            return Err(FatalError::status(Fes::PduSequenceError));
        }
        self.sqhd = ((u32::from(self.sqhd) + 1) % self.sq_entries.max(1)) as u16;
        match self.outstanding.lookup(cid) {
            // A host that tears its admin queue down forgets the Asynchronous
            // Event Requests it left with the controller and reuses their CIDs
            // (SPDK's initiator does for the Property Get/Set of a shutdown; the
            // kernel target never checks). An AER only waits for an event, so
            // the new command takes the CID over; the controller forgets the
            // AER when it sees an admin command with its CID.
            Held::ByAer => self.events.push(QueueEvent::AerCidTakenOver { cid }),
            Held::ByCommand => {
                // Answer without tracking: the first command with this CID keeps its slot.
                self.send_cqe(Cqe {
                    cid,
                    status: status::COMMAND_ID_CONFLICT.with_dnr(),
                    ..Cqe::default()
                });
                return Ok(());
            }
            Held::Free => {}
        }
        self.outstanding.insert(cid, sqe.opc(), self.qid == 0);
        if !ddgst_ok {
            self.complete(Cqe {
                cid,
                status: status::TRANSIENT_TRANSPORT_ERROR,
                ..Cqe::default()
            });
            return Ok(());
        }
        let dir = Direction::of(&sqe);
        let sgl = sqe.sgl1();
        let fail = |q: &mut Self, s: Status| {
            q.complete(Cqe {
                cid,
                status: s.with_dnr(),
                ..Cqe::default()
            });
        };
        match (sgl.id, dir) {
            (_, Direction::Bidirectional) => fail(self, status::INVALID_FIELD),
            (sgl_id::DATA_BLOCK_OFFSET, Direction::HostToController) => {
                let (off, len) = (sgl.address, u64::from(sgl.length));
                match off.checked_add(len).filter(|&end| end == data.len() as u64) {
                    // The SGL and the capsule must agree on the data: more promised
                    // than carried, or data the SGL does not describe, is refused.
                    None => fail(self, status::INVALID_FIELD),
                    Some(end) => {
                        let mut d = self.buffer(data.len());
                        d.extend_from_slice(&data[off as usize..end as usize]);
                        self.requests.push(Request {
                            sqe,
                            data: d,
                            c2h_len: 0,
                        });
                    }
                }
            }
            (sgl_id::DATA_BLOCK_OFFSET, _) if sgl.length == 0 && data.is_empty() => {
                self.requests.push(Request {
                    sqe,
                    data: Vec::new(),
                    c2h_len: 0,
                });
            }
            (sgl_id::DATA_BLOCK_OFFSET, _) => fail(self, status::SGL_DESCRIPTOR_TYPE_INVALID),
            (_, _) if !data.is_empty() => fail(self, status::INVALID_FIELD),
            (sgl_id::TRANSPORT_DATA_BLOCK, Direction::HostToController) if sgl.length > 0 => {
                if sgl.length > self.config.max_transfer {
                    fail(self, status::DATA_SGL_LENGTH_INVALID);
                } else {
                    self.start_transfer(sqe, sgl.length);
                }
            }
            (sgl_id::TRANSPORT_DATA_BLOCK, Direction::ControllerToHost) => self.requests.push(Request {
                sqe,
                data: Vec::new(),
                c2h_len: sgl.length.min(self.config.max_transfer),
            }),
            (sgl_id::TRANSPORT_DATA_BLOCK, _) => self.requests.push(Request {
                sqe,
                data: Vec::new(),
                c2h_len: 0,
            }),
            // An SGL of any other kind on a command without data is ignored (hosts leave it zeroed).
            (_, Direction::None) => self.requests.push(Request {
                sqe,
                data: Vec::new(),
                c2h_len: 0,
            }),
            _ => fail(self, status::SGL_DESCRIPTOR_TYPE_INVALID),
        }
        Ok(())
    }

    fn start_transfer(&mut self, sqe: Sqe, len: u32) {
        let ttag = match self.transfers.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.transfers.push(None);
                self.transfers.len() - 1
            }
        };
        let cid = sqe.cid();
        self.awaiting_data += 1;
        let buf = self.buffer(len as usize);
        self.transfers[ttag] = Some(Transfer {
            cid,
            sqe,
            buf,
            len,
            next: 0,
            digest_error: false,
        });
        // One R2T for the whole transfer: the host splits it at MAXH2CDATA.
        crate::pdu::encode_r2t(&mut self.send.out, cid, ttag as u16, 0, len, self.digests);
    }

    fn on_h2c_data(&mut self, h: DataHeader, data: &[u8], ddgst_ok: bool, last: bool) -> Result<(), FatalError> {
        let Some(tr) = self.transfers.get_mut(h.ttag as usize).and_then(Option::as_mut) else {
            return Err(FatalError::field(crate::pdu::data_offset::TTAG));
        };
        // The header check made DATAO the next expected offset, so this
        // appends at `datao`.
        debug_assert_eq!(h.datao as usize, tr.buf.len());
        tr.buf.extend_from_slice(data);
        self.h2c_received(h, ddgst_ok, last)
    }

    /// Bookkeeping once an H2CData PDU's data is in its transfer's buffer:
    /// the transfer advances, and when it is complete the command is ready
    /// (or, after a data digest error, completed with Transient Transport
    /// Error).
    fn h2c_received(&mut self, h: DataHeader, ddgst_ok: bool, last: bool) -> Result<(), FatalError> {
        let Some(tr) = self.transfers.get_mut(h.ttag as usize).and_then(Option::as_mut) else {
            return Err(FatalError::field(crate::pdu::data_offset::TTAG));
        };
        tr.next += h.datal;
        tr.digest_error |= !ddgst_ok;
        let done = tr.next == tr.len;
        if last != done {
            // LAST_PDU must be set on, and only on, the PDU that ends the transfer.
            return Err(FatalError::field(offset::FLAGS));
        }
        if done && let Some(tr) = self.transfers[h.ttag as usize].take() {
            self.awaiting_data -= 1;
            if tr.digest_error {
                self.complete(Cqe {
                    cid: tr.cid,
                    status: status::TRANSIENT_TRANSPORT_ERROR,
                    ..Cqe::default()
                });
                // The data is not used: the buffer serves the next transfer.
                self.spare.push(tr.buf);
            } else {
                self.requests.push(Request {
                    sqe: tr.sqe,
                    data: tr.buf,
                    c2h_len: 0,
                });
            }
        }
        Ok(())
    }

    // ---- send side ------------------------------------------------------

    fn send_cqe(&mut self, mut cqe: Cqe) {
        cqe.sqhd = if self.sq_flow_control_disabled { 0 } else { self.sqhd };
        cqe.sqid = self.qid;
        crate::pdu::encode_capsule_resp(&mut self.send.out, &cqe.encode(), self.digests);
        self.unsent.push_back(self.send.queued_end());
    }

    /// Completes a command: queues its CapsuleResp (SQHD and SQID are filled
    /// in). A CID that is not outstanding is ignored (returns false).
    fn complete(&mut self, cqe: Cqe) -> bool {
        if self.state == State::Terminated || !self.outstanding.remove(cqe.cid) {
            return false;
        }
        self.send_cqe(cqe);
        true
    }

    /// Completes a controller-to-host command with its data: C2HData PDUs of
    /// at most `c2h_chunk` bytes, then the CapsuleResp, or, when the host
    /// disabled SQ flow control and the completion is a plain success, the
    /// SUCCESS flag on the last C2HData instead (NVMe/TCP 1.0 section 3.6.2.8).
    fn complete_with_data(&mut self, cqe: Cqe, data: &[u8]) -> bool {
        let copied = self.complete_with_data_from(cqe, data.len(), |offset, dst| {
            dst.copy_from_slice(&data[offset..offset + dst.len()]);
            Ok::<(), std::convert::Infallible>(())
        });
        copied.unwrap_or_else(|never| match never {})
    }

    /// [`complete_with_data`](Self::complete_with_data) for `len` bytes that
    /// `fill(offset, dst)` writes straight into the PDUs being built (a RAM
    /// bdev's read copies once, into the send buffer, instead of into a
    /// scratch buffer and from there). `fill` is called once per C2HData PDU
    /// in order, with the byte offset of `dst` in the transfer; a chunk is a
    /// multiple of 4096 bytes, so with block sizes up to 4 KiB every offset is
    /// a block boundary. `fill` must write all of `dst`. If it fails, nothing
    /// of this command stays queued, the command stays outstanding, and its
    /// error is returned for the caller to complete the command with a status.
    ///
    /// # Errors
    /// `fill`'s error.
    fn complete_with_data_from<E>(
        &mut self,
        cqe: Cqe,
        len: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<(), E>,
    ) -> Result<bool, E> {
        if self.state == State::Terminated || !self.outstanding.contains(cqe.cid) {
            return Ok(false);
        }
        if len == 0 {
            return Ok(self.complete(cqe));
        }
        self.c2h_data(cqe, len, |send, offset, part, _last, ddgst| {
            let dst = send.grow(part);
            fill(offset, dst)?;
            let crc = ddgst.then(|| crate::pdu::crc32c(dst));
            if let Some(crc) = crc {
                send.out.extend_from_slice(&crc.to_le_bytes());
            }
            Ok(())
        })
    }

    /// [`complete_with_data`](Self::complete_with_data) for data the caller
    /// gives away: the C2HData PDUs' payloads are sent from `data` itself
    /// (no copy into the send buffer), and `data` comes back through
    /// [`take_spent_buffers`](Self::take_spent_buffers) once all of it is sent.
    fn complete_with_owned(&mut self, cqe: Cqe, data: Vec<u8>) -> bool {
        if self.state == State::Terminated || !self.outstanding.contains(cqe.cid) {
            self.spent.push(data);
            return false;
        }
        let len = data.len();
        self.send.hold(data);
        let done = self.c2h_data(cqe, len, |send, offset, part, last, ddgst| {
            send.attach(offset, offset + part, last);
            if ddgst {
                let crc = crate::pdu::crc32c(&send.last_held()[offset..offset + part]);
                send.out.extend_from_slice(&crc.to_le_bytes());
            }
            Ok::<(), std::convert::Infallible>(())
        });
        done.unwrap_or_else(|never| match never {})
    }

    /// Whether `source`'s bytes go out from the source's own memory
    /// ([`complete_with_lent`](Self::complete_with_lent)) rather than copied
    /// into the send buffer: the source lends its memory, lending is on
    /// ([`lend_sources`](Self::lend_sources)), there is no data digest to
    /// compute over bytes not yet fixed, and the transfer is at least
    /// [`LEND_MIN`].
    fn lends(&self, source: &SourceRange) -> bool {
        self.sends_lent_reads() && source.len() >= LEND_MIN && source.source().lends()
    }

    /// Whether a Read answered with a lending source of at least
    /// [`LEND_MIN`] bytes goes out from the source's memory: lending is on
    /// ([`lend_sources`](Self::lend_sources)) and no data digest was
    /// negotiated. When false its bytes are copied into the send buffer, so
    /// a large Read is better answered with a buffer of its own
    /// ([`ATTACH_MIN`]), which the send buffer does not keep growing for.
    pub fn sends_lent_reads(&self) -> bool {
        self.lend_sources && !self.digests.data
    }

    /// [`complete_with_data_from`](Self::complete_with_data_from) without
    /// the copy: the C2HData PDUs' payloads stay in `source` and are read
    /// when sent ([`send_with`](Self::send_with)). A range not inside its
    /// source fails the command with Internal Error, nothing of it queued.
    fn complete_with_lent(&mut self, cqe: Cqe, source: SourceRange) -> bool {
        if self.state == State::Terminated || !self.outstanding.contains(cqe.cid) {
            return false;
        }
        if !source.is_inside() {
            return self.complete(Cqe {
                status: status::INTERNAL_ERROR,
                ..cqe
            });
        }
        let done = self.c2h_data(cqe, source.len(), |send, offset, part, _last, ddgst| {
            // No digest is computed over lent bytes (`lends`): they may change until sent.
            match source.part(offset, part) {
                Some(range) if !ddgst => {
                    send.attach_lent(range);
                    Ok(())
                }
                _ => Err(()),
            }
        });
        done.unwrap_or_else(|()| {
            self.complete(Cqe {
                status: status::INTERNAL_ERROR,
                ..cqe
            })
        })
    }

    /// Queues the C2HData PDUs of a `len`-byte transfer (at most `c2h_chunk`
    /// bytes each; `len` > 0), then the completion: the CapsuleResp, or, when
    /// the host disabled SQ flow control and `cqe` is a plain success, the
    /// SUCCESS flag on the last C2HData instead (NVMe/TCP 1.0 section
    /// 3.6.2.8). Each PDU's header is encoded here; `payload(send, offset,
    /// part, last, ddgst)` queues its `part` bytes from `offset` and, when
    /// `ddgst`, their data digest. If `payload` fails, nothing of this
    /// command stays queued and its error is returned.
    fn c2h_data<E>(
        &mut self,
        cqe: Cqe,
        len: usize,
        mut payload: impl FnMut(&mut SendBuf, usize, usize, bool, bool) -> Result<(), E>,
    ) -> Result<bool, E> {
        let chunk = (self.config.c2h_chunk.max(4096) & !4095) as usize;
        let success_flag = (self.config.c2h_success || self.sq_flow_control_disabled)
            && cqe.status.is_success()
            && cqe.dw0 == 0
            && cqe.dw1 == 0;
        let start = self.send.out.len();
        let n = len.div_ceil(chunk);
        for i in 0..n {
            let offset = i * chunk;
            let part = chunk.min(len - offset);
            let last = i + 1 == n;
            let mut f = if last { flags::LAST_PDU } else { 0 };
            if last && success_flag {
                f |= flags::SUCCESS;
            }
            let h = DataHeader {
                cccid: cqe.cid,
                ttag: 0,
                datao: offset as u32,
                datal: part as u32,
            };
            let ddgst = crate::pdu::encode_data_pdu_header(
                &mut self.send.out,
                PduType::C2HData,
                h,
                part,
                f,
                self.digests,
                self.hpda,
            );
            if let Err(e) = payload(&mut self.send, offset, part, last, ddgst) {
                self.send.truncate(start);
                return Err(e);
            }
        }
        if success_flag {
            self.outstanding.remove(cqe.cid);
            self.unsent.push_back(self.send.queued_end());
            Ok(true)
        } else {
            Ok(self.complete(cqe))
        }
    }

    /// Bytes waiting to be sent, in one piece: borrowed when nothing is
    /// attached (every payload below [`ATTACH_MIN`] copied in), else
    /// gathered into a copy, lent payloads read from their sources now. For
    /// tests and tools; the glue sends with [`send_with`](Self::send_with),
    /// which copies nothing.
    pub fn pending_send(&self) -> std::borrow::Cow<'_, [u8]> {
        if !self.send.has_attached() {
            return std::borrow::Cow::Borrowed(self.send.pending());
        }
        // Lent payloads as they are now; a source that lost its range gives nothing.
        let lent: Vec<Vec<u8>> = self.send.lent().map(|r| r.to_vec().unwrap_or_default()).collect();
        let lent: Vec<&[u8]> = lent.iter().map(Vec::as_slice).collect();
        // Each attached range may be preceded by a run of `out`, and a run may follow the last.
        let mut slices = vec![&[][..]; 2 * self.send.attached_count() + 1];
        let n = self.send.pending_slices(&mut slices, &lent);
        std::borrow::Cow::Owned(slices[..n].concat())
    }

    /// Sends some of what waits: one call of `send` with up to
    /// [`SEND_SLICES`] slices in order (runs of encoded PDU bytes, attached
    /// payloads, and Read data lent by its source for the duration of the
    /// call: [`ReadSource::lend`](crate::read_source::ReadSource::lend)),
    /// which returns how many bytes went out (a vectored write). A lent
    /// payload the write took only part of has its rest copied out before
    /// the source stops lending. Returns `send`'s count, or its error.
    ///
    /// # Errors
    /// `send`'s error (nothing marked sent); `InvalidData` when a source no
    /// longer holds a range queued from it or lends other lengths than asked
    /// (nothing sent).
    pub fn send_with(&mut self, mut send: impl FnMut(&[&[u8]]) -> std::io::Result<usize>) -> std::io::Result<usize> {
        let mut ranges = std::mem::take(&mut self.lend_scratch);
        let result = match self.send.lent_ranges(SEND_SLICES, &mut ranges) {
            None => {
                let mut slices: [&[u8]; SEND_SLICES] = [&[]; SEND_SLICES];
                let n = self.send.pending_slices(&mut slices, &[]);
                let result = send(&slices[..n]);
                if let Ok(k) = result {
                    self.send.sent(k);
                }
                result
            }
            Some(source) => {
                let mut result = Ok(0);
                let buf = &mut self.send;
                let lent = source.lend(&ranges, &mut |lent| {
                    // A source that lent other lengths than asked would shift
                    // every byte after them: end the connection instead.
                    if lent.len() != ranges.len() || lent.iter().zip(&ranges).any(|(b, &(_, len))| b.len() != len) {
                        result = Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "a read source lent other lengths than the ranges asked for",
                        ));
                        return;
                    }
                    let mut slices: [&[u8]; SEND_SLICES] = [&[]; SEND_SLICES];
                    let n = buf.pending_slices(&mut slices, lent);
                    result = send(&slices[..n]);
                    if let Ok(k) = result {
                        let done = buf.sent(k);
                        buf.keep_unsent_lent(lent, done);
                    }
                });
                lent.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                    .and(result)
            }
        };
        self.lend_scratch = ranges;
        self.release_sent_slots();
        result
    }

    /// Marks `n` bytes of [`pending_send`](Self::pending_send) as sent (a
    /// caller that sent them itself; tests and tools).
    pub fn sent(&mut self, n: usize) {
        self.send.sent(n);
        self.release_sent_slots();
    }

    /// Frees the SQ slots of the completions now handed to the socket.
    fn release_sent_slots(&mut self) {
        let at = self.send.sent_total();
        while self.unsent.front().is_some_and(|&end| end <= at) {
            self.unsent.pop_front();
        }
    }

    /// Whether Read data a source lends is sent from the source's memory
    /// (on when the queue is made): off for a connection whose send may be
    /// retried later with the same bytes (TLS: a record sealed but not yet
    /// sent), which must then come from a buffer of their own.
    pub fn lend_sources(&mut self, on: bool) {
        self.lend_sources = on;
    }

    /// Whether bytes are waiting to be sent.
    pub fn wants_send(&self) -> bool {
        !self.send.is_empty()
    }

    /// Whether `sqe` is a Fabrics Connect command (opcode 7Fh, FCTYPE 01h).
    pub fn is_fabrics_connect(sqe: &Sqe) -> bool {
        sqe.opc() == admin_opc::FABRICS && sqe.fctype() == fctype::CONNECT
    }
}

/// The largest PDO a host may use with CPDA 0: header, HDGST, then data at
/// the next dword (hosts do not pad further when CPDA is 0).
fn data_offset_for_max(header_end: usize) -> usize {
    data_offset_for(header_end, 0, 0)
}

#[cfg(test)]
mod tests;
