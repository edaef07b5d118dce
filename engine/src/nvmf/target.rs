//! The NVMe-oF target's registry (one per process): its subsystems, the
//! controllers hosts made (CNTLID), the ports it serves and which
//! subsystems each reaches, the discovery generation counter (GENCTR), and
//! target-wide settings. Plain data behind a mutex: binding ports on
//! reactors is [`crate::nvmf::listeners`]'s job, which records each port
//! here with a way to close it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use lull_proto::target_queue::{MAX_SQ_ENTRIES, TargetQueueConfig};
use lull_proto::tls_psk::TlsPsk;

use crate::dhchap::DhchapOffer;
use crate::nvmf::ctrlr::Controller;
use crate::nvmf::stats::{CORE_IO_SLOTS, CoreIo};
use crate::nvmf::subsystem::{Subsystem, SubsystemKind};

/// Highest CNTLID of the dynamic controller model (NVMe-oF 1.1: FFEFh).
const MAX_CNTLID: u16 = 0xFFEF;

/// Most I/O queues `max_io_qpairs_per_ctrlr` may allow.
pub const MAX_IO_QUEUES: u16 = 1024;
/// I/O queues a controller may have unless the transport says otherwise:
/// SPDK's default `max_io_qpairs_per_ctrlr`, 127 (128 queue pairs with the
/// admin queue).
pub const DEFAULT_IO_QUEUES: u16 = 127;

/// Target-wide settings beyond the transport's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSettings {
    /// `kato_min_ms`: a host's non-zero KATO below this is raised to it, ms.
    pub kato_min_ms: u32,
    /// `kato_max_ms`: a Connect asking for a longer KATO is refused
    /// (Connect Invalid Parameters pointing at KATO), ms.
    pub kato_max_ms: u32,
    /// The shortest DH-HMAC-CHAP step timeout, whatever the KATO
    /// ([`crate::nvmf::auth_timeout::auth_timeout`]), ms.
    pub auth_timeout_min_ms: u32,
}

impl Default for TargetSettings {
    fn default() -> Self {
        TargetSettings {
            kato_min_ms: 1000,
            kato_max_ms: 3_600_000,
            auth_timeout_min_ms: crate::nvmf::auth_timeout::AUTH_TIMEOUT_MIN.as_millis() as u32,
        }
    }
}

/// A port as the discovery log page describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerEntry {
    /// Address and port.
    pub addr: SocketAddr,
    /// PORTID (stable per listener).
    pub portid: u16,
    /// SPDK's `secure_channel`: TLS 1.3 required on this port (the
    /// discovery log entry's TREQ and TSAS say so).
    pub secure_channel: bool,
}

/// A subsystem and the ports that reach it.
pub type SubsystemPorts = (Arc<Subsystem>, Vec<ListenerEntry>);

/// Stops serving a port: unregisters its listener from its reactor and
/// waits (bounded) until the address is free.
pub type PortCloser = Box<dyn FnOnce() + Send>;

/// Who holds a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// `listen`: a target-wide port that reaches every subsystem.
    All,
    /// The discovery subsystem (`nvmf_subsystem_add_listener discovery`).
    Discovery,
    /// An NVM subsystem (recorded in its own listener list).
    Subsystem,
}

struct Port {
    entry: ListenerEntry,
    close: PortCloser,
    /// Bound by `listen` itself: a target-wide port that reaches every subsystem.
    pinned: bool,
    /// Held for the discovery subsystem (`nvmf_subsystem_add_listener discovery`).
    discovery: bool,
}

impl Port {
    fn hold(&mut self, hold: Hold) {
        match hold {
            Hold::All => self.pinned = true,
            Hold::Discovery => self.discovery = true,
            Hold::Subsystem => {}
        }
    }
}

struct Registry {
    subsystems: Vec<Arc<Subsystem>>,
    controllers: HashMap<u16, Arc<Controller>>,
    next_cntlid: u16,
    listeners: Vec<Port>,
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
            max_io_queues: AtomicU16::new(DEFAULT_IO_QUEUES),
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

