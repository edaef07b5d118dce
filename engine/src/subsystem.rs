//! NVMe-oF subsystems and namespaces (NVMe Base 2.0 section 2.4; NVMe-oF 1.1
//! section 3.1), and host access control.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lull_transport::fabrics::{DISCOVERY_NQN, NQN_MAX_LEN};

use crate::bdev::Bdev;

/// A namespace: an NSID bound to a bdev.
#[derive(Clone)]
pub struct Namespace {
    /// Namespace ID (1-based).
    pub nsid: u32,
    /// The bdev behind it.
    pub bdev: Arc<dyn Bdev>,
    /// Namespace Globally Unique Identifier (stable: derived from the bdev's identity).
    pub nguid: [u8; 16],
    /// Namespace UUID (stable, as NGUID).
    pub uuid: [u8; 16],
}

impl Namespace {
    /// Binds `bdev` as `nsid`, with identities derived from the bdev's.
    pub fn new(nsid: u32, bdev: Arc<dyn Bdev>) -> Self {
        let uuid = bdev.uuid();
        let mut nguid = uuid;
        nguid.reverse();
        Namespace {
            nsid,
            bdev,
            nguid,
            uuid,
        }
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

/// Health counters of a subsystem, for the SMART log page (in bytes and commands).
#[derive(Default)]
pub struct IoCounters {
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Read commands.
    pub reads: AtomicU64,
    /// Write commands.
    pub writes: AtomicU64,
}

impl IoCounters {
    pub(crate) fn read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wrote(&self, bytes: u64) {
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// An NVM subsystem (or the discovery subsystem).
pub struct Subsystem {
    /// NQN.
    pub nqn: String,
    /// Kind.
    pub kind: SubsystemKind,
    /// Serial number (SN, up to 20 ASCII characters).
    pub serial: String,
    /// Model number (MN, up to 40 ASCII characters).
    pub model: String,
    /// Any host may connect.
    pub allow_any_host: bool,
    /// Host NQNs allowed when `allow_any_host` is false.
    pub hosts: Vec<String>,
    /// Namespaces, in NSID order.
    pub namespaces: Vec<Namespace>,
    /// I/O counters.
    pub counters: IoCounters,
}

impl Subsystem {
    /// An NVM subsystem with no namespace yet.
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
        Ok(Subsystem {
            nqn: nqn.to_string(),
            kind: SubsystemKind::Nvm,
            serial: serial.to_string(),
            model: model.to_string(),
            allow_any_host: false,
            hosts: Vec::new(),
            namespaces: Vec::new(),
            counters: IoCounters::default(),
        })
    }

    /// The discovery subsystem (any host may connect to it).
    pub fn discovery() -> Self {
        Subsystem {
            nqn: DISCOVERY_NQN.to_string(),
            kind: SubsystemKind::Discovery,
            serial: "lull-discovery".to_string(),
            model: "lull discovery".to_string(),
            allow_any_host: true,
            hosts: Vec::new(),
            namespaces: Vec::new(),
            counters: IoCounters::default(),
        }
    }

    /// Adds a namespace; `nsid` 0 takes the lowest free NSID.
    ///
    /// # Errors
    /// A message when the NSID is taken or the bdev is already a namespace here.
    pub fn add_namespace(&mut self, nsid: u32, bdev: Arc<dyn Bdev>) -> Result<u32, String> {
        if self.namespaces.iter().any(|n| n.bdev.name() == bdev.name()) {
            return Err(format!("bdev {} is already a namespace of {}", bdev.name(), self.nqn));
        }
        let nsid = if nsid == 0 {
            (1..)
                .find(|i| !self.namespaces.iter().any(|n| n.nsid == *i))
                .unwrap_or(1)
        } else {
            nsid
        };
        if nsid == 0xFFFF_FFFF || self.namespaces.iter().any(|n| n.nsid == nsid) {
            return Err(format!("NSID {nsid} is already in use in {}", self.nqn));
        }
        self.namespaces.push(Namespace::new(nsid, bdev));
        self.namespaces.sort_by_key(|n| n.nsid);
        Ok(nsid)
    }

    /// The namespace `nsid`.
    pub fn namespace(&self, nsid: u32) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.nsid == nsid)
    }

    /// Whether `hostnqn` may connect.
    pub fn allows(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.iter().any(|h| h == hostnqn)
    }
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
        let mut s = Subsystem::new("nqn.2024-01.io.lull:a", "SN1", "lull").unwrap();
        let b: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram0", 1 << 20, 512).unwrap());
        assert_eq!(s.add_namespace(0, b.clone()).unwrap(), 1);
        assert!(s.add_namespace(0, b).is_err());
        let c: Arc<dyn Bdev> = Arc::new(RamBdev::new("Ram1", 1 << 20, 512).unwrap());
        assert!(s.add_namespace(1, c.clone()).is_err());
        assert_eq!(s.add_namespace(5, c).unwrap(), 5);
        assert_eq!(s.namespace(5).unwrap().bdev.name(), "Ram1");
        assert!(!s.allows("nqn.h"));
        s.hosts.push("nqn.h".into());
        assert!(s.allows("nqn.h"));
        assert!(Subsystem::new("nqn.2024-01.io.lull:a", "", "m").is_err());
        assert!(Subsystem::new(DISCOVERY_NQN, "s", "m").is_err());
    }
}
