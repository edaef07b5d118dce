//! The bdev registry: malloc, null and uring bdevs created and deleted by
//! name, each with its UUID checked unique (`bdev_*_create`, `bdev_*_delete`);
//! raid1 volumes are in it too (made in `raid.rs`).

use std::sync::Arc;

use lull_engine::bdev::raid1::Raid1Bdev;
use lull_engine::bdev::{Bdev, FileBdev, NullBdev, RamBdev};
use lull_engine::meminfo::mem_available;

use super::{App, AppError, lock, uuid_taken};
use crate::config::{BdevKind, BdevSpec};

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
    /// A raid1 volume over other bdevs (`bdev_raid_create`).
    Raid1 {
        /// The volume, for its control operations and status.
        raid: Arc<Raid1Bdev>,
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
    pub stats: Arc<lull_engine::bdev::BdevStats>,
}

impl App {
    /// Creates a malloc, null or uring bdev, or a raid1 volume
    /// ([`create_raid`](Self::create_raid)).
    ///
    /// # Errors
    /// [`AppError::Exists`] for a taken name, [`AppError::InvalidParams`] for a bad size or
    /// block size, [`AppError::Failed`] when the file cannot be opened.
    pub fn create_bdev(&self, spec: &BdevSpec) -> Result<String, AppError> {
        if let BdevKind::Raid1 { base_bdevs, superblock } = &spec.kind {
            return self.create_raid(&super::RaidCreate {
                name: spec.name.clone(),
                base_bdevs: base_bdevs.clone(),
                superblock: *superblock,
                uuid: spec.uuid,
            });
        }
        crate::config::check_bdev_name(&spec.name)
            .map_err(|e| AppError::InvalidParams(format!("bdev name `{}`: {e}", spec.name)))?;
        lull_engine::bdev::check_block_size(spec.block_size).map_err(AppError::InvalidParams)?;
        let exists = || AppError::Exists(format!("bdev {} already exists", spec.name));
        if self.name_taken(&lock(&self.bdevs), &spec.name) {
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
                let derived = lull_engine::bdev::uuid_from_name(machine.trim(), &filename.display().to_string());
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
            // Handed to create_raid above.
            BdevKind::Raid1 { .. } => {
                return Err(AppError::InvalidParams(format!(
                    "bdev {}: a raid1 is made by create_raid",
                    spec.name
                )));
            }
        };
        let mut bdevs = lock(&self.bdevs);
        if self.name_taken(&bdevs, &spec.name) {
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
                let hint = if matches!(e.driver, Driver::Raid1 { .. }) {
                    " (delete a raid with bdev_raid_delete)"
                } else {
                    ""
                };
                return Err(AppError::NotFound(format!("bdev {name} is not a {what} bdev{hint}")));
            }
            // A volume's base goes out of the volume first: deleting it
            // under the volume would take a replica away unannounced.
            if let Some(raid) = self.raid_holding(&bdevs, name) {
                return Err(AppError::Busy(format!(
                    "bdev {name} is a base bdev of raid {raid}; remove it first (bdev_raid_remove_base_bdev {name}) or delete the raid"
                )));
            }
            let e = bdevs.remove(name).ok_or_else(|| AppError::NotFound(name.to_string()))?;
            lock(&self.uuids).remove(&e.bdev.info().uuid);
            let removed = self.unclaim(name);
            (e, removed)
        };
        let (entry, removed) = entry;
        if let Err(e) = lull_engine::bdev::flush_blocking(entry.bdev.as_ref()) {
            tracing::warn!(bdev = name, error = %e, "flush before delete failed");
        }
        tracing::info!(bdev = name, "bdev deleted");
        Ok(removed)
    }

    /// Removes every namespace on bdev `name` (the caller holds the bdev
    /// map's lock); returns those removed as (subsystem NQN, NSID).
    pub(super) fn unclaim(&self, name: &str) -> Vec<(String, u32)> {
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
}
