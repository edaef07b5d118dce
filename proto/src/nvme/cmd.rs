//! Typed NVMe commands: the fields each admin and NVM I/O command carries
//! in its SQE's command dwords, read from and written into an [`Sqe`], and
//! the named values those fields take (CNS, feature and log page
//! identifiers, Asynchronous Event Configuration bits).
//!
//! Each type holds the wire's values under the specification's names, so a
//! decode is lossless: where a field is 0's based on the wire (NLB, NUMD,
//! NR, Number of Queues' NSQR/NCQR), the field is too, and a method gives
//! the count ([`Rw::blocks`], [`GetLogPage::len`]). `parse` reads any SQE
//! (every bit pattern is some field value: checking them is the
//! controller's job); `encode` builds a fresh SQE with CID 0, leaving CID,
//! SGL1 and PSDT to the queue that sends it
//! ([`HostQueue::submit`](crate::host_queue::HostQueue::submit)).
//!
//! References: NVMe Base Specification 2.0 (admin commands, Flush) and NVM
//! Command Set Specification 1.0 (Read, Write, Compare, Write Zeroes,
//! Dataset Management). Dword `n` of an SQE is bytes `4n..4n+4`,
//! little-endian.

use super::{Sqe, admin_opc, io_opc};
use crate::pdu::{le16, le32, le64, put16, put32, put64};

/// NSID FFFFFFFFh: every namespace (or "no particular namespace", as Get
/// Log Page takes it for controller-wide pages).
pub const NSID_ALL: u32 = 0xFFFF_FFFF;

/// Byte offset of command dword `n` in an SQE.
const fn dw(n: usize) -> usize {
    n * 4
}

/// A zeroed SQE with opcode `opc` (CDW0 bits 07:00) and NSID (dword 1).
fn sqe(opc: u8, nsid: u32) -> Sqe {
    let mut s = Sqe([0; super::SQE_LEN]);
    s.0[0] = opc;
    put32(&mut s.0, dw(1), nsid);
    s
}

/// Identify CNS values (Identify command, CDW10 bits 07:00).
pub mod cns {
    /// Identify Namespace data structure for the NSID.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller data structure.
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list: active NSIDs greater than the NSID.
    pub const ACTIVE_NAMESPACES: u8 = 0x02;
    /// Namespace Identification Descriptor list for the NSID.
    pub const NAMESPACE_DESCRIPTORS: u8 = 0x03;
}

/// Feature identifiers (Get/Set Features, CDW10 bits 07:00).
pub mod fid {
    /// Number of Queues: CDW11 and completion DW0 are [`NumberOfQueues`](super::NumberOfQueues).
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Asynchronous Event Configuration: CDW11 holds [`aec`](super::aec) bits.
    pub const ASYNC_EVENT_CONFIGURATION: u8 = 0x0B;
    /// Keep Alive Timer: CDW11 is KATO in milliseconds.
    pub const KEEP_ALIVE_TIMER: u8 = 0x0F;
}

/// Asynchronous Event Configuration bits (feature 0Bh, CDW11).
pub mod aec {
    /// Bits 07:00: SMART / Health Critical Warnings, one per warning.
    pub const SMART_CRITICAL_WARNINGS: u32 = 0xFF;
    /// Bit 8: Namespace Attribute Notices.
    pub const NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
    /// Bit 9: Firmware Activation Notices.
    pub const FIRMWARE_ACTIVATION: u32 = 1 << 9;
    /// Bit 11: Asymmetric Namespace Access Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Bit 31: Discovery Log Page Change Notification.
    pub const DISCOVERY_LOG_PAGE_CHANGE: u32 = 1 << 31;
}

/// Log page identifiers (Get Log Page, CDW10 bits 07:00).
pub mod lid {
    /// Error Information.
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information.
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information.
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Changed Namespace List.
    pub const CHANGED_NS: u8 = 0x04;
    /// Commands Supported and Effects.
    pub const COMMANDS_EFFECTS: u8 = 0x05;
    /// Discovery (on a discovery controller; NVMe-oF).
    pub const DISCOVERY: u8 = 0x70;
}

