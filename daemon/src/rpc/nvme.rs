//! `bdev_nvme_*` methods: the initiator's options and remote controllers
//! (SPDK's names; `bdev_nvme_set_options` also applies the poll periods to
//! controllers already attached, where SPDK refuses any change once one is).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::live::options_json;
use super::params::{adrfam, decode, socket_addr, tcp};
use super::{RpcError, code};
use crate::app::App;
use crate::settings::{self, Names, Part, SettingValue};
use lull_engine::initiator::{CtrlrState, HostDhchapKeys, HostTls, NvmeTrid};
use lull_engine::nvmf::subsystem::KeyNames;

/// SPDK's `bdev_nvme_set_options`: the initiator's settings of the
/// settings table, by SPDK's names, and what the initiator offers in
/// DH-HMAC-CHAP. Checked as a whole before anything changes.
pub(super) fn bdev_nvme_set_options(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    struct SpdkOnly {
        /// `none` (no timeout) or `reset`; SPDK's `abort` is not implemented.
        action_on_timeout: Option<String>,
        /// Hashes the initiator offers in DH-HMAC-CHAP (`sha256`...).
        dhchap_digests: Option<Vec<String>>,
        /// DH groups the initiator offers (`null`, `ffdhe2048`...).
        dhchap_dhgroups: Option<Vec<String>>,
    }
    let mut rest: Map<String, Value> = decode(params)?;
    let own: Map<String, Value> = ["action_on_timeout", "dhchap_digests", "dhchap_dhgroups"]
        .iter()
        .filter_map(|k| rest.remove_entry(*k))
        .collect();
    let p: SpdkOnly = decode(Value::Object(own))?;
    if let Some(a) = &p.action_on_timeout
        && !matches!(a.as_str(), "none" | "reset")
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: action_on_timeout {a}: lull supports none and reset"
        )));
    }
    // SPDK: -1 retries forever; lull caps retries at 100.
    if let Some(r) = rest.get_mut("bdev_retry_count")
        && r.as_i64().is_some_and(|r| r < 0)
    {
        *r = json!(100);
    }
    let offer = app
        .dhchap_offer()
        .with_names(p.dhchap_digests.as_deref(), p.dhchap_dhgroups.as_deref())
        .map_err(|e| RpcError::invalid(format!("Invalid parameters: {e}")))?;
    let mut changes = settings::changes_from_json(&rest, &Names::spdk(|s| s.part == Part::Initiator))
        .map_err(|e| RpcError::invalid(format!("Invalid parameters: {e}")))?;
    if p.action_on_timeout.as_deref() == Some("none")
        && let Some(t) = settings::find("timeout_us", &[])
    {
        changes
            .add(t, "action_on_timeout", SettingValue::Int(0))
            .map_err(|e| RpcError::invalid(format!("Invalid parameters: {e}")))?;
    }
    super::live::apply(app, &changes)?;
    app.set_dhchap_offer(offer);
    Ok(Value::Bool(true))
}

