//! A namespace of a remote controller as a bdev (SPDK's `NvmeXnY`), so a
//! target can export what the initiator reaches: I/O goes to the calling
//! reactor's first I/O queue of the controller, split where the command
//! limits require (NLB is 16 bits; MDTS caps the bytes per command).

use std::cell::RefCell;
use std::rc::Rc;

use lull_proto::host_queue::Completion;
use lull_proto::nvme::{Sqe, io_opc};
use lull_reactor::Context;

use super::ctrlr::{IoError, NvmeController};
use crate::bdev::{Bdev, BdevDone, BdevError, BdevIo, check_range};

/// Most blocks one Read/Write/Write Zeroes moves (NLB is a 0's based 16-bit field).
const MAX_NLB: u64 = 1 << 16;

/// Namespace `nsid` of `ctrlr` as a bdev.
pub struct NvmeBdev {
    name: String,
    ctrlr: NvmeController,
    nsid: u32,
    block_size: u32,
    num_blocks: u64,
    uuid: [u8; 16],
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
            name: name.to_string(),
            nsid,
            block_size: ns.block_size,
            num_blocks: ns.num_blocks,
            // The remote namespace's identity, so a volume keeps its UUID
            // across NVMe/TCP; a namespace without any gets a stable one.
            uuid: ns
                .bdev_uuid()
                .unwrap_or_else(|| crate::bdev::uuid_from_name("nvme", name)),
            chunk: by_mdts.min(MAX_NLB),
            ctrlr,
        })
    }

    /// The controller.
    pub fn controller(&self) -> &NvmeController {
        &self.ctrlr
    }

    fn rw_sqe(&self, opc: u8, lba: u64, blocks: u64) -> Sqe {
        let mut sqe = Sqe([0; 64]);
        sqe.0[0] = opc;
        sqe.0[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        sqe.set_cdw(10, lba as u32);
        sqe.set_cdw(11, (lba >> 32) as u32);
        sqe.set_cdw(12, (blocks - 1) as u32);
        sqe
    }

    /// The pieces of `lba..lba+blocks`, at most `limit` blocks each.
    fn pieces(lba: u64, blocks: u64, limit: u64) -> impl Iterator<Item = (u64, u64)> {
        (0..blocks.div_ceil(limit)).map(move |i| {
            let start = lba + i * limit;
            (start, limit.min(lba + blocks - start))
        })
    }
}

fn path_error(e: IoError) -> BdevError {
    BdevError::Io(e.to_string())
}

/// Completes `done` once all `parts` pieces finished, with read data
/// gathered in order (`read_len` bytes; 0 for commands without data).
struct Join {
    left: usize,
    data: Vec<u8>,
    error: Option<BdevError>,
    done: Option<BdevDone>,
}

fn join(parts: usize, read_len: usize, done: BdevDone) -> Rc<RefCell<Join>> {
    Rc::new(RefCell::new(Join {
        left: parts,
        data: vec![0; read_len],
        error: None,
        done: Some(done),
    }))
}

fn piece_done(j: &Rc<RefCell<Join>>, cx: &mut Context, offset: usize, r: Result<Completion, IoError>) {
    let finished = {
        let mut g = j.borrow_mut();
        match r {
            Ok(c) => {
                let end = (offset + c.data.len()).min(g.data.len());
                if offset < end {
                    g.data[offset..end].copy_from_slice(&c.data[..end - offset]);
                }
            }
            Err(e) => {
                if g.error.is_none() {
                    g.error = Some(path_error(e));
                }
            }
        }
        g.left -= 1;
        if g.left == 0 {
            let data = std::mem::take(&mut g.data);
            g.done.take().map(|d| (d, g.error.take(), data))
        } else {
            None
        }
    };
    if let Some((done, error, data)) = finished {
        match error {
            Some(e) => done(cx, Err(e)),
            None => done(cx, Ok(&data)),
        }
    }
}

impl Bdev for NvmeBdev {
    fn name(&self) -> &str {
        &self.name
    }

    fn product_name(&self) -> &'static str {
        "NVMe disk"
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    fn read(&self, _lba: u64, _buf: &mut [u8]) -> Result<(), BdevError> {
        Err(BdevError::Io("an NVMe bdev completes asynchronously (submit)".into()))
    }

    fn write(&self, _lba: u64, _data: &[u8]) -> Result<(), BdevError> {
        Err(BdevError::Io("an NVMe bdev completes asynchronously (submit)".into()))
    }

    fn write_zeroes(&self, _lba: u64, _blocks: u64) -> Result<(), BdevError> {
        Err(BdevError::Io("an NVMe bdev completes asynchronously (submit)".into()))
    }

    fn unmap(&self, _lba: u64, _blocks: u64) -> Result<(), BdevError> {
        Err(BdevError::Io("an NVMe bdev completes asynchronously (submit)".into()))
    }

