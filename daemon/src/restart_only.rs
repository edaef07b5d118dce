//! Settings that take effect only when `lull target` starts: what `lull set`
//! and `lull_set_options` answer when asked to change one of them live.

/// Settings fixed at start: (config key, `lull target` flag, why it cannot
/// change while lull runs).
const FIXED_AT_START: &[(&str, &str, &str)] = &[
    (
        "cores",
        "--cores 0-3",
        "the reactors are started on their CPUs when lull starts",
    ),
    (
        "in_capsule_data_size",
        "--in-capsule-data-size 8192",
        "hosts learn it at Connect (IOCCSZ) and their queues keep it",
    ),
    (
        "max_h2c_data",
        "--max-h2c-data 131072",
        "hosts learn it in the ICResp of each connection and keep it",
    ),
    (
        "header_digest",
        "--no-header-digest",
        "digests are agreed in the ICReq/ICResp of each connection",
    ),
    (
        "data_digest",
        "--no-data-digest",
        "digests are agreed in the ICReq/ICResp of each connection",
    ),
    (
        "kato_min_ms",
        "--kato-min-ms 1000",
        "the target's keep-alive bounds are read at start",
    ),
    (
        "kato_max_ms",
        "--kato-max-ms 3600000",
        "the target's keep-alive bounds are read at start",
    ),
    ("log_level", "--log-level debug", "the log filter is installed at start"),
    (
        "rpc_socket",
        "--rpc-socket PATH",
        "it is the socket the daemon is listening on",
    ),
    (
        "metrics",
        "--metrics 127.0.0.1:9465",
        "the metrics listener is opened at start",
    ),
    (
        "listen",
        "--listen 0.0.0.0:4420",
        "target-wide listeners are opened at start (nvmf_subsystem_add_listener adds a subsystem's listener live)",
    ),
];

/// Settings with their own live commands instead of `lull set`.
const OWN_COMMANDS: &[(&str, &str)] = &[
    ("bdev", "lull bdev malloc|null|uring|delete (bdev_*_create RPCs)"),
    (
        "subsystem",
        "lull subsystem ... (nvmf_create_subsystem, nvmf_subsystem_add_ns and the other nvmf_* RPCs)",
    ),
];

/// `Some(message)` when `name` (a config-file key, `-` or `_`) cannot be
/// changed on a running daemon: the message names the setting, why, and
/// how to change it (the config file or the `lull target` flag, then a
/// restart). `None` for live settings and unknown names.
pub fn restart_needed(name: &str) -> Option<String> {
    let key = name.replace('-', "_");
    if let Some((_, flag, why)) = FIXED_AT_START.iter().find(|(k, _, _)| *k == key) {
        return Some(format!(
            "`{key}` cannot change while lull runs ({why}): a restart is needed. \
             Set `{key}` in the config file or start with `lull target {flag}`, then restart `lull target`"
        ));
    }
    OWN_COMMANDS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(k, how)| format!("`{k}` is not a setting of `lull set`: change it live with {how}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_settings_say_a_restart_is_needed() {
        let m = restart_needed("cores").unwrap();
        assert!(m.contains("`cores` cannot change while lull runs"), "{m}");
        assert!(m.contains("restart") && m.contains("--cores"), "{m}");
        let m = restart_needed("in-capsule-data-size").unwrap();
        assert!(
            m.contains("`in_capsule_data_size`") && m.contains("--in-capsule-data-size"),
            "{m}"
        );
        assert!(restart_needed("bdev").unwrap().contains("lull bdev"));
        assert_eq!(restart_needed("nvme_ioq_poll_period_us"), None, "a live setting");
        assert_eq!(restart_needed("no_such_thing"), None);
        assert_eq!(restart_needed("latency_budget_us"), None, "the budget changes live");
    }
}
