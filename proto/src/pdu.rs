//! NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0, section 3.6): the
//! common header, the PDU-specific headers, digests, and the fatal-error
//! codes a receiver reports in a TermReq.
//!
//! Pure code: it reads and writes byte slices, never a socket. Every multi-byte
//! field is little-endian. Parsers check lengths before indexing and return
//! [`FatalError`] (FES + FEI) rather than panicking, so a C2HTermReq or
//! H2CTermReq can carry the exact field that was wrong.

use std::fmt;

/// Length of the common header (CH), bytes.
pub const CH_LEN: usize = 8;
/// Length of a header or data digest (CRC32C), bytes.
pub const DIGEST_LEN: usize = 4;
/// HLEN of ICReq and ICResp, bytes (section 3.6.2.2/3).
pub const IC_HLEN: usize = 128;
/// HLEN of CapsuleCmd: CH + 64-byte SQE.
pub const CAPSULE_CMD_HLEN: usize = 72;
/// HLEN of CapsuleResp, H2CData, C2HData, R2T and TermReq PDUs.
pub const HLEN_24: usize = 24;
/// Largest PLEN of a TermReq: 24-byte header plus at most 128 bytes of the
/// PDU header in error (section 3.6.2.4).
pub const TERM_REQ_MAX_PLEN: usize = 152;
/// Largest header copied into a TermReq, bytes.
pub const TERM_REQ_MAX_COPY: usize = 128;

/// PDU-Type values (section 3.6.1, figure 18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request (host to controller).
    IcReq = 0x00,
    /// Initialize Connection Response (controller to host).
    IcResp = 0x01,
    /// Host to Controller Terminate Connection Request.
    H2CTermReq = 0x02,
    /// Controller to Host Terminate Connection Request.
    C2HTermReq = 0x03,
    /// Command Capsule (host to controller).
    CapsuleCmd = 0x04,
    /// Response Capsule (controller to host).
    CapsuleResp = 0x05,
    /// Host to Controller Data.
    H2CData = 0x06,
    /// Controller to Host Data.
    C2HData = 0x07,
    /// Ready to Transfer (controller to host).
    R2T = 0x09,
}

impl PduType {
    /// The type for a PDU-Type byte; `None` for reserved values (0x08, 0x0A..).
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x00 => PduType::IcReq,
            0x01 => PduType::IcResp,
            0x02 => PduType::H2CTermReq,
            0x03 => PduType::C2HTermReq,
            0x04 => PduType::CapsuleCmd,
            0x05 => PduType::CapsuleResp,
            0x06 => PduType::H2CData,
            0x07 => PduType::C2HData,
            0x09 => PduType::R2T,
            _ => return None,
        })
    }

    /// The only HLEN this type may carry, bytes.
    pub fn hlen(self) -> usize {
        match self {
            PduType::IcReq | PduType::IcResp => IC_HLEN,
            PduType::CapsuleCmd => CAPSULE_CMD_HLEN,
            _ => HLEN_24,
        }
    }

    /// Whether a host sends this type (the rest are sent by controllers).
    pub fn is_host_to_controller(self) -> bool {
        matches!(
            self,
            PduType::IcReq | PduType::H2CTermReq | PduType::CapsuleCmd | PduType::H2CData
        )
    }

    /// Whether this type may carry HDGST (ICReq, ICResp and TermReqs never do).
    pub fn may_have_header_digest(self) -> bool {
        !matches!(
            self,
            PduType::IcReq | PduType::IcResp | PduType::H2CTermReq | PduType::C2HTermReq
        )
    }

    /// Whether this type may carry data (and so DDGST).
    pub fn may_have_data(self) -> bool {
        matches!(self, PduType::CapsuleCmd | PduType::H2CData | PduType::C2HData)
    }
}

/// CH FLAGS bits (section 3.6.1).
pub mod flags {
    /// HDGSTF: a header digest follows the PDU header.
    pub const HDGSTF: u8 = 0x01;
    /// DDGSTF: a data digest follows the PDU data.
    pub const DDGSTF: u8 = 0x02;
    /// LAST_PDU (H2CData, C2HData): the last data PDU of the transfer.
    pub const LAST_PDU: u8 = 0x04;
    /// SUCCESS (C2HData with LAST_PDU): the command completed successfully and no CapsuleResp follows.
    pub const SUCCESS: u8 = 0x08;
}