/// Asynchronous Event Types (AER completion DW0 bits 02:00).
pub mod event_type {
    /// Error status.
    pub const ERROR: u8 = 0;
    /// SMART / Health status.
    pub const SMART: u8 = 1;
    /// Notice.
    pub const NOTICE: u8 = 2;
}

/// Asynchronous Event Information values for a Notice (AER completion DW0
/// bits 15:08 when the type is [`event_type::NOTICE`]).
pub mod notice {
    /// Namespace Attribute Changed (log page 04h lists the namespaces).
    pub const NAMESPACE_ATTRIBUTE_CHANGED: u8 = 0x00;
    /// Firmware Activation Starting.
    pub const FIRMWARE_ACTIVATION_STARTING: u8 = 0x01;
    /// Discovery Log Page Change.
    pub const DISCOVERY_LOG_PAGE_CHANGE: u8 = 0xF0;
}

/// Read, Write or Compare, and the LBA range of Write Zeroes: SLBA in
/// CDW10 (bits 31:00) and CDW11 (bits 63:32), NLB in CDW12 bits 15:00.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rw {
    /// Namespace.
    pub nsid: u32,
    /// Starting LBA.
    pub slba: u64,
    /// Number of Logical Blocks, 0's based (0 is one block): see
    /// [`blocks`](Self::blocks) and [`new`](Self::new).
    pub nlb: u16,
}

impl Rw {
    /// Most blocks one command moves: NLB is 16 bits, 0's based.
    pub const MAX_BLOCKS: u32 = 1 << 16;

    /// `blocks` blocks (1 to [`MAX_BLOCKS`](Self::MAX_BLOCKS)) from `slba`.
    /// NLB keeps the low 16 bits of `blocks - 1`, as the wire would: split
    /// larger transfers first.
    pub fn new(nsid: u32, slba: u64, blocks: u32) -> Self {
        Rw {
            nsid,
            slba,
            nlb: blocks.wrapping_sub(1) as u16,
        }
    }

    /// Number of blocks, 1 to 65,536.
    pub fn blocks(&self) -> u32 {
        u32::from(self.nlb) + 1
    }

    /// Reads the fields; the opcode is the caller's to check.
    pub fn parse(sqe: &Sqe) -> Self {
        Rw {
            nsid: sqe.nsid(),
            slba: le64(&sqe.0, dw(10)),
            nlb: le16(&sqe.0, dw(12)),
        }
    }

    /// An SQE with opcode `opc` ([`io_opc::READ`], [`io_opc::WRITE`],
    /// [`io_opc::COMPARE`] or [`io_opc::WRITE_ZEROES`]) and these fields;
    /// CDW12's flags (LR, FUA, PRINFO) are 0.
    pub fn encode(&self, opc: u8) -> Sqe {
        let mut s = sqe(opc, self.nsid);
        put64(&mut s.0, dw(10), self.slba);
        put16(&mut s.0, dw(12), self.nlb);
        s
    }
}

/// Write Zeroes (NVM Command Set 1.0): an [`Rw`] range and DEAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteZeroes {
    /// The blocks to zero.
    pub range: Rw,
    /// Deallocate (CDW12 bit 25): the host would rather the blocks be deallocated.
    pub deac: bool,
}

impl WriteZeroes {
    /// CDW12 bit 25.
    const DEAC: u32 = 1 << 25;

    /// Reads the fields.
    pub fn parse(sqe: &Sqe) -> Self {
        WriteZeroes {
            range: Rw::parse(sqe),
            deac: sqe.cdw(12) & Self::DEAC != 0,
        }
    }

    /// The SQE ([`io_opc::WRITE_ZEROES`]).
    pub fn encode(&self) -> Sqe {
        let mut s = self.range.encode(io_opc::WRITE_ZEROES);
        if self.deac {
            s.set_cdw(12, s.cdw(12) | Self::DEAC);
        }
        s
    }
}

