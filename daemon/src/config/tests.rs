//! The daemon's settings: every field from TOML to [`Settings`], Longhorn's
//! aliases, the mode policy rules, [`Config::overlay`], and every error
//! `resolve` can report, with the exact field name and what is allowed.

use super::*;
use lull_reactor::supervisor::Policy;

const HOST1: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";
const HOST2: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000002";

/// Every key there is, each away from its default.
const FULL: &str = r#"
cores = "0-1"
interrupt_mode = true
mode_policy = "hybrid"
latency_budget_us = 120
idle_poll_us = 300
supervisor_interval_ms = 500
adaptive_high_mark = 0.6
adaptive_low_mark = 0.1
adaptive_up_samples = 3
adaptive_down_samples = 9
nvme_ioq_poll_period_us = 250
nvme_adminq_poll_period_us = 5000
keep_alive_timeout_ms = 20000
reconnect_delay_sec = 3
ctrlr_loss_timeout_sec = 30
fast_io_fail_timeout_sec = 12
timeout_us = 1000000
bdev_retry_count = 5
io_queue_size = 256
in_capsule_data_size = 4096
max_h2c_data = 65536
header_digest = false
data_digest = false
kato_min_ms = 2000
kato_max_ms = 60000
log_level = "lull_engine=debug,warn"
rpc_socket = "/run/lull/lull.sock"
metrics = "127.0.0.1:9465"
listen = ["0.0.0.0:4420", "[::1]:4421"]

[[bdev]]
name = "Malloc0"
type = "malloc"
size = "64MiB"
block_size = 4096

[[bdev]]
name = "Null0"
type = "null"
num_blocks = 2048

[[bdev]]
name = "File0"
type = "uring"
filename = "/var/lib/lull/vol0.img"
block_size = 4096

[[bdev]]
name = "Malloc1"
type = "malloc"
size = 1048576

[[subsystem]]
nqn = "nqn.2024-01.io.lull:vol0"
serial_number = "SN0001"
model_number = "lull test model"
allow_any_host = false
hosts = [
    "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001",
    "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000002",
]
listen = ["127.0.0.1:4430", "[::1]:4431"]
max_namespaces = 8
namespaces = [{ bdev = "Malloc0", nsid = 5 }, { bdev = "Null0" }]

[[subsystem]]
nqn = "nqn.2024-01.io.lull:vol1"
allow_any_host = true

[[subsystem.namespaces]]
bdev = "File0"

[[subsystem.namespaces]]
bdev = "Malloc1"
nsid = 1024
"#;

fn parse(text: &str) -> Config {
    Config::from_toml(text).unwrap_or_else(|e| panic!("parse failed: {e}\n{text}"))
}

fn resolve(text: &str) -> Settings {
    parse(text)
        .resolve()
        .unwrap_or_else(|e| panic!("resolve failed: {e}\n{text}"))
}

fn resolve_err(text: &str) -> ConfigError {
    match parse(text).resolve() {
        Ok(s) => panic!("resolve accepted:\n{text}\n=> {s:?}"),
        Err(e) => e,
    }
}

/// Expects exactly this field, value and allowed text.
#[track_caller]
fn expect_err(text: &str, field: &str, value: &str, allowed: &str) {
    let e = resolve_err(text);
    assert_eq!(
        e,
        ConfigError {
            field: field.to_string(),
            value: value.to_string(),
            allowed: allowed.to_string(),
        },
        "for:\n{text}"
    );
    // The message names all three.
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("{field} = {value}")), "{shown}");
    assert!(shown.contains(allowed), "{shown}");
}

/// A subsystem any host may reach, for tests about something else.
fn with_sub(extra: &str) -> String {
    format!("[[subsystem]]\nnqn = \"nqn.2024-01.io.lull:vol0\"\nallow_any_host = true\n{extra}")
}

#[test]
fn every_field_parses_and_resolves() {
    let c = parse(FULL);
    assert_eq!(c.live.get("interrupt_mode"), Some(&SettingValue::Bool(true)));
    assert_eq!(c.bdev.len(), 4);
    assert_eq!(c.subsystem.len(), 2);
    let s = c.resolve().unwrap();

    assert_eq!(s.cores, Some(CoreList::try_from(vec![0, 1]).unwrap()));
    // mode_policy wins over interrupt_mode.
    assert_eq!(
        s.supervisor,
        SupervisorConfig {
            policy: Policy::Hybrid,
            interval: Duration::from_millis(500),
            high_mark: 0.6,
            low_mark: 0.1,
            up_samples: 3,
            down_samples: 9,
            core_policy: Vec::new(),
            latency_budget: Duration::from_micros(120),
        }
    );
    assert_eq!(s.idle_poll, Duration::from_micros(300));
    assert_eq!(
        s.nvme,
        NvmeOptions {
            nvme_ioq_poll_period_us: 250,
            nvme_adminq_poll_period_us: 5000,
            keep_alive_timeout_ms: 20_000,
            reconnect_delay_sec: 3,
            ctrlr_loss_timeout_sec: 30,
            fast_io_fail_timeout_sec: 12,
            timeout_us: 1_000_000,
            io_queue_size: 256,
            bdev_retry_count: 5,
            hdgst: false,
            ddgst: false,
        }
    );
    assert_eq!(
        s.transport,
        TargetQueueConfig {
            maxh2cdata: 65536,
            io_in_capsule_data: 4096,
            allow_header_digest: false,
            allow_data_digest: false,
            ..TargetQueueConfig::default()
        }
    );
    assert_eq!(
        s.target,
        TargetSettings {
            kato_min_ms: 2000,
            kato_max_ms: 60_000,
            ..TargetSettings::default()
        }
    );
    assert_eq!(s.log_level, "lull_engine=debug,warn");
    assert_eq!(s.rpc_socket, PathBuf::from("/run/lull/lull.sock"));
    assert_eq!(s.metrics, Some("127.0.0.1:9465".parse().unwrap()));
    assert_eq!(
        s.listen,
        vec![
            "0.0.0.0:4420".parse::<SocketAddr>().unwrap(),
            "[::1]:4421".parse().unwrap()
        ]
    );
    assert_eq!(
        s.bdevs,
        vec![
            BdevSpec {
                name: "Malloc0".into(),
                block_size: 4096,
                kind: BdevKind::Malloc {
                    num_blocks: (64 << 20) / 4096
                },
                uuid: None,
            },
            BdevSpec {
                name: "Null0".into(),
                block_size: 512,
                kind: BdevKind::Null { num_blocks: 2048 },
                uuid: None,
            },
            BdevSpec {
                name: "File0".into(),
                block_size: 4096,
                kind: BdevKind::Uring {
                    filename: PathBuf::from("/var/lib/lull/vol0.img")
                },
                uuid: None,
            },
            BdevSpec {
                name: "Malloc1".into(),
                block_size: 512,
                kind: BdevKind::Malloc { num_blocks: 2048 },
                uuid: None,
            },
        ]
    );
    assert_eq!(
        s.subsystems,
        vec![
            SubsystemSpec {
                nqn: "nqn.2024-01.io.lull:vol0".into(),
                serial: "SN0001".into(),
                model: "lull test model".into(),
                allow_any_host: false,
                hosts: vec![HOST1.to_string(), HOST2.to_string()],
                host_dhchap: Vec::new(),
                host_psk: Vec::new(),
                listen_secure_channel: Vec::new(),
                listen: vec!["127.0.0.1:4430".parse().unwrap(), "[::1]:4431".parse().unwrap()],
                namespaces: vec![("Malloc0".into(), 5), ("Null0".into(), 0)],
                max_namespaces: 8,
            },
            SubsystemSpec {
                nqn: "nqn.2024-01.io.lull:vol1".into(),
                // Defaults: a serial per subsystem position, lull's model, 32 namespaces.
                serial: "LULL0000000000000002".into(),
                model: DEFAULT_MODEL.into(),
                allow_any_host: true,
                hosts: Vec::new(),
                host_dhchap: Vec::new(),
                host_psk: Vec::new(),
                listen_secure_channel: Vec::new(),
                listen: Vec::new(),
                namespaces: vec![("File0".into(), 0), ("Malloc1".into(), 1024)],
                max_namespaces: DEFAULT_MAX_NAMESPACES,
            },
        ]
    );
}