    /// Sets [`Target::max_io_queues`] (1 to [`MAX_IO_QUEUES`]; clamped).
    /// Controllers made before keep what they granted.
    pub fn set_max_io_queues(&self, n: u16) {
        let n = n.clamp(1, MAX_IO_QUEUES);
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

    /// GENCTR and, for every subsystem, the ports that reach it: every port
    /// for the discovery subsystem, for an NVM subsystem its own listeners
    /// and the target-wide ports (the discovery log page's input, read under
    /// one lock so the two agree).
    pub fn ports_by_subsystem(&self) -> (u64, Vec<SubsystemPorts>) {
        let r = self.registry();
        let reach = r
            .subsystems
            .iter()
            .map(|s| {
                let own = s.access().listeners.clone();
                let ports = r
                    .listeners
                    .iter()
                    .filter(|l| s.kind == SubsystemKind::Discovery || l.pinned || own.contains(&l.entry.addr))
                    .map(|l| l.entry.clone())
                    .collect();
                (s.clone(), ports)
            })
            .collect();
        (r.genctr, reach)
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

    /// Marks the port already served at `addr` as held by `hold`; false
    /// when no port is served there.
    ///
    /// # Errors
    /// The port is served with the other `secure_channel` setting: a port
    /// requires TLS or takes both, for every subsystem it reaches.
    pub(crate) fn hold_port(&self, addr: SocketAddr, hold: Hold, secure_channel: bool) -> Result<bool, String> {
        match self.registry().listeners.iter_mut().find(|l| l.entry.addr == addr) {
            Some(l) if l.entry.secure_channel != secure_channel => Err(format!(
                "{addr} is already served {}; a port requires TLS (secure_channel) or takes both, not each for different subsystems",
                if l.entry.secure_channel {
                    "with secure_channel (TLS)"
                } else {
                    "without secure_channel (plain TCP)"
                }
            )),
            Some(l) => {
                l.hold(hold);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether the port `listener` requires TLS (`secure_channel`).
    pub fn is_secure_port(&self, listener: SocketAddr) -> bool {
        self.registry()
            .listeners
            .iter()
            .any(|l| l.entry.addr == listener && l.entry.secure_channel)
    }

    /// The TLS PSK of the ClientHello identity `identity`, among the hosts
    /// of the subsystems reachable through `listener`.
    pub fn find_tls_psk(&self, listener: SocketAddr, identity: &[u8]) -> Option<TlsPsk> {
        self.subsystems()
            .iter()
            .filter(|s| s.kind == SubsystemKind::Nvm && self.reachable(s, listener))
            .find_map(|s| s.find_tls_psk(identity))
    }

    /// Records a port just bound at `local` (with the next PORTID), held by
    /// `hold`; `close` stops serving it.
    pub(crate) fn add_port(&self, local: SocketAddr, hold: Hold, secure_channel: bool, close: PortCloser) {
        let mut r = self.registry();
        let portid = r.next_portid;
        r.next_portid = r.next_portid.wrapping_add(1).max(1);
        let mut port = Port {
            entry: ListenerEntry {
                addr: local,
                portid,
                secure_channel,
            },
            close,
            pinned: false,
            discovery: false,
        };
        port.hold(hold);
        r.listeners.push(port);
        r.genctr += 1;
    }

    /// Whether `s` is still registered (not deleted meanwhile).
    pub(crate) fn is_registered(&self, s: &Arc<Subsystem>) -> bool {
        self.registry().subsystems.iter().any(|x| Arc::ptr_eq(x, s))
    }

    /// A change the discovery log page shows: GENCTR advances.
    pub(crate) fn bump_genctr(&self) {
        self.registry().genctr += 1;
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
    pub(crate) fn release_listener(&self, addr: SocketAddr) {
        let slot = {
            let mut r = self.registry();
            let used = r.subsystems.iter().any(|s| s.access().listeners.contains(&addr));
            match r.listeners.iter().position(|l| l.entry.addr == addr) {
                Some(i) if !used && !r.listeners[i].pinned && !r.listeners[i].discovery => Some(r.listeners.remove(i)),
                _ => None,
            }
        };
        if let Some(l) = slot {
            (l.close)();
        }
    }

    /// Stops accepting connections on every port (connections made stay).
    pub fn stop_listening(&self) {
        let slots = std::mem::take(&mut self.registry().listeners);
        for l in slots {
            (l.close)();
        }
    }
}
