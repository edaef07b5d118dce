//! lull's own methods, in SPDK's naming style: status, reactor modes, the
//! supervisor's policy and thresholds, and every live setting by name.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::RpcError;
use super::params::decode;
use crate::app::{App, AppError};
use lull_engine::nvme::NvmeOptions;
use lull_reactor::Mode;
use lull_reactor::supervisor::{Policy, SupervisorConfig};

fn policy(s: &str) -> Result<Policy, RpcError> {
    s.parse::<Policy>().map_err(|_| {
        RpcError::invalid(format!(
            "Invalid parameters: mode `{s}`: allowed poll, interrupt, hybrid, adaptive, budget"
        ))
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
        Some(us) if us > 1_000_000 => {
            return Err(RpcError::invalid(format!(
                "Invalid parameters: latency_budget_us = {us}: allowed 0..=1000000 us"
            )));
        }
        Some(us) => Some(Duration::from_micros(us)),
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

fn supervisor_json(c: &SupervisorConfig) -> Value {
    json!({
        "mode_policy": c.policy.as_str(),
        "supervisor_interval_ms": c.interval.as_millis() as u64,
        "adaptive_high_mark": c.high_mark,
        "adaptive_low_mark": c.low_mark,
        "adaptive_up_samples": c.up_samples,
        "adaptive_down_samples": c.down_samples,
        "latency_budget_us": c.latency_budget.as_micros() as u64,
        "core_policy": c.core_policy.iter().map(|(core, p)| json!({"core": core, "mode_policy": p.as_str()})).collect::<Vec<_>>(),
    })
}

pub(super) fn lull_supervisor_get_config(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    Ok(supervisor_json(&app.supervisor()))
}

/// Every live setting, by its one name (Longhorn's names as aliases).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Options {
    mode_policy: Option<String>,
    #[serde(alias = "data-engine-interrupt-mode-enabled")]
    interrupt_mode: Option<bool>,
    idle_poll_us: Option<u64>,
    supervisor_interval_ms: Option<u64>,
    adaptive_high_mark: Option<f64>,
    adaptive_low_mark: Option<f64>,
    adaptive_up_samples: Option<u32>,
    adaptive_down_samples: Option<u32>,
    latency_budget_us: Option<u64>,
    #[serde(alias = "data-engine-nvme-ioq-poll-period-us")]
    nvme_ioq_poll_period_us: Option<u64>,
    nvme_adminq_poll_period_us: Option<u64>,
    keep_alive_timeout_ms: Option<u32>,
    reconnect_delay_sec: Option<u32>,
    ctrlr_loss_timeout_sec: Option<i32>,
    fast_io_fail_timeout_sec: Option<u32>,
    timeout_us: Option<u64>,
    bdev_retry_count: Option<u32>,
    #[serde(alias = "io_queue_requests")]
    io_queue_size: Option<u16>,
}

fn apply(app: &App, p: Options) -> Result<(), RpcError> {
    let new_policy = match (&p.mode_policy, p.interrupt_mode) {
        (Some(m), _) => Some(policy(m)?),
        (None, Some(true)) => Some(Policy::Interrupt),
        (None, Some(false)) => Some(Policy::Poll),
        (None, None) => None,
    };
    let sup_change = |sup: &mut SupervisorConfig| -> Result<(), AppError> {
        if let Some(pol) = new_policy {
            sup.policy = pol;
            sup.core_policy.clear();
        }
        if let Some(v) = p.supervisor_interval_ms {
            sup.interval = Duration::from_millis(v);
        }
        if let Some(v) = p.adaptive_high_mark {
            sup.high_mark = v;
        }
        if let Some(v) = p.adaptive_low_mark {
            sup.low_mark = v;
        }
        if let Some(v) = p.adaptive_up_samples {
            sup.up_samples = v;
        }
        if let Some(v) = p.adaptive_down_samples {
            sup.down_samples = v;
        }
        if let Some(v) = p.latency_budget_us {
            // Checked here so that a huge value is not cut short by the conversion.
            if v > 1_000_000 {
                return Err(AppError::InvalidParams(format!(
                    "Invalid parameters: latency_budget_us = {v}: 0 to 1000000 microseconds"
                )));
            }
            sup.latency_budget = Duration::from_micros(v);
        }
        sup.validate()
            .map_err(|e| AppError::InvalidParams(format!("Invalid parameters: {e}")))
    };
    let nvme_change = |o: &mut NvmeOptions| {
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
            timeout_us,
            bdev_retry_count,
            io_queue_size
        );
    };
    // Check everything before changing anything.
    sup_change(&mut app.supervisor())?;
    let mut o = app.nvme_options();
    nvme_change(&mut o);
    o.validate()
        .map_err(|e| RpcError::invalid(format!("Invalid parameters: {e}")))?;
    if let Some(us) = p.idle_poll_us
        && us > 1_000_000
    {
        return Err(RpcError::invalid(format!(
            "Invalid parameters: idle_poll_us = {us}: allowed 0..=1000000 us"
        )));
    }
    if let Some(us) = p.idle_poll_us {
        app.set_idle_poll(Duration::from_micros(us))?;
    }
    app.update_nvme_options(nvme_change)?;
    let (before, after) = app.update_supervisor(sup_change)?;
    if let Some(m) = after.policy.fixed_mode()
        && after.policy != before.policy
    {
        for h in app.handles() {
            h.set_mode(m);
        }
    }
    Ok(())
}

pub(super) fn lull_supervisor_set_config(app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        mode_policy: Option<String>,
        supervisor_interval_ms: Option<u64>,
        adaptive_high_mark: Option<f64>,
        adaptive_low_mark: Option<f64>,
        adaptive_up_samples: Option<u32>,
        adaptive_down_samples: Option<u32>,
        latency_budget_us: Option<u64>,
    }
    let p: P = decode(params)?;
    apply(
        app,
        Options {
            mode_policy: p.mode_policy,
            supervisor_interval_ms: p.supervisor_interval_ms,
            adaptive_high_mark: p.adaptive_high_mark,
            adaptive_low_mark: p.adaptive_low_mark,
            adaptive_up_samples: p.adaptive_up_samples,
            adaptive_down_samples: p.adaptive_down_samples,
            latency_budget_us: p.latency_budget_us,
            ..Options::default()
        },
    )?;
    Ok(Value::Bool(true))
}

pub(super) fn lull_get_options(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let mut v = supervisor_json(&app.supervisor());
    let o = super::nvme::options_json(&app.nvme_options());
    if let (Some(m), Some(extra)) = (v.as_object_mut(), o.as_object()) {
        m.insert("idle_poll_us".into(), json!(app.idle_poll().as_micros() as u64));
        // lull's name for SPDK's io_queue_requests, as `lull set` and the config spell it.
        m.insert("io_queue_size".into(), json!(app.nvme_options().io_queue_size));
        for (k, val) in extra {
            m.insert(k.clone(), val.clone());
        }
    }
    Ok(v)
}

pub(super) fn lull_set_options(app: &App, params: Value) -> Result<Value, RpcError> {
    // A startup-only setting gets "restart needed", not "unknown field".
    if let Some(why) = params
        .as_object()
        .and_then(|m| m.keys().find_map(|k| crate::restart_only::restart_needed(k)))
    {
        return Err(RpcError::invalid(format!("Invalid parameters: {why}")));
    }
    let p: Options = decode(params)?;
    apply(app, p)?;
    Ok(Value::Bool(true))
}
