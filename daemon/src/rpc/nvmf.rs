//! `nvmf_*` methods: the TCP transport, subsystems, namespaces, listeners
//! and hosts (SPDK's names, parameters and result shapes).

use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{adrfam, decode, socket_addr, tcp, uuid_string};
use super::{RpcError, code};
use crate::app::App;
use lull_engine::nvmf::admin::identify::MAX_TRANSFER;
use lull_engine::nvmf::subsystem::{DEFAULT_MAX_NAMESPACES, SubsystemKind};
use lull_engine::nvmf::target::MAX_IO_QUEUES;
use lull_proto::fabrics::DISCOVERY_NQN;
use lull_proto::target_queue::MAX_SQ_ENTRIES;

/// `discovery` is SPDK's shortcut for the discovery NQN.
fn nqn(n: &str) -> &str {
    if n == "discovery" { DISCOVERY_NQN } else { n }
}

/// What lull implements of SPDK's transport options; the options of other
/// transports (RDMA's `no_srq`, vfio-user's, ...) that clients send with
/// their defaults are taken off before (`compat`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportParams {
    trtype: String,
    in_capsule_data_size: Option<u32>,
    max_io_size: Option<u32>,
    max_queue_depth: Option<u32>,
    max_aq_depth: Option<u32>,
    /// I/O queues per controller (SPDK counts the admin queue apart).
    max_io_qpairs_per_ctrlr: Option<u16>,
    /// lull: MAXH2CDATA advertised, bytes.
    max_h2c_data: Option<u32>,
    /// SPDK's C2H success optimization (default true):
    /// `TargetQueueConfig::c2h_success`.
    c2h_success: Option<bool>,
}

pub(super) fn nvmf_create_transport(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: TransportParams = decode(params)?;
    tcp(&p.trtype)?;
    if let Some(m) = p.max_io_size
        && m != MAX_TRANSFER
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: max_io_size {m}: lull transfers {MAX_TRANSFER} bytes per command (MDTS); give {MAX_TRANSFER} or leave it out"
        )));
    }
    if let Some(d) = p.max_queue_depth
        && !(2..=MAX_SQ_ENTRIES).contains(&d)
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: max_queue_depth {d}: allowed 2..={MAX_SQ_ENTRIES}"
        )));
    }
    if let Some(d) = p.max_aq_depth
        && !(32..=MAX_SQ_ENTRIES).contains(&d)
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: max_aq_depth {d}: allowed 32..={MAX_SQ_ENTRIES}"
        )));
    }
    if let Some(m) = p.max_io_qpairs_per_ctrlr
        && !(1..=MAX_IO_QUEUES).contains(&m)
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: max_io_qpairs_per_ctrlr {m}: allowed 1..={MAX_IO_QUEUES}"
        )));
    }
    let mut config = app.target().queue_config();
    if let Some(c) = p.in_capsule_data_size {
        if c > 131_072 || !c.is_multiple_of(16) {
            return Err(RpcError::invalid(format!(
                "Invalid parameters: in_capsule_data_size {c}: allowed 0..=131072, a multiple of 16"
            )));
        }
        config.io_in_capsule_data = c;
    }
    if let Some(m) = p.max_h2c_data {
        if !(4096..=1_048_576).contains(&m) || !m.is_multiple_of(4) {
            return Err(RpcError::invalid(format!(
                "Invalid parameters: max_h2c_data {m}: allowed 4096..=1048576, a multiple of 4"
            )));
        }
        config.maxh2cdata = m;
    }
    if let Some(c) = p.c2h_success {
        config.c2h_success = c;
    }
    app.create_transport(config)?;
    let target = app.target();
    if let Some(m) = p.max_io_qpairs_per_ctrlr {
        target.set_max_io_queues(m);
    }
    let (io, aq) = target.queue_depths();
    target.set_queue_depths(p.max_queue_depth.unwrap_or(io), p.max_aq_depth.unwrap_or(aq));
    Ok(Value::Bool(true))
}

