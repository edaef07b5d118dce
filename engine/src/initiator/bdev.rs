//! A namespace of a remote controller as a bdev (SPDK's `NvmeXnY`), so a
//! target can export what the initiator reaches: I/O goes to the calling
//! reactor's first I/O queue of the controller, split where the command
//! limits require (NLB is 16 bits; MDTS caps the bytes per command).

use std::cell::RefCell;

use lull_proto::host_queue::Completion;
use lull_proto::nvme::cmd::{DatasetManagement, DsmRange, Flush, Rw};
use lull_proto::nvme::{Sqe, io_opc};
use lull_reactor::Context;

use super::ctrlr::{IoError, NvmeController};
use crate::bdev::slab::Slab;
use crate::bdev::{Bdev, BdevDone, BdevError, BdevInfo, BdevIo};

/// Most blocks one Read/Write/Write Zeroes moves (NLB is a 0's based 16-bit field).
const MAX_NLB: u64 = Rw::MAX_BLOCKS as u64;

/// Spare piece buffers a reactor keeps (split writes, deallocate ranges).
const KEEP_SPARE: usize = 64;

/// Namespace `nsid` of `ctrlr` as a bdev.
pub struct NvmeBdev {
    info: BdevInfo,
    ctrlr: NvmeController,
    nsid: u32,
    /// Blocks per command (MDTS and NLB).
    chunk: u64,
}

impl NvmeBdev {
    /// Wraps namespace `nsid` of an attached controller.
    ///
    /// # Errors
    /// When the controller has no such active namespace.
    pub fn new(name: &str, ctrlr: NvmeController, nsid: u32) -> Result<Self, String> {
        let info = ctrlr.info();
        let ns = info
            .namespaces
            .iter()
            .find(|n| n.nsid == nsid)
            .ok_or_else(|| format!("controller {} has no active namespace {nsid}", ctrlr.name()))?
            .clone();
        let by_mdts = info
            .max_transfer_bytes
            .map_or(MAX_NLB, |m| (u64::from(m) / u64::from(ns.block_size)).max(1));
        Ok(NvmeBdev {
            info: BdevInfo {
                name: name.to_string(),
                product_name: "NVMe disk",
                block_size: ns.block_size,
                num_blocks: ns.num_blocks,
                // The remote namespace's identity, so a volume keeps its UUID
                // across NVMe/TCP; a namespace without any gets a stable one.
                uuid: ns
                    .bdev_uuid()
                    .unwrap_or_else(|| crate::bdev::uuid_from_name("nvme", name)),
            },
            nsid,
            chunk: by_mdts.min(MAX_NLB),
            ctrlr,
        })
    }

    /// The controller.
    pub fn controller(&self) -> &NvmeController {
        &self.ctrlr
    }

    /// `blocks` is at most [`MAX_NLB`] (the pieces' limit).
    fn rw_sqe(&self, opc: u8, lba: u64, blocks: u64) -> Sqe {
        Rw::new(self.nsid, lba, blocks as u32).encode(opc)
    }

    /// The pieces of `lba..lba+blocks`, at most `limit` blocks each.
    fn pieces(lba: u64, blocks: u64, limit: u64) -> impl Iterator<Item = (u64, u64)> {
        (0..blocks.div_ceil(limit)).map(move |i| {
            let start = lba + i * limit;
            (start, limit.min(lba + blocks - start))
        })
    }

    /// Sends one piece to this reactor's queue of the controller.
    fn send(&self, cx: &mut Context, sqe: Sqe, write: Vec<u8>, read_len: usize, waiter: Waiter, data: PieceData) {
        // Lengths fit a u32: a piece is at most MAX_NLB blocks and MDTS bytes.
        self.ctrlr.submit(
            cx,
            0,
            sqe,
            write,
            read_len as u32,
            Box::new(move |cx, r| piece_done(cx, waiter, data, r)),
        );
    }
}

fn path_error(e: IoError) -> BdevError {
    BdevError::Io(e.to_string())
}

