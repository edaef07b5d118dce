//! NVMe-oF controllers (dynamic model) and the execution of their admin,
//! Fabrics and I/O commands.
//!
//! A controller is created by an admin-queue Connect and lives until its
//! admin queue closes, its keep-alive timer expires, or the host disables it.
//! Its queues may sit on different reactors; the controller's state is
//! behind a mutex touched only by admin and Connect commands, never by I/O.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lull_proto::auth::controller::{ControllerAuth, ReceiveError};
use lull_proto::auth::{OsEntropy, SECP_DHCHAP, SPSP_DHCHAP};
use lull_proto::fabrics::{
    AuthCmd, CONNECT_AUTHREQ_ATR, ConnectCmd, ConnectData, InvalidParameter, PropertyCmd, connect_offset, fctype,
    property,
};
use lull_proto::nvme::{Cqe, Status, admin_opc, status};
use lull_proto::target_queue::{QueueParams, Request, Response, TargetQueue};
use lull_reactor::{Context, PollerId, ReactorHandle, Sender, TimerId};
use lull_transport::conn::{QueueHandler, Responder};

use crate::identify::{self, ControllerIdentity};
use crate::io;
use crate::logpage::{self, lid};
use crate::subsystem::{Subsystem, SubsystemKind};
use crate::target::Target;

/// Feature identifiers handled (NVMe Base 2.0 figure 271).
mod fid {
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0B;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
}

/// Most I/O queues `max_io_qpairs_per_ctrlr` may allow.
pub const MAX_IO_QUEUES: u16 = 1024;
/// I/O queues a controller may have unless the transport says otherwise:
/// SPDK's default `max_io_qpairs_per_ctrlr`, 127 (128 queue pairs with the
/// admin queue).
pub const DEFAULT_IO_QUEUES: u16 = 127;

/// Mutable controller state.
struct State {
    cc: u32,
    csts: u32,
    kato: Duration,
    aec: u32,
    /// I/O queues granted by Set Features Number of Queues (0: not set yet).
    io_queues: u16,
    /// The transport's `max_io_qpairs_per_ctrlr` when this controller was made.
    max_io_queues: u16,
    last_keep_alive: Instant,
    /// Outstanding Asynchronous Event Requests (CIDs on the admin queue).
    aers: Vec<u16>,
    /// Every queue of this controller: (QID, reactor, connection poller) to
    /// close them, and the host's address of its connection.
    queues: Vec<(u16, ReactorHandle, PollerId, SocketAddr)>,
    dead: bool,
    /// Completes AERs on the admin queue's reactor (its handler holds the queue's completer).
    aen_tx: Option<Sender<u32>>,
    /// Events raised while no AER was outstanding: delivered by the next AER.
    pending_aens: Vec<u32>,
    /// NSIDs whose attributes changed since the host last read log page 04h.
    changed_ns: Vec<u32>,
    /// A Namespace Attribute Changed notice was sent and the host has not read
    /// log page 04h yet: further changes are recorded, not notified (NVMe Base
    /// 2.0 section 5.2: an event type is masked until its log page is read).
    ns_notice_masked: bool,
}

/// Completion DW0 of a Namespace Attribute Changed notice (NVMe Base 2.0
/// figure 150): event type 2h (Notice), information 00h, log page 04h.
const AEN_NS_ATTRIBUTE_CHANGED: u32 = 0x0004_0002;
/// AEC bit: Namespace Attribute Notices enabled (NVMe Base 2.0 figure 320).
const AEC_NS_ATTRIBUTE: u32 = 1 << 8;
/// At most this many NSIDs are listed in log page 04h; more make it FFFFFFFFh.
const CHANGED_NS_MAX: usize = 1024;

/// How long a controller that was never enabled (CC.EN 0, e.g. still
/// authenticating) may go without a Keep Alive before it is torn down:
/// KATO proper starts at CC.EN. A host's admin command timeout (Linux: 60 s).
const NOT_ENABLED_GRACE: Duration = Duration::from_secs(60);

/// One connected queue of a controller (`nvmf_subsystem_get_qpairs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    /// QID (0: the admin queue).
    pub qid: u16,
    /// Index of the reactor serving it.
    pub reactor: usize,
    /// The host's address and port of its connection (SPDK's
    /// `peer_address`: with an empty HOSTNQN, the only way to tell hosts apart).
    pub peer: SocketAddr,
}

/// One controller.
pub struct Controller {
    /// CNTLID.
    pub cntlid: u16,
    /// Its subsystem.
    pub subsystem: Arc<Subsystem>,
    /// The host's NQN.
    pub hostnqn: String,
    /// The host's HOSTID.
    pub hostid: [u8; 16],
    /// The port its admin queue came through.
    pub listener: SocketAddr,
    ready: AtomicBool,
    state: Mutex<State>,
}

