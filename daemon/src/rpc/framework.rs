//! `spdk_get_version`, `rpc_get_methods`, `framework_get_reactors`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::RpcError;
use super::params::decode;
use crate::app::App;
use lull_reactor::Mode;

pub(super) fn spdk_get_version(_app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let v = env!("CARGO_PKG_VERSION");
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    Ok(json!({
        "version": format!("lull v{v}"),
        "fields": {"major": major, "minor": minor, "patch": patch, "suffix": ""}
    }))
}

pub(super) fn rpc_get_methods(_app: &App, params: Value) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        current: Option<bool>,
        include_aliases: Option<bool>,
    }
    let p: P = decode(params)?;
    // Every method is callable in the one state lull has (running).
    let _ = (p.current, p.include_aliases);
    Ok(json!(super::METHODS.iter().map(|(n, _)| *n).collect::<Vec<_>>()))
}

pub(super) fn framework_get_reactors(app: &App, params: Value) -> Result<Value, RpcError> {
    super::params::none(&params)?;
    let reactors: Vec<Value> = app
        .reactor_status()
        .into_iter()
        .map(|r| {
            let s = &r.stats;
            json!({
                "lcore": r.core,
                "busy": s.busy_ns,
                "idle": s.idle_ns + s.sleep_ns,
                "irq": 0,
                "sys": 0,
                "usr": 0,
                "in_interrupt": r.mode == Mode::Interrupt,
                "mode": r.mode.to_string(),
                "lw_threads": [{"name": format!("reactor_{}", r.core), "id": r.index + 1, "cpumask": format!("{:x}", 1u128 << (r.core % 128)), "elapsed": s.busy_ns + s.idle_ns + s.sleep_ns}]
            })
        })
        .collect();
    Ok(json!({
        "tick_rate": 1_000_000_000u64,
        "pid": std::process::id(),
        "reactors": reactors
    }))
}
