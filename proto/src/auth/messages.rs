//! The authentication messages of DH-HMAC-CHAP (NVMe Base 2.0 section
//! 8.13.5, figures 580 to 591), carried by Authentication Send (host to
//! controller) and Authentication Receive (controller to host).
//!
//! Every message starts with AUTH-TYPE (byte 0: 00h common, 01h
//! DH-HMAC-CHAP) and AUTH-ID (byte 1), then two reserved bytes and the
//! transaction identifier T_ID (bytes 5:4, little-endian). A decoder checks
//! every length against the bytes given before reading, and answers a bad
//! message with the [`FailureReason`] the specification gives for it, never
//! a panic.

use super::{DhGroup, HashId};

/// AUTH-TYPE values.
pub mod auth_type {
    /// Common messages: AUTH_Negotiate, AUTH_Failure1/2.
    pub const COMMON: u8 = 0x00;
    /// DH-HMAC-CHAP messages.
    pub const DHCHAP: u8 = 0x01;
}

/// AUTH-ID values.
pub mod auth_id {
    /// AUTH_Negotiate.
    pub const NEGOTIATE: u8 = 0x00;
    /// DH-HMAC-CHAP_Challenge.
    pub const CHALLENGE: u8 = 0x01;
    /// DH-HMAC-CHAP_Reply.
    pub const REPLY: u8 = 0x02;
    /// DH-HMAC-CHAP_Success1.
    pub const SUCCESS1: u8 = 0x03;
    /// DH-HMAC-CHAP_Success2.
    pub const SUCCESS2: u8 = 0x04;
    /// AUTH_Failure2 (host to controller).
    pub const FAILURE2: u8 = 0xF0;
    /// AUTH_Failure1 (controller to host).
    pub const FAILURE1: u8 = 0xF1;
}

/// AUTH-ID of DH-HMAC-CHAP in a protocol descriptor of AUTH_Negotiate.
pub const PROTOCOL_DHCHAP: u8 = 0x01;
/// Reason Code of every AUTH_Failure: "authentication failure".
pub const RESCODE_FAILED: u8 = 0x01;
/// Length of AUTH_Negotiate's fixed part and of each protocol descriptor.
const NEGOTIATE_HEADER: usize = 8;
const DESCRIPTOR_LEN: usize = 64;
/// Hash and DH group identifier lists: 30 bytes each in a descriptor.
const ID_LIST_LEN: usize = 30;
/// The fixed part of Challenge, Reply, Success1 and Success2.
const DHCHAP_HEADER: usize = 16;
/// An AUTH_Failure message.
const FAILURE_LEN: usize = 8;

/// Reason Code Explanation of AUTH_Failure1/2 (NVMe Base 2.0 figure 591).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Authentication failed (wrong response).
    Failed = 0x01,
    /// Authentication protocol not usable.
    NotUsable = 0x02,
    /// Secure channel concatenation mismatch.
    ConcatMismatch = 0x03,
    /// Hash function not usable.
    HashUnusable = 0x04,
    /// DH group not usable.
    DhgroupUnusable = 0x05,
    /// Incorrect payload.
    IncorrectPayload = 0x06,
    /// Incorrect protocol message (out of sequence, unknown, wrong T_ID).
    IncorrectMessage = 0x07,
}

impl FailureReason {
    /// The reason with this code; an unassigned one reads as [`Failed`](Self::Failed).
    pub fn from_code(code: u8) -> FailureReason {
        match code {
            0x02 => FailureReason::NotUsable,
            0x03 => FailureReason::ConcatMismatch,
            0x04 => FailureReason::HashUnusable,
            0x05 => FailureReason::DhgroupUnusable,
            0x06 => FailureReason::IncorrectPayload,
            0x07 => FailureReason::IncorrectMessage,
            _ => FailureReason::Failed,
        }
    }

    /// The code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureReason::Failed => "authentication failed",
            FailureReason::NotUsable => "authentication protocol not usable",
            FailureReason::ConcatMismatch => "secure channel concatenation mismatch",
            FailureReason::HashUnusable => "hash function not usable",
            FailureReason::DhgroupUnusable => "DH group not usable",
            FailureReason::IncorrectPayload => "incorrect payload",
            FailureReason::IncorrectMessage => "incorrect protocol message",
        })
    }
}