impl Controller {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether CSTS.RDY is set (I/O is accepted).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Closes every queue of this controller (keep-alive expiry, admin queue
    /// gone). Idempotent.
    pub fn shut_down(&self, why: &str) {
        let queues = {
            let mut s = self.state();
            if s.dead {
                return;
            }
            s.dead = true;
            std::mem::take(&mut s.queues)
        };
        self.ready.store(false, Ordering::Release);
        tracing::info!(cntlid = self.cntlid, subnqn = %self.subsystem.nqn, hostnqn = %shown(&self.hostnqn), "controller torn down: {why}");
        for (_, reactor, id, _) in queues {
            let _ = reactor.try_send(move |cx| {
                let _ = cx.unregister(id);
            });
        }
    }

    /// Its connected queues, by QID.
    pub fn queue_list(&self) -> Vec<QueueInfo> {
        let mut v: Vec<QueueInfo> = self
            .state()
            .queues
            .iter()
            .map(|(q, h, _, peer)| QueueInfo {
                qid: *q,
                reactor: h.index(),
                peer: *peer,
            })
            .collect();
        v.sort_unstable_by_key(|q| q.qid);
        v
    }

    fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// Records that namespace `nsid` was added or removed and, when the host
    /// enabled Namespace Attribute Notices and none is unacknowledged, sends
    /// one (completing an outstanding AER, or the next one).
    pub fn namespace_changed(&self, nsid: u32) {
        let mut s = self.state();
        if s.dead || s.aec & AEC_NS_ATTRIBUTE == 0 {
            return;
        }
        if !s.changed_ns.contains(&nsid) {
            s.changed_ns.push(nsid);
        }
        if s.ns_notice_masked {
            return;
        }
        s.ns_notice_masked = true;
        let tx = s.aen_tx.clone();
        drop(s);
        if let Some(tx) = tx
            && tx.try_send(AEN_NS_ATTRIBUTE_CHANGED).is_err()
        {
            tracing::warn!(cntlid = self.cntlid, "Namespace Attribute Changed notice not delivered");
        }
    }

    /// Log page 04h and, unless `retain` (RAE), the end of the notice's mask.
    fn take_changed_namespaces(&self, retain: bool) -> Vec<u8> {
        let mut s = self.state();
        let mut b = vec![0u8; 4096];
        if s.changed_ns.len() > CHANGED_NS_MAX {
            b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        } else {
            let mut list = s.changed_ns.clone();
            list.sort_unstable();
            for (i, nsid) in list.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
            }
        }
        if !retain {
            s.changed_ns.clear();
            s.ns_notice_masked = false;
        }
        b
    }
}

/// Whether a value written to CC is one this controller accepts (NVMe Base
/// 2.0 figure 41): reserved bits clear; CSS NVM (0), MPS 4 KiB (0), AMS
/// round robin (0), SHN not the reserved 11b; IOSQES 6 and IOCQES 4 (or 0
/// while the controller is disabled).
fn cc_valid(v: u64) -> bool {
    let Ok(v) = u32::try_from(v) else { return false };
    let reserved = 0xFF00_000E;
    let (css, mps, ams, shn) = ((v >> 4) & 7, (v >> 7) & 0xF, (v >> 11) & 7, (v >> 14) & 3);
    let (iosqes, iocqes) = ((v >> 16) & 0xF, (v >> 20) & 0xF);
    let queues_ok = (iosqes == 6 && iocqes == 4) || (v & 1 == 0 && iosqes == 0 && iocqes == 0);
    v & reserved == 0 && css == 0 && mps == 0 && ams == 0 && shn != 3 && queues_ok
}

/// An NQN for a log line: an empty one (a host that sent no HOSTNQN) says so.
fn shown(nqn: &str) -> &str {
    if nqn.is_empty() { "(empty)" } else { nqn }
}

/// CAP (NVMe Base 2.0 figure 36): MQES (`max_queue_depth` - 1), CQR,
/// TO = 7.5 s, CSS NVM, MPSMIN 4 KiB.
fn cap(max_queue_depth: u32) -> u64 {
    let mqes = u64::from(max_queue_depth.saturating_sub(1));
    mqes | 1 << 16 | 15 << 24 | 1 << 37
}

