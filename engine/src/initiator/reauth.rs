//! DH-HMAC-CHAP re-authentication of a live queue (NVMe Base 2.0 section
//! 8.13.5: a host may authenticate a queue again at any time): the
//! transaction's Authentication Send and Receive go out as ordinary
//! Fabrics commands on the queue's reactor, between its other commands,
//! so I/O keeps flowing meanwhile. `bdev_nvme_set_keys` runs one on every
//! queue of a controller.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use lull_proto::auth::host::HostAuth;
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
    host: HostAuth,
    done: Option<AuthDone>,
}

type Shared = Rc<RefCell<Transaction>>;

/// Runs one DH-HMAC-CHAP transaction (`t_id`, the keys and lists of `cfg`)
/// on the live queue `conn`; `done` gets the outcome on this reactor. The
/// host's DH computation (two exponentiations, 52 ms for ffdhe8192 in a release
/// build: `dh_cost` in `proto/src/auth/dh.rs`) runs here too.
pub fn authenticate_live(cx: &mut Context, conn: &HostConn, cfg: Arc<AuthConfig>, t_id: u16, done: AuthDone) {
    let mut host = HostAuth::new(cfg, t_id);
    let negotiate = host.negotiate();
    let t: Shared = Rc::new(RefCell::new(Transaction { host, done: Some(done) }));
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
            Ok(done) if done.cqe.status.is_success() => on_message(cx, &c, t2, &done.data),
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

fn on_message(cx: &mut Context, conn: &HostConn, t: Shared, data: &[u8]) {
    let step = {
        let mut g = t.borrow_mut();
        let r = g.host.on_message(data, &mut OsEntropy);
        r.map(|next| (next, g.host.is_done()))
    };
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
