//! I/O command execution against a namespace's bdev (NVM Command Set 1.0
//! section 3): Read, Write, Flush, Write Zeroes, Dataset Management, Compare.
//!
//! One path for every bdev. [`IoQueue::execute`] checks a command once
//! (controller ready, namespace, range, transfer size, SGL length, DSM
//! ranges), takes a slot of the queue's table (sized at Connect, as SPDK's
//! request pools and the kernel target's per-queue commands are) and hands
//! the operation to [`Bdev::submit`], tagged with the slot. The queue is the
//! bdevs' completion sink: [`IoQueue`]'s `IoCompletion::complete` answers the
//! command, counts it and gives the buffers back to the connection's pool,
//! whether the bdev completed inside `submit` (RAM, null) or later (file,
//! NVMe).
//!
//! Counted at completion, on success only, the same for every bdev: the
//! bdev's statistics (reads, writes and each deallocated range, with their
//! latency from submission, `bdev_get_iostat`), the subsystem's SMART
//! counters and the reactor's [`CoreIo`] reads and writes. A failed bdev
//! operation counts one "failed" I/O error of its bdev; a Compare that finds
//! other data, one "miscompare". [`CoreIo::io_commands`] counts every I/O
//! command answered.
//!
//! A Read of a bdev that offers its memory ([`Bdev::read_source`]: RAM,
//! null) skips all of that: it is answered at once with a [`SourceRange`]
//! that the transport sends from the RAM bdev's memory under its stripe
//! locks (the kernel's copy into the socket the only one) or copies straight
//! into the C2HData PDU it builds (a null bdev's zeroes, a data digest, TLS,
//! a transfer below `LEND_MIN`): `lull_proto::read_source`. Where the
//! connection would copy (`Responder::sends_lent_reads` false), a Read of
//! [`ATTACH_MIN`] or more takes a pooled buffer instead, as any bdev's: the
//! same one copy, without growing the send buffer by the whole transfer.
//!
//! Nothing here allocates per command in steady state: read data goes into
//! a buffer of the connection's pool and is sent from it, write data comes
//! in one and goes back to it, and the slot table is reused.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use lull_proto::nvme::cmd::{DatasetManagement, DsmRange, NSID_ALL, Rw};
use lull_proto::nvme::{Cqe, Status, io_opc, status};
use lull_proto::read_source::SourceRange;
use lull_proto::target_queue::{ATTACH_MIN, Request, Response};
use lull_reactor::Context;
use lull_transport::conn::Responder;

use crate::bdev::slab::Slab;
use crate::bdev::stats::{IoErrorKind, IoKind};
use crate::bdev::{Bdev, BdevDone, BdevError, BdevIo, IoCompletion};
use crate::nvmf::admin::identify::MAX_TRANSFER;
use crate::nvmf::stats::CoreIo;
use crate::nvmf::subsystem::{Namespace, Subsystem};
use crate::nvmf::target::Target;

/// A tag is a slot index (low 16 bits) and the part of the command (high 16
/// bits: which namespace of a Flush to all, which range of a deallocate).
const TAG_SLOT_BITS: u32 = 16;
/// Most slots a queue can have (a queue holds at most 1024 commands).
const MAX_SLOTS: u32 = 1 << TAG_SLOT_BITS;

fn bdev_status(e: &BdevError) -> Status {
    match e {
        BdevError::OutOfRange { .. } => status::LBA_OUT_OF_RANGE.with_dnr(),
        BdevError::Misaligned { .. } => status::DATA_SGL_LENGTH_INVALID.with_dnr(),
        BdevError::Io(_) => status::INTERNAL_ERROR,
    }
}

/// SLBA and block count (NLB is 0's based) of a Read/Write/Compare/Write Zeroes.
fn range(cmd: &Request) -> (u64, u64) {
    let rw = Rw::parse(&cmd.sqe);
    (rw.slba, u64::from(rw.blocks()))
}

