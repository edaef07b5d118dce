//! The table of live settings itself: one entry per setting, in the order
//! changes are applied.

use std::time::Duration;

use lull_engine::bdev::raid1::MAX_PROCESS_WINDOW_SIZE_KB;
use lull_reactor::supervisor::Policy;

use super::{Alias, Kind, Origin, Part, Setting};

/// Longest initiator poll period, us (10 s).
const MAX_POLL_PERIOD_US: i128 = 10_000_000;

/// The policy words, in the order `lull_reactor::supervisor::POLICY_NAMES` lists them.
const POLICY_WORDS: &[&str] = &["poll", "interrupt", "hybrid", "adaptive", "budget"];

/// Writes `v` into a narrower integer field; the table's range makes it fit.
fn fit<T: TryFrom<i128> + Copy>(field: &mut T, v: i128) {
    if let Ok(v) = T::try_from(v) {
        *field = v;
    }
}

/// Duration in whole `unit`s of `d` (saturating).
fn whole(d: Duration, per_sec: u128) -> i128 {
    i128::try_from(d.as_nanos() / (1_000_000_000 / per_sec)).unwrap_or(i128::MAX)
}

/// A `Duration` of `v` units of `per_sec` a second (`v` is within the range, so not negative).
fn duration(v: i128, per_sec: u64) -> Duration {
    let v = u64::try_from(v).unwrap_or(0);
    Duration::from_nanos(v.saturating_mul(1_000_000_000 / per_sec))
}