/// Byte offsets of CH fields, used as FEI values.
pub mod offset {
    /// PDU-Type.
    pub const PDU_TYPE: u32 = 0;
    /// FLAGS.
    pub const FLAGS: u32 = 1;
    /// HLEN.
    pub const HLEN: u32 = 2;
    /// PDO.
    pub const PDO: u32 = 3;
    /// PLEN.
    pub const PLEN: u32 = 4;
}

/// Fatal Error Status of a TermReq (section 3.6.2.4, figure 25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Fes {
    /// 01h: a PDU header field is invalid; FEI is its byte offset.
    InvalidHeaderField = 0x01,
    /// 02h: a PDU arrived that is not allowed in the current state.
    PduSequenceError = 0x02,
    /// 03h: the header digest did not match.
    HeaderDigestError = 0x03,
    /// 04h: a data offset or length falls outside the command's buffer.
    DataTransferOutOfRange = 0x04,
    /// 05h: R2T Limit Exceeded (C2H direction) / Data Transfer Limit Exceeded (H2C direction).
    DataTransferLimitExceeded = 0x05,
    /// 06h: a parameter value is not supported; FEI is its byte offset.
    UnsupportedParameter = 0x06,
}

impl Fes {
    /// The FES for a wire value; `None` for values the specification does not define.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0x01 => Fes::InvalidHeaderField,
            0x02 => Fes::PduSequenceError,
            0x03 => Fes::HeaderDigestError,
            0x04 => Fes::DataTransferOutOfRange,
            0x05 => Fes::DataTransferLimitExceeded,
            0x06 => Fes::UnsupportedParameter,
            _ => return None,
        })
    }

    /// The specification's name.
    pub fn name(self) -> &'static str {
        match self {
            Fes::InvalidHeaderField => "Invalid PDU Header Field",
            Fes::PduSequenceError => "PDU Sequence Error",
            Fes::HeaderDigestError => "Header Digest Error",
            Fes::DataTransferOutOfRange => "Data Transfer Out of Range",
            Fes::DataTransferLimitExceeded => "Data Transfer Limit Exceeded",
            Fes::UnsupportedParameter => "Unsupported Parameter",
        }
    }
}

/// A fatal transport error: what a TermReq reports. FEI is the byte offset of
/// the offending field for [`Fes::InvalidHeaderField`] and
/// [`Fes::UnsupportedParameter`], 0 otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatalError {
    /// Fatal Error Status.
    pub fes: Fes,
    /// Fatal Error Information.
    pub fei: u32,
}

impl FatalError {
    /// An invalid header field at byte offset `fei`.
    pub fn field(fei: u32) -> Self {
        FatalError {
            fes: Fes::InvalidHeaderField,
            fei,
        }
    }

    /// An error whose FEI is reserved (0).
    pub fn status(fes: Fes) -> Self {
        FatalError { fes, fei: 0 }
    }
}

impl fmt::Display for FatalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fes {
            Fes::InvalidHeaderField | Fes::UnsupportedParameter => {
                write!(f, "{}, offset {}", self.fes.name(), self.fei)
            }
            _ => f.write_str(self.fes.name()),
        }
    }
}

impl std::error::Error for FatalError {}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The 8-byte common header (section 3.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonHeader {
    /// PDU-Type byte (not yet validated).
    pub pdu_type: u8,
    /// FLAGS.
    pub flags: u8,
    /// Header length, bytes.
    pub hlen: u8,
    /// PDU data offset, bytes from the start of the PDU (0 when there is no data).
    pub pdo: u8,
    /// Total PDU length including header, digests, padding and data, bytes.
    pub plen: u32,
}

impl CommonHeader {
    /// Reads a CH from the first 8 bytes of `b`; `None` if `b` is shorter.
    pub fn parse(b: &[u8]) -> Option<Self> {
        (b.len() >= CH_LEN).then(|| CommonHeader {
            pdu_type: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: le32(b, 4),
        })
    }

    /// Writes the CH into the first 8 bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.pdu_type;
        out[1] = self.flags;
        out[2] = self.hlen;
        out[3] = self.pdo;
        put32(out, 4, self.plen);
    }
}

/// CRC32C as NVMe/TCP uses it for HDGST and DDGST (standard CRC-32C, stored LE).
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// Digests a PDU uses, as negotiated by ICReq/ICResp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// Header digest on every PDU after the ICReq/ICResp exchange (except TermReqs).
    pub header: bool,
    /// Data digest on every PDU that carries data.
    pub data: bool,
}