/// Checks the range and the transfer size; returns the range's first byte
/// and its length in bytes.
fn transfer(bdev: &dyn Bdev, slba: u64, nlb: u64) -> Result<(u64, usize), Status> {
    let (at, bytes) = bdev.info().byte_range(slba, nlb).map_err(|e| bdev_status(&e))?;
    if bytes > MAX_TRANSFER as usize {
        return Err(status::INVALID_FIELD.with_dnr());
    }
    Ok((at, bytes))
}

/// Range `i` of a Dataset Management command's data (16 bytes each:
/// context attributes, length in blocks, starting LBA): (LBA, blocks).
/// The caller has checked that `data` holds range `i`.
fn dsm_range(data: &[u8], i: usize) -> (u64, u64) {
    let mut b = [0; DsmRange::LEN];
    b.copy_from_slice(&data[i * DsmRange::LEN..][..DsmRange::LEN]);
    let r = DsmRange::parse(&b);
    (r.slba, u64::from(r.nlb))
}

/// Checks a Dataset Management command's ranges; returns whether it asks to
/// deallocate (CDW11 bit 2) and how many ranges it has (CDW10 NR, 0's based).
fn dsm_ranges(cmd: &Request, bdev: &dyn Bdev) -> Result<(bool, usize), Status> {
    let dsm = DatasetManagement::parse(&cmd.sqe);
    let (nr, deallocate) = (dsm.ranges(), dsm.ad);
    if cmd.data.len() < nr * 16 {
        return Err(status::DATA_SGL_LENGTH_INVALID.with_dnr());
    }
    for i in 0..nr {
        let (lba, blocks) = dsm_range(&cmd.data, i);
        bdev.info().byte_range(lba, blocks).map_err(|e| bdev_status(&e))?;
    }
    Ok((deallocate, nr))
}

thread_local! {
    /// I/O commands of this reactor handed to a bdev and not yet answered.
    static INFLIGHT: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// (commands, total ns) of commands whose bdev completed them after
    /// `submit` returned (file, NVMe), on this reactor.
    static ASYNC_LATENCY: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// I/O commands handed to a bdev and not yet answered, on the calling
/// reactor's thread (a graceful shutdown waits for every reactor's to reach 0).
pub fn inflight() -> usize {
    INFLIGHT.with(Cell::get)
}

/// (commands, total ns) of bdev commands that completed after their
/// submission returned (the asynchronous bdevs: file, NVMe) on the calling
/// reactor's thread, submission to completion.
pub fn async_latency() -> (u64, u64) {
    ASYNC_LATENCY.with(Cell::get)
}

/// What a command does, as its completion needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Compare,
    Flush,
    /// Flush with NSID FFFFFFFFh: one flush per namespace.
    FlushAll,
    WriteZeroes,
    /// Dataset Management with deallocate: one unmap per range.
    Deallocate,
}

/// A command handed to a bdev.
struct Slot {
    cid: u16,
    kind: Kind,
    nsid: u32,
    start: Instant,
    /// Bdev operations not completed yet.
    left: u32,
    /// The first failure's status (SUCCESS while none failed).
    status: Status,
    /// Read data to send (a successful Read).
    out: Vec<u8>,
    /// The host's data the completion still needs (Compare: what to compare
    /// with; Dataset Management: the ranges); back to the pool at the end.
    data: Vec<u8>,
}

struct Inner {
    resp: Responder,
    subsystem: Arc<Subsystem>,
    target: Arc<Target>,
    /// The reactor the connection lives on (its [`CoreIo`] slot).
    reactor: usize,
    slots: RefCell<Slab<Slot>>,
    /// Set while a command's operations are being submitted: a completion
    /// that arrives meanwhile came from inside `submit`.
    submitting: Cell<bool>,
}

/// The NVM I/O side of one I/O queue: its command slots and where answers
/// go. Made at Connect, on the queue's reactor, with a slot per submission
/// queue entry. Cheap to clone (an `Rc`).
#[derive(Clone)]
pub struct IoQueue {
    inner: Rc<Inner>,
}