/// Every live setting. The order is the order of application when several
/// are given at once: `interrupt_mode` comes before `mode_policy`, so that
/// a `mode_policy` given beside it wins.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "interrupt_mode",
        aliases: &[Alias {
            name: "data-engine-interrupt-mode-enabled",
            origin: Origin::Longhorn,
        }],
        doc: "Reactors sleep when idle: true is mode_policy interrupt, false is poll (mode_policy wins when both are given).",
        part: Part::Shorthand,
        kind: Kind::Bool {
            get: |l| l.supervisor.policy == Policy::Interrupt,
            set: |l, b| {
                l.supervisor.policy = if b { Policy::Interrupt } else { Policy::Poll };
                l.supervisor.core_policy.clear();
            },
        },
    },
    Setting {
        name: "mode_policy",
        aliases: &[Alias {
            name: "mode",
            origin: Origin::Flag,
        }],
        doc: "How every reactor picks its mode (per-core policies set with lull_reactor_set_mode are cleared).",
        part: Part::Supervisor,
        kind: Kind::Word {
            words: POLICY_WORDS,
            get: |l| l.supervisor.policy.as_str(),
            set: |l, w| {
                if let Ok(p) = w.parse::<Policy>() {
                    l.supervisor.policy = p;
                    l.supervisor.core_policy.clear();
                }
            },
        },
    },
    Setting {
        name: "latency_budget_us",
        aliases: &[],
        doc: "Budget policy: latency each reactor may add at the 99th percentile (0 = poll under load).",
        part: Part::Supervisor,
        kind: Kind::Int {
            min: 0,
            max: 1_000_000,
            also: None,
            unit: "us",
            note: "",
            get: |l| whole(l.supervisor.latency_budget, 1_000_000),
            set: |l, v| l.supervisor.latency_budget = duration(v, 1_000_000),
        },
    },
    Setting {
        name: "idle_poll_us",
        aliases: &[],
        doc: "Hybrid spin window: how long a reactor polls after its last work before it sleeps.",
        part: Part::Reactors,
        kind: Kind::Int {
            min: 0,
            max: 1_000_000,
            also: None,
            unit: "us",
            note: "",
            get: |l| whole(l.idle_poll, 1_000_000),
            set: |l, v| l.idle_poll = duration(v, 1_000_000),
        },
    },
    Setting {
        name: "supervisor_interval_ms",
        aliases: &[],
        doc: "Time between the supervisor's samples of each reactor's load.",
        part: Part::Supervisor,
        kind: Kind::Int {
            min: 10,
            max: 60_000,
            also: None,
            unit: "ms",
            note: "",
            get: |l| whole(l.supervisor.interval, 1_000),
            set: |l, v| l.supervisor.interval = duration(v, 1_000),
        },
    },
    Setting {
        name: "adaptive_high_mark",
        aliases: &[],
        doc: "Adaptive policy: load at or above which a reactor steps up (towards poll).",
        part: Part::Supervisor,
        kind: Kind::Fraction {
            min: 0.0,
            max: 1.0,
            max_included: true,
            note: ", and above adaptive_low_mark",
            get: |l| l.supervisor.high_mark,
            set: |l, v| l.supervisor.high_mark = v,
        },
    },
    Setting {
        name: "adaptive_low_mark",
        aliases: &[],
        doc: "Adaptive policy: estimated interrupt-mode load at or below which a reactor steps down.",
        part: Part::Supervisor,
        kind: Kind::Fraction {
            min: 0.0,
            max: 1.0,
            max_included: false,
            note: ", and below adaptive_high_mark",
            get: |l| l.supervisor.low_mark,
            set: |l, v| l.supervisor.low_mark = v,
        },
    },
    Setting {
        name: "adaptive_up_samples",
        aliases: &[],
        doc: "Adaptive policy: high samples in a row before a reactor steps up.",
        part: Part::Supervisor,
        kind: Kind::Int {
            min: 1,
            max: 1000,
            also: None,
            unit: "samples",
            note: "",
            get: |l| l.supervisor.up_samples.into(),
            set: |l, v| fit(&mut l.supervisor.up_samples, v),
        },
    },
    Setting {
        name: "adaptive_down_samples",
        aliases: &[],
        doc: "Adaptive policy: low samples in a row before a reactor steps down.",
        part: Part::Supervisor,
        kind: Kind::Int {
            min: 1,
            max: 1000,
            also: None,
            unit: "samples",
            note: "",
            get: |l| l.supervisor.down_samples.into(),
            set: |l, v| fit(&mut l.supervisor.down_samples, v),
        },
    },
    Setting {
        name: "nvme_ioq_poll_period_us",
        aliases: &[Alias {
            name: "data-engine-nvme-ioq-poll-period-us",
            origin: Origin::Longhorn,
        }],
        doc: "Initiator I/O queue poll period; applies to attached controllers at once.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 0,
            max: MAX_POLL_PERIOD_US,
            also: None,
            unit: "us",
            note: " (0 = every loop)",
            get: |l| l.nvme.nvme_ioq_poll_period_us.into(),
            set: |l, v| fit(&mut l.nvme.nvme_ioq_poll_period_us, v),
        },
    },
    Setting {
        name: "nvme_adminq_poll_period_us",
        aliases: &[],
        doc: "Initiator admin queue poll period (completions and AERs); applies to attached controllers at once.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 0,
            max: MAX_POLL_PERIOD_US,
            also: None,
            unit: "us",
            note: " (0 = every loop)",
            get: |l| l.nvme.nvme_adminq_poll_period_us.into(),
            set: |l, v| fit(&mut l.nvme.nvme_adminq_poll_period_us, v),
        },
    },
    Setting {
        name: "keep_alive_timeout_ms",
        aliases: &[],
        doc: "KATO the initiator asks for in the admin Connect (Keep Alive every KATO/2).",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 1000,
            max: 3_600_000,
            also: Some((0, "no keep-alive")),
            unit: "ms",
            note: "",
            get: |l| l.nvme.keep_alive_timeout_ms.into(),
            set: |l, v| fit(&mut l.nvme.keep_alive_timeout_ms, v),
        },
    },
    Setting {
        name: "reconnect_delay_sec",
        aliases: &[],
        doc: "Initiator: time between reconnect attempts after the association is lost.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 0,
            max: u32::MAX as i128,
            also: None,
            unit: "s",
            note: " (at most ctrlr_loss_timeout_sec; 0 only when that is 0)",
            get: |l| l.nvme.reconnect_delay_sec.into(),
            set: |l, v| fit(&mut l.nvme.reconnect_delay_sec, v),
        },
    },
    Setting {
        name: "ctrlr_loss_timeout_sec",
        aliases: &[],
        doc: "Initiator: how long to keep reconnecting before the controller is lost and held I/O fails.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: -1,
            max: i32::MAX as i128,
            also: None,
            unit: "s",
            note: " (-1 = forever, 0 = no reconnect)",
            get: |l| l.nvme.ctrlr_loss_timeout_sec.into(),
            set: |l, v| fit(&mut l.nvme.ctrlr_loss_timeout_sec, v),
        },
    },
    Setting {
        name: "fast_io_fail_timeout_sec",
        aliases: &[],
        doc: "Initiator: time after a loss from which held and new I/O fail at once.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 0,
            max: u32::MAX as i128,
            also: None,
            unit: "s",
            note: " (0 = hold I/O until the controller is lost; at most ctrlr_loss_timeout_sec)",
            get: |l| l.nvme.fast_io_fail_timeout_sec.into(),
            set: |l, v| fit(&mut l.nvme.fast_io_fail_timeout_sec, v),
        },
    },
    Setting {
        name: "timeout_us",
        aliases: &[],
        doc: "Initiator: a command outstanding this long resets the association.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 0,
            max: u64::MAX as i128,
            also: None,
            unit: "us",
            note: " (0 = never)",
            get: |l| l.nvme.timeout_us.into(),
            set: |l, v| fit(&mut l.nvme.timeout_us, v),
        },
    },
    Setting {
        name: "bdev_retry_count",
        aliases: &[],
        doc: "Initiator: retries of a command that failed without DNR before its error is returned.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 0,
            max: 100,
            also: None,
            unit: "retries",
            note: "",
            get: |l| l.nvme.bdev_retry_count.into(),
            set: |l, v| fit(&mut l.nvme.bdev_retry_count, v),
        },
    },
    Setting {
        name: "io_queue_size",
        aliases: &[Alias {
            name: "io_queue_requests",
            origin: Origin::Spdk,
        }],
        doc: "Initiator: entries per I/O queue of controllers attached from now on.",
        part: Part::Initiator,
        kind: Kind::Int {
            min: 2,
            max: 4096,
            also: None,
            unit: "entries",
            note: "",
            get: |l| l.nvme.io_queue_size.into(),
            set: |l, v| fit(&mut l.nvme.io_queue_size, v),
        },
    },
    Setting {
        name: "process_window_size_kb",
        aliases: &[],
        doc: "Raid rebuild: KiB copied (and held against writes) at a time; a running rebuild takes it from its next window.",
        part: Part::Raid,
        kind: Kind::Int {
            min: 1,
            max: MAX_PROCESS_WINDOW_SIZE_KB as i128,
            also: None,
            unit: "KiB",
            note: "",
            get: |l| l.raid.process_window_size_kb.into(),
            set: |l, v| fit(&mut l.raid.process_window_size_kb, v),
        },
    },
    Setting {
        name: "process_max_bandwidth_mb_sec",
        aliases: &[],
        doc: "Raid rebuild: most MiB per second a rebuild copies (0 = as fast as it can); applies to running rebuilds at once.",
        part: Part::Raid,
        kind: Kind::Int {
            min: 0,
            max: u32::MAX as i128,
            also: None,
            unit: "MiB/s",
            note: " (0 = unlimited)",
            get: |l| l.raid.process_max_bandwidth_mb_sec.into(),
            set: |l, v| fit(&mut l.raid.process_max_bandwidth_mb_sec, v),
        },
    },
];
