//! lull's own methods, in SPDK's naming style: status, reactor modes, the
//! supervisor's policy and thresholds, and every live setting by name.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::RpcError;
use super::live::{change, invalid, options_json, supervisor_json};
use super::params::decode;
use crate::app::App;
use crate::settings::{self, EVERY_NAME, Names, Part, SETTINGS, SettingValue};
use lull_reactor::Mode;
use lull_reactor::supervisor::Policy;

fn policy(s: &str) -> Result<Policy, RpcError> {
    s.parse::<Policy>().map_err(|_| {
        let words = settings::find("mode_policy", &[]).map_or_else(String::new, |p| p.words().join(", "));
        RpcError::invalid(format!("Invalid parameters: mode `{s}`: allowed {words}"))
    })
}

/// Everything `lull status` and the metrics show, as counters since start
/// (rates are the client's: two samples and their `taken_at_ns`).
pub(super) fn lull_get_status(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let sup = app.supervisor();
    let started = app.started();
    let reactors: Vec<Value> = app
        .reactor_status()
        .into_iter()
        .map(|r| {
            let s = &r.stats;
            json!({
                "index": r.index,
                "lcore": r.core,
                "mode": r.mode.to_string(),
                "policy": sup.policy_for(r.core).as_str(),
                "spin_window_us": s.spin_window.map(|w| w.as_micros() as u64),
                "interrupt_mode_enabled": r.mode == Mode::Interrupt,
                "sleeping": s.sleeping,
                "taken_at_ns": s.taken_at.saturating_duration_since(started).as_nanos() as u64,
                "busy_ns": s.busy_ns,
                "idle_ns": s.idle_ns,
                "sleep_ns": s.sleep_ns,
                "thread_cpu_ns": s.thread_cpu_ns,
                "loops": s.loops,
                "wakeups": s.wakeups,
                "mode_switches": s.mode_switches,
                "queues": r.queues,
                "reads": r.reads,
                "writes": r.writes,
                "bytes_read": r.bytes_read,
                "bytes_written": r.bytes_written,
            })
        })
        .collect();
    let target = app.target();
    let raids: Vec<Value> = app
        .raids()
        .into_iter()
        .map(|r| {
            let process = r.process.as_ref().map(|p| {
                json!({
                    "type": p.kind,
                    "target": p.target,
                    "blocks": p.blocks,
                    "total_blocks": p.total_blocks,
                    "percent": p.percent,
                })
            });
            json!({
                "name": r.name,
                "state": r.state.as_str(),
                "num_base_bdevs": r.num_base_bdevs,
                "num_base_bdevs_discovered": r.num_base_bdevs_discovered,
                "num_base_bdevs_operational": r.num_base_bdevs_operational,
                "process": process,
            })
        })
        .collect();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_ms": started.elapsed().as_millis() as u64,
        "mode_policy": sup.policy.as_str(),
        "latency_budget_us": sup.latency_budget.as_micros() as u64,
        "idle_poll_us": app.idle_poll().as_micros() as u64,
        "subsystems": target.subsystems().len().saturating_sub(1),
        "controllers": target.controller_count(),
        "listeners": target.listeners().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "nvme_controllers": app.controllers().len(),
        "raids": raids,
        "reactors": reactors,
    }))
}

pub(super) fn lull_reactor_set_mode(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        mode: String,
        core: Option<usize>,
        latency_budget_us: Option<u64>,
    }
    let p: P = decode(params)?;
    let pol = policy(&p.mode)?;
    let budget = match p.latency_budget_us {
        Some(us) => {
            // Checked by the table, as lull_set_options checks it.
            if let Some(s) = settings::find("latency_budget_us", &[]) {
                s.check(s.name, &SettingValue::Int(us.into()))
                    .map_err(|e| invalid(e.to_string()))?;
            }
            Some(Duration::from_micros(us))
        }
        None => None,
    };
    if let Some(core) = p.core
        && !app.handles().iter().any(|h| h.core() == core)
    {
        let cores: Vec<String> = app.handles().iter().map(|h| h.core().to_string()).collect();
        return Err(RpcError::invalid(format!(
            "Invalid parameters: core {core} has no reactor (reactors on CPUs {})",
            cores.join(",")
        )));
    }
    app.update_supervisor(|c| {
        if let Some(b) = budget {
            c.latency_budget = b;
        }
        match p.core {
            None => {
                c.policy = pol;
                c.core_policy.clear();
            }
            Some(core) => c.set_core_policy(core, pol),
        }
        Ok(())
    })?;
    // Apply a fixed mode now rather than at the supervisor's next sample.
    if let Some(m) = pol.fixed_mode() {
        for h in app.handles() {
            if p.core.is_none_or(|c| c == h.core()) {
                h.set_mode(m);
            }
        }
    }
    Ok(Value::Bool(true))
}

pub(super) fn lull_supervisor_get_config(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(supervisor_json(&app.live()))
}

/// The supervisor's settings ([`Part::Supervisor`]), by their names.
pub(super) fn lull_supervisor_set_config(app: &App, params: Value) -> Result<Value, RpcError> {
    change(app, decode(params)?, &Names::of(|s| s.part == Part::Supervisor, &[]))?;
    Ok(Value::Bool(true))
}

/// Every live setting by its table name, with the per-core policies and
/// the initiator's options also under SPDK's names (`io_queue_requests`,
/// `action_on_timeout`), as `bdev_nvme_get_options` shows them.
pub(super) fn lull_get_options(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let live = app.live();
    let mut m: Map<String, Value> = SETTINGS
        .iter()
        .map(|s| (s.name.to_string(), s.get(&live).to_json()))
        .collect();
    if let Value::Object(sup) = supervisor_json(&live) {
        for (k, v) in sup {
            m.entry(k).or_insert(v);
        }
    }
    if let Value::Object(spdk) = options_json(&live.nvme) {
        for (k, v) in spdk {
            m.entry(k).or_insert(v);
        }
    }
    Ok(Value::Object(m))
}

/// Any live setting, by its name or an alias (Longhorn's, SPDK's).
pub(super) fn lull_set_options(app: &App, params: Value) -> Result<Value, RpcError> {
    // A startup-only setting gets "restart needed", not "unknown field".
    if let Some(why) = params
        .as_object()
        .and_then(|m| m.keys().find_map(|k| crate::restart_only::restart_needed(k)))
    {
        return Err(RpcError::invalid(format!("Invalid parameters: {why}")));
    }
    change(app, decode(params)?, &Names::of(|_| true, EVERY_NAME))?;
    Ok(Value::Bool(true))
}