/// What a checked command will do.
enum Plan<'a> {
    /// Answered without a bdev (a Dataset Management without deallocate, a
    /// Flush to all of no namespaces).
    Done(Status),
    /// Flush every namespace.
    FlushAll,
    /// One operation on `ns`'s bdev.
    One { ns: &'a Namespace, kind: Kind, io: Op },
    /// Deallocate `ranges` ranges of `ns`'s bdev.
    Deallocate { ns: &'a Namespace, ranges: usize },
}

/// A bdev operation before its buffer is attached.
enum Op {
    /// `at`: the first byte (`lba x block_size`).
    Read {
        lba: u64,
        blocks: u64,
        at: u64,
        len: usize,
    },
    Write {
        lba: u64,
    },
    Flush,
    WriteZeroes {
        lba: u64,
        blocks: u64,
    },
}

impl IoQueue {
    /// The I/O side of a queue with `sq_entries` submission queue entries
    /// (the slots it starts with; more are added only if a host exceeds
    /// them), answering through `resp`, for a controller of `subsystem`,
    /// counting into `target`'s [`CoreIo`] of reactor `reactor`.
    pub fn new(
        sq_entries: usize,
        resp: Responder,
        subsystem: Arc<Subsystem>,
        target: Arc<Target>,
        reactor: usize,
    ) -> Self {
        IoQueue {
            inner: Rc::new(Inner {
                resp,
                subsystem,
                target,
                reactor,
                slots: RefCell::new(Slab::with_capacity(sq_entries)),
                submitting: Cell::new(false),
            }),
        }
    }

    /// Executes one I/O command; `ready`: the controller is enabled (CC.EN
    /// and CSTS.RDY), else the command fails with Command Sequence Error.
    /// The answer goes through the queue's [`Responder`], before this returns
    /// or when the bdev completes.
    pub fn execute(&self, cx: &mut Context, mut cmd: Request, ready: bool) {
        let cid = cmd.sqe.cid();
        if !ready {
            return self.inner.early(cx, cid, status::COMMAND_SEQUENCE_ERROR, cmd.data);
        }
        let nss = self.inner.subsystem.namespaces();
        let plan = match plan(&cmd, &nss) {
            Ok(p) => p,
            Err(s) => return self.inner.early(cx, cid, s, cmd.data),
        };
        if let Plan::One {
            ns,
            kind: Kind::Read,
            io: Op::Read { at, len, .. },
        } = &plan
            && (*len < ATTACH_MIN || self.inner.resp.sends_lent_reads())
            && let Some(source) = ns.read_source()
        {
            let range = SourceRange::new(source.clone(), *at, *len);
            return self.inner.read_from_source(cx, cid, ns, range, cmd.data);
        }
        let (kind, nsid, left) = match &plan {
            Plan::Done(s) => return self.inner.early(cx, cid, *s, cmd.data),
            Plan::FlushAll => (Kind::FlushAll, NSID_ALL, nss.len()),
            Plan::One { ns, kind, .. } => (*kind, ns.nsid, 1),
            Plan::Deallocate { ns, ranges } => (Kind::Deallocate, ns.nsid, *ranges),
        };
        // What the completion needs of the host's data stays with the slot;
        // a Write's goes to the bdev.
        let write_data = if kind == Kind::Write {
            std::mem::take(&mut cmd.data)
        } else {
            Vec::new()
        };
        let slot = Slot {
            cid,
            kind,
            nsid,
            start: Instant::now(),
            left: left as u32,
            status: Status::SUCCESS,
            out: Vec::new(),
            data: cmd.data,
        };
        let index = self.inner.slots.borrow_mut().insert(slot);
        if index >= MAX_SLOTS {
            // Beyond any queue size: never reached by a host within its SQ.
            let slot = self.inner.slots.borrow_mut().remove(index);
            self.inner.resp.recycle(write_data);
            let data = slot.map(|s| s.data).unwrap_or_default();
            return self.inner.early(cx, cid, status::INTERNAL_ERROR, data);
        }
        INFLIGHT.with(|n| n.set(n.get() + 1));
        self.inner.submitting.set(true);
        match plan {
            Plan::Done(_) => {}
            Plan::FlushAll => {
                for (part, ns) in nss.iter().enumerate() {
                    ns.bdev.submit(cx, BdevIo::Flush, self.done(index, part));
                }
            }
            Plan::One { ns, io, .. } => {
                let io = match io {
                    Op::Read { lba, blocks, len, .. } => BdevIo::Read {
                        lba,
                        blocks,
                        buf: self.inner.resp.buffer(len),
                    },
                    Op::Write { lba } => BdevIo::Write { lba, data: write_data },
                    Op::Flush => BdevIo::Flush,
                    Op::WriteZeroes { lba, blocks } => BdevIo::WriteZeroes { lba, blocks },
                };
                ns.bdev.submit(cx, io, self.done(index, 0));
            }
            Plan::Deallocate { ns, ranges } => {
                for part in 0..ranges {
                    // Read before submitting: a bdev that completes inside
                    // submit takes the table back.
                    let range = self.inner.slots.borrow().get(index).map(|s| dsm_range(&s.data, part));
                    if let Some((lba, blocks)) = range {
                        ns.bdev
                            .submit(cx, BdevIo::Unmap { lba, blocks }, self.done(index, part));
                    }
                }
            }
        }
        self.inner.submitting.set(false);
    }

    fn done(&self, index: u32, part: usize) -> BdevDone {
        let sink: Rc<dyn IoCompletion> = self.inner.clone();
        BdevDone::new(sink, index | (part as u32) << TAG_SLOT_BITS)
    }
}

/// Checks `cmd` against the namespaces; the status to fail it with otherwise.
fn plan<'a>(cmd: &Request, nss: &'a [Namespace]) -> Result<Plan<'a>, Status> {
    let opc = cmd.sqe.opc();
    let nsid = cmd.sqe.nsid();
    if opc == io_opc::FLUSH && nsid == NSID_ALL {
        return Ok(if nss.is_empty() {
            Plan::Done(Status::SUCCESS)
        } else {
            Plan::FlushAll
        });
    }
    let ns = nss
        .iter()
        .find(|n| n.nsid == nsid)
        .ok_or(status::INVALID_NAMESPACE.with_dnr())?;
    let bdev = ns.bdev.as_ref();
    let one = |kind, io| Ok(Plan::One { ns, kind, io });
    match opc {
        io_opc::READ => {
            let (lba, blocks) = range(cmd);
            let (at, len) = transfer(bdev, lba, blocks)?;
            if (cmd.c2h_len as usize) < len {
                return Err(status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            one(Kind::Read, Op::Read { lba, blocks, at, len })
        }
        io_opc::WRITE | io_opc::COMPARE => {
            let (lba, blocks) = range(cmd);
            let (at, len) = transfer(bdev, lba, blocks)?;
            if cmd.data.len() != len {
                return Err(status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            if opc == io_opc::WRITE {
                one(Kind::Write, Op::Write { lba })
            } else {
                one(Kind::Compare, Op::Read { lba, blocks, at, len })
            }
        }
        io_opc::FLUSH => one(Kind::Flush, Op::Flush),
        io_opc::WRITE_ZEROES => {
            // No transfer, so no MDTS limit: only the range.
            let (lba, blocks) = range(cmd);
            bdev.info().byte_range(lba, blocks).map_err(|e| bdev_status(&e))?;
            one(Kind::WriteZeroes, Op::WriteZeroes { lba, blocks })
        }
        io_opc::DATASET_MANAGEMENT => match dsm_ranges(cmd, bdev)? {
            (false, _) => Ok(Plan::Done(Status::SUCCESS)),
            (true, ranges) => Ok(Plan::Deallocate { ns, ranges }),
        },
        _ => Err(status::INVALID_OPCODE.with_dnr()),
    }
}

impl Inner {
    fn core_io(&self) -> &CoreIo {
        self.target.core_io(self.reactor)
    }

    /// Answers a Read whose data the transport copies from `range` while it
    /// builds the C2HData PDUs, or sends from where it is (a memory bdev's:
    /// `lull_proto::read_source`), so no buffer, slot or bdev call is needed. Counted as a read now, as a
    /// submitted one is at its completion; its bdev latency is 0 ns, as the
    /// copy is the transport's.
    fn read_from_source(&self, cx: &mut Context, cid: u16, ns: &Namespace, range: SourceRange, data: Vec<u8>) {
        self.resp.recycle(data);
        let bytes = range.len();
        ns.stats.record(self.reactor, IoKind::Read, bytes as u64, 0);
        self.subsystem.counters.read(bytes as u64);
        let core = self.core_io();
        core.read(bytes);
        core.command();
        self.resp
            .respond(cx, Response::with_source(Cqe { cid, ..Cqe::default() }, range));
    }

    /// Answers a command that reached no bdev; its data goes back to the pool.
    fn early(&self, cx: &mut Context, cid: u16, status: Status, data: Vec<u8>) {
        self.resp.recycle(data);
        self.core_io().command();
        self.resp.respond(cx, Response::status(cid, status));
    }
}

impl IoCompletion for Inner {
    fn complete(&self, cx: &mut Context, tag: u32, result: Result<(), BdevError>, buf: Vec<u8>) {
        let (index, part) = (tag & (MAX_SLOTS - 1), (tag >> TAG_SLOT_BITS) as usize);
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(index) else {
            // Every operation is completed once, so its slot is there.
            self.resp.recycle(buf);
            return;
        };
        let nss = self.subsystem.namespaces();
        // The namespace is looked up again: it may have been removed meanwhile
        // (then its statistics are gone too).
        let ns = match slot.kind {
            Kind::FlushAll => nss.get(part),
            _ => nss.iter().find(|n| n.nsid == slot.nsid),
        };
        let stats = ns.map(|n| &n.stats);
        let elapsed = slot.start.elapsed().as_nanos() as u64;
        match result {
            Err(e) => {
                if let Some(s) = stats {
                    s.record_error(IoErrorKind::Failed);
                }
                if slot.status.is_success() {
                    slot.status = bdev_status(&e);
                }
                self.resp.recycle(buf);
            }
            Ok(()) => match slot.kind {
                Kind::Read => {
                    let bytes = buf.len() as u64;
                    if let Some(s) = stats {
                        s.record(self.reactor, IoKind::Read, bytes, elapsed);
                    }
                    self.subsystem.counters.read(bytes);
                    self.core_io().read(buf.len());
                    slot.out = buf;
                }
                Kind::Write => {
                    let bytes = buf.len() as u64;
                    if let Some(s) = stats {
                        s.record(self.reactor, IoKind::Write, bytes, elapsed);
                    }
                    self.subsystem.counters.wrote(bytes);
                    self.core_io().wrote(buf.len());
                    // The host's data is written: its buffer serves the next command.
                    self.resp.recycle(buf);
                }
                Kind::Compare => {
                    if buf != slot.data {
                        if let Some(s) = stats {
                            s.record_error(IoErrorKind::Miscompare);
                        }
                        slot.status = status::COMPARE_FAILURE.with_dnr();
                    }
                    self.resp.recycle(buf);
                }
                Kind::Deallocate => {
                    if let Some(n) = ns {
                        let (_, blocks) = dsm_range(&slot.data, part);
                        let bytes = blocks * u64::from(n.bdev.info().block_size);
                        n.stats.record(self.reactor, IoKind::Unmap, bytes, elapsed);
                    }
                }
                Kind::Flush | Kind::FlushAll | Kind::WriteZeroes => {}
            },
        }
        slot.left -= 1;
        if slot.left > 0 {
            return;
        }
        let Some(slot) = slots.remove(index) else { return };
        drop(slots);
        drop(nss);
        self.resp.recycle(slot.data);
        INFLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
        if !self.submitting.get() {
            ASYNC_LATENCY.with(|l| {
                let (n, t) = l.get();
                l.set((n + 1, t.saturating_add(elapsed)));
            });
        }
        self.core_io().command();
        let response = if slot.status.is_success() && slot.kind == Kind::Read {
            Response::with_data(
                Cqe {
                    cid: slot.cid,
                    ..Cqe::default()
                },
                slot.out,
            )
        } else {
            self.resp.recycle(slot.out);
            Response::status(slot.cid, slot.status)
        };
        self.resp.respond(cx, response);
    }
}
