//! The daemon's log level, changed at run time in SPDK's terms
//! (`log_set_level`, `log_set_print_level`).
//!
//! SPDK has two levels: what is logged (to syslog) and what is printed (to
//! stderr). lull has one sink (stderr, the journal under systemd), so an
//! event is written when either level admits it: the tracing filter is set
//! to the more verbose of the two. SPDK's levels map to tracing's as
//! ERROR = error, WARNING = warn, NOTICE and INFO = info (lull has no level
//! between them), DEBUG = debug.
//!
//! SPDK's log flags (`log_set_flag`, `log_clear_flag`, `log_get_flags`)
//! turn on the debug messages of one component. lull's flags are named
//! after SPDK's for the same component ([`FLAGS`]); each stands for tracing
//! targets (modules), and an enabled flag adds `TARGET=debug` to the
//! filter whatever the levels are (SPDK also wants the print level at DEBUG
//! before a flag's messages show; lull does not).

use std::sync::{Mutex, OnceLock};

/// One of SPDK's log levels, least verbose first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpdkLevel {
    /// `ERROR`.
    Error,
    /// `WARNING`.
    Warning,
    /// `NOTICE` (SPDK's default for both levels).
    Notice,
    /// `INFO`.
    Info,
    /// `DEBUG`.
    Debug,
}

impl SpdkLevel {
    /// SPDK's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SpdkLevel::Error => "ERROR",
            SpdkLevel::Warning => "WARNING",
            SpdkLevel::Notice => "NOTICE",
            SpdkLevel::Info => "INFO",
            SpdkLevel::Debug => "DEBUG",
        }
    }

    /// Parses SPDK's name, ignoring case as SPDK does.
    pub fn parse(s: &str) -> Option<SpdkLevel> {
        [
            SpdkLevel::Error,
            SpdkLevel::Warning,
            SpdkLevel::Notice,
            SpdkLevel::Info,
            SpdkLevel::Debug,
        ]
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(s))
    }

    /// The tracing level directive this level stands for.
    pub fn directive(self) -> &'static str {
        match self {
            SpdkLevel::Error => "error",
            SpdkLevel::Warning => "warn",
            SpdkLevel::Notice | SpdkLevel::Info => "info",
            SpdkLevel::Debug => "debug",
        }
    }

    /// The SPDK level of a tracing filter given at start (`log_level` in the
    /// config, or `LULL_LOG`): its level when it is a plain one, else NOTICE.
    pub fn from_directive(d: &str) -> SpdkLevel {
        match d.trim().to_ascii_lowercase().as_str() {
            "error" | "off" => SpdkLevel::Error,
            "warn" | "warning" => SpdkLevel::Warning,
            "debug" | "trace" => SpdkLevel::Debug,
            _ => SpdkLevel::Notice,
        }
    }
}

type Hook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The log flags, by SPDK's name for the component, with the tracing
/// targets (module paths) each one turns to `debug`. Listed by name, as
/// `log_get_flags` lists them.
pub const FLAGS: &[(&str, &[&str])] = &[
    (
        "app_config",
        &[
            "lull_daemon::rpc::config_json",
            "lull_daemon::config",
            "lull_daemon::app",
        ],
    ),
    ("bdev", &["lull_engine::bdev", "lull_engine::nvmf::io"]),
    ("bdev_nvme", &["lull_engine::initiator"]),
    (
        "nvme",
        &[
            "lull_engine::initiator",
            "lull_transport::host_conn",
            "lull_transport::host_sync",
        ],
    ),
    ("nvmf", &["lull_engine::nvmf"]),
    ("nvmf_tcp", &["lull_transport::conn"]),
    ("reactor", &["lull_reactor"]),
    ("rpc", &["lull_daemon::rpc"]),
];

/// The levels and flags now.
struct State {
    log: SpdkLevel,
    print: SpdkLevel,
    /// Bit i: `FLAGS[i]` is enabled.
    flags: u64,
}

impl State {
    /// The tracing filter directive: the more verbose level, then each
    /// enabled flag's targets at `debug`.
    fn directive(&self) -> String {
        let mut d = self.log.max(self.print).directive().to_string();
        for (i, (_, targets)) in FLAGS.iter().enumerate() {
            if self.flags & (1 << i) != 0 {
                for t in *targets {
                    d.push_str(&format!(",{t}=debug"));
                }
            }
        }
        d
    }
}

static LEVELS: Mutex<State> = Mutex::new(State {
    log: SpdkLevel::Notice,
    print: SpdkLevel::Notice,
    flags: 0,
});
static HOOK: OnceLock<Hook> = OnceLock::new();

fn levels_lock() -> std::sync::MutexGuard<'static, State> {
    LEVELS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `name` matches the shell pattern `pattern` (`*`, `?`), ignoring