// ---- completing split operations ------------------------------------------

/// An operation split into several commands, waiting for them (an entry of
/// this reactor's [`JOINS`]).
struct Join {
    /// Pieces not completed yet.
    left: usize,
    /// The first piece's error.
    error: Option<BdevError>,
    done: BdevDone,
    /// The caller's buffer: a Read's, sized to the whole read (each piece
    /// copies its data in at its offset), or a Write's data, handed back at
    /// the end.
    buf: Vec<u8>,
    /// Whether `buf` is read data (emptied on error).
    read: bool,
}

thread_local! {
    /// Split operations in flight on this reactor. Reused slots: a split
    /// allocates nothing here once the table has grown to the peak in flight.
    static JOINS: RefCell<Slab<Join>> = RefCell::new(Slab::default());
    /// Buffers of split writes' pieces and of deallocate ranges, back from
    /// their completions for the next ones.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer, from this reactor's spares when there is one.
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

/// Who learns that a piece ended.
enum Waiter {
    /// The operation was one command: the caller's completion and buffer
    /// ride with it (in the initiator's completion closure).
    Alone(BdevDone, Vec<u8>),
    /// The operation was split: its [`Join`] in this reactor's table.
    Joined(u32),
}

/// What a piece's completion does with the command's buffers.
#[derive(Clone, Copy)]
enum PieceData {
    /// Read data for bytes `offset..offset + len` of the caller's buffer.
    Read { offset: usize, len: usize },
    /// The write data was the caller's own buffer: hand it back.
    CallerWrite,
    /// The write data was a spare buffer: recycle it.
    Spare,
    /// No data.
    Nothing,
}

/// A new [`Join`] in this reactor's table, waiting for `parts` pieces.
fn new_join(parts: usize, done: BdevDone, buf: Vec<u8>, read: bool) -> u32 {
    JOINS.with(|j| {
        j.borrow_mut().insert(Join {
            left: parts,
            error: None,
            done,
            buf,
            read,
        })
    })
}

/// One waiter per piece: the caller's completion for a single command, or
/// a new [`Join`] shared by all pieces of a split one.
fn waiters(parts: usize, done: BdevDone, buf: Vec<u8>, read: bool) -> impl FnMut() -> Waiter {
    let (mut alone, slot) = if parts == 1 {
        (Some((done, buf)), 0)
    } else {
        (None, new_join(parts, done, buf, read))
    };
    move || match alone.take() {
        Some((done, buf)) => Waiter::Alone(done, buf),
        None => Waiter::Joined(slot),
    }
}

/// What a piece's command result means for its data: copies read data into
/// `buf` (appending when `append`, else at the piece's offset), recycles a
/// spare write buffer; returns the caller's write buffer when handed back.
fn settle(
    r: Result<Completion, IoError>,
    data: PieceData,
    buf: &mut Vec<u8>,
    append: bool,
) -> Result<Option<Vec<u8>>, BdevError> {
    let c = r.map_err(path_error)?;
    match data {
        PieceData::Read { offset, len } => {
            if c.data.len() != len {
                return Err(BdevError::Io(format!("short read: {} of {len} bytes", c.data.len())));
            }
            if append {
                buf.extend_from_slice(&c.data);
            } else {
                buf[offset..offset + len].copy_from_slice(&c.data);
            }
            Ok(None)
        }
        PieceData::CallerWrite => Ok(Some(c.write)),
        PieceData::Spare => {
            recycle(c.write);
            Ok(None)
        }
        PieceData::Nothing => Ok(None),
    }
}

fn piece_done(cx: &mut Context, waiter: Waiter, data: PieceData, r: Result<Completion, IoError>) {
    let (done, result, mut buf, read) = match waiter {
        Waiter::Alone(done, mut buf) => {
            let result = settle(r, data, &mut buf, true).map(|own| {
                if let Some(own) = own {
                    buf = own;
                }
            });
            (done, result, buf, matches!(data, PieceData::Read { .. }))
        }
        Waiter::Joined(slot) => {
            let finished = JOINS.with(|j| {
                let mut j = j.borrow_mut();
                let join = j.get_mut(slot)?;
                if let Err(e) = settle(r, data, &mut join.buf, false)
                    && join.error.is_none()
                {
                    join.error = Some(e);
                }
                join.left -= 1;
                if join.left > 0 {
                    return None;
                }
                j.remove(slot)
            });
            let Some(join) = finished else { return };
            (join.done, join.error.map_or(Ok(()), Err), join.buf, join.read)
        }
    };
    if read && result.is_err() {
        buf.clear();
    }
    done.complete(cx, result, buf);
}

impl Bdev for NvmeBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    /// Sends `io` as one command, or as several when it is larger than a
    /// command may be (MDTS, NLB); `done` is completed when the last one ends.
    /// A single command allocates nothing here beyond the initiator's
    /// completion closure; a split one uses a reused slot of this reactor's
    /// join table, and split writes copy their pieces into reused buffers.
    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        let bs = u64::from(self.info.block_size);
        let checked = match &io {
            BdevIo::Read { lba, blocks, .. } | BdevIo::WriteZeroes { lba, blocks } | BdevIo::Unmap { lba, blocks } => {
                self.info.byte_range(*lba, *blocks).map(|_| *blocks)
            }
            BdevIo::Write { lba, data } => self.info.data_blocks(*lba, data.len()),
            BdevIo::Flush => Ok(1),
        };
        match checked {
            Err(e) => return done.complete(cx, Err(e), io.into_buf()),
            Ok(0) => return done.complete(cx, Ok(()), io.into_buf()),
            Ok(_) => {}
        }
        match io {
            BdevIo::Read { lba, blocks, mut buf } => {
                let len = (blocks * bs) as usize;
                let parts = blocks.div_ceil(self.chunk) as usize;
                buf.clear();
                if parts == 1 {
                    buf.reserve(len);
                } else {
                    // Pieces land at their offsets, in any order.
                    buf.resize(len, 0);
                }
                let mut next = waiters(parts, done, buf, true);
                for (start, count) in Self::pieces(lba, blocks, self.chunk) {
                    let offset = ((start - lba) * bs) as usize;
                    let len = (count * bs) as usize;
                    let sqe = self.rw_sqe(io_opc::READ, start, count);
                    self.send(cx, sqe, Vec::new(), len, next(), PieceData::Read { offset, len });
                }
            }
            BdevIo::Write { lba, data } => {
                let blocks = data.len() as u64 / bs;
                let parts = blocks.div_ceil(self.chunk) as usize;
                if parts == 1 {
                    let sqe = self.rw_sqe(io_opc::WRITE, lba, blocks);
                    let waiter = Waiter::Alone(done, Vec::new());
                    return self.send(cx, sqe, data, 0, waiter, PieceData::CallerWrite);
                }
                // The caller's data stays with the join (handed back at the
                // end); each piece goes in a spare buffer of its own.
                let slot = new_join(parts, done, data, false);
                for (start, count) in Self::pieces(lba, blocks, self.chunk) {
                    let from = ((start - lba) * bs) as usize;
                    let mut part = spare();
                    JOINS.with(|j| {
                        if let Some(join) = j.borrow().get(slot) {
                            part.extend_from_slice(&join.buf[from..from + (count * bs) as usize]);
                        }
                    });
                    let sqe = self.rw_sqe(io_opc::WRITE, start, count);
                    self.send(cx, sqe, part, 0, Waiter::Joined(slot), PieceData::Spare);
                }
            }
            BdevIo::WriteZeroes { lba, blocks } => {
                let mut next = waiters(blocks.div_ceil(MAX_NLB) as usize, done, Vec::new(), false);
                for (start, count) in Self::pieces(lba, blocks, MAX_NLB) {
                    let sqe = self.rw_sqe(io_opc::WRITE_ZEROES, start, count);
                    self.send(cx, sqe, Vec::new(), 0, next(), PieceData::Nothing);
                }
            }
            BdevIo::Unmap { lba, blocks } => {
                // One Dataset Management deallocate per 2^32 - 1 blocks (NLB is 32 bits in a range).
                let limit = u64::from(u32::MAX);
                let mut next = waiters(blocks.div_ceil(limit) as usize, done, Vec::new(), false);
                for (start, count) in Self::pieces(lba, blocks, limit) {
                    let mut range = spare();
                    let entry = DsmRange {
                        cattr: 0,
                        nlb: count as u32,
                        slba: start,
                    };
                    range.extend_from_slice(&entry.encode());
                    let sqe = DatasetManagement {
                        nsid: self.nsid,
                        nr: 0,
                        ad: true,
                        idw: false,
                        idr: false,
                    }
                    .encode();
                    self.send(cx, sqe, range, 0, next(), PieceData::Spare);
                }
            }
            BdevIo::Flush => {
                self.send(
                    cx,
                    Flush { nsid: self.nsid }.encode(),
                    Vec::new(),
                    0,
                    Waiter::Alone(done, Vec::new()),
                    PieceData::Nothing,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_range_in_order_without_overlap() {
        let p: Vec<_> = NvmeBdev::pieces(10, 25, 10).collect();
        assert_eq!(p, vec![(10, 10), (20, 10), (30, 5)]);
        let p: Vec<_> = NvmeBdev::pieces(0, 8, 8).collect();
        assert_eq!(p, vec![(0, 8)]);
    }
}

#[cfg(test)]
mod submit_tests {
    use std::sync::Arc;

    use lull_proto::target_queue::TargetQueueConfig;

    use super::*;
    use crate::bdev::RamBdev;
    use crate::bdev::test_support::{OnReactor, pattern, read};
    use crate::initiator::{NvmeOptions, NvmeTrid};
    use crate::nvmf::subsystem::Subsystem;
    use crate::nvmf::target::Target;

    const NQN: &str = "nqn.2024-01.test:remote";
    const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000000b";
    const BLOCKS: u64 = 1024;

    /// The remote RAM namespace on B as B holds it.
    fn on_b(ram: &RamBdev, lba: u64, blocks: u64) -> Vec<u8> {
        let mut v = vec![0xEE; (blocks * 512) as usize];
        ram.read(lba, &mut v).unwrap();
        v
    }

    #[test]
    fn submit_splits_at_the_chunk_joins_in_order_and_hands_buffers_back() {
        let r = OnReactor::start();
        let ram = Arc::new(RamBdev::new("Ram0", BLOCKS * 512, 512).unwrap());
        let target = Target::new(TargetQueueConfig::default());
        let s = Subsystem::new(NQN, "SNREMOTE", "lull remote").unwrap();
        s.set_allow_any_host(true);
        s.add_namespace(1, ram.clone() as Arc<dyn Bdev>).unwrap();
        target.add_subsystem(s).unwrap();
        let addr = target.listen(r.reactors(), "127.0.0.1:0".parse().unwrap()).unwrap();
        let opts = NvmeOptions {
            nvme_ioq_poll_period_us: 0,
            ..NvmeOptions::default().no_reconnect()
        };
        let trid = NvmeTrid::new(addr, NQN, HOST);
        let ctrlr = NvmeController::attach("Nvme0", trid, opts, r.reactors().handles(), 1).unwrap();
        let mut bdev = NvmeBdev::new("Nvme0n1", ctrlr.clone(), 1).unwrap();
        assert_eq!(
            (bdev.info().product_name, bdev.info().block_size, bdev.info().num_blocks),
            ("NVMe disk", 512, BLOCKS)
        );
        // Three blocks per command, so 10 blocks go as 3 + 3 + 3 + 1.
        bdev.chunk = 3;
        let b: Arc<dyn Bdev> = Arc::new(bdev);

        let w = r.submit(
            &b,
            BdevIo::Write {
                lba: 5,
                data: pattern(10 * 512, 4),
            },
        );
        assert_eq!((w.result, w.inline, w.calls), (Ok(()), false, 1));
        assert_eq!(w.buf, pattern(10 * 512, 4), "a split write hands its data back");
        assert_eq!(on_b(&ram, 5, 10), pattern(10 * 512, 4));

        let rd = r.submit(&b, read(5, 10, 10 * 512));
        assert_eq!((rd.result, rd.calls), (Ok(()), 1));
        assert_eq!(rd.buf, pattern(10 * 512, 4), "pieces joined in order");
        assert_eq!(rd.buf.capacity(), 10 * 512, "into the caller's buffer");

        // One command each: the caller's buffers go through and come back.
        let data = pattern(3 * 512, 7);
        let at = data.as_ptr() as usize;
        let w = r.submit(&b, BdevIo::Write { lba: 100, data });
        assert_eq!((w.result, w.calls, w.buf.as_ptr() as usize), (Ok(()), 1, at));
        assert_eq!(on_b(&ram, 100, 3), pattern(3 * 512, 7));
        let rd = r.submit(&b, read(101, 2, 1024));
        assert_eq!((rd.result, rd.calls, rd.buf.capacity()), (Ok(()), 1, 1024));
        assert_eq!(rd.buf, pattern(3 * 512, 7)[512..]);

        let z = r.submit(&b, BdevIo::WriteZeroes { lba: 6, blocks: 2 });
        assert_eq!((z.result, z.calls), (Ok(()), 1));
        let u = r.submit(&b, BdevIo::Unmap { lba: 12, blocks: 3 });
        assert_eq!((u.result, u.calls), (Ok(()), 1));
        let mut expect = pattern(10 * 512, 4);
        expect[512..3 * 512].fill(0);
        expect[7 * 512..10 * 512].fill(0);
        assert_eq!(on_b(&ram, 5, 10), expect);
        assert_eq!(r.submit(&b, BdevIo::Flush).result, Ok(()));

        // Checked here, before anything is sent: completed before submit returns.
        let rd = r.submit(&b, read(BLOCKS - 1, 2, 1024));
        assert_eq!(
            rd.result,
            Err(BdevError::OutOfRange {
                lba: BLOCKS - 1,
                end: BLOCKS + 1,
                num_blocks: BLOCKS
            })
        );
        assert_eq!(
            (rd.inline, rd.calls, rd.buf.len(), rd.buf.capacity()),
            (true, 1, 0, 1024)
        );
        let w = r.submit(
            &b,
            BdevIo::Write {
                lba: 0,
                data: vec![1; 600],
            },
        );
        assert_eq!(
            (w.result, w.inline, w.buf.len()),
            (
                Err(BdevError::Misaligned {
                    len: 600,
                    block_size: 512
                }),
                true,
                600
            )
        );

        // The controller gone: every piece fails, the caller hears once.
        ctrlr.detach();
        let rd = r.submit(&b, read(5, 10, 10 * 512));
        assert!(matches!(rd.result, Err(BdevError::Io(_))), "{:?}", rd.result);
        assert_eq!((rd.calls, rd.buf.len(), rd.buf.capacity()), (1, 0, 10 * 512));
        let w = r.submit(
            &b,
            BdevIo::Write {
                lba: 5,
                data: pattern(10 * 512, 4),
            },
        );
        assert!(matches!(w.result, Err(BdevError::Io(_))));
        assert_eq!((w.calls, w.buf.len()), (1, 10 * 512), "a split write's data comes back");
        let rd = r.submit(&b, read(0, 1, 512));
        assert!(matches!(rd.result, Err(BdevError::Io(_))));
        assert_eq!((rd.calls, rd.buf.len()), (1, 0));
        let z = r.submit(&b, BdevIo::WriteZeroes { lba: 0, blocks: 1 });
        assert_eq!(z.calls, 1);
        assert!(z.result.is_err());
    }
}
