//! Raid1 volumes (SPDK's `bdev_raid_*` with level raid1): created over named
//! bdevs, listed, deleted, a base removed or added (which starts a rebuild),
//! and the rebuild settings every volume shares.
//!
//! A volume is a bdev of the registry like any other (`Driver::Raid1`): it
//! shows in `bdev_get_bdevs` and may back a namespace. Its bases are
//! *claimed*, as SPDK's bdev layer claims them: a claimed bdev cannot
//! become a namespace, a base of another volume, or be deleted; and a bdev
//! that a namespace or another volume holds cannot become a base. Which
//! bdevs a volume holds is read from the volume itself, so a base it has
//! dropped after a failure is free again at once.
//!
//! With a superblock (`-s`), a volume created over bases that already hold
//! its superblock is assembled from them rather than made anew: that is how
//! the TOML file and `save_config` bring it back after a restart, with a
//! member that missed writes rebuilt before it is read.

use std::collections::BTreeMap;
use std::sync::Arc;

use lull_engine::bdev::Bdev;
use lull_engine::bdev::raid1::superblock::{Found, SlotState, Superblock, UuidText, assemble};
use lull_engine::bdev::raid1::{Raid1Bdev, Raid1Error, Raid1Options, Raid1Params, Raid1Status, read_superblock};

use super::{App, AppError, BdevEntry, Driver, lock, uuid_taken};

/// Longest wait for a superblock read or write at creation.
const SUPERBLOCK_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A raid1 volume to create (`bdev_raid_create`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaidCreate {
    /// Its name (a bdev name of at most 31 bytes).
    pub name: String,
    /// Its base bdevs, by name, in slot order (at least 2).
    pub base_bdevs: Vec<String>,
    /// Keep a superblock on each base (SPDK's `-s`).
    pub superblock: bool,
    /// Its UUID; random when not given.
    pub uuid: Option<[u8; 16]>,
}

/// The [`AppError`] for a refusal of the volume itself, by SPDK's errno.
fn from_raid(e: Raid1Error) -> AppError {
    let m = e.to_string();
    match -e.errno() {
        libc::EEXIST => AppError::Exists(m),
        libc::ENODEV => AppError::NotFound(m),
        libc::EBUSY => AppError::Busy(m),
        libc::EINVAL => AppError::Rejected(m),
        _ => AppError::Failed(m),
    }
}

/// The names a volume being created holds in [`App`]'s `raid_pending` (its
/// own and its bases'), given back when dropped, whatever the outcome.
struct Reservation<'a> {
    app: &'a App,
    names: Vec<String>,
    uuid: [u8; 16],
}

impl<'a> Reservation<'a> {
    /// Reserves `c.name`, `c.base_bdevs` and `uuid` for volume `c.name`; the
    /// caller holds the registry and checked that none is taken.
    fn new(app: &'a App, c: &RaidCreate, uuid: [u8; 16]) -> Self {
        let mut names = vec![c.name.clone()];
        names.extend(c.base_bdevs.iter().cloned());
        let mut pending = lock(&app.raid_pending);
        for n in &names {
            pending.insert(n.clone(), c.name.clone());
        }
        lock(&app.uuids).insert(uuid, c.name.clone());
        Reservation { app, names, uuid }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut pending = lock(&self.app.raid_pending);
        for n in &self.names {
            pending.remove(n);
        }
        lock(&self.app.uuids).remove(&self.uuid);
    }
}

/// A random version-4 UUID, as SPDK gives a raid created without one.
fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut u, rustix::rand::GetRandomFlags::empty());
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}

pub(super) type Registry = BTreeMap<String, BdevEntry>;

/// Every volume in the registry.
fn volumes(bdevs: &Registry) -> Vec<Arc<Raid1Bdev>> {
    bdevs
        .values()
        .filter_map(|e| match &e.driver {
            Driver::Raid1 { raid } => Some(raid.clone()),
            _ => None,
        })
        .collect()
}

