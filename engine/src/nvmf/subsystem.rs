//! NVMe-oF subsystems and namespaces (NVMe Base 2.0 section 2.4; NVMe-oF 1.1
//! section 3.1), and host access control.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, Guard};

use lull_proto::auth::{AuthConfig, DhchapSecret};
use lull_proto::fabrics::{DISCOVERY_NQN, NQN_MAX_LEN};
use lull_proto::read_source::ReadSource;
use lull_proto::tls_psk::{ConfiguredPsk, IdentityVersion, TlsPsk};

use crate::bdev::{Bdev, BdevStats};
use crate::nvmf::stats::IoCounters;

/// A namespace: an NSID bound to a bdev.
#[derive(Clone)]
pub struct Namespace {
    /// Namespace ID (1-based).
    pub nsid: u32,
    /// The bdev behind it.
    pub bdev: Arc<dyn Bdev>,
    /// Namespace Globally Unique Identifier: the bdev's UUID bytes, as SPDK's
    /// target sets it when none is given, so an initiator that names its bdev
    /// by NGUID (SPDK's bdev_nvme) gets the target bdev's UUID.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier: none (all zeroes, not listed in the
    /// descriptor list), as SPDK's target unless one is given.
    pub eui64: [u8; 8],
    /// Namespace UUID: the bdev's UUID.
    pub uuid: [u8; 16],
    /// The bdev's I/O statistics (shared by every namespace on the bdev).
    pub stats: Arc<BdevStats>,
    /// The bdev's [`Bdev::read_source`], asked once: where small Reads are
    /// copied from while their PDUs are built.
    read_source: Option<Arc<dyn ReadSource>>,
}

impl Namespace {
    /// Binds `bdev` as `nsid`, with identifiers derived from the bdev's UUID
    /// as SPDK's target derives them (`spdk_nvmf_subsystem_add_ns_ext`
    /// without nguid/eui64/uuid): NGUID = UUID = the bdev's UUID, byte for
    /// byte in its text order; no EUI64; and statistics of its own.
    pub fn new(nsid: u32, bdev: Arc<dyn Bdev>) -> Self {
        Self::with_stats(nsid, bdev, Arc::default())
    }

    /// As [`Namespace::new`], counting its I/O into `stats`.
    pub fn with_stats(nsid: u32, bdev: Arc<dyn Bdev>, stats: Arc<BdevStats>) -> Self {
        let uuid = bdev.info().uuid;
        Namespace {
            nsid,
            read_source: bdev.read_source(),
            bdev,
            nguid: uuid,
            eui64: [0; 8],
            uuid,
            stats,
        }
    }

    /// Where the bdev lets a Read's data be copied from while its PDUs are
    /// built ([`Bdev::read_source`]); `None`: Reads are submitted.
    pub fn read_source(&self) -> Option<&Arc<dyn ReadSource>> {
        self.read_source.as_ref()
    }
}

/// What a subsystem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsystemKind {
    /// Serves namespaces.
    Nvm,
    /// The discovery subsystem: lists the others (NVMe-oF 1.1 section 5).
    Discovery,
}

/// Who may connect, and through which listeners: read on Connect only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Any host may connect (`allow_any_host`).
    pub allow_any_host: bool,
    /// Host NQNs allowed when `allow_any_host` is false.
    pub hosts: Vec<String>,
    /// The subsystem's own listeners (`nvmf_subsystem_add_listener`): listed
    /// in the discovery log page; with the target-wide ports, the only ones
    /// that reach it.
    pub listeners: Vec<SocketAddr>,
}

/// Highest NSID a namespace may take (NN in Identify Controller).
pub const MAX_NAMESPACES: u32 = 1024;

/// Most namespaces a subsystem may have by default (SPDK's `max_namespaces` default 32).
pub const DEFAULT_MAX_NAMESPACES: u32 = 32;

