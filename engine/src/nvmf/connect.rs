//! The Fabrics commands of the controller (NVMe-oF 1.1 sections 3.3 and 3.5):
//! Connect, which makes a controller (admin queue) or joins one (I/O
//! queue), Property Get/Set on the controller's registers, and Disconnect.
//! Pure: the queue installs what a Connect needs on the reactor
//! ([`crate::nvmf::ctrlr_runtime`]).

use std::sync::Arc;
use std::time::Instant;

use lull_proto::auth::controller::ControllerAuth;
use lull_proto::fabrics::{
    CONNECT_AUTHREQ_ATR, CONNECT_DATA_LEN, ConnectCmd, ConnectData, InvalidParameter, PropertyCmd, connect_offset,
    fctype, property,
};
use lull_proto::nvme::status;
use lull_proto::target_queue::{QueueParams, Request, Response};
use lull_proto::tls_psk::TlsPsk;

use crate::nvmf::admin::identify::NVME_VERSION;
use crate::nvmf::ctrlr::{Controller, NewController, cc_valid, shown};
use crate::nvmf::request::QueueOrigin;
use crate::nvmf::subsystem::SubsystemKind;
use crate::nvmf::target::Target;

/// A queue a Connect bound to a controller.
pub struct Connected {
    /// The controller (new for an admin queue).
    pub ctrl: Arc<Controller>,
    /// The queue's QID.
    pub qid: u16,
    /// The queue's in-band authentication, when the host has DH-HMAC-CHAP
    /// keys on the subsystem (NVMe Base 2.0 section 8.13): until it
    /// succeeds, only Fabrics commands are accepted.
    pub auth: Option<ControllerAuth>,
    /// The Connect's response: CNTLID (and ATR) in DW0, and the queue's
    /// parameters for the transport.
    pub response: Response,
}

/// CAP (NVMe Base 2.0 figure 36): MQES (`max_queue_depth` - 1), CQR,
/// TO = 7.5 s, CSS NVM, MPSMIN 4 KiB.
pub fn cap(max_queue_depth: u32) -> u64 {
    let mqes = u64::from(max_queue_depth.saturating_sub(1));
    mqes | 1 << 16 | 15 << 24 | 1 << 37
}

/// Executes a Connect that arrived through `origin` at `now`: checks the
/// format, SQSIZE against the target's queue depths, the subsystem (exists,
/// listens on this port, admits the host), then makes a controller (admin
/// queue: CNTLID FFFFh, KATO within `kato_max_ms`) or joins the host's own
/// controller (I/O queue: enabled, QID allowed and free).
///
/// # Errors
/// The response refusing it: Connect Invalid Parameters with the offending
/// field (IATTR/IPO in DW0), Incompatible Format, Invalid Host, Controller
/// Busy (no CNTLID free), Invalid Queue Identifier, or Invalid Field.
pub fn connect(target: &Target, origin: &QueueOrigin, req: &Request, now: Instant) -> Result<Connected, Response> {
    connect_secure(target, origin, None, req, now)
}

