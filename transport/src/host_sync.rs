//! One host queue pair over a blocking socket: the initiator's control path
//! (TCP connect, ICReq/ICResp, fabrics Connect, Property Get/Set, Identify)
//! and a simple load generator's data path. Every wait is bounded by the
//! queue's timeout. Once set up, [`SyncQueue::into_parts`] hands the socket
//! and the live state machine to [`crate::host_conn::HostConn`] on a reactor.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lull_proto::auth::host::HostAuth;
use lull_proto::auth::{AuthConfig, OsEntropy, SECP_DHCHAP, SPSP_DHCHAP};
use lull_proto::fabrics::{AuthCmd, ConnectCmd, ConnectData, PropertyCmd, fctype, property};
use lull_proto::host_queue::{Completion, HostError, HostQueue};
use lull_proto::nvme::cmd::KeepAlive;
use lull_proto::nvme::{Cqe, Sqe, Status};
use lull_proto::pdu::Digests;
use lull_proto::tls_psk::TlsPsk;

use crate::tls::{Handshake, Wire};
use rustix::event::{PollFd, PollFlags, Timespec};

/// Why a control-path step failed, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// TCP connect or a socket call failed.
    #[error("{0}")]
    Io(String),
    /// The target broke the protocol or terminated the connection.
    #[error("{0}")]
    Protocol(String),
    /// A command completed with an error status.
    #[error("{what} failed: {status} (status {code:#06x})")]
    Status {
        /// Which command.
        what: String,
        /// The status.
        status: Status,
        /// Its raw value (SCT/SC/DNR bits as in the CQE, phase bit excluded).
        code: u16,
    },
    /// No answer in time.
    #[error("{0}")]
    Timeout(String),
}

/// One queue pair over a blocking socket.
pub struct SyncQueue {
    /// TCP, or TLS over it.
    sock: Wire,
    q: HostQueue,
    next_cid: u16,
    timeout: Duration,
    /// Every wait ends by then, however slowly the target drips bytes.
    deadline: Option<Instant>,
}

impl SyncQueue {
    /// Connects (within `timeout`) and completes ICReq/ICResp. `in_capsule`
    /// is the in-capsule data limit in bytes the target accepts on this queue.
    ///
    /// # Errors
    /// [`SyncError::Io`] for TCP, [`SyncError::Protocol`] for an ICResp refused,
    /// [`SyncError::Timeout`] when no ICResp comes in time.
    pub fn connect(addr: SocketAddr, digests: Digests, in_capsule: u32, timeout: Duration) -> Result<Self, SyncError> {
        Self::connect_by(addr, digests, in_capsule, timeout, None)
    }

    /// As [`connect`](Self::connect), with every wait of this queue (this
    /// one and all later ones) ending by `deadline` at the latest.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); [`SyncError::Timeout`] at the deadline.
    pub fn connect_by(
        addr: SocketAddr,
        digests: Digests,
        in_capsule: u32,
        timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Self, SyncError> {
        Self::connect_secure(addr, digests, in_capsule, timeout, deadline, None)
    }

    /// As [`connect_by`](Self::connect_by); with `tls`, a TLS 1.3 handshake
    /// keyed by that PSK comes first (NVMe/TCP TLS, TP 8011) and every PDU
    /// after it travels in TLS records.
    ///
    /// # Errors
    /// As [`connect_by`](Self::connect_by); [`SyncError::Protocol`] when the
    /// target refuses the handshake (an unknown identity, another key).
    pub fn connect_secure(
        addr: SocketAddr,
        digests: Digests,
        in_capsule: u32,
        timeout: Duration,
        deadline: Option<Instant>,
        tls: Option<&TlsPsk>,
    ) -> Result<Self, SyncError> {
        let first = deadline.map_or(timeout, |d| timeout.min(d.saturating_duration_since(Instant::now())));
        if first.is_zero() {
            return Err(SyncError::Timeout(format!("no time left to connect to {addr}")));
        }
        let sock =
            TcpStream::connect_timeout(&addr, first).map_err(|e| SyncError::Io(format!("connect to {addr}: {e}")))?;
        sock.set_nodelay(true).map_err(|e| SyncError::Io(e.to_string()))?;
        sock.set_read_timeout(Some(timeout))
            .and_then(|()| sock.set_write_timeout(Some(timeout)))
            .map_err(|e| SyncError::Io(e.to_string()))?;
        let sock = match tls {
            None => Wire::plain(sock),
            Some(psk) => secure(sock, psk, addr, timeout, deadline)?,
        };
        let mut c = SyncQueue {
            sock,
            q: HostQueue::new(digests, in_capsule),
            next_cid: 0,
            timeout,
            deadline,
        };
        c.flush()?;
        while !c.q.is_live() {
            c.read_some().map_err(|e| match e {
                SyncError::Timeout(_) => SyncError::Timeout(format!("no ICResp from {addr} within {timeout:?}")),
                e => e,
            })?;
        }
        Ok(c)
    }

    /// The local address of the queue's connection (the target sees it as
    /// the queue's peer).
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.tcp().local_addr()
    }