/// An NVM subsystem (or the discovery subsystem), shared by every reactor.
///
/// Namespaces are an immutable list swapped whole on change (read-copy-update):
/// the I/O path reads it without a lock or a shared-counter write. Host and
/// listener lists sit behind a mutex taken only by Connect and the control plane.
pub struct Subsystem {
    /// NQN.
    pub nqn: String,
    /// Kind.
    pub kind: SubsystemKind,
    /// Serial number (SN, up to 20 ASCII characters).
    pub serial: String,
    /// Model number (MN, up to 40 ASCII characters).
    pub model: String,
    /// Most namespaces (NN in Identify Controller), 1 to 1024.
    pub max_namespaces: u32,
    namespaces: ArcSwap<Vec<Namespace>>,
    /// Serialises namespace changes (the swap itself is lock-free for readers).
    ns_writer: Mutex<()>,
    access: Mutex<Access>,
    /// DH-HMAC-CHAP settings of listed hosts that must authenticate in band
    /// (their keys never leave this process's memory in any answer).
    dhchap: Mutex<Vec<HostDhchap>>,
    /// NVMe/TCP TLS PSKs of listed hosts (`nvmf_subsystem_add_host --psk`).
    psks: Mutex<Vec<HostPsk>>,
    /// I/O counters.
    pub counters: IoCounters,
}

/// The keyring names of a host's DH-HMAC-CHAP keys (SPDK's
/// `dhchap_key` and `dhchap_ctrlr_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyNames {
    /// The host key's name.
    pub key: String,
    /// The controller key's name (bidirectional authentication).
    pub ctrlr_key: Option<String>,
}

/// One host's TLS PSK, as the identities it may be offered under.
struct HostPsk {
    hostnqn: String,
    /// The keyring name it came by (`psk`).
    name: Option<String>,
    /// Identity version 0 and version 1 with their TLS PSKs.
    identities: [TlsPsk; 2],
}

/// One host's DH-HMAC-CHAP settings and where its keys came from.
#[derive(Debug)]
struct HostDhchap {
    cfg: Arc<AuthConfig>,
    names: Option<KeyNames>,
}

impl Subsystem {
    /// An NVM subsystem with no namespace yet, no host allowed and no listener.
    ///
    /// # Errors
    /// A message naming the bad NQN, serial or model.
    pub fn new(nqn: &str, serial: &str, model: &str) -> Result<Self, String> {
        validate_nqn(nqn)?;
        if nqn == DISCOVERY_NQN {
            return Err(format!("subnqn {nqn} is the discovery subsystem's NQN"));
        }
        if serial.is_empty() || serial.len() > 20 || !serial.bytes().all(|b| (0x20..0x7F).contains(&b)) {
            return Err(format!("serial `{serial}` must be 1 to 20 printable ASCII characters"));
        }
        if model.is_empty() || model.len() > 40 || !model.bytes().all(|b| (0x20..0x7F).contains(&b)) {
            return Err(format!("model `{model}` must be 1 to 40 printable ASCII characters"));
        }
        Ok(Self::build(nqn, SubsystemKind::Nvm, serial, model, false))
    }

    fn build(nqn: &str, kind: SubsystemKind, serial: &str, model: &str, allow_any_host: bool) -> Self {
        Subsystem {
            nqn: nqn.to_string(),
            kind,
            serial: serial.to_string(),
            model: model.to_string(),
            max_namespaces: DEFAULT_MAX_NAMESPACES,
            namespaces: ArcSwap::from_pointee(Vec::new()),
            ns_writer: Mutex::new(()),
            access: Mutex::new(Access {
                allow_any_host,
                ..Access::default()
            }),
            dhchap: Mutex::new(Vec::new()),
            psks: Mutex::new(Vec::new()),
            counters: IoCounters::default(),
        }
    }

    /// The discovery subsystem (any host may connect to it, through any listener).
    pub fn discovery() -> Self {
        Self::build(
            DISCOVERY_NQN,
            SubsystemKind::Discovery,
            "lull-discovery",
            "lull discovery",
            true,
        )
    }