impl Digests {
    /// From the ICReq/ICResp DGST byte (bit 0 HDGST_ENABLE, bit 1 DDGST_ENABLE).
    pub fn from_dgst(dgst: u8) -> Self {
        Digests {
            header: dgst & 1 != 0,
            data: dgst & 2 != 0,
        }
    }

    /// The DGST byte.
    pub fn dgst(self) -> u8 {
        u8::from(self.header) | (u8::from(self.data) << 1)
    }

    /// HDGST length for a PDU of `t`, bytes.
    pub fn hdgst_len(self, t: PduType) -> usize {
        if self.header && t.may_have_header_digest() {
            DIGEST_LEN
        } else {
            0
        }
    }
}

/// ICReq (section 3.6.2.2): what the host asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcReq {
    /// PDU Format Version; 0 is the only one defined.
    pub pfv: u16,
    /// Host PDU Data Alignment: data in C2H PDUs starts at a multiple of (HPDA+1)*4 bytes; 0..=31.
    pub hpda: u8,
    /// Digests requested.
    pub digests: Digests,
    /// Maximum outstanding R2T per command, 0's based.
    pub maxr2t: u32,
}

impl IcReq {
    /// Parses the 128-byte PDU (CH already checked for type, HLEN and PLEN).
    ///
    /// # Errors
    /// PFV other than 0: Unsupported Parameter at offset 8; HPDA above 31:
    /// Invalid PDU Header Field at offset 10.
    pub fn parse(b: &[u8; IC_HLEN]) -> Result<Self, FatalError> {
        let pfv = le16(b, 8);
        if pfv != 0 {
            return Err(FatalError {
                fes: Fes::UnsupportedParameter,
                fei: 8,
            });
        }
        let hpda = b[10];
        if hpda > 31 {
            return Err(FatalError::field(10));
        }
        Ok(IcReq {
            pfv,
            hpda,
            digests: Digests::from_dgst(b[11]),
            maxr2t: le32(b, 12),
        })
    }

    /// Encodes the PDU.
    pub fn encode(&self) -> [u8; IC_HLEN] {
        let mut b = [0u8; IC_HLEN];
        CommonHeader {
            pdu_type: PduType::IcReq as u8,
            flags: 0,
            hlen: IC_HLEN as u8,
            pdo: 0,
            plen: IC_HLEN as u32,
        }
        .write(&mut b);
        put16(&mut b, 8, self.pfv);
        b[10] = self.hpda;
        b[11] = self.digests.dgst();
        put32(&mut b, 12, self.maxr2t);
        b
    }
}

/// ICResp (section 3.6.2.3): what the controller grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcResp {
    /// PDU Format Version (0).
    pub pfv: u16,
    /// Controller PDU Data Alignment: data in H2C PDUs at multiples of (CPDA+1)*4.
    pub cpda: u8,
    /// Digests granted.
    pub digests: Digests,
    /// Largest DATAL of one H2CData PDU, bytes; a multiple of 4, at least 4096.
    pub maxh2cdata: u32,
}

impl IcResp {
    /// Encodes the PDU.
    pub fn encode(&self) -> [u8; IC_HLEN] {
        let mut b = [0u8; IC_HLEN];
        CommonHeader {
            pdu_type: PduType::IcResp as u8,
            flags: 0,
            hlen: IC_HLEN as u8,
            pdo: 0,
            plen: IC_HLEN as u32,
        }
        .write(&mut b);
        put16(&mut b, 8, self.pfv);
        b[10] = self.cpda;
        b[11] = self.digests.dgst();
        put32(&mut b, 12, self.maxh2cdata);
        b
    }

    /// Parses the 128-byte PDU (CH already checked).
    ///
    /// # Errors
    /// PFV other than 0 (offset 8), CPDA above 31 (offset 10), MAXH2CDATA
    /// below 4096 or not a multiple of 4 (offset 12).
    pub fn parse(b: &[u8; IC_HLEN]) -> Result<Self, FatalError> {
        let pfv = le16(b, 8);
        if pfv != 0 {
            return Err(FatalError {
                fes: Fes::UnsupportedParameter,
                fei: 8,
            });
        }
        if b[10] > 31 {
            return Err(FatalError::field(10));
        }
        let maxh2cdata = le32(b, 12);
        if maxh2cdata < 4096 || !maxh2cdata.is_multiple_of(4) {
            return Err(FatalError::field(12));
        }
        Ok(IcResp {
            pfv,
            cpda: b[10],
            digests: Digests::from_dgst(b[11]),
            maxh2cdata,
        })
    }
}