pub(super) fn nvmf_get_transports(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        trtype: Option<String>,
    }
    let p: P = decode(params)?;
    let t = app.transport();
    if let Some(tr) = &p.trtype {
        tcp(tr).map_err(|_| RpcError {
            code: code::ENODEV,
            message: format!("transport {tr} does not exist: No such device"),
        })?;
    }
    if !t.created {
        return Ok(json!([]));
    }
    let c = t.config;
    let (depth, aq_depth) = app.target().queue_depths();
    // SPDK's shape and order. Every value is one in force: lull has no
    // shared buffer pool, so SPDK's io_unit_size (the unit of that pool) is
    // the largest transfer lull moves in one piece (max_io_size), and
    // num_shared_buffers / buf_cache_size are 0 (no pool, no cache).
    // ack_timeout and data_wr_pool_size are RDMA's: 0, SPDK's value for TCP.
    Ok(json!([{
        "trtype": "TCP",
        "max_queue_depth": depth,
        "max_io_qpairs_per_ctrlr": app.target().max_io_queues(),
        "in_capsule_data_size": c.io_in_capsule_data,
        "max_io_size": c.max_transfer,
        "io_unit_size": c.max_transfer,
        "max_aq_depth": aq_depth,
        "num_shared_buffers": 0,
        "buf_cache_size": 0,
        "dif_insert_or_strip": false,
        "zcopy": false,
        "c2h_success": c.c2h_success,
        "sock_priority": 0,
        "abort_timeout_sec": 1,
        "ack_timeout": 0,
        "data_wr_pool_size": 0,
        "max_h2c_data": c.maxh2cdata,
        "header_digest": c.allow_header_digest,
        "data_digest": c.allow_data_digest
    }]))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubsystem {
    nqn: String,
    serial_number: Option<String>,
    model_number: Option<String>,
    allow_any_host: Option<bool>,
    max_namespaces: Option<u32>,
}