/// The per-connection side of a queue pair: which controller and queue it is.
pub struct QueueBinding {
    target: Arc<Target>,
    peer: SocketAddr,
    listener: SocketAddr,
    /// The local address the connection arrived on (concrete even for a wildcard listener).
    arrived_on: SocketAddr,
    io_in_capsule_data: u32,
    ctrl: Option<Arc<Controller>>,
    qid: u16,
    kato_timer: Option<TimerId>,
    disconnecting: bool,
    /// Commands left unanswered while the target quiesces.
    held: usize,
    /// The reactor index whose queue count this queue is in, once connected.
    counted_on: Option<usize>,
    /// In-band authentication of this queue, when the host has DH-HMAC-CHAP
    /// keys on the subsystem (NVMe Base 2.0 section 8.13): until it
    /// succeeds, only Fabrics commands are accepted.
    auth: Option<ControllerAuth>,
    /// An I/O queue's command slots, made at its Connect.
    io: Option<io::IoQueue>,
}

impl QueueBinding {
    /// A binding for a new connection from `peer`, accepted on `listener`
    /// (the bound address, perhaps a wildcard) at `arrived_on` (no controller
    /// until Connect).
    pub fn new(
        target: Arc<Target>,
        peer: SocketAddr,
        listener: SocketAddr,
        arrived_on: SocketAddr,
        io_in_capsule_data: u32,
    ) -> Self {
        QueueBinding {
            target,
            peer,
            listener,
            arrived_on,
            io_in_capsule_data,
            ctrl: None,
            qid: 0,
            kato_timer: None,
            disconnecting: false,
            held: 0,
            counted_on: None,
            auth: None,
            io: None,
        }
    }

