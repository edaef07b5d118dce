//! Authentication Send and Receive (Fabrics FCTYPE 05h/06h; NVMe Base 2.0
//! section 8.13) on a connected queue: the data goes to, and comes from,
//! the queue's DH-HMAC-CHAP state machine.

use std::net::SocketAddr;

use lull_proto::auth::controller::{ControllerAuth, ReceiveError};
use lull_proto::auth::{FailureReason, OsEntropy, SECP_DHCHAP, SPSP_DHCHAP};
use lull_proto::fabrics::{AuthCmd, fctype};
use lull_proto::nvme::status;
use lull_proto::target_queue::{Request, Response};

use crate::dhchap::DhchapOffer;
use crate::nvmf::ctrlr::{Controller, shown};

/// The queue an authentication command arrived on, for its log lines.
pub struct AuthQueue<'a> {
    /// The controller.
    pub ctrl: &'a Controller,
    /// The queue's QID.
    pub qid: u16,
    /// The host's address.
    pub peer: SocketAddr,
    /// The hashes and groups the target allows now (`nvmf_set_config`).
    pub allowed: DhchapOffer,
}

/// What an authentication command comes to.
#[derive(Debug)]
pub enum Step {
    /// Its response, ready (a Receive, or a command refused).
    Respond(Response),
    /// An Authentication Send to feed to the state machine: its data (the
    /// state machine's keys already refreshed), then [`sent`] and a
    /// successful completion. The caller chooses where it runs: a
    /// Negotiate or a Reply costs a DH exponentiation.
    Send {
        /// The command's CID.
        cid: u16,
        /// The message.
        data: Vec<u8>,
    },
}

/// Checks Authentication Send or Receive against the queue's state machine
/// (`None`: the host has no key on this subsystem, so there is nothing to
/// authenticate with: Invalid Field in Command). SECP, SPSP0 and SPSP1 must
/// name DH-HMAC-CHAP and the length be non-zero; a Send carries exactly
/// that many bytes. A Receive is answered here; a Send comes back as
/// [`Step::Send`] for the caller to run.
pub fn execute(auth: Option<&mut ControllerAuth>, q: &AuthQueue<'_>, req: &Request) -> Step {
    let cid = req.sqe.cid();
    let (ctrl, qid, peer) = (q.ctrl, q.qid, q.peer);
    let a = AuthCmd::parse(&req.sqe);
    let Some(auth) = auth else {
        tracing::debug!(%peer, cntlid = ctrl.cntlid, qid, "authentication command refused: the host has no DH-HMAC-CHAP key on this subsystem");
        return Step::Respond(Response::dnr(cid, status::INVALID_FIELD));
    };
    if a.secp != SECP_DHCHAP || a.spsp0 != SPSP_DHCHAP || a.spsp1 != SPSP_DHCHAP || a.len == 0 {
        return Step::Respond(Response::dnr(cid, status::INVALID_FIELD));
    }
    if req.sqe.fctype() == fctype::AUTH_SEND {
        if a.len as usize != req.data.len() {
            return Step::Respond(Response::dnr(cid, status::INVALID_FIELD));
        }
        // The host's keys as they are now (nvmf_subsystem_set_keys may
        // have changed them since the Connect), for the transaction this
        // message may start: SPDK's target too looks its keys up at each
        // transaction, so a live queue re-authenticates with the new keys.
        let now = ctrl.subsystem.host_dhchap(&ctrl.hostnqn).map(|c| q.allowed.restrict(c));
        auth.set_config(now);
        return Step::Send {
            cid,
            data: req.data.clone(),
        };
    }
    let al = (a.len as usize).min(req.c2h_len as usize);
    match auth.on_receive(al) {
        Ok(mut data) => {
            // The whole buffer, zeroes after the message, as Linux's
            // target sends it: hosts size the transfer by AL, and the
            // message says its own length.
            data.resize(data.len().max(al), 0);
            if auth.is_authenticated() {
                tracing::debug!(%peer, cntlid = ctrl.cntlid, qid, "queue authenticated");
            }
            Step::Respond(Response::ok_with_data(cid, data))
        }
        Err(ReceiveError::BufferTooSmall { .. }) => Step::Respond(Response::dnr(cid, status::INVALID_FIELD)),
    }
}

/// Feeds an Authentication Send's message to the state machine, on
/// whichever thread: the DH work of a Negotiate or a Reply happens here.
/// Returns whether a transaction passed (the host's Success2). A refused
/// message is the next Receive's AUTH_Failure1; its reason comes back for
/// [`sent`] to log.
pub fn feed(auth: &mut ControllerAuth, data: &[u8]) -> (Result<(), FailureReason>, bool) {
    let before = auth.passed();
    let r = auth.on_send(data, &mut OsEntropy);
    (r, auth.passed() != before)
}

/// After [`feed`]: logs a refusal. The Send itself completes successfully
/// whatever the state machine made of it (NVMe Base 2.0 section 8.13.5).
pub fn sent(q: &AuthQueue<'_>, result: Result<(), FailureReason>) {
    if let Err(reason) = result {
        tracing::warn!(peer = %q.peer, cntlid = q.ctrl.cntlid, qid = q.qid, hostnqn = %shown(&q.ctrl.hostnqn), "DH-HMAC-CHAP authentication failed: {reason}");
    }
}
