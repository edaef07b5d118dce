//! Serving the target's ports on reactors: binding a listening socket,
//! registering its `Listener` poller on the first reactor (connections are
//! spread over all of them, round robin, each getting a [`ControllerQueue`]),
//! and recording the port in the registry with a way to close it. The
//! registry ([`Target`]) itself never touches a socket or a reactor.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use lull_proto::tls_psk::TlsPsk;
use lull_reactor::{ReactorHandle, Reactors};
use lull_transport::conn::{HandlerFactory, Listener, PortTls};
use lull_transport::tls::{PskLookup, TlsServer};

use crate::nvmf::queue::ControllerQueue;
use crate::nvmf::request::QueueOrigin;
use crate::nvmf::subsystem::SubsystemKind;
use crate::nvmf::target::{Hold, PortCloser, Target};

impl Target {
    /// Binds `addr` and serves it from the first reactor of `reactors`;
    /// connections are spread over all of them, round robin. A target-wide
    /// port: it stays until [`Target::stop_listening`], whatever subsystems
    /// come and go. Serving an address already served returns it.
    ///
    /// # Errors
    /// A message naming the address when it cannot be bound or served.
    pub fn listen(self: &Arc<Self>, reactors: &Reactors, addr: SocketAddr) -> Result<SocketAddr, String> {
        bind(self, reactors.handles(), addr, Hold::All, false)
    }

    /// Makes `nqn` reachable through `addr` (`nvmf_subsystem_add_listener`),
    /// binding it if no subsystem uses it yet. Port 0 binds a free port; the
    /// bound address is returned and recorded.
    ///
    /// # Errors
    /// A message when there is no such subsystem, it already listens there,
    /// or the address cannot be bound.
    pub fn add_subsystem_listener(
        self: &Arc<Self>,
        handles: &[ReactorHandle],
        nqn: &str,
        addr: SocketAddr,
    ) -> Result<SocketAddr, String> {
        self.add_subsystem_listener_secure(handles, nqn, addr, false)
    }

    /// As [`add_subsystem_listener`](Self::add_subsystem_listener); with
    /// `secure_channel` (SPDK's `--secure-channel`) the port is TLS 1.3
    /// only: a connection must open with a TLS handshake under the PSK
    /// identity of a host given a PSK (`nvmf_subsystem_add_host --psk`) on
    /// a subsystem the port reaches; anything else is closed.
    ///
    /// # Errors
    /// As [`add_subsystem_listener`](Self::add_subsystem_listener); also
    /// when the port is already served with the other setting, or
    /// `secure_channel` is asked on a subsystem that allows any host (SPDK
    /// refuses that too: TLS needs a host's PSK).
    pub fn add_subsystem_listener_secure(
        self: &Arc<Self>,
        handles: &[ReactorHandle],
        nqn: &str,
        addr: SocketAddr,
        secure_channel: bool,
    ) -> Result<SocketAddr, String> {
        let s = self
            .subsystem(nqn)
            .ok_or_else(|| format!("subsystem {nqn} does not exist"))?;
        if s.kind == SubsystemKind::Discovery {
            return bind(self, handles, addr, Hold::Discovery, secure_channel);
        }
        if secure_channel && s.access().allow_any_host {
            return Err(format!(
                "cannot establish a secure channel on {nqn} while allow_any_host is set: TLS needs each host's PSK"
            ));
        }
        if s.access().listeners.contains(&addr) {
            return Err(format!("subsystem {nqn} already listens on {addr}"));
        }
        let local = bind(self, handles, addr, Hold::Subsystem, secure_channel)?;
        let mut a = s.access();
        if !a.listeners.contains(&local) {
            a.listeners.push(local);
        }
        drop(a);
        // Deleted meanwhile? remove_subsystem unregisters before it takes the
        // listeners, so a subsystem still registered now gets this one released
        // by its deletion; one already gone would leak the port.
        if !self.is_registered(&s) {
            s.access().listeners.retain(|l| *l != local);
            self.release_listener(local);
            return Err(format!("subsystem {nqn} was deleted"));
        }
        self.bump_genctr();
        Ok(local)
    }
}

/// Serves `addr` for `hold`: an address already served is only marked as
/// held; otherwise it is bound, its listener registered on the first of
/// `handles`, and the port recorded in `target`.
fn bind(
    target: &Arc<Target>,
    handles: &[ReactorHandle],
    addr: SocketAddr,
    hold: Hold,
    secure_channel: bool,
) -> Result<SocketAddr, String> {
    if target.hold_port(addr, hold, secure_channel)? {
        return Ok(addr);
    }
    let first = handles.first().ok_or("no reactor to listen on")?.clone();
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("{addr}: {e}"))?;
    let config = target.queue_config();
    let io_in_capsule_data = config.io_in_capsule_data;
    let for_queues = target.clone();
    let factory: HandlerFactory<ControllerQueue> = Arc::new(move |_cx, peer, arrived_on| {
        let origin = QueueOrigin {
            peer,
            listener: local,
            arrived_on,
            io_in_capsule_data,
        };
        ControllerQueue::new(for_queues.clone(), origin)
    });
    // Every port speaks TLS with the PSKs of the hosts it reaches: required
    // with secure_channel, else optional (a connection's first byte says
    // which), so a host with a PSK can use TLS on any port, as on Linux's
    // target with TREQ "not required".
    let lookup = PortPsks {
        target: Arc::downgrade(target),
        listener: local,
    };
    let server = TlsServer::new(Arc::new(lookup)).map_err(|e| format!("{addr}: {e}"))?;
    let tls = Some(if secure_channel {
        PortTls::Required(server)
    } else {
        PortTls::Optional(server)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    first
        .try_send(move |cx| {
            let _ = tx.send(Listener::register_secure(cx, listener, config, factory, tls));
        })
        .map_err(|e| format!("{addr}: {e}"))?;
    let poller = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| format!("{addr}: the reactor did not answer"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let close: PortCloser = Box::new(move || {
        let (tx, rx) = std::sync::mpsc::channel();
        if first
            .try_send(move |cx| {
                let _ = cx.unregister(poller);
                let _ = tx.send(());
            })
            .is_ok()
        {
            // Wait (bounded) so the port is free when this returns.
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }
        tracing::info!(addr = %local, "stopped listening");
    });
    target.add_port(local, hold, secure_channel, close);
    tracing::info!(%local, secure_channel, "listening (NVMe/TCP and discovery)");
    Ok(local)
}

/// The PSKs a secure port accepts: those of the hosts of the subsystems it
/// reaches, looked up when a ClientHello arrives (so hosts and keys added
/// later count at once).
struct PortPsks {
    target: std::sync::Weak<Target>,
    listener: SocketAddr,
}

impl PskLookup for PortPsks {
    fn find(&self, identity: &[u8]) -> Option<TlsPsk> {
        self.target.upgrade()?.find_tls_psk(self.listener, identity)
    }
}
