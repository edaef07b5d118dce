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

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use io_uring::{opcode, types};
use lull_reactor::Context;

use super::aligned::ALIGN;
use super::ring::{Data, Pending, Ring};
use super::{Bdev, BdevDone, BdevError, BdevInfo, BdevIo, uuid_from_name};

/// A file- or block-device-backed bdev.
pub struct FileBdev {
    info: BdevInfo,
    path: PathBuf,
    file: File,
    direct: bool,
}

impl FileBdev {
    /// The same bdev with this UUID (and so the namespace's NGUID/UUID).
    pub fn with_uuid(mut self, uuid: [u8; 16]) -> Self {
        self.info.uuid = uuid;
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
            info: BdevInfo {
                name: name.to_string(),
                product_name: "URING bdev",
                block_size,
                num_blocks: size / u64::from(block_size),
                uuid: uuid_from_name("file", &path.display().to_string()),
            },
            path: path.to_path_buf(),
            file,
            direct,
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

    /// Makes completed writes durable (`fdatasync`; blocking, for use off
    /// the reactors).
    ///
    /// # Errors
    /// [`BdevError::Io`] when `fdatasync` fails.
    pub fn flush(&self) -> Result<(), BdevError> {
        self.file.sync_data().map_err(|e| BdevError::Io(e.to_string()))
    }

    /// Whether I/O on `buf` has to go through an aligned bounce buffer:
    /// `O_DIRECT` needs the memory aligned (to the logical block size; a page
    /// covers every one), the page cache does not.
    fn needs_bounce(&self, buf: *const u8) -> bool {
        self.direct && !(buf as usize).is_multiple_of(ALIGN)
    }
}

impl Bdev for FileBdev {
    fn info(&self) -> &BdevInfo {
        &self.info
    }

