//! The NVMe/TCP initiator's control: its options, what it offers in
//! DH-HMAC-CHAP, and remote controllers attached as bdevs (`bdev_nvme_*`).

use std::sync::Arc;

use lull_engine::initiator::{DhchapOffer, NsInfo, NvmeBdev, NvmeController, NvmeOptions, NvmeTrid};

use super::{App, AppError, BdevEntry, Driver, lock};

/// An attached NVMe controller and the bdevs made of its namespaces.
pub struct NvmeEntry {
    /// The controller.
    pub ctrlr: NvmeController,
    /// Its bdevs (`<name>n<nsid>`).
    pub bdevs: Vec<String>,
}

impl App {
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

    /// The hashes and groups the initiator offers (attaches from now on).
    pub fn dhchap_offer(&self) -> DhchapOffer {
        lock(&self.dhchap_offer).clone()
    }

    /// Sets what the initiator offers (`bdev_nvme_set_options
    /// dhchap_digests / dhchap_dhgroups`); controllers attached keep theirs.
    pub fn set_dhchap_offer(&self, offer: DhchapOffer) {
        *lock(&self.dhchap_offer) = offer;
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
            if let Some((taken, _)) = made.iter().find(|(n, _)| self.name_taken(&bdevs, n)) {
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
        // A controller whose reconnects gave up is deleted with its bdevs,
        // as SPDK's bdev_nvme does once ctrlr_loss_timeout_sec has passed.
        let (weak, cname) = (self.me.clone(), name.to_string());
        ctrlr.on_lost(Arc::new(move |why| {
            if let Some(app) = weak.upgrade() {
                app.controller_lost(&cname, why);
            }
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
    fn sync_nvme_bdevs(&self, name: &str, list: &[NsInfo]) {
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
            if self.name_taken(&bdevs, &bname) {
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
    /// [`AppError::NotFound`]; [`AppError::Busy`] when one of its bdevs is
    /// a raid's base.
    pub fn detach_controller(&self, name: &str) -> Result<(), AppError> {
        let mut nvme = lock(&self.nvme);
        let Some(entry) = nvme.get(name) else {
            return Err(AppError::NotFound(format!("NVMe controller {name} does not exist")));
        };
        // A raid's base goes out of the raid first, as a deleted bdev does.
        {
            let bdevs = lock(&self.bdevs);
            for b in &entry.bdevs {
                if let Some(raid) = self.raid_holding(&bdevs, b) {
                    return Err(AppError::Busy(format!(
                        "bdev {b} of NVMe controller {name} is a base bdev of raid {raid}; remove it first (bdev_raid_remove_base_bdev {b})"
                    )));
                }
            }
        }
        let Some(e) = nvme.remove(name) else {
            return Err(AppError::NotFound(format!("NVMe controller {name} does not exist")));
        };
        drop(nvme);
        for b in &e.bdevs {
            let mut bdevs = lock(&self.bdevs);
            bdevs.remove(b);
            self.unclaim(b);
        }
        e.ctrlr.detach();
        Ok(())
    }

    /// Deletes controller `name` after it was lost (`ctrlr_loss_timeout_sec`
    /// passed without a reconnect), as SPDK's bdev_nvme does: each of its
    /// bdevs leaves the volume it is a base of (which goes on degraded) and
    /// the namespaces that export it, then the controller is detached. A
    /// volume's last base stays (the volume fails I/O, and says so) and then
    /// so does its controller. Runs on the controller's reset thread.
    fn controller_lost(&self, name: &str, why: &str) {
        let bdevs = match lock(&self.nvme).get(name) {
            // Only the controller that was lost: not a new one attached
            // under the same name since.
            Some(e) if matches!(e.ctrlr.state(), lull_engine::initiator::CtrlrState::Lost(_)) => e.bdevs.clone(),
            _ => return,
        };
        for b in &bdevs {
            if self.raid_of_base(b).is_some()
                && let Err(e) = self.raid_remove_base(b)
            {
                tracing::warn!(ctrlr = name, bdev = %b, error = %e, "lost controller's bdev stays in its volume");
            }
        }
        match self.detach_controller(name) {
            Ok(()) => {
                tracing::warn!(ctrlr = name, %why, bdevs = ?bdevs, "NVMe controller lost: deleted with its bdevs")
            }
            Err(e) => tracing::warn!(ctrlr = name, %why, error = %e, "NVMe controller lost, and kept"),
        }
    }

    /// Attached controllers: (name, controller, bdevs).
    pub fn controllers(&self) -> Vec<(String, NvmeController, Vec<String>)> {
        lock(&self.nvme)
            .iter()
            .map(|(k, v)| (k.clone(), v.ctrlr.clone(), v.bdevs.clone()))
            .collect()
    }
}