    /// The socket and the live state machine, for a reactor to drive. No
    /// command is in flight.
    pub fn into_parts(self) -> (Wire, HostQueue) {
        (self.sock, self.q)
    }

    /// The state machine (digests and MAXH2CDATA negotiated, in-capsule limit).
    pub fn queue_mut(&mut self) -> &mut HostQueue {
        &mut self.q
    }

    fn flush(&mut self) -> Result<(), SyncError> {
        while self.q.wants_send() {
            let n = self
                .sock
                .write(self.q.pending_send())
                .map_err(|e| SyncError::Io(format!("write: {e}")))?;
            self.q.sent(n);
        }
        Ok(())
    }

    fn read_some(&mut self) -> Result<(), SyncError> {
        const CHUNK: usize = 256 * 1024;
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SyncError::Timeout(format!(
                    "the step did not finish in time ({} commands in flight)",
                    self.q.inflight()
                )));
            }
            self.sock
                .tcp()
                .set_read_timeout(Some(left.min(self.timeout)))
                .map_err(|e| SyncError::Io(e.to_string()))?;
        }
        let buf = self.q.recv_buffer(CHUNK);
        let r = self.sock.read(buf);
        let n = match r {
            Ok(0) => {
                self.q.received(CHUNK, 0);
                return Err(SyncError::Io("the target closed the connection".into()));
            }
            Ok(n) => n,
            Err(e) => {
                self.q.received(CHUNK, 0);
                let inflight = self.q.inflight();
                return Err(match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SyncError::Timeout(format!(
                        "no answer within {:?} ({inflight} commands in flight)",
                        self.timeout
                    )),
                    _ => SyncError::Io(format!("read: {e} ({inflight} commands in flight)")),
                });
            }
        };
        self.q.received(CHUNK, n);
        match self.q.process() {
            Ok(()) => Ok(()),
            Err(e @ HostError::Fatal(_)) => {
                let _ = self.flush();
                Err(SyncError::Protocol(e.to_string()))
            }
            Err(e) => Err(SyncError::Protocol(e.to_string())),
        }
    }

    /// Commands submitted and not completed.
    pub fn inflight(&self) -> usize {
        self.q.inflight()
    }

    /// A fresh CID.
    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    /// Submits without waiting (the SQE's CID is the caller's).
    ///
    /// # Errors
    /// When the queue refuses the submission.
    pub fn submit(&mut self, sqe: Sqe, write: &[u8], read_len: u32) -> Result<(), SyncError> {
        self.q
            .submit(sqe, write, read_len)
            .map_err(|e| SyncError::Protocol(e.to_string()))
    }

    /// Sends what is queued and waits for at least one completion.
    ///
    /// # Errors
    /// Socket, protocol or timeout errors.
    pub fn wait(&mut self) -> Result<Vec<Completion>, SyncError> {
        self.flush()?;
        loop {
            let done = self.q.take_completions();
            if !done.is_empty() {
                return Ok(done);
            }
            self.read_some()?;
            self.flush()?;
        }
    }

    /// Runs one command to completion; `what` names it in errors.
    ///
    /// # Errors
    /// Transport errors, or [`SyncError::Status`] for an unsuccessful status.
    pub fn call(&mut self, what: &str, mut sqe: Sqe, write: &[u8], read_len: u32) -> Result<Completion, SyncError> {
        let cid = self.cid();
        sqe.set_cid(cid);
        self.submit(sqe, write, read_len)?;
        loop {
            for c in self.wait()? {
                if c.cqe.cid != cid {
                    continue;
                }
                if !c.cqe.status.is_success() {
                    return Err(SyncError::Status {
                        what: what.to_string(),
                        status: c.cqe.status,
                        code: c.cqe.status.0 >> 1,
                    });
                }
                return Ok(c);
            }
        }
    }

    /// Fabrics Connect (NVMe-oF 1.1 section 3.3): `qid` 0 creates the admin
    /// queue of a dynamic controller (`cntlid` 0xFFFF), else an I/O queue of
    /// controller `cntlid`. `sqsize` is 0's based; `kato_ms` admin only.
    /// Returns the CQE (DW0 bits 15:0 = CNTLID on an admin Connect).
    ///
    /// # Errors
    /// As [`call`](Self::call); a refused host is a [`SyncError::Status`]
    /// with Connect Invalid Host.
    pub fn fabric_connect(
        &mut self,
        qid: u16,
        sqsize: u16,
        kato_ms: u32,
        data: &ConnectData,
    ) -> Result<Cqe, SyncError> {
        let mut sqe = Sqe([0; 64]);
        ConnectCmd {
            recfmt: 0,
            qid,
            sqsize,
            cattr: 0,
            kato: kato_ms,
        }
        .write(&mut sqe);
        // The host NQN is named: a target that refuses it (Connect Invalid
        // Host) needs exactly this one on its allow-list.
        let what = format!("Connect (queue {qid}, host {})", data.hostnqn);
        Ok(self.call(&what, sqe, &data.encode(), 0)?.cqe)
    }

    /// Property Get; `size` 4 or 8 bytes. Returns the value.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn property_get(&mut self, offset: u32, size: u8) -> Result<u64, SyncError> {
        let mut sqe = Sqe([0; 64]);
        PropertyCmd { size, offset, value: 0 }.write(&mut sqe, fctype::PROPERTY_GET);
        let c = self.call(&format!("Property Get {offset:#x}"), sqe, &[], 0)?;
        Ok(u64::from(c.cqe.dw0) | (u64::from(c.cqe.dw1) << 32))
    }

    /// Property Set of a 4-byte property.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn property_set(&mut self, offset: u32, value: u64) -> Result<(), SyncError> {
        let mut sqe = Sqe([0; 64]);
        PropertyCmd { size: 4, offset, value }.write(&mut sqe, fctype::PROPERTY_SET);
        self.call(&format!("Property Set {offset:#x}"), sqe, &[], 0).map(|_| ())
    }

    /// Sets CC.EN with 64-byte SQEs and 16-byte CQEs and waits up to
    /// `timeout` for CSTS.RDY (NVMe base 2.0 section 3.5.1).
    ///
    /// # Errors
    /// As [`call`](Self::call); [`SyncError::Timeout`] when RDY stays 0;
    /// [`SyncError::Protocol`] when CSTS.CFS is set.
    pub fn enable(&mut self, timeout: Duration) -> Result<(), SyncError> {
        self.property_set(property::CC, 1 | (6 << 16) | (4 << 20))?;
        let until = Instant::now() + timeout;
        loop {
            let csts = self.property_get(property::CSTS, 4)?;
            if csts & 2 != 0 {
                return Err(SyncError::Protocol(
                    "the controller reports a fatal status (CSTS.CFS)".into(),
                ));
            }
            if csts & 1 == 1 {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(SyncError::Timeout(format!("CSTS.RDY not set within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// An admin queue on a new dynamic controller, enabled: Connect, CC.EN,
    /// CSTS.RDY. Returns the queue and its CNTLID.
    ///
    /// # Errors
    /// Any failure on the way.
    pub fn admin(
        addr: SocketAddr,
        subnqn: &str,
        hostnqn: &str,
        digests: Digests,
        kato_ms: u32,
    ) -> Result<(SyncQueue, u16), SyncError> {
        let timeout = Duration::from_secs(10);
        let mut c = SyncQueue::connect(addr, digests, 8192, timeout)?;
        let data = ConnectData {
            hostid: [0x11; 16],
            cntlid: 0xFFFF,
            subnqn: subnqn.into(),
            hostnqn: hostnqn.into(),
        };
        let cntlid = c.fabric_connect(0, 31, kato_ms, &data)?.dw0 as u16;
        c.enable(timeout)?;
        Ok((c, cntlid))
    }

    /// Authentication Send (fctype 05h) of one DH-HMAC-CHAP message.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn auth_send(&mut self, message: &[u8]) -> Result<Cqe, SyncError> {
        let mut sqe = Sqe([0; 64]);
        AuthCmd {
            secp: SECP_DHCHAP,
            spsp0: SPSP_DHCHAP,
            spsp1: SPSP_DHCHAP,
            len: message.len() as u32,
        }
        .write(&mut sqe, fctype::AUTH_SEND);
        Ok(self.call("Authentication Send", sqe, message, 0)?.cqe)
    }

    /// Authentication Receive (fctype 06h) of at most `al` bytes; returns the data.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn auth_receive(&mut self, al: u32) -> Result<Vec<u8>, SyncError> {
        let mut sqe = Sqe([0; 64]);
        AuthCmd {
            secp: SECP_DHCHAP,
            spsp0: SPSP_DHCHAP,
            spsp1: SPSP_DHCHAP,
            len: al,
        }
        .write(&mut sqe, fctype::AUTH_RECV);
        Ok(self.call("Authentication Receive", sqe, &[], al)?.data)
    }

    /// Authenticates this queue with DH-HMAC-CHAP (NVMe Base 2.0 section
    /// 8.13), as a host does after a Connect whose response has ATR set:
    /// transaction `t_id`, the hashes, groups and keys of `cfg`.
    ///
    /// # Errors
    /// [`SyncError::Protocol`] naming the failure (the controller's AUTH_Failure1
    /// reason, or why the host refused; AUTH_Failure2 is then sent), or the
    /// transport's errors.
    pub fn authenticate(&mut self, cfg: Arc<AuthConfig>, t_id: u16) -> Result<(), SyncError> {
        /// Larger than any message (a Challenge with ffdhe8192 is 1,104 bytes).
        const AL: u32 = 4096;
        let mut host = HostAuth::new(cfg, t_id);
        let mut send = host.negotiate();
        loop {
            self.auth_send(&send)?;
            let data = self.auth_receive(AL)?;
            match host.on_message(&data, &mut OsEntropy) {
                Ok(Some(next)) if host.is_done() => {
                    // Success2: the last message.
                    self.auth_send(&next)?;
                    return Ok(());
                }
                Ok(Some(next)) => send = next,
                Ok(None) => return Ok(()),
                Err(f) => {
                    if let Some(f2) = &f.failure2 {
                        // Best effort: the host gives up either way.
                        let _ = self.auth_send(f2);
                    }
                    return Err(SyncError::Protocol(format!("DH-HMAC-CHAP authentication failed: {f}")));
                }
            }
        }
    }

    /// Sends Keep Alive (on an admin queue) and waits for its completion.
    ///
    /// # Errors
    /// Transport errors or a failed status.
    pub fn keep_alive(&mut self) -> Result<(), SyncError> {
        self.call("Keep Alive", KeepAlive.encode(), &[], 0).map(|_| ())
    }

    /// An I/O queue (QID 1, 128 entries) of controller `cntlid`.
    ///
    /// # Errors
    /// Any failure on the way.
    pub fn io(
        addr: SocketAddr,
        subnqn: &str,
        hostnqn: &str,
        cntlid: u16,
        digests: Digests,
        in_capsule: u32,
    ) -> Result<SyncQueue, SyncError> {
        let mut c = SyncQueue::connect(addr, digests, in_capsule, Duration::from_secs(10))?;
        let data = ConnectData {
            hostid: [0x11; 16],
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: hostnqn.into(),
        };
        c.fabric_connect(1, 127, 0, &data)?;
        Ok(c)
    }
}

/// The TLS handshake over `sock`, as a whole within `timeout` and by
/// `deadline`. The socket is non-blocking meanwhile and each wait a
/// `poll` for what OpenSSL waits for, bounded by the time left: with a
/// blocking socket a read timeout bounds each read alone, so a target
/// sending its handshake a byte at a time, each within the timeout, could
/// hold the host for as long as it liked.
fn secure(
    sock: TcpStream,
    psk: &TlsPsk,
    addr: SocketAddr,
    timeout: Duration,
    deadline: Option<Instant>,
) -> Result<Wire, SyncError> {
    // A timeout too long to be an instant bounds nothing.
    let end = match (Instant::now().checked_add(timeout), deadline) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    };
    sock.set_nonblocking(true)
        .map_err(|e| SyncError::Io(format!("{addr}: {e}")))?;
    let mut wire =
        crate::tls::client(Arc::new(sock), psk.clone()).map_err(|e| SyncError::Io(format!("{addr}: {e}")))?;
    loop {
        let wait = match wire.handshake() {
            Ok(Handshake::Done(_)) => break,
            Ok(Handshake::WantRead) => PollFlags::IN,
            Ok(Handshake::WantWrite) => PollFlags::OUT,
            Err(e) => {
                return Err(SyncError::Protocol(format!(
                    "{addr} refused the TLS handshake with PSK identity {:?}: {e}",
                    psk.identity()
                )));
            }
        };
        let left = match end {
            None => None,
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(SyncError::Timeout(if deadline == Some(end) {
                        format!("no TLS handshake with {addr} by the step's deadline")
                    } else {
                        format!("no TLS handshake with {addr} within {timeout:?}")
                    }));
                }
                Some(Timespec::try_from(left).map_err(|e| SyncError::Io(format!("{addr}: {e}")))?)
            }
        };
        let mut fds = [PollFd::new(wire.tcp(), wait)];
        match rustix::event::poll(&mut fds, left.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(SyncError::Io(format!("{addr}: poll: {e}"))),
        }
    }
    // The queue's own reads and writes block, bounded by the socket's timeouts.
    wire.tcp()
        .set_nonblocking(false)
        .map_err(|e| SyncError::Io(format!("{addr}: {e}")))?;
    Ok(wire)
}

#[cfg(test)]
mod tests;