    fn flush(&self) -> Result<(), BdevError> {
        Err(BdevError::Io("an NVMe bdev completes asynchronously (submit)".into()))
    }

    fn is_async(&self) -> bool {
        true
    }

    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        let bs = u64::from(self.block_size);
        let range = match &io {
            BdevIo::Read { lba, blocks } | BdevIo::WriteZeroes { lba, blocks } | BdevIo::Unmap { lba, blocks } => {
                Some((*lba, *blocks))
            }
            BdevIo::Write { lba, data } => match crate::bdev::blocks_in(data.len(), self.block_size) {
                Ok(b) => Some((*lba, b)),
                Err(e) => return done(cx, Err(e)),
            },
            BdevIo::Flush => None,
        };
        if let Some((lba, blocks)) = range {
            if let Err(e) = check_range(lba, blocks, self.num_blocks) {
                return done(cx, Err(e));
            }
            if blocks == 0 {
                return done(cx, Ok(&[]));
            }
        }
        let queue = 0;
        match io {
            BdevIo::Read { lba, blocks } => {
                let n = blocks.div_ceil(self.chunk) as usize;
                let j = join(n, (blocks * bs) as usize, done);
                for (start, count) in Self::pieces(lba, blocks, self.chunk) {
                    let j = j.clone();
                    let offset = ((start - lba) * bs) as usize;
                    self.ctrlr.submit(
                        cx,
                        queue,
                        self.rw_sqe(io_opc::READ, start, count),
                        Vec::new(),
                        (count * bs) as u32,
                        Box::new(move |cx, r| piece_done(&j, cx, offset, r)),
                    );
                }
            }
            BdevIo::Write { lba, data } => {
                let blocks = data.len() as u64 / bs;
                let n = blocks.div_ceil(self.chunk) as usize;
                let j = join(n, 0, done);
                if n == 1 {
                    let sqe = self.rw_sqe(io_opc::WRITE, lba, blocks);
                    self.ctrlr
                        .submit(cx, queue, sqe, data, 0, Box::new(move |cx, r| piece_done(&j, cx, 0, r)));
                    return;
                }
                for (start, count) in Self::pieces(lba, blocks, self.chunk) {
                    let j = j.clone();
                    let from = ((start - lba) * bs) as usize;
                    let part = data[from..from + (count * bs) as usize].to_vec();
                    self.ctrlr.submit(
                        cx,
                        queue,
                        self.rw_sqe(io_opc::WRITE, start, count),
                        part,
                        0,
                        Box::new(move |cx, r| piece_done(&j, cx, 0, r)),
                    );
                }
            }
            BdevIo::WriteZeroes { lba, blocks } => {
                let n = blocks.div_ceil(MAX_NLB) as usize;
                let j = join(n, 0, done);
                for (start, count) in Self::pieces(lba, blocks, MAX_NLB) {
                    let j = j.clone();
                    self.ctrlr.submit(
                        cx,
                        queue,
                        self.rw_sqe(io_opc::WRITE_ZEROES, start, count),
                        Vec::new(),
                        0,
                        Box::new(move |cx, r| piece_done(&j, cx, 0, r)),
                    );
                }
            }
            BdevIo::Unmap { lba, blocks } => {
                // One Dataset Management deallocate per 2^32 - 1 blocks (NLB is 32 bits in a range).
                let limit = u64::from(u32::MAX);
                let n = blocks.div_ceil(limit) as usize;
                let j = join(n, 0, done);
                for (start, count) in Self::pieces(lba, blocks, limit) {
                    let mut range = vec![0u8; 16];
                    range[4..8].copy_from_slice(&(count as u32).to_le_bytes());
                    range[8..16].copy_from_slice(&start.to_le_bytes());
                    let mut sqe = Sqe([0; 64]);
                    sqe.0[0] = io_opc::DATASET_MANAGEMENT;
                    sqe.0[4..8].copy_from_slice(&self.nsid.to_le_bytes());
                    sqe.set_cdw(10, 0);
                    sqe.set_cdw(11, 1 << 2);
                    let j = j.clone();
                    self.ctrlr.submit(
                        cx,
                        queue,
                        sqe,
                        range,
                        0,
                        Box::new(move |cx, r| piece_done(&j, cx, 0, r)),
                    );
                }
            }
            BdevIo::Flush => {
                let mut sqe = Sqe([0; 64]);
                sqe.0[0] = io_opc::FLUSH;
                sqe.0[4..8].copy_from_slice(&self.nsid.to_le_bytes());
                let j = join(1, 0, done);
                self.ctrlr.submit(
                    cx,
                    queue,
                    sqe,
                    Vec::new(),
                    0,
                    Box::new(move |cx, r| piece_done(&j, cx, 0, r)),
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
