//! `file`: a bdev on a regular file or a block device, driven through one
//! io_uring per reactor (SPDK's uring bdev). The ring's completion eventfd
//! is an fd poller of the reactor, so a reactor with file I/O in flight
//! still sleeps in interrupt mode until a completion arrives.
//!
//! The file is opened with `O_DIRECT` where the file system allows it
//! (tmpfs and overlayfs do not; then the page cache is used). Flush is
//! `fdatasync` (`IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`), so a
//! completed Flush is durable. Write Zeroes and deallocation use
//! `fallocate` (`FALLOC_FL_ZERO_RANGE`, `FALLOC_FL_PUNCH_HOLE`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use io_uring::{IoUring, opcode, types};
use lull_reactor::{Context, FdSource, Interest, PollStatus};

use super::{AlignedBuf, Bdev, BdevDone, BdevError, BdevIo, blocks_in, check_range, uuid_from_name};

/// A file- or block-device-backed bdev.
pub struct FileBdev {
    name: String,
    path: PathBuf,
    file: File,
    direct: bool,
    block_size: u32,
    num_blocks: u64,
    uuid: [u8; 16],
}

impl FileBdev {
    /// The same bdev with this UUID (and so the namespace's NGUID/UUID).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.uuid = uuid;
        self
    }

    /// Opens `path` read-write (`O_DIRECT` when possible).
    ///
    /// # Errors
    /// A message naming the path when it cannot be opened, is empty, its
    /// size is not a multiple of `block_size`, or (a block device) its logical
    /// block size is larger than `block_size`.
    pub fn open(name: &str, path: &Path, block_size: u32) -> Result<Self, String> {
        super::check_block_size(block_size)?;
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(true);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let (mut file, direct) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (open(false).map_err(|e| format!("{}: {e}", path.display()))?, false)
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // O_DIRECT on a block device needs I/O aligned to its logical block
        // size: a smaller bdev block size would fail every command with EINVAL.
        let is_block = file
            .metadata()
            .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
            .unwrap_or(false);
        if is_block
            && direct
            && let Ok(lbs) = rustix::fs::ioctl_blksszget(&file)
            && block_size < lbs
        {
            return Err(format!(
                "{}: block_size {block_size} is below the device's logical block size {lbs}; use block_size = {lbs}",
                path.display()
            ));
        }
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if size == 0 || size % u64::from(block_size) != 0 {
            return Err(format!(
                "{}: size {size} bytes is not a positive multiple of the {block_size}-byte block size",
                path.display()
            ));
        }
        Ok(FileBdev {
            name: name.to_string(),
            path: path.to_path_buf(),
            file,
            direct,
            block_size,
            num_blocks: size / u64::from(block_size),
            uuid: uuid_from_name("file", &path.display().to_string()),
        })
    }

    /// Whether `O_DIRECT` is in use.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The backing path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn byte_range(&self, lba: u64, blocks: u64) -> Result<(u64, usize), BdevError> {
        check_range(lba, blocks, self.num_blocks)?;
        let bs = u64::from(self.block_size);
        Ok((lba * bs, (blocks * bs) as usize))
    }
}

// ---- one ring per reactor -------------------------------------------------

struct Pending {
    buf: Option<AlignedBuf>,
    expect: usize,
    done: BdevDone,
}

struct Ring {
    ring: RefCell<IoUring>,
    pending: RefCell<HashMap<u64, Pending>>,
    next: Cell<u64>,
}

thread_local! {
    /// The ring of the reactor running on this thread (reactor threads are dedicated).
    static RING: RefCell<Option<Rc<Ring>>> = const { RefCell::new(None) };
}

const RING_ENTRIES: u32 = 256;

fn ring(cx: &mut Context) -> Result<Rc<Ring>, BdevError> {
    if let Some(r) = RING.with(|r| r.borrow().clone()) {
        return Ok(r);
    }
    let io = |e: std::io::Error| BdevError::Io(format!("io_uring setup: {e}"));
    let uring = IoUring::new(RING_ENTRIES).map_err(io)?;
    let efd: OwnedFd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| io(e.into()))?;
    uring.submitter().register_eventfd(efd.as_raw_fd()).map_err(io)?;
    let r = Rc::new(Ring {
        ring: RefCell::new(uring),
        pending: RefCell::new(HashMap::new()),
        next: Cell::new(1),
    });
    let r2 = r.clone();
    let poller = FdSource::new(efd, move |cx: &mut Context, efd: &mut OwnedFd, _| {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(efd.as_fd(), &mut b);
        PollStatus::from_work(reap(cx, &r2))
    });
    cx.register_fd(poller, Interest::READABLE)
        .map_err(|e| BdevError::Io(format!("io_uring eventfd: {e}")))?;
    RING.with(|slot| *slot.borrow_mut() = Some(r.clone()));
    Ok(r)
}

