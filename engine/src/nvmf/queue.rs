//! One queue of a controller, as its connection sees it (SPDK's qpair, the
//! kernel target's `nvmet_sq`): per-connection state only (its controller
//! once connected, QID, authentication, commands held by a quiesce, the
//! reactor counting it), and the parse-then-execute step each request goes
//! through: Connect before anything else, then authentication, the other
//! Fabrics commands, admin commands or I/O. The execution itself is in
//! [`connect`], [`auth`], [`admin`] and [`io`]; what must live on the
//! reactor (keep-alive timer, event channel, queue closer) in
//! [`ctrlr_runtime`].

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use lull_proto::fabrics::fctype;
use lull_proto::nvme::status;
use lull_proto::target_queue::{MAX_SQ_ENTRIES, Request, Response};
use lull_proto::tls_psk::TlsPsk;
use lull_reactor::{Context, TimerId};
use lull_transport::conn::{QueueHandler, Responder};

use crate::nvmf::admin::{self, Outcome};
use crate::nvmf::auth::{self, AuthQueue, Step};
use crate::nvmf::auth_queue::{Owner, QueueAuth};
use crate::nvmf::connect::{self, Connected};
use crate::nvmf::ctrlr::{Controller, QueueInfo};
use crate::nvmf::ctrlr_runtime;
use crate::nvmf::io;
use crate::nvmf::request::{QueueOrigin, Route, route};
use crate::nvmf::target::Target;

/// The per-connection side of a queue pair: which controller and queue it
/// is, and the execution of its commands.
pub struct ControllerQueue {
    target: Arc<Target>,
    origin: QueueOrigin,
    ctrl: Option<Arc<Controller>>,
    qid: u16,
    /// The keep-alive check (admin queue only).
    kato_timer: Option<TimerId>,
    /// A Disconnect was answered: close once the response is sent.
    disconnecting: bool,
    /// Commands left unanswered while the target quiesces.
    held_commands: usize,
    /// The reactor index whose queue count this queue is in, once connected.
    counted_on: Option<usize>,
    /// In-band authentication of this queue, when the host has DH-HMAC-CHAP
    /// keys on the subsystem (NVMe Base 2.0 section 8.13): until it
    /// succeeds, only Fabrics commands are accepted. Its timeout and the
    /// helper thread's results reach it too.
    auth: Option<Rc<QueueAuth>>,
    /// An I/O queue's command slots, made at its Connect.
    io: Option<io::IoQueue>,
    /// The PSK that keyed this connection's TLS session (a secure_channel
    /// port): its identity names the host and subsystem Connect must name.
    secure: Option<TlsPsk>,
}

impl ControllerQueue {
    /// A queue for a new connection (no controller until Connect).
    pub fn new(target: Arc<Target>, origin: QueueOrigin) -> Self {
        ControllerQueue {
            target,
            origin,
            ctrl: None,
            qid: 0,
            kato_timer: None,
            disconnecting: false,
            held_commands: 0,
            counted_on: None,
            auth: None,
            io: None,
            secure: None,
        }
    }

