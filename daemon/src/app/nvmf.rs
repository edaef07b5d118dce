//! The NVMe-oF target's control: the TCP transport, subsystems, their
//! namespaces, listeners and hosts (`nvmf_*`).

use std::net::SocketAddr;
use std::sync::Arc;

use lull_engine::nvmf::subsystem::{KeyNames, Subsystem};
use lull_proto::auth::DhchapSecret;
use lull_proto::target_queue::TargetQueueConfig;

use super::{App, AppError, lock};

/// The NVMe/TCP transport as `nvmf_get_transports` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportInfo {
    /// Created (explicitly, or implicitly by start-up settings).
    pub created: bool,
    /// The settings.
    pub config: TargetQueueConfig,
}

impl App {
    /// Creates the TCP transport with these settings (`nvmf_create_transport`).
    ///
    /// # Errors
    /// [`AppError::Exists`] when it exists already.
    pub fn create_transport(&self, config: TargetQueueConfig) -> Result<(), AppError> {
        let mut created = lock(&self.transport_created);
        if *created {
            return Err(AppError::Exists("transport TCP already exists".into()));
        }
        self.target.set_queue_config(config).map_err(AppError::NotPermitted)?;
        *created = true;
        Ok(())
    }

    /// The TCP transport.
    pub fn transport(&self) -> TransportInfo {
        TransportInfo {
            created: *lock(&self.transport_created),
            config: self.target.queue_config(),
        }
    }

    /// Creates an NVM subsystem.
    ///
    /// # Errors
    /// [`AppError::InvalidParams`] for a bad NQN, serial or model;
    /// [`AppError::Exists`] for a taken NQN.
    pub fn create_subsystem(
        &self,
        nqn: &str,
        serial: &str,
        model: &str,
        allow_any_host: bool,
        max_namespaces: u32,
    ) -> Result<(), AppError> {
        let s = Subsystem::new(nqn, serial, model)
            .and_then(|s| s.with_max_namespaces(max_namespaces))
            .map_err(AppError::InvalidParams)?;
        s.set_allow_any_host(allow_any_host);
        self.target.add_subsystem(s).map_err(AppError::Exists)?;
        tracing::info!(subnqn = nqn, "subsystem created");
        Ok(())
    }

    pub(super) fn subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, AppError> {
        self.target
            .subsystem(nqn)
            .ok_or_else(|| AppError::NotFound(format!("subsystem {nqn} does not exist")))
    }

    pub(super) fn nvm_subsystem(&self, nqn: &str) -> Result<Arc<Subsystem>, AppError> {
        let s = self.subsystem(nqn)?;
        if s.kind == lull_engine::nvmf::subsystem::SubsystemKind::Discovery {
            return Err(AppError::InvalidParams(format!("{nqn} is the discovery subsystem")));
        }
        Ok(s)
    }

