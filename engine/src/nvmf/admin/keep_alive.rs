//! Keep Alive (admin opcode 18h; NVMe Base 2.0 section 5.25): the host says
//! it is alive, and the controller's keep-alive deadline moves on. The
//! timer that enforces it is [`crate::nvmf::ctrlr_runtime::arm_keep_alive`].

use std::time::Instant;

use lull_proto::target_queue::{Request, Response};

use crate::nvmf::ctrlr::Controller;

/// Executes Keep Alive, received at `now`.
pub fn execute(req: &Request, ctrl: &Controller, now: Instant) -> Response {
    ctrl.keep_alive(now);
    Response::ok(req.sqe.cid())
}
