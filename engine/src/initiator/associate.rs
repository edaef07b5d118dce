//! Bringing up an association with a remote controller, on the control
//! path (blocking sockets, bounded waits, off the reactors): admin queue,
//! enable, Identify, Number of Queues, the I/O queues' Connects. The
//! result is handed to the reactors, which run the data path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use lull_proto::auth::{AuthConfig, DhGroup, DhchapSecret, HashId};
use lull_proto::fabrics::{CONNECT_AUTHREQ_ATR, ConnectData, property};
use lull_proto::nvme::admin_opc;
use lull_proto::nvme::cmd::{Features, Identify, NumberOfQueues, aec, cns, fid};
use lull_proto::pdu::Digests;
use lull_proto::tls_psk::{ConfiguredPsk, IdentityVersion, TlsPsk};
use lull_transport::host_sync::{SyncError, SyncQueue};

use super::options::NvmeOptions;
use crate::dhchap::DhchapOffer;
use crate::nvmf::subsystem::KeyNames;

/// The DH-HMAC-CHAP keys a host authenticates with when a controller asks
/// for it (ATR in the Connect response; NVMe Base 2.0 section 8.13), on
/// the admin queue and every I/O queue. `Debug` shows no key bytes.
#[derive(Clone, Debug)]
pub struct HostDhchapKeys {
    /// The host's secret (SPDK's `dhchap_key`).
    pub key: DhchapSecret,
    /// The controller's secret, for bidirectional authentication (SPDK's
    /// `dhchap_ctrlr_key`): the controller must prove it too.
    pub ctrlr_key: Option<DhchapSecret>,
    /// The keyring names the keys came by, if they came from the keyring.
    pub names: Option<KeyNames>,
    /// Hashes offered, most preferred first.
    pub hashes: Vec<HashId>,
    /// DH groups offered, most preferred first.
    pub dhgroups: Vec<DhGroup>,
}

impl HostDhchapKeys {
    /// Keys offering every hash and group.
    ///
    /// # Errors
    /// A message when the controller key equals the host key (the
    /// reflection attack NVMe Base 2.0 section 8.13.5.9 warns of).
    pub fn new(key: DhchapSecret, ctrlr_key: Option<DhchapSecret>, names: Option<KeyNames>) -> Result<Self, String> {
        let k = HostDhchapKeys {
            key,
            ctrlr_key,
            names,
            hashes: HashId::ALL.to_vec(),
            dhgroups: DhGroup::ALL.to_vec(),
        };
        k.config("", "").validate()?;
        Ok(k)
    }

    /// These keys offering `offer`'s hashes and groups.
    #[must_use]
    pub fn offering(mut self, offer: &DhchapOffer) -> Self {
        self.hashes.clone_from(&offer.hashes);
        self.dhgroups.clone_from(&offer.dhgroups);
        self
    }

    /// The settings of one transaction between `hostnqn` and `subnqn`.
    pub(crate) fn config(&self, hostnqn: &str, subnqn: &str) -> AuthConfig {
        let mut c = AuthConfig::new(self.key.clone(), self.ctrlr_key.clone(), hostnqn, subnqn);
        c.hashes.clone_from(&self.hashes);
        c.dhgroups.clone_from(&self.dhgroups);
        c
    }
}

impl PartialEq for HostDhchapKeys {
    fn eq(&self, o: &Self) -> bool {
        let ctrl = match (&self.ctrlr_key, &o.ctrlr_key) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_key(b),
            _ => false,
        };
        self.key.same_key(&o.key)
            && ctrl
            && self.names == o.names
            && self.hashes == o.hashes
            && self.dhgroups == o.dhgroups
    }
}

impl Eq for HostDhchapKeys {}

/// Where a remote subsystem is and who we are (SPDK's "transport ID" plus the host identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmeTrid {
    /// The target's address (`traddr`:`trsvcid`).
    pub addr: SocketAddr,
    /// The subsystem's NQN.
    pub subnqn: String,
    /// Our host NQN.
    pub hostnqn: String,
    /// Our Host Identifier.
    pub hostid: [u8; 16],
    /// Keys to authenticate with when the controller asks; `None`: a
    /// controller that asks is refused.
    pub dhchap: Option<HostDhchapKeys>,
    /// TLS 1.3 with this PSK on every queue (`bdev_nvme_attach_controller
    /// --psk`); `None`: plain TCP.
    pub tls: Option<HostTls>,
}