    /// Deletes a subsystem, closing its controllers.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::InvalidParams`] for the discovery subsystem.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<(), AppError> {
        self.nvm_subsystem(nqn)?;
        self.target.remove_subsystem(nqn).map_err(AppError::NotFound)?;
        tracing::info!(subnqn = nqn, "subsystem deleted");
        Ok(())
    }

    /// Adds bdev `bdev` to `nqn` as namespace `nsid` (0: the lowest free).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem or bdev; [`AppError::InvalidParams`]
    /// for a taken or bad NSID or a full subsystem.
    pub fn add_namespace(&self, nqn: &str, bdev: &str, nsid: u32) -> Result<u32, AppError> {
        let s = self.nvm_subsystem(nqn)?;
        let bdevs = lock(&self.bdevs);
        let b = bdevs
            .get(bdev)
            .ok_or_else(|| AppError::NotFound(format!("bdev {bdev} does not exist")))?;
        // A volume's base is the volume's (SPDK: claimed): a host writing
        // to it directly would bypass the mirror.
        if let Some(raid) = self.raid_holding(&bdevs, bdev) {
            return Err(AppError::InvalidParams(format!(
                "bdev {bdev} is claimed by raid {raid}; export the raid bdev instead"
            )));
        }
        let nsid = s
            .add_namespace_with_stats(nsid, b.bdev.clone(), b.stats.clone())
            .map_err(AppError::InvalidParams)?;
        drop(bdevs);
        self.notify_namespace_changed(&s, nsid);
        tracing::info!(subnqn = nqn, bdev, nsid, "namespace added");
        Ok(nsid)
    }

    /// Tells every controller of `s` that namespace `nsid` changed
    /// (Namespace Attribute Changed notice, log page 04h).
    pub(super) fn notify_namespace_changed(&self, s: &Arc<Subsystem>, nsid: u32) {
        for c in self.target.controllers() {
            if Arc::ptr_eq(&c.subsystem, s) {
                c.namespace_changed(nsid);
            }
        }
    }

    /// Removes namespace `nsid` of `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem; [`AppError::InvalidParams`] for the NSID.
    pub fn remove_namespace(&self, nqn: &str, nsid: u32) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        s.remove_namespace(nsid).map_err(AppError::InvalidParams)?;
        self.notify_namespace_changed(&s, nsid);
        tracing::info!(subnqn = nqn, nsid, "namespace removed");
        Ok(())
    }

    /// Makes `nqn` reachable on `addr` (binding it if needed).
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::NotPermitted`] before the transport
    /// exists; [`AppError::Failed`] when the address cannot be bound.
    pub fn add_listener(&self, nqn: &str, addr: SocketAddr) -> Result<SocketAddr, AppError> {
        self.add_listener_secure(nqn, addr, false)
    }

    /// As [`add_listener`](Self::add_listener); with `secure_channel`
    /// (`nvmf_subsystem_add_listener --secure-channel`) the port is TLS 1.3
    /// only, keyed by the PSKs of the hosts (`nvmf_subsystem_add_host --psk`).
    ///
    /// # Errors
    /// As [`add_listener`](Self::add_listener); [`AppError::Failed`] also
    /// when the port is served with the other setting or the subsystem
    /// allows any host.
    pub fn add_listener_secure(
        &self,
        nqn: &str,
        addr: SocketAddr,
        secure_channel: bool,
    ) -> Result<SocketAddr, AppError> {
        self.subsystem(nqn)?;
        if !*lock(&self.transport_created) {
            return Err(AppError::NotPermitted(
                "transport TCP does not exist: call nvmf_create_transport first".into(),
            ));
        }
        let local = self
            .target
            .add_subsystem_listener_secure(&self.handles, nqn, addr, secure_channel)
            .map_err(AppError::Failed)?;
        tracing::info!(subnqn = nqn, %local, secure_channel, "listener added");
        Ok(local)
    }

    /// Removes listener `addr` from `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem or listener.
    pub fn remove_listener(&self, nqn: &str, addr: SocketAddr) -> Result<(), AppError> {
        self.subsystem(nqn)?;
        self.target
            .remove_subsystem_listener(nqn, addr)
            .map_err(AppError::NotFound)
    }

    /// Allows `host` on `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::InvalidParams`] for a bad or duplicate NQN.
    pub fn add_host(&self, nqn: &str, host: &str) -> Result<(), AppError> {
        self.nvm_subsystem(nqn)?.add_host(host).map_err(AppError::InvalidParams)
    }

    /// Allows `host` on `nqn`, asking it to authenticate with the keyring's
    /// keys `key` (and `ctrlr_key`, bidirectional) when given
    /// (`nvmf_subsystem_add_host --dhchap-key --dhchap-ctrlr-key`). Nothing
    /// changes when a key is refused.
    ///
    /// # Errors
    /// As [`add_host`](Self::add_host); [`AppError::NotFound`] for a key
    /// not in the keyring; [`AppError::InvalidParams`] for a controller key
    /// without a host key or equal to it.
    pub fn add_host_with_keys(
        &self,
        nqn: &str,
        host: &str,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<(), AppError> {
        self.add_host_with_psk(nqn, host, None, key, ctrlr_key)
    }

    /// As [`add_host_with_keys`](Self::add_host_with_keys), giving the host
    /// the keyring's TLS PSK `psk` too (`nvmf_subsystem_add_host --psk`):
    /// it may then connect through the subsystem's `secure_channel` ports.
    ///
    /// # Errors
    /// As [`add_host_with_keys`](Self::add_host_with_keys); for `psk`,
    /// [`AppError::NotFound`] (not in the keyring) or
    /// [`AppError::InvalidParams`] (a DH-HMAC-CHAP secret, or NQNs too long
    /// for a PSK identity). Nothing changes when a key is refused.
    pub fn add_host_with_psk(
        &self,
        nqn: &str,
        host: &str,
        psk: Option<&str>,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        let tls = psk
            .map(|name| self.key_psk("psk", name).map(|p| (name, p)))
            .transpose()?;
        match self.resolve_keys(key, ctrlr_key)? {
            None => s.add_host(host),
            Some((k, c, names)) => s.add_host_with_dhchap(host, k, c, Some(names)),
        }
        .map_err(AppError::InvalidParams)?;
        if let Some((name, p)) = tls
            && let Err(e) = s.set_host_psk(host, &p, Some(name.to_string()))
        {
            let _ = s.remove_host(host);
            return Err(AppError::InvalidParams(format!("psk: {e}")));
        }
        Ok(())
    }

    /// Sets or clears the DH-HMAC-CHAP keys of the listed `host` on `nqn`
    /// (`nvmf_subsystem_set_keys`): no `key` clears them (the host no
    /// longer authenticates). Queues already connected keep going; they
    /// use the new keys when they next authenticate or reconnect.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for the subsystem or a key;
    /// [`AppError::InvalidParams`] for a host not listed, or a controller
    /// key without a host key or equal to it.
    pub fn set_host_keys(
        &self,
        nqn: &str,
        host: &str,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        if !s.access().hosts.iter().any(|h| h == host) {
            return Err(AppError::InvalidParams(format!(
                "host {host} is not on the host list of {nqn}: add it with nvmf_subsystem_add_host first"
            )));
        }
        match self.resolve_keys(key, ctrlr_key)? {
            Some((k, c, names)) => s
                .set_host_dhchap_named(host, k, c, Some(names))
                .map_err(AppError::InvalidParams),
            None => {
                s.clear_host_dhchap(host);
                Ok(())
            }
        }
    }

    /// The keyring's secrets for `key` and `ctrlr_key`; `None` for no key.
    pub(super) fn resolve_keys(
        &self,
        key: Option<&str>,
        ctrlr_key: Option<&str>,
    ) -> Result<Option<(DhchapSecret, Option<DhchapSecret>, KeyNames)>, AppError> {
        let Some(key) = key else {
            return match ctrlr_key {
                None => Ok(None),
                Some(_) => Err(AppError::InvalidParams(
                    "dhchap_ctrlr_key needs dhchap_key: bidirectional authentication starts with the host's key".into(),
                )),
            };
        };
        let secret = self.key_secret("dhchap_key", key)?;
        let ctrl = ctrlr_key.map(|c| self.key_secret("dhchap_ctrlr_key", c)).transpose()?;
        Ok(Some((
            secret,
            ctrl,
            KeyNames {
                key: key.to_string(),
                ctrlr_key: ctrlr_key.map(str::to_string),
            },
        )))
    }

    /// Stops allowing `host` on `nqn`; its controllers there are closed (as SPDK does).
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::InvalidParams`] when it was not allowed.
    pub fn remove_host(&self, nqn: &str, host: &str) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        s.remove_host(host).map_err(AppError::InvalidParams)?;
        if !s.allows(host) {
            for c in self.target.controllers() {
                if Arc::ptr_eq(&c.subsystem, &s) && c.hostnqn == host {
                    c.shut_down("host removed from the subsystem");
                }
            }
        }
        Ok(())
    }

    /// Sets `allow_any_host` on `nqn`.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub fn allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), AppError> {
        let s = self.nvm_subsystem(nqn)?;
        s.set_allow_any_host(allow);
        if !allow {
            // As remove_host: hosts no longer allowed lose their controllers.
            for c in self.target.controllers() {
                if Arc::ptr_eq(&c.subsystem, &s) && !s.allows(&c.hostnqn) {
                    c.shut_down("host no longer allowed on the subsystem");
                }
            }
        }
        Ok(())
    }
}
