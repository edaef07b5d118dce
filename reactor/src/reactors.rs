//! [`Reactors`]: start one pinned reactor per core of a core list, and stop
//! them all.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::context::Context;
use crate::context::{ReactorHandle, ReactorShared};
use crate::cores::CoreList;
use crate::error::ReactorError;
use crate::mode::{MAX_IDLE_POLL, Mode};
use crate::shared::Shared;

/// Default hybrid spin window (`idle_poll_us`), see docs/architecture.md.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_micros(200);
/// Default inbox capacity per reactor, in messages.
pub const DEFAULT_INBOX_CAPACITY: usize = 4096;

/// How to start a set of reactors.
#[derive(Clone, Debug)]
pub struct ReactorConfig {
    /// One reactor per core, in this order.
    pub cores: CoreList,
    /// The mode every reactor starts in.
    pub mode: Mode,
    /// Hybrid mode's spin window after the last useful work (`idle_poll_us`).
    pub idle_poll: Duration,
    /// Messages an inbox holds before `try_send` reports `Full`.
    pub inbox_capacity: usize,
    /// Pin each reactor thread to its core (on by default; off only for tests
    /// that run more reactors than a machine has CPUs).
    pub pin: bool,
}

impl ReactorConfig {
    /// Poll mode (the `interrupt_mode = false` default), defaults for the rest.
    pub fn new(cores: CoreList) -> Self {
        ReactorConfig {
            cores,
            mode: Mode::Poll,
            idle_poll: DEFAULT_IDLE_POLL,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            pin: true,
        }
    }

    /// Sets the starting mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets `idle_poll_us`.
    pub fn idle_poll(mut self, idle_poll: Duration) -> Self {
        self.idle_poll = idle_poll;
        self
    }

    /// Sets the inbox capacity.
    pub fn inbox_capacity(mut self, capacity: usize) -> Self {
        self.inbox_capacity = capacity;
        self
    }

    fn validate(&self) -> Result<(), ReactorError> {
        if self.idle_poll > MAX_IDLE_POLL {
            return Err(ReactorError::InvalidSetting {
                field: "idle_poll_us",
                value: self.idle_poll.as_micros().to_string(),
                allowed: "0 to 1000000 microseconds",
            });
        }
        if self.inbox_capacity == 0 || self.inbox_capacity > 1 << 24 {
            return Err(ReactorError::InvalidSetting {
                field: "inbox_capacity",
                value: self.inbox_capacity.to_string(),
                allowed: "1 to 16777216 messages",
            });
        }
        if self.pin {
            self.cores.validate_online()?;
        }
        Ok(())
    }
}

/// A running set of reactors, one thread per core. Dropping it stops them.
pub struct Reactors {
    handles: Arc<[ReactorHandle]>,
    threads: Vec<(usize, JoinHandle<()>)>,
}

impl Reactors {
    /// Validates the config, then starts and pins one reactor per core. Returns
    /// once every reactor is running.
    ///
    /// # Errors
    /// [`ReactorError::Cores`] for an unusable core, [`ReactorError::InvalidSetting`],
    /// [`ReactorError::Pin`] or [`ReactorError::Io`] when a reactor cannot start
    /// (the ones already started are stopped again).
    pub fn start(config: ReactorConfig) -> Result<Reactors, ReactorError> {
        config.validate()?;
        let shared: Vec<Arc<ReactorShared>> = config
            .cores
            .cores()
            .iter()
            .enumerate()
            .map(|(i, &core)| Shared::new(core, i, config.mode, config.idle_poll, config.inbox_capacity).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(|e| ReactorError::io("eventfd", e))?;
        let handles: Arc<[ReactorHandle]> = shared.iter().map(|s| ReactorHandle { shared: s.clone() }).collect();
        let mut set = Reactors {
            handles: handles.clone(),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ReactorError>>();
        for s in shared {
            let core = s.core;
            let peers = handles.clone();
            let ready = ready_tx.clone();
            let pin = config.pin;
            let spawned = std::thread::Builder::new()
                .name(format!("reactor_{core}"))
                .spawn(move || {
                    if pin && let Err(source) = crate::sys::pin_current_thread(core) {
                        let _ = ready.send(Err(ReactorError::Pin { core, source }));
                        return;
                    }
                    // Timed pollers run at 100 us periods; the kernel's default
                    // 50 us slack would stretch each sleep by up to half of one.
                    crate::sys::tight_timer_slack();
                    match Context::new(s, peers) {
                        Ok(cx) => {
                            let _ = ready.send(Ok(()));
                            drop(ready);
                            cx.run();
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                });
            match spawned {
                Ok(t) => set.threads.push((core, t)),
                Err(e) => {
                    let _ = set.stop_and_join();
                    return Err(ReactorError::io("spawn reactor thread", e));
                }
            }
        }
        drop(ready_tx);
        for _ in 0..set.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = set.stop_and_join();
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        Ok(set)
    }

    /// Handles to every reactor, in core-list order.
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// The handle of the reactor on `core`.
    pub fn on_core(&self, core: usize) -> Option<&ReactorHandle> {
        self.handles.iter().find(|h| h.core() == core)
    }

    /// Switches every reactor to `mode`.
    pub fn set_mode(&self, mode: Mode) {
        for h in self.handles.iter() {
            h.set_mode(mode);
        }
    }

    /// Stops every reactor, sleeping or not, and joins its thread. Pollers,
    /// timers and channels are dropped on their own threads; queued messages
    /// are dropped unrun.
    ///
    /// # Errors
    /// [`ReactorError::Panicked`] naming the first reactor whose thread panicked.
    pub fn shutdown(mut self) -> Result<(), ReactorError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ReactorError> {
        for h in self.handles.iter() {
            h.request_stop();
        }
        let mut result = Ok(());
        let me = std::thread::current().id();
        for (core, t) in self.threads.drain(..) {
            if t.thread().id() == me {
                // Dropped on one of its own reactors: that thread ends when this
                // call returns to its loop, which sees the stop flag.
                continue;
            }
            if t.join().is_err() && result.is_ok() {
                result = Err(ReactorError::Panicked { core });
            }
        }
        result
    }
}

impl Drop for Reactors {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