    fn connect(&mut self, cx: &mut Context, cmd: &Request, resp: &Responder) -> Response {
        let cid = cmd.sqe.cid();
        let c = ConnectCmd::parse(&cmd.sqe);
        let invalid = |p: InvalidParameter| Response::dnr(cid, status::CONNECT_INVALID_PARAMETERS).with_dw0(p.dw0());
        if c.recfmt != 0 {
            return Response::dnr(cid, status::CONNECT_INCOMPATIBLE_FORMAT);
        }
        if cmd.data.len() != lull_proto::fabrics::CONNECT_DATA_LEN {
            return Response::dnr(cid, status::INVALID_FIELD);
        }
        let data = match ConnectData::parse(&cmd.data) {
            Ok(d) => d,
            Err(p) => return invalid(p),
        };
        let (io_depth, aq_depth) = self.target.queue_depths();
        let max_entries = if c.qid == 0 { aq_depth } else { io_depth };
        // SQSIZE is 0's based; a 1-entry queue is not allowed, the admin queue needs 32.
        let min_sqsize = if c.qid == 0 { 31 } else { 1 };
        if c.sqsize < min_sqsize || u32::from(c.sqsize) + 1 > max_entries {
            return invalid(InvalidParameter::sqe(connect_offset::SQSIZE));
        }
        let Some(subsystem) = self.target.subsystem(&data.subnqn) else {
            tracing::warn!(
                peer = %self.peer,
                subnqn = %data.subnqn,
                hostnqn = %shown(&data.hostnqn),
                "Connect refused: no subsystem {} on this target (it serves {})",
                data.subnqn,
                self.served_nqns()
            );
            return invalid(InvalidParameter::data(connect_offset::SUBNQN));
        };
        if !self.target.reachable(&subsystem, self.listener) {
            tracing::warn!(peer = %self.peer, listener = %self.listener, subnqn = %data.subnqn, "Connect refused: the subsystem does not listen on this port");
            return invalid(InvalidParameter::data(connect_offset::SUBNQN));
        }
        if let Err(why) = subsystem.admit(&data.hostnqn) {
            tracing::warn!(peer = %self.peer, hostnqn = %shown(&data.hostnqn), subnqn = %data.subnqn, "Connect refused (Connect Invalid Host): {why}");
            return Response::dnr(cid, status::CONNECT_INVALID_HOST);
        }
        let me = (c.qid, cx.handle(), cx.current_poller());
        let ctrl = if c.qid == 0 {
            if data.cntlid != 0xFFFF {
                return invalid(InvalidParameter::data(connect_offset::CNTLID));
            }
            let Ok(kato) = self.target.kato_for(c.kato) else {
                tracing::warn!(peer = %self.peer, kato_ms = c.kato, max_ms = self.target.settings().kato_max_ms, "Connect refused: KATO above kato_max_ms");
                return invalid(InvalidParameter::sqe(connect_offset::KATO));
            };
            let listener = self.listener;
            let Some(ctrl) = self.target.new_controller(subsystem, |cntlid, subsystem| Controller {
                cntlid,
                subsystem,
                hostnqn: data.hostnqn.clone(),
                hostid: data.hostid,
                listener,
                ready: AtomicBool::new(false),
                state: Mutex::new(State {
                    cc: 0,
                    csts: 0,
                    kato,
                    aec: 0,
                    io_queues: 0,
                    max_io_queues: self.target.max_io_queues(),
                    last_keep_alive: Instant::now(),
                    aers: Vec::new(),
                    queues: Vec::new(),
                    dead: false,
                    aen_tx: None,
                    pending_aens: Vec::new(),
                    changed_ns: Vec::new(),
                    ns_notice_masked: false,
                }),
            }) else {
                return Response::status(cid, status::CONNECT_CONTROLLER_BUSY);
            };
            self.arm_keep_alive(cx, &ctrl, kato);
            let weak = Arc::downgrade(&ctrl);
            let later = resp.clone();
            let tx = cx.channel(8, move |cx: &mut Context, dw0: u32| {
                let Some(ctrl) = weak.upgrade() else { return };
                let mut s = ctrl.state();
                if s.dead {
                    return;
                }
                if s.aers.is_empty() {
                    s.pending_aens.push(dw0);
                } else {
                    let cid = s.aers.remove(0);
                    drop(s);
                    later.respond(cx, Response::ok(cid).with_dw0(dw0));
                }
            });
            ctrl.state().aen_tx = Some(tx);
            ctrl
        } else {
            let Some(ctrl) = self.target.controller(data.cntlid) else {
                return invalid(InvalidParameter::data(connect_offset::CNTLID));
            };
            if ctrl.subsystem.nqn != data.subnqn || ctrl.hostnqn != data.hostnqn {
                tracing::warn!(
                    peer = %self.peer,
                    cntlid = data.cntlid,
                    "I/O queue Connect refused: controller {} belongs to host {} on {}, not to host {} on {}",
                    data.cntlid,
                    shown(&ctrl.hostnqn),
                    ctrl.subsystem.nqn,
                    shown(&data.hostnqn),
                    data.subnqn
                );
                return invalid(InvalidParameter::data(connect_offset::CNTLID));
            }
            if ctrl.subsystem.kind == SubsystemKind::Discovery || !ctrl.is_ready() {
                return invalid(InvalidParameter::sqe(connect_offset::QID));
            }
            let s = ctrl.state();
            // The QIDs allowed: those granted by Number of Queues, or before
            // that feature is set, what it would grant (the transport's limit).
            let max_qid = if s.io_queues == 0 { s.max_io_queues } else { s.io_queues };
            if c.qid > max_qid || s.queues.iter().any(|(qid, _, _, _)| *qid == c.qid) {
                tracing::warn!(peer = %self.peer, cntlid = ctrl.cntlid, qid = c.qid, max_qid, "I/O queue Connect refused: QID {} is beyond the controller's {} I/O queues or in use", c.qid, max_qid);
                drop(s);
                // Invalid Queue Identifier, as SPDK's target and Linux nvmet
                // answer a QID beyond the limit or one already connected.
                return Response::dnr(cid, status::INVALID_QUEUE_IDENTIFIER);
            }
            drop(s);
            ctrl
        };
        if let (qid, handle, Some(id)) = me {
            ctrl.state().queues.push((qid, handle, id, self.peer));
        }
        self.qid = c.qid;
        self.counted_on = Some(cx.index());
        self.target.core_io(cx.index()).queue_connected(c.qid == 0);
        tracing::debug!(peer = %self.peer, cntlid = ctrl.cntlid, qid = c.qid, sqsize = c.sqsize, "Connect");
        let cntlid = ctrl.cntlid;
        // Every queue of a host with keys authenticates, the admin queue and
        // each I/O queue (section 8.13.1); ATR tells the host so.
        // nvmf_set_config's lists narrow what the host entry allows.
        let allowed = self.target.dhchap_allowed();
        self.auth = ctrl
            .subsystem
            .host_dhchap(&ctrl.hostnqn)
            .map(|c| ControllerAuth::new(allowed.restrict(c)));
        let atr = if self.auth.is_some() { CONNECT_AUTHREQ_ATR } else { 0 };
        if c.qid != 0 {
            let entries = usize::from(c.sqsize) + 1;
            let (subsystem, target) = (ctrl.subsystem.clone(), self.target.clone());
            self.io = Some(io::IoQueue::new(entries, resp.clone(), subsystem, target, cx.index()));
        }
        self.ctrl = Some(ctrl);
        Response::ok(cid)
            .with_dw0(u32::from(cntlid) | atr)
            .with_connected(QueueParams {
                qid: c.qid,
                sq_entries: u32::from(c.sqsize) + 1,
                sq_flow_control_disabled: c.sq_flow_control_disabled(),
            })
    }

