//! The live settings as JSON, through the settings table: read from a
//! method's parameters and applied ([`change`]), and shown ([`supervisor_json`],
//! [`options_json`]); shared by `lull_*`, `bdev_nvme_*_options` and
//! `save_config`.

use serde_json::{Map, Value, json};

use super::RpcError;
use crate::app::{App, AppError};
use crate::settings::{self, Changes, Live, Names, Part, SETTINGS};
use lull_engine::initiator::NvmeOptions;

/// The supervisor's settings, by their table names, with the per-core policies.
pub(super) fn supervisor_json(live: &Live) -> Value {
    let mut m: Map<String, Value> = SETTINGS
        .iter()
        .filter(|s| s.part == Part::Supervisor)
        .map(|s| (s.name.to_string(), s.get(live).to_json()))
        .collect();
    let core_policy: Vec<Value> = live
        .supervisor
        .core_policy
        .iter()
        .map(|(core, p)| json!({"core": core, "mode_policy": p.as_str()}))
        .collect();
    m.insert("core_policy".into(), Value::Array(core_policy));
    Value::Object(m)
}

/// Reads `params` as settings under `names` and applies them
/// ([`App::change_live`]): -32602 naming the setting when one is refused,
/// and then nothing changes.
pub(super) fn change(app: &App, params: Map<String, Value>, names: &Names) -> Result<(), RpcError> {
    let changes = settings::changes_from_json(&params, names).map_err(invalid)?;
    apply(app, &changes)
}

/// Applies checked `changes`; refusals are -32602 "Invalid parameters: ...".
pub(super) fn apply(app: &App, changes: &Changes) -> Result<(), RpcError> {
    app.change_live(changes).map_err(|e| match e {
        AppError::InvalidParams(m) => invalid(m),
        other => other.into(),
    })
}

pub(super) fn invalid(m: String) -> RpcError {
    RpcError::invalid(format!("Invalid parameters: {m}"))
}

/// The initiator's options under SPDK's names (`bdev_nvme_get_options`):
/// the table's initiator settings, with `action_on_timeout`.
pub(super) fn options_json(o: &NvmeOptions) -> Value {
    let live = Live {
        nvme: o.clone(),
        ..Live::default()
    };
    let mut m: Map<String, Value> = SETTINGS
        .iter()
        .filter(|s| s.part == Part::Initiator)
        .map(|s| (s.spdk_name().to_string(), s.get(&live).to_json()))
        .collect();
    m.insert(
        "action_on_timeout".into(),
        json!(if o.timeout_us == 0 { "none" } else { "reset" }),
    );
    Value::Object(m)
}
