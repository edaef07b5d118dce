//! NVMe submission and completion queue entries (NVMe Base Specification 2.0,
//! sections 4.2 and 4.6), SGL descriptors (section 4.3) and status codes
//! (section 4.6.1.2), as NVMe over Fabrics carries them in capsules.

use crate::pdu::{le16, le32, le64, put16, put32};

/// Size of an SQE, bytes.
pub const SQE_LEN: usize = 64;
/// Size of a CQE, bytes.
pub const CQE_LEN: usize = 16;

/// A 64-byte submission queue entry, read in place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sqe(pub [u8; SQE_LEN]);

impl std::fmt::Debug for Sqe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqe")
            .field("opc", &format_args!("{:#04x}", self.opc()))
            .field("cid", &self.cid())
            .field("nsid", &self.nsid())
            .field("cdw10", &format_args!("{:#x}", self.cdw(10)))
            .finish()
    }
}

impl Sqe {
    /// Wraps 64 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let mut a = [0u8; SQE_LEN];
        a.copy_from_slice(b.get(..SQE_LEN)?);
        Some(Sqe(a))
    }

    /// Opcode (byte 0).
    pub fn opc(&self) -> u8 {
        self.0[0]
    }

    /// FUSE (bits 1:0) and PSDT (bits 7:6) byte.
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    /// Command Identifier (bytes 2-3).
    pub fn cid(&self) -> u16 {
        le16(&self.0, 2)
    }

    /// Namespace Identifier (bytes 4-7); for Fabrics commands byte 4 is FCTYPE.
    pub fn nsid(&self) -> u32 {
        le32(&self.0, 4)
    }

    /// Fabrics command type (byte 4 of a Fabrics command, opcode 0x7F).
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    /// Command dword `n` (0..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        le32(&self.0, n * 4)
    }

    /// SGL descriptor 1 (bytes 24-39).
    pub fn sgl1(&self) -> Sgl {
        Sgl::parse(&self.0[24..40])
    }

    /// Sets the CID.
    pub fn set_cid(&mut self, cid: u16) {
        put16(&mut self.0, 2, cid);
    }

    /// Sets command dword `n`.
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        put32(&mut self.0, n * 4, v);
    }

    /// Sets SGL1.
    pub fn set_sgl1(&mut self, sgl: Sgl) {
        sgl.write(&mut self.0[24..40]);
    }

    /// Sets PSDT (bits 7:6 of byte 1), keeping FUSE.
    pub fn set_psdt(&mut self, psdt: u8) {
        self.0[1] = (self.0[1] & !0xC0) | ((psdt & 0x3) << 6);
    }
}

/// PSDT values (NVMe Base Specification, Command Dword 0).
pub mod psdt {
    /// SGLs; MPTR holds the address of one contiguous buffer. NVMe over
    /// Fabrics allows only this value in a command capsule; the Linux target
    /// (nvmet) refuses any other with Invalid Field in Command.
    pub const SGL_MPTR_CONTIGUOUS: u8 = 0b01;
}

/// SGL descriptor identifier values used by NVMe/TCP (NVMe/TCP 1.0 section 3.4).
pub mod sgl_id {
    /// Data Block descriptor, Offset subtype: in-capsule data.
    pub const DATA_BLOCK_OFFSET: u8 = 0x01;
    /// Transport SGL Data Block descriptor, transport-specific subtype: data by R2T/H2CData or C2HData.
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5A;
}

/// A 16-byte SGL descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sgl {
    /// Address (for in-capsule data: offset into the capsule data).
    pub address: u64,
    /// Length, bytes.
    pub length: u32,
    /// SGL Identifier: type in bits 7:4, subtype in bits 3:0.
    pub id: u8,
}

impl Sgl {
    /// Reads a descriptor from 16 bytes.
    pub fn parse(b: &[u8]) -> Self {
        Sgl {
            address: le64(b, 0),
            length: le32(b, 8),
            id: b[15],
        }
    }

    /// Writes it into 16 bytes.
    pub fn write(&self, b: &mut [u8]) {
        b[..8].copy_from_slice(&self.address.to_le_bytes());
        put32(b, 8, self.length);
        b[12..15].fill(0);
        b[15] = self.id;
    }
}

/// A 16-byte completion queue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cqe {
    /// Dword 0 (command specific).
    pub dw0: u32,
    /// Dword 1 (command specific).
    pub dw1: u32,
    /// SQ Head Pointer.
    pub sqhd: u16,
    /// SQ Identifier.
    pub sqid: u16,
    /// Command Identifier.
    pub cid: u16,
    /// Status field (bits 15:1 of dword 3's upper half; phase bit 0 is 0 on fabrics).
    pub status: Status,
}

impl Cqe {
    /// The wire form.
    pub fn encode(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        put32(&mut b, 0, self.dw0);
        put32(&mut b, 4, self.dw1);
        put16(&mut b, 8, self.sqhd);
        put16(&mut b, 10, self.sqid);
        put16(&mut b, 12, self.cid);
        put16(&mut b, 14, self.status.0);
        b
    }

