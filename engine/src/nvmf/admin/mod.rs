//! Admin commands (NVMe Base 2.0 section 5), one file per command family,
//! each with its dispatch arm and the pure builders of what it returns:
//! [`identify`], [`log_page`], [`features`], [`aer`] and [`keep_alive`].
//! [`execute`] is the admin queue's parse-and-execute step (the kernel
//! target's `nvmet_parse_admin_cmd`), run with plain values.

pub mod aer;
pub mod features;
pub mod identify;
pub mod keep_alive;
pub mod log_page;

use std::time::{Duration, Instant};

use lull_proto::nvme::{admin_opc, status};
use lull_proto::target_queue::{Request, Response};

use crate::nvmf::admin::identify::ControllerIdentity;
use crate::nvmf::ctrlr::Controller;
use crate::nvmf::request::QueueOrigin;
use crate::nvmf::target::Target;

/// What an admin command asks of its queue once executed.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response.
    Respond(Response),
    /// Nothing yet: the command waits for an event (an Asynchronous Event
    /// Request), answered later through the controller's event sink.
    Held,
    /// Send this response, and restart the keep-alive timer for this KATO
    /// (Set Features Keep Alive Timer).
    RespondAndRearm(Response, Duration),
}

impl From<Response> for Outcome {
    fn from(r: Response) -> Self {
        Outcome::Respond(r)
    }
}

/// Executes an admin command (not a Fabrics one) of `ctrl` at `now`, on a
/// queue that came through `origin`. Until the host enables the controller
/// (CC.EN) every admin command is a Command Sequence Error.
pub fn execute(target: &Target, origin: &QueueOrigin, ctrl: &Controller, req: &Request, now: Instant) -> Outcome {
    let sqe = &req.sqe;
    let cid = sqe.cid();
    if !ctrl.is_ready() {
        return Response::dnr(cid, status::COMMAND_SEQUENCE_ERROR).into();
    }
    match sqe.opc() {
        admin_opc::IDENTIFY => {
            let id = ControllerIdentity {
                subsystem: &ctrl.subsystem,
                cntlid: ctrl.cntlid,
                io_in_capsule_data: origin.io_in_capsule_data,
                maxcmd: target.queue_depths().0 as u16,
            };
            identify::execute(req, &id).into()
        }
        admin_opc::GET_LOG_PAGE => log_page::execute(req, ctrl, target, origin.arrived_on).into(),
        admin_opc::SET_FEATURES | admin_opc::GET_FEATURES => features::execute(req, ctrl, target, now),
        admin_opc::KEEP_ALIVE => keep_alive::execute(req, ctrl, now).into(),
        admin_opc::ASYNC_EVENT_REQUEST => aer::execute(req, ctrl),
        // Abort is best effort: lull completes commands as they arrive, so
        // report "not aborted" (DW0 bit 0 set), as the specification allows.
        admin_opc::ABORT => Response::ok(cid).with_dw0(1).into(),
        _ => Response::dnr(cid, status::INVALID_OPCODE).into(),
    }
}
