//! How a reactor waits when it has nothing to do.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Largest accepted `idle_poll_us` (1 s): a longer spin is poll mode.
pub const MAX_IDLE_POLL: Duration = Duration::from_secs(1);

/// A reactor's waiting discipline. Work is run the same way in every mode; only
/// the wait between loop iterations differs.
///
/// | mode | waits by | idle cost | wake latency |
/// | --- | --- | --- | --- |
/// | `Poll` | never; `epoll_wait` with timeout 0 | 100 % of its core | a loop iteration |
/// | `Interrupt` | `epoll_wait` until an fd, the doorbell or the next timer | its timers only | a thread wakeup (tens of us on a VM) |
/// | `Hybrid` | spins for `idle_poll_us` after the last useful work, then as `Interrupt` | as `Interrupt` once the spin ends | as `Poll` within the spin window |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Spin forever; never sleeps.
    Poll,
    /// Sleep in `epoll_wait` whenever no work is pending.
    Interrupt,
    /// Spin for `idle_poll_us` after the last work, then sleep.
    Hybrid,
}

impl Mode {
    /// All modes, from the cheapest when idle to the fastest to react.
    pub const ALL: [Mode; 3] = [Mode::Interrupt, Mode::Hybrid, Mode::Poll];

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Mode::Poll => 1,
            Mode::Interrupt => 2,
            Mode::Hybrid => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Mode> {
        match v {
            1 => Some(Mode::Poll),
            2 => Some(Mode::Interrupt),
            3 => Some(Mode::Hybrid),
            _ => None,
        }
    }

    /// The name used on the command line, in settings and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Poll => "poll",
            Mode::Interrupt => "interrupt",
            Mode::Hybrid => "hybrid",
        }
    }

    /// Whether the reactor may sleep in this mode (SPDK's `in_interrupt`).
    pub fn sleeps(self) -> bool {
        self != Mode::Poll
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown mode name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown reactor mode `{0}`; expected one of: poll, interrupt, hybrid")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "poll" => Ok(Mode::Poll),
            "interrupt" => Ok(Mode::Interrupt),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(ParseModeError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
            assert_eq!(Mode::from_u8(m.to_u8()), Some(m));
        }
        assert_eq!(Mode::from_u8(0), None);
        assert_eq!(
            "Poll".parse::<Mode>().unwrap_err().to_string(),
            "unknown reactor mode `Poll`; expected one of: poll, interrupt, hybrid"
        );
    }
}
