//! The graceful stop: no new connections or commands, running I/O drains,
//! then connections, remote controllers and reactors close.

use std::time::{Duration, Instant};

use super::{App, Driver, lock};

/// How long a graceful shutdown waits for running I/O commands.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

impl App {
    /// Stops gracefully: no new connections, no new I/O commands started,
    /// running ones finish (up to [`SHUTDOWN_DRAIN`]), bdevs flushed,
    /// controllers' connections closed, raid volumes (and their rebuilds)
    /// stopped, remote controllers detached, reactors
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
                && let Err(err) = lull_engine::bdev::flush_blocking(e.bdev.as_ref())
            {
                tracing::warn!(bdev = %name, error = %err, "flush at shutdown failed");
            }
        }
        self.target.disconnect_all();
        // Give the reactors a moment to send the FINs of the closed queues.
        std::thread::sleep(Duration::from_millis(20));
        // Volumes first: their bases may be remote namespaces, and a
        // controller holding a volume's base is not detached otherwise.
        self.drop_raids();
        let names: Vec<String> = lock(&self.nvme).keys().cloned().collect();
        for n in names {
            let _ = self.detach_controller(&n);
        }
        if let Err(e) = reactors.shutdown() {
            tracing::warn!(error = %e, "reactor shutdown");
        }
        tracing::info!("shut down");
    }

    /// Asynchronous I/O commands running on all reactors (asked of each).
    pub(super) fn inflight(&self) -> usize {
        let answers = self.ask_each(lull_engine::nvmf::io::inflight);
        // A reactor that does not answer counts as busy.
        answers.iter().map(|a| a.unwrap_or(1)).sum()
    }
}
