//! Asynchronous Event Request (admin opcode 0Ch; NVMe Base 2.0 section
//! 5.2): held by the controller until an event occurs, or completed at once
//! when one is waiting. Events are raised by
//! [`Controller::namespace_changed`] and reach the admin queue through
//! [`crate::nvmf::ctrlr_runtime::deliver_events`].

use lull_proto::nvme::status;
use lull_proto::target_queue::{Request, Response};

use crate::nvmf::admin::Outcome;
use crate::nvmf::admin::identify::AERL;
use crate::nvmf::ctrlr::{AerOutcome, Controller};

/// Executes an Asynchronous Event Request: at most AERL + 1 are held.
pub fn execute(req: &Request, ctrl: &Controller) -> Outcome {
    let cid = req.sqe.cid();
    match ctrl.submit_aer(cid, AERL) {
        AerOutcome::LimitExceeded => Response::status(cid, status::AER_LIMIT_EXCEEDED).into(),
        AerOutcome::Held => Outcome::Held,
        AerOutcome::Event(dw0) => Response::ok(cid).with_dw0(dw0).into(),
    }
}