/// As [`connect`], on a connection whose TLS session was keyed by `secure`
/// (a port with `secure_channel`): the Connect must name the host the PSK
/// identity names (and, for an NVM subsystem, its subsystem), else Connect
/// Invalid Host, so one host's key never opens another's controller. A
/// Connect without TLS on a secure port is refused the same way.
///
/// # Errors
/// As [`connect`].
pub fn connect_secure(
    target: &Target,
    origin: &QueueOrigin,
    secure: Option<&TlsPsk>,
    req: &Request,
    now: Instant,
) -> Result<Connected, Response> {
    let cid = req.sqe.cid();
    let c = ConnectCmd::parse(&req.sqe);
    let invalid = |p: InvalidParameter| Response::dnr(cid, status::CONNECT_INVALID_PARAMETERS).with_dw0(p.dw0());
    if c.recfmt != 0 {
        return Err(Response::dnr(cid, status::CONNECT_INCOMPATIBLE_FORMAT));
    }
    if req.data.len() != CONNECT_DATA_LEN {
        return Err(Response::dnr(cid, status::INVALID_FIELD));
    }
    let data = ConnectData::parse(&req.data).map_err(invalid)?;
    let (io_depth, aq_depth) = target.queue_depths();
    let max_entries = if c.qid == 0 { aq_depth } else { io_depth };
    // SQSIZE is 0's based; a 1-entry queue is not allowed, the admin queue needs 32.
    let min_sqsize = if c.qid == 0 { 31 } else { 1 };
    if c.sqsize < min_sqsize || u32::from(c.sqsize) + 1 > max_entries {
        return Err(invalid(InvalidParameter::sqe(connect_offset::SQSIZE)));
    }
    let peer = origin.peer;
    let Some(subsystem) = target.subsystem(&data.subnqn) else {
        tracing::warn!(
            %peer,
            subnqn = %data.subnqn,
            hostnqn = %shown(&data.hostnqn),
            "Connect refused: no subsystem {} on this target (it serves {})",
            data.subnqn,
            served_nqns(target)
        );
        return Err(invalid(InvalidParameter::data(connect_offset::SUBNQN)));
    };
    if !target.reachable(&subsystem, origin.listener) {
        tracing::warn!(%peer, listener = %origin.listener, subnqn = %data.subnqn, "Connect refused: the subsystem does not listen on this port");
        return Err(invalid(InvalidParameter::data(connect_offset::SUBNQN)));
    }
    match secure {
        Some(psk)
            if psk.hostnqn() != data.hostnqn
                || (subsystem.kind == SubsystemKind::Nvm && psk.subnqn() != data.subnqn) =>
        {
            tracing::warn!(
                %peer,
                hostnqn = %shown(&data.hostnqn),
                subnqn = %data.subnqn,
                identity = psk.identity(),
                "Connect refused (Connect Invalid Host): the TLS PSK identity names another host or subsystem"
            );
            return Err(Response::dnr(cid, status::CONNECT_INVALID_HOST));
        }
        None if target.is_secure_port(origin.listener) => {
            tracing::warn!(%peer, listener = %origin.listener, "Connect refused (Connect Invalid Host): no TLS on a secure_channel port");
            return Err(Response::dnr(cid, status::CONNECT_INVALID_HOST));
        }
        // A host with a PSK proves it with TLS on every port (each one
        // accepts TLS): in plaintext anyone could claim its host NQN.
        None if subsystem.kind == SubsystemKind::Nvm && subsystem.host_psk_name(&data.hostnqn).is_some() => {
            tracing::warn!(%peer, hostnqn = %shown(&data.hostnqn), subnqn = %data.subnqn, "Connect refused (Connect Invalid Host): the host has a TLS PSK and connected without TLS");
            return Err(Response::dnr(cid, status::CONNECT_INVALID_HOST));
        }
        _ => {}
    }
    if let Err(why) = subsystem.admit(&data.hostnqn) {
        tracing::warn!(%peer, hostnqn = %shown(&data.hostnqn), subnqn = %data.subnqn, "Connect refused (Connect Invalid Host): {why}");
        return Err(Response::dnr(cid, status::CONNECT_INVALID_HOST));
    }
    let ctrl = if c.qid == 0 {
        if data.cntlid != 0xFFFF {
            return Err(invalid(InvalidParameter::data(connect_offset::CNTLID)));
        }
        let Ok(kato) = target.kato_for(c.kato) else {
            tracing::warn!(%peer, kato_ms = c.kato, max_ms = target.settings().kato_max_ms, "Connect refused: KATO above kato_max_ms");
            return Err(invalid(InvalidParameter::sqe(connect_offset::KATO)));
        };
        let new = NewController {
            hostnqn: data.hostnqn.clone(),
            hostid: data.hostid,
            listener: origin.listener,
            kato,
            max_io_queues: target.max_io_queues(),
        };
        target
            .new_controller(subsystem, |cntlid, subsystem| {
                Controller::new(cntlid, subsystem, new, now)
            })
            .ok_or_else(|| Response::status(cid, status::CONNECT_CONTROLLER_BUSY))?
    } else {
        let Some(ctrl) = target.controller(data.cntlid) else {
            return Err(invalid(InvalidParameter::data(connect_offset::CNTLID)));
        };
        if ctrl.subsystem.nqn != data.subnqn || ctrl.hostnqn != data.hostnqn {
            tracing::warn!(
                %peer,
                cntlid = data.cntlid,
                "I/O queue Connect refused: controller {} belongs to host {} on {}, not to host {} on {}",
                data.cntlid,
                shown(&ctrl.hostnqn),
                ctrl.subsystem.nqn,
                shown(&data.hostnqn),
                data.subnqn
            );
            return Err(invalid(InvalidParameter::data(connect_offset::CNTLID)));
        }
        if ctrl.subsystem.kind == SubsystemKind::Discovery || !ctrl.is_ready() {
            return Err(invalid(InvalidParameter::sqe(connect_offset::QID)));
        }
        if let Err(max_qid) = ctrl.admit_io_queue(c.qid) {
            tracing::warn!(%peer, cntlid = ctrl.cntlid, qid = c.qid, max_qid, "I/O queue Connect refused: QID {} is beyond the controller's {} I/O queues or in use", c.qid, max_qid);
            // Invalid Queue Identifier, as SPDK's target and Linux nvmet
            // answer a QID beyond the limit or one already connected.
            return Err(Response::dnr(cid, status::INVALID_QUEUE_IDENTIFIER));
        }
        ctrl
    };
    tracing::debug!(%peer, cntlid = ctrl.cntlid, qid = c.qid, sqsize = c.sqsize, "Connect");
    // Every queue of a host with keys authenticates, the admin queue and
    // each I/O queue (section 8.13.1); ATR tells the host so.
    // nvmf_set_config's lists narrow what the host entry allows.
    let allowed = target.dhchap_allowed();
    let auth = ctrl
        .subsystem
        .host_dhchap(&ctrl.hostnqn)
        .map(|c| ControllerAuth::new(allowed.restrict(c)));
    let atr = if auth.is_some() { CONNECT_AUTHREQ_ATR } else { 0 };
    let response = Response::ok(cid)
        .with_dw0(u32::from(ctrl.cntlid) | atr)
        .with_connected(QueueParams {
            qid: c.qid,
            sq_entries: u32::from(c.sqsize) + 1,
            sq_flow_control_disabled: c.sq_flow_control_disabled(),
        });
    Ok(Connected {
        ctrl,
        qid: c.qid,
        auth,
        response,
    })
}

