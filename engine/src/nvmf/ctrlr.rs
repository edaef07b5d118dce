//! An NVMe-oF controller (dynamic model): its registers (CC, CSTS), features,
//! keep-alive deadline, outstanding Asynchronous Event Requests and the
//! namespaces changed since the host last looked.
//!
//! A controller is created by an admin-queue Connect and lives until its
//! admin queue closes, its keep-alive timer expires, or the host disables it.
//! Its queues may sit on different reactors; its state is behind a mutex
//! touched only by admin and Connect commands, never by I/O (which reads one
//! atomic, CSTS.RDY).
//!
//! No reactor type appears here: time comes in as [`Instant`]s, and what
//! must happen on a reactor goes through two opaque ports the queue's glue
//! installs ([`crate::nvmf::ctrlr_runtime`]): a closer per queue and an
//! event sink that reaches the admin queue. So the controller is driven by
//! plain values in tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lull_proto::nvme::cmd::{AsyncEvent, aec, event_type, lid, notice};

use crate::nvmf::subsystem::Subsystem;

/// Completion DW0 of a Namespace Attribute Changed notice (NVMe Base 2.0
/// figure 150): event type 2h (Notice), information 00h, log page 04h.
pub const AEN_NS_ATTRIBUTE_CHANGED: u32 = AsyncEvent {
    kind: event_type::NOTICE,
    info: notice::NAMESPACE_ATTRIBUTE_CHANGED,
    lid: lid::CHANGED_NS,
}
.dw0();
/// At most this many NSIDs are listed in log page 04h; more make it FFFFFFFFh.
const CHANGED_NS_MAX: usize = 1024;
/// Size of the Changed Namespace List log page, bytes.
const CHANGED_NS_LOG_LEN: usize = 4096;

/// How long a controller that was never enabled (CC.EN 0, e.g. still
/// authenticating) may go without a Keep Alive before it is torn down:
/// KATO proper starts at CC.EN. A host's admin command timeout (Linux: 60 s).
pub const NOT_ENABLED_GRACE: Duration = Duration::from_secs(60);

/// One connected queue of a controller (`nvmf_subsystem_get_qpairs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    /// QID (0: the admin queue).
    pub qid: u16,
    /// Index of the reactor serving it.
    pub reactor: usize,
    /// The host's address and port of its connection (SPDK's
    /// `peer_address`: with an empty HOSTNQN, the only way to tell hosts apart).
    pub peer: SocketAddr,
}

/// Closes one queue's connection, on whichever reactor it lives.
pub type QueueCloser = Box<dyn FnOnce() + Send>;

/// Hands an asynchronous event's completion DW0 to the admin queue's
/// reactor; false when it could not be delivered.
pub type EventSink = Arc<dyn Fn(u32) -> bool + Send + Sync>;

/// What an admin Connect settles for a new controller.
pub struct NewController {
    /// The host's NQN.
    pub hostnqn: String,
    /// The host's HOSTID.
    pub hostid: [u8; 16],
    /// The port its admin queue came through.
    pub listener: SocketAddr,
    /// Keep Alive Timeout (zero: none).
    pub kato: Duration,
    /// The transport's `max_io_qpairs_per_ctrlr` now.
    pub max_io_queues: u16,
}

/// What an Asynchronous Event Request becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AerOutcome {
    /// More are outstanding than AERL allows: Asynchronous Event Request
    /// Limit Exceeded.
    LimitExceeded,
    /// Held until an event occurs.
    Held,
    /// An event was waiting: complete at once with this DW0.
    Event(u32),
}

/// Mutable controller state.
struct State {
    cc: u32,
    csts: u32,
    kato: Duration,
    aec: u32,
    /// I/O queues granted by Set Features Number of Queues (0: not set yet).
    io_queues: u16,
    /// The transport's `max_io_qpairs_per_ctrlr` when this controller was made.
    max_io_queues: u16,
    last_keep_alive: Instant,
    /// Outstanding Asynchronous Event Requests (CIDs on the admin queue).
    aers: Vec<u16>,
    /// Every queue of this controller and how to close it.
    queues: Vec<(QueueInfo, QueueCloser)>,
    /// Torn down: every queue is closing.
    torn_down: bool,
    /// Delivers events to the admin queue (installed by its Connect).
    events: Option<EventSink>,
    /// Events raised while no AER was outstanding: delivered by the next AER.
    pending_aens: Vec<u32>,
    /// NSIDs whose attributes changed since the host last read log page 04h.
    changed_ns: Vec<u32>,
    /// A Namespace Attribute Changed notice was sent and the host has not read
    /// log page 04h yet: further changes are recorded, not notified (NVMe Base
    /// 2.0 section 5.2: an event type is masked until its log page is read).
    ns_notice_masked: bool,
}