    /// Authentication Send and Receive (fctype 05h/06h) on a connected
    /// queue: the data goes to, and comes from, the queue's DH-HMAC-CHAP
    /// state machine.
    fn auth_command(&mut self, cx: &mut Context, cmd: &Request, ctrl: &Controller, resp: &Responder) {
        let cid = cmd.sqe.cid();
        let fail = |s: Status| Response::dnr(cid, s);
        let a = AuthCmd::parse(&cmd.sqe);
        let Some(auth) = self.auth.as_mut() else {
            // The host has no key here: nothing to authenticate with.
            tracing::debug!(peer = %self.peer, cntlid = ctrl.cntlid, qid = self.qid, "authentication command refused: the host has no DH-HMAC-CHAP key on this subsystem");
            resp.respond(cx, fail(status::INVALID_FIELD));
            return;
        };
        if a.secp != SECP_DHCHAP || a.spsp0 != SPSP_DHCHAP || a.spsp1 != SPSP_DHCHAP || a.len == 0 {
            resp.respond(cx, fail(status::INVALID_FIELD));
            return;
        }
        if cmd.sqe.fctype() == fctype::AUTH_SEND {
            if a.len as usize != cmd.data.len() {
                resp.respond(cx, fail(status::INVALID_FIELD));
                return;
            }
            if let Err(reason) = auth.on_send(&cmd.data, &mut OsEntropy) {
                tracing::warn!(peer = %self.peer, cntlid = ctrl.cntlid, qid = self.qid, hostnqn = %shown(&ctrl.hostnqn), "DH-HMAC-CHAP authentication failed: {reason}");
            }
            resp.respond(cx, Response::ok(cid));
            return;
        }
        let al = (a.len as usize).min(cmd.c2h_len as usize);
        match auth.on_receive(al) {
            Ok(mut data) => {
                // The whole buffer, zeroes after the message, as Linux's
                // target sends it: hosts size the transfer by AL, and the
                // message says its own length.
                data.resize(data.len().max(al), 0);
                if auth.is_authenticated() {
                    tracing::debug!(peer = %self.peer, cntlid = ctrl.cntlid, qid = self.qid, "queue authenticated");
                }
                resp.respond(cx, Response::ok_with_data(cid, data));
            }
            Err(ReceiveError::BufferTooSmall { .. }) => {
                resp.respond(cx, fail(status::INVALID_FIELD));
            }
        }
    }

    /// The NVM subsystems' NQNs, for a refused Connect's log line.
    fn served_nqns(&self) -> String {
        let nqns: Vec<String> = self
            .target
            .subsystems()
            .iter()
            .filter(|s| s.kind == SubsystemKind::Nvm)
            .map(|s| s.nqn.clone())
            .collect();
        match nqns.len() {
            0 => "no NVM subsystem".to_string(),
            n if n > 8 => format!("{} and {} more", nqns[..8].join(", "), n - 8),
            _ => nqns.join(", "),
        }
    }

    fn arm_keep_alive(&mut self, cx: &mut Context, ctrl: &Arc<Controller>, kato: Duration) {
        if let Some(t) = self.kato_timer.take() {
            cx.cancel_timer(t);
        }
        if kato.is_zero() {
            return;
        }
        // Check at a tenth of KATO (at least every 100 ms), so expiry is seen
        // within KATO + KATO/10.
        let period = (kato / 10).max(Duration::from_millis(100));
        let weak: Weak<Controller> = Arc::downgrade(ctrl);
        let me: Rc<Cell<Option<TimerId>>> = Rc::new(Cell::new(None));
        let me2 = me.clone();
        let timer = cx.timer_periodic(period, move |cx| {
            let ctrl = weak.upgrade().filter(|c| !c.is_dead());
            let Some(ctrl) = ctrl else {
                // The controller is gone: this timer has nothing left to watch.
                if let Some(id) = me2.get() {
                    cx.cancel_timer(id);
                }
                return;
            };
            let (expired, kato) = {
                let s = ctrl.state();
                // Until the host enables the controller (it may still be
                // authenticating: an ffdhe8192 exponentiation on a slow host
                // takes longer than a 5 s KATO), only a host that died is
                // reaped; KATO proper runs from CC.EN, as on Linux's target.
                let limit = if s.cc & 1 == 0 {
                    s.kato.max(NOT_ENABLED_GRACE)
                } else {
                    s.kato
                };
                (!s.kato.is_zero() && s.last_keep_alive.elapsed() > limit, s.kato)
            };
            if expired {
                ctrl.shut_down(&format!("no Keep Alive within KATO {} ms", kato.as_millis()));
            }
        });
        me.set(timer.as_ref().ok().copied());
        self.kato_timer = timer.ok();
    }

