//! Typed channels into a reactor: a bounded lock-free queue per channel
//! (crossbeam's `ArrayQueue`), sharing the reactor's doorbell and sleep
//! handshake. Items are stored inline: no allocation per item. The reactor
//! keeps its channels' receiving sides in a table on its [`Context`] and
//! drains them once per loop iteration.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::context::ReactorShared;
use crate::context::{ChannelDrain, Context};
use crate::error::TrySendError;
use crate::stats::Counter;

struct Inner<T> {
    queue: ArrayQueue<T>,
    reactor: Arc<ReactorShared>,
    closed: AtomicBool,
}

/// The sending side of a typed channel into one reactor; `Clone` and `Send`,
/// usable from any thread, including other reactors.
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send> Sender<T> {
    /// Queues `item` for the reactor and wakes it if it may be asleep.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the queue holds `capacity` items (the item
    /// is handed back; retry later or shed load), [`TrySendError::Stopped`]
    /// when the receiving reactor stopped or the channel closed.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if self.inner.closed.load(Ordering::Acquire) || self.inner.reactor.stop.load(Ordering::Acquire) {
            return Err(TrySendError::Stopped(item));
        }
        self.inner.queue.push(item).map_err(TrySendError::Full)?;
        self.inner.reactor.notify();
        Ok(())
    }

    /// The CPU of the receiving reactor.
    pub fn core(&self) -> usize {
        self.inner.reactor.core
    }

    /// Items queued and not yet handled.
    pub fn len(&self) -> usize {
        self.inner.queue.len()
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.queue.is_empty()
    }
}

struct Receiver<T, F> {
    inner: Arc<Inner<T>>,
    handler: F,
}

impl<T, F: FnMut(&mut Context, T)> ChannelDrain for Receiver<T, F> {
    fn drain(&mut self, cx: &mut Context, budget: usize) -> usize {
        // Plain loads instead of the fence an empty `pop` ends in (see
        // Context::drain_inbox).
        if !self.has_items() {
            return 0;
        }
        let mut n = 0;
        while n < budget {
            let Some(item) = self.inner.queue.pop() else { break };
            (self.handler)(cx, item);
            n += 1;
        }
        n
    }

    fn has_items(&self) -> bool {
        !self.inner.queue.is_empty()
    }

    fn orphaned(&self) -> bool {
        Arc::strong_count(&self.inner) == 1 && self.inner.queue.is_empty()
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }
}

pub(crate) fn new<T: Send + 'static>(
    capacity: usize,
    reactor: Arc<ReactorShared>,
    handler: impl FnMut(&mut Context, T) + 'static,
) -> (Sender<T>, Box<dyn ChannelDrain>) {
    let inner = Arc::new(Inner {
        queue: ArrayQueue::new(capacity.max(1)),
        reactor,
        closed: AtomicBool::new(false),
    });
    (Sender { inner: inner.clone() }, Box::new(Receiver { inner, handler }))
}

impl Context {
    /// Creates a typed channel into this reactor: items sent on the returned
    /// [`Sender`] (from any thread) are handed to `handler` on this reactor,
    /// in order, with no allocation per item. `capacity` bounds the queue;
    /// a full queue makes `try_send` return the item (back-pressure);
    /// a capacity of 0 is taken as 1.
    /// The channel closes when every `Sender` is dropped and it is empty.
    pub fn channel<T: Send + 'static>(
        &mut self,
        capacity: usize,
        handler: impl FnMut(&mut Context, T) + 'static,
    ) -> Sender<T> {
        let (tx, rx) = new(capacity, self.shared.clone(), handler);
        // Only slots freed by closed channels are reused: an empty slot may
        // also be a channel being drained right now (this call can come from
        // its handler).
        match self.free_channels.pop() {
            Some(i) => self.channels[i] = Some(rx),
            None => self.channels.push(Some(rx)),
        }
        tx
    }

    /// Hands up to `budget` queued items of each channel to its handler;
    /// returns whether any was handled. A handler that panics closes its
    /// channel. Channels with no sender left and nothing queued are closed.
    pub(crate) fn drain_channels(&mut self, budget: usize) -> bool {
        let mut handled = 0;
        for i in 0..self.channels.len() {
            let Some(mut ch) = self.channels[i].take() else {
                continue;
            };
            match catch_unwind(AssertUnwindSafe(|| ch.drain(self, budget))) {
                Ok(n) => handled += n,
                Err(p) => {
                    // Its handler may be half-updated: close the channel; senders get Stopped.
                    self.note_panic("channel handler", &*p);
                    ch.close();
                    self.free_channels.push(i);
                    continue;
                }
            }
            if ch.orphaned() {
                ch.close();
                self.free_channels.push(i);
            } else {
                self.channels[i] = Some(ch);
            }
        }
        self.stats.add(Counter::Messages, handled as u64);
        handled > 0
    }
}
