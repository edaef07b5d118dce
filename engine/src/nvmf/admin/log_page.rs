//! Get Log Page (NVMe Base 2.0 section 5.16): the command's dispatch on LID,
//! and the log pages of an NVM controller. The discovery log page (70h) is
//! built in [`crate::nvmf::discovery`], the Changed Namespace List (04h)
//! from the controller's state ([`Controller::changed_namespaces_log`]).

use std::net::SocketAddr;

use lull_proto::nvme::cmd::{GetLogPage, lid};
use lull_proto::nvme::{admin_opc, io_opc, status};
use lull_proto::target_queue::{Request, Response};

use crate::nvmf::ctrlr::Controller;
use crate::nvmf::discovery;
use crate::nvmf::subsystem::{Subsystem, SubsystemKind};
use crate::nvmf::target::Target;

/// Executes Get Log Page (admin opcode 02h): LID is CDW10 bits 7:0, NUMD
/// (0's based dwords) CDW11 bits 15:0 above CDW10 bits 31:16, LPO CDW13:CDW12
/// (a multiple of 4), RAE CDW10 bit 15. Past the page's end the data is
/// zeroes; an offset beyond it is Invalid Field in Command, a LID this
/// controller does not have Invalid Log Page. `arrived_on` is the local
/// address the host reached, for the discovery log page's wildcard ports.
pub(crate) fn execute(req: &Request, ctrl: &Controller, target: &Target, arrived_on: SocketAddr) -> Response {
    let sqe = &req.sqe;
    let cid = sqe.cid();
    let get = GetLogPage::parse(sqe);
    let (log, offset, len) = (get.lid, get.lpo, get.len() as usize);
    if !offset.is_multiple_of(4) || len > req.c2h_len as usize {
        return Response::dnr(cid, status::INVALID_FIELD);
    }
    let discovery = ctrl.subsystem.kind == SubsystemKind::Discovery;
    let page = match (log, discovery) {
        (lid::ERROR, _) => error_log(),
        (lid::SMART, false) => smart(&ctrl.subsystem),
        (lid::FIRMWARE_SLOT, false) => firmware_slot(),
        (lid::CHANGED_NS, false) => ctrl.changed_namespaces_log(get.rae),
        (lid::COMMANDS_EFFECTS, false) => commands_effects(),
        (lid::DISCOVERY, true) => discovery::log_page(target, &ctrl.hostnqn, arrived_on),
        _ => return Response::dnr(cid, status::INVALID_LOG_PAGE),
    };
    if offset >= page.len() as u64 && offset != 0 {
        return Response::dnr(cid, status::INVALID_FIELD);
    }
    Response::ok_with_data(cid, slice(&page, offset, len))
}

/// Error Information: one empty 64-byte entry (no error recorded).
pub fn error_log() -> Vec<u8> {
    vec![0u8; 64]
}

/// SMART / Health Information, 512 bytes, from the subsystem's counters.
pub fn smart(s: &Subsystem) -> Vec<u8> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut b = vec![0u8; 512];
    b[1..3].copy_from_slice(&293u16.to_le_bytes()); // composite temperature, K (20 C)
    b[3] = 100; // available spare, %
    b[4] = 10; // available spare threshold, %
    // Data units are thousands of 512-byte units, rounded up.
    let units = |bytes: u64| u128::from(bytes.div_ceil(512).div_ceil(1000));
    let c = &s.counters;
    b[32..48].copy_from_slice(&units(c.bytes_read.load(Relaxed)).to_le_bytes());
    b[48..64].copy_from_slice(&units(c.bytes_written.load(Relaxed)).to_le_bytes());
    b[64..80].copy_from_slice(&u128::from(c.reads.load(Relaxed)).to_le_bytes());
    b[80..96].copy_from_slice(&u128::from(c.writes.load(Relaxed)).to_le_bytes());
    b
}

/// Firmware Slot Information, 512 bytes: slot 1 active.
pub fn firmware_slot() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 1;
    let fr = env!("CARGO_PKG_VERSION").as_bytes();
    let n = fr.len().min(8);
    b[8..8 + n].copy_from_slice(&fr[..n]);
    b[8 + n..16].fill(b' ');
    b
}

/// Commands Supported and Effects, 4096 bytes: CSUPP for every command lull executes.
pub fn commands_effects() -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let admin = [
        admin_opc::GET_LOG_PAGE,
        admin_opc::IDENTIFY,
        admin_opc::ABORT,
        admin_opc::SET_FEATURES,
        admin_opc::GET_FEATURES,
        admin_opc::ASYNC_EVENT_REQUEST,
        admin_opc::KEEP_ALIVE,
    ];
    for opc in admin {
        b[usize::from(opc) * 4] = 1;
    }
    let io = [
        io_opc::FLUSH,
        io_opc::WRITE,
        io_opc::READ,
        io_opc::COMPARE,
        io_opc::WRITE_ZEROES,
        io_opc::DATASET_MANAGEMENT,
    ];
    for opc in io {
        // CSUPP, plus LBCC (logical block content change) for commands that write.
        let lbcc = matches!(opc, io_opc::WRITE | io_opc::WRITE_ZEROES | io_opc::DATASET_MANAGEMENT);
        b[1024 + usize::from(opc) * 4] = 1 | if lbcc { 2 } else { 0 };
    }
    b
}

/// The part of a log page a Get Log Page asks for: `len` bytes from
/// `offset`, zero-filled past the end of the page.
pub fn slice(page: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if let Ok(off) = usize::try_from(offset)
        && off < page.len()
    {
        let n = (page.len() - off).min(len);
        out[..n].copy_from_slice(&page[off..off + n]);
    }
    out
}
