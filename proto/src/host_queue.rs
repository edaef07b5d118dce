//! The host side of one NVMe/TCP queue pair, as a state machine (NVMe/TCP
//! 1.0 sections 3.3 and 3.6): what an initiator needs to talk to a target.
//!
//! [`HostQueue::new`] queues the ICReq. Commands are submitted with their
//! write data or the length of their read data; the machine chooses
//! in-capsule data or R2T/H2CData (split at the target's MAXH2CDATA),
//! gathers C2HData, and yields a [`Completion`] per command once its
//! CapsuleResp (or a C2HData with SUCCESS) arrives. Every received length
//! and offset is checked against the command it claims to belong to; a bad
//! PDU ends the queue with an H2CTermReq. The common-header checks (PDU
//! type, HLEN, PLEN bounds, header digest) and the TermReq are the ones the
//! target queue makes too (`framing`).
//!
//! A PDU is accepted for a command only in a state where the target can
//! legitimately send it: nothing before the command's capsule left this
//! host; a successful completion only once every byte moved (all write
//! data sent in answer to R2Ts; every byte of a read received, whatever
//! LAST_PDU claimed); C2HData only for a command that reads, R2T only for
//! one whose write data waits for it. Anything else is a fatal transport
//! error (NVMe/TCP 1.0 section 3.6.2.4; FES as listed per case).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::buf::{RecvBuf, SendBuf};
use crate::fabrics::fctype;
use crate::framing::{self, Receiver};
use crate::nvme::{CQE_LEN, Cqe, SQE_LEN, Sgl, Sqe, admin_opc, psdt, sgl_id};
use crate::pdu::{
    CAPSULE_CMD_HLEN, CH_LEN, CommonHeader, DIGEST_LEN, DataHeader, Digests, FatalError, Fes, HLEN_24, IC_HLEN, IcReq,
    IcResp, PduType, TermReq, crc32c, data_offset_for, flags, ic_offset, le32, offset, resp_offset,
};

/// The least C2HData PLEN bound (beyond header and digests), bytes: the
/// bound is the largest read in flight, but at least this, so that a data
/// PDU for no command is judged by its CCCID rather than refused for length.
const C2H_DATA_MIN_BOUND: usize = 128 * 1024;

/// Why the host queue stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The target sent a PDU we refuse; an H2CTermReq carrying it was queued.
    #[error("protocol error from the target: {0}")]
    Fatal(FatalError),
    /// The target ended the connection with a C2HTermReq.
    #[error("the target terminated the connection: {0}")]
    Terminated(TermReq),
    /// A submission that cannot be sent as asked.
    #[error("{0}")]
    Submit(&'static str),
}

/// A finished command.
#[derive(Debug)]
pub struct Completion {
    /// The completion queue entry.
    pub cqe: Cqe,
    /// Data read (controller-to-host commands).
    pub data: Vec<u8>,
    /// The command's write data, handed back (empty for other commands).
    pub write: Vec<u8>,
}

struct Inflight {
    write: Vec<u8>,
    /// `write` goes out in answer to R2Ts (it was too large to go in-capsule).
    r2t: bool,
    /// Bytes of `write` already sent in answer to R2Ts: the next R2TO.
    r2t_done: usize,
    read: Vec<u8>,
    read_len: usize,
    /// `read_len` is an allocation length the controller may fill only in
    /// part (Authentication Receive: SPDK's target sends just the message),
    /// so LAST_PDU may end the transfer early.
    may_end_short: bool,
    /// A data digest failed: the command completes with Transient Transport Error.
    digest_error: bool,
    /// Send-stream position the target must have received before it may
    /// answer: the end of the capsule, then of the H2CData last sent for it.
    sent_end: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    AwaitIcResp,
    Live,
    Terminated,
}

/// Hashes a CID, the in-flight table's key, with one multiply (Fibonacci
/// hashing): the host picks its own CIDs, so SipHash's resistance to chosen
/// keys buys nothing here, and it cost three hashes per command.
#[derive(Default)]
struct CidHasher(u64);