/// One controller.
pub struct Controller {
    /// CNTLID.
    pub cntlid: u16,
    /// Its subsystem.
    pub subsystem: Arc<Subsystem>,
    /// The host's NQN.
    pub hostnqn: String,
    /// The host's HOSTID.
    pub hostid: [u8; 16],
    /// The port its admin queue came through.
    pub listener: SocketAddr,
    ready: AtomicBool,
    /// DH-HMAC-CHAP transactions its queues passed.
    authentications: AtomicU64,
    state: Mutex<State>,
}

/// An NQN for a log line: an empty one (a host that sent no HOSTNQN) says so.
pub(crate) fn shown(nqn: &str) -> &str {
    if nqn.is_empty() { "(empty)" } else { nqn }
}

/// Whether a value written to CC is one this controller accepts (NVMe Base
/// 2.0 figure 41): reserved bits clear; CSS NVM (0), MPS 4 KiB (0), AMS
/// round robin (0), SHN not the reserved 11b; IOSQES 6 and IOCQES 4 (or 0
/// while the controller is disabled).
pub fn cc_valid(v: u64) -> bool {
    let Ok(v) = u32::try_from(v) else { return false };
    let reserved = 0xFF00_000E;
    let (css, mps, ams, shn) = ((v >> 4) & 7, (v >> 7) & 0xF, (v >> 11) & 7, (v >> 14) & 3);
    let (iosqes, iocqes) = ((v >> 16) & 0xF, (v >> 20) & 0xF);
    let queues_ok = (iosqes == 6 && iocqes == 4) || (v & 1 == 0 && iosqes == 0 && iocqes == 0);
    v & reserved == 0 && css == 0 && mps == 0 && ams == 0 && shn != 3 && queues_ok
}

