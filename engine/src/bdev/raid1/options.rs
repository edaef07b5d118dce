//! The rebuild process's settings, SPDK's `bdev_raid_set_options`:
//! `process_window_size_kb` (how much is copied, and locked against writes,
//! at a time) and `process_max_bandwidth_mb_sec` (the copy's rate limit).
//! A volume keeps them in atomics so a running rebuild picks a change up at
//! its next window.

use std::sync::atomic::{AtomicU32, Ordering};

use super::Raid1Error;

/// SPDK's default window: 1024 KiB.
pub const DEFAULT_PROCESS_WINDOW_SIZE_KB: u32 = 1024;

/// Largest window accepted: 1 GiB (a window is one read buffer).
pub const MAX_PROCESS_WINDOW_SIZE_KB: u32 = 1024 * 1024;

/// Settings of a volume's background process (rebuild).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raid1Options {
    /// KiB copied per window (at least one block is copied whatever this is).
    pub process_window_size_kb: u32,
    /// Most MiB per second the copy may move; 0 = unlimited.
    pub process_max_bandwidth_mb_sec: u32,
}

impl Default for Raid1Options {
    fn default() -> Self {
        Raid1Options {
            process_window_size_kb: DEFAULT_PROCESS_WINDOW_SIZE_KB,
            process_max_bandwidth_mb_sec: 0,
        }
    }
}

impl Raid1Options {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Raid1Error::InvalidOption`] naming `process_window_size_kb` when it
    /// is 0 or above [`MAX_PROCESS_WINDOW_SIZE_KB`].
    pub fn check(&self) -> Result<(), Raid1Error> {
        if self.process_window_size_kb == 0 || self.process_window_size_kb > MAX_PROCESS_WINDOW_SIZE_KB {
            return Err(Raid1Error::InvalidOption {
                field: "process_window_size_kb",
                value: self.process_window_size_kb.to_string(),
                allowed: "1 to 1048576 KiB",
            });
        }
        Ok(())
    }

    /// The window in blocks of `block_size` bytes (at least one).
    pub fn window_blocks(&self, block_size: u32) -> u64 {
        (u64::from(self.process_window_size_kb) * 1024 / u64::from(block_size.max(1))).max(1)
    }
}

/// [`Raid1Options`] shared between the control plane and the rebuild.
#[derive(Debug)]
pub(super) struct OptionsCell {
    window_kb: AtomicU32,
    max_mb_sec: AtomicU32,
}

impl OptionsCell {
    pub(super) fn new(o: Raid1Options) -> Self {
        OptionsCell {
            window_kb: AtomicU32::new(o.process_window_size_kb),
            max_mb_sec: AtomicU32::new(o.process_max_bandwidth_mb_sec),
        }
    }

    pub(super) fn get(&self) -> Raid1Options {
        Raid1Options {
            process_window_size_kb: self.window_kb.load(Ordering::Relaxed),
            process_max_bandwidth_mb_sec: self.max_mb_sec.load(Ordering::Relaxed),
        }
    }

    pub(super) fn set(&self, o: Raid1Options) {
        self.window_kb.store(o.process_window_size_kb, Ordering::Relaxed);
        self.max_mb_sec.store(o.process_max_bandwidth_mb_sec, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_spdks_and_windows_are_whole_blocks() {
        let o = Raid1Options::default();
        assert_eq!((o.process_window_size_kb, o.process_max_bandwidth_mb_sec), (1024, 0));
        assert_eq!(o.window_blocks(512), 2048);
        assert_eq!(o.window_blocks(4096), 256);
        let tiny = Raid1Options {
            process_window_size_kb: 1,
            ..o
        };
        assert_eq!(tiny.window_blocks(4096), 1, "at least one block");
        assert!(tiny.check().is_ok());
        let zero = Raid1Options {
            process_window_size_kb: 0,
            ..o
        };
        assert!(matches!(
            zero.check(),
            Err(Raid1Error::InvalidOption {
                field: "process_window_size_kb",
                ..
            })
        ));
    }
}
