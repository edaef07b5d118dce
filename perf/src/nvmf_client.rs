//! A blocking NVMe/TCP client on one thread: enough of a host to drive a
//! target from a benchmark (admin Connect, enable, I/O queue Connect, and
//! reads/writes at a queue depth). It uses `lull-transport`'s host queue
//! state machine; the reactor-driven initiator is `lull-engine`'s job.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lull_transport::fabrics::{ConnectCmd, ConnectData, PropertyCmd, fctype, property};
use lull_transport::host::{Completion, HostError, HostQueue};
use lull_transport::nvme::{Cqe, Sqe};
use lull_transport::pdu::Digests;

/// A client error, in words.
pub type ClientError = String;

/// One queue pair over a blocking socket.
pub struct Client {
    sock: TcpStream,
    q: HostQueue,
    next_cid: u16,
}

impl Client {
    /// Connects and completes ICReq/ICResp.
    ///
    /// # Errors
    /// Socket or protocol errors.
    pub fn connect(addr: SocketAddr, digests: Digests, in_capsule: u32) -> Result<Client, ClientError> {
        let sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut c = Client {
            sock,
            q: HostQueue::new(digests, in_capsule),
            next_cid: 0,
        };
        c.flush()?;
        while !c.q.is_live() {
            c.read_some()?;
        }
        Ok(c)
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        while self.q.wants_send() {
            let n = self
                .sock
                .write(self.q.pending_send())
                .map_err(|e| format!("write: {e}"))?;
            self.q.sent(n);
        }
        Ok(())
    }

    fn read_some(&mut self) -> Result<(), ClientError> {
        const CHUNK: usize = 256 * 1024;
        let buf = self.q.recv_buffer(CHUNK);
        let r = self.sock.read(buf);
        let n = match r {
            Ok(0) => {
                self.q.received(CHUNK, 0);
                return Err("the target closed the connection".into());
            }
            Ok(n) => n,
            Err(e) => {
                self.q.received(CHUNK, 0);
                return Err(format!("read: {e} ({} commands in flight)", self.q.inflight()));
            }
        };
        self.q.received(CHUNK, n);
        match self.q.process() {
            Ok(()) => Ok(()),
            Err(e @ HostError::Fatal(_)) => {
                let _ = self.flush();
                Err(e.to_string())
            }
            Err(e) => Err(e.to_string()),
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

    /// Submits without waiting.
    ///
    /// # Errors
    /// When the queue refuses the submission.
    pub fn submit(&mut self, sqe: Sqe, write: &[u8], read_len: u32) -> Result<(), ClientError> {
        self.q.submit(sqe, write, read_len).map_err(|e| e.to_string())
    }

    /// Sends what is queued and waits for at least one completion.
    ///
    /// # Errors
    /// Socket or protocol errors.
    pub fn wait(&mut self) -> Result<Vec<Completion>, ClientError> {
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

    /// Runs one command to completion.
    ///
    /// # Errors
    /// Transport errors, or an unsuccessful status.
    pub fn call(&mut self, mut sqe: Sqe, write: &[u8], read_len: u32) -> Result<Completion, ClientError> {
        let cid = self.cid();
        sqe.set_cid(cid);
        self.submit(sqe, write, read_len)?;
        let mut done = self.wait()?;
        let c = done.pop().ok_or("no completion")?;
        if !c.cqe.status.is_success() {
            return Err(format!("command {:#04x} failed: {}", sqe.opc(), c.cqe.status));
        }
        Ok(c)
    }

    fn fabric_connect(&mut self, qid: u16, subnqn: &str, hostnqn: &str, cntlid: u16) -> Result<Cqe, ClientError> {
        let mut sqe = Sqe([0; 64]);
        ConnectCmd {
            recfmt: 0,
            qid,
            sqsize: 127,
            cattr: 0,
            kato: if qid == 0 { 30_000 } else { 0 },
        }
        .write(&mut sqe);
        let data = ConnectData {
            hostid: [0x11; 16],
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: hostnqn.into(),
        };
        Ok(self.call(sqe, &data.encode(), 0)?.cqe)
    }

    /// An admin queue: Connect, CC.EN = 1, wait for CSTS.RDY. Returns the CNTLID.
    ///
    /// # Errors
    /// Any failure on the way.
    pub fn admin(
        addr: SocketAddr,
        subnqn: &str,
        hostnqn: &str,
        digests: Digests,
    ) -> Result<(Client, u16), ClientError> {
        let mut c = Client::connect(addr, digests, 8192)?;
        let cntlid = c.fabric_connect(0, subnqn, hostnqn, 0xFFFF)?.dw0 as u16;
        let mut sqe = Sqe([0; 64]);
        PropertyCmd {
            size: 4,
            offset: property::CC,
            value: 1 | (6 << 16) | (4 << 20),
        }
        .write(&mut sqe, fctype::PROPERTY_SET);
        c.call(sqe, &[], 0)?;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let mut sqe = Sqe([0; 64]);
            PropertyCmd {
                size: 4,
                offset: property::CSTS,
                value: 0,
            }
            .write(&mut sqe, fctype::PROPERTY_GET);
            if c.call(sqe, &[], 0)?.cqe.dw0 & 1 == 1 {
                return Ok((c, cntlid));
            }
            if Instant::now() > until {
                return Err("CSTS.RDY not set within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends Keep Alive (on an admin queue) and waits for its completion.
    ///
    /// # Errors
    /// Transport errors or a failed status.
    pub fn keep_alive(&mut self) -> Result<(), ClientError> {
        let mut sqe = Sqe([0; 64]);
        sqe.0[0] = lull_transport::nvme::admin_opc::KEEP_ALIVE;
        self.call(sqe, &[], 0).map(|_| ())
    }

    /// An I/O queue of controller `cntlid`.
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
    ) -> Result<Client, ClientError> {
        let mut c = Client::connect(addr, digests, in_capsule)?;
        c.fabric_connect(1, subnqn, hostnqn, cntlid)?;
        Ok(c)
    }
}