    /// Sets the most namespaces this subsystem takes (before it is shared).
    ///
    /// # Errors
    /// A message when `max` is outside 1..=1024.
    pub fn with_max_namespaces(mut self, max: u32) -> Result<Self, String> {
        if !(1..=1024).contains(&max) {
            return Err(format!("max_namespaces {max} is outside 1..=1024"));
        }
        self.max_namespaces = max;
        Ok(self)
    }

    /// The namespaces now, in NSID order: a snapshot that later changes do not alter.
    pub fn namespaces(&self) -> Guard<Arc<Vec<Namespace>>> {
        self.namespaces.load()
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.ns_writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a namespace; `nsid` 0 takes the lowest free NSID. Commands that
    /// arrive after this returns see it.
    ///
    /// # Errors
    /// A message when the NSID is taken or out of range, the subsystem is
    /// full, or the bdev is already a namespace here.
    pub fn add_namespace(&self, nsid: u32, bdev: Arc<dyn Bdev>) -> Result<u32, String> {
        self.add_namespace_with_stats(nsid, bdev, Arc::default())
    }

    /// [`Subsystem::add_namespace`], counting the namespace's I/O into `stats`
    /// (the bdev's, shared with its other namespaces).
    ///
    /// # Errors
    /// As [`Subsystem::add_namespace`].
    pub fn add_namespace_with_stats(
        &self,
        nsid: u32,
        bdev: Arc<dyn Bdev>,
        stats: Arc<BdevStats>,
    ) -> Result<u32, String> {
        let _w = self.writer();
        let now = self.namespaces.load_full();
        if now.iter().any(|n| n.bdev.info().name == bdev.info().name) {
            return Err(format!(
                "bdev {} is already a namespace of {}",
                bdev.info().name,
                self.nqn
            ));
        }
        if now.len() >= self.max_namespaces as usize {
            return Err(format!(
                "subsystem {} already has its maximum of {} namespaces",
                self.nqn, self.max_namespaces
            ));
        }
        let nsid = if nsid == 0 {
            (1..=MAX_NAMESPACES)
                .find(|i| !now.iter().any(|n| n.nsid == *i))
                .unwrap_or(1)
        } else {
            nsid
        };
        if nsid > MAX_NAMESPACES {
            return Err(format!("NSID {nsid} is outside 1..={MAX_NAMESPACES} (NN)"));
        }
        if now.iter().any(|n| n.nsid == nsid) {
            return Err(format!("NSID {nsid} is already in use in {}", self.nqn));
        }
        let mut next: Vec<Namespace> = now.as_ref().clone();
        next.push(Namespace::with_stats(nsid, bdev, stats));
        next.sort_by_key(|n| n.nsid);
        self.namespaces.store(Arc::new(next));
        Ok(nsid)
    }

    /// Removes namespace `nsid` and returns it; commands that arrive after
    /// this returns get Invalid Namespace, those already running finish.
    ///
    /// # Errors
    /// A message when there is no such namespace.
    pub fn remove_namespace(&self, nsid: u32) -> Result<Namespace, String> {
        let _w = self.writer();
        let now = self.namespaces.load_full();
        let Some(found) = now.iter().find(|n| n.nsid == nsid).cloned() else {
            return Err(format!("subsystem {} has no namespace {nsid}", self.nqn));
        };
        let next: Vec<Namespace> = now.iter().filter(|n| n.nsid != nsid).cloned().collect();
        self.namespaces.store(Arc::new(next));
        Ok(found)
    }

    /// The namespace `nsid`, if it is there now.
    pub fn namespace(&self, nsid: u32) -> Option<Namespace> {
        self.namespaces.load().iter().find(|n| n.nsid == nsid).cloned()
    }

    /// Host and listener settings.
    pub fn access(&self) -> MutexGuard<'_, Access> {
        self.access.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `allow_any_host`.
    pub fn set_allow_any_host(&self, allow: bool) {
        self.access().allow_any_host = allow;
    }

    /// Allows `hostnqn` to connect.
    ///
    /// # Errors
    /// A message when the NQN is malformed or already allowed.
    pub fn add_host(&self, hostnqn: &str) -> Result<(), String> {
        validate_nqn(hostnqn)?;
        let mut a = self.access();
        if a.hosts.iter().any(|h| h == hostnqn) {
            return Err(format!("host {hostnqn} is already allowed on {}", self.nqn));
        }
        a.hosts.push(hostnqn.to_string());
        Ok(())
    }

    /// Allows `hostnqn` to connect, authenticating with these keys (as
    /// [`set_host_dhchap_named`](Self::set_host_dhchap_named)). The keys are
    /// in place before the host is listed, so no Connect is admitted
    /// without them.
    ///
    /// # Errors
    /// A message when the NQN is malformed or already allowed, or the
    /// controller key equals the host key.
    pub fn add_host_with_dhchap(
        &self,
        hostnqn: &str,
        host_key: DhchapSecret,
        ctrl_key: Option<DhchapSecret>,
        names: Option<KeyNames>,
    ) -> Result<(), String> {
        validate_nqn(hostnqn)?;
        let cfg = AuthConfig::new(host_key, ctrl_key, hostnqn, &self.nqn);
        cfg.validate()?;
        let mut a = self.access();
        if a.hosts.iter().any(|h| h == hostnqn) {
            return Err(format!("host {hostnqn} is already allowed on {}", self.nqn));
        }
        {
            let mut d = self.dhchap.lock().unwrap_or_else(|p| p.into_inner());
            d.retain(|c| c.cfg.hostnqn != hostnqn);
            d.push(HostDhchap {
                cfg: Arc::new(cfg),
                names,
            });
        }
        a.hosts.push(hostnqn.to_string());
        Ok(())
    }

    /// Stops allowing `hostnqn` (its controllers stay until they disconnect).
    ///
    /// # Errors
    /// A message when the host was not allowed.
    pub fn remove_host(&self, hostnqn: &str) -> Result<(), String> {
        let mut a = self.access();
        let before = a.hosts.len();
        a.hosts.retain(|h| h != hostnqn);
        if a.hosts.len() == before {
            return Err(format!("host {hostnqn} is not allowed on {}", self.nqn));
        }
        drop(a);
        self.dhchap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| c.cfg.hostnqn != hostnqn);
        self.clear_host_psk(hostnqn);
        Ok(())
    }