    fn fabrics(&mut self, cmd: &Request, ctrl: &Arc<Controller>) -> Response {
        let cid = cmd.sqe.cid();
        let ok = Response::ok(cid);
        match cmd.sqe.fctype() {
            fctype::CONNECT => Response::dnr(cid, status::COMMAND_SEQUENCE_ERROR),
            fctype::PROPERTY_GET | fctype::PROPERTY_SET if self.qid != 0 => Response::dnr(cid, status::INVALID_FIELD),
            fctype::PROPERTY_GET => {
                let Some(p) = PropertyCmd::parse(&cmd.sqe) else {
                    return Response::dnr(cid, status::INVALID_FIELD);
                };
                let s = ctrl.state();
                let v: u64 = match (p.offset, p.size) {
                    (property::CAP, 8) => cap(self.target.queue_depths().0),
                    (property::VS, 4) => u64::from(identify::NVME_VERSION),
                    (property::CC, 4) => u64::from(s.cc),
                    (property::CSTS, 4) => u64::from(s.csts),
                    _ => {
                        return Response::dnr(cid, status::INVALID_FIELD);
                    }
                };
                Cqe {
                    cid,
                    dw0: v as u32,
                    dw1: (v >> 32) as u32,
                    ..Cqe::default()
                }
                .into()
            }
            fctype::PROPERTY_SET => {
                let Some(p) = PropertyCmd::parse(&cmd.sqe) else {
                    return Response::dnr(cid, status::INVALID_FIELD);
                };
                if p.offset != property::CC || p.size != 4 || !cc_valid(p.value) {
                    return Response::dnr(cid, status::INVALID_FIELD);
                }
                self.set_cc(ctrl, p.value as u32);
                ok
            }
            fctype::DISCONNECT => {
                // The queue closes after the response is sent (wants_close).
                if let Some(c) = &self.ctrl {
                    let mut s = c.state();
                    let qid = self.qid;
                    s.queues.retain(|(q, _, _, _)| *q != qid);
                }
                self.disconnecting = true;
                ok
            }
            _ => Response::dnr(cid, status::INVALID_OPCODE),
        }
    }

    fn set_cc(&self, ctrl: &Arc<Controller>, cc: u32) {
        let mut s = ctrl.state();
        let (was_enabled, enable) = (s.cc & 1 != 0, cc & 1 != 0);
        s.cc = cc;
        if enable && !was_enabled {
            // CC.EN 0 -> 1: ready at once; KATO counts from here.
            s.csts |= 1;
            s.last_keep_alive = Instant::now();
            ctrl.ready.store(true, Ordering::Release);
        } else if !enable && was_enabled {
            // CC.EN 1 -> 0: controller reset; I/O queues go away.
            s.csts &= !1;
            ctrl.ready.store(false, Ordering::Release);
        }
        let shn = (cc >> 14) & 3;
        if shn != 0 {
            // Shutdown notification: nothing to flush in memory; report complete (SHST = 10b).
            s.csts = (s.csts & !(3 << 2)) | (2 << 2);
            ctrl.ready.store(false, Ordering::Release);
        } else {
            s.csts &= !(3 << 2);
        }
    }