/// The TLS PSK a host connects with: derived for its host and subsystem
/// NQNs, identity version 0 (what SPDK's target looks up; Linux's accepts
/// it too), and the keyring name it came by.
#[derive(Clone, Debug)]
pub struct HostTls {
    /// The identity and key TLS uses.
    pub psk: TlsPsk,
    /// The keyring name (`psk`), when given by name.
    pub name: Option<String>,
}

impl HostTls {
    /// The TLS PSK `configured` gives host `hostnqn` towards `subnqn`.
    ///
    /// # Errors
    /// A message when the NQNs cannot form an identity.
    pub fn new(configured: &ConfiguredPsk, hostnqn: &str, subnqn: &str, name: Option<String>) -> Result<Self, String> {
        let psk = configured
            .tls_psk(hostnqn, subnqn, IdentityVersion::V0)
            .map_err(|e| e.to_string())?;
        Ok(HostTls { psk, name })
    }
}

impl PartialEq for HostTls {
    fn eq(&self, o: &Self) -> bool {
        self.psk.same(&o.psk) && self.name == o.name
    }
}

impl Eq for HostTls {}

impl NvmeTrid {
    /// A host identity derived from `hostnqn` (stable across runs).
    pub fn new(addr: SocketAddr, subnqn: &str, hostnqn: &str) -> Self {
        NvmeTrid {
            addr,
            subnqn: subnqn.to_string(),
            hostnqn: hostnqn.to_string(),
            hostid: crate::bdev::uuid_from_name("hostid", hostnqn),
            dhchap: None,
            tls: None,
        }
    }

    /// The same, over TLS with `tls` on every queue.
    #[must_use]
    pub fn with_tls(mut self, tls: HostTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same, authenticating with `keys` where the controller asks.
    #[must_use]
    pub fn with_dhchap(mut self, keys: HostDhchapKeys) -> Self {
        self.dhchap = Some(keys);
        self
    }
}

/// Authenticates queue `qid` before anything else is sent on it, when its
/// Connect response (`dw0`) asks for it (ATR), and also when it does not
/// but a controller key was given: bidirectional authentication is the
/// host's demand that the controller prove its key, and a controller that
/// skips authentication must not pass for one that proved it.
///
/// # Errors
/// [`SyncError::Protocol`] (or [`SyncError::Timeout`]) naming the queue and
/// the reason: no keys given, or the transaction failed (the controller
/// refused our key or the transaction, or did not prove its own).
fn authenticate_if_asked(q: &mut SyncQueue, trid: &NvmeTrid, qid: u16, dw0: u32) -> Result<(), SyncError> {
    let asked = dw0 & CONNECT_AUTHREQ_ATR != 0;
    let keys = match &trid.dhchap {
        Some(k) if asked || k.ctrlr_key.is_some() => k,
        Some(_) => return Ok(()),
        None if asked => {
            return Err(SyncError::Protocol(format!(
                "queue {qid}: the controller requires DH-HMAC-CHAP authentication (ATR in the Connect response) \
                 and no dhchap_key was given"
            )));
        }
        None => return Ok(()),
    };
    let cfg = Arc::new(keys.config(&trid.hostnqn, &trid.subnqn));
    // The transaction identifier is the host's to choose; the QID keeps
    // each queue's apart in a trace.
    q.authenticate(cfg, qid).map_err(|e| match e {
        SyncError::Protocol(m) => SyncError::Protocol(format!("queue {qid}: {m}")),
        SyncError::Timeout(m) => SyncError::Timeout(format!("queue {qid}: DH-HMAC-CHAP: {m}")),
        e => SyncError::Protocol(format!("queue {qid}: DH-HMAC-CHAP authentication failed: {e}")),
    })
}

/// A namespace of the remote controller (from Identify Namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsInfo {
    /// Its NSID.
    pub nsid: u32,
    /// Logical block size, bytes (LBAF\[FLBAS\].LBADS).
    pub block_size: u32,
    /// Size in blocks (NSZE).
    pub num_blocks: u64,
    /// NGUID of Identify Namespace (zeroes: none).
    pub nguid: [u8; 16],
    /// EUI64 of Identify Namespace (zeroes: none).
    pub eui64: [u8; 8],
    /// The Namespace Identification Descriptor list (CNS 03h); empty when
    /// the controller has none.
    pub ids: NsDescriptors,
}

impl NsInfo {
    /// The UUID a bdev of this namespace takes, by SPDK's bdev_nvme rule
    /// (`nbdev_create`): the NGUID descriptor, else the UUID descriptor. Where
    /// SPDK then leaves the UUID unset (unless `generate_uuids`), lull takes
    /// the NGUID of Identify Namespace for a controller without a descriptor
    /// list; `None` when the namespace has no identifier at all.
    pub fn bdev_uuid(&self) -> Option<[u8; 16]> {
        let set = |v: [u8; 16]| (v != [0; 16]).then_some(v);
        self.ids
            .nguid
            .and_then(set)
            .or_else(|| self.ids.uuid.and_then(set))
            .or_else(|| set(self.nguid))
    }
}