/// Flush (NVMe Base 2.0): NSID only ([`NSID_ALL`]: every namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    /// Namespace.
    pub nsid: u32,
}

impl Flush {
    /// The SQE ([`io_opc::FLUSH`]).
    pub fn encode(&self) -> Sqe {
        sqe(io_opc::FLUSH, self.nsid)
    }
}

/// Dataset Management (NVM Command Set 1.0): NR in CDW10 bits 07:00, the
/// attributes in CDW11; the ranges ([`DsmRange`]) are the command's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatasetManagement {
    /// Namespace.
    pub nsid: u32,
    /// Number of Ranges, 0's based (0 is one range).
    pub nr: u8,
    /// Attribute – Deallocate (CDW11 bit 2).
    pub ad: bool,
    /// Attribute – Integral Dataset for Write (CDW11 bit 1).
    pub idw: bool,
    /// Attribute – Integral Dataset for Read (CDW11 bit 0).
    pub idr: bool,
}

impl DatasetManagement {
    /// Number of ranges, 1 to 256.
    pub fn ranges(&self) -> usize {
        usize::from(self.nr) + 1
    }

    /// Reads the fields.
    pub fn parse(sqe: &Sqe) -> Self {
        let cdw11 = sqe.cdw(11);
        DatasetManagement {
            nsid: sqe.nsid(),
            nr: sqe.0[dw(10)],
            ad: cdw11 & (1 << 2) != 0,
            idw: cdw11 & (1 << 1) != 0,
            idr: cdw11 & 1 != 0,
        }
    }

    /// The SQE ([`io_opc::DATASET_MANAGEMENT`]).
    pub fn encode(&self) -> Sqe {
        let mut s = sqe(io_opc::DATASET_MANAGEMENT, self.nsid);
        s.0[dw(10)] = self.nr;
        let attributes = u32::from(self.ad) << 2 | u32::from(self.idw) << 1 | u32::from(self.idr);
        s.set_cdw(11, attributes);
        s
    }
}

/// One Dataset Management range (16 bytes of the command's data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DsmRange {
    /// Context Attributes (bytes 03:00).
    pub cattr: u32,
    /// Length in logical blocks (bytes 07:04); not 0's based.
    pub nlb: u32,
    /// Starting LBA (bytes 15:08).
    pub slba: u64,
}

impl DsmRange {
    /// Size of a range, bytes.
    pub const LEN: usize = 16;

    /// Reads a range from 16 bytes.
    pub fn parse(b: &[u8; Self::LEN]) -> Self {
        DsmRange {
            cattr: le32(b, 0),
            nlb: le32(b, 4),
            slba: le64(b, 8),
        }
    }

    /// The 16 bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0; Self::LEN];
        put32(&mut b, 0, self.cattr);
        put32(&mut b, 4, self.nlb);
        put64(&mut b, 8, self.slba);
        b
    }
}

/// Identify (NVMe Base 2.0): CNS in CDW10 bits 07:00, CNTID in CDW10 bits 31:16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identify {
    /// Controller or Namespace Structure ([`cns`]).
    pub cns: u8,
    /// Controller identifier (for the CNS values that name one).
    pub cntid: u16,
    /// Namespace (for the CNS values that name one).
    pub nsid: u32,
}

impl Identify {
    /// Reads the fields.
    pub fn parse(sqe: &Sqe) -> Self {
        Identify {
            cns: sqe.0[dw(10)],
            cntid: le16(&sqe.0, dw(10) + 2),
            nsid: sqe.nsid(),
        }
    }

    /// The SQE ([`admin_opc::IDENTIFY`]).
    pub fn encode(&self) -> Sqe {
        let mut s = sqe(admin_opc::IDENTIFY, self.nsid);
        s.0[dw(10)] = self.cns;
        put16(&mut s.0, dw(10) + 2, self.cntid);
        s
    }
}