pub(super) fn nvmf_create_subsystem(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: CreateSubsystem = decode(params)?;
    // SPDK's defaults: 20 zeroes and "SPDK bdev Controller"; lull's model is its own.
    let serial = p.serial_number.unwrap_or_else(|| "00000000000000000000".to_string());
    let model = p
        .model_number
        .unwrap_or_else(|| crate::config::DEFAULT_MODEL.to_string());
    let max = match p.max_namespaces {
        None | Some(0) => DEFAULT_MAX_NAMESPACES,
        Some(m) => m,
    };
    app.create_subsystem(&p.nqn, &serial, &model, p.allow_any_host.unwrap_or(false), max)?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NqnOnly {
    nqn: String,
}

pub(super) fn nvmf_delete_subsystem(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: NqnOnly = decode(params)?;
    app.delete_subsystem(nqn(&p.nqn))?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsParams {
    bdev_name: String,
    nsid: Option<u32>,
    /// Accepted when it is the one lull derives (the bdev's UUID), as
    /// spdk_tgt's save_config writes it.
    uuid: Option<String>,
    /// Accepted when it is the one lull derives (the bdev's UUID bytes).
    nguid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNs {
    nqn: String,
    namespace: NsParams,
}

pub(super) fn nvmf_subsystem_add_ns(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: AddNs = decode(params)?;
    let ns = p.namespace;
    // lull gives a namespace its bdev's UUID, and that UUID's bytes as its
    // NGUID (what SPDK derives too): the same values, as spdk_tgt saves
    // them, are accepted; others cannot be given.
    if let Some(b) = app.bdev(&ns.bdev_name) {
        let uuid = b.bdev.info().uuid;
        let derived_uuid = uuid_string(&uuid);
        let derived_nguid: String = uuid.iter().map(|x| format!("{x:02X}")).collect();
        for (k, given, derived) in [
            ("namespace.uuid", &ns.uuid, &derived_uuid),
            ("namespace.nguid", &ns.nguid, &derived_nguid),
        ] {
            if let Some(g) = given
                && !g.replace('-', "").eq_ignore_ascii_case(&derived.replace('-', ""))
            {
                return Err(RpcError::invalid(format!(
                    "Invalid parameters: {k} = {g}: lull derives it from bdev {}'s UUID: {derived} (give that, or leave it out)",
                    ns.bdev_name
                )));
            }
        }
    }
    let nsid = app.add_namespace(&p.nqn, &ns.bdev_name, ns.nsid.unwrap_or(0))?;
    Ok(json!(nsid))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNs {
    nqn: String,
    nsid: u32,
}

pub(super) fn nvmf_subsystem_remove_ns(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: RemoveNs = decode(params)?;
    app.remove_namespace(&p.nqn, p.nsid)?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenAddress {
    trtype: String,
    adrfam: Option<String>,
    traddr: String,
    trsvcid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddress,
    /// SPDK's `--secure-channel`: TLS 1.3 required on the port.
    #[serde(default)]
    secure_channel: bool,
    /// SPDK's socket implementation: `ssl` is TLS (as `secure_channel`),
    /// `posix` and `uring` plain TCP.
    sock_impl: Option<String>,
}

/// Whether the listener asked for is TLS only.
fn wants_tls(p: &ListenerParams) -> Result<bool, RpcError> {
    match p.sock_impl.as_deref() {
        None => Ok(p.secure_channel),
        Some("ssl") => Ok(true),
        Some("posix" | "uring") if !p.secure_channel => Ok(false),
        Some(other) => Err(RpcError::invalid(format!(
            "Invalid parameters: sock_impl {other} with secure_channel {}: a secure channel needs sock_impl ssl (or none)",
            p.secure_channel
        ))),
    }
}

fn listener_addr(p: &ListenerParams) -> Result<std::net::SocketAddr, RpcError> {
    let a = &p.listen_address;
    tcp(&a.trtype)?;
    let Some(svc) = &a.trsvcid else {
        return Err(RpcError::invalid(
            "Invalid parameters: trsvcid (the port) is required for TCP",
        ));
    };
    let addr = socket_addr(&a.traddr, svc)?;
    if let Some(f) = &a.adrfam {
        let ok = match f.to_ascii_lowercase().as_str() {
            "ipv4" => addr.is_ipv4(),
            "ipv6" => addr.is_ipv6(),
            _ => false,
        };
        if !ok {
            return Err(RpcError::invalid(format!(
                "Invalid parameters: adrfam {f} does not fit traddr {}",
                a.traddr
            )));
        }
    }
    Ok(addr)
}

pub(super) fn nvmf_subsystem_add_listener(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: ListenerParams = decode(params)?;
    let addr = listener_addr(&p)?;
    app.add_listener_secure(nqn(&p.nqn), addr, wants_tls(&p)?)?;
    Ok(Value::Bool(true))
}

pub(super) fn nvmf_subsystem_remove_listener(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: ListenerParams = decode(params)?;
    let addr = listener_addr(&p)?;
    app.remove_listener(nqn(&p.nqn), addr)?;
    Ok(Value::Bool(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostParams {
    nqn: String,
    host: String,
}

/// `nvmf_subsystem_add_host` and `nvmf_subsystem_set_keys`: the keys are
/// keyring names (`keyring_file_add_key`), never secrets.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostKeyParams {
    nqn: String,
    host: String,
    /// The TLS PSK's keyring name (add_host only).
    psk: Option<String>,
    dhchap_key: Option<String>,
    dhchap_ctrlr_key: Option<String>,
}

pub(super) fn nvmf_subsystem_add_host(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: HostKeyParams = decode(params)?;
    app.add_host_with_psk(
        &p.nqn,
        &p.host,
        p.psk.as_deref(),
        p.dhchap_key.as_deref(),
        p.dhchap_ctrlr_key.as_deref(),
    )?;
    Ok(Value::Bool(true))
}

pub(super) fn nvmf_subsystem_remove_host(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: HostParams = decode(params)?;
    app.remove_host(&p.nqn, &p.host)?;
    Ok(Value::Bool(true))
}

/// New keys for a listed host; none given clears them (SPDK's meaning).
pub(super) fn nvmf_subsystem_set_keys(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: HostKeyParams = decode(params)?;
    if p.psk.is_some() {
        return Err(RpcError::invalid(
            "Invalid parameters: psk is given with nvmf_subsystem_add_host, not nvmf_subsystem_set_keys",
        ));
    }
    app.set_host_keys(&p.nqn, &p.host, p.dhchap_key.as_deref(), p.dhchap_ctrlr_key.as_deref())?;
    Ok(Value::Bool(true))
}

/// A host as `nvmf_get_subsystems` lists it: its NQN, and the names of its
/// keys when it has keyring keys.
pub(super) fn host_json(s: &lull_engine::nvmf::subsystem::Subsystem, host: &str) -> Value {
    let mut v = json!({"nqn": host});
    if let Some(Some(psk)) = s.host_psk_name(host)
        && let Some(o) = v.as_object_mut()
    {
        o.insert("psk".into(), json!(psk));
    }
    if let Some(k) = s.host_key_names(host)
        && let Some(o) = v.as_object_mut()
    {
        o.insert("dhchap_key".into(), json!(k.key));
        if let Some(c) = k.ctrlr_key {
            o.insert("dhchap_ctrlr_key".into(), json!(c));
        }
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAny {
    nqn: String,
    allow_any_host: bool,
}

pub(super) fn nvmf_subsystem_allow_any_host(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: AllowAny = decode(params)?;
    app.allow_any_host(&p.nqn, p.allow_any_host)?;
    Ok(Value::Bool(true))
}

pub(super) fn nvmf_get_subsystems(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: Option<String>,
    }
    let p: P = decode(params)?;
    let want = p.nqn.as_deref().map(nqn);
    let target = app.target();
    let all_ports = target.listeners();
    let subs: Vec<_> = target
        .subsystems()
        .into_iter()
        .filter(|s| want.is_none_or(|w| w == s.nqn))
        .collect();
    if let Some(w) = want
        && subs.is_empty()
    {
        return Err(RpcError {
            code: code::ENODEV,
            message: format!("subsystem {w} does not exist: No such device"),
        });
    }
    let out: Vec<Value> = subs
        .iter()
        .map(|s| {
            let access = s.access().clone();
            // A subsystem's own listeners, as SPDK lists them: for the
            // discovery subsystem not every port that answers discovery.
            let ports: Vec<std::net::SocketAddr> = if s.kind == SubsystemKind::Discovery {
                target.discovery_listeners()
            } else {
                all_ports
                    .iter()
                    .copied()
                    .filter(|a| target.reachable(s, *a))
                    .collect()
            };
            let listen: Vec<Value> = ports
                .iter()
                .map(|a| {
                    json!({"trtype": "TCP", "adrfam": adrfam(a), "traddr": a.ip().to_string(), "trsvcid": a.port().to_string()})
                })
                .collect();
            let mut v = json!({
                "nqn": s.nqn,
                "subtype": if s.kind == SubsystemKind::Discovery { "Discovery" } else { "NVMe" },
                "listen_addresses": listen,
                "allow_any_host": access.allow_any_host,
                "hosts": access.hosts.iter().map(|h| host_json(s, h)).collect::<Vec<_>>(),
            });
            if s.kind == SubsystemKind::Nvm {
                let namespaces: Vec<Value> = s
                    .namespaces()
                    .iter()
                    .map(|n| {
                        json!({
                            "nsid": n.nsid,
                            "bdev_name": n.bdev.info().name,
                            "name": n.bdev.info().name,
                            "nguid": n.nguid.iter().map(|b| format!("{b:02X}")).collect::<String>(),
                            "uuid": uuid_string(&n.uuid),
                        })
                    })
                    .collect();
                if let Some(o) = v.as_object_mut() {
                    o.insert("serial_number".into(), json!(s.serial));
                    o.insert("model_number".into(), json!(s.model));
                    o.insert("max_namespaces".into(), json!(s.max_namespaces));
                    o.insert("min_cntlid".into(), json!(1));
                    o.insert("max_cntlid".into(), json!(0xFFEF));
                    o.insert("namespaces".into(), Value::Array(namespaces));
                }
            }
            v
        })
        .collect();
    Ok(Value::Array(out))
}

/// SPDK's `dhchap_digests` and `dhchap_dhgroups`, each when given.
pub(super) type DhchapLists = (Option<Vec<String>>, Option<Vec<String>>);

/// The `dhchap_digests` and `dhchap_dhgroups` of `params`, taken out
/// (`null` or absent: not given).
///
/// # Errors
/// Invalid parameters naming the one that is not an array of names.
pub(super) fn take_dhchap_lists(params: &mut Value) -> Result<DhchapLists, RpcError> {
    let mut take = |k: &str| -> Result<Option<Vec<String>>, RpcError> {
        match params.as_object_mut().and_then(|m| m.remove(k)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value::<Vec<String>>(v)
                .map(Some)
                .map_err(|_| RpcError::invalid(format!("Invalid parameters: {k}: expected an array of names"))),
        }
    };
    Ok((take("dhchap_digests")?, take("dhchap_dhgroups")?))
}

/// SPDK's target-wide settings: the DH-HMAC-CHAP hashes and groups every
/// controller allows (`dhchap_digests`, `dhchap_dhgroups`: new transactions
/// use them); the rest (discovery filter, admin passthrough) only at what
/// lull does, as an SPDK tuning method.
pub(super) fn nvmf_set_config(app: &App, mut params: Value) -> Result<Value, RpcError> {
    if !(params.is_null() || params.is_object()) {
        return Err(RpcError::invalid("Invalid parameters: params must be an object"));
    }
    let (digests, dhgroups) = take_dhchap_lists(&mut params)?;
    let target = app.target();
    let allowed = target
        .dhchap_allowed()
        .with_names(digests.as_deref(), dhgroups.as_deref())
        .map_err(|e| RpcError::invalid(format!("Invalid parameters: {e}")))?;
    // The rest first: nothing changes when any of it is refused.
    if params.as_object().is_some_and(|m| !m.is_empty()) {
        super::tuning::spdk_tuning("nvmf_set_config", params)?;
    }
    target.set_dhchap_allowed(allowed);
    Ok(Value::Bool(true))
}