/// AUTH_Negotiate (figure 581): what the host offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiate {
    /// Transaction identifier.
    pub t_id: u16,
    /// Secure channel concatenation (SC_C): 0 none.
    pub sc_c: u8,
    /// Hash identifiers offered, as sent (unknown ones included).
    pub hashes: Vec<u8>,
    /// DH group identifiers offered, as sent.
    pub dhgroups: Vec<u8>,
}

/// DH-HMAC-CHAP_Challenge (figure 586).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Transaction identifier.
    pub t_id: u16,
    /// The hash chosen.
    pub hash: HashId,
    /// The DH group chosen.
    pub dhgroup: DhGroup,
    /// Sequence number S1.
    pub seqnum: u32,
    /// Challenge C1 (hash length).
    pub challenge: Vec<u8>,
    /// The controller's DH public value (empty with the null group).
    pub dh_value: Vec<u8>,
}

/// DH-HMAC-CHAP_Reply (figure 587).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Transaction identifier.
    pub t_id: u16,
    /// Response R1 (HL bytes).
    pub response: Vec<u8>,
    /// Challenge C2 to the controller (CVALID set): bidirectional.
    pub ctrl_challenge: Option<Vec<u8>>,
    /// Sequence number S2 (0 when unidirectional).
    pub seqnum: u32,
    /// The host's DH public value (empty with the null group).
    pub dh_value: Vec<u8>,
}

/// DH-HMAC-CHAP_Success1 (figure 588).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Success1 {
    /// Transaction identifier.
    pub t_id: u16,
    /// Hash length of the transaction.
    pub hl: u8,
    /// Response R2 (RVALID set): the controller's answer to C2.
    pub response: Option<Vec<u8>>,
}

/// AUTH_Failure1/2 (figure 590).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Transaction identifier.
    pub t_id: u16,
    /// Reason code (01h).
    pub rescode: u8,
    /// Reason code explanation.
    pub reason: FailureReason,
}

/// One authentication message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// AUTH_Negotiate (host).
    Negotiate(Negotiate),
    /// DH-HMAC-CHAP_Challenge (controller).
    Challenge(Challenge),
    /// DH-HMAC-CHAP_Reply (host).
    Reply(Reply),
    /// DH-HMAC-CHAP_Success1 (controller).
    Success1(Success1),
    /// DH-HMAC-CHAP_Success2 (host), with its transaction identifier.
    Success2(u16),
    /// AUTH_Failure1 (controller).
    Failure1(Failure),
    /// AUTH_Failure2 (host).
    Failure2(Failure),
}

/// How the bytes given relate to the message's own length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly the message (Authentication Send: TL is the message's length).
    Exact,
    /// The message, then anything (Authentication Receive fills the host's
    /// buffer of AL bytes; the message says its own length).
    Padded,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn valid_hl(hl: u8) -> bool {
    matches!(hl, 32 | 48 | 64)
}

/// `need` bytes make the message: fewer is a short message, more is
/// refused under [`Framing::Exact`].
fn check_len(b: &[u8], need: usize, framing: Framing) -> Result<(), FailureReason> {
    if b.len() < need || (framing == Framing::Exact && b.len() != need) {
        return Err(FailureReason::IncorrectPayload);
    }
    Ok(())
}

