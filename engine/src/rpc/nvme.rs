//! `bdev_nvme_*` methods: the initiator's options and remote controllers
//! (SPDK's names; `bdev_nvme_set_options` also applies the poll periods to
//! controllers already attached, where SPDK refuses any change once one is).

use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{adrfam, decode, socket_addr, tcp};
use super::{RpcError, code};
use crate::app::App;
use crate::nvme::{CtrlrState, NvmeOptions, NvmeTrid};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOptions {
    nvme_ioq_poll_period_us: Option<u64>,
    nvme_adminq_poll_period_us: Option<u64>,
    keep_alive_timeout_ms: Option<u32>,
    reconnect_delay_sec: Option<u32>,
    ctrlr_loss_timeout_sec: Option<i32>,
    fast_io_fail_timeout_sec: Option<u32>,
    timeout_us: Option<u64>,
    bdev_retry_count: Option<i64>,
    io_queue_requests: Option<u32>,
    // SPDK options lull accepts and has no use for (its behaviour is fixed).
    action_on_timeout: Option<String>,
    timeout_admin_us: Option<u64>,
    transport_retry_count: Option<u32>,
    arbitration_burst: Option<u32>,
    low_priority_weight: Option<u32>,
    medium_priority_weight: Option<u32>,
    high_priority_weight: Option<u32>,
    delay_cmd_submit: Option<bool>,
    transport_ack_timeout: Option<u32>,
    disable_auto_failback: Option<bool>,
    generate_uuids: Option<bool>,
    transport_tos: Option<u32>,
    nvme_error_stat: Option<bool>,
    io_path_stat: Option<bool>,
    allow_accel_sequence: Option<bool>,
}

pub(super) fn bdev_nvme_set_options(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: SetOptions = decode(params)?;
    if let Some(a) = &p.action_on_timeout
        && !matches!(a.as_str(), "none" | "reset")
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: action_on_timeout {a}: lull supports none and reset"
        )));
    }
    let _ = (
        p.timeout_admin_us,
        p.transport_retry_count,
        p.arbitration_burst,
        p.low_priority_weight,
        p.medium_priority_weight,
        p.high_priority_weight,
        p.delay_cmd_submit,
        p.transport_ack_timeout,
        p.disable_auto_failback,
        p.generate_uuids,
        p.transport_tos,
        p.nvme_error_stat,
        p.io_path_stat,
        p.allow_accel_sequence,
    );
    app.update_nvme_options(|o| {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = p.$f { o.$f = v; } )* };
        }
        set!(
            nvme_ioq_poll_period_us,
            nvme_adminq_poll_period_us,
            keep_alive_timeout_ms,
            reconnect_delay_sec,
            ctrlr_loss_timeout_sec,
            fast_io_fail_timeout_sec,
            timeout_us
        );
        if p.action_on_timeout.as_deref() == Some("none") {
            o.timeout_us = 0;
        }
        if let Some(r) = p.bdev_retry_count {
            // SPDK: -1 retries forever; lull caps retries at 100.
            o.bdev_retry_count = if r < 0 {
                100
            } else {
                u32::try_from(r).unwrap_or(u32::MAX)
            };
        }
        if let Some(q) = p.io_queue_requests {
            o.io_queue_size = u16::try_from(q).unwrap_or(u16::MAX);
        }
    })?;
    Ok(Value::Bool(true))
}

pub(super) fn bdev_nvme_get_options(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let o = app.nvme_options();
    Ok(options_json(&o))
}

pub(crate) fn options_json(o: &NvmeOptions) -> Value {
    json!({
        "nvme_ioq_poll_period_us": o.nvme_ioq_poll_period_us,
        "nvme_adminq_poll_period_us": o.nvme_adminq_poll_period_us,
        "keep_alive_timeout_ms": o.keep_alive_timeout_ms,
        "reconnect_delay_sec": o.reconnect_delay_sec,
        "ctrlr_loss_timeout_sec": o.ctrlr_loss_timeout_sec,
        "fast_io_fail_timeout_sec": o.fast_io_fail_timeout_sec,
        "timeout_us": o.timeout_us,
        "action_on_timeout": if o.timeout_us == 0 { "none" } else { "reset" },
        "bdev_retry_count": o.bdev_retry_count,
        "io_queue_requests": o.io_queue_size,
    })
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
    num_io_queues: Option<u32>,
    ctrlr_loss_timeout_sec: Option<i32>,
    reconnect_delay_sec: Option<u32>,
    fast_io_fail_timeout_sec: Option<u32>,
    // SPDK options lull accepts and has no use for.
    priority: Option<String>,
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
    prchk_reftag: Option<bool>,
    prchk_guard: Option<bool>,
    fabrics_connect_timeout_us: Option<u64>,
    multipath: Option<String>,
    max_bdevs: Option<u32>,
    allow_unrecognized_csi: Option<bool>,
}

/// The host NQN used when none is given: stable for this machine.
pub(crate) fn default_hostnqn() -> String {
    let host = std::fs::read_to_string("/etc/machine-id").unwrap_or_else(|_| "lull".to_string());
    let id = crate::bdev::uuid_from_name("hostnqn", host.trim());
    format!("nqn.2014-08.org.nvmexpress:uuid:{}", super::params::uuid_string(&id))
}

pub(super) fn bdev_nvme_attach_controller(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: Attach = decode(params)?;
    tcp(&p.trtype)?;
    let _ = (
        &p.adrfam,
        &p.priority,
        &p.hostaddr,
        &p.hostsvcid,
        p.prchk_reftag,
        p.prchk_guard,
        p.fabrics_connect_timeout_us,
        &p.multipath,
        p.max_bdevs,
        p.allow_unrecognized_csi,
        p.num_io_queues,
    );
    let addr = socket_addr(&p.traddr, p.trsvcid.as_deref().unwrap_or("4420"))?;
    let Some(subnqn) = p.subnqn else {
        return Err(RpcError::invalid("Invalid parameters: subnqn is required for NVMe/TCP"));
    };
    let hostnqn = p.hostnqn.unwrap_or_else(default_hostnqn);
    crate::subsystem::validate_nqn(&hostnqn)
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
    let trid = NvmeTrid::new(addr, &subnqn, &hostnqn);
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
    hostaddr: Option<String>,
    hostsvcid: Option<String>,
}

pub(super) fn bdev_nvme_detach_controller(app: &App, params: Value) -> Result<Value, RpcError> {
    let p: Detach = decode(params)?;
    let _ = (
        &p.trtype,
        &p.traddr,
        &p.adrfam,
        &p.trsvcid,
        &p.subnqn,
        &p.hostaddr,
        &p.hostsvcid,
    );
    app.detach_controller(&p.name)?;
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