pub(super) fn bdev_nvme_get_options(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let o = app.nvme_options();
    let mut v = options_json(&o);
    let offer = app.dhchap_offer();
    if let Some(m) = v.as_object_mut() {
        m.insert("dhchap_digests".into(), json!(offer.digest_names()));
        m.insert("dhchap_dhgroups".into(), json!(offer.dhgroup_names()));
    }
    Ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attach {
    name: String,
    trtype: String,
    traddr: String,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    subnqn: Option<String>,
    hostnqn: Option<String>,
    hdgst: Option<bool>,
    ddgst: Option<bool>,
    ctrlr_loss_timeout_sec: Option<i32>,
    reconnect_delay_sec: Option<u32>,
    fast_io_fail_timeout_sec: Option<u32>,
    /// One path per controller name: `disable`, and SPDK's default
    /// `multipath` for a first path; `failover` is not implemented.
    multipath: Option<String>,
    /// Keyring name of the host's DH-HMAC-CHAP key, used when the
    /// controller asks for authentication.
    dhchap_key: Option<String>,
    /// Keyring name of the controller's key (bidirectional authentication).
    dhchap_ctrlr_key: Option<String>,
    /// Keyring name of the TLS PSK (`NVMeTLSkey-1`): every queue runs TLS
    /// 1.3 keyed by it.
    psk: Option<String>,
}

/// The host NQN lull's initiator presents when `bdev_nvme_attach_controller`
/// gives none: `nqn.2014-08.org.nvmexpress:uuid:` and a UUID derived from
/// this machine's `/etc/machine-id`, so it is stable across restarts and
/// differs between machines. A replica target that lists allowed hosts
/// must list this one (`lull target` prints it at start).
pub fn default_hostnqn() -> String {
    let host = std::fs::read_to_string("/etc/machine-id").unwrap_or_else(|_| "lull".to_string());
    let id = lull_engine::bdev::uuid_from_name("hostnqn", host.trim());
    format!("nqn.2014-08.org.nvmexpress:uuid:{}", super::params::uuid_string(&id))
}

pub(super) fn bdev_nvme_attach_controller(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: Attach = decode(params)?;
    tcp(&p.trtype)?;
    if let Some(m) = &p.multipath
        && !matches!(m.as_str(), "disable" | "multipath")
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: multipath = {m}: lull does not implement failover paths; allowed disable, multipath"
        )));
    }
    let addr = socket_addr(&p.traddr, p.trsvcid.as_deref().unwrap_or("4420"))?;
    check_adrfam(p.adrfam.as_deref(), &addr, &p.traddr)?;
    let Some(subnqn) = p.subnqn else {
        return Err(RpcError::invalid("Invalid parameters: subnqn is required for NVMe/TCP"));
    };
    let hostnqn = p.hostnqn.unwrap_or_else(default_hostnqn);
    lull_engine::nvmf::subsystem::validate_nqn(&hostnqn)
        .map_err(|e| RpcError::invalid(format!("Invalid parameters: hostnqn: {e}")))?;
    let mut o = app.nvme_options();
    o.hdgst = p.hdgst.unwrap_or(false);
    o.ddgst = p.ddgst.unwrap_or(false);
    if let Some(v) = p.ctrlr_loss_timeout_sec {
        o.ctrlr_loss_timeout_sec = v;
    }
    if let Some(v) = p.reconnect_delay_sec {
        o.reconnect_delay_sec = v;
    }
    if let Some(v) = p.fast_io_fail_timeout_sec {
        o.fast_io_fail_timeout_sec = v;
    }
    let mut trid = NvmeTrid::new(addr, &subnqn, &hostnqn);
    match (&p.dhchap_key, &p.dhchap_ctrlr_key) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(RpcError::invalid(
                "Invalid parameters: dhchap_ctrlr_key needs dhchap_key: bidirectional authentication starts with the host's key",
            ));
        }
        (Some(k), c) => {
            let key = app.key_secret("dhchap_key", k)?;
            let ctrlr_key = c
                .as_deref()
                .map(|c| app.key_secret("dhchap_ctrlr_key", c))
                .transpose()?;
            let names = KeyNames {
                key: k.clone(),
                ctrlr_key: c.clone(),
            };
            let keys = HostDhchapKeys::new(key, ctrlr_key, Some(names))
                .map_err(|e| RpcError::invalid(format!("Invalid parameters: {e}")))?
                .offering(&app.dhchap_offer());
            trid = trid.with_dhchap(keys);
        }
    }
    if let Some(name) = &p.psk {
        let configured = app.key_psk("psk", name)?;
        let tls = HostTls::new(&configured, &hostnqn, &subnqn, Some(name.clone()))
            .map_err(|e| RpcError::invalid(format!("Invalid parameters: psk: {e}")))?;
        trid = trid.with_tls(tls);
    }
    let names = app.attach_controller(&p.name, trid, o)?;
    Ok(json!(names))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Detach {
    name: String,
    trtype: Option<String>,
    traddr: Option<String>,
    adrfam: Option<String>,
    trsvcid: Option<String>,
    subnqn: Option<String>,
}

/// SPDK's `adrfam` (case-insensitive), when given, must fit the address.
fn check_adrfam(adrfam: Option<&str>, addr: &std::net::SocketAddr, traddr: &str) -> Result<(), RpcError> {
    let Some(f) = adrfam else { return Ok(()) };
    let ok = match f.to_ascii_lowercase().as_str() {
        "ipv4" => addr.is_ipv4(),
        "ipv6" => addr.is_ipv6(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid(format!(
            "Invalid parameters: adrfam {f} does not fit traddr {traddr} (allowed IPv4, IPv6)"
        )))
    }
}

pub(super) fn bdev_nvme_detach_controller(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: Detach = decode(params)?;
    // SPDK detaches only the path that matches every part given; lull's
    // controllers have one path, so a part that does not match it is -ENODEV.
    if p.trtype.is_some() || p.traddr.is_some() || p.trsvcid.is_some() || p.subnqn.is_some() || p.adrfam.is_some() {
        let Some((_, c, _)) = app.controllers().into_iter().find(|(n, _, _)| *n == p.name) else {
            return Err(RpcError {
                code: code::ENODEV,
                message: format!("NVMe controller {} does not exist: No such device", p.name),
            });
        };
        let t = c.trid();
        let ip_matches = |a: &str| {
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip == t.addr.ip())
        };
        let matches = p.trtype.as_deref().is_none_or(|x| x.eq_ignore_ascii_case("tcp"))
            && p.traddr.as_deref().is_none_or(ip_matches)
            && p.trsvcid
                .as_deref()
                .is_none_or(|s| s.parse::<u16>() == Ok(t.addr.port()))
            && p.subnqn.as_deref().is_none_or(|s| s == t.subnqn)
            && p.adrfam
                .as_deref()
                .is_none_or(|f| f.eq_ignore_ascii_case(adrfam(&t.addr)));
        if !matches {
            return Err(RpcError {
                code: code::ENODEV,
                message: format!(
                    "NVMe controller {}: no path matches the given trtype/traddr/trsvcid/subnqn: No such device",
                    p.name
                ),
            });
        }
    }
    app.detach_controller(&p.name)?;
    Ok(Value::Bool(true))
}