/// What a Namespace Identification Descriptor list holds (NVMe Base 2.0
/// figures 275-276); a descriptor of the wrong length is ignored, as SPDK's
/// initiator ignores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsDescriptors {
    /// NIDT 1h.
    pub eui64: Option<[u8; 8]>,
    /// NIDT 2h.
    pub nguid: Option<[u8; 16]>,
    /// NIDT 3h.
    pub uuid: Option<[u8; 16]>,
    /// NIDT 4h: the Command Set Identifier.
    pub csi: Option<u8>,
}

/// Parses a Namespace Identification Descriptor list: descriptors follow
/// each other (4-byte header, NIDL bytes) until one with NIDL 0 or one that
/// would run past the 4096 bytes; the first of each type counts.
pub fn parse_descriptors(d: &[u8]) -> NsDescriptors {
    let mut out = NsDescriptors::default();
    let mut at = 0usize;
    while at + 4 <= d.len() {
        let (nidt, nidl) = (d[at], usize::from(d[at + 1]));
        if nidl == 0 || at + 4 + nidl > d.len() {
            break;
        }
        let v = &d[at + 4..at + 4 + nidl];
        match (nidt, nidl) {
            (1, 8) if out.eui64.is_none() => out.eui64 = v.try_into().ok(),
            (2, 16) if out.nguid.is_none() => out.nguid = v.try_into().ok(),
            (3, 16) if out.uuid.is_none() => out.uuid = v.try_into().ok(),
            (4, 1) if out.csi.is_none() => out.csi = Some(v[0]),
            _ => {}
        }
        at += 4 + nidl;
    }
    out
}

/// What Identify and the Connects told us about the remote controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtrlrInfo {
    /// CNTLID of this association.
    pub cntlid: u16,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// The SUBNQN the controller reports.
    pub subnqn: String,
    /// In-capsule data the I/O queues accept, bytes (IOCCSZ x 16 - 64).
    pub in_capsule_bytes: u32,
    /// Largest transfer, bytes (from MDTS and CAP.MPSMIN); `None` = no limit.
    pub max_transfer_bytes: Option<u32>,
    /// I/O queues connected.
    pub io_queues: u16,
    /// Entries per I/O queue.
    pub io_queue_size: u16,
    /// MAXH2CDATA of the first I/O queue, bytes.
    pub maxh2cdata: u32,
    /// Digests in force (header, data).
    pub digests: Digests,
    /// Active namespaces.
    pub namespaces: Vec<NsInfo>,
}

/// An association ready for the reactors: the enabled admin queue and the
/// connected I/O queues, nothing in flight on any.
pub(crate) struct Association {
    pub admin: SyncQueue,
    pub io: Vec<SyncQueue>,
    pub info: CtrlrInfo,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole bring-up may take at attach.
pub(crate) const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// Admin queue size (0's based SQSIZE 31: 32 entries).
const ADMIN_SQSIZE: u16 = 31;

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches([' ', '\0']).to_string()
}

fn identify(admin: &mut SyncQueue, cns: u8, nsid: u32) -> Result<Vec<u8>, SyncError> {
    let sqe = Identify { cns, cntid: 0, nsid }.encode();
    Ok(admin
        .call(&format!("Identify CNS {cns:#04x} NSID {nsid}"), sqe, &[], 4096)?
        .data)
}

/// Parses Identify Namespace (NVMe base 2.0 figure 280 / NVM command set 1.0 figure 97).
pub(crate) fn parse_namespace(nsid: u32, d: &[u8]) -> Option<NsInfo> {
    if d.len() < 192 {
        return None;
    }
    let nsze = u64::from_le_bytes(d[0..8].try_into().ok()?);
    let flbas = d[26] & 0x0F;
    let lbaf = 128 + 4 * flbas as usize;
    let lbads = d[lbaf + 2];
    if nsze == 0 || !(9..=16).contains(&lbads) {
        return None;
    }
    let mut nguid = [0u8; 16];
    nguid.copy_from_slice(&d[104..120]);
    let mut eui64 = [0u8; 8];
    eui64.copy_from_slice(&d[120..128]);
    Some(NsInfo {
        nsid,
        block_size: 1 << lbads,
        num_blocks: nsze,
        nguid,
        eui64,
        ids: NsDescriptors::default(),
    })
}

