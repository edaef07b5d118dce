//! Pollers: units of work that a reactor runs when their wakeup source fires.
//!
//! Every poller names the source that can wake a sleeping reactor for it: a
//! file descriptor with an [`Interest`] (socket, eventfd, io_uring's eventfd)
//! or a period. A poller with neither cannot exist, so nothing registered can
//! keep a sleeping reactor from noticing work (the bug class of SPDK's
//! non-interrupt bdev modules and Longhorn's `queued_reqs`).
//!
//! A poller does a bounded amount of work per call and returns
//! [`PollStatus::Busy`] if it did any. Work it leaves behind must stay visible
//! to the kernel: data left in a socket keeps a level-triggered fd ready; bytes
//! queued for sending need [`Interest::WRITABLE`] until they are gone.
//!
//! This file holds the words a poller and the reactor exchange (status,
//! interest, readiness, ids); the [`Poller`](crate::Poller) trait itself is in
//! `context.rs`, beside the [`Context`](crate::Context) it is given, because
//! the two name each other.

use crate::sys::{Ready, Watch};

/// What a poller reports after a call; feeds busy/idle accounting and the
/// hybrid mode's spin window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollStatus {
    /// Useful work was done.
    Busy,
    /// Nothing to do.
    Idle,
}

impl PollStatus {
    /// `Busy` when `work` is true.
    pub fn from_work(work: bool) -> Self {
        if work { PollStatus::Busy } else { PollStatus::Idle }
    }
}

/// Which readiness of an fd wakes its poller (level-triggered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest(u8);

impl Interest {
    /// No readiness: only a hang-up or an error wakes the poller (EPOLLRDHUP,
    /// EPOLLHUP and EPOLLERR, which epoll always reports). For an fd whose
    /// data is read on a timer but whose peer going away must still be
    /// noticed at once; incoming data does not wake it.
    pub const NONE: Interest = Interest(0);
    /// Data to read, a connection to accept, or an eventfd counter above 0 (EPOLLIN).
    pub const READABLE: Interest = Interest(1);
    /// Room in the send buffer, or a non-blocking connect finished (EPOLLOUT).
    pub const WRITABLE: Interest = Interest(2);
    /// Both.
    pub const BOTH: Interest = Interest(3);

    /// Whether EPOLLIN is asked for.
    pub fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }

    /// Whether EPOLLOUT is asked for.
    pub fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }

    pub(crate) fn watch(self) -> Watch {
        Watch {
            readable: self.is_readable(),
            writable: self.is_writable(),
        }
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

/// Why a poller is being run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The fd is readable (EPOLLIN).
    pub readable: bool,
    /// The fd is writable (EPOLLOUT).
    pub writable: bool,
    /// The peer closed its end, or the fd hung up (EPOLLRDHUP / EPOLLHUP).
    /// Stays reported while the fd is registered: the poller must unregister.
    pub hangup: bool,
    /// An error is pending on the fd (EPOLLERR); same rule as `hangup`.
    pub error: bool,
    /// The poller's period elapsed.
    pub timer: bool,
}

impl Readiness {
    #[inline]
    pub(crate) fn from_ready(r: Ready) -> Self {
        Readiness {
            readable: r.readable,
            writable: r.writable,
            hangup: r.hangup,
            error: r.error,
            timer: false,
        }
    }

    pub(crate) const TIMER: Readiness = Readiness {
        readable: false,
        writable: false,
        hangup: false,
        error: false,
        timer: true,
    };
}

/// Names one registered poller on one reactor. Stale ids (after unregister)
/// are detected, not confused with a later poller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PollerId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl PollerId {
    pub(crate) fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    pub(crate) fn from_token(token: u64) -> Self {
        PollerId {
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}
