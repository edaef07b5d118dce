//! The live settings as one snapshot ([`Live`]), read and changed through
//! the settings table: what `lull_set_options`, `lull_supervisor_set_config`,
//! `bdev_nvme_set_options` and `bdev_raid_set_options` apply.

use lull_reactor::ReactorError;

use super::{App, AppError};
use crate::settings::{Changes, Live, Part};

impl App {
    /// Every live setting now.
    pub fn live(&self) -> Live {
        Live {
            supervisor: self.supervisor(),
            idle_poll: self.idle_poll(),
            nvme: self.nvme_options(),
            raid: self.raid_options(),
        }
    }

    /// Applies `changes`. Everything is checked first, the rules between
    /// settings included, so a refused change changes nothing; then the
    /// spin window, the initiator's options and the supervisor's settings
    /// are set, each as an atomic read-modify-write. A fixed policy newly
    /// set (poll, interrupt, hybrid) is applied to every reactor at once
    /// rather than at the supervisor's next sample.
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] naming the setting, its value and what
    /// is allowed; [`AppError::Failed`] when the supervisor cannot take it.
    pub fn change_live(&self, changes: &Changes) -> Result<(), AppError> {
        let invalid = |e: String| AppError::InvalidParams(e);
        let mut next = self.live();
        changes.apply(&mut next).map_err(|e| invalid(e.to_string()))?;
        next.supervisor.validate().map_err(|e| invalid(e.to_string()))?;
        next.nvme.validate().map_err(invalid)?;
        next.raid.check().map_err(|e| invalid(e.to_string()))?;
        if changes.touches(Part::Reactors) {
            self.set_idle_poll(next.idle_poll)?;
        }
        // Each part is changed on the value it holds now (not on `next`),
        // so a change made meanwhile to another setting of it is kept.
        if changes.touches(Part::Initiator) {
            self.update_nvme_options(|o| {
                let mut l = Live {
                    nvme: o.clone(),
                    ..next.clone()
                };
                if changes.apply(&mut l).is_ok() {
                    *o = l.nvme;
                }
            })?;
        }
        if changes.touches(Part::Raid) {
            self.update_raid_options(|o| {
                let mut l = Live {
                    raid: *o,
                    ..next.clone()
                };
                if changes.apply(&mut l).is_ok() {
                    *o = l.raid;
                }
            })?;
        }
        if changes.touches(Part::Supervisor) || changes.touches(Part::Shorthand) {
            let (before, after) = self.update_supervisor(|sup| {
                let mut l = Live {
                    supervisor: sup.clone(),
                    ..next.clone()
                };
                changes.apply(&mut l).map_err(|e| invalid(e.to_string()))?;
                l.supervisor
                    .validate()
                    .map_err(|e: ReactorError| invalid(e.to_string()))?;
                *sup = l.supervisor;
                Ok(())
            })?;
            if let Some(m) = after.policy.fixed_mode()
                && after.policy != before.policy
            {
                for h in self.handles() {
                    h.set_mode(m);
                }
            }
        }
        Ok(())
    }
}