/// How long `bdev_nvme_set_keys` waits for every queue to re-authenticate:
/// an attach's bound (a transaction per queue, all queues at once).
const SET_KEYS_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// SPDK's `bdev_nvme_set_keys`: new DH-HMAC-CHAP keys (keyring names) for
/// controller `name`, and the re-authentication of its admin queue and
/// every I/O queue on the live association (I/O keeps flowing); no key
/// clears them (new queues do not authenticate). `true` once every queue
/// re-authenticated. Errors as SPDK's: an unknown controller -ENODEV, an
/// unknown key -ENOKEY, a refused re-authentication -EACCES (the
/// controller then resets, and is deleted if the keys keep failing past
/// `ctrlr_loss_timeout_sec`; no other controller is touched).
pub(super) fn bdev_nvme_set_keys(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        dhchap_key: Option<String>,
        dhchap_ctrlr_key: Option<String>,
    }
    let p: P = decode(params)?;
    let Some((_, ctrlr, _)) = app.controllers().into_iter().find(|(n, _, _)| *n == p.name) else {
        return Err(RpcError {
            code: code::ENODEV,
            message: format!("NVMe controller {} does not exist: No such device", p.name),
        });
    };
    let no_key = |field: &str, k: &str| RpcError {
        code: code::ENOKEY,
        message: format!("{field}: key {k} is not in the keyring (keyring_file_add_key): Required key not available"),
    };
    let keys = match (&p.dhchap_key, &p.dhchap_ctrlr_key) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(RpcError::invalid(
                "Invalid parameters: dhchap_ctrlr_key needs dhchap_key: bidirectional authentication starts with the host's key",
            ));
        }
        (Some(k), c) => {
            let key = app.key_secret("dhchap_key", k).map_err(|_| no_key("dhchap_key", k))?;
            let ctrlr_key = match c {
                Some(c) => Some(
                    app.key_secret("dhchap_ctrlr_key", c)
                        .map_err(|_| no_key("dhchap_ctrlr_key", c))?,
                ),
                None => None,
            };
            let names = KeyNames {
                key: k.clone(),
                ctrlr_key: c.clone(),
            };
            let keys = HostDhchapKeys::new(key, ctrlr_key, Some(names))
                .map_err(|e| RpcError::invalid(format!("Invalid parameters: {e}")))?;
            // The hashes and groups the controller was attached offering
            // stay (SPDK changes the keys only); a controller attached
            // without keys offers today's bdev_nvme_set_options lists.
            let keys = match ctrlr.trid().dhchap {
                Some(old) => HostDhchapKeys {
                    hashes: old.hashes,
                    dhgroups: old.dhgroups,
                    ..keys
                },
                None => keys.offering(&app.dhchap_offer()),
            };
            Some(keys)
        }
    };
    ctrlr.set_keys(keys, SET_KEYS_LIMIT).map_err(|e| RpcError {
        code: code::EACCES,
        message: format!("NVMe controller {}: {e}: Permission denied", p.name),
    })?;
    Ok(Value::Bool(true))
}

pub(super) fn bdev_nvme_get_controllers(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: Option<String>,
    }
    let p: P = decode(params)?;
    let list: Vec<_> = app
        .controllers()
        .into_iter()
        .filter(|(n, _, _)| p.name.as_ref().is_none_or(|w| w == n))
        .collect();
    if let Some(w) = &p.name
        && list.is_empty()
    {
        return Err(RpcError {
            code: code::ENODEV,
            message: format!("NVMe controller {w} does not exist: No such device"),
        });
    }
    let out: Vec<Value> = list
        .into_iter()
        .map(|(name, c, bdevs)| {
            let t = c.trid();
            let info = c.info();
            let state = match c.state() {
                CtrlrState::Live => "enabled",
                CtrlrState::Resetting { .. } => "resetting",
                CtrlrState::Lost(_) => "failed",
                _ => "deleting",
            };
            let o = c.options();
            json!({
                "name": name,
                "ctrlrs": [{
                    "state": state,
                    "trid": {
                        "trtype": "TCP",
                        "adrfam": adrfam(&t.addr),
                        "traddr": t.addr.ip().to_string(),
                        "trsvcid": t.addr.port().to_string(),
                        "subnqn": t.subnqn,
                    },
                    "cntlid": info.cntlid,
                    "host": {"nqn": t.hostnqn, "addr": "", "svcid": ""},
                    "resets": c.resets(),
                    "io_queues": info.io_queues,
                    "bdevs": bdevs,
                    "nvme_ioq_poll_period_us": o.nvme_ioq_poll_period_us,
                    "nvme_adminq_poll_period_us": o.nvme_adminq_poll_period_us,
                }]
            })
        })
        .collect();
    Ok(Value::Array(out))
}
