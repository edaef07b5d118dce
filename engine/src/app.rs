//! The running daemon: reactors, supervisor, the target, named bdevs and
//! attached NVMe controllers, with every operation the control plane (JSON-RPC,
//! configuration) performs on them.
//!
//! Control-plane calls run on the caller's thread (an RPC connection thread,
//! the main thread at start-up), never on a reactor: blocking work such as
//! attaching a remote controller does not stall I/O. What must happen on a
//! reactor is sent to it as a message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lull_proto::target_queue::TargetQueueConfig;
use lull_reactor::supervisor::{self, SupervisorConfig, SupervisorHandle};
use lull_reactor::{CoreList, Mode, ReactorConfig, ReactorHandle, Reactors, StatsSnapshot};

use crate::bdev::{Bdev, FileBdev, NullBdev, RamBdev};
use crate::config::{BdevKind, BdevSpec, Settings, SubsystemSpec};
use crate::keyring::{Keyring, KeyringError};
use crate::nvme::{DhchapOffer, NvmeBdev, NvmeController, NvmeOptions, NvmeTrid};
use crate::nvmf::subsystem::{KeyNames, Subsystem};
use crate::nvmf::target::Target;

/// Why a control-plane operation failed; each maps to the JSON-RPC error SPDK returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// A parameter is missing, malformed or out of range.
    #[error("{0}")]
    InvalidParams(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The named object already exists.
    #[error("{0}")]
    Exists(String),
    /// The operation is not allowed in the current state.
    #[error("{0}")]
    NotPermitted(String),
    /// Not enough memory for it.
    #[error("{0}")]
    NoMemory(String),
    /// It failed while being carried out.
    #[error("{0}")]
    Failed(String),
}

/// What backs a bdev (SPDK's `product_name` and driver).
#[derive(Clone)]
pub enum Driver {
    /// RAM.
    Malloc,
    /// Null.
    Null,
    /// A file or block device on io_uring.
    Uring {
        /// Its path.
        filename: std::path::PathBuf,
    },
    /// A namespace of an attached NVMe controller.
    Nvme {
        /// The controller's name.
        ctrlr: String,
        /// NSID on the remote controller.
        nsid: u32,
    },
}

/// A named bdev.
#[derive(Clone)]
pub struct BdevEntry {
    /// The bdev.
    pub bdev: Arc<dyn Bdev>,
    /// What backs it.
    pub driver: Driver,
    /// Its I/O statistics (`bdev_get_iostat`), shared by its namespaces.
    pub stats: Arc<crate::bdev::BdevStats>,
}

/// An attached NVMe controller and the bdevs made of its namespaces.
pub struct NvmeEntry {
    /// The controller.
    pub ctrlr: NvmeController,
    /// Its bdevs (`<name>n<nsid>`).
    pub bdevs: Vec<String>,
}

/// The NVMe/TCP transport as `nvmf_get_transports` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportInfo {
    /// Created (explicitly, or implicitly by start-up settings).
    pub created: bool,
    /// The settings.
    pub config: TargetQueueConfig,
}

/// Per-reactor status: the reactor's counters and the target's I/O counters.
#[derive(Clone, Debug)]
pub struct ReactorStatus {
    /// Index in the reactor set.
    pub index: usize,
    /// CPU.
    pub core: usize,
    /// Mode now.
    pub mode: Mode,
    /// Reactor counters.
    pub stats: StatsSnapshot,
    /// Queues connected to it (target side).
    pub queues: u64,
    /// Read commands so far.
    pub reads: u64,
    /// Write commands so far.
    pub writes: u64,
    /// Bytes read so far.
    pub bytes_read: u64,
    /// Bytes written so far.
    pub bytes_written: u64,
}

/// The daemon.
pub struct App {
    /// Itself, for callbacks that outlive a call (namespace changes of remote controllers).
    me: std::sync::Weak<App>,
    reactors: Mutex<Option<Reactors>>,
    handles: Vec<ReactorHandle>,
    cores: CoreList,
    supervisor: SupervisorHandle,
    /// The supervisor settings last set: the supervisor's reactor applies a
    /// change later, and a read-modify-write must build on the latest one.
    supervisor_config: Mutex<SupervisorConfig>,
    target: Arc<Target>,
    transport_created: Mutex<bool>,
    nvme_options: Mutex<NvmeOptions>,
    bdevs: Mutex<BTreeMap<String, BdevEntry>>,
    /// The UUIDs of the bdevs `create_bdev` made (malloc, null, uring), with
    /// their names; locked after `bdevs`. A remote namespace's bdev carries
    /// the remote's identity and is not listed: two controllers to one
    /// subsystem show the same namespace, rightly with one identity.
    uuids: Mutex<BTreeMap<[u8; 16], String>>,
    nvme: Mutex<BTreeMap<String, NvmeEntry>>,
    /// Named secrets (`keyring_file_add_key`).
    keyring: Keyring,
    /// What the initiator offers in DH-HMAC-CHAP (`bdev_nvme_set_options`).
    dhchap_offer: Mutex<DhchapOffer>,
    started: Instant,
}

/// MemAvailable from /proc/meminfo, bytes (`None` where it cannot be read).
/// What a RAM bdev, or `lull perf --verify`'s per-block state, may take.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a graceful shutdown waits for running I/O commands.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