    /// Queues `io` on this reactor's ring; `done` is completed when the ring
    /// reports it (a range error, before anything is queued, at once).
    ///
    /// Data moves between the kernel and the caller's `Vec` directly when
    /// the file is not `O_DIRECT` or the `Vec`'s memory happens to be
    /// page-aligned; otherwise through a reused page-aligned bounce buffer
    /// (one copy, as before, but no allocation or zeroing per I/O).
    fn submit(&self, cx: &mut Context, io: BdevIo, done: BdevDone) {
        let fd = types::Fd(self.file.as_raw_fd());
        let checked = match &io {
            BdevIo::Read { lba, blocks, .. } | BdevIo::WriteZeroes { lba, blocks } | BdevIo::Unmap { lba, blocks } => {
                self.info.byte_range(*lba, *blocks)
            }
            BdevIo::Write { lba, data } => self
                .info
                .data_blocks(*lba, data.len())
                .and_then(|blocks| self.info.byte_range(*lba, blocks)),
            BdevIo::Flush => Ok((0, 0)),
        };
        let (off, len) = match checked {
            Ok(r) => r,
            Err(e) => return done.complete(cx, Err(e), io.into_buf()),
        };
        if len == 0 && !matches!(io, BdevIo::Flush) {
            // Zero blocks: nothing to do (and fallocate refuses a 0 length).
            return done.complete(cx, Ok(()), io.into_buf());
        }
        let ring = match Ring::local(cx) {
            Ok(r) => r,
            Err(e) => return done.complete(cx, Err(e), io.into_buf()),
        };
        // Lengths fit a u32: the target caps a command's transfer far below 4 GiB.
        let (entry, expect, data) = match io {
            BdevIo::Read { mut buf, .. } => {
                buf.clear();
                buf.reserve(len);
                if self.needs_bounce(buf.as_ptr()) {
                    let mut b = ring.bounce(len);
                    let e = opcode::Read::new(fd, b.as_mut_ptr(), len as u32).offset(off).build();
                    (e, len, Data::ReadBounce(buf, b))
                } else {
                    let e = opcode::Read::new(fd, buf.as_mut_ptr(), len as u32).offset(off).build();
                    (e, len, Data::ReadInto(buf))
                }
            }
            BdevIo::Write { data, .. } => {
                if self.needs_bounce(data.as_ptr()) {
                    let mut b = ring.bounce(len);
                    b[..len].copy_from_slice(&data);
                    let e = opcode::Write::new(fd, b.as_ptr(), len as u32).offset(off).build();
                    (e, len, Data::WriteBounce(data, b))
                } else {
                    let e = opcode::Write::new(fd, data.as_ptr(), len as u32).offset(off).build();
                    (e, len, Data::WriteFrom(data))
                }
            }
            BdevIo::WriteZeroes { .. } | BdevIo::Unmap { .. } => {
                let mode = if matches!(io, BdevIo::WriteZeroes { .. }) {
                    libc::FALLOC_FL_ZERO_RANGE
                } else {
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                };
                let e = opcode::Fallocate::new(fd, len as u64).offset(off).mode(mode).build();
                (e, 0, Data::None)
            }
            BdevIo::Flush => {
                let e = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build();
                (e, 0, Data::None)
            }
        };
        ring.push(cx, entry, Pending { done, expect, data });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::bdev::test_support::{OnReactor, pattern, read};

    const BLOCKS: u64 = 64;

    /// A fresh 64-block file, opened as a bdev with `O_DIRECT` (the test
    /// directory's file system allows it) or through the page cache.
    fn file(direct: bool) -> (Arc<FileBdev>, PathBuf) {
        let path = std::env::temp_dir().join(format!("lull-file-bdev-{direct}-{}.img", std::process::id()));
        let f = File::create(&path).unwrap();
        f.set_len(BLOCKS * 512).unwrap();
        drop(f);
        let mut b = FileBdev::open("File0", &path, 512).unwrap();
        if !direct {
            // What `open` falls back to where O_DIRECT is refused (overlayfs).
            b.file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
            b.direct = false;
        }
        (Arc::new(b), path)
    }

    /// Every operation on one file, through `submit`, checked against the
    /// file's bytes read back with plain `std::fs`.
    fn exercise(r: &OnReactor, file: Arc<FileBdev>, path: &Path) {
        let b: Arc<dyn Bdev> = file;
        assert_eq!((b.info().product_name, b.info().num_blocks), ("URING bdev", BLOCKS));
        let data = pattern(5 * 512, 9);
        let w = r.submit(&b, BdevIo::Write { lba: 3, data });
        assert_eq!((w.result, w.inline, w.calls), (Ok(()), false, 1));
        assert_eq!(w.buf, pattern(5 * 512, 9), "the write data is handed back");
        let on_disk = std::fs::read(path).unwrap();
        assert_eq!(&on_disk[3 * 512..8 * 512], &pattern(5 * 512, 9)[..]);
        assert!(on_disk[..3 * 512].iter().all(|&x| x == 0));

        let rd = r.submit(&b, read(3, 5, 5 * 512));
        assert_eq!((rd.result, rd.inline, rd.calls), (Ok(()), false, 1));
        assert_eq!(rd.buf, pattern(5 * 512, 9));
        assert_eq!(rd.buf.capacity(), 5 * 512, "read into the given buffer, not a new one");
        let rd = r.submit(&b, read(2, 2, 0));
        assert_eq!(rd.buf, on_disk[2 * 512..4 * 512]);

        let z = r.submit(&b, BdevIo::WriteZeroes { lba: 4, blocks: 1 });
        assert_eq!((z.result, z.calls), (Ok(()), 1));
        let u = r.submit(&b, BdevIo::Unmap { lba: 6, blocks: 1 });
        assert_eq!((u.result, u.calls), (Ok(()), 1));
        let f = r.submit(&b, BdevIo::Flush);
        assert_eq!((f.result, f.calls), (Ok(()), 1));
        let mut expect = pattern(5 * 512, 9);
        expect[512..1024].fill(0);
        expect[3 * 512..4 * 512].fill(0);
        assert_eq!(&std::fs::read(path).unwrap()[3 * 512..8 * 512], &expect[..]);
        assert_eq!(r.submit(&b, read(3, 5, 5 * 512)).buf, expect);

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
                data: vec![5; 700],
            },
        );
        assert_eq!(
            w.result,
            Err(BdevError::Misaligned {
                len: 700,
                block_size: 512
            })
        );
        assert_eq!((w.calls, w.buf), (1, vec![5; 700]));
        let u = r.submit(&b, BdevIo::Unmap { lba: BLOCKS, blocks: 1 });
        assert!(matches!(u.result, Err(BdevError::OutOfRange { .. })));
        // Many in flight at once, each completed once with its own buffer.
        let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..BLOCKS).map(|_| AtomicUsize::new(0)).collect());
        r.run({
            let (b, counts) = (b.clone(), counts.clone());
            move |cx| {
                for lba in 0..BLOCKS {
                    let counts = counts.clone();
                    let data = vec![lba as u8; 512];
                    let done = BdevDone::from_fn(move |_, r, buf| {
                        assert_eq!((r, buf), (Ok(()), vec![lba as u8; 512]));
                        counts[lba as usize].fetch_add(1, Ordering::SeqCst);
                    });
                    b.submit(cx, BdevIo::Write { lba, data }, done);
                }
            }
        });
        let total = || counts.iter().map(|c| c.load(Ordering::SeqCst)).sum::<usize>();
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while total() < BLOCKS as usize && std::time::Instant::now() < give_up {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(
            counts.iter().all(|c| c.load(Ordering::SeqCst) == 1),
            "each completed exactly once"
        );
        let disk = std::fs::read(path).unwrap();
        for lba in 0..BLOCKS as usize {
            assert!(
                disk[lba * 512..(lba + 1) * 512].iter().all(|&x| x == lba as u8),
                "block {lba}"
            );
        }
    }

    #[test]
    fn submit_moves_data_through_the_ring_with_and_without_o_direct() {
        let r = OnReactor::start();
        // O_DIRECT: through bounce buffers (a Vec is rarely page-aligned);
        // the page cache: straight into and out of the caller's Vec.
        for direct in [true, false] {
            let (file, path) = file(direct);
            if direct && !file.is_direct() {
                eprintln!("{}: no O_DIRECT here; the bounce path goes untested", path.display());
            }
            exercise(&r, file, &path);
            let _ = std::fs::remove_file(&path);
        }
    }
}
