//! The daemon's log level, changed at run time in SPDK's terms
//! (`log_set_level`, `log_set_print_level`).
//!
//! SPDK has two levels: what is logged (to syslog) and what is printed (to
//! stderr). lull has one sink (stderr, the journal under systemd), so an
//! event is written when either level admits it: the tracing filter is set
//! to the more verbose of the two. SPDK's levels map to tracing's as
//! ERROR = error, WARNING = warn, NOTICE and INFO = info (lull has no level
//! between them), DEBUG = debug.

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

/// (log level, print level).
static LEVELS: Mutex<(SpdkLevel, SpdkLevel)> = Mutex::new((SpdkLevel::Notice, SpdkLevel::Notice));
static HOOK: OnceLock<Hook> = OnceLock::new();

fn levels_lock() -> std::sync::MutexGuard<'static, (SpdkLevel, SpdkLevel)> {
    LEVELS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Installs the function that replaces the process's tracing filter with a
/// directive (`"debug"`), and the levels the filter given at start stands
/// for. The first call wins (the subscriber is process-wide).
pub fn install(initial: &str, set_filter: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) {
    if HOOK.set(Box::new(set_filter)).is_ok() {
        let l = SpdkLevel::from_directive(initial);
        *levels_lock() = (l, l);
    }
}

/// The (log, print) levels now.
pub fn levels() -> (SpdkLevel, SpdkLevel) {
    *levels_lock()
}

/// Sets the log level (`print: false`) or the print level (`print: true`)
/// and applies the more verbose of the two to the tracing filter.
///
/// # Errors
/// The filter could not be replaced (the levels stay as they were).
pub fn set(level: SpdkLevel, print: bool) -> Result<(), String> {
    let mut l = levels_lock();
    let mut next = *l;
    if print {
        next.1 = level;
    } else {
        next.0 = level;
    }
    if let Some(h) = HOOK.get() {
        h(next.0.max(next.1).directive())?;
    }
    *l = next;
    Ok(())
}