#[test]
fn an_empty_file_is_the_defaults() {
    let c = parse("");
    assert_eq!(c, Config::default());
    let s = c.resolve().unwrap();
    assert_eq!(s.cores, None);
    assert_eq!(s.supervisor, SupervisorConfig::with_policy(Policy::Interrupt));
    assert_eq!(s.idle_poll, Duration::from_micros(200));
    assert_eq!(s.nvme, NvmeOptions::default());
    assert_eq!(s.transport, TargetQueueConfig::default());
    assert_eq!(s.target, TargetSettings::default());
    assert_eq!(s.log_level, "info");
    assert_eq!(s.rpc_socket, PathBuf::from(DEFAULT_RPC_SOCKET));
    assert_eq!(s.metrics, None);
    assert!(s.listen.is_empty() && s.bdevs.is_empty() && s.subsystems.is_empty());
    // Comments and blank lines only: still the defaults.
    assert_eq!(parse("# nothing here\n\n"), Config::default());
}

#[test]
fn longhorn_aliases_are_accepted_as_toml_keys() {
    let c = parse("data-engine-interrupt-mode-enabled = false\ndata-engine-nvme-ioq-poll-period-us = 1000\n");
    // Stored under the settings' names.
    assert_eq!(c.live.get("interrupt_mode"), Some(&SettingValue::Bool(false)));
    assert_eq!(c.live.get("nvme_ioq_poll_period_us"), Some(&SettingValue::Int(1000)));
    assert_eq!(c.live.len(), 2);
    let s = c.resolve().unwrap();
    assert_eq!(s.supervisor.policy, Policy::Poll);
    assert_eq!(s.nvme.nvme_ioq_poll_period_us, 1000);

    let s = resolve("data-engine-interrupt-mode-enabled = true\n");
    assert_eq!(s.supervisor.policy, Policy::Interrupt);

    // The alias and the name together are one field given twice.
    let e = Config::from_toml("interrupt_mode = true\ndata-engine-interrupt-mode-enabled = false\n").unwrap_err();
    assert!(e.contains("duplicate field") && e.contains("interrupt_mode"), "{e}");
    let e = Config::from_toml("nvme_ioq_poll_period_us = 1\ndata-engine-nvme-ioq-poll-period-us = 2\n").unwrap_err();
    assert!(
        e.contains("duplicate field") && e.contains("nvme_ioq_poll_period_us"),
        "{e}"
    );
}

#[test]
fn interrupt_mode_picks_the_policy_unless_mode_policy_is_given() {
    assert_eq!(resolve("").supervisor.policy, Policy::Interrupt);
    assert_eq!(resolve("interrupt_mode = true").supervisor.policy, Policy::Interrupt);
    assert_eq!(resolve("interrupt_mode = false").supervisor.policy, Policy::Poll);
    for (p, want) in [
        ("poll", Policy::Poll),
        ("interrupt", Policy::Interrupt),
        ("hybrid", Policy::Hybrid),
        ("adaptive", Policy::Adaptive),
        ("budget", Policy::Budget),
    ] {
        assert_eq!(resolve(&format!("mode_policy = \"{p}\"")).supervisor.policy, want);
        for i in [true, false] {
            let s = resolve(&format!("mode_policy = \"{p}\"\ninterrupt_mode = {i}"));
            assert_eq!(
                s.supervisor.policy, want,
                "mode_policy {p} wins over interrupt_mode {i}"
            );
        }
    }
    // A bad mode_policy is an error even when interrupt_mode would decide.
    expect_err(
        "mode_policy = \"Poll\"\ninterrupt_mode = false",
        "mode_policy",
        "\"Poll\"",
        "one of poll, interrupt, hybrid, adaptive, budget",
    );
}