/// The volume holding bdev `name` as a base, if one does.
pub(super) fn volume_of_base(bdevs: &Registry, name: &str) -> Option<Arc<Raid1Bdev>> {
    volumes(bdevs)
        .into_iter()
        .find(|r| r.base_names().iter().any(|b| b == name))
}

impl App {
    /// The rebuild settings every volume has (`bdev_raid_set_options`).
    pub fn raid_options(&self) -> Raid1Options {
        *lock(&self.raid_options)
    }

    /// Changes the rebuild settings with `f`, checked first; every volume
    /// takes them at once (a running rebuild from its next window).
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] naming the setting.
    pub fn update_raid_options(&self, f: impl FnOnce(&mut Raid1Options)) -> Result<(), AppError> {
        let bdevs = lock(&self.bdevs);
        let mut current = lock(&self.raid_options);
        let mut next = *current;
        f(&mut next);
        next.check().map_err(|e| AppError::InvalidParams(e.to_string()))?;
        *current = next;
        // Under the registry's lock: a volume created meanwhile starts with `next`.
        for r in volumes(&bdevs) {
            r.set_options(next)
                .map_err(|e| AppError::InvalidParams(e.to_string()))?;
        }
        Ok(())
    }

    /// Every volume, in name order (for counters beyond the status, such
    /// as [`Raid1Bdev::writes_waited`]).
    pub fn raid_volumes(&self) -> Vec<Arc<Raid1Bdev>> {
        volumes(&lock(&self.bdevs))
    }

    /// Every volume's status, in name order.
    pub fn raids(&self) -> Vec<Raid1Status> {
        let list = volumes(&lock(&self.bdevs));
        list.iter().map(|r| r.status()).collect()
    }

    /// The volume `name`'s status.
    pub fn raid(&self, name: &str) -> Option<Raid1Status> {
        match &lock(&self.bdevs).get(name)?.driver {
            Driver::Raid1 { raid } => Some(raid.status()),
            _ => None,
        }
    }

    /// The name of the volume holding bdev `name` as a base, if one does.
    pub fn raid_of_base(&self, name: &str) -> Option<String> {
        volume_of_base(&lock(&self.bdevs), name).map(|r| r.info().name.clone())
    }

    /// Who holds bdev `name` besides the registry: a namespace or a volume,
    /// as a phrase for an error message (the caller holds the registry).
    pub(super) fn holder(&self, bdevs: &Registry, name: &str) -> Option<String> {
        if let Some((nqn, nsid)) = self.claims(name).into_iter().next() {
            return Some(format!("namespace {nsid} of {nqn}"));
        }
        self.raid_holding(bdevs, name).map(|r| format!("raid {r}"))
    }

    /// The volume holding bdev `name` as a base, or about to (being created
    /// over it): its name. The caller holds the registry.
    pub(super) fn raid_holding(&self, bdevs: &Registry, name: &str) -> Option<String> {
        volume_of_base(bdevs, name)
            .map(|r| r.info().name.clone())
            .or_else(|| lock(&self.raid_pending).get(name).cloned())
    }

    /// Whether bdev name `name` is in use: a bdev's, or a volume's being
    /// created. The caller holds the registry.
    pub(super) fn name_taken(&self, bdevs: &Registry, name: &str) -> bool {
        bdevs.contains_key(name) || lock(&self.raid_pending).contains_key(name)
    }

    /// The bdev `name` as a base for a volume: it exists, is no volume
    /// itself, and nothing holds it. `field` names the parameter.
    fn free_base(&self, bdevs: &Registry, field: &str, name: &str) -> Result<Arc<dyn Bdev>, AppError> {
        let entry = bdevs
            .get(name)
            .ok_or_else(|| AppError::NotFound(format!("{field}: bdev {name} does not exist")))?;
        if matches!(entry.driver, Driver::Raid1 { .. }) {
            return Err(AppError::Rejected(format!(
                "{field}: {name} is a raid bdev; a raid1 is built of malloc, null, uring or NVMe bdevs"
            )));
        }
        if let Some(holder) = self.holder(bdevs, name) {
            // SPDK: the claim fails with -EPERM.
            return Err(AppError::NotPermitted(format!(
                "{field}: bdev {name} is already claimed by {holder}"
            )));
        }
        Ok(entry.bdev.clone())
    }

    /// Creates raid1 volume `c.name` over its bases (`bdev_raid_create -r
    /// raid1`). Nothing changes when it is refused.
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] for a bad name; [`AppError::Exists`] for
    /// a taken name or UUID; [`AppError::NotFound`] for a missing base;
    /// [`AppError::NotPermitted`] for a base another volume or a namespace
    /// holds; [`AppError::Rejected`] for fewer than 2 bases, a base named
    /// twice, bases of different block sizes or too small.
    pub fn create_raid(&self, c: &RaidCreate) -> Result<String, AppError> {
        // The nil UUID is no identity (a superblock cannot carry it, and two
        // volumes would share it): as SPDK does, it means "none given".
        let given = RaidCreate {
            uuid: c.uuid.filter(|u| *u != [0u8; 16]),
            ..c.clone()
        };
        let c = &given;
        crate::config::check_bdev_name(&c.name)
            .map_err(|e| AppError::InvalidParams(format!("name `{}`: {e}", c.name)))?;
        // SPDK: -EINVAL for a name its superblock cannot hold.
        crate::config::check_raid_name(&c.name).map_err(|e| AppError::Rejected(format!("name `{}`: {e}", c.name)))?;
        if c.base_bdevs.len() < 2 {
            return Err(AppError::Rejected(format!(
                "base_bdevs: raid1 needs at least 2 base bdevs, got {}",
                c.base_bdevs.len()
            )));
        }
        for (i, b) in c.base_bdevs.iter().enumerate() {
            if b.is_empty() {
                return Err(AppError::Rejected(format!(
                    "base_bdevs[{i}]: a base bdev name cannot be empty"
                )));
            }
            if c.base_bdevs[..i].contains(b) {
                return Err(AppError::Rejected(format!("base_bdevs[{i}]: {b} is named twice")));
            }
        }
        // Checked and inserted under the registry's lock (which
        // add_namespace holds too): no base can be claimed or deleted, and
        // the name not taken, in between.
        let mut bdevs = lock(&self.bdevs);
        if self.name_taken(&bdevs, &c.name) {
            return Err(AppError::Exists(format!("name: bdev {} already exists", c.name)));
        }
        let uuid = c.uuid.unwrap_or_else(random_uuid);
        if let Some(e) = uuid_taken(&lock(&self.uuids), &uuid) {
            return Err(e);
        }
        let raid = if c.superblock {
            // A base that does not exist may be a member whose node is down
            // at a restart: the superblocks on the others decide.
            let mut bases = Vec::with_capacity(c.base_bdevs.len());
            let mut absent = None;
            for (i, b) in c.base_bdevs.iter().enumerate() {
                match self.free_base(&bdevs, &format!("base_bdevs[{i}]"), b) {
                    Ok(bdev) => bases.push(Some(bdev)),
                    Err(AppError::NotFound(m)) => {
                        absent.get_or_insert(m);
                        bases.push(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            // Its superblocks are read (and, new, written) with the registry
            // unlocked: a base that does not answer must not stall every
            // other bdev call for the I/O timeout. Its name and bases are
            // reserved meanwhile, so nothing else can take or delete them.
            let reserved = Reservation::new(self, c, uuid);
            drop(bdevs);
            let raid = self.create_with_superblock(c, uuid, bases, absent)?;
            bdevs = lock(&self.bdevs);
            drop(reserved);
            raid
        } else {
            let mut bases = Vec::with_capacity(c.base_bdevs.len());
            for (i, b) in c.base_bdevs.iter().enumerate() {
                bases.push(self.free_base(&bdevs, &format!("base_bdevs[{i}]"), b)?);
            }
            let params = Raid1Params {
                uuid: Some(uuid),
                superblock: false,
                options: self.raid_options(),
            };
            Raid1Bdev::create(&c.name, bases, params).map_err(from_raid)?
        };
        let raid = Arc::new(raid);
        // Assembled, it has its superblock's identity.
        let uuid = raid.info().uuid;
        if let Some(e) = uuid_taken(&lock(&self.uuids), &uuid) {
            return Err(e);
        }
        lock(&self.uuids).insert(uuid, c.name.clone());
        bdevs.insert(
            c.name.clone(),
            BdevEntry {
                bdev: raid.clone(),
                driver: Driver::Raid1 { raid },
                stats: Arc::default(),
            },
        );
        tracing::info!(raid = %c.name, bases = ?c.base_bdevs, superblock = c.superblock, "raid1 created");
        Ok(c.name.clone())
    }

    /// A volume with a superblock over `bases` (`None`: a base that does
    /// not exist; `absent` says so for the first): made new (and its
    /// superblock written) when no base holds one and every base exists,
    /// else assembled from the superblocks the bases hold, which must all be
    /// this volume's (`c.uuid` when given, else `c.name`). So a volume
    /// declared in the TOML file, or saved by `save_config`, comes back as
    /// it was at the stop, also with members missing or blank:
    ///
    /// - a member in sync is read at once, a stale one rebuilt first;
    /// - a member that does not exist (its node is down, its controller
    ///   not attached) leaves its slot empty: the volume runs degraded
    ///   while one member in sync is present, and the member comes back by
    ///   `bdev_raid_add_base_bdev` (rebuilt);
    /// - a base with no superblock whose uuid a missing slot records (a
    ///   replica that came back blank: the same namespace or file) takes
    ///   that slot back and is rebuilt, as `bdev_raid_add_base_bdev` would
    ///   do; it is never read before its rebuild ends. Another bdev without
    ///   a superblock is refused: it may hold someone's data.
    ///
    /// Called with the volume's name and bases reserved and the registry
    /// unlocked.
    fn create_with_superblock(
        &self,
        c: &RaidCreate,
        uuid: [u8; 16],
        bases: Vec<Option<Arc<dyn Bdev>>>,
        absent: Option<String>,
    ) -> Result<Raid1Bdev, AppError> {
        let home = self.raid_reactor(&c.name)?;
        let mut found: Vec<(usize, Superblock)> = Vec::new();
        let mut blank: Vec<usize> = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            let Some(b) = b else { continue };
            match read_superblock(b, home, SUPERBLOCK_IO_TIMEOUT) {
                Ok(Some(sb)) => found.push((i, sb)),
                Ok(None) => blank.push(i),
                Err(e) => return Err(AppError::Failed(format!("base_bdevs[{i}]: {e}"))),
            }
        }
        if found.is_empty() {
            // A new volume: every base must be there.
            if let Some(m) = absent {
                return Err(AppError::NotFound(m));
            }
            let params = Raid1Params {
                uuid: Some(uuid),
                superblock: true,
                options: self.raid_options(),
            };
            let raid = Raid1Bdev::create(&c.name, bases.into_iter().flatten().collect(), params).map_err(from_raid)?;
            raid.write_superblock(home, SUPERBLOCK_IO_TIMEOUT).map_err(from_raid)?;
            return Ok(raid);
        }
        for (i, sb) in &found {
            let ours = match c.uuid {
                Some(u) => sb.uuid == u,
                None => sb.name == c.name,
            };
            if !ours {
                // SPDK: -EEXIST for a base holding another raid's superblock.
                return Err(AppError::Exists(format!(
                    "base_bdevs[{i}]: bdev {} holds the superblock of raid {} ({}); it is not free for raid {}",
                    c.base_bdevs[*i],
                    sb.name,
                    UuidText(sb.uuid),
                    c.name
                )));
            }
        }
        let list: Vec<Found> = found
            .iter()
            .filter_map(|(i, sb)| Some((bases[*i].as_ref()?.info().uuid, sb.clone())))
            .collect();
        let assembly = assemble(&list).map_err(|e| AppError::Rejected(format!("base_bdevs: {e}")))?;
        if assembly.superblock.name != c.name {
            return Err(AppError::Rejected(format!(
                "name: the bases' superblock names this raid {}",
                assembly.superblock.name
            )));
        }
        // A blank base is taken back only into the slot recorded for it (by
        // its uuid: the same namespace or file, come back without its data);
        // any other bdev without a superblock may hold someone's data.
        for &i in &blank {
            let Some(b) = &bases[i] else { continue };
            let recorded = assembly
                .slots
                .iter()
                .any(|s| matches!(s, SlotState::Missing { record } if record.uuid == b.info().uuid));
            if !recorded {
                return Err(AppError::Rejected(format!(
                    "base_bdevs[{i}]: bdev {} has no superblock while the others hold raid {}'s, and no slot of the \
                     raid records it; create the raid over its members, then add it (bdev_raid_add_base_bdev)",
                    c.base_bdevs[i], c.name
                )));
            }
        }
        let members: Vec<Arc<dyn Bdev>> = found.iter().filter_map(|(i, _)| bases[*i].clone()).collect();
        let raid = Raid1Bdev::from_assembly(&assembly, members, self.raid_options(), home).map_err(from_raid)?;
        for i in blank {
            let Some(b) = &bases[i] else { continue };
            raid.add_base(b.clone(), home).map_err(|e| {
                AppError::Rejected(format!(
                    "base_bdevs[{i}]: bdev {} came back without its superblock and cannot be rebuilt: {e}",
                    c.base_bdevs[i]
                ))
            })?;
            tracing::warn!(raid = %c.name, base = %c.base_bdevs[i], "a member came back without its superblock; rebuilding it");
        }
        for (i, b) in bases.iter().enumerate() {
            if b.is_none() {
                tracing::warn!(raid = %c.name, base = %c.base_bdevs[i], "base bdev absent at assembly; its slot stays empty (the volume is degraded)");
            }
        }
        tracing::info!(raid = %c.name, seq = assembly.superblock.seq_number, "raid1 assembled from its superblocks");
        Ok(raid)
    }

    /// Deletes volume `name` (`bdev_raid_delete`); its bases are free again.
    /// With `clear_sb`, the superblock on each base is zeroed first, so the
    /// bases no longer assemble into it (SPDK's `-c/--clear-sb`).
    ///
    /// # Errors
    /// [`AppError::NotFound`] when there is no such volume;
    /// [`AppError::Busy`] when it is a namespace (remove that first: a host
    /// would lose its volume); [`AppError::Failed`] when a superblock could
    /// not be zeroed (the volume stays, to be deleted again).
    pub fn delete_raid(&self, name: &str, clear_sb: bool) -> Result<(), AppError> {
        let mut bdevs = lock(&self.bdevs);
        let raid = match bdevs.get(name).map(|e| &e.driver) {
            Some(Driver::Raid1 { raid }) => raid.clone(),
            _ => return Err(AppError::NotFound(format!("name: raid bdev {name} not found"))),
        };
        if let Some((nqn, nsid)) = self.claims(name).into_iter().next() {
            return Err(AppError::Busy(format!(
                "name: raid bdev {name} is namespace {nsid} of {nqn}; remove the namespace first (nvmf_subsystem_remove_ns)"
            )));
        }
        if clear_sb {
            // No host writes (it is no namespace); a rebuild still running
            // stops when the volume is dropped below.
            raid.wipe_superblock(self.raid_reactor(name)?, SUPERBLOCK_IO_TIMEOUT)
                .map_err(|e| AppError::Failed(format!("clear_sb: {e}")))?;
        }
        bdevs.remove(name);
        lock(&self.uuids).remove(&raid.info().uuid);
        drop(bdevs);
        // Its rebuild, if one runs, stops when the volume is dropped.
        drop(raid);
        tracing::info!(raid = name, "raid1 deleted");
        Ok(())
    }

    /// Takes base bdev `base` out of the volume that holds it
    /// (`bdev_raid_remove_base_bdev`): its slot is empty, the volume runs
    /// degraded, and the bdev is free.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when no volume holds `base`; [`AppError::Busy`]
    /// when it is the volume's last operational base.
    pub fn raid_remove_base(&self, base: &str) -> Result<(), AppError> {
        let bdevs = lock(&self.bdevs);
        let raid = volume_of_base(&bdevs, base)
            .ok_or_else(|| AppError::NotFound(format!("name: bdev {base} is not a base bdev of any raid")))?;
        raid.remove_base(base).map_err(from_raid)?;
        tracing::info!(raid = %raid.info().name, base, "base bdev removed");
        Ok(())
    }

    /// Puts bdev `base` into an empty slot of volume `raid_name`
    /// (`bdev_raid_add_base_bdev`) and starts its rebuild.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the volume or the bdev;
    /// [`AppError::NotPermitted`] when a namespace or a volume holds the
    /// bdev; [`AppError::Exists`] when the volume has a superblock and the
    /// bdev holds another volume's; [`AppError::Busy`] when every slot is full;
    /// [`AppError::Rejected`] for a bdev smaller than the volume or of
    /// another block size, or an offline volume.
    pub fn raid_add_base(&self, raid_name: &str, base: &str) -> Result<(), AppError> {
        let bdevs = lock(&self.bdevs);
        let raid = match bdevs.get(raid_name).map(|e| &e.driver) {
            Some(Driver::Raid1 { raid }) => raid.clone(),
            _ => {
                return Err(AppError::NotFound(format!(
                    "raid_bdev: raid bdev {raid_name} is not found in config"
                )));
            }
        };
        let bdev = self.free_base(&bdevs, "base_bdev", base)?;
        let reactor = self.raid_reactor(raid_name)?;
        if raid.status().superblock {
            // SPDK reads the new base's superblock first and refuses one of
            // another raid (-EEXIST): the rebuild would overwrite that raid's
            // member. This raid's own (a member coming back) is rebuilt.
            match read_superblock(&bdev, reactor, SUPERBLOCK_IO_TIMEOUT) {
                Ok(Some(sb)) if sb.uuid != raid.info().uuid => {
                    return Err(AppError::Exists(format!(
                        "base_bdev: bdev {base} holds the superblock of raid {} ({}); it is not free for raid {raid_name}",
                        sb.name,
                        UuidText(sb.uuid)
                    )));
                }
                Ok(_) => {}
                Err(e) => return Err(AppError::Failed(format!("base_bdev: {base}: {e}"))),
            }
        }
        raid.add_base(bdev, reactor).map_err(from_raid)?;
        tracing::info!(raid = raid_name, base, "base bdev added; rebuild started");
        Ok(())
    }

    /// Takes every volume out of the registry (at shutdown, before the
    /// remote controllers their bases may be on are detached): a running
    /// rebuild stops when its volume is dropped.
    pub(super) fn drop_raids(&self) {
        let mut bdevs = lock(&self.bdevs);
        let names: Vec<String> = bdevs
            .iter()
            .filter(|(_, e)| matches!(e.driver, Driver::Raid1 { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        let mut uuids = lock(&self.uuids);
        for n in names {
            if let Some(e) = bdevs.remove(&n) {
                uuids.remove(&e.bdev.info().uuid);
            }
        }
    }

    /// The reactor a volume's rebuild and superblock writes run on: one
    /// picked by the volume's name, so that several volumes spread over
    /// the cores.
    fn raid_reactor(&self, raid: &str) -> Result<&lull_reactor::ReactorHandle, AppError> {
        let n = self.handles.len();
        if n == 0 {
            return Err(AppError::Failed("no reactor to run a rebuild on".into()));
        }
        let pick = raid
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)))
            % n;
        Ok(&self.handles[pick])
    }
}
