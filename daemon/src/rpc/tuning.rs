//! SPDK's tuning methods for parts lull does not have (socket layer, I/O
//! buffer pools, accel, ...): what the config loader may skip and what the
//! RPC methods of those names accept: anything that changes nothing a host
//! could see, with a warning; -32602 naming the parameter otherwise.

use serde_json::Value;

use super::{RpcError, code};
use crate::app::App;

pub(super) fn param<'a>(params: &'a Value, key: &str) -> Option<&'a Value> {
    params.get(key).filter(|v| !v.is_null())
}

fn is_zero_or_absent(params: &Value, key: &str) -> bool {
    param(params, key).is_none_or(|v| v.as_u64() == Some(0) || v == &Value::Bool(false))
}

/// SPDK methods lull does not have and may skip: Ok(why it is harmless), or
/// Err(what the entry asks for that lull cannot give).
pub(super) fn skippable(method: &str, p: &Value) -> Option<Result<String, String>> {
    let tuning = |what: &str| Some(Ok(format!("SPDK's {what}; lull has no counterpart")));
    match method {
        "framework_start_init" => Some(Ok("lull has no start-up RPC state; it is always initialized".into())),
        "iobuf_set_options" => tuning("I/O buffer pool sizes"),
        "sock_set_default_impl" | "sock_impl_set_options" => tuning("socket layer options"),
        "accel_set_options" | "accel_assign_opc" => tuning("accel framework options"),
        "bdev_set_options" => tuning("bdev_io pool and cache sizes"),
        "iscsi_set_options" => tuning("iSCSI target options (no iSCSI target nodes are configured by it)"),
        "nvmf_set_max_subsystems" => tuning("subsystem table size"),
        "keyring_linux_set_options" => tuning("kernel keyring lookup option"),
        "bdev_nvme_set_hotplug" => Some(Ok("PCIe hotplug; lull attaches no local PCIe devices".into())),
        "framework_set_scheduler" => Some(Ok(
            "SPDK's thread scheduler; lull's reactors follow mode_policy (lull_set_options)".into(),
        )),
        "nvmf_set_crdt" => Some(
            match ["crdt1", "crdt2", "crdt3"].iter().find(|k| !is_zero_or_absent(p, k)) {
                None => Ok("command retry delay times at their default, 0".into()),
                Some(k) => Err(format!(
                    "{k} = {}: a non-zero command retry delay time; lull reports 0 (allowed: 0)",
                    p[*k]
                )),
            },
        ),
        "nvmf_set_config" => {
            let filter_ok = param(p, "discovery_filter").is_none_or(|v| v == "match_any");
            let passthru_ok = param(p, "admin_cmd_passthru").is_none_or(|v| {
                v.as_object()
                    .is_some_and(|m| m.values().all(|x| x == &Value::Bool(false)))
            });
            let mask_ok = param(p, "poll_groups_mask").is_none();
            let shown = |k: &str| param(p, k).map_or_else(String::new, ToString::to_string);
            Some(if !filter_ok {
                Err(format!(
                    "discovery_filter = {}: lull's discovery log lists every port (allowed: match_any)",
                    shown("discovery_filter")
                ))
            } else if !passthru_ok {
                Err(format!(
                    "admin_cmd_passthru = {}: lull has no admin command passthrough (allowed: every member false)",
                    shown("admin_cmd_passthru")
                ))
            } else if !mask_ok {
                Err(format!(
                    "poll_groups_mask = {}: lull places queues on its reactors itself (allowed: absent)",
                    shown("poll_groups_mask")
                ))
            } else {
                Ok("discovery filter match_any and no admin passthrough, lull's behaviour".into())
            })
        }
        _ => None,
    }
}

/// SPDK's methods for parts lull does not have, as RPC methods: the rule
/// of the loader. Accepted (with a warning in the log) when the call
/// changes nothing a host could see; -32602 naming the parameter otherwise.
pub(super) fn spdk_tuning(method: &str, params: Value) -> Result<Value, RpcError> {
    if !(params.is_null() || params.is_object()) {
        return Err(RpcError::invalid("Invalid parameters: params must be an object"));
    }
    match skippable(method, &params) {
        Some(Ok(why)) => {
            tracing::warn!(method, "{method} accepted; nothing changed: {why}");
            Ok(Value::Bool(true))
        }
        Some(Err(what)) => Err(RpcError::invalid(format!("Invalid parameters: {what}"))),
        None => Err(RpcError {
            code: code::METHOD_NOT_FOUND,
            message: "Method not found".into(),
        }),
    }
}

/// One handler per SPDK tuning method (a handler does not learn its
/// method's name), each [`spdk_tuning`] under its own name.
macro_rules! spdk_tuning_methods {
    ($($name:ident),* $(,)?) => {
        $(
            pub(super) fn $name(_app: &App, params: Value) -> Result<Value, RpcError> {
                spdk_tuning(stringify!($name), params)
            }
        )*
        /// The SPDK tuning methods, by name.
        #[cfg(test)]
        pub(super) const SPDK_TUNING: &[&str] = &[$(stringify!($name)),*];
    };
}

// framework_start_init is not one: SPDK takes it only before start-up, and
// lists it in rpc_get_methods' `current` only then; lull is always started.
spdk_tuning_methods!(
    iobuf_set_options,
    sock_set_default_impl,
    sock_impl_set_options,
    accel_set_options,
    accel_assign_opc,
    bdev_set_options,
    iscsi_set_options,
    nvmf_set_max_subsystems,
    keyring_linux_set_options,
    bdev_nvme_set_hotplug,
    framework_set_scheduler,
    nvmf_set_crdt,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::METHODS;
    use serde_json::json;

    #[test]
    fn every_skipped_method_but_start_up_is_a_method() {
        for m in SPDK_TUNING {
            assert!(METHODS.iter().any(|(n, _)| n == m), "{m} is not in METHODS");
            assert!(
                matches!(skippable(m, &json!({})), Some(Ok(_))),
                "{m} is not skippable with no parameters"
            );
        }
        // Every method the loader may skip is one (framework_start_init aside).
        for m in [
            "iobuf_set_options",
            "sock_set_default_impl",
            "sock_impl_set_options",
            "accel_set_options",
            "accel_assign_opc",
            "bdev_set_options",
            "iscsi_set_options",
            "nvmf_set_max_subsystems",
            "keyring_linux_set_options",
            "bdev_nvme_set_hotplug",
            "framework_set_scheduler",
            "nvmf_set_crdt",
        ] {
            assert!(SPDK_TUNING.contains(&m), "{m}");
        }
    }
}
