//! Errors of the reactor crate.

use thiserror::Error;

use crate::cores::CoreListError;

/// What can go wrong starting, using or stopping reactors.
#[derive(Debug, Error)]
pub enum ReactorError {
    /// The core list is malformed or names an unusable CPU.
    #[error(transparent)]
    Cores(#[from] CoreListError),
    /// A system call failed; `op` names it.
    #[error("{op}: {source}")]
    Io {
        /// The operation, e.g. `epoll_ctl(ADD)`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A reactor thread could not be pinned to its CPU.
    #[error("cannot pin reactor to CPU {core}: {source}")]
    Pin {
        /// The CPU.
        core: usize,
        /// The OS error from `sched_setaffinity`.
        #[source]
        source: std::io::Error,
    },
    /// A period of zero was given; such a poller could never let its reactor sleep.
    #[error("a period must be above 0 (a poller that runs on every loop iteration cannot sleep in interrupt mode)")]
    ZeroPeriod,
    /// The poller id is stale or belongs to another reactor.
    #[error("no such poller on this reactor")]
    UnknownPoller,
    /// An fd operation on a timed poller.
    #[error("the poller is woken by a period, not an fd")]
    NotFdPoller,
    /// A period operation on an fd poller.
    #[error("the poller is woken by an fd, not a period")]
    NotTimedPoller,
    /// A reactor thread panicked; its core is named.
    #[error("reactor on CPU {core} panicked")]
    Panicked {
        /// The CPU.
        core: usize,
    },
    /// A setting is out of range; the message names the field and the range.
    #[error("{field} = {value}: {allowed}")]
    InvalidSetting {
        /// The setting's name.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
}

impl ReactorError {
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> Self {
        ReactorError::Io { op, source }
    }
}

/// Why a message or channel item was not queued; the item comes back.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The receiving queue is at capacity. Nothing was dropped: retry later
    /// (from a timer on a reactor, never by spinning) or shed the work.
    #[error("the receiving reactor's queue is full")]
    Full(T),
    /// The receiving reactor has stopped (or the channel closed).
    #[error("the receiving reactor has stopped")]
    Stopped(T),
}

impl<T> TrySendError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::Stopped(t) => t,
        }
    }
}
