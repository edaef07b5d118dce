//! One queue's DH-HMAC-CHAP on its reactor: the state machine, its
//! timeout ([`auth_timeout`]), and the Authentication Sends that carry DH
//! work, which run on a helper thread so the reactor keeps serving its
//! other queues.
//!
//! A Negotiate costs the controller a key pair and a Reply the shared
//! secret: one modular exponentiation each, 26 ms for ffdhe8192 in a
//! release build (`dh_cost` in `lull-proto`), far beyond what a reactor
//! may stall. Each Authentication Send is therefore fed to the state
//! machine on the `lull-dhchap` thread ([`crate::dh_helper`]), which
//! moves the state machine there and back; its result
//! returns through a reactor channel and the Send completes then. While
//! the state machine is away, the queue's other authentication commands
//! wait, in order, and every other command sees the queue as it was
//! (authenticated or not) when the Send arrived.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use lull_proto::auth::FailureReason;
use lull_proto::auth::controller::ControllerAuth;
use lull_proto::target_queue::{Request, Response};
use lull_reactor::{Context, PollerId, Sender};
use lull_transport::conn::Responder;

use crate::dh_helper::{self, Job};
use crate::nvmf::auth::{self, AuthQueue, Step};
use crate::nvmf::auth_timeout::{AuthTimeout, auth_timeout};
use crate::nvmf::ctrlr::Controller;
use crate::nvmf::target::Target;

/// A Send fed on the helper thread, coming back.
struct Fed {
    cid: u16,
    auth: ControllerAuth,
    result: Result<(), FailureReason>,
    passed: bool,
}

/// Which queue, for the state machine's log lines and its timeout.
pub struct Owner {
    /// The target (its allowed hashes and groups, in force at each command).
    pub target: Arc<Target>,
    /// The controller.
    pub ctrl: Arc<Controller>,
    /// The queue's QID.
    pub qid: u16,
    /// The host's address.
    pub peer: SocketAddr,
    /// Where the queue's responses go.
    pub resp: Responder,
    /// The queue's connection, closed when authentication times out
    /// (`None` for a queue driven without one).
    pub poller: Option<PollerId>,
}

struct State {
    /// The state machine; `None` while the helper thread has it.
    auth: Option<ControllerAuth>,
    /// Whether the queue was authenticated when the state machine left.
    authenticated: bool,
    /// Authentication commands that arrived while it was away.
    held: VecDeque<Request>,
    timeout: AuthTimeout,
    /// The timeout fired while the state machine was away.
    expired_away: bool,
}

/// One queue's in-band authentication. Lives on the queue's reactor.
pub struct QueueAuth {
    owner: Owner,
    state: RefCell<State>,
    /// Where the helper thread sends a fed state machine back.
    back: Option<Sender<Fed>>,
}

impl QueueAuth {
    /// The authentication of a queue just connected with ATR set: its
    /// timeout starts now.
    pub fn start(cx: &mut Context, auth: ControllerAuth, owner: Owner) -> Rc<QueueAuth> {
        let q = Rc::new_cyclic(|me: &Weak<QueueAuth>| {
            let me = me.clone();
            // One Send at a time is away: room for one result.
            let back = dh_helper::available().then(|| {
                cx.channel(1, move |cx: &mut Context, fed: Fed| {
                    if let Some(q) = me.upgrade() {
                        q.returned(cx, fed);
                    }
                })
            });
            QueueAuth {
                owner,
                state: RefCell::new(State {
                    auth: Some(auth),
                    authenticated: false,
                    held: VecDeque::new(),
                    timeout: AuthTimeout::default(),
                    expired_away: false,
                }),
                back,
            }
        });
        q.watch(cx);
        q
    }

    /// Whether commands other than Fabrics ones may run on the queue.
    pub fn is_authenticated(&self) -> bool {
        let st = self.state.borrow();
        st.auth
            .as_ref()
            .map_or(st.authenticated, ControllerAuth::is_authenticated)
    }

    /// An Authentication Send or Receive on this queue.
    pub fn command(self: &Rc<Self>, cx: &mut Context, req: Request) {
        {
            let mut st = self.state.borrow_mut();
            if st.auth.is_none() || !st.held.is_empty() {
                st.held.push_back(req);
                return;
            }
        }
        self.execute(cx, req);
    }

    /// Runs one command with the state machine at hand; returns whether a
    /// Send took it to the helper thread.
    fn execute(self: &Rc<Self>, cx: &mut Context, req: Request) -> bool {
        let o = &self.owner;
        let q = AuthQueue {
            ctrl: &o.ctrl,
            qid: o.qid,
            peer: o.peer,
            allowed: o.target.dhchap_allowed(),
        };
        let step = {
            let mut st = self.state.borrow_mut();
            auth::execute(st.auth.as_mut(), &q, &req)
        };
        match step {
            Step::Respond(r) => {
                o.resp.respond(cx, r);
                self.watch(cx);
                false
            }
            Step::Send { cid, data } => self.send(cx, &q, cid, data),
        }
    }

