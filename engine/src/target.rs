//! The NVMe-oF target: its subsystems, controllers and listeners, and
//! starting it on a set of reactors.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use lull_reactor::Reactors;
use lull_transport::conn::{HandlerFactory, Listener};
use lull_transport::target::TargetQueueConfig;

use crate::controller::{Controller, QueueBinding};
use crate::logpage::{self, ListenerEntry};
use crate::subsystem::Subsystem;

/// Highest CNTLID of the dynamic controller model (NVMe-oF 1.1: FFEFh).
const MAX_CNTLID: u16 = 0xFFEF;

struct Registry {
    subsystems: Vec<Arc<Subsystem>>,
    controllers: HashMap<u16, Arc<Controller>>,
    next_cntlid: u16,
    listeners: Vec<ListenerEntry>,
    genctr: u64,
}

/// An NVMe-oF target (one per process).
pub struct Target {
    queue_config: TargetQueueConfig,
    registry: Mutex<Registry>,
}

impl Target {
    /// An empty target (only the discovery subsystem) with these transport settings.
    pub fn new(queue_config: TargetQueueConfig) -> Arc<Target> {
        Arc::new(Target {
            queue_config,
            registry: Mutex::new(Registry {
                subsystems: vec![Arc::new(Subsystem::discovery())],
                controllers: HashMap::new(),
                next_cntlid: 1,
                listeners: Vec::new(),
                genctr: 1,
            }),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport settings every queue gets.
    pub fn queue_config(&self) -> &TargetQueueConfig {
        &self.queue_config
    }

    /// Adds a subsystem.
    ///
    /// # Errors
    /// A message when its NQN is taken.
    pub fn add_subsystem(&self, s: Subsystem) -> Result<(), String> {
        let mut r = self.registry();
        if r.subsystems.iter().any(|x| x.nqn == s.nqn) {
            return Err(format!("subsystem {} already exists", s.nqn));
        }
        r.subsystems.push(Arc::new(s));
        r.genctr += 1;
        Ok(())
    }

    /// The subsystem with this NQN (the discovery subsystem included).
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        self.registry().subsystems.iter().find(|s| s.nqn == nqn).cloned()
    }

    /// Every subsystem, the discovery subsystem first.
    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.registry().subsystems.clone()
    }

    pub(crate) fn new_controller(
        &self,
        subsystem: Arc<Subsystem>,
        make: impl FnOnce(u16, Arc<Subsystem>) -> Controller,
    ) -> Option<Arc<Controller>> {
        let mut r = self.registry();
        // Next free CNTLID, wrapping within 1..=FFEFh.
        let start = r.next_cntlid;
        let mut id = start;
        while r.controllers.contains_key(&id) {
            id = if id >= MAX_CNTLID { 1 } else { id + 1 };
            if id == start {
                return None;
            }
        }
        r.next_cntlid = if id >= MAX_CNTLID { 1 } else { id + 1 };
        let ctrl = Arc::new(make(id, subsystem));
        r.controllers.insert(id, ctrl.clone());
        Some(ctrl)
    }

    /// The live controller with this CNTLID.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.registry().controllers.get(&cntlid).cloned()
    }

    /// Number of live controllers.
    pub fn controller_count(&self) -> usize {
        self.registry().controllers.len()
    }

    pub(crate) fn remove_controller(&self, cntlid: u16) {
        self.registry().controllers.remove(&cntlid);
    }

    /// The discovery log page for `hostnqn`.
    pub fn discovery_log(&self, hostnqn: &str) -> Vec<u8> {
        let r = self.registry();
        let subs: Vec<&Subsystem> = r.subsystems.iter().map(AsRef::as_ref).collect();
        logpage::discovery(r.genctr, &subs, &r.listeners, hostnqn)
    }

    /// Binds `addr` and serves it from the first reactor of `reactors`;
    /// connections are spread over all of them, round robin.
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound or served.
    pub fn listen(self: &Arc<Self>, reactors: &Reactors, addr: SocketAddr) -> Result<SocketAddr, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| format!("{addr}: {e}"))?;
        {
            let mut r = self.registry();
            let portid = r.listeners.len() as u16 + 1;
            r.listeners.push(ListenerEntry { addr: local, portid });
            r.genctr += 1;
        }
        let target = self.clone();
        let in_capsule = self.queue_config.io_in_capsule_data;
        let factory: HandlerFactory<QueueBinding> =
            Arc::new(move |_cx, peer| QueueBinding::new(target.clone(), peer, in_capsule));
        let config = self.queue_config.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        reactors.handles()[0]
            .try_send(move |cx| {
                let _ = tx.send(Listener::register(cx, listener, config, factory).map(|_| ()));
            })
            .map_err(|e| format!("{addr}: {e}"))?;
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .map_err(|_| format!("{addr}: the reactor did not answer"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        tracing::info!(%local, "listening (NVMe/TCP and discovery)");
        Ok(local)
    }
}
