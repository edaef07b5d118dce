//! The running supervisor: [`start`] puts a [`Supervisor`] on the first
//! reactor of a set as a timed poller; [`SupervisorHandle`] changes its
//! settings from any thread.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::decide::Supervisor;
use super::policy::SupervisorConfig;
use crate::channel::Sender;
use crate::context::Context;
use crate::context::ReactorHandle;
use crate::error::{ReactorError, TrySendError};
use crate::poller::PollStatus;
use crate::reactors::Reactors;
use crate::stats::StatsSnapshot;

/// Commands to a running supervisor.
enum Command {
    SetConfig(SupervisorConfig),
}

/// Control of a running supervisor, from any thread.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: Sender<Command>,
    switches: Arc<AtomicU64>,
    config: Arc<Mutex<SupervisorConfig>>,
}

impl SupervisorHandle {
    /// Replaces the settings (policy, thresholds) at run time; applied at the
    /// supervisor's next sample.
    ///
    /// # Errors
    /// [`ReactorError::InvalidSetting`] before anything changes;
    /// [`ReactorError::Io`]: `NotConnected` once the reactors have stopped,
    /// `TimedOut` if the supervisor's reactor has not taken a request in 5 s.
    pub fn set_config(&self, config: SupervisorConfig) -> Result<(), ReactorError> {
        config.validate()?;
        let mut pending = Command::SetConfig(config);
        // A full queue means a burst of setting changes; wait a while for room
        // (a control-plane thread, never a reactor, calls this).
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.tx.try_send(pending) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(c)) if std::time::Instant::now() < give_up => {
                    pending = c;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(_)) => {
                    return Err(ReactorError::io(
                        "supervisor",
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
                Err(TrySendError::Stopped(_)) => {
                    return Err(ReactorError::io(
                        "supervisor",
                        std::io::Error::from(std::io::ErrorKind::NotConnected),
                    ));
                }
            }
        }
    }

    /// The settings in force.
    pub fn config(&self) -> SupervisorConfig {
        self.config.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Mode changes made so far.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }
}

/// Starts the supervisor on the first reactor of `reactors`. Static policies
/// take effect at its first sample (within one interval).
///
/// # Errors
/// [`ReactorError::InvalidSetting`] for a bad config; an I/O error if the
/// first reactor does not answer.
pub fn start(reactors: &Reactors, config: SupervisorConfig) -> Result<SupervisorHandle, ReactorError> {
    let sup = Supervisor::new(config.clone())?;
    let switches = Arc::new(AtomicU64::new(0));
    let shown = Arc::new(Mutex::new(config.clone()));
    let (reply_tx, reply_rx) = std::sync::mpsc::channel();
    let first = reactors.handles().first().ok_or(ReactorError::UnknownPoller)?;
    let (sw, sh) = (switches.clone(), shown.clone());
    first
        .try_send(move |cx| {
            let sup = Rc::new(RefCell::new(sup));
            let s2 = sup.clone();
            let tx = cx.channel(16, move |_cx: &mut Context, cmd: Command| {
                let Command::SetConfig(c) = cmd;
                if let Ok(mut shown) = sh.lock() {
                    *shown = c.clone();
                }
                let _ = s2.borrow_mut().set_config(c);
            });
            let registered = cx.register_timed(config.interval, move |cx: &mut Context, _| {
                let peers: Vec<ReactorHandle> = cx.peers().to_vec();
                let snaps: Vec<StatsSnapshot> = peers.iter().map(ReactorHandle::stats).collect();
                let decisions = sup.borrow_mut().sample(&snaps);
                let interval = sup.borrow().config().interval;
                if let Some(id) = cx.current_poller() {
                    let _ = cx.set_period(id, interval);
                }
                for d in &decisions {
                    let spin_us = d.spin_window.map(|w| w.as_micros() as u64);
                    let ioq_period_us = d.queue_period.map(|p| p.as_micros() as u64);
                    tracing::info!(core = d.core, from = %d.from, to = %d.to, spin_us, ioq_period_us, reason = %d.reason, "supervisor: reactor mode change");
                    // The window first: a reactor entering hybrid spins as asked from its first idle loop.
                    peers[d.index].set_spin_window(d.spin_window);
                    // The queues read the period at their next event.
                    peers[d.index].set_queue_period(d.queue_period);
                    peers[d.index].set_mode(d.to);
                    if d.from != d.to {
                        sw.fetch_add(1, Ordering::Relaxed);
                    }
                }
                PollStatus::from_work(!decisions.is_empty())
            });
            let _ = reply_tx.send(registered.map(|_| tx));
        })
        .map_err(|_| ReactorError::io("supervisor start", std::io::Error::from(std::io::ErrorKind::WouldBlock)))?;
    let tx = reply_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| ReactorError::io("supervisor start", std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    Ok(SupervisorHandle {
        tx,
        switches,
        config: shown,
    })
}