/// The header of an H2CData, C2HData or R2T PDU (all 24 bytes, same layout:
/// CCCID @8, TTAG @10 (reserved in C2HData), DATAO/R2TO @12, DATAL/R2TL @16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// Command Capsule CID the data belongs to.
    pub cccid: u16,
    /// Transfer tag from the R2T (H2CData, R2T); 0 in C2HData.
    pub ttag: u16,
    /// Offset of this PDU's data within the command's data, bytes (R2TO in an R2T).
    pub datao: u32,
    /// Length of this PDU's data, bytes (R2TL in an R2T).
    pub datal: u32,
}

/// Offsets of the data-header fields, used as FEI values.
pub mod data_offset {
    /// CCCID.
    pub const CCCID: u32 = 8;
    /// TTAG.
    pub const TTAG: u32 = 10;
    /// DATAO / R2TO.
    pub const DATAO: u32 = 12;
    /// DATAL / R2TL.
    pub const DATAL: u32 = 16;
}

impl DataHeader {
    /// Reads the fields from a 24-byte header.
    pub fn parse(b: &[u8]) -> Self {
        DataHeader {
            cccid: le16(b, 8),
            ttag: le16(b, 10),
            datao: le32(b, 12),
            datal: le32(b, 16),
        }
    }

    fn write(&self, b: &mut [u8]) {
        put16(b, 8, self.cccid);
        put16(b, 10, self.ttag);
        put32(b, 12, self.datao);
        put32(b, 16, self.datal);
    }
}

/// Appends an R2T PDU (section 3.6.2.9) to `out`.
pub fn encode_r2t(out: &mut Vec<u8>, cccid: u16, ttag: u16, r2to: u32, r2tl: u32, digests: Digests) {
    let hd = digests.hdgst_len(PduType::R2T);
    let start = out.len();
    out.resize(start + HLEN_24 + hd, 0);
    let b = &mut out[start..];
    CommonHeader {
        pdu_type: PduType::R2T as u8,
        flags: if hd > 0 { flags::HDGSTF } else { 0 },
        hlen: HLEN_24 as u8,
        pdo: 0,
        plen: (HLEN_24 + hd) as u32,
    }
    .write(b);
    DataHeader {
        cccid,
        ttag,
        datao: r2to,
        datal: r2tl,
    }
    .write(b);
    if hd > 0 {
        let d = crc32c(&b[..HLEN_24]);
        put32(b, HLEN_24, d);
    }
}

/// Appends a CapsuleResp PDU (section 3.6.2.6) carrying a 16-byte CQE.
pub fn encode_capsule_resp(out: &mut Vec<u8>, cqe: &[u8; 16], digests: Digests) {
    let hd = digests.hdgst_len(PduType::CapsuleResp);
    let start = out.len();
    out.resize(start + HLEN_24 + hd, 0);
    let b = &mut out[start..];
    CommonHeader {
        pdu_type: PduType::CapsuleResp as u8,
        flags: if hd > 0 { flags::HDGSTF } else { 0 },
        hlen: HLEN_24 as u8,
        pdo: 0,
        plen: (HLEN_24 + hd) as u32,
    }
    .write(b);
    b[8..24].copy_from_slice(cqe);
    if hd > 0 {
        let d = crc32c(&b[..HLEN_24]);
        put32(b, HLEN_24, d);
    }
}

/// Padding between the end of the header (and HDGST) and data aligned to
/// `(pda + 1) * 4` bytes, as PDO requires.
pub fn data_offset_for(hlen: usize, hdgst: usize, pda: u8) -> usize {
    let align = (usize::from(pda) + 1) * 4;
    (hlen + hdgst).div_ceil(align) * align
}

/// Appends a data PDU (C2HData from a controller, H2CData from a host)
/// carrying `data`: header, HDGST, padding to the peer's PDA, data, DDGST.
/// `extra_flags` adds LAST_PDU / SUCCESS.
#[allow(clippy::too_many_arguments)]
pub fn encode_data_pdu(
    out: &mut Vec<u8>,
    pdu_type: PduType,
    header: DataHeader,
    data: &[u8],
    extra_flags: u8,
    digests: Digests,
    pda: u8,
) {
    let ddgst = encode_data_pdu_header(out, pdu_type, header, data.len(), extra_flags, digests, pda);
    out.extend_from_slice(data);
    if ddgst {
        out.extend_from_slice(&crc32c(data).to_le_bytes());
    }
}