    /// Gives the listed host `hostnqn` a TLS PSK (`nvmf_subsystem_add_host
    /// --psk`): on a listener with `secure_channel` it may then complete a
    /// TLS handshake under identity version 0 or 1 (NVMe/TCP TP 8011, TP
    /// 8028) derived from `psk` for this host and subsystem. Replaces an
    /// earlier one; `name` is the keyring name it came by.
    ///
    /// # Errors
    /// A message when the host is not on the host list, or the NQNs cannot
    /// form an identity (too long together).
    pub fn set_host_psk(&self, hostnqn: &str, psk: &ConfiguredPsk, name: Option<String>) -> Result<(), String> {
        if !self.access().hosts.iter().any(|h| h == hostnqn) {
            return Err(format!(
                "host {hostnqn} is not on the host list of {}: add it with nvmf_subsystem_add_host first",
                self.nqn
            ));
        }
        let derive = |v| psk.tls_psk(hostnqn, &self.nqn, v).map_err(|e| e.to_string());
        let identities = [derive(IdentityVersion::V0)?, derive(IdentityVersion::V1)?];
        let mut p = self.psks.lock().unwrap_or_else(|p| p.into_inner());
        p.retain(|h| h.hostnqn != hostnqn);
        p.push(HostPsk {
            hostnqn: hostnqn.to_string(),
            name,
            identities,
        });
        Ok(())
    }