    /// Reads 16 bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        (b.len() >= CQE_LEN).then(|| Cqe {
            dw0: le32(b, 0),
            dw1: le32(b, 4),
            sqhd: le16(b, 8),
            sqid: le16(b, 10),
            cid: le16(b, 12),
            status: Status(le16(b, 14)),
        })
    }
}

/// The 16-bit status word of a CQE: P (bit 0), SC (8:1), SCT (11:9), CRD (13:12), M (14), DNR (15).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

/// Status Code Type values.
pub mod sct {
    /// Generic Command Status.
    pub const GENERIC: u8 = 0;
    /// Command Specific Status.
    pub const COMMAND_SPECIFIC: u8 = 1;
    /// Media and Data Integrity Errors.
    pub const MEDIA: u8 = 2;
}

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status(0);

    /// A status from its type and code, with DNR when `dnr`.
    pub const fn new(sct: u8, sc: u8, dnr: bool) -> Status {
        Status(((sc as u16) << 1) | (((sct & 7) as u16) << 9) | if dnr { 0x8000 } else { 0 })
    }

    /// Status Code Type.
    pub fn sct(self) -> u8 {
        ((self.0 >> 9) & 7) as u8
    }

    /// Status Code.
    pub fn sc(self) -> u8 {
        ((self.0 >> 1) & 0xFF) as u8
    }

    /// Do Not Retry.
    pub fn dnr(self) -> bool {
        self.0 & 0x8000 != 0
    }

    /// Whether the command succeeded.
    pub fn is_success(self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }

    /// The specification's name of this status, for messages.
    pub fn name(self) -> &'static str {
        use status::*;
        let base = Status::new(self.sct(), self.sc(), false);
        match base {
            SUCCESS_ => "Successful Completion",
            INVALID_OPCODE => "Invalid Command Opcode",
            INVALID_FIELD => "Invalid Field in Command",
            COMMAND_ID_CONFLICT => "Command ID Conflict",
            DATA_TRANSFER_ERROR => "Data Transfer Error",
            INTERNAL_ERROR => "Internal Error",
            ABORT_REQUESTED => "Command Abort Requested",
            SQ_DELETION => "Command Aborted due to SQ Deletion",
            INVALID_NAMESPACE => "Invalid Namespace or Format",
            COMMAND_SEQUENCE_ERROR => "Command Sequence Error",
            DATA_SGL_LENGTH_INVALID => "Data SGL Length Invalid",
            SGL_DESCRIPTOR_TYPE_INVALID => "SGL Descriptor Type Invalid",
            SGL_OFFSET_INVALID => "SGL Offset Invalid",
            TRANSIENT_TRANSPORT_ERROR => "Transient Transport Error",
            LBA_OUT_OF_RANGE => "LBA Out of Range",
            INVALID_QUEUE_IDENTIFIER => "Invalid Queue Identifier",
            INVALID_QUEUE_SIZE => "Invalid Queue Size",
            AER_LIMIT_EXCEEDED => "Asynchronous Event Request Limit Exceeded",
            INVALID_LOG_PAGE => "Invalid Log Page",
            FEATURE_NOT_SAVEABLE => "Feature Identifier Not Saveable",
            CONNECT_INCOMPATIBLE_FORMAT => "Connect Incompatible Format",
            CONNECT_CONTROLLER_BUSY => "Connect Controller Busy",
            CONNECT_INVALID_PARAMETERS => "Connect Invalid Parameters",
            CONNECT_INVALID_HOST => "Connect Invalid Host",
            AUTH_REQUIRED => "Authentication Required",
            WRITE_FAULT => "Write Fault",
            UNRECOVERED_READ_ERROR => "Unrecovered Read Error",
            COMPARE_FAILURE => "Compare Failure",
            _ => "unknown status",
        }
    }
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Status({:#06x} {})", self.0, self.name())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (SCT {:#x}, SC {:#04x}{})",
            self.name(),
            self.sct(),
            self.sc(),
            if self.dnr() { ", DNR" } else { "" }
        )
    }
}

/// Status values used by lull (NVMe Base 2.0 figures 100-103; NVMe-oF 1.1 figure 39).
pub mod status {
    use super::{Status, sct};