    fn admin(&mut self, cx: &mut Context, cmd: &Request, ctrl: &Arc<Controller>, resp: &Responder) {
        let sqe = &cmd.sqe;
        let cid = sqe.cid();
        let fail = |s: Status| Response::dnr(cid, s);
        // The queue delivers a command whose CID an outstanding AER holds only
        // when the host abandoned that AER (TargetQueue::on_capsule): forget it,
        // so an event never completes the new command in its place.
        ctrl.state().aers.retain(|&held| held != cid);
        if sqe.opc() == admin_opc::FABRICS {
            let r = self.fabrics(cmd, ctrl);
            resp.respond(cx, r);
            return;
        }
        if !ctrl.is_ready() {
            resp.respond(cx, fail(status::COMMAND_SEQUENCE_ERROR));
            return;
        }
        let discovery = ctrl.subsystem.kind == SubsystemKind::Discovery;
        match sqe.opc() {
            admin_opc::IDENTIFY => {
                let cns = sqe.cdw(10) as u8;
                let s = &ctrl.subsystem;
                let data = match cns {
                    0x01 => Some(identify::controller(&ControllerIdentity {
                        subsystem: s,
                        cntlid: ctrl.cntlid,
                        io_in_capsule_data: self.io_in_capsule_data,
                        maxcmd: self.target.queue_depths().0 as u16,
                    })),
                    0x00 if !discovery => match s.namespace(sqe.nsid()) {
                        Some(ns) => Some(identify::namespace(&ns)),
                        // An inactive but valid NSID reads as zeroes.
                        None if sqe.nsid() != 0 && sqe.nsid() <= identify::MAX_NAMESPACES => {
                            Some(vec![0u8; identify::IDENTIFY_LEN])
                        }
                        None => None,
                    },
                    0x02 if !discovery && sqe.nsid() < 0xFFFF_FFFE => Some(identify::active_namespaces(s, sqe.nsid())),
                    0x03 if !discovery => s.namespace(sqe.nsid()).as_ref().map(identify::namespace_descriptors),
                    _ => None,
                };
                match data {
                    Some(mut d) => {
                        d.truncate(cmd.c2h_len as usize);
                        resp.respond(cx, Response::ok_with_data(cid, d));
                    }
                    None if cns == 0x00 || cns == 0x03 => {
                        resp.respond(cx, fail(status::INVALID_NAMESPACE));
                    }
                    None => {
                        resp.respond(cx, fail(status::INVALID_FIELD));
                    }
                }
            }
            admin_opc::GET_LOG_PAGE => {
                let cdw10 = sqe.cdw(10);
                let log = cdw10 as u8;
                let numd = (u64::from(sqe.cdw(11) & 0xFFFF) << 16 | u64::from(cdw10 >> 16)) + 1;
                let offset = u64::from(sqe.cdw(12)) | u64::from(sqe.cdw(13)) << 32;
                let len = (numd * 4) as usize;
                if !offset.is_multiple_of(4) || len > cmd.c2h_len as usize {
                    resp.respond(cx, fail(status::INVALID_FIELD));
                    return;
                }
                let page = match (log, discovery) {
                    (lid::ERROR, _) => logpage::error_log(),
                    (lid::SMART, false) => logpage::smart(&ctrl.subsystem),
                    (lid::FIRMWARE_SLOT, false) => logpage::firmware_slot(),
                    (lid::CHANGED_NS, false) => ctrl.take_changed_namespaces(cdw10 & (1 << 15) != 0),
                    (lid::COMMANDS_EFFECTS, false) => logpage::commands_effects(),
                    (lid::DISCOVERY, true) => self.target.discovery_log(&ctrl.hostnqn, self.arrived_on),
                    _ => {
                        resp.respond(cx, fail(status::INVALID_LOG_PAGE));
                        return;
                    }
                };
                if offset >= page.len() as u64 && offset != 0 {
                    resp.respond(cx, fail(status::INVALID_FIELD));
                    return;
                }
                resp.respond(cx, Response::ok_with_data(cid, logpage::slice(&page, offset, len)));
            }
            admin_opc::SET_FEATURES | admin_opc::GET_FEATURES => {
                let set = sqe.opc() == admin_opc::SET_FEATURES;
                let cdw10 = sqe.cdw(10);
                if set && cdw10 & (1 << 31) != 0 {
                    resp.respond(cx, fail(status::FEATURE_NOT_SAVEABLE));
                    return;
                }
                let mut s = ctrl.state();
                let dw0 = match (cdw10 as u8, set) {
                    (fid::NUMBER_OF_QUEUES, _) if discovery => None,
                    (fid::NUMBER_OF_QUEUES, true) => {
                        let cdw11 = sqe.cdw(11);
                        let (nsqr, ncqr) = ((cdw11 & 0xFFFF) as u16, (cdw11 >> 16) as u16);
                        if nsqr == 0xFFFF || ncqr == 0xFFFF {
                            None
                        } else {
                            // 0's based counts; at most max_io_qpairs_per_ctrlr.
                            let granted = nsqr.max(ncqr).min(s.max_io_queues - 1);
                            s.io_queues = granted + 1;
                            Some(u32::from(granted) << 16 | u32::from(granted))
                        }
                    }
                    (fid::NUMBER_OF_QUEUES, false) => {
                        let n = if s.io_queues == 0 { s.max_io_queues } else { s.io_queues };
                        let g = u32::from(n - 1);
                        Some(g << 16 | g)
                    }
                    (fid::ASYNC_EVENT_CONFIG, true) => {
                        s.aec = sqe.cdw(11);
                        Some(0)
                    }
                    (fid::ASYNC_EVENT_CONFIG, false) => Some(s.aec),
                    (fid::KEEP_ALIVE_TIMER, true) => {
                        let Ok(kato) = self.target.kato_for(sqe.cdw(11)) else {
                            drop(s);
                            resp.respond(cx, fail(status::INVALID_FIELD));
                            return;
                        };
                        s.kato = kato;
                        s.last_keep_alive = Instant::now();
                        let kato = s.kato;
                        drop(s);
                        self.arm_keep_alive(cx, ctrl, kato);
                        resp.respond(cx, Response::ok(cid));
                        return;
                    }
                    (fid::KEEP_ALIVE_TIMER, false) => Some(s.kato.as_millis() as u32),
                    _ => None,
                };
                drop(s);
                let cqe = match dw0 {
                    Some(dw0) => Response::ok(cid).with_dw0(dw0),
                    None => fail(status::INVALID_FIELD),
                };
                resp.respond(cx, cqe);
            }
            admin_opc::KEEP_ALIVE => {
                ctrl.state().last_keep_alive = Instant::now();
                resp.respond(cx, Response::ok(cid));
            }
            admin_opc::ASYNC_EVENT_REQUEST => {
                let mut s = ctrl.state();
                if s.aers.len() > usize::from(identify::AERL) {
                    drop(s);
                    resp.respond(cx, Response::status(cid, status::AER_LIMIT_EXCEEDED));
                } else if s.pending_aens.is_empty() {
                    // Held until an event occurs (see Controller::namespace_changed).
                    s.aers.push(cid);
                } else {
                    let dw0 = s.pending_aens.remove(0);
                    drop(s);
                    resp.respond(cx, Response::ok(cid).with_dw0(dw0));
                }
            }
            admin_opc::ABORT => {
                // Abort is best effort: lull completes commands as they arrive, so
                // report "not aborted" (DW0 bit 0 set), as the specification allows.
                resp.respond(cx, Response::ok(cid).with_dw0(1));
            }
            _ => {
                resp.respond(cx, fail(status::INVALID_OPCODE));
            }
        }
    }
}