    /// Forgets `hostnqn`'s TLS PSK.
    pub fn clear_host_psk(&self, hostnqn: &str) {
        self.psks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|h| h.hostnqn != hostnqn);
    }

    /// Whether `hostnqn` has a TLS PSK here, and the keyring name it came by.
    pub fn host_psk_name(&self, hostnqn: &str) -> Option<Option<String>> {
        let p = self.psks.lock().unwrap_or_else(|p| p.into_inner());
        p.iter().find(|h| h.hostnqn == hostnqn).map(|h| h.name.clone())
    }

    /// The TLS PSK of the ClientHello identity `identity`, if one of this
    /// subsystem's hosts has it.
    pub fn find_tls_psk(&self, identity: &[u8]) -> Option<TlsPsk> {
        let p = self.psks.lock().unwrap_or_else(|p| p.into_inner());
        p.iter()
            .flat_map(|h| h.identities.iter())
            .find(|t| t.identity().as_bytes() == identity)
            .cloned()
    }

    /// Makes the listed host `hostnqn` authenticate in band with
    /// DH-HMAC-CHAP on every queue (NVMe Base 2.0 section 8.13):
    /// `host_key` proves the host, `ctrl_key` (bidirectional) the
    /// controller. Replaces earlier keys; controllers already connected keep
    /// theirs until they re-authenticate or reconnect.
    ///
    /// # Errors
    /// A message when the host is not on the host list or the controller
    /// key equals the host key.
    pub fn set_host_dhchap(
        &self,
        hostnqn: &str,
        host_key: DhchapSecret,
        ctrl_key: Option<DhchapSecret>,
    ) -> Result<(), String> {
        self.set_host_dhchap_named(hostnqn, host_key, ctrl_key, None)
    }

    /// As [`set_host_dhchap`](Self::set_host_dhchap), remembering the
    /// keyring names the keys came by (`names`: the host key's, the
    /// controller key's), so a saved configuration names them.
    ///
    /// # Errors
    /// As [`set_host_dhchap`](Self::set_host_dhchap).
    pub fn set_host_dhchap_named(
        &self,
        hostnqn: &str,
        host_key: DhchapSecret,
        ctrl_key: Option<DhchapSecret>,
        names: Option<KeyNames>,
    ) -> Result<(), String> {
        if !self.access().hosts.iter().any(|h| h == hostnqn) {
            return Err(format!(
                "host {hostnqn} is not on the host list of {}: add it with nvmf_subsystem_add_host first",
                self.nqn
            ));
        }
        let cfg = AuthConfig::new(host_key, ctrl_key, hostnqn, &self.nqn);
        cfg.validate()?;
        let mut d = self.dhchap.lock().unwrap_or_else(|p| p.into_inner());
        d.retain(|c| c.cfg.hostnqn != hostnqn);
        d.push(HostDhchap {
            cfg: Arc::new(cfg),
            names,
        });
        Ok(())
    }

    /// Stops asking `hostnqn` to authenticate (`nvmf_subsystem_set_keys`
    /// without keys); queues already authenticated stay connected.
    pub fn clear_host_dhchap(&self, hostnqn: &str) {
        self.dhchap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| c.cfg.hostnqn != hostnqn);
    }

    /// The DH-HMAC-CHAP settings `hostnqn` must authenticate with; `None`
    /// when it need not.
    pub fn host_dhchap(&self, hostnqn: &str) -> Option<Arc<AuthConfig>> {
        let d = self.dhchap.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().find(|c| c.cfg.hostnqn == hostnqn).map(|c| c.cfg.clone())
    }

    /// The keyring names of `hostnqn`'s keys, when they were given by name.
    pub fn host_key_names(&self, hostnqn: &str) -> Option<KeyNames> {
        let d = self.dhchap.lock().unwrap_or_else(|p| p.into_inner());
        d.iter()
            .find(|c| c.cfg.hostnqn == hostnqn)
            .and_then(|c| c.names.clone())
    }

    /// Whether `hostnqn` may connect.
    pub fn allows(&self, hostnqn: &str) -> bool {
        self.admit(hostnqn).is_ok()
    }

    /// Whether `hostnqn` may connect and, when not, why in plain words (for
    /// the target's log: which NQN and what the subsystem allows). An empty
    /// HOSTNQN (SPDK's initiator sends one unless told a host NQN) gets in
    /// where any host is allowed, as with SPDK's and Linux's targets.
    ///
    /// # Errors
    /// The reason the host is refused.
    pub fn admit(&self, hostnqn: &str) -> Result<(), String> {
        let a = self.access();
        if a.allow_any_host || a.hosts.iter().any(|h| h == hostnqn) {
            return Ok(());
        }
        let listed = host_list(&a.hosts);
        if a.hosts.is_empty() {
            return Err(format!(
                "subsystem {} allows no host yet (allow_any_host is off and its host list is empty); \
                 add the host with nvmf_subsystem_add_host or set allow_any_host",
                self.nqn
            ));
        }
        if hostnqn.is_empty() {
            return Err(format!(
                "the host sent an empty HOSTNQN and subsystem {} allows only listed hosts ({listed}); \
                 give the host its NQN (spdk_nvme_perf --hostnqn, nvme connect --hostnqn) or set allow_any_host",
                self.nqn
            ));
        }
        Err(format!(
            "host {hostnqn} is not on the host list of subsystem {} ({listed}) and allow_any_host is off",
            self.nqn
        ))
    }
}

