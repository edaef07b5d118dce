//! Set Features and Get Features (admin opcodes 09h, 0Ah; NVMe Base 2.0
//! section 5.27): Number of Queues, Asynchronous Event Configuration and
//! Keep Alive Timer. None is saveable.

use std::time::Instant;

use lull_proto::nvme::cmd::{Features, NumberOfQueues, fid};
use lull_proto::nvme::{admin_opc, status};
use lull_proto::target_queue::{Request, Response};

use crate::nvmf::admin::Outcome;
use crate::nvmf::ctrlr::Controller;
use crate::nvmf::subsystem::SubsystemKind;
use crate::nvmf::target::Target;

/// Executes Set Features or Get Features at `now`: FID is CDW10 bits 7:0,
/// SV (save) CDW10 bit 31 (refused: Feature Identifier Not Saveable), the
/// value CDW11. Number of Queues answers the granted counts (0's based, NCQA
/// in DW0 bits 31:16, NSQA in bits 15:0), which a discovery controller does
/// not have; Keep Alive Timer's KATO is in ms, checked against the target's
/// `kato_max_ms` and raised to `kato_min_ms`, and restarts the timer. Any
/// other FID, or a value refused, is Invalid Field in Command.
pub fn execute(req: &Request, ctrl: &Controller, target: &Target, now: Instant) -> Outcome {
    let sqe = &req.sqe;
    let cid = sqe.cid();
    let set = sqe.opc() == admin_opc::SET_FEATURES;
    let f = Features::parse(sqe);
    if set && f.sv {
        return Response::dnr(cid, status::FEATURE_NOT_SAVEABLE).into();
    }
    let discovery = ctrl.subsystem.kind == SubsystemKind::Discovery;
    let dw0 = match (f.fid, set) {
        (fid::NUMBER_OF_QUEUES, _) if discovery => None,
        (fid::NUMBER_OF_QUEUES, true) => {
            let asked = NumberOfQueues::from_dword(f.cdw11);
            ctrl.set_number_of_queues(asked.nsq, asked.ncq)
                .map(|granted| u32::from(granted) << 16 | u32::from(granted))
        }
        (fid::NUMBER_OF_QUEUES, false) => {
            let g = u32::from(ctrl.number_of_queues() - 1);
            Some(g << 16 | g)
        }
        (fid::ASYNC_EVENT_CONFIGURATION, true) => {
            ctrl.set_aec(f.cdw11);
            Some(0)
        }
        (fid::ASYNC_EVENT_CONFIGURATION, false) => Some(ctrl.aec()),
        (fid::KEEP_ALIVE_TIMER, true) => {
            let Ok(kato) = target.kato_for(f.cdw11) else {
                return Response::dnr(cid, status::INVALID_FIELD).into();
            };
            ctrl.set_kato(kato, now);
            return Outcome::RespondAndRearm(Response::ok(cid), kato);
        }
        (fid::KEEP_ALIVE_TIMER, false) => Some(ctrl.kato().as_millis() as u32),
        _ => None,
    };
    match dw0 {
        Some(dw0) => Response::ok(cid).with_dw0(dw0).into(),
        None => Response::dnr(cid, status::INVALID_FIELD).into(),
    }
}