/// Appends the part of a data PDU that precedes its `datal` bytes of data
/// (header, HDGST, padding to the peer's PDA), for a caller that writes the
/// data in place after it (no intermediate copy). Returns whether a DDGST
/// (CRC32C of the data, little endian) must follow the data.
#[allow(clippy::too_many_arguments)]
pub fn encode_data_pdu_header(
    out: &mut Vec<u8>,
    pdu_type: PduType,
    header: DataHeader,
    datal: usize,
    extra_flags: u8,
    digests: Digests,
    pda: u8,
) -> bool {
    let hd = digests.hdgst_len(pdu_type);
    let dd = if digests.data && datal > 0 { DIGEST_LEN } else { 0 };
    let pdo = data_offset_for(HLEN_24, hd, pda);
    let plen = pdo + datal + dd;
    let start = out.len();
    out.resize(start + pdo, 0);
    let b = &mut out[start..];
    let mut f = extra_flags;
    if hd > 0 {
        f |= flags::HDGSTF;
    }
    if dd > 0 {
        f |= flags::DDGSTF;
    }
    CommonHeader {
        pdu_type: pdu_type as u8,
        flags: f,
        hlen: HLEN_24 as u8,
        pdo: pdo as u8,
        plen: plen as u32,
    }
    .write(b);
    DataHeader {
        datal: datal as u32,
        ..header
    }
    .write(b);
    if hd > 0 {
        let d = crc32c(&b[..HLEN_24]);
        put32(b, HLEN_24, d);
    }
    dd > 0
}

/// Appends a C2HTermReq or H2CTermReq (section 3.6.2.4/5): FES, FEI and up
/// to 128 bytes of the header of the PDU in error. TermReqs carry no digest.
pub fn encode_term_req(out: &mut Vec<u8>, pdu_type: PduType, err: FatalError, bad_header: &[u8]) {
    let copy = &bad_header[..bad_header.len().min(TERM_REQ_MAX_COPY)];
    let plen = HLEN_24 + copy.len();
    let start = out.len();
    out.resize(start + HLEN_24, 0);
    let b = &mut out[start..];
    CommonHeader {
        pdu_type: pdu_type as u8,
        flags: 0,
        hlen: HLEN_24 as u8,
        pdo: 0,
        plen: plen as u32,
    }
    .write(b);
    put16(b, 8, err.fes as u16);
    put32(b, 10, err.fei);
    out.extend_from_slice(copy);
}

/// A received TermReq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermReq {
    /// FES as sent (may be a value the specification does not define).
    pub fes: u16,
    /// FEI.
    pub fei: u32,
}

impl TermReq {
    /// Parses the 24-byte header of a TermReq.
    pub fn parse(b: &[u8]) -> Self {
        TermReq {
            fes: le16(b, 8),
            fei: le32(b, 10),
        }
    }
}

impl fmt::Display for TermReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Fes::from_u16(self.fes) {
            Some(fes) => write!(f, "{}", FatalError { fes, fei: self.fei }),
            None => write!(f, "unknown FES {}", self.fes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icreq_layout_matches_the_specification() {
        // ICREQ0 from the fault cases: PFV 0, HPDA 0, no digests, MAXR2T 0.
        let mut b = [0u8; 128];
        b[..8].copy_from_slice(&[0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00]);
        let r = IcReq::parse(&b).unwrap();
        assert_eq!(
            r,
            IcReq {
                pfv: 0,
                hpda: 0,
                digests: Digests::default(),
                maxr2t: 0
            }
        );
        assert_eq!(r.encode(), b);
        let r = IcReq {
            pfv: 0,
            hpda: 3,
            digests: Digests {
                header: true,
                data: true,
            },
            maxr2t: 0x0102_0304,
        };
        let e = r.encode();
        assert_eq!(&e[8..16], &[0, 0, 3, 3, 4, 3, 2, 1]);
        assert_eq!(IcReq::parse(&e).unwrap(), r);
    }

    #[test]
    fn icreq_errors_name_the_field() {
        let mut b = IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests::default(),
            maxr2t: 0,
        }
        .encode();
        b[8] = 1;
        assert_eq!(
            IcReq::parse(&b),
            Err(FatalError {
                fes: Fes::UnsupportedParameter,
                fei: 8
            })
        );
        b[8] = 0;
        b[10] = 32;
        assert_eq!(IcReq::parse(&b), Err(FatalError::field(10)));
        b[10] = 31;
        assert!(IcReq::parse(&b).is_ok());
    }