/// Up to eight host NQNs for a log line, then how many more.
fn host_list(hosts: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = hosts.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if hosts.len() > SHOWN {
        s.push_str(&format!(" and {} more", hosts.len() - SHOWN));
    }
    s
}

/// Checks an NQN's form (NVMe Base 2.0 section 4.5): `nqn.` then a
/// yyyy-mm date and a reverse domain, or the UUID form; at most 223 bytes.
///
/// # Errors
/// A message naming the NQN and the rule it breaks.
pub fn validate_nqn(nqn: &str) -> Result<(), String> {
    if nqn.len() > NQN_MAX_LEN {
        return Err(format!(
            "NQN `{nqn}` is {} bytes long; the limit is {NQN_MAX_LEN}",
            nqn.len()
        ));
    }
    let Some(rest) = nqn.strip_prefix("nqn.") else {
        return Err(format!("NQN `{nqn}` must start with `nqn.`"));
    };
    let date_ok = rest.len() > 8
        && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && rest.as_bytes()[4] == b'-'
        && rest.as_bytes()[5..7].iter().all(u8::is_ascii_digit)
        && rest.as_bytes()[7] == b'.';
    if !date_ok {
        return Err(format!(
            "NQN `{nqn}` must continue `nqn.yyyy-mm.` (e.g. nqn.2024-01.io.example:vol1)"
        ));
    }
    if nqn.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("NQN `{nqn}` must not contain spaces or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::RamBdev;

    #[test]
    fn nqn_rules() {
        assert!(validate_nqn("nqn.2024-01.io.lull:vol1").is_ok());
        assert!(validate_nqn("nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6").is_ok());
        assert_eq!(validate_nqn("vol1").unwrap_err(), "NQN `vol1` must start with `nqn.`");
        assert!(validate_nqn("nqn.24-01.x").is_err());
        assert!(validate_nqn(&format!("nqn.2024-01.{}", "a".repeat(220))).is_err());
        assert!(validate_nqn("nqn.2024-01.a b").is_err());
    }

    #[test]
    fn namespaces_and_hosts() {
        let s = Subsystem::new("nqn.2024-01.io.lull:a", "SN1", "lull").unwrap();
        let b: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", 1 << 20, 512).unwrap());
        assert_eq!(s.add_namespace(0, b.clone()).unwrap(), 1);
        assert!(s.add_namespace(0, b).is_err());
        let c: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram1", 1 << 20, 512).unwrap());
        assert!(s.add_namespace(1, c.clone()).is_err());
        assert_eq!(s.add_namespace(5, c).unwrap(), 5);
        assert_eq!(s.namespace(5).unwrap().bdev.info().name, "Ram1");
        assert!(!s.allows("nqn.2024-01.io.h:1"));
        assert!(s.admit("").unwrap_err().contains("allows no host yet"));
        s.add_host("nqn.2024-01.io.h:1").unwrap();
        let why = s.admit("").unwrap_err();
        assert!(
            why.contains("empty HOSTNQN") && why.contains("nqn.2024-01.io.h:1"),
            "{why}"
        );
        let why = s.admit("nqn.2024-01.io.h:2").unwrap_err();
        assert!(why.contains("host nqn.2024-01.io.h:2 is not on the host list"), "{why}");
        s.set_allow_any_host(true);
        assert!(s.admit("").is_ok(), "any host: an empty HOSTNQN gets in");
        s.set_allow_any_host(false);
        assert!(s.add_host("nqn.2024-01.io.h:1").is_err());
        assert!(s.allows("nqn.2024-01.io.h:1"));
        s.remove_host("nqn.2024-01.io.h:1").unwrap();
        assert!(!s.allows("nqn.2024-01.io.h:1"));
        assert!(s.remove_host("nqn.2024-01.io.h:1").is_err());
        let snapshot = s.namespaces();
        assert_eq!(s.remove_namespace(1).unwrap().bdev.info().name, "Ram0");
        assert!(s.remove_namespace(1).is_err());
        assert_eq!(
            snapshot.len(),
            2,
            "a snapshot taken before the removal keeps its namespaces"
        );
        assert_eq!(s.namespaces().len(), 1);
        assert!(s.namespace(1).is_none());
        assert!(Subsystem::new("nqn.2024-01.io.lull:a", "", "m").is_err());
        assert!(Subsystem::new(DISCOVERY_NQN, "s", "m").is_err());
    }

    #[test]
    fn dhchap_keys_belong_to_listed_hosts() {
        let s = Subsystem::new("nqn.2024-01.io.lull:a", "SN1", "lull").unwrap();
        let k = |b: u8| DhchapSecret::from_key(None, &[b; 32]).unwrap();
        let h = "nqn.2024-01.io.h:1";
        assert!(
            s.set_host_dhchap(h, k(1), None)
                .unwrap_err()
                .contains("not on the host list")
        );
        s.add_host(h).unwrap();
        assert!(s.host_dhchap(h).is_none());
        assert!(
            s.set_host_dhchap(h, k(1), Some(k(1)))
                .unwrap_err()
                .contains("reflection")
        );
        s.set_host_dhchap(h, k(1), Some(k(2))).unwrap();
        let cfg = s.host_dhchap(h).unwrap();
        assert_eq!(
            (cfg.hostnqn.as_str(), cfg.subnqn.as_str()),
            (h, "nqn.2024-01.io.lull:a")
        );
        assert!(cfg.ctrl_key.is_some());
        s.set_host_dhchap(h, k(3), None).unwrap();
        assert!(s.host_dhchap(h).unwrap().ctrl_key.is_none(), "replaced");
        s.remove_host(h).unwrap();
        assert!(s.host_dhchap(h).is_none(), "removing the host forgets its keys");
    }

    #[test]
    fn a_host_added_with_keys_is_never_listed_without_them() {
        let s = Subsystem::new("nqn.2024-01.io.lull:a", "SN1", "lull").unwrap();
        let k = |b: u8| DhchapSecret::from_key(None, &[b; 32]).unwrap();
        let h = "nqn.2024-01.io.h:1";
        let names = KeyNames {
            key: "key0".into(),
            ctrlr_key: Some("ckey0".into()),
        };
        let e = s
            .add_host_with_dhchap(h, k(1), Some(k(1)), Some(names.clone()))
            .unwrap_err();
        assert!(e.contains("reflection"), "{e}");
        assert!(!s.allows(h), "a refused key pair adds no host");
        s.add_host_with_dhchap(h, k(1), Some(k(2)), Some(names.clone()))
            .unwrap();
        assert!(s.allows(h) && s.host_dhchap(h).is_some());
        assert_eq!(s.host_key_names(h), Some(names));
        assert!(s.add_host_with_dhchap(h, k(1), None, None).is_err(), "already listed");
        s.clear_host_dhchap(h);
        assert!(s.allows(h) && s.host_dhchap(h).is_none() && s.host_key_names(h).is_none());
    }
}
