//! The sleep/wake handshake between a reactor and the threads that send it
//! work. Poll mode pays no system call per message; a sleeping reactor is
//! woken by exactly one doorbell write however many senders race.
//!
//! Receiver (the reactor), before `epoll_wait` with a timeout:
//! 1. `prepare_sleep`: state := SLEEPING, then a SeqCst fence;
//! 2. re-check every queue; if any has work, `finish_sleep` and do not sleep;
//! 3. sleep; on return `finish_sleep` (state := AWAKE) and drain the doorbell.
//!
//! Sender, after publishing into a queue:
//! 1. `should_ring`: a SeqCst fence, then if state is SLEEPING, CAS it to
//!    NOTIFIED; whoever wins the CAS writes the eventfd.
//!
//! Why no wakeup is lost: the two fences are totally ordered. If the
//! receiver's fence comes first, the sender's load sees SLEEPING (or a later
//! value, which means the reactor is awake again and will re-check before its
//! next sleep). If the sender's fence comes first, the receiver's re-check
//! sees the published item. The model check of this module runs with `RUSTFLAGS="--cfg loom" cargo test -p lull-reactor --lib wake::`.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU8, Ordering, fence};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU8, Ordering, fence};

const AWAKE: u8 = 0;
const SLEEPING: u8 = 1;
const NOTIFIED: u8 = 2;

/// Whether a reactor may be asleep; see the module docs for the protocol.
pub(crate) struct WakeState {
    state: AtomicU8,
}

impl WakeState {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(AWAKE),
        }
    }

    /// Receiver: announce the intent to sleep. The caller must re-check all
    /// its queues afterwards and call [`finish_sleep`](Self::finish_sleep)
    /// whether it slept or not.
    pub(crate) fn prepare_sleep(&self) {
        self.state.store(SLEEPING, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Receiver: back to awake. Returns true if a sender announced a ring.
    pub(crate) fn finish_sleep(&self) -> bool {
        self.state.swap(AWAKE, Ordering::Relaxed) == NOTIFIED
    }

    /// Sender: call after publishing work. True means the caller must ring
    /// the doorbell (exactly one sender per sleep gets true).
    pub(crate) fn should_ring(&self) -> bool {
        fence(Ordering::SeqCst);
        self.state.load(Ordering::Relaxed) == SLEEPING
            && self
                .state
                .compare_exchange(SLEEPING, NOTIFIED, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the reactor announced sleep (for tests and status).
    pub(crate) fn is_sleeping(&self) -> bool {
        self.state.load(Ordering::Relaxed) != AWAKE
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, AtomicUsize};

    /// A queue reduced to what the protocol relies on: a Release publish and an
    /// Acquire emptiness check (what crossbeam's ArrayQueue does on its tail).
    struct Model {
        wake: WakeState,
        queued: AtomicUsize,
        rung: AtomicBool,
    }

    fn send(m: &Model) {
        m.queued.fetch_add(1, Ordering::Release);
        if m.wake.should_ring() {
            m.rung.store(true, Ordering::Relaxed);
        }
    }

    /// Returns true if the receiver went to sleep with nothing seen.
    fn try_sleep(m: &Model) -> bool {
        m.wake.prepare_sleep();
        let empty = m.queued.load(Ordering::Acquire) == 0;
        if !empty {
            m.wake.finish_sleep();
        }
        empty
    }

    #[test]
    fn a_message_sent_while_the_receiver_falls_asleep_rings_the_doorbell() {
        loom::model(|| {
            let m = Arc::new(Model {
                wake: WakeState::new(),
                queued: AtomicUsize::new(0),
                rung: AtomicBool::new(false),
            });
            let s = {
                let m = m.clone();
                loom::thread::spawn(move || send(&m))
            };
            let slept = try_sleep(&m);
            s.join().unwrap();
            if slept {
                // The receiver saw no message, so the sender must have seen it sleeping.
                assert!(m.rung.load(Ordering::Relaxed), "lost wakeup");
            }
        });
    }

    #[test]
    fn two_senders_ring_once() {
        loom::model(|| {
            let m = Arc::new(Model {
                wake: WakeState::new(),
                queued: AtomicUsize::new(0),
                rung: AtomicBool::new(false),
            });
            let rings = Arc::new(AtomicUsize::new(0));
            let spawn = |m: Arc<Model>, rings: Arc<AtomicUsize>| {
                loom::thread::spawn(move || {
                    m.queued.fetch_add(1, Ordering::Release);
                    if m.wake.should_ring() {
                        rings.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let a = spawn(m.clone(), rings.clone());
            let b = spawn(m.clone(), rings.clone());
            let slept = try_sleep(&m);
            a.join().unwrap();
            b.join().unwrap();
            let r = rings.load(Ordering::Relaxed);
            assert!(r <= 1, "doorbell written {r} times for one sleep");
            if slept {
                assert_eq!(r, 1, "lost wakeup");
            }
        });
    }
}