/// ASCII case, as SPDK matches flag names. Iterative, with one backtrack
/// point (the last `*`): linear-ish in the inputs whatever the pattern, so a
/// client's pattern of a million stars neither recurses nor backtracks
/// exponentially.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last star take one more byte and try again.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Every flag and whether it is enabled, by name.
pub fn flags() -> Vec<(&'static str, bool)> {
    let s = levels_lock();
    FLAGS
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (*n, s.flags & (1 << i) != 0))
        .collect()
}

/// Enables (`on`) or disables the flags whose names match `pattern` (a
/// shell pattern, or `all`), and applies the filter.
///
/// # Errors
/// No flag matches (the message lists them), or the filter could not be
/// replaced (nothing changes).
pub fn set_flag(pattern: &str, on: bool) -> Result<(), FlagError> {
    let mut mask = 0u64;
    for (i, (n, _)) in FLAGS.iter().enumerate() {
        if pattern.eq_ignore_ascii_case("all") || glob(pattern.as_bytes(), n.as_bytes()) {
            mask |= 1 << i;
        }
    }
    if mask == 0 {
        let names: Vec<&str> = FLAGS.iter().map(|(n, _)| *n).collect();
        return Err(FlagError::NoSuchFlag(format!(
            "invalid log flag {pattern}: allowed {}, all, or a pattern (*, ?)",
            names.join(", ")
        )));
    }
    let mut s = levels_lock();
    let next = State {
        flags: if on { s.flags | mask } else { s.flags & !mask },
        ..*s
    };
    if let Some(h) = HOOK.get() {
        h(&next.directive()).map_err(FlagError::Filter)?;
    }
    *s = next;
    Ok(())
}

/// Why [`set_flag`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    /// No flag has that name (the message lists the flags).
    NoSuchFlag(String),
    /// The tracing filter could not be replaced.
    Filter(String),
}

/// Installs the function that replaces the process's tracing filter with a
/// directive (`"debug"`), and the levels the filter given at start stands
/// for. The first call wins (the subscriber is process-wide).
pub fn install(initial: &str, set_filter: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) {
    if HOOK.set(Box::new(set_filter)).is_ok() {
        let l = SpdkLevel::from_directive(initial);
        let mut s = levels_lock();
        s.log = l;
        s.print = l;
    }
}

/// The (log, print) levels now.
pub fn levels() -> (SpdkLevel, SpdkLevel) {
    let s = levels_lock();
    (s.log, s.print)
}

/// Sets the log level (`print: false`) or the print level (`print: true`)
/// and applies the more verbose of the two to the tracing filter.
///
/// # Errors
/// The filter could not be replaced (the levels stay as they were).
pub fn set(level: SpdkLevel, print: bool) -> Result<(), String> {
    let mut s = levels_lock();
    let mut next = State { ..*s };
    if print {
        next.print = level;
    } else {
        next.log = level;
    }
    if let Some(h) = HOOK.get() {
        h(&next.directive())?;
    }
    *s = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_as_the_shell_and_stays_fast_on_hostile_patterns() {
        for (p, n, want) in [
            ("nvmf*", "nvmf_tcp", true),
            ("NVMF", "nvmf", true),
            ("*tcp", "nvmf_tcp", true),
            ("n?mf", "nvmf", true),
            ("n?mf", "nmf", false),
            ("*", "", true),
            ("", "x", false),
            ("b*d*v", "bdev", true),
            ("b*d*x", "bdev", false),
            ("**a**", "a", true),
        ] {
            assert_eq!(glob(p.as_bytes(), n.as_bytes()), want, "{p} ~ {n}");
        }
        // A million stars: no stack overflow; forty stars and a miss: no
        // exponential backtracking (this finishes at once).
        assert!(glob(&vec![b'*'; 1_000_000], b"nvmf_tcp"));
        let mut p = vec![b'*'; 40];
        p.push(b'z');
        assert!(!glob(&p, b"app_config_bdev_nvme_nvmf_tcp_reactor_rpc"));
    }

    #[test]
    fn flag_patterns_match_as_spdk_matches_them() {
        assert!(glob(b"nvmf*", b"nvmf_tcp") && glob(b"NVMF", b"nvmf") && glob(b"bdev_nvm?", b"bdev_nvme"));
        assert!(!glob(b"nvmf", b"nvmf_tcp") && !glob(b"x*", b"nvmf"));
    }

    #[test]
    fn the_directive_adds_each_enabled_flag_at_debug() {
        let s = State {
            log: SpdkLevel::Warning,
            print: SpdkLevel::Error,
            flags: 0,
        };
        assert_eq!(s.directive(), "warn");
        let i = FLAGS.iter().position(|(n, _)| *n == "nvmf_tcp").unwrap();
        let s = State { flags: 1 << i, ..s };
        assert_eq!(s.directive(), "warn,lull_transport::conn=debug");
        // Every target is a directive tracing accepts: a module path.
        for (n, targets) in FLAGS {
            assert!(targets.iter().all(|t| t.starts_with("lull_")), "{n}");
        }
        let mut names: Vec<_> = FLAGS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            FLAGS.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "listed by name"
        );
        assert!(FLAGS.len() <= 64);
    }
}
