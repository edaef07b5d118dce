//! DH-HMAC-CHAP re-authentication of a live queue (NVMe Base 2.0 section
//! 8.13.5: a host may authenticate a queue again at any time): the
//! transaction's Authentication Send and Receive go out as ordinary
//! Fabrics commands on the queue's reactor, between its other commands,
//! so I/O keeps flowing meanwhile. The host's DH work (a key pair and the
//! shared secret when the Challenge comes, 52 ms for ffdhe8192 in a
//! release build) runs on the `lull-dhchap` helper thread
//! ([`crate::dh_helper`]), not on the reactor. `bdev_nvme_set_keys` runs
//! one on every queue of a controller.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use lull_proto::auth::host::{HostAuth, HostFailure};
use lull_proto::auth::{AuthConfig, OsEntropy, SECP_DHCHAP, SPSP_DHCHAP};
use lull_proto::fabrics::{AuthCmd, fctype};
use lull_proto::nvme::Sqe;
use lull_reactor::Context;
use lull_transport::host_conn::HostConn;

/// Larger than any DH-HMAC-CHAP message (a Challenge with ffdhe8192 is
/// 1,104 bytes), as the blocking path asks.
const AL: u32 = 4096;

/// Called once with the transaction's outcome: the reason it failed.
pub type AuthDone = Box<dyn FnOnce(&mut Context, Result<(), String>)>;

/// One transaction in flight: the host's state machine and who waits.
struct Transaction {
    /// `None` while the helper thread has it.
    host: Option<HostAuth>,
    done: Option<AuthDone>,
}

/// The state machine back from the helper thread, with what it made of a message.
type Answered = (HostAuth, Result<Option<Vec<u8>>, HostFailure>);

type Shared = Rc<RefCell<Transaction>>;

/// Runs one DH-HMAC-CHAP transaction (`t_id`, the keys and lists of `cfg`)
/// on the live queue `conn`; `done` gets the outcome on this reactor.
pub fn authenticate_live(cx: &mut Context, conn: &HostConn, cfg: Arc<AuthConfig>, t_id: u16, done: AuthDone) {
    let mut host = HostAuth::new(cfg, t_id);
    let negotiate = host.negotiate();
    let t: Shared = Rc::new(RefCell::new(Transaction {
        host: Some(host),
        done: Some(done),
    }));
    send(cx, conn, t, negotiate, false);
}

fn auth_sqe(fct: u8, len: u32) -> Sqe {
    let mut sqe = Sqe([0; 64]);
    AuthCmd {
        secp: SECP_DHCHAP,
        spsp0: SPSP_DHCHAP,
        spsp1: SPSP_DHCHAP,
        len,
    }
    .write(&mut sqe, fct);
    sqe
}

fn finish(cx: &mut Context, t: &Shared, r: Result<(), String>) {
    let done = t.borrow_mut().done.take();
    if let Some(d) = done {
        d(cx, r);
    }
}

/// Authentication Send of `message`; then the next Receive, or the end
/// when it was the last message (`last`: Success2).
fn send(cx: &mut Context, conn: &HostConn, t: Shared, message: Vec<u8>, last: bool) {
    let sqe = auth_sqe(fctype::AUTH_SEND, message.len() as u32);
    let c = conn.clone();
    let t2 = t.clone();
    let submitted = conn.submit(
        cx,
        sqe,
        message,
        0,
        Box::new(move |cx, r| match r {
            Ok(done) if done.cqe.status.is_success() => {
                if last {
                    finish(cx, &t2, Ok(()));
                } else {
                    receive(cx, &c, t2);
                }
            }
            Ok(done) => finish(cx, &t2, Err(format!("Authentication Send failed: {}", done.cqe.status))),
            Err(f) => finish(cx, &t2, Err(format!("Authentication Send failed: {}", f.error))),
        }),
    );
    if let Err(rejected) = submitted {
        finish(
            cx,
            &t,
            Err(format!("Authentication Send refused: {}", rejected.failed.error)),
        );
    }
}

/// Authentication Receive; its message goes to the host's state machine.
fn receive(cx: &mut Context, conn: &HostConn, t: Shared) {
    let sqe = auth_sqe(fctype::AUTH_RECV, AL);
    let c = conn.clone();
    let t2 = t.clone();
    let submitted = conn.submit(
        cx,
        sqe,
        Vec::new(),
        AL,
        Box::new(move |cx, r| match r {
            Ok(done) if done.cqe.status.is_success() => on_message(cx, &c, t2, done.data),
            Ok(done) => finish(
                cx,
                &t2,
                Err(format!("Authentication Receive failed: {}", done.cqe.status)),
            ),
            Err(f) => finish(cx, &t2, Err(format!("Authentication Receive failed: {}", f.error))),
        }),
    );
    if let Err(rejected) = submitted {
        finish(
            cx,
            &t,
            Err(format!("Authentication Receive refused: {}", rejected.failed.error)),
        );
    }
}

/// A controller's message for the host's state machine: fed on the helper
/// thread (a Challenge costs the DH work), answered through a reactor channel.
fn on_message(cx: &mut Context, conn: &HostConn, t: Shared, data: Vec<u8>) {
    let Some(mut host) = t.borrow_mut().host.take() else {
        return finish(cx, &t, Err("the transaction's state was lost".into()));
    };
    let (c, t2) = (conn.clone(), t.clone());
    let back = cx.channel(1, move |cx: &mut Context, (host, r): Answered| {
        let done = host.is_done();
        t2.borrow_mut().host = Some(host);
        answered(cx, &c, t2.clone(), r.map(|next| (next, done)));
    });
    let job: crate::dh_helper::Job = Box::new(move || {
        let r = host.on_message(&data, &mut OsEntropy);
        // Fails only when the reactor stopped, and the queue with it.
        let _ = back.try_send((host, r));
    });
    if let Err(job) = crate::dh_helper::run(job) {
        // No helper thread: here, answering through the channel all the same.
        job();
    }
}

/// What the host's state machine made of the controller's message.
fn answered(cx: &mut Context, conn: &HostConn, t: Shared, step: Result<(Option<Vec<u8>>, bool), HostFailure>) {
    match step {
        // Success2: the last message.
        Ok((Some(next), true)) => send(cx, conn, t, next, true),
        Ok((Some(next), false)) => send(cx, conn, t, next, false),
        Ok((None, _)) => finish(cx, &t, Ok(())),
        Err(f) => {
            let why = format!("DH-HMAC-CHAP authentication failed: {f}");
            match f.failure2 {
                // AUTH_Failure2 tells the controller; the outcome is the
                // failure whatever becomes of that command.
                Some(f2) => {
                    let sqe = auth_sqe(fctype::AUTH_SEND, f2.len() as u32);
                    let t2 = t.clone();
                    let w = why.clone();
                    let submitted = conn.submit(cx, sqe, f2, 0, Box::new(move |cx, _| finish(cx, &t2, Err(w))));
                    if submitted.is_err() {
                        finish(cx, &t, Err(why));
                    }
                }
                None => finish(cx, &t, Err(why)),
            }
        }
    }
}
