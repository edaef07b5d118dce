//! The io_uring of the reactor running on this thread, shared by every file
//! bdev: its in-flight table, its pool of page-aligned bounce buffers, and
//! the poller that reaps completions when the ring's eventfd fires.
//!
//! Nothing here allocates per operation once the tables have grown to the
//! peak number in flight: entries live in a [`Slab`] indexed by the ring's
//! `user_data`, bounce buffers are reused (zeroed once, when first made), and
//! the reap batch keeps its capacity.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

use io_uring::{IoUring, squeue};
use lull_reactor::{Context, FdSource, Interest, PollStatus};

use super::aligned::ALIGN;
use super::slab::Slab;
use super::{AlignedBuf, BdevDone, BdevError};

/// Submission queue entries of each reactor's ring.
const RING_ENTRIES: u32 = 256;

/// Bounce buffers of one size kept for reuse; beyond that they are freed, so
/// a burst of large I/O does not pin memory for good.
const KEEP_PER_CLASS: usize = 64;

thread_local! {
    /// The ring of the reactor running on this thread (reactor threads are dedicated).
    static RING: RefCell<Option<Rc<Ring>>> = const { RefCell::new(None) };
}

/// Where an entry's data is while the kernel works on it.
pub(super) enum Data {
    /// No data (fallocate, fsync).
    None,
    /// A Read into the caller's `Vec`, from its start (it is empty, with the
    /// capacity reserved); its length is set when the read succeeds.
    ReadInto(Vec<u8>),
    /// A Read into a bounce buffer, appended to the caller's `Vec` on success.
    ReadBounce(Vec<u8>, AlignedBuf),
    /// A Write straight from the caller's `Vec`.
    WriteFrom(Vec<u8>),
    /// A Write from a bounce buffer holding a copy of the caller's `Vec`.
    WriteBounce(Vec<u8>, AlignedBuf),
}

/// An entry the kernel has: what to complete, and the bytes that mean success.
pub(super) struct Pending {
    /// The caller's completion.
    pub done: BdevDone,
    /// Bytes the kernel must report (0 for fallocate and fsync).
    pub expect: usize,
    /// The buffers the entry points into.
    pub data: Data,
}

/// Page-aligned buffers in power-of-two sizes from one page, for `O_DIRECT`
/// I/O whose caller's buffer is not aligned.
#[derive(Default)]
struct BouncePool {
    /// `classes[c]` holds free buffers of `ALIGN << c` bytes.
    classes: Vec<Vec<AlignedBuf>>,
}

impl BouncePool {
    fn class(len: usize) -> usize {
        (len.max(ALIGN).next_power_of_two().trailing_zeros() - ALIGN.trailing_zeros()) as usize
    }

    /// A buffer of at least `len` bytes (contents unspecified).
    fn take(&mut self, len: usize) -> AlignedBuf {
        let c = Self::class(len);
        self.classes
            .get_mut(c)
            .and_then(Vec::pop)
            .unwrap_or_else(|| AlignedBuf::zeroed(ALIGN << c))
    }

    fn give(&mut self, buf: AlignedBuf) {
        let c = Self::class(buf.len());
        if self.classes.len() <= c {
            self.classes.resize_with(c + 1, Vec::new);
        }
        if self.classes[c].len() < KEEP_PER_CLASS {
            self.classes[c].push(buf);
        }
    }
}

/// One reactor's io_uring and what is in flight on it.
pub(super) struct Ring {
    uring: RefCell<IoUring>,
    pending: RefCell<Slab<Pending>>,
    pool: RefCell<BouncePool>,
    /// (user_data, result) of the completions being run; kept between reaps
    /// for its capacity.
    batch: RefCell<Vec<(u64, i32)>>,
}

