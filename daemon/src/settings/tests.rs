//! The settings table: each entry reachable through the TOML file and the
//! JSON methods' reader under each of its names, each range enforced with
//! a message naming the setting and the range, and the table in agreement
//! with the checks of the types it writes (`NvmeOptions::validate`,
//! `SupervisorConfig::validate`). The RPC methods and the command line are
//! tested against the same table in `daemon/tests/daemon_settings.rs` and
//! `tools/src/live_flags.rs`.

use super::*;
use crate::config::{Config, ConfigError};
use lull_reactor::supervisor::POLICY_NAMES;
use serde_json::json;

/// The snapshot a resolved config starts with.
fn resolved(text: &str) -> Result<Live, ConfigError> {
    let c = Config::from_toml(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let s = c.resolve()?;
    Ok(Live {
        supervisor: s.supervisor,
        idle_poll: s.idle_poll,
        nvme: s.nvme,
        raid: s.raid,
    })
}

/// Values just outside the range, of the setting's own type.
fn outside(s: &Setting) -> Vec<SettingValue> {
    match s.kind {
        Kind::Int { min, max, .. } => vec![SettingValue::Int(min - 1), SettingValue::Int(max + 1)],
        Kind::Fraction { min, max, .. } => vec![SettingValue::Fraction(min), SettingValue::Fraction(max + 0.5)],
        Kind::Bool { .. } => Vec::new(),
        Kind::Word { .. } => vec![SettingValue::Word("turbo".into())],
    }
}

#[test]
fn names_are_unique_and_none_is_read_only_at_start() {
    let mut seen = std::collections::BTreeSet::new();
    for s in SETTINGS {
        for n in s.names(&[Origin::Longhorn, Origin::Spdk, Origin::Flag]) {
            assert!(seen.insert(n.replace('-', "_")), "{n} names two settings");
            assert_eq!(crate::restart_only::restart_needed(n), None, "{n} is live");
        }
        assert!(!s.doc.is_empty() && s.doc.ends_with('.'), "{}: one line of doc", s.name);
    }
    assert_eq!(SETTINGS.len(), name_list().split(", ").count());
}

#[test]
fn every_setting_is_read_from_the_file_under_each_of_its_names() {
    for s in SETTINGS {
        let v = s.example();
        assert_ne!(
            v,
            s.get(&Live::default()),
            "{}: an example away from the default",
            s.name
        );
        for name in s.names(EVERY_NAME) {
            let live = resolved(&format!("\"{name}\" = {v}")).unwrap_or_else(|e| panic!("{name} = {v}: {e}"));
            assert_eq!(s.get(&live), v, "{name}");
            let mut want = Live::default();
            s.set(&mut want, name, &v).unwrap();
            assert_eq!(live, want, "{name} changes only itself");
        }
    }
    // A flag-only alias is not a key of the file.
    let e = Config::from_toml("mode = \"poll\"").unwrap_err();
    assert!(e.contains("unknown field `mode`"), "{e}");
}

#[test]
fn every_setting_is_read_from_json_under_each_of_its_names() {
    let names = Names::of(|_| true, EVERY_NAME);
    for s in SETTINGS {
        let v = s.example();
        for name in s.names(EVERY_NAME) {
            let mut params = serde_json::Map::new();
            params.insert(name.to_string(), v.to_json());
            let c = changes_from_json(&params, &names).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut live = Live::default();
            c.apply(&mut live).unwrap();
            assert_eq!(s.get(&live), v, "{name}");
            assert_eq!(s.from_text(name, &v.to_json().to_string()).as_ref(), Ok(&v));
        }
    }
}

#[test]
fn a_value_out_of_range_names_the_setting_and_the_range_everywhere() {
    let names = Names::of(|_| true, EVERY_NAME);
    for s in SETTINGS {
        for v in outside(s) {
            let allowed = s.allowed();
            // The file.
            let e = resolved(&format!("{} = {v}", s.name)).unwrap_err();
            assert_eq!(
                e,
                ConfigError {
                    field: s.name.to_string(),
                    value: v.to_string(),
                    allowed: allowed.clone(),
                }
            );
            // JSON, under each name: the name given is the one named
            // (JSON has no integer beyond 64 bits to send).
            for name in s.names(EVERY_NAME).filter(|_| !v.to_json().is_null()) {
                let mut params = serde_json::Map::new();
                params.insert(name.to_string(), v.to_json());
                let e = changes_from_json(&params, &names).unwrap_err();
                assert_eq!(e, format!("{name} = {v}: {allowed}"));
            }
        }
        // The range as written carries its bounds.
        match s.kind {
            Kind::Int { min, max, .. } => {
                let a = s.allowed();
                assert!(a.contains(&format!("{min} to {max}")), "{a}");
            }
            Kind::Word { words, .. } => assert_eq!(s.allowed(), format!("one of {}", words.join(", "))),
            _ => {}
        }
    }
    assert_eq!(
        find("idle_poll_us", &[]).map(|s| s.allowed()).as_deref(),
        Some("0 to 1000000 us")
    );
    assert_eq!(
        find("keep_alive_timeout_ms", &[]).map(|s| s.allowed()).as_deref(),
        Some("0 (no keep-alive) or 1000 to 3600000 ms")
    );
}

#[test]
fn the_table_agrees_with_the_checks_of_the_types_it_writes() {
    // Every value the table refuses that the field could hold is refused
    // by the type's own check too, naming the same field (a table range
    // wider than the type's would let a bad value through to it).
    for s in SETTINGS
        .iter()
        .filter(|s| matches!(s.part, Part::Supervisor | Part::Initiator | Part::Raid))
    {
        let mut refused = outside(s);
        if let Kind::Int { also: Some(_), min, .. } = s.kind {
            refused.push(SettingValue::Int(min - 1));
            refused.push(SettingValue::Int(1));
        }
        for v in refused {
            let mut l = Live::default();
            match (s.kind, &v) {
                (Kind::Int { set, .. }, SettingValue::Int(i)) => set(&mut l, *i),
                (Kind::Fraction { set, .. }, SettingValue::Fraction(x)) => set(&mut l, *x),
                _ => continue,
            }
            if s.get(&l) != v {
                continue; // Does not fit the field's type: nothing to check.
            }
            let e = match s.part {
                Part::Supervisor => l.supervisor.validate().err().map(|e| e.to_string()),
                Part::Raid => l.raid.check().err().map(|e| e.to_string()),
                _ => l.nvme.validate().err(),
            };
            let e = e.unwrap_or_else(|| panic!("{} = {v} passes the type's check", s.name));
            assert!(e.starts_with(s.name), "{}: {e}", s.name);
        }
    }
    // The words are the policies, listed as the reactor lists them.
    let p = find("mode_policy", &[]).unwrap();
    assert_eq!(p.allowed(), POLICY_NAMES);
    for w in p.words() {
        let mut l = Live::default();
        p.set(&mut l, "mode_policy", &SettingValue::Word((*w).into())).unwrap();
        assert_eq!(l.supervisor.policy.as_str(), *w);
    }
}

#[test]
fn interrupt_mode_is_the_policy_and_mode_policy_wins_beside_it() {
    let names = Names::of(|_| true, EVERY_NAME);
    let apply = |p: serde_json::Value| {
        let c = changes_from_json(p.as_object().unwrap(), &names).unwrap();
        let mut l = Live::default();
        c.apply(&mut l).unwrap();
        l.supervisor.policy
    };
    assert_eq!(apply(json!({"interrupt_mode": false})), Policy::Poll);
    assert_eq!(
        apply(json!({"data-engine-interrupt-mode-enabled": true})),
        Policy::Interrupt
    );
    assert_eq!(
        apply(json!({"mode_policy": "hybrid", "interrupt_mode": false})),
        Policy::Hybrid
    );
    assert_eq!(
        apply(json!({"interrupt_mode": true, "mode_policy": "adaptive"})),
        Policy::Adaptive
    );
    let on = find("interrupt_mode", &[]).unwrap();
    let mut l = Live::default();
    l.supervisor.policy = Policy::Budget;
    assert_eq!(on.get(&l), SettingValue::Bool(false));
}

#[test]
fn json_names_unknown_keys_twice_given_settings_and_wrong_types() {
    let names = Names::of(|s| s.part == Part::Initiator, &[]);
    let obj = |v: serde_json::Value| v.as_object().cloned().unwrap();
    let e = changes_from_json(&obj(json!({"idle_poll_us": 5})), &names).unwrap_err();
    assert!(
        e.starts_with("unknown field `idle_poll_us`, expected one of `nvme_ioq_poll_period_us`"),
        "{e}"
    );
    let all = Names::of(|_| true, EVERY_NAME);
    let e = changes_from_json(&obj(json!({"io_queue_size": 8, "io_queue_requests": 16})), &all).unwrap_err();
    assert_eq!(e, "duplicate field `io_queue_size`");
    let e = changes_from_json(&obj(json!({"idle_poll_us": 1.5})), &all).unwrap_err();
    assert!(e.starts_with("idle_poll_us: invalid type: floating point `1.5`"), "{e}");
    let e = changes_from_json(&obj(json!({"mode_policy": 3})), &all).unwrap_err();
    assert!(e.starts_with("mode_policy: invalid type"), "{e}");
    // null is not given (SPDK's clients send it for options left out).
    assert!(
        changes_from_json(&obj(json!({"idle_poll_us": null})), &all)
            .unwrap()
            .is_empty()
    );
    // SPDK's names only, where asked for.
    let spdk = Names::spdk(|s| s.part == Part::Initiator);
    assert!(spdk.find("io_queue_requests").is_some() && spdk.find("io_queue_size").is_none());
    assert!(spdk.find("data-engine-nvme-ioq-poll-period-us").is_none());
}

#[test]
fn the_command_line_matches_names_loosely() {
    assert_eq!(
        find_loose("idle-poll-us").map(|(s, n)| (s.name, n)),
        Some(("idle_poll_us", "idle_poll_us"))
    );
    assert_eq!(
        find_loose("data_engine_nvme_ioq_poll_period_us").map(|(s, n)| (s.name, n)),
        Some(("nvme_ioq_poll_period_us", "data-engine-nvme-ioq-poll-period-us"))
    );
    assert_eq!(
        find_loose("io-queue-requests").map(|(s, _)| s.name),
        Some("io_queue_size")
    );
    assert!(find_loose("mode").is_none(), "a flag-only alias");
    assert!(find_loose("cores").is_none(), "read at start");
    let p = find("mode_policy", &[]).unwrap();
    assert_eq!(
        p.from_text("mode_policy", "poll"),
        Ok(SettingValue::Word("poll".into()))
    );
    let b = find("interrupt_mode", &[]).unwrap();
    assert_eq!(b.from_text("interrupt_mode", " false "), Ok(SettingValue::Bool(false)));
}