/// Reads the active namespace list and each namespace.
fn namespaces(admin: &mut SyncQueue) -> Result<Vec<NsInfo>, SyncError> {
    let list = identify(admin, cns::ACTIVE_NAMESPACES, 0)?;
    let mut out = Vec::new();
    for c in list.chunks_exact(4) {
        let nsid = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if nsid == 0 {
            break;
        }
        let d = identify(admin, cns::NAMESPACE, nsid)?;
        if let Some(mut ns) = parse_namespace(nsid, &d) {
            // A controller older than NVMe 1.3 may refuse CNS 03h: the
            // namespace is then known by Identify Namespace alone.
            match identify(admin, cns::NAMESPACE_DESCRIPTORS, nsid) {
                Ok(list) => ns.ids = parse_descriptors(&list),
                Err(SyncError::Status { status, .. }) => {
                    tracing::debug!(nsid, %status, "no Namespace Identification Descriptor list");
                }
                Err(e) => return Err(e),
            }
            out.push(ns);
        }
    }
    Ok(out)
}

fn digests(opts: &NvmeOptions) -> Digests {
    Digests {
        header: opts.hdgst,
        data: opts.ddgst,
    }
}

/// Connects one I/O queue `qid` of controller `cntlid`.
pub(crate) fn connect_io_queue(
    trid: &NvmeTrid,
    opts: &NvmeOptions,
    cntlid: u16,
    qid: u16,
    size: u16,
    in_capsule: u32,
    deadline: Instant,
) -> Result<SyncQueue, SyncError> {
    let mut q = SyncQueue::connect_secure(
        trid.addr,
        digests(opts),
        in_capsule,
        STEP_TIMEOUT,
        Some(deadline),
        trid.tls.as_ref().map(|t| &t.psk),
    )?;
    let data = ConnectData {
        hostid: trid.hostid,
        cntlid,
        subnqn: trid.subnqn.clone(),
        hostnqn: trid.hostnqn.clone(),
    };
    let cqe = q.fabric_connect(qid, size - 1, 0, &data)?;
    authenticate_if_asked(&mut q, trid, qid, cqe.dw0)?;
    Ok(q)
}

