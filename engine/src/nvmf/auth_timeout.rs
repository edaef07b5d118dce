//! The authentication timeout of one queue, on its reactor's timers: a host
//! that connects to a queue requiring DH-HMAC-CHAP and never finishes, or
//! stops mid-transaction, does not keep the queue.
//!
//! The behaviour is SPDK's target's (it has no setting of its own): the
//! timeout is the controller's KATO, or [`AUTH_TIMEOUT_WITHOUT_KATO`] when
//! KATO is 0; it starts at the Connect and starts again at each
//! authentication command of a transaction. When it expires on a queue
//! that is not authenticated, the queue's connection is closed (an admin
//! queue takes its controller with it); on a queue that is authenticated
//! and re-authenticating, the transaction is dropped and the queue stays
//! authenticated. A one-shot timer per queue: the reactor sleeps until it
//! is due. What expiry does is [`crate::nvmf::auth_queue`]'s.

use std::time::Duration;

use lull_reactor::{Context, ReactorHandle, TimerId};

/// The timeout when the controller's KATO is 0 (keep-alive off): SPDK's
/// target's 120 s.
pub const AUTH_TIMEOUT_WITHOUT_KATO: Duration = Duration::from_secs(120);

/// How long a queue may take over one step of its authentication, for a
/// controller with `kato` (NVMe Base 2.0 section 5.27.1.12's Keep Alive
/// Timeout; 0: none).
pub fn auth_timeout(kato: Duration) -> Duration {
    if kato.is_zero() {
        AUTH_TIMEOUT_WITHOUT_KATO
    } else {
        kato
    }
}

/// The timeout timer of one queue; dropping it cancels the timer (through
/// the reactor's inbox: a queue's drop has no [`Context`]).
#[derive(Default)]
pub struct AuthTimeout {
    timer: Option<(TimerId, ReactorHandle)>,
}

impl std::fmt::Debug for AuthTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthTimeout")
            .field("armed", &self.timer.is_some())
            .finish()
    }
}

impl Drop for AuthTimeout {
    fn drop(&mut self) {
        if let Some((t, reactor)) = self.timer.take() {
            // Frees the timer's closure now rather than when it would have
            // fired; a reactor stopping has nothing left to free.
            let _ = reactor.try_send(move |cx| {
                cx.cancel_timer(t);
            });
        }
    }
}

impl AuthTimeout {
    /// After an authentication command (or the Connect): starts the
    /// timeout again while `pending` (the queue unauthenticated or a
    /// transaction under way), stops it otherwise. `expire` runs if it fires.
    pub fn update(
        &mut self,
        cx: &mut Context,
        pending: bool,
        timeout: Duration,
        expire: impl FnOnce(&mut Context) + 'static,
    ) {
        self.cancel(cx);
        if !pending {
            return;
        }
        let id = cx.timer_once(timeout, expire);
        self.timer = Some((id, cx.handle()));
    }

    /// Stops the timeout (the queue closes, or authenticated).
    pub fn cancel(&mut self, cx: &mut Context) {
        if let Some((t, _)) = self.timer.take() {
            cx.cancel_timer(t);
        }
    }
}