impl Message {
    /// The transaction identifier.
    pub fn t_id(&self) -> u16 {
        match self {
            Message::Negotiate(m) => m.t_id,
            Message::Challenge(m) => m.t_id,
            Message::Reply(m) => m.t_id,
            Message::Success1(m) => m.t_id,
            Message::Success2(t) => *t,
            Message::Failure1(m) | Message::Failure2(m) => m.t_id,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let header = |ty: u8, id: u8, t_id: u16, len: usize| {
            let mut b = vec![0u8; len];
            b[0] = ty;
            b[1] = id;
            b[4..6].copy_from_slice(&t_id.to_le_bytes());
            b
        };
        match self {
            Message::Negotiate(m) => {
                let mut b = header(
                    auth_type::COMMON,
                    auth_id::NEGOTIATE,
                    m.t_id,
                    NEGOTIATE_HEADER + DESCRIPTOR_LEN,
                );
                let hashes = &m.hashes[..m.hashes.len().min(ID_LIST_LEN)];
                let groups = &m.dhgroups[..m.dhgroups.len().min(ID_LIST_LEN)];
                b[6] = m.sc_c;
                b[7] = 1;
                let d = &mut b[NEGOTIATE_HEADER..];
                d[0] = PROTOCOL_DHCHAP;
                d[2] = hashes.len() as u8;
                d[3] = groups.len() as u8;
                d[4..4 + hashes.len()].copy_from_slice(hashes);
                d[4 + ID_LIST_LEN..4 + ID_LIST_LEN + groups.len()].copy_from_slice(groups);
                b
            }
            Message::Challenge(m) => {
                let hl = m.challenge.len();
                let mut b = header(
                    auth_type::DHCHAP,
                    auth_id::CHALLENGE,
                    m.t_id,
                    DHCHAP_HEADER + hl + m.dh_value.len(),
                );
                b[6] = hl as u8;
                b[8] = m.hash.id();
                b[9] = m.dhgroup.id();
                b[10..12].copy_from_slice(&(m.dh_value.len() as u16).to_le_bytes());
                b[12..16].copy_from_slice(&m.seqnum.to_le_bytes());
                b[16..16 + hl].copy_from_slice(&m.challenge);
                b[16 + hl..].copy_from_slice(&m.dh_value);
                b
            }
            Message::Reply(m) => {
                let hl = m.response.len();
                let mut b = header(
                    auth_type::DHCHAP,
                    auth_id::REPLY,
                    m.t_id,
                    DHCHAP_HEADER + 2 * hl + m.dh_value.len(),
                );
                b[6] = hl as u8;
                b[8] = u8::from(m.ctrl_challenge.is_some());
                b[10..12].copy_from_slice(&(m.dh_value.len() as u16).to_le_bytes());
                b[12..16].copy_from_slice(&m.seqnum.to_le_bytes());
                b[16..16 + hl].copy_from_slice(&m.response);
                if let Some(c) = &m.ctrl_challenge {
                    let n = c.len().min(hl);
                    b[16 + hl..16 + hl + n].copy_from_slice(&c[..n]);
                }
                b[16 + 2 * hl..].copy_from_slice(&m.dh_value);
                b
            }
            Message::Success1(m) => {
                // The response field is always there (zeroes when RVALID is
                // clear), as the Linux and SPDK controllers send it.
                let hl = usize::from(m.hl);
                let mut b = header(auth_type::DHCHAP, auth_id::SUCCESS1, m.t_id, DHCHAP_HEADER + hl);
                b[6] = m.hl;
                if let Some(r) = &m.response {
                    b[8] = 1;
                    let n = r.len().min(hl);
                    b[16..16 + n].copy_from_slice(&r[..n]);
                }
                b
            }
            Message::Success2(t_id) => header(auth_type::DHCHAP, auth_id::SUCCESS2, *t_id, DHCHAP_HEADER),
            Message::Failure1(m) | Message::Failure2(m) => {
                let id = if matches!(self, Message::Failure1(_)) {
                    auth_id::FAILURE1
                } else {
                    auth_id::FAILURE2
                };
                let mut b = header(auth_type::COMMON, id, m.t_id, FAILURE_LEN);
                b[6] = m.rescode;
                b[7] = m.reason.code();
                b
            }
        }
    }

    /// Decodes one message.
    ///
    /// # Errors
    /// [`FailureReason::IncorrectMessage`] for an unknown AUTH-TYPE/AUTH-ID
    /// pair; [`FailureReason::IncorrectPayload`] for a wrong length or field;
    /// [`FailureReason::HashUnusable`] / [`FailureReason::DhgroupUnusable`]
    /// for a Challenge naming an unknown hash or group;
    /// [`FailureReason::NotUsable`] for a Negotiate without DH-HMAC-CHAP.
    pub fn decode(b: &[u8], framing: Framing) -> Result<Message, FailureReason> {
        if b.len() < 6 {
            return Err(FailureReason::IncorrectPayload);
        }
        let t_id = le16(b, 4);
        match (b[0], b[1]) {
            (auth_type::COMMON, auth_id::NEGOTIATE) => decode_negotiate(b, t_id, framing),
            (auth_type::DHCHAP, auth_id::CHALLENGE) => decode_challenge(b, t_id, framing),
            (auth_type::DHCHAP, auth_id::REPLY) => decode_reply(b, t_id, framing),
            (auth_type::DHCHAP, auth_id::SUCCESS1) => decode_success1(b, t_id, framing),
            (auth_type::DHCHAP, auth_id::SUCCESS2) => {
                check_len(b, DHCHAP_HEADER, framing)?;
                Ok(Message::Success2(t_id))
            }
            (auth_type::COMMON, id @ (auth_id::FAILURE1 | auth_id::FAILURE2)) => {
                check_len(b, FAILURE_LEN, framing)?;
                let f = Failure {
                    t_id,
                    rescode: b[6],
                    reason: FailureReason::from_code(b[7]),
                };
                Ok(if id == auth_id::FAILURE1 {
                    Message::Failure1(f)
                } else {
                    Message::Failure2(f)
                })
            }
            _ => Err(FailureReason::IncorrectMessage),
        }
    }
}

fn decode_negotiate(b: &[u8], t_id: u16, framing: Framing) -> Result<Message, FailureReason> {
    check_len(b, NEGOTIATE_HEADER, Framing::Padded)?;
    let napd = usize::from(b[7]);
    if napd == 0 {
        return Err(FailureReason::IncorrectPayload);
    }
    check_len(b, NEGOTIATE_HEADER + napd * DESCRIPTOR_LEN, framing)?;
    let descriptors = b[NEGOTIATE_HEADER..NEGOTIATE_HEADER + napd * DESCRIPTOR_LEN].chunks_exact(DESCRIPTOR_LEN);
    let mut dhchap = None;
    for d in descriptors {
        if d[0] == PROTOCOL_DHCHAP {
            if dhchap.is_some() {
                // Two DH-HMAC-CHAP descriptors: which one counts is undefined.
                return Err(FailureReason::IncorrectPayload);
            }
            dhchap = Some(d);
        }
    }
    let d = dhchap.ok_or(FailureReason::NotUsable)?;
    let (halen, dhlen) = (usize::from(d[2]), usize::from(d[3]));
    if halen == 0 || dhlen == 0 || halen > ID_LIST_LEN || dhlen > ID_LIST_LEN {
        return Err(FailureReason::IncorrectPayload);
    }
    Ok(Message::Negotiate(Negotiate {
        t_id,
        sc_c: b[6],
        hashes: d[4..4 + halen].to_vec(),
        dhgroups: d[4 + ID_LIST_LEN..4 + ID_LIST_LEN + dhlen].to_vec(),
    }))
}

fn decode_challenge(b: &[u8], t_id: u16, framing: Framing) -> Result<Message, FailureReason> {
    check_len(b, DHCHAP_HEADER, Framing::Padded)?;
    let hl = b[6];
    let hash = HashId::from_id(b[8]).ok_or(FailureReason::HashUnusable)?;
    if usize::from(hl) != hash.digest_len() {
        return Err(FailureReason::IncorrectPayload);
    }
    let dhgroup = DhGroup::from_id(b[9]).ok_or(FailureReason::DhgroupUnusable)?;
    let dhvlen = usize::from(le16(b, 10));
    if dhvlen != dhgroup.value_len() {
        return Err(FailureReason::IncorrectPayload);
    }
    let hl = usize::from(hl);
    check_len(b, DHCHAP_HEADER + hl + dhvlen, framing)?;
    Ok(Message::Challenge(Challenge {
        t_id,
        hash,
        dhgroup,
        seqnum: le32(b, 12),
        challenge: b[16..16 + hl].to_vec(),
        dh_value: b[16 + hl..16 + hl + dhvlen].to_vec(),
    }))
}

fn decode_reply(b: &[u8], t_id: u16, framing: Framing) -> Result<Message, FailureReason> {
    check_len(b, DHCHAP_HEADER, Framing::Padded)?;
    let (hl, cvalid) = (b[6], b[8]);
    if !valid_hl(hl) || cvalid > 1 {
        return Err(FailureReason::IncorrectPayload);
    }
    let hl = usize::from(hl);
    let dhvlen = usize::from(le16(b, 10));
    check_len(b, DHCHAP_HEADER + 2 * hl + dhvlen, framing)?;
    Ok(Message::Reply(Reply {
        t_id,
        response: b[16..16 + hl].to_vec(),
        ctrl_challenge: (cvalid == 1).then(|| b[16 + hl..16 + 2 * hl].to_vec()),
        seqnum: le32(b, 12),
        dh_value: b[16 + 2 * hl..16 + 2 * hl + dhvlen].to_vec(),
    }))
}

fn decode_success1(b: &[u8], t_id: u16, framing: Framing) -> Result<Message, FailureReason> {
    check_len(b, DHCHAP_HEADER, Framing::Padded)?;
    let (hl, rvalid) = (b[6], b[8]);
    if !valid_hl(hl) || rvalid > 1 {
        return Err(FailureReason::IncorrectPayload);
    }
    let n = usize::from(hl);
    if rvalid == 1 || b.len() >= DHCHAP_HEADER + n {
        check_len(b, DHCHAP_HEADER + n, framing)?;
    } else {
        // RVALID 0: the Response field carries nothing. Linux's controller
        // sends it zeroed, SPDK's leaves it out (a 16-byte message); both are
        // a Success1 without a response.
        check_len(b, DHCHAP_HEADER, framing)?;
    }
    Ok(Message::Success1(Success1 {
        t_id,
        hl,
        response: (rvalid == 1).then(|| b[16..16 + n].to_vec()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Negotiate(Negotiate {
                t_id: 0x1234,
                sc_c: 0,
                hashes: vec![1, 2, 3],
                dhgroups: vec![0, 1, 2, 3, 4, 5],
            }),
            Message::Challenge(Challenge {
                t_id: 7,
                hash: HashId::Sha384,
                dhgroup: DhGroup::Null,
                seqnum: 0xA1B2C3D4,
                challenge: vec![0x5A; 48],
                dh_value: vec![],
            }),
            Message::Challenge(Challenge {
                t_id: 7,
                hash: HashId::Sha256,
                dhgroup: DhGroup::Ffdhe2048,
                seqnum: 1,
                challenge: vec![0x11; 32],
                dh_value: vec![0x22; 256],
            }),
            Message::Reply(Reply {
                t_id: 7,
                response: vec![0x33; 64],
                ctrl_challenge: Some(vec![0x44; 64]),
                seqnum: 99,
                dh_value: vec![0x55; 384],
            }),
            Message::Reply(Reply {
                t_id: 7,
                response: vec![0x33; 32],
                ctrl_challenge: None,
                seqnum: 0,
                dh_value: vec![],
            }),
            Message::Success1(Success1 {
                t_id: 7,
                hl: 32,
                response: Some(vec![0x66; 32]),
            }),
            Message::Success1(Success1 {
                t_id: 7,
                hl: 48,
                response: None,
            }),
            Message::Success2(7),
            Message::Failure1(Failure {
                t_id: 7,
                rescode: RESCODE_FAILED,
                reason: FailureReason::HashUnusable,
            }),
            Message::Failure2(Failure {
                t_id: 7,
                rescode: RESCODE_FAILED,
                reason: FailureReason::Failed,
            }),
        ]
    }

    #[test]
    fn wire_layouts() {
        // AUTH_Negotiate: 8 + one 64-byte descriptor; DH ids at byte 30 of the list.
        let n = samples()[0].encode();
        assert_eq!(n.len(), 72);
        assert_eq!(&n[..8], &[0x00, 0x00, 0, 0, 0x34, 0x12, 0x00, 0x01]);
        assert_eq!(&n[8..15], &[0x01, 0x00, 3, 6, 1, 2, 3]);
        assert_eq!(&n[8 + 4 + 30..8 + 4 + 36], &[0, 1, 2, 3, 4, 5]);
        // Challenge: HL, HASHID, DHGID, DHVLEN, SEQNUM, then C1 and the DH value.
        let c = samples()[2].encode();
        assert_eq!(c.len(), 16 + 32 + 256);
        assert_eq!(&c[..16], &[1, 1, 0, 0, 7, 0, 32, 0, 1, 1, 0x00, 0x01, 1, 0, 0, 0]);
        // Reply: response, challenge to the controller, then the DH value.
        let r = samples()[3].encode();
        assert_eq!(r.len(), 16 + 128 + 384);
        assert_eq!(&r[..16], &[1, 2, 0, 0, 7, 0, 64, 0, 1, 0, 0x80, 0x01, 99, 0, 0, 0]);
        assert_eq!(r[16 + 64], 0x44);
        // Success1 always carries HL bytes of response field.
        assert_eq!(samples()[6].encode().len(), 16 + 48);
        assert_eq!(samples()[7].encode(), [1, 4, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(samples()[8].encode(), [0, 0xF1, 0, 0, 7, 0, 1, 4]);
        assert_eq!(samples()[9].encode(), [0, 0xF0, 0, 0, 7, 0, 1, 1]);
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let b = m.encode();
            assert_eq!(Message::decode(&b, Framing::Exact).unwrap(), m);
            let mut padded = b.clone();
            padded.extend_from_slice(&[0xEE; 100]);
            assert_eq!(Message::decode(&padded, Framing::Padded).unwrap(), m);
            assert_eq!(
                Message::decode(&padded, Framing::Exact).unwrap_err(),
                FailureReason::IncorrectPayload,
                "oversized {m:?}"
            );
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for m in samples() {
            let b = m.encode();
            let bare_success1 = matches!(&m, Message::Success1(s) if s.response.is_none());
            for n in 0..b.len() {
                for framing in [Framing::Exact, Framing::Padded] {
                    // A Success1 without a response may stop after its header
                    // (success1_without_response_may_omit_the_field).
                    if bare_success1 && (n == DHCHAP_HEADER || (n > DHCHAP_HEADER && framing == Framing::Padded)) {
                        continue;
                    }
                    let e = Message::decode(&b[..n], framing).unwrap_err();
                    assert_eq!(e, FailureReason::IncorrectPayload, "{m:?} cut to {n}");
                }
            }
        }
    }

    /// SPDK's controller sends a Success1 with RVALID 0 as its 16-byte header
    /// alone (no HL bytes of Response field); with RVALID 1 the response
    /// must be there.
    #[test]
    fn success1_without_response_may_omit_the_field() {
        // Success1, T_ID 7, HL 48 (SHA-384), RVALID 0.
        let bare = [0x01u8, 0x03, 0, 0, 7, 0, 48, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let want = Message::Success1(Success1 {
            t_id: 7,
            hl: 48,
            response: None,
        });
        for framing in [Framing::Exact, Framing::Padded] {
            assert_eq!(Message::decode(&bare, framing), Ok(want.clone()));
        }
        let mut some = bare;
        some[8] = 1; // RVALID 1: the 48 bytes of response are missing
        for framing in [Framing::Exact, Framing::Padded] {
            assert_eq!(Message::decode(&some, framing), Err(FailureReason::IncorrectPayload));
        }
        // Between the two lengths, exactly: neither form.
        assert_eq!(
            Message::decode(&[&bare[..], &[0u8; 8]].concat(), Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
    }

    #[test]
    fn wrong_fields_name_their_reason() {
        let neg = samples()[0].encode();
        let mut b = neg.clone();
        b[7] = 0; // NAPD 0
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
        let mut b = neg.clone();
        b[7] = 2; // two descriptors announced, one sent
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
        let mut b = neg.clone();
        b[8] = 0x02; // not DH-HMAC-CHAP
        assert_eq!(Message::decode(&b, Framing::Exact), Err(FailureReason::NotUsable));
        let mut b = neg.clone();
        b[10] = 31; // HALEN beyond its list
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
        let mut b = neg.clone();
        b[11] = 0; // no DH group offered
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
        let mut b = neg.clone();
        b.extend_from_slice(&neg[8..]);
        b[7] = 2; // two DH-HMAC-CHAP descriptors
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );

        let ch = samples()[2].encode();
        let mut b = ch.clone();
        b[8] = 9; // unknown hash
        assert_eq!(Message::decode(&b, Framing::Exact), Err(FailureReason::HashUnusable));
        let mut b = ch.clone();
        b[6] = 48; // HL not the hash's length
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
        let mut b = ch.clone();
        b[9] = 6; // unknown group
        assert_eq!(Message::decode(&b, Framing::Exact), Err(FailureReason::DhgroupUnusable));
        let mut b = ch.clone();
        b[10] = 0xFF; // DHVLEN not the group's
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );

        let rep = samples()[3].encode();
        let mut b = rep.clone();
        b[6] = 33;
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
        let mut b = rep.clone();
        b[8] = 2; // CVALID neither 0 nor 1
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );
        let mut b = rep.clone();
        b[10] = 0xFF;
        b[11] = 0xFF; // DHVLEN beyond the message
        assert_eq!(
            Message::decode(&b, Framing::Padded),
            Err(FailureReason::IncorrectPayload)
        );

        let mut b = samples()[5].encode();
        b[8] = 7; // RVALID
        assert_eq!(
            Message::decode(&b, Framing::Exact),
            Err(FailureReason::IncorrectPayload)
        );

        for (ty, id) in [(0u8, 1u8), (1, 0), (1, 0xF1), (2, 0), (0, 0x05), (1, 0x05)] {
            let mut b = vec![0u8; 64];
            b[0] = ty;
            b[1] = id;
            assert_eq!(
                Message::decode(&b, Framing::Padded),
                Err(FailureReason::IncorrectMessage),
                "{ty:#x}/{id:#x}"
            );
        }
        assert_eq!(FailureReason::from_code(0x42), FailureReason::Failed);
        for code in 1..=7 {
            assert_eq!(FailureReason::from_code(code).code(), code);
        }
    }

    #[test]
    fn mutated_messages_decode_to_what_they_encode() {
        // The fuzz target's invariant (proto/fuzz/fuzz_targets/auth_messages.rs)
        // on 20,000 mutations of the sample messages: one to four bytes
        // changed, or the tail cut or grown. Whatever decodes re-encodes to a
        // message that decodes back the same, and padded framing accepts what
        // exact framing accepts.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut decoded = 0;
        for round in 0..20_000 {
            let base = samples();
            let mut b = base[round % base.len()].encode();
            match next() % 4 {
                0 => b.truncate((next() as usize) % (b.len() + 1)),
                1 => b.extend((0..next() % 70).map(|_| next() as u8)),
                _ => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % b.len();
                        b[i] = next() as u8;
                    }
                }
            }
            let exact = Message::decode(&b, Framing::Exact);
            let padded = Message::decode(&b, Framing::Padded);
            if let Ok(m) = &exact {
                assert_eq!(padded.as_ref().ok(), Some(m), "{b:02x?}");
            }
            for m in [exact, padded].into_iter().flatten() {
                decoded += 1;
                assert_eq!(Message::decode(&m.encode(), Framing::Exact), Ok(m), "{b:02x?}");
            }
        }
        assert!(decoded > 1_000, "the mutations mostly failed to decode ({decoded})");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap sweep: every 1- and 2-byte prefix with every type/id pair
        // seen above, then random bodies.
        let mut x: u32 = 0x9E37_79B9;
        for len in 0..600 {
            let mut b = vec![0u8; len];
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *v = x as u8;
            }
            if len > 1 {
                b[0] &= 1;
                b[1] = [0, 1, 2, 3, 4, 0xF0, 0xF1][len % 7];
            }
            let _ = Message::decode(&b, Framing::Exact);
            let _ = Message::decode(&b, Framing::Padded);
        }
    }
}
