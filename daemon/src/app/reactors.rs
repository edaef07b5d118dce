//! The reactors as the control plane sees them: the supervisor's policy and
//! thresholds, the hybrid spin window, per-reactor status, and questions
//! asked of every reactor.

use std::time::{Duration, Instant};

use lull_reactor::supervisor::SupervisorConfig;
use lull_reactor::{Mode, ReactorHandle, StatsSnapshot};

use super::{App, AppError, lock};

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

impl App {
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

    /// Per reactor (in order): (commands, total ns) of asynchronous bdev
    /// commands completed there; `None` for a reactor that did not answer in 1 s.
    pub fn async_latency(&self) -> Vec<Option<(u64, u64)>> {
        self.ask_each(lull_engine::nvmf::io::async_latency)
    }

    pub(super) fn ask_each<T: Send + 'static>(&self, f: fn() -> T) -> Vec<Option<T>> {
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
}
