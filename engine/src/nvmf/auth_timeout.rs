//! The authentication timeout of one queue, on its reactor's timers: a host
//! that connects to a queue requiring DH-HMAC-CHAP and never finishes, or
//! stops mid-transaction, does not keep the queue.
//!
//! The behaviour is SPDK's target's (it has no setting of its own): the
//! timeout is the controller's KATO, or [`AUTH_TIMEOUT_WITHOUT_KATO`] when
//! KATO is 0, but never less than [`AUTH_TIMEOUT_MIN`] (lull's floor: a
//! host's ffdhe8192 exponentiation takes seconds on a small emulated VM,
//! longer than the Linux host's default 5 s KATO, and SPDK's rule cut such a
//! host off mid-exchange); it starts at the Connect and starts again at each
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

/// The shortest step timeout, whatever the KATO: `TargetSettings::auth_timeout_min_ms`'s
/// default.
pub const AUTH_TIMEOUT_MIN: Duration = Duration::from_secs(30);

/// How long a queue may take over one step of its authentication, for a
/// controller with `kato` (NVMe Base 2.0 section 5.27.1.12's Keep Alive
/// Timeout; 0: none), and at least `min`.
pub fn auth_timeout(kato: Duration, min: Duration) -> Duration {
    let t = if kato.is_zero() {
        AUTH_TIMEOUT_WITHOUT_KATO
    } else {
        kato
    };
    t.max(min)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_the_kato_or_120_s_but_not_under_the_floor() {
        let s = Duration::from_secs;
        // SPDK's rule alone (no floor).
        assert_eq!(auth_timeout(s(5), Duration::ZERO), s(5));
        assert_eq!(auth_timeout(Duration::ZERO, Duration::ZERO), s(120));
        // lull's default floor: the Linux host's 5 s KATO gets 30 s.
        assert_eq!(auth_timeout(s(5), AUTH_TIMEOUT_MIN), s(30));
        assert_eq!(auth_timeout(s(60), AUTH_TIMEOUT_MIN), s(60));
        assert_eq!(auth_timeout(Duration::ZERO, AUTH_TIMEOUT_MIN), s(120));
        assert_eq!(
            crate::nvmf::target::TargetSettings::default().auth_timeout_min_ms,
            30_000
        );
    }
}