/// Runs the completions the ring has; true if there were any.
fn reap(cx: &mut Context, r: &Rc<Ring>) -> bool {
    let mut any = false;
    loop {
        let batch: Vec<(u64, i32)> = {
            let mut ring = r.ring.borrow_mut();
            ring.completion().map(|c| (c.user_data(), c.result())).collect()
        };
        if batch.is_empty() {
            return any;
        }
        any = true;
        for (tag, res) in batch {
            let Some(p) = r.pending.borrow_mut().remove(&tag) else {
                continue;
            };
            let result = if res < 0 {
                Err(BdevError::Io(std::io::Error::from_raw_os_error(-res).to_string()))
            } else if (res as usize) < p.expect {
                Err(BdevError::Io(format!("short transfer: {res} of {} bytes", p.expect)))
            } else {
                Ok(())
            };
            let data = p.buf.as_ref().map(|b| &b[..]).unwrap_or(&[]);
            (p.done)(cx, result.map(|()| data));
        }
    }
}

fn submit_entry(
    cx: &mut Context,
    entry: io_uring::squeue::Entry,
    buf: Option<AlignedBuf>,
    expect: usize,
    done: BdevDone,
) {
    let r = match ring(cx) {
        Ok(r) => r,
        Err(e) => return done(cx, Err(e)),
    };
    let tag = r.next.get();
    r.next.set(tag.wrapping_add(1).max(1));
    let entry = entry.user_data(tag);
    // The buffer moves into the pending table before the kernel sees its
    // address, and leaves it only when the completion is reaped.
    r.pending.borrow_mut().insert(tag, Pending { buf, expect, done });
    let pushed = {
        let mut ring = r.ring.borrow_mut();
        // SAFETY: every buffer an entry points to is owned by its `Pending`,
        // which stays in `r.pending` (and so alive and unmoved: the heap block of
        // an `AlignedBuf` does not move with it) until its completion is reaped.
        let ok = unsafe { ring.submission().push(&entry).is_ok() };
        ok && ring.submit().is_ok()
    };
    if !pushed {
        // Ring full or submit failed: complete the command with an error, now.
        if let Some(p) = r.pending.borrow_mut().remove(&tag) {
            (p.done)(cx, Err(BdevError::Io("io_uring submission queue full".into())));
        }
    }
}

impl Bdev for FileBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn product_name(&self) -> &'static str {
        "URING bdev"
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
    fn is_async(&self) -> bool {
        true
    }

    // The blocking calls, for tools and tests off the reactors.
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), BdevError> {
        let (off, len) = self.byte_range(lba, blocks_in(buf.len(), self.block_size)?)?;
        let mut a = AlignedBuf::zeroed(len);
        rustix::io::pread(&self.file, &mut a[..], off).map_err(|e| BdevError::Io(e.to_string()))?;
        buf.copy_from_slice(&a[..]);
        Ok(())
    }
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), BdevError> {
        let (off, len) = self.byte_range(lba, blocks_in(data.len(), self.block_size)?)?;
        let mut a = AlignedBuf::zeroed(len);
        a.copy_from_slice(data);
        rustix::io::pwrite(&self.file, &a[..], off).map_err(|e| BdevError::Io(e.to_string()))?;
        Ok(())
    }
    fn write_zeroes(&self, lba: u64, blocks: u64) -> Result<(), BdevError> {
        let (off, len) = self.byte_range(lba, blocks)?;
        rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::ZERO_RANGE, off, len as u64)
            .map_err(|e| BdevError::Io(e.to_string()))
    }
    fn unmap(&self, lba: u64, blocks: u64) -> Result<(), BdevError> {
        let (off, len) = self.byte_range(lba, blocks)?;
        let f = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&self.file, f, off, len as u64).map_err(|e| BdevError::Io(e.to_string()))
    }
    fn flush(&self) -> Result<(), BdevError> {
        self.file.sync_data().map_err(|e| BdevError::Io(e.to_string()))
    }

    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        let fd = types::Fd(self.file.as_raw_fd());
        match io {
            BdevIo::Read { lba, blocks } => match self.byte_range(lba, blocks) {
                Ok((off, len)) => {
                    let mut buf = AlignedBuf::zeroed(len);
                    let e = opcode::Read::new(fd, buf.as_mut_ptr(), len as u32).offset(off).build();
                    submit_entry(cx, e, Some(buf), len, done);
                }
                Err(e) => done(cx, Err(e)),
            },
            BdevIo::Write { lba, data } => {
                let r = blocks_in(data.len(), self.block_size).and_then(|b| self.byte_range(lba, b));
                match r {
                    Ok((off, len)) => {
                        let mut buf = AlignedBuf::zeroed(len);
                        buf.copy_from_slice(&data);
                        let e = opcode::Write::new(fd, buf.as_mut_ptr(), len as u32).offset(off).build();
                        submit_entry(cx, e, Some(buf), len, done);
                    }
                    Err(e) => done(cx, Err(e)),
                }
            }
            BdevIo::WriteZeroes { lba, blocks } | BdevIo::Unmap { lba, blocks } => {
                let zero = matches!(io, BdevIo::WriteZeroes { .. });
                match self.byte_range(lba, blocks) {
                    Ok((off, len)) => {
                        let mode = if zero {
                            libc::FALLOC_FL_ZERO_RANGE
                        } else {
                            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                        };
                        let e = opcode::Fallocate::new(fd, len as u64).offset(off).mode(mode).build();
                        submit_entry(cx, e, None, 0, done);
                    }
                    Err(e) => done(cx, Err(e)),
                }
            }
            BdevIo::Flush => {
                let e = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build();
                submit_entry(cx, e, None, 0, done);
            }
        }
    }
}