impl QueueHandler for QueueBinding {
    fn on_command(&mut self, cx: &mut Context, cmd: Request, resp: &Responder) {
        let Some(ctrl) = self.ctrl.clone() else {
            let cqe = if TargetQueue::is_fabrics_connect(&cmd.sqe) {
                self.connect(cx, &cmd, resp)
            } else {
                // Nothing but Connect is allowed before Connect.
                Response::dnr(cmd.sqe.cid(), status::COMMAND_SEQUENCE_ERROR)
            };
            resp.respond(cx, cqe);
            return;
        };
        let fabrics = cmd.sqe.opc() == admin_opc::FABRICS;
        if fabrics && matches!(cmd.sqe.fctype(), fctype::AUTH_SEND | fctype::AUTH_RECV) {
            self.auth_command(cx, &cmd, &ctrl, resp);
            return;
        }
        if !fabrics && self.auth.as_ref().is_some_and(|a| !a.is_authenticated()) {
            // Fabrics commands (Property Get/Set, Disconnect) are allowed
            // before authentication, as on Linux's target; nothing else is.
            resp.respond(cx, Response::dnr(cmd.sqe.cid(), status::AUTH_REQUIRED));
            return;
        }
        if self.qid == 0 {
            self.admin(cx, &cmd, &ctrl, resp);
        } else if cmd.sqe.opc() == admin_opc::FABRICS {
            let cqe = self.fabrics(&cmd, &ctrl);
            resp.respond(cx, cqe);
        } else if self.target.is_quiescing() {
            // Held unanswered until the connection closes (see Target::quiesce).
            self.held += 1;
        } else if let Some(io) = &self.io {
            io.execute(cx, cmd, ctrl.is_ready());
        } else {
            // An I/O queue gets its slots at Connect; none means a bug, not a hang.
            resp.respond(cx, Response::status(cmd.sqe.cid(), status::INTERNAL_ERROR));
        }
    }

    fn wants_close(&self) -> bool {
        self.disconnecting || self.ctrl.as_ref().is_some_and(|c| c.is_dead())
    }

    fn is_connected(&self) -> bool {
        self.ctrl.is_some()
    }
}

impl Drop for QueueBinding {
    fn drop(&mut self) {
        if let Some(i) = self.counted_on.take() {
            self.target.core_io(i).queue_closed(self.qid == 0);
        }
        if self.held > 0 {
            tracing::debug!(peer = %self.peer, held = self.held, "queue closed with commands held by the shutdown");
        }
        if let Some(ctrl) = self.ctrl.take() {
            if self.qid == 0 {
                ctrl.shut_down("admin queue closed");
                self.target.remove_controller(ctrl.cntlid);
            } else {
                let qid = self.qid;
                ctrl.state().queues.retain(|(q, _, _, _)| *q != qid);
            }
        }
    }
}
