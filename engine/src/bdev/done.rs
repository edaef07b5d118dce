//! How a bdev reports that an operation ended: a shared sink and a tag.
//!
//! The caller keeps one sink per queue (for the NVMe-oF target, the
//! connection's table of command slots) and tags each submission with the
//! slot's index, so a submission clones an `Rc` and allocates nothing.
//! [`BdevDone::from_fn`] wraps a closure for callers off the hot path.

use std::cell::Cell;
use std::rc::Rc;

use lull_reactor::Context;

use super::BdevError;

/// Receives completions of bdev operations, on the reactor that submitted them.
pub trait IoCompletion {
    /// Operation `tag` ended with `result`. `buf` is the operation's buffer
    /// handed back: a Read's data on success (empty on error), a Write's
    /// data for reuse, or an empty `Vec` for operations without data.
    fn complete(&self, cx: &mut Context, tag: u32, result: Result<(), BdevError>, buf: Vec<u8>);
}

/// Where a bdev sends one operation's completion: the sink and the tag that
/// tells the sink which operation it was. Not `Clone`, and
/// [`complete`](BdevDone::complete) takes it by value: an operation is
/// completed at most once.
pub struct BdevDone {
    sink: Rc<dyn IoCompletion>,
    tag: u32,
}

impl BdevDone {
    /// Operation `tag` of `sink` (the caller's slot index, or anything that
    /// lets the sink find the operation).
    pub fn new(sink: Rc<dyn IoCompletion>, tag: u32) -> Self {
        BdevDone { sink, tag }
    }

    /// A completion that calls `f` (boxed, with the sink: one allocation per
    /// operation). For callers off the hot path (tests, tools, a rebuild).
    pub fn from_fn(f: impl FnOnce(&mut Context, Result<(), BdevError>, Vec<u8>) + 'static) -> Self {
        BdevDone {
            sink: Rc::new(Once(Cell::new(Some(f)))),
            tag: 0,
        }
    }

    /// The tag this completion carries.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Reports the end of the operation to the sink.
    pub fn complete(self, cx: &mut Context, result: Result<(), BdevError>, buf: Vec<u8>) {
        self.sink.complete(cx, self.tag, result, buf);
    }
}

impl std::fmt::Debug for BdevDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevDone")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// The sink of [`BdevDone::from_fn`]: the closure, taken on first use (a
/// `BdevDone` built from it is the sink's only owner, so there is no second).
struct Once<F>(Cell<Option<F>>);

impl<F: FnOnce(&mut Context, Result<(), BdevError>, Vec<u8>)> IoCompletion for Once<F> {
    fn complete(&self, cx: &mut Context, _tag: u32, result: Result<(), BdevError>, buf: Vec<u8>) {
        if let Some(f) = self.0.take() {
            f(cx, result, buf);
        }
    }
}