impl App {
    /// Starts reactors and supervisor, then builds the bdevs, subsystems and
    /// listeners `settings` name. On any error what was started is stopped.
    ///
    /// # Errors
    /// A message naming the setting or object that failed.
    pub fn start(settings: &Settings) -> Result<Arc<App>, String> {
        let cores = match &settings.cores {
            Some(c) => c.clone(),
            None => CoreList::usable().map_err(|e| format!("cores: {e}"))?,
        };
        let start_mode = settings.supervisor.policy.fixed_mode().unwrap_or(Mode::Interrupt);
        let config = ReactorConfig::new(cores.clone())
            .mode(start_mode)
            .idle_poll(settings.idle_poll);
        let reactors = Reactors::start(config).map_err(|e| format!("cores: {e}"))?;
        let supervisor = match supervisor::start(&reactors, settings.supervisor.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = reactors.shutdown();
                return Err(format!("supervisor: {e}"));
            }
        };
        let handles = reactors.handles().to_vec();
        let app = Arc::new_cyclic(|me| App {
            me: me.clone(),
            reactors: Mutex::new(Some(reactors)),
            handles,
            cores,
            supervisor,
            supervisor_config: Mutex::new(settings.supervisor.clone()),
            target: Target::with_settings(settings.transport.clone(), settings.target.clone()),
            transport_created: Mutex::new(false),
            nvme_options: Mutex::new(settings.nvme.clone()),
            bdevs: Mutex::new(BTreeMap::new()),
            uuids: Mutex::new(BTreeMap::new()),
            nvme: Mutex::new(BTreeMap::new()),
            keyring: Keyring::default(),
            dhchap_offer: Mutex::new(DhchapOffer::default()),
            started: Instant::now(),
        });
        if let Err(e) = app.build(settings) {
            app.shutdown();
            return Err(e);
        }
        Ok(app)
    }

    fn build(&self, settings: &Settings) -> Result<(), String> {
        let storage = !settings.listen.is_empty() || !settings.subsystems.is_empty();
        if storage {
            *lock(&self.transport_created) = true;
        }
        for b in &settings.bdevs {
            self.create_bdev(b).map_err(|e| format!("bdev {}: {e}", b.name))?;
        }
        for s in &settings.subsystems {
            self.create_subsystem_from(s)
                .map_err(|e| format!("subsystem {}: {e}", s.nqn))?;
        }
        for l in &settings.listen {
            self.target
                .listen(self.reactors_ref().as_ref().ok_or("stopped")?, *l)
                .map_err(|e| format!("listen: {e}"))?;
        }
        Ok(())
    }

    fn reactors_ref(&self) -> MutexGuard<'_, Option<Reactors>> {
        lock(&self.reactors)
    }

    fn create_subsystem_from(&self, s: &SubsystemSpec) -> Result<(), AppError> {
        self.create_subsystem(&s.nqn, &s.serial, &s.model, s.allow_any_host, s.max_namespaces)?;
        for h in &s.hosts {
            self.add_host(&s.nqn, h)?;
        }
        for (host, key, ctrl_key) in &s.host_dhchap {
            // Each file becomes a keyring key named by its path, so a saved
            // configuration names the file (never the secret) and a reload
            // asks the host to authenticate as before.
            let key = self.file_key(key)?;
            let ctrl_key = ctrl_key.as_deref().map(|p| self.file_key(p)).transpose()?;
            self.set_host_keys(&s.nqn, host, Some(&key), ctrl_key.as_deref())?;
        }
        for (bdev, nsid) in &s.namespaces {
            self.add_namespace(&s.nqn, bdev, *nsid)?;
        }
        for l in &s.listen {
            self.add_listener(&s.nqn, *l)?;
        }
        Ok(())
    }

    /// The target.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// The reactors' handles, in order.
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// The CPUs the reactors run on.
    pub fn cores(&self) -> &CoreList {
        &self.cores
    }

    /// When the daemon started.
    pub fn started(&self) -> Instant {
        self.started
    }

    // ---- bdevs ----

    /// Creates a malloc, null or uring bdev.
    ///
    /// # Errors
    /// [`AppError::Exists`] for a taken name, [`AppError::InvalidParams`] for a bad size or
    /// block size, [`AppError::Failed`] when the file cannot be opened.
    pub fn create_bdev(&self, spec: &BdevSpec) -> Result<String, AppError> {
        crate::config::check_bdev_name(&spec.name)
            .map_err(|e| AppError::InvalidParams(format!("bdev name `{}`: {e}", spec.name)))?;
        crate::bdev::check_block_size(spec.block_size).map_err(AppError::InvalidParams)?;
        let exists = || AppError::Exists(format!("bdev {} already exists", spec.name));
        if lock(&self.bdevs).contains_key(&spec.name) {
            return Err(exists());
        }
        // A UUID names one bdev (SPDK registers it as an alias): two bdevs
        // sharing one would show hosts two namespaces with one NGUID/UUID,
        // which a multipath host merges into one device over different data.
        if let Some(u) = spec.uuid
            && let Some(e) = uuid_taken(&lock(&self.uuids), &u)
        {
            return Err(e);
        }
        // Built without the lock (a large RAM bdev takes seconds to fill);
        // the name is checked again when it goes in.
        let bs = spec.block_size;
        // Like SPDK: a RAM or null bdev gets a random UUID unless one is
        // given, so two nodes built from one config never show hosts the same
        // namespace identity (multipath would merge them).
        let random = || {
            let mut u = [0u8; 16];
            let _ = rustix::rand::getrandom(&mut u, rustix::rand::GetRandomFlags::empty());
            u[6] = (u[6] & 0x0F) | 0x40;
            u[8] = (u[8] & 0x3F) | 0x80;
            u
        };
        let (bdev, driver): (Arc<dyn Bdev>, Driver) = match &spec.kind {
            BdevKind::Malloc { num_blocks } => {
                let bytes = num_blocks
                    .checked_mul(u64::from(bs))
                    .ok_or_else(|| AppError::InvalidParams("num_blocks x block_size overflows".into()))?;
                if let Some(avail) = mem_available()
                    && bytes > avail
                {
                    return Err(AppError::NoMemory(format!(
                        "a malloc bdev of {bytes} bytes does not fit in this machine's {avail} bytes of available memory"
                    )));
                }
                let b = RamBdev::new(&spec.name, bytes, bs).map_err(|e| {
                    if e.starts_with("cannot allocate") {
                        AppError::NoMemory(e)
                    } else {
                        AppError::InvalidParams(e)
                    }
                })?;
                (Arc::new(b.with_uuid(spec.uuid.unwrap_or_else(random))), Driver::Malloc)
            }
            BdevKind::Null { num_blocks } => {
                let b = NullBdev::new(&spec.name, *num_blocks, bs).map_err(AppError::InvalidParams)?;
                (Arc::new(b.with_uuid(spec.uuid.unwrap_or_else(random))), Driver::Null)
            }
            BdevKind::Uring { filename } => {
                let b = FileBdev::open(&spec.name, filename, bs).map_err(AppError::Failed)?;
                // Stable across restarts (the data is), different on every machine.
                let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
                let derived = crate::bdev::uuid_from_name(machine.trim(), &filename.display().to_string());
                let b = b.with_uuid(spec.uuid.unwrap_or(derived));
                if !b.is_direct() {
                    tracing::warn!(bdev = %spec.name, path = %filename.display(), "O_DIRECT not supported here: using the page cache");
                }
                (
                    Arc::new(b),
                    Driver::Uring {
                        filename: filename.clone(),
                    },
                )
            }
        };
        let mut bdevs = lock(&self.bdevs);
        if bdevs.contains_key(&spec.name) {
            return Err(exists());
        }
        // Again under the lock, with the UUID the bdev got (given or derived).
        let mut uuids = lock(&self.uuids);
        if let Some(e) = uuid_taken(&uuids, &bdev.info().uuid) {
            return Err(e);
        }
        uuids.insert(bdev.info().uuid, spec.name.clone());
        drop(uuids);
        bdevs.insert(
            spec.name.clone(),
            BdevEntry {
                bdev,
                driver,
                stats: Arc::default(),
            },
        );
        tracing::info!(bdev = %spec.name, "bdev created");
        Ok(spec.name.clone())
    }

    /// Every bdev, by name.
    pub fn bdevs(&self) -> Vec<(String, BdevEntry)> {
        lock(&self.bdevs).iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The bdev `name`.
    pub fn bdev(&self, name: &str) -> Option<BdevEntry> {
        lock(&self.bdevs).get(name).cloned()
    }

    /// The subsystems whose namespaces use bdev `name`, with the NSIDs.
    pub fn claims(&self, name: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for s in self.target.subsystems() {
            for ns in s.namespaces().iter() {
                if ns.bdev.info().name == name {
                    out.push((s.nqn.clone(), ns.nsid));
                }
            }
        }
        out
    }

    /// Deletes bdev `name` if its driver is `kind` ("malloc", "null", "uring";
    /// "" for any of them). As in SPDK, namespaces on it are removed first (a
    /// hot remove); a uring bdev is flushed. Returns the namespaces removed,
    /// as (subsystem NQN, NSID).
    ///
    /// # Errors
    /// [`AppError::NotFound`] when there is no such bdev of that kind.
    pub fn delete_bdev(&self, name: &str, kind: &str) -> Result<Vec<(String, u32)>, AppError> {
        // Under the bdev map's lock, which add_namespace also holds from its
        // lookup to its insert: no namespace can be added to a bdev being deleted.
        let entry = {
            let mut bdevs = lock(&self.bdevs);
            let Some(e) = bdevs.get(name) else {
                return Err(AppError::NotFound(format!("bdev {name} does not exist")));
            };
            let matches = matches!(
                (&e.driver, kind),
                (Driver::Malloc, "malloc" | "") | (Driver::Null, "null" | "") | (Driver::Uring { .. }, "uring" | "")
            );
            if !matches {
                let what = if kind.is_empty() { "malloc, null or uring" } else { kind };
                return Err(AppError::NotFound(format!("bdev {name} is not a {what} bdev")));
            }
            let e = bdevs.remove(name).ok_or_else(|| AppError::NotFound(name.to_string()))?;
            lock(&self.uuids).remove(&e.bdev.info().uuid);
            let removed = self.unclaim(name);
            (e, removed)
        };
        let (entry, removed) = entry;
        if let Err(e) = crate::bdev::flush_blocking(entry.bdev.as_ref()) {
            tracing::warn!(bdev = name, error = %e, "flush before delete failed");
        }
        tracing::info!(bdev = name, "bdev deleted");
        Ok(removed)
    }

    /// Removes every namespace on bdev `name` (the caller holds the bdev
    /// map's lock); returns those removed as (subsystem NQN, NSID).
    fn unclaim(&self, name: &str) -> Vec<(String, u32)> {
        let mut removed = Vec::new();
        for (nqn, nsid) in self.claims(name) {
            if let Some(s) = self.target.subsystem(&nqn)
                && s.remove_namespace(nsid).is_ok()
            {
                self.notify_namespace_changed(&s, nsid);
                tracing::info!(bdev = name, subnqn = %nqn, nsid, "namespace removed with its bdev");
                removed.push((nqn, nsid));
            }
        }
        removed
    }

    // ---- transport ----

    /// Creates the TCP transport with these settings (`nvmf_create_transport`).
    ///
    /// # Errors
    /// [`AppError::Exists`] when it exists already.
    pub fn create_transport(&self, config: TargetQueueConfig) -> Result<(), AppError> {
        let mut created = lock(&self.transport_created);
        if *created {
            return Err(AppError::Exists("transport TCP already exists".into()));
        }
        self.target.set_queue_config(config).map_err(AppError::NotPermitted)?;
        *created = true;
        Ok(())
    }

    /// The TCP transport.
    pub fn transport(&self) -> TransportInfo {
        TransportInfo {
            created: *lock(&self.transport_created),
            config: self.target.queue_config(),
        }
    }

    // ---- subsystems ----

    /// Creates an NVM subsystem.
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] for a bad NQN, serial or model;
    /// [`AppError::Exists`] for a taken NQN.
    pub fn create_subsystem(
        &self,
        nqn: &str,
        serial: &str,
        model: &str,
        allow_any_host: bool,
        max_namespaces: u32,
    ) -> Result<(), AppError> {
        let s = Subsystem::new(nqn, serial, model)
            .and_then(|s| s.with_max_namespaces(max_namespaces))
            .map_err(AppError::InvalidParams)?;
        s.set_allow_any_host(allow_any_host);
        self.target.add_subsystem(s).map_err(AppError::Exists)?;
        tracing::info!(subnqn = nqn, "subsystem created");
        Ok(())
    }

    fn subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, AppError> {
        self.target
            .subsystem(nqn)
            .ok_or_else(|| AppError::NotFound(format!("subsystem {nqn} does not exist")))
    }

    fn nvm_subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, AppError> {
        let s = self.subsystem(nqn)?;
        if s.kind == crate::nvmf::subsystem::SubsystemKind::Discovery {
            return Err(AppError::InvalidParams(format!("{nqn} is the discovery subsystem")));
        }
        Ok(s)
    }

    /// Deletes a subsystem, closing its controllers.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::InvalidParams`] for the discovery subsystem.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<(), AppError> {
        self.nvm_subsystem(nqn)?;
        self.target.remove_subsystem(nqn).map_err(AppError::NotFound)?;
        tracing::info!(subnqn = nqn, "subsystem deleted");
        Ok(())
    }

    /// Adds bdev `bdev` to `nqn` as namespace `nsid` (0: the lowest free).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem or bdev; [`AppError::InvalidParams`]
    /// for a taken or bad NSID or a full subsystem.
    pub fn add_namespace(&self, nqn: &str, bdev: &str, nsid: u32) -> Result<u32, AppError> {
        let s = self.nvm_subsystem(nqn)?;
        let bdevs = lock(&self.bdevs);
        let b = bdevs
            .get(bdev)
            .ok_or_else(|| AppError::NotFound(format!("bdev {bdev} does not exist")))?;
        let nsid = s
            .add_namespace_with_stats(nsid, b.bdev.clone(), b.stats.clone())
            .map_err(AppError::InvalidParams)?;
        drop(bdevs);
        self.notify_namespace_changed(&s, nsid);
        tracing::info!(subnqn = nqn, bdev, nsid, "namespace added");
        Ok(nsid)
    }

    /// Tells every controller of `s` that namespace `nsid` changed
    /// (Namespace Attribute Changed notice, log page 04h).
    fn notify_namespace_changed(&self, s: &Arc<Subsystem>, nsid: u32) {
        for c in self.target.controllers() {
            if Arc::ptr_eq(&c.subsystem, s) {
                c.namespace_changed(nsid);
            }
        }
    }

    /// Removes namespace `nsid` of `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem; [`AppError::InvalidParams`] for the NSID.
    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        s.remove_namespace(nsid).map_err(AppError::InvalidParams)?;
        self.notify_namespace_changed(&s, nsid);
        tracing::info!(subnqn = nqn, nsid, "namespace removed");
        Ok(())
    }

    /// Makes `nqn` reachable on `addr` (binding it if needed).
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::NotPermitted`] before the transport
    /// exists; [`AppError::Failed`] when the address cannot be bound.
    pub fn add_listener(&self, nqn: &str, addr: SocketAddr) -> Result<SocketAddr, AppError> {
        self.subsystem(nqn)?;
        if !*lock(&self.transport_created) {
            return Err(AppError::NotPermitted(
                "transport TCP does not exist: call nvmf_create_transport first".into(),
            ));
        }
        let local = self
            .target
            .add_subsystem_listener(&self.handles, nqn, addr)
            .map_err(AppError::Failed)?;
        tracing::info!(subnqn = nqn, %local, "listener added");
        Ok(local)
    }

    /// Removes listener `addr` from `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem or listener.
    pub fn remove_listener(&self, nqn: &str, addr: SocketAddr) -> Result<(), AppError> {
        self.subsystem(nqn)?;
        self.target
            .remove_subsystem_listener(nqn, addr)
            .map_err(AppError::NotFound)
    }

    /// Allows `host` on `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::InvalidParams`] for a bad or duplicate NQN.
    pub fn add_host(&self, nqn: &str, host: &str) -> Result<(), AppError> {
        self.nvm_subsystem(nqn)?.add_host(host).map_err(AppError::InvalidParams)
    }

    /// Allows `host` on `nqn`, asking it to authenticate with the keyring's
    /// keys `key` (and `ctrlr_key`, bidirectional) when given
    /// (`nvmf_subsystem_add_host --dhchap-key --dhchap-ctrlr-key`). Nothing
    /// changes when a key is refused.
    ///
    /// # Errors
    /// As [`add_host`](Self::add_host); [`AppError::NotFound`] for a key
    /// not in the keyring; [`AppError::InvalidParams`] for a controller key
    /// without a host key or equal to it.
    pub fn add_host_with_keys(
        &self,
        nqn: &str,
        host: &str,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        match self.resolve_keys(key, ctrlr_key)? {
            None => s.add_host(host),
            Some((k, c, names)) => s.add_host_with_dhchap(host, k, c, Some(names)),
        }
        .map_err(AppError::InvalidParams)
    }

    /// Sets or clears the DH-HMAC-CHAP keys of the listed `host` on `nqn`
    /// (`nvmf_subsystem_set_keys`): no `key` clears them (the host no
    /// longer authenticates). Queues already connected keep going; they
    /// use the new keys when they next authenticate or reconnect.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem or a key;
    /// [`AppError::InvalidParams`] for a host not listed, or a controller
    /// key without a host key or equal to it.
    pub fn set_host_keys(
        &self,
        nqn: &str,
        host: &str,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        if !s.access().hosts.iter().any(|h| h == host) {
            return Err(AppError::InvalidParams(format!(
                "host {host} is not on the host list of {nqn}: add it with nvmf_subsystem_add_host first"
            )));
        }
        match self.resolve_keys(key, ctrlr_key)? {
            Some((k, c, names)) => s
                .set_host_dhchap_named(host, k, c, Some(names))
                .map_err(AppError::InvalidParams),
            None => {
                s.clear_host_dhchap(host);
                Ok(())
            }
        }
    }

    /// The keyring's secrets for `key` and `ctrlr_key`; `None` for no key.
    fn resolve_keys(
        &self,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<
        Option<(
            lull_proto::auth::DhchapSecret,
            Option<lull_proto::auth::DhchapSecret>,
            KeyNames,
        )>,
        AppError,
    > {
        let Some(key) = key else {
            return match ctrlr_key {
                None => Ok(None),
                Some(_) => Err(AppError::InvalidParams(
                    "dhchap_ctrlr_key needs dhchap_key: bidirectional authentication starts with the host's key".into(),
                )),
            };
        };
        let secret = self.key_secret("dhchap_key", key)?;
        let ctrl = ctrlr_key.map(|c| self.key_secret("dhchap_ctrlr_key", c)).transpose()?;
        Ok(Some((
            secret,
            ctrl,
            KeyNames {
                key: key.to_string(),
                ctrlr_key: ctrlr_key.map(str::to_string),
            },
        )))
    }

    /// The secret of keyring key `name`, given as parameter `field`.
    ///
    /// # Errors
    /// [`AppError::NotFound`] naming the field and the key.
    pub fn key_secret(&self, field: &str, name: &str) -> Result<lull_proto::auth::DhchapSecret, AppError> {
        self.keyring.get(name).map_err(|_| {
            AppError::NotFound(format!(
                "{field}: key {name} is not in the keyring (keyring_file_add_key)"
            ))
        })
    }

    /// The keyring key of the key file `path`, added (named by the path)
    /// when no key holds it yet.
    fn file_key(&self, path: &std::path::Path) -> Result<String, AppError> {
        let path = std::path::absolute(path)
            .map_err(|e| AppError::InvalidParams(format!("key file {}: {e}", path.display())))?;
        if let Some(n) = self.keyring.name_of_path(&path) {
            return Ok(n);
        }
        let name = path.display().to_string();
        self.keyring_add(&name, &path)?;
        Ok(name)
    }

    // ---- the keyring ----

    /// The hashes and groups the initiator offers (attaches from now on).
    pub fn dhchap_offer(&self) -> DhchapOffer {
        lock(&self.dhchap_offer).clone()
    }

    /// Sets what the initiator offers (`bdev_nvme_set_options
    /// dhchap_digests / dhchap_dhgroups`); controllers attached keep theirs.
    pub fn set_dhchap_offer(&self, offer: DhchapOffer) {
        *lock(&self.dhchap_offer) = offer;
    }

    /// Adds the key file `path` as `name` (`keyring_file_add_key`).
    ///
    /// # Errors
    /// [`AppError::Exists`] for a name taken; [`AppError::InvalidParams`]
    /// for a bad name or file (relative, not private to the daemon's user,
    /// not a DH-HMAC-CHAP secret), the message saying how to fix it and
    /// never quoting the key.
    pub fn keyring_add(&self, name: &str, path: &std::path::Path) -> Result<(), AppError> {
        self.keyring.add_file_key(name, path).map_err(keyring_error)?;
        tracing::info!(key = name, path = %path.display(), "keyring: key added");
        Ok(())
    }

    /// Removes key `name` (`keyring_file_remove_key`); hosts and
    /// controllers using it keep their copy.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub fn keyring_remove(&self, name: &str) -> Result<(), AppError> {
        let users = self.key_users(name);
        self.keyring.remove(name, users > 0).map_err(keyring_error)?;
        tracing::info!(key = name, users, "keyring: key removed");
        Ok(())
    }

    /// Every key with its users' count (`keyring_get_keys`); removed keys
    /// no longer used are forgotten first.
    pub fn keyring_keys(&self) -> Vec<(String, crate::keyring::KeyEntry, usize)> {
        self.keyring.purge(|n| self.key_users(n) > 0);
        self.keyring
            .list()
            .into_iter()
            .map(|(n, e)| {
                let users = self.key_users(&n);
                (n, e, users)
            })
            .collect()
    }

    /// How many hosts and remote controllers use key `name`.
    pub fn key_users(&self, name: &str) -> usize {
        let uses = |k: &KeyNames| usize::from(k.key == name) + usize::from(k.ctrlr_key.as_deref() == Some(name));
        let hosts: usize = self
            .target
            .subsystems()
            .iter()
            .map(|s| {
                let hosts = s.access().hosts.clone();
                hosts
                    .iter()
                    .filter_map(|h| s.host_key_names(h))
                    .map(|k| uses(&k))
                    .sum::<usize>()
            })
            .sum();
        let ctrlrs: usize = lock(&self.nvme)
            .values()
            .filter_map(|e| e.ctrlr.trid().dhchap.as_ref().and_then(|d| d.names.clone()))
            .map(|k| uses(&k))
            .sum();
        hosts + ctrlrs
    }

    /// Stops allowing `host` on `nqn`; its controllers there are closed (as SPDK does).
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::InvalidParams`] when it was not allowed.
    pub fn remove_host(&self, nqn: &str, host: &str) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        s.remove_host(host).map_err(AppError::InvalidParams)?;
        if !s.allows(host) {
            for c in self.target.controllers() {
                if Arc::ptr_eq(&c.subsystem, &s) && c.hostnqn == host {
                    c.shut_down("host removed from the subsystem");
                }
            }
        }
        Ok(())
    }

    /// Sets `allow_any_host` on `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub fn allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        s.set_allow_any_host(allow);
        if !allow {
            // As remove_host: hosts no longer allowed lose their controllers.
            for c in self.target.controllers() {
                if Arc::ptr_eq(&c.subsystem, &s) && !s.allows(&c.hostnqn) {
                    c.shut_down("host no longer allowed on the subsystem");
                }
            }
        }
        Ok(())
    }

    // ---- NVMe initiator ----

    /// The initiator options new controllers get.
    pub fn nvme_options(&self) -> NvmeOptions {
        lock(&self.nvme_options).clone()
    }

    /// Replaces the initiator options. The poll periods apply to attached
    /// controllers at once; the rest to controllers attached later.
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] naming the field.
    pub fn set_nvme_options(&self, opts: NvmeOptions) -> Result<(), AppError> {
        self.update_nvme_options(|o| *o = opts)
    }

    /// Changes the initiator options with `f`, atomically with respect to
    /// other changes; checked before anything changes.
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] naming the field.
    pub fn update_nvme_options(&self, f: impl FnOnce(&mut NvmeOptions)) -> Result<(), AppError> {
        let mut current = lock(&self.nvme_options);
        let mut opts = current.clone();
        f(&mut opts);
        opts.validate().map_err(AppError::InvalidParams)?;
        if opts.nvme_ioq_poll_period_us != current.nvme_ioq_poll_period_us
            || opts.nvme_adminq_poll_period_us != current.nvme_adminq_poll_period_us
        {
            for e in lock(&self.nvme).values() {
                e.ctrlr
                    .set_poll_periods(
                        Some(opts.nvme_ioq_poll_period_us),
                        Some(opts.nvme_adminq_poll_period_us),
                    )
                    .map_err(AppError::InvalidParams)?;
            }
        }
        *current = opts;
        Ok(())
    }

    /// Attaches a remote controller as `name` and makes a bdev `<name>n<nsid>`
    /// of each namespace. Blocks the calling thread while the association comes
    /// up (bounded by the attach deadline).
    ///
    /// # Errors
    /// [`AppError::Exists`] for a taken name; [`AppError::Failed`] when the
    /// controller cannot be reached or refuses.
    pub fn attach_controller(&self, name: &str, trid: NvmeTrid, opts: NvmeOptions) -> Result<Vec<String>, AppError> {
        crate::config::check_bdev_name(name)
            .map_err(|e| AppError::InvalidParams(format!("controller name `{name}`: {e}")))?;
        if lock(&self.nvme).contains_key(name) {
            return Err(AppError::Exists(format!("NVMe controller {name} already exists")));
        }
        self.same_path_attached(&trid)?;
        opts.validate().map_err(AppError::InvalidParams)?;
        let io_queues = self.handles.len().clamp(1, 128) as u16;
        let ctrlr = NvmeController::attach(name, trid, opts, &self.handles, io_queues)
            .map_err(|e| AppError::Failed(format!("NVMe controller {name}: {e}")))?;
        let mut names = Vec::new();
        let mut made: Vec<(String, BdevEntry)> = Vec::new();
        for ns in ctrlr.info().namespaces {
            let bname = format!("{name}n{}", ns.nsid);
            match NvmeBdev::new(&bname, ctrlr.clone(), ns.nsid) {
                Ok(b) => {
                    made.push((
                        bname.clone(),
                        BdevEntry {
                            bdev: Arc::new(b),
                            driver: Driver::Nvme {
                                ctrlr: name.to_string(),
                                nsid: ns.nsid,
                            },
                            stats: Arc::default(),
                        },
                    ));
                    names.push(bname);
                }
                Err(e) => tracing::warn!(ctrlr = name, nsid = ns.nsid, error = %e, "namespace not made a bdev"),
            }
        }
        {
            let mut bdevs = lock(&self.bdevs);
            if let Some((taken, _)) = made.iter().find(|(n, _)| bdevs.contains_key(n)) {
                let taken = taken.clone();
                drop(bdevs);
                ctrlr.detach();
                return Err(AppError::Exists(format!("bdev {taken} already exists")));
            }
            bdevs.extend(made);
        }
        // A namespace added or removed on the remote controller becomes a
        // bdev added or removed here (as SPDK's bdev_nvme does), off the reactor.
        let (weak, cname) = (self.me.clone(), name.to_string());
        ctrlr.on_namespaces_changed(Arc::new(move |list| {
            let (weak, cname) = (weak.clone(), cname.clone());
            let _ = std::thread::Builder::new().name("lull-ns-sync".into()).spawn(move || {
                if let Some(app) = weak.upgrade() {
                    app.sync_nvme_bdevs(&cname, &list);
                }
            });
        }));
        lock(&self.nvme).insert(
            name.to_string(),
            NvmeEntry {
                ctrlr,
                bdevs: names.clone(),
            },
        );
        Ok(names)
    }

    /// Refuses a second controller on the same path (address, subsystem and
    /// host NQN), as SPDK's `bdev_nvme_attach_controller` does: two bdevs of
    /// one namespace through two associations would look like two volumes.
    fn same_path_attached(&self, trid: &NvmeTrid) -> Result<(), AppError> {
        let nvme = lock(&self.nvme);
        let same = nvme.iter().find(|(_, e)| {
            let t = e.ctrlr.trid();
            t.addr == trid.addr && t.subnqn == trid.subnqn && t.hostnqn == trid.hostnqn
        });
        match same {
            Some((other, _)) => Err(AppError::Exists(format!(
                "A controller with the provided trid (traddr: {}, trsvcid: {}, subnqn: {}, hostnqn: {}) already exists with name: {other}",
                trid.addr.ip(),
                trid.addr.port(),
                trid.subnqn,
                trid.hostnqn
            ))),
            None => Ok(()),
        }
    }

    /// Makes the bdevs of controller `name` match its namespaces `list`.
    fn sync_nvme_bdevs(&self, name: &str, list: &[crate::nvme::NsInfo]) {
        let mut nvme = lock(&self.nvme);
        let Some(entry) = nvme.get_mut(name) else { return };
        let want: Vec<(String, u32)> = list.iter().map(|ns| (format!("{name}n{}", ns.nsid), ns.nsid)).collect();
        let gone: Vec<String> = entry
            .bdevs
            .iter()
            .filter(|b| !want.iter().any(|(w, _)| w == *b))
            .cloned()
            .collect();
        for b in &gone {
            let mut bdevs = lock(&self.bdevs);
            bdevs.remove(b);
            self.unclaim(b);
            drop(bdevs);
            tracing::info!(ctrlr = name, bdev = %b, "remote namespace gone: bdev removed");
        }
        entry.bdevs.retain(|b| !gone.contains(b));
        for (bname, nsid) in want {
            if entry.bdevs.contains(&bname) {
                continue;
            }
            let mut bdevs = lock(&self.bdevs);
            if bdevs.contains_key(&bname) {
                tracing::warn!(ctrlr = name, bdev = %bname, "new remote namespace: bdev name taken; not added");
                continue;
            }
            match NvmeBdev::new(&bname, entry.ctrlr.clone(), nsid) {
                Ok(b) => {
                    bdevs.insert(
                        bname.clone(),
                        BdevEntry {
                            bdev: Arc::new(b),
                            driver: Driver::Nvme {
                                ctrlr: name.to_string(),
                                nsid,
                            },
                            stats: Arc::default(),
                        },
                    );
                    entry.bdevs.push(bname.clone());
                    tracing::info!(ctrlr = name, bdev = %bname, "new remote namespace: bdev added");
                }
                Err(e) => tracing::warn!(ctrlr = name, nsid, error = %e, "new remote namespace not made a bdev"),
            }
        }
    }

    /// Detaches controller `name`: its bdevs are removed (and namespaces on them).
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub fn detach_controller(&self, name: &str) -> Result<(), AppError> {
        let Some(e) = lock(&self.nvme).remove(name) else {
            return Err(AppError::NotFound(format!("NVMe controller {name} does not exist")));
        };
        for b in &e.bdevs {
            let mut bdevs = lock(&self.bdevs);
            bdevs.remove(b);
            self.unclaim(b);
        }
        e.ctrlr.detach();
        Ok(())
    }

    /// Attached controllers: (name, controller, bdevs).
    pub fn controllers(&self) -> Vec<(String, NvmeController, Vec<String>)> {
        lock(&self.nvme)
            .iter()
            .map(|(k, v)| (k.clone(), v.ctrlr.clone(), v.bdevs.clone()))
            .collect()
    }

    // ---- reactors ----

    /// The supervisor's settings.
    pub fn supervisor(&self) -> SupervisorConfig {
        lock(&self.supervisor_config).clone()
    }

    /// Replaces the supervisor's settings (policy and thresholds).
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] naming the field.
    pub fn set_supervisor(&self, config: SupervisorConfig) -> Result<(), AppError> {
        self.update_supervisor(|c| {
            *c = config;
            Ok(())
        })
        .map(|_| ())
    }

    /// Changes the supervisor's settings with `f`, atomically with respect to
    /// other changes (a read-modify-write under one lock, sent in order).
    /// Returns the settings before and after.
    ///
    /// # Errors
    /// `f`'s error, or [`AppError::InvalidParams`] naming the field; nothing changes then.
    pub fn update_supervisor(
        &self,
        f: impl FnOnce(&mut SupervisorConfig) -> Result<(), AppError>,
    ) -> Result<(SupervisorConfig, SupervisorConfig), AppError> {
        let mut current = lock(&self.supervisor_config);
        let before = current.clone();
        let mut next = before.clone();
        f(&mut next)?;
        if next != before {
            self.supervisor.set_config(next.clone()).map_err(|e| match e {
                lull_reactor::ReactorError::InvalidSetting { .. } => AppError::InvalidParams(e.to_string()),
                other => AppError::Failed(other.to_string()),
            })?;
            *current = next.clone();
        }
        Ok((before, next))
    }

    /// Sets the hybrid spin window of every reactor.
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] above the limit.
    pub fn set_idle_poll(&self, idle_poll: Duration) -> Result<(), AppError> {
        for h in &self.handles {
            h.set_idle_poll(idle_poll)
                .map_err(|e| AppError::InvalidParams(format!("idle_poll_us: {e}")))?;
        }
        Ok(())
    }

    /// The hybrid spin window (of the first reactor; all share it).
    pub fn idle_poll(&self) -> Duration {
        self.handles.first().map_or(Duration::ZERO, ReactorHandle::idle_poll)
    }

    /// Per-reactor status.
    pub fn reactor_status(&self) -> Vec<ReactorStatus> {
        use std::sync::atomic::Ordering::Relaxed;
        self.handles
            .iter()
            .map(|h| {
                let io = self.target.core_io(h.index());
                let stats = h.stats();
                ReactorStatus {
                    index: h.index(),
                    core: h.core(),
                    mode: h.mode(),
                    stats,
                    queues: io.queues.load(Relaxed),
                    reads: io.reads.load(Relaxed),
                    writes: io.writes.load(Relaxed),
                    bytes_read: io.bytes_read.load(Relaxed),
                    bytes_written: io.bytes_written.load(Relaxed),
                }
            })
            .collect()
    }

    // ---- shutdown ----

    /// Stops gracefully: no new connections, no new I/O commands started,
    /// running ones finish (up to [`SHUTDOWN_DRAIN`]), bdevs flushed,
    /// controllers' connections closed, remote controllers detached, reactors
    /// stopped. Idempotent.
    pub fn shutdown(&self) {
        let Some(reactors) = lock(&self.reactors).take() else {
            return;
        };
        self.target.stop_listening();
        self.target.quiesce();
        let give_up = Instant::now() + SHUTDOWN_DRAIN;
        loop {
            let left = self.inflight();
            if left == 0 {
                break;
            }
            if Instant::now() >= give_up {
                tracing::warn!(
                    left,
                    "shutdown: I/O still running after {SHUTDOWN_DRAIN:?}; closing anyway"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (name, e) in self.bdevs() {
            if matches!(e.driver, Driver::Uring { .. })
                && let Err(err) = crate::bdev::flush_blocking(e.bdev.as_ref())
            {
                tracing::warn!(bdev = %name, error = %err, "flush at shutdown failed");
            }
        }
        self.target.disconnect_all();
        // Give the reactors a moment to send the FINs of the closed queues.
        std::thread::sleep(Duration::from_millis(20));
        let names: Vec<String> = lock(&self.nvme).keys().cloned().collect();
        for n in names {
            let _ = self.detach_controller(&n);
        }
        if let Err(e) = reactors.shutdown() {
            tracing::warn!(error = %e, "reactor shutdown");
        }
        tracing::info!("shut down");
    }

    /// Per reactor (in order): (commands, total ns) of asynchronous bdev
    /// commands completed there; `None` for a reactor that did not answer in 1 s.
    pub fn async_latency(&self) -> Vec<Option<(u64, u64)>> {
        self.ask_each(crate::nvmf::io::async_latency)
    }

    fn ask_each<T: Send + 'static>(&self, f: fn() -> T) -> Vec<Option<T>> {
        let give_up = Instant::now() + Duration::from_secs(1);
        let rxs: Vec<_> = self
            .handles
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                h.try_send(move |_cx| {
                    let _ = tx.send(f());
                })
                .ok()
                .map(|()| rx)
            })
            .collect();
        rxs.into_iter()
            .map(|rx| rx.and_then(|rx| rx.recv_timeout(give_up.saturating_duration_since(Instant::now())).ok()))
            .collect()
    }

    /// Asynchronous I/O commands running on all reactors (asked of each).
    fn inflight(&self) -> usize {
        let answers = self.ask_each(crate::nvmf::io::inflight);
        // A reactor that does not answer counts as busy.
        answers.iter().map(|a| a.unwrap_or(1)).sum()
    }
}

/// The error for a bdev UUID another bdev has already, if one has.
fn uuid_taken(uuids: &BTreeMap<[u8; 16], String>, uuid: &[u8; 16]) -> Option<AppError> {
    uuids.get(uuid).map(|name| {
        let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        AppError::Exists(format!(
            "uuid {text} is already bdev {name}'s; each bdev needs its own (give this one another uuid)"
        ))
    })
}

fn keyring_error(e: KeyringError) -> AppError {
    match e {
        KeyringError::Exists(_) => AppError::Exists(e.to_string()),
        KeyringError::NotFound(_) => AppError::NotFound(e.to_string()),
        KeyringError::InvalidName(_) | KeyringError::BadFile(_) => AppError::InvalidParams(e.to_string()),
    }
}