    /// 00h/00h.
    pub const SUCCESS_: Status = Status::new(sct::GENERIC, 0x00, false);
    /// 00h/01h.
    pub const INVALID_OPCODE: Status = Status::new(sct::GENERIC, 0x01, false);
    /// 00h/02h.
    pub const INVALID_FIELD: Status = Status::new(sct::GENERIC, 0x02, false);
    /// 00h/03h.
    pub const COMMAND_ID_CONFLICT: Status = Status::new(sct::GENERIC, 0x03, false);
    /// 00h/04h.
    pub const DATA_TRANSFER_ERROR: Status = Status::new(sct::GENERIC, 0x04, false);
    /// 00h/06h.
    pub const INTERNAL_ERROR: Status = Status::new(sct::GENERIC, 0x06, false);
    /// 00h/07h.
    pub const ABORT_REQUESTED: Status = Status::new(sct::GENERIC, 0x07, false);
    /// 00h/08h.
    pub const SQ_DELETION: Status = Status::new(sct::GENERIC, 0x08, false);
    /// 00h/0Bh.
    pub const INVALID_NAMESPACE: Status = Status::new(sct::GENERIC, 0x0B, false);
    /// 00h/0Ch.
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::new(sct::GENERIC, 0x0C, false);
    /// 00h/0Fh.
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::new(sct::GENERIC, 0x0F, false);
    /// 00h/11h.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = Status::new(sct::GENERIC, 0x11, false);
    /// 00h/16h.
    pub const SGL_OFFSET_INVALID: Status = Status::new(sct::GENERIC, 0x16, false);
    /// 00h/22h.
    pub const TRANSIENT_TRANSPORT_ERROR: Status = Status::new(sct::GENERIC, 0x22, false);
    /// 00h/80h.
    pub const LBA_OUT_OF_RANGE: Status = Status::new(sct::GENERIC, 0x80, false);
    /// 01h/01h.
    pub const INVALID_QUEUE_IDENTIFIER: Status = Status::new(sct::COMMAND_SPECIFIC, 0x01, false);
    /// 01h/02h.
    pub const INVALID_QUEUE_SIZE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x02, false);
    /// 01h/05h.
    pub const AER_LIMIT_EXCEEDED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x05, false);
    /// 01h/09h.
    pub const INVALID_LOG_PAGE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x09, false);
    /// 01h/0Dh.
    pub const FEATURE_NOT_SAVEABLE: Status = Status::new(sct::COMMAND_SPECIFIC, 0x0D, false);
    /// 01h/80h (Fabrics).
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::new(sct::COMMAND_SPECIFIC, 0x80, false);
    /// 01h/81h (Fabrics).
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::new(sct::COMMAND_SPECIFIC, 0x81, false);
    /// 01h/82h (Fabrics).
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::new(sct::COMMAND_SPECIFIC, 0x82, false);
    /// 01h/84h (Fabrics).
    pub const CONNECT_INVALID_HOST: Status = Status::new(sct::COMMAND_SPECIFIC, 0x84, false);
    /// Authentication Required: the queue must complete in-band
    /// authentication first (NVMe Base 2.0 figure 103, 91h).
    pub const AUTH_REQUIRED: Status = Status::new(sct::COMMAND_SPECIFIC, 0x91, false);
    /// 02h/80h.
    pub const WRITE_FAULT: Status = Status::new(sct::MEDIA, 0x80, false);
    /// 02h/81h.
    pub const UNRECOVERED_READ_ERROR: Status = Status::new(sct::MEDIA, 0x81, false);
    /// 02h/85h.
    pub const COMPARE_FAILURE: Status = Status::new(sct::MEDIA, 0x85, false);
}

impl Status {
    /// The same status with DNR set.
    pub const fn with_dnr(self) -> Status {
        Status(self.0 | 0x8000)
    }
}

/// Admin command opcodes (NVMe Base 2.0 figure 138).
pub mod admin_opc {
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Fabrics command (any queue).
    pub const FABRICS: u8 = 0x7F;
}

/// NVM command set I/O opcodes (NVM Command Set 1.0 figure 18).
pub mod io_opc {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_match_the_fault_cases() {
        assert_eq!(status::INVALID_FIELD.0, 0x0004);
        assert_eq!(status::INVALID_FIELD.with_dnr().0, 0x8004);
        assert_eq!(status::TRANSIENT_TRANSPORT_ERROR.0, 0x0044);
        assert_eq!(status::CONNECT_INVALID_PARAMETERS.with_dnr().0, 0x8304);
        assert_eq!(status::CONNECT_INVALID_HOST.0, 0x0308);
        assert_eq!(status::LBA_OUT_OF_RANGE.0, 0x0100);
        let s = status::CONNECT_INVALID_PARAMETERS.with_dnr();
        assert_eq!((s.sct(), s.sc(), s.dnr()), (1, 0x82, true));
        assert_eq!(s.to_string(), "Connect Invalid Parameters (SCT 0x1, SC 0x82, DNR)");
    }

    #[test]
    fn cqe_and_sgl_round_trip() {
        let c = Cqe {
            dw0: 1,
            dw1: 2,
            sqhd: 3,
            sqid: 4,
            cid: 0xBEEF,
            status: status::INVALID_OPCODE,
        };
        let b = c.encode();
        assert_eq!(&b[12..16], &[0xEF, 0xBE, 0x02, 0x00]);
        assert_eq!(Cqe::parse(&b), Some(c));
        let s = Sgl {
            address: 0,
            length: 0x400,
            id: sgl_id::DATA_BLOCK_OFFSET,
        };
        let mut sqe = Sqe([0; 64]);
        sqe.set_sgl1(s);
        assert_eq!(&sqe.0[24..40], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 1]);
        assert_eq!(sqe.sgl1(), s);
    }
}
