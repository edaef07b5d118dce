//! Statistics and run-time state, with SPDK's names and result shapes:
//! `bdev_get_iostat`, `nvmf_get_stats`, `nvmf_subsystem_get_controllers`,
//! `nvmf_subsystem_get_qpairs`, `nvmf_subsystem_get_listeners`, and the log
//! levels (`log_set_level`, `log_get_level`, `log_set_print_level`,
//! `log_get_print_level`).
//!
//! Ticks are nanoseconds (`tick_rate` 1000000000) since the daemon started.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde::Deserialize;
use serde_json::{Value, json};

use super::params::{adrfam, decode};
use super::{RpcError, code};
use crate::app::App;
use crate::bdev::stats::{IoStat, OpStat, ResetMode, TICK_RATE};
use crate::log_level::{self, SpdkLevel};
use crate::subsystem::{Subsystem, SubsystemKind};

fn ticks(app: &App) -> u64 {
    app.started().elapsed().as_nanos() as u64
}

/// SPDK's fields of one bdev's (or one channel's) statistics.
fn iostat_json(s: &IoStat, out: &mut serde_json::Map<String, Value>) {
    let put = |out: &mut serde_json::Map<String, Value>, k: &str, v: u64| {
        out.insert(k.to_string(), json!(v));
    };
    put(out, "bytes_read", s.read.bytes);
    put(out, "num_read_ops", s.read.ops);
    put(out, "bytes_written", s.write.bytes);
    put(out, "num_write_ops", s.write.ops);
    put(out, "bytes_unmapped", s.unmap.bytes);
    put(out, "num_unmap_ops", s.unmap.ops);
    // lull has no copy command: SPDK's copy counters stay 0.
    put(out, "bytes_copied", 0);
    put(out, "num_copy_ops", 0);
    let lat = |out: &mut serde_json::Map<String, Value>, name: &str, o: &OpStat| {
        put(out, &format!("{name}_latency_ticks"), o.latency_ticks);
        put(out, &format!("max_{name}_latency_ticks"), o.max_latency_ticks);
        put(out, &format!("min_{name}_latency_ticks"), o.min_latency_ticks);
    };
    lat(out, "read", &s.read);
    lat(out, "write", &s.write);
    lat(out, "unmap", &s.unmap);
    lat(out, "copy", &OpStat::default());
}

pub(super) fn bdev_get_iostat(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: Option<String>,
        /// Newer clients' list of names.
        names: Option<Vec<String>>,
        per_channel: Option<bool>,
        reset_mode: Option<String>,
    }
    let p: P = decode(params)?;
    let reset = match p.reset_mode.as_deref() {
        None | Some("none") => None,
        Some("all") => Some(ResetMode::All),
        Some("maxmin") => Some(ResetMode::MaxMin),
        Some(m) => {
            return Err(RpcError::invalid(format!(
                "Invalid parameters: reset_mode {m}: allowed all, maxmin, none"
            )));
        }
    };
    let mut wanted: Vec<String> = p.names.unwrap_or_default();
    wanted.extend(p.name);
    let per_channel = p.per_channel.unwrap_or(false);
    if per_channel && wanted.len() != 1 {
        return Err(RpcError {
            code: -22,
            message: "Invalid argument: per_channel needs exactly one bdev name".into(),
        });
    }
    let all = app.bdevs();
    for w in &wanted {
        if !all.iter().any(|(n, _)| n == w) {
            return Err(RpcError {
                code: code::ENODEV,
                message: format!("bdev {w} does not exist: No such device"),
            });
        }
    }
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| wanted.is_empty() || wanted.contains(n))
        .collect();
    let mut out = serde_json::Map::new();
    out.insert("tick_rate".into(), json!(TICK_RATE));
    out.insert("ticks".into(), json!(ticks(app)));
    if per_channel {
        let (name, e) = &chosen[0];
        let channels: Vec<Value> = app
            .handles()
            .iter()
            .map(|h| {
                let mut m = serde_json::Map::new();
                // The reactor's thread, numbered as framework_get_reactors' lw_threads.
                m.insert("thread_id".into(), json!(h.index() + 1));
                iostat_json(&e.stats.slot(h.index()), &mut m);
                Value::Object(m)
            })
            .collect();
        out.insert("name".into(), json!(name));
        out.insert("channels".into(), Value::Array(channels));
    } else {
        let bdevs: Vec<Value> = chosen
            .iter()
            .map(|(name, e)| {
                let mut m = serde_json::Map::new();
                m.insert("name".into(), json!(name));
                iostat_json(&e.stats.total(), &mut m);
                // SPDK's io_error: failed I/O by bdev status, only the
                // statuses that happened (so `{}` until one fails).
                let errors: serde_json::Map<String, Value> = e
                    .stats
                    .errors()
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), json!(n)))
                    .collect();
                m.insert("io_error".into(), Value::Object(errors));
                Value::Object(m)
            })
            .collect();
        out.insert("bdevs".into(), Value::Array(bdevs));
    }
    if let Some(mode) = reset {
        for (_, e) in &chosen {
            e.stats.reset(mode);
        }
    }
    Ok(Value::Object(out))
}