    /// Feeds a Send's message on the helper thread (or here, without one).
    fn send(self: &Rc<Self>, cx: &mut Context, q: &AuthQueue<'_>, cid: u16, data: Vec<u8>) -> bool {
        let Some(back) = self.back.clone() else {
            let fed = {
                let mut st = self.state.borrow_mut();
                let Some(auth) = st.auth.as_mut() else { return false };
                auth::feed(auth, &data)
            };
            self.finish_send(cx, q, cid, fed);
            return false;
        };
        let mut auth = {
            let mut st = self.state.borrow_mut();
            let Some(a) = st.auth.take() else { return false };
            st.authenticated = a.is_authenticated();
            a
        };
        let job: Job = Box::new(move || {
            let (result, passed) = auth::feed(&mut auth, &data);
            // The reactor stopping is the only way this fails; the queue
            // is gone with it.
            let _ = back.try_send(Fed {
                cid,
                auth,
                result,
                passed,
            });
        });
        if let Err(job) = dh_helper::run(job) {
            // The helper is gone: run it here; the result still comes
            // back through the channel.
            job();
        }
        true
    }

    /// The Send is done: log a refusal, count a pass, complete the command
    /// (successfully: a refusal is the next Receive's AUTH_Failure1).
    fn finish_send(
        self: &Rc<Self>,
        cx: &mut Context,
        q: &AuthQueue<'_>,
        cid: u16,
        (result, passed): (Result<(), FailureReason>, bool),
    ) {
        auth::sent(q, result);
        if passed {
            q.ctrl.note_authenticated();
        }
        self.owner.resp.respond(cx, Response::ok(cid));
        self.watch(cx);
    }

    /// The helper thread's result: the state machine is back; the Send
    /// completes and the commands held meanwhile run, in order.
    fn returned(self: &Rc<Self>, cx: &mut Context, fed: Fed) {
        let Fed {
            cid,
            auth,
            result,
            passed,
        } = fed;
        let expired = {
            let mut st = self.state.borrow_mut();
            st.auth = Some(auth);
            std::mem::take(&mut st.expired_away)
        };
        let o = &self.owner;
        let q = AuthQueue {
            ctrl: &o.ctrl,
            qid: o.qid,
            peer: o.peer,
            allowed: o.target.dhchap_allowed(),
        };
        self.finish_send(cx, &q, cid, (result, passed));
        if expired {
            self.expire(cx);
        }
        loop {
            let next = {
                let mut st = self.state.borrow_mut();
                if st.auth.is_none() {
                    break;
                }
                st.held.pop_front()
            };
            let Some(req) = next else { break };
            if self.execute(cx, req) {
                break;
            }
        }
    }

    /// (Re)starts or stops the timeout after a command: it runs while the
    /// queue is unauthenticated or a transaction is under way.
    fn watch(self: &Rc<Self>, cx: &mut Context) {
        let mut st = self.state.borrow_mut();
        let Some(a) = st.auth.as_ref() else {
            // Away: the timer keeps running; it is looked at on return.
            return;
        };
        let pending = a.in_progress() || !a.is_authenticated();
        let timeout = auth_timeout(self.owner.ctrl.kato());
        let me = Rc::downgrade(self);
        st.timeout.update(cx, pending, timeout, move |cx| {
            if let Some(q) = me.upgrade() {
                q.expire(cx);
            }
        });
    }

    /// The timeout fired: close an unauthenticated queue, drop a
    /// re-authentication under way (SPDK's target's rule).
    fn expire(&self, cx: &mut Context) {
        let o = &self.owner;
        let (cntlid, qid, peer) = (o.ctrl.cntlid, o.qid, o.peer);
        let timeout = auth_timeout(o.ctrl.kato());
        {
            let mut st = self.state.borrow_mut();
            let Some(a) = st.auth.as_mut() else {
                st.expired_away = true;
                return;
            };
            if a.is_authenticated() {
                if a.in_progress() {
                    a.abandon();
                    tracing::warn!(%peer, cntlid, qid, "DH-HMAC-CHAP re-authentication timed out after {} ms: the transaction is dropped, the queue stays authenticated", timeout.as_millis());
                }
                return;
            }
        }
        tracing::warn!(%peer, cntlid, qid, "DH-HMAC-CHAP authentication not completed within {} ms: queue closed", timeout.as_millis());
        if let Some(p) = o.poller {
            // Drops the connection and its queue (an admin queue's
            // controller with it), as a Disconnect would.
            let _ = cx.unregister(p);
        }
    }
}