#[test]
fn overlay_flags_win_and_lists_add_up() {
    let file = parse(FULL);
    let flags = parse(
        r#"
cores = "1"
interrupt_mode = false
mode_policy = "adaptive"
latency_budget_us = 7
idle_poll_us = 10
supervisor_interval_ms = 100
adaptive_high_mark = 0.9
adaptive_low_mark = 0.2
adaptive_up_samples = 1
adaptive_down_samples = 2
nvme_ioq_poll_period_us = 0
nvme_adminq_poll_period_us = 0
keep_alive_timeout_ms = 0
reconnect_delay_sec = 1
ctrlr_loss_timeout_sec = -1
fast_io_fail_timeout_sec = 0
timeout_us = 0
bdev_retry_count = 0
io_queue_size = 32
in_capsule_data_size = 0
max_h2c_data = 4096
header_digest = true
data_digest = true
kato_min_ms = 100
kato_max_ms = 100
log_level = "trace"
rpc_socket = "/tmp/other.sock"
metrics = "[::1]:1"
listen = ["127.0.0.1:5000"]

[[bdev]]
name = "Extra0"
type = "null"
size = "1MiB"

[[subsystem]]
nqn = "nqn.2024-01.io.lull:extra"
allow_any_host = true
namespaces = [{ bdev = "Extra0" }]
"#,
    );
    let merged = file.clone().overlay(flags.clone());
    // Every scalar and `listen` comes from the flags (a field missing from
    // overlay's list would keep the file's value and fail here) ...
    let mut want = flags.clone();
    // ... and the bdevs and subsystems of both add up, the file's first.
    want.bdev = file.bdev.iter().chain(&flags.bdev).cloned().collect();
    want.subsystem = file.subsystem.iter().chain(&flags.subsystem).cloned().collect();
    assert_eq!(merged, want);
    let s = merged.resolve().unwrap();
    assert_eq!(s.supervisor.policy, Policy::Adaptive);
    assert_eq!(s.bdevs.len(), 5);
    assert_eq!(s.subsystems.len(), 3);
    assert_eq!(s.subsystems[2].namespaces, vec![("Extra0".to_string(), 0)]);
    assert_eq!(s.listen, vec!["127.0.0.1:5000".parse::<SocketAddr>().unwrap()]);

    // Flags that set nothing change nothing.
    assert_eq!(file.clone().overlay(Config::default()), file);
    // A file that sets nothing takes every flag.
    assert_eq!(Config::default().overlay(flags.clone()), flags);
    // Only what the flags give replaces the file's.
    let m = file.clone().overlay(parse("mode_policy = \"poll\"\nlisten = []"));
    assert_eq!(m.live.get("mode_policy"), Some(&SettingValue::Word("poll".into())));
    assert_eq!(m.listen, Some(Vec::new()), "an empty list given replaces the file's");
    assert_eq!(m.cores, file.cores);
    assert_eq!(m.live.get("idle_poll_us"), file.live.get("idle_poll_us"));
    assert_eq!(m.bdev, file.bdev);
    let s = m.resolve().unwrap();
    assert_eq!(s.supervisor.policy, Policy::Poll);
    assert!(s.listen.is_empty());
    // A flag's interrupt_mode does not override the file's mode_policy.
    let s = parse("mode_policy = \"hybrid\"")
        .overlay(parse("interrupt_mode = false"))
        .resolve()
        .unwrap();
    assert_eq!(s.supervisor.policy, Policy::Hybrid);
}

#[test]
fn unknown_keys_and_wrong_types_are_toml_errors_naming_the_key() {
    for (text, key) in [
        ("frobnicate = 1", "frobnicate"),
        ("interrupt-mode = true", "interrupt-mode"),
        (
            "[[bdev]]\nname = \"A\"\ntype = \"malloc\"\nsize = 512\ncolour = \"red\"",
            "colour",
        ),
        (
            "[[subsystem]]\nnqn = \"nqn.2024-01.x:y\"\nallow_any_hosts = true",
            "allow_any_hosts",
        ),
        (
            "[[bdev]]\nname = \"A\"\ntype = \"malloc\"\nsize = 512\n[[subsystem]]\nnqn = \"nqn.2024-01.x:y\"\nnamespaces = [{ bdev = \"A\", ns_id = 1 }]",
            "ns_id",
        ),
    ] {
        let e = Config::from_toml(text).unwrap_err();
        assert!(
            e.contains("unknown field") && e.contains(&format!("`{key}`")),
            "{text}: {e}"
        );
        assert!(e.contains("line"), "{e}");
    }
    for (text, key) in [
        ("idle_poll_us = \"fast\"", "idle_poll_us"),
        ("idle_poll_us = 1.5", "idle_poll_us"),
        ("interrupt_mode = \"yes\"", "interrupt_mode"),
        ("mode_policy = 3", "mode_policy"),
        ("cores = 3", "cores"),
        ("adaptive_high_mark = \"high\"", "adaptive_high_mark"),
        ("listen = \"0.0.0.0:4420\"", "listen"),
        ("rpc_socket = 7", "rpc_socket"),
        ("[[bdev]]\nname = \"A\"\ntype = \"malloc\"\nsize = true", "size"),
        (
            "[[bdev]]\nname = \"A\"\ntype = \"malloc\"\nblock_size = \"4k\"",
            "block_size",
        ),
        (
            "[[subsystem]]\nnqn = \"nqn.2024-01.x:y\"\nhosts = \"nqn.2024-01.h:1\"",
            "hosts",
        ),
        (
            "[[subsystem]]\nnqn = \"nqn.2024-01.x:y\"\nmax_namespaces = -1",
            "max_namespaces",
        ),
        ("bdev = 1", "bdev"),
    ] {
        let e = Config::from_toml(text).unwrap_err();
        // toml quotes the offending line, so the key is in the message.
        assert!(e.contains(key), "{text}: {e}");
        assert!(
            e.contains("invalid type") || e.contains("invalid value") || e.contains("did not match"),
            "{text}: {e}"
        );
        assert!(!e.ends_with('\n'), "trailing newline trimmed");
    }
    // A live setting's integer out of its range, even out of the field's
    // type, is the settings table's range error, naming field and range.
    expect_err("idle_poll_us = -1", "idle_poll_us", "-1", "0 to 1000000 us");
    expect_err("io_queue_size = 70000", "io_queue_size", "70000", "2 to 4096 entries");
    // Not TOML at all.
    assert!(Config::from_toml("cores = ").is_err());
    assert!(Config::from_toml("[[bdev]\n").is_err());
}

