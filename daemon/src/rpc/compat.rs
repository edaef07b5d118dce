//! SPDK's parameters that lull does not implement, per method, with the
//! value SPDK uses when the parameter is left out.
//!
//! SPDK's Python clients (PyPI `spdk` 25.5 to 26.9) send many options with
//! their default values whether or not the user gave them (`enable_flush:
//! false`, `delay_cmd_submit: true`, `no_srq: false`, ...). Such a parameter
//! is accepted, and removed before the method's own decoder sees it, when
//! it carries SPDK's default (or `null`); any other value is refused with
//! -32602 naming the parameter. Parameters a method implements are decoded
//! by the method itself, and a name neither knows stays refused.
//!
//! Defaults come from SPDK's C decoders and option initialisers (v25.09)
//! and, for parameters added after it, the clients' own help text.

use serde_json::{Map, Value};

use super::RpcError;

/// What a parameter lull does not implement may carry.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dflt {
    /// This boolean.
    Bool(bool),
    /// This integer.
    Int(i64),
    /// This string (compared ignoring ASCII case, as SPDK's enum decoders do).
    Str(&'static str),
    /// Nothing: SPDK's default is "not set" (a key, a file, an address);
    /// only `null` is accepted.
    Absent,
    /// Any non-negative integer: SPDK's tuning of its own buffer pools,
    /// which lull (no shared buffer pool) has no use for. Accepted so that
    /// SPDK's documented set-up commands (`nvmf_create_transport -u 16384`)
    /// run unchanged.
    AnyCount,
}

impl std::fmt::Display for Dflt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dflt::Bool(b) => write!(f, "{b}"),
            Dflt::Int(i) => write!(f, "{i}"),
            Dflt::Str(s) => write!(f, "\"{s}\""),
            Dflt::Absent => f.write_str("absent (null)"),
            Dflt::AnyCount => f.write_str("any count"),
        }
    }
}

impl Dflt {
    fn accepts(&self, v: &Value) -> bool {
        if v.is_null() {
            return true;
        }
        match self {
            Dflt::Bool(b) => v.as_bool() == Some(*b),
            Dflt::Int(i) => v.as_i64() == Some(*i),
            Dflt::Str(s) => v.as_str().is_some_and(|x| x.eq_ignore_ascii_case(s)),
            Dflt::Absent => false,
            Dflt::AnyCount => v.as_u64().is_some(),
        }
    }
}