impl Hasher for CidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = ((self.0 << 8) | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The host side of one queue pair.
pub struct HostQueue {
    state: State,
    asked: Digests,
    digests: Digests,
    maxh2cdata: u32,
    cpda: u8,
    in_capsule_limit: u32,
    inflight: HashMap<u16, Inflight, BuildHasherDefault<CidHasher>>,
    recv: RecvBuf,
    send: SendBuf,
    done: Vec<Completion>,
}

impl HostQueue {
    /// A queue asking for `digests`, with the ICReq already queued to send.
    /// `in_capsule_limit` is the in-capsule data the target accepts on this
    /// queue (8 KiB on admin queues; IOCCSZ x 16 - 64 on I/O queues).
    pub fn new(digests: Digests, in_capsule_limit: u32) -> Self {
        let mut send = SendBuf::default();
        send.out.extend_from_slice(
            &IcReq {
                pfv: 0,
                hpda: 0,
                digests,
                maxr2t: 0,
            }
            .encode(),
        );
        HostQueue {
            state: State::AwaitIcResp,
            asked: digests,
            digests: Digests::default(),
            maxh2cdata: 4096,
            cpda: 0,
            in_capsule_limit,
            inflight: HashMap::default(),
            recv: RecvBuf::default(),
            send,
            done: Vec::new(),
        }
    }

    /// Whether the ICResp was accepted.
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// Whether the queue ended.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// Digests in force.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// MAXH2CDATA the target granted.
    pub fn maxh2cdata(&self) -> u32 {
        self.maxh2cdata
    }

    /// Sets the in-capsule data limit (after reading IOCCSZ from Identify).
    pub fn set_in_capsule_limit(&mut self, bytes: u32) {
        self.in_capsule_limit = bytes;
    }

    /// Commands submitted and not completed.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Queues a command. `write` is its host-to-controller data (sent
    /// in-capsule when it fits, else on the target's R2T); `read_len` the
    /// controller-to-host data it expects. The SQE's SGL1 is filled in.
    ///
    /// # Errors
    /// [`HostError::Submit`] when the queue is not live, the CID is in
    /// flight, or both directions are asked for.
    pub fn submit(&mut self, sqe: Sqe, write: &[u8], read_len: u32) -> Result<(), HostError> {
        self.submit_owned(sqe, write.to_vec(), read_len).map_err(|(e, _)| e)
    }

    /// As [`submit`](Self::submit), taking the write data by value: it is
    /// kept, not copied, until the completion hands it back
    /// ([`Completion::write`]) or [`take_write`](Self::take_write) does.
    ///
    /// # Errors
    /// As [`submit`](Self::submit), with the write data handed back.
    pub fn submit_owned(&mut self, mut sqe: Sqe, write: Vec<u8>, read_len: u32) -> Result<(), (HostError, Vec<u8>)> {
        if self.state != State::Live {
            return Err((HostError::Submit("the queue is not live"), write));
        }
        if !write.is_empty() && read_len > 0 {
            return Err((HostError::Submit("a command moves data in one direction only"), write));
        }
        let cid = sqe.cid();
        if self.inflight.contains_key(&cid) {
            return Err((HostError::Submit("CID already in flight"), write));
        }
        let in_capsule = !write.is_empty() && write.len() <= self.in_capsule_limit as usize;
        let sgl = if in_capsule {
            Sgl {
                address: 0,
                length: write.len() as u32,
                id: sgl_id::DATA_BLOCK_OFFSET,
            }
        } else {
            Sgl {
                address: 0,
                length: (write.len() as u32).max(read_len),
                id: sgl_id::TRANSPORT_DATA_BLOCK,
            }
        };
        let may_end_short = sqe.opc() == admin_opc::FABRICS && sqe.fctype() == fctype::AUTH_RECV;
        sqe.set_sgl1(sgl);
        // SGL1 describes the data: PSDT must say so (Fabrics allow only 01b).
        sqe.set_psdt(psdt::SGL_MPTR_CONTIGUOUS);
        self.encode_capsule(&sqe, if in_capsule { &write } else { &[] });
        let sent_end = self.send.queued_end();
        self.inflight.insert(
            cid,
            Inflight {
                r2t: !in_capsule && !write.is_empty(),
                write,
                r2t_done: 0,
                read: Vec::with_capacity(read_len as usize),
                read_len: read_len as usize,
                may_end_short,
                digest_error: false,
                sent_end,
            },
        );
        Ok(())
    }

    /// The write data of command `cid` in flight (empty if none): for a
    /// queue that failed, whose commands go elsewhere.
    pub fn take_write(&mut self, cid: u16) -> Vec<u8> {
        self.inflight
            .get_mut(&cid)
            .map(|f| std::mem::take(&mut f.write))
            .unwrap_or_default()
    }

    fn encode_capsule(&mut self, sqe: &Sqe, data: &[u8]) {
        let d = self.digests;
        let hd = d.hdgst_len(PduType::CapsuleCmd);
        let dd = if d.data && !data.is_empty() { DIGEST_LEN } else { 0 };
        let pdo = if data.is_empty() {
            0
        } else {
            data_offset_for(CAPSULE_CMD_HLEN, hd, self.cpda)
        };
        let plen = if data.is_empty() {
            CAPSULE_CMD_HLEN + hd
        } else {
            pdo + data.len() + dd
        };
        let out = &mut self.send.out;
        let start = out.len();
        out.resize(start + CAPSULE_CMD_HLEN, 0);
        let f = if hd > 0 { flags::HDGSTF } else { 0 } | if dd > 0 { flags::DDGSTF } else { 0 };
        CommonHeader {
            pdu_type: PduType::CapsuleCmd as u8,
            flags: f,
            hlen: CAPSULE_CMD_HLEN as u8,
            pdo: pdo as u8,
            plen: plen as u32,
        }
        .write(&mut out[start..]);
        out[start + CH_LEN..start + CH_LEN + SQE_LEN].copy_from_slice(&sqe.0);
        if hd > 0 {
            let c = crc32c(&out[start..start + CAPSULE_CMD_HLEN]);
            out.extend_from_slice(&c.to_le_bytes());
        }
        if !data.is_empty() {
            out.resize(start + pdo, 0);
            out.extend_from_slice(data);
            if dd > 0 {
                out.extend_from_slice(&crc32c(data).to_le_bytes());
            }
        }
    }

    // ---- receive --------------------------------------------------------

    /// Buffer to read socket bytes into; follow with [`received`](Self::received).
    pub fn recv_buffer(&mut self, want: usize) -> &mut [u8] {
        self.recv.space(want)
    }

    /// Commits `n` of the `want` bytes last handed out.
    pub fn received(&mut self, want: usize, n: usize) {
        let keep = self.state != State::Terminated;
        self.recv.commit(want, n, keep);
    }

    /// Feeds bytes directly.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.recv_buffer(bytes.len()).copy_from_slice(bytes);
        self.received(bytes.len(), bytes.len());
    }

    /// Parses every complete PDU.
    ///
    /// # Errors
    /// [`HostError::Fatal`] (an H2CTermReq is queued) or [`HostError::Terminated`];
    /// the queue is over either way: flush and close.
    pub fn process(&mut self) -> Result<(), HostError> {
        while self.state != State::Terminated {
            match self.next_pdu() {
                Ok(true) => {}
                Ok(false) => break,
                Err(HostError::Fatal(e)) => {
                    // The H2CTermReq copies what was buffered of the PDU in error.
                    let buffered = self.recv.len();
                    framing::terminate(&mut self.recv, &mut self.send, Receiver::Host, e, buffered);
                    self.state = State::Terminated;
                    return Err(HostError::Fatal(e));
                }
                Err(e) => {
                    self.state = State::Terminated;
                    self.recv.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Completed commands, in completion order.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.done)
    }

    /// Moves completed commands into `out` (keeps both vectors' capacity).
    pub fn drain_completions(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.done);
    }

    fn next_pdu(&mut self) -> Result<bool, HostError> {
        let avail = self.recv.avail();
        let Some(ch) = CommonHeader::parse(avail) else {
            return Ok(false);
        };
        let t = framing::pdu_type(&ch, Receiver::Host).map_err(HostError::Fatal)?;
        match (self.state, t) {
            (State::AwaitIcResp, PduType::IcResp | PduType::C2HTermReq) => {}
            (State::Live, t) if t != PduType::IcResp => {}
            _ => return Err(HostError::Fatal(FatalError::status(Fes::PduSequenceError))),
        }
        framing::check_hlen(&ch, t).map_err(HostError::Fatal)?;
        let hd = self.digests.hdgst_len(t);
        let plen = ch.plen as usize;
        // C2HData is bounded by the largest read in flight (looked for only
        // then: it walks every command in flight).
        let max_data = if t.may_have_data() {
            data_offset_for(HLEN_24, hd, 0) + self.max_read().max(C2H_DATA_MIN_BOUND) + DIGEST_LEN
        } else {
            0
        };
        if let Err(e) = framing::check_plen(&ch, t, hd, max_data) {
            if t == PduType::C2HTermReq {
                // The target is ending the connection anyway: never answer a
                // TermReq with one, and never wait for a PLEN it made up.
                let t = if avail.len() >= 14 {
                    TermReq::parse(avail)
                } else {
                    TermReq { fes: 0, fei: 0 }
                };
                return Err(HostError::Terminated(t));
            }
            return Err(HostError::Fatal(e));
        }
        if avail.len() < plen {
            return Ok(false);
        }
        // Handled in place, consumed only on success (a TermReq then copies this PDU).
        let recv = std::mem::take(&mut self.recv);
        let r = self.handle(t, &ch, &recv.avail()[..plen], hd);
        self.recv = recv;
        r?;
        self.recv.consume(plen);
        Ok(true)
    }

    fn handle(&mut self, t: PduType, ch: &CommonHeader, pdu: &[u8], hd: usize) -> Result<(), HostError> {
        let fatal = |fei: u32| HostError::Fatal(FatalError::field(fei));
        if hd > 0 {
            framing::check_header_digest(pdu, t.hlen()).map_err(HostError::Fatal)?;
        }
        match t {
            PduType::IcResp => self.on_icresp(pdu)?,
            PduType::C2HTermReq => return Err(HostError::Terminated(TermReq::parse(pdu))),
            PduType::CapsuleResp => {
                let at = resp_offset::CQE as usize;
                let cqe = Cqe::parse(&pdu[at..at + CQE_LEN]).ok_or(fatal(offset::PLEN))?;
                let Some(f) = self.inflight.get(&cqe.cid) else {
                    return Err(fatal(resp_offset::CID));
                };
                let sent = self.send.sent_total();
                // An error may end a command at any point after its capsule
                // arrived (a target refuses a write before asking for its
                // data); success only once every byte moved. A stale or
                // duplicated completion for an earlier use of the CID fails here.
                let moved = (!f.r2t || f.r2t_done == f.write.len()) && f.read.len() == f.read_len;
                if sent < f.sent_end || (cqe.status.is_success() && !moved) {
                    return Err(HostError::Fatal(FatalError::status(Fes::PduSequenceError)));
                }
                if let Some(f) = self.inflight.remove(&cqe.cid) {
                    self.finish(cqe, f);
                }
            }
            PduType::C2HData => self.on_c2h(ch, pdu, hd)?,
            PduType::R2T => self.on_r2t(pdu)?,
            _ => return Err(fatal(offset::PDU_TYPE)),
        }
        Ok(())
    }

    fn finish(&mut self, mut cqe: Cqe, f: Inflight) {
        if f.digest_error || !cqe.status.is_success() {
            // No data of a failed command is handed out.
            if f.digest_error {
                cqe.status = crate::nvme::status::TRANSIENT_TRANSPORT_ERROR;
            }
            self.done.push(Completion {
                cqe,
                data: Vec::new(),
                write: f.write,
            });
        } else {
            self.done.push(Completion {
                cqe,
                data: f.read,
                write: f.write,
            });
        }
    }

    fn max_read(&self) -> usize {
        self.inflight.values().map(|f| f.read_len).max().unwrap_or(0)
    }

    fn on_icresp(&mut self, pdu: &[u8]) -> Result<(), HostError> {
        let mut b = [0u8; IC_HLEN];
        b.copy_from_slice(&pdu[..IC_HLEN]);
        let r = IcResp::parse(&b).map_err(HostError::Fatal)?;
        if r.digests != self.asked {
            // The Linux host refuses a target that grants other digests than asked.
            return Err(HostError::Fatal(FatalError::field(ic_offset::DGST)));
        }
        self.digests = r.digests;
        self.maxh2cdata = r.maxh2cdata;
        self.cpda = r.cpda;
        self.state = State::Live;
        Ok(())
    }

    fn on_c2h(&mut self, ch: &CommonHeader, pdu: &[u8], hd: usize) -> Result<(), HostError> {
        use crate::pdu::data_offset as off;
        let h = DataHeader::parse(pdu);
        let dd = if self.digests.data { DIGEST_LEN } else { 0 };
        let pdo = ch.pdo as usize;
        // Data that does not tile PLEN (PDO inside the header, or a DATAL
        // that disagrees with PLEN) is answered at PLEN.
        if pdo < HLEN_24 + hd || pdo + h.datal as usize + dd != pdu.len() {
            return Err(HostError::Fatal(FatalError::field(offset::PLEN)));
        }
        let sent = self.send.sent_total();
        let f = self
            .inflight
            .get_mut(&h.cccid)
            .ok_or(HostError::Fatal(FatalError::field(off::CCCID)))?;
        if f.read_len == 0 {
            // C2HData for a command that moves no data to the host (a write,
            // Flush, Write Zeroes, DSM), of any length: it names the wrong
            // command, and must never complete it.
            return Err(HostError::Fatal(FatalError::field(off::CCCID)));
        }
        if sent < f.sent_end {
            // Data for a command whose capsule the target cannot have yet.
            return Err(HostError::Fatal(FatalError::status(Fes::PduSequenceError)));
        }
        if h.datao as usize != f.read.len() || f.read.len() + h.datal as usize > f.read_len {
            return Err(HostError::Fatal(FatalError::status(Fes::DataTransferOutOfRange)));
        }
        let data = &pdu[pdo..pdo + h.datal as usize];
        if dd > 0 && crc32c(data) != le32(pdu, pdo + h.datal as usize) {
            // A data digest error fails the command, not the queue: the rest of
            // its data is taken in and dropped, and its completion reports it.
            f.digest_error = true;
        }
        if f.digest_error {
            f.read.resize(f.read.len() + data.len(), 0);
        } else {
            f.read.extend_from_slice(data);
        }
        let last = ch.flags & flags::LAST_PDU != 0;
        if last && f.may_end_short {
            // The transfer ends here: the command moved all it will.
            f.read_len = f.read.len();
        }
        if last && f.read.len() != f.read_len {
            // LAST_PDU on a PDU that does not end the transfer: the rest of
            // the read would never come.
            return Err(HostError::Fatal(FatalError::field(offset::FLAGS)));
        }
        if ch.flags & flags::SUCCESS != 0 {
            if !last {
                return Err(HostError::Fatal(FatalError::field(offset::FLAGS)));
            }
            if let Some(f) = self.inflight.remove(&h.cccid) {
                self.finish(
                    Cqe {
                        cid: h.cccid,
                        ..Cqe::default()
                    },
                    f,
                );
            }
        }
        Ok(())
    }

    fn on_r2t(&mut self, pdu: &[u8]) -> Result<(), HostError> {
        use crate::pdu::data_offset as off;
        let h = DataHeader::parse(pdu);
        let sent = self.send.sent_total();
        let f = self
            .inflight
            .get_mut(&h.cccid)
            .ok_or(HostError::Fatal(FatalError::field(off::CCCID)))?;
        if !f.r2t {
            // An R2T for a command with no data to send this way (a read,
            // Flush, or in-capsule data).
            return Err(HostError::Fatal(FatalError::field(off::CCCID)));
        }
        if sent < f.sent_end {
            // Before the capsule left: out of sequence. Before the data of
            // the previous R2T left: a second outstanding R2T, over the
            // MAXR2T of 0 (one outstanding) asked for in the ICReq.
            let fes = if f.r2t_done > 0 {
                Fes::DataTransferLimitExceeded
            } else {
                Fes::PduSequenceError
            };
            return Err(HostError::Fatal(FatalError::status(fes)));
        }
        if h.datal == 0 {
            return Err(HostError::Fatal(FatalError::field(off::DATAL)));
        }
        if f.r2t_done >= f.write.len() {
            // Everything was sent already: one R2T too many (MAXR2T is 0).
            return Err(HostError::Fatal(FatalError::status(Fes::DataTransferLimitExceeded)));
        }
        if h.datao as usize != f.r2t_done || u64::from(h.datao) + u64::from(h.datal) > f.write.len() as u64 {
            return Err(HostError::Fatal(FatalError::status(Fes::DataTransferOutOfRange)));
        }
        let (start, end) = (h.datao as usize, (h.datao + h.datal) as usize);
        let chunk = self.maxh2cdata.max(4096) as usize;
        let mut at = start;
        let write = std::mem::take(&mut f.write);
        while at < end {
            let n = chunk.min(end - at);
            let last = at + n == end;
            let hdr = DataHeader {
                cccid: h.cccid,
                ttag: h.ttag,
                datao: at as u32,
                datal: 0,
            };
            crate::pdu::encode_data_pdu(
                &mut self.send.out,
                PduType::H2CData,
                hdr,
                &write[at..at + n],
                if last { flags::LAST_PDU } else { 0 },
                self.digests,
                self.cpda,
            );
            at += n;
        }
        let sent_end = self.send.queued_end();
        if let Some(f) = self.inflight.get_mut(&h.cccid) {
            f.write = write;
            f.r2t_done = end;
            f.sent_end = sent_end;
        }
        Ok(())
    }

    // ---- send -------------------------------------------------------------

    /// Bytes waiting to be sent.
    pub fn pending_send(&self) -> &[u8] {
        self.send.pending()
    }

    /// Marks `n` bytes sent.
    pub fn sent(&mut self, n: usize) {
        self.send.sent(n);
    }

    /// Whether bytes wait to be sent.
    pub fn wants_send(&self) -> bool {
        !self.send.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target_queue::{QueueParams, Response, TargetQueue, TargetQueueConfig};

    /// Runs a host and a target queue against each other until quiet.
    fn pump(h: &mut HostQueue, t: &mut TargetQueue) {
        for _ in 0..64 {
            let out = h.pending_send().to_vec();
            h.sent(out.len());
            t.feed(&out);
            t.process().unwrap();
            for c in t.take_requests() {
                let cqe = Cqe {
                    cid: c.sqe.cid(),
                    ..Default::default()
                };
                if c.c2h_len > 0 {
                    let data: Vec<u8> = (0..c.c2h_len).map(|i| (i % 253) as u8).collect();
                    t.respond(Response::with_data(cqe, data));
                } else {
                    assert!(
                        c.data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
                        "write data intact"
                    );
                    t.respond(
                        Cqe {
                            dw0: c.data.len() as u32,
                            ..cqe
                        }
                        .into(),
                    );
                }
            }
            let back = t.pending_send().to_vec();
            t.sent(back.len());
            h.feed(&back);
            h.process().unwrap();
            if out.is_empty() && back.is_empty() {
                break;
            }
        }
    }

    #[test]
    fn host_and_target_agree_on_every_path() {
        for dgst in 0..4u8 {
            let d = Digests::from_dgst(dgst);
            let cfg = TargetQueueConfig {
                maxh2cdata: 8192,
                io_in_capsule_data: 4096,
                ..Default::default()
            };
            let mut t = TargetQueue::new(cfg);
            let mut h = HostQueue::new(d, 4096);
            pump(&mut h, &mut t);
            assert!(h.is_live() && t.is_live());
            assert_eq!((h.digests(), h.maxh2cdata()), (d, 8192));
            // What a Connect establishes (no Connect capsule: CID 0xFFFF is not outstanding).
            t.respond(Response::ok(0xFFFF).with_connected(QueueParams {
                qid: 1,
                sq_entries: 64,
                sq_flow_control_disabled: dgst == 3,
            }));
            // In-capsule write, R2T write split at MAXH2CDATA, read.
            for (cid, len) in [(1u16, 4096usize), (2, 65536)] {
                let mut sqe = Sqe([0; 64]);
                sqe.0[0] = 0x01;
                sqe.set_cid(cid);
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                h.submit(sqe, &data, 0).unwrap();
            }
            let mut sqe = Sqe([0; 64]);
            sqe.0[0] = 0x02;
            sqe.set_cid(3);
            h.submit(sqe, &[], 100_000).unwrap();
            assert!(h.submit(sqe, &[], 1).is_err(), "CID in flight");
            pump(&mut h, &mut t);
            let mut done = h.take_completions();
            done.sort_by_key(|c| c.cqe.cid);
            assert_eq!(done.len(), 3);
            assert_eq!(done[0].cqe.dw0, 4096);
            assert_eq!(done[1].cqe.dw0, 65536);
            assert_eq!(done[2].data.len(), 100_000);
            assert!(done[2].data.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
            assert_eq!(h.inflight(), 0);
        }
    }

    #[test]
    fn icresp_with_other_digests_is_refused() {
        let mut h = HostQueue::new(
            Digests {
                header: true,
                data: true,
            },
            4096,
        );
        let r = IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests::default(),
            maxh2cdata: 131072,
        }
        .encode();
        h.feed(&r);
        assert!(matches!(h.process(), Err(HostError::Fatal(e)) if e.fei == 11));
        assert!(h.is_terminated());
    }
}

/// The initiator fault cases (B21-B25 of the fault-case list) against a
/// scripted target: bytes in, the exact verdict out.
#[cfg(test)]
mod fault_cases {
    use super::*;
    use crate::pdu::{encode_data_pdu, encode_r2t};

    fn live(dgst: u8, maxh2cdata: u32) -> HostQueue {
        let d = Digests::from_dgst(dgst);
        let mut h = HostQueue::new(d, 4096);
        let n = h.pending_send().len();
        h.sent(n);
        h.feed(
            &IcResp {
                pfv: 0,
                cpda: 0,
                digests: d,
                maxh2cdata,
            }
            .encode(),
        );
        h.process().unwrap();
        h
    }

    /// Hands everything queued to the (imaginary) socket.
    fn flush(h: &mut HostQueue) {
        let n = h.pending_send().len();
        h.sent(n);
    }

    fn sqe(opc: u8, cid: u16) -> Sqe {
        let mut s = Sqe([0; 64]);
        s.0[0] = opc;
        s.set_cid(cid);
        s
    }

    fn fatal(h: &mut HostQueue, bytes: &[u8]) -> FatalError {
        let before = h.pending_send().len();
        h.feed(bytes);
        match h.process() {
            Err(HostError::Fatal(e)) => {
                let out = &h.pending_send()[before..];
                assert_eq!(out[0], PduType::H2CTermReq as u8, "an H2CTermReq is queued");
                assert_eq!(TermReq::parse(out).fes, e.fes as u16);
                assert!(h.is_terminated());
                assert!(
                    h.take_completions().iter().all(|c| !c.cqe.status.is_success()),
                    "nothing reported successful"
                );
                e
            }
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    #[test]
    fn capsules_say_psdt_01b() {
        // The Linux target (nvmet) refuses any other PSDT with Invalid Field.
        let mut h = live(0, 131072);
        for (opc, cid, write, read) in [(0x7Fu8, 1u16, 1024usize, 0u32), (0x01, 2, 65536, 0), (0x02, 3, 0, 4096)] {
            let before = h.pending_send().len();
            let mut s = sqe(opc, cid);
            s.0[1] = 0x80; // a caller's PSDT is overridden
            h.submit(s, &vec![0u8; write], read).unwrap();
            let out = &h.pending_send()[before..];
            assert_eq!(out[0], PduType::CapsuleCmd as u8);
            assert_eq!(out[CH_LEN + 1], 0x40, "PSDT 01b, FUSE 00b");
        }
    }

    #[test]
    fn b21_header_lengths_are_checked_before_anything_is_read() {
        let mut h = live(1, 131072);
        h.submit(sqe(0x7F, 1), &[], 0).unwrap();
        flush(&mut h);
        let mut b = vec![0x05, 0x01, 0xFF, 0x00, 0x1C, 0x00, 0x00, 0x00];
        b.extend([0u8; 20]);
        assert_eq!(fatal(&mut h, &b), FatalError::field(2));
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 1), &[], 4096).unwrap();
        assert_eq!(
            fatal(&mut h, &[0x07, 0x00, 0x10, 0x10, 0x10, 0, 0, 0]),
            FatalError::field(2)
        );
        let mut h = live(0, 131072);
        assert_eq!(
            fatal(&mut h, &[0x09, 0x00, 0x80, 0x00, 0x80, 0, 0, 0]),
            FatalError::field(2)
        );
        let mut h = HostQueue::new(Digests::default(), 4096);
        assert_eq!(
            fatal(&mut h, &[0x01, 0x00, 0x18, 0x00, 0x80, 0, 0, 0]),
            FatalError::field(2)
        );
    }

    #[test]
    fn b22_c2h_term_req_is_decoded_or_ends_the_queue_without_reply() {
        // (a) PLEN 20, (b) PLEN 64 KiB with 24 bytes: torn down at once, nothing sent.
        for b in [
            [&[0x03u8, 0, 0x18, 0, 0x14, 0, 0, 0][..], &[0u8; 12]].concat(),
            [&[0x03u8, 0, 0x18, 0, 0x00, 0, 0x01, 0][..], &[0u8; 16]].concat(),
        ] {
            let mut h = live(0, 131072);
            h.feed(&b);
            assert!(matches!(h.process(), Err(HostError::Terminated(_))));
            assert!(h.pending_send().is_empty(), "never answer a TermReq");
            assert!(h.is_terminated());
        }
        // (c) a valid one, (d) an undefined FES: decoded for the log.
        let mut c = vec![0x03, 0, 0x18, 0, 0x30, 0, 0, 0, 0x01, 0, 0x02, 0, 0, 0];
        c.resize(0x30, 0);
        let mut h = live(0, 131072);
        h.feed(&c);
        match h.process() {
            Err(HostError::Terminated(t)) => assert_eq!(t.to_string(), "Invalid PDU Header Field, offset 2"),
            other => panic!("{other:?}"),
        }
        c[8] = 7;
        let mut h = live(0, 131072);
        h.feed(&c);
        assert!(matches!(h.process(), Err(HostError::Terminated(t)) if t.to_string() == "unknown FES 7"));
    }

    #[test]
    fn b23_h2c_data_is_split_at_maxh2cdata() {
        let mut h = live(0, 4096);
        let data: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
        h.submit(sqe(0x01, 0x10), &data, 0).unwrap();
        let n = h.pending_send().len();
        h.sent(n);
        let mut r = Vec::new();
        encode_r2t(&mut r, 0x10, 3, 0, 0x10000, Digests::default());
        h.feed(&r);
        h.process().unwrap();
        let out = h.pending_send().to_vec();
        let mut at = 0;
        let mut got = Vec::new();
        for i in 0..16 {
            let ch = CommonHeader::parse(&out[at..]).unwrap();
            let dh = DataHeader::parse(&out[at..]);
            assert_eq!(ch.pdu_type, PduType::H2CData as u8);
            assert_eq!((dh.cccid, dh.ttag, dh.datao, dh.datal), (0x10, 3, i * 4096, 4096));
            assert_eq!(ch.flags & flags::LAST_PDU != 0, i == 15);
            got.extend_from_slice(&out[at + ch.pdo as usize..at + ch.plen as usize]);
            at += ch.plen as usize;
        }
        assert_eq!(at, out.len());
        assert_eq!(got, data);
        // Bad MAXH2CDATA values abort setup before Connect.
        for bad in [0xFFFu32, 0x800, 0, 0x1002] {
            let mut h = HostQueue::new(Digests::default(), 4096);
            let mut b = IcResp {
                pfv: 0,
                cpda: 0,
                digests: Digests::default(),
                maxh2cdata: 4096,
            }
            .encode();
            b[12..16].copy_from_slice(&bad.to_le_bytes());
            h.feed(&b);
            assert!(
                matches!(h.process(), Err(HostError::Fatal(e)) if e.fei == 12),
                "MAXH2CDATA {bad:#x}"
            );
            assert!(
                h.submit(sqe(0x7F, 1), &[], 0).is_err(),
                "no Connect after a refused ICResp"
            );
        }
    }

    #[test]
    fn b24_bad_r2ts_send_no_data() {
        let write = vec![0xEEu8; 8192];
        let case = |r2to: u32, r2tl: u32, cccid: u16| {
            let mut h = live(0, 131072);
            h.submit(sqe(0x01, 0x10), &write, 0).unwrap();
            let n = h.pending_send().len();
            h.sent(n);
            let mut r = Vec::new();
            encode_r2t(&mut r, cccid, 1, r2to, r2tl, Digests::default());
            let e = fatal(&mut h, &r);
            // Only the H2CTermReq went out: no H2CData.
            let out = h.pending_send();
            assert!(
                out[0] == PduType::H2CTermReq as u8 && CommonHeader::parse(out).unwrap().plen as usize == out.len()
            );
            e
        };
        assert_eq!(case(0, 0, 0x10), FatalError::field(16), "(a) R2TL 0");
        assert_eq!(
            case(0, 0x3000, 0x10).fes,
            Fes::DataTransferOutOfRange,
            "(b) beyond the command"
        );
        assert_eq!(
            case(0x1000, 0x1000, 0x10).fes,
            Fes::DataTransferOutOfRange,
            "(c) first R2TO not 0"
        );
        assert_eq!(case(0, 0x2000, 0x99), FatalError::field(8), "(d) unknown CCCID");
        // (e) a second R2T after all data was sent.
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x10), &write, 0).unwrap();
        flush(&mut h);
        let mut r = Vec::new();
        encode_r2t(&mut r, 0x10, 1, 0, 0x2000, Digests::default());
        h.feed(&r);
        h.process().unwrap();
        flush(&mut h);
        assert_eq!(fatal(&mut h, &r).fes, Fes::DataTransferLimitExceeded);
        // (f) an R2T for a read.
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 0x20), &[], 8192).unwrap();
        flush(&mut h);
        let mut r = Vec::new();
        encode_r2t(&mut r, 0x20, 1, 0, 0x2000, Digests::default());
        assert_eq!(fatal(&mut h, &r), FatalError::field(8));
    }

    fn c2h(cccid: u16, datao: u32, data: &[u8], f: u8, d: Digests) -> Vec<u8> {
        let mut v = Vec::new();
        encode_data_pdu(
            &mut v,
            PduType::C2HData,
            DataHeader {
                cccid,
                ttag: 0,
                datao,
                datal: 0,
            },
            data,
            f,
            d,
            0,
        );
        v
    }

    /// An Authentication Receive's AL is an allocation length: SPDK's target
    /// sends only the message (a 48-byte Challenge into AL 4096), with
    /// LAST_PDU on it. That completes the command with those bytes; a read
    /// that ends short still fails the queue.
    #[test]
    fn auth_receive_may_end_short_a_read_may_not() {
        let d = Digests::default();
        let auth_recv = |cid: u16| {
            let mut s = sqe(admin_opc::FABRICS, cid);
            s.0[4] = fctype::AUTH_RECV;
            s
        };
        let msg = vec![0x11u8; 48];
        // With SUCCESS on the data PDU.
        let mut h = live(0, 131072);
        h.submit(auth_recv(7), &[], 4096).unwrap();
        flush(&mut h);
        h.feed(&c2h(7, 0, &msg, flags::LAST_PDU | flags::SUCCESS, d));
        h.process().unwrap();
        let done = h.take_completions();
        assert_eq!(done.len(), 1);
        assert!(done[0].cqe.status.is_success());
        assert_eq!(done[0].data, msg);
        // With a CapsuleResp after it.
        let mut h = live(0, 131072);
        h.submit(auth_recv(8), &[], 4096).unwrap();
        flush(&mut h);
        h.feed(&c2h(8, 0, &msg, flags::LAST_PDU, d));
        let mut resp = Vec::new();
        crate::pdu::encode_capsule_resp(
            &mut resp,
            &Cqe {
                cid: 8,
                ..Cqe::default()
            }
            .encode(),
            d,
        );
        h.feed(&resp);
        h.process().unwrap();
        let done = h.take_completions();
        assert_eq!(done.len(), 1);
        assert!(done[0].cqe.status.is_success());
        assert_eq!(done[0].data, msg);
        // A read (opcode 02h) that ends short: FLAGS (byte 1) is wrong.
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 9), &[], 4096).unwrap();
        flush(&mut h);
        assert_eq!(
            fatal(&mut h, &c2h(9, 0, &msg, flags::LAST_PDU | flags::SUCCESS, d)),
            FatalError::field(1)
        );
    }

    #[test]
    fn b25_bad_c2h_data_never_completes_a_read() {
        let d = Digests::default();
        let chunk = vec![0x42u8; 0x10000];
        let read = |h: &mut HostQueue| {
            h.submit(sqe(0x02, 0x20), &[], 0x20000).unwrap();
            flush(h);
        };
        // (a) the same DATAO twice.
        let mut h = live(0, 131072);
        read(&mut h);
        let b = [
            c2h(0x20, 0, &chunk, 0, d),
            c2h(0x20, 0, &chunk, flags::LAST_PDU | flags::SUCCESS, d),
        ]
        .concat();
        assert_eq!(fatal(&mut h, &b).fes, Fes::DataTransferOutOfRange);
        // (b) past the end of the read.
        let mut h = live(0, 131072);
        read(&mut h);
        let b = [
            c2h(0x20, 0, &chunk, 0, d),
            c2h(0x20, 0x10000, &vec![0u8; 0x10004], flags::LAST_PDU, d),
        ]
        .concat();
        assert_eq!(fatal(&mut h, &b).fes, Fes::DataTransferOutOfRange);
        // (c) a CCCID not in flight.
        let mut h = live(0, 131072);
        read(&mut h);
        assert_eq!(fatal(&mut h, &c2h(0x77, 0, &chunk, 0, d)), FatalError::field(8));
        // (d) SUCCESS without LAST_PDU.
        let mut h = live(0, 131072);
        read(&mut h);
        assert_eq!(
            fatal(&mut h, &c2h(0x20, 0, &chunk, flags::SUCCESS, d)),
            FatalError::field(1)
        );
        // (e) a wrong data digest on the first PDU: completed once, with 0x0044.
        let dd = Digests {
            header: false,
            data: true,
        };
        let mut h = live(2, 131072);
        read(&mut h);
        let mut first = c2h(0x20, 0, &chunk, 0, dd);
        let n = first.len();
        first[n - 1] ^= 1;
        h.feed(&first);
        h.feed(&c2h(0x20, 0x10000, &chunk, flags::LAST_PDU | flags::SUCCESS, dd));
        h.process().unwrap();
        let done = h.take_completions();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].cqe.status.0, 0x0044);
        assert!(done[0].data.is_empty(), "no data of a failed read is handed out");
        // (e') the same with a CapsuleResp (no SUCCESS flag).
        let mut h = live(2, 131072);
        read(&mut h);
        let mut first = c2h(0x20, 0, &chunk, 0, dd);
        let n = first.len();
        first[n - 1] ^= 1;
        h.feed(&first);
        h.feed(&c2h(0x20, 0x10000, &chunk, flags::LAST_PDU, dd));
        let mut resp = Vec::new();
        crate::pdu::encode_capsule_resp(
            &mut resp,
            &Cqe {
                cid: 0x20,
                ..Cqe::default()
            }
            .encode(),
            Digests::default(),
        );
        h.feed(&resp);
        h.process().unwrap();
        let done = h.take_completions();
        assert_eq!((done.len(), done[0].cqe.status.0), (1, 0x0044));
        // (f) data after the command completed.
        let mut h = live(0, 131072);
        read(&mut h);
        h.feed(&c2h(0x20, 0, &vec![1u8; 0x20000], flags::LAST_PDU | flags::SUCCESS, d));
        h.process().unwrap();
        assert_eq!(h.take_completions().len(), 1);
        assert_eq!(fatal(&mut h, &c2h(0x20, 0, &chunk, 0, d)), FatalError::field(8));
    }

    fn resp(cid: u16, st: crate::nvme::Status) -> Vec<u8> {
        let mut v = Vec::new();
        crate::pdu::encode_capsule_resp(
            &mut v,
            &Cqe {
                cid,
                status: st,
                ..Cqe::default()
            }
            .encode(),
            Digests::default(),
        );
        v
    }

    fn r2t_bytes(cccid: u16, r2to: u32, r2tl: u32) -> Vec<u8> {
        let mut r = Vec::new();
        encode_r2t(&mut r, cccid, 1, r2to, r2tl, Digests::default());
        r
    }

    const OK: crate::nvme::Status = crate::nvme::Status::SUCCESS;

    #[test]
    fn a_completion_is_accepted_only_once_every_byte_moved() {
        let seq = FatalError::status(Fes::PduSequenceError);
        let write = vec![0xEEu8; 8192]; // above the 4096-byte in-capsule limit: by R2T
        // A successful CapsuleResp for an R2T write before any R2T.
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x10), &write, 0).unwrap();
        flush(&mut h);
        assert_eq!(fatal(&mut h, &resp(0x10, OK)), seq);
        // ... after the R2T, while its H2CData has not left this host.
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x10), &write, 0).unwrap();
        flush(&mut h);
        h.feed(&r2t_bytes(0x10, 0, 8192));
        h.process().unwrap();
        assert_eq!(fatal(&mut h, &resp(0x10, OK)), seq);
        // ... and once it left: accepted, the data handed back.
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x10), &write, 0).unwrap();
        flush(&mut h);
        h.feed(&r2t_bytes(0x10, 0, 8192));
        h.process().unwrap();
        flush(&mut h);
        h.feed(&resp(0x10, OK));
        h.process().unwrap();
        let done = h.take_completions();
        assert_eq!((done.len(), done[0].cqe.status, done[0].write.len()), (1, OK, 8192));
        // An error ends a write before its data was asked for (a refused command).
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x10), &write, 0).unwrap();
        flush(&mut h);
        h.feed(&resp(0x10, crate::nvme::status::INVALID_FIELD));
        h.process().unwrap();
        let done = h.take_completions();
        assert_eq!(done[0].cqe.status, crate::nvme::status::INVALID_FIELD);
        assert!(done[0].write == write, "a refused write's data comes back for a retry");
        // Any answer for a capsule that has not left this host yet.
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x11), &[1u8; 512], 0).unwrap();
        assert_eq!(fatal(&mut h, &resp(0x11, OK)), seq);
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x11), &[1u8; 512], 0).unwrap();
        assert_eq!(fatal(&mut h, &resp(0x11, crate::nvme::status::INVALID_FIELD)), seq);
        // A read's completion before its data, or part of it.
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 0x20), &[], 8192).unwrap();
        flush(&mut h);
        assert_eq!(fatal(&mut h, &resp(0x20, OK)), seq);
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 0x20), &[], 8192).unwrap();
        flush(&mut h);
        h.feed(&c2h(0x20, 0, &[7u8; 4096], 0, Digests::default()));
        assert_eq!(fatal(&mut h, &resp(0x20, OK)), seq);
        // A read failing part way: the error, and none of the data.
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 0x20), &[], 8192).unwrap();
        flush(&mut h);
        h.feed(&c2h(0x20, 0, &[7u8; 4096], 0, Digests::default()));
        h.feed(&resp(0x20, crate::nvme::status::INTERNAL_ERROR));
        h.process().unwrap();
        let done = h.take_completions();
        assert_eq!(done[0].cqe.status, crate::nvme::status::INTERNAL_ERROR);
        assert!(done[0].data.is_empty());
    }

    #[test]
    fn a_read_succeeds_only_with_every_byte() {
        let d = Digests::default();
        let half = vec![0x42u8; 0x10000];
        for (what, bytes, want) in [
            (
                "LAST_PDU and SUCCESS on the first half",
                c2h(0x20, 0, &half, flags::LAST_PDU | flags::SUCCESS, d),
                FatalError::field(1),
            ),
            (
                "LAST_PDU on the first half",
                c2h(0x20, 0, &half, flags::LAST_PDU, d),
                FatalError::field(1),
            ),
            (
                "a CapsuleResp after the first half",
                [c2h(0x20, 0, &half, 0, d), resp(0x20, OK)].concat(),
                FatalError::status(Fes::PduSequenceError),
            ),
            (
                "an empty C2HData with LAST_PDU and SUCCESS",
                c2h(0x20, 0, &[], flags::LAST_PDU | flags::SUCCESS, d),
                FatalError::field(1),
            ),
        ] {
            let mut h = live(0, 131072);
            h.submit(sqe(0x02, 0x20), &[], 0x20000).unwrap();
            flush(&mut h);
            assert_eq!(fatal(&mut h, &bytes), want, "{what}");
        }
    }

    #[test]
    fn data_pdus_for_the_other_direction_are_fatal() {
        let d = Digests::default();
        // Commands that move no data to the host: Write (in-capsule), Flush,
        // Write Zeroes, DSM (its range list in-capsule).
        for (opc, write) in [(0x01u8, 512usize), (0x00, 0), (0x08, 0), (0x09, 16)] {
            for len in [0usize, 512] {
                let mut h = live(0, 131072);
                h.submit(sqe(opc, 0x30), &vec![3u8; write], 0).unwrap();
                flush(&mut h);
                let b = c2h(0x30, 0, &vec![0u8; len], flags::LAST_PDU | flags::SUCCESS, d);
                assert_eq!(
                    fatal(&mut h, &b),
                    FatalError::field(8),
                    "opcode {opc:#04x}, DATAL {len}"
                );
            }
        }
        // Commands that move no data to the controller: Read, Flush.
        for (opc, read) in [(0x02u8, 4096u32), (0x00, 0)] {
            let mut h = live(0, 131072);
            h.submit(sqe(opc, 0x31), &[], read).unwrap();
            flush(&mut h);
            assert_eq!(fatal(&mut h, &r2t_bytes(0x31, 0, 4096)), FatalError::field(8));
        }
        // An R2T before the capsule left; a second R2T before the first one's data left.
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x32), &[5u8; 16384], 0).unwrap();
        assert_eq!(
            fatal(&mut h, &r2t_bytes(0x32, 0, 4096)),
            FatalError::status(Fes::PduSequenceError)
        );
        let mut h = live(0, 131072);
        h.submit(sqe(0x01, 0x32), &[5u8; 16384], 0).unwrap();
        flush(&mut h);
        h.feed(&r2t_bytes(0x32, 0, 4096));
        h.process().unwrap();
        assert_eq!(
            fatal(&mut h, &r2t_bytes(0x32, 4096, 4096)),
            FatalError::status(Fes::DataTransferLimitExceeded)
        );
    }

    /// Common-header faults (the framing checks shared with the target
    /// queue): the FES and FEI each gets. FEIs are common-header byte
    /// offsets (NVMe/TCP 1.0 section 3.6.1): PDU-Type 0, FLAGS 1, HLEN 2,
    /// PDO 3, PLEN 4.
    #[test]
    fn a_bad_pdu_type_is_fei_0_and_out_of_turn_is_a_sequence_error() {
        // Reserved types (08h, 0Ah) and the types a host sends (ICReq,
        // H2CTermReq, CapsuleCmd, H2CData).
        for t in [0x08u8, 0x0A, 0x00, 0x02, 0x04, 0x06] {
            let mut h = live(0, 131072);
            assert_eq!(
                fatal(&mut h, &[t, 0, 0x18, 0, 0x18, 0, 0, 0]),
                FatalError::field(0),
                "type {t:#04x}"
            );
        }
        let seq = FatalError::status(Fes::PduSequenceError);
        // Anything but ICResp or C2HTermReq before the ICResp.
        let mut h = HostQueue::new(Digests::default(), 4096);
        assert_eq!(fatal(&mut h, &resp(1, OK)), seq);
        // A second ICResp.
        let mut h = live(0, 131072);
        let icresp = IcResp {
            pfv: 0,
            cpda: 0,
            digests: Digests::default(),
            maxh2cdata: 131072,
        };
        assert_eq!(fatal(&mut h, &icresp.encode()), seq);
    }

    #[test]
    fn plen_outside_the_types_bounds_is_fei_4_before_the_pdu_is_in() {
        let plen = FatalError::field(4);
        // CapsuleResp and R2T carry no data: PLEN is exactly HLEN (+ HDGST).
        let mut h = live(0, 131072);
        assert_eq!(fatal(&mut h, &[0x05, 0, 0x18, 0, 0x1C, 0, 0, 0]), plen);
        let mut h = live(0, 131072);
        assert_eq!(fatal(&mut h, &[0x09, 0, 0x18, 0, 0x14, 0, 0, 0]), plen);
        // With header digests, a CapsuleResp without its HDGST.
        let mut h = live(1, 131072);
        assert_eq!(fatal(&mut h, &[0x05, 0x01, 0x18, 0, 0x18, 0, 0, 0]), plen);
        // An ICResp is exactly 128 bytes.
        let mut h = HostQueue::new(Digests::default(), 4096);
        assert_eq!(fatal(&mut h, &[0x01, 0, 0x80, 0, 0x84, 0, 0, 0]), plen);
        // C2HData: at most header, the largest read in flight (at least
        // 128 KiB) and DDGST: 24 + 131072 + 4 = 131100 bytes.
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 1), &[], 4096).unwrap();
        flush(&mut h);
        h.feed(&[0x07, 0, 0x18, 0x18, 0x1C, 0x00, 0x02, 0x00]);
        h.process().unwrap();
        assert!(!h.is_terminated(), "PLEN 131100 waits for its bytes");
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 1), &[], 4096).unwrap();
        flush(&mut h);
        assert_eq!(fatal(&mut h, &[0x07, 0, 0x18, 0x18, 0x1D, 0x00, 0x02, 0x00]), plen);
        // C2HData whose PDO points into its header: the data does not tile PLEN.
        let mut h = live(0, 131072);
        h.submit(sqe(0x02, 1), &[], 4096).unwrap();
        flush(&mut h);
        let mut b = vec![
            0x07, 0x0C, 0x18, 0x10, 0x20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0,
        ];
        b.resize(0x20, 0);
        assert_eq!(fatal(&mut h, &b), plen);
    }

    #[test]
    fn a_wrong_header_digest_is_a_header_digest_error() {
        let d = Digests {
            header: true,
            data: false,
        };
        let mut h = live(1, 131072);
        h.submit(sqe(0x7F, 1), &[], 0).unwrap();
        flush(&mut h);
        let mut b = Vec::new();
        crate::pdu::encode_capsule_resp(
            &mut b,
            &Cqe {
                cid: 1,
                ..Cqe::default()
            }
            .encode(),
            d,
        );
        assert_eq!(b.len(), 28);
        b[24] ^= 1;
        assert_eq!(fatal(&mut h, &b), FatalError::status(Fes::HeaderDigestError));
    }

    #[test]
    fn the_h2c_term_req_copies_at_most_128_bytes_of_the_pdu_in_error() {
        // 28 bytes buffered: all copied (H2CTermReq PLEN 24 + 28).
        let mut h = live(0, 131072);
        let bad = [&[0x05u8, 0, 0x18, 0, 0x1C, 0, 0, 0][..], &[0xAB; 20]].concat();
        fatal(&mut h, &bad);
        let out = h.pending_send();
        assert_eq!(le32(out, 4), 52);
        assert_eq!(&out[24..52], &bad[..]);
        // 200 bytes buffered: the first 128 (PLEN 152, the most a TermReq has).
        let mut h = live(0, 131072);
        let bad = [&[0x05u8, 0, 0x18, 0, 0xC8, 0, 0, 0][..], &[0xCD; 192]].concat();
        fatal(&mut h, &bad);
        let out = h.pending_send();
        assert_eq!(le32(out, 4), 152);
        assert_eq!(&out[24..152], &bad[..128]);
    }

    #[test]
    fn completions_before_a_fatal_pdu_are_kept_and_data_stays_with_its_command() {
        let mut h = live(0, 131072);
        let a = vec![0xA1u8; 1024];
        let b = vec![0xB2u8; 8192];
        h.submit(sqe(0x01, 1), &a, 0).unwrap();
        h.submit(sqe(0x01, 2), &b, 0).unwrap();
        flush(&mut h);
        let before = h.pending_send().len();
        h.feed(&[resp(1, OK), c2h(0x777, 0, &[0u8; 64], 0, Digests::default())].concat());
        assert!(matches!(h.process(), Err(HostError::Fatal(e)) if e == FatalError::field(8)));
        assert_eq!(h.pending_send()[before], PduType::H2CTermReq as u8);
        let done = h.take_completions();
        assert_eq!(done.len(), 1, "the completion parsed before the fatal PDU is kept");
        assert_eq!((done[0].cqe.cid, done[0].cqe.status), (1, OK));
        assert!(done[0].write == a);
        assert!(h.take_write(2) == b, "the write still in flight keeps its data");
    }
}