/// The NVM subsystems' NQNs, for a refused Connect's log line.
fn served_nqns(target: &Target) -> String {
    let nqns: Vec<String> = target
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

/// Executes a Fabrics command other than authentication on queue `qid` of
/// `ctrl` at `now`: Property Get/Set (admin queue only) and a repeated
/// Connect (Command Sequence Error). Disconnect is [`disconnect`]; any other
/// FCTYPE is Invalid Command Opcode.
pub fn fabrics(target: &Target, ctrl: &Controller, qid: u16, req: &Request, now: Instant) -> Response {
    let cid = req.sqe.cid();
    match req.sqe.fctype() {
        fctype::CONNECT => Response::dnr(cid, status::COMMAND_SEQUENCE_ERROR),
        fctype::PROPERTY_GET | fctype::PROPERTY_SET if qid != 0 => Response::dnr(cid, status::INVALID_FIELD),
        fctype::PROPERTY_GET => property_get(target, ctrl, req),
        fctype::PROPERTY_SET => property_set(ctrl, req, now),
        _ => Response::dnr(cid, status::INVALID_OPCODE),
    }
}

/// Property Get: CAP (8 bytes), VS, CC and CSTS (4 bytes); any other
/// offset or size is Invalid Field in Command.
fn property_get(target: &Target, ctrl: &Controller, req: &Request) -> Response {
    let cid = req.sqe.cid();
    let Some(p) = PropertyCmd::parse(&req.sqe) else {
        return Response::dnr(cid, status::INVALID_FIELD);
    };
    let v: u64 = match (p.offset, p.size) {
        (property::CAP, 8) => cap(target.queue_depths().0),
        (property::VS, 4) => u64::from(NVME_VERSION),
        (property::CC, 4) => u64::from(ctrl.cc()),
        (property::CSTS, 4) => u64::from(ctrl.csts()),
        _ => return Response::dnr(cid, status::INVALID_FIELD),
    };
    let mut r = Response::ok(cid).with_dw0(v as u32);
    r.cqe.dw1 = (v >> 32) as u32;
    r
}

/// Property Set: only CC (4 bytes), with a value [`cc_valid`] accepts.
fn property_set(ctrl: &Controller, req: &Request, now: Instant) -> Response {
    let cid = req.sqe.cid();
    match PropertyCmd::parse(&req.sqe) {
        Some(p) if p.offset == property::CC && p.size == 4 && cc_valid(p.value) => {
            ctrl.set_cc(p.value as u32, now);
            Response::ok(cid)
        }
        _ => Response::dnr(cid, status::INVALID_FIELD),
    }
}

/// Disconnect (FCTYPE 08h) of queue `qid`: the controller forgets the
/// queue; the caller closes the connection once the response is sent.
pub fn disconnect(ctrl: &Controller, qid: u16, cid: u16) -> Response {
    ctrl.remove_queue(qid);
    Response::ok(cid)
}
