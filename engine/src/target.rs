//! The NVMe-oF target: its subsystems, controllers and listeners, and
//! starting it on a set of reactors.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use lull_proto::target_queue::{MAX_SQ_ENTRIES, TargetQueueConfig};
use lull_reactor::{PollerId, ReactorHandle, Reactors};
use lull_transport::conn::{HandlerFactory, Listener};

use crate::controller::{Controller, QueueBinding};
use crate::dhchap::DhchapOffer;
use crate::logpage::{self, ListenerEntry};
use crate::subsystem::{Subsystem, SubsystemKind};

/// Per-reactor I/O counters of a target, for status and metrics. Each slot
/// is written only by its own reactor (no contended line); the control plane
/// reads them. Reads and writes are counted when they complete successfully.
#[derive(Debug, Default)]
pub struct CoreIo {
    /// Read commands.
    pub reads: AtomicU64,
    /// Write commands.
    pub writes: AtomicU64,
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Queues connected (admin and I/O) on this reactor now.
    pub queues: AtomicU64,
    /// Admin queues connected on this reactor since start (SPDK's `admin_qpairs`).
    pub admin_qpairs: AtomicU64,
    /// I/O queues connected on this reactor since start (SPDK's `io_qpairs`).
    pub io_qpairs: AtomicU64,
    /// Admin queues connected on this reactor now.
    pub current_admin_qpairs: AtomicU64,
    /// I/O queues connected on this reactor now.
    pub current_io_qpairs: AtomicU64,
    /// I/O commands answered on this reactor's I/O queues, whatever their
    /// status; SPDK's `completed_nvme_io`.
    pub io_commands: AtomicU64,
}