/// Get Log Page (NVMe Base 2.0): LID, LSP (bits 14:08), RAE (bit 15) and
/// NUMDL (bits 31:16) in CDW10; NUMDU in CDW11 bits 15:00; LPOL and LPOU
/// in CDW12 and CDW13.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetLogPage {
    /// Namespace ([`NSID_ALL`] for controller-wide pages).
    pub nsid: u32,
    /// Log Page Identifier ([`lid`]).
    pub lid: u8,
    /// Log Specific Field (7 bits).
    pub lsp: u8,
    /// Retain Asynchronous Event: reading the page does not clear the event.
    pub rae: bool,
    /// Number of Dwords, 0's based (NUMDU:NUMDL): see [`len`](Self::len).
    pub numd: u32,
    /// Log Page Offset, bytes (a multiple of 4).
    pub lpo: u64,
}

impl GetLogPage {
    /// Reading `len` bytes (a multiple of 4, at least 4) of page `lid` from
    /// its start, no LSP, RAE clear.
    pub fn new(nsid: u32, lid: u8, len: u32) -> Self {
        GetLogPage {
            nsid,
            lid,
            lsp: 0,
            rae: false,
            numd: (len / 4).wrapping_sub(1),
            lpo: 0,
        }
    }

    /// Bytes asked for: (NUMD + 1) dwords.
    pub fn len(&self) -> u64 {
        (u64::from(self.numd) + 1) * 4
    }

    /// Never empty (NUMD is 0's based); here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Reads the fields.
    pub fn parse(sqe: &Sqe) -> Self {
        let cdw10 = sqe.cdw(10);
        GetLogPage {
            nsid: sqe.nsid(),
            lid: cdw10 as u8,
            lsp: ((cdw10 >> 8) & 0x7F) as u8,
            rae: cdw10 & (1 << 15) != 0,
            numd: u32::from(le16(&sqe.0, dw(11))) << 16 | cdw10 >> 16,
            lpo: le64(&sqe.0, dw(12)),
        }
    }

    /// The SQE ([`admin_opc::GET_LOG_PAGE`]).
    pub fn encode(&self) -> Sqe {
        let mut s = sqe(admin_opc::GET_LOG_PAGE, self.nsid);
        let cdw10 = u32::from(self.lid)
            | u32::from(self.lsp & 0x7F) << 8
            | u32::from(self.rae) << 15
            | (self.numd & 0xFFFF) << 16;
        s.set_cdw(10, cdw10);
        put16(&mut s.0, dw(11), (self.numd >> 16) as u16);
        put64(&mut s.0, dw(12), self.lpo);
        s
    }
}

/// Get Features or Set Features (NVMe Base 2.0): FID in CDW10 bits 07:00,
/// SV (Set, bit 31) or SEL (Get, bits 10:08) in CDW10, the value in CDW11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Namespace (for namespace-scoped features; else 0).
    pub nsid: u32,
    /// Feature Identifier ([`fid`]).
    pub fid: u8,
    /// Set Features: Save (the value persists across resets).
    pub sv: bool,
    /// Get Features: Select (0 current, 1 default, 2 saved, 3 capabilities).
    pub sel: u8,
    /// Feature-specific CDW11 (the value to set; some features' Get takes one too).
    pub cdw11: u32,
}

impl Features {
    /// Set Features of `fid` to `cdw11`, not saved.
    pub fn set(fid: u8, cdw11: u32) -> Self {
        Features {
            nsid: 0,
            fid,
            sv: false,
            sel: 0,
            cdw11,
        }
    }

    /// Get Features of `fid`'s current value.
    pub fn get(fid: u8) -> Self {
        Features::set(fid, 0)
    }

    /// Reads the fields (SV and SEL both: they are distinct bits).
    pub fn parse(sqe: &Sqe) -> Self {
        let cdw10 = sqe.cdw(10);
        Features {
            nsid: sqe.nsid(),
            fid: cdw10 as u8,
            sv: cdw10 & (1 << 31) != 0,
            sel: ((cdw10 >> 8) & 7) as u8,
            cdw11: sqe.cdw(11),
        }
    }

