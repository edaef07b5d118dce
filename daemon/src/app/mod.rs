//! The running daemon: reactors, supervisor, the target, named bdevs and
//! attached NVMe controllers, with every operation the control plane (JSON-RPC,
//! configuration) performs on them.
//!
//! Control-plane calls run on the caller's thread (an RPC connection thread,
//! the main thread at start-up), never on a reactor: blocking work such as
//! attaching a remote controller does not stall I/O. What must happen on a
//! reactor is sent to it as a message.
//!
//! `App` is one type; its operations live beside what they act on, each
//! file an `impl App` block: `bdevs.rs` (the bdev registry), `raid.rs`
//! (raid1 volumes, their bases and rebuild settings), `nvmf.rs` (the
//! TCP transport, subsystems, namespaces, listeners, hosts), `keys.rs` (the
//! keyring), `initiator.rs` (initiator options and remote controllers),
//! `reactors.rs` (supervisor, spin window, status), `live.rs` (every live
//! setting as one snapshot, through the settings table) and `shutdown.rs`
//! (the graceful stop). This file holds the type and its start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lull_engine::bdev::raid1::Raid1Options;
use lull_engine::initiator::{DhchapOffer, NvmeOptions};
use lull_engine::nvmf::target::Target;
use lull_reactor::supervisor::{self, SupervisorConfig, SupervisorHandle};
use lull_reactor::{CoreList, Mode, ReactorConfig, ReactorHandle, Reactors};

use crate::config::{Settings, SubsystemSpec};
use crate::keyring::Keyring;

mod bdevs;
mod initiator;
mod keys;
mod live;
mod nvmf;
mod raid;
mod reactors;
mod shutdown;

pub use bdevs::{BdevEntry, Driver};
pub use initiator::NvmeEntry;
pub use nvmf::TransportInfo;
pub use raid::RaidCreate;
pub use reactors::ReactorStatus;
pub use shutdown::SHUTDOWN_DRAIN;

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
    /// The object is in use: deleting it, or taking its last member, would
    /// break what uses it (-EBUSY).
    #[error("{0}")]
    Busy(String),
    /// Well-formed parameters the operation cannot take (SPDK's -EINVAL
    /// after decoding: a raid1 strip size, too few base bdevs, a base
    /// smaller than the volume).
    #[error("{0}")]
    Rejected(String),
    /// Not enough memory for it.
    #[error("{0}")]
    NoMemory(String),
    /// It failed while being carried out.
    #[error("{0}")]
    Failed(String),
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
    /// The rebuild settings every raid volume has; locked after `bdevs`.
    raid_options: Mutex<Raid1Options>,
    /// Names held by a raid1 volume being created with a superblock (its
    /// own and its bases'), while its superblocks are read and written
    /// outside the registry's lock: name -> the volume. Locked after `bdevs`.
    raid_pending: Mutex<BTreeMap<String, String>>,
    /// Named secrets (`keyring_file_add_key`).
    keyring: Keyring,
    /// What the initiator offers in DH-HMAC-CHAP (`bdev_nvme_set_options`).
    dhchap_offer: Mutex<DhchapOffer>,
    started: Instant,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
            raid_options: Mutex::new(settings.raid),
            raid_pending: Mutex::new(BTreeMap::new()),
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
        for (host, psk) in &s.host_psk {
            // As for DH-HMAC-CHAP: a keyring key named by the file's path.
            let name = self.file_key(psk)?;
            let p = self.key_psk("psk", &name)?;
            self.nvm_subsystem(&s.nqn)?
                .set_host_psk(host, &p, Some(name))
                .map_err(AppError::InvalidParams)?;
        }
        for (bdev, nsid) in &s.namespaces {
            self.add_namespace(&s.nqn, bdev, *nsid)?;
        }
        for l in &s.listen {
            self.add_listener(&s.nqn, *l)?;
        }
        for l in &s.listen_secure_channel {
            self.add_listener_secure(&s.nqn, *l, true)?;
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
}