impl Ring {
    /// This reactor's ring, set up (and its eventfd registered as a poller)
    /// on first use.
    ///
    /// # Errors
    /// [`BdevError::Io`] when io_uring or the eventfd cannot be set up.
    pub(super) fn local(cx: &mut Context) -> Result<Rc<Ring>, BdevError> {
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
            uring: RefCell::new(uring),
            pending: RefCell::new(Slab::default()),
            pool: RefCell::new(BouncePool::default()),
            batch: RefCell::new(Vec::new()),
        });
        let r2 = r.clone();
        let poller = FdSource::new(efd, move |cx: &mut Context, efd: &mut OwnedFd, _| {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(efd.as_fd(), &mut b);
            PollStatus::from_work(r2.reap(cx))
        });
        cx.register_fd(poller, Interest::READABLE)
            .map_err(|e| BdevError::Io(format!("io_uring eventfd: {e}")))?;
        RING.with(|slot| *slot.borrow_mut() = Some(r.clone()));
        Ok(r)
    }

    /// A page-aligned buffer of at least `len` bytes, from the pool.
    pub(super) fn bounce(&self, len: usize) -> AlignedBuf {
        self.pool.borrow_mut().take(len)
    }

    /// Hands `entry` to the kernel; `pending` holds every buffer it points
    /// into, and is completed when the kernel reports the entry done (or now,
    /// with an error, when the ring takes no more entries).
    pub(super) fn push(&self, cx: &mut Context, entry: squeue::Entry, pending: Pending) {
        // The buffers move into the table before the kernel sees their
        // addresses, and leave it only when the completion is reaped.
        let tag = self.pending.borrow_mut().insert(pending);
        let entry = entry.user_data(u64::from(tag));
        let pushed = {
            let mut ring = self.uring.borrow_mut();
            // SAFETY: every buffer an entry points to is owned by its `Pending`
            // (a Vec's or an AlignedBuf's heap block, which does not move when
            // its owner moves and is not resized while pending), and the
            // `Pending` stays in `self.pending` until its completion is reaped.
            let ok = unsafe { ring.submission().push(&entry).is_ok() };
            if ok {
                // A failed io_uring_enter leaves the entry queued: the next
                // submit (another push, or a reap) hands it to the kernel.
                let _ = ring.submit();
            }
            ok
        };
        if !pushed {
            // Ring full: the kernel never saw the entry; complete it now.
            if let Some(p) = self.pending.borrow_mut().remove(tag) {
                let buf = p.data.into_caller_buf(&self.pool);
                p.done
                    .complete(cx, Err(BdevError::Io("io_uring submission queue full".into())), buf);
            }
        }
    }

    /// Runs the completions the ring has; true if there were any.
    fn reap(&self, cx: &mut Context) -> bool {
        let mut batch = std::mem::take(&mut *self.batch.borrow_mut());
        let mut any = false;
        loop {
            batch.clear();
            {
                let mut ring = self.uring.borrow_mut();
                batch.extend(ring.completion().map(|c| (c.user_data(), c.result())));
                if batch.is_empty() && !ring.submission().is_empty() {
                    // Entries left queued by a failed submit.
                    let _ = ring.submit();
                }
            }
            if batch.is_empty() {
                break;
            }
            any = true;
            for &(tag, res) in &batch {
                let Some(p) = u32::try_from(tag)
                    .ok()
                    .and_then(|t| self.pending.borrow_mut().remove(t))
                else {
                    continue;
                };
                p.finish(cx, res, &self.pool);
            }
        }
        *self.batch.borrow_mut() = batch;
        any
    }
}

impl Data {
    /// The caller's buffer, with any bounce buffer back in the pool; a
    /// Read's is empty (it failed).
    fn into_caller_buf(self, pool: &RefCell<BouncePool>) -> Vec<u8> {
        match self {
            Data::None => Vec::new(),
            Data::ReadInto(buf) | Data::WriteFrom(buf) => buf,
            Data::ReadBounce(buf, b) | Data::WriteBounce(buf, b) => {
                pool.borrow_mut().give(b);
                buf
            }
        }
    }
}

impl Pending {
    /// Completes the entry with the kernel's result `res` (bytes moved, or
    /// a negative errno).
    fn finish(self, cx: &mut Context, res: i32, pool: &RefCell<BouncePool>) {
        let result = if res < 0 {
            Err(BdevError::Io(std::io::Error::from_raw_os_error(-res).to_string()))
        } else if (res as usize) < self.expect {
            Err(BdevError::Io(format!("short transfer: {res} of {} bytes", self.expect)))
        } else {
            Ok(())
        };
        let buf = match (self.data, &result) {
            (Data::ReadInto(mut buf), Ok(())) => {
                // SAFETY: `buf` was empty with at least `expect` bytes of
                // capacity when its pointer went to the kernel, and the kernel
                // reports `res >= expect` bytes written there from the start;
                // any byte value is a valid u8.
                unsafe { buf.set_len(self.expect) };
                buf
            }
            (Data::ReadBounce(mut buf, b), Ok(())) => {
                buf.extend_from_slice(&b[..self.expect]);
                pool.borrow_mut().give(b);
                buf
            }
            (data, _) => data.into_caller_buf(pool),
        };
        self.done.complete(cx, result, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_buffers_come_in_page_multiples_and_are_reused() {
        assert_eq!(BouncePool::class(0), 0);
        assert_eq!(BouncePool::class(512), 0);
        assert_eq!(BouncePool::class(4096), 0);
        assert_eq!(BouncePool::class(4097), 1);
        assert_eq!(BouncePool::class(128 * 1024), 5);
        let mut pool = BouncePool::default();
        let b = pool.take(5000);
        assert_eq!((b.len(), b.as_ptr() as usize % ALIGN), (8192, 0));
        let at = b.as_ptr();
        pool.give(b);
        assert_eq!(pool.take(8192).as_ptr(), at, "the same buffer again");
        for _ in 0..KEEP_PER_CLASS + 5 {
            pool.give(AlignedBuf::zeroed(4096));
        }
        assert_eq!(pool.classes[0].len(), KEEP_PER_CLASS);
    }
}
