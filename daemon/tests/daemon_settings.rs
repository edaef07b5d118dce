//! Every entry of the settings table over JSON-RPC, on a running daemon:
//! set by `lull_set_options` under each of its names and shown by
//! `lull_get_options`; set and shown by the method of its part
//! (`lull_supervisor_*_config`, `bdev_nvme_*_options` under SPDK's name,
//! `bdev_raid_set_options`);
//! saved by `save_config`; and refused out of range with -32602 naming the
//! setting and the range. (The file and the command line read the same
//! table: `settings/tests.rs`, `tools/src/live_flags.rs`.)

mod rpc_client;

use lull_daemon::settings::{EVERY_NAME, Kind, Live, Part, SETTINGS, SettingValue};
use rpc_client::{Daemon, INVALID_PARAMS};
use serde_json::{Value, json};

/// Values just outside a setting's range that JSON can carry.
fn outside(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Int { min, max, .. } => [min - 1, max + 1]
            .into_iter()
            .map(|i| SettingValue::Int(i).to_json())
            .filter(|v| !v.is_null())
            .collect(),
        Kind::Fraction { min, max, .. } => vec![json!(min), json!(max + 0.5)],
        Kind::Bool { .. } => Vec::new(),
        Kind::Word { .. } => vec![json!("turbo")],
    }
}

/// The value of the saved configuration's entry `method`.
fn saved(config: &Value, method: &str) -> Value {
    let entries = config["subsystems"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(config["lull_subsystems"].as_array().into_iter().flatten())
        .flat_map(|s| s["config"].as_array().into_iter().flatten());
    for e in entries {
        if e["method"] == method {
            return e["params"].clone();
        }
    }
    panic!("no {method} entry in {config}")
}

#[test]
fn every_setting_is_set_shown_saved_and_checked_over_json_rpc() {
    let mut d = Daemon::start("settings");
    let mut c = d.client();
    let defaults = Live::default();
    for s in SETTINGS {
        let example = s.example().to_json();
        let default = s.get(&defaults).to_json();
        let back = json!({ s.name: default.clone() });
        for name in s.names(EVERY_NAME) {
            assert_eq!(
                c.ok("lull_set_options", json!({ name: example.clone() })),
                true,
                "{name}"
            );
            assert_eq!(c.ok("lull_get_options", Value::Null)[s.name], example, "{name}");
            c.ok("lull_set_options", back.clone());
            assert_eq!(c.ok("lull_get_options", Value::Null)[s.name], default, "{name}");
        }
        // The method of its part, and the saved configuration's entry.
        let set = json!({ s.name: example.clone() });
        match s.part {
            Part::Supervisor => {
                c.ok("lull_supervisor_set_config", set);
                assert_eq!(c.ok("lull_supervisor_get_config", Value::Null)[s.name], example);
                assert_eq!(
                    saved(&c.ok("save_config", Value::Null), "lull_set_options")[s.name],
                    example
                );
            }
            Part::Reactors => {
                c.ok("lull_set_options", set);
                assert_eq!(c.ok("lull_get_status", Value::Null)[s.name], example);
                assert_eq!(
                    saved(&c.ok("save_config", Value::Null), "lull_set_options")[s.name],
                    example
                );
            }
            Part::Initiator => {
                let spdk = s.spdk_name();
                c.ok("bdev_nvme_set_options", json!({ spdk: example.clone() }));
                assert_eq!(c.ok("bdev_nvme_get_options", Value::Null)[spdk], example);
                assert_eq!(
                    saved(&c.ok("save_config", Value::Null), "bdev_nvme_set_options")[spdk],
                    example
                );
            }
            Part::Raid => {
                c.ok("bdev_raid_set_options", set);
                assert_eq!(c.ok("lull_get_options", Value::Null)[s.name], example);
                assert_eq!(
                    saved(&c.ok("save_config", Value::Null), "bdev_raid_set_options")[s.name],
                    example
                );
            }
            Part::Shorthand => {
                c.ok("lull_set_options", set);
            }
        }
        c.ok("lull_set_options", back);
        // Out of range: refused, naming the setting, the value and the range.
        let before = c.ok("lull_get_options", Value::Null);
        for v in outside(s.kind) {
            for name in s.names(EVERY_NAME) {
                let m = c.expect(INVALID_PARAMS, "lull_set_options", json!({ name: v.clone() }));
                assert!(
                    m.contains(&format!("{name} = ")) && m.contains(&s.allowed()),
                    "{name} {v}: {m}"
                );
            }
        }
        assert_eq!(
            c.ok("lull_get_options", Value::Null),
            before,
            "{}: refusals change nothing",
            s.name
        );
    }
    drop(c);
    d.stop();
}