pub(super) fn nvmf_get_stats(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let target = app.target();
    let transport = app.transport().created;
    let groups: Vec<Value> = app
        .handles()
        .iter()
        .map(|h| {
            let io = target.core_io(h.index());
            json!({
                "name": format!("nvmf_tgt_poll_group_{:03}", h.index()),
                "admin_qpairs": io.admin_qpairs.load(Relaxed),
                "io_qpairs": io.io_qpairs.load(Relaxed),
                "current_admin_qpairs": io.current_admin_qpairs.load(Relaxed),
                "current_io_qpairs": io.current_io_qpairs.load(Relaxed),
                // lull never queues a command for want of a bdev resource.
                "pending_bdev_io": 0,
                "completed_nvme_io": io.io_commands.load(Relaxed),
                "transports": if transport { json!([{"trtype": "TCP"}]) } else { json!([]) },
            })
        })
        .collect();
    Ok(json!({"tick_rate": TICK_RATE, "poll_groups": groups}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NqnParam {
    nqn: String,
}

/// The subsystem `nqn` (`discovery` names the discovery subsystem), or
/// SPDK's error for a missing one.
fn subsystem(app: &App, params: Value) -> Result<Arc<Subsystem>, RpcError> {
    let p: NqnParam = decode(params)?;
    let nqn = if p.nqn == "discovery" {
        lull_proto::fabrics::DISCOVERY_NQN
    } else {
        p.nqn.as_str()
    };
    app.target()
        .subsystem(nqn)
        .ok_or_else(|| RpcError::invalid(format!("Invalid parameters: subsystem {nqn} does not exist")))
}

fn hostid(b: &[u8; 16]) -> String {
    super::params::uuid_string(b)
}

fn trid_json(a: &std::net::SocketAddr) -> Value {
    json!({"trtype": "TCP", "adrfam": adrfam(a), "traddr": a.ip().to_string(), "trsvcid": a.port().to_string()})
}

pub(super) fn nvmf_subsystem_get_controllers(app: &App, params: Value) -> Result<Value, RpcError> {
    let s = subsystem(app, params)?;
    let kind = if s.kind == SubsystemKind::Discovery {
        "discovery"
    } else {
        "io"
    };
    let out: Vec<Value> = app
        .target()
        .controllers()
        .into_iter()
        .filter(|c| Arc::ptr_eq(&c.subsystem, &s))
        .map(|c| {
            // SPDK counts every connected queue pair of the controller, the
            // admin queue with the I/O queues (its qpair_mask), in spite of
            // the name: one host with one I/O queue shows 2.
            let queue_pairs = c.queue_list().len();
            json!({
                "cntlid": c.cntlid,
                "cntrltype": kind,
                "hostnqn": c.hostnqn,
                "hostid": hostid(&c.hostid),
                "num_io_qpairs": queue_pairs,
            })
        })
        .collect();
    Ok(Value::Array(out))
}

pub(super) fn nvmf_subsystem_get_qpairs(app: &App, params: Value) -> Result<Value, RpcError> {
    let s = subsystem(app, params)?;
    let mut out = Vec::new();
    for c in app.target().controllers() {
        if !Arc::ptr_eq(&c.subsystem, &s) {
            continue;
        }
        for q in c.queue_list() {
            out.push(json!({
                "cntlid": c.cntlid,
                "qid": q.qid,
                "state": "enabled",
                "thread": format!("nvmf_tgt_poll_group_{:03}", q.reactor),
                "hostnqn": c.hostnqn,
                "listen_address": trid_json(&c.listener),
                "peer_address": trid_json(&q.peer),
            }));
        }
    }
    Ok(Value::Array(out))
}

pub(super) fn nvmf_subsystem_get_listeners(app: &App, params: Value) -> Result<Value, RpcError> {
    let s = subsystem(app, params)?;
    let target = app.target();
    let ports = if s.kind == SubsystemKind::Discovery {
        target.discovery_listeners()
    } else {
        target
            .listeners()
            .into_iter()
            .filter(|a| target.reachable(&s, *a))
            .collect()
    };
    let out: Vec<Value> = ports.into_iter().map(|a| json!({"address": trid_json(&a)})).collect();
    Ok(Value::Array(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelParam {
    level: String,
}

fn set_level(params: Value, print: bool) -> Result<Value, RpcError> {
    let p: LevelParam = decode(params)?;
    let Some(l) = SpdkLevel::parse(&p.level) else {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: level {}: allowed ERROR, WARNING, NOTICE, INFO, DEBUG",
            p.level
        )));
    };
    log_level::set(l, print).map_err(|e| RpcError {
        code: code::INTERNAL_ERROR,
        message: format!("cannot change the log filter: {e}"),
    })?;
    Ok(Value::Bool(true))
}

pub(super) fn log_set_level(_app: &App, params: Value) -> Result<Value, RpcError> {
    set_level(params, false)
}

pub(super) fn log_set_print_level(_app: &App, params: Value) -> Result<Value, RpcError> {
    set_level(params, true)
}

pub(super) fn log_get_level(_app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(json!(log_level::levels().0.as_str()))
}

pub(super) fn log_get_print_level(_app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(json!(log_level::levels().1.as_str()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagParam {
    flag: String,
}

fn set_flag(params: Value, on: bool) -> Result<Value, RpcError> {
    let p: FlagParam = decode(params)?;
    log_level::set_flag(&p.flag, on).map_err(|e| match e {
        log_level::FlagError::NoSuchFlag(m) => RpcError::invalid(m),
        log_level::FlagError::Filter(m) => RpcError {
            code: code::INTERNAL_ERROR,
            message: format!("cannot change the log filter: {m}"),
        },
    })?;
    Ok(Value::Bool(true))
}

/// SPDK's `log_set_flag`: debug messages of a component on (a name, a
/// pattern or `all`; see `log_level::FLAGS`).
pub(super) fn log_set_flag(_app: &App, params: Value) -> Result<Value, RpcError> {
    set_flag(params, true)
}

/// SPDK's `log_clear_flag`.
pub(super) fn log_clear_flag(_app: &App, params: Value) -> Result<Value, RpcError> {
    set_flag(params, false)
}

/// SPDK's `log_get_flags`: `{"flag": enabled, ...}`.
pub(super) fn log_get_flags(_app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(Value::Object(
        log_level::flags()
            .into_iter()
            .map(|(n, on)| (n.to_string(), Value::Bool(on)))
            .collect(),
    ))
}