impl Controller {
    /// A controller `cntlid` of `subsystem`, disabled (CC 0), its keep-alive
    /// counted from `now`.
    pub fn new(cntlid: u16, subsystem: Arc<Subsystem>, new: NewController, now: Instant) -> Self {
        Controller {
            cntlid,
            subsystem,
            hostnqn: new.hostnqn,
            hostid: new.hostid,
            listener: new.listener,
            ready: AtomicBool::new(false),
            authentications: AtomicU64::new(0),
            state: Mutex::new(State {
                cc: 0,
                csts: 0,
                kato: new.kato,
                aec: 0,
                io_queues: 0,
                max_io_queues: new.max_io_queues,
                last_keep_alive: now,
                aers: Vec::new(),
                queues: Vec::new(),
                torn_down: false,
                events: None,
                pending_aens: Vec::new(),
                changed_ns: Vec::new(),
                ns_notice_masked: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many DH-HMAC-CHAP transactions its queues passed: each queue's
    /// first, and every re-authentication (NVMe Base 2.0 section 8.13).
    pub fn authentications(&self) -> u64 {
        self.authentications.load(Ordering::Relaxed)
    }

    /// Counts one transaction a queue passed.
    pub(crate) fn note_authenticated(&self) {
        self.authentications.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether CSTS.RDY is set (I/O is accepted).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether the controller was torn down (its queues are closing).
    pub fn is_torn_down(&self) -> bool {
        self.state().torn_down
    }

    /// Closes every queue of this controller (keep-alive expiry, admin queue
    /// gone). Idempotent.
    pub fn shut_down(&self, why: &str) {
        let queues = {
            let mut s = self.state();
            if s.torn_down {
                return;
            }
            s.torn_down = true;
            std::mem::take(&mut s.queues)
        };
        self.ready.store(false, Ordering::Release);
        tracing::info!(cntlid = self.cntlid, subnqn = %self.subsystem.nqn, hostnqn = %shown(&self.hostnqn), "controller torn down: {why}");
        for (_, close) in queues {
            close();
        }
    }

    /// Its connected queues, by QID.
    pub fn queue_list(&self) -> Vec<QueueInfo> {
        let mut v: Vec<QueueInfo> = self.state().queues.iter().map(|(q, _)| *q).collect();
        v.sort_unstable_by_key(|q| q.qid);
        v
    }

    /// Records a connected queue and how to close it.
    pub fn add_queue(&self, info: QueueInfo, close: QueueCloser) {
        self.state().queues.push((info, close));
    }

    /// Forgets queue `qid` (it disconnected or closed; not closed from here).
    pub fn remove_queue(&self, qid: u16) {
        self.state().queues.retain(|(q, _)| q.qid != qid);
    }

    /// Whether I/O queue `qid` may connect: within the queues granted by
    /// Number of Queues (before that feature is set, what it would grant:
    /// the transport's limit) and not connected already.
    ///
    /// # Errors
    /// The highest QID allowed, when `qid` is beyond it or in use.
    pub fn admit_io_queue(&self, qid: u16) -> Result<(), u16> {
        let s = self.state();
        let max_qid = if s.io_queues == 0 { s.max_io_queues } else { s.io_queues };
        if qid > max_qid || s.queues.iter().any(|(q, _)| q.qid == qid) {
            return Err(max_qid);
        }
        Ok(())
    }

    /// CC now.
    pub fn cc(&self) -> u32 {
        self.state().cc
    }

    /// CSTS now.
    pub fn csts(&self) -> u32 {
        self.state().csts
    }

    /// Writes CC (checked with [`cc_valid`] by the caller). CC.EN 0 -> 1
    /// makes the controller ready at once and starts KATO from `now`; 1 -> 0
    /// resets it (I/O stops). A shutdown notification completes at once
    /// (SHST 10b): nothing is cached in memory.
    pub fn set_cc(&self, cc: u32, now: Instant) {
        let mut s = self.state();
        let (was_enabled, enable) = (s.cc & 1 != 0, cc & 1 != 0);
        s.cc = cc;
        if enable && !was_enabled {
            // CC.EN 0 -> 1: ready at once; KATO counts from here.
            s.csts |= 1;
            s.last_keep_alive = now;
            self.ready.store(true, Ordering::Release);
        } else if !enable && was_enabled {
            // CC.EN 1 -> 0: controller reset; I/O queues go away.
            s.csts &= !1;
            self.ready.store(false, Ordering::Release);
        }
        let shn = (cc >> 14) & 3;
        if shn != 0 {
            // Shutdown notification: nothing to flush in memory; report complete (SHST = 10b).
            s.csts = (s.csts & !(3 << 2)) | (2 << 2);
            self.ready.store(false, Ordering::Release);
        } else {
            s.csts &= !(3 << 2);
        }
    }

    /// Set Features Number of Queues with NSQR and NCQR (0's based): grants
    /// the larger, at most `max_io_qpairs_per_ctrlr`, and returns the count
    /// granted (0's based). `None` for FFFFh, which is invalid.
    pub fn set_number_of_queues(&self, nsqr: u16, ncqr: u16) -> Option<u16> {
        if nsqr == 0xFFFF || ncqr == 0xFFFF {
            return None;
        }
        let mut s = self.state();
        let granted = nsqr.max(ncqr).min(s.max_io_queues - 1);
        s.io_queues = granted + 1;
        Some(granted)
    }

    /// I/O queues allowed (granted, or before Number of Queues is set, what
    /// it would grant), 1's based.
    pub fn number_of_queues(&self) -> u16 {
        let s = self.state();
        if s.io_queues == 0 { s.max_io_queues } else { s.io_queues }
    }

    /// Asynchronous Event Configuration (CDW11 of its Set Features).
    pub fn aec(&self) -> u32 {
        self.state().aec
    }

    /// Sets the Asynchronous Event Configuration.
    pub fn set_aec(&self, aec: u32) {
        self.state().aec = aec;
    }

    /// Keep Alive Timeout now (zero: none).
    pub fn kato(&self) -> Duration {
        self.state().kato
    }

    /// Sets KATO (Set Features Keep Alive Timer); the timeout counts from `now`.
    pub fn set_kato(&self, kato: Duration, now: Instant) {
        let mut s = self.state();
        s.kato = kato;
        s.last_keep_alive = now;
    }

    /// A Keep Alive (or anything that counts as one) arrived at `now`.
    pub fn keep_alive(&self, now: Instant) {
        self.state().last_keep_alive = now;
    }

    /// Whether the keep-alive timeout has run out at `now`: `Some(KATO)` when
    /// more than KATO passed since the last Keep Alive. Until the host
    /// enables the controller (it may still be authenticating: an ffdhe8192
    /// exponentiation on a slow host takes longer than a 5 s KATO), the limit
    /// is at least [`NOT_ENABLED_GRACE`], so only a host that died is reaped;
    /// KATO proper runs from CC.EN, as on Linux's target.
    pub fn keep_alive_expired(&self, now: Instant) -> Option<Duration> {
        let s = self.state();
        let limit = if s.cc & 1 == 0 {
            s.kato.max(NOT_ENABLED_GRACE)
        } else {
            s.kato
        };
        let expired = !s.kato.is_zero() && now.saturating_duration_since(s.last_keep_alive) > limit;
        expired.then_some(s.kato)
    }

    /// Installs the sink that reaches the admin queue.
    pub fn set_event_sink(&self, sink: EventSink) {
        self.state().events = Some(sink);
    }

    /// An Asynchronous Event Request `cid` arrived: at most `limit` + 1 are
    /// held (AERL is 0's based).
    pub fn submit_aer(&self, cid: u16, limit: u8) -> AerOutcome {
        let mut s = self.state();
        if s.aers.len() > usize::from(limit) {
            AerOutcome::LimitExceeded
        } else if s.pending_aens.is_empty() {
            s.aers.push(cid);
            AerOutcome::Held
        } else {
            AerOutcome::Event(s.pending_aens.remove(0))
        }
    }

    /// Forgets an outstanding AER whose CID the host reused (it abandoned
    /// the AER; see `TargetQueue::on_capsule`), so an event never completes
    /// the new command in its place.
    pub fn forget_aer(&self, cid: u16) {
        self.state().aers.retain(|&held| held != cid);
    }

    /// An event `dw0` reached the admin queue: the CID of the oldest AER to
    /// complete with it, or `None` when none is outstanding (the event waits
    /// for the next AER) or the controller is torn down.
    pub fn take_aer_for(&self, dw0: u32) -> Option<u16> {
        let mut s = self.state();
        if s.torn_down {
            return None;
        }
        if s.aers.is_empty() {
            s.pending_aens.push(dw0);
            None
        } else {
            Some(s.aers.remove(0))
        }
    }

    /// Records that namespace `nsid` was added or removed and, when the host
    /// enabled Namespace Attribute Notices and none is unacknowledged, sends
    /// one (completing an outstanding AER, or the next one).
    pub fn namespace_changed(&self, nsid: u32) {
        let mut s = self.state();
        if s.torn_down || s.aec & aec::NAMESPACE_ATTRIBUTE == 0 {
            return;
        }
        if !s.changed_ns.contains(&nsid) {
            s.changed_ns.push(nsid);
        }
        if s.ns_notice_masked {
            return;
        }
        s.ns_notice_masked = true;
        let sink = s.events.clone();
        drop(s);
        if let Some(deliver) = sink
            && !deliver(AEN_NS_ATTRIBUTE_CHANGED)
        {
            tracing::warn!(cntlid = self.cntlid, "Namespace Attribute Changed notice not delivered");
        }
    }

    /// Log page 04h (Changed Namespace List) and, unless `retain` (RAE), the
    /// end of the notice's mask.
    pub fn changed_namespaces_log(&self, retain: bool) -> Vec<u8> {
        let mut s = self.state();
        let mut b = vec![0u8; CHANGED_NS_LOG_LEN];
        if s.changed_ns.len() > CHANGED_NS_MAX {
            b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        } else {
            let mut list = s.changed_ns.clone();
            list.sort_unstable();
            for (i, nsid) in list.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
            }
        }
        if !retain {
            s.changed_ns.clear();
            s.ns_notice_masked = false;
        }
        b
    }
}