    #[test]
    fn icresp_layout_and_checks() {
        let r = IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests {
                header: true,
                data: false,
            },
            maxh2cdata: 131072,
        };
        let b = r.encode();
        assert_eq!(
            &b[..16],
            &[0x01, 0, 0x80, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x02, 0x00]
        );
        assert_eq!(IcResp::parse(&b).unwrap(), r);
        for bad in [0u32, 0x800, 0xFFF, 0x1002] {
            let mut x = b;
            x[12..16].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(IcResp::parse(&x), Err(FatalError::field(12)), "MAXH2CDATA {bad:#x}");
        }
    }

    #[test]
    fn r2t_and_capsule_resp_layouts() {
        let mut v = Vec::new();
        encode_r2t(&mut v, 0x0010, 0x0007, 0, 0x2000, Digests::default());
        assert_eq!(
            v,
            [
                0x09, 0, 0x18, 0, 0x18, 0, 0, 0, 0x10, 0, 0x07, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0
            ]
        );
        let mut v = Vec::new();
        encode_capsule_resp(
            &mut v,
            &[0xAB; 16],
            Digests {
                header: true,
                data: true,
            },
        );
        assert_eq!(&v[..8], &[0x05, 0x01, 0x18, 0, 0x1C, 0, 0, 0]);
        assert_eq!(&v[8..24], &[0xAB; 16]);
        assert_eq!(le32(&v, 24), crc32c(&v[..24]));
    }

    #[test]
    fn data_pdu_pads_to_the_peer_alignment_and_digests_only_data() {
        let data = [7u8; 100];
        let h = DataHeader {
            cccid: 5,
            ttag: 0,
            datao: 4096,
            datal: 0,
        };
        let mut v = Vec::new();
        encode_data_pdu(
            &mut v,
            PduType::C2HData,
            h,
            &data,
            flags::LAST_PDU,
            Digests {
                header: true,
                data: true,
            },
            3,
        );
        // Header 24 + HDGST 4 = 28, aligned to (3+1)*4 = 16 -> PDO 32.
        let ch = CommonHeader::parse(&v).unwrap();
        assert_eq!(ch.pdo, 32);
        assert_eq!(ch.flags, flags::HDGSTF | flags::DDGSTF | flags::LAST_PDU);
        assert_eq!(ch.plen as usize, 32 + 100 + 4);
        assert_eq!(v.len(), ch.plen as usize);
        let dh = DataHeader::parse(&v);
        assert_eq!((dh.cccid, dh.datao, dh.datal), (5, 4096, 100));
        assert_eq!(le32(&v, 24), crc32c(&v[..24]));
        assert_eq!(&v[32..132], &data);
        assert_eq!(le32(&v, 132), crc32c(&data));
        // No digests, PDA 0: data right after the header.
        let mut v = Vec::new();
        encode_data_pdu(&mut v, PduType::C2HData, h, &data, 0, Digests::default(), 0);
        assert_eq!(CommonHeader::parse(&v).unwrap().pdo, 24);
        assert_eq!(v.len(), 124);
    }

    #[test]
    fn term_req_carries_fes_fei_and_at_most_128_header_bytes() {
        let mut v = Vec::new();
        encode_term_req(&mut v, PduType::C2HTermReq, FatalError::field(2), &[0xEE; 200]);
        assert_eq!(&v[..14], &[0x03, 0, 0x18, 0, 152, 0, 0, 0, 0x01, 0, 0x02, 0, 0, 0]);
        assert_eq!(v.len(), TERM_REQ_MAX_PLEN);
        assert_eq!(TermReq::parse(&v).to_string(), "Invalid PDU Header Field, offset 2");
        let mut v = Vec::new();
        encode_term_req(
            &mut v,
            PduType::H2CTermReq,
            FatalError::status(Fes::HeaderDigestError),
            &[0; 8],
        );
        assert_eq!(CommonHeader::parse(&v).unwrap().plen, 32);
        assert_eq!(TermReq { fes: 7, fei: 0 }.to_string(), "unknown FES 7");
    }

    #[test]
    fn crc32c_is_the_castagnoli_check_value() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720 appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