#[test]
fn from_file_names_the_file() {
    let dir = std::env::temp_dir().join(format!("lull-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, FULL).unwrap();
    assert_eq!(Config::from_file(&good).unwrap(), parse(FULL));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "nope = 1\n").unwrap();
    let e = Config::from_file(&bad).unwrap_err();
    assert!(e.starts_with(&bad.display().to_string()) && e.contains("`nope`"), "{e}");
    let missing = dir.join("missing.toml");
    let e = Config::from_file(&missing).unwrap_err();
    assert!(e.starts_with(&missing.display().to_string()), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn parse_size_cases() {
    for (s, want) in [
        ("1", 1u64),
        ("4096", 4096),
        ("512b", 512),
        ("512B", 512),
        ("4k", 4 << 10),
        ("4K", 4 << 10),
        ("4KiB", 4 << 10),
        ("4kib", 4 << 10),
        ("64m", 64 << 20),
        ("64MiB", 64 << 20),
        ("64MIB", 64 << 20),
        ("1G", 1 << 30),
        ("1GiB", 1 << 30),
        ("2t", 2 << 40),
        ("2TiB", 2 << 40),
        (" 256MiB ", 256 << 20),
        ("16777215TiB", 16_777_215 << 40),
        ("18446744073709551615", u64::MAX),
    ] {
        assert_eq!(parse_size(s), Ok(want), "{s:?}");
    }
    for (s, says) in [
        ("", "is not a size"),
        ("MiB", "is not a size"),
        ("-1", "is not a size"),
        ("1.5GiB", "unknown size unit `.5GiB`"),
        ("10PB", "unknown size unit `PB`"),
        ("10MB", "unknown size unit `MB`"),
        ("1 GiB", "unknown size unit ` GiB`"),
        ("0", "not a size above 0"),
        ("0GiB", "not a size above 0"),
        ("16777216TiB", "fits in 64 bits"),
        ("18446744073709551616", "is not a size"),
    ] {
        let e = parse_size(s).unwrap_err();
        assert!(e.contains(says), "{s:?}: {e}");
        assert!(e.contains(&format!("`{s}`")), "names the text: {e}");
    }
    // SizeValue: bytes or text.
    assert_eq!(SizeValue::Bytes(4096).bytes(), Ok(4096));
    assert_eq!(SizeValue::Text("4KiB".into()).bytes(), Ok(4096));
    assert!(SizeValue::Bytes(0).bytes().is_err());
    assert_eq!(SizeValue::Bytes(7).to_string(), "7");
    assert_eq!(SizeValue::Text("7k".into()).to_string(), "\"7k\"");
}

#[test]
fn top_level_errors_name_the_field() {
    for (cores, why) in [("3-1", "3-1"), ("", ""), ("a", "a"), ("1,1", "1,1"), ("2000", "2000")] {
        let e = resolve_err(&format!("cores = \"{cores}\""));
        assert_eq!(e.field, "cores");
        assert_eq!(e.value, format!("\"{cores}\""));
        assert_eq!(e.allowed, CoreList::parse(why).unwrap_err().to_string());
    }
    expect_err(
        "mode_policy = \"turbo\"",
        "mode_policy",
        "\"turbo\"",
        "one of poll, interrupt, hybrid, adaptive, budget",
    );
    // The budget policy's budget: 0 (poll under load) to 1 s.
    assert_eq!(resolve("").supervisor.latency_budget, Duration::from_micros(50));
    assert_eq!(
        resolve("latency_budget_us = 0").supervisor.latency_budget,
        Duration::ZERO
    );
    assert_eq!(
        resolve("mode_policy = \"budget\"\nlatency_budget_us = 1000000")
            .supervisor
            .latency_budget,
        Duration::from_secs(1)
    );
    expect_err(
        "latency_budget_us = 1000001",
        "latency_budget_us",
        "1000001",
        "0 to 1000000 us",
    );
    assert_eq!(resolve("idle_poll_us = 1000000").idle_poll, Duration::from_secs(1));
    assert_eq!(resolve("idle_poll_us = 0").idle_poll, Duration::ZERO);
    expect_err("idle_poll_us = 1000001", "idle_poll_us", "1000001", "0 to 1000000 us");

    // The supervisor's own checks.
    for v in [5, 60_001] {
        expect_err(
            &format!("supervisor_interval_ms = {v}"),
            "supervisor_interval_ms",
            &v.to_string(),
            "10 to 60000 ms",
        );
    }
    for v in ["0.0", "1.0", "-0.5"] {
        let shown = v.parse::<f64>().unwrap().to_string();
        expect_err(
            &format!("adaptive_low_mark = {v}"),
            "adaptive_low_mark",
            &shown,
            "above 0 and below 1, and below adaptive_high_mark",
        );
    }
    // Above 1: the table's range.
    expect_err(
        "adaptive_high_mark = 1.5",
        "adaptive_high_mark",
        "1.5",
        "above 0 and at most 1, and above adaptive_low_mark",
    );
    // At or below the low mark (0.15 by default): the rule between the two.
    for v in ["0.15", "0.1"] {
        let shown = v.parse::<f64>().unwrap().to_string();
        expect_err(
            &format!("adaptive_high_mark = {v}"),
            "adaptive_high_mark",
            &shown,
            "above adaptive_low_mark, at most 1",
        );
    }
    expect_err(
        "adaptive_high_mark = 0.3\nadaptive_low_mark = 0.4",
        "adaptive_high_mark",
        "0.3",
        "above adaptive_low_mark, at most 1",
    );
    for f in ["adaptive_up_samples", "adaptive_down_samples"] {
        for v in [0, 1001] {
            expect_err(&format!("{f} = {v}"), f, &v.to_string(), "1 to 1000 samples");
        }
    }

    // The initiator's checks (NvmeOptions::validate), split into field, value, allowed.
    for f in ["nvme_ioq_poll_period_us", "nvme_adminq_poll_period_us"] {
        expect_err(
            &format!("{f} = 10000001"),
            f,
            "10000001",
            "0 to 10000000 us (0 = every loop)",
        );
        assert!(resolve(&format!("{f} = 10000000")).nvme.validate().is_ok());
    }
    for v in [1, 4097] {
        expect_err(
            &format!("io_queue_size = {v}"),
            "io_queue_size",
            &v.to_string(),
            "2 to 4096 entries",
        );
    }
    for v in [1, 999, 3_600_001] {
        expect_err(
            &format!("keep_alive_timeout_ms = {v}"),
            "keep_alive_timeout_ms",
            &v.to_string(),
            "0 (no keep-alive) or 1000 to 3600000 ms",
        );
    }
    assert_eq!(resolve("keep_alive_timeout_ms = 0").nvme.keep_alive_timeout_ms, 0);
    expect_err("bdev_retry_count = 101", "bdev_retry_count", "101", "0 to 100 retries");
    expect_err(
        "ctrlr_loss_timeout_sec = -2",
        "ctrlr_loss_timeout_sec",
        "-2",
        "-1 to 2147483647 s (-1 = forever, 0 = no reconnect)",
    );
    expect_err(
        "reconnect_delay_sec = 0",
        "reconnect_delay_sec",
        "0",
        "is not allowed when ctrlr_loss_timeout_sec is not 0",
    );
    expect_err(
        "ctrlr_loss_timeout_sec = 5\nreconnect_delay_sec = 6\nfast_io_fail_timeout_sec = 1",
        "reconnect_delay_sec",
        "6",
        "must not exceed ctrlr_loss_timeout_sec = 5",
    );
    expect_err(
        "fast_io_fail_timeout_sec = 16",
        "fast_io_fail_timeout_sec",
        "16",
        "must not exceed ctrlr_loss_timeout_sec = 15",
    );
    // No reconnect needs the other two at 0; the defaults (2 and 10) are not.
    expect_err(
        "ctrlr_loss_timeout_sec = 0",
        "ctrlr_loss_timeout_sec",
        "0",
        "reconnect_delay_sec and fast_io_fail_timeout_sec must be 0 when ctrlr_loss_timeout_sec is 0 (no reconnect)",
    );
    let s = resolve("ctrlr_loss_timeout_sec = 0\nreconnect_delay_sec = 0\nfast_io_fail_timeout_sec = 0");
    assert_eq!(s.nvme, NvmeOptions::default().no_reconnect());
    let s = resolve("ctrlr_loss_timeout_sec = -1\nreconnect_delay_sec = 60\nfast_io_fail_timeout_sec = 600");
    assert_eq!(s.nvme.ctrlr_loss_timeout_sec, -1);

    // Transport.
    for v in [8, 100, 131_088, 1 << 20] {
        expect_err(
            &format!("in_capsule_data_size = {v}"),
            "in_capsule_data_size",
            &v.to_string(),
            "0 to 131072 bytes, a multiple of 16",
        );
    }
    assert_eq!(resolve("in_capsule_data_size = 0").transport.io_in_capsule_data, 0);
    assert_eq!(
        resolve("in_capsule_data_size = 131072").transport.io_in_capsule_data,
        131_072
    );
    for v in [0, 2048, 4094, 4098, 1_048_580] {
        expect_err(
            &format!("max_h2c_data = {v}"),
            "max_h2c_data",
            &v.to_string(),
            "4096 to 1048576 bytes, a multiple of 4",
        );
    }
    assert_eq!(resolve("max_h2c_data = 1048576").transport.maxh2cdata, 1_048_576);
    assert_eq!(resolve("max_h2c_data = 4100").transport.maxh2cdata, 4100);

    // KATO bounds.
    for v in [0, 99, 3_600_001] {
        expect_err(
            &format!("kato_min_ms = {v}"),
            "kato_min_ms",
            &v.to_string(),
            "100 to 3600000 ms",
        );
    }
    expect_err(
        "kato_max_ms = 500",
        "kato_max_ms",
        "500",
        "kato_min_ms (1000) to 3600000 ms",
    );
    expect_err(
        "kato_max_ms = 3600001",
        "kato_max_ms",
        "3600001",
        "kato_min_ms (1000) to 3600000 ms",
    );
    expect_err(
        "kato_min_ms = 5000\nkato_max_ms = 4999",
        "kato_max_ms",
        "4999",
        "kato_min_ms (5000) to 3600000 ms",
    );
    let s = resolve("kato_min_ms = 100\nkato_max_ms = 100");
    assert_eq!((s.target.kato_min_ms, s.target.kato_max_ms), (100, 100));

    // Log level.
    for good in [
        "error",
        "WARN",
        "debug",
        "trace",
        "off",
        "lull_engine=debug",
        "warn,lull_reactor=trace",
    ] {
        assert_eq!(resolve(&format!("log_level = \"{good}\"")).log_level, good);
    }
    for bad in ["", "  ", "loud", "lull_engine=verbose", "info,", "debug,,warn"] {
        expect_err(
            &format!("log_level = \"{bad}\""),
            "log_level",
            &format!("\"{bad}\""),
            "error, warn, info, debug or trace (or a tracing filter such as lull_engine=debug)",
        );
    }

    // RPC socket: 1 to 107 bytes.
    let long = format!("/tmp/{}", "s".repeat(103));
    assert_eq!(long.len(), 108);
    let ok = &long[..107];
    assert_eq!(resolve(&format!("rpc_socket = \"{ok}\"")).rpc_socket, PathBuf::from(ok));
    for bad in ["", long.as_str()] {
        expect_err(
            &format!("rpc_socket = \"{bad}\""),
            "rpc_socket",
            &format!("\"{bad}\""),
            "a path of 1 to 107 bytes (a Unix socket)",
        );
    }

    // Addresses.
    let addr_rule = "an address and port such as 0.0.0.0:4420 or [::1]:4420";
    for bad in ["localhost:9465", "127.0.0.1", "9465", "::1:9465", "127.0.0.1:70000"] {
        expect_err(
            &format!("metrics = \"{bad}\""),
            "metrics",
            &format!("\"{bad}\""),
            addr_rule,
        );
    }
    expect_err(
        "listen = [\"127.0.0.1:4420\", \"[::1]:4420\", \"4420\"]",
        "listen[2]",
        "\"4420\"",
        addr_rule,
    );
    assert!(resolve("listen = []").listen.is_empty());
}

#[test]
fn duplicate_bdevs_and_subsystems_are_refused() {
    expect_err(
        "[[bdev]]\nname = \"A\"\ntype = \"malloc\"\nsize = 512\n[[bdev]]\nname = \"B\"\ntype = \"null\"\nsize = 512\n[[bdev]]\nname = \"A\"\ntype = \"null\"\nsize = 512",
        "bdev[2].name",
        "\"A\"",
        "a name no other bdev has",
    );
    let sub = "[[subsystem]]\nnqn = \"nqn.2024-01.io.lull:vol0\"\nallow_any_host = true\n";
    expect_err(
        &format!("{sub}{sub}"),
        "subsystem[1].nqn",
        "\"nqn.2024-01.io.lull:vol0\"",
        "an NQN no other subsystem has",
    );
}

#[test]
fn bdev_errors_name_the_field() {
    let b = |body: &str| format!("[[bdev]]\nname = \"Ok0\"\ntype = \"null\"\nsize = 512\n[[bdev]]\n{body}");
    expect_err(
        &b("type = \"malloc\"\nsize = 512"),
        "bdev[1].name",
        "(missing)",
        "a bdev name",
    );
    let long = "n".repeat(64);
    for bad in ["", "has space", "a/b", "Ünïcode", long.as_str()] {
        expect_err(
            &b(&format!("name = \"{bad}\"\ntype = \"malloc\"\nsize = 512")),
            "bdev[1].name",
            &format!("\"{bad}\""),
            "1 to 63 letters, digits, `_`, `-` or `.`",
        );
    }
    let ok63 = "n".repeat(63);
    assert_eq!(
        resolve(&format!("[[bdev]]\nname = \"{ok63}\"\ntype = \"null\"\nsize = 512")).bdevs[0].name,
        ok63
    );
    assert_eq!(
        resolve("[[bdev]]\nname = \"a.b-c_D9\"\ntype = \"null\"\nsize = 512").bdevs[0].name,
        "a.b-c_D9"
    );
    for bs in [0, 1024, 520, 8192] {
        expect_err(
            &b(&format!(
                "name = \"X\"\ntype = \"malloc\"\nsize = 8192\nblock_size = {bs}"
            )),
            "bdev[1].block_size",
            &bs.to_string(),
            "512 or 4096 bytes",
        );
    }
    for kind in ["malloc", "null"] {
        let x = |rest: &str| b(&format!("name = \"X\"\ntype = \"{kind}\"\n{rest}"));
        expect_err(
            &x("size = 4096\nnum_blocks = 8"),
            "bdev[1].num_blocks",
            "(with size)",
            "either size or num_blocks, not both",
        );
        expect_err(&x("num_blocks = 0"), "bdev[1].num_blocks", "0", "1 or more blocks");
        expect_err(&x("size = 0"), "bdev[1].size", "0", "0 is not a size above 0");
        expect_err(
            &x("size = \"12XB\""),
            "bdev[1].size",
            "\"12XB\"",
            &parse_size("12XB").unwrap_err(),
        );
        expect_err(
            &x("size = \"0MiB\""),
            "bdev[1].size",
            "\"0MiB\"",
            &parse_size("0MiB").unwrap_err(),
        );
        expect_err(
            &x("size = 1000"),
            "bdev[1].size",
            "1000",
            "a multiple of the 512-byte block size",
        );
        expect_err(
            &x("size = \"6KiB\"\nblock_size = 4096"),
            "bdev[1].size",
            "\"6KiB\"",
            "a multiple of the 4096-byte block size",
        );
        expect_err(
            &x(""),
            "bdev[1].size",
            "(missing)",
            "a size such as \"256MiB\" (or num_blocks)",
        );
        expect_err(
            &x("size = 512\nfilename = \"/tmp/x\""),
            "bdev[1].filename",
            "(given)",
            "only for type = \"uring\"",
        );
        // num_blocks alone, with either block size.
        let s = resolve(&x("num_blocks = 7\nblock_size = 4096"));
        let want = if kind == "malloc" {
            BdevKind::Malloc { num_blocks: 7 }
        } else {
            BdevKind::Null { num_blocks: 7 }
        };
        assert_eq!(s.bdevs[1].kind, want);
        assert_eq!(s.bdevs[1].block_size, 4096);
    }
    for kind in ["uring", "file"] {
        let x = |rest: &str| b(&format!("name = \"F\"\ntype = \"{kind}\"\n{rest}"));
        expect_err(
            &x(""),
            "bdev[1].filename",
            "(missing)",
            "the path of a file or block device",
        );
        for extra in ["size = 4096", "num_blocks = 8", "size = \"1MiB\"\nnum_blocks = 8"] {
            expect_err(
                &x(&format!("filename = \"/tmp/f\"\n{extra}")),
                "bdev[1].size",
                "(given)",
                "nothing: a uring bdev is the size of its file",
            );
        }
        let s = resolve(&x("filename = \"/tmp/f\""));
        assert_eq!(
            s.bdevs[1],
            BdevSpec {
                name: "F".into(),
                block_size: 512,
                kind: BdevKind::Uring {
                    filename: "/tmp/f".into()
                },
                uuid: None,
            }
        );
    }
    expect_err(
        &b("name = \"X\"\ntype = \"ram\"\nsize = 512"),
        "bdev[1].type",
        "\"ram\"",
        "malloc, null, uring or raid1",
    );
    expect_err(
        &b("name = \"X\"\ntype = \"Malloc\"\nsize = 512"),
        "bdev[1].type",
        "\"Malloc\"",
        "malloc, null, uring or raid1",
    );
    expect_err(
        &b("name = \"X\"\nsize = 512"),
        "bdev[1].type",
        "\"\"",
        "malloc, null, uring or raid1",
    );
}

#[test]
fn subsystem_errors_name_the_field() {
    let bdevs = "[[bdev]]\nname = \"A\"\ntype = \"malloc\"\nsize = \"1MiB\"\n[[bdev]]\nname = \"B\"\ntype = \"null\"\nsize = \"1MiB\"\n";
    // The second subsystem is the bad one: its index is named.
    let s = |body: &str| {
        format!("{bdevs}[[subsystem]]\nnqn = \"nqn.2024-01.io.lull:ok\"\nallow_any_host = true\n[[subsystem]]\n{body}")
    };
    expect_err(
        &s("allow_any_host = true"),
        "subsystem[1].nqn",
        "(missing)",
        "an NQN such as nqn.2024-01.io.example:vol0",
    );
    let long_nqn = format!("nqn.2024-01.io.lull:{}", "v".repeat(224));
    for bad in ["vol0", "nqn.24-01.x:y", "nqn.2024-01.a b", long_nqn.as_str()] {
        expect_err(
            &s(&format!("nqn = \"{bad}\"\nallow_any_host = true")),
            "subsystem[1].nqn",
            &format!("\"{bad}\""),
            &lull_engine::nvmf::subsystem::validate_nqn(bad).unwrap_err(),
        );
    }
    let disc = lull_proto::fabrics::DISCOVERY_NQN;
    expect_err(
        &s(&format!("nqn = \"{disc}\"\nallow_any_host = true")),
        "subsystem[1].nqn",
        &format!("\"{disc}\""),
        &format!("subnqn {disc} is the discovery subsystem's NQN"),
    );
    let n = "nqn = \"nqn.2024-01.io.lull:two\"\n";
    for bad in [String::new(), "S".repeat(21), "tab\there".to_string()] {
        expect_err(
            &s(&format!(
                "{n}allow_any_host = true\nserial_number = \"{}\"",
                bad.escape_default()
            )),
            "subsystem[1].serial_number",
            &format!("\"{bad}\""),
            &format!("serial `{bad}` must be 1 to 20 printable ASCII characters"),
        );
    }
    for bad in [String::new(), "M".repeat(41), "é".to_string()] {
        expect_err(
            &s(&format!("{n}allow_any_host = true\nmodel_number = \"{bad}\"")),
            "subsystem[1].model_number",
            &format!("\"{bad}\""),
            &format!("model `{bad}` must be 1 to 40 printable ASCII characters"),
        );
    }
    let ok = resolve(&s(&format!(
        "{n}allow_any_host = true\nserial_number = \"{}\"\nmodel_number = \"{}\"",
        "S".repeat(20),
        "M".repeat(40)
    )));
    assert_eq!(ok.subsystems[1].serial, "S".repeat(20));
    assert_eq!(ok.subsystems[1].model, "M".repeat(40));
    // The default serial follows the position in the file.
    assert_eq!(ok.subsystems[0].serial, "LULL0000000000000001");

    expect_err(
        &s(&format!("{n}hosts = [\"{HOST1}\", \"host2\"]")),
        "subsystem[1].hosts[1]",
        "\"host2\"",
        &lull_engine::nvmf::subsystem::validate_nqn("host2").unwrap_err(),
    );
    expect_err(
        &s(&format!("{n}allow_any_host = true\nhosts = [\"{HOST1}\"]")),
        "subsystem[1].hosts",
        "(given)",
        "no list when allow_any_host = true",
    );
    for access in ["", "allow_any_host = false\n", "allow_any_host = false\nhosts = []\n"] {
        expect_err(
            &s(&format!("{n}{access}")),
            "subsystem[1].hosts",
            "[]",
            "at least one host NQN, or allow_any_host = true (no host could connect)",
        );
    }
    let h = "allow_any_host = true\n";
    expect_err(
        &s(&format!("{n}{h}listen = [\"127.0.0.1:4420\", \"127.0.0.1\"]")),
        "subsystem[1].listen[1]",
        "\"127.0.0.1\"",
        "an address and port such as 0.0.0.0:4420 or [::1]:4420",
    );
    for m in [0, 1025] {
        expect_err(
            &s(&format!("{n}{h}max_namespaces = {m}")),
            "subsystem[1].max_namespaces",
            &m.to_string(),
            "1 to 1024",
        );
    }
    assert_eq!(
        resolve(&s(&format!("{n}{h}max_namespaces = 1024"))).subsystems[1].max_namespaces,
        1024
    );
    expect_err(
        &s(&format!(
            "{n}{h}max_namespaces = 1\nnamespaces = [{{ bdev = \"A\" }}, {{ bdev = \"B\" }}]"
        )),
        "subsystem[1].namespaces",
        "(2 namespaces)",
        "at most max_namespaces (1)",
    );
    expect_err(
        &s(&format!("{n}{h}namespaces = [{{ bdev = \"A\" }}, {{ nsid = 3 }}]")),
        "subsystem[1].namespaces[1].bdev",
        "(missing)",
        "the name of a bdev",
    );
    expect_err(
        &s(&format!("{n}{h}namespaces = [{{ bdev = \"Nope\" }}]")),
        "subsystem[1].namespaces[0].bdev",
        "\"Nope\"",
        "one of the bdevs defined: [A, B]",
    );
    // No bdevs at all: the list is empty.
    expect_err(
        &with_sub("namespaces = [{ bdev = \"A\" }]"),
        "subsystem[0].namespaces[0].bdev",
        "\"A\"",
        "one of the bdevs defined: []",
    );
    let max = lull_engine::nvmf::subsystem::MAX_NAMESPACES;
    for nsid in [0, max + 1] {
        expect_err(
            &s(&format!("{n}{h}namespaces = [{{ bdev = \"A\", nsid = {nsid} }}]")),
            "subsystem[1].namespaces[0].nsid",
            &nsid.to_string(),
            &format!("1 to {max}"),
        );
    }
    // The same bdev twice, or the same NSID twice.
    expect_err(
        &s(&format!(
            "{n}{h}namespaces = [{{ bdev = \"A\" }}, {{ bdev = \"A\", nsid = 2 }}]"
        )),
        "subsystem[1].namespaces[1].bdev",
        "\"A\"",
        "a bdev not already a namespace of this subsystem",
    );
    expect_err(
        &s(&format!(
            "{n}{h}namespaces = [{{ bdev = \"A\", nsid = 7 }}, {{ bdev = \"B\", nsid = 7 }}]"
        )),
        "subsystem[1].namespaces[1].nsid",
        "7",
        "an NSID not already used in this subsystem",
    );
    // Two automatic NSIDs do not clash; a bdev may serve two subsystems.
    let ok = resolve(&format!(
        "{bdevs}[[subsystem]]\nnqn = \"nqn.2024-01.io.lull:a\"\nallow_any_host = true\nnamespaces = [{{ bdev = \"A\" }}, {{ bdev = \"B\" }}]\n[[subsystem]]\nnqn = \"nqn.2024-01.io.lull:b\"\nhosts = [\"{HOST2}\"]\nnamespaces = [{{ bdev = \"A\", nsid = {max} }}]"
    ));
    assert_eq!(ok.subsystems[0].namespaces, vec![("A".into(), 0), ("B".into(), 0)]);
    assert_eq!(ok.subsystems[1].namespaces, vec![("A".into(), max)]);
    assert_eq!(ok.subsystems[1].hosts, vec![HOST2.to_string()]);
}

#[test]
fn errors_come_in_file_order() {
    // A bad top-level field is reported before a bad bdev, a bad bdev before a bad subsystem.
    let e = resolve_err("idle_poll_us = 2000000\n[[bdev]]\nname = \"\"\n[[subsystem]]\nnqn = \"x\"");
    assert_eq!(e.field, "idle_poll_us");
    let e = resolve_err("[[bdev]]\nname = \"\"\n[[subsystem]]\nnqn = \"x\"");
    assert_eq!(e.field, "bdev[0].name");
    let e = resolve_err("[[bdev]]\nname = \"A\"\ntype = \"null\"\nsize = 512\n[[subsystem]]\nnqn = \"x\"");
    assert_eq!(e.field, "subsystem[0].nqn");
}

#[test]
fn helpers_check_names_and_addresses() {
    assert!(check_bdev_name("Malloc0").is_ok());
    assert!(check_bdev_name("").is_err());
    assert!(check_bdev_name("a:b").is_err());
    assert_eq!(parse_addr("[::1]:4420"), Ok("[::1]:4420".parse().unwrap()));
    assert_eq!(parse_addr("0.0.0.0:0"), Ok("0.0.0.0:0".parse().unwrap()));
    assert!(parse_addr("::1:4420").is_err());
    let e = ConfigError {
        field: "f".into(),
        value: "v".into(),
        allowed: "a".into(),
    };
    assert_eq!(e.to_string(), "f = v: a");
}

#[test]
fn host_dhchap_keys_name_listed_hosts_and_files() {
    let sub =
        |extra: &str| format!("[[subsystem]]\nnqn = \"nqn.2024-01.io.lull:vol0\"\nhosts = [\"{HOST1}\"]\n{extra}");
    let s = resolve(&sub(&format!(
        "[[subsystem.host_dhchap]]\nhost = \"{HOST1}\"\ndhchap_key = \"/etc/lull/h1.key\"\ndhchap_ctrlr_key = \"/etc/lull/c1.key\"\n"
    )));
    assert_eq!(
        s.subsystems[0].host_dhchap,
        vec![(
            HOST1.to_string(),
            PathBuf::from("/etc/lull/h1.key"),
            Some(PathBuf::from("/etc/lull/c1.key"))
        )]
    );
    expect_err(
        &sub(&format!(
            "[[subsystem.host_dhchap]]\nhost = \"{HOST2}\"\ndhchap_key = \"/k\"\n"
        )),
        "subsystem[0].host_dhchap[0].host",
        &format!("\"{HOST2}\""),
        "a host listed in `hosts`",
    );
    expect_err(
        &sub(&format!("[[subsystem.host_dhchap]]\nhost = \"{HOST1}\"\n")),
        "subsystem[0].host_dhchap[0].dhchap_key",
        "(missing)",
        "the path of a file holding a DHHC-1 secret",
    );
    expect_err(
        &sub(&format!(
            "[[subsystem.host_dhchap]]\nhost = \"{HOST1}\"\ndhchap_key = \"/a\"\n[[subsystem.host_dhchap]]\nhost = \"{HOST1}\"\ndhchap_key = \"/b\"\n"
        )),
        "subsystem[0].host_dhchap[1].host",
        &format!("\"{HOST1}\""),
        "a host not already given keys",
    );
}

#[test]
fn a_raid1_bdev_names_bases_defined_above_it() {
    let bases = "[[bdev]]\nname = \"M0\"\ntype = \"malloc\"\nsize = \"1MiB\"\n[[bdev]]\nname = \"M1\"\ntype = \"malloc\"\nsize = \"1MiB\"\n[[bdev]]\nname = \"M2\"\ntype = \"null\"\nsize = \"1MiB\"\n";
    let s = resolve(&format!(
        "{bases}[[bdev]]\nname = \"Vol0\"\ntype = \"raid1\"\nbase_bdevs = [\"M0\", \"M1\"]\nsuperblock = true\nuuid = \"7c4d0f1e-1111-4222-8333-444455556666\"\n{}",
        with_sub("namespaces = [{ bdev = \"Vol0\" }]")
    ));
    assert_eq!(
        s.bdevs[3],
        BdevSpec {
            name: "Vol0".into(),
            block_size: 0,
            kind: BdevKind::Raid1 {
                base_bdevs: vec!["M0".into(), "M1".into()],
                superblock: true,
            },
            uuid: Some(parse_uuid("7c4d0f1e-1111-4222-8333-444455556666").unwrap()),
        }
    );
    assert_eq!(s.subsystems[0].namespaces, vec![("Vol0".to_string(), 0)]);
    let raid = |body: &str| format!("{bases}[[bdev]]\nname = \"Vol0\"\ntype = \"raid1\"\n{body}");
    expect_err(
        &raid(""),
        "bdev[3].base_bdevs",
        "(missing)",
        "the names of 2 or more bdevs defined above, e.g. [\"Malloc0\", \"Malloc1\"]",
    );
    expect_err(
        &raid("base_bdevs = [\"M0\"]"),
        "bdev[3].base_bdevs",
        "(1 bdev)",
        "at least 2 base bdevs (a raid1 of one is no mirror)",
    );
    expect_err(
        &raid("base_bdevs = [\"M0\", \"Nope\"]"),
        "bdev[3].base_bdevs[1]",
        "\"Nope\"",
        "one of the bdevs defined above it: [M0, M1, M2]",
    );
    expect_err(
        &raid("base_bdevs = [\"M0\", \"M0\"]"),
        "bdev[3].base_bdevs[1]",
        "\"M0\"",
        "a bdev not already a base of this raid",
    );
    expect_err(
        &raid("base_bdevs = [\"M0\", \"M1\"]\nsize = \"1MiB\""),
        "bdev[3].size",
        "(given)",
        "nothing: a raid1 bdev takes its size and block size from its base_bdevs",
    );
    expect_err(
        &raid("base_bdevs = [\"M0\", \"M1\"]\nblock_size = 4096"),
        "bdev[3].block_size",
        "(given)",
        "nothing: a raid1 bdev takes its size and block size from its base_bdevs",
    );
    // A base of one raid only; no raid of raids; a bdev defined later is no base.
    let two = format!(
        "{bases}[[bdev]]\nname = \"Vol0\"\ntype = \"raid1\"\nbase_bdevs = [\"M0\", \"M1\"]\n[[bdev]]\nname = \"Vol1\"\ntype = \"raid1\"\n"
    );
    expect_err(
        &format!("{two}base_bdevs = [\"M2\", \"M1\"]"),
        "bdev[4].base_bdevs[1]",
        "\"M1\"",
        "a bdev no other raid uses (it is a base of Vol0)",
    );
    expect_err(
        &format!("{two}base_bdevs = [\"M2\", \"Vol0\"]"),
        "bdev[4].base_bdevs[1]",
        "\"Vol0\"",
        "a malloc, null or uring bdev (not another raid)",
    );
    expect_err(
        &format!(
            "[[bdev]]\nname = \"V\"\ntype = \"raid1\"\nbase_bdevs = [\"M0\", \"M1\"]\n{}",
            bases
        ),
        "bdev[0].base_bdevs[0]",
        "\"M0\"",
        "one of the bdevs defined above it: []",
    );
    // The raid's name fits its superblock; base_bdevs only for raid1.
    expect_err(
        &format!(
            "{bases}[[bdev]]\nname = \"{}\"\ntype = \"raid1\"\nbase_bdevs = [\"M0\", \"M1\"]",
            "v".repeat(32)
        ),
        "bdev[3].name",
        &format!("\"{}\"", "v".repeat(32)),
        "at most 31 bytes (a raid's name is kept in its superblock)",
    );
    expect_err(
        "[[bdev]]\nname = \"M\"\ntype = \"malloc\"\nsize = 512\nbase_bdevs = [\"A\", \"B\"]",
        "bdev[0].base_bdevs",
        "(given)",
        "only for type = \"raid1\"",
    );
    // A base is the raid's: exporting it is refused.
    expect_err(
        &format!(
            "{bases}[[bdev]]\nname = \"Vol0\"\ntype = \"raid1\"\nbase_bdevs = [\"M0\", \"M1\"]\n{}",
            with_sub("namespaces = [{ bdev = \"M1\" }]")
        ),
        "subsystem[0].namespaces[0].bdev",
        "\"M1\"",
        "a bdev no raid uses (it is a base of Vol0; export Vol0 instead)",
    );
}

#[test]
fn the_rebuild_settings_are_live_settings_of_the_file() {
    let s = resolve("process_window_size_kb = 256\nprocess_max_bandwidth_mb_sec = 100");
    assert_eq!(
        (s.raid.process_window_size_kb, s.raid.process_max_bandwidth_mb_sec),
        (256, 100)
    );
    let d = resolve("");
    assert_eq!(
        (d.raid.process_window_size_kb, d.raid.process_max_bandwidth_mb_sec),
        (1024, 0),
        "SPDK's defaults"
    );
    expect_err(
        "process_window_size_kb = 0",
        "process_window_size_kb",
        "0",
        "1 to 1048576 KiB",
    );
}
