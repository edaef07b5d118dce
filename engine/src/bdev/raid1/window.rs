//! Moving the rebuild's window: the range locked against writes on every
//! reactor.
//!
//! The rebuild sets the new window in [`Inner`]'s `window` and sends each
//! reactor of its set a message. On each reactor the message releases the
//! writes that waited for the old window and no longer touch the new one,
//! then waits until the writes already in flight into the new window have
//! completed (they were admitted before the reactor knew of it) and acks.
//! When every reactor has acked, the rebuild goes on (on its own reactor):
//! no write can change the window's blocks while it is copied.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lull_reactor::{Context, Message, ReactorHandle, TrySendError};

use super::{Inner, io, lock};

/// How long before a message refused by a full inbox is offered again.
const RETRY: Duration = Duration::from_micros(50);

/// What runs once every reactor has applied a window.
pub(super) type Then = Box<dyn FnOnce(&mut Context) + Send>;

/// Sets `window` (`None`: nothing locked) on every reactor of `cx`'s set,
/// then runs `then` on this reactor.
pub(super) fn apply_everywhere(cx: &mut Context, inner: &Arc<Inner>, window: Option<(u64, u64)>, then: Then) {
    *lock(&inner.window) = window;
    let peers: Vec<ReactorHandle> = cx.peers().to_vec();
    let back = cx.handle();
    let left = Arc::new(AtomicUsize::new(peers.len()));
    let then = Arc::new(Mutex::new(Some(then)));
    for peer in peers {
        let (inner, left, then, back) = (inner.clone(), left.clone(), then.clone(), back.clone());
        let msg = Message::new(move |cx: &mut Context| {
            let ack = move |cx: &mut Context| {
                if left.fetch_sub(1, Ordering::AcqRel) == 1
                    && let Some(f) = lock(&then).take()
                {
                    send(cx, back, Message::new(f));
                }
            };
            io::apply_window(cx, &inner, window, Box::new(ack));
        });
        send(cx, peer, msg);
    }
}

/// Sends `msg` to `to`, offering it again later while the inbox is full.
/// A stopped reactor is shutting down: the message is dropped (and a
/// rebuild waiting for it stops there, as everything else does).
pub(super) fn send(cx: &mut Context, to: ReactorHandle, msg: Message) {
    match to.try_send_message(msg) {
        Ok(()) => {}
        Err(TrySendError::Full(msg)) => {
            cx.timer_once(RETRY, move |cx| send(cx, to, msg));
        }
        Err(TrySendError::Stopped(_)) => {
            tracing::debug!(
                core = to.core(),
                "raid1: a reactor stopped before a window move reached it"
            );
        }
    }
}