/// One entry: a parameter path (`namespace.hide_metadata` for a member of
/// an object parameter) and what it may carry.
type Entry = (&'static str, Dflt);

use Dflt::{Absent, AnyCount, Bool, Int, Str};

/// SPDK's default target name: the only target lull has.
const TGT: Entry = ("tgt_name", Str("nvmf_tgt"));

/// Multipath options of newer clients (`multipath_opts`): one path per
/// controller in lull, which is SPDK's default behaviour for one path.
const MULTIPATH_OPTS: [Entry; 3] = [
    ("multipath_opts.policy", Str("active_passive")),
    ("multipath_opts.selector", Str("round_robin")),
    ("multipath_opts.min_io", Int(1)),
];

/// Per method: the SPDK parameters lull accepts only at SPDK's default.
pub(crate) const UNIMPLEMENTED: &[(&str, &[Entry])] = &[
    (
        "bdev_malloc_create",
        &[
            ("optimal_io_boundary", Int(0)),
            ("md_size", Int(0)),
            ("md_interleave", Bool(false)),
            ("dif_type", Int(0)),
            ("dif_is_head_of_md", Bool(false)),
            ("dif_pi_format", Int(0)),
            ("numa_id", Int(-1)),
        ],
    ),
    (
        "bdev_null_create",
        &[
            ("md_size", Int(0)),
            ("dif_type", Int(0)),
            ("dif_is_head_of_md", Bool(false)),
            ("dif_pi_format", Int(0)),
            ("preferred_write_alignment", Int(0)),
            ("preferred_write_granularity", Int(0)),
            ("optimal_write_size", Int(0)),
            ("preferred_unmap_alignment", Int(0)),
            ("preferred_unmap_granularity", Int(0)),
        ],
    ),
    (
        "nvmf_create_transport",
        &[
            TGT,
            ("io_unit_size", AnyCount),
            ("num_shared_buffers", AnyCount),
            ("buf_cache_size", AnyCount),
            ("iobuf_small_cache_size", AnyCount),
            ("iobuf_large_cache_size", AnyCount),
            ("control_msg_num", AnyCount),
            ("acceptor_poll_rate", AnyCount),
            ("dif_insert_or_strip", Bool(false)),
            ("zcopy", Bool(false)),
            ("sock_priority", Int(0)),
            ("abort_timeout_sec", Int(1)),
            ("disable_command_passthru", Bool(false)),
            ("kas", Int(100)),
            ("min_kato", Int(10_000)),
            // RDMA's.
            ("ack_timeout", Int(0)),
            ("data_wr_pool_size", Int(0)),
            ("max_srq_depth", Int(4096)),
            ("no_srq", Bool(false)),
            ("num_cqe", Int(4096)),
            ("acceptor_backlog", Int(100)),
            ("no_wr_batching", Bool(false)),
            // vfio-user's.
            ("disable_mappable_bar0", Bool(false)),
            ("disable_adaptive_irq", Bool(false)),
            ("disable_shadow_doorbells", Bool(false)),
        ],
    ),
    ("nvmf_get_transports", &[TGT]),
    (
        "nvmf_create_subsystem",
        &[
            TGT,
            ("ana_reporting", Bool(false)),
            ("min_cntlid", Int(1)),
            ("max_cntlid", Int(0xFFEF)),
            ("max_discard_size_kib", Int(0)),
            ("max_write_zeroes_size_kib", Int(0)),
            ("passthrough", Bool(false)),
            ("enable_nssr", Bool(false)),
            ("dmrsl", Int(0)),
            ("wzsl", Int(0)),
            ("admin_label", Absent),
        ],
    ),
    ("nvmf_delete_subsystem", &[TGT]),
    (
        "nvmf_subsystem_add_ns",
        &[
            TGT,
            ("namespace.eui64", Absent),
            ("namespace.ptpl_file", Absent),
            ("namespace.anagrpid", Int(0)),
            ("namespace.no_auto_visible", Bool(false)),
            ("namespace.hide_metadata", Bool(false)),
        ],
    ),
    ("nvmf_subsystem_remove_ns", &[TGT]),
    (
        "nvmf_subsystem_add_listener",
        &[TGT, ("ana_state", Str("optimized")), ("numa_id", Int(-1))],
    ),
    (
        "nvmf_subsystem_remove_listener",
        &[
            TGT,
            ("secure_channel", Bool(false)),
            ("ana_state", Str("optimized")),
            ("sock_impl", Str("posix")),
            ("numa_id", Int(-1)),
        ],
    ),
    ("nvmf_subsystem_add_host", &[TGT]),
    ("nvmf_subsystem_set_keys", &[TGT]),
    ("nvmf_subsystem_remove_host", &[TGT, ("timeout_ms", Absent)]),
    ("nvmf_subsystem_allow_any_host", &[TGT]),
    ("nvmf_get_subsystems", &[TGT]),
    ("nvmf_get_stats", &[TGT]),
    ("nvmf_subsystem_get_controllers", &[TGT]),
    ("nvmf_subsystem_get_qpairs", &[TGT]),
    ("nvmf_subsystem_get_listeners", &[TGT]),
    (
        "bdev_nvme_set_options",
        &[
            ("timeout_admin_us", Int(0)),
            ("transport_retry_count", Int(4)),
            ("arbitration_burst", Int(0)),
            ("low_priority_weight", Int(0)),
            ("medium_priority_weight", Int(0)),
            ("high_priority_weight", Int(0)),
            ("delay_cmd_submit", Bool(true)),
            ("transport_ack_timeout", Int(0)),
            ("disable_auto_failback", Bool(false)),
            ("generate_uuids", Bool(false)),
            ("transport_tos", Int(0)),
            ("nvme_error_stat", Bool(false)),
            ("io_path_stat", Bool(false)),
            ("allow_accel_sequence", Bool(false)),
            ("rdma_srq_size", Int(0)),
            ("rdma_max_cq_size", Int(0)),
            ("rdma_cm_event_timeout_ms", Int(0)),
            ("rdma_umr_per_io", Bool(false)),
            ("tcp_connect_timeout_ms", Int(0)),
            ("enable_flush", Bool(false)),
            MULTIPATH_OPTS[0],
            MULTIPATH_OPTS[1],
            MULTIPATH_OPTS[2],
        ],
    ),
    (
        "bdev_nvme_attach_controller",
        &[
            ("priority", Str("0")),
            ("hostaddr", Absent),
            ("hostsvcid", Absent),
            ("prchk_reftag", Bool(false)),
            ("prchk_guard", Bool(false)),
            ("fabrics_connect_timeout_us", Int(500_000)),
            ("num_io_queues", Int(1024)),
            ("max_bdevs", Int(128)),
            ("allow_unrecognized_csi", Bool(false)),
            ("disable_sq_flow_control", Bool(false)),
            MULTIPATH_OPTS[0],
            MULTIPATH_OPTS[1],
            MULTIPATH_OPTS[2],
        ],
    ),
    (
        "bdev_nvme_detach_controller",
        &[("hostaddr", Absent), ("hostsvcid", Absent)],
    ),
];

/// The parameters of `method` that lull accepts only at SPDK's default.
pub(crate) fn entries(method: &str) -> &'static [Entry] {
    UNIMPLEMENTED.iter().find(|(m, _)| *m == method).map_or(&[], |(_, e)| e)
}