    /// The SQE with opcode `opc` ([`admin_opc::SET_FEATURES`] or
    /// [`admin_opc::GET_FEATURES`]).
    pub fn encode(&self, opc: u8) -> Sqe {
        let mut s = sqe(opc, self.nsid);
        let cdw10 = u32::from(self.fid) | u32::from(self.sel & 7) << 8 | u32::from(self.sv) << 31;
        s.set_cdw(10, cdw10);
        s.set_cdw(11, self.cdw11);
        s
    }
}

/// Number of Queues (feature 07h): Set's CDW11 (NSQR, NCQR: requested) and
/// the completion's DW0 (NSQA, NCQA: allocated) share this layout: I/O
/// submission queues in bits 15:00, completion queues in bits 31:16, both
/// 0's based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumberOfQueues {
    /// I/O submission queues, 0's based.
    pub nsq: u16,
    /// I/O completion queues, 0's based.
    pub ncq: u16,
}

impl NumberOfQueues {
    /// Reads CDW11 or completion DW0.
    pub fn from_dword(v: u32) -> Self {
        NumberOfQueues {
            nsq: v as u16,
            ncq: (v >> 16) as u16,
        }
    }

    /// CDW11 or completion DW0.
    pub fn dword(&self) -> u32 {
        u32::from(self.ncq) << 16 | u32::from(self.nsq)
    }
}

/// An asynchronous event, as an AER's completion DW0 carries it: type in
/// bits 02:00, information in bits 15:08, the log page to read in bits 23:16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Asynchronous Event Type ([`event_type`]).
    pub kind: u8,
    /// Asynchronous Event Information (for a Notice: [`notice`]).
    pub info: u8,
    /// Log Page Identifier ([`lid`]).
    pub lid: u8,
}

impl AsyncEvent {
    /// Reads completion DW0.
    pub fn from_dw0(dw0: u32) -> Self {
        AsyncEvent {
            kind: (dw0 & 7) as u8,
            info: (dw0 >> 8) as u8,
            lid: (dw0 >> 16) as u8,
        }
    }

    /// Completion DW0.
    pub const fn dw0(&self) -> u32 {
        (self.lid as u32) << 16 | (self.info as u32) << 8 | (self.kind & 7) as u32
    }
}

/// Keep Alive (NVMe Base 2.0): no fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive;

impl KeepAlive {
    /// The SQE ([`admin_opc::KEEP_ALIVE`]).
    pub fn encode(&self) -> Sqe {
        sqe(admin_opc::KEEP_ALIVE, 0)
    }
}

/// Asynchronous Event Request (NVMe Base 2.0): no fields; completes when an
/// event occurs ([`AsyncEvent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncEventRequest;

impl AsyncEventRequest {
    /// The SQE ([`admin_opc::ASYNC_EVENT_REQUEST`]).
    pub fn encode(&self) -> Sqe {
        sqe(admin_opc::ASYNC_EVENT_REQUEST, 0)
    }
}

/// Abort (NVMe Base 2.0): SQID in CDW10 bits 15:00, CID in bits 31:16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    /// Submission queue of the command to abort.
    pub sqid: u16,
    /// Its command identifier.
    pub cid: u16,
}

impl Abort {
    /// Reads the fields.
    pub fn parse(sqe: &Sqe) -> Self {
        Abort {
            sqid: le16(&sqe.0, dw(10)),
            cid: le16(&sqe.0, dw(10) + 2),
        }
    }

    /// The SQE ([`admin_opc::ABORT`]).
    pub fn encode(&self) -> Sqe {
        let mut s = sqe(admin_opc::ABORT, 0);
        put16(&mut s.0, dw(10), self.sqid);
        put16(&mut s.0, dw(10) + 2, self.cid);
        s
    }
}

#[cfg(test)]
mod tests;
