//! I/O command execution against a namespace's bdev (NVM Command Set 1.0
//! section 3): Read, Write, Flush, Write Zeroes, Dataset Management, Compare.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use lull_reactor::Context;
use lull_transport::conn::Responder;
use lull_transport::nvme::{Cqe, Status, io_opc, status};
use lull_transport::target::{Request, Response};

use crate::bdev::stats::{BdevStats, IoErrorKind, IoKind};
use crate::bdev::{Bdev, BdevDone, BdevError, BdevIo};
use crate::identify::MAX_TRANSFER;
use crate::subsystem::{Namespace, Subsystem};
use crate::target::CoreIo;

/// The status of a failed bdev I/O, counted in the bdev's `io_error` as
/// "failed".
fn failed(stats: &BdevStats, e: &BdevError) -> Status {
    stats.record_error(IoErrorKind::Failed);
    bdev_status(e)
}

fn bdev_status(e: &BdevError) -> Status {
    match e {
        BdevError::OutOfRange { .. } => status::LBA_OUT_OF_RANGE.with_dnr(),
        BdevError::Misaligned { .. } => status::DATA_SGL_LENGTH_INVALID.with_dnr(),
        BdevError::Io(_) => status::INTERNAL_ERROR,
    }
}

/// SLBA and block count (NLB is 0's based) of a Read/Write/Compare/Write Zeroes.
fn range(cmd: &Request) -> (u64, u64) {
    let slba = u64::from(cmd.sqe.cdw(10)) | u64::from(cmd.sqe.cdw(11)) << 32;
    let nlb = u64::from(cmd.sqe.cdw(12) & 0xFFFF) + 1;
    (slba, nlb)
}

/// Checks the range and the transfer size; returns the byte length.
fn transfer(bdev: &dyn Bdev, slba: u64, nlb: u64) -> Result<usize, Status> {
    crate::bdev::check_range(slba, nlb, bdev.info().num_blocks).map_err(|e| bdev_status(&e))?;
    let bytes = nlb * u64::from(bdev.info().block_size);
    if bytes > u64::from(MAX_TRANSFER) {
        return Err(status::INVALID_FIELD.with_dnr());
    }
    Ok(bytes as usize)
}

/// Executes one I/O command: answers it through `resp` before returning for
/// a synchronous bdev, or when an asynchronous bdev finishes.
pub fn execute(cx: &mut Context, cmd: Request, subsystem: &Arc<Subsystem>, ready: bool, io: &CoreIo, resp: &Responder) {
    io.command();
    if !ready {
        resp.respond(cx, Response::status(cmd.sqe.cid(), status::COMMAND_SEQUENCE_ERROR));
        return;
    }
    let nss = subsystem.namespaces();
    execute_async(cx, cmd, subsystem, &nss, io, resp);
}

/// Parses and checks the DSM ranges (each 16 bytes: attributes, length in
/// blocks, starting LBA); deallocation is requested by CDW11 bit 2.
fn dsm_ranges(cmd: &Request, bdev: &dyn Bdev) -> Result<(bool, Vec<(u64, u64)>), Status> {
    let nr = (cmd.sqe.cdw(10) & 0xFF) as usize + 1;
    let deallocate = cmd.sqe.cdw(11) & (1 << 2) != 0;
    if cmd.data.len() < nr * 16 {
        return Err(status::DATA_SGL_LENGTH_INVALID.with_dnr());
    }
    let ranges: Vec<(u64, u64)> = cmd.data[..nr * 16]
        .chunks(16)
        .map(|r| {
            let len = u64::from(u32::from_le_bytes([r[4], r[5], r[6], r[7]]));
            let lba = u64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
            (lba, len)
        })
        .collect();
    if let Some(e) = ranges
        .iter()
        .find_map(|&(l, n)| crate::bdev::check_range(l, n, bdev.info().num_blocks).err())
    {
        return Err(bdev_status(&e));
    }
    Ok((deallocate, ranges))
}

