//! NVMe over Fabrics commands (NVMe-oF 1.1 section 3.3 / NVMe Base 2.0
//! section 6): Connect, Property Get/Set, Authentication Send/Receive,
//! Disconnect. Pure parsing and
//! building; what a controller does with them is the engine's.

use crate::nvme::Sqe;
use crate::pdu::{le16, le32, le64, put16, put32, put64};

/// Fabrics command types (FCTYPE, byte 4 of the SQE).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECV: u8 = 0x06;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x08;
}

/// Size of the Connect command's data, bytes.
pub const CONNECT_DATA_LEN: usize = 1024;
/// Longest NQN, bytes, without its terminating NUL (NVMe Base 2.0 section 4.5).
pub const NQN_MAX_LEN: usize = 223;
/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// CATTR bit 2: the host disables SQ flow control (SQHD is then reserved and
/// a controller may complete reads with C2HData SUCCESS).
pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 0x04;

/// A Connect command's SQE fields (NVMe-oF 1.1 figure 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCmd {
    /// Record format; 0 is the only one defined.
    pub recfmt: u16,
    /// Queue to create: 0 = admin, else I/O.
    pub qid: u16,
    /// Submission queue size, 0's based.
    pub sqsize: u16,
    /// Connect attributes (bit 2: disable SQ flow control).
    pub cattr: u8,
    /// Keep Alive Timeout, ms (admin queue only; 0 = disabled).
    pub kato: u32,
}

/// Byte offsets in the Connect SQE and data, for IPO values.
pub mod connect_offset {
    /// RECFMT in the SQE.
    pub const RECFMT: u16 = 40;
    /// QID in the SQE.
    pub const QID: u16 = 42;
    /// SQSIZE in the SQE.
    pub const SQSIZE: u16 = 44;
    /// CATTR in the SQE.
    pub const CATTR: u16 = 46;
    /// KATO in the SQE.
    pub const KATO: u16 = 48;
    /// CNTLID in the data.
    pub const CNTLID: u16 = 16;
    /// SUBNQN in the data.
    pub const SUBNQN: u16 = 256;
    /// HOSTNQN in the data.
    pub const HOSTNQN: u16 = 512;
}

impl ConnectCmd {
    /// Reads the fields from a Connect SQE.
    pub fn parse(sqe: &Sqe) -> Self {
        let b = &sqe.0;
        ConnectCmd {
            recfmt: le16(b, 40),
            qid: le16(b, 42),
            sqsize: le16(b, 44),
            cattr: b[46],
            kato: le32(b, 48),
        }
    }

    /// Whether the host disabled SQ flow control.
    pub fn sq_flow_control_disabled(&self) -> bool {
        self.cattr & CATTR_DISABLE_SQ_FLOW_CONTROL != 0
    }

    /// Writes the fields into a Fabrics SQE.
    pub fn write(&self, sqe: &mut Sqe) {
        let b = &mut sqe.0;
        b[0] = crate::nvme::admin_opc::FABRICS;
        b[4] = fctype::CONNECT;
        put16(b, 40, self.recfmt);
        put16(b, 42, self.qid);
        put16(b, 44, self.sqsize);
        b[46] = self.cattr;
        put32(b, 48, self.kato);
    }
}

/// Why a Connect was refused with Connect Invalid Parameters: DW0 of the
/// CQE is IPO (bits 15:0, byte offset) | IATTR (bits 23:16; bit 0 set when the
/// offset is in the Connect data rather than the SQE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidParameter {
    /// Byte offset of the field.
    pub ipo: u16,
    /// True when the field is in the Connect data.
    pub in_data: bool,
}

impl InvalidParameter {
    /// A field of the SQE.
    pub fn sqe(ipo: u16) -> Self {
        InvalidParameter { ipo, in_data: false }
    }

    /// A field of the Connect data.
    pub fn data(ipo: u16) -> Self {
        InvalidParameter { ipo, in_data: true }
    }

    /// The CQE DW0 value.
    pub fn dw0(self) -> u32 {
        u32::from(self.ipo) | (u32::from(self.in_data) << 16)
    }
}

/// The 1024-byte Connect data (NVMe-oF 1.1 figure 21).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectData {
    /// Host Identifier (a UUID).
    pub hostid: [u8; 16],
    /// Controller ID; 0xFFFF asks for a dynamic controller (admin queue), an
    /// I/O queue names the controller its admin queue got.
    pub cntlid: u16,
    /// The subsystem's NQN.
    pub subnqn: String,
    /// The host's NQN.
    pub hostnqn: String,
}

/// Whether an NQN field of the Connect data may be empty (a lone NUL).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Empty {
    Refused,
    Allowed,
}

