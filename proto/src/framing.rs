//! Receiving PDUs: the checks both ends of a queue pair make on a common
//! header (NVMe/TCP 1.0 section 3.6.1) and the answer each failure gets,
//! the header digest, and the TermReq that ends a queue on a fatal PDU.
//!
//! [`TargetQueue`](crate::target_queue::TargetQueue) and
//! [`HostQueue`](crate::host_queue::HostQueue) call these in their own
//! order and add their own rules around them (which PDU a state allows,
//! FLAGS, where data starts, transfer limits); what is the same for both
//! roles is written once here, with the FEI of each field named
//! ([`offset`]).

use std::ops::RangeInclusive;

use crate::buf::{RecvBuf, SendBuf};
use crate::pdu::{
    CommonHeader, FatalError, Fes, IC_HLEN, PduType, TERM_REQ_MAX_COPY, TERM_REQ_MAX_PLEN, crc32c, encode_term_req,
    le32, offset,
};

/// The end of the queue pair that receives the PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// The controller (target): it receives host-to-controller PDUs.
    Controller,
    /// The host: it receives controller-to-host PDUs.
    Host,
}

impl Receiver {
    /// The TermReq this end sends.
    fn term_req(self) -> PduType {
        match self {
            Receiver::Controller => PduType::C2HTermReq,
            Receiver::Host => PduType::H2CTermReq,
        }
    }
}

/// The PDU type of `ch`, if it is one `to` may receive.
///
/// # Errors
/// A reserved type, or one `to` itself sends: Invalid PDU Header Field at
/// PDU-Type.
pub(crate) fn pdu_type(ch: &CommonHeader, to: Receiver) -> Result<PduType, FatalError> {
    PduType::from_u8(ch.pdu_type)
        .filter(|t| t.is_host_to_controller() == (to == Receiver::Controller))
        .ok_or(FatalError::field(offset::PDU_TYPE))
}

/// Checks that HLEN is the one type `t` defines.
///
/// # Errors
/// Invalid PDU Header Field at HLEN.
pub(crate) fn check_hlen(ch: &CommonHeader, t: PduType) -> Result<(), FatalError> {
    if ch.hlen as usize == t.hlen() {
        Ok(())
    } else {
        Err(FatalError::field(offset::HLEN))
    }
}

/// The PLEN a PDU of type `t` may have, with `hd` bytes of header digest:
/// ICReq and ICResp exactly their 128 bytes; a TermReq its header and at
/// most 128 bytes of the PDU in error; a PDU that carries no data its
/// header and HDGST; one that may carry data at least that and at most
/// `max_with_data`.
pub(crate) fn plen_range(t: PduType, hd: usize, max_with_data: usize) -> RangeInclusive<usize> {
    let header = t.hlen() + hd;
    match t {
        PduType::IcReq | PduType::IcResp => IC_HLEN..=IC_HLEN,
        PduType::H2CTermReq | PduType::C2HTermReq => t.hlen()..=TERM_REQ_MAX_PLEN,
        _ if t.may_have_data() => header..=max_with_data,
        _ => header..=header,
    }
}

/// Checks PLEN against [`plen_range`].
///
/// # Errors
/// Invalid PDU Header Field at PLEN.
pub(crate) fn check_plen(ch: &CommonHeader, t: PduType, hd: usize, max_with_data: usize) -> Result<(), FatalError> {
    if plen_range(t, hd, max_with_data).contains(&(ch.plen as usize)) {
        Ok(())
    } else {
        Err(FatalError::field(offset::PLEN))
    }
}

/// Whether the HDGST that follows the `hlen`-byte header at the start of
/// `pdu` is the header's CRC32C (`pdu` holds at least `hlen + 4` bytes).
pub(crate) fn header_digest_ok(pdu: &[u8], hlen: usize) -> bool {
    crc32c(&pdu[..hlen]) == le32(pdu, hlen)
}

/// Checks the header digest ([`header_digest_ok`]).
///
/// # Errors
/// Header Digest Error.
pub(crate) fn check_header_digest(pdu: &[u8], hlen: usize) -> Result<(), FatalError> {
    if header_digest_ok(pdu, hlen) {
        Ok(())
    } else {
        Err(FatalError::status(Fes::HeaderDigestError))
    }
}