thread_local! {
    /// I/O commands of this reactor handed to an asynchronous bdev and not yet answered.
    static INFLIGHT: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// (commands, total ns) of asynchronous commands completed on this reactor.
    static ASYNC_LATENCY: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Asynchronous I/O commands outstanding on the calling reactor's thread
/// (a graceful shutdown waits for every reactor's to reach 0).
pub fn inflight() -> usize {
    INFLIGHT.with(Cell::get)
}

/// (commands, total ns) of asynchronous bdev commands (file, NVMe) that
/// completed on the calling reactor's thread, submission to completion, timed
/// with the reactor's loop clock (so at loop-iteration granularity).
pub fn async_latency() -> (u64, u64) {
    ASYNC_LATENCY.with(Cell::get)
}

/// A [`Responder`] that counts the command out of [`INFLIGHT`] and into
/// [`ASYNC_LATENCY`] when it answers.
#[derive(Clone)]
struct Tracked(Responder, std::time::Instant);

impl Tracked {
    fn new(cx: &Context, later: &Responder) -> Self {
        INFLIGHT.with(|n| n.set(n.get() + 1));
        Tracked(later.clone(), cx.now())
    }

    fn done(&self, cx: &Context) {
        INFLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
        let ns = cx.now().saturating_duration_since(self.1).as_nanos() as u64;
        ASYNC_LATENCY.with(|l| {
            let (n, t) = l.get();
            l.set((n + 1, t.saturating_add(ns)));
        });
    }

    fn complete(&self, cx: &mut Context, cqe: Cqe) {
        self.done(cx);
        self.0.respond(cx, cqe.into());
    }

    fn complete_with_data(&self, cx: &mut Context, cqe: Cqe, data: Vec<u8>) {
        self.done(cx);
        self.0.respond(cx, Response::with_data(cqe, data));
    }
}

/// `done`, counting a failure in `stats` ("failed") first.
fn counting(stats: Arc<BdevStats>, done: impl Fn(&mut Context, Result<(), BdevError>) + 'static) -> BdevDone {
    BdevDone::from_fn(move |cx: &mut Context, r: Result<(), BdevError>, _buf: Vec<u8>| {
        if r.is_err() {
            stats.record_error(IoErrorKind::Failed);
        }
        done(cx, r);
    })
}

/// Completes `cid` once `parts` operations have ended, with the first error.
fn join(later: &Tracked, cid: u16, parts: usize) -> impl Fn(&mut Context, Result<(), BdevError>) + Clone + use<> {
    let left = Rc::new(Cell::new(parts));
    let first_error: Rc<Cell<Option<Status>>> = Rc::new(Cell::new(None));
    let later = later.clone();
    move |cx: &mut Context, r: Result<(), BdevError>| {
        if let Err(e) = r
            && first_error.get().is_none()
        {
            first_error.set(Some(bdev_status(&e)));
        }
        left.set(left.get() - 1);
        if left.get() == 0 {
            later.complete(
                cx,
                Cqe {
                    cid,
                    status: first_error.get().unwrap_or(Status::SUCCESS),
                    ..Cqe::default()
                },
            );
        }
    }
}

/// The asynchronous path: every operation goes through `Bdev::submit` and
/// completes through `later`.
fn execute_async(
    cx: &mut Context,
    cmd: Request,
    subsystem: &Arc<Subsystem>,
    nss: &[Namespace],
    io: &CoreIo,
    later: &Responder,
) {
    let later = &Tracked::new(cx, later);
    let reactor = cx.index();
    let cid = cmd.sqe.cid();
    let opc = cmd.sqe.opc();
    let nsid = cmd.sqe.nsid();
    let fail = |cx: &mut Context, s: Status| {
        later.complete(
            cx,
            Cqe {
                cid,
                status: s,
                ..Cqe::default()
            },
        )
    };
    if opc == io_opc::FLUSH && nsid == 0xFFFF_FFFF {
        let done = join(later, cid, nss.len());
        for ns in nss.iter() {
            ns.bdev
                .submit(cx, BdevIo::Flush, counting(ns.stats.clone(), done.clone()));
        }
        return;
    }
    let Some(ns) = nss.iter().find(|n| n.nsid == nsid) else {
        return fail(cx, status::INVALID_NAMESPACE.with_dnr());
    };
    let bdev = ns.bdev.clone();
    let stats = ns.stats.clone();
    match opc {
        io_opc::READ | io_opc::COMPARE => {
            let (slba, nlb) = range(&cmd);
            let len = match transfer(bdev.as_ref(), slba, nlb) {
                Ok(l) => l,
                Err(s) => return fail(cx, s),
            };
            if opc == io_opc::READ && (cmd.c2h_len as usize) < len {
                return fail(cx, status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            if opc == io_opc::COMPARE && cmd.data.len() != len {
                return fail(cx, status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            if opc == io_opc::READ {
                io.read(len);
            }
            let (later, subsystem, expected) = (later.clone(), subsystem.clone(), cmd.data);
            bdev.submit(
                cx,
                BdevIo::Read {
                    lba: slba,
                    blocks: nlb,
                    buf: later.0.buffer(len),
                },
                BdevDone::from_fn(move |cx: &mut Context, r: Result<(), BdevError>, data: Vec<u8>| {
                    let cqe = Cqe { cid, ..Cqe::default() };
                    match r {
                        Ok(()) if opc == io_opc::READ => {
                            let ns = cx.now().saturating_duration_since(later.1).as_nanos() as u64;
                            stats.record(reactor, IoKind::Read, data.len() as u64, ns);
                            subsystem.counters.read(data.len() as u64);
                            later.complete_with_data(cx, cqe, data);
                        }
                        Ok(()) if data == expected => later.complete(cx, cqe),
                        Ok(()) => {
                            stats.record_error(IoErrorKind::Miscompare);
                            later.complete(
                                cx,
                                Cqe {
                                    status: status::COMPARE_FAILURE.with_dnr(),
                                    ..cqe
                                },
                            )
                        }
                        Err(e) => later.complete(
                            cx,
                            Cqe {
                                status: failed(&stats, &e),
                                ..cqe
                            },
                        ),
                    }
                }),
            );
        }
        io_opc::WRITE => {
            let (slba, nlb) = range(&cmd);
            let len = match transfer(bdev.as_ref(), slba, nlb) {
                Ok(l) => l,
                Err(s) => return fail(cx, s),
            };
            if cmd.data.len() != len {
                return fail(cx, status::DATA_SGL_LENGTH_INVALID.with_dnr());
            }
            io.wrote(len);
            let (later, subsystem) = (later.clone(), subsystem.clone());
            bdev.submit(
                cx,
                BdevIo::Write {
                    lba: slba,
                    data: cmd.data,
                },
                BdevDone::from_fn(move |cx: &mut Context, r: Result<(), BdevError>, _data: Vec<u8>| {
                    let status = match r {
                        Ok(()) => {
                            let ns = cx.now().saturating_duration_since(later.1).as_nanos() as u64;
                            stats.record(reactor, IoKind::Write, len as u64, ns);
                            subsystem.counters.wrote(len as u64);
                            Status::SUCCESS
                        }
                        Err(e) => failed(&stats, &e),
                    };
                    later.complete(
                        cx,
                        Cqe {
                            cid,
                            status,
                            ..Cqe::default()
                        },
                    );
                }),
            );
        }
        io_opc::FLUSH => bdev.submit(cx, BdevIo::Flush, counting(stats, join(later, cid, 1))),
        io_opc::WRITE_ZEROES => {
            let (slba, nlb) = range(&cmd);
            if let Err(e) = crate::bdev::check_range(slba, nlb, bdev.info().num_blocks) {
                return fail(cx, bdev_status(&e));
            }
            bdev.submit(
                cx,
                BdevIo::WriteZeroes { lba: slba, blocks: nlb },
                counting(stats, join(later, cid, 1)),
            );
        }
        io_opc::DATASET_MANAGEMENT => match dsm_ranges(&cmd, bdev.as_ref()) {
            Err(s) => fail(cx, s),
            Ok((false, _)) => fail(cx, Status::SUCCESS),
            Ok((true, ranges)) => {
                let done = join(later, cid, ranges.len());
                let block_size = u64::from(bdev.info().block_size);
                for (lba, blocks) in ranges {
                    let (done, stats, start) = (done.clone(), stats.clone(), later.1);
                    let counted = move |cx: &mut Context, r: Result<(), BdevError>, _buf: Vec<u8>| {
                        if r.is_ok() {
                            let ns = cx.now().saturating_duration_since(start).as_nanos() as u64;
                            stats.record(reactor, IoKind::Unmap, blocks * block_size, ns);
                        } else {
                            stats.record_error(IoErrorKind::Failed);
                        }
                        done(cx, r);
                    };
                    bdev.submit(cx, BdevIo::Unmap { lba, blocks }, BdevDone::from_fn(counted));
                }
            }
        },
        _ => fail(cx, status::INVALID_OPCODE.with_dnr()),
    }
}