fn nqn_at(b: &[u8], at: usize, empty: Empty) -> Result<String, InvalidParameter> {
    let field = &b[at..at + 256];
    let bad = InvalidParameter::data(at as u16);
    let len = field.iter().position(|&c| c == 0).ok_or(bad)?;
    if (len == 0 && empty == Empty::Refused) || len > NQN_MAX_LEN {
        return Err(bad);
    }
    let s = std::str::from_utf8(&field[..len]).map_err(|_| bad)?;
    if s.chars().any(|c| c.is_control()) {
        return Err(bad);
    }
    Ok(s.to_string())
}

impl ConnectData {
    /// Parses and validates the 1024 bytes: each NQN must end with a NUL
    /// inside its 256-byte field and be at most 223 bytes of UTF-8 without
    /// control characters (CVE-2023-6121's fault kind). SUBNQN must not be
    /// empty; HOSTNQN may be (SPDK's and Linux's targets then let the host in
    /// where the subsystem allows any host, and refuse it with Connect
    /// Invalid Host where it keeps an allow-list).
    ///
    /// # Errors
    /// The offending field, for a Connect Invalid Parameters response.
    pub fn parse(b: &[u8]) -> Result<Self, InvalidParameter> {
        if b.len() < CONNECT_DATA_LEN {
            return Err(InvalidParameter::sqe(24));
        }
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&b[..16]);
        Ok(ConnectData {
            hostid,
            cntlid: le16(b, 16),
            subnqn: nqn_at(b, connect_offset::SUBNQN as usize, Empty::Refused)?,
            hostnqn: nqn_at(b, connect_offset::HOSTNQN as usize, Empty::Allowed)?,
        })
    }

    /// The wire form (NQNs are truncated to 223 bytes).
    pub fn encode(&self) -> [u8; CONNECT_DATA_LEN] {
        let mut b = [0u8; CONNECT_DATA_LEN];
        b[..16].copy_from_slice(&self.hostid);
        put16(&mut b, 16, self.cntlid);
        for (at, s) in [(256, &self.subnqn), (512, &self.hostnqn)] {
            let n = s.len().min(NQN_MAX_LEN);
            b[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
        }
        b
    }
}

/// Connect response DW0 bit 17, Authentication Required (ATR, in AUTHREQ):
/// the host must authenticate this queue in band (DH-HMAC-CHAP) before
/// any command but Fabrics ones (NVMe Base 2.0 figure 546).
pub const CONNECT_AUTHREQ_ATR: u32 = 1 << 17;
/// Connect response DW0 bit 18, Authentication and Secure Channel Required
/// (ASCR): authenticate, then set up TLS with the result (not offered).
pub const CONNECT_AUTHREQ_ASCR: u32 = 1 << 18;

/// Authentication Send / Authentication Receive fields (NVMe Base 2.0
/// figures 547 and 549): CDW10 bits 15:8 SPSP0, 23:16 SPSP1, 31:24 SECP;
/// CDW11 the transfer length (TL, Send) or allocation length (AL, Receive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthCmd {
    /// Security Protocol (E9h for DH-HMAC-CHAP).
    pub secp: u8,
    /// SP Specific 0.
    pub spsp0: u8,
    /// SP Specific 1.
    pub spsp1: u8,
    /// TL or AL, bytes.
    pub len: u32,
}

impl AuthCmd {
    /// Reads the fields from the SQE.
    pub fn parse(sqe: &Sqe) -> Self {
        let b = &sqe.0;
        AuthCmd {
            secp: b[43],
            spsp0: b[41],
            spsp1: b[42],
            len: le32(b, 44),
        }
    }

    /// Writes into a Fabrics SQE of FCTYPE `fctype` (Send or Receive).
    pub fn write(&self, sqe: &mut Sqe, fctype: u8) {
        let b = &mut sqe.0;
        b[0] = crate::nvme::admin_opc::FABRICS;
        b[4] = fctype;
        b[41] = self.spsp0;
        b[42] = self.spsp1;
        b[43] = self.secp;
        put32(b, 44, self.len);
    }
}

/// Property Get / Property Set fields (NVMe-oF 1.1 figures 25-28).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropertyCmd {
    /// Size: 4 or 8 bytes (ATTRIB bits 2:0 = 0 or 1).
    pub size: u8,
    /// Property offset (OFST), bytes.
    pub offset: u32,
    /// Value to set (Property Set only).
    pub value: u64,
}

impl PropertyCmd {
    /// Reads from the SQE; `None` when ATTRIB names a size other than 4 or 8.
    pub fn parse(sqe: &Sqe) -> Option<Self> {
        let b = &sqe.0;
        let size = match b[40] & 7 {
            0 => 4,
            1 => 8,
            _ => return None,
        };
        Some(PropertyCmd {
            size,
            offset: le32(b, 44),
            value: le64(b, 48),
        })
    }