/// Ends the queue on a fatal PDU: queues the TermReq `from` sends for
/// `err`, carrying the first `header_len` received bytes (the header in
/// error; at most 128), and drops everything received, so nothing more is
/// parsed.
pub(crate) fn terminate(recv: &mut RecvBuf, send: &mut SendBuf, from: Receiver, err: FatalError, header_len: usize) {
    let avail = recv.avail();
    let header = &avail[..header_len.min(TERM_REQ_MAX_COPY).min(avail.len())];
    encode_term_req(&mut send.out, from.term_req(), err, header);
    recv.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(pdu_type: u8, hlen: u8, plen: u32) -> CommonHeader {
        CommonHeader {
            pdu_type,
            flags: 0,
            hlen,
            pdo: 0,
            plen,
        }
    }

    #[test]
    fn each_end_receives_only_the_other_ends_types() {
        // Host to controller: ICReq 00h, H2CTermReq 02h, CapsuleCmd 04h, H2CData 06h.
        for (t, to_controller) in [(0x00, true), (0x01, false), (0x02, true), (0x03, false), (0x04, true)] {
            let (yes, no) = if to_controller {
                (Receiver::Controller, Receiver::Host)
            } else {
                (Receiver::Host, Receiver::Controller)
            };
            assert_eq!(pdu_type(&ch(t, 24, 24), yes).map(|t| t as u8), Ok(t));
            assert_eq!(pdu_type(&ch(t, 24, 24), no), Err(FatalError::field(0)));
        }
        // Reserved: 08h, 0Ah and above.
        for t in [0x08, 0x0A, 0xFF] {
            for to in [Receiver::Controller, Receiver::Host] {
                assert_eq!(pdu_type(&ch(t, 24, 24), to), Err(FatalError::field(0)));
            }
        }
    }

    #[test]
    fn hlen_is_the_types_own() {
        assert_eq!(check_hlen(&ch(0x04, 72, 72), PduType::CapsuleCmd), Ok(()));
        assert_eq!(
            check_hlen(&ch(0x04, 24, 72), PduType::CapsuleCmd),
            Err(FatalError::field(2))
        );
        assert_eq!(check_hlen(&ch(0x00, 128, 128), PduType::IcReq), Ok(()));
        assert_eq!(
            check_hlen(&ch(0x05, 72, 24), PduType::CapsuleResp),
            Err(FatalError::field(2))
        );
    }

    #[test]
    fn plen_bounds_per_type() {
        assert_eq!(plen_range(PduType::IcReq, 0, 1 << 20), 128..=128);
        assert_eq!(plen_range(PduType::IcResp, 0, 1 << 20), 128..=128);
        // 24-byte header plus at most 128 bytes copied.
        assert_eq!(plen_range(PduType::C2HTermReq, 0, 1 << 20), 24..=152);
        assert_eq!(plen_range(PduType::H2CTermReq, 0, 1 << 20), 24..=152);
        // No data: header and HDGST exactly.
        assert_eq!(plen_range(PduType::CapsuleResp, 4, 1 << 20), 28..=28);
        assert_eq!(plen_range(PduType::R2T, 0, 1 << 20), 24..=24);
        // Data: from header and HDGST up to the caller's bound.
        assert_eq!(plen_range(PduType::CapsuleCmd, 4, 9000), 76..=9000);
        assert_eq!(plen_range(PduType::C2HData, 0, 9000), 24..=9000);
        assert_eq!(
            check_plen(&ch(0x07, 24, 9001), PduType::C2HData, 0, 9000),
            Err(FatalError::field(4))
        );
        assert_eq!(check_plen(&ch(0x07, 24, 9000), PduType::C2HData, 0, 9000), Ok(()));
    }

    #[test]
    fn the_header_digest_is_the_headers_crc32c() {
        // CRC-32C of 32 zero bytes is 8A9136AAh (RFC 3720 appendix B.4).
        let mut pdu = vec![0u8; 32];
        pdu.extend_from_slice(&0x8A91_36AAu32.to_le_bytes());
        assert!(header_digest_ok(&pdu, 32));
        assert_eq!(check_header_digest(&pdu, 32), Ok(()));
        pdu[0] = 1;
        assert_eq!(
            check_header_digest(&pdu, 32),
            Err(FatalError::status(Fes::HeaderDigestError))
        );
    }

    #[test]
    fn terminate_sends_the_receivers_term_req_with_at_most_128_bytes() {
        for (from, t, header_len, want) in [
            (Receiver::Controller, PduType::C2HTermReq, 24, 24),
            (Receiver::Host, PduType::H2CTermReq, 500, 128),
        ] {
            let mut recv = RecvBuf::default();
            let n = 300;
            recv.space(n).iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            recv.commit(n, n, true);
            let mut send = SendBuf::default();
            terminate(&mut recv, &mut send, from, FatalError::field(4), header_len);
            let out = &send.out;
            assert_eq!(out[0], t as u8);
            assert_eq!(le32(out, 4) as usize, 24 + want);
            assert_eq!(&out[24..], &(0..want).map(|i| i as u8).collect::<Vec<_>>()[..]);
            assert_eq!(recv.len(), 0, "nothing more is parsed");
        }
    }
}