/// Removes from `params` every parameter of `method` that lull does not
/// implement and that carries SPDK's default; an object parameter left
/// empty by that is removed too.
///
/// # Errors
/// Invalid parameters naming the first one that carries another value.
pub(crate) fn strip(method: &str, params: &mut Value) -> Result<(), RpcError> {
    let Some(obj) = params.as_object_mut() else {
        return Ok(());
    };
    for (path, dflt) in entries(method) {
        let (parent, key) = match path.split_once('.') {
            Some((p, k)) => (Some(p), k),
            None => (None, *path),
        };
        let map: &mut Map<String, Value> = match parent {
            None => &mut *obj,
            Some(p) => match obj.get_mut(p).and_then(Value::as_object_mut) {
                Some(m) => m,
                None => continue,
            },
        };
        let Some(v) = map.get(key) else { continue };
        if !dflt.accepts(v) {
            let why = match dflt {
                Dflt::AnyCount => "expected a non-negative integer".to_string(),
                d => format!("lull does not implement {path}; only SPDK's default {d} is accepted"),
            };
            return Err(RpcError::invalid(format!("Invalid parameters: {path} = {v}: {why}")));
        }
        if matches!(dflt, Dflt::AnyCount) && !v.is_null() {
            // Accepted so SPDK's set-up commands run; said, so nobody thinks it applies.
            tracing::warn!(
                method,
                "{path} = {v} accepted and ignored: lull has no shared buffer pool to size"
            );
        }
        map.remove(key);
        if let Some(p) = parent
            && obj.get(p).and_then(Value::as_object).is_some_and(Map::is_empty)
        {
            obj.remove(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_removed_and_other_values_refused() {
        let mut p = json!({"enable_flush": false, "delay_cmd_submit": true, "timeout_us": 5});
        strip("bdev_nvme_set_options", &mut p).unwrap();
        assert_eq!(p, json!({"timeout_us": 5}));
        let mut p = json!({"enable_flush": true});
        let e = strip("bdev_nvme_set_options", &mut p).unwrap_err();
        assert_eq!(e.code, super::super::code::INVALID_PARAMS);
        assert!(
            e.message.contains("enable_flush") && e.message.contains("does not implement"),
            "{}",
            e.message
        );
    }

    #[test]
    fn nested_members_and_empty_objects() {
        let mut p = json!({"nqn": "n", "namespace": {"bdev_name": "M0", "no_auto_visible": false}});
        strip("nvmf_subsystem_add_ns", &mut p).unwrap();
        assert_eq!(p, json!({"nqn": "n", "namespace": {"bdev_name": "M0"}}));
        let mut p = json!({"multipath_opts": {"policy": "active_passive", "selector": "round_robin"}});
        strip("bdev_nvme_set_options", &mut p).unwrap();
        assert_eq!(p, json!({}));
        let mut p = json!({"multipath_opts": {"policy": "active_active"}});
        let e = strip("bdev_nvme_set_options", &mut p).unwrap_err();
        assert!(e.message.contains("multipath_opts.policy"), "{}", e.message);
    }

    #[test]
    fn absent_only() {
        let mut p = json!({"timeout_ms": null});
        strip("nvmf_subsystem_remove_host", &mut p).unwrap();
        let mut p = json!({"timeout_ms": 100});
        assert!(strip("nvmf_subsystem_remove_host", &mut p).is_err());
    }

    #[test]
    fn every_table_method_exists() {
        for (m, _) in UNIMPLEMENTED {
            assert!(super::super::METHODS.iter().any(|(n, _)| n == m), "{m} is not a method");
        }
    }
}