    /// Writes into a Fabrics SQE of the given FCTYPE.
    pub fn write(&self, sqe: &mut Sqe, fctype: u8) {
        let b = &mut sqe.0;
        b[0] = crate::nvme::admin_opc::FABRICS;
        b[4] = fctype;
        b[40] = if self.size == 8 { 1 } else { 0 };
        put32(b, 44, self.offset);
        put64(b, 48, self.value);
    }
}

/// Controller property offsets (NVMe Base 2.0 figure 33).
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset (4 bytes).
    pub const NSSR: u32 = 0x20;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(sub: &[u8], host: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[16..18].copy_from_slice(&0xFFFFu16.to_le_bytes());
        b[256..256 + sub.len()].copy_from_slice(sub);
        b[512..512 + host.len()].copy_from_slice(host);
        b
    }

    #[test]
    fn connect_data_parses_good_nqns() {
        let d = ConnectData::parse(&data(b"nqn.2024-01.test:sub1", b"nqn.2014-08.org.nvmexpress:uuid:1")).unwrap();
        assert_eq!(d.cntlid, 0xFFFF);
        assert_eq!(d.subnqn, "nqn.2024-01.test:sub1");
        assert_eq!(d.hostnqn, "nqn.2014-08.org.nvmexpress:uuid:1");
        assert_eq!(ConnectData::parse(&d.encode()).unwrap(), d);
        // Exactly 223 bytes plus NUL is valid.
        let long = vec![b'a'; 223];
        assert!(ConnectData::parse(&data(&long, b"h")).is_ok());
    }

    #[test]
    fn unterminated_or_bad_nqns_name_their_offset() {
        // B16: 256 x 'a' in SUBNQN, no NUL.
        let e = ConnectData::parse(&data(&[b'a'; 256], b"h")).unwrap_err();
        assert_eq!(e.dw0(), 0x0001_0100);
        let e = ConnectData::parse(&data(b"s", &[b'b'; 256])).unwrap_err();
        assert_eq!(e.dw0(), 0x0001_0200);
        assert_eq!(ConnectData::parse(&data(&[b'a'; 224], b"h")).unwrap_err().ipo, 256);
        assert_eq!(ConnectData::parse(&data(b"s", &[0xFF, 0xFE])).unwrap_err().ipo, 512);
        assert_eq!(ConnectData::parse(&data(b"", b"h")).unwrap_err().ipo, 256);
        assert_eq!(
            ConnectData::parse(&data(b"s", b"")).unwrap().hostnqn,
            "",
            "an empty HOSTNQN parses; the subsystem decides whether it may connect"
        );
        assert_eq!(ConnectData::parse(&data(b"s\n", b"h")).unwrap_err().ipo, 256);
    }

    #[test]
    fn connect_and_property_fields() {
        let mut sqe = Sqe([0; 64]);
        let c = ConnectCmd {
            recfmt: 0,
            qid: 3,
            sqsize: 127,
            cattr: CATTR_DISABLE_SQ_FLOW_CONTROL,
            kato: 10_000,
        };
        c.write(&mut sqe);
        assert_eq!(sqe.opc(), 0x7F);
        assert_eq!(sqe.fctype(), fctype::CONNECT);
        assert_eq!(&sqe.0[40..52], &[0, 0, 3, 0, 127, 0, 4, 0, 0x10, 0x27, 0, 0]);
        assert_eq!(ConnectCmd::parse(&sqe), c);
        assert!(c.sq_flow_control_disabled());
        let p = PropertyCmd {
            size: 8,
            offset: property::CAP,
            value: 0,
        };
        p.write(&mut sqe, fctype::PROPERTY_GET);
        assert_eq!(PropertyCmd::parse(&sqe), Some(p));
        sqe.0[40] = 2;
        assert_eq!(PropertyCmd::parse(&sqe), None);
    }

    #[test]
    fn auth_send_fields() {
        let mut sqe = Sqe([0; 64]);
        let a = AuthCmd {
            secp: 0xE9,
            spsp0: 1,
            spsp1: 1,
            len: 72,
        };
        a.write(&mut sqe, fctype::AUTH_SEND);
        assert_eq!(sqe.fctype(), 0x05);
        // CDW10 = SECP << 24 | SPSP1 << 16 | SPSP0 << 8; CDW11 = TL.
        assert_eq!(sqe.cdw(10), 0xE901_0100);
        assert_eq!(sqe.cdw(11), 72);
        assert_eq!(AuthCmd::parse(&sqe), a);
    }
}