/// Brings up an association with `io_queues` I/O queues (fewer if the
/// controller grants fewer), giving up at `deadline` (each wait is also
/// bounded by 10 s).
///
/// # Errors
/// The first step that failed, in words (connect, ICResp, Connect status,
/// enable timeout, Identify).
pub(crate) fn associate(
    trid: &NvmeTrid,
    opts: &NvmeOptions,
    io_queues: u16,
    deadline: Instant,
) -> Result<Association, SyncError> {
    let mut admin = SyncQueue::connect_secure(
        trid.addr,
        digests(opts),
        8192,
        STEP_TIMEOUT,
        Some(deadline),
        trid.tls.as_ref().map(|t| &t.psk),
    )?;
    let data = ConnectData {
        hostid: trid.hostid,
        cntlid: 0xFFFF,
        subnqn: trid.subnqn.clone(),
        hostnqn: trid.hostnqn.clone(),
    };
    let connected = admin.fabric_connect(0, ADMIN_SQSIZE, opts.keep_alive_timeout_ms, &data)?;
    let cntlid = connected.dw0 as u16;
    authenticate_if_asked(&mut admin, trid, 0, connected.dw0)?;
    let cap = admin.property_get(property::CAP, 8)?;
    // CAP.TO is in 500 ms units; CAP.MQES is 0's based.
    let enable_timeout = Duration::from_millis(500 * ((cap >> 24) & 0xFF)).max(Duration::from_secs(1));
    let mqes = (cap & 0xFFFF) as u16;
    admin.enable(enable_timeout)?;

    let id = identify(&mut admin, cns::CONTROLLER, 0)?;
    if id.len() < 4096 {
        return Err(SyncError::Protocol(
            "Identify Controller returned less than 4096 bytes".into(),
        ));
    }
    let ioccsz = u32::from_le_bytes([id[1792], id[1793], id[1794], id[1795]]);
    let in_capsule_bytes = (ioccsz.saturating_mul(16)).saturating_sub(64);
    let mpsmin = 12 + ((cap >> 48) & 0xF) as u32;
    let max_transfer_bytes = match id[77] {
        0 => None,
        m => 1u32.checked_shl(u32::from(m) + mpsmin),
    };

    // Number of Queues (Feature 07h): 0's based counts in both halves.
    let want = io_queues.max(1);
    let ask = NumberOfQueues {
        nsq: want - 1,
        ncq: want - 1,
    };
    let sqe = Features::set(fid::NUMBER_OF_QUEUES, ask.dword()).encode(admin_opc::SET_FEATURES);
    let dw0 = admin.call("Set Features (Number of Queues)", sqe, &[], 0)?.cqe.dw0;
    let granted = NumberOfQueues::from_dword(dw0);
    let queues = want
        .min(granted.nsq.saturating_add(1))
        .min(granted.ncq.saturating_add(1));

    // Namespace attribute notices, so namespace changes raise an AER; a
    // controller that refuses the feature still serves I/O.
    let sqe = Features::set(fid::ASYNC_EVENT_CONFIGURATION, aec::NAMESPACE_ATTRIBUTE).encode(admin_opc::SET_FEATURES);
    if let Err(e) = admin.call("Set Features (Async Event Configuration)", sqe, &[], 0) {
        tracing::debug!(error = %e, "the controller refused Async Event Configuration");
    }

    let namespaces = namespaces(&mut admin)?;
    let size = opts.io_queue_size.min(mqes.saturating_add(1)).max(2);
    let mut io = Vec::with_capacity(queues as usize);
    for qid in 1..=queues {
        io.push(connect_io_queue(
            trid,
            opts,
            cntlid,
            qid,
            size,
            in_capsule_bytes,
            deadline,
        )?);
    }
    let (maxh2cdata, digests) = match io.first_mut() {
        Some(q) => (q.queue_mut().maxh2cdata(), q.queue_mut().digests()),
        None => (0, admin.queue_mut().digests()),
    };
    let info = CtrlrInfo {
        cntlid,
        serial: ascii(&id[4..24]),
        model: ascii(&id[24..64]),
        firmware: ascii(&id[64..72]),
        subnqn: ascii(&id[768..1024]),
        in_capsule_bytes,
        max_transfer_bytes,
        io_queues: queues,
        io_queue_size: size,
        maxh2cdata,
        digests,
        namespaces,
    };
    Ok(Association { admin, io, info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_namespace_is_parsed_by_the_formatted_lba_size() {
        let mut d = vec![0u8; 4096];
        d[0..8].copy_from_slice(&1000u64.to_le_bytes());
        d[26] = 1; // FLBAS: format 1
        d[128 + 2] = 9; // format 0: 512 bytes
        d[132 + 2] = 12; // format 1: 4096 bytes
        d[104] = 0xAB;
        let ns = parse_namespace(3, &d).unwrap();
        assert_eq!(
            (ns.nsid, ns.block_size, ns.num_blocks, ns.nguid[0]),
            (3, 4096, 1000, 0xAB)
        );
        d[132 + 2] = 30;
        assert_eq!(parse_namespace(3, &d), None, "an absurd LBADS is refused");
        d[132 + 2] = 12;
        d[0..8].fill(0);
        assert_eq!(parse_namespace(3, &d), None, "an inactive namespace is skipped");
    }

    #[test]
    fn descriptor_list_and_the_bdev_uuid_rule() {
        let mut d = vec![0u8; 4096];
        // UUID first, then NGUID, then a descriptor of a wrong length, then the end.
        d[0..4].copy_from_slice(&[3, 16, 0, 0]);
        d[4..20].fill(0x33);
        d[20..24].copy_from_slice(&[2, 16, 0, 0]);
        d[24..40].fill(0x22);
        d[40..44].copy_from_slice(&[1, 4, 0, 0]);
        d[44..48].fill(0x11);
        let ids = parse_descriptors(&d);
        assert_eq!(
            (ids.uuid, ids.nguid, ids.eui64),
            (Some([0x33; 16]), Some([0x22; 16]), None)
        );
        let mut ns = NsInfo {
            nsid: 1,
            block_size: 512,
            num_blocks: 8,
            nguid: [0x44; 16],
            eui64: [0; 8],
            ids,
        };
        assert_eq!(ns.bdev_uuid(), Some([0x22; 16]), "NGUID descriptor first");
        ns.ids.nguid = None;
        assert_eq!(ns.bdev_uuid(), Some([0x33; 16]), "then the UUID descriptor");
        ns.ids.uuid = None;
        assert_eq!(ns.bdev_uuid(), Some([0x44; 16]), "then Identify Namespace's NGUID");
        ns.nguid = [0; 16];
        assert_eq!(ns.bdev_uuid(), None);
        // A descriptor running past the list ends it.
        let mut d = vec![0u8; 4096];
        d[4092..4096].copy_from_slice(&[3, 16, 0, 0]);
        assert_eq!(parse_descriptors(&d), NsDescriptors::default());
    }
}