/// Adds `n` to a counter that only the calling thread writes: a load and a
/// store instead of a locked read-modify-write (a reader on another thread
/// sees the old or the new value, never a torn one).
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl CoreIo {
    // The I/O counters are bumped by the owning reactor only (one writer).

    pub(crate) fn command(&self) {
        bump(&self.io_commands, 1);
    }

    pub(crate) fn read(&self, bytes: usize) {
        bump(&self.reads, 1);
        bump(&self.bytes_read, bytes as u64);
    }

    pub(crate) fn wrote(&self, bytes: usize) {
        bump(&self.writes, 1);
        bump(&self.bytes_written, bytes as u64);
    }

    /// A queue connected on this reactor (`admin`: queue 0).
    pub(crate) fn queue_connected(&self, admin: bool) {
        self.queues.fetch_add(1, Ordering::Relaxed);
        let (total, now) = if admin {
            (&self.admin_qpairs, &self.current_admin_qpairs)
        } else {
            (&self.io_qpairs, &self.current_io_qpairs)
        };
        total.fetch_add(1, Ordering::Relaxed);
        now.fetch_add(1, Ordering::Relaxed);
    }

    /// A queue counted by [`CoreIo::queue_connected`] closed.
    pub(crate) fn queue_closed(&self, admin: bool) {
        self.queues.fetch_sub(1, Ordering::Relaxed);
        let now = if admin {
            &self.current_admin_qpairs
        } else {
            &self.current_io_qpairs
        };
        now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reactor slots with their own counters; reactors beyond share slots modulo.
pub const CORE_IO_SLOTS: usize = 256;

/// Highest CNTLID of the dynamic controller model (NVMe-oF 1.1: FFEFh).
const MAX_CNTLID: u16 = 0xFFEF;

/// Target-wide settings beyond the transport's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSettings {
    /// `kato_min_ms`: a host's non-zero KATO below this is raised to it, ms.
    pub kato_min_ms: u32,
    /// `kato_max_ms`: a Connect asking for a longer KATO is refused
    /// (Connect Invalid Parameters pointing at KATO), ms.
    pub kato_max_ms: u32,
}

impl Default for TargetSettings {
    fn default() -> Self {
        TargetSettings {
            kato_min_ms: 1000,
            kato_max_ms: 3_600_000,
        }
    }
}

struct ListenerSlot {
    entry: ListenerEntry,
    reactor: ReactorHandle,
    poller: PollerId,
    /// Bound by `listen` itself: a target-wide port that reaches every subsystem.
    pinned: bool,
    /// Held for the discovery subsystem (`nvmf_subsystem_add_listener discovery`).
    discovery: bool,
}

struct Registry {
    subsystems: Vec<Arc<Subsystem>>,
    controllers: HashMap<u16, Arc<Controller>>,
    next_cntlid: u16,
    listeners: Vec<ListenerSlot>,
    next_portid: u16,
    genctr: u64,
}

/// An NVMe-oF target (one per process): subsystems, controllers, listeners.
/// Every method may be called from any thread while the target serves.
pub struct Target {
    queue_config: Mutex<TargetQueueConfig>,
    settings: TargetSettings,
    registry: Mutex<Registry>,
    core_io: Box<[CachePadded<CoreIo>]>,
    quiescing: AtomicBool,
    /// Most I/O queues per controller (`max_io_qpairs_per_ctrlr`).
    max_io_queues: AtomicU16,
    /// Most entries of an I/O queue (`max_queue_depth`).
    max_queue_depth: AtomicU32,
    /// Most entries of an admin queue (`max_aq_depth`).
    max_aq_depth: AtomicU32,
    /// DH-HMAC-CHAP hashes and groups allowed (`nvmf_set_config`).
    dhchap: Mutex<DhchapOffer>,
}

impl Target {
    /// An empty target (only the discovery subsystem) with these transport settings.
    pub fn new(queue_config: TargetQueueConfig) -> Arc<Target> {
        Self::with_settings(queue_config, TargetSettings::default())
    }

    /// An empty target with these transport and target settings.
    pub fn with_settings(queue_config: TargetQueueConfig, settings: TargetSettings) -> Arc<Target> {
        Arc::new(Target {
            queue_config: Mutex::new(queue_config),
            settings,
            registry: Mutex::new(Registry {
                subsystems: vec![Arc::new(Subsystem::discovery())],
                controllers: HashMap::new(),
                next_cntlid: 1,
                listeners: Vec::new(),
                next_portid: 1,
                genctr: 1,
            }),
            core_io: (0..CORE_IO_SLOTS)
                .map(|_| CachePadded::new(CoreIo::default()))
                .collect(),
            quiescing: AtomicBool::new(false),
            max_io_queues: AtomicU16::new(crate::controller::DEFAULT_IO_QUEUES),
            max_queue_depth: AtomicU32::new(MAX_SQ_ENTRIES),
            max_aq_depth: AtomicU32::new(MAX_SQ_ENTRIES),
            dhchap: Mutex::new(DhchapOffer::default()),
        })
    }

    /// The DH-HMAC-CHAP hashes and groups controllers allow.
    pub fn dhchap_allowed(&self) -> DhchapOffer {
        self.dhchap.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the DH-HMAC-CHAP hashes and groups controllers allow
    /// (`nvmf_set_config dhchap_digests / dhchap_dhgroups`), for every
    /// transaction started from now on.
    pub fn set_dhchap_allowed(&self, allowed: DhchapOffer) {
        *self.dhchap.lock().unwrap_or_else(|p| p.into_inner()) = allowed;
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport settings every new queue gets.
    pub fn queue_config(&self) -> TargetQueueConfig {
        self.queue_config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the transport settings (`nvmf_create_transport`); only
    /// before the first port is bound, so every queue runs the same settings.
    ///
    /// # Errors
    /// A message when a port is already served.
    pub fn set_queue_config(&self, config: TargetQueueConfig) -> Result<(), String> {
        let r = self.registry();
        if !r.listeners.is_empty() {
            return Err("the transport settings cannot change while the target listens".to_string());
        }
        *self.queue_config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// Most I/O queues a controller may have (SPDK's transport option
    /// `max_io_qpairs_per_ctrlr`): the Number of Queues feature grants at
    /// most this many, and a Connect of a higher QID is refused.
    pub fn max_io_queues(&self) -> u16 {
        self.max_io_queues.load(Ordering::Relaxed)
    }

    /// Sets [`Target::max_io_queues`] (1 to [`crate::controller::MAX_IO_QUEUES`];
    /// clamped). Controllers made before keep what they granted.
    pub fn set_max_io_queues(&self, n: u16) {
        let n = n.clamp(1, crate::controller::MAX_IO_QUEUES);
        self.max_io_queues.store(n, Ordering::Relaxed);
    }

    /// Most entries of an I/O queue (`max_queue_depth`; CAP.MQES + 1, MAXCMD)
    /// and of an admin queue (`max_aq_depth`); a Connect asking for a
    /// larger SQSIZE is refused. lull's default is the most it allows,
    /// 1024 (SPDK's is 128 for both).
    pub fn queue_depths(&self) -> (u32, u32) {
        (
            self.max_queue_depth.load(Ordering::Relaxed),
            self.max_aq_depth.load(Ordering::Relaxed),
        )
    }

    /// Sets [`Target::queue_depths`] (each clamped to 2..=1024, the admin
    /// queue's to 32..=1024). Controllers connected before keep theirs.
    pub fn set_queue_depths(&self, io: u32, admin: u32) {
        self.max_queue_depth
            .store(io.clamp(2, MAX_SQ_ENTRIES), Ordering::Relaxed);
        self.max_aq_depth
            .store(admin.clamp(32, MAX_SQ_ENTRIES), Ordering::Relaxed);
    }

    /// The counters of the reactor with this index (in its `Reactors` set).
    pub fn core_io(&self, reactor_index: usize) -> &CoreIo {
        &self.core_io[reactor_index % CORE_IO_SLOTS]
    }

    /// Stops executing new I/O commands: they are held unanswered (as SPDK
    /// does for a paused subsystem) until their connections close, so the
    /// commands already running can finish before shutdown. Not undone.
    pub fn quiesce(&self) {
        self.quiescing.store(true, Ordering::Release);
    }

    /// Whether [`Target::quiesce`] was called.
    pub fn is_quiescing(&self) -> bool {
        self.quiescing.load(Ordering::Relaxed)
    }

    /// Closes every controller's queues (the end of a graceful shutdown).
    pub fn disconnect_all(&self) {
        for c in self.controllers() {
            c.shut_down("target shutting down");
        }
    }

    /// The target-wide settings.
    pub fn settings(&self) -> &TargetSettings {
        &self.settings
    }

    /// The KATO a controller runs with when its host asks for `asked` ms:
    /// 0 stays 0 (no keep-alive), a shorter one is raised to `kato_min_ms`.
    ///
    /// # Errors
    /// `asked` above `kato_max_ms`.
    pub(crate) fn kato_for(&self, asked: u32) -> Result<Duration, ()> {
        if asked > self.settings.kato_max_ms {
            return Err(());
        }
        let ms = if asked == 0 {
            0
        } else {
            asked.max(self.settings.kato_min_ms)
        };
        Ok(Duration::from_millis(u64::from(ms)))
    }

    /// Adds a subsystem.
    ///
    /// # Errors
    /// A message when its NQN is taken.
    pub fn add_subsystem(&self, s: Subsystem) -> Result<Arc<Subsystem>, String> {
        let mut r = self.registry();
        if r.subsystems.iter().any(|x| x.nqn == s.nqn) {
            return Err(format!("subsystem {} already exists", s.nqn));
        }
        let s = Arc::new(s);
        r.subsystems.push(s.clone());
        r.genctr += 1;
        Ok(s)
    }

    /// Removes an NVM subsystem: its controllers are torn down (their
    /// connections closed) and listeners no other subsystem uses stop.
    ///
    /// # Errors
    /// A message when there is no such subsystem or it is the discovery subsystem.
    pub fn remove_subsystem(&self, nqn: &str) -> Result<(), String> {
        let (gone, ctrls) = {
            let mut r = self.registry();
            let Some(i) = r.subsystems.iter().position(|s| s.nqn == nqn) else {
                return Err(format!("subsystem {nqn} does not exist"));
            };
            if r.subsystems[i].kind == SubsystemKind::Discovery {
                return Err("the discovery subsystem cannot be deleted".to_string());
            }
            let gone = r.subsystems.remove(i);
            r.genctr += 1;
            let ctrls: Vec<Arc<Controller>> = r
                .controllers
                .values()
                .filter(|c| Arc::ptr_eq(&c.subsystem, &gone))
                .cloned()
                .collect();
            (gone, ctrls)
        };
        for c in ctrls {
            c.shut_down("subsystem deleted");
        }
        let addrs = std::mem::take(&mut gone.access().listeners);
        for a in addrs {
            self.release_listener(a);
        }
        Ok(())
    }

    /// The subsystem with this NQN (the discovery subsystem included).
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.registry().subsystems.iter().find(|s| s.nqn == nqn).cloned()
    }

    /// Every subsystem, the discovery subsystem first.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.registry().subsystems.clone()
    }

    pub(crate) fn new_controller(
        &self,
        subsystem: Arc<Subsystem>,
        make: impl FnOnce(u16, Arc<Subsystem>) -> Controller,
    ) -> Option<Arc<Controller>> {
        let mut r = self.registry();
        // A subsystem deleted between the lookup and now takes no new controller.
        if !r.subsystems.iter().any(|s| Arc::ptr_eq(s, &subsystem)) {
            return None;
        }
        // Next free CNTLID, wrapping within 1..=FFEFh.
        let start = r.next_cntlid;
        let mut id = start;
        while r.controllers.contains_key(&id) {
            id = if id >= MAX_CNTLID { 1 } else { id + 1 };
            if id == start {
                return None;
            }
        }
        r.next_cntlid = if id >= MAX_CNTLID { 1 } else { id + 1 };
        let ctrl = Arc::new(make(id, subsystem));
        r.controllers.insert(id, ctrl.clone());
        Some(ctrl)
    }

    /// The live controller with this CNTLID.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.registry().controllers.get(&cntlid).cloned()
    }

    /// Every live controller.
    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        self.registry().controllers.values().cloned().collect()
    }

    /// Number of live controllers.
    pub fn controller_count(&self) -> usize {
        self.registry().controllers.len()
    }

    pub(crate) fn remove_controller(&self, cntlid: u16) {
        self.registry().controllers.remove(&cntlid);
    }

    /// The discovery log page for `hostnqn`.
    ///
    /// A port bound to a wildcard address (0.0.0.0, ::) is listed with the
    /// address `arrived_on` (the one this host reached), as the Linux target
    /// does, so a host can connect to what it reads.
    pub fn discovery_log(&self, hostnqn: &str, arrived_on: SocketAddr) -> Vec<u8> {
        let r = self.registry();
        let entries: Vec<(&Subsystem, Vec<ListenerEntry>)> = r
            .subsystems
            .iter()
            .map(|s| {
                let own = s.access().listeners.clone();
                let ports = r
                    .listeners
                    .iter()
                    .filter(|l| s.kind == SubsystemKind::Discovery || l.pinned || own.contains(&l.entry.addr))
                    .map(|l| {
                        let mut e = l.entry.clone();
                        if e.addr.ip().is_unspecified() && e.addr.is_ipv4() == arrived_on.is_ipv4() {
                            e.addr.set_ip(arrived_on.ip());
                        }
                        e
                    })
                    .collect();
                (s.as_ref(), ports)
            })
            .collect();
        logpage::discovery(r.genctr, &entries, hostnqn)
    }

    /// Whether a connection accepted on `listener` may reach `s`: the
    /// discovery subsystem through every port, an NVM subsystem through its
    /// own listeners and the target-wide ones.
    pub fn reachable(&self, s: &Subsystem, listener: SocketAddr) -> bool {
        s.kind == SubsystemKind::Discovery
            || s.access().listeners.contains(&listener)
            || self
                .registry()
                .listeners
                .iter()
                .any(|l| l.pinned && l.entry.addr == listener)
    }

    /// The discovery subsystem's own listeners, as SPDK lists a subsystem's
    /// (`nvmf_get_subsystems`, `nvmf_subsystem_get_listeners`): the ports
    /// added to it (`nvmf_subsystem_add_listener discovery`) and the
    /// target-wide ones. A port that only an NVM subsystem listens on is not
    /// one, though discovery is answered there too (as SPDK answers it).
    pub fn discovery_listeners(&self) -> Vec<SocketAddr> {
        self.registry()
            .listeners
            .iter()
            .filter(|l| l.pinned || l.discovery)
            .map(|l| l.entry.addr)
            .collect()
    }

    /// The addresses served now.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        self.registry().listeners.iter().map(|l| l.entry.addr).collect()
    }

    /// Binds `addr` and serves it from the first reactor of `reactors`;
    /// connections are spread over all of them, round robin. A target-wide
    /// port: it stays until [`Target::stop_listening`], whatever subsystems
    /// come and go. Serving an address already served returns it.
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound or served.
    pub fn listen(self: &Arc<Self>, reactors: &Reactors, addr: SocketAddr) -> Result<SocketAddr, String> {
        self.bind(reactors.handles(), addr, Hold::All)
    }

    fn bind(self: &Arc<Self>, handles: &[ReactorHandle], addr: SocketAddr, hold: Hold) -> Result<SocketAddr, String> {
        let mark = |l: &mut ListenerSlot| match hold {
            Hold::All => l.pinned = true,
            Hold::Discovery => l.discovery = true,
            Hold::Subsystem => {}
        };
        {
            let mut r = self.registry();
            if let Some(l) = r.listeners.iter_mut().find(|l| l.entry.addr == addr) {
                mark(l);
                return Ok(addr);
            }
        }
        let first = handles.first().ok_or("no reactor to listen on")?.clone();
        let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| format!("{addr}: {e}"))?;
        let target = self.clone();
        let config = self.queue_config();
        let in_capsule = config.io_in_capsule_data;
        let factory: HandlerFactory<QueueBinding> = Arc::new(move |_cx, peer, arrived_on| {
            QueueBinding::new(target.clone(), peer, local, arrived_on, in_capsule)
        });
        let (tx, rx) = std::sync::mpsc::channel();
        first
            .try_send(move |cx| {
                let _ = tx.send(Listener::register(cx, listener, config, factory));
            })
            .map_err(|e| format!("{addr}: {e}"))?;
        let poller = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("{addr}: the reactor did not answer"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut r = self.registry();
        let portid = r.next_portid;
        r.next_portid = r.next_portid.wrapping_add(1).max(1);
        let mut slot = ListenerSlot {
            entry: ListenerEntry { addr: local, portid },
            reactor: first,
            poller,
            pinned: false,
            discovery: false,
        };
        mark(&mut slot);
        r.listeners.push(slot);
        r.genctr += 1;
        tracing::info!(%local, "listening (NVMe/TCP and discovery)");
        Ok(local)
    }

    /// Makes `nqn` reachable through `addr` (`nvmf_subsystem_add_listener`),
    /// binding it if no subsystem uses it yet. Port 0 binds a free port; the
    /// bound address is returned and recorded.
    ///
    /// # Errors
    /// A message when there is no such subsystem, it already listens there,
    /// or the address cannot be bound.
    pub fn add_subsystem_listener(
        self: &Arc<Self>,
        handles: &[ReactorHandle],
        nqn: &str,
        addr: SocketAddr,
    ) -> Result<SocketAddr, String> {
        let s = self
            .subsystem(nqn)
            .ok_or_else(|| format!("subsystem {nqn} does not exist"))?;
        if s.kind == SubsystemKind::Discovery {
            return self.bind(handles, addr, Hold::Discovery);
        }
        if s.access().listeners.contains(&addr) {
            return Err(format!("subsystem {nqn} already listens on {addr}"));
        }
        let local = self.bind(handles, addr, Hold::Subsystem)?;
        let mut a = s.access();
        if !a.listeners.contains(&local) {
            a.listeners.push(local);
        }
        drop(a);
        // Deleted meanwhile? remove_subsystem unregisters before it takes the
        // listeners, so a subsystem still registered now gets this one released
        // by its deletion; one already gone would leak the port.
        let registered = self.registry().subsystems.iter().any(|x| Arc::ptr_eq(x, &s));
        if !registered {
            s.access().listeners.retain(|l| *l != local);
            self.release_listener(local);
            return Err(format!("subsystem {nqn} was deleted"));
        }
        self.registry().genctr += 1;
        Ok(local)
    }

    /// Stops `nqn` being reachable through `addr`: the controllers that came
    /// through it are torn down, and the port closes when nothing else uses it.
    ///
    /// # Errors
    /// A message when there is no such subsystem or listener.
    pub fn remove_subsystem_listener(&self, nqn: &str, addr: SocketAddr) -> Result<(), String> {
        let s = self
            .subsystem(nqn)
            .ok_or_else(|| format!("subsystem {nqn} does not exist"))?;
        if s.kind == SubsystemKind::Discovery {
            let found = {
                let mut r = self.registry();
                match r.listeners.iter_mut().find(|l| l.entry.addr == addr && l.discovery) {
                    Some(l) => {
                        l.discovery = false;
                        true
                    }
                    None => false,
                }
            };
            if !found {
                return Err(format!("the discovery subsystem has no listener {addr}"));
            }
            self.release_listener(addr);
            return Ok(());
        }
        {
            let mut a = s.access();
            let before = a.listeners.len();
            a.listeners.retain(|l| *l != addr);
            if a.listeners.len() == before {
                return Err(format!("subsystem {nqn} has no listener {addr}"));
            }
        }
        for c in self.controllers() {
            if Arc::ptr_eq(&c.subsystem, &s) && c.listener == addr {
                c.shut_down("listener removed");
            }
        }
        self.release_listener(addr);
        self.registry().genctr += 1;
        Ok(())
    }

    /// Closes the port `addr` if neither `listen` nor a subsystem holds it.
    fn release_listener(&self, addr: SocketAddr) {
        let slot = {
            let mut r = self.registry();
            let used = r.subsystems.iter().any(|s| s.access().listeners.contains(&addr));
            match r.listeners.iter().position(|l| l.entry.addr == addr) {
                Some(i) if !used && !r.listeners[i].pinned && !r.listeners[i].discovery => Some(r.listeners.remove(i)),
                _ => None,
            }
        };
        if let Some(l) = slot {
            close_listener(l);
        }
    }

    /// Stops accepting connections on every port (connections made stay).
    pub fn stop_listening(&self) {
        let slots = std::mem::take(&mut self.registry().listeners);
        for l in slots {
            close_listener(l);
        }
    }
}

/// Who holds a port.
#[derive(Clone, Copy)]
enum Hold {
    All,
    Discovery,
    Subsystem,
}

fn close_listener(l: ListenerSlot) {
    let (id, addr) = (l.poller, l.entry.addr);
    let (tx, rx) = std::sync::mpsc::channel();
    if l.reactor
        .try_send(move |cx| {
            let _ = cx.unregister(id);
            let _ = tx.send(());
        })
        .is_ok()
    {
        // Wait (bounded) so the port is free when this returns.
        let _ = rx.recv_timeout(Duration::from_secs(5));
    }
    tracing::info!(%addr, "stopped listening");
}