    /// Connect on a queue with no controller yet: on success, the queue
    /// joins the controller, and an admin queue starts its keep-alive timer
    /// and event delivery on this reactor.
    fn connect(&mut self, cx: &mut Context, req: &Request, resp: &Responder) -> Response {
        let Connected {
            ctrl,
            qid,
            auth,
            response,
        } = match connect::connect_secure(&self.target, &self.origin, self.secure.as_ref(), req, Instant::now()) {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        if qid == 0 {
            ctrlr_runtime::arm_keep_alive(cx, &ctrl, ctrl.kato(), &mut self.kato_timer);
            ctrlr_runtime::deliver_events(cx, &ctrl, resp);
        }
        if let Some(close) = ctrlr_runtime::queue_closer(cx) {
            let info = QueueInfo {
                qid,
                reactor: cx.index(),
                peer: self.origin.peer,
            };
            ctrl.add_queue(info, close);
        }
        self.qid = qid;
        self.counted_on = Some(cx.index());
        self.target.core_io(cx.index()).queue_connected(qid == 0);
        self.auth = auth.map(|a| {
            let owner = Owner {
                target: self.target.clone(),
                ctrl: ctrl.clone(),
                qid,
                peer: self.origin.peer,
                resp: resp.clone(),
                poller: cx.current_poller(),
            };
            QueueAuth::start(cx, a, owner)
        });
        if qid != 0 {
            // As many slots as the queue will hold commands (the transport
            // clamps SQSIZE + 1 the same way when it applies the parameters).
            let entries = response.connected.map_or(1, |p| p.sq_entries.clamp(1, MAX_SQ_ENTRIES));
            let (subsystem, target) = (ctrl.subsystem.clone(), self.target.clone());
            let io = io::IoQueue::new(entries as usize, resp.clone(), subsystem, target, cx.index());
            self.io = Some(io);
        }
        self.ctrl = Some(ctrl);
        response
    }

    /// An admin command, with its outcome applied on this reactor.
    fn admin(&mut self, cx: &mut Context, req: &Request, ctrl: &Arc<Controller>, resp: &Responder) {
        match admin::execute(&self.target, &self.origin, ctrl, req, Instant::now()) {
            Outcome::Respond(r) => resp.respond(cx, r),
            Outcome::Held => {}
            Outcome::RespondAndRearm(r, kato) => {
                ctrlr_runtime::arm_keep_alive(cx, ctrl, kato, &mut self.kato_timer);
                resp.respond(cx, r);
            }
        }
    }

    /// A Fabrics command other than Connect's first and authentication.
    fn fabrics(&mut self, req: &Request, ctrl: &Controller) -> Response {
        if req.sqe.fctype() == fctype::DISCONNECT {
            // The queue closes after the response is sent (wants_close).
            self.disconnecting = true;
            return connect::disconnect(ctrl, self.qid, req.sqe.cid());
        }
        connect::fabrics(&self.target, ctrl, self.qid, req, Instant::now())
    }
}

impl QueueHandler for ControllerQueue {
    fn on_command(&mut self, cx: &mut Context, req: Request, resp: &Responder) {
        let route = route(&req.sqe, self.qid);
        let Some(ctrl) = self.ctrl.clone() else {
            let r = if route == Route::Connect {
                self.connect(cx, &req, resp)
            } else {
                // Nothing but Connect is allowed before Connect.
                Response::dnr(req.sqe.cid(), status::COMMAND_SEQUENCE_ERROR)
            };
            resp.respond(cx, r);
            return;
        };
        if route == Route::Authentication {
            if let Some(a) = &self.auth {
                a.clone().command(cx, req);
                return;
            }
            let q = AuthQueue {
                ctrl: &ctrl,
                qid: self.qid,
                peer: self.origin.peer,
                allowed: self.target.dhchap_allowed(),
            };
            // No key for this host: refused, whatever it is.
            if let Step::Respond(r) = auth::execute(None, &q, &req) {
                resp.respond(cx, r);
            }
            return;
        }
        let fabrics = matches!(route, Route::Connect | Route::Fabrics);
        if !fabrics && self.auth.as_ref().is_some_and(|a| !a.is_authenticated()) {
            // Fabrics commands (Property Get/Set, Disconnect) are allowed
            // before authentication, as on Linux's target; nothing else is.
            resp.respond(cx, Response::dnr(req.sqe.cid(), status::AUTH_REQUIRED));
            return;
        }
        if self.qid == 0 {
            // The queue delivers a command whose CID an outstanding AER holds
            // only when the host abandoned that AER (TargetQueue::on_capsule):
            // forget it, so an event never completes the new command in its place.
            ctrl.forget_aer(req.sqe.cid());
        }
        if fabrics {
            let r = self.fabrics(&req, &ctrl);
            resp.respond(cx, r);
        } else if self.qid == 0 {
            self.admin(cx, &req, &ctrl, resp);
        } else if self.target.is_quiescing() {
            // Held unanswered until the connection closes (see Target::quiesce).
            self.held_commands += 1;
        } else if let Some(io) = &self.io {
            io.execute(cx, req, ctrl.is_ready());
        } else {
            // An I/O queue gets its slots at Connect; none means a bug, not a hang.
            resp.respond(cx, Response::status(req.sqe.cid(), status::INTERNAL_ERROR));
        }
    }

    fn wants_close(&self) -> bool {
        self.disconnecting || self.ctrl.as_ref().is_some_and(|c| c.is_torn_down())
    }

    fn is_connected(&self) -> bool {
        self.ctrl.is_some()
    }

    fn on_secure_channel(&mut self, psk: &TlsPsk) {
        self.secure = Some(psk.clone());
    }
}

impl Drop for ControllerQueue {
    fn drop(&mut self) {
        if let Some(i) = self.counted_on.take() {
            self.target.core_io(i).queue_closed(self.qid == 0);
        }
        if self.held_commands > 0 {
            tracing::debug!(peer = %self.origin.peer, held = self.held_commands, "queue closed with commands held by the shutdown");
        }
        if let Some(ctrl) = self.ctrl.take() {
            if self.qid == 0 {
                ctrl.shut_down("admin queue closed");
                self.target.remove_controller(ctrl.cntlid);
            } else {
                ctrl.remove_queue(self.qid);
            }
        }
    }
}
